//! High-entropy secrets (API keys, password-reset tokens): generating them, recognising their
//! shape, and their HMAC-SHA256 digests under a server-side key.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::CryptoError;

type HmacSha256 = Hmac<Sha256>;

/// SHA-256 block size: HMAC keys are hashed (if longer) and zero-padded to this (RFC 2104).
const HMAC_SHA256_BLOCK: usize = 64;

/// HMAC-SHA256 with a server-side key (a configuration secret). Random high-entropy secrets need
/// no slow hash; the key means a database leak alone cannot confirm guesses.
///
/// Invariant: the key never leaves this value and its `Debug` shows none of it.
#[derive(Clone)]
pub struct SecretDigester {
    mac: HmacSha256,
}

impl fmt::Debug for SecretDigester {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretDigester")
            .field("algorithm", &"HMAC-SHA256")
            .field("key", &"[REDACTED]")
            .finish()
    }
}

/// HMAC-SHA256 keyed with `key`, exactly as RFC 2104 prescribes (long keys are hashed first,
/// then zero-padded to the block size). Built by hand so that construction is infallible.
fn hmac_sha256(key: &[u8]) -> HmacSha256 {
    let mut block = [0u8; HMAC_SHA256_BLOCK];
    if key.len() > HMAC_SHA256_BLOCK {
        let hashed = Sha256::digest(key);
        for (dst, src) in block.iter_mut().zip(hashed.iter()) {
            *dst = *src;
        }
    } else {
        for (dst, src) in block.iter_mut().zip(key.iter()) {
            *dst = *src;
        }
    }
    let mac = <HmacSha256 as KeyInit>::new(&block.into());
    block.fill(0);
    std::hint::black_box(&block);
    mac
}

impl SecretDigester {
    /// Keys the digester. The key's strength is configuration's business (≥ 32 random bytes in
    /// production); any length works.
    pub fn new(key: &SecretString) -> Self {
        SecretDigester {
            mac: hmac_sha256(key.expose_secret().as_bytes()),
        }
    }

    /// The value to store for `secret` (always 32 bytes). Deterministic per key, so the stored
    /// digest can be looked up by the digest of a presented secret.
    pub fn digest(&self, secret: &str) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(secret.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Constant-time comparison of `secret`'s digest with a stored one (false on any length
    /// other than 32).
    pub fn verify(&self, secret: &str, stored: &[u8]) -> bool {
        let mut mac = self.mac.clone();
        mac.update(secret.as_bytes());
        mac.verify_slice(stored).is_ok()
    }
}

/// What kind of secret; each has its own recognizable prefix, so a leaked value is recognisable
/// (secret scanners, support) and an API key cannot be replayed as a reset token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecretKind {
    /// `flk_live_...` / `flk_test_...`: long-lived partner API key.
    ApiKey,
    /// `flr_...`: single-use password-reset token.
    PasswordReset,
}

/// Random bytes in every generated secret (256 bits).
const SECRET_RANDOM_BYTES: usize = 32;

/// Length of those bytes in unpadded base64url.
const SECRET_RANDOM_CHARS: usize = 43;

/// Characters of the random part shown in a hint.
const HINT_RANDOM_CHARS: usize = 4;

const API_KEY_PREFIXES: [&str; 2] = ["flk_live_", "flk_test_"];
const PASSWORD_RESET_PREFIX: &str = "flr_";

impl SecretKind {
    fn prefix(self, env_tag: &str) -> Result<&'static str, CryptoError> {
        match (self, env_tag) {
            (Self::ApiKey, "live") => Ok(API_KEY_PREFIXES[0]),
            (Self::ApiKey, "test") => Ok(API_KEY_PREFIXES[1]),
            (Self::ApiKey, _) => Err(CryptoError::InvalidEnvTag),
            (Self::PasswordReset, _) => Ok(PASSWORD_RESET_PREFIX),
        }
    }
}

/// A freshly generated secret: the full value (shown to its owner once, then only its digest is
/// kept) and a short display hint.
#[derive(Debug, Clone)]
pub struct NewSecret {
    /// The full secret; redacted in `Debug`.
    pub secret: SecretString,
    /// Prefix plus the first 4 random chars, e.g. `flk_live_AbCd`: enough to recognise a key in
    /// a list, useless to an attacker (24 of 256 bits).
    pub hint: String,
}

