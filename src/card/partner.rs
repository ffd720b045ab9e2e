//! A partner's real-time decision endpoint for card authorizations (API.md "Cards", "Partner
//! real-time decisions"): where it is (`PUT`/`GET`/`DELETE /v1/cards/decision-endpoint`), and
//! [`DecisionEndpoints::ask`], which the authorization path calls for an authorization that
//! passed Flowlet's own rules, turning the partner's answer, its silence or its failure into a
//! [`PartnerDecision`] (rule 20 of the decision ladder, `model::decision`).
//!
//! # The call
//!
//! `POST <url>` with `{id: "evt_...", type: "card.authorization.request", created, data}`,
//! signed as Standard Webhooks (`webhook-id` = `id`, `webhook-timestamp`, `webhook-signature`
//! under the endpoint's own `whsec_` secret), through a client built like the webhooks' one:
//! no redirects, no proxies, the SSRF-guarded resolver, and the URL checked with the webhook
//! rules (`webhooks.require_https`, `webhooks.allow_private_targets`) when it is set and again
//! when it is loaded. The partner answers a 2xx with `{"approved": bool, "reason"?: string}`
//! (other fields ignored) within `cards.decision_timeout_ms`, which bounds the whole exchange,
//! connect to last body byte. No answer in time is [`PartnerDecision::TimedOut`]; anything
//! else (refused connection, a non-2xx or redirect, a body that is not that JSON or is over
//! [`MAX_ANSWER_BYTES`]) is [`PartnerDecision::Failed`]; both carry the partner's fallback.
//! `ask` never fails and never panics; it logs ids, status and latency only (never the secret,
//! the URL's path or the request body).
//!
//! # The secret
//!
//! A fresh `whsec_` secret on every `PUT`, answered once (`GET` never shows it), sealed with
//! the card vault bound to the partner (`card.decision_secret:<partner uuid>`), the way card
//! numbers are; `flowlet admin cards reencrypt` re-seals it after a key rotation.
//!
//! # The cache, and its staleness
//!
//! The endpoint is looked up on every authorization's hot path, so each partner's endpoint (or
//! its absence) is kept in memory for [`CACHE_TTL`]. A `PUT` or `DELETE` drops this replica's
//! entry at once; other replicas keep theirs until it expires, so for up to [`CACHE_TTL`]
//! after a change another replica may still ask the old URL with the old secret (a partner
//! rotating its secret should accept both for that long), keep asking a deleted endpoint, or
//! not yet ask a new one.
//!
//! Validation, in order: `url` (no whitespace or control characters, then the webhook URL
//! rules), then `fallback` (`approve` or `decline`).

#[path = "store/decision_endpoints.rs"]
mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use actix_web::{HttpResponse, web};
use chrono::{DateTime, SubsecRound, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::CardError;
use super::model::decision::{Fallback, PartnerDecision};
use super::service::CardService;
use crate::kernel::{Access, Area, PartnerId, Principal};
use crate::notify::{
    EventId, HEADER_WEBHOOK_ID, HEADER_WEBHOOK_SIGNATURE, HEADER_WEBHOOK_TIMESTAMP, SigningKey,
    check_url, generate_secret, headers, http_client,
};
use crate::platform::db::Db;
use crate::platform::error::{ApiError, ProblemBody};
use crate::platform::http::Json;
use crate::platform::vault::Vault;
use store::DecisionEndpointRow;

/// The event type of a decision request.
pub const REQUEST_TYPE: &str = "card.authorization.request";

/// The largest answer read: `{"approved": false, "reason": "..."}` needs far less, and a
/// partner's endpoint must not make us buffer an arbitrary body on the authorization path.
pub const MAX_ANSWER_BYTES: usize = 16 * 1024;

/// How long a replica trusts its copy of a partner's endpoint (see the module doc).
pub const CACHE_TTL: Duration = Duration::from_secs(5);

/// Partners whose endpoint one replica keeps at most; past it, expired entries are dropped,
/// and if none had expired, all of them (the cache is an optimisation, never the truth).
const CACHE_MAX_ENTRIES: usize = 10_000;

/// The longest partner reason kept (the decision trail bounds it further).
const MAX_REASON_CHARS: usize = 500;

/// Re-sealed endpoints per page of `reencrypt`.
const RESEAL_PAGE: i64 = 500;

/// A partner's decision endpoint, as `GET` shows it: never its secret.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DecisionEndpoint {
    /// Where authorizations are POSTed.
    pub url: String,
    /// What applies when the endpoint does not answer in time or fails.
    pub fallback: Fallback,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
}

