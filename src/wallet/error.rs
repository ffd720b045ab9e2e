//! Wallet errors and their problem codes.

use actix_web::http::StatusCode;

use crate::kyc::KycError;
use crate::ledger::LedgerError;
use crate::platform::db::{DbError, Retryable};
use crate::platform::error::{Answer, FieldError, ModuleError};

#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    #[error(transparent)]
    Validation(#[from] FieldError),
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

crate::platform::error::module_error_glue!(WalletError);

impl ModuleError for WalletError {
    fn answer(&self) -> Answer<'_> {
        match self {
            Self::Validation(e) => Answer::As(e),
            Self::Kyc(e) => Answer::As(e),
            Self::Ledger(e) => Answer::As(e),
            Self::Db(e) => Answer::As(e),
            Self::NotFound(_) => Answer::Own(StatusCode::NOT_FOUND, "not_found"),
            Self::Forbidden(_) => Answer::Own(StatusCode::FORBIDDEN, "forbidden"),
            Self::Closed => Answer::Own(StatusCode::UNPROCESSABLE_ENTITY, "wallet_closed"),
            Self::Frozen(_) => Answer::Own(StatusCode::UNPROCESSABLE_ENTITY, "wallet_frozen"),
            Self::NotFrozen => Answer::Own(StatusCode::CONFLICT, "wallet_not_frozen"),
            Self::AlreadyFrozen => Answer::Own(StatusCode::CONFLICT, "wallet_already_frozen"),
            Self::NotEmpty => Answer::Own(StatusCode::CONFLICT, "wallet_not_empty"),
            Self::Internal(_) => Answer::Own(StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }

    fn examples() -> Vec<Self> {
        vec![
            Self::validation("field", "message"),
            Self::NotFound("wallet"),
            Self::Forbidden(String::new()),
            Self::Closed,
            Self::Frozen("debits"),
            Self::NotFrozen,
            Self::AlreadyFrozen,
            Self::NotEmpty,
            Self::Kyc(KycError::NotFound("customer")),
            Self::Ledger(LedgerError::AccountNotFound),
            Self::Db(DbError::Unavailable(String::new())),
            Self::Internal(anyhow::anyhow!("example")),
        ]
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
