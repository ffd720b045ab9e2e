//! State shared between Flowlet replicas: rate-limit counters and small caches.
//!
//! Several replicas run behind an autoscaler, so a per-client limit only means
//! something if every replica counts against the same bucket. With `redis.url`
//! configured, [`SharedState::redis`] keeps that state in Redis; without it (a
//! developer's laptop, one replica) [`SharedState::in_process`] offers the same
//! traits backed by memory, so handlers never care which one they got.
//!
//! Rate limiting is GCRA (generic cell rate algorithm, as redis-cell and
//! go-redis/redis_rate do it). All time arithmetic is in whole microseconds; the
//! Redis side runs in one Lua script on Redis's own clock so replicas with skewed
//! clocks still agree.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use deadpool_redis::redis::{self, ErrorKind, RedisError, ServerErrorKind};
use deadpool_redis::{Config, Connection, Pool, PoolConfig, PoolError, Runtime, Timeouts};

/// A boxed, `Send` future, so the traits below stay object-safe (`Arc<dyn RateLimiter>`)
/// without pulling in an async-trait macro.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How long to wait for a free pooled connection before reporting Redis as unavailable,
/// so a saturated or dead Redis turns into a fast error instead of a hung request.
const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long establishing one new connection may take (TCP connect + handshake).
const POOL_CREATE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the health check of a reused connection may take.
const POOL_RECYCLE_TIMEOUT: Duration = Duration::from_secs(1);
/// Upper bound for one whole operation (pool checkout + command + possible script load),
/// a backstop on top of the pool timeouts and redis-rs's 500 ms response timeout.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(2);
/// Readiness probes must answer quickly, so PING gets a tighter budget.
const PING_TIMEOUT: Duration = Duration::from_secs(1);
/// Startup connection check budget: fail fast rather than hang the boot.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest cache TTL honoured; longer values are clamped so expiry arithmetic
/// (Redis PX, `Instant + Duration`) can never overflow. About 100 years.
const MAX_CACHE_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);
/// Largest GCRA window (emission interval × limit) in µs: 2^52 µs ≈ 142 years.
/// Keeps `now + window` below 2^53 so Lua's doubles represent every value exactly.
const MAX_WINDOW_MICROS: u64 = 1 << 52;
/// In-process maps are swept for expired entries once they grow to at least this many
/// entries; after a sweep the threshold becomes twice the surviving size, so sweeping is
/// amortised O(1) per call and memory stays within 2× the live entries (plus this floor).
const MIN_PRUNE_LEN: usize = 1024;
/// Namespace inside `key_prefix` for rate-limit buckets, so they cannot collide with cache keys.
const RATE_LIMIT_NAMESPACE: &str = "rl:";
/// Namespace inside `key_prefix` for cache entries.
const CACHE_NAMESPACE: &str = "cache:";

/// GCRA in one atomic script, on Redis's clock (`TIME`), in integer microseconds.
///
/// KEYS[1] holds the theoretical arrival time (TAT) in µs since the Unix epoch.
/// ARGV: emission interval µs, burst window µs (= interval × limit), cost (1 = count, 0 = peek).
/// "backlog" = TAT − now (clamped ≥ 0): how far ahead of real time the bucket is.
/// Returns {allowed (0/1), remaining, reset_after µs, retry_after µs}.
/// All values stay below 2^53, so doubles hold them exactly; the only division is
/// corrected to an exact floor, and the stored value is formatted with %.0f because
/// Lua's tostring would switch to 14-digit exponent notation and lose precision.
const GCRA_SCRIPT: &str = r"
local epoch = ''
if KEYS[2] then
  epoch = redis.call('GET', KEYS[2]) or ''
end
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local backlog = 0
local stored = redis.call('GET', KEYS[1])
if stored then
  backlog = tonumber(stored) - now
  if backlog < 0 then backlog = 0 end
end
local after = backlog + interval
if after > window then
  return {0, 0, backlog, after - window, epoch}
end
local slack = window - after
local remaining = math.floor(slack / interval)
if remaining * interval > slack then
  remaining = remaining - 1
elseif (remaining + 1) * interval <= slack then
  remaining = remaining + 1
end
if cost == 0 then
  return {1, remaining + 1, backlog, 0, epoch}
end
redis.call('SET', KEYS[1], string.format('%.0f', now + after),
  'PX', string.format('%.0f', math.ceil(after / 1000)))
return {1, remaining, after, 0, epoch}
";

/// Where epochs live (see [`SharedState::epoch`]).
const EPOCH_NAMESPACE: &str = "epoch:";

/// Outcome of one rate-limit check, carrying what the `RateLimit-*` / `Retry-After`
/// response headers need so handlers do not recompute anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    /// Whether this request may proceed (for `peek`: whether one would be allowed now).
    pub allowed: bool,
    /// The quota's limit, echoed for the `RateLimit-Limit` header.
    pub limit: u64,
    /// How many more requests would be allowed right now (after counting this one, for `check`).
    pub remaining: u64,
    /// Time until the bucket is full again (`RateLimit-Reset`).
    pub reset_after: Duration,
    /// `Some` when denied: time until one more request would be allowed (`Retry-After`).
    pub retry_after: Option<Duration>,
}

/// A rate limit of `limit` requests per `period`, enforced with GCRA: emission interval
/// = period / limit (rounded up to a whole µs, so never more than `limit` per `period`),
/// burst = `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    /// Requests allowed per `period` and, as the burst size, back to back. Must be ≥ 1.
    pub limit: u64,
    /// The window `limit` applies to. Must be ≥ 1 µs; `limit × period/limit` ≤ ~142 years.
    pub period: Duration,
}

/// Counts requests per key against a [`Quota`], shared across replicas when backed by Redis.
pub trait RateLimiter: Send + Sync {
    /// Count one request against `key` and decide. Atomic (one Lua script via EVALSHA in
    /// Redis, using Redis's clock); denied requests do not consume quota.
    fn check<'a>(
        &'a self,
        key: &'a str,
        quota: Quota,
    ) -> BoxFuture<'a, Result<RateDecision, SharedStateError>>;

    /// Read the state without counting, for headers on responses that must not consume quota.
    fn peek<'a>(
        &'a self,
        key: &'a str,
        quota: Quota,
    ) -> BoxFuture<'a, Result<RateDecision, SharedStateError>>;

    /// [`RateLimiter::check`], reading in the same round trip the current value of the shared
    /// epoch `epoch` (see [`SharedState::epoch`]); `None` when there is no shared value to
    /// read (no Redis, Redis unreachable, or the epoch not set).
    fn check_with_epoch<'a>(
        &'a self,
        key: &'a str,
        quota: Quota,
        epoch: &'a str,
    ) -> BoxFuture<'a, Result<(RateDecision, Option<String>), SharedStateError>> {
        let _ = epoch;
        Box::pin(async move { Ok((self.check(key, quota).await?, None)) })
    }
}

