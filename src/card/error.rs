//! Card errors and their problem codes.

use actix_web::http::StatusCode;

use crate::kyc::KycError;
use crate::ledger::LedgerError;
use crate::platform::db::{DbError, Retryable};
use crate::platform::error::{Answer, FieldError, ModuleError};
use crate::platform::vault::VaultError;
use crate::wallet::WalletError;

#[derive(Debug, thiserror::Error)]
pub enum CardError {
    #[error(transparent)]
    Validation(#[from] FieldError),
    #[error("No such {0}.")]
    NotFound(&'static str),
    #[error("{0}")]
    Forbidden(String),
    #[error("The wallet is closed: no card can be issued on it.")]
    WalletClosed,
    #[error("The card is canceled; canceling is final.")]
    Canceled,
    #[error("The card is {0}; only {1}.")]
    WrongState(&'static str, &'static str),
    #[error("This card's number was revealed too often; retry after {0} seconds.")]
    RevealsExhausted(u64),
    #[error(
        "The authorization is {0}: only a pending authorization can be incremented, captured or reversed."
    )]
    NotPending(&'static str),
    #[error("{0}")]
    OverCapture(String),
    #[error("The wallet's available balance does not cover the amount.")]
    InsufficientFunds,
    #[error("The card simulator is off in this environment (cards.simulator.enabled).")]
    SimulatorDisabled,
    #[error(transparent)]
    Kyc(#[from] KycError),
    #[error(transparent)]
    Wallet(#[from] WalletError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("internal error: {0}")]
    Internal(#[from] anyhow::Error),
}

crate::platform::error::module_error_glue!(CardError);

impl From<VaultError> for CardError {
    fn from(err: VaultError) -> Self {
        // Never the value: the vault's errors carry none.
        Self::Internal(anyhow::anyhow!("the card vault: {err}"))
    }
}

impl ModuleError for CardError {
    fn answer(&self) -> Answer<'_> {
        match self {
            Self::Validation(e) => Answer::As(e),
            Self::Kyc(e) => Answer::As(e),
            Self::Wallet(e) => Answer::As(e),
            Self::Ledger(e) => Answer::As(e),
            Self::Db(e) => Answer::As(e),
            Self::NotFound(_) => Answer::Own(StatusCode::NOT_FOUND, "not_found"),
            Self::Forbidden(_) => Answer::Own(StatusCode::FORBIDDEN, "forbidden"),
            Self::WalletClosed => Answer::Own(StatusCode::UNPROCESSABLE_ENTITY, "wallet_closed"),
            Self::Canceled => Answer::Own(StatusCode::CONFLICT, "card_canceled"),
            Self::WrongState(..) => Answer::Own(StatusCode::CONFLICT, "card_state_conflict"),
            Self::RevealsExhausted(_) => {
                Answer::Own(StatusCode::TOO_MANY_REQUESTS, "reveal_limit_exceeded")
            }
            Self::SimulatorDisabled => Answer::Own(StatusCode::NOT_FOUND, "simulator_disabled"),
            Self::NotPending(_) => Answer::Own(StatusCode::CONFLICT, "authorization_not_pending"),
            Self::OverCapture(_) => Answer::Own(
                StatusCode::UNPROCESSABLE_ENTITY,
                "capture_exceeds_authorization",
            ),
            Self::InsufficientFunds => {
                Answer::Own(StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds")
            }
            Self::Internal(_) => Answer::Own(StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }

    fn examples() -> Vec<Self> {
        vec![
            Self::validation("field", "message"),
            Self::NotFound("card"),
            Self::Forbidden(String::new()),
            Self::WalletClosed,
            Self::Canceled,
            Self::WrongState("active", "an inactive card can be activated"),
            Self::RevealsExhausted(60),
            Self::SimulatorDisabled,
            Self::NotPending("captured"),
            Self::OverCapture(String::new()),
            Self::InsufficientFunds,
            Self::Kyc(KycError::NotFound("customer")),
            Self::Wallet(WalletError::NotFound("wallet")),
            Self::Ledger(LedgerError::AccountNotFound),
            Self::Db(DbError::Unavailable(String::new())),
            Self::Internal(anyhow::anyhow!("example")),
        ]
    }
}

impl Retryable for CardError {
    fn is_retryable(&self) -> bool {
        match self {
            Self::Db(e) => e.is_retryable(),
            Self::Ledger(e) => e.is_retryable(),
            Self::Kyc(e) => e.is_retryable(),
            Self::Wallet(e) => e.is_retryable(),
            _ => false,
        }
    }
}
