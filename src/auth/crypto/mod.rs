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
//! error message: secrets travel as [`SecretString`](secrecy::SecretString) and every type
//! holding key material has a hand-written, redacting `Debug`.
//!
//! This file holds the errors of the primitives; one file per kind of credential:
//! [`passwords`] (argon2id and the password policy), [`secrets`] (generated API keys and
//! reset tokens, and their keyed digests) and [`jwt`] (access tokens).

mod jwt;
mod passwords;
mod secrets;

pub use jwt::{Jwt, JwtConfig};
pub use passwords::{PasswordParams, PasswordPolicyError, Passwords, check_password_policy};
pub use secrets::{SecretDigester, SecretKind, generate_secret, looks_like};

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
