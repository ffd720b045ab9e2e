//! Request idempotency (API.md "Idempotency"), once for every POST.
//!
//! A POST that carries `Idempotency-Key` from an authenticated caller claims the key in
//! `platform_idempotency_keys` (one row per scope and key; the scope is the caller's partner,
//! or the acting user or API key for platform admins) before its handler runs:
//!
//! - a fresh key (or one whose row expired) is claimed with ONE autocommit statement and the
//!   request runs;
//! - a key whose row holds a finished request with the same fingerprint (SHA-256 of method,
//!   path with query, and raw body) replays that response: same status, body bytes and
//!   content type, plus `Idempotent-Replayed: true`;
//! - a different fingerprint answers 422 `idempotency_key_reused`;
//! - a request still running answers 409 `idempotency_key_in_use`, unless it has held the key
//!   longer than `idempotency.lock_timeout_secs` (it is presumed dead), in which case this
//!   request takes the key over and runs.
//!
//! How the response gets stored decides what a retry can observe:
//!
//! - **In the handler's transaction (preferred).** The handler takes the [`Idempotency`]
//!   extractor and calls [`Claim::complete_in`] inside the transaction of its writes, with the
//!   exact bytes it returns; the stored response then commits, or rolls back, with the
//!   effects. `POST /v1/ledger/transfers` does this through a ledger side write.
//! - **After the fact (fallback).** For handlers that do not, the middleware buffers a 2xx or
//!   422 response and stores it after the handler returned. This is NOT atomic: if the process
//!   dies between the handler's commit and this write, the key stays "running" until the lock
//!   timeout, and a retry after that runs the request again.
//!
//! **Claimed in the handler's transaction.** Routes whose every effect is one transaction
//! (the payment routes, see [`IdempotencyContext::claiming_in_transaction`]) make no claim
//! before running: the INSERT of their answer in that transaction is the claim (one
//! set-based statement per ledger batch), so a keyed payment costs no write or commit of its
//! own. A retry, or a request racing with the same key, runs up to that INSERT, finds the
//! key taken and commits nothing; the middleware then answers with what is stored under the
//! key (a replay, 422 for another body) or 409 while the other request is still running. A
//! refusal (e.g. 422 insufficient funds) is stored after the fact, like any other.
//!
//! Every other outcome (400, 401/403/404, 409, 5xx, an error, a panic, a dropped connection)
//! releases the key, so the client may retry with it. A release only ever deletes a row that is
//! still running under this request's claim, so a response committed by the handler's
//! transaction is never lost.

