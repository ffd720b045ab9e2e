//! Finding the system's PostgreSQL server binaries, and the major versions of the binaries
//! and of an existing cluster, which must match.

use std::ffi::OsStr;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};

use super::cluster::Cluster;
use super::{EmbeddedError, io_err};

/// Where server binaries are looked for when neither PATH nor pg_config has them.
/// One `*` per pattern; among its matches the highest version wins.
const FALLBACK_BIN_GLOBS: &[&str] = &[
    "/usr/lib/postgresql/*/bin",
    "/usr/local/pgsql/bin",
    "/opt/homebrew/opt/postgresql*/bin",
    "/usr/pgsql-*/bin",
];

/// Find the directory holding the PostgreSQL server binaries (`initdb`, `pg_ctl`).
///
/// The embedded server runs the system's own PostgreSQL, so we look where
/// installs put it: a PATH directory with both (symlinks resolved to the real
/// bin dir), then `pg_config --bindir`, then `/usr/lib/postgresql/*/bin`
/// (highest version), `/usr/local/pgsql/bin`,
/// `/opt/homebrew/opt/postgresql*/bin`, `/usr/pgsql-*/bin`.
pub fn find_bin_dir() -> Result<PathBuf, EmbeddedError> {
    let path_var = std::env::var_os("PATH");
    discover_bin_dir(
        path_var.as_deref(),
        || pg_config_bindir(path_var.as_deref()),
        FALLBACK_BIN_GLOBS,
    )
    .ok_or(EmbeddedError::BinariesNotFound)
}

/// The discovery order of [`find_bin_dir`], with PATH, pg_config and the
/// fallback patterns passed in so that it can be tested.
pub(super) fn discover_bin_dir(
    path_var: Option<&OsStr>,
    pg_config_bindir: impl FnOnce() -> Option<PathBuf>,
    fallback_globs: &[&str],
) -> Option<PathBuf> {
    if let Some(path_var) = path_var {
        for dir in std::env::split_paths(path_var) {
            if !has_server_binaries(&dir) {
                continue;
            }
            // Resolve e.g. /usr/local/bin/pg_ctl -> /usr/lib/postgresql/15/bin/pg_ctl:
            // pg_ctl finds `postgres` next to its real self.
            if let Ok(real) = std::fs::canonicalize(dir.join("pg_ctl"))
                && let Some(real_dir) = real.parent()
                && has_server_binaries(real_dir)
            {
                return Some(real_dir.to_path_buf());
            }
        }
    }
    if let Some(dir) = pg_config_bindir()
        && has_server_binaries(&dir)
    {
        return Some(std::fs::canonicalize(&dir).unwrap_or(dir));
    }
    fallback_globs
        .iter()
        .flat_map(|pattern| expand_glob(pattern))
        .find(|dir| has_server_binaries(dir))
}

/// `pg_config --bindir`, if a pg_config is on PATH and answers.
fn pg_config_bindir(path_var: Option<&OsStr>) -> Option<PathBuf> {
    let pg_config = std::env::split_paths(path_var?)
        .map(|dir| dir.join("pg_config"))
        .find(|p| is_executable(p))?;
    let out = StdCommand::new(pg_config)
        .arg("--bindir")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let dir = text.trim();
    (!dir.is_empty()).then(|| PathBuf::from(dir))
}

pub(super) fn has_server_binaries(dir: &Path) -> bool {
    is_executable(&dir.join("initdb")) && is_executable(&dir.join("pg_ctl"))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Expand a pattern with at most one `*` inside one path component, best
/// version first (so `/usr/lib/postgresql/*/bin` gives 16 before 15 before 9.6).
fn expand_glob(pattern: &str) -> Vec<PathBuf> {
    let Some(star) = pattern.find('*') else {
        return vec![PathBuf::from(pattern)];
    };
    let parent_end = pattern[..star].rfind('/').map_or(0, |i| i + 1);
    let parent = &pattern[..parent_end];
    let rest = &pattern[star + 1..];
    let (component_suffix, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let component_prefix = &pattern[parent_end..star];
    let parent_dir = if parent.is_empty() { "." } else { parent };
    let Ok(entries) = std::fs::read_dir(parent_dir) else {
        return Vec::new();
    };
    let mut matches: Vec<(Vec<u64>, String, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let middle = name
                .strip_prefix(component_prefix)?
                .strip_suffix(component_suffix)?;
            let key = version_key(middle);
            let path = PathBuf::from(format!("{parent}{name}{tail}"));
            Some((key, name, path))
        })
        .collect();
    matches.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
    matches.into_iter().map(|(_, _, path)| path).collect()
}

/// The numbers in a string, in order, for comparing versions ("9.6" < "15" < "16").
fn version_key(s: &str) -> Vec<u64> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter(|part| !part.is_empty())
        .filter_map(|part| part.parse().ok())
        .collect()
}

/// The major version from `pg_ctl --version` output such as
/// "pg_ctl (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)": "15" (or "9.6" before 10).
pub(super) fn parse_major_version(output: &str) -> Option<String> {
    let token = output
        .split_whitespace()
        .find(|t| t.starts_with(|c: char| c.is_ascii_digit()))?;
    let numbers = version_key(token);
    match numbers.as_slice() {
        [major, ..] if *major >= 10 => Some(major.to_string()),
        [major, minor, ..] => Some(format!("{major}.{minor}")),
        _ => None,
    }
}

pub(super) async fn binaries_major_version(bin_dir: &Path) -> Result<String, EmbeddedError> {
    let out = tokio::process::Command::new(bin_dir.join("pg_ctl"))
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(io_err(format!(
            "running pg_ctl --version from {}",
            bin_dir.display()
        )))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    parse_major_version(&text).ok_or_else(|| EmbeddedError::UnknownVersion {
        bin_dir: bin_dir.to_path_buf(),
        output: text.trim().to_string(),
    })
}

/// The major version in `<data>/PG_VERSION`, or None if there is no cluster yet.
pub(super) async fn cluster_major_version(
    data_dir: &Path,
) -> Result<Option<String>, EmbeddedError> {
    let file = data_dir.join("PG_VERSION");
    match tokio::fs::read_to_string(&file).await {
        Ok(text) => Ok(Some(text.trim().to_string())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(format!("reading {}", file.display()))(e)),
    }
}

pub(super) fn check_versions(
    cluster: &Cluster,
    data_version: &str,
    bin_version: &str,
) -> Result<(), EmbeddedError> {
    if data_version == bin_version {
        Ok(())
    } else {
        Err(EmbeddedError::VersionMismatch {
            data_dir: cluster.data_dir.clone(),
            data_version: data_version.to_string(),
            bin_version: bin_version.to_string(),
            bin_dir: cluster.bin_dir.clone(),
        })
    }
}
