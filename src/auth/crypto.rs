//! Authentication cryptography: password hashing, keyed digests of random secrets, and JWTs.
//!
//! Three kinds of credentials, three treatments:
//!
//! * **Passwords** are low-entropy and chosen by people, so they are stored as argon2id PHC
//!   strings (slow, memory-hard, salted) and checked against a policy before they are accepted.
//! * **Generated secrets** (API keys, password-reset tokens) carry 256 random bits, so a slow hash
//!   buys nothing; they are stored as HMAC-SHA256 under a server-side key, which means a leaked
//!   database alone cannot confirm a guess.
//! * **Access tokens** are HS256 JWTs with a `kid` header, so signing keys can be rotated without
//!   logging everybody out.
//!
//! No secret (password, key, token, HMAC key) ever appears in a `Debug`/`Display` output or in an
//! error message: secrets travel as [`SecretString`] and every type holding key material has a
//! hand-written, redacting `Debug`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{self, PasswordHasher, PasswordVerifier};
use argon2::{Algorithm as Argon2Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Failures of the cryptographic primitives themselves (bad configuration, RNG failure, an
/// unusable stored hash). Messages describe the problem without echoing any secret, so they can
/// be logged as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// argon2 refused the configured cost parameters (e.g. memory below 8 KiB per lane).
    #[error("invalid argon2 parameters: {0}")]
    InvalidPasswordParams(String),
    /// argon2 failed while hashing (out of memory, internal error).
    #[error("password hashing failed: {0}")]
    Hashing(String),
    /// A stored password hash is not an argon2 PHC string this service can verify.
    #[error("stored password hash is not a usable argon2 PHC string")]
    MalformedHash,
    /// The operating system's random number generator failed; nothing secret was produced.
    #[error("the operating system random number generator failed")]
    Random,
    /// An API-key environment tag other than `live` or `test`.
    #[error("API key environment tag must be `live` or `test`")]
    InvalidEnvTag,
    /// The JWT configuration is unusable; the message names the field (never a secret value).
    #[error("invalid JWT configuration: {0}")]
    InvalidJwtConfig(String),
    /// A claim passed to [`Jwt::issue`] is empty; names the claim.
    #[error("JWT claim `{0}` must not be empty")]
    EmptyClaim(&'static str),
    /// Signing a JWT failed (or its expiry overflowed).
    #[error("JWT signing failed: {0}")]
    TokenSigning(String),
}

// ---------------------------------------------------------------------------------------------
// 1. Passwords (argon2id)
// ---------------------------------------------------------------------------------------------

/// Length of the random salt of every password hash (the PHC recommendation).
const SALT_LEN: usize = 16;

/// Length of the argon2 output stored in the PHC string.
const HASH_LEN: usize = 32;

/// Longest password accepted, in characters: long enough for any passphrase or password manager,
/// short enough that nobody uploads a novel to the login form.
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// Cost parameters of argon2id. Stored with every hash (in the PHC string), so raising them later
/// only affects new hashes; [`Passwords::needs_rehash`] finds the old ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordParams {
    /// Memory per hash, KiB (argon2 `m`).
    pub memory_kib: u32,
    /// Passes over memory (argon2 `t`).
    pub iterations: u32,
    /// Lanes (argon2 `p`); this implementation computes them on one thread.
    pub parallelism: u32,
}

#[cfg(test)]
impl PasswordParams {
    /// The OWASP Password Storage Cheat Sheet's baseline for argon2id: 19 MiB, 2 passes, 1 lane
    /// (configuration refuses less; see `auth.argon2_*`).
    pub const OWASP_MINIMUM: PasswordParams = PasswordParams {
        memory_kib: 19_456,
        iterations: 2,
        parallelism: 1,
    };
}

/// argon2id password hashing with fixed, validated cost parameters.
///
/// Invariant: every hash it writes is `$argon2id$v=19$m=..,t=..,p=..$<16-byte salt>$<32-byte hash>`
/// with the current params, and it always holds a dummy hash of the same cost so that
/// [`Passwords::verify_dummy`] costs the same as a real verification.
pub struct Passwords {
    argon2: Argon2<'static>,
    params: PasswordParams,
    dummy_phc: String,
}

impl fmt::Debug for Passwords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Passwords")
            .field("algorithm", &"argon2id")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl Passwords {
    /// Validates the params with argon2 and precomputes the dummy hash (costs one hash).
    ///
    /// Does not enforce OWASP's minimum itself (configuration validation does);
    /// configuration validation does.
    pub fn new(params: PasswordParams) -> Result<Self, CryptoError> {
        let argon2_params = Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            Some(HASH_LEN),
        )
        .map_err(|e| CryptoError::InvalidPasswordParams(e.to_string()))?;
        let argon2 = Argon2::new(Argon2Algorithm::Argon2id, Version::V0x13, argon2_params);
        let mut passwords = Passwords {
            argon2,
            params,
            dummy_phc: String::new(),
        };
        let mut dummy_password = [0u8; 32];
        getrandom::fill(&mut dummy_password).map_err(|_| CryptoError::Random)?;
        passwords.dummy_phc = passwords.hash_bytes(&dummy_password)?;
        Ok(passwords)
    }

    /// PHC string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`) with a random 16-byte salt.
    /// CPU- and memory-heavy: callers run it in `spawn_blocking`.
    pub fn hash(&self, password: &SecretString) -> Result<String, CryptoError> {
        self.hash_bytes(password.expose_secret().as_bytes())
    }

    fn hash_bytes(&self, password: &[u8]) -> Result<String, CryptoError> {
        let mut salt = [0u8; SALT_LEN];
        getrandom::fill(&mut salt).map_err(|_| CryptoError::Random)?;
        let phc: PasswordHash = self
            .argon2
            .hash_password_with_salt(password, &salt)
            .map_err(|e| CryptoError::Hashing(e.to_string()))?;
        Ok(phc.to_string())
    }

    /// Checks a password against a stored PHC string, using the params stored in it (so hashes
    /// made under older params still verify). Constant-time comparison of the outputs.
    ///
    /// `Ok(true)` on match; `Ok(false)` on mismatch; `Err` only for an unparseable or unsupported
    /// stored hash (or an argon2 resource failure). CPU-heavy: run it in `spawn_blocking`.
    pub fn verify(&self, password: &SecretString, phc: &str) -> Result<bool, CryptoError> {
        let parsed = PasswordHash::new(phc).map_err(|_| CryptoError::MalformedHash)?;
        match self
            .argon2
            .verify_password(password.expose_secret().as_bytes(), &parsed)
        {
            Ok(()) => Ok(true),
            Err(password_hash::Error::PasswordInvalid) => Ok(false),
            Err(
                e @ (password_hash::Error::OutOfMemory
                | password_hash::Error::Internal
                | password_hash::Error::Crypto
                | password_hash::Error::RngFailure),
            ) => Err(CryptoError::Hashing(e.to_string())),
            Err(_) => Err(CryptoError::MalformedHash),
        }
    }

    /// Does the same work as [`Passwords::verify`] against a real hash (a dummy hash made in
    /// [`Passwords::new`] with the current params) and returns `false`: a login for an unknown
    /// email takes about as long as a wrong password, so timing does not reveal which emails
    /// have accounts.
    pub fn verify_dummy(&self, password: &SecretString) -> bool {
        let outcome = self.verify(password, &self.dummy_phc);
        drop(std::hint::black_box(outcome));
        false
    }

    /// True when the stored hash was made differently from how [`Passwords::hash`] would make it
    /// now (other algorithm, version, params, output or salt length, or unparseable): rehash on
    /// the next successful login, while the plaintext is at hand.
    pub fn needs_rehash(&self, phc: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(phc) else {
            return true;
        };
        if parsed.algorithm.as_str() != Argon2Algorithm::Argon2id.as_str()
            || parsed.version != Some(u32::from(Version::V0x13))
        {
            return true;
        }
        let Ok(stored) = Params::try_from(&parsed) else {
            return true;
        };
        let salt_ok = parsed.salt.as_ref().is_some_and(|s| s.len() >= SALT_LEN);
        stored.m_cost() != self.params.memory_kib
            || stored.t_cost() != self.params.iterations
            || stored.p_cost() != self.params.parallelism
            || stored.output_len() != Some(HASH_LEN)
            || !stored.keyid().is_empty()
            || !stored.data().is_empty()
            || !salt_ok
    }
}

