//! Wallet errors and their problem codes.

use actix_web::http::StatusCode;
use serde_json::{Map, Value, json};

use crate::kyc::KycError;
use crate::ledger::LedgerError;
use crate::platform::db::{DbError, Retryable};
use crate::platform::error::Problem;

#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    #[error("{field}: {message}")]
    Validation {
        field: &'static str,
        message: String,
    },
    #[error("No such {0}.")]
    NotFound(&'static str),
    #[error("{0}")]
    Forbidden(String),
    #[error("The wallet is closed.")]
    Closed,
    #[error("The wallet is frozen ({0}).")]
    Frozen(&'static str),
    #[error("The wallet is not frozen.")]
    NotFrozen,
    #[error("The wallet is already frozen that way.")]
    AlreadyFrozen,
    #[error("The wallet still holds money or has pending transfers; it closes only at zero.")]
    NotEmpty,
    #[error(transparent)]
    Kyc(#[from] KycError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("internal error: {0}")]
    Internal(#[from] anyhow::Error),
}

impl WalletError {
    pub fn validation(field: &'static str, message: impl Into<String>) -> Self {
        Self::Validation {
            field,
            message: message.into(),
        }
    }
}

impl From<diesel::result::Error> for WalletError {
    fn from(err: diesel::result::Error) -> Self {
        Self::Db(DbError::Query(err))
    }
}

impl Problem for WalletError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Validation { .. } => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Closed | Self::Frozen(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotFrozen | Self::AlreadyFrozen | Self::NotEmpty => StatusCode::CONFLICT,
            Self::Kyc(e) => e.status(),
            Self::Ledger(e) => e.status(),
            Self::Db(e) => e.status(),
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Validation { .. } => "validation_failed",
            Self::NotFound(_) => "not_found",
            Self::Forbidden(_) => "forbidden",
            Self::Closed => "wallet_closed",
            Self::Frozen(_) => "wallet_frozen",
            Self::NotFrozen => "wallet_not_frozen",
            Self::AlreadyFrozen => "wallet_already_frozen",
            Self::NotEmpty => "wallet_not_empty",
            Self::Kyc(e) => e.code(),
            Self::Ledger(e) => e.code(),
            Self::Db(e) => e.code(),
            Self::Internal(_) => "internal_error",
        }
    }

    fn extensions(&self) -> Option<Map<String, Value>> {
        match self {
            Self::Validation { field, .. } => json!({ "field": field }).as_object().cloned(),
            Self::Kyc(e) => e.extensions(),
            Self::Ledger(e) => e.extensions(),
            _ => None,
        }
    }
}

impl Retryable for WalletError {
    fn is_retryable(&self) -> bool {
        match self {
            Self::Db(e) => e.is_retryable(),
            Self::Ledger(e) => e.is_retryable(),
            Self::Kyc(e) => e.is_retryable(),
            _ => false,
        }
    }
}
