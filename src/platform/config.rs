//! Configuration: one typed [`Settings`] value, read once at start-up.
//!
//! Layers, later wins: `config/default.toml` < `config/$FLOWLET_ENV.toml` < environment
//! variables `FLOWLET__SECTION__KEY`. Both files are compiled into the binary as well, so the
//! service starts with the same defaults from any working directory (a container, an operator's
//! shell); a `config/` directory next to it (or at `FLOWLET_CONFIG_DIR`) takes precedence.
//!
//! Every value is validated here, before anything starts: a bad value stops start-up with a
//! message that names its key, and production refuses the development secrets.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::platform::db::embedded::Placement;
use crate::platform::money::{Currency, Money};

const DEFAULT_TOML: &str = include_str!("../../config/default.toml");
const DEVELOPMENT_TOML: &str = include_str!("../../config/development.toml");
const TEST_TOML: &str = include_str!("../../config/test.toml");
const PRODUCTION_TOML: &str = include_str!("../../config/production.toml");

/// The JWT secret shipped in `config/default.toml`; production must never sign with it.
pub const DEVELOPMENT_JWT_SECRET: &str = "flowlet-development-jwt-secret-not-for-production";

/// The API-key HMAC secret shipped in `config/default.toml`; production must never use it.
pub const DEVELOPMENT_API_KEY_SECRET: &str =
    "flowlet-development-api-key-secret-not-for-production";

/// The personal-data encryption key shipped in `config/default.toml` (key id `dev`): base64 of
/// 32 bytes anyone can read in the repository, so production refuses it.
pub const DEVELOPMENT_KYC_ENCRYPTION_KEY: &str = "Zmxvd2xldC1kZXYta3ljLWtleS1ub3QtZm9yLXByb2Q=";

/// The keyed-hash secret of searchable personal data shipped in `config/default.toml`.
pub const DEVELOPMENT_KYC_HASH_KEY: &str = "flowlet-development-kyc-hash-key-not-for-production";

/// OWASP's minimum argon2id cost (password storage cheat sheet): 19 MiB, 2 passes, 1 lane.
const ARGON2_MIN_MEMORY_KIB: u32 = 19456;
const ARGON2_MIN_ITERATIONS: u32 = 2;

/// Shortest HS256 secret production accepts (RFC 7518 §3.2: at least the hash size, 256 bits).
const MIN_PRODUCTION_SECRET_BYTES: usize = 32;

/// Where the service runs; production turns on the strict checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Test,
    Production,
}

impl Environment {
    fn parse(value: &str) -> Result<Self, ConfigError> {
        match value {
            "development" => Ok(Self::Development),
            "test" => Ok(Self::Test),
            "production" => Ok(Self::Production),
            other => Err(ConfigError::invalid(
                "env",
                "FLOWLET_ENV",
                format!("`{other}` is not one of development, test, production"),
            )),
        }
    }

    /// The name used for the per-environment config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Test => "test",
            Self::Production => "production",
        }
    }
}

/// How log lines are written: human-readable locally, JSON for log pipelines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// The whole validated configuration. Secrets are `SecretString`, so `{:?}` never prints them.
#[derive(Debug, Clone)]
pub struct Settings {
    pub env: Environment,
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub auth: AuthSettings,
    pub rate_limit: RateLimitSettings,
    pub ledger: LedgerSettings,
    pub idempotency: IdempotencySettings,
    pub payments: PaymentSettings,
    pub webhooks: WebhookSettings,
    pub kyc: KycSettings,
    pub smtp: SmtpSettings,
    pub log: LogSettings,
}

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

#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `None`: in-process rate limits and caches (one replica only).
    pub url: Option<SecretString>,
    pub key_prefix: String,
    pub pool_size: usize,
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub jwt_secret: SecretString,
    pub jwt_kid: String,
    /// `(kid, secret)` pairs accepted for verification only, during a key rotation.
    pub jwt_previous_secrets: Vec<(String, SecretString)>,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub jwt_ttl: Duration,
    pub api_key_secret: SecretString,
    pub api_key_tag: String,
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
    pub password_min_length: usize,
    pub lockout_threshold: u32,
    pub lockout: Duration,
    pub password_reset_ttl: Duration,
}

/// Request limits per client (API.md "Rate limits").
#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    pub enabled: bool,
    pub ip_per_minute: u64,
    pub key_per_hour: u64,
    pub partner_per_hour: u64,
}

/// The ledger's posting engine and expiry worker.
#[derive(Debug, Clone)]
pub struct LedgerSettings {
    pub max_request_bytes: usize,
    pub batch_max_transfers: usize,
    pub batch_linger: Duration,
    pub queue_capacity: usize,
    /// Bytes the requests waiting for (or in) the engine may take, at most.
    pub queue_max_bytes: usize,
    pub enqueue_timeout: Duration,
    pub max_retries: u32,
    pub pipeline_depth: usize,
    pub expiry_interval: Duration,
    pub expiry_batch: i64,
    /// How often each replica re-checks the ledger's invariants (`None`: never).
    pub verify_interval: Option<Duration>,
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

/// Payments: the sandbox rail and the settlement worker.
#[derive(Debug, Clone)]
pub struct PaymentSettings {
    /// How long the sandbox rail takes to settle a withdrawal.
    pub sandbox_settle_delay: Duration,
    /// How often the settlement worker looks for withdrawals due.
    pub settlement_interval: Duration,
    /// Most withdrawals one pass settles.
    pub settlement_batch: i64,
}

/// Webhook delivery (and the outbox worker, which also sends the emails).
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub timeout: Duration,
    pub poll_interval: Duration,
    pub batch: i64,
    pub concurrency: usize,
    pub lease: Duration,
    pub rotation_overlap: Duration,
    pub disable_after: Duration,
    pub require_https: bool,
    pub allow_private_targets: bool,
}

/// Customers and KYC: personal-data keys, automated-check rules, tiers and their limits.
#[derive(Debug, Clone)]
pub struct KycSettings {
    /// The key id new values are encrypted with.
    pub encryption_key_id: String,
    /// Every AES-256-GCM key by id (32 bytes each); older ids stay readable during a rotation.
    pub encryption_keys: Vec<(String, SecretBytes)>,
    /// HMAC-SHA256 key of the searchable hashes (email, document number).
    pub hash_key: SecretString,
    pub minimum_age: u32,
    /// ISO 3166-1 alpha-2 codes whose residents or documents go to review.
    pub high_risk_countries: Vec<String>,
    /// A screening score at or above this sends the application to review.
    pub sanctions_threshold: f64,
    /// Screening scores below this are not shown to reviewers at all.
    pub sanctions_candidate_floor: f64,
    /// Tiers 0, 1 and 2, in order.
    pub tiers: Vec<TierSettings>,
}

