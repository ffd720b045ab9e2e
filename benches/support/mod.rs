//! What the benchmarks share: their scratch database on a PostgreSQL server, their
//! configuration from the environment, and the arithmetic of their figures.

use std::future::Future;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, anyhow};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use uuid::Uuid;

/// Loopback without TLS (`sslmode=disable`), so figures compare across releases; to measure
/// with TLS, set `FLOWLET_BENCH_DATABASE_URL` with `sslmode=require`.
const DEFAULT_SERVER_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable";

/// The maintenance database URL the benches create their scratch database through:
/// `FLOWLET_BENCH_DATABASE_URL`, else the local server.
pub fn server_url() -> String {
    std::env::var("FLOWLET_BENCH_DATABASE_URL").unwrap_or_else(|_| DEFAULT_SERVER_URL.to_owned())
}

/// The variable `name` parsed, or `default` when it is unset; a value that does not parse is
/// an error (a typo must not silently measure the default).
pub fn env_or<T: FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .map_err(|_| anyhow!("{name}: cannot parse `{value}`")),
        Err(_) => Ok(default),
    }
}

/// Creates a fresh `flowlet_bench_<uuid>` database on `server_url`, runs `bench` with its URL
/// and name, and drops it whatever happened (Ctrl-C included). Exits with status 2 when no
/// server answers, saying how to point the bench at one.
///
/// `FLOWLET_BENCH_DATABASE_SET` (`name = value` items separated by `;`) sets PostgreSQL
/// parameters on that database only, for every session the bench opens: e.g.
/// `log_min_duration_statement = 0` logs every statement with its time, to see where a
/// request's time goes without touching the server's configuration.
pub async fn in_scratch_database<F, Fut>(
    label: &str,
    server_url: &str,
    bench: F,
) -> anyhow::Result<()>
where
    F: FnOnce(String, String) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut admin = match connect(server_url).await {
        Ok(conn) => conn,
        Err(e) => {
            eprintln!(
                "{label}: no PostgreSQL reachable at {}: {e:#}\n\
                 Start PostgreSQL there, or set FLOWLET_BENCH_DATABASE_URL to the URL of a \
                 maintenance database (e.g. postgres://user@host:5432/postgres).",
                redact(server_url)
            );
            std::process::exit(2);
        }
    };
    let name = format!("flowlet_bench_{}", Uuid::now_v7().simple());
    admin
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .with_context(|| format!("creating database {name}"))?;
    if let Ok(settings) = std::env::var("FLOWLET_BENCH_DATABASE_SET") {
        for setting in settings.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            admin
                .batch_execute(&format!("ALTER DATABASE \"{name}\" SET {setting}"))
                .await
                .with_context(|| format!("FLOWLET_BENCH_DATABASE_SET: {setting}"))?;
        }
    }
    drop(admin);
    let url = with_database(server_url, &name)?;
    println!("{label}: database {name} on {}", redact(server_url));

    let result = tokio::select! {
        result = bench(url, name.clone()) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };

    drop_database_after(label, server_url, &name, result).await
}

/// Drops the bench's database `name` after `result`, reporting both failures if both happen.
async fn drop_database_after(
    label: &str,
    server_url: &str,
    name: &str,
    result: anyhow::Result<()>,
) -> anyhow::Result<()> {
    let dropped = async {
        let mut admin = connect(server_url).await?;
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .await
            .context("DROP DATABASE")
    }
    .await;
    match (result, dropped) {
        (Ok(()), Ok(())) => Ok(()),
        (Ok(()), Err(e)) => Err(e.context(format!("dropping database {name}"))),
        (Err(e), Ok(())) => Err(e),
        (Err(e), Err(drop_error)) => {
            eprintln!("{label}: could not drop database {name}: {drop_error:#}");
            Err(e)
        }
    }
}

pub async fn connect(url: &str) -> anyhow::Result<AsyncPgConnection> {
    tokio::time::timeout(Duration::from_secs(10), AsyncPgConnection::establish(url))
        .await
        .map_err(|_| anyhow!("connecting took longer than 10 s"))?
        .context("connecting")
}

/// `url` with its database name replaced by `name` (query parameters kept).
fn with_database(url: &str, name: &str) -> anyhow::Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base
        .find("://")
        .map(|i| i + 3)
        .ok_or_else(|| anyhow!("not a database URL: {}", redact(url)))?;
    let authority_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{name}", &base[..authority_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    Ok(out)
}

/// `url` without its password, for printing.
fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!(
                "{}{user}:***@{host}{}",
                &url[..scheme_end],
                &rest[authority.len()..]
            )
        }
        _ => url.to_owned(),
    }
}

/// Writes `doc` to `target/bench/<file_name>` (under `CARGO_TARGET_DIR` when set), for
/// whoever compares releases; returns the path.
pub fn write_json(file_name: &str, doc: &serde_json::Value) -> anyhow::Result<PathBuf> {
    let dir = target_dir().join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(file_name);
    let text = serde_json::to_string_pretty(doc)?;
    std::fs::write(&path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Cargo's target directory: `CARGO_TARGET_DIR` if set (relative to the package), else
/// `target/` beside Cargo.toml.
fn target_dir() -> PathBuf {
    let manifest = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    );
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => manifest.join(dir),
        _ => manifest.join("target"),
    }
}

/// A memory figure of this process (`VmHWM:` the peak resident set, `VmRSS:` the current
/// one), in MB.
pub fn status_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u32>().ok())
        })
        .map_or(0.0, |kb| f64::from(kb) / 1024.0)
}

/// Nearest-rank percentile of sorted microseconds, in milliseconds.
pub fn percentile_ms(sorted_us: &[u64], pct: usize) -> f64 {
    let rank = (sorted_us.len() * pct).div_ceil(100).max(1);
    sorted_us
        .get(rank - 1)
        .map_or(0.0, |us| to_f64(*us) / 1000.0)
}

pub fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// `u64` to `f64` without `as` (exact below 2^53).
pub fn to_f64(n: u64) -> f64 {
    let high = u32::try_from(n >> 32).unwrap_or(u32::MAX);
    let low = u32::try_from(n & 0xffff_ffff).unwrap_or(u32::MAX);
    f64::from(high) * 4_294_967_296.0 + f64::from(low)
}

/// splitmix64: small, fast, and good enough to pick accounts, wallets and cards.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        let n = u64::try_from(n).unwrap_or(u64::MAX).max(1);
        usize::try_from(self.next() % n).unwrap_or(0)
    }
}
