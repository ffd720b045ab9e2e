//! Errors as partners see them: RFC 9457 `application/problem+json` with a stable `code`.
//!
//! Each module has its own error enum and implements [`Problem`] for it: the HTTP status and
//! the machine code belong to the error, decided once, next to the rule that raises it.
//! [`ApiError`] is the single renderer. Server-side failures (5xx) are logged here, once, with
//! their whole cause chain and the request id, and the client only ever sees a generic detail:
//! never SQL, a stack trace or a secret.

use std::fmt;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use serde_json::{Map, Value};

/// The media type of every error body (RFC 9457 §3).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The detail clients see for any 5xx: the cause is in the logs under the request id.
const INTERNAL_DETAIL: &str =
    "The server could not complete the request. Quote the request_id when contacting support.";

/// What a module error must say about itself to be rendered as a problem.
pub trait Problem: std::error::Error + Send + Sync + 'static {
    /// The HTTP status; 5xx means "our fault" and hides the detail from the client.
    fn status(&self) -> StatusCode;
    /// Stable snake_case machine code partners branch on; never changes once published.
    fn code(&self) -> &'static str;
    /// Extra members for the problem object (e.g. the failing field); none by default.
    fn extensions(&self) -> Option<Map<String, Value>> {
        None
    }
}

/// The one error type handlers return. Built from any [`Problem`] with `?`.
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    detail: String,
    extensions: Option<Map<String, Value>>,
    /// The original error, kept for the log line of a 5xx.
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl ApiError {
    /// A client error with a code and a human-readable detail.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            extensions: None,
            source: None,
        }
    }

    /// An unexpected failure: 500 `internal_error`, cause logged, never shown.
    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        let cause: anyhow::Error = cause.into();
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal_error",
            detail: INTERNAL_DETAIL.to_owned(),
            extensions: None,
            source: Some(cause.into()),
        }
    }

    /// Adds one member to the problem object (RFC 9457 §3.2 extension members).
    pub fn with_extension(mut self, key: &str, value: Value) -> Self {
        self.extensions
            .get_or_insert_with(Map::new)
            .insert(key.to_owned(), value);
        self
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    /// 404 `not_found`: also what another partner's resource looks like.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }
}

impl<E: Problem> From<E> for ApiError {
    fn from(err: E) -> Self {
        let status = err.status();
        let code = err.code();
        let extensions = err.extensions();
        if status.is_server_error() {
            Self {
                status,
                code,
                detail: INTERNAL_DETAIL.to_owned(),
                extensions: None,
                source: Some(Box::new(err)),
            }
        } else {
            Self {
                status,
                code,
                detail: err.to_string(),
                extensions,
                source: None,
            }
        }
    }
}

impl fmt::Debug for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiError")
            .field("status", &self.status.as_u16())
            .field("code", &self.code)
            .field("detail", &self.detail)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.detail)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        if let Some(source) = &self.source {
            tracing::error!(
                error.code = self.code,
                error.cause = %CauseChain(source.as_ref()),
                "request failed"
            );
        }
        problem_response(
            self.status,
            self.code,
            &self.detail,
            self.extensions.clone(),
        )
    }
}

/// Formats an error with its whole `source()` chain on one line, for the log.
struct CauseChain<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for CauseChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(cause) = next {
            write!(f, ": {cause}")?;
            next = cause.source();
        }
        Ok(())
    }
}

/// The RFC 9457 body. `type` is a URN per code, so it is stable and resolves nowhere.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ProblemBody {
    /// `urn:flowlet:problem:<code>`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The HTTP reason phrase of the status.
    pub title: String,
    pub status: u16,
    /// What went wrong, for a human.
    pub detail: String,
    /// Stable machine-readable code, e.g. `insufficient_funds`.
    pub code: String,
    /// The X-Request-Id of the request, to quote to support.
    pub request_id: Option<String>,
    /// Extension members (RFC 9457 §3.2), e.g. the checks of `/ready`.
    #[serde(flatten)]
    #[schema(ignore)]
    pub extensions: Map<String, Value>,
}

