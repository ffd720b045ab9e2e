//! KYC's section of the configuration (`[kyc]`): personal-data keys, automated-check rules,
//! tiers and their limits.

use std::collections::HashMap;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::platform::config::{ConfigError, Environment, InsecureKey, Section};
use crate::platform::money::{Currency, Money};
use crate::platform::vault;
pub use crate::platform::vault::SecretBytes;

/// The personal-data encryption key shipped in `config/default.toml` (key id `dev`): base64 of
/// 32 bytes anyone can read in the repository, so production refuses it.
pub const DEVELOPMENT_KYC_ENCRYPTION_KEY: &str = "Zmxvd2xldC1kZXYta3ljLWtleS1ub3QtZm9yLXByb2Q=";

/// The keyed-hash secret of searchable personal data shipped in `config/default.toml`.
pub const DEVELOPMENT_KYC_HASH_KEY: &str = "flowlet-development-kyc-hash-key-not-for-production";

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
        vault::is_key(
            &self.encryption_keys,
            &self.encryption_key_id,
            DEVELOPMENT_KYC_ENCRYPTION_KEY,
        )
    }

    /// Production never decrypts with the development key either: values under it can only be
    /// test data. (It stays in `config/default.toml` so development needs no configuration.)
    fn drop_development_key(&mut self) {
        vault::drop_key(&mut self.encryption_keys, DEVELOPMENT_KYC_ENCRYPTION_KEY);
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

/// `[kyc]` as read, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKyc {
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

impl Section for KycSettings {
    const KEY: &'static str = "kyc";
    type Raw = RawKyc;

    fn validate(raw: RawKyc, env: Environment) -> Result<Self, ConfigError> {
        let mut settings = raw.validate()?;
        // Production drops the development key (see `drop_development_key`), unless it is the
        // active one: then production refuses to start (`development_secrets`), and says why.
        if env == Environment::Production && !settings.active_key_is_development_key() {
            settings.drop_development_key();
        }
        Ok(settings)
    }

    fn development_secrets(&self) -> Vec<InsecureKey> {
        let mut insecure = Vec::new();
        insecure.extend(InsecureKey::check_secret(
            "kyc.hash_key",
            "FLOWLET__KYC__HASH_KEY",
            self.hash_key.expose_secret(),
            DEVELOPMENT_KYC_HASH_KEY,
        ));
        if self.active_key_is_development_key() {
            insecure.push(InsecureKey {
                key: "kyc.encryption_key_id",
                env_var: "FLOWLET__KYC__ENCRYPTION_KEY_ID",
                reason: "names the development key (set FLOWLET__KYC__ENCRYPTION_KEYS__<KID> to \
                         base64 of 32 random bytes and this to <kid>)",
            });
        }
        insecure
    }
}

impl RawKyc {
    fn validate(self) -> Result<KycSettings, ConfigError> {
        let encryption_keys = vault::parse_keys(
            &self.encryption_keys,
            &self.encryption_key_id,
            (
                "kyc.encryption_keys",
                "FLOWLET__KYC__ENCRYPTION_KEYS__<KID>",
            ),
            ("kyc.encryption_key_id", "FLOWLET__KYC__ENCRYPTION_KEY_ID"),
        )?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::config::{Sources, load_section};

    fn load(vars: &[(&str, &str)]) -> Result<KycSettings, ConfigError> {
        load_section(&Sources::with_vars(vars.iter().copied()))
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
        assert_eq!(s.tiers.len(), 3);
        assert!(s.tiers[0].limits.is_empty());
        let usd = s.tiers[1]
            .limits
            .iter()
            .find(|l| l.daily_outgoing.currency().code() == "USD")
            .unwrap();
        assert_eq!(usd.daily_outgoing.minor(), 25050);
        assert!(s.tiers[2].cards && !s.tiers[1].cards);
        assert_eq!(s.high_risk_countries, ["KP", "IR", "MM"]);
    }
}
