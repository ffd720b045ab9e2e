//! Unit tests of the access tokens (issuing, every way a token is refused, key rotation),
//! and that no credential type's `Debug` output shows a secret.

use hmac::{Hmac, KeyInit, Mac};
use jsonwebtoken::EncodingKey;
use serde_json::{Value, json};
use sha2::Sha256;

use super::*;
use crate::auth::crypto::{PasswordParams, Passwords, SecretDigester, SecretKind, generate_secret};

type HmacSha256 = Hmac<Sha256>;

fn secret(value: &str) -> SecretString {
    SecretString::from(value.to_owned())
}

fn owasp() -> Passwords {
    Passwords::new(PasswordParams::OWASP_MINIMUM).unwrap()
}

// --- JWT -----------------------------------------------------------------------------

const KID: &str = "k1";
const SECRET: &str = "test-jwt-secret-0123456789abcdef0123456789";
const ISSUER: &str = "https://auth.flowlet.test";
const AUDIENCE: &str = "flowlet-api";
const TTL: Duration = Duration::from_secs(900);

fn config() -> JwtConfig {
    JwtConfig {
        active_kid: KID.to_owned(),
        active_secret: secret(SECRET),
        previous: Vec::new(),
        issuer: ISSUER.to_owned(),
        audience: AUDIENCE.to_owned(),
        ttl: TTL,
    }
}

fn jwt() -> Jwt {
    Jwt::new(config()).unwrap()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn claims() -> Value {
    json!({
        "sub": "user-1", "ptn": "partner-1", "role": "partner_admin",
        "iss": ISSUER, "aud": AUDIENCE,
        "iat": now(), "exp": now() + 600, "jti": "0190aaaa-0000-7000-8000-000000000000",
    })
}

fn header(alg: &str, kid: Option<&str>) -> Value {
    let mut header = json!({ "alg": alg, "typ": "JWT" });
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    header
}

fn b64_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

/// `header.payload.signature` with an HMAC-SHA256 signature, whatever the header claims.
fn hand_signed(header: &Value, claims: &Value, key: &str) -> String {
    let input = format!("{}.{}", b64_json(header), b64_json(claims));
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(input.as_bytes());
    format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

fn library_signed(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &str) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(key.as_bytes())).unwrap()
}

#[test]
fn an_issued_token_verifies_and_round_trips_its_claims() {
    let jwt = jwt();
    let before = now();
    let (token, expires_in) = jwt
        .issue("user-1", Some("partner-1"), "partner_admin", None)
        .unwrap();
    assert_eq!(expires_in, TTL.as_secs());
    let claims = jwt.verify(token.expose_secret()).unwrap();
    assert_eq!(claims.sub, "user-1");
    assert_eq!(claims.ptn.as_deref(), Some("partner-1"));
    assert_eq!(claims.role, "partner_admin");
    assert_eq!(claims.iss, ISSUER);
    assert_eq!(claims.aud, AUDIENCE);
    assert!(claims.iat >= before && claims.iat <= now());
    assert_eq!(claims.exp - claims.iat, 900);
    let jti = uuid::Uuid::parse_str(&claims.jti).unwrap();
    assert_eq!(jti.get_version_num(), 7);
}

#[test]
fn an_issued_token_has_an_hs256_jwt_header_with_the_active_kid() {
    let (token, _) = jwt().issue("user-1", None, "platform_admin", None).unwrap();
    let header = jsonwebtoken::decode_header(token.expose_secret()).unwrap();
    assert_eq!(header.alg, Algorithm::HS256);
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    assert_eq!(header.kid.as_deref(), Some(KID));
    let payload = token.expose_secret().split('.').nth(1).unwrap();
    let payload: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert!(payload.get("ptn").is_none(), "absent ptn is not serialized");
}

#[test]
fn two_issued_tokens_have_distinct_jtis() {
    let jwt = jwt();
    let first = jwt.issue("u", None, "r", None).unwrap().0;
    let second = jwt.issue("u", None, "r", None).unwrap().0;
    let jti = |t: &SecretString| jwt.verify(t.expose_secret()).unwrap().jti;
    assert_ne!(jti(&first), jti(&second));
}

