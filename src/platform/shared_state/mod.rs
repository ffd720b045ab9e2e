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

mod gcra;
mod in_process;
mod redis_backend;
#[cfg(test)]
mod tests;

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use in_process::{InProcessCache, InProcessRateLimiter};
use redis_backend::{Redactor, RedisStore, ResilientRateLimiter};

/// A boxed, `Send` future, so the traits below stay object-safe (`Arc<dyn RateLimiter>`)
/// without pulling in an async-trait macro.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Readiness probes must answer quickly, so PING gets a tighter budget.
const PING_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest cache TTL honoured; longer values are clamped so expiry arithmetic
/// (Redis PX, `Instant + Duration`) can never overflow. About 100 years.
const MAX_CACHE_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

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
        ca_file: Option<&Path>,
    ) -> Result<SharedState, SharedStateError> {
        let redactor = Redactor::new(url);
        let store =
            Arc::new(RedisStore::connect(url, key_prefix, pool_size, ca_file, redactor).await?);
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
        ca_file: Option<&Path>,
    ) -> Result<SharedState, SharedStateError> {
        let redactor = Redactor::new(url);
        let store =
            Arc::new(RedisStore::connect(url, key_prefix, pool_size, ca_file, redactor).await?);
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