impl KycSettings {
    fn active_key_is_development_key(&self) -> bool {
        let development_key = base64::engine::general_purpose::STANDARD
            .decode(DEVELOPMENT_KYC_ENCRYPTION_KEY)
            .unwrap_or_default();
        self.encryption_keys
            .iter()
            .any(|(kid, key)| *kid == self.encryption_key_id && key.0 == development_key)
    }

    /// Production never decrypts with the development key either: values under it can only be
    /// test data. (It stays in `config/default.toml` so development needs no configuration.)
    fn drop_development_key(&mut self) {
        let development_key = base64::engine::general_purpose::STANDARD
            .decode(DEVELOPMENT_KYC_ENCRYPTION_KEY)
            .unwrap_or_default();
        self.encryption_keys
            .retain(|(_, key)| key.0 != development_key);
    }
}

/// Key bytes that never print.
#[derive(Clone)]
pub struct SecretBytes(pub Vec<u8>);

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBytes(<redacted>)")
    }
}

/// What one KYC tier allows.
#[derive(Debug, Clone)]
pub struct TierSettings {
    pub tier: u8,
    pub withdrawals: bool,
    pub cards: bool,
    /// Limits per currency; a currency without limits is refused for this tier.
    pub limits: Vec<TierLimits>,
}

/// One tier's limits in one currency.
#[derive(Debug, Clone)]
pub struct TierLimits {
    pub max_balance: Money,
    pub max_single_payment: Money,
    pub daily_outgoing: Money,
    pub monthly_outgoing: Money,
}

/// Outgoing mail.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    /// `None`: messages are written as .eml files under `mail_dir`.
    pub url: Option<SecretString>,
    pub from: String,
    pub mail_dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

/// Why the configuration was refused. The message always names the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration could not be read: {0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid configuration value for `{key}` ({env_var}): {reason}")]
    Invalid {
        key: &'static str,
        env_var: &'static str,
        reason: String,
    },
    #[error(
        "FLOWLET_ENV=production refuses development secrets; set these keys: {}",
        .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    DevelopmentSecrets(Vec<InsecureKey>),
}

impl ConfigError {
    fn invalid(key: &'static str, env_var: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key,
            env_var,
            reason: reason.into(),
        }
    }
}

/// A secret that production refuses, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsecureKey {
    pub key: &'static str,
    pub env_var: &'static str,
    pub reason: &'static str,
}