/// Why a new password was refused. The messages are written for API clients (no password in
/// them); [`PasswordPolicyError::code`] is the stable machine-readable form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordPolicyError {
    /// Fewer characters than the configured minimum.
    #[error("password must be at least {min} characters long")]
    TooShort {
        /// The configured minimum, in characters.
        min: usize,
    },
    /// More characters than [`MAX_PASSWORD_CHARS`].
    #[error("password must be at most {max} characters long")]
    TooLong {
        /// The maximum, in characters.
        max: usize,
    },
    /// On the list of commonly leaked passwords that attackers try first.
    #[error("password is too common; choose one that is harder to guess")]
    Common,
    /// Contains the local part of the account's email address.
    #[error("password must not contain your email address")]
    ContainsEmail,
}

impl PasswordPolicyError {
    /// Stable error code for API responses; clients branch on it, not on the message.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooShort { .. } => "password_too_short",
            Self::TooLong { .. } => "password_too_long",
            Self::Common => "password_too_common",
            Self::ContainsEmail => "password_contains_email",
        }
    }
}

/// Shortest email local part that [`check_password_policy`] looks for in a password: shorter
/// ones ("al", "bob") occur in too many good passwords by chance.
const MIN_EMAIL_LOCAL_PART_CHARS: usize = 4;

