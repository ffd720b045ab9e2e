//! Auth's errors, each with its HTTP status and stable code.

use std::time::Duration;

use actix_web::http::StatusCode;

use super::crypto::PasswordPolicyError;
use crate::platform::db::{DbError, Retryable};
use crate::platform::error::{Answer, FieldError, ModuleError};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No credentials, or credentials that do not authenticate. Deliberately vague.
    #[error(
        "Authentication required: send a valid API key or access token as `Authorization: Bearer <token>`."
    )]
    Unauthorized,
    /// Login failed: unknown email, wrong password, or a locked account look the same.
    #[error("The email or password is incorrect.")]
    InvalidCredentials,
    /// Authenticated, but the role or the key's scopes do not allow this.
    #[error("{0}")]
    Forbidden(String),
    #[error("The partner of these credentials is suspended.")]
    PartnerSuspended,
    /// Absent, or another partner's (which must look exactly the same).
    #[error("No such {0}.")]
    NotFound(&'static str),
    #[error("A user with this email already exists.")]
    EmailTaken,
    #[error("A platform admin already exists; bootstrap runs once.")]
    AlreadyBootstrapped,
    #[error("{0}")]
    WeakPassword(#[from] PasswordPolicyError),
    #[error(transparent)]
    Validation(#[from] FieldError),
    #[error("The password-reset token is invalid, used or expired.")]
    InvalidResetToken,
    #[error("Too many requests; retry after {} seconds.", .retry_after.as_secs().max(1))]
    RateLimited { retry_after: Duration },
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("internal error: {0}")]
    Internal(#[from] anyhow::Error),
}

impl AuthError {
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::Forbidden(message.into())
    }
}

crate::platform::error::module_error_glue!(AuthError);

impl ModuleError for AuthError {
    fn answer(&self) -> Answer<'_> {
        match self {
            Self::Validation(e) => Answer::As(e),
            Self::Db(e) => Answer::As(e),
            Self::Unauthorized => Answer::Own(StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::InvalidCredentials => {
                Answer::Own(StatusCode::UNAUTHORIZED, "invalid_credentials")
            }
            Self::Forbidden(_) => Answer::Own(StatusCode::FORBIDDEN, "forbidden"),
            Self::PartnerSuspended => Answer::Own(StatusCode::FORBIDDEN, "partner_suspended"),
            Self::NotFound(_) => Answer::Own(StatusCode::NOT_FOUND, "not_found"),
            Self::EmailTaken => Answer::Own(StatusCode::CONFLICT, "email_taken"),
            Self::AlreadyBootstrapped => Answer::Own(StatusCode::CONFLICT, "already_bootstrapped"),
            Self::WeakPassword(e) => Answer::Own(StatusCode::BAD_REQUEST, e.code()),
            Self::InvalidResetToken => Answer::Own(StatusCode::BAD_REQUEST, "invalid_token"),
            Self::RateLimited { .. } => Answer::Own(StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Self::Internal(_) => Answer::Own(StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }

    /// `WeakPassword` once per policy rule: each has its own code.
    fn examples() -> Vec<Self> {
        vec![
            Self::Unauthorized,
            Self::InvalidCredentials,
            Self::forbidden(""),
            Self::PartnerSuspended,
            Self::NotFound("partner"),
            Self::EmailTaken,
            Self::AlreadyBootstrapped,
            Self::WeakPassword(PasswordPolicyError::TooShort { min: 12 }),
            Self::WeakPassword(PasswordPolicyError::TooLong { max: 1024 }),
            Self::WeakPassword(PasswordPolicyError::Common),
            Self::WeakPassword(PasswordPolicyError::ContainsEmail),
            Self::validation("field", "message"),
            Self::InvalidResetToken,
            Self::RateLimited {
                retry_after: Duration::from_secs(1),
            },
            Self::Db(DbError::Unavailable(String::new())),
            Self::Internal(anyhow::anyhow!("example")),
        ]
    }
}

impl Retryable for AuthError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Db(e) if e.is_retryable())
    }
}
