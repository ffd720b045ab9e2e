//! Extractor configuration: malformed input becomes a stable 4xx problem before any handler
//! runs, so handlers only ever see well-formed, typed requests.

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::StatusCode;
use actix_web::web;

use crate::platform::error::ApiError;

/// JSON bodies: size-limited, `application/json` only, unknown fields refused by each
/// request type's `#[serde(deny_unknown_fields)]` and reported as `unknown_field`.
pub fn json_config(body_limit_bytes: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(body_limit_bytes)
        .error_handler(|err, _req| json_error(err).into())
}

/// Query strings that do not fit the handler's type: 400 `invalid_query`.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _req| query_error(&err).into())
}

/// Path segments that do not parse (e.g. a malformed id) name no resource: 404.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|_err: PathError, _req| {
        ApiError::not_found("No resource exists at this path.").into()
    })
}

fn json_error(err: JsonPayloadError) -> ApiError {
    match err {
        JsonPayloadError::OverflowKnownLength { limit, .. }
        | JsonPayloadError::Overflow { limit } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("The request body is larger than the limit of {limit} bytes."),
        ),
        JsonPayloadError::ContentType => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "The request body must be sent with Content-Type: application/json.",
        ),
        JsonPayloadError::Deserialize(e) => deserialize_error(&e),
        JsonPayloadError::Payload(e) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("The request body could not be read: {e}"),
        ),
        JsonPayloadError::Serialize(e) => ApiError::internal(e),
        other => ApiError::new(StatusCode::BAD_REQUEST, "bad_request", other.to_string()),
    }
}

/// Sorts serde_json's errors into the codes partners branch on.
fn deserialize_error(e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("The request body is not valid JSON: {e}"),
        ),
        Category::Data => {
            let message = e.to_string();
            if message.starts_with("unknown field") {
                ApiError::new(StatusCode::BAD_REQUEST, "unknown_field", message)
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, "validation_failed", message)
            }
        }
    }
}

fn query_error(err: &QueryPayloadError) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_query",
        format!("The query string is invalid: {err}"),
    )
}