use std::future::{Ready, ready};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody, to_bytes};
use actix_web::dev::{Extensions, Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode, Uri};
use actix_web::middleware::Next;
use actix_web::web::{self, Bytes, BytesMut};
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use chrono::{DateTime, Utc};
use diesel::OptionalExtension;
use diesel::sql_types::{Array, BigInt, Bytea, Double, Nullable, SmallInt, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::platform::config::IdempotencySettings;
use crate::platform::db::{Db, DbError, Tx};
use crate::platform::error::ApiError;
use crate::platform::http::RequestContext;
use crate::platform::workers::Shutdown;

/// The request header naming the key.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// The response header marking a replayed response.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// Longest key accepted (API.md).
pub const MAX_KEY_LEN: usize = 255;
/// The content type [`Claim::complete_in`] stores: handlers complete with JSON bodies.
const JSON: &str = "application/json";
/// Claim attempts when the row changes under us (deleted or taken over between statements);
/// past them the key is reported as in use.
const CLAIM_ATTEMPTS: usize = 3;
/// How often the purge worker runs, and how many expired keys one statement deletes.
const PURGE_INTERVAL: Duration = Duration::from_secs(60);
const PURGE_BATCH: i64 = 1000;

/// Finds the scope of an authenticated request in its extensions (its partner, or the acting
/// user or key of a platform admin); `None` for anonymous requests, which are left alone.
///
/// A function supplied by the application, because `platform` knows no domain module: the
/// principal type belongs to `auth`.
pub type ScopeOf = fn(&Extensions) -> Option<Uuid>;

/// What the middleware needs from the application.
pub struct IdempotencyContext {
    db: Db,
    ttl: Duration,
    lock_timeout: Duration,
    scope_of: ScopeOf,
    /// Route patterns whose key is claimed in the handler's own transaction (see
    /// [`IdempotencyContext::claiming_in_transaction`]).
    in_transaction: Vec<String>,
}

impl IdempotencyContext {
    pub fn new(db: Db, settings: &IdempotencySettings, scope_of: ScopeOf) -> Self {
        Self {
            db,
            ttl: settings.ttl,
            lock_timeout: settings.lock_timeout,
            scope_of,
            in_transaction: Vec::new(),
        }
    }

    /// Routes (patterns, e.g. `/v1/payments`) whose handler stores its answer with
    /// [`Claim::complete_in`] / [`Claim::complete_all_in`] in the one transaction that holds
    /// ALL of its effects (nothing happens outside it, no mail, no call out). Their keys are
    /// not claimed by a statement of their own before the handler runs: the answer's INSERT in
    /// that transaction is the claim, so a request costs no extra write and commit. A key that
    /// already has a row (answered, running elsewhere, expired) still goes the usual way.
    /// Two requests racing with a fresh key both run up to that INSERT; the unique key lets
    /// one commit and the other's transaction refuses (409 `idempotency_key_in_use`), so the
    /// effects still happen once.
    #[must_use]
    pub fn claiming_in_transaction(mut self, routes: &[&str]) -> Self {
        self.in_transaction = routes.iter().map(|r| (*r).to_owned()).collect();
        self
    }
}

/// A request's hold on its key, in the request extensions while its handler runs. Cheap to
/// clone; every clone is the same claim.
#[derive(Clone)]
pub struct Claim(Arc<ClaimInner>);

struct ClaimInner {
    scope: Uuid,
    key: String,
    /// What the key's row stores, should this request be the one to insert it.
    fingerprint: Vec<u8>,
    ttl_secs: f64,
    /// `locked_at` of the row as this request claimed it: the ownership token. A takeover
    /// changes it, so a presumed-dead first request can no longer complete or release.
    token: DateTime<Utc>,
    /// Set once the response was stored inside the handler's transaction.
    completed: AtomicBool,
}

impl Claim {
    /// Stores the response (`status`, the exact `body` bytes the handler returns, content type
    /// `application/json`) inside the caller's transaction, so it commits with the request's
    /// writes or not at all, and marks the claim completed for the middleware.
    ///
    /// Safe to call again (a retried transaction): the UPDATE is idempotent. Fails, so that the
    /// caller's transaction rolls back, when another request has taken the key over after the
    /// lock timeout: only one of the two may commit its effects under the key.
    pub async fn complete_in(
        &self,
        tx: &mut Tx<'_>,
        status: StatusCode,
        body: &[u8],
    ) -> Result<(), DbError> {
        let tx: &Tx<'_> = tx;
        Claim::complete_all_in(tx, &[(self, status, body)])
            .await?
            .into_iter()
            .next()
            .unwrap_or(Ok(()))
    }

    /// [`Claim::complete_in`] for several requests' claims in one statement (a batch of the
    /// ledger engine). One answer per claim, in order: `Err` for a claim another request took
    /// over after the lock timeout, whose request must then not commit.
    pub async fn complete_all_in(
        tx: &Tx<'_>,
        answers: &[(&Claim, StatusCode, &[u8])],
    ) -> Result<Vec<Result<(), DbError>>, DbError> {
        if answers.is_empty() {
            return Ok(Vec::new());
        }
        // One statement may store a key once: a later claim of a key already in this batch
        // lost the race (its request gets 409).
        let mut seen: std::collections::HashSet<(Uuid, &str)> = std::collections::HashSet::new();
        let fresh: Vec<bool> = answers
            .iter()
            .map(|(c, _, _)| seen.insert((c.0.scope, c.0.key.as_str())))
            .collect();
        let sent: Vec<(&Claim, StatusCode, &[u8], Option<&str>)> = answers
            .iter()
            .zip(&fresh)
            .filter(|(_, fresh)| **fresh)
            .map(|((claim, status, body), _)| (*claim, *status, *body, Some(JSON)))
            .collect();
        let stored = store_answers(tx.shared(), &sent).await?;
        Ok(answers
            .iter()
            .zip(fresh)
            .map(|((claim, _, _), fresh)| {
                if fresh
                    && stored
                        .iter()
                        .any(|(scope, key)| *scope == claim.0.scope && *key == claim.0.key)
                {
                    claim.0.completed.store(true, Ordering::SeqCst);
                    Ok(())
                } else {
                    Err(claim_lost())
                }
            })
            .collect())
    }

    /// Forgets an earlier completion whose transaction rolled back: a writer that runs again
    /// (a ledger batch re-run) calls this first, so a request the re-run refuses is not taken
    /// for completed, and its refusal is stored for replays like any other answer.
    pub fn reset_completion(&self) {
        self.0.completed.store(false, Ordering::SeqCst);
    }

    /// Whether [`Claim::complete_in`] ran (its transaction may still have rolled back).
    pub fn is_completed(&self) -> bool {
        AtomicBool::load(&self.0.completed, Ordering::SeqCst)
    }
}

crate::prepared_statement! {
    /// Stores answers under their keys (see [`store_answers`]).
    StoreAnswers -> (diesel::sql_types::Uuid, Text) {
        scopes: Vec<Uuid> => Array<diesel::sql_types::Uuid>,
        keys: Vec<String> => Array<Text>,
        fingerprints: Vec<Vec<u8>> => Array<Bytea>,
        statuses: Vec<i16> => Array<SmallInt>,
        bodies: Vec<Vec<u8>> => Array<Bytea>,
        content_types: Vec<Option<String>> => Array<Nullable<Text>>,
        tokens: Vec<DateTime<Utc>> => Array<Timestamptz>,
        ttl_secs: Vec<f64> => Array<Double>,
    }
    "INSERT INTO platform_idempotency_keys AS k (scope, key, fingerprint, status, response_body, \
         content_type, locked_at, created_at, expires_at) \
     SELECT u.scope, u.key, u.fingerprint, u.status, u.body, u.content_type, u.locked_at, now(), \
            now() + make_interval(secs => u.ttl) \
     FROM unnest(??::uuid[], ??::text[], ??::bytea[], ??::int2[], ??::bytea[], ??::text[], \
                 ??::timestamptz[], ??::float8[]) \
          AS u(scope, key, fingerprint, status, body, content_type, locked_at, ttl) \
     ON CONFLICT (scope, key) DO UPDATE \
         SET fingerprint = excluded.fingerprint, status = excluded.status, \
             response_body = excluded.response_body, content_type = excluded.content_type, \
             locked_at = excluded.locked_at, created_at = excluded.created_at, \
             expires_at = excluded.expires_at \
         WHERE (k.locked_at = excluded.locked_at AND k.status IS NULL) OR k.expires_at < now() \
     RETURNING k.scope, k.key"
}

/// Stores each answer under its claim's key, if the key is still this request's: a row still
/// running under the claim's token gets the answer; a claim made in the transaction (no row
/// yet, or only an expired one) writes the row. Returns the keys stored; a key missing there
/// is lost (taken over after the lock timeout, or claimed by a racing request). The claims
/// must be distinct.
async fn store_answers(
    conn: &AsyncPgConnection,
    answers: &[(&Claim, StatusCode, &[u8], Option<&str>)],
) -> Result<Vec<(Uuid, String)>, DbError> {
    if answers.is_empty() {
        return Ok(Vec::new());
    }
    let statement = StoreAnswers {
        scopes: answers.iter().map(|(c, ..)| c.0.scope).collect(),
        keys: answers.iter().map(|(c, ..)| c.0.key.clone()).collect(),
        fingerprints: answers
            .iter()
            .map(|(c, ..)| c.0.fingerprint.clone())
            .collect(),
        // HTTP statuses are 100..=999, which always fit.
        statuses: answers
            .iter()
            .map(|(_, s, ..)| i16::try_from(s.as_u16()).unwrap_or(i16::MAX))
            .collect(),
        bodies: answers.iter().map(|(_, _, b, _)| b.to_vec()).collect(),
        content_types: answers.iter().map(|(.., t)| t.map(str::to_owned)).collect(),
        tokens: answers.iter().map(|(c, ..)| c.0.token).collect(),
        ttl_secs: answers.iter().map(|(c, ..)| c.0.ttl_secs).collect(),
    };
    Ok(statement.load(&mut { conn }).await?)
}

fn claim_lost() -> DbError {
    DbError::Query(diesel::result::Error::QueryBuilderError(Box::new(
        ClaimLost,
    )))
}

/// Whether `e` says that the request's claim on its key was lost (taken over after the lock
/// timeout, or claimed by a racing request): the request must not commit, and answers 409
/// `idempotency_key_in_use`.
pub fn is_claim_lost(e: &DbError) -> bool {
    matches!(e, DbError::Query(diesel::result::Error::QueryBuilderError(inner)) if inner.is::<ClaimLost>())
}

/// Why [`Claim::complete_in`] refused: the claim is no longer this request's.
#[derive(Debug, thiserror::Error)]
#[error(
    "the idempotency key is no longer this request's (taken over after the lock timeout, or \
     claimed by a concurrent request)"
)]
struct ClaimLost;

