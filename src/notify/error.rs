//! Notify's errors.

use actix_web::http::StatusCode;
use serde_json::{Map, Value};

use crate::platform::db::{DbError, Retryable};
use crate::platform::error::Problem;

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("{field}: {message}")]
    Validation {
        field: &'static str,
        message: String,
    },
    #[error("No such {0}.")]
    NotFound(&'static str),
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("internal error: {0}")]
    Internal(#[from] anyhow::Error),
}

impl NotifyError {
    pub fn validation(field: &'static str, message: impl Into<String>) -> Self {
        Self::Validation {
            field,
            message: message.into(),
        }
    }
}

impl From<diesel::result::Error> for NotifyError {
    fn from(err: diesel::result::Error) -> Self {
        Self::Db(DbError::Query(err))
    }
}

impl Problem for NotifyError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Validation { .. } => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Db(e) => e.status(),
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Validation { .. } => "validation_failed",
            Self::NotFound(_) => "not_found",
            Self::Forbidden(_) => "forbidden",
            Self::Db(e) => e.code(),
            Self::Internal(_) => "internal_error",
        }
    }

    fn extensions(&self) -> Option<Map<String, Value>> {
        match self {
            Self::Validation { field, .. } => {
                let mut map = Map::new();
                map.insert("field".to_owned(), Value::String((*field).to_owned()));
                Some(map)
            }
            _ => None,
        }
    }
}

impl Retryable for NotifyError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Db(e) if e.is_retryable())
    }
}