/// A small byte cache with per-entry TTL, shared across replicas when backed by Redis.
pub trait Cache: Send + Sync {
    /// The value under `key`, or `None` if absent or expired (expired values are never returned).
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, SharedStateError>>;

    /// Store `value` under `key` for `ttl` (Redis rounds up to whole ms; a zero TTL deletes
    /// the key; TTLs over ~100 years are clamped).
    fn set<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), SharedStateError>>;

    /// Remove `key`; removing an absent key is not an error.
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), SharedStateError>>;
}

/// Which implementation backs the shared state, as reported by `/ready` and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// State lives in Redis and is shared by all replicas.
    Redis,
    /// State lives in this process only (single replica / development).
    InProcess,
}

impl Backend {
    /// Stable lower-case name, so `/ready` output and metric labels don't depend on `Debug`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Redis => "redis",
            Backend::InProcess => "in_process",
        }
    }
}

/// Why a shared-state operation failed, split so callers can choose to fail open or
/// closed on outages while still surfacing genuine command errors. Messages never
/// contain Redis credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SharedStateError {
    /// Redis could not be reached or did not answer in time (pool, connection, timeout).
    #[error("shared state unavailable: {0}")]
    Unavailable(String),
    /// Redis answered with an error, or with a reply this module did not expect.
    #[error("shared state command failed: {0}")]
    Redis(String),
    /// The quota cannot be enforced (limit 0, period under 1 µs, or window over ~142 years);
    /// a configuration bug, reported rather than guessed at.
    #[error("invalid rate-limit quota: {0}")]
    InvalidQuota(String),
}

/// The handle the rest of the service holds: cheap to clone (all `Arc`s) and the same
/// API whichever backend is configured.
#[derive(Clone)]
pub struct SharedState {
    rate_limiter: Arc<dyn RateLimiter>,
    cache: Arc<dyn Cache>,
    backend: Backend,
    redis: Option<Arc<RedisStore>>,
    /// Set while Redis is unreachable and rate limits run in-process instead.
    degraded: Arc<AtomicBool>,
}

impl fmt::Debug for SharedState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedState")
            .field("backend", &self.backend)
            .field(
                "redis_url",
                &self.redis.as_ref().map(|r| &r.redactor.display_url),
            )
            .finish_non_exhaustive()
    }
}

impl SharedState {
    /// Connect to Redis with a deadpool-redis pool of `pool_size` connections (bounded
    /// wait/create/recycle timeouts) and verify it answers PING, so a wrong URL or a dead
    /// Redis fails the boot quickly with [`SharedStateError::Unavailable`]. Every key is
    /// stored under `key_prefix` (e.g. `"flowlet:"`) so deployments and tests can share a Redis.
    pub async fn redis(
        url: &str,
        key_prefix: &str,
        pool_size: usize,
    ) -> Result<SharedState, SharedStateError> {
        let redactor = Redactor::new(url);
        let store = Arc::new(RedisStore::connect(url, key_prefix, pool_size, redactor).await?);
        store.check_reachable().await?;
        Ok(Self::over_redis(store, false))
    }

    /// Like [`SharedState::redis`], but a Redis that does not answer yet is not an error:
    /// the service starts degraded (limits in-process) and uses Redis once it answers. Only
    /// a URL that cannot work at all (malformed) fails.
    pub async fn redis_or_degraded(
        url: &str,
        key_prefix: &str,
        pool_size: usize,
    ) -> Result<SharedState, SharedStateError> {
        let redactor = Redactor::new(url);
        let store = Arc::new(RedisStore::connect(url, key_prefix, pool_size, redactor).await?);
        let reachable = match store.check_reachable().await {
            Ok(()) => true,
            Err(err) => {
                tracing::error!(error.cause = %err, "Redis is unreachable; starting with in-process rate limits");
                false
            }
        };
        Ok(Self::over_redis(store, !reachable))
    }

    fn over_redis(store: Arc<RedisStore>, degraded: bool) -> SharedState {
        let degraded = Arc::new(AtomicBool::new(degraded));
        let rate_limiter: Arc<dyn RateLimiter> = Arc::new(ResilientRateLimiter {
            redis: store.clone(),
            local: InProcessRateLimiter::new(),
            degraded: degraded.clone(),
        });
        let cache: Arc<dyn Cache> = store.clone();
        SharedState {
            rate_limiter,
            cache,
            backend: Backend::Redis,
            redis: Some(store),
            degraded,
        }
    }

