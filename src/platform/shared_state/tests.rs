//! Tests of the shared state: every behaviour on both backends, Redis-only sharing, epochs and
//! outages, redaction, and the GCRA and in-process internals.

use std::time::Instant;

use deadpool_redis::redis;

use super::gcra::{Gcra, decide};
use super::in_process::{InProcessCache, InProcessRateLimiter, MIN_PRUNE_LEN};
use super::redis_backend::{EPOCH_NAMESPACE, Redactor};
use super::*;

/// The Redis the tests use (FLOWLET_TEST_REDIS_URL, 127.0.0.1:6379, or one of their own).
fn redis_url() -> String {
    crate::platform::test_redis::url().to_owned()
}

fn unique_prefix() -> String {
    format!("t:{}:", uuid::Uuid::now_v7())
}

async fn redis_with_prefix(prefix: &str) -> SharedState {
    SharedState::redis(&redis_url(), prefix, 4, None)
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

async fn allows_exactly_the_limit_in_a_burst_then_denies_with_a_retry_after(state: &SharedState) {
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
    let err = SharedState::redis("redis://127.0.0.1:1", &unique_prefix(), 4, None)
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
    let state = SharedState::redis_or_degraded("redis://127.0.0.1:1", &unique_prefix(), 2, None)
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
    let state = SharedState::redis_or_degraded(&redis_url(), &unique_prefix(), 2, None)
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
    let err = SharedState::redis(url, &unique_prefix(), 4, None)
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
