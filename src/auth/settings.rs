//! Auth's sections of the configuration: signing and hashing secrets, password rules
//! (`[auth]`), and the request limits per client (`[rate_limit]`).

use std::collections::HashMap;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::platform::config::{ConfigError, Environment, InsecureKey, Section};

/// The JWT secret shipped in `config/default.toml`; production must never sign with it.
pub const DEVELOPMENT_JWT_SECRET: &str = "flowlet-development-jwt-secret-not-for-production";

/// The API-key HMAC secret shipped in `config/default.toml`; production must never use it.
pub const DEVELOPMENT_API_KEY_SECRET: &str =
    "flowlet-development-api-key-secret-not-for-production";

/// OWASP's minimum argon2id cost (password storage cheat sheet): 19 MiB, 2 passes, 1 lane.
const ARGON2_MIN_MEMORY_KIB: u32 = 19456;
const ARGON2_MIN_ITERATIONS: u32 = 2;

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
    /// Password hashes computed at once per process (each takes `argon2_memory_kib`).
    pub max_concurrent_hashes: usize,
    pub password_min_length: usize,
    pub lockout_threshold: u32,
    pub lockout: Duration,
    pub password_reset_ttl: Duration,
}

/// `[auth]` as read, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
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
    max_concurrent_hashes: usize,
    password_min_length: usize,
    lockout_threshold: u32,
    lockout_secs: u64,
    password_reset_ttl_secs: u64,
}

impl Section for AuthSettings {
    const KEY: &'static str = "auth";
    type Raw = RawAuth;

    fn validate(raw: RawAuth, _env: Environment) -> Result<Self, ConfigError> {
        raw.check()?;
        Ok(raw.into_settings())
    }

    fn development_secrets(&self) -> Vec<InsecureKey> {
        let mut insecure = Vec::new();
        insecure.extend(InsecureKey::check_secret(
            "auth.jwt_secret",
            "FLOWLET__AUTH__JWT_SECRET",
            self.jwt_secret.expose_secret(),
            DEVELOPMENT_JWT_SECRET,
        ));
        insecure.extend(InsecureKey::check_secret(
            "auth.api_key_secret",
            "FLOWLET__AUTH__API_KEY_SECRET",
            self.api_key_secret.expose_secret(),
            DEVELOPMENT_API_KEY_SECRET,
        ));
        for (_, secret) in &self.jwt_previous_secrets {
            insecure.extend(InsecureKey::check_secret(
                "auth.jwt_previous_secrets",
                "FLOWLET__AUTH__JWT_PREVIOUS_SECRETS__<KID>",
                secret.expose_secret(),
                DEVELOPMENT_JWT_SECRET,
            ));
        }
        insecure
    }
}

impl RawAuth {
    fn check(&self) -> Result<(), ConfigError> {
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
        if self.max_concurrent_hashes == 0 {
            return Err(ConfigError::invalid(
                "auth.max_concurrent_hashes",
                "FLOWLET__AUTH__MAX_CONCURRENT_HASHES",
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
            max_concurrent_hashes: self.max_concurrent_hashes,
            password_min_length: self.password_min_length,
            lockout_threshold: self.lockout_threshold,
            lockout: Duration::from_secs(self.lockout_secs),
            password_reset_ttl: Duration::from_secs(self.password_reset_ttl_secs),
        }
    }
}

/// Request limits per client (API.md "Rate limits").
#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    pub enabled: bool,
    pub ip_per_minute: u64,
    pub key_per_hour: u64,
    pub partner_per_hour: u64,
}

/// `[rate_limit]` as read, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    enabled: bool,
    ip_per_minute: u64,
    key_per_hour: u64,
    partner_per_hour: u64,
}

impl Section for RateLimitSettings {
    const KEY: &'static str = "rate_limit";
    type Raw = RawRateLimit;

    fn validate(raw: RawRateLimit, _env: Environment) -> Result<Self, ConfigError> {
        for (value, key, env_var) in [
            (
                raw.ip_per_minute,
                "rate_limit.ip_per_minute",
                "FLOWLET__RATE_LIMIT__IP_PER_MINUTE",
            ),
            (
                raw.key_per_hour,
                "rate_limit.key_per_hour",
                "FLOWLET__RATE_LIMIT__KEY_PER_HOUR",
            ),
            (
                raw.partner_per_hour,
                "rate_limit.partner_per_hour",
                "FLOWLET__RATE_LIMIT__PARTNER_PER_HOUR",
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, env_var, "must be greater than 0"));
            }
        }
        Ok(RateLimitSettings {
            enabled: raw.enabled,
            ip_per_minute: raw.ip_per_minute,
            key_per_hour: raw.key_per_hour,
            partner_per_hour: raw.partner_per_hour,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::config::{Sources, load_section};

    fn load<S: Section>(vars: &[(&str, &str)]) -> Result<S, ConfigError> {
        load_section(&Sources::with_vars(vars.iter().copied()))
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
            let msg = load::<AuthSettings>(&[(var, value)])
                .unwrap_err()
                .to_string();
            assert!(msg.contains(key), "{msg}");
        }
    }

    #[test]
    fn previous_jwt_keys_are_read_by_kid_from_the_environment() {
        let s: AuthSettings = load(&[(
            "FLOWLET__AUTH__JWT_PREVIOUS_SECRETS__OLD1",
            "an-older-signing-secret",
        )])
        .unwrap();
        assert_eq!(s.jwt_previous_secrets.len(), 1);
        assert_eq!(s.jwt_previous_secrets[0].0, "old1");
    }

    #[test]
    fn a_zero_rate_limit_is_refused() {
        let msg = load::<RateLimitSettings>(&[("FLOWLET__RATE_LIMIT__KEY_PER_HOUR", "0")])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("rate_limit.key_per_hour"), "{msg}");
    }

    #[test]
    fn production_refuses_a_short_jwt_secret() {
        let msg = load::<AuthSettings>(&[
            ("FLOWLET_ENV", "production"),
            ("FLOWLET__AUTH__JWT_SECRET", "short"),
        ])
        .unwrap_err()
        .to_string();
        assert!(msg.contains("shorter than 32 bytes"), "{msg}");
    }
}
