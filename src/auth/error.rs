//! Auth's errors, each with its HTTP status and stable code.

use std::time::Duration;

use actix_web::http::StatusCode;
use serde_json::{Map, Value};

use super::crypto::PasswordPolicyError;
use crate::platform::db::{DbError, Retryable};
use crate::platform::error::Problem;

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
    #[error("{field}: {message}")]
    Validation {
        field: &'static str,
        message: String,
    },
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
    pub fn validation(field: &'static str, message: impl Into<String>) -> Self {
        Self::Validation {
            field,
            message: message.into(),
        }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::Forbidden(message.into())
    }
}

impl From<diesel::result::Error> for AuthError {
    fn from(err: diesel::result::Error) -> Self {
        Self::Db(DbError::Query(err))
    }
}

impl Problem for AuthError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized | Self::InvalidCredentials => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::PartnerSuspended => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::EmailTaken | Self::AlreadyBootstrapped => StatusCode::CONFLICT,
            Self::WeakPassword(_) | Self::Validation { .. } | Self::InvalidResetToken => {
                StatusCode::BAD_REQUEST
            }
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Db(e) => e.status(),
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::InvalidCredentials => "invalid_credentials",
            Self::Forbidden(_) => "forbidden",
            Self::PartnerSuspended => "partner_suspended",
            Self::NotFound(_) => "not_found",
            Self::EmailTaken => "email_taken",
            Self::AlreadyBootstrapped => "already_bootstrapped",
            Self::WeakPassword(e) => e.code(),
            Self::Validation { .. } => "validation_failed",
            Self::InvalidResetToken => "invalid_token",
            Self::RateLimited { .. } => "rate_limited",
            Self::Db(e) => e.code(),
            Self::Internal(_) => "internal_error",
        }
    }

    fn extensions(&self) -> Option<Map<String, Value>> {
        match self {
            Self::Validation { field, .. } => {
                let mut map = Map::new();
                map.insert("field".to_owned(), Value::String((*field).to_owned()));
                Some(map)
            }
            _ => None,
        }
    }
}

impl Retryable for AuthError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Db(e) if e.is_retryable())
    }
}