    /// Whether Redis is configured but currently unreachable, so limits are per replica.
    #[must_use]
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    /// Memory-backed state for a single replica without Redis; same semantics, nothing shared.
    #[must_use]
    pub fn in_process() -> SharedState {
        SharedState {
            rate_limiter: Arc::new(InProcessRateLimiter::new()),
            cache: Arc::new(InProcessCache::new()),
            backend: Backend::InProcess,
            redis: None,
            degraded: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The shared epoch `name`: an opaque value that changes whenever something cached under
    /// it must no longer be trusted (e.g. API keys, on a revocation), so a replica may keep a
    /// copy of what it read and check the epoch instead of the database; read it BEFORE
    /// reading what is cached under it. `None` without Redis (or while Redis is unreachable):
    /// nothing may then be cached under it.
    pub async fn epoch(&self, name: &str) -> Option<String> {
        let redis = self.redis.as_ref()?;
        match redis.epoch(name).await {
            Ok(value) => Some(value),
            Err(e) => {
                tracing::warn!(error.cause = %e, "could not read a shared epoch");
                None
            }
        }
    }

    /// Moves the epoch `name` on, so every replica stops trusting what it cached under it.
    /// Without Redis nothing is cached under an epoch, so there is nothing to do.
    pub async fn bump_epoch(&self, name: &str) -> Result<(), SharedStateError> {
        match &self.redis {
            Some(redis) => redis.bump_epoch(name).await,
            None => Ok(()),
        }
    }

    /// The rate limiter, borrowed so callers need no `Arc` juggling per request.
    #[must_use]
    pub fn rate_limiter(&self) -> &dyn RateLimiter {
        self.rate_limiter.as_ref()
    }

    /// The cache, borrowed so callers need no `Arc` juggling per request.
    #[must_use]
    pub fn cache(&self) -> &dyn Cache {
        self.cache.as_ref()
    }

    /// Which backend is in use, for `/ready` and startup logs.
    #[must_use]
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Readiness check: PING Redis within a short timeout; always `Ok` in-process.
    pub async fn ping(&self) -> Result<(), SharedStateError> {
        match &self.redis {
            Some(store) => store.ping(PING_TIMEOUT).await,
            None => Ok(()),
        }
    }

    /// Pool `(size, available)` for metrics; `None` in-process where there is no pool.
    #[must_use]
    pub fn pool_status(&self) -> Option<(usize, usize)> {
        self.redis.as_ref().map(|store| {
            let status = store.pool.status();
            (status.size, status.available)
        })
    }
}

// ---------------------------------------------------------------------------
// GCRA core shared by both backends (the Lua script mirrors `decide` exactly)
// ---------------------------------------------------------------------------

/// A validated quota in integer microseconds.
#[derive(Debug, Clone, Copy)]
struct Gcra {
    /// Emission interval: ceil(period / limit), ≥ 1 µs.
    interval: u64,
    /// Burst window: interval × limit (≥ period, by less than `limit` µs).
    window: u64,
}

impl Gcra {
    fn new(quota: Quota) -> Result<Gcra, SharedStateError> {
        let invalid = |why: &str| SharedStateError::InvalidQuota(format!("{why} (got {quota:?})"));
        if quota.limit == 0 {
            return Err(invalid("limit must be at least 1"));
        }
        let period =
            u64::try_from(quota.period.as_micros()).map_err(|_| invalid("period is too long"))?;
        if period == 0 {
            return Err(invalid("period must be at least 1 µs"));
        }
        let interval = period.div_ceil(quota.limit);
        let window = interval
            .checked_mul(quota.limit)
            .filter(|w| *w <= MAX_WINDOW_MICROS)
            .ok_or_else(|| {
                invalid("window (period rounded to whole µs per request) exceeds ~142 years")
            })?;
        Ok(Gcra { interval, window })
    }
}

/// A GCRA result in µs, before conversion into a [`RateDecision`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Outcome {
    allowed: bool,
    remaining: u64,
    reset_after_us: u64,
    retry_after_us: u64,
}

impl Outcome {
    fn into_decision(self, limit: u64) -> RateDecision {
        RateDecision {
            allowed: self.allowed,
            limit,
            remaining: self.remaining,
            reset_after: Duration::from_micros(self.reset_after_us),
            retry_after: (!self.allowed).then(|| Duration::from_micros(self.retry_after_us)),
        }
    }
}

/// Decide given the current `backlog` (TAT − now, ≥ 0). Returns the new backlog to store
/// when a counted request is allowed; denied requests and peeks store nothing.
fn decide(gcra: Gcra, backlog: u64, count: bool) -> (Outcome, Option<u64>) {
    let after = backlog.saturating_add(gcra.interval);
    if after > gcra.window {
        let outcome = Outcome {
            allowed: false,
            remaining: 0,
            reset_after_us: backlog,
            retry_after_us: after - gcra.window,
        };
        return (outcome, None);
    }
    let remaining = (gcra.window - after) / gcra.interval;
    if count {
        let outcome = Outcome {
            allowed: true,
            remaining,
            reset_after_us: after,
            retry_after_us: 0,
        };
        (outcome, Some(after))
    } else {
        let outcome = Outcome {
            allowed: true,
            remaining: remaining.saturating_add(1),
            reset_after_us: backlog,
            retry_after_us: 0,
        };
        (outcome, None)
    }
}

// ---------------------------------------------------------------------------
// In-process backend
// ---------------------------------------------------------------------------

/// Lock a mutex, recovering from poisoning: the maps hold plain data that is valid after
/// any panic, and refusing service forever would be worse than a possibly lost update.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A map that sweeps out dead entries as it grows, keeping memory bounded.
#[derive(Debug)]
struct PrunedMap<V> {
    map: HashMap<String, V>,
    prune_at_len: usize,
}

impl<V> PrunedMap<V> {
    fn new() -> Self {
        PrunedMap {
            map: HashMap::new(),
            prune_at_len: MIN_PRUNE_LEN,
        }
    }

    /// Sweep entries for which `alive` is false once the map reaches its threshold.
    fn maybe_prune(&mut self, alive: impl FnMut(&V) -> bool) {
        if self.map.len() < self.prune_at_len {
            return;
        }
        let mut alive = alive;
        self.map.retain(|_, v| alive(v));
        self.prune_at_len = self.map.len().saturating_mul(2).max(MIN_PRUNE_LEN);
    }

    fn upsert(&mut self, key: &str, value: V) {
        match self.map.get_mut(key) {
            Some(slot) => *slot = value,
            None => {
                self.map.insert(key.to_owned(), value);
            }
        }
    }
}

/// GCRA over a mutex-guarded map of TATs (µs since `epoch`); never held across an await.
#[derive(Debug)]
struct InProcessRateLimiter {
    epoch: Instant,
    tats: Mutex<PrunedMap<u64>>,
}

impl InProcessRateLimiter {
    fn new() -> Self {
        InProcessRateLimiter {
            epoch: Instant::now(),
            tats: Mutex::new(PrunedMap::new()),
        }
    }

    fn now_micros(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn run(&self, key: &str, quota: Quota, count: bool) -> Result<RateDecision, SharedStateError> {
        let gcra = Gcra::new(quota)?;
        let now = self.now_micros();
        let mut tats = lock(&self.tats);
        // A TAT at or before now is a full bucket, the same as no entry.
        tats.maybe_prune(|tat| *tat > now);
        let backlog = tats.map.get(key).map_or(0, |tat| tat.saturating_sub(now));
        let (outcome, new_backlog) = decide(gcra, backlog, count);
        if let Some(new_backlog) = new_backlog {
            tats.upsert(key, now.saturating_add(new_backlog));
        }
        Ok(outcome.into_decision(quota.limit))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.tats).map.len()
    }
}

impl RateLimiter for InProcessRateLimiter {
    fn check<'a>(
        &'a self,
        key: &'a str,
        quota: Quota,
    ) -> BoxFuture<'a, Result<RateDecision, SharedStateError>> {
        Box::pin(async move { self.run(key, quota, true) })
    }

    fn peek<'a>(
        &'a self,
        key: &'a str,
        quota: Quota,
    ) -> BoxFuture<'a, Result<RateDecision, SharedStateError>> {
        Box::pin(async move { self.run(key, quota, false) })
    }
}

/// Value plus expiry; `None` expiry cannot happen with clamped TTLs but is handled anyway.
#[derive(Debug)]
struct CacheEntry {
    value: Vec<u8>,
    expires_at: Option<Instant>,
}

impl CacheEntry {
    fn is_live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

/// A mutex-guarded map with expiry instants; expired entries are never returned.
#[derive(Debug)]
struct InProcessCache {
    entries: Mutex<PrunedMap<CacheEntry>>,
}

impl InProcessCache {
    fn new() -> Self {
        InProcessCache {
            entries: Mutex::new(PrunedMap::new()),
        }
    }

