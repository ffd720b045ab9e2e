//! Rate limits as API.md states them: per IP on unauthenticated requests and failed
//! authentications, per key or user, per partner; shared through Redis, in-process without it.

use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::helpers::{TestApp, TestOptions, assert_problem, spawn_app, spawn_app_with};

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn remaining(resp: &reqwest::Response) -> u64 {
    header(resp, "ratelimit-remaining")
        .expect("RateLimit-Remaining on every /v1 response")
        .parse()
        .unwrap()
}

async fn me(app: &TestApp, token: &str) -> reqwest::Response {
    app.get_as(token, "/v1/auth/me").await
}

/// The 429 a limited request gets: problem+json, Retry-After, and a spent limit.
async fn assert_limited(resp: reqwest::Response) {
    let retry_after: u64 = header(&resp, "retry-after")
        .expect("Retry-After on a 429")
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    assert_eq!(remaining(&resp), 0);
    assert_problem(resp, 429, "rate_limited").await;
}

#[tokio::test]
async fn the_headers_count_down_and_the_key_limit_answers_429_with_retry_after() {
    let app =
        spawn_app_with(TestOptions::default().var("FLOWLET__RATE_LIMIT__KEY_PER_HOUR", "5")).await;
    let partner = app.new_partner().await;
    for expected in (0..5).rev() {
        let resp = me(&app, &partner.key).await;
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(header(&resp, "ratelimit-limit").as_deref(), Some("5"));
        assert_eq!(remaining(&resp), expected);
        let reset: u64 = header(&resp, "ratelimit-reset").unwrap().parse().unwrap();
        assert!((1..=3600).contains(&reset), "{reset}");
    }
    assert_limited(me(&app, &partner.key).await).await;
    // Another key of the same partner has its own budget.
    let other = app
        .auth()
        .await
        .create_api_key(
            &flowlet::auth::Caller::Operator("test".into()),
            Some(partner.id),
            "second",
            None,
            None,
            &flowlet::auth::RequestMeta::default(),
        )
        .await
        .unwrap();
    let other = secrecy::ExposeSecret::expose_secret(&other.secret).to_owned();
    assert_eq!(me(&app, &other).await.status().as_u16(), 200);
}

#[tokio::test]
async fn limits_hold_across_two_app_instances_sharing_redis() {
    let a =
        spawn_app_with(TestOptions::default().var("FLOWLET__RATE_LIMIT__KEY_PER_HOUR", "4")).await;
    let b = spawn_app_with(
        TestOptions::default()
            .sharing(&a)
            .var("FLOWLET__RATE_LIMIT__KEY_PER_HOUR", "4"),
    )
    .await;
    let partner = a.new_partner().await;
    assert_eq!(remaining(&me(&a, &partner.key).await), 3);
    assert_eq!(
        remaining(&me(&b, &partner.key).await),
        2,
        "B counts on from A's count"
    );
    assert_eq!(remaining(&me(&a, &partner.key).await), 1);
    assert_eq!(remaining(&me(&b, &partner.key).await), 0);
    assert_limited(me(&a, &partner.key).await).await;
    assert_limited(me(&b, &partner.key).await).await;
}

#[tokio::test]
async fn unauthenticated_requests_are_limited_per_ip() {
    let app =
        spawn_app_with(TestOptions::default().var("FLOWLET__RATE_LIMIT__IP_PER_MINUTE", "3")).await;
    let body = serde_json::json!({"email": "nobody@example.com", "password": "whatever-it-is-1"});
    for expected in (0..3).rev() {
        let resp = app.post_json("/v1/auth/login", &body).await;
        assert_eq!(remaining(&resp), expected);
        assert_problem(resp, 401, "invalid_credentials").await;
    }
    assert_limited(app.post_json("/v1/auth/login", &body).await).await;
    assert_limited(
        app.post_json(
            "/v1/auth/password-reset",
            &serde_json::json!({"email": "a@b.co"}),
        )
        .await,
    )
    .await;
}

#[tokio::test]
async fn failed_authentications_count_against_the_ip_but_valid_keys_do_not() {
    let app =
        spawn_app_with(TestOptions::default().var("FLOWLET__RATE_LIMIT__IP_PER_MINUTE", "2")).await;
    let partner = app.new_partner().await;
    for _ in 0..2 {
        assert_problem(
            me(&app, "flk_test_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").await,
            401,
            "unauthorized",
        )
        .await;
    }
    assert_limited(me(&app, "not-a-token").await).await;
    let resp = me(&app, &partner.key).await;
    assert_eq!(
        resp.status().as_u16(),
        200,
        "a valid key is limited per key, not per IP"
    );
}

