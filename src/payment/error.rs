//! Payment errors and their problem codes.

use actix_web::http::StatusCode;
use serde_json::{Map, Value, json};

use crate::kyc::KycError;
use crate::ledger::{LedgerError, ResultCode};
use crate::platform::db::{DbError, Retryable};
use crate::platform::error::Problem;
use crate::wallet::WalletError;

#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error("{field}: {message}")]
    Validation {
        field: &'static str,
        message: String,
    },
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

impl PaymentError {
    pub fn validation(field: &'static str, message: impl Into<String>) -> Self {
        Self::Validation {
            field,
            message: message.into(),
        }
    }
}

impl From<diesel::result::Error> for PaymentError {
    fn from(err: diesel::result::Error) -> Self {
        Self::Db(DbError::Query(err))
    }
}

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

impl Problem for PaymentError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Validation { .. } => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::CurrencyMismatch
            | Self::InsufficientFunds
            | Self::WalletFrozen
            | Self::WalletClosed
            | Self::Refused(_)
            | Self::NotRefundable(_)
            | Self::RefundExceedsPayment { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::KeyInUse => StatusCode::CONFLICT,
            Self::Kyc(e) => e.status(),
            Self::Wallet(e) => e.status(),
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
            Self::CurrencyMismatch => "currency_mismatch",
            Self::InsufficientFunds => "insufficient_funds",
            Self::WalletFrozen => "wallet_frozen",
            Self::WalletClosed => "wallet_closed",
            // The ledger's own code, as the ledger said it (never renamed).
            Self::Refused(code) => code.as_str(),
            Self::NotRefundable(_) => "payment_not_refundable",
            Self::RefundExceedsPayment { .. } => "refund_exceeds_payment",
            Self::KeyInUse => "idempotency_key_in_use",
            Self::Kyc(e) => e.code(),
            Self::Wallet(e) => e.code(),
            Self::Ledger(e) => e.code(),
            Self::Db(e) => e.code(),
            Self::Internal(_) => "internal_error",
        }
    }

    fn extensions(&self) -> Option<Map<String, Value>> {
        match self {
            Self::Validation { field, .. } => json!({ "field": field }).as_object().cloned(),
            Self::Refused(code) => json!({ "ledger_result": code.as_str() })
                .as_object()
                .cloned(),
            Self::RefundExceedsPayment { remaining } => {
                json!({ "remaining": remaining }).as_object().cloned()
            }
            Self::Kyc(e) => e.extensions(),
            Self::Wallet(e) => e.extensions(),
            Self::Ledger(e) => e.extensions(),
            _ => None,
        }
    }
}

impl Retryable for PaymentError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Db(e) if e.is_retryable())
    }
}
