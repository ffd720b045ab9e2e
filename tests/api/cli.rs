//! The `flowlet` binary as an operator runs it: serve, migrate, admin, signals, exit codes.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{empty_database, free_port, redis_url, test_database};

pub(crate) fn flowlet() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flowlet"));
    // Only what each test sets: never the developer's own FLOWLET_* variables.
    for (key, _) in std::env::vars() {
        if key.starts_with("FLOWLET") {
            cmd.env_remove(key);
        }
    }
    cmd.env(
        "FLOWLET_CONFIG_DIR",
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config"),
    )
    .env("FLOWLET__LOG__FORMAT", "json")
    .env("FLOWLET__LOG__LEVEL", "info")
    .stdin(Stdio::null());
    cmd
}

/// Runs `flowlet ARGS` against `app`'s database (no SMTP, mail to a scratch directory) and
/// returns its output.
/// `flowlet` configured like `app`: its database, and its Redis with its key prefix (the
/// state the CLI shares with the replicas, e.g. the API keys' epoch).
fn flowlet_for(app: &crate::helpers::TestApp) -> Command {
    let mut cmd = flowlet();
    cmd.env("FLOWLET__DATABASE__URL", &app.db_url)
        .env("FLOWLET__REDIS__URL", redis_url())
        .env("FLOWLET__REDIS__KEY_PREFIX", &app.settings.redis.key_prefix);
    cmd
}

pub async fn flowlet_on(app: &crate::helpers::TestApp, args: &[&str]) -> Output {
    flowlet_on_env(app, args, &[]).await
}

/// [`flowlet_on`] with extra environment (e.g. a rotated key).
pub async fn flowlet_on_env(
    app: &crate::helpers::TestApp,
    args: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let mut cmd = flowlet_for(app);
    cmd.args(args);
    for (key, value) in env {
        cmd.env(key, value);
    }
    tokio::task::spawn_blocking(move || run(&mut cmd))
        .await
        .unwrap()
}

/// Runs `flowlet ARGS` against `app`'s database with `stdin` fed to it (passwords).
pub async fn flowlet_on_with_stdin(
    app: &crate::helpers::TestApp,
    args: &[&str],
    stdin: &str,
) -> Output {
    let mut cmd = flowlet_for(app);
    cmd.args(args);
    let stdin = stdin.to_owned();
    tokio::task::spawn_blocking(move || run_with_stdin(&mut cmd, &stdin))
        .await
        .unwrap()
}

/// Runs `flowlet ARGS` against `app`'s database; it must succeed, and print JSON.
pub async fn flowlet_json(app: &crate::helpers::TestApp, args: &[&str]) -> serde_json::Value {
    json_of(&flowlet_on(app, args).await)
}

/// Waits until GET `path` answers (any status), or fails after `timeout`.
async fn wait_for(port: u16, path: &str, timeout: Duration) -> reqwest::StatusCode {
    flowlet::platform::tls::install_crypto_provider();
    let started = Instant::now();
    loop {
        if let Ok(resp) = reqwest::get(format!("http://127.0.0.1:{port}{path}")).await {
            return resp.status();
        }
        assert!(
            started.elapsed() < timeout,
            "the server did not come up in {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends SIGTERM and waits for the process, returning its output.
fn terminate(child: Child) -> Output {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    child.wait_with_output().unwrap()
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn help_explains_each_command() {
    let out = run(flowlet().arg("--help"));
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for line in [
        "serve",
        "migrate",
        "admin",
        "Run the HTTP API",
        "Apply pending database migrations",
    ] {
        assert!(help.contains(line), "{help}");
    }
    let admin = String::from_utf8(run(flowlet().args(["admin", "--help"])).stdout).unwrap();
    assert!(
        admin.contains("migrations") && admin.contains("config"),
        "{admin}"
    );
}

#[test]
fn production_refuses_to_start_with_development_secrets_and_names_them() {
    let out = run(flowlet().arg("serve").env("FLOWLET_ENV", "production"));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("auth.jwt_secret"), "{err}");
    assert!(err.contains("FLOWLET__AUTH__JWT_SECRET"), "{err}");
    // The same start-up names the sandbox rail, which production runs only when allowed.
    assert!(err.contains("payments.rail"), "{err}");
}

#[test]
fn production_refuses_the_sandbox_rail_unless_the_operator_allows_it() {
    let out = run(flowlet()
        .args(["admin", "config"])
        .env("FLOWLET_ENV", "production")
        .env("FLOWLET__PAYMENTS__ALLOW_SANDBOX_RAIL", "false"));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("payments.rail"), "{err}");
    assert!(
        err.contains("FLOWLET__PAYMENTS__ALLOW_SANDBOX_RAIL"),
        "{err}"
    );
    let out = run(flowlet()
        .args(["admin", "config"])
        .env("FLOWLET_ENV", "production")
        .env("FLOWLET__PAYMENTS__ALLOW_SANDBOX_RAIL", "true"));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!err.contains("payments.rail"), "{err}");
}

#[test]
fn a_bad_bind_address_stops_start_up_naming_the_key() {
    let out = run(flowlet()
        .arg("serve")
        .env("FLOWLET__SERVER__BIND", "not-an-address"));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("server.bind")
    );
}

