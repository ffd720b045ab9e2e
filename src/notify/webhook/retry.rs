//! The retry schedule: how long to wait before the next delivery attempt (with deterministic
//! jitter), and when to give up.

use std::time::Duration;

/// Waits between attempts, in seconds: entry `n` is the wait after the
/// `n + 1`-th failed attempt. `MAX_ATTEMPTS - 1` entries.
const RETRY_SCHEDULE_SECS: [u64; 7] =
    [5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600];

/// How long to wait before the next attempt, given how many attempts have
/// failed so far, so failing endpoints are retried for about a day without
/// being hammered: ~5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h; `None` after
/// [`MAX_ATTEMPTS`](super::MAX_ATTEMPTS) failures (give up).
///
/// Each delay is spread by up to ±10 % so retries of many messages to one
/// endpoint do not arrive in lock-step. The spread is derived from
/// `jitter_seed` (e.g. a hash of the message id) and `attempts_made`, so it
/// is deterministic and testable. `attempts_made == 0` (nothing tried yet)
/// gives a zero delay.
#[must_use]
pub fn next_attempt_delay(attempts_made: u32, jitter_seed: u64) -> Option<Duration> {
    if attempts_made >= super::MAX_ATTEMPTS {
        return None;
    }
    let Some(index) = attempts_made.checked_sub(1) else {
        return Some(Duration::ZERO);
    };
    let base_secs = RETRY_SCHEDULE_SECS.get(usize::try_from(index).ok()?)?;
    let base_ms = base_secs.checked_mul(1000)?;
    let spread = base_ms / 10;
    let offset = splitmix64(jitter_seed ^ u64::from(attempts_made)) % (2 * spread + 1);
    // spread <= base_ms and offset <= 2 * spread: never negative, no overflow.
    Some(Duration::from_millis(base_ms - spread + offset))
}

/// SplitMix64 finaliser: turns nearby seeds into unrelated values.
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    use crate::notify::webhook::MAX_ATTEMPTS;

    const NOMINAL_SECS: [u64; 7] = [5, 300, 1800, 7200, 18_000, 36_000, 36_000];

    fn within_ten_percent(delay: Duration, nominal_secs: u64) -> bool {
        let nominal = Duration::from_secs(nominal_secs);
        delay >= nominal - nominal / 10 && delay <= nominal + nominal / 10
    }

    #[test]
    fn the_schedule_is_5s_5m_30m_2h_5h_10h_10h_within_ten_percent() {
        for seed in [0, 1, 42, u64::MAX] {
            for (made, nominal) in (1u32..).zip(NOMINAL_SECS) {
                let delay = next_attempt_delay(made, seed).unwrap();
                assert!(
                    within_ten_percent(delay, nominal),
                    "attempt {made}: {delay:?}"
                );
            }
        }
    }

    #[test]
    fn delivery_is_given_up_after_the_eighth_failed_attempt() {
        assert_eq!(MAX_ATTEMPTS, 8);
        assert_eq!(
            usize::try_from(MAX_ATTEMPTS - 1).unwrap(),
            RETRY_SCHEDULE_SECS.len()
        );
        assert!(next_attempt_delay(7, 3).is_some());
        assert_eq!(next_attempt_delay(8, 3), None);
        assert_eq!(next_attempt_delay(9, 3), None);
        assert_eq!(next_attempt_delay(u32::MAX, 3), None);
    }

    #[test]
    fn a_message_not_yet_attempted_goes_out_immediately() {
        assert_eq!(next_attempt_delay(0, 99), Some(Duration::ZERO));
    }

    #[test]
    fn jitter_is_deterministic_per_seed_and_varies_across_seeds() {
        assert_eq!(next_attempt_delay(3, 7), next_attempt_delay(3, 7));
        let distinct: std::collections::BTreeSet<Duration> = (0..64)
            .filter_map(|seed| next_attempt_delay(3, seed))
            .collect();
        assert!(
            distinct.len() > 32,
            "only {} distinct delays",
            distinct.len()
        );
    }

    proptest! {
        #[test]
        fn every_delay_stays_within_ten_percent_of_its_nominal_value(made in 1u32..8, seed in any::<u64>()) {
            let nominal = NOMINAL_SECS[usize::try_from(made - 1).unwrap()];
            let delay = next_attempt_delay(made, seed).unwrap();
            prop_assert!(within_ten_percent(delay, nominal), "{:?}", delay);
        }
    }
}
