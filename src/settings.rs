//! Configuration: one typed [`Settings`] value, read once at start-up, composed of every
//! module's section.
//!
//! Each section belongs to its owner, with its type, raw form, validation and messages
//! (platform's in `platform::config`, the ledger's in `ledger/settings.rs`, ...); each is a
//! [`Section`]. This file only composes them, which is why it sits beside `app.rs` in the
//! composition root: `platform` knows no domain module, and each module is handed its own
//! section (`&LedgerSettings`), never the whole.
//!
//! The layers (`config/default.toml` < `config/$FLOWLET_ENV.toml` < `FLOWLET__SECTION__KEY`
//! variables) are read by `platform::config`; every section is validated here, before anything
//! starts, and production refuses the development secrets of all of them at once.

use serde::Deserialize;

use crate::auth::{AuthSettings, RateLimitSettings};
use crate::card::CardSettings;
use crate::kyc::KycSettings;
use crate::ledger::LedgerSettings;
use crate::notify::{SmtpSettings, WebhookSettings};
use crate::payment::PaymentSettings;
use crate::platform::config::{
    ConfigError, DatabaseSettings, Environment, IdempotencySettings, InsecureKey, Layers,
    LogSettings, RedisSettings, Section, ServerSettings, Sources, load_section,
};

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
    pub cards: CardSettings,
    pub smtp: SmtpSettings,
    pub log: LogSettings,
}

/// A section's raw form, as read before validation.
type Raw<S> = <S as Section>::Raw;

/// The shape of the layered configuration before validation: each section's raw form under its
/// [`Section::KEY`]. Unknown keys are refused, here and in every section, so a typo
/// (`FLOWLET__SERVER__BIDN`) fails loudly instead of silently using a default.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    server: Raw<ServerSettings>,
    database: Raw<DatabaseSettings>,
    redis: Raw<RedisSettings>,
    auth: Raw<AuthSettings>,
    rate_limit: Raw<RateLimitSettings>,
    ledger: Raw<LedgerSettings>,
    idempotency: Raw<IdempotencySettings>,
    payments: Raw<PaymentSettings>,
    webhooks: Raw<WebhookSettings>,
    kyc: Raw<KycSettings>,
    cards: Raw<CardSettings>,
    smtp: Raw<SmtpSettings>,
    log: Raw<LogSettings>,
}

/// What `flowlet migrate` reads: the database and the logs, nothing else. The migration Job
/// is given only the database URL (no JWT, API-key or KYC secret), so no other section is read
/// or checked, and production's refusal of development secrets does not apply to it.
#[derive(Debug, Clone)]
pub struct MigrationSettings {
    pub database: DatabaseSettings,
    pub log: LogSettings,
}

impl MigrationSettings {
    /// Reads the two sections from this process's configuration.
    pub fn load() -> Result<MigrationSettings, ConfigError> {
        Self::load_from(&Sources::from_process())
    }

    /// Reads the two sections from explicit sources.
    pub fn load_from(sources: &Sources) -> Result<MigrationSettings, ConfigError> {
        Ok(MigrationSettings {
            log: load_section(sources)?,
            database: load_section(sources)?,
        })
    }
}

impl Settings {
    /// Read and validate the configuration of this process.
    pub fn load() -> Result<Settings, ConfigError> {
        Self::load_from(&Sources::from_process())
    }