/// The claim of this request, if it carries an `Idempotency-Key` (and is an authenticated
/// POST); handlers that write in a transaction complete it there.
pub struct Idempotency(pub Option<Claim>);

impl FromRequest for Idempotency {
    type Error = ApiError;
    type Future = Ready<Result<Idempotency, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(Idempotency(req.extensions().get::<Claim>().cloned())))
    }
}

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
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "validation_failed",
            format!("Idempotency-Key must be 1 to {MAX_KEY_LEN} printable ASCII characters."),
        )
        .with_extension("field", serde_json::Value::String("Idempotency-Key".into())));
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

/// What a claim attempt found.
enum Claimed {
    /// The key is this request's: run it.
    Run(Claim),
    /// The key holds a finished request with the same fingerprint.
    Replay(StoredResponse),
}

struct StoredResponse {
    status: i16,
    body: Vec<u8>,
    content_type: Option<String>,
}

impl StoredResponse {
    fn replay(self) -> HttpResponse {
        let status = u16::try_from(self.status)
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok());
        let Some(status) = status else {
            return ApiError::internal(anyhow::anyhow!(
                "stored idempotent response has status {}",
                self.status
            ))
            .error_response();
        };
        let mut res = HttpResponse::build(status);
        if let Some(value) = self
            .content_type
            .and_then(|c| HeaderValue::from_str(&c).ok())
        {
            res.insert_header((header::CONTENT_TYPE, value));
        }
        res.insert_header((
            HeaderName::from_static(REPLAYED_HEADER),
            HeaderValue::from_static("true"),
        ));
        res.body(self.body)
    }
}