/// Generates a secret from 32 bytes of OS randomness.
///
/// ApiKey: `flk_` + env tag (`live`|`test`, given by the caller) + `_` + base64url-no-pad of 32
/// random bytes (43 chars). PasswordReset: `flr_` + 43 chars (the env tag is ignored). The hint
/// is the prefix plus the first 4 chars of the random part, e.g. `flk_live_AbCd`.
pub fn generate_secret(kind: SecretKind, env_tag: &str) -> Result<NewSecret, CryptoError> {
    let prefix = kind.prefix(env_tag)?;
    let mut bytes = [0u8; SECRET_RANDOM_BYTES];
    getrandom::fill(&mut bytes).map_err(|_| CryptoError::Random)?;
    let random = URL_SAFE_NO_PAD.encode(bytes);
    bytes.fill(0);
    std::hint::black_box(&bytes);
    let hint = format!(
        "{prefix}{}",
        random.get(..HINT_RANDOM_CHARS).unwrap_or_default()
    );
    Ok(NewSecret {
        secret: SecretString::from(format!("{prefix}{random}")),
        hint,
    })
}

/// Cheap syntactic check used to route a bearer token (API key vs JWT) and to reject garbage
/// before touching the database: right prefix, right length, base64url alphabet, and the random
/// part decodes canonically to 32 bytes.
pub fn looks_like(kind: SecretKind, token: &str) -> bool {
    let random = match kind {
        SecretKind::ApiKey => API_KEY_PREFIXES
            .iter()
            .find_map(|prefix| token.strip_prefix(prefix)),
        SecretKind::PasswordReset => token.strip_prefix(PASSWORD_RESET_PREFIX),
    };
    let Some(random) = random else {
        return false;
    };
    random.len() == SECRET_RANDOM_CHARS
        && random
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && URL_SAFE_NO_PAD
            .decode(random)
            .is_ok_and(|bytes| bytes.len() == SECRET_RANDOM_BYTES)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    fn secret(value: &str) -> SecretString {
        SecretString::from(value.to_owned())
    }

    // --- keyed digests -------------------------------------------------------------------

    #[test]
    fn the_digester_matches_the_rfc_4231_hmac_sha256_test_vector() {
        let key = "\u{0b}".repeat(20);
        let digest = SecretDigester::new(&secret(&key)).digest("Hi There");
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
    }

    #[test]
    fn digests_are_deterministic_per_key_and_differ_across_keys() {
        let a = SecretDigester::new(&secret("key-a"));
        let a_again = SecretDigester::new(&secret("key-a"));
        let b = SecretDigester::new(&secret("key-b"));
        assert_eq!(a.digest("flk_live_x"), a.digest("flk_live_x"));
        assert_eq!(a.digest("flk_live_x"), a_again.digest("flk_live_x"));
        assert_ne!(a.digest("flk_live_x"), b.digest("flk_live_x"));
        assert_ne!(a.digest("flk_live_x"), a.digest("flk_live_y"));
    }

    #[test]
    fn digests_have_the_same_length_for_any_input() {
        let digester = SecretDigester::new(&secret("key"));
        assert_eq!(digester.digest("").len(), 32);
        assert_eq!(digester.digest(&"x".repeat(10_000)).len(), 32);
    }

    #[test]
    fn verify_accepts_the_right_secret_and_refuses_a_wrong_secret_or_digest() {
        let digester = SecretDigester::new(&secret("key"));
        let stored = digester.digest("flr_secret");
        assert!(digester.verify("flr_secret", &stored));
        assert!(!digester.verify("flr_secreT", &stored));
        assert!(!digester.verify("flr_secret", &stored[..31]));
        assert!(!digester.verify("flr_secret", &[stored.as_slice(), &[0]].concat()));
        assert!(!digester.verify("flr_secret", &[]));
        assert!(!SecretDigester::new(&secret("other")).verify("flr_secret", &stored));
    }

    proptest! {
        #[test]
        fn the_hand_built_hmac_key_block_matches_the_hmac_crate_for_any_key_length(
            key in proptest::collection::vec(any::<u8>(), 0..200),
            message in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let mut ours = hmac_sha256(&key);
            ours.update(&message);
            let mut reference = <HmacSha256 as KeyInit>::new_from_slice(&key).unwrap();
            reference.update(&message);
            prop_assert_eq!(ours.finalize().into_bytes(), reference.finalize().into_bytes());
        }
    }

    // --- generated secrets ---------------------------------------------------------------

    fn random_part<'a>(value: &'a str, prefix: &str) -> &'a str {
        value.strip_prefix(prefix).unwrap()
    }

    #[test]
    fn a_generated_api_key_has_its_prefix_43_random_chars_and_a_short_hint() {
        for (tag, prefix) in [("live", "flk_live_"), ("test", "flk_test_")] {
            let new = generate_secret(SecretKind::ApiKey, tag).unwrap();
            let value = new.secret.expose_secret();
            let random = random_part(value, prefix);
            assert_eq!(random.len(), 43);
            assert_eq!(value.len(), prefix.len() + 43);
            assert_eq!(new.hint, format!("{prefix}{}", &random[..4]));
            assert!(looks_like(SecretKind::ApiKey, value));
        }
    }

    #[test]
    fn a_generated_password_reset_token_is_flr_plus_43_chars() {
        let new = generate_secret(SecretKind::PasswordReset, "live").unwrap();
        let value = new.secret.expose_secret();
        assert_eq!(random_part(value, "flr_").len(), 43);
        assert_eq!(new.hint, value[..8].to_owned());
        assert!(looks_like(SecretKind::PasswordReset, value));
        assert!(!looks_like(SecretKind::ApiKey, value));
    }

    #[test]
    fn an_api_key_env_tag_other_than_live_or_test_is_refused() {
        for tag in ["", "prod", "LIVE", "live_"] {
            assert_eq!(
                generate_secret(SecretKind::ApiKey, tag).unwrap_err(),
                CryptoError::InvalidEnvTag
            );
        }
    }

    #[test]
    fn a_thousand_generated_secrets_are_all_distinct() {
        let values: HashSet<String> = (0..1000)
            .map(|_| {
                generate_secret(SecretKind::ApiKey, "live")
                    .unwrap()
                    .secret
                    .expose_secret()
                    .to_owned()
            })
            .collect();
        assert_eq!(values.len(), 1000);
    }

    #[test]
    fn looks_like_rejects_a_wrong_prefix_length_or_alphabet() {
        let key = generate_secret(SecretKind::ApiKey, "test").unwrap();
        let key = key.secret.expose_secret();
        let random = random_part(key, "flk_test_");
        assert!(!looks_like(SecretKind::PasswordReset, key));
        for prefix in ["flk_prod_", "FLK_test_", "flk_test", "flr_", ""] {
            assert!(!looks_like(
                SecretKind::ApiKey,
                &format!("{prefix}{random}")
            ));
        }
        assert!(!looks_like(SecretKind::ApiKey, &key[..key.len() - 1]));
        assert!(!looks_like(SecretKind::ApiKey, &format!("{key}A")));
        for bad in ['+', '/', '=', '.', ' ', 'é'] {
            let mut tampered: String = key.chars().take(12).collect();
            tampered.push(bad);
            tampered.extend(key.chars().skip(13));
            assert!(!looks_like(SecretKind::ApiKey, &tampered), "{bad:?}");
        }
        // 43 chars carry 258 bits; the last char of 32 bytes must leave the low 2 bits zero.
        let non_canonical = format!("flk_test_{}B", "A".repeat(42));
        assert!(!looks_like(SecretKind::ApiKey, &non_canonical));
        assert!(looks_like(
            SecretKind::ApiKey,
            &format!("flk_test_{}E", "A".repeat(42))
        ));
        assert!(!looks_like(
            SecretKind::ApiKey,
            "eyJhbGciOiJIUzI1NiJ9.e30.sig"
        ));
    }

    proptest! {
        #[test]
        fn looks_like_never_accepts_arbitrary_strings(token in "\\PC{0,80}") {
            prop_assert!(!looks_like(SecretKind::ApiKey, &token));
            prop_assert!(!looks_like(SecretKind::PasswordReset, &token));
        }
    }
}