    /// Read and validate the configuration from explicit sources.
    pub fn load_from(sources: &Sources) -> Result<Settings, ConfigError> {
        let layers = Layers::read(sources)?;
        let env = layers.env();
        let raw: RawSettings = layers.deserialize()?;
        // The first bad value stops the load: this order decides which one an operator sees.
        let server = ServerSettings::validate(raw.server, env)?;
        let log = LogSettings::validate(raw.log, env)?;
        let database = DatabaseSettings::validate(raw.database, env)?;
        let redis = RedisSettings::validate(raw.redis, env)?;
        let auth = AuthSettings::validate(raw.auth, env)?;
        let rate_limit = RateLimitSettings::validate(raw.rate_limit, env)?;
        let smtp = SmtpSettings::validate(raw.smtp, env)?;
        // The ledger's batches in flight each hold a connection of the database's pool.
        let ledger = LedgerSettings::validate(raw.ledger, env)?.within_pool(database.pool_size);
        let idempotency = IdempotencySettings::validate(raw.idempotency, env)?;
        let payments = PaymentSettings::validate(raw.payments, env)?;
        let webhooks = WebhookSettings::validate(raw.webhooks, env)?;
        let kyc = KycSettings::validate(raw.kyc, env)?;
        let cards = CardSettings::validate(raw.cards, env)?;
        let settings = Settings {
            env,
            server,
            database,
            redis,
            auth,
            rate_limit,
            ledger,
            idempotency,
            payments,
            webhooks,
            kyc,
            cards,
            smtp,
            log,
        };
        settings.refuse_development_secrets()?;
        Ok(settings)
    }