#[derive(diesel::QueryableByName)]
struct Token {
    #[diesel(sql_type = Timestamptz)]
    locked_at: DateTime<Utc>,
}

#[derive(diesel::QueryableByName)]
struct Existing {
    #[diesel(sql_type = Bytea)]
    fingerprint: Vec<u8>,
    #[diesel(sql_type = Nullable<SmallInt>)]
    status: Option<i16>,
    #[diesel(sql_type = Nullable<Bytea>)]
    response_body: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Text>)]
    content_type: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    locked_at: DateTime<Utc>,
    /// Past `expires_at`: the row counts as absent.
    #[diesel(sql_type = diesel::sql_types::Bool)]
    expired: bool,
    /// Running and claimed longer ago than the lock timeout: presumed dead.
    #[diesel(sql_type = diesel::sql_types::Bool)]
    stale: bool,
}

crate::prepared_statement! {
    /// Claims a key (see [`IdempotencyContext::claim`]); prepared once per connection.
    ///
    /// The claim commits without waiting for its WAL to reach the disk (`synchronous_commit`
    /// off for this one transaction): so a request costs one flush, its posting's, not two.
    /// That is safe because the WAL is one sequence: the request's own transaction, which
    /// stores its answer under the key and commits durably, flushes the claim with it. A
    /// crash can only lose a claim whose request never committed anything; a retry then
    /// claims the key afresh and runs, exactly as it would after that crash anyway.
    ClaimKey -> Timestamptz {
        scope: Uuid => diesel::sql_types::Uuid,
        key: String => Text,
        fingerprint: Vec<u8> => Bytea,
        ttl_secs: f64 => Double,
    }
    "INSERT INTO platform_idempotency_keys \
         (scope, key, fingerprint, locked_at, created_at, expires_at) \
     SELECT ??, ??, ??, now(), now(), now() + make_interval(secs => ??) \
     FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit \
     ON CONFLICT (scope, key) DO NOTHING \
     RETURNING locked_at"
}