    fn get_now(&self, key: &str) -> Option<Vec<u8>> {
        let now = Instant::now();
        let mut entries = lock(&self.entries);
        match entries.map.get(key) {
            Some(entry) if entry.is_live(now) => Some(entry.value.clone()),
            Some(_) => {
                entries.map.remove(key);
                None
            }
            None => None,
        }
    }

    fn set_now(&self, key: &str, value: &[u8], ttl: Duration) {
        let now = Instant::now();
        let mut entries = lock(&self.entries);
        if ttl.is_zero() {
            entries.map.remove(key);
            return;
        }
        entries.maybe_prune(|entry| entry.is_live(now));
        let entry = CacheEntry {
            value: value.to_vec(),
            expires_at: now.checked_add(ttl.min(MAX_CACHE_TTL)),
        };
        entries.upsert(key, entry);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.entries).map.len()
    }
}

impl Cache for InProcessCache {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, SharedStateError>> {
        Box::pin(async move { Ok(self.get_now(key)) })
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), SharedStateError>> {
        Box::pin(async move {
            self.set_now(key, value, ttl);
            Ok(())
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), SharedStateError>> {
        Box::pin(async move {
            lock(&self.entries).map.remove(key);
            Ok(())
        })
    }
}

// ---------------------------------------------------------------------------
// Redis backend
// ---------------------------------------------------------------------------

/// Keeps Redis credentials out of every message this module produces.
#[derive(Debug)]
struct Redactor {
    /// The URL with userinfo and query replaced by `***`, safe to log.
    display_url: String,
    /// Raw secret substrings (userinfo, password, query) scrubbed from error texts.
    secrets: Vec<String>,
}

impl Redactor {
    fn new(url: &str) -> Redactor {
        let Some((scheme, rest)) = url.split_once("://") else {
            // Not a URL we can take apart: show nothing of it, treat all of it as secret.
            return Redactor {
                display_url: "<unparseable Redis URL>".to_owned(),
                secrets: vec![url.to_owned()],
            };
        };
        let (before_query, query) = match rest.split_once('?') {
            Some((before, query)) => (before, Some(query)),
            None => (rest, None),
        };
        let mut secrets = Vec::new();
        // The last '@' ends the userinfo even if an unencoded password contains '@' or '/'.
        let host_and_path = match before_query.rsplit_once('@') {
            Some((userinfo, host_and_path)) => {
                secrets.push(userinfo.to_owned());
                if let Some((_, password)) = userinfo.split_once(':') {
                    secrets.push(password.to_owned());
                }
                format!("***@{host_and_path}")
            }
            None => before_query.to_owned(),
        };
        // redis+unix URLs may carry `?pass=...`.
        let query_shown = match query {
            Some(query) => {
                secrets.push(query.to_owned());
                "?***"
            }
            None => "",
        };
        secrets.retain(|s| !s.is_empty());
        Redactor {
            display_url: format!("{scheme}://{host_and_path}{query_shown}"),
            secrets,
        }
    }

    fn scrub(&self, message: String) -> String {
        self.secrets
            .iter()
            .fold(message, |msg, secret| msg.replace(secret.as_str(), "***"))
    }

    fn unavailable(&self, message: String) -> SharedStateError {
        SharedStateError::Unavailable(self.scrub(message))
    }

    /// Connection-level failures become `Unavailable` (the caller picks fail-open or
    /// fail-closed); anything Redis answered deliberately becomes `Redis`.
    fn command_error(&self, what: &str, err: &RedisError) -> SharedStateError {
        let connectivity = err.is_io_error()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || err.is_timeout()
            || err.is_unrecoverable_error()
            || matches!(
                err.kind(),
                ErrorKind::AuthenticationFailed
                    | ErrorKind::Server(
                        ServerErrorKind::BusyLoading
                            | ServerErrorKind::MasterDown
                            | ServerErrorKind::TryAgain
                            | ServerErrorKind::ClusterDown
                    )
            );
        let message = self.scrub(format!("{what}: {err}"));
        tracing::debug!(connectivity, error = %message, "Redis shared-state operation failed");
        if connectivity {
            SharedStateError::Unavailable(message)
        } else {
            SharedStateError::Redis(message)
        }
    }
}

/// Pool + key prefix + the GCRA script; one instance serves both traits.
struct RedisStore {
    pool: Pool,
    key_prefix: String,
    gcra_script: redis::Script,
    redactor: Redactor,
}

impl RedisStore {
    async fn connect(
        url: &str,
        key_prefix: &str,
        pool_size: usize,
        redactor: Redactor,
    ) -> Result<RedisStore, SharedStateError> {
        let shown = redactor.display_url.clone();
        if pool_size == 0 {
            return Err(
                redactor.unavailable(format!("Redis pool size for {shown} must be at least 1"))
            );
        }
        let mut pool_config = PoolConfig::new(pool_size);
        pool_config.timeouts = Timeouts {
            wait: Some(POOL_WAIT_TIMEOUT),
            create: Some(POOL_CREATE_TIMEOUT),
            recycle: Some(POOL_RECYCLE_TIMEOUT),
        };
        let pool = Config::from_url(url)
            .builder()
            .map_err(|e| redactor.unavailable(format!("invalid Redis URL {shown}: {e}")))?
            .config(pool_config)
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| {
                redactor.unavailable(format!("cannot build Redis pool for {shown}: {e}"))
            })?;
        let store = RedisStore {
            pool,
            key_prefix: key_prefix.to_owned(),
            gcra_script: redis::Script::new(GCRA_SCRIPT),
            redactor,
        };
        tracing::info!(url = %shown, pool_size, key_prefix, "shared state backed by Redis");
        Ok(store)
    }

    /// PING at start-up, with a message that names the (redacted) URL.
    async fn check_reachable(&self) -> Result<(), SharedStateError> {
        let shown = self.redactor.display_url.clone();
        self.ping(STARTUP_TIMEOUT).await.map_err(|e| match e {
            SharedStateError::Unavailable(m) | SharedStateError::Redis(m) => self
                .redactor
                .unavailable(format!("cannot reach Redis at {shown}: {m}")),
            other @ SharedStateError::InvalidQuota(_) => other,
        })
    }

    fn key(&self, namespace: &str, key: &str) -> String {
        format!("{}{namespace}{key}", self.key_prefix)
    }

    async fn connection(&self) -> Result<Connection, SharedStateError> {
        self.pool
            .get()
            .await
            .map_err(|e: PoolError| self.redactor.unavailable(format!("Redis pool: {e}")))
    }

    /// Run `op` with a pooled connection under `budget`, so no caller ever hangs on Redis.
    async fn with_connection<T, F>(
        &self,
        what: &str,
        budget: Duration,
        op: impl FnOnce(Connection) -> F,
    ) -> Result<T, SharedStateError>
    where
        F: Future<Output = Result<T, RedisError>>,
    {
        let attempt = async {
            let conn = self.connection().await?;
            op(conn)
                .await
                .map_err(|e| self.redactor.command_error(what, &e))
        };
        match tokio::time::timeout(budget, attempt).await {
            Ok(result) => result,
            Err(_) => Err(self
                .redactor
                .unavailable(format!("{what}: no answer from Redis within {budget:?}"))),
        }
    }

    async fn ping(&self, budget: Duration) -> Result<(), SharedStateError> {
        let reply: String = self
            .with_connection("PING", budget, |mut conn| async move {
                redis::cmd("PING").query_async(&mut conn).await
            })
            .await?;
        if reply == "PONG" {
            Ok(())
        } else {
            Err(SharedStateError::Redis(format!(
                "PING: unexpected reply {reply:?}"
            )))
        }
    }

    async fn gcra(
        &self,
        key: &str,
        quota: Quota,
        count: bool,
    ) -> Result<RateDecision, SharedStateError> {
        self.gcra_reading(key, quota, count, None)
            .await
            .map(|(decision, _)| decision)
    }

    /// The GCRA script, reading the epoch `epoch` too when asked.
    async fn gcra_reading(
        &self,
        key: &str,
        quota: Quota,
        count: bool,
        epoch: Option<&str>,
    ) -> Result<(RateDecision, Option<String>), SharedStateError> {
        let gcra = Gcra::new(quota)?;
        let full_key = self.key(RATE_LIMIT_NAMESPACE, key);
        let epoch_key = epoch.map(|name| self.key(EPOCH_NAMESPACE, name));
        let cost: u8 = if count { 1 } else { 0 };
        let reply: (i64, i64, i64, i64, String) = self
            .with_connection("rate limit script", OPERATION_TIMEOUT, |mut conn| {
                let mut invocation = self.gcra_script.key(full_key);
                if let Some(epoch_key) = epoch_key {
                    invocation.key(epoch_key);
                }
                invocation.arg(gcra.interval).arg(gcra.window).arg(cost);
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        let unexpected =
            || SharedStateError::Redis(format!("rate limit script: unexpected reply {reply:?}"));
        let (allowed, remaining, reset, retry, ref epoch_value) = reply;
        let allowed = match allowed {
            0 => false,
            1 => true,
            _ => return Err(unexpected()),
        };
        let outcome = Outcome {
            allowed,
            remaining: u64::try_from(remaining).map_err(|_| unexpected())?,
            reset_after_us: u64::try_from(reset).map_err(|_| unexpected())?,
            retry_after_us: u64::try_from(retry).map_err(|_| unexpected())?,
        };
        let epoch_value = Some(epoch_value.clone()).filter(|v| !v.is_empty());
        Ok((outcome.into_decision(quota.limit), epoch_value))
    }

    async fn epoch(&self, name: &str) -> Result<String, SharedStateError> {
        let key = self.key(EPOCH_NAMESPACE, name);
        let fresh = new_epoch();
        // The current value, or (none yet, e.g. after Redis lost its data) a new random one.
        let (_, value): (bool, String) = self
            .with_connection("epoch", OPERATION_TIMEOUT, |mut conn| async move {
                redis::pipe()
                    .cmd("SET")
                    .arg(&key)
                    .arg(&fresh)
                    .arg("NX")
                    .cmd("GET")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok(value)
    }

    async fn bump_epoch(&self, name: &str) -> Result<(), SharedStateError> {
        let key = self.key(EPOCH_NAMESPACE, name);
        let fresh = new_epoch();
        self.with_connection("epoch", OPERATION_TIMEOUT, |mut conn| async move {
            redis::cmd("SET")
                .arg(&key)
                .arg(&fresh)
                .query_async::<()>(&mut conn)
                .await
        })
        .await
    }
}

/// A new epoch value: random, so that an epoch lost with Redis's data and set again can never
/// come back to a value something was cached under.
fn new_epoch() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl RateLimiter for RedisStore {
    fn check<'a>(
        &'a self,
        key: &'a str,
        quota: Quota,
    ) -> BoxFuture<'a, Result<RateDecision, SharedStateError>> {
        Box::pin(self.gcra(key, quota, true))
    }

    fn peek<'a>(
        &'a self,
        key: &'a str,
        quota: Quota,
    ) -> BoxFuture<'a, Result<RateDecision, SharedStateError>> {
        Box::pin(self.gcra(key, quota, false))
    }
}

/// Redis first; while Redis is unreachable, the same GCRA in this process, so the service keeps
/// serving (with per-replica limits) instead of failing every request. The switch both ways is
/// logged once and visible through [`SharedState::is_degraded`] (`/ready` says `degraded`).
struct ResilientRateLimiter {
    redis: Arc<RedisStore>,
    local: InProcessRateLimiter,
    degraded: Arc<AtomicBool>,
}

impl ResilientRateLimiter {
    /// Redis first (reading the epoch `epoch` too, when given); Redis unreachable: this
    /// process, and no shared epoch, so the caller must not trust what it cached.
    async fn decide(
        &self,
        key: &str,
        quota: Quota,
        count: bool,
        epoch: Option<&str>,
    ) -> Result<(RateDecision, Option<String>), SharedStateError> {
        match self.redis.gcra_reading(key, quota, count, epoch).await {
            Ok(answer) => {
                if self.degraded.swap(false, Ordering::Relaxed) {
                    tracing::info!("Redis answers again; rate limits are shared across replicas");
                }
                Ok(answer)
            }
            Err(SharedStateError::Unavailable(cause)) => {
                if !self.degraded.swap(true, Ordering::Relaxed) {
                    tracing::error!(error.cause = %cause, "Redis is unreachable; rate limits fall back to this process");
                }
                let local = if count {
                    self.local.check(key, quota).await
                } else {
                    self.local.peek(key, quota).await
                };
                Ok((local?, None))
            }
            Err(other) => Err(other),
        }
    }
}

impl RateLimiter for ResilientRateLimiter {
    fn check_with_epoch<'a>(
        &'a self,
        key: &'a str,
        quota: Quota,
        epoch: &'a str,
    ) -> BoxFuture<'a, Result<(RateDecision, Option<String>), SharedStateError>> {
        Box::pin(self.decide(key, quota, true, Some(epoch)))
    }

    fn check<'a>(
        &'a self,
        key: &'a str,
        quota: Quota,
    ) -> BoxFuture<'a, Result<RateDecision, SharedStateError>> {
        Box::pin(async move { Ok(self.decide(key, quota, true, None).await?.0) })
    }

    fn peek<'a>(
        &'a self,
        key: &'a str,
        quota: Quota,
    ) -> BoxFuture<'a, Result<RateDecision, SharedStateError>> {
        Box::pin(async move { Ok(self.decide(key, quota, false, None).await?.0) })
    }
}