/// The endpoint with its signing secret: the answer of `PUT`, and nothing else.
#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionEndpointWithSecret {
    #[serde(flatten)]
    pub endpoint: DecisionEndpoint,
    /// `whsec_...`: verify each request with it (Standard Webhooks). Shown once; a new `PUT`
    /// replaces it.
    #[serde(serialize_with = "expose")]
    #[schema(value_type = String)]
    pub secret: SecretString,
}

fn expose<S: serde::Serializer>(secret: &SecretString, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(secret.expose_secret())
}

/// The partners' decision endpoints, and the call to them. Cheap to clone.
#[derive(Clone)]
pub struct DecisionEndpoints {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    vault: Vault,
    http: reqwest::Client,
    timeout: Duration,
    require_https: bool,
    allow_private: bool,
    cache: Mutex<Cache>,
}

/// Each partner's endpoint as last loaded. `generation` changes with every local `set` or
/// `delete`, so a lookup that read the database before the change cannot put its old answer
/// back after the change dropped the entry.
#[derive(Default)]
struct Cache {
    entries: HashMap<Uuid, Entry>,
    generation: u64,
}

struct Entry {
    loaded: Instant,
    endpoint: Option<Arc<Live>>,
}

/// A stored endpoint, ready to call.
struct Live {
    fallback: Fallback,
    /// `None`: stored, but not callable (its secret no longer opens, its URL no longer passes
    /// the rules): every ask fails, and the fallback applies.
    target: Option<Target>,
}

struct Target {
    url: url::Url,
    key: SigningKey,
}

/// How an exchange with the partner ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Approved,
    Declined(Option<String>),
    TimedOut,
    Failed(&'static str),
}

/// The answer a partner gives.
#[derive(Deserialize)]
struct Answer {
    approved: bool,
    #[serde(default)]
    reason: Option<String>,
}

impl DecisionEndpoints {
    /// Builds the lookups and the client: `timeout` bounds each call, connect to last byte;
    /// `require_https` and `allow_private` are the webhook rules (`webhooks.*`).
    pub fn new(
        db: Db,
        vault: Vault,
        timeout: Duration,
        require_https: bool,
        allow_private: bool,
    ) -> Result<Self, CardError> {
        let http = http_client(timeout, allow_private).map_err(|e| {
            CardError::Internal(anyhow::anyhow!("the decision endpoints' HTTP client: {e}"))
        })?;
        Ok(DecisionEndpoints {
            inner: Arc::new(Inner {
                db,
                vault,
                http,
                timeout,
                require_https,
                allow_private,
                cache: Mutex::new(Cache::default()),
            }),
        })
    }

    /// Sets the partner's endpoint (replacing any), with a new secret, answered here only.
    /// Nothing is stored when the URL is refused.
    pub async fn set(
        &self,
        partner: PartnerId,
        url: &str,
        fallback: Fallback,
    ) -> Result<DecisionEndpointWithSecret, CardError> {
        self.check(url)?;
        let secret = generate_secret()
            .map_err(|e| CardError::Internal(anyhow::anyhow!("a decision secret: {e}")))?;
        let sealed = self
            .inner
            .vault
            .seal(&secret_context(partner.uuid()), secret.expose_secret())?;
        let now = Utc::now().trunc_subsecs(6);
        let row = DecisionEndpointRow {
            partner_id: partner.uuid(),
            url: url.to_owned(),
            secret_enc: sealed,
            fallback: fallback_str(fallback).to_owned(),
            created_at: now,
            updated_at: now,
        };
        let stored = {
            let mut conn = self.inner.db.conn().await?;
            store::upsert(&mut conn, &row).await?
        };
        self.forget(partner);
        tracing::info!(partner.id = %partner, "card decision endpoint set");
        Ok(DecisionEndpointWithSecret {
            endpoint: view(&stored)?,
            secret,
        })
    }