#[test]
fn issuing_with_an_empty_subject_or_role_is_refused() {
    let jwt = jwt();
    assert_eq!(
        jwt.issue("", None, "r", None).unwrap_err(),
        CryptoError::EmptyClaim("sub")
    );
    assert_eq!(
        jwt.issue("u", None, "", None).unwrap_err(),
        CryptoError::EmptyClaim("role")
    );
    assert_eq!(
        jwt.issue("u", Some(""), "r", None).unwrap_err(),
        CryptoError::EmptyClaim("ptn")
    );
}

#[test]
fn a_correctly_signed_hand_built_token_verifies() {
    let token = hand_signed(&header("HS256", Some(KID)), &claims(), SECRET);
    assert_eq!(jwt().verify(&token).unwrap().role, "partner_admin");
}

#[test]
fn an_alg_none_token_with_an_empty_signature_is_refused() {
    let unsigned = format!(
        "{}.{}.",
        b64_json(&header("none", Some(KID))),
        b64_json(&claims())
    );
    assert_eq!(jwt().verify(&unsigned), Err(TokenError::WrongAlgorithm));
    let jwt = jwt();
    for alg in ["None", "NONE", "nOnE"] {
        let token = format!(
            "{}.{}.",
            b64_json(&header(alg, Some(KID))),
            b64_json(&claims())
        );
        assert_eq!(jwt.verify(&token), Err(TokenError::WrongAlgorithm), "{alg}");
    }
    let no_signature_part = format!(
        "{}.{}",
        b64_json(&header("none", Some(KID))),
        b64_json(&claims())
    );
    assert_eq!(jwt.verify(&no_signature_part), Err(TokenError::Malformed));
}

#[test]
fn an_rs256_header_over_an_hmac_of_the_shared_secret_is_refused() {
    let token = hand_signed(&header("RS256", Some(KID)), &claims(), SECRET);
    let result = jwt().verify(&token);
    assert!(
        matches!(
            result,
            Err(TokenError::WrongAlgorithm | TokenError::Malformed)
        ),
        "{result:?}"
    );
}

#[test]
fn hs384_and_hs512_tokens_under_the_shared_secret_are_refused() {
    let jwt = jwt();
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        let token = library_signed(alg, Some(KID), &claims(), SECRET);
        assert_eq!(
            jwt.verify(&token),
            Err(TokenError::WrongAlgorithm),
            "{alg:?}"
        );
    }
    for alg in ["hs256", "HS256 ", "ES256", "EdDSA", "PS256"] {
        let token = hand_signed(&header(alg, Some(KID)), &claims(), SECRET);
        assert_eq!(jwt.verify(&token), Err(TokenError::WrongAlgorithm), "{alg}");
    }
}

#[test]
fn a_header_with_two_alg_fields_is_malformed() {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","alg":"none","kid":"k1"}"#);
    let token = format!("{header}.{}.", b64_json(&claims()));
    assert_eq!(jwt().verify(&token), Err(TokenError::Malformed));
}

#[test]
fn a_payload_tampered_to_platform_admin_keeps_its_signature_and_fails_it() {
    let jwt = jwt();
    let (token, _) = jwt
        .issue("user-1", Some("partner-1"), "partner_viewer", None)
        .unwrap();
    let parts: Vec<&str> = token.expose_secret().split('.').collect();
    let mut payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    payload["role"] = json!("platform_admin");
    let forged = format!("{}.{}.{}", parts[0], b64_json(&payload), parts[2]);
    assert_eq!(jwt.verify(&forged), Err(TokenError::BadSignature));
}

#[test]
fn a_token_signed_with_another_secret_is_a_bad_signature() {
    let jwt = jwt();
    let token = hand_signed(&header("HS256", Some(KID)), &claims(), "another-secret");
    assert_eq!(jwt.verify(&token), Err(TokenError::BadSignature));
    let token = library_signed(Algorithm::HS256, Some(KID), &claims(), "another-secret");
    assert_eq!(jwt.verify(&token), Err(TokenError::BadSignature));
    let unsigned = format!(
        "{}.{}.",
        b64_json(&header("HS256", Some(KID))),
        b64_json(&claims())
    );
    assert_eq!(jwt.verify(&unsigned), Err(TokenError::BadSignature));
}

