//! Architecture rules the compiler cannot check alone (DESIGN.md, "Rules of the house"):
//!
//! 1. A module reaches another only through its face (`mod.rs`): `crate::ledger::Ledger` is
//!    fine, `crate::ledger::store::...` is not. `platform` depends on no domain module, and the
//!    ledger on none either (calls go one way: wallet, payment, card -> ledger).
//! 2. Tables are owned by prefix: only a module's `store.rs` names tables, and only its own
//!    (`ledger_*` in `src/ledger/store.rs`). Migrations are one module each.
//!
//! The checks are plain text scans of `src/` and `migrations/`; each is also run against small
//! fixtures below, so a broken checker fails here instead of silently passing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a failed unwrap in a test is a failed test"
)]

use std::fs;
use std::path::{Path, PathBuf};

/// The domain modules of DESIGN.md. A directory under `src/` not listed here and not
/// `platform`/`kernel`/`cli` is itself a violation: add it here when you add a module.
const DOMAIN_MODULES: [&str; 8] = [
    "auth", "ledger", "wallet", "payment", "card", "kyc", "aml", "notify",
];
/// Everything a `crate::<name>` path can name that the dependency matrix governs.
const GOVERNED: [&str; 14] = [
    "auth", "ledger", "wallet", "payment", "card", "kyc", "aml", "notify", "kernel", "platform",
    "app", "cli", "wiring", "settings",
];
/// The private rooms of a module; nobody else may name them.
const ROOMS: [&str; 5] = ["model", "store", "service", "http", "error"];

/// The dependency matrix (DESIGN.md, "Allowed dependencies"): the modules each module may
/// name, through their faces. Every edge not written here fails the build's tests.
/// `platform` is the ground and knows nothing above it; `kernel` (tenancy: partner ids, the
/// principal) stands on platform alone; every domain module may use both. The ledger depends
/// on no domain module; notify on none of payment, wallet, card or aml; kyc and aml are asked
/// and never call payment or card. `cli`, `app.rs`, `wiring.rs` and `settings.rs` are the
/// composition root: they may name any face.
const MATRIX: &[(&str, &[&str])] = &[
    ("platform", &[]),
    ("kernel", &["platform"]),
    ("ledger", &["kernel", "platform"]),
    ("notify", &["kernel", "platform"]),
    ("auth", &["notify", "kernel", "platform"]),
    ("kyc", &["notify", "kernel", "platform"]),
    ("aml", &["kyc", "ledger", "notify", "kernel", "platform"]),
    ("wallet", &["ledger", "kyc", "notify", "kernel", "platform"]),
    (
        "payment",
        &["ledger", "wallet", "kyc", "notify", "kernel", "platform"],
    ),
    (
        "card",
        &[
            "ledger", "wallet", "kyc", "aml", "notify", "kernel", "platform",
        ],
    ),
];

/// Whether `module` may name `other` under `matrix`; the composition root may name anything,
/// and a module not in the matrix may name nothing.
fn may_depend_in(matrix: &[(&str, &[&str])], module: &str, other: &str) -> bool {
    if matches!(
        module,
        "cli" | "app" | "wiring" | "settings" | "lib" | "main"
    ) {
        return true;
    }
    matrix
        .iter()
        .find(|(m, _)| *m == module)
        .is_some_and(|(_, allowed)| allowed.contains(&other))
}

fn may_depend(module: &str, other: &str) -> bool {
    may_depend_in(MATRIX, module, other)
}