/// The common-password list, lowercase, one per line.
static COMMON_PASSWORDS: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("common_passwords.txt")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect()
});

/// Guards new passwords (sign-up, change, reset): length in chars (not bytes) `>= min_len` and
/// `<=` [`MAX_PASSWORD_CHARS`]; not in the common list (case-insensitive, after trimming); does
/// not contain the email's local part (case-insensitive, only if the local part has at least 4
/// chars). Checks run in that order and the first failure is returned.
pub fn check_password_policy(
    password: &SecretString,
    min_len: usize,
    email: &str,
) -> Result<(), PasswordPolicyError> {
    let password = password.expose_secret();
    let chars = password.chars().count();
    if chars < min_len {
        return Err(PasswordPolicyError::TooShort { min: min_len });
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(PasswordPolicyError::TooLong {
            max: MAX_PASSWORD_CHARS,
        });
    }
    let lowered = password.to_lowercase();
    if COMMON_PASSWORDS.contains(lowered.trim()) {
        return Err(PasswordPolicyError::Common);
    }
    let local_part = email
        .rsplit_once('@')
        .map_or(email, |(local, _)| local)
        .trim()
        .to_lowercase();
    if local_part.chars().count() >= MIN_EMAIL_LOCAL_PART_CHARS && lowered.contains(&local_part) {
        return Err(PasswordPolicyError::ContainsEmail);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 2. High-entropy secrets (API keys, password-reset tokens)
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// 3. JWT (HS256 only, key rotation by kid)
// ---------------------------------------------------------------------------------------------

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
mod tests {

    use jsonwebtoken::EncodingKey;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    fn secret(value: &str) -> SecretString {
        SecretString::from(value.to_owned())
    }

    fn owasp() -> Passwords {
        Passwords::new(PasswordParams::OWASP_MINIMUM).unwrap()
    }

    // --- passwords ------------------------------------------------------------------------

    #[test]
    fn hashing_then_verifying_the_same_password_succeeds() {
        let passwords = owasp();
        let phc = passwords.hash(&secret("violet-tractor-harbor-29")).unwrap();
        assert!(
            passwords
                .verify(&secret("violet-tractor-harbor-29"), &phc)
                .unwrap()
        );
    }

    #[test]
    fn verifying_a_wrong_password_returns_false_rather_than_an_error() {
        let passwords = owasp();
        let phc = passwords.hash(&secret("violet-tractor-harbor-29")).unwrap();
        assert!(
            !passwords
                .verify(&secret("violet-tractor-harbor-30"), &phc)
                .unwrap()
        );
        assert!(!passwords.verify(&secret(""), &phc).unwrap());
    }

    #[test]
    fn verifying_against_an_unparseable_stored_hash_is_an_error() {
        let passwords = owasp();
        for stored in [
            "",
            "not a hash",
            "$argon2id$v=19$m=abc,t=2,p=1$c2FsdHNhbHQ$aGFzaA",
            "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
            "$argon2id$v=19$m=19456,t=2,p=1$$",
        ] {
            assert_eq!(
                passwords.verify(&secret("pw"), stored),
                Err(CryptoError::MalformedHash),
                "{stored}"
            );
        }
    }

    #[test]
    fn a_hash_with_the_owasp_params_is_an_argon2id_phc_string_showing_m19456_t2_p1() {
        let phc = owasp().hash(&secret("violet-tractor-harbor-29")).unwrap();
        let rest = phc.strip_prefix("$argon2id$v=19$m=19456,t=2,p=1$").unwrap();
        let (salt, hash) = rest.split_once('$').unwrap();
        assert_eq!(salt.len(), 22, "16-byte salt in unpadded B64");
        assert_eq!(hash.len(), 43, "32-byte hash in unpadded B64");
    }

    #[test]
    fn two_hashes_of_the_same_password_differ_by_their_random_salt() {
        let passwords = owasp();
        let first = passwords.hash(&secret("same")).unwrap();
        let second = passwords.hash(&secret("same")).unwrap();
        assert_ne!(first, second);
    }

    #[test]
    fn the_dummy_verification_returns_false_and_does_a_real_verifications_work() {
        let passwords = owasp();
        assert!(!passwords.verify_dummy(&secret("guess-1234")));
        // Same work as a real verify: a hash of the current params, verified the same way.
        assert!(!passwords.needs_rehash(&passwords.dummy_phc));
        let real = passwords.hash(&secret("violet-tractor-harbor-29")).unwrap();
        let prefix = |phc: &str| phc.splitn(5, '$').take(4).collect::<Vec<_>>().join("$");
        assert_eq!(prefix(&passwords.dummy_phc), prefix(&real));
    }

    #[test]
    fn the_dummy_verification_is_false_even_for_an_empty_password() {
        assert!(!owasp().verify_dummy(&secret("")));
    }

    #[test]
    fn a_hash_made_under_other_params_still_verifies_and_needs_rehash() {
        let cheap = Passwords::new(PasswordParams {
            memory_kib: 8_192,
            iterations: 1,
            parallelism: 1,
        })
        .unwrap();
        let old = cheap.hash(&secret("violet-tractor-harbor-29")).unwrap();
        let current = owasp();
        assert!(
            current
                .verify(&secret("violet-tractor-harbor-29"), &old)
                .unwrap()
        );
        assert!(current.needs_rehash(&old));
        let fresh = current.hash(&secret("violet-tractor-harbor-29")).unwrap();
        assert!(!current.needs_rehash(&fresh));
        assert!(cheap.needs_rehash(&fresh));
    }

    #[test]
    fn an_unparseable_or_non_argon2id_hash_needs_rehash() {
        let passwords = owasp();
        let argon2i = Argon2::new(
            Argon2Algorithm::Argon2i,
            Version::V0x13,
            Params::new(19_456, 2, 1, None).unwrap(),
        );
        let argon2i_phc: PasswordHash = argon2i
            .hash_password_with_salt(b"pw", b"0123456789abcdef")
            .unwrap();
        assert!(passwords.needs_rehash(&argon2i_phc.to_string()));
        assert!(passwords.needs_rehash("garbage"));
    }

    #[test]
    fn params_argon2_cannot_run_are_refused() {
        for (memory_kib, iterations, parallelism) in [(0, 2, 1), (19_456, 0, 1), (19_456, 2, 0)] {
            let result = Passwords::new(PasswordParams {
                memory_kib,
                iterations,
                parallelism,
            });
            assert!(matches!(result, Err(CryptoError::InvalidPasswordParams(_))));
        }
    }

    // --- password policy -----------------------------------------------------------------

    const EMAIL: &str = "alice.smith@example.com";

    #[test]
    fn passwords_on_the_common_list_are_refused_whatever_their_case_and_padding() {
        for password in [
            "Password123",
            "  QWERTYUIOP12 ",
            "qwertyuiop",
            "iloveyou123",
            "Passw0rd",
            "1234567890",
            "password123!",
            "Welcome123",
        ] {
            assert_eq!(
                check_password_policy(&secret(password), 8, EMAIL),
                Err(PasswordPolicyError::Common),
                "{password}"
            );
        }
    }

    #[test]
    fn the_common_list_has_about_300_lowercase_trimmed_unique_entries() {
        let lines: Vec<&str> = include_str!("common_passwords.txt").lines().collect();
        assert!((250..=400).contains(&lines.len()), "{}", lines.len());
        assert_eq!(COMMON_PASSWORDS.len(), lines.len(), "entries are unique");
        for line in lines {
            assert_eq!(line, line.trim().to_lowercase(), "{line:?}");
            assert!(!line.is_empty());
        }
    }

    #[test]
    fn a_strong_passphrase_is_accepted() {
        for password in [
            "violet-tractor-harbor-29",
            "Zq7!mW2#pL9$",
            "correct horse battery staple",
        ] {
            assert_eq!(
                check_password_policy(&secret(password), 12, EMAIL),
                Ok(()),
                "{password}"
            );
        }
    }

    #[test]
    fn password_length_is_counted_in_characters_not_bytes() {
        let eleven = "é".repeat(11);
        assert_eq!(eleven.len(), 22);
        assert_eq!(
            check_password_policy(&secret(&eleven), 12, EMAIL),
            Err(PasswordPolicyError::TooShort { min: 12 })
        );
        assert_eq!(
            check_password_policy(&secret(&"é".repeat(12)), 12, EMAIL),
            Ok(())
        );
    }

    #[test]
    fn a_password_over_1024_characters_is_too_long_and_1024_is_fine() {
        assert_eq!(
            check_password_policy(&secret(&"xy".repeat(512)), 12, EMAIL),
            Ok(())
        );
        let too_long = check_password_policy(&secret(&"é".repeat(1025)), 12, EMAIL);
        assert_eq!(too_long, Err(PasswordPolicyError::TooLong { max: 1024 }));
    }

    #[test]
    fn a_password_containing_the_email_local_part_is_refused_case_insensitively() {
        assert_eq!(
            check_password_policy(&secret("my-ALICE.Smith-2024"), 12, EMAIL),
            Err(PasswordPolicyError::ContainsEmail)
        );
        assert_eq!(
            check_password_policy(&secret("alice.smith-rocks"), 12, "alice.smith@x.io"),
            Err(PasswordPolicyError::ContainsEmail)
        );
    }

    #[test]
    fn an_email_local_part_shorter_than_four_characters_is_not_searched_for() {
        assert_eq!(
            check_password_policy(&secret("bobsled-champion-77"), 12, "bob@example.com"),
            Ok(())
        );
        assert_eq!(
            check_password_policy(&secret("bobsled-champion-77"), 12, "bobs@example.com"),
            Err(PasswordPolicyError::ContainsEmail)
        );
    }

    #[test]
    fn policy_errors_have_stable_codes_and_messages_without_the_password() {
        let password = "Password123";
        let err = check_password_policy(&secret(password), 8, EMAIL).unwrap_err();
        assert_eq!(err.code(), "password_too_common");
        assert!(!err.to_string().contains(password));
        assert!(!format!("{err:?}").contains(password));
        assert_eq!(
            PasswordPolicyError::TooShort { min: 12 }.code(),
            "password_too_short"
        );
        assert_eq!(
            PasswordPolicyError::TooShort { min: 12 }.to_string(),
            "password must be at least 12 characters long"
        );
        assert_eq!(
            PasswordPolicyError::TooLong { max: 1024 }.code(),
            "password_too_long"
        );
        assert_eq!(
            PasswordPolicyError::ContainsEmail.code(),
            "password_contains_email"
        );
    }

    proptest! {
        #[test]
        fn the_policy_never_panics_and_rejects_only_with_a_known_code(
            password in "\\PC{0,40}", email in "\\PC{0,20}@?\\PC{0,10}", min_len in 0usize..20
        ) {
            if let Err(err) = check_password_policy(&secret(&password), min_len, &email) {
                prop_assert!(err.code().starts_with("password_"));
            }
        }
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
        let payload: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
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
}