#[test]
fn a_token_expired_beyond_the_leeway_is_expired() {
    let mut expired = claims();
    expired["iat"] = json!(now() - 1_000);
    expired["exp"] = json!(now() - 120);
    let token = hand_signed(&header("HS256", Some(KID)), &expired, SECRET);
    assert_eq!(jwt().verify(&token), Err(TokenError::Expired));
}

#[test]
fn a_token_expired_within_the_leeway_still_verifies() {
    let mut barely = claims();
    barely["exp"] = json!(now() - 10);
    let token = hand_signed(&header("HS256", Some(KID)), &barely, SECRET);
    assert!(jwt().verify(&token).is_ok());
}

#[test]
fn a_token_for_another_audience_or_issuer_is_refused_as_such() {
    let jwt = jwt();
    let mut other_aud = claims();
    other_aud["aud"] = json!("flowlet-admin");
    let token = hand_signed(&header("HS256", Some(KID)), &other_aud, SECRET);
    assert_eq!(jwt.verify(&token), Err(TokenError::WrongAudience));
    let mut other_iss = claims();
    other_iss["iss"] = json!("https://evil.example");
    let token = hand_signed(&header("HS256", Some(KID)), &other_iss, SECRET);
    assert_eq!(jwt.verify(&token), Err(TokenError::WrongIssuer));
}

#[test]
fn a_token_without_a_kid_is_missing_kid_and_an_unknown_kid_is_unknown() {
    let jwt = jwt();
    let token = hand_signed(&header("HS256", None), &claims(), SECRET);
    assert_eq!(jwt.verify(&token), Err(TokenError::MissingKid));
    let token = hand_signed(&header("HS256", Some("")), &claims(), SECRET);
    assert_eq!(jwt.verify(&token), Err(TokenError::MissingKid));
    let token = library_signed(Algorithm::HS256, None, &claims(), SECRET);
    assert_eq!(jwt.verify(&token), Err(TokenError::MissingKid));
    let token = hand_signed(&header("HS256", Some("k9")), &claims(), SECRET);
    assert_eq!(jwt.verify(&token), Err(TokenError::UnknownKid));
}

#[test]
fn a_token_signed_under_a_previous_kid_verifies_until_that_key_is_dropped() {
    let old = Jwt::new(JwtConfig {
        active_kid: "k0".to_owned(),
        active_secret: secret("old-secret-0123456789abcdef0123456789ab"),
        ..config()
    })
    .unwrap();
    let (old_token, _) = old.issue("user-1", None, "partner_admin", None).unwrap();

    let rotated = Jwt::new(JwtConfig {
        previous: vec![(
            "k0".to_owned(),
            secret("old-secret-0123456789abcdef0123456789ab"),
        )],
        ..config()
    })
    .unwrap();
    assert_eq!(
        rotated.verify(old_token.expose_secret()).unwrap().sub,
        "user-1"
    );
    let (new_token, _) = rotated
        .issue("user-2", None, "partner_admin", None)
        .unwrap();
    let new_header = jsonwebtoken::decode_header(new_token.expose_secret()).unwrap();
    assert_eq!(new_header.kid.as_deref(), Some(KID));
    assert_eq!(
        old.verify(new_token.expose_secret()),
        Err(TokenError::UnknownKid)
    );

    let retired = jwt();
    assert_eq!(
        retired.verify(old_token.expose_secret()),
        Err(TokenError::UnknownKid)
    );
}

#[test]
fn a_token_whose_kid_names_another_key_than_the_one_it_was_signed_with_is_a_bad_signature() {
    let rotated = Jwt::new(JwtConfig {
        previous: vec![("k0".to_owned(), secret("old-secret"))],
        ..config()
    })
    .unwrap();
    let token = hand_signed(&header("HS256", Some("k0")), &claims(), SECRET);
    assert_eq!(rotated.verify(&token), Err(TokenError::BadSignature));
}

#[test]
fn garbage_strings_are_malformed() {
    let jwt = jwt();
    let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
    for garbage in [
        "",
        "a.b",
        "not a token",
        "a.b.c",
        "a.b.c.d",
        "..",
        "...",
        "e30.e30.e30",
        "eyJhbGciOiJIUzI1NiJ9",
        "flk_live_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        huge.as_str(),
    ] {
        assert_eq!(
            jwt.verify(garbage),
            Err(TokenError::Malformed),
            "{garbage:.20}"
        );
    }
    let padded_header = format!(
        "{}=.{}.{}",
        b64_json(&header("HS256", Some(KID))),
        b64_json(&claims()),
        "sig"
    );
    assert_eq!(jwt.verify(&padded_header), Err(TokenError::Malformed));
}

