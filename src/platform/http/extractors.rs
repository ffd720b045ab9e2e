//! Extractor configuration: malformed input becomes a stable 4xx problem before any handler
//! runs, so handlers only ever see well-formed, typed requests.

use std::fmt::Write as _;

use actix_web::dev::Payload;
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::platform::error::{ApiError, FieldError};

/// Longest number (in characters) a body may carry anywhere, and the largest exponent: far
/// beyond any amount or identifier, well inside what PostgreSQL's `numeric` (and so `jsonb`)
/// stores, so no number can fail a write after validation passed.
const MAX_NUMBER_CHARS: usize = 1000;
const MAX_NUMBER_EXPONENT: i64 = 1000;

/// A JSON request body. Read like actix's `web::Json` (the `JsonConfig` limit, content type
/// and error codes), then checked for what PostgreSQL refuses to store before any handler
/// runs: a NUL character in any string or key (`text` and `jsonb` reject it) and numbers
/// beyond `numeric`'s range. Such input is the client's mistake, so it is a 400
/// `validation_failed` naming the field, never a failed write later, where it could fail
/// other requests sharing the transaction (the ledger batches many requests in one).
pub struct Json<T>(pub T);

impl<T> Json<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for Json<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let raw = web::Json::<Box<RawValue>>::from_request(req, payload);
        Box::pin(async move {
            let raw = raw.await?.into_inner();
            let text = raw.get();
            if !scan_storable(text.as_bytes()) {
                // The slow path, for bad input only: find where, to name it.
                let value: Value = serde_json::from_str(text).map_err(|e| deserialize_error(&e))?;
                if let Err((field, message)) = check_storable(&value) {
                    return Err(ApiError::from(FieldError::new(field, message)).into());
                }
            }
            // From the text, as `web::Json` would: numbers keep their exact original text.
            serde_json::from_str(text)
                .map(Json)
                .map_err(|e| deserialize_error(&e).into())
        })
    }
}

/// A quick look over valid JSON text: `false` when a string may hold a NUL (`\u0000`) or a
/// number may be out of range; [`check_storable`] then says exactly where.
fn scan_storable(text: &[u8]) -> bool {
    let mut i = 0;
    while let Some(&byte) = text.get(i) {
        match byte {
            b'"' => {
                i += 1;
                while let Some(&c) = text.get(i) {
                    match c {
                        b'"' => break,
                        b'\\' => {
                            if text.get(i + 1) == Some(&b'u')
                                && text.get(i + 2..i + 6) == Some(b"0000".as_slice())
                            {
                                return false;
                            }
                            i += 2;
                        }
                        _ => i += 1,
                    }
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while text
                    .get(i)
                    .is_some_and(|c| matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                {
                    i += 1;
                }
                let token = std::str::from_utf8(&text[start..i]).unwrap_or_default();
                if !storable_number(token) {
                    return false;
                }
            }
            _ => i += 1,
        }
    }
    true
}

/// The first place in `value` PostgreSQL could not store, as (JSON path, why).
pub fn check_storable(value: &Value) -> Result<(), (String, String)> {
    let mut path = String::new();
    walk(value, &mut path).map_err(|why| {
        let field = if path.is_empty() {
            "body".to_owned()
        } else {
            path
        };
        (field, why.to_owned())
    })
}

/// Depth-first; on failure `path` is left pointing at the culprit.
fn walk(value: &Value, path: &mut String) -> Result<(), &'static str> {
    const NUL: &str = "contains a NUL character (\\u0000), which cannot be stored";
    match value {
        Value::String(s) if s.contains('\0') => Err(NUL),
        Value::Number(n) if !storable_number(&n.to_string()) => {
            Err("is a number out of range (at most 1000 characters and an exponent within 1000)")
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                let _ = write!(path, "[{i}]");
                walk(item, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        Value::Object(map) => {
            for (key, item) in map {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                // Shown escaped and bounded: the key is the client's text.
                path.extend(key.chars().take(64).flat_map(char::escape_default));
                if key.contains('\0') {
                    return Err(NUL);
                }
                walk(item, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Whether a JSON number's text fits PostgreSQL's `numeric` with room to spare.
fn storable_number(text: &str) -> bool {
    if text.len() > MAX_NUMBER_CHARS {
        return false;
    }
    match text.find(['e', 'E']) {
        None => true,
        Some(at) => text[at + 1..]
            .parse::<i64>()
            .is_ok_and(|exponent| exponent.abs() <= MAX_NUMBER_EXPONENT),
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn culprit(value: Value) -> Option<String> {
        check_storable(&value).err().map(|(field, _)| field)
    }

    #[test]
    fn a_nul_anywhere_is_refused_naming_where() {
        assert_eq!(culprit(json!({"a": "fine", "b": [1, "x"]})), None);
        assert_eq!(culprit(json!("a\u{0}b")).as_deref(), Some("body"));
        assert_eq!(
            culprit(json!({"transfers": [{}, {"metadata": {"note": "a\u{0}b"}}]})).as_deref(),
            Some("transfers[1].metadata.note")
        );
        assert_eq!(
            culprit(json!({"source": {"k\u{0}ey": "v"}})).as_deref(),
            Some("source.k\\u{0}ey")
        );
        let (_, why) = check_storable(&json!({"d": "\u{0}"})).unwrap_err();
        assert!(why.contains("NUL"), "{why}");
    }

    #[test]
    fn the_quick_scan_agrees_with_the_walk() {
        for text in [
            r#"{"a": "x\u0000"}"#,
            r#"{"a": "x\\u0000"}"#,
            r#"{"a": "\\\u0000"}"#,
            r#"{"a\u0000": 1}"#,
            r#"{"a": "\u0001\u00001"}"#,
            r#"[1e5, -2.5E-7, 1e1001]"#,
            r#"{"n": 12, "s": "1e99999"}"#,
            r#""\"\\u0000""#,
        ] {
            let value: Value = serde_json::from_str(text).unwrap();
            assert_eq!(
                scan_storable(text.as_bytes()),
                check_storable(&value).is_ok(),
                "{text}"
            );
        }
    }

    #[test]
    fn numbers_beyond_what_postgres_stores_are_refused() {
        let number = |text: &str| serde_json::from_str::<Value>(text).unwrap();
        assert_eq!(culprit(json!({"n": number("1e1000")})), None);
        assert_eq!(culprit(json!({"n": number("-12.5E-3")})), None);
        assert_eq!(
            culprit(json!({"n": number("1e1001")})).as_deref(),
            Some("n")
        );
        assert_eq!(
            culprit(json!({"n": number("1e-99999999999999999999")})).as_deref(),
            Some("n")
        );
        let long = "9".repeat(1001);
        assert_eq!(
            culprit(json!({"n": [number(&long)]})).as_deref(),
            Some("n[0]")
        );
    }
}
