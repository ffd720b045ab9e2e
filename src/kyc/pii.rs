//! Personal data at rest: AES-256-GCM per value, with the key id beside each value, and keyed
//! hashes for the fields that must be searchable.
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
use secrecy::ExposeSecret;

use super::settings::KycSettings;

/// Why a value could not be sealed or opened. Never carries the value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PiiError {
    #[error("no personal-data key with id `{0}` is configured")]
    UnknownKey(String),
    #[error("a stored personal-data value is malformed or was tampered with")]
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
    /// Builds the vault from validated settings (every key is 32 bytes there).
    pub fn new(settings: &KycSettings) -> Result<Vault, PiiError> {
        let mut keys = HashMap::new();
        for (kid, bytes) in &settings.encryption_keys {
            let key = UnboundKey::new(&AES_256_GCM, &bytes.0)
                .map_err(|_| PiiError::UnknownKey(kid.clone()))?;
            keys.insert(kid.clone(), std::sync::Arc::new(LessSafeKey::new(key)));
        }
        if !keys.contains_key(&settings.encryption_key_id) {
            return Err(PiiError::UnknownKey(settings.encryption_key_id.clone()));
        }
        Ok(Vault {
            active: settings.encryption_key_id.clone(),
            keys,
            hash_key: hmac::Key::new(
                hmac::HMAC_SHA256,
                settings.hash_key.expose_secret().as_bytes(),
            ),
        })
    }

    /// Encrypts `plain` for the field named by `context` (e.g. `customer.first_name:<id>`).
    pub fn seal(&self, context: &str, plain: &str) -> Result<String, PiiError> {
        let key = self
            .keys
            .get(&self.active)
            .ok_or_else(|| PiiError::UnknownKey(self.active.clone()))?;
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| PiiError::Random)?;
        let mut buffer = plain.as_bytes().to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(context.as_bytes()),
            &mut buffer,
        )
        .map_err(|_| PiiError::Corrupt)?;
        let mut out = Vec::with_capacity(NONCE_LEN + buffer.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buffer);
        Ok(format!("{}:{}", self.active, STANDARD.encode(out)))
    }

    /// Decrypts a value sealed by [`Vault::seal`] for the same `context`, under any configured
    /// key.
    pub fn open(&self, context: &str, stored: &str) -> Result<String, PiiError> {
        let (kid, body) = stored.split_once(':').ok_or(PiiError::Corrupt)?;
        let key = self
            .keys
            .get(kid)
            .ok_or_else(|| PiiError::UnknownKey(kid.to_owned()))?;
        let bytes = STANDARD.decode(body).map_err(|_| PiiError::Corrupt)?;
        if bytes.len() < NONCE_LEN {
            return Err(PiiError::Corrupt);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| PiiError::Corrupt)?;
        let mut sealed = sealed.to_vec();
        let plain = key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut sealed)
            .map_err(|_| PiiError::Corrupt)?;
        String::from_utf8(plain.to_vec()).map_err(|_| PiiError::Corrupt)
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

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::kyc::SecretBytes;
    use crate::platform::config::{Sources, load_section};

    fn settings(keys: &[(&str, u8)], active: &str) -> KycSettings {
        let mut s: KycSettings =
            load_section(&Sources::with_vars([("FLOWLET_ENV", "test")])).unwrap();
        s.encryption_keys = keys
            .iter()
            .map(|(kid, b)| ((*kid).to_owned(), SecretBytes(vec![*b; 32])))
            .collect();
        s.encryption_key_id = active.to_owned();
        s
    }

    #[test]
    fn a_sealed_value_opens_to_itself_and_shows_nothing_of_it() {
        let vault = Vault::new(&settings(&[("k1", 1)], "k1")).unwrap();
        let sealed = vault.seal("t.f:1", "Ada Lovelace").unwrap();
        assert!(sealed.starts_with("k1:"));
        assert!(!sealed.contains("Ada"));
        assert_eq!(vault.open("t.f:1", &sealed).unwrap(), "Ada Lovelace");
        assert_ne!(
            vault.seal("t.f:1", "Ada Lovelace").unwrap(),
            sealed,
            "fresh nonce"
        );
    }

    #[test]
    fn a_value_moved_to_another_row_or_field_or_tampered_with_does_not_open() {
        let vault = Vault::new(&settings(&[("k1", 1)], "k1")).unwrap();
        let sealed = vault.seal("t.first_name:1", "Ada").unwrap();
        assert_eq!(
            vault.open("t.first_name:2", &sealed),
            Err(PiiError::Corrupt)
        );
        assert_eq!(vault.open("t.last_name:1", &sealed), Err(PiiError::Corrupt));
        let mut bytes = STANDARD.decode(&sealed[3..]).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let tampered = format!("k1:{}", STANDARD.encode(bytes));
        assert_eq!(
            vault.open("t.first_name:1", &tampered),
            Err(PiiError::Corrupt)
        );
        assert_eq!(
            vault.open("t.first_name:1", "garbage"),
            Err(PiiError::Corrupt)
        );
    }

    #[test]
    fn after_a_rotation_old_values_open_and_new_ones_use_the_new_key() {
        let old = Vault::new(&settings(&[("k1", 1)], "k1")).unwrap();
        let sealed = old.seal("c", "x").unwrap();
        let rotated = Vault::new(&settings(&[("k1", 1), ("k2", 2)], "k2")).unwrap();
        assert_eq!(rotated.open("c", &sealed).unwrap(), "x");
        assert!(rotated.is_stale(&sealed));
        let resealed = rotated.seal("c", "x").unwrap();
        assert!(resealed.starts_with("k2:") && !rotated.is_stale(&resealed));
        let dropped = Vault::new(&settings(&[("k2", 2)], "k2")).unwrap();
        assert_eq!(
            dropped.open("c", &sealed),
            Err(PiiError::UnknownKey("k1".into()))
        );
    }

    #[test]
    fn hashes_are_keyed_deterministic_and_namespaced() {
        let vault = Vault::new(&settings(&[("k1", 1)], "k1")).unwrap();
        assert_eq!(vault.hash("email", "a@b.c"), vault.hash("email", "a@b.c"));
        assert_ne!(
            vault.hash("email", "a@b.c"),
            vault.hash("document", "a@b.c")
        );
        let mut other = settings(&[("k1", 1)], "k1");
        other.hash_key = secrecy::SecretString::from("another-hash-key-of-some-length");
        assert_ne!(
            Vault::new(&other).unwrap().hash("email", "a@b.c"),
            vault.hash("email", "a@b.c")
        );
    }
}