impl IdempotencyContext {
    /// For a route that claims in its own transaction and did not store an answer (it refused,
    /// or lost its key to another request): the answer another request stored, or is working
    /// on, under the key, which this request must give instead of its own (it committed
    /// nothing): a replay, 422 `idempotency_key_reused` for another fingerprint, or 409
    /// `idempotency_key_in_use`. `None`: no live row, this request's answer stands.
    async fn answered_elsewhere(
        &self,
        scope: Uuid,
        key: &str,
        fingerprint: &[u8],
    ) -> Result<Option<HttpResponse>, ApiError> {
        let mut conn = self.db.conn().await?;
        let existing = find_existing(&mut conn, scope, key, self.lock_timeout).await?;
        let Some(existing) = existing.filter(|e| !e.expired) else {
            return Ok(None);
        };
        Ok(Some(match existing.answer_for(fingerprint) {
            Ok(stored) => stored.replay(),
            Err(e) => e.error_response(),
        }))
    }

    /// Claims `key` for a request with `fingerprint`, or says why it may not run.
    async fn claim(
        &self,
        scope: Uuid,
        key: String,
        fingerprint: &[u8],
    ) -> Result<Claimed, ApiError> {
        let mut conn = self.db.conn().await?;
        let ttl_secs = self.ttl.as_secs_f64();
        let lock_secs = self.lock_timeout.as_secs_f64();
        for _ in 0..CLAIM_ATTEMPTS {
            let inserted: Option<DateTime<Utc>> = ClaimKey {
                scope,
                key: key.clone(),
                fingerprint: fingerprint.to_vec(),
                ttl_secs,
            }
            .get_result(&mut conn)
            .await
            .optional()
            .map_err(DbError::from)?;
            if let Some(locked_at) = inserted {
                return Ok(Claimed::Run(Claim::new(
                    scope,
                    key,
                    fingerprint,
                    self.ttl,
                    locked_at,
                )));
            }
            let existing = find_existing(&mut conn, scope, &key, self.lock_timeout).await?;
            // Released between the two statements: try to insert again.
            let Some(existing) = existing else { continue };
            if existing.expired || existing.stale {
                let taken: Option<Token> = diesel::sql_query(
                    "UPDATE platform_idempotency_keys \
                     SET fingerprint = $3, status = NULL, response_body = NULL, \
                         content_type = NULL, locked_at = now(), created_at = now(), \
                         expires_at = now() + make_interval(secs => $5) \
                     WHERE scope = $1 AND key = $2 AND locked_at = $4 \
                       AND (expires_at < now() \
                            OR (status IS NULL AND locked_at < now() - make_interval(secs => $6))) \
                     RETURNING locked_at",
                )
                .bind::<diesel::sql_types::Uuid, _>(scope)
                .bind::<Text, _>(&key)
                .bind::<Bytea, _>(fingerprint)
                .bind::<Timestamptz, _>(existing.locked_at)
                .bind::<Double, _>(ttl_secs)
                .bind::<Double, _>(lock_secs)
                .get_result(&mut conn)
                .await
                .optional()
                .map_err(DbError::from)?;
                match taken {
                    Some(token) => {
                        tracing::info!(
                            "idempotency key taken over from a request that never finished"
                        );
                        return Ok(Claimed::Run(Claim::new(
                            scope,
                            key,
                            fingerprint,
                            self.ttl,
                            token.locked_at,
                        )));
                    }
                    // Someone else took it over or finished it first: look again.
                    None => continue,
                }
            }
            return existing.answer_for(fingerprint).map(Claimed::Replay);
        }
        Err(in_use())
    }
}

/// The key's row, if any; `stale`: running for longer than `lock_timeout`.
async fn find_existing(
    conn: &mut AsyncPgConnection,
    scope: Uuid,
    key: &str,
    lock_timeout: Duration,
) -> Result<Option<Existing>, DbError> {
    Ok(diesel::sql_query(
        "SELECT fingerprint, status, response_body, content_type, locked_at, \
                expires_at < now() AS expired, \
                status IS NULL AND locked_at < now() - make_interval(secs => $3) AS stale \
         FROM platform_idempotency_keys WHERE scope = $1 AND key = $2",
    )
    .bind::<diesel::sql_types::Uuid, _>(scope)
    .bind::<Text, _>(key)
    .bind::<Double, _>(lock_timeout.as_secs_f64())
    .get_result(conn)
    .await
    .optional()?)
}

