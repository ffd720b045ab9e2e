//! Platform's own sections: the HTTP server, the database, Redis, idempotency keys and logs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{ConfigError, Environment, Section, non_empty};
use crate::platform::db::embedded::Placement;

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub bind: SocketAddr,
    /// `None`: one worker per CPU core.
    pub workers: Option<usize>,
    pub body_limit_bytes: usize,
    pub shutdown_timeout: Duration,
    /// Whether X-Forwarded-For names the client (only behind a proxy that sets it).
    pub trust_forwarded_for: bool,
}

/// `[server]` as read, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    bind: String,
    workers: usize,
    body_limit_bytes: usize,
    shutdown_timeout_secs: u64,
    trust_forwarded_for: bool,
}

impl Section for ServerSettings {
    const KEY: &'static str = "server";
    type Raw = RawServer;

    fn validate(raw: RawServer, _env: Environment) -> Result<Self, ConfigError> {
        let bind = raw.bind.parse::<SocketAddr>().map_err(|_| {
            ConfigError::invalid(
                "server.bind",
                "FLOWLET__SERVER__BIND",
                format!("`{}` is not a socket address like 127.0.0.1:8080", raw.bind),
            )
        })?;
        if raw.body_limit_bytes == 0 {
            return Err(ConfigError::invalid(
                "server.body_limit_bytes",
                "FLOWLET__SERVER__BODY_LIMIT_BYTES",
                "must be greater than 0",
            ));
        }
        Ok(ServerSettings {
            bind,
            workers: (raw.workers > 0).then_some(raw.workers),
            body_limit_bytes: raw.body_limit_bytes,
            shutdown_timeout: Duration::from_secs(raw.shutdown_timeout_secs),
            trust_forwarded_for: raw.trust_forwarded_for,
        })
    }
}

/// Where the embedded PostgreSQL lives unless `database.embedded_dir` says otherwise.
const DEFAULT_EMBEDDED_DIR: &str = ".flowlet/postgres";

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `None`: run the embedded PostgreSQL in `embedded_dir`.
    pub url: Option<SecretString>,
    pub embedded_dir: PathBuf,
    /// `Exact` when an operator set `embedded_dir`; the default may move under the temp dir
    /// when the server's user (root runs it as `postgres`) cannot reach it.
    pub embedded_placement: Placement,
    pub pool_size: usize,
    pub pool_timeout: Duration,
    pub connect_timeout: Duration,
    pub migrate_on_start: bool,
    pub tx_max_retries: u32,
}

impl DatabaseSettings {
    /// The database URL to use, if one is configured (else the embedded server is started).
    pub fn expose_url(&self) -> Option<&str> {
        self.url.as_ref().map(ExposeSecret::expose_secret)
    }
}

/// `[database]` as read, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDatabase {
    url: Option<String>,
    embedded_dir: Option<String>,
    pool_size: usize,
    pool_timeout_ms: u64,
    connect_timeout_ms: u64,
    migrate_on_start: bool,
    tx_max_retries: u32,
}

impl Section for DatabaseSettings {
    const KEY: &'static str = "database";
    type Raw = RawDatabase;

    fn validate(raw: RawDatabase, _env: Environment) -> Result<Self, ConfigError> {
        if raw.pool_size == 0 {
            return Err(ConfigError::invalid(
                "database.pool_size",
                "FLOWLET__DATABASE__POOL_SIZE",
                "must be greater than 0",
            ));
        }
        let (embedded_dir, embedded_placement) = match non_empty(raw.embedded_dir) {
            Some(dir) => (PathBuf::from(dir), Placement::Exact),
            None => (PathBuf::from(DEFAULT_EMBEDDED_DIR), Placement::Relocatable),
        };
        let url = non_empty(raw.url);
        if let Some(url) = &url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err(ConfigError::invalid(
                "database.url",
                "FLOWLET__DATABASE__URL",
                "must start with postgres:// or postgresql://",
            ));
        }
        Ok(DatabaseSettings {
            url: url.map(SecretString::from),
            embedded_dir,
            embedded_placement,
            pool_size: raw.pool_size,
            pool_timeout: Duration::from_millis(raw.pool_timeout_ms),
            connect_timeout: Duration::from_millis(raw.connect_timeout_ms),
            migrate_on_start: raw.migrate_on_start,
            tx_max_retries: raw.tx_max_retries,
        })
    }
}

#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `None`: in-process rate limits and caches (one replica only).
    pub url: Option<SecretString>,
    pub key_prefix: String,
    pub pool_size: usize,
}

