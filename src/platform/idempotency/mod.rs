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

mod middleware;
mod store;

use std::future::{Ready, ready};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::dev::{Extensions, Payload};
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::platform::config::IdempotencySettings;
use crate::platform::db::{Db, DbError, Tx};
use crate::platform::error::ApiError;
use store::store_answers;

pub use middleware::idempotency;
pub use store::{purge_expired, run_purge};

/// The request header naming the key.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// The response header marking a replayed response.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// Longest key accepted (API.md).
pub const MAX_KEY_LEN: usize = 255;
/// The content type [`Claim::complete_in`] stores: handlers complete with JSON bodies.
const JSON: &str = "application/json";

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
