//! Personal data at rest, sealed by the platform's [`Vault`] under KYC's own keys
//! (`kyc.encryption_keys`, `kyc.hash_key`).

use secrecy::ExposeSecret;

pub use crate::platform::vault::{Vault, VaultError as PiiError};

use super::settings::KycSettings;

/// KYC's vault, from its validated settings.
pub fn vault_for(settings: &KycSettings) -> Result<Vault, PiiError> {
    Vault::new(
        &settings.encryption_key_id,
        &settings.encryption_keys,
        settings.hash_key.expose_secret().as_bytes(),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    use super::*;
    use crate::platform::config::{Sources, load_section};
    use crate::platform::vault::SecretBytes;

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
        let vault = vault_for(&settings(&[("k1", 1)], "k1")).unwrap();
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
        let vault = vault_for(&settings(&[("k1", 1)], "k1")).unwrap();
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
        let old = vault_for(&settings(&[("k1", 1)], "k1")).unwrap();
        let sealed = old.seal("c", "x").unwrap();
        let rotated = vault_for(&settings(&[("k1", 1), ("k2", 2)], "k2")).unwrap();
        assert_eq!(rotated.open("c", &sealed).unwrap(), "x");
        assert!(rotated.is_stale(&sealed));
        let resealed = rotated.seal("c", "x").unwrap();
        assert!(resealed.starts_with("k2:") && !rotated.is_stale(&resealed));
        let dropped = vault_for(&settings(&[("k2", 2)], "k2")).unwrap();
        assert_eq!(
            dropped.open("c", &sealed),
            Err(PiiError::UnknownKey("k1".into()))
        );
    }

    #[test]
    fn hashes_are_keyed_deterministic_and_namespaced() {
        let vault = vault_for(&settings(&[("k1", 1)], "k1")).unwrap();
        assert_eq!(vault.hash("email", "a@b.c"), vault.hash("email", "a@b.c"));
        assert_ne!(
            vault.hash("email", "a@b.c"),
            vault.hash("document", "a@b.c")
        );
        let mut other = settings(&[("k1", 1)], "k1");
        other.hash_key = secrecy::SecretString::from("another-hash-key-of-some-length");
        assert_ne!(
            vault_for(&other).unwrap().hash("email", "a@b.c"),
            vault.hash("email", "a@b.c")
        );
    }
}
