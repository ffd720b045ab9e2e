//! Secrets and signing: generating and parsing `whsec_` endpoint secrets, and the Standard
//! Webhooks signatures and headers of a delivery (checked here against an independent
//! verifier written from the spec).

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, KeyInit, Mac};
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use super::{MIN_SECRET_BYTES, SECRET_BYTES, SECRET_PREFIX, WebhookError};

/// Standard base64 that decodes with or without padding: secrets from other
/// providers are not always padded, and the padding carries no information.
const SECRET_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

type HmacSha256 = Hmac<Sha256>;

/// Creates a new endpoint secret, `whsec_` + padded standard base64 of 32
/// random bytes, so every endpoint gets an unguessable key in the format
/// Standard Webhooks libraries accept.
///
/// # Errors
/// [`WebhookError::Random`] if the operating system's random source fails.
pub fn generate_secret() -> Result<SecretString, WebhookError> {
    let mut bytes = Zeroizing::new([0u8; SECRET_BYTES]);
    getrandom::fill(bytes.as_mut_slice()).map_err(WebhookError::Random)?;
    // Exact capacity (6 + 44), so turning the String into the secret's
    // Box<str> does not reallocate and leave an unzeroed copy behind.
    let mut encoded = String::with_capacity(SECRET_PREFIX.len() + 44);
    encoded.push_str(SECRET_PREFIX);
    SECRET_BASE64.encode_string(bytes.as_slice(), &mut encoded);
    Ok(SecretString::from(encoded))
}

/// A parsed endpoint secret, ready to sign with, so the `whsec_` string is
/// decoded and checked once rather than at every delivery.
///
/// Holds the HMAC state already keyed with the secret; `Debug` prints
/// `SigningKey([REDACTED])`.
#[derive(Clone)]
pub struct SigningKey {
    mac: HmacSha256,
}

impl SigningKey {
    /// Parses a `whsec_<base64>` secret, so malformed or weak secrets are
    /// refused when they are stored, not when a delivery is signed.
    ///
    /// Base64 padding is optional on input.
    ///
    /// # Errors
    /// [`WebhookError::SecretPrefix`], [`WebhookError::SecretEncoding`] or
    /// [`WebhookError::SecretTooShort`]; none of them quote the secret.
    pub fn parse(secret: &SecretString) -> Result<Self, WebhookError> {
        let encoded = secret
            .expose_secret()
            .strip_prefix(SECRET_PREFIX)
            .ok_or(WebhookError::SecretPrefix)?;
        let key = Zeroizing::new(
            SECRET_BASE64
                .decode(encoded)
                .map_err(|_| WebhookError::SecretEncoding)?,
        );
        if key.len() < MIN_SECRET_BYTES {
            return Err(WebhookError::SecretTooShort { len: key.len() });
        }
        // HMAC accepts keys of any length; the error arm is unreachable but
        // keeps this function free of panics.
        let mac = HmacSha256::new_from_slice(&key).map_err(|_| WebhookError::SecretEncoding)?;
        Ok(Self { mac })
    }

    /// One `v1,<base64>` signature over the already-joined parts.
    fn signature(&self, msg_id: &str, timestamp: &str, body: &[u8]) -> String {
        let mut mac = self.mac.clone();
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        let mut out = String::from("v1,");
        SECRET_BASE64.encode_string(mac.finalize().into_bytes(), &mut out);
        out
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey([REDACTED])")
    }
}