#[test]
fn a_correctly_signed_token_missing_a_required_claim_is_refused() {
    let jwt = jwt();
    for missing in ["exp", "iat", "iss", "aud", "sub", "role", "jti"] {
        let mut partial = claims();
        partial.as_object_mut().unwrap().remove(missing);
        let token = hand_signed(&header("HS256", Some(KID)), &partial, SECRET);
        assert_eq!(jwt.verify(&token), Err(TokenError::Invalid), "{missing}");
    }
}

#[test]
fn a_correctly_signed_token_with_mistyped_or_implausible_claims_is_invalid() {
    let jwt = jwt();
    let cases = [
        ("exp", json!("9999999999")),
        ("exp", json!(null)),
        ("iat", json!(now() + 3_600)),
        ("sub", json!("")),
        ("aud", json!([AUDIENCE, "other"])),
        ("role", json!(7)),
    ];
    for (claim, value) in cases {
        let mut odd = claims();
        odd[claim] = value.clone();
        let token = hand_signed(&header("HS256", Some(KID)), &odd, SECRET);
        assert_eq!(
            jwt.verify(&token),
            Err(TokenError::Invalid),
            "{claim}={value}"
        );
    }
}

#[test]
fn jwt_configs_with_empty_or_duplicate_keys_are_refused_without_naming_secrets() {
    let cases = [
        JwtConfig {
            active_kid: String::new(),
            ..config()
        },
        JwtConfig {
            active_secret: secret(""),
            ..config()
        },
        JwtConfig {
            previous: vec![("k0".to_owned(), secret(""))],
            ..config()
        },
        JwtConfig {
            previous: vec![(KID.to_owned(), secret("other-secret"))],
            ..config()
        },
        JwtConfig {
            previous: vec![
                ("k0".to_owned(), secret("other-secret")),
                ("k0".to_owned(), secret("third-secret")),
            ],
            ..config()
        },
        JwtConfig {
            issuer: String::new(),
            ..config()
        },
        JwtConfig {
            audience: " ".to_owned(),
            ..config()
        },
        JwtConfig {
            ttl: Duration::from_millis(999),
            ..config()
        },
    ];
    for case in cases {
        let err = Jwt::new(case).unwrap_err();
        assert!(matches!(err, CryptoError::InvalidJwtConfig(_)), "{err:?}");
        let shown = format!("{err} {err:?}");
        for secret in [SECRET, "other-secret", "third-secret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }
}

// --- redaction -----------------------------------------------------------------------

#[test]
fn debug_output_never_contains_a_secret() {
    let passwords = owasp();
    let shown = format!("{passwords:?}");
    assert!(!shown.contains("$argon2"), "{shown}");
    assert!(shown.contains("19456"), "{shown}");

    let key = "hmac-key-that-must-not-leak";
    let shown = format!("{:?}", SecretDigester::new(&secret(key)));
    assert!(!shown.contains(key), "{shown}");

    let previous = "previous-secret-that-must-not-leak";
    let config = JwtConfig {
        previous: vec![("k0".to_owned(), secret(previous))],
        ..config()
    };
    let shown = format!("{config:?} {config:#?}");
    assert!(
        !shown.contains(SECRET) && !shown.contains(previous),
        "{shown}"
    );
    let jwt = Jwt::new(config).unwrap();
    let shown = format!("{jwt:?} {jwt:#?}");
    assert!(
        !shown.contains(SECRET) && !shown.contains(previous),
        "{shown}"
    );
    assert!(shown.contains("k0") && shown.contains(KID), "{shown}");

    let (token, _) = jwt.issue("user-1", None, "r", None).unwrap();
    let shown = format!("{token:?}");
    assert!(!shown.contains(token.expose_secret()), "{shown}");

    let new = generate_secret(SecretKind::ApiKey, "live").unwrap();
    let shown = format!("{new:?}");
    assert!(!shown.contains(new.secret.expose_secret()), "{shown}");
    assert!(shown.contains(&new.hint), "{shown}");
}
