//! The ledger's errors. Refusals of individual transfers are not errors: they are result codes
//! (see `model`), returned one per transfer with a 200.

use actix_web::http::StatusCode;
use serde_json::{Map, Value};

use crate::platform::db::{DbError, Retryable};
use crate::platform::error::Problem;

/// Why a write attached to a posting refused; the caller's own error, boxed, so it can be
/// downcast back on the other side of the engine. A boxed retryable [`DbError`] (a deadlock,
/// a serialization failure) is not a refusal: the engine runs the batch again.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SideWriteError(pub Box<dyn std::error::Error + Send + Sync>);

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("{field}: {message}")]
    Validation { field: String, message: String },
    #[error("No such account.")]
    AccountNotFound,
    #[error("No such transfer.")]
    TransferNotFound,
    /// The engine's queue stayed full: back-pressure reached the caller.
    #[error("The ledger is at capacity; retry shortly.")]
    Overloaded,
    /// The engine is not running (shutting down).
    #[error("The ledger is not accepting transfers right now; retry shortly.")]
    Unavailable,
    /// The caller's attached write refused; nothing of its request was written.
    #[error(transparent)]
    SideWrite(#[from] SideWriteError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("internal error: {0}")]
    Internal(#[from] anyhow::Error),
}

impl LedgerError {
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<diesel::result::Error> for LedgerError {
    fn from(err: diesel::result::Error) -> Self {
        Self::Db(DbError::Query(err))
    }
}

impl Problem for LedgerError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Validation { .. } => StatusCode::BAD_REQUEST,
            Self::AccountNotFound | Self::TransferNotFound => StatusCode::NOT_FOUND,
            Self::Overloaded | Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::SideWrite(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Db(e) => e.status(),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Validation { .. } => "validation_failed",
            Self::AccountNotFound | Self::TransferNotFound => "not_found",
            Self::Overloaded => "ledger_overloaded",
            Self::Unavailable => "ledger_unavailable",
            Self::SideWrite(_) | Self::Internal(_) => "internal_error",
            Self::Db(e) => e.code(),
        }
    }

    fn extensions(&self) -> Option<Map<String, Value>> {
        match self {
            Self::Validation { field, .. } => {
                let mut map = Map::new();
                map.insert("field".to_owned(), Value::String(field.clone()));
                Some(map)
            }
            _ => None,
        }
    }
}

impl Retryable for LedgerError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Db(e) if e.is_retryable())
    }
}
