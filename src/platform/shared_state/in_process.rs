//! The in-process backend: GCRA and a TTL cache over mutex-guarded maps that sweep out dead
//! entries as they grow, for a single replica without Redis (and for a Redis outage).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::gcra::{Gcra, decide};
use super::{BoxFuture, Cache, MAX_CACHE_TTL, Quota, RateDecision, RateLimiter, SharedStateError};

/// In-process maps are swept for expired entries once they grow to at least this many
/// entries; after a sweep the threshold becomes twice the surviving size, so sweeping is
/// amortised O(1) per call and memory stays within 2× the live entries (plus this floor).
pub(super) const MIN_PRUNE_LEN: usize = 1024;

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
pub(super) struct InProcessRateLimiter {
    epoch: Instant,
    tats: Mutex<PrunedMap<u64>>,
}

impl InProcessRateLimiter {
    pub(super) fn new() -> Self {
        InProcessRateLimiter {
            epoch: Instant::now(),
            tats: Mutex::new(PrunedMap::new()),
        }
    }

    fn now_micros(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    pub(super) fn run(
        &self,
        key: &str,
        quota: Quota,
        count: bool,
    ) -> Result<RateDecision, SharedStateError> {
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
    pub(super) fn len(&self) -> usize {
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
pub(super) struct InProcessCache {
    entries: Mutex<PrunedMap<CacheEntry>>,
}

impl InProcessCache {
    pub(super) fn new() -> Self {
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

    pub(super) fn set_now(&self, key: &str, value: &[u8], ttl: Duration) {
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
    pub(super) fn len(&self) -> usize {
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
