//! The card module's section of the configuration (`[cards]`): the BIN cards are issued
//! under, their validity, the vault's keys, and the limits of the card lifecycle.

use std::collections::HashMap;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::platform::config::{ConfigError, Environment, InsecureKey, Section};
use crate::platform::vault::{self, SecretBytes};

/// The card-number encryption key shipped in `config/default.toml` (key id `dev`): base64 of
/// 32 bytes anyone can read in the repository, so production refuses it.
pub const DEVELOPMENT_CARD_ENCRYPTION_KEY: &str = "Zmxvd2xldC1kZXYtY2FyZC1rZXktbm90LWZvci1wcm8=";
/// The keyed-hash secret of card numbers shipped in `config/default.toml`.
pub const DEVELOPMENT_CARD_HASH_KEY: &str = "flowlet-development-card-hash-key-not-for-production";
/// The CVC derivation secret shipped in `config/default.toml`.
pub const DEVELOPMENT_CARD_CVC_KEY: &str = "flowlet-development-card-cvc-key-not-for-production";

/// Cards: issuing, the vault, and the lifecycle's limits.
#[derive(Debug, Clone)]
pub struct CardSettings {
    /// The issuer identification number card numbers start with (6-8 digits).
    pub bin: String,
    /// How many months a new card is valid (through the end of its expiry month).
    pub validity_months: u32,
    /// The key id new card numbers are sealed with.
    pub encryption_key_id: String,
    /// Every AES-256-GCM key by id (32 bytes each); older ids stay readable during a rotation.
    pub encryption_keys: Vec<(String, SecretBytes)>,
    /// HMAC-SHA256 key of card-number lookups.
    pub hash_key: SecretString,
    /// HMAC-SHA256 key the CVC is derived with (never stored).
    pub cvc_key: SecretString,
    /// Reveals of one card's number allowed per hour.
    pub reveals_per_hour: u32,
    /// How long an uncaptured authorization holds the money.
    pub hold_expiry: Duration,
    /// How far a capture may exceed its authorization in tipping merchant categories.
    pub overcapture_percent: u32,
    /// How long a partner's real-time decision endpoint has to answer.
    pub decision_timeout: Duration,
    /// Whether the card network simulator's routes are served.
    pub simulator_enabled: bool,
}

impl CardSettings {
    fn active_key_is_development_key(&self) -> bool {
        vault::is_key(
            &self.encryption_keys,
            &self.encryption_key_id,
            DEVELOPMENT_CARD_ENCRYPTION_KEY,
        )
    }
}

/// `[cards]` as read, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCards {
    bin: String,
    validity_months: u32,
    encryption_key_id: String,
    encryption_keys: HashMap<String, String>,
    hash_key: String,
    cvc_key: String,
    reveals_per_hour: u32,
    hold_expiry_hours: u64,
    overcapture_percent: u32,
    decision_timeout_ms: u64,
    simulator: RawSimulator,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSimulator {
    enabled: bool,
}

impl Section for CardSettings {
    const KEY: &'static str = "cards";
    type Raw = RawCards;

