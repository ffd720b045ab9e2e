//! Notify's errors.

use actix_web::http::StatusCode;

use crate::platform::db::{DbError, Retryable};
use crate::platform::error::{Answer, FieldError, ModuleError};

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Validation(#[from] FieldError),
    #[error("No such {0}.")]
    NotFound(&'static str),
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("internal error: {0}")]
    Internal(#[from] anyhow::Error),
}

crate::platform::error::module_error_glue!(NotifyError);

impl ModuleError for NotifyError {
    fn answer(&self) -> Answer<'_> {
        match self {
            Self::Validation(e) => Answer::As(e),
            Self::Db(e) => Answer::As(e),
            Self::NotFound(_) => Answer::Own(StatusCode::NOT_FOUND, "not_found"),
            Self::Forbidden(_) => Answer::Own(StatusCode::FORBIDDEN, "forbidden"),
            Self::Internal(_) => Answer::Own(StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }

    fn examples() -> Vec<Self> {
        vec![
            Self::validation("field", "message"),
            Self::NotFound("event"),
            Self::Forbidden(String::new()),
            Self::Db(DbError::Unavailable(String::new())),
            Self::Internal(anyhow::anyhow!("example")),
        ]
    }
}

impl Retryable for NotifyError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Db(e) if e.is_retryable())
    }
}
