//! KYC errors and their problem codes.

use actix_web::http::StatusCode;
use serde_json::{Map, Value, json};

use super::model::{Denial, FieldError};
use super::pii::PiiError;
use crate::platform::db::{DbError, Retryable};
use crate::platform::error::Problem;

#[derive(Debug, thiserror::Error)]
pub enum KycError {
    #[error("{field}: {message}")]
    Validation {
        field: &'static str,
        message: String,
    },
    #[error("No such {0}.")]
    NotFound(&'static str),
    #[error("{0}")]
    Forbidden(String),
    #[error("A customer with this external_id already exists.")]
    DuplicateExternalId,
    #[error("The customer has an application in progress ({0}); wait for its decision.")]
    ApplicationInProgress(String),
    #[error("The application is {0}; only applications in review can be decided.")]
    NotInReview(String),
    #[error("Four eyes: {0}")]
    FourEyes(String),
    /// A money movement refused by the tier rules.
    #[error("{}", denial_detail(.0))]
    Denied(Denial),
    #[error("sanctions list: {0}")]
    List(String),
    #[error(transparent)]
    Pii(#[from] PiiError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("internal error: {0}")]
    Internal(#[from] anyhow::Error),
}

impl KycError {
    pub fn validation(field: &'static str, message: impl Into<String>) -> Self {
        Self::Validation {
            field,
            message: message.into(),
        }
    }
}

impl From<FieldError> for KycError {
    fn from(e: FieldError) -> Self {
        Self::Validation {
            field: e.field,
            message: e.message,
        }
    }
}

impl From<diesel::result::Error> for KycError {
    fn from(err: diesel::result::Error) -> Self {
        Self::Db(DbError::Query(err))
    }
}

fn denial_detail(denial: &Denial) -> String {
    match denial {
        Denial::KycRequired { reason, .. } => format!("KYC required: {reason}."),
        Denial::LimitExceeded {
            limit,
            limit_amount,
            remaining,
        } => format!(
            "Over the {} limit of {} {}: {} {} remains.",
            limit.as_str(),
            limit_amount.format_amount(),
            limit_amount.currency(),
            remaining.format_amount(),
            remaining.currency()
        ),
    }
}

impl Problem for KycError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Validation { .. } | Self::List(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Forbidden(_) | Self::FourEyes(_) | Self::Denied(_) => StatusCode::FORBIDDEN,
            Self::DuplicateExternalId | Self::ApplicationInProgress(_) | Self::NotInReview(_) => {
                StatusCode::CONFLICT
            }
            Self::Db(e) => e.status(),
            Self::Pii(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Validation { .. } => "validation_failed",
            Self::List(_) => "invalid_list",
            Self::NotFound(_) => "not_found",
            Self::Forbidden(_) => "forbidden",
            Self::DuplicateExternalId => "external_id_taken",
            Self::ApplicationInProgress(_) => "application_in_progress",
            Self::NotInReview(_) => "application_not_in_review",
            Self::FourEyes(_) => "four_eyes_required",
            Self::Denied(Denial::KycRequired { .. }) => "kyc_required",
            Self::Denied(Denial::LimitExceeded { .. }) => "limit_exceeded",
            Self::Db(e) => e.code(),
            Self::Pii(_) | Self::Internal(_) => "internal_error",
        }
    }

    fn extensions(&self) -> Option<Map<String, Value>> {
        let value = match self {
            Self::Validation { field, .. } => json!({ "field": field }),
            Self::Denied(Denial::KycRequired {
                current_tier,
                required_tier,
                ..
            }) => json!({
                "rule": "kyc_required",
                "kyc_tier": current_tier,
                "required_tier": required_tier,
            }),
            Self::Denied(Denial::LimitExceeded {
                limit,
                limit_amount,
                remaining,
            }) => json!({
                "rule": "limit_exceeded",
                "limit": limit.as_str(),
                "limit_amount": limit_amount.format_amount(),
                "remaining": remaining.format_amount(),
                "currency": limit_amount.currency().code(),
            }),
            _ => return None,
        };
        value.as_object().cloned()
    }
}

impl Retryable for KycError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Db(e) if e.is_retryable())
    }
}