    /// The partner's endpoint, without its secret.
    pub async fn get(&self, partner: PartnerId) -> Result<Option<DecisionEndpoint>, CardError> {
        let mut conn = self.inner.db.conn().await?;
        store::find(&mut conn, partner.uuid())
            .await?
            .as_ref()
            .map(view)
            .transpose()
    }

    /// Removes the partner's endpoint: its authorizations are no longer asked (on other
    /// replicas, within [`CACHE_TTL`]). Whether there was one.
    pub async fn delete(&self, partner: PartnerId) -> Result<bool, CardError> {
        let deleted = {
            let mut conn = self.inner.db.conn().await?;
            store::delete(&mut conn, partner.uuid()).await?
        };
        self.forget(partner);
        if deleted {
            tracing::info!(partner.id = %partner, "card decision endpoint deleted");
        }
        Ok(deleted)
    }

    /// Asks the partner's endpoint about an authorization that passed Flowlet's own rules
    /// (`request`, the authorization as the partner sees it: never a PAN). `NotAsked` when the
    /// partner has no endpoint. Never fails: a lookup that fails with nothing cached is
    /// `Failed(Decline)`, as the fallback is not known.
    pub async fn ask(&self, partner: PartnerId, request: &serde_json::Value) -> PartnerDecision {
        let endpoint = match self.endpoint(partner).await {
            Ok(Some(endpoint)) => endpoint,
            Ok(None) => return PartnerDecision::NotAsked,
            Err(()) => return PartnerDecision::Failed(Fallback::Decline),
        };
        let fallback = endpoint.fallback;
        let Some(target) = &endpoint.target else {
            return PartnerDecision::Failed(fallback);
        };
        let id = EventId::new().to_string();
        let created = Utc::now();
        let message = serde_json::json!({
            "id": id,
            "type": REQUEST_TYPE,
            "created": created,
            "data": request,
        });
        let Ok(body) = serde_json::to_vec(&message) else {
            tracing::warn!(partner.id = %partner, "a card decision request did not serialise");
            return PartnerDecision::Failed(fallback);
        };
        let started = Instant::now();
        let (outcome, status) = exchange(
            &self.inner.http,
            self.inner.timeout,
            target,
            &id,
            created.timestamp(),
            body,
        )
        .await;
        let latency_ms = started.elapsed().as_millis();
        match outcome {
            Outcome::Approved => {
                tracing::debug!(partner.id = %partner, event.id = %id, http.status = status, latency_ms, "partner approved the card authorization");
                PartnerDecision::Approved
            }
            Outcome::Declined(reason) => {
                tracing::debug!(partner.id = %partner, event.id = %id, http.status = status, latency_ms, "partner declined the card authorization");
                PartnerDecision::Declined { reason }
            }
            Outcome::TimedOut => {
                tracing::warn!(partner.id = %partner, event.id = %id, latency_ms, fallback = fallback_str(fallback), "partner decision endpoint did not answer in time");
                PartnerDecision::TimedOut(fallback)
            }
            Outcome::Failed(why) => {
                tracing::warn!(partner.id = %partner, event.id = %id, http.status = status, latency_ms, error = why, fallback = fallback_str(fallback), "partner decision endpoint failed");
                PartnerDecision::Failed(fallback)
            }
        }
    }

