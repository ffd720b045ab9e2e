//! Access tokens: HS256 JWTs with a `kid` header, verified strictly (one algorithm, required
//! claims, issuer and audience), with signing keys rotated by kid.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::CryptoError;

/// Clock skew tolerated on `exp` (and on `iat` in the future), seconds.
const JWT_LEEWAY_SECS: u64 = 30;

/// [`JWT_LEEWAY_SECS`] as a timestamp difference.
const JWT_LEEWAY_SECS_I64: i64 = 30;

/// Longest token [`Jwt::verify`] looks at; anything longer is garbage or an attack.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Signing configuration. Secrets are [`SecretString`], so the derived `Debug` redacts them.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// Key id written into the header of every new token.
    pub active_kid: String,
    /// HS256 secret new tokens are signed with.
    pub active_secret: SecretString,
    /// Retired `(kid, secret)` pairs still accepted for verification only, until the tokens
    /// they signed have expired.
    pub previous: Vec<(String, SecretString)>,
    /// `iss` written into and required of every token.
    pub issuer: String,
    /// `aud` written into and required of every token.
    pub audience: String,
    /// Lifetime of an issued token (whole seconds; at least 1 s).
    pub ttl: Duration,
}

/// The claims of a Flowlet access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Subject: the user id.
    pub sub: String,
    /// Partner (tenant) the subject acts for; absent for platform staff.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ptn: Option<String>,
    /// Role name, checked by authorization.
    pub role: String,
    /// Issuer; must equal the configured one.
    pub iss: String,
    /// Audience; must equal the configured one.
    pub aud: String,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expires at, Unix seconds.
    pub exp: i64,
    /// Unique token id (UUID v7), for revocation lists and log correlation.
    pub jti: String,
    /// Password version: the subject's password-change instant (µs) when the token was
    /// issued. A token whose version is not the current one is refused, so a password
    /// change ends every earlier session, even one issued the same second.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pwv: Option<i64>,
}

/// Why a token was refused. Callers turn every variant into the same 401 (no oracle for
/// attackers) but log the variant. Messages never contain the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url JSON parts, unreadable header, oversized.
    #[error("token is malformed")]
    Malformed,
    /// The header has no (or an empty) `kid`.
    #[error("token header has no key id")]
    MissingKid,
    /// The `kid` names no active or previous key.
    #[error("token key id is unknown")]
    UnknownKid,
    /// The header's `alg` is anything but `HS256` (including `none`, RS256, HS384, HS512).
    #[error("token algorithm is not HS256")]
    WrongAlgorithm,
    /// The signature does not match the key named by `kid`.
    #[error("token signature is invalid")]
    BadSignature,
    /// `exp` is in the past by more than the leeway.
    #[error("token has expired")]
    Expired,
    /// `iss` is not this service's issuer.
    #[error("token issuer is wrong")]
    WrongIssuer,
    /// `aud` is not this service's audience.
    #[error("token audience is wrong")]
    WrongAudience,
    /// Signed correctly but its claims are missing, mistyped or implausible (e.g. `iat` in the
    /// future).
    #[error("token claims are invalid")]
    Invalid,
}

/// The header fields checked before anything else, parsed leniently enough that `alg: none` and
/// algorithms jsonwebtoken does not know still yield [`TokenError::WrongAlgorithm`].
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// HS256 JWT issuer and verifier with key rotation by `kid`.
///
/// Invariants: signs only with the active key; verifies only HS256 tokens whose `kid` is the
/// active or a listed previous key, with `exp`, `iat`, `iss`, `aud`, `sub` present and valid.
pub struct Jwt {
    active_kid: String,
    encoding_key: EncodingKey,
    decoding_keys: HashMap<String, DecodingKey>,
    validation: Validation,
    issuer: String,
    audience: String,
    ttl_secs: u64,
    ttl_secs_i64: i64,
}

impl fmt::Debug for Jwt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<&str> = self.decoding_keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        f.debug_struct("Jwt")
            .field("algorithm", &"HS256")
            .field("active_kid", &self.active_kid)
            .field("verification_kids", &kids)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
}