    /// Production must not run with any value a developer could know from the repository.
    /// Every section is asked, so a secret a module adds to its section is covered here.
    fn refuse_development_secrets(&self) -> Result<(), ConfigError> {
        if self.env != Environment::Production {
            return Ok(());
        }
        let insecure: Vec<InsecureKey> = [
            self.server.development_secrets(),
            self.database.development_secrets(),
            self.redis.development_secrets(),
            self.auth.development_secrets(),
            self.rate_limit.development_secrets(),
            self.ledger.development_secrets(),
            self.idempotency.development_secrets(),
            self.payments.development_secrets(),
            self.webhooks.development_secrets(),
            self.kyc.development_secrets(),
            self.cards.development_secrets(),
            self.smtp.development_secrets(),
            self.log.development_secrets(),
        ]
        .concat();
        if insecure.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::DevelopmentSecrets(insecure))
        }
    }

    /// The database URL to use, if one is configured (else the embedded server is started).
    pub fn database_url(&self) -> Option<&str> {
        self.database.expose_url()
    }

    /// The Redis URL to use, if one is configured.
    pub fn redis_url(&self) -> Option<&str> {
        self.redis.expose_url()
    }

    /// The SMTP URL to use, if one is configured.
    pub fn smtp_url(&self) -> Option<&str> {
        self.smtp.expose_url()
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::platform::config::{LogFormat, load_section};
    use crate::platform::db::embedded::Placement;

    fn load(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::load_from(&Sources::with_vars(vars.iter().copied()))
    }

    /// Whether section `S` loads alone, under its key, from the defaults.
    fn loads_alone<S: Section>() -> bool {
        load_section::<S>(&Sources::default()).is_ok()
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
        // Each section's KEY is its field of `RawSettings`: it loads alone from the same files.
        assert!(loads_alone::<ServerSettings>());
        assert!(loads_alone::<DatabaseSettings>());
        assert!(loads_alone::<RedisSettings>());
        assert!(loads_alone::<AuthSettings>());
        assert!(loads_alone::<RateLimitSettings>());
        assert!(loads_alone::<LedgerSettings>());
        assert!(loads_alone::<IdempotencySettings>());
        assert!(loads_alone::<PaymentSettings>());
        assert!(loads_alone::<WebhookSettings>());
        assert!(loads_alone::<KycSettings>());
        assert!(loads_alone::<SmtpSettings>());
        assert!(loads_alone::<LogSettings>());
    }

    #[test]
    fn an_unknown_key_is_refused_instead_of_ignored() {
        let msg = load(&[("FLOWLET__SERVER__BIDN", "0.0.0.0:1")])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("bidn"), "{msg}");
        let msg = load(&[("FLOWLET__SERVR__BIND", "0.0.0.0:1")])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("servr"), "an unknown section too: {msg}");
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
                        "payments.rail",
                        "kyc.hash_key",
                        "kyc.encryption_key_id",
                        "cards.hash_key",
                        "cards.cvc_key",
                        "cards.encryption_key_id"
                    ]
                );
            }
            other => panic!("unexpected error {other}"),
        }
        assert!(err.to_string().contains("FLOWLET__AUTH__JWT_SECRET"));
    }

    /// Production's real secrets, plus `extra`.
    fn production_with(extra: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let mut vars = vec![
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
            ("FLOWLET__PAYMENTS__ALLOW_SANDBOX_RAIL", "true"),
            (
                "FLOWLET__CARDS__HASH_KEY",
                "a-real-card-hash-key-of-more-than-32-bytes",
            ),
            (
                "FLOWLET__CARDS__CVC_KEY",
                "a-real-card-cvc-key-of-more-than-32-bytes!",
            ),
            ("FLOWLET__CARDS__ENCRYPTION_KEY_ID", "c2026"),
            (
                "FLOWLET__CARDS__ENCRYPTION_KEYS__C2026",
                "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=",
            ),
        ];
        vars.extend_from_slice(extra);
        load(&vars)
    }

    #[test]
    fn production_refuses_a_database_url_that_can_fall_back_to_plaintext() {
        for mode in ["", "?sslmode=disable", "?sslmode=prefer", "?sslmode=allow"] {
            let url = format!("postgres://flowlet:pw@db.internal:5432/flowlet{mode}");
            let err = production_with(&[("FLOWLET__DATABASE__URL", &url)]).unwrap_err();
            let text = err.to_string();
            assert!(text.contains("FLOWLET__DATABASE__URL"), "{mode}: {text}");
            assert!(text.contains("plaintext"), "{mode}: {text}");
            assert!(!text.contains("pw@"), "the password never shows: {text}");
        }
        for mode in ["require", "verify-ca", "verify-full"] {
            let url = format!("postgres://flowlet:pw@db.internal:5432/flowlet?sslmode={mode}");
            let s = production_with(&[("FLOWLET__DATABASE__URL", &url)]).unwrap();
            assert!(s.database.url.is_some(), "{mode}");
        }
        // The replica too, and the explicit opt-out works for both.
        let err = production_with(&[
            (
                "FLOWLET__DATABASE__URL",
                "postgres://h/d?sslmode=verify-full",
            ),
            ("FLOWLET__DATABASE__REPLICA_URL", "postgres://r/d"),
        ])
        .unwrap_err();
        assert!(
            err.to_string().contains("FLOWLET__DATABASE__REPLICA_URL"),
            "{err}"
        );
        let s = production_with(&[
            ("FLOWLET__DATABASE__URL", "postgres://h/d?sslmode=disable"),
            ("FLOWLET__DATABASE__REPLICA_URL", "postgres://r/d"),
            ("FLOWLET__DATABASE__ALLOW_PLAINTEXT", "true"),
        ])
        .unwrap();
        assert!(s.database.allow_plaintext);
        // Development keeps libpq's default (prefer) for local servers.
        load(&[("FLOWLET__DATABASE__URL", "postgres://127.0.0.1/flowlet")]).unwrap();
    }

    #[test]
    fn a_malformed_sslmode_or_a_missing_ca_file_stops_start_up_naming_the_setting() {
        let err = load(&[(
            "FLOWLET__DATABASE__URL",
            "postgres://h/d?sslmode=verify_full",
        )])
        .unwrap_err();
        assert!(err.to_string().contains("sslmode=verify_full"), "{err}");
        let err = load(&[("FLOWLET__DATABASE__URL", "postgres://h/d?sslcert=/c.pem")]).unwrap_err();
        assert!(err.to_string().contains("sslcert"), "{err}");
        let err = load(&[("FLOWLET__DATABASE__CA_FILE", "/nonexistent/ca.pem")]).unwrap_err();
        assert!(
            err.to_string().contains("FLOWLET__DATABASE__CA_FILE"),
            "{err}"
        );
        let err = load(&[("FLOWLET__REDIS__CA_FILE", "/nonexistent/ca.pem")]).unwrap_err();
        assert!(err.to_string().contains("FLOWLET__REDIS__CA_FILE"), "{err}");
        let err = load(&[("FLOWLET__DATABASE__WORKER_POOL_SIZE", "0")]).unwrap_err();
        assert!(
            err.to_string()
                .contains("FLOWLET__DATABASE__WORKER_POOL_SIZE"),
            "{err}"
        );
    }

    #[test]
    fn thread_counts_and_the_hashing_bound_are_settings() {
        let s = load(&[
            ("FLOWLET__SERVER__RUNTIME_THREADS", "3"),
            ("FLOWLET__AUTH__MAX_CONCURRENT_HASHES", "4"),
        ])
        .unwrap();
        assert_eq!(s.server.runtime_threads, Some(3));
        assert_eq!(s.auth.max_concurrent_hashes, 4);
        let defaults = load(&[]).unwrap();
        assert_eq!(
            defaults.server.runtime_threads, None,
            "0: one per usable CPU"
        );
        assert_eq!(defaults.auth.max_concurrent_hashes, 2);
        let err = load(&[("FLOWLET__AUTH__MAX_CONCURRENT_HASHES", "0")]).unwrap_err();
        assert!(
            err.to_string()
                .contains("FLOWLET__AUTH__MAX_CONCURRENT_HASHES"),
            "{err}"
        );
    }

    #[test]
    fn migrate_reads_the_database_and_logs_only_so_production_secrets_are_not_needed() {
        let vars: Vec<(String, String)> = [
            ("FLOWLET_ENV", "production"),
            (
                "FLOWLET__DATABASE__URL",
                "postgres://m@db/flowlet?sslmode=verify-full",
            ),
            ("FLOWLET__DATABASE__MIGRATION_LOCK_WAIT_MS", "1500"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let s = MigrationSettings::load_from(&Sources::with_vars(vars)).unwrap();
        assert_eq!(
            s.database.migration_limits.lock_wait,
            std::time::Duration::from_millis(1500)
        );
        // The database's own rules still hold in production.
        let vars = vec![
            ("FLOWLET_ENV".to_owned(), "production".to_owned()),
            (
                "FLOWLET__DATABASE__URL".to_owned(),
                "postgres://m@db/flowlet".to_owned(),
            ),
        ];
        let err = MigrationSettings::load_from(&Sources::with_vars(vars)).unwrap_err();
        assert!(err.to_string().contains("plaintext"), "{err}");
    }

    #[test]
    fn production_refuses_plaintext_redis_unless_allowed() {
        let err =
            production_with(&[("FLOWLET__REDIS__URL", "redis://:pw@cache:6379")]).unwrap_err();
        assert!(err.to_string().contains("FLOWLET__REDIS__URL"), "{err}");
        assert!(!err.to_string().contains("pw@"), "{err}");
        production_with(&[("FLOWLET__REDIS__URL", "rediss://:pw@cache:6380")]).unwrap();
        production_with(&[
            ("FLOWLET__REDIS__URL", "redis://cache:6379"),
            ("FLOWLET__REDIS__ALLOW_PLAINTEXT", "true"),
        ])
        .unwrap();
    }

    #[test]
    fn production_with_real_secrets_starts_with_json_logs() {
        let s = production_with(&[]).unwrap();
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
    fn the_engine_pipeline_leaves_connections_for_requests() {
        assert_eq!(load(&[]).unwrap().ledger.pipeline_depth, 3);
        let small = load(&[("FLOWLET__DATABASE__POOL_SIZE", "3")]).unwrap();
        assert_eq!(small.ledger.pipeline_depth, 2, "at most pool_size - 1");
        let tiny = load(&[("FLOWLET__DATABASE__POOL_SIZE", "1")]).unwrap();
        assert_eq!(tiny.ledger.pipeline_depth, 1);
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
}