    /// Re-seals every endpoint secret sealed under a key other than the active one (after a
    /// key rotation); the count re-sealed.
    pub async fn reencrypt(&self) -> Result<usize, CardError> {
        let mut conn = self.inner.db.conn().await?;
        let mut after = None;
        let mut resealed = 0;
        loop {
            let page = store::after(&mut conn, after, RESEAL_PAGE).await?;
            let Some(last) = page.last() else {
                return Ok(resealed);
            };
            after = Some(last.partner_id);
            for row in page
                .iter()
                .filter(|r| self.inner.vault.is_stale(&r.secret_enc))
            {
                let context = secret_context(row.partner_id);
                let plain = self.inner.vault.open(&context, &row.secret_enc)?;
                let fresh = self.inner.vault.seal(&context, &plain)?;
                if store::reseal(&mut conn, row.partner_id, &row.secret_enc, &fresh).await? {
                    resealed += 1;
                }
            }
        }
    }

    /// Refuses a URL the webhook rules refuse, and any with whitespace or control characters
    /// (the URL parser would silently drop some of them, storing one URL and calling another).
    fn check(&self, url: &str) -> Result<url::Url, CardError> {
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(CardError::validation(
                "url",
                "must not contain whitespace or control characters",
            ));
        }
        check_url(url, self.inner.require_https, self.inner.allow_private)
            .map_err(|e| CardError::validation("url", e.to_string()))
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        // The cache holds no invariant a panicking holder could break halfway.
        self.inner
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops this replica's copy of the partner's endpoint (after a change).
    fn forget(&self, partner: PartnerId) {
        let mut cache = self.cache();
        cache.generation = cache.generation.wrapping_add(1);
        cache.entries.remove(&partner.uuid());
    }

    /// The partner's endpoint, from the cache while fresh, else loaded. On a failed load, an
    /// expired copy if there is one (better than no fallback), else `Err`.
    async fn endpoint(&self, partner: PartnerId) -> Result<Option<Arc<Live>>, ()> {
        let key = partner.uuid();
        let (generation, stale) = {
            let cache = self.cache();
            match cache.entries.get(&key) {
                Some(e) if e.loaded.elapsed() < CACHE_TTL => return Ok(e.endpoint.clone()),
                Some(e) => (cache.generation, Some(e.endpoint.clone())),
                None => (cache.generation, None),
            }
        };
        match self.load(partner).await {
            Ok(endpoint) => {
                let mut cache = self.cache();
                if cache.generation == generation {
                    if cache.entries.len() >= CACHE_MAX_ENTRIES {
                        cache.entries.retain(|_, e| e.loaded.elapsed() < CACHE_TTL);
                        if cache.entries.len() >= CACHE_MAX_ENTRIES {
                            cache.entries.clear();
                        }
                    }
                    cache.entries.insert(
                        key,
                        Entry {
                            loaded: Instant::now(),
                            endpoint: endpoint.clone(),
                        },
                    );
                }
                Ok(endpoint)
            }
            Err(e) => {
                tracing::warn!(partner.id = %partner, error = %e, stale = stale.is_some(), "card decision endpoint lookup failed");
                stale.ok_or(())
            }
        }
    }

    /// The partner's endpoint from the database, opened.
    async fn load(&self, partner: PartnerId) -> Result<Option<Arc<Live>>, CardError> {
        let row = {
            let mut conn = self.inner.db.conn().await?;
            store::find(&mut conn, partner.uuid()).await?
        };
        let Some(row) = row else {
            return Ok(None);
        };
        // The column's CHECK allows these two only; anything else fails closed.
        let fallback = parse_fallback(&row.fallback).unwrap_or(Fallback::Decline);
        let target = match self.target(&row) {
            Ok(target) => Some(target),
            Err(why) => {
                tracing::warn!(partner.id = %partner, error = why, "card decision endpoint is stored but cannot be called; its fallback applies");
                None
            }
        };
        Ok(Some(Arc::new(Live { fallback, target })))
    }