    fn validate(raw: RawCards, env: Environment) -> Result<Self, ConfigError> {
        let bin = raw.bin.trim().to_owned();
        if !(6..=8).contains(&bin.len()) || !bin.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ConfigError::invalid(
                "cards.bin",
                "FLOWLET__CARDS__BIN",
                "must be 6 to 8 digits",
            ));
        }
        if !(1..=120).contains(&raw.validity_months) {
            return Err(ConfigError::invalid(
                "cards.validity_months",
                "FLOWLET__CARDS__VALIDITY_MONTHS",
                "must be between 1 and 120",
            ));
        }
        let mut encryption_keys = vault::parse_keys(
            &raw.encryption_keys,
            &raw.encryption_key_id,
            (
                "cards.encryption_keys",
                "FLOWLET__CARDS__ENCRYPTION_KEYS__<KID>",
            ),
            (
                "cards.encryption_key_id",
                "FLOWLET__CARDS__ENCRYPTION_KEY_ID",
            ),
        )?;
        for (key, var, value) in [
            ("cards.hash_key", "FLOWLET__CARDS__HASH_KEY", &raw.hash_key),
            ("cards.cvc_key", "FLOWLET__CARDS__CVC_KEY", &raw.cvc_key),
        ] {
            if value.len() < 32 {
                return Err(ConfigError::invalid(key, var, "must be at least 32 bytes"));
            }
        }
        if raw.hash_key == raw.cvc_key {
            return Err(ConfigError::invalid(
                "cards.cvc_key",
                "FLOWLET__CARDS__CVC_KEY",
                "must differ from cards.hash_key",
            ));
        }
        if raw.reveals_per_hour == 0 {
            return Err(ConfigError::invalid(
                "cards.reveals_per_hour",
                "FLOWLET__CARDS__REVEALS_PER_HOUR",
                "must be at least 1",
            ));
        }
        if !(1..=720).contains(&raw.hold_expiry_hours) {
            return Err(ConfigError::invalid(
                "cards.hold_expiry_hours",
                "FLOWLET__CARDS__HOLD_EXPIRY_HOURS",
                "must be between 1 and 720",
            ));
        }
        if raw.overcapture_percent > 100 {
            return Err(ConfigError::invalid(
                "cards.overcapture_percent",
                "FLOWLET__CARDS__OVERCAPTURE_PERCENT",
                "must be between 0 and 100",
            ));
        }
        if !(50..=10_000).contains(&raw.decision_timeout_ms) {
            return Err(ConfigError::invalid(
                "cards.decision_timeout_ms",
                "FLOWLET__CARDS__DECISION_TIMEOUT_MS",
                "must be between 50 and 10000",
            ));
        }
        let development = vault::is_key(
            &encryption_keys,
            &raw.encryption_key_id,
            DEVELOPMENT_CARD_ENCRYPTION_KEY,
        );
        // Production never opens with the development key either (only test cards are under
        // it), unless it is the active one: then production refuses to start, and says why.
        if env == Environment::Production && !development {
            vault::drop_key(&mut encryption_keys, DEVELOPMENT_CARD_ENCRYPTION_KEY);
        }
        Ok(CardSettings {
            bin,
            validity_months: raw.validity_months,
            encryption_key_id: raw.encryption_key_id,
            encryption_keys,
            hash_key: SecretString::from(raw.hash_key),
            cvc_key: SecretString::from(raw.cvc_key),
            reveals_per_hour: raw.reveals_per_hour,
            hold_expiry: Duration::from_secs(raw.hold_expiry_hours.saturating_mul(3600)),
            overcapture_percent: raw.overcapture_percent,
            decision_timeout: Duration::from_millis(raw.decision_timeout_ms),
            simulator_enabled: raw.simulator.enabled,
        })
    }

    fn development_secrets(&self) -> Vec<InsecureKey> {
        let mut insecure = Vec::new();
        insecure.extend(InsecureKey::check_secret(
            "cards.hash_key",
            "FLOWLET__CARDS__HASH_KEY",
            self.hash_key.expose_secret(),
            DEVELOPMENT_CARD_HASH_KEY,
        ));
        insecure.extend(InsecureKey::check_secret(
            "cards.cvc_key",
            "FLOWLET__CARDS__CVC_KEY",
            self.cvc_key.expose_secret(),
            DEVELOPMENT_CARD_CVC_KEY,
        ));
        if self.active_key_is_development_key() {
            insecure.push(InsecureKey {
                key: "cards.encryption_key_id",
                env_var: "FLOWLET__CARDS__ENCRYPTION_KEY_ID",
                reason: "names the development key (set FLOWLET__CARDS__ENCRYPTION_KEYS__<KID> \
                         to base64 of 32 random bytes and this to <kid>)",
            });
        }
        insecure
    }
}
