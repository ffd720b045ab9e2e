//! The key's row in `platform_idempotency_keys`: claiming it (or taking it over), reading
//! what it holds, storing answers, releasing it, and purging expired rows.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use chrono::{DateTime, Utc};
use diesel::OptionalExtension;
use diesel::sql_types::{Array, BigInt, Bytea, Double, Nullable, SmallInt, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::{Claim, IdempotencyContext, REPLAYED_HEADER};
use crate::platform::db::{Db, DbError};
use crate::platform::error::ApiError;
use crate::platform::workers::Shutdown;

/// Claim attempts when the row changes under us (deleted or taken over between statements);
/// past them the key is reported as in use.
const CLAIM_ATTEMPTS: usize = 3;
/// How often the purge worker runs, and how many expired keys one statement deletes.
const PURGE_INTERVAL: Duration = Duration::from_secs(60);
const PURGE_BATCH: i64 = 1000;

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
pub(super) async fn store_answers(
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

/// What a claim attempt found.
pub(super) enum Claimed {
    /// The key is this request's: run it.
    Run(Claim),
    /// The key holds a finished request with the same fingerprint.
    Replay(StoredResponse),
}

pub(super) struct StoredResponse {
    status: i16,
    body: Vec<u8>,
    content_type: Option<String>,
}

impl StoredResponse {
    pub(super) fn replay(self) -> HttpResponse {
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
    pub(super) async fn answered_elsewhere(
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
    pub(super) async fn claim(
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

/// The fallback: stores a response after its handler returned, on a connection of its own.
pub(super) async fn store_after(
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
pub(super) async fn release(db: &Db, claim: &Claim) -> Result<(), DbError> {
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
