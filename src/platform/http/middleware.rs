//! The request context: one middleware around every request, outermost, so that everything
//! else (routing errors, extractor errors, handler errors, panics) happens inside it.
//!
//! It gives each request an id (echoed from `X-Request-Id` when the client sent a sane one), a
//! tracing span carrying that id so every log line of the request has it, a body-size check,
//! panic containment (a panicking handler answers 500 `internal_error`; the worker lives on),
//! problem+json for any error response that a handler did not describe (404, 405, ...), and the
//! `http_requests_total` / `http_request_duration_seconds` metrics labelled by route template.

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::InternalError;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError, web};
use futures_util::FutureExt;
use tracing::Instrument;

use crate::platform::error::{
    ApiError, PROBLEM_JSON, code_for_status, detail_for_status, problem_response,
};
use crate::platform::metrics::Metrics;

/// Header carrying the request id in both directions.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Longest client-supplied request id we echo; longer ones are replaced, not truncated.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Label for requests that matched no route: the raw path must never become a label.
const UNMATCHED_ROUTE: &str = "unmatched";

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being served on this task, if any (used by the problem renderer).
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// What the middleware needs from the application.
pub struct RequestContext {
    pub metrics: Metrics,
    pub body_limit_bytes: usize,
    /// Routes (by template) allowed larger bodies, e.g. batches of ledger transfers. The
    /// route registers a matching `JsonConfig` limit itself.
    pub large_bodies: Vec<(String, usize)>,
}

impl RequestContext {
    /// The body limit of a route template.
    pub fn body_limit_for(&self, route: &str) -> usize {
        self.large_bodies
            .iter()
            .find(|(r, _)| r == route)
            .map_or(self.body_limit_bytes, |(_, limit)| *limit)
    }
}

/// The middleware function; install with `actix_web::middleware::from_fn(request_context)`.
pub async fn request_context(
    ctx: web::Data<RequestContext>,
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    let request_id = client_request_id(&req).unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let method = req.method().to_string();
    let route = req
        .match_pattern()
        .unwrap_or_else(|| UNMATCHED_ROUTE.to_owned());
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        http.method = %method,
        http.route = %route,
    );
    let body_limit = ctx.body_limit_for(&route);

    // Never keep a clone of the request across `next.call`: routing needs it uniquely owned.
    // Failures that lose the request (an `Err` from inside, a panic) are answered through
    // `InternalError::from_response`, which carries our finished problem response out.
    let outcome = REQUEST_ID
        .scope(
            request_id.clone(),
            async move {
                if declared_length(&req).is_some_and(|len| len > body_limit) {
                    let err = ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        format!("The request body is larger than the limit of {body_limit} bytes."),
                    );
                    return Outcome::Attached(req.into_response(err.error_response()));
                }
                match AssertUnwindSafe(next.call(req)).catch_unwind().await {
                    Ok(Ok(res)) => {
                        let (req, res) = res.map_into_boxed_body().into_parts();
                        Outcome::Attached(ServiceResponse::new(req, describe_bare_error(res)))
                    }
                    Ok(Err(err)) => Outcome::Detached(describe_bare_error(err.error_response())),
                    Err(panic) => {
                        tracing::error!(
                            panic.message = panic_message(panic.as_ref()),
                            "handler panicked"
                        );
                        let err = ApiError::internal(anyhow::anyhow!("handler panicked"));
                        Outcome::Detached(err.error_response())
                    }
                }
            }
            .instrument(span.clone()),
        )
        .await;

    let header_value = HeaderValue::from_str(&request_id).ok();
    let with_id = |headers: &mut header::HeaderMap| {
        if let Some(value) = header_value.clone() {
            headers.insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
        }
    };
    let (status, result) = match outcome {
        Outcome::Attached(mut res) => {
            with_id(res.headers_mut());
            (res.status(), Ok(res))
        }
        Outcome::Detached(mut res) => {
            with_id(res.headers_mut());
            let status = res.status();
            let err = InternalError::from_response("request failed", res);
            (status, Err(err.into()))
        }
    };
    let elapsed = started.elapsed();
    ctx.metrics
        .observe_request(&method, &route, status.as_u16(), elapsed);
    let _entered = span.enter();
    let duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    if is_probe(&route) {
        tracing::debug!(
            http.status = status.as_u16(),
            duration_ms,
            "request completed"
        );
    } else {
        tracing::info!(
            http.status = status.as_u16(),
            duration_ms,
            "request completed"
        );
    }
    result
}

/// A response either still tied to its request, or standing alone (the request was lost).
enum Outcome {
    Attached(ServiceResponse<BoxBody>),
    Detached(HttpResponse),
}

/// Health and metrics scrapes run every few seconds; they log at debug only.
fn is_probe(route: &str) -> bool {
    matches!(route, "/health" | "/ready" | "/metrics")
}

/// The client's X-Request-Id, if it is short and made of safe characters (it ends up in logs).
fn client_request_id(req: &ServiceRequest) -> Option<String> {
    let value = req.headers().get(REQUEST_ID_HEADER)?.to_str().ok()?;
    let ok = !value.is_empty()
        && value.len() <= MAX_REQUEST_ID_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    ok.then(|| value.to_owned())
}

/// The Content-Length the client declared, when it declared a valid one.
fn declared_length(req: &ServiceRequest) -> Option<usize> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Any error response not already problem+json (the router's 404, a resource's 405, actix's
/// own errors) is rewritten as a problem with the status's generic code, keeping headers such
/// as `Allow` and `Retry-After`.
fn describe_bare_error(res: HttpResponse) -> HttpResponse {
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(PROBLEM_JSON));
    if is_problem {
        return res;
    }
    let mut new = problem_response(
        status,
        code_for_status(status),
        detail_for_status(status),
        None,
    );
    for (name, value) in res.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            new.headers_mut().insert(name.clone(), value.clone());
        }
    }
    new
}

/// A panic payload's message, for the log line.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic payload")
}
