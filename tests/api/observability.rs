//! What operators watch: the periodic ledger verification on /metrics, and the chart's Grafana
//! dashboard and alert rules naming only metrics that /metrics really exposes.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{TestApp, TestOptions, spawn_app_with};

/// The samples of /metrics, by metric name (histograms under their base name).
async fn scrape(app: &TestApp) -> prometheus_parse::Scrape {
    let text = app.get("/metrics").await.text().await.unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

fn gauge(scrape: &prometheus_parse::Scrape, name: &str) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name)
        .and_then(|s| match s.value {
            prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => Some(v),
            _ => None,
        })
}

/// Polls /metrics until `done` holds, for at most 20 s.
async fn wait_for_metrics(
    app: &TestApp,
    what: &str,
    done: impl Fn(&prometheus_parse::Scrape) -> bool,
) -> prometheus_parse::Scrape {
    let started = Instant::now();
    loop {
        let s = scrape(app).await;
        if done(&s) {
            return s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_ledger_is_verified_periodically_and_a_broken_invariant_shows_on_metrics() {
    let app =
        spawn_app_with(TestOptions::default().var("FLOWLET__LEDGER__VERIFY_INTERVAL_SECS", "1"))
            .await;
    let before = scrape(&app).await;
    assert_eq!(gauge(&before, "ledger_verify_violations"), Some(0.0));
    let ran = wait_for_metrics(&app, "a first verification", |s| {
        gauge(s, "ledger_verify_last_run_timestamp_seconds").is_some_and(|t| t > 0.0)
    })
    .await;
    assert_eq!(
        gauge(&ran, "ledger_verify_violations"),
        Some(0.0),
        "sound books"
    );
    let at = gauge(&ran, "ledger_verify_last_run_timestamp_seconds").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - at).abs() < 30.0, "{at}");

    // Books that no longer add up (an account's totals edited behind the ledger's back).
    let partner = app.new_partner().await;
    let created = app
        .post_as(
            &partner.key,
            "/v1/ledger/accounts",
            &json!({"currency": "USD", "code": 1}),
        )
        .await;
    assert_eq!(created.status().as_u16(), 201);
    app.sql("UPDATE ledger_accounts SET credits_posted = credits_posted + 1")
        .await;
    let broken = wait_for_metrics(&app, "the violation to be reported", |s| {
        gauge(s, "ledger_verify_violations").is_some_and(|v| v > 0.0)
    })
    .await;
    assert!(gauge(&broken, "ledger_verify_violations").unwrap() >= 1.0);
}
