//! Secrets at rest (KYC's personal data, card numbers): AES-256-GCM per value, with the key id
//! beside each value, and keyed hashes for the fields that must be searchable. Each module
//! builds its own [`Vault`] from its own key ring (`<section>.encryption_key_id`,
//! `<section>.encryption_keys.<kid>`) and hash key.
//!
//! A stored value reads `<key id>:<base64 of nonce || ciphertext || tag>`. The associated data
//! binds each value to its row and field (`customer.first_name:<uuid>`), so a ciphertext
//! copied into another row or column fails to decrypt instead of silently showing someone
//! else's name. Nonces are 96 random bits per value; with one key encrypting far fewer than
//! 2^32 values the collision risk stays negligible, and rotation keeps it so.
//!
//! Searchable fields (email, document number) also get `HMAC-SHA256(hash_key, normalised)`;
//! equality search works on the hash, and the hash alone reveals nothing without the key.

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hmac;
use std::collections::HashMap as Map;

use crate::platform::config::ConfigError;

/// Why a value could not be sealed or opened. Never carries the value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VaultError {
    #[error("no encryption key with id `{0}` is configured")]
    UnknownKey(String),
    #[error("a sealed value is malformed or was tampered with")]
    Corrupt,
    #[error("the system random generator failed")]
    Random,
}

/// The configured keys: one to encrypt with, all to decrypt with, and the hash key.
#[derive(Clone)]
pub struct Vault {
    active: String,
    keys: HashMap<String, std::sync::Arc<LessSafeKey>>,
    hash_key: hmac::Key,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("active", &self.active)
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// Builds the vault from validated keys (32 bytes each, see [`parse_keys`]): `active` to
    /// seal with, every one to open with, and `hash_key` for [`Vault::hash`].
    pub fn new(
        active: &str,
        encryption_keys: &[(String, SecretBytes)],
        hash_key: &[u8],
    ) -> Result<Vault, VaultError> {
        let mut keys = HashMap::new();
        for (kid, bytes) in encryption_keys {
            let key = UnboundKey::new(&AES_256_GCM, &bytes.0)
                .map_err(|_| VaultError::UnknownKey(kid.clone()))?;
            keys.insert(kid.clone(), std::sync::Arc::new(LessSafeKey::new(key)));
        }
        if !keys.contains_key(active) {
            return Err(VaultError::UnknownKey(active.to_owned()));
        }
        Ok(Vault {
            active: active.to_owned(),
            keys,
            hash_key: hmac::Key::new(hmac::HMAC_SHA256, hash_key),
        })
    }

    /// Encrypts `plain` for the field named by `context` (e.g. `customer.first_name:<id>`).
    pub fn seal(&self, context: &str, plain: &str) -> Result<String, VaultError> {
        let key = self
            .keys
            .get(&self.active)
            .ok_or_else(|| VaultError::UnknownKey(self.active.clone()))?;
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| VaultError::Random)?;
        let mut buffer = plain.as_bytes().to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(context.as_bytes()),
            &mut buffer,
        )
        .map_err(|_| VaultError::Corrupt)?;
        let mut out = Vec::with_capacity(NONCE_LEN + buffer.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buffer);
        Ok(format!("{}:{}", self.active, STANDARD.encode(out)))
    }

    /// Decrypts a value sealed by [`Vault::seal`] for the same `context`, under any configured
    /// key.
    pub fn open(&self, context: &str, stored: &str) -> Result<String, VaultError> {
        let (kid, body) = stored.split_once(':').ok_or(VaultError::Corrupt)?;
        let key = self
            .keys
            .get(kid)
            .ok_or_else(|| VaultError::UnknownKey(kid.to_owned()))?;
        let bytes = STANDARD.decode(body).map_err(|_| VaultError::Corrupt)?;
        if bytes.len() < NONCE_LEN {
            return Err(VaultError::Corrupt);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| VaultError::Corrupt)?;
        let mut sealed = sealed.to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut sealed)
            .map_err(|_| VaultError::Corrupt)?;
        String::from_utf8(plain.to_vec()).map_err(|_| VaultError::Corrupt)
    }

    /// Whether a stored value is sealed under a key other than the active one (to re-encrypt).
    pub fn is_stale(&self, stored: &str) -> bool {
        stored
            .split_once(':')
            .is_none_or(|(kid, _)| kid != self.active)
    }

    /// The keyed hash of an already normalised value, namespaced by `kind` so equal strings of
    /// different kinds never share a hash.
    pub fn hash(&self, kind: &str, normalised: &str) -> Vec<u8> {
        let mut ctx = hmac::Context::with_key(&self.hash_key);
        ctx.update(kind.as_bytes());
        ctx.update(&[0]);
        ctx.update(normalised.as_bytes());
        ctx.sign().as_ref().to_vec()
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

/// A section's key ring as configured (`encryption_keys.<kid>` = base64 of 32 bytes), checked:
/// ids of 1-32 letters, digits or '_', every key AES-256 sized, `active` among them. `key` and
/// `env_var` name the setting in errors (e.g. `kyc.encryption_keys`,
/// `FLOWLET__KYC__ENCRYPTION_KEYS__<KID>`); `active_key`/`active_var` the active id's.
pub fn parse_keys(
    raw: &Map<String, String>,
    active: &str,
    (key, env_var): (&'static str, &'static str),
    (active_key, active_var): (&'static str, &'static str),
) -> Result<Vec<(String, SecretBytes)>, ConfigError> {
    let keys_error = |reason: String| ConfigError::invalid(key, env_var, reason);
    let mut keys = Vec::new();
    for (kid, value) in raw {
        if kid.is_empty()
            || kid.len() > 32
            || !kid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(keys_error(format!(
                "key id `{kid}` must be 1-32 letters, digits or '_'"
            )));
        }
        let bytes = STANDARD
            .decode(value.trim())
            .map_err(|_| keys_error(format!("key `{kid}` is not base64")))?;
        if bytes.len() != 32 {
            return Err(keys_error(format!(
                "key `{kid}` must be 32 bytes (AES-256), found {}",
                bytes.len()
            )));
        }
        keys.push((kid.clone(), SecretBytes(bytes)));
    }
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    if !keys.iter().any(|(kid, _)| kid == active) {
        return Err(ConfigError::invalid(
            active_key,
            active_var,
            format!(
                "`{active}` is not one of {key} (set {} to base64 of 32 random bytes)",
                env_var.replace("<KID>", &active.to_ascii_uppercase())
            ),
        ));
    }
    Ok(keys)
}

/// Whether the key `kid` of `keys` is the development key `development_b64` (shipped in
/// `config/default.toml`, so production refuses to seal with it).
pub fn is_key(keys: &[(String, SecretBytes)], kid: &str, development_b64: &str) -> bool {
    let development = STANDARD.decode(development_b64).unwrap_or_default();
    keys.iter()
        .any(|(id, key)| id == kid && key.0 == development)
}

/// Drops the development key `development_b64` from `keys` (production never opens with it).
pub fn drop_key(keys: &mut Vec<(String, SecretBytes)>, development_b64: &str) {
    let development = STANDARD.decode(development_b64).unwrap_or_default();
    keys.retain(|(_, key)| key.0 != development);
}
