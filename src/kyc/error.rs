//! KYC errors and their problem codes.

use actix_web::http::StatusCode;
use serde_json::{Map, Value, json};

use super::model::{Denial, LimitKind};
use super::pii::PiiError;
use crate::platform::db::{DbError, Retryable};
use crate::platform::error::{Answer, FieldError, ModuleError};
use crate::platform::money::{Currency, Money};

#[derive(Debug, thiserror::Error)]
pub enum KycError {
    #[error(transparent)]
    Validation(#[from] FieldError),
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

crate::platform::error::module_error_glue!(KycError);

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

impl ModuleError for KycError {
    fn answer(&self) -> Answer<'_> {
        match self {
            Self::Validation(e) => Answer::As(e),
            Self::Db(e) => Answer::As(e),
            Self::List(_) => Answer::Own(StatusCode::BAD_REQUEST, "invalid_list"),
            Self::NotFound(_) => Answer::Own(StatusCode::NOT_FOUND, "not_found"),
            Self::Forbidden(_) => Answer::Own(StatusCode::FORBIDDEN, "forbidden"),
            Self::FourEyes(_) => Answer::Own(StatusCode::FORBIDDEN, "four_eyes_required"),
            Self::Denied(Denial::KycRequired { .. }) => {
                Answer::Own(StatusCode::FORBIDDEN, "kyc_required")
            }
            Self::Denied(Denial::LimitExceeded { .. }) => {
                Answer::Own(StatusCode::FORBIDDEN, "limit_exceeded")
            }
            Self::DuplicateExternalId => Answer::Own(StatusCode::CONFLICT, "external_id_taken"),
            Self::ApplicationInProgress(_) => {
                Answer::Own(StatusCode::CONFLICT, "application_in_progress")
            }
            Self::NotInReview(_) => Answer::Own(StatusCode::CONFLICT, "application_not_in_review"),
            Self::Pii(_) | Self::Internal(_) => {
                Answer::Own(StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
            }
        }
    }

    fn own_extensions(&self) -> Option<Map<String, Value>> {
        let value = match self {
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

    fn examples() -> Vec<Self> {
        let usd = Currency::parse("USD").ok();
        let money = usd.map(|c| Money::from_minor(100, c));
        let mut examples = vec![
            Self::validation("field", "message"),
            Self::NotFound("customer"),
            Self::Forbidden(String::new()),
            Self::DuplicateExternalId,
            Self::ApplicationInProgress("pending".to_owned()),
            Self::NotInReview("approved".to_owned()),
            Self::FourEyes(String::new()),
            Self::Denied(Denial::KycRequired {
                current_tier: 0,
                required_tier: Some(1),
                reason: String::new(),
            }),
            Self::List(String::new()),
            Self::Pii(PiiError::Corrupt),
            Self::Db(DbError::Unavailable(String::new())),
            Self::Internal(anyhow::anyhow!("example")),
        ];
        if let Some(money) = money {
            examples.push(Self::Denied(Denial::LimitExceeded {
                limit: LimitKind::MaxBalance,
                limit_amount: money,
                remaining: money,
            }));
        }
        examples
    }
}

impl Retryable for KycError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Db(e) if e.is_retryable())
    }
}
