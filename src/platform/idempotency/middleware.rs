//! The middleware itself: reading the key and the body, claiming (or replaying), running the
//! handler, storing or releasing afterwards, and the guard that releases a claim on any exit.

use actix_web::body::{BoxBody, MessageBody, to_bytes};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode, Uri};
use actix_web::middleware::Next;
use actix_web::web::{self, Bytes, BytesMut};
use actix_web::{HttpMessage, ResponseError};
use chrono::Utc;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use super::store::{Claimed, release, store_after};
use super::{Claim, IDEMPOTENCY_KEY_HEADER, IdempotencyContext, MAX_KEY_LEN};
use crate::platform::db::Db;
use crate::platform::error::{ApiError, FieldError};
use crate::platform::http::RequestContext;

/// The middleware function; install with `from_fn(idempotency)` so that it runs after
/// `auth::authenticate` (wrap it before, i.e. inside, the authentication middleware).
pub async fn idempotency(
    ctx: web::Data<IdempotencyContext>,
    limits: web::Data<RequestContext>,
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let header = (req.method() == Method::POST)
        .then(|| req.headers().get(IDEMPOTENCY_KEY_HEADER).cloned())
        .flatten();
    let scope = (ctx.scope_of)(&req.extensions());
    let (Some(header), Some(scope)) = (header, scope) else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    };
    let key = match parse_key(&header) {
        Ok(key) => key,
        Err(e) => return Ok(req.into_response(e.error_response())),
    };
    let pattern = req.match_pattern().unwrap_or_default();
    let limit = limits.body_limit_for(&pattern);
    let body = match read_body(&mut req, limit).await {
        Ok(body) => body,
        Err(e) => return Ok(req.into_response(e.error_response())),
    };
    let fingerprint = fingerprint(req.method(), req.uri(), &body);
    req.set_payload(Payload::from(body));

    let in_transaction = ctx.in_transaction.contains(&pattern);
    let claimed = if in_transaction {
        // The answer's INSERT in the handler's transaction claims the key; nothing before.
        let token = chrono::SubsecRound::trunc_subsecs(Utc::now(), 6);
        Ok(Claimed::Run(Claim::new(
            scope,
            key,
            &fingerprint,
            ctx.ttl,
            token,
        )))
    } else {
        ctx.claim(scope, key, &fingerprint).await
    };
    let claim = match claimed {
        Ok(Claimed::Run(claim)) => claim,
        Ok(Claimed::Replay(stored)) => return Ok(req.into_response(stored.replay())),
        Err(e) => return Ok(req.into_response(e.error_response())),
    };
    req.extensions_mut().insert(claim.clone());
    let mut guard = Release {
        db: ctx.db.clone(),
        claim: Some(claim.clone()),
    };

    let res = match next.call(req).await {
        Ok(res) => res,
        Err(err) => {
            guard.now().await;
            return Err(err);
        }
    };
    let status = res.status();
    let completed = claim.is_completed();
    if completed && status.is_success() {
        guard.disarm();
        return Ok(res.map_into_boxed_body());
    }
    if in_transaction && !completed {
        // Refused, or lost the key to another request: what is stored under the key (or
        // being made) answers instead, as if this request had found it before running.
        match ctx
            .answered_elsewhere(claim.0.scope, &claim.0.key, &fingerprint)
            .await
        {
            Ok(Some(answer)) => {
                guard.disarm();
                let (http_req, _) = res.into_parts();
                return Ok(ServiceResponse::new(http_req, answer));
            }
            Ok(None) => {}
            Err(e) => {
                guard.disarm();
                let (http_req, _) = res.into_parts();
                return Ok(ServiceResponse::new(http_req, e.error_response()));
            }
        }
    }
    if !completed && (status.is_success() || status == StatusCode::UNPROCESSABLE_ENTITY) {
        let (http_req, res) = res.into_parts();
        let (res, body) = res.into_parts();
        let bytes = match to_bytes(body).await {
            Ok(bytes) => bytes,
            Err(e) => {
                let e: Box<dyn std::error::Error> = e.into();
                guard.now().await;
                let err = ApiError::internal(anyhow::anyhow!("reading the response body: {e}"));
                return Ok(ServiceResponse::new(http_req, err.error_response()));
            }
        };
        let content_type = res
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        // Not atomic with the handler's writes (see the module docs). On failure the key stays
        // claimed until the lock timeout rather than being released at once: a retry then
        // gets 409 for a while instead of running the request again straight away.
        if let Err(e) = store_after(&ctx.db, &claim, status, &bytes, content_type).await {
            tracing::error!(error.cause = %e, "storing an idempotent response failed");
        }
        guard.disarm();
        return Ok(ServiceResponse::new(http_req, res.set_body(bytes)).map_into_boxed_body());
    }
    // A failure the client may retry, or a completion whose transaction rolled back.
    guard.now().await;
    Ok(res.map_into_boxed_body())
}