impl RedisSettings {
    /// The Redis URL to use, if one is configured.
    pub fn expose_url(&self) -> Option<&str> {
        self.url.as_ref().map(ExposeSecret::expose_secret)
    }
}

/// `[redis]` as read, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    url: Option<String>,
    key_prefix: String,
    pool_size: usize,
}

impl Section for RedisSettings {
    const KEY: &'static str = "redis";
    type Raw = RawRedis;

    fn validate(raw: RawRedis, _env: Environment) -> Result<Self, ConfigError> {
        if raw.pool_size == 0 {
            return Err(ConfigError::invalid(
                "redis.pool_size",
                "FLOWLET__REDIS__POOL_SIZE",
                "must be greater than 0",
            ));
        }
        let url = non_empty(raw.url);
        if let Some(url) = &url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return Err(ConfigError::invalid(
                "redis.url",
                "FLOWLET__REDIS__URL",
                "must start with redis:// or rediss://",
            ));
        }
        Ok(RedisSettings {
            url: url.map(SecretString::from),
            key_prefix: raw.key_prefix,
            pool_size: raw.pool_size,
        })
    }
}

/// Idempotency keys of POST requests (API.md "Idempotency").
#[derive(Debug, Clone)]
pub struct IdempotencySettings {
    /// How long a key and its stored response are kept; API.md promises at least 24 h.
    pub ttl: Duration,
    /// How long a claimed key may stay "running" before another request with the same key
    /// takes it over (the first one is presumed dead: crashed replica, lost connection).
    pub lock_timeout: Duration,
}

/// API.md promises partners that a key is kept at least 24 hours.
const IDEMPOTENCY_MIN_TTL_HOURS: u64 = 24;
/// Rows are purged only after expiry; a year bounds the table and keeps timestamps sane.
const IDEMPOTENCY_MAX_TTL_HOURS: u64 = 24 * 366;
/// A lock timeout beyond an hour would leave a crashed request's key blocked for that long.
const IDEMPOTENCY_MAX_LOCK_TIMEOUT_SECS: u64 = 3600;

/// `[idempotency]` as read, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdempotency {
    ttl_hours: u64,
    lock_timeout_secs: u64,
}

impl Section for IdempotencySettings {
    const KEY: &'static str = "idempotency";
    type Raw = RawIdempotency;

    fn validate(raw: RawIdempotency, _env: Environment) -> Result<Self, ConfigError> {
        if !(IDEMPOTENCY_MIN_TTL_HOURS..=IDEMPOTENCY_MAX_TTL_HOURS).contains(&raw.ttl_hours) {
            return Err(ConfigError::invalid(
                "idempotency.ttl_hours",
                "FLOWLET__IDEMPOTENCY__TTL_HOURS",
                format!(
                    "must be between {IDEMPOTENCY_MIN_TTL_HOURS} (API.md keeps keys at least 24 h) \
                     and {IDEMPOTENCY_MAX_TTL_HOURS} (a year)"
                ),
            ));
        }
        if !(1..=IDEMPOTENCY_MAX_LOCK_TIMEOUT_SECS).contains(&raw.lock_timeout_secs) {
            return Err(ConfigError::invalid(
                "idempotency.lock_timeout_secs",
                "FLOWLET__IDEMPOTENCY__LOCK_TIMEOUT_SECS",
                format!("must be between 1 and {IDEMPOTENCY_MAX_LOCK_TIMEOUT_SECS}"),
            ));
        }
        Ok(IdempotencySettings {
            ttl: Duration::from_secs(raw.ttl_hours.saturating_mul(3600)),
            lock_timeout: Duration::from_secs(raw.lock_timeout_secs),
        })
    }
}

/// How log lines are written: human-readable locally, JSON for log pipelines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

/// `[log]` as read, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    format: String,
    level: String,
}

impl Section for LogSettings {
    const KEY: &'static str = "log";
    type Raw = RawLog;

    fn validate(raw: RawLog, _env: Environment) -> Result<Self, ConfigError> {
        let format = match raw.format.as_str() {
            "pretty" => LogFormat::Pretty,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError::invalid(
                    "log.format",
                    "FLOWLET__LOG__FORMAT",
                    format!("`{other}` is not one of pretty, json"),
                ));
            }
        };
        if raw
            .level
            .parse::<tracing_subscriber::filter::Targets>()
            .is_err()
        {
            return Err(ConfigError::invalid(
                "log.level",
                "FLOWLET__LOG__LEVEL",
                format!(
                    "`{}` is not a log filter like `info` or `info,flowlet=debug`",
                    raw.level
                ),
            ));
        }
        Ok(LogSettings {
            format,
            level: raw.level,
        })
    }
}