    fn target(&self, row: &DecisionEndpointRow) -> Result<Target, &'static str> {
        let url = check_url(&row.url, self.inner.require_https, self.inner.allow_private)
            .map_err(|_| "its URL no longer passes the webhook URL rules")?;
        let secret = self
            .inner
            .vault
            .open(&secret_context(row.partner_id), &row.secret_enc)
            .map_err(|_| "its secret does not open (a key removed before re-sealing?)")?;
        let key = SigningKey::parse(&SecretString::from(secret))
            .map_err(|_| "its secret is malformed")?;
        Ok(Target { url, key })
    }
}

/// One signed POST and its answer, within `timeout`; with the HTTP status when one came.
async fn exchange(
    http: &reqwest::Client,
    timeout: Duration,
    target: &Target,
    id: &str,
    timestamp: i64,
    body: Vec<u8>,
) -> (Outcome, Option<u16>) {
    let signed = headers(std::slice::from_ref(&target.key), id, timestamp, &body);
    let request = http
        .post(target.url.clone())
        .header(HEADER_WEBHOOK_ID, signed.id)
        .header(HEADER_WEBHOOK_TIMESTAMP, signed.timestamp)
        .header(HEADER_WEBHOOK_SIGNATURE, signed.signature)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(reqwest::header::ACCEPT, "application/json")
        .body(body);
    let mut status = None;
    let call = async {
        let response = request.send().await?;
        status = Some(response.status().as_u16());
        if !response.status().is_success() {
            return Ok(Outcome::Failed("the endpoint answered a non-2xx status"));
        }
        read_answer(response).await
    };
    // The client's own timeout is the same budget; this one also covers a stalled body.
    let outcome = match tokio::time::timeout(timeout, call).await {
        Err(_) => Outcome::TimedOut,
        Ok(Err(e)) if e.is_timeout() => Outcome::TimedOut,
        Ok(Err(e)) if e.is_connect() => Outcome::Failed("could not connect"),
        Ok(Err(_)) => Outcome::Failed("the request failed"),
        Ok(Ok(outcome)) => outcome,
    };
    (outcome, status)
}