impl Cache for RedisStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, SharedStateError>> {
        Box::pin(async move {
            let full_key = self.key(CACHE_NAMESPACE, key);
            self.with_connection("cache GET", OPERATION_TIMEOUT, |mut conn| async move {
                redis::cmd("GET").arg(full_key).query_async(&mut conn).await
            })
            .await
        })
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), SharedStateError>> {
        Box::pin(async move {
            if ttl.is_zero() {
                return self.delete(key).await;
            }
            let full_key = self.key(CACHE_NAMESPACE, key);
            // Round up so an entry never vanishes before its TTL; ≥ 1 ms since ttl > 0.
            let millis = u64::try_from(ttl.min(MAX_CACHE_TTL).as_nanos().div_ceil(1_000_000))
                .unwrap_or(u64::MAX);
            self.with_connection("cache SET", OPERATION_TIMEOUT, |mut conn| async move {
                redis::cmd("SET")
                    .arg(full_key)
                    .arg(value)
                    .arg("PX")
                    .arg(millis)
                    .query_async(&mut conn)
                    .await
            })
            .await
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), SharedStateError>> {
        Box::pin(async move {
            let full_key = self.key(CACHE_NAMESPACE, key);
            self.with_connection("cache DEL", OPERATION_TIMEOUT, |mut conn| async move {
                redis::cmd("DEL").arg(full_key).query_async(&mut conn).await
            })
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Redis the tests use (FLOWLET_TEST_REDIS_URL, 127.0.0.1:6379, or one of their own).
    fn redis_url() -> String {
        crate::platform::test_redis::url().to_owned()
    }

    fn unique_prefix() -> String {
        format!("t:{}:", uuid::Uuid::now_v7())
    }

    async fn redis_with_prefix(prefix: &str) -> SharedState {
        SharedState::redis(&redis_url(), prefix, 4)
            .await
            .expect("the tests' Redis answers")
    }

    async fn redis_state() -> SharedState {
        redis_with_prefix(&unique_prefix()).await
    }

    fn per(limit: u64, period: Duration) -> Quota {
        Quota { limit, period }
    }

    async fn check(state: &SharedState, key: &str, quota: Quota) -> RateDecision {
        state.rate_limiter().check(key, quota).await.unwrap()
    }

    /// Runs each behaviour once per backend: `<behaviour>::in_process` and `<behaviour>::redis`.
    macro_rules! on_both_backends {
        ($($behaviour:ident),* $(,)?) => {$(
            mod $behaviour {
                use super::*;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn in_process() {
                    super::$behaviour(&SharedState::in_process()).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis() {
                    super::$behaviour(&redis_state().await).await;
                }
            }
        )*};
    }

    on_both_backends!(
        allows_exactly_the_limit_in_a_burst_then_denies_with_a_retry_after,
        remaining_counts_down_by_one_per_allowed_request,
        denied_requests_do_not_consume_quota,
        keys_are_limited_independently,
        a_short_period_refills_after_waiting,
        peek_reports_the_bucket_without_consuming_quota,
        concurrent_checks_never_allow_more_than_the_limit,
        invalid_quotas_are_rejected_rather_than_guessed,
        cache_set_get_and_delete_round_trip,
        cache_entries_expire_after_their_ttl,
        cache_set_with_zero_ttl_removes_the_entry,
        ping_succeeds_when_the_backend_is_healthy,
    );

    async fn allows_exactly_the_limit_in_a_burst_then_denies_with_a_retry_after(
        state: &SharedState,
    ) {
        let quota = per(5, Duration::from_secs(60));
        for _ in 0..5 {
            let decision = check(state, "burst", quota).await;
            assert!(decision.allowed, "{decision:?}");
            assert_eq!(decision.limit, 5);
            assert_eq!(decision.retry_after, None);
        }
        let denied = check(state, "burst", quota).await;
        assert!(!denied.allowed, "{denied:?}");
        assert_eq!(denied.remaining, 0);
        let retry = denied.retry_after.unwrap();
        assert!(
            retry > Duration::ZERO && retry <= Duration::from_secs(12),
            "{denied:?}"
        );
        assert!(denied.reset_after > Duration::from_secs(55), "{denied:?}");
        assert!(denied.reset_after <= Duration::from_secs(60), "{denied:?}");
    }

    async fn remaining_counts_down_by_one_per_allowed_request(state: &SharedState) {
        let quota = per(4, Duration::from_secs(60));
        for expected in (0..4).rev() {
            let decision = check(state, "countdown", quota).await;
            assert!(decision.allowed);
            assert_eq!(decision.remaining, expected, "{decision:?}");
        }
    }

    async fn denied_requests_do_not_consume_quota(state: &SharedState) {
        // One request per 500 ms once the burst of 2 is spent.
        let quota = per(2, Duration::from_secs(1));
        assert!(check(state, "patient", quota).await.allowed);
        assert!(check(state, "patient", quota).await.allowed);
        let mut last_retry = Duration::MAX;
        for _ in 0..5 {
            let denied = check(state, "patient", quota).await;
            assert!(!denied.allowed);
            let retry = denied.retry_after.unwrap();
            assert!(retry > Duration::ZERO && retry <= Duration::from_millis(500));
            assert!(
                retry <= last_retry,
                "hammering must not push retry_after out"
            );
            last_retry = retry;
        }
        tokio::time::sleep(last_retry + Duration::from_millis(20)).await;
        let allowed = check(state, "patient", quota).await;
        assert!(allowed.allowed, "{allowed:?}");
        assert_eq!(allowed.remaining, 0);
        assert!(!check(state, "patient", quota).await.allowed);
    }

    async fn keys_are_limited_independently(state: &SharedState) {
        let quota = per(1, Duration::from_secs(60));
        assert!(check(state, "client-a", quota).await.allowed);
        assert!(!check(state, "client-a", quota).await.allowed);
        let other = check(state, "client-b", quota).await;
        assert!(other.allowed, "{other:?}");
    }

    async fn a_short_period_refills_after_waiting(state: &SharedState) {
        let quota = per(2, Duration::from_millis(200));
        assert!(check(state, "short", quota).await.allowed);
        assert!(check(state, "short", quota).await.allowed);
        let denied = check(state, "short", quota).await;
        assert!(!denied.allowed);
        assert!(
            denied.reset_after <= Duration::from_millis(200),
            "{denied:?}"
        );
        tokio::time::sleep(denied.reset_after + Duration::from_millis(20)).await;
        let first = check(state, "short", quota).await;
        assert!(first.allowed && first.remaining == 1, "{first:?}");
        assert!(check(state, "short", quota).await.allowed);
        assert!(!check(state, "short", quota).await.allowed);
    }

    async fn peek_reports_the_bucket_without_consuming_quota(state: &SharedState) {
        let quota = per(2, Duration::from_secs(60));
        let limiter = state.rate_limiter();
        for _ in 0..3 {
            let fresh = limiter.peek("peeked", quota).await.unwrap();
            assert!(fresh.allowed);
            assert_eq!(fresh.remaining, 2);
            assert_eq!(fresh.reset_after, Duration::ZERO);
        }
        let counted = check(state, "peeked", quota).await;
        assert_eq!(counted.remaining, 1);
        let after_one = limiter.peek("peeked", quota).await.unwrap();
        assert!(after_one.allowed);
        assert_eq!(after_one.remaining, 1);
        assert!(check(state, "peeked", quota).await.allowed);
        let exhausted = limiter.peek("peeked", quota).await.unwrap();
        assert!(!exhausted.allowed);
        assert_eq!(exhausted.remaining, 0);
        assert!(exhausted.retry_after.unwrap() > Duration::ZERO);
        // Peeking while exhausted must not have consumed anything either.
        let denied = check(state, "peeked", quota).await;
        assert!(!denied.allowed);
        assert!(denied.retry_after.unwrap() <= Duration::from_secs(30));
    }

    async fn concurrent_checks_never_allow_more_than_the_limit(state: &SharedState) {
        let quota = per(10, Duration::from_secs(60));
        let tasks = (0..25).map(|_| {
            let state = state.clone();
            tokio::spawn(async move { check(&state, "crowd", quota).await.allowed })
        });
        let results = futures_util::future::join_all(tasks).await;
        let allowed = results.into_iter().filter(|r| *r.as_ref().unwrap()).count();
        assert_eq!(allowed, 10);
    }

    async fn invalid_quotas_are_rejected_rather_than_guessed(state: &SharedState) {
        let limiter = state.rate_limiter();
        for quota in [
            per(0, Duration::from_secs(1)),
            per(1, Duration::ZERO),
            per(1, Duration::from_nanos(999)),
            per(1, Duration::from_secs(200 * 365 * 24 * 3600)),
        ] {
            let err = limiter.check("invalid", quota).await.unwrap_err();
            assert!(matches!(err, SharedStateError::InvalidQuota(_)), "{err}");
            let err = limiter.peek("invalid", quota).await.unwrap_err();
            assert!(matches!(err, SharedStateError::InvalidQuota(_)), "{err}");
        }
    }

    async fn cache_set_get_and_delete_round_trip(state: &SharedState) {
        let cache = state.cache();
        let ttl = Duration::from_secs(30);
        assert_eq!(cache.get("greeting").await.unwrap(), None);
        cache.set("greeting", b"hello", ttl).await.unwrap();
        assert_eq!(
            cache.get("greeting").await.unwrap(),
            Some(b"hello".to_vec())
        );
        cache.set("greeting", b"\x00binary\xff", ttl).await.unwrap();
        assert_eq!(
            cache.get("greeting").await.unwrap(),
            Some(b"\x00binary\xff".to_vec())
        );
        cache.delete("greeting").await.unwrap();
        assert_eq!(cache.get("greeting").await.unwrap(), None);
        cache.delete("greeting").await.unwrap();
    }

    async fn cache_entries_expire_after_their_ttl(state: &SharedState) {
        let cache = state.cache();
        cache
            .set("fleeting", b"v", Duration::from_millis(100))
            .await
            .unwrap();
        assert_eq!(cache.get("fleeting").await.unwrap(), Some(b"v".to_vec()));
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(cache.get("fleeting").await.unwrap(), None);
    }

    async fn cache_set_with_zero_ttl_removes_the_entry(state: &SharedState) {
        let cache = state.cache();
        cache
            .set("zero", b"v", Duration::from_secs(30))
            .await
            .unwrap();
        cache.set("zero", b"w", Duration::ZERO).await.unwrap();
        assert_eq!(cache.get("zero").await.unwrap(), None);
    }

    async fn ping_succeeds_when_the_backend_is_healthy(state: &SharedState) {
        state.ping().await.unwrap();
    }

    #[tokio::test]
    async fn in_process_state_reports_its_backend_and_has_no_pool() {
        let state = SharedState::in_process();
        assert_eq!(state.backend(), Backend::InProcess);
        assert_eq!(state.backend().as_str(), "in_process");
        assert_eq!(state.pool_status(), None);
    }

    #[tokio::test]
    async fn redis_state_reports_its_backend_and_pool_status() {
        let state = redis_state().await;
        assert_eq!(state.backend(), Backend::Redis);
        let (size, available) = state.pool_status().unwrap();
        assert!((1..=4).contains(&size), "size {size}");
        assert!(available <= size);
    }

    #[tokio::test]
    async fn two_replicas_on_the_same_prefix_share_one_limit() {
        let prefix = unique_prefix();
        let replica_a = redis_with_prefix(&prefix).await;
        let replica_b = redis_with_prefix(&prefix).await;
        let quota = per(3, Duration::from_secs(60));
        assert_eq!(check(&replica_a, "shared", quota).await.remaining, 2);
        assert_eq!(check(&replica_a, "shared", quota).await.remaining, 1);
        let seen_by_b = check(&replica_b, "shared", quota).await;
        assert!(
            seen_by_b.allowed && seen_by_b.remaining == 0,
            "{seen_by_b:?}"
        );
        assert!(!check(&replica_b, "shared", quota).await.allowed);
        assert!(!check(&replica_a, "shared", quota).await.allowed);

        replica_a
            .cache()
            .set("k", b"from a", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(
            replica_b.cache().get("k").await.unwrap(),
            Some(b"from a".to_vec())
        );
        replica_b.cache().delete("k").await.unwrap();
    }

    #[tokio::test]
    async fn different_prefixes_are_isolated() {
        let deployment_a = redis_state().await;
        let deployment_b = redis_state().await;
        let quota = per(1, Duration::from_secs(60));
        assert!(check(&deployment_a, "same-key", quota).await.allowed);
        assert!(!check(&deployment_a, "same-key", quota).await.allowed);
        assert!(check(&deployment_b, "same-key", quota).await.allowed);

        deployment_a
            .cache()
            .set("k", b"a", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(deployment_b.cache().get("k").await.unwrap(), None);
        deployment_a.cache().delete("k").await.unwrap();
    }

    #[tokio::test]
    async fn an_epoch_comes_back_with_the_rate_limit_check_and_moves_on_when_bumped() {
        let prefix = unique_prefix();
        let state = redis_with_prefix(&prefix).await;
        let quota = Quota {
            limit: 100,
            period: Duration::from_secs(60),
        };
        let first = state.epoch("keys").await.expect("an epoch with Redis");
        assert_eq!(state.epoch("keys").await.as_deref(), Some(first.as_str()));
        let (decision, seen) = state
            .rate_limiter()
            .check_with_epoch("k", quota, "keys")
            .await
            .unwrap();
        assert!(decision.allowed);
        assert_eq!(decision.remaining, 99, "the check counted the request");
        assert_eq!(seen.as_deref(), Some(first.as_str()));
        state.bump_epoch("keys").await.unwrap();
        let (_, moved) = state
            .rate_limiter()
            .check_with_epoch("k", quota, "keys")
            .await
            .unwrap();
        assert!(moved.is_some() && moved != Some(first.clone()));
        // Lost with Redis's data: no value is read, and the next one is new, never the old.
        let mut conn = redis::Client::open(redis_url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        redis::cmd("DEL")
            .arg(format!("{prefix}{EPOCH_NAMESPACE}keys"))
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
        let (_, lost) = state
            .rate_limiter()
            .check_with_epoch("k", quota, "keys")
            .await
            .unwrap();
        assert_eq!(lost, None);
        let again = state.epoch("keys").await.unwrap();
        assert!(again != first && Some(again.clone()) != moved);
        // Without Redis there is no shared epoch: nothing may be cached under one.
        let local = SharedState::in_process();
        assert_eq!(local.epoch("keys").await, None);
        local.bump_epoch("keys").await.unwrap();
        let (_, none) = local
            .rate_limiter()
            .check_with_epoch("k", quota, "keys")
            .await
            .unwrap();
        assert_eq!(none, None);
    }

    #[tokio::test]
    async fn connecting_to_a_closed_port_fails_fast_with_unavailable() {
        let started = Instant::now();
        let err = SharedState::redis("redis://127.0.0.1:1", &unique_prefix(), 4)
            .await
            .unwrap_err();
        assert!(matches!(err, SharedStateError::Unavailable(_)), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn an_unreachable_redis_degrades_to_in_process_limits_instead_of_failing() {
        let state = SharedState::redis_or_degraded("redis://127.0.0.1:1", &unique_prefix(), 2)
            .await
            .unwrap();
        assert!(state.is_degraded());
        assert_eq!(state.backend(), Backend::Redis);
        let quota = per(2, Duration::from_secs(60));
        let limiter = state.rate_limiter();
        assert!(limiter.check("k", quota).await.unwrap().allowed);
        assert!(limiter.check("k", quota).await.unwrap().allowed);
        assert!(
            !limiter.check("k", quota).await.unwrap().allowed,
            "the local limit still holds"
        );
        assert!(state.ping().await.is_err());
    }

    #[tokio::test]
    async fn a_reachable_redis_is_not_degraded() {
        let state = SharedState::redis_or_degraded(&redis_url(), &unique_prefix(), 2)
            .await
            .unwrap();
        assert!(!state.is_degraded());
        let quota = per(5, Duration::from_secs(60));
        assert_eq!(
            state
                .rate_limiter()
                .check("k", quota)
                .await
                .unwrap()
                .remaining,
            4
        );
        assert!(!state.is_degraded());
    }

    #[tokio::test]
    async fn errors_never_reveal_the_redis_password() {
        let url = "redis://flowlet:hunter2-s3cret@127.0.0.1:1/0";
        let err = SharedState::redis(url, &unique_prefix(), 4)
            .await
            .unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("hunter2-s3cret"), "{shown}");
        assert!(shown.contains("redis://***@127.0.0.1:1/0"), "{shown}");
    }

    #[test]
    fn redacted_urls_hide_userinfo_and_query_but_keep_the_host() {
        let cases = [
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            ("redis://:pw@host:6379", "redis://***@host:6379"),
            (
                "rediss://user:p@ss/w@host:6380/1",
                "rediss://***@host:6380/1",
            ),
            (
                "redis+unix:///tmp/r.sock?db=0&pass=pw",
                "redis+unix:///tmp/r.sock?***",
            ),
            ("not a url", "<unparseable Redis URL>"),
        ];
        for (url, shown) in cases {
            assert_eq!(Redactor::new(url).display_url, shown);
        }
        let redactor = Redactor::new("redis://user:topsecret@host");
        assert_eq!(
            redactor.scrub("auth topsecret failed".to_owned()),
            "auth *** failed"
        );
    }

    #[test]
    fn gcra_rounds_the_emission_interval_up_so_the_limit_is_never_exceeded() {
        let gcra = Gcra::new(per(3, Duration::from_secs(1))).unwrap();
        assert_eq!(gcra.interval, 333_334);
        assert_eq!(gcra.window, 1_000_002);
        let (first, stored) = decide(gcra, 0, true);
        assert_eq!(first.remaining, 2);
        assert_eq!(stored, Some(333_334));
        let (full, _) = decide(gcra, 2 * 333_334, true);
        assert!(full.allowed && full.remaining == 0);
        let (denied, stored) = decide(gcra, 3 * 333_334, true);
        assert!(!denied.allowed && stored.is_none());
        assert_eq!(denied.retry_after_us, 4 * 333_334 - 1_000_002);
    }

    #[tokio::test]
    async fn in_process_limiter_forgets_idle_keys_so_memory_stays_bounded() {
        let limiter = InProcessRateLimiter::new();
        let quota = per(1, Duration::from_millis(1));
        for i in 0..MIN_PRUNE_LEN {
            limiter.run(&format!("k{i}"), quota, true).unwrap();
        }
        assert_eq!(limiter.len(), MIN_PRUNE_LEN);
        tokio::time::sleep(Duration::from_millis(5)).await;
        limiter.run("fresh", quota, true).unwrap();
        assert_eq!(limiter.len(), 1);
    }

    #[tokio::test]
    async fn in_process_cache_sweeps_expired_entries_so_memory_stays_bounded() {
        let cache = InProcessCache::new();
        for i in 0..MIN_PRUNE_LEN {
            cache.set_now(&format!("k{i}"), b"v", Duration::from_millis(1));
        }
        assert_eq!(cache.len(), MIN_PRUNE_LEN);
        tokio::time::sleep(Duration::from_millis(5)).await;
        cache.set_now("fresh", b"v", Duration::from_secs(5));
        assert_eq!(cache.len(), 1);
    }
}