impl Existing {
    /// What a request with `fingerprint` gets from this live row: its stored answer to
    /// replay, 422 when the key was used for another request, 409 while that one still runs.
    fn answer_for(self, fingerprint: &[u8]) -> Result<StoredResponse, ApiError> {
        if self.fingerprint.as_slice() != fingerprint {
            return Err(reused());
        }
        match (self.status, self.response_body) {
            (Some(status), Some(body)) => Ok(StoredResponse {
                status,
                body,
                content_type: self.content_type,
            }),
            _ => Err(in_use()),
        }
    }
}

fn reused() -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
        "This Idempotency-Key was used with a different request (method, path or body); use a \
         new key for a new request.",
    )
}

fn in_use() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "idempotency_key_in_use",
        "A request with this Idempotency-Key is still being processed; retry shortly.",
    )
}

impl Claim {
    fn new(
        scope: Uuid,
        key: String,
        fingerprint: &[u8],
        ttl: Duration,
        token: DateTime<Utc>,
    ) -> Claim {
        Claim(Arc::new(ClaimInner {
            scope,
            key,
            fingerprint: fingerprint.to_vec(),
            ttl_secs: ttl.as_secs_f64(),
            token,
            completed: AtomicBool::new(false),
        }))
    }
}

/// The fallback: stores a response after its handler returned, on a connection of its own.
async fn store_after(
    db: &Db,
    claim: &Claim,
    status: StatusCode,
    body: &[u8],
    content_type: Option<&str>,
) -> Result<(), DbError> {
    let conn = db.conn().await?;
    store_answers(&conn, &[(claim, status, body, content_type)]).await?;
    Ok(())
}

/// Deletes the claim's row if it is still running under this claim, so the key may be used
/// again; a row with a committed response is never deleted.
async fn release(db: &Db, claim: &Claim) -> Result<(), DbError> {
    let mut conn = db.conn().await?;
    diesel::sql_query(
        "DELETE FROM platform_idempotency_keys \
         WHERE scope = $1 AND key = $2 AND locked_at = $3 AND status IS NULL",
    )
    .bind::<diesel::sql_types::Uuid, _>(claim.0.scope)
    .bind::<Text, _>(&claim.0.key)
    .bind::<Timestamptz, _>(claim.0.token)
    .execute(&mut conn)
    .await?;
    Ok(())
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

/// Deletes up to `limit` expired keys; returns how many. Several replicas may run it at once.
pub async fn purge_expired(db: &Db, limit: i64) -> Result<u64, DbError> {
    let mut conn = db.conn().await?;
    let deleted = diesel::sql_query(
        "DELETE FROM platform_idempotency_keys \
         WHERE (scope, key) IN ( \
             SELECT scope, key FROM platform_idempotency_keys \
             WHERE expires_at < now() \
             LIMIT $1 FOR UPDATE SKIP LOCKED)",
    )
    .bind::<BigInt, _>(limit)
    .execute(&mut conn)
    .await?;
    Ok(u64::try_from(deleted).unwrap_or(u64::MAX))
}

/// The purge worker: every minute, deletes expired keys (in batches until none are left).
pub async fn run_purge(db: Db, mut shutdown: Shutdown) {
    loop {
        tokio::select! {
            () = shutdown.requested() => return,
            () = tokio::time::sleep(PURGE_INTERVAL) => {}
        }
        loop {
            match purge_expired(&db, PURGE_BATCH).await {
                Ok(deleted) => {
                    if deleted > 0 {
                        tracing::info!(
                            idempotency.purged = deleted,
                            "purged expired idempotency keys"
                        );
                    }
                    let full = i64::try_from(deleted).is_ok_and(|d| d >= PURGE_BATCH);
                    if !full || shutdown.is_requested() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::error!(error.cause = %e, "purging expired idempotency keys failed");
                    break;
                }
            }
        }
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