/// Reads at most [`MAX_ANSWER_BYTES`] of a 2xx answer and parses it.
async fn read_answer(mut response: reqwest::Response) -> Result<Outcome, reqwest::Error> {
    if response
        .content_length()
        .is_some_and(|n| n > u64::try_from(MAX_ANSWER_BYTES).unwrap_or(u64::MAX))
    {
        return Ok(Outcome::Failed("the answer is too large"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len().saturating_add(chunk.len()) > MAX_ANSWER_BYTES {
            return Ok(Outcome::Failed("the answer is too large"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(parse_answer(&body))
}

fn parse_answer(body: &[u8]) -> Outcome {
    let Ok(answer) = serde_json::from_slice::<Answer>(body) else {
        return Outcome::Failed("the answer is not {\"approved\": bool, \"reason\"?: string}");
    };
    if answer.approved {
        return Outcome::Approved;
    }
    let reason = answer.reason.and_then(|r| {
        let r = r.trim();
        (!r.is_empty()).then(|| r.chars().take(MAX_REASON_CHARS).collect())
    });
    Outcome::Declined(reason)
}

/// The associated data a partner's sealed secret is bound to: one partner's sealed secret
/// never opens as another's.
fn secret_context(partner: Uuid) -> String {
    format!("card.decision_secret:{partner}")
}

fn fallback_str(fallback: Fallback) -> &'static str {
    match fallback {
        Fallback::Approve => "approve",
        Fallback::Decline => "decline",
    }
}

fn parse_fallback(raw: &str) -> Option<Fallback> {
    match raw {
        "approve" => Some(Fallback::Approve),
        "decline" => Some(Fallback::Decline),
        _ => None,
    }
}

fn view(row: &DecisionEndpointRow) -> Result<DecisionEndpoint, CardError> {
    let fallback = parse_fallback(&row.fallback).ok_or_else(|| {
        CardError::Internal(anyhow::anyhow!(
            "a stored decision fallback is neither approve nor decline"
        ))
    })?;
    Ok(DecisionEndpoint {
        url: row.url.clone(),
        fallback,
        created: row.created_at,
        updated: row.updated_at,
    })
}

// ----- routes ------------------------------------------------------------------------------

/// The decision endpoint's routes; registered before `/v1/cards/{id}`, which would otherwise
/// take `decision-endpoint` for a card id.
pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/cards/decision-endpoint")
            .route(web::put().to(put_decision_endpoint))
            .route(web::get().to(get_decision_endpoint))
            .route(web::delete().to(delete_decision_endpoint)),
    );
}

/// The body of `PUT /v1/cards/decision-endpoint`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionEndpointBody {
    /// Where authorizations are POSTed (https in production; at most 2048 characters).
    url: String,
    /// `approve` or `decline`: what applies when the endpoint does not answer in time or fails.
    fallback: String,
}

/// Set the partner's real-time decision endpoint (replacing any). Its new `secret` is in this
/// response only.
#[utoipa::path(put, path = "/v1/cards/decision-endpoint", tag = "cards", request_body = DecisionEndpointBody, security(("bearer" = [])),
    responses(
        (status = 200, description = "Set, with a new secret (shown once).", body = DecisionEndpointWithSecret),
        (status = 400, description = "`validation_failed` naming `url` or `fallback`; `unknown_field`.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Not `cards:write`.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub(super) async fn put_decision_endpoint(
    cards: web::Data<CardService>,
    principal: Principal,
    body: Json<DecisionEndpointBody>,
) -> Result<HttpResponse, ApiError> {
    let partner = principal.require_partner(Area::Cards, Access::Write)?;
    let body = body.into_inner();
    cards.decisions().check(&body.url)?;
    let fallback = parse_fallback(&body.fallback)
        .ok_or_else(|| CardError::validation("fallback", "must be `approve` or `decline`"))?;
    let set = cards.decisions().set(partner, &body.url, fallback).await?;
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .json(set))
}

/// The partner's real-time decision endpoint (never its secret).
#[utoipa::path(get, path = "/v1/cards/decision-endpoint", tag = "cards", security(("bearer" = [])),
    responses(
        (status = 200, description = "The endpoint.", body = DecisionEndpoint),
        (status = 404, description = "`not_found`: none is set.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub(super) async fn get_decision_endpoint(
    cards: web::Data<CardService>,
    principal: Principal,
) -> Result<web::Json<DecisionEndpoint>, ApiError> {
    let partner = principal.require_partner(Area::Cards, Access::Read)?;
    let endpoint = cards
        .decisions()
        .get(partner)
        .await?
        .ok_or(CardError::NotFound("decision endpoint"))?;
    Ok(web::Json(endpoint))
}

/// Remove the partner's real-time decision endpoint: authorizations are no longer asked
/// (within seconds on every replica).
#[utoipa::path(delete, path = "/v1/cards/decision-endpoint", tag = "cards", security(("bearer" = [])),
    responses(
        (status = 204, description = "Removed."),
        (status = 404, description = "`not_found`: none is set.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub(super) async fn delete_decision_endpoint(
    cards: web::Data<CardService>,
    principal: Principal,
) -> Result<HttpResponse, ApiError> {
    let partner = principal.require_partner(Area::Cards, Access::Write)?;
    if !cards.decisions().delete(partner).await? {
        return Err(CardError::NotFound("decision endpoint").into());
    }
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    /// A one-connection server: reads the request, waits `delay`, writes `response`.
    async fn serve_once(response: String, delay: Duration) -> url::Url {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            let mut read = 0;
            loop {
                let n = stream.read(&mut buf[read..]).await.unwrap();
                read += n;
                let text = String::from_utf8_lossy(&buf[..read]);
                if n == 0 || complete(&text) {
                    break;
                }
            }
            tokio::time::sleep(delay).await;
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
        url::Url::parse(&format!("http://127.0.0.1:{port}/decide")).unwrap()
    }

    fn complete(text: &str) -> bool {
        let Some(end) = text.find("\r\n\r\n") else {
            return false;
        };
        let length = text[..end]
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.trim().parse::<usize>().unwrap());
        text.len() >= end + 4 + length
    }

    fn http(status: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    async fn run(response: String, delay: Duration, timeout: Duration) -> Outcome {
        let url = serve_once(response, delay).await;
        let target = Target {
            url,
            key: SigningKey::parse(&SecretString::from(SECRET)).unwrap(),
        };
        let client = http_client(timeout, true).unwrap();
        exchange(
            &client,
            timeout,
            &target,
            "evt_1",
            1_700_000_000,
            b"{}".to_vec(),
        )
        .await
        .0
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn a_2xx_json_answer_approves_or_declines_with_a_bounded_reason() {
        assert_eq!(
            run(
                http("200 OK", r#"{"approved":true,"extra":1}"#),
                Duration::ZERO,
                SECOND
            )
            .await,
            Outcome::Approved
        );
        assert_eq!(
            run(
                http(
                    "201 Created",
                    r#"{"approved":false,"reason":" too risky "}"#
                ),
                Duration::ZERO,
                SECOND
            )
            .await,
            Outcome::Declined(Some("too risky".to_owned()))
        );
        let long = "r".repeat(MAX_REASON_CHARS + 10);
        let Outcome::Declined(Some(kept)) = run(
            http(
                "200 OK",
                &format!(r#"{{"approved":false,"reason":"{long}"}}"#),
            ),
            Duration::ZERO,
            SECOND,
        )
        .await
        else {
            panic!("not a decline with a reason");
        };
        assert_eq!(kept.chars().count(), MAX_REASON_CHARS);
    }

    #[tokio::test]
    async fn a_non_2xx_a_redirect_garbage_or_an_oversized_answer_fails() {
        for response in [
            http("500 Internal Server Error", r#"{"approved":true}"#),
            "HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned(),
            http("200 OK", "yes please"),
            http("200 OK", r#"{"approved":"yes"}"#),
            http("200 OK", ""),
            http(
                "200 OK",
                &format!(
                    r#"{{"approved":true,"pad":"{}"}}"#,
                    "x".repeat(MAX_ANSWER_BYTES)
                ),
            ),
        ] {
            assert!(
                matches!(
                    run(response.clone(), Duration::ZERO, SECOND).await,
                    Outcome::Failed(_)
                ),
                "{}",
                &response[..response.len().min(80)]
            );
        }
    }

    #[tokio::test]
    async fn a_slow_answer_times_out_within_the_budget() {
        let started = Instant::now();
        let outcome = run(
            http("200 OK", r#"{"approved":true}"#),
            Duration::from_secs(3),
            Duration::from_millis(200),
        )
        .await;
        assert_eq!(outcome, Outcome::TimedOut);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_refused_connection_fails() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let target = Target {
            url: url::Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap(),
            key: SigningKey::parse(&SecretString::from(SECRET)).unwrap(),
        };
        let client = http_client(SECOND, true).unwrap();
        let (outcome, status) = exchange(
            &client,
            SECOND,
            &target,
            "evt_1",
            1_700_000_000,
            b"{}".to_vec(),
        )
        .await;
        assert!(matches!(outcome, Outcome::Failed(_)), "{outcome:?}");
        assert_eq!(status, None);
    }

    #[test]
    fn fallbacks_parse_and_print_as_stored() {
        for f in [Fallback::Approve, Fallback::Decline] {
            assert_eq!(parse_fallback(fallback_str(f)), Some(f));
        }
        assert_eq!(parse_fallback("Approve"), None);
        assert_eq!(parse_fallback(""), None);
    }

    #[test]
    fn a_partners_secret_is_bound_to_that_partner() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        assert_ne!(secret_context(a), secret_context(b));
    }
}