#[tokio::test]
async fn the_partner_limit_binds_across_all_its_keys() {
    let app =
        spawn_app_with(TestOptions::default().var("FLOWLET__RATE_LIMIT__PARTNER_PER_HOUR", "3"))
            .await;
    let partner = app.new_partner().await;
    let second: Value = app
        .post_as(
            &partner.key,
            "/v1/api-keys",
            &serde_json::json!({"name": "second"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let second = second["secret"].as_str().unwrap().to_owned();
    let resp = me(&app, &partner.key).await;
    assert_eq!(
        header(&resp, "ratelimit-limit").as_deref(),
        Some("3"),
        "the partner limit is the tightest"
    );
    assert_eq!(remaining(&resp), 1, "creating the second key counted too");
    assert_eq!(remaining(&me(&app, &second).await), 0);
    assert_limited(me(&app, &second).await).await;
}

#[tokio::test]
async fn a_partners_own_limit_overrides_the_default() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let mut conn = app.db().await;
    diesel_async::SimpleAsyncConnection::batch_execute(
        &mut conn,
        &format!(
            "UPDATE auth_partners SET rate_limit_per_hour = 2 WHERE id = '{}'",
            partner.id.uuid()
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        header(&me(&app, &partner.key).await, "ratelimit-limit").as_deref(),
        Some("2")
    );
    me(&app, &partner.key).await;
    assert_limited(me(&app, &partner.key).await).await;
}

#[tokio::test]
async fn without_redis_the_limits_hold_in_process() {
    let app = spawn_app_with(
        TestOptions::default()
            .var("FLOWLET__REDIS__URL", "")
            .var("FLOWLET__RATE_LIMIT__KEY_PER_HOUR", "2"),
    )
    .await;
    let partner = app.new_partner().await;
    assert_eq!(remaining(&me(&app, &partner.key).await), 1);
    assert_eq!(remaining(&me(&app, &partner.key).await), 0);
    assert_limited(me(&app, &partner.key).await).await;
    let ready: Value = app.get("/ready").await.json().await.unwrap();
    assert_eq!(ready["checks"]["redis"]["status"], "in_process");
}

/// A private Redis this test can kill.
struct PrivateRedis {
    child: Child,
    port: u16,
}

impl PrivateRedis {
    fn start() -> PrivateRedis {
        let port = crate::helpers::free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed for this test (CI installs it)");
        crate::helpers::wait_for_port(port, "redis-server");
        PrivateRedis { child, port }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test]
async fn when_redis_dies_the_service_keeps_serving_with_local_limits_and_ready_says_degraded() {
    let mut redis = PrivateRedis::start();
    let app = spawn_app_with(
        TestOptions::default()
            .var(
                "FLOWLET__REDIS__URL",
                format!("redis://127.0.0.1:{}", redis.port),
            )
            .var("FLOWLET__RATE_LIMIT__KEY_PER_HOUR", "3"),
    )
    .await;
    let partner = app.new_partner().await;
    assert_eq!(remaining(&me(&app, &partner.key).await), 2);
    let ready: Value = app.get("/ready").await.json().await.unwrap();
    assert_eq!(ready["checks"]["redis"]["status"], "up");

    redis.kill();
    // Served, and still limited (per replica now).
    for expected in (0..3).rev() {
        let resp = me(&app, &partner.key).await;
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(remaining(&resp), expected);
    }
    assert_limited(me(&app, &partner.key).await).await;
    let resp = app.get("/ready").await;
    assert_eq!(
        resp.status().as_u16(),
        200,
        "a Redis outage does not take the pod out"
    );
    let ready: Value = resp.json().await.unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["checks"]["redis"]["status"], "degraded");
}

#[tokio::test]
async fn disabled_limits_neither_count_nor_refuse() {
    let app = spawn_app_with(
        TestOptions::default()
            .var("FLOWLET__RATE_LIMIT__ENABLED", "false")
            .var("FLOWLET__RATE_LIMIT__KEY_PER_HOUR", "1"),
    )
    .await;
    let partner = app.new_partner().await;
    for _ in 0..3 {
        let resp = me(&app, &partner.key).await;
        assert_eq!(resp.status().as_u16(), 200);
        assert!(header(&resp, "ratelimit-limit").is_none());
    }
}

#[tokio::test]
async fn platform_routes_are_never_limited() {
    let app =
        spawn_app_with(TestOptions::default().var("FLOWLET__RATE_LIMIT__IP_PER_MINUTE", "1")).await;
    for path in [
        "/health",
        "/health",
        "/ready",
        "/metrics",
        "/openapi.json",
        "/health",
    ] {
        let resp = app.get(path).await;
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        assert!(header(&resp, "ratelimit-limit").is_none(), "{path}");
    }
}
