//! The Redis backend: the pooled store that runs the GCRA script and the cache, the redaction
//! that keeps credentials out of its messages, and the rate limiter that falls back to this
//! process while Redis is unreachable.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_redis::redis::{self, ErrorKind, RedisError, ServerErrorKind};
use deadpool_redis::{Connection, Manager, Pool, PoolConfig, PoolError, Runtime, Timeouts};

use super::gcra::{Gcra, Outcome};
use super::in_process::InProcessRateLimiter;
use super::{BoxFuture, Cache, MAX_CACHE_TTL, Quota, RateDecision, RateLimiter, SharedStateError};

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
/// Startup connection check budget: fail fast rather than hang the boot.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(2);
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
pub(super) const EPOCH_NAMESPACE: &str = "epoch:";

/// Keeps Redis credentials out of every message this module produces.
#[derive(Debug)]
pub(super) struct Redactor {
    /// The URL with userinfo and query replaced by `***`, safe to log.
    pub(super) display_url: String,
    /// Raw secret substrings (userinfo, password, query) scrubbed from error texts.
    secrets: Vec<String>,
}

impl Redactor {
    pub(super) fn new(url: &str) -> Redactor {
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

    pub(super) fn scrub(&self, message: String) -> String {
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
pub(super) struct RedisStore {
    pub(super) pool: Pool,
    key_prefix: String,
    gcra_script: redis::Script,
    pub(super) redactor: Redactor,
}

impl RedisStore {
    pub(super) async fn connect(
        url: &str,
        key_prefix: &str,
        pool_size: usize,
        ca_file: Option<&Path>,
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
        // rediss:// is TLS (rustls, the process's ring provider): verified against `ca_file`
        // when given (redis.ca_file), else the system's roots.
        crate::platform::tls::install_crypto_provider();
        let client = match ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    redactor.unavailable(format!("reading redis.ca_file {}: {e}", path.display()))
                })?;
                redis::Client::build_with_tls(
                    url,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem),
                    },
                )
            }
            None => redis::Client::open(url),
        }
        .map_err(|e| redactor.unavailable(format!("invalid Redis URL {shown}: {e}")))?;
        let manager = Manager::new(client.get_connection_info().clone())
            .map_err(|e| redactor.unavailable(format!("invalid Redis URL {shown}: {e}")))?;
        let pool = Pool::builder(manager)
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
    pub(super) async fn check_reachable(&self) -> Result<(), SharedStateError> {
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

    pub(super) async fn ping(&self, budget: Duration) -> Result<(), SharedStateError> {
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

    pub(super) async fn epoch(&self, name: &str) -> Result<String, SharedStateError> {
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

    pub(super) async fn bump_epoch(&self, name: &str) -> Result<(), SharedStateError> {
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
pub(super) struct ResilientRateLimiter {
    pub(super) redis: Arc<RedisStore>,
    pub(super) local: InProcessRateLimiter,
    pub(super) degraded: Arc<AtomicBool>,
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
