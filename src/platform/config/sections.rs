//! Platform's own sections: the HTTP server, the database, Redis, idempotency keys and logs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{ConfigError, Environment, Section, non_empty};
use crate::platform::db::embedded::Placement;
use crate::platform::db::{MigrationLimits, PoolOptions, split_tls_params};

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub bind: SocketAddr,
    /// `None`: one worker per CPU the process may use.
    pub workers: Option<usize>,
    /// Threads of the async runtime; `None`: one per CPU the process may use.
    pub runtime_threads: Option<usize>,
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
    runtime_threads: usize,
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
            runtime_threads: (raw.runtime_threads > 0).then_some(raw.runtime_threads),
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
    /// Trusted CAs (PEM) for TLS to PostgreSQL; `None`: the URL's `sslrootcert`, else the
    /// system's roots.
    pub ca_file: Option<PathBuf>,
    /// Whether production may connect with an `sslmode` that can fall back to plaintext.
    pub allow_plaintext: bool,
    /// Connections of the background workers' own pool (outbox, expiry, settlement,
    /// verification), so they can never starve requests.
    pub worker_pool_size: usize,
    /// A read replica for the periodic verification of the books (off the primary).
    pub replica_url: Option<SecretString>,
    pub migration_limits: MigrationLimits,
}

impl DatabaseSettings {
    /// The database URL to use, if one is configured (else the embedded server is started).
    pub fn expose_url(&self) -> Option<&str> {
        self.url.as_ref().map(ExposeSecret::expose_secret)
    }

    /// The pool options of the request pool.
    pub fn pool_options(&self) -> PoolOptions {
        PoolOptions {
            max_size: self.pool_size,
            wait_timeout: self.pool_timeout,
            connect_timeout: self.connect_timeout,
            tx_max_retries: self.tx_max_retries,
            ca_file: self.ca_file.clone(),
        }
    }

    /// The pool options of the background workers' pool: as small as configured, and as
    /// patient as the request pool.
    pub fn worker_pool_options(&self) -> PoolOptions {
        PoolOptions {
            max_size: self.worker_pool_size,
            ..self.pool_options()
        }
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
    ca_file: Option<String>,
    allow_plaintext: bool,
    worker_pool_size: usize,
    replica_url: Option<String>,
    migration_lock_wait_ms: u64,
    migration_lock_timeout_ms: u64,
    migration_statement_timeout_ms: u64,
}

/// A PostgreSQL URL's checks: its scheme, its TLS parameters, and in production no mode that
/// can fall back to plaintext unless `allow_plaintext`.
fn check_database_url(
    url: &str,
    key: &'static str,
    var: &'static str,
    env: Environment,
    allow_plaintext: bool,
) -> Result<(), ConfigError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(ConfigError::invalid(
            key,
            var,
            "must start with postgres:// or postgresql://",
        ));
    }
    let (_, tls) =
        split_tls_params(url).map_err(|e| ConfigError::invalid(key, var, e.to_string()))?;
    if env == Environment::Production && !tls.mode.always_encrypts() && !allow_plaintext {
        return Err(ConfigError::invalid(
            key,
            var,
            format!(
                "sslmode={} may send the data (passwords and money) in plaintext: use \
                 sslmode=verify-full (or require / verify-ca), or set \
                 database.allow_plaintext = true (FLOWLET__DATABASE__ALLOW_PLAINTEXT) for a \
                 network you trust",
                tls.mode.as_str()
            ),
        ));
    }
    Ok(())
}

impl Section for DatabaseSettings {
    const KEY: &'static str = "database";
    type Raw = RawDatabase;

    fn validate(raw: RawDatabase, env: Environment) -> Result<Self, ConfigError> {
        if raw.pool_size == 0 {
            return Err(ConfigError::invalid(
                "database.pool_size",
                "FLOWLET__DATABASE__POOL_SIZE",
                "must be greater than 0",
            ));
        }
        if raw.worker_pool_size == 0 {
            return Err(ConfigError::invalid(
                "database.worker_pool_size",
                "FLOWLET__DATABASE__WORKER_POOL_SIZE",
                "must be greater than 0",
            ));
        }
        let (embedded_dir, embedded_placement) = match non_empty(raw.embedded_dir) {
            Some(dir) => (PathBuf::from(dir), Placement::Exact),
            None => (PathBuf::from(DEFAULT_EMBEDDED_DIR), Placement::Relocatable),
        };
        let url = non_empty(raw.url);
        if let Some(url) = &url {
            check_database_url(
                url,
                "database.url",
                "FLOWLET__DATABASE__URL",
                env,
                raw.allow_plaintext,
            )?;
        }
        let replica_url = non_empty(raw.replica_url);
        if let Some(url) = &replica_url {
            check_database_url(
                url,
                "database.replica_url",
                "FLOWLET__DATABASE__REPLICA_URL",
                env,
                raw.allow_plaintext,
            )?;
        }
        let ca_file = non_empty(raw.ca_file).map(PathBuf::from);
        if let Some(path) = &ca_file
            && !path.is_file()
        {
            return Err(ConfigError::invalid(
                "database.ca_file",
                "FLOWLET__DATABASE__CA_FILE",
                format!("{} is not a readable file", path.display()),
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
            ca_file,
            allow_plaintext: raw.allow_plaintext,
            worker_pool_size: raw.worker_pool_size,
            replica_url: replica_url.map(SecretString::from),
            migration_limits: MigrationLimits {
                lock_wait: Duration::from_millis(raw.migration_lock_wait_ms),
                lock_timeout: Duration::from_millis(raw.migration_lock_timeout_ms),
                statement_timeout: Duration::from_millis(raw.migration_statement_timeout_ms),
            },
        })
    }
}

#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `None`: in-process rate limits and caches (one replica only).
    pub url: Option<SecretString>,
    pub key_prefix: String,
    pub pool_size: usize,
    /// Trusted CAs (PEM) for `rediss://`; `None`: the system's roots.
    pub ca_file: Option<PathBuf>,
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
    ca_file: Option<String>,
    allow_plaintext: bool,
}

impl Section for RedisSettings {
    const KEY: &'static str = "redis";
    type Raw = RawRedis;

    fn validate(raw: RawRedis, env: Environment) -> Result<Self, ConfigError> {
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
        if let Some(url) = &url
            && env == Environment::Production
            && url.starts_with("redis://")
            && !raw.allow_plaintext
        {
            return Err(ConfigError::invalid(
                "redis.url",
                "FLOWLET__REDIS__URL",
                "redis:// is plaintext (the password and every key in the clear): use \
                 rediss://, or set redis.allow_plaintext = true (FLOWLET__REDIS__ALLOW_PLAINTEXT) \
                 for a network you trust",
            ));
        }
        let ca_file = non_empty(raw.ca_file).map(PathBuf::from);
        if let Some(path) = &ca_file
            && !path.is_file()
        {
            return Err(ConfigError::invalid(
                "redis.ca_file",
                "FLOWLET__REDIS__CA_FILE",
                format!("{} is not a readable file", path.display()),
            ));
        }
        Ok(RedisSettings {
            url: url.map(SecretString::from),
            key_prefix: raw.key_prefix,
            pool_size: raw.pool_size,
            ca_file,
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
