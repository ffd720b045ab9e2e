//! The GCRA core shared by both backends: a quota validated into integer microseconds and the
//! decision itself (the Redis Lua script mirrors [`decide`] exactly).

use std::time::Duration;

use super::{Quota, RateDecision, SharedStateError};

/// Largest GCRA window (emission interval × limit) in µs: 2^52 µs ≈ 142 years.
/// Keeps `now + window` below 2^53 so Lua's doubles represent every value exactly.
const MAX_WINDOW_MICROS: u64 = 1 << 52;

/// A validated quota in integer microseconds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Gcra {
    /// Emission interval: ceil(period / limit), ≥ 1 µs.
    pub(super) interval: u64,
    /// Burst window: interval × limit (≥ period, by less than `limit` µs).
    pub(super) window: u64,
}

impl Gcra {
    pub(super) fn new(quota: Quota) -> Result<Gcra, SharedStateError> {
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
pub(super) struct Outcome {
    pub(super) allowed: bool,
    pub(super) remaining: u64,
    pub(super) reset_after_us: u64,
    pub(super) retry_after_us: u64,
}

impl Outcome {
    pub(super) fn into_decision(self, limit: u64) -> RateDecision {
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
pub(super) fn decide(gcra: Gcra, backlog: u64, count: bool) -> (Outcome, Option<u64>) {
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
