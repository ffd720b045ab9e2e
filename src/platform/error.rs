//! Errors as partners see them: RFC 9457 `application/problem+json` with a stable `code`.
//!
//! Each module has its own error enum and implements [`ModuleError`] for it: the HTTP status
//! and the machine code belong to the error, decided once per variant, next to the rule that
//! raises it; what it wraps ([`FieldError`] for a malformed field, a database error, another
//! module's error) answers for itself. That makes it a [`Problem`], and [`ApiError`] is the
//! single renderer. Server-side failures (5xx) are logged here, once, with
//! their whole cause chain and the request id, and the client only ever sees a generic detail:
//! never SQL, a stack trace or a secret.

use std::borrow::Cow;
use std::fmt;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::platform::money::MoneyError;

/// The media type of every error body (RFC 9457 §3).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The detail clients see for any 5xx: the cause is in the logs under the request id.
const INTERNAL_DETAIL: &str =
    "The server could not complete the request. Quote the request_id when contacting support.";

/// The glue every module error needs, written once: `Error::validation(field, message)` for a
/// malformed field (a [`FieldError`], 400 `validation_failed`), and `?` on a diesel error
/// (wrapped as the module's `Db` variant, which answers for itself). The enum must have
/// `Validation(#[from] FieldError)` and `Db(DbError)` variants.
#[macro_export]
macro_rules! module_error_glue {
    ($error:ty) => {
        impl $error {
            /// A malformed `field`: 400 `validation_failed`, naming it.
            pub fn validation(
                field: impl Into<std::borrow::Cow<'static, str>>,
                message: impl Into<String>,
            ) -> Self {
                $crate::platform::error::FieldError::new(field, message).into()
            }
        }

        impl From<diesel::result::Error> for $error {
            fn from(err: diesel::result::Error) -> Self {
                Self::Db($crate::platform::db::DbError::Query(err))
            }
        }
    };
}

pub use crate::module_error_glue;

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

/// How one variant of a module's error answers (see [`ModuleError`]).
pub enum Answer<'a> {
    /// One of the module's own problems: its status and stable code; its extension members,
    /// if any, come from [`ModuleError::own_extensions`].
    Own(StatusCode, &'static str),
    /// A wrapped error that answers for itself, whole (status, code and extension members):
    /// a [`FieldError`], a database error, another module's error.
    As(&'a dyn Problem),
}

/// A module's error enum. It says once per variant how that variant answers, and is a
/// [`Problem`] by that alone: wrapped errors (a [`FieldError`], a database error, another
/// module's error) answer for themselves, so no module repeats their status, code or
/// extension members.
pub trait ModuleError: std::error::Error + Send + Sync + 'static {
    /// How this error answers.
    fn answer(&self) -> Answer<'_>;

    /// Extension members of the module's own problems (never consulted for a wrapped error,
    /// which brings its own); none by default.
    fn own_extensions(&self) -> Option<Map<String, Value>> {
        None
    }

    /// One value of every variant (a wrapped variant with any error inside): the catalogue
    /// from which the contract test of published codes learns every code this error can
    /// answer with.
    fn examples() -> Vec<Self>
    where
        Self: Sized;
}

impl<E: ModuleError> Problem for E {
    fn status(&self) -> StatusCode {
        match self.answer() {
            Answer::Own(status, _) => status,
            Answer::As(inner) => inner.status(),
        }
    }

    fn code(&self) -> &'static str {
        match self.answer() {
            Answer::Own(_, code) => code,
            Answer::As(inner) => inner.code(),
        }
    }

    fn extensions(&self) -> Option<Map<String, Value>> {
        match self.answer() {
            Answer::Own(..) => self.own_extensions(),
            Answer::As(inner) => inner.extensions(),
        }
    }
}

/// A request field that is missing or malformed: 400 `validation_failed` (a malformed amount:
/// the money error's own code, e.g. `too_many_decimals`), naming the field in a `field`
/// member. Every module's errors wrap it as their `Validation` variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The field as the client wrote it: `amount`, `transfers[3].currency`, `address.country`.
    pub field: Cow<'static, str>,
    /// What is wrong with it, for a human.
    pub message: String,
    code: &'static str,
}

impl FieldError {
    /// 400 `validation_failed` naming `field`.
    pub fn new(field: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
            code: "validation_failed",
        }
    }

    /// An amount that is no valid amount of its currency: 400 with the money error's code
    /// (`too_many_decimals`, `amount_not_positive`, `amount_overflow`, ...) naming `field`.
    pub fn amount(field: impl Into<Cow<'static, str>>, error: &MoneyError) -> Self {
        Self {
            field: field.into(),
            message: error.to_string(),
            code: error.code(),
        }
    }
}

