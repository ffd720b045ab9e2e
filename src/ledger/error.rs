//! The ledger's errors. Refusals of individual transfers are not errors: they are result codes
//! (see `model`), returned one per transfer with a 200.

use actix_web::http::StatusCode;

use crate::platform::db::{DbError, Retryable};
use crate::platform::error::{Answer, FieldError, ModuleError};
use crate::platform::money::MoneyError;

/// Why a write attached to a posting refused; the caller's own error, boxed, so it can be
/// downcast back on the other side of the engine. A boxed retryable [`DbError`] (a deadlock,
/// a serialization failure) is not a refusal: the engine runs the batch again.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SideWriteError(pub Box<dyn std::error::Error + Send + Sync>);

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Validation(#[from] FieldError),
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

crate::platform::error::module_error_glue!(LedgerError);

impl ModuleError for LedgerError {
    fn answer(&self) -> Answer<'_> {
        match self {
            Self::Validation(e) => Answer::As(e),
            Self::Db(e) => Answer::As(e),
            Self::AccountNotFound | Self::TransferNotFound => {
                Answer::Own(StatusCode::NOT_FOUND, "not_found")
            }
            Self::Overloaded => Answer::Own(StatusCode::SERVICE_UNAVAILABLE, "ledger_overloaded"),
            Self::Unavailable => Answer::Own(StatusCode::SERVICE_UNAVAILABLE, "ledger_unavailable"),
            Self::SideWrite(_) | Self::Internal(_) => {
                Answer::Own(StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
            }
        }
    }

    /// A malformed amount answers its money error's own code: one example of each that
    /// `Money::parse_positive` returns.
    fn examples() -> Vec<Self> {
        let amount = |e: MoneyError| Self::Validation(FieldError::amount("amount", &e));
        vec![
            Self::validation("field", "message"),
            amount(MoneyError::TooManyDecimals {
                currency: "USD",
                max: 2,
            }),
            amount(MoneyError::Overflow),
            amount(MoneyError::NotPositive),
            Self::AccountNotFound,
            Self::TransferNotFound,
            Self::Overloaded,
            Self::Unavailable,
            Self::SideWrite(SideWriteError("refused".into())),
            Self::Db(DbError::Unavailable(String::new())),
            Self::Internal(anyhow::anyhow!("example")),
        ]
    }
}

impl Retryable for LedgerError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Db(e) if e.is_retryable())
    }
}
