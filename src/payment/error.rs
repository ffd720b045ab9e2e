//! Payment errors and their problem codes.

use actix_web::http::StatusCode;
use serde_json::{Map, Value, json};

use crate::kyc::KycError;
use crate::ledger::{LedgerError, ResultCode};
use crate::platform::db::{DbError, Retryable};
use crate::platform::error::{Answer, FieldError, ModuleError};
use crate::wallet::WalletError;

#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error(transparent)]
    Validation(#[from] FieldError),
    #[error("No such {0}.")]
    NotFound(&'static str),
    #[error("{0}")]
    Forbidden(String),
    #[error("The payment's currency must be the currency of both wallets.")]
    CurrencyMismatch,
    #[error("The wallet does not hold enough available money for this payment.")]
    InsufficientFunds,
    #[error("The wallet is frozen.")]
    WalletFrozen,
    #[error("The wallet is closed.")]
    WalletClosed,
    #[error("The ledger refused the transfer: {0}.")]
    Refused(ResultCode),
    #[error("The payment cannot be refunded: {0}.")]
    NotRefundable(&'static str),
    #[error("That is more than is left to refund ({remaining}).")]
    RefundExceedsPayment { remaining: String },
    /// A concurrent request with the same `Idempotency-Key` got there first.
    #[error(
        "Another request with this Idempotency-Key is running or has just run; retry it to get its response."
    )]
    KeyInUse,
    #[error(transparent)]
    Kyc(KycError),
    #[error(transparent)]
    Wallet(WalletError),
    #[error(transparent)]
    Ledger(LedgerError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("internal error: {0}")]
    Internal(#[from] anyhow::Error),
}

crate::platform::error::module_error_glue!(PaymentError);

impl From<KycError> for PaymentError {
    fn from(err: KycError) -> Self {
        match err {
            KycError::Db(e) => Self::Db(e),
            other => Self::Kyc(other),
        }
    }
}

impl From<WalletError> for PaymentError {
    fn from(err: WalletError) -> Self {
        match err {
            WalletError::Closed => Self::WalletClosed,
            WalletError::Frozen(_) => Self::WalletFrozen,
            WalletError::Db(e) => Self::Db(e),
            other => Self::Wallet(other),
        }
    }
}

impl From<LedgerError> for PaymentError {
    /// An attached write's own error comes back out of the engine boxed: unbox it.
    fn from(err: LedgerError) -> Self {
        match err {
            LedgerError::SideWrite(side) => match side.0.downcast::<PaymentError>() {
                Ok(payment) => *payment,
                Err(other) => match other.downcast::<DbError>() {
                    Ok(db) => Self::Db(*db),
                    Err(other) => Self::Internal(anyhow::anyhow!("{other}")),
                },
            },
            LedgerError::Db(e) => Self::Db(e),
            other => Self::Ledger(other),
        }
    }
}

impl ModuleError for PaymentError {
    fn answer(&self) -> Answer<'_> {
        const REFUSED: StatusCode = StatusCode::UNPROCESSABLE_ENTITY;
        match self {
            Self::Validation(e) => Answer::As(e),
            Self::Kyc(e) => Answer::As(e),
            Self::Wallet(e) => Answer::As(e),
            Self::Ledger(e) => Answer::As(e),
            Self::Db(e) => Answer::As(e),
            Self::NotFound(_) => Answer::Own(StatusCode::NOT_FOUND, "not_found"),
            Self::Forbidden(_) => Answer::Own(StatusCode::FORBIDDEN, "forbidden"),
            Self::CurrencyMismatch => Answer::Own(REFUSED, "currency_mismatch"),
            Self::InsufficientFunds => Answer::Own(REFUSED, "insufficient_funds"),
            Self::WalletFrozen => Answer::Own(REFUSED, "wallet_frozen"),
            Self::WalletClosed => Answer::Own(REFUSED, "wallet_closed"),
            // The ledger's own code, as the ledger said it (never renamed).
            Self::Refused(code) => Answer::Own(REFUSED, code.as_str()),
            Self::NotRefundable(_) => Answer::Own(REFUSED, "payment_not_refundable"),
            Self::RefundExceedsPayment { .. } => Answer::Own(REFUSED, "refund_exceeds_payment"),
            Self::KeyInUse => Answer::Own(StatusCode::CONFLICT, "idempotency_key_in_use"),
            Self::Internal(_) => Answer::Own(StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }

    fn own_extensions(&self) -> Option<Map<String, Value>> {
        match self {
            Self::Refused(code) => json!({ "ledger_result": code.as_str() })
                .as_object()
                .cloned(),
            Self::RefundExceedsPayment { remaining } => {
                json!({ "remaining": remaining }).as_object().cloned()
            }
            _ => None,
        }
    }

    /// `Refused` stands for every ledger result a payment does not name itself; each answers
    /// 422 with the ledger's own code (see `Refused`).
    fn examples() -> Vec<Self> {
        vec![
            Self::validation("field", "message"),
            Self::NotFound("payment"),
            Self::Forbidden(String::new()),
            Self::CurrencyMismatch,
            Self::InsufficientFunds,
            Self::WalletFrozen,
            Self::WalletClosed,
            Self::Refused(ResultCode::OverflowsCreditsPosted),
            Self::NotRefundable("example"),
            Self::RefundExceedsPayment {
                remaining: "1.00".to_owned(),
            },
            Self::KeyInUse,
            Self::Kyc(KycError::DuplicateExternalId),
            Self::Wallet(WalletError::NotEmpty),
            Self::Ledger(LedgerError::Overloaded),
            Self::Db(DbError::Unavailable(String::new())),
            Self::Internal(anyhow::anyhow!("example")),
        ]
    }
}

impl Retryable for PaymentError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Db(e) if e.is_retryable())
    }
}