impl Problem for FieldError {
    fn status(&self) -> StatusCode {
        StatusCode::BAD_REQUEST
    }

    fn code(&self) -> &'static str {
        self.code
    }

    fn extensions(&self) -> Option<Map<String, Value>> {
        let mut members = Map::new();
        members.insert("field".to_owned(), Value::String(self.field.to_string()));
        Some(members)
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

/// The code of each bare status: an error no handler described (the router's 404, 405, a body
/// over the limit, ...). Any other 5xx is `internal_error`, any other status `http_error`.
pub const BARE_STATUS_CODES: [(u16, &str); 18] = [
    (400, "bad_request"),
    (401, "unauthorized"),
    (403, "forbidden"),
    (404, "not_found"),
    (405, "method_not_allowed"),
    (406, "not_acceptable"),
    (408, "request_timeout"),
    (409, "conflict"),
    (411, "length_required"),
    (413, "payload_too_large"),
    (414, "uri_too_long"),
    (415, "unsupported_media_type"),
    (422, "unprocessable_entity"),
    (429, "rate_limited"),
    (431, "request_header_fields_too_large"),
    (500, "internal_error"),
    (503, "service_unavailable"),
    (504, "gateway_timeout"),
];

/// The code used for a bare status that no handler described (see [`BARE_STATUS_CODES`]).
pub fn code_for_status(status: StatusCode) -> &'static str {
    let number = status.as_u16();
    BARE_STATUS_CODES
        .iter()
        .find(|(known, _)| *known == number)
        .map(|(_, code)| *code)
        .unwrap_or(if status.is_server_error() {
            "internal_error"
        } else {
            "http_error"
        })
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

    #[derive(Debug, thiserror::Error)]
    enum Module {
        #[error(transparent)]
        Validation(#[from] FieldError),
        #[error(transparent)]
        Sample(Sample),
        #[error("over the limit")]
        Limited,
    }

    impl ModuleError for Module {
        fn answer(&self) -> Answer<'_> {
            match self {
                Self::Validation(e) => Answer::As(e),
                Self::Sample(e) => Answer::As(e),
                Self::Limited => Answer::Own(StatusCode::FORBIDDEN, "limit_exceeded"),
            }
        }

        fn own_extensions(&self) -> Option<Map<String, Value>> {
            let mut members = Map::new();
            members.insert("limit".to_owned(), Value::String("daily".to_owned()));
            Some(members)
        }

        fn examples() -> Vec<Self> {
            vec![
                FieldError::new("f", "m").into(),
                Self::Sample(Sample::Frozen),
                Self::Limited,
            ]
        }
    }

    #[test]
    fn a_field_error_is_a_400_naming_its_field_wherever_it_is_wrapped() {
        let body = body_of(
            ApiError::from(Module::from(FieldError::new(
                "transfers[2].amount",
                "is required",
            )))
            .error_response(),
        );
        assert_eq!(body["status"], 400);
        assert_eq!(body["code"], "validation_failed");
        assert_eq!(body["field"], "transfers[2].amount");
        assert_eq!(body["detail"], "transfers[2].amount: is required");
        assert!(body.get("limit").is_none(), "{body}");

        let amount = FieldError::amount("amount", &MoneyError::NotPositive);
        assert_eq!(amount.code(), "amount_not_positive");
        assert_eq!(amount.extensions().unwrap()["field"], "amount");
    }

    #[test]
    fn a_module_error_answers_as_its_own_variant_or_as_the_error_it_wraps() {
        let own = Module::Limited;
        assert_eq!(
            (own.status(), own.code()),
            (StatusCode::FORBIDDEN, "limit_exceeded")
        );
        assert_eq!(own.extensions().unwrap()["limit"], "daily");
        let wrapped = Module::Sample(Sample::Frozen);
        assert_eq!(
            (wrapped.status(), wrapped.code()),
            (StatusCode::CONFLICT, "wallet_frozen")
        );
        assert_eq!(wrapped.extensions(), None);
        assert_eq!(Module::examples().len(), 3);
    }

    #[test]
    fn bare_statuses_have_their_codes_and_unknown_ones_a_fallback() {
        let code = |n| code_for_status(StatusCode::from_u16(n).unwrap());
        assert_eq!(code(405), "method_not_allowed");
        assert_eq!(code(503), "service_unavailable");
        assert_eq!(code(502), "internal_error");
        assert_eq!(code(418), "http_error");
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