/// 1 to 255 printable ASCII characters (space included, control characters not).
fn parse_key(value: &HeaderValue) -> Result<String, ApiError> {
    let bytes = value.as_bytes();
    if bytes.is_empty()
        || bytes.len() > MAX_KEY_LEN
        || !bytes.iter().all(|b| (0x20..0x7f).contains(b))
    {
        return Err(FieldError::new(
            "Idempotency-Key",
            format!("must be 1 to {MAX_KEY_LEN} printable ASCII characters"),
        )
        .into());
    }
    // Only printable ASCII is left, which is valid UTF-8.
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

/// Reads the whole body as actix hands it to the app, within the route's body limit.
async fn read_body(req: &mut ServiceRequest, limit: usize) -> Result<Bytes, ApiError> {
    let mut payload = req.take_payload();
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("The request body could not be read: {e}"),
            )
        })?;
        if body.len().saturating_add(chunk.len()) > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("The request body is larger than the limit of {limit} bytes."),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// SHA-256 over the method, the path with its query and the raw body, each length-prefixed
/// so that no two different requests can run together into the same input.
fn fingerprint(method: &Method, uri: &Uri, body: &[u8]) -> Vec<u8> {
    let target = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let mut hash = Sha256::new();
    for part in [method.as_str().as_bytes(), target.as_bytes(), body] {
        hash.update(u64::try_from(part.len()).unwrap_or(u64::MAX).to_be_bytes());
        hash.update(part);
    }
    hash.finalize().to_vec()
}

/// Releases the claim unless disarmed, also when the request's future is dropped (a panic, a
/// client that hung up): a request that never answered must not hold its key until the lock
/// timeout.
struct Release {
    db: Db,
    claim: Option<Claim>,
}

impl Release {
    fn disarm(&mut self) {
        self.claim = None;
    }

    async fn now(&mut self) {
        if let Some(claim) = self.claim.take()
            && let Err(e) = release(&self.db, &claim).await
        {
            tracing::error!(error.cause = %e, "releasing an idempotency key failed");
        }
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        let Some(claim) = self.claim.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let db = self.db.clone();
        runtime.spawn(async move {
            if let Err(e) = release(&db, &claim).await {
                tracing::error!(error.cause = %e, "releasing an idempotency key failed");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_to_255_printable_ascii_characters() {
        for ok in ["a", "order-42 retry", &"k".repeat(255), "~!@#$%^&*()"] {
            assert!(
                parse_key(&HeaderValue::from_str(ok).unwrap()).is_ok(),
                "{ok}"
            );
        }
        for bad in [
            HeaderValue::from_static(""),
            HeaderValue::from_str(&"k".repeat(256)).unwrap(),
            HeaderValue::from_bytes(b"tab\there").unwrap(),
            HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        ] {
            let err = parse_key(&bad).unwrap_err();
            assert_eq!(err.code(), "validation_failed");
        }
    }

    #[test]
    fn the_fingerprint_covers_method_path_query_and_body() {
        let uri = |s: &str| s.parse::<Uri>().unwrap();
        let base = fingerprint(&Method::POST, &uri("/v1/x?a=1"), b"{}");
        assert_eq!(base.len(), 32);
        assert_eq!(base, fingerprint(&Method::POST, &uri("/v1/x?a=1"), b"{}"));
        assert_ne!(base, fingerprint(&Method::PUT, &uri("/v1/x?a=1"), b"{}"));
        assert_ne!(base, fingerprint(&Method::POST, &uri("/v1/x?a=2"), b"{}"));
        assert_ne!(base, fingerprint(&Method::POST, &uri("/v1/y?a=1"), b"{}"));
        assert_ne!(base, fingerprint(&Method::POST, &uri("/v1/x?a=1"), b"{ }"));
        // Length prefixes: moving bytes between path and body changes the fingerprint.
        assert_ne!(
            fingerprint(&Method::POST, &uri("/v1/ab"), b"c"),
            fingerprint(&Method::POST, &uri("/v1/a"), b"bc")
        );
    }
}