/// Computes the `webhook-signature` header value: one `v1,<base64>` per key,
/// separated by single spaces, so receivers keep verifying while an endpoint
/// rotates its secret.
///
/// `timestamp` is integer seconds since the Unix epoch and must be the value
/// sent in `webhook-timestamp`. With no keys the result is empty; callers
/// must not deliver unsigned messages.
#[must_use]
pub fn sign(keys: &[SigningKey], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let timestamp = timestamp.to_string();
    keys.iter()
        .map(|key| key.signature(msg_id, &timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The three Standard Webhooks header values of one delivery, so the sender
/// sets exactly what was signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookHeaders {
    /// Value of [`HEADER_WEBHOOK_ID`](super::HEADER_WEBHOOK_ID).
    pub id: String,
    /// Value of [`HEADER_WEBHOOK_TIMESTAMP`](super::HEADER_WEBHOOK_TIMESTAMP).
    pub timestamp: String,
    /// Value of [`HEADER_WEBHOOK_SIGNATURE`](super::HEADER_WEBHOOK_SIGNATURE).
    pub signature: String,
}

/// Builds the headers of one delivery, so id, timestamp and signature cannot
/// disagree with each other.
#[must_use]
pub fn headers(keys: &[SigningKey], msg_id: &str, timestamp: i64, body: &[u8]) -> WebhookHeaders {
    WebhookHeaders {
        id: msg_id.to_owned(),
        timestamp: timestamp.to_string(),
        signature: sign(keys, msg_id, timestamp, body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    use crate::notify::webhook::{
        HEADER_WEBHOOK_ID, HEADER_WEBHOOK_SIGNATURE, HEADER_WEBHOOK_TIMESTAMP,
    };

    fn key(secret: &str) -> SigningKey {
        SigningKey::parse(&SecretString::from(secret)).unwrap()
    }

    fn parse_err(secret: &str) -> WebhookError {
        SigningKey::parse(&SecretString::from(secret)).unwrap_err()
    }

    // -- An independent verifier, written from the Standard Webhooks spec ----

    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TIMESTAMP: i64 = 1_614_265_330;
    const SPEC_PAYLOAD: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    const TOLERANCE_SECS: i64 = 5 * 60;

    #[derive(Debug, PartialEq, Eq)]
    enum Rejected {
        BadTimestamp,
        TooOld,
        TooNew,
        BadSecret,
        NoMatchingSignature,
    }

    /// Verifies like a receiver would: the raw header strings, the secret as
    /// the partner stored it, and the receiver's clock.
    fn verify(
        secret: &str,
        id: &str,
        timestamp: &str,
        signature: &str,
        body: &[u8],
        now: i64,
    ) -> Result<(), Rejected> {
        let sent: i64 = timestamp.parse().map_err(|_| Rejected::BadTimestamp)?;
        if now - sent > TOLERANCE_SECS {
            return Err(Rejected::TooOld);
        }
        if sent - now > TOLERANCE_SECS {
            return Err(Rejected::TooNew);
        }
        let raw_key = secret.strip_prefix("whsec_").ok_or(Rejected::BadSecret)?;
        let raw_key = base64::engine::general_purpose::STANDARD
            .decode(raw_key)
            .map_err(|_| Rejected::BadSecret)?;
        let mut expected = Hmac::<Sha256>::new_from_slice(&raw_key).unwrap();
        expected.update(format!("{id}.{timestamp}.").as_bytes());
        expected.update(body);
        for candidate in signature.split(' ') {
            let Some(("v1", encoded)) = candidate.split_once(',') else {
                continue;
            };
            let Ok(candidate) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
                continue;
            };
            // verify_slice compares in constant time.
            if expected.clone().verify_slice(&candidate).is_ok() {
                return Ok(());
            }
        }
        Err(Rejected::NoMatchingSignature)
    }

    fn verify_headers(
        secret: &str,
        h: &WebhookHeaders,
        body: &[u8],
        now: i64,
    ) -> Result<(), Rejected> {
        verify(secret, &h.id, &h.timestamp, &h.signature, body, now)
    }

    // -- Secrets --------------------------------------------------------------

    #[test]
    fn a_generated_secret_is_whsec_and_padded_base64_of_32_bytes() {
        let secret = generate_secret().unwrap();
        let text = secret.expose_secret();
        let encoded = text.strip_prefix("whsec_").unwrap();
        assert_eq!(encoded.len(), 44);
        assert!(encoded.ends_with('='));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        assert_eq!(bytes.len(), 32);
    }

    #[test]
    fn two_generated_secrets_differ() {
        let a = generate_secret().unwrap();
        let b = generate_secret().unwrap();
        assert_ne!(a.expose_secret(), b.expose_secret());
    }

    #[test]
    fn a_generated_secret_parses_and_signs_verifiably() {
        let secret = generate_secret().unwrap();
        let h = headers(
            &[SigningKey::parse(&secret).unwrap()],
            "msg_1",
            1_700_000_000,
            b"{}",
        );
        assert_eq!(
            verify_headers(secret.expose_secret(), &h, b"{}", 1_700_000_000),
            Ok(())
        );
    }

    #[test]
    fn a_secret_without_the_whsec_prefix_is_refused() {
        assert!(matches!(
            parse_err("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            WebhookError::SecretPrefix
        ));
        assert!(matches!(parse_err(""), WebhookError::SecretPrefix));
    }

    #[test]
    fn a_secret_that_is_not_base64_is_refused_without_quoting_it() {
        let err = parse_err("whsec_not-base64!!-SECRETPART-0123456789");
        assert!(matches!(err, WebhookError::SecretEncoding));
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("SECRETPART"), "{shown}");
        assert!(!shown.contains("45"), "decoder detail leaked: {shown}");
    }

    #[test]
    fn a_secret_shorter_than_24_bytes_is_refused() {
        let short = format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode([7u8; 23])
        );
        assert!(matches!(
            parse_err(&short),
            WebhookError::SecretTooShort { len: 23 }
        ));
        let exact = format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode([7u8; 24])
        );
        SigningKey::parse(&SecretString::from(exact)).unwrap();
    }

    #[test]
    fn unpadded_base64_secrets_are_accepted() {
        let padded = format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode([9u8; 32])
        );
        let unpadded = padded.trim_end_matches('=');
        assert_ne!(padded, unpadded);
        assert_eq!(
            sign(&[key(&padded)], "m", 1, b"x"),
            sign(&[key(unpadded)], "m", 1, b"x")
        );
    }

    #[test]
    fn a_signing_key_never_shows_its_secret_in_debug() {
        let shown = format!("{:?}", key(SPEC_SECRET));
        assert_eq!(shown, "SigningKey([REDACTED])");
        assert!(!format!("{:?}", SecretString::from(SPEC_SECRET)).contains("MfKQ"));
    }

    // -- Signing --------------------------------------------------------------

    #[test]
    fn the_standard_webhooks_test_vector_reproduces() {
        let signature = sign(
            &[key(SPEC_SECRET)],
            SPEC_MSG_ID,
            SPEC_TIMESTAMP,
            SPEC_PAYLOAD,
        );
        assert_eq!(signature, SPEC_SIGNATURE);
    }

    #[test]
    fn the_independent_verifier_accepts_the_spec_vector() {
        let verified = verify(
            SPEC_SECRET,
            SPEC_MSG_ID,
            "1614265330",
            SPEC_SIGNATURE,
            SPEC_PAYLOAD,
            SPEC_TIMESTAMP,
        );
        assert_eq!(verified, Ok(()));
    }

    #[test]
    fn headers_carry_id_timestamp_and_signature_under_the_standard_names() {
        assert_eq!(HEADER_WEBHOOK_ID, "webhook-id");
        assert_eq!(HEADER_WEBHOOK_TIMESTAMP, "webhook-timestamp");
        assert_eq!(HEADER_WEBHOOK_SIGNATURE, "webhook-signature");
        let h = headers(
            &[key(SPEC_SECRET)],
            SPEC_MSG_ID,
            SPEC_TIMESTAMP,
            SPEC_PAYLOAD,
        );
        assert_eq!(
            h,
            WebhookHeaders {
                id: SPEC_MSG_ID.to_owned(),
                timestamp: "1614265330".to_owned(),
                signature: SPEC_SIGNATURE.to_owned(),
            }
        );
    }

    #[test]
    fn two_keys_give_two_space_separated_signatures_that_each_verify() {
        let old = generate_secret().unwrap();
        let new = generate_secret().unwrap();
        let keys = [
            SigningKey::parse(&old).unwrap(),
            SigningKey::parse(&new).unwrap(),
        ];
        let h = headers(&keys, "msg_rot", 1_700_000_000, b"{\"a\":1}");
        let parts: Vec<&str> = h.signature.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.starts_with("v1,")));
        assert_eq!(
            verify_headers(old.expose_secret(), &h, b"{\"a\":1}", 1_700_000_000),
            Ok(())
        );
        assert_eq!(
            verify_headers(new.expose_secret(), &h, b"{\"a\":1}", 1_700_000_000),
            Ok(())
        );
    }

    #[test]
    fn a_signature_fails_verification_with_a_wrong_key() {
        let h = headers(
            &[key(SPEC_SECRET)],
            SPEC_MSG_ID,
            SPEC_TIMESTAMP,
            SPEC_PAYLOAD,
        );
        let other = generate_secret().unwrap();
        assert_eq!(
            verify_headers(other.expose_secret(), &h, SPEC_PAYLOAD, SPEC_TIMESTAMP),
            Err(Rejected::NoMatchingSignature)
        );
    }

    #[test]
    fn a_tampered_body_id_or_timestamp_fails_verification() {
        let h = headers(
            &[key(SPEC_SECRET)],
            SPEC_MSG_ID,
            SPEC_TIMESTAMP,
            SPEC_PAYLOAD,
        );
        let tampered_body = br#"{"test": 2432232315}"#;
        assert_eq!(
            verify_headers(SPEC_SECRET, &h, tampered_body, SPEC_TIMESTAMP),
            Err(Rejected::NoMatchingSignature)
        );
        let mut other_id = h.clone();
        other_id.id.push('x');
        assert_eq!(
            verify_headers(SPEC_SECRET, &other_id, SPEC_PAYLOAD, SPEC_TIMESTAMP),
            Err(Rejected::NoMatchingSignature)
        );
        let mut other_time = h.clone();
        other_time.timestamp = "1614265331".to_owned();
        assert_eq!(
            verify_headers(SPEC_SECRET, &other_time, SPEC_PAYLOAD, SPEC_TIMESTAMP),
            Err(Rejected::NoMatchingSignature)
        );
    }

    #[test]
    fn timestamps_more_than_five_minutes_away_from_now_are_rejected() {
        let h = headers(
            &[key(SPEC_SECRET)],
            SPEC_MSG_ID,
            SPEC_TIMESTAMP,
            SPEC_PAYLOAD,
        );
        let ok = |now| verify_headers(SPEC_SECRET, &h, SPEC_PAYLOAD, now);
        assert_eq!(ok(SPEC_TIMESTAMP + 300), Ok(()));
        assert_eq!(ok(SPEC_TIMESTAMP - 300), Ok(()));
        assert_eq!(ok(SPEC_TIMESTAMP + 301), Err(Rejected::TooOld));
        assert_eq!(ok(SPEC_TIMESTAMP - 301), Err(Rejected::TooNew));
    }

    #[test]
    fn signing_with_no_keys_gives_an_empty_header() {
        assert_eq!(sign(&[], "m", 1, b""), "");
    }

    proptest! {
        #[test]
        fn any_body_and_id_signed_now_verifies_and_any_flipped_byte_does_not(
            id in "[a-zA-Z0-9_]{1,40}",
            body in proptest::collection::vec(any::<u8>(), 0..512),
            timestamp in 0i64..4_000_000_000,
            flip in any::<prop::sample::Index>(),
        ) {
            let h = headers(&[key(SPEC_SECRET)], &id, timestamp, &body);
            prop_assert_eq!(verify_headers(SPEC_SECRET, &h, &body, timestamp), Ok(()));
            if !body.is_empty() {
                let mut tampered = body.clone();
                let at = flip.index(tampered.len());
                tampered[at] ^= 0x01;
                prop_assert_eq!(
                    verify_headers(SPEC_SECRET, &h, &tampered, timestamp),
                    Err(Rejected::NoMatchingSignature)
                );
            }
        }
    }
}