impl fmt::Display for InsecureKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` ({}) {}", self.key, self.env_var, self.reason)
    }
}

/// Where the layers come from. `from_process` reads the real environment; tests build one
/// with their own variables so they can run in parallel without touching the process's.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub config_dir: Option<PathBuf>,
    pub env_vars: HashMap<String, String>,
}

impl Sources {
    /// The process environment and `FLOWLET_CONFIG_DIR` (default `config`).
    pub fn from_process() -> Self {
        let env_vars: HashMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("FLOWLET"))
            .collect();
        let config_dir = Some(
            env_vars
                .get("FLOWLET_CONFIG_DIR")
                .map_or_else(|| PathBuf::from("config"), PathBuf::from),
        );
        Self {
            config_dir,
            env_vars,
        }
    }

    /// No files but the compiled-in ones, plus the given variables.
    pub fn with_vars<I, K, V>(vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            config_dir: None,
            env_vars: vars
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}

impl Settings {
    /// Read and validate the configuration of this process.
    pub fn load() -> Result<Settings, ConfigError> {
        Self::load_from(&Sources::from_process())
    }

    /// Read and validate the configuration from explicit sources.
    pub fn load_from(sources: &Sources) -> Result<Settings, ConfigError> {
        let env = Environment::parse(
            sources
                .env_vars
                .get("FLOWLET_ENV")
                .map_or("development", String::as_str),
        )?;
        let builder = config::Config::builder()
            .add_source(layer(
                sources.config_dir.as_deref(),
                "default",
                DEFAULT_TOML,
            ))
            .add_source(layer(
                sources.config_dir.as_deref(),
                env.as_str(),
                match env {
                    Environment::Development => DEVELOPMENT_TOML,
                    Environment::Test => TEST_TOML,
                    Environment::Production => PRODUCTION_TOML,
                },
            ))
            .add_source(
                config::Environment::with_prefix("FLOWLET")
                    .prefix_separator("__")
                    .separator("__")
                    .source(Some(
                        sources
                            .env_vars
                            .iter()
                            .filter(|(k, _)| k.starts_with("FLOWLET__"))
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                    )),
            );
        let raw: RawSettings = builder.build()?.try_deserialize()?;
        let mut settings = raw.validate(env)?;
        settings.refuse_development_secrets()?;
        if settings.env == Environment::Production {
            settings.kyc.drop_development_key();
        }
        Ok(settings)
    }

    /// Production must not run with any value a developer could know from the repository.
    fn refuse_development_secrets(&self) -> Result<(), ConfigError> {
        if self.env != Environment::Production {
            return Ok(());
        }
        let mut insecure = Vec::new();
        let mut check = |key: &'static str, env_var: &'static str, value: &str, default: &str| {
            if value == default {
                insecure.push(InsecureKey {
                    key,
                    env_var,
                    reason: "is the development default",
                });
            } else if value.len() < MIN_PRODUCTION_SECRET_BYTES {
                insecure.push(InsecureKey {
                    key,
                    env_var,
                    reason: "is shorter than 32 bytes",
                });
            }
        };
        check(
            "auth.jwt_secret",
            "FLOWLET__AUTH__JWT_SECRET",
            self.auth.jwt_secret.expose_secret(),
            DEVELOPMENT_JWT_SECRET,
        );
        check(
            "auth.api_key_secret",
            "FLOWLET__AUTH__API_KEY_SECRET",
            self.auth.api_key_secret.expose_secret(),
            DEVELOPMENT_API_KEY_SECRET,
        );
        check(
            "kyc.hash_key",
            "FLOWLET__KYC__HASH_KEY",
            self.kyc.hash_key.expose_secret(),
            DEVELOPMENT_KYC_HASH_KEY,
        );
        for (_, secret) in &self.auth.jwt_previous_secrets {
            check(
                "auth.jwt_previous_secrets",
                "FLOWLET__AUTH__JWT_PREVIOUS_SECRETS__<KID>",
                secret.expose_secret(),
                DEVELOPMENT_JWT_SECRET,
            );
        }
        if self.kyc.active_key_is_development_key() {
            insecure.push(InsecureKey {
                key: "kyc.encryption_key_id",
                env_var: "FLOWLET__KYC__ENCRYPTION_KEY_ID",
                reason: "names the development key (set FLOWLET__KYC__ENCRYPTION_KEYS__<KID> to \
                         base64 of 32 random bytes and this to <kid>)",
            });
        }
        if insecure.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::DevelopmentSecrets(insecure))
        }
    }

    /// The database URL to use, if one is configured (else the embedded server is started).
    pub fn database_url(&self) -> Option<&str> {
        self.database.url.as_ref().map(ExposeSecret::expose_secret)
    }

    /// The Redis URL to use, if one is configured.
    pub fn redis_url(&self) -> Option<&str> {
        self.redis.url.as_ref().map(ExposeSecret::expose_secret)
    }

    /// The SMTP URL to use, if one is configured.
    pub fn smtp_url(&self) -> Option<&str> {
        self.smtp.url.as_ref().map(ExposeSecret::expose_secret)
    }
}

/// One layer: the file in the config directory when present, else the compiled-in copy.
fn layer(
    dir: Option<&Path>,
    name: &str,
    embedded: &'static str,
) -> config::File<config::FileSourceString, config::FileFormat> {
    if let Some(dir) = dir {
        let path = dir.join(format!("{name}.toml"));
        if let Ok(text) = std::fs::read_to_string(&path) {
            return config::File::from_str(&text, config::FileFormat::Toml);
        }
    }
    config::File::from_str(embedded, config::FileFormat::Toml)
}

/// The shape of the layered configuration before validation. Unknown keys are refused so a
/// typo (`FLOWLET__SERVER__BIDN`) fails loudly instead of silently using a default.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    server: RawServer,
    database: RawDatabase,
    redis: RawRedis,
    auth: RawAuth,
    rate_limit: RawRateLimit,
    ledger: RawLedger,
    idempotency: RawIdempotency,
    payments: RawPayments,
    webhooks: RawWebhooks,
    kyc: RawKyc,
    smtp: RawSmtp,
    log: RawLog,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    bind: String,
    workers: usize,
    body_limit_bytes: usize,
    shutdown_timeout_secs: u64,
    trust_forwarded_for: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    url: Option<String>,
    embedded_dir: Option<String>,
    pool_size: usize,
    pool_timeout_ms: u64,
    connect_timeout_ms: u64,
    migrate_on_start: bool,
    tx_max_retries: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedis {
    url: Option<String>,
    key_prefix: String,
    pool_size: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    jwt_secret: String,
    jwt_kid: String,
    jwt_previous_secrets: HashMap<String, String>,
    jwt_issuer: String,
    jwt_audience: String,
    jwt_ttl_secs: u64,
    api_key_secret: String,
    api_key_tag: String,
    argon2_memory_kib: u32,
    argon2_iterations: u32,
    argon2_parallelism: u32,
    password_min_length: usize,
    lockout_threshold: u32,
    lockout_secs: u64,
    password_reset_ttl_secs: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    enabled: bool,
    ip_per_minute: u64,
    key_per_hour: u64,
    partner_per_hour: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLedger {
    max_request_bytes: usize,
    batch_max_transfers: usize,
    batch_linger_us: u64,
    queue_capacity: usize,
    queue_max_bytes: usize,
    enqueue_timeout_ms: u64,
    max_retries: u32,
    pipeline_depth: usize,
    expiry_interval_ms: u64,
    expiry_batch: i64,
    verify_interval_secs: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdempotency {
    ttl_hours: u64,
    lock_timeout_secs: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPayments {
    sandbox_settle_delay_ms: u64,
    settlement_interval_ms: u64,
    settlement_batch: i64,
}

impl RawPayments {
    fn validate(self) -> Result<PaymentSettings, ConfigError> {
        if self.sandbox_settle_delay_ms > 86_400_000 {
            return Err(ConfigError::invalid(
                "payments.sandbox_settle_delay_ms",
                "FLOWLET__PAYMENTS__SANDBOX_SETTLE_DELAY_MS",
                "must be at most 86400000 (a day)",
            ));
        }
        if !(10..=60_000).contains(&self.settlement_interval_ms) {
            return Err(ConfigError::invalid(
                "payments.settlement_interval_ms",
                "FLOWLET__PAYMENTS__SETTLEMENT_INTERVAL_MS",
                "must be between 10 and 60000",
            ));
        }
        if !(1..=10_000).contains(&self.settlement_batch) {
            return Err(ConfigError::invalid(
                "payments.settlement_batch",
                "FLOWLET__PAYMENTS__SETTLEMENT_BATCH",
                "must be between 1 and 10000",
            ));
        }
        Ok(PaymentSettings {
            sandbox_settle_delay: Duration::from_millis(self.sandbox_settle_delay_ms),
            settlement_interval: Duration::from_millis(self.settlement_interval_ms),
            settlement_batch: self.settlement_batch,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhooks {
    timeout_ms: u64,
    poll_interval_ms: u64,
    batch: i64,
    concurrency: usize,
    lease_secs: u64,
    rotation_overlap_secs: u64,
    disable_after_secs: u64,
    require_https: bool,
    allow_private_targets: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKyc {
    encryption_key_id: String,
    encryption_keys: HashMap<String, String>,
    hash_key: String,
    minimum_age: u32,
    high_risk_countries: Vec<String>,
    sanctions_threshold: f64,
    sanctions_candidate_floor: f64,
    tiers: HashMap<String, RawTier>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTier {
    withdrawals: bool,
    cards: bool,
    #[serde(default)]
    limits: HashMap<String, RawTierLimits>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTierLimits {
    max_balance: String,
    max_single_payment: String,
    daily_outgoing: String,
    monthly_outgoing: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmtp {
    url: Option<String>,
    from: String,
    mail_dir: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: String,
    level: String,
}

impl RawSettings {
    fn validate(self, env: Environment) -> Result<Settings, ConfigError> {
        let bind = self.server.bind.parse::<SocketAddr>().map_err(|_| {
            ConfigError::invalid(
                "server.bind",
                "FLOWLET__SERVER__BIND",
                format!(
                    "`{}` is not a socket address like 127.0.0.1:8080",
                    self.server.bind
                ),
            )
        })?;
        if self.server.body_limit_bytes == 0 {
            return Err(ConfigError::invalid(
                "server.body_limit_bytes",
                "FLOWLET__SERVER__BODY_LIMIT_BYTES",
                "must be greater than 0",
            ));
        }
        let format = match self.log.format.as_str() {
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
        if self
            .log
            .level
            .parse::<tracing_subscriber::filter::Targets>()
            .is_err()
        {
            return Err(ConfigError::invalid(
                "log.level",
                "FLOWLET__LOG__LEVEL",
                format!(
                    "`{}` is not a log filter like `info` or `info,flowlet=debug`",
                    self.log.level
                ),
            ));
        }
        if self.database.pool_size == 0 {
            return Err(ConfigError::invalid(
                "database.pool_size",
                "FLOWLET__DATABASE__POOL_SIZE",
                "must be greater than 0",
            ));
        }
        if self.redis.pool_size == 0 {
            return Err(ConfigError::invalid(
                "redis.pool_size",
                "FLOWLET__REDIS__POOL_SIZE",
                "must be greater than 0",
            ));
        }
        let (embedded_dir, embedded_placement) = match non_empty(self.database.embedded_dir) {
            Some(dir) => (PathBuf::from(dir), Placement::Exact),
            None => (PathBuf::from(DEFAULT_EMBEDDED_DIR), Placement::Relocatable),
        };
        let url = non_empty(self.database.url);
        if let Some(url) = &url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err(ConfigError::invalid(
                "database.url",
                "FLOWLET__DATABASE__URL",
                "must start with postgres:// or postgresql://",
            ));
        }
        let redis_url = non_empty(self.redis.url);
        if let Some(url) = &redis_url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return Err(ConfigError::invalid(
                "redis.url",
                "FLOWLET__REDIS__URL",
                "must start with redis:// or rediss://",
            ));
        }
        self.auth.validate()?;
        self.rate_limit.validate()?;
        let smtp_url = non_empty(self.smtp.url);
        if let Some(url) = &smtp_url
            && !(url.starts_with("smtp://") || url.starts_with("smtps://"))
        {
            return Err(ConfigError::invalid(
                "smtp.url",
                "FLOWLET__SMTP__URL",
                "must start with smtp:// or smtps://",
            ));
        }
        Ok(Settings {
            env,
            server: ServerSettings {
                bind,
                workers: (self.server.workers > 0).then_some(self.server.workers),
                body_limit_bytes: self.server.body_limit_bytes,
                shutdown_timeout: Duration::from_secs(self.server.shutdown_timeout_secs),
                trust_forwarded_for: self.server.trust_forwarded_for,
            },
            database: DatabaseSettings {
                url: url.map(SecretString::from),
                embedded_dir,
                embedded_placement,
                pool_size: self.database.pool_size,
                pool_timeout: Duration::from_millis(self.database.pool_timeout_ms),
                connect_timeout: Duration::from_millis(self.database.connect_timeout_ms),
                migrate_on_start: self.database.migrate_on_start,
                tx_max_retries: self.database.tx_max_retries,
            },
            redis: RedisSettings {
                url: redis_url.map(SecretString::from),
                key_prefix: self.redis.key_prefix,
                pool_size: self.redis.pool_size,
            },
            auth: self.auth.into_settings(),
            rate_limit: RateLimitSettings {
                enabled: self.rate_limit.enabled,
                ip_per_minute: self.rate_limit.ip_per_minute,
                key_per_hour: self.rate_limit.key_per_hour,
                partner_per_hour: self.rate_limit.partner_per_hour,
            },
            ledger: {
                // Each batch in flight holds a connection: leave at least one for requests.
                let mut ledger = self.ledger.validate()?;
                ledger.pipeline_depth = ledger
                    .pipeline_depth
                    .min(self.database.pool_size.saturating_sub(1))
                    .max(1);
                ledger
            },
            idempotency: self.idempotency.validate()?,
            payments: self.payments.validate()?,
            webhooks: self.webhooks.validate()?,
            kyc: self.kyc.validate()?,
            smtp: SmtpSettings {
                url: smtp_url.map(SecretString::from),
                from: self.smtp.from,
                mail_dir: PathBuf::from(self.smtp.mail_dir),
            },
            log: LogSettings {
                format,
                level: self.log.level,
            },
        })
    }
}

impl RawAuth {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.jwt_secret.is_empty() {
            return Err(ConfigError::invalid(
                "auth.jwt_secret",
                "FLOWLET__AUTH__JWT_SECRET",
                "must not be empty",
            ));
        }
        let kid_ok = |kid: &str| {
            !kid.is_empty()
                && kid.len() <= 64
                && kid
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        };
        if !kid_ok(&self.jwt_kid) {
            return Err(ConfigError::invalid(
                "auth.jwt_kid",
                "FLOWLET__AUTH__JWT_KID",
                "must be 1-64 characters of letters, digits, '-', '_' or '.'",
            ));
        }
        for (kid, secret) in &self.jwt_previous_secrets {
            if !kid_ok(kid) || *kid == self.jwt_kid || secret.is_empty() {
                return Err(ConfigError::invalid(
                    "auth.jwt_previous_secrets",
                    "FLOWLET__AUTH__JWT_PREVIOUS_SECRETS__<KID>",
                    format!(
                        "kid `{kid}` must be a valid key id other than auth.jwt_kid, with a non-empty secret"
                    ),
                ));
            }
        }
        if self.jwt_ttl_secs == 0 {
            return Err(ConfigError::invalid(
                "auth.jwt_ttl_secs",
                "FLOWLET__AUTH__JWT_TTL_SECS",
                "must be greater than 0",
            ));
        }
        if self.api_key_secret.is_empty() {
            return Err(ConfigError::invalid(
                "auth.api_key_secret",
                "FLOWLET__AUTH__API_KEY_SECRET",
                "must not be empty",
            ));
        }
        if self.api_key_tag.is_empty()
            || self.api_key_tag.len() > 8
            || !self
                .api_key_tag
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(ConfigError::invalid(
                "auth.api_key_tag",
                "FLOWLET__AUTH__API_KEY_TAG",
                "must be 1-8 lowercase letters or digits",
            ));
        }
        if self.argon2_memory_kib < ARGON2_MIN_MEMORY_KIB {
            return Err(ConfigError::invalid(
                "auth.argon2_memory_kib",
                "FLOWLET__AUTH__ARGON2_MEMORY_KIB",
                format!("must be at least {ARGON2_MIN_MEMORY_KIB} (OWASP minimum)"),
            ));
        }
        if self.argon2_iterations < ARGON2_MIN_ITERATIONS {
            return Err(ConfigError::invalid(
                "auth.argon2_iterations",
                "FLOWLET__AUTH__ARGON2_ITERATIONS",
                format!("must be at least {ARGON2_MIN_ITERATIONS} (OWASP minimum)"),
            ));
        }
        if self.argon2_parallelism == 0 {
            return Err(ConfigError::invalid(
                "auth.argon2_parallelism",
                "FLOWLET__AUTH__ARGON2_PARALLELISM",
                "must be at least 1",
            ));
        }
        if self.password_min_length < 8 {
            return Err(ConfigError::invalid(
                "auth.password_min_length",
                "FLOWLET__AUTH__PASSWORD_MIN_LENGTH",
                "must be at least 8",
            ));
        }
        if self.lockout_threshold == 0 {
            return Err(ConfigError::invalid(
                "auth.lockout_threshold",
                "FLOWLET__AUTH__LOCKOUT_THRESHOLD",
                "must be at least 1",
            ));
        }
        if self.password_reset_ttl_secs == 0 {
            return Err(ConfigError::invalid(
                "auth.password_reset_ttl_secs",
                "FLOWLET__AUTH__PASSWORD_RESET_TTL_SECS",
                "must be greater than 0",
            ));
        }
        Ok(())
    }

    fn into_settings(self) -> AuthSettings {
        let mut previous: Vec<(String, SecretString)> = self
            .jwt_previous_secrets
            .into_iter()
            .map(|(kid, secret)| (kid, SecretString::from(secret)))
            .collect();
        previous.sort_by(|a, b| a.0.cmp(&b.0));
        AuthSettings {
            jwt_secret: SecretString::from(self.jwt_secret),
            jwt_kid: self.jwt_kid,
            jwt_previous_secrets: previous,
            jwt_issuer: self.jwt_issuer,
            jwt_audience: self.jwt_audience,
            jwt_ttl: Duration::from_secs(self.jwt_ttl_secs),
            api_key_secret: SecretString::from(self.api_key_secret),
            api_key_tag: self.api_key_tag,
            argon2_memory_kib: self.argon2_memory_kib,
            argon2_iterations: self.argon2_iterations,
            argon2_parallelism: self.argon2_parallelism,
            password_min_length: self.password_min_length,
            lockout_threshold: self.lockout_threshold,
            lockout: Duration::from_secs(self.lockout_secs),
            password_reset_ttl: Duration::from_secs(self.password_reset_ttl_secs),
        }
    }
}

impl RawLedger {
    fn validate(self) -> Result<LedgerSettings, ConfigError> {
        if self.batch_max_transfers == 0 {
            return Err(ConfigError::invalid(
                "ledger.batch_max_transfers",
                "FLOWLET__LEDGER__BATCH_MAX_TRANSFERS",
                "must be greater than 0",
            ));
        }
        if self.queue_capacity == 0 {
            return Err(ConfigError::invalid(
                "ledger.queue_capacity",
                "FLOWLET__LEDGER__QUEUE_CAPACITY",
                "must be greater than 0",
            ));
        }
        if self.queue_max_bytes < self.max_request_bytes {
            return Err(ConfigError::invalid(
                "ledger.queue_max_bytes",
                "FLOWLET__LEDGER__QUEUE_MAX_BYTES",
                "must be at least ledger.max_request_bytes (one largest request must fit)",
            ));
        }
        if self.expiry_batch <= 0 || self.expiry_interval_ms == 0 {
            return Err(ConfigError::invalid(
                "ledger.expiry_batch",
                "FLOWLET__LEDGER__EXPIRY_BATCH",
                "expiry_batch and expiry_interval_ms must be greater than 0",
            ));
        }
        Ok(LedgerSettings {
            max_request_bytes: self.max_request_bytes.max(1),
            batch_max_transfers: self.batch_max_transfers,
            batch_linger: Duration::from_micros(self.batch_linger_us),
            queue_capacity: self.queue_capacity,
            queue_max_bytes: self.queue_max_bytes,
            enqueue_timeout: Duration::from_millis(self.enqueue_timeout_ms),
            max_retries: self.max_retries,
            pipeline_depth: self.pipeline_depth.max(1),
            expiry_interval: Duration::from_millis(self.expiry_interval_ms),
            expiry_batch: self.expiry_batch,
            verify_interval: (self.verify_interval_secs > 0)
                .then(|| Duration::from_secs(self.verify_interval_secs)),
        })
    }
}

/// API.md promises partners that a key is kept at least 24 hours.
const IDEMPOTENCY_MIN_TTL_HOURS: u64 = 24;
/// Rows are purged only after expiry; a year bounds the table and keeps timestamps sane.
const IDEMPOTENCY_MAX_TTL_HOURS: u64 = 24 * 366;
/// A lock timeout beyond an hour would leave a crashed request's key blocked for that long.
const IDEMPOTENCY_MAX_LOCK_TIMEOUT_SECS: u64 = 3600;

impl RawIdempotency {
    fn validate(self) -> Result<IdempotencySettings, ConfigError> {
        if !(IDEMPOTENCY_MIN_TTL_HOURS..=IDEMPOTENCY_MAX_TTL_HOURS).contains(&self.ttl_hours) {
            return Err(ConfigError::invalid(
                "idempotency.ttl_hours",
                "FLOWLET__IDEMPOTENCY__TTL_HOURS",
                format!(
                    "must be between {IDEMPOTENCY_MIN_TTL_HOURS} (API.md keeps keys at least 24 h) \
                     and {IDEMPOTENCY_MAX_TTL_HOURS} (a year)"
                ),
            ));
        }
        if !(1..=IDEMPOTENCY_MAX_LOCK_TIMEOUT_SECS).contains(&self.lock_timeout_secs) {
            return Err(ConfigError::invalid(
                "idempotency.lock_timeout_secs",
                "FLOWLET__IDEMPOTENCY__LOCK_TIMEOUT_SECS",
                format!("must be between 1 and {IDEMPOTENCY_MAX_LOCK_TIMEOUT_SECS}"),
            ));
        }
        Ok(IdempotencySettings {
            ttl: Duration::from_secs(self.ttl_hours.saturating_mul(3600)),
            lock_timeout: Duration::from_secs(self.lock_timeout_secs),
        })
    }
}

impl RawWebhooks {
    fn validate(self) -> Result<WebhookSettings, ConfigError> {
        if self.timeout_ms == 0
            || self.poll_interval_ms == 0
            || self.batch <= 0
            || self.concurrency == 0
        {
            return Err(ConfigError::invalid(
                "webhooks.timeout_ms",
                "FLOWLET__WEBHOOKS__TIMEOUT_MS",
                "timeout_ms, poll_interval_ms, batch and concurrency must be greater than 0",
            ));
        }
        if self.lease_secs.saturating_mul(1000) <= self.timeout_ms {
            return Err(ConfigError::invalid(
                "webhooks.lease_secs",
                "FLOWLET__WEBHOOKS__LEASE_SECS",
                "must be longer than webhooks.timeout_ms, or deliveries in flight get sent twice",
            ));
        }
        Ok(WebhookSettings {
            timeout: Duration::from_millis(self.timeout_ms),
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            batch: self.batch,
            concurrency: self.concurrency,
            lease: Duration::from_secs(self.lease_secs),
            rotation_overlap: Duration::from_secs(self.rotation_overlap_secs),
            disable_after: Duration::from_secs(self.disable_after_secs),
            require_https: self.require_https,
            allow_private_targets: self.allow_private_targets,
        })
    }
}

impl RawKyc {
    fn validate(self) -> Result<KycSettings, ConfigError> {
        let keys_error = |reason: String| {
            ConfigError::invalid(
                "kyc.encryption_keys",
                "FLOWLET__KYC__ENCRYPTION_KEYS__<KID>",
                reason,
            )
        };
        let mut encryption_keys = Vec::new();
        for (kid, value) in &self.encryption_keys {
            if kid.is_empty()
                || kid.len() > 32
                || !kid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                return Err(keys_error(format!(
                    "key id `{kid}` must be 1-32 letters, digits or '_'"
                )));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(value.trim())
                .map_err(|_| keys_error(format!("key `{kid}` is not base64")))?;
            if bytes.len() != 32 {
                return Err(keys_error(format!(
                    "key `{kid}` must be 32 bytes (AES-256), found {}",
                    bytes.len()
                )));
            }
            encryption_keys.push((kid.clone(), SecretBytes(bytes)));
        }
        encryption_keys.sort_by(|a, b| a.0.cmp(&b.0));
        if !encryption_keys
            .iter()
            .any(|(kid, _)| *kid == self.encryption_key_id)
        {
            return Err(ConfigError::invalid(
                "kyc.encryption_key_id",
                "FLOWLET__KYC__ENCRYPTION_KEY_ID",
                format!(
                    "`{}` is not one of kyc.encryption_keys (set FLOWLET__KYC__ENCRYPTION_KEYS__{} \
                     to base64 of 32 random bytes)",
                    self.encryption_key_id,
                    self.encryption_key_id.to_ascii_uppercase()
                ),
            ));
        }
        if self.hash_key.len() < 16 {
            return Err(ConfigError::invalid(
                "kyc.hash_key",
                "FLOWLET__KYC__HASH_KEY",
                "must be at least 16 bytes",
            ));
        }
        if !(13..=30).contains(&self.minimum_age) {
            return Err(ConfigError::invalid(
                "kyc.minimum_age",
                "FLOWLET__KYC__MINIMUM_AGE",
                "must be between 13 and 30",
            ));
        }
        let mut high_risk_countries = Vec::new();
        for code in &self.high_risk_countries {
            let code = code.trim().to_ascii_uppercase();
            if code.len() != 2 || code.parse::<iso_country::Country>().is_err() {
                return Err(ConfigError::invalid(
                    "kyc.high_risk_countries",
                    "FLOWLET__KYC__HIGH_RISK_COUNTRIES",
                    format!("`{code}` is not an ISO 3166-1 alpha-2 country code"),
                ));
            }
            high_risk_countries.push(code);
        }
        let score_ok = |v: f64| v.is_finite() && v > 0.0 && v <= 1.0;
        if !score_ok(self.sanctions_threshold)
            || !score_ok(self.sanctions_candidate_floor)
            || self.sanctions_candidate_floor > self.sanctions_threshold
        {
            return Err(ConfigError::invalid(
                "kyc.sanctions_threshold",
                "FLOWLET__KYC__SANCTIONS_THRESHOLD",
                "sanctions_threshold and sanctions_candidate_floor must be in (0, 1], the floor \
                 not above the threshold",
            ));
        }
        let mut tiers = Vec::new();
        for tier in 0..=2_u8 {
            let raw = self.tiers.get(&tier.to_string()).ok_or_else(|| {
                ConfigError::invalid(
                    "kyc.tiers",
                    "FLOWLET__KYC__TIERS__<N>__...",
                    format!("tier {tier} is not configured (tiers 0, 1 and 2 are needed)"),
                )
            })?;
            tiers.push(raw.validate(tier)?);
        }
        if let Some(extra) = self
            .tiers
            .keys()
            .find(|k| !matches!(k.as_str(), "0" | "1" | "2"))
        {
            return Err(ConfigError::invalid(
                "kyc.tiers",
                "FLOWLET__KYC__TIERS__<N>__...",
                format!("unknown tier `{extra}`: tiers are 0, 1 and 2"),
            ));
        }
        Ok(KycSettings {
            encryption_key_id: self.encryption_key_id,
            encryption_keys,
            hash_key: SecretString::from(self.hash_key),
            minimum_age: self.minimum_age,
            high_risk_countries,
            sanctions_threshold: self.sanctions_threshold,
            sanctions_candidate_floor: self.sanctions_candidate_floor,
            tiers,
        })
    }
}

impl RawTier {
    fn validate(&self, tier: u8) -> Result<TierSettings, ConfigError> {
        let invalid = |reason: String| {
            ConfigError::invalid(
                "kyc.tiers",
                "FLOWLET__KYC__TIERS__<N>__LIMITS__<CUR>__...",
                reason,
            )
        };
        let mut limits = Vec::new();
        for (code, raw) in &self.limits {
            let currency = Currency::parse(&code.to_ascii_uppercase()).map_err(|_| {
                invalid(format!("tier {tier}: `{code}` is not an ISO 4217 currency"))
            })?;
            let amount = |name: &str, value: &str| {
                value
                    .trim()
                    .parse::<rust_decimal::Decimal>()
                    .ok()
                    .and_then(|d| Money::from_decimal(d, currency).ok())
                    .filter(|m| !m.is_negative())
                    .ok_or_else(|| {
                        invalid(format!(
                            "tier {tier} {currency} {name}: `{value}` is not a non-negative amount of {currency}"
                        ))
                    })
            };
            limits.push(TierLimits {
                max_balance: amount("max_balance", &raw.max_balance)?,
                max_single_payment: amount("max_single_payment", &raw.max_single_payment)?,
                daily_outgoing: amount("daily_outgoing", &raw.daily_outgoing)?,
                monthly_outgoing: amount("monthly_outgoing", &raw.monthly_outgoing)?,
            });
        }
        limits.sort_by(|a, b| {
            a.max_balance
                .currency()
                .code()
                .cmp(b.max_balance.currency().code())
        });
        Ok(TierSettings {
            tier,
            withdrawals: self.withdrawals,
            cards: self.cards,
            limits,
        })
    }
}

impl RawRateLimit {
    fn validate(&self) -> Result<(), ConfigError> {
        for (value, key, env_var) in [
            (
                self.ip_per_minute,
                "rate_limit.ip_per_minute",
                "FLOWLET__RATE_LIMIT__IP_PER_MINUTE",
            ),
            (
                self.key_per_hour,
                "rate_limit.key_per_hour",
                "FLOWLET__RATE_LIMIT__KEY_PER_HOUR",
            ),
            (
                self.partner_per_hour,
                "rate_limit.partner_per_hour",
                "FLOWLET__RATE_LIMIT__PARTNER_PER_HOUR",
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, env_var, "must be greater than 0"));
            }
        }
        Ok(())
    }
}

/// Where the embedded PostgreSQL lives unless `database.embedded_dir` says otherwise.
const DEFAULT_EMBEDDED_DIR: &str = ".flowlet/postgres";

/// An empty environment variable means "unset", as operators expect from `FOO=`.
fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::load_from(&Sources::with_vars(vars.iter().copied()))
    }

    #[test]
    fn defaults_need_no_configuration_at_all() {
        let s = load(&[]).unwrap();
        assert_eq!(s.env, Environment::Development);
        assert_eq!(s.server.bind.to_string(), "127.0.0.1:8080");
        assert!(s.database.url.is_none());
        assert_eq!(s.database.embedded_dir, PathBuf::from(".flowlet/postgres"));
        assert_eq!(s.database.embedded_placement, Placement::Relocatable);
        assert!(s.redis.url.is_none());
        assert_eq!(s.log.format, LogFormat::Pretty);
        assert_eq!(s.server.body_limit_bytes, 1024 * 1024);
    }

    #[test]
    fn environment_variables_override_files() {
        let s = load(&[
            ("FLOWLET__SERVER__BIND", "0.0.0.0:9000"),
            ("FLOWLET__DATABASE__URL", "postgres://u@db:5432/flowlet"),
            ("FLOWLET__DATABASE__EMBEDDED_DIR", "/tmp/x"),
            ("FLOWLET__REDIS__URL", "redis://cache:6379"),
            ("FLOWLET__LOG__FORMAT", "json"),
            ("FLOWLET__DATABASE__POOL_SIZE", "3"),
        ])
        .unwrap();
        assert_eq!(s.server.bind.port(), 9000);
        assert_eq!(s.database_url(), Some("postgres://u@db:5432/flowlet"));
        assert_eq!(s.database.embedded_dir, PathBuf::from("/tmp/x"));
        assert_eq!(
            s.database.embedded_placement,
            Placement::Exact,
            "a directory an operator chose is never moved"
        );
        assert_eq!(s.redis_url(), Some("redis://cache:6379"));
        assert_eq!(s.log.format, LogFormat::Json);
        assert_eq!(s.database.pool_size, 3);
    }

    #[test]
    fn an_empty_database_url_means_embedded() {
        let s = load(&[("FLOWLET__DATABASE__URL", "")]).unwrap();
        assert!(s.database.url.is_none());
    }

    #[test]
    fn an_unparseable_bind_address_names_its_key() {
        let err = load(&[("FLOWLET__SERVER__BIND", "localhost:http")]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("server.bind"), "{msg}");
        assert!(msg.contains("FLOWLET__SERVER__BIND"), "{msg}");
    }

    #[test]
    fn an_unknown_log_format_names_its_key() {
        let msg = load(&[("FLOWLET__LOG__FORMAT", "xml")])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("log.format"), "{msg}");
    }

    #[test]
    fn a_bad_log_filter_names_its_key() {
        let msg = load(&[("FLOWLET__LOG__LEVEL", "info,,=[")])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("log.level"), "{msg}");
    }

    #[test]
    fn a_non_numeric_pool_size_names_its_key() {
        let msg = load(&[("FLOWLET__DATABASE__POOL_SIZE", "many")])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("database.pool_size"), "{msg}");
    }

    #[test]
    fn an_unknown_key_is_refused_instead_of_ignored() {
        let msg = load(&[("FLOWLET__SERVER__BIDN", "0.0.0.0:1")])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("bidn"), "{msg}");
    }

    #[test]
    fn an_unknown_environment_is_refused() {
        let msg = load(&[("FLOWLET_ENV", "prod")]).unwrap_err().to_string();
        assert!(msg.contains("FLOWLET_ENV"), "{msg}");
    }

    #[test]
    fn a_database_url_of_another_scheme_is_refused() {
        let msg = load(&[("FLOWLET__DATABASE__URL", "mysql://x")])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("database.url"), "{msg}");
    }

    #[test]
    fn production_refuses_the_development_jwt_secret_and_says_which_key() {
        let err = load(&[("FLOWLET_ENV", "production")]).unwrap_err();
        match &err {
            ConfigError::DevelopmentSecrets(keys) => {
                let names: Vec<_> = keys.iter().map(|k| k.key).collect();
                assert_eq!(
                    names,
                    [
                        "auth.jwt_secret",
                        "auth.api_key_secret",
                        "kyc.hash_key",
                        "kyc.encryption_key_id"
                    ]
                );
            }
            other => panic!("unexpected error {other}"),
        }
        assert!(err.to_string().contains("FLOWLET__AUTH__JWT_SECRET"));
    }

    #[test]
    fn argon2_parameters_below_the_owasp_minimum_are_refused() {
        for (var, value, key) in [
            (
                "FLOWLET__AUTH__ARGON2_MEMORY_KIB",
                "8192",
                "auth.argon2_memory_kib",
            ),
            (
                "FLOWLET__AUTH__ARGON2_ITERATIONS",
                "1",
                "auth.argon2_iterations",
            ),
            (
                "FLOWLET__AUTH__ARGON2_PARALLELISM",
                "0",
                "auth.argon2_parallelism",
            ),
        ] {
            let msg = load(&[(var, value)]).unwrap_err().to_string();
            assert!(msg.contains(key), "{msg}");
        }
    }

    #[test]
    fn previous_jwt_keys_are_read_by_kid_from_the_environment() {
        let s = load(&[(
            "FLOWLET__AUTH__JWT_PREVIOUS_SECRETS__OLD1",
            "an-older-signing-secret",
        )])
        .unwrap();
        assert_eq!(s.auth.jwt_previous_secrets.len(), 1);
        assert_eq!(s.auth.jwt_previous_secrets[0].0, "old1");
    }

    #[test]
    fn a_zero_rate_limit_is_refused() {
        let msg = load(&[("FLOWLET__RATE_LIMIT__KEY_PER_HOUR", "0")])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("rate_limit.key_per_hour"), "{msg}");
    }

    #[test]
    fn production_refuses_a_short_jwt_secret() {
        let msg = load(&[
            ("FLOWLET_ENV", "production"),
            ("FLOWLET__AUTH__JWT_SECRET", "short"),
        ])
        .unwrap_err()
        .to_string();
        assert!(msg.contains("shorter than 32 bytes"), "{msg}");
    }

    #[test]
    fn production_with_real_secrets_starts_with_json_logs() {
        let s = load(&[
            ("FLOWLET_ENV", "production"),
            (
                "FLOWLET__AUTH__JWT_SECRET",
                "a-real-secret-of-more-than-thirty-two-bytes",
            ),
            (
                "FLOWLET__AUTH__API_KEY_SECRET",
                "another-real-secret-of-more-than-32-bytes",
            ),
            (
                "FLOWLET__KYC__HASH_KEY",
                "a-real-hash-key-of-more-than-32-bytes!!",
            ),
            ("FLOWLET__KYC__ENCRYPTION_KEY_ID", "k2026"),
            (
                "FLOWLET__KYC__ENCRYPTION_KEYS__K2026",
                "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
            ),
        ])
        .unwrap();
        assert_eq!(s.env, Environment::Production);
        let kids: Vec<&str> = s
            .kyc
            .encryption_keys
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(
            kids,
            ["k2026"],
            "the development key is dropped in production"
        );
        assert_eq!(s.auth.api_key_tag, "live");
        assert!(s.webhooks.require_https);
        assert!(!s.webhooks.allow_private_targets);
        assert_eq!(s.log.format, LogFormat::Json);
        assert_eq!(s.server.bind.to_string(), "0.0.0.0:8080");
    }

    #[test]
    fn kyc_settings_are_validated_naming_the_key() {
        for (var, value, expected) in [
            (
                "FLOWLET__KYC__ENCRYPTION_KEYS__DEV",
                "c2hvcnQ=",
                "must be 32 bytes",
            ),
            (
                "FLOWLET__KYC__ENCRYPTION_KEYS__DEV",
                "not base64!",
                "is not base64",
            ),
            (
                "FLOWLET__KYC__ENCRYPTION_KEY_ID",
                "k9",
                "kyc.encryption_key_id",
            ),
            ("FLOWLET__KYC__HASH_KEY", "short", "kyc.hash_key"),
            ("FLOWLET__KYC__MINIMUM_AGE", "5", "kyc.minimum_age"),
            (
                "FLOWLET__KYC__SANCTIONS_THRESHOLD",
                "1.5",
                "kyc.sanctions_threshold",
            ),
            ("FLOWLET__KYC__TIERS__3__WITHDRAWALS", "true", "kyc.tiers"),
            (
                "FLOWLET__KYC__TIERS__1__LIMITS__XYZ__MAX_BALANCE",
                "1",
                "kyc.tiers",
            ),
            (
                "FLOWLET__KYC__TIERS__1__LIMITS__USD__MAX_BALANCE",
                "1.001",
                "max_balance",
            ),
        ] {
            let msg = match load(&[(var, value)]) {
                Ok(_) => panic!("{var}={value} was accepted"),
                Err(e) => e.to_string(),
            };
            assert!(msg.contains(expected), "{var}={value}: {msg}");
        }
    }

    #[test]
    fn kyc_tiers_and_limits_are_read_per_currency() {
        let s = load(&[(
            "FLOWLET__KYC__TIERS__1__LIMITS__USD__DAILY_OUTGOING",
            "250.50",
        )])
        .unwrap();
        assert_eq!(s.kyc.tiers.len(), 3);
        assert!(s.kyc.tiers[0].limits.is_empty());
        let usd = s.kyc.tiers[1]
            .limits
            .iter()
            .find(|l| l.daily_outgoing.currency().code() == "USD")
            .unwrap();
        assert_eq!(usd.daily_outgoing.minor(), 25050);
        assert!(s.kyc.tiers[2].cards && !s.kyc.tiers[1].cards);
        assert_eq!(s.kyc.high_risk_countries, ["KP", "IR", "MM"]);
    }

    #[test]
    fn idempotency_keys_are_kept_a_day_and_locked_a_minute_by_default() {
        let s = load(&[]).unwrap();
        assert_eq!(s.idempotency.ttl, Duration::from_secs(24 * 3600));
        assert_eq!(s.idempotency.lock_timeout, Duration::from_secs(60));
        let s = load(&[
            ("FLOWLET__IDEMPOTENCY__TTL_HOURS", "48"),
            ("FLOWLET__IDEMPOTENCY__LOCK_TIMEOUT_SECS", "3600"),
        ])
        .unwrap();
        assert_eq!(s.idempotency.ttl, Duration::from_secs(48 * 3600));
        assert_eq!(s.idempotency.lock_timeout, Duration::from_secs(3600));
    }

    #[test]
    fn the_engine_pipeline_leaves_connections_for_requests() {
        assert_eq!(load(&[]).unwrap().ledger.pipeline_depth, 3);
        let small = load(&[("FLOWLET__DATABASE__POOL_SIZE", "3")]).unwrap();
        assert_eq!(small.ledger.pipeline_depth, 2, "at most pool_size - 1");
        let tiny = load(&[("FLOWLET__DATABASE__POOL_SIZE", "1")]).unwrap();
        assert_eq!(tiny.ledger.pipeline_depth, 1);
    }

    #[test]
    fn payment_settings_have_defaults_and_refuse_nonsense_naming_the_key() {
        let s = load(&[]).unwrap();
        assert_eq!(s.payments.sandbox_settle_delay, Duration::from_millis(2000));
        assert_eq!(s.payments.settlement_interval, Duration::from_millis(250));
        let err = load(&[("FLOWLET__PAYMENTS__SETTLEMENT_INTERVAL_MS", "0")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("payments.settlement_interval_ms"), "{err}");
    }

    #[test]
    fn idempotency_settings_out_of_range_are_refused_naming_the_key() {
        for (var, value, key) in [
            (
                "FLOWLET__IDEMPOTENCY__TTL_HOURS",
                "23",
                "idempotency.ttl_hours",
            ),
            (
                "FLOWLET__IDEMPOTENCY__TTL_HOURS",
                "8785",
                "idempotency.ttl_hours",
            ),
            (
                "FLOWLET__IDEMPOTENCY__LOCK_TIMEOUT_SECS",
                "0",
                "idempotency.lock_timeout_secs",
            ),
            (
                "FLOWLET__IDEMPOTENCY__LOCK_TIMEOUT_SECS",
                "3601",
                "idempotency.lock_timeout_secs",
            ),
        ] {
            let msg = match load(&[(var, value)]) {
                Ok(_) => panic!("{var}={value} was accepted"),
                Err(e) => e.to_string(),
            };
            assert!(msg.contains(key), "{var}={value}: {msg}");
            assert!(msg.contains(var), "{var}={value}: {msg}");
        }
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let s = load(&[
            ("FLOWLET__DATABASE__URL", "postgres://u:hunter2@db/flowlet"),
            ("FLOWLET__AUTH__JWT_SECRET", "super-secret-value-1234567890"),
        ])
        .unwrap();
        let debug = format!("{s:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(!debug.contains("super-secret-value"), "{debug}");
    }

    #[test]
    fn files_in_the_config_directory_take_precedence_over_compiled_in_copies() {
        let dir = std::env::temp_dir().join(format!("flowlet-config-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("development.toml"),
            "[server]\nbind = \"127.0.0.1:9999\"\n",
        )
        .unwrap();
        let sources = Sources {
            config_dir: Some(dir.clone()),
            env_vars: HashMap::new(),
        };
        let s = Settings::load_from(&sources).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(s.server.bind.port(), 9999);
    }
}