#[test]
fn an_unknown_log_format_stops_start_up_naming_the_key() {
    let out = run(flowlet().arg("migrate").env("FLOWLET__LOG__FORMAT", "yaml"));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("log.format")
    );
}

#[tokio::test]
async fn serve_with_a_database_url_answers_and_exits_0_on_sigterm() {
    let database = test_database().await;
    let port = free_port();
    let child = flowlet()
        .arg("serve")
        .env("FLOWLET__DATABASE__URL", &database.url)
        .env("FLOWLET__REDIS__URL", redis_url())
        .env("FLOWLET__SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("FLOWLET__SERVER__WORKERS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(
        wait_for(port, "/health", Duration::from_secs(30)).await,
        200
    );
    assert_eq!(wait_for(port, "/ready", Duration::from_secs(5)).await, 200);
    let out = terminate(child);
    let logs = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{logs}");
    assert!(logs.contains("shutdown complete"), "{logs}");
    for line in logs.lines() {
        let entry: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log lines are JSON when log.format=json ({e}): {line}"));
        assert!(entry["level"].is_string(), "{line}");
    }
}

#[tokio::test]
async fn serve_without_a_database_url_runs_its_own_postgres_and_reuses_it() {
    // A fresh clone under a 0700 home, as root's is in containers and CI runners: as root,
    // PostgreSQL runs as `postgres`, which cannot enter it, so the default directory moves
    // under the temp dir. Nothing is configured at all.
    let home = tempfile::tempdir().unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let clone = home.path().join("clone");
    std::fs::create_dir(&clone).unwrap();
    let start = || {
        let port = free_port();
        let child = flowlet()
            .arg("serve")
            .current_dir(&clone)
            .env("FLOWLET__SERVER__BIND", format!("127.0.0.1:{port}"))
            .env("FLOWLET__SERVER__WORKERS", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        (port, child)
    };

    let (port, child) = start();
    assert_eq!(
        wait_for(port, "/health", Duration::from_secs(60)).await,
        200
    );
    assert_eq!(wait_for(port, "/ready", Duration::from_secs(10)).await, 200);
    let first = terminate(child);
    let first_logs = String::from_utf8_lossy(&first.stderr).into_owned();
    let data = embedded_data_dir(&first_logs);
    let _cleanup = RemoveOnDrop(data.parent().unwrap().to_path_buf());
    assert_eq!(first.status.code(), Some(0), "{first_logs}");
    assert!(
        first_logs.contains("initialising a new embedded PostgreSQL cluster"),
        "{first_logs}"
    );
    assert!(first_logs.contains("migrations applied"), "{first_logs}");
    if nix::unistd::Uid::effective().is_root() {
        let tmp = std::fs::canonicalize(std::env::temp_dir()).unwrap();
        assert!(data.starts_with(&tmp), "{}", data.display());
        assert!(
            !clone.join(".flowlet/postgres").exists(),
            "no cluster in the clone"
        );
        assert!(
            first_logs.contains("using a private one under the temp dir instead"),
            "{first_logs}"
        );
    } else {
        let expected = std::fs::canonicalize(&clone).unwrap();
        assert_eq!(data, expected.join(".flowlet/postgres/data"));
    }
    assert_embedded_stopped(&data);

    let (port, child) = start();
    assert_eq!(wait_for(port, "/ready", Duration::from_secs(60)).await, 200);
    let second = terminate(child);
    let second_logs = String::from_utf8_lossy(&second.stderr).into_owned();
    assert_eq!(second.status.code(), Some(0), "{second_logs}");
    assert_eq!(
        embedded_data_dir(&second_logs),
        data,
        "the same place again"
    );
    assert!(
        !second_logs.contains("initialising"),
        "the data was reused: {second_logs}"
    );
    assert!(
        !second_logs.contains("migrations applied"),
        "already migrated: {second_logs}"
    );
    assert_embedded_stopped(&data);
}

#[test]
fn an_embedded_dir_an_operator_chose_is_never_moved() {
    if !nix::unistd::Uid::effective().is_root() {
        return; // Only root hands the server to another user.
    }
    let home = tempfile::tempdir().unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let chosen = home.path().join("pg");
    let out = run(flowlet()
        .arg("serve")
        .env("FLOWLET__DATABASE__EMBEDDED_DIR", &chosen)
        .env(
            "FLOWLET__SERVER__BIND",
            format!("127.0.0.1:{}", free_port()),
        ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("cannot reach") && stderr.contains("FLOWLET__DATABASE__EMBEDDED_DIR"),
        "{stderr}"
    );
    assert!(!chosen.exists(), "nothing was created there");
}

/// Where the embedded PostgreSQL's cluster was, from a `serve`'s JSON logs.
fn embedded_data_dir(logs: &str) -> PathBuf {
    logs.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find_map(|line| {
            let fields = line.get("fields").unwrap_or(&line);
            let message = fields["message"].as_str()?;
            (message == "starting embedded PostgreSQL")
                .then(|| PathBuf::from(fields["data_dir"].as_str().unwrap()))
        })
        .unwrap_or_else(|| panic!("no start logged: {logs}"))
}

/// Removes a directory when the test ends, passed or not.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        drop(std::fs::remove_dir_all(&self.0));
    }
}

/// The postmaster removes its pid file on a clean stop.
fn assert_embedded_stopped(data: &Path) {
    assert!(data.join("PG_VERSION").exists(), "the cluster is kept");
    assert!(
        !data.join("postmaster.pid").exists(),
        "PostgreSQL was stopped"
    );
}

#[tokio::test]
async fn two_migrate_commands_at_once_both_succeed_and_apply_each_migration_once() {
    let database = empty_database().await;
    let spawn = || {
        flowlet()
            .arg("migrate")
            .env("FLOWLET__DATABASE__URL", &database.url)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    let outputs = [
        String::from_utf8(a.stdout).unwrap(),
        String::from_utf8(b.stdout).unwrap(),
    ];
    assert_eq!(
        outputs
            .iter()
            .filter(|o| o.contains("No pending migrations"))
            .count(),
        1,
        "{outputs:?}"
    );

    let status = run(flowlet()
        .args(["admin", "migrations", "--json"])
        .env("FLOWLET__DATABASE__URL", &database.url));
    assert!(status.status.success());
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(json["pending"], serde_json::json!([]));
    assert!(!json["applied"].as_array().unwrap().is_empty());
}

#[test]
fn admin_migrations_prints_a_table_and_fails_when_the_database_is_unreachable() {
    let out = run(flowlet()
        .args(["admin", "migrations"])
        .env(
            "FLOWLET__DATABASE__URL",
            "postgres://postgres@127.0.0.1:1/none",
        )
        .env("FLOWLET__DATABASE__CONNECT_TIMEOUT_MS", "1000"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PostgreSQL"));
}

#[test]
fn admin_config_shows_settings_but_never_secrets() {
    let out = run(flowlet()
        .args(["admin", "config"])
        .env("FLOWLET__DATABASE__URL", "postgres://u:hunter2@db/x")
        .env(
            "FLOWLET__AUTH__JWT_SECRET",
            "do-not-print-this-secret-value-123",
        ));
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("server.bind"), "{text}");
    assert!(
        !text.contains("hunter2") && !text.contains("do-not-print"),
        "{text}"
    );

    let json = run(flowlet().args(["admin", "config", "--json"]));
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value["database_url"], "<unset>");
}

/// Runs `flowlet` with `stdin` fed to it.
fn run_with_stdin(cmd: &mut Command, stdin: &str) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn json_of(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The operator's path end to end (bootstrap, partner, keys, users), then the partner's
/// path over HTTP (login, key creation, password reset), with every log line at debug level
/// searched for the secrets that went through it.
#[tokio::test]
async fn operator_verbs_work_and_no_secret_ever_reaches_the_logs() {
    let database = test_database().await;
    let mail = tempfile::tempdir().unwrap();
    let with_db = |cmd: &mut Command| {
        cmd.env("FLOWLET__DATABASE__URL", &database.url)
            .env("FLOWLET__SMTP__MAIL_DIR", mail.path())
            .env("FLOWLET__LOG__LEVEL", "debug");
    };
    let mut logs = String::new();
    let admin_password = "opal-meadow-kettle-57";
    let user_password = "cinder-harbor-violin-88";

    let mut cmd = flowlet();
    with_db(cmd.args([
        "admin",
        "bootstrap",
        "--email",
        "root@flowlet.example",
        "--json",
    ]));
    let out = run_with_stdin(&mut cmd, &format!("{admin_password}\n"));
    logs.push_str(&String::from_utf8_lossy(&out.stderr));
    let admin = json_of(&out);
    assert_eq!(admin["role"], "platform_admin");
    assert!(admin["id"].as_str().unwrap().starts_with("usr_"));

    let mut cmd = flowlet();
    with_db(cmd.args(["admin", "bootstrap", "--email", "second@flowlet.example"]));
    let again = run_with_stdin(&mut cmd, &format!("{admin_password}\n"));
    assert_eq!(again.status.code(), Some(1), "bootstrap runs once");
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    let mut cmd = flowlet();
    with_db(cmd.args([
        "admin",
        "partner",
        "create",
        "--name",
        "Acme",
        "--email",
        "ops@acme.example",
        "--json",
    ]));
    let out = run(&mut cmd);
    logs.push_str(&String::from_utf8_lossy(&out.stderr));
    let created = json_of(&out);
    let partner_id = created["partner"]["id"].as_str().unwrap().to_owned();
    let partner_key = created["api_key"]["secret"].as_str().unwrap().to_owned();
    assert!(partner_id.starts_with("ptn_"));
    assert!(
        created["api_key"]["id"]
            .as_str()
            .unwrap()
            .starts_with("key_")
    );

    let mut cmd = flowlet();
    with_db(cmd.args([
        "admin",
        "api-key",
        "create",
        "--partner",
        &partner_id,
        "--name",
        "ci",
        "--scopes",
        "wallets:read,auth:read",
        "--json",
    ]));
    let out = run(&mut cmd);
    logs.push_str(&String::from_utf8_lossy(&out.stderr));
    let ci_key = json_of(&out);
    assert_eq!(
        ci_key["scopes"],
        serde_json::json!(["wallets:read", "auth:read"])
    );
    let ci_secret = ci_key["secret"].as_str().unwrap().to_owned();

    let mut cmd = flowlet();
    with_db(cmd.args([
        "admin",
        "user",
        "create",
        "--partner",
        &partner_id,
        "--email",
        "dev@acme.example",
        "--role",
        "partner_admin",
        "--json",
    ]));
    let out = run_with_stdin(&mut cmd, &format!("{user_password}\n"));
    logs.push_str(&String::from_utf8_lossy(&out.stderr));
    assert_eq!(json_of(&out)["role"], "partner_admin");

    let mut cmd = flowlet();
    with_db(cmd.args([
        "admin",
        "user",
        "create",
        "--partner",
        &partner_id,
        "--email",
        "weak@acme.example",
        "--role",
        "partner_admin",
    ]));
    let weak = run_with_stdin(&mut cmd, "password\n");
    assert_eq!(
        weak.status.code(),
        Some(1),
        "the password policy applies to operators too"
    );

    let port = free_port();
    let mut cmd = flowlet();
    with_db(
        cmd.arg("serve")
            .env("FLOWLET__REDIS__URL", redis_url())
            .env(
                "FLOWLET__REDIS__KEY_PREFIX",
                format!("t:{}:", uuid::Uuid::now_v7().simple()),
            )
            .env("FLOWLET__SERVER__BIND", format!("127.0.0.1:{port}"))
            .env("FLOWLET__SERVER__WORKERS", "1"),
    );
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(
        wait_for(port, "/health", Duration::from_secs(30)).await,
        200
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();

    let login: serde_json::Value = http
        .post(format!("{base}/v1/auth/login"))
        .json(&serde_json::json!({"email": "dev@acme.example", "password": user_password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access_token = login["access_token"]
        .as_str()
        .expect("logged in")
        .to_owned();
    let new_key: serde_json::Value = http
        .post(format!("{base}/v1/api-keys"))
        .bearer_auth(&access_token)
        .json(&serde_json::json!({"name": "made over http"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let http_secret = new_key["secret"].as_str().unwrap().to_owned();
    for token in [&partner_key, &ci_secret, &http_secret] {
        let status = http
            .get(format!("{base}/v1/auth/me"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
    }
    // A customer's personal data goes through the server and never into its logs.
    let customer = serde_json::json!({
        "first_name": "Philippa", "last_name": "Wrexham-Odunsi", "date_of_birth": "1983-07-19",
        "country": "GB", "email": "philippa.wo@example.com",
        "address": {"line1": "14 Quillfeather Lane", "city": "Leeds", "postal_code": "LS1 4AP",
                    "country": "GB"}
    });
    let created: serde_json::Value = http
        .post(format!("{base}/v1/customers"))
        .bearer_auth(&partner_key)
        .json(&customer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let customer_id = created["id"].as_str().expect("customer created");
    let submitted = http
        .post(format!("{base}/v1/customers/{customer_id}/kyc"))
        .bearer_auth(&partner_key)
        .json(
            &serde_json::json!({"document_type": "passport", "document_number": "Q9Z8Y7X65",
                                  "document_country": "GB"}),
        )
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(submitted, 201);
    let mut bad = customer.clone();
    bad["country"] = serde_json::json!("Wrexhamshire");
    let refused = http
        .post(format!("{base}/v1/customers"))
        .bearer_auth(&partner_key)
        .json(&bad)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(refused, 400);
    http.post(format!("{base}/v1/auth/password-reset"))
        .json(&serde_json::json!({"email": "dev@acme.example"}))
        .send()
        .await
        .unwrap();
    let started = Instant::now();
    let reset_token = loop {
        let mail = crate::mailbox::read_mail_dir(mail.path()).unwrap_or_default();
        if let Some(token) = mail
            .iter()
            .flat_map(|m| m.text.split_whitespace())
            .find(|w| w.starts_with("flr_"))
        {
            break token.to_owned();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no reset mail");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let new_password = "sable-orchard-lantern-64";
    let status = http
        .post(format!("{base}/v1/auth/password-reset/confirm"))
        .json(&serde_json::json!({"token": reset_token, "new_password": new_password}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 204);
    let out = terminate(child);
    logs.push_str(&String::from_utf8_lossy(&out.stderr));

    let mut cmd = flowlet();
    with_db(cmd.args([
        "admin",
        "api-key",
        "revoke",
        ci_key["id"].as_str().unwrap(),
        "--json",
    ]));
    let out = run(&mut cmd);
    logs.push_str(&String::from_utf8_lossy(&out.stderr));
    assert_eq!(json_of(&out)["revoked"], true);

    assert!(
        logs.contains("request completed"),
        "the server's request logs were captured"
    );
    for (what, secret) in [
        ("admin password", admin_password),
        ("user password", user_password),
        ("new password", new_password),
        ("partner key", partner_key.as_str()),
        ("CLI-made key", ci_secret.as_str()),
        ("HTTP-made key", http_secret.as_str()),
        ("access token", access_token.as_str()),
        ("reset token", reset_token.as_str()),
        ("customer's first name", "Philippa"),
        ("customer's last name", "Wrexham"),
        ("customer's date of birth", "1983-07-19"),
        ("customer's email", "philippa.wo"),
        ("customer's street", "Quillfeather"),
        ("customer's document number", "Q9Z8Y7X65"),
    ] {
        assert!(!logs.contains(secret), "the {what} appears in the logs");
    }
    // Not even a recognisable piece of a token's signature or a key's random part.
    assert!(!logs.contains(&access_token[access_token.len() - 20..]));
    assert!(!logs.contains(&partner_key[partner_key.len() - 20..]));
}

#[tokio::test]
async fn admin_ledger_verify_passes_on_sound_books_and_reports_a_broken_invariant() {
    let app = crate::helpers::spawn_app().await;
    let partner = app.new_partner().await;
    let mut ids = Vec::new();
    for flags in [
        serde_json::json!([]),
        serde_json::json!(["debits_must_not_exceed_credits"]),
    ] {
        let v: serde_json::Value = app
            .post_as(
                &partner.key,
                "/v1/ledger/accounts",
                &serde_json::json!({"currency": "EUR", "flags": flags}),
            )
            .await
            .json()
            .await
            .unwrap();
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    let body = serde_json::json!({"transfers": [
        {"debit_account_id": ids[0], "credit_account_id": ids[1], "amount": "12.50", "currency": "EUR"}
    ]});
    app.post_as(&partner.key, "/v1/ledger/transfers", &body)
        .await;

    let verify = |json: bool| {
        let mut cmd = flowlet();
        cmd.args(["admin", "ledger", "verify"])
            .env("FLOWLET__DATABASE__URL", &app.db_url);
        if json {
            cmd.arg("--json");
        }
        run(&mut cmd)
    };
    let ok = verify(false);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("every invariant holds"));

    let tb = run(flowlet()
        .args([
            "admin",
            "ledger",
            "trial-balance",
            "--currency",
            "EUR",
            "--json",
        ])
        .env("FLOWLET__DATABASE__URL", &app.db_url));
    let rows: serde_json::Value = serde_json::from_slice(&tb.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["debits_posted"], "1250");
    assert_eq!(rows[0]["credits_posted"], "1250");

    // Someone edits a cached total behind the ledger's back.
    let mut conn = app.db().await;
    diesel_async::SimpleAsyncConnection::batch_execute(
        &mut conn,
        "UPDATE ledger_accounts SET credits_posted = credits_posted + 1 WHERE flags = 1",
    )
    .await
    .unwrap();
    let broken = verify(true);
    assert_eq!(broken.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&broken.stdout).unwrap();
    assert_eq!(report["ok"], false);
    let checks: Vec<&str> = report["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["check"].as_str().unwrap())
        .collect();
    assert!(checks.contains(&"account_equals_entries"), "{checks:?}");
    assert!(checks.contains(&"totals_balance"), "{checks:?}");
    let table = verify(false);
    assert_eq!(table.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&table.stdout).contains("account_equals_entries"));
}

#[tokio::test]
async fn migrate_in_production_needs_only_the_database_url_as_the_hook_job_has_it() {
    let database = empty_database().await;
    // No JWT, API-key or KYC secret, no Redis: exactly what the chart's migration Job gets.
    let out = run(flowlet()
        .arg("migrate")
        .env("FLOWLET_ENV", "production")
        .env("FLOWLET__DATABASE__URL", &database.url)
        .env("FLOWLET__DATABASE__ALLOW_PLAINTEXT", "true")
        .env("FLOWLET__DATABASE__MIGRATION_LOCK_WAIT_MS", "5000"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Applied"));
    // serve, by contrast, still refuses production's development secrets.
    let out = run(flowlet()
        .args(["admin", "migrations"])
        .env("FLOWLET_ENV", "production")
        .env("FLOWLET__DATABASE__URL", &database.url)
        .env("FLOWLET__DATABASE__ALLOW_PLAINTEXT", "true"));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("FLOWLET__AUTH__JWT_SECRET"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