impl Jwt {
    /// Builds the keys and the validation rules. Rejects an empty kid, an empty secret, a
    /// duplicate kid (between active and previous keys, too), an empty issuer or audience, and a
    /// ttl under one second. Errors name kids, never secrets.
    pub fn new(config: JwtConfig) -> Result<Jwt, CryptoError> {
        let invalid = |msg: String| Err(CryptoError::InvalidJwtConfig(msg));
        if config.issuer.trim().is_empty() {
            return invalid("issuer is empty".to_owned());
        }
        if config.audience.trim().is_empty() {
            return invalid("audience is empty".to_owned());
        }
        let ttl_secs = config.ttl.as_secs();
        let Ok(ttl_secs_i64) = i64::try_from(ttl_secs) else {
            return invalid("ttl is too long".to_owned());
        };
        if ttl_secs == 0 {
            return invalid("ttl must be at least one second".to_owned());
        }

        let mut decoding_keys = HashMap::with_capacity(config.previous.len() + 1);
        let all_keys = std::iter::once((&config.active_kid, &config.active_secret))
            .chain(config.previous.iter().map(|(kid, secret)| (kid, secret)));
        for (kid, secret) in all_keys {
            if kid.trim().is_empty() {
                return invalid("a key id is empty".to_owned());
            }
            if secret.expose_secret().is_empty() {
                return invalid(format!("the secret of key `{kid}` is empty"));
            }
            let key = DecodingKey::from_secret(secret.expose_secret().as_bytes());
            if decoding_keys.insert(kid.clone(), key).is_some() {
                return invalid(format!("key id `{kid}` appears more than once"));
            }
        }

        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.leeway = JWT_LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = false;
        validation.validate_aud = true;
        validation.set_issuer(&[config.issuer.as_str()]);
        validation.set_audience(&[config.audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);

        Ok(Jwt {
            encoding_key: EncodingKey::from_secret(config.active_secret.expose_secret().as_bytes()),
            active_kid: config.active_kid,
            decoding_keys,
            validation,
            issuer: config.issuer,
            audience: config.audience,
            ttl_secs,
            ttl_secs_i64,
        })
    }

    /// Signs a token for `sub` with the active key. Header `{alg: HS256, typ: JWT, kid:
    /// active_kid}`; `iat` = now, `exp` = now + ttl, `jti` = UUID v7. Returns the token (as a
    /// secret: it is a bearer credential) and `expires_in` in seconds (= ttl).
    pub fn issue(
        &self,
        sub: &str,
        ptn: Option<&str>,
        role: &str,
        pwv: Option<i64>,
    ) -> Result<(SecretString, u64), CryptoError> {
        if sub.is_empty() {
            return Err(CryptoError::EmptyClaim("sub"));
        }
        if role.is_empty() {
            return Err(CryptoError::EmptyClaim("role"));
        }
        if ptn.is_some_and(str::is_empty) {
            return Err(CryptoError::EmptyClaim("ptn"));
        }
        let now = chrono::Utc::now().timestamp();
        let exp = now
            .checked_add(self.ttl_secs_i64)
            .ok_or_else(|| CryptoError::TokenSigning("expiry overflows".to_owned()))?;
        let claims = Claims {
            sub: sub.to_owned(),
            ptn: ptn.map(str::to_owned),
            role: role.to_owned(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            exp,
            jti: uuid::Uuid::now_v7().to_string(),
            pwv,
        };
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some("JWT".to_owned());
        header.kid = Some(self.active_kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding_key)
            .map_err(|e| CryptoError::TokenSigning(e.to_string()))?;
        Ok((SecretString::from(token), self.ttl_secs))
    }

    /// Verifies a bearer token and returns its claims.
    ///
    /// Decodes the header first: `alg` must be exactly `HS256` (the validation allows HS256
    /// only); `kid` is required and must be known. Then the signature, `exp` (leeway 30 s),
    /// `iss`, `aud`, and the presence of `exp`, `iat`, `iss`, `aud`, `sub`; an `iat` further in
    /// the future than the leeway is refused too. Every failure maps to one [`TokenError`].
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(encoded_header), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header_json = URL_SAFE_NO_PAD
            .decode(encoded_header)
            .map_err(|_| TokenError::Malformed)?;
        let header: RawHeader =
            serde_json::from_slice(&header_json).map_err(|_| TokenError::Malformed)?;
        if header.alg != "HS256" {
            return Err(TokenError::WrongAlgorithm);
        }
        let kid = header
            .kid
            .filter(|kid| !kid.is_empty())
            .ok_or(TokenError::MissingKid)?;
        let key = self.decoding_keys.get(&kid).ok_or(TokenError::UnknownKid)?;
        // The library's own header type must accept it too, so that later JSON errors can only
        // come from the (signed) claims.
        jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        let data = jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map_err(|e| token_error(e.kind()))?;
        let claims = data.claims;
        let latest_iat = chrono::Utc::now()
            .timestamp()
            .saturating_add(JWT_LEEWAY_SECS_I64);
        if claims.iat > latest_iat || claims.sub.is_empty() {
            return Err(TokenError::Invalid);
        }
        Ok(claims)
    }
}

/// Maps jsonwebtoken's failure kinds onto [`TokenError`]; anything unexpected is `Invalid`.
fn token_error(kind: &JwtErrorKind) -> TokenError {
    match kind {
        JwtErrorKind::InvalidSignature => TokenError::BadSignature,
        JwtErrorKind::ExpiredSignature => TokenError::Expired,
        JwtErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        JwtErrorKind::InvalidAudience => TokenError::WrongAudience,
        JwtErrorKind::InvalidAlgorithm
        | JwtErrorKind::InvalidAlgorithmName
        | JwtErrorKind::UnsupportedAlgorithm => TokenError::WrongAlgorithm,
        JwtErrorKind::InvalidToken | JwtErrorKind::Base64(_) | JwtErrorKind::Utf8(_) => {
            TokenError::Malformed
        }
        _ => TokenError::Invalid,
    }
}

#[cfg(test)]
mod tests;