/// Builds a problem+json response; the request id comes from the request context.
pub fn problem_response(
    status: StatusCode,
    code: &str,
    detail: &str,
    extensions: Option<Map<String, Value>>,
) -> HttpResponse {
    let mut extensions = extensions.unwrap_or_default();
    for member in ["type", "title", "status", "detail", "code", "request_id"] {
        extensions.remove(member);
    }
    let body = ProblemBody {
        type_: format!("urn:flowlet:problem:{code}"),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        detail: detail.to_owned(),
        code: code.to_owned(),
        request_id: crate::platform::http::current_request_id(),
        extensions,
    };
    let json = serde_json::to_string(&body).unwrap_or_else(|_| {
        // Serialising plain strings and a JSON map cannot fail; keep a valid body regardless.
        format!(
            r#"{{"type":"urn:flowlet:problem:{code}","status":{}}}"#,
            status.as_u16()
        )
    });
    let mut response = HttpResponse::build(status);
    response.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON)));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        // Every 503 is temporary (the database, the ledger's queue, readiness): say when to
        // come back, so clients and proxies retry instead of giving up.
        response.insert_header((header::RETRY_AFTER, HeaderValue::from_static("1")));
    }
    response.body(json)
}

/// The code used for a bare status that no handler described (404 from the router, 405, ...).
pub fn code_for_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        406 => "not_acceptable",
        408 => "request_timeout",
        409 => "conflict",
        411 => "length_required",
        413 => "payload_too_large",
        414 => "uri_too_long",
        415 => "unsupported_media_type",
        422 => "unprocessable_entity",
        429 => "rate_limited",
        431 => "request_header_fields_too_large",
        503 => "service_unavailable",
        504 => "gateway_timeout",
        500..=599 => "internal_error",
        _ => "http_error",
    }
}

/// Human text for a bare status that no handler described.
pub fn detail_for_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        404 => "No resource exists at this path.",
        405 => "This resource does not support the request's method.",
        413 => "The request body is larger than the server accepts.",
        415 => "The request body must be application/json.",
        500..=599 => INTERNAL_DETAIL,
        _ => "The request could not be processed.",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    #[test]
    fn a_503_says_when_to_come_back_and_other_statuses_do_not() {
        let unavailable = problem_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "later",
            None,
        );
        assert_eq!(unavailable.headers().get(header::RETRY_AFTER).unwrap(), "1");
        let conflict = problem_response(StatusCode::CONFLICT, "x", "y", None);
        assert!(conflict.headers().get(header::RETRY_AFTER).is_none());
    }

    #[derive(Debug, thiserror::Error)]
    enum Sample {
        #[error("wallet wal_1 is frozen")]
        Frozen,
        #[error("connection refused at postgres://user:pw@db")]
        Broken,
    }

    impl Problem for Sample {
        fn status(&self) -> StatusCode {
            match self {
                Self::Frozen => StatusCode::CONFLICT,
                Self::Broken => StatusCode::INTERNAL_SERVER_ERROR,
            }
        }
        fn code(&self) -> &'static str {
            match self {
                Self::Frozen => "wallet_frozen",
                Self::Broken => "internal_error",
            }
        }
    }

    fn body_of(resp: HttpResponse) -> Value {
        let bytes = resp.into_body().try_into_bytes().unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn a_client_error_keeps_its_code_and_detail() {
        let resp = ApiError::from(Sample::Frozen).error_response();
        assert_eq!(resp.status(), StatusCode::CONFLICT);
        assert_eq!(
            resp.headers().get(header::CONTENT_TYPE).unwrap(),
            PROBLEM_JSON
        );
        let body = body_of(resp);
        assert_eq!(body["code"], "wallet_frozen");
        assert_eq!(body["type"], "urn:flowlet:problem:wallet_frozen");
        assert_eq!(body["title"], "Conflict");
        assert_eq!(body["status"], 409);
        assert_eq!(body["detail"], "wallet wal_1 is frozen");
    }

    #[test]
    fn a_server_error_never_shows_its_cause() {
        let body = body_of(ApiError::from(Sample::Broken).error_response());
        assert_eq!(body["code"], "internal_error");
        let text = body.to_string();
        assert!(!text.contains("postgres"), "{text}");
        assert!(!text.contains("pw"), "{text}");
    }

    #[test]
    fn extensions_cannot_overwrite_the_standard_members() {
        let err = ApiError::new(StatusCode::BAD_REQUEST, "validation_failed", "bad")
            .with_extension("code", Value::String("other".into()))
            .with_extension("field", Value::String("amount".into()));
        let body = body_of(err.error_response());
        assert_eq!(body["code"], "validation_failed");
        assert_eq!(body["field"], "amount");
    }
}