/// A cycle in `matrix`, as the path that closes it, if there is one.
fn cycle_in(matrix: &[(&str, &[&str])]) -> Option<Vec<String>> {
    fn visit(
        matrix: &[(&str, &[&str])],
        node: &str,
        path: &mut Vec<String>,
        done: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.iter().any(|n| n == node) {
            return None;
        }
        path.push(node.to_owned());
        let edges = matrix
            .iter()
            .find(|(m, _)| *m == node)
            .map_or(&[][..], |(_, e)| *e);
        for next in edges {
            if let Some(cycle) = visit(matrix, next, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.push(node.to_owned());
        None
    }
    let mut done = Vec::new();
    matrix
        .iter()
        .find_map(|(m, _)| visit(matrix, m, &mut Vec::new(), &mut done))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file under `src/` belongs to (`src/ledger/store.rs` -> `ledger`).
fn module_of(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(root().join("src")).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    Some(first.trim_end_matches(".rs").to_owned())
}

/// Every `crate::<other>::<item>` path in `source` that breaks rule 1, as messages.
fn boundary_violations(module: &str, source: &str) -> Vec<String> {
    let mut found = Vec::new();
    for other in GOVERNED {
        if other == module {
            continue;
        }
        let needle = format!("crate::{other}");
        let mut rest = source;
        while let Some(at) = rest.find(&needle) {
            let after = &rest[at + needle.len()..];
            rest = after;
            // `crate::ledgers` is another name, not `crate::ledger`.
            if after.starts_with(|c: char| c.is_alphanumeric() || c == '_') {
                continue;
            }
            if !may_depend(module, other) {
                found.push(format!(
                    "`{module}` must not depend on `{other}` (tests/architecture.rs MATRIX)"
                ));
                continue;
            }
            if other == "platform" || other == "kernel" {
                continue;
            }
            for item in items_after(after) {
                if ROOMS.contains(&item.as_str()) {
                    found.push(format!(
                        "`{module}` reaches into `{other}::{item}`: use the face in {other}/mod.rs"
                    ));
                }
            }
        }
    }
    found
}

/// The first path segments after `crate::x`: `::store::f` -> [store]; `::{store, Ledger}` ->
/// [store, Ledger].
fn items_after(after: &str) -> Vec<String> {
    let Some(rest) = after.strip_prefix("::") else {
        return Vec::new();
    };
    if let Some(group) = rest.strip_prefix('{') {
        let inner = group.split('}').next().unwrap_or("");
        return inner
            .split(',')
            .map(|s| s.trim().split("::").next().unwrap_or("").trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
    }
    let ident: String = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    vec![ident]
}

/// Table names declared with diesel's `table!` in the shared schema.
fn declared_tables(schema: &str) -> Vec<String> {
    let mut tables = Vec::new();
    let mut lines = schema.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim_start().starts_with("diesel::table!")
            || line.trim_start().starts_with("table!")
        {
            for next in lines.by_ref() {
                let t = next.trim();
                if t.starts_with("///") || t.starts_with("#[") || t.is_empty() {
                    continue;
                }
                let name: String = t
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    tables.push(name);
                }
                break;
            }
        }
    }
    tables
}

/// Words in `source` (identifiers, and words inside SQL strings).
fn words(source: &str) -> impl Iterator<Item = &str> {
    source
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
}

/// Rule 2 for one file: tables named outside a store, or another module's tables in a store.
fn table_violations(module: &str, file_name: &str, source: &str, tables: &[String]) -> Vec<String> {
    let is_store = file_name == "store.rs" || file_name.starts_with("store/");
    let mut found = Vec::new();
    for word in words(source) {
        if !tables.iter().any(|t| t == word) {
            continue;
        }
        if !is_store {
            found.push(format!(
                "{module}/{file_name} names table `{word}`: only store.rs may"
            ));
        } else if !word.starts_with(&format!("{module}_")) {
            found.push(format!(
                "{module}/{file_name} touches `{word}`, which `{module}` does not own"
            ));
        }
    }
    // SQL written by hand: the identifier after FROM/JOIN/INTO/UPDATE must carry the prefix.
    if is_store {
        let tokens: Vec<&str> = words(source).collect();
        for pair in tokens.windows(2) {
            let keyword = pair[0].to_ascii_uppercase();
            if matches!(keyword.as_str(), "FROM" | "JOIN" | "INTO" | "UPDATE")
                && pair[1].contains('_')
                && pair[1]
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit())
                && !pair[1].starts_with(&format!("{module}_"))
                && !pair[1].starts_with("pg_")
            {
                found.push(format!(
                    "{module}/{file_name} uses `{}` in SQL, which `{module}` does not own",
                    pair[1]
                ));
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

/// A migration `<timestamp>_<module>_<what>` creates only that module's tables.
fn migration_violations(dir_name: &str, up_sql: &str) -> Vec<String> {
    let owner = dir_name
        .split_once('_')
        .map_or("", |(_, rest)| rest)
        .split('_')
        .next()
        .unwrap_or("");
    let mut found = Vec::new();
    if owner != "platform" && !DOMAIN_MODULES.contains(&owner) {
        found.push(format!(
            "migration {dir_name} is not named <timestamp>_<module>_<what>"
        ));
        return found;
    }
    let tokens: Vec<String> = words(up_sql).map(str::to_ascii_lowercase).collect();
    for w in tokens.windows(3) {
        if w[0] == "create" && (w[1] == "table" || w[1] == "function" || w[1] == "view") {
            let name = if w[2] == "if" {
                None
            } else {
                Some(w[2].as_str())
            };
            if let Some(name) = name
                && !name.starts_with(&format!("{owner}_"))
            {
                found.push(format!(
                    "migration {dir_name} creates `{name}` outside `{owner}_`"
                ));
            }
        }
    }
    found
}

#[test]
fn modules_reach_each_other_only_through_their_faces() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    assert!(!files.is_empty());
    let mut violations = Vec::new();
    for file in &files {
        let Some(module) = module_of(file) else {
            continue;
        };
        let source = fs::read_to_string(file).unwrap();
        for v in boundary_violations(&module, &source) {
            violations.push(format!("{}: {v}", file.display()));
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn every_source_directory_is_a_known_module() {
    for entry in fs::read_dir(root().join("src")).unwrap().flatten() {
        if entry.path().is_dir() {
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(
                name == "platform"
                    || name == "kernel"
                    || name == "cli"
                    || DOMAIN_MODULES.contains(&name.as_str()),
                "src/{name} is not a module of DESIGN.md; add it to DOMAIN_MODULES"
            );
        }
    }
}

#[test]
fn stores_touch_only_their_own_tables() {
    let schema = fs::read_to_string(root().join("src/platform/db/schema.rs")).unwrap_or_default();
    let tables = declared_tables(&schema);
    let mut violations = Vec::new();
    for module in DOMAIN_MODULES {
        let dir = root().join("src").join(module);
        let mut files = Vec::new();
        rust_files(&dir, &mut files);
        for file in files {
            let rel = file
                .strip_prefix(&dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let source = fs::read_to_string(&file).unwrap();
            violations.extend(table_violations(module, &rel, &source, &tables));
        }
    }
    for table in &tables {
        let owner = table.split('_').next().unwrap_or("");
        if !DOMAIN_MODULES.contains(&owner) && owner != "platform" {
            violations.push(format!("table `{table}` has no owner prefix"));
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn each_migration_belongs_to_one_module() {
    let mut violations = Vec::new();
    let mut count = 0;
    for entry in fs::read_dir(root().join("migrations")).unwrap().flatten() {
        if !entry.path().is_dir() {
            continue;
        }
        count += 1;
        let name = entry.file_name().to_string_lossy().into_owned();
        let up = fs::read_to_string(entry.path().join("up.sql")).unwrap();
        assert!(
            entry.path().join("down.sql").exists(),
            "{name} has no down.sql"
        );
        violations.extend(migration_violations(&name, &up));
    }
    assert!(count > 0);
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

// The checkers against fixtures: each rule must be able to fail.

#[test]
fn the_boundary_check_catches_a_reach_into_another_modules_room() {
    assert!(boundary_violations("payment", "use crate::ledger::{Ledger, LedgerError};").is_empty());
    assert!(boundary_violations("payment", "let x = crate::ledger::new();").is_empty());
    assert_eq!(
        boundary_violations("payment", "use crate::ledger::store::insert;").len(),
        1
    );
    assert_eq!(
        boundary_violations("payment", "use crate::ledger::{Ledger, service::X};").len(),
        1
    );
    assert_eq!(
        boundary_violations("ledger", "use crate::wallet::WalletId;").len(),
        1
    );
    assert_eq!(
        boundary_violations("platform", "use crate::kernel::Principal;").len(),
        1
    );
    assert_eq!(
        boundary_violations("platform", "use crate::auth::AuthService;").len(),
        1
    );
    assert_eq!(
        boundary_violations("notify", "use crate::auth::AuthService;").len(),
        1
    );
    assert_eq!(
        boundary_violations("kyc", "use crate::payment::Payment;").len(),
        1
    );
    assert_eq!(
        boundary_violations("kernel", "use crate::auth::AuthService;").len(),
        1
    );
    assert!(boundary_violations("notify", "use crate::kernel::Principal;").is_empty());
    assert!(boundary_violations("kernel", "use crate::platform::error::ApiError;").is_empty());
    assert!(boundary_violations("app", "use crate::payment::PaymentService;").is_empty());
    assert!(boundary_violations("settings", "use crate::ledger::LedgerSettings;").is_empty());
    assert_eq!(
        boundary_violations("platform", "use crate::settings::Settings;").len(),
        1,
        "the composed settings name every module: platform must not see them"
    );
    assert_eq!(
        boundary_violations("ledger", "use crate::settings::Settings;").len(),
        1,
        "a module takes its own section, never the whole"
    );
    assert_eq!(
        boundary_violations("brand_new", "use crate::ledger::Ledger;").len(),
        1,
        "a module missing from the matrix may depend on nothing"
    );
    assert!(boundary_violations("ledger", "use crate::ledger::store;").is_empty());
    assert!(boundary_violations("payment", "use crate::ledgers::store;").is_empty());
}

#[test]
fn the_dependency_matrix_has_no_cycles() {
    assert_eq!(cycle_in(MATRIX), None);
    for (module, edges) in MATRIX {
        for other in *edges {
            assert!(
                GOVERNED.contains(other),
                "{module} -> {other}: not a module"
            );
        }
        assert!(GOVERNED.contains(module), "{module}: not a module");
    }
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let cyclic: &[(&str, &[&str])] = &[
        ("auth", &["notify"]),
        ("notify", &["kyc"]),
        ("kyc", &["auth"]),
    ];
    let cycle = cycle_in(cyclic).unwrap();
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 4);
    assert_eq!(cycle_in(&[("auth", &["notify"]), ("notify", &[])]), None);
}

#[test]
fn the_table_check_catches_foreign_tables_and_tables_outside_stores() {
    let tables = declared_tables(
        "diesel::table! {\n    /// doc\n    ledger_accounts (id) {\n        id -> Uuid,\n    }\n}\n\
         diesel::table! {\n    wallet_wallets (id) {\n        id -> Uuid,\n    }\n}\n",
    );
    assert_eq!(tables, vec!["ledger_accounts", "wallet_wallets"]);
    assert!(
        table_violations(
            "ledger",
            "store.rs",
            "ledger_accounts::table.find(id)",
            &tables
        )
        .is_empty()
    );
    assert_eq!(
        table_violations("ledger", "store.rs", "wallet_wallets::table", &tables).len(),
        1
    );
    assert_eq!(
        table_violations("ledger", "service.rs", "ledger_accounts::table", &tables).len(),
        1
    );
    assert_eq!(
        table_violations(
            "ledger",
            "store.rs",
            r#"sql_query("SELECT 1 FROM kyc_customers")"#,
            &tables
        )
        .len(),
        1
    );
    assert!(
        table_violations(
            "ledger",
            "store.rs",
            r#"sql_query("UPDATE ledger_accounts SET x")"#,
            &tables
        )
        .is_empty()
    );
}

#[test]
fn the_migration_check_catches_tables_of_another_module() {
    assert!(
        migration_violations(
            "2026-01-01-000000_ledger_accounts",
            "CREATE TABLE ledger_accounts (id uuid);"
        )
        .is_empty()
    );
    assert_eq!(
        migration_violations(
            "2026-01-01-000000_ledger_accounts",
            "CREATE TABLE wallet_x (id uuid);"
        )
        .len(),
        1
    );
    assert_eq!(
        migration_violations("2026-01-01-000000_misc", "CREATE TABLE x (id uuid);").len(),
        1
    );
}
