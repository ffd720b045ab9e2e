//! What operators watch: the periodic ledger verification on /metrics, and the chart's Grafana
//! dashboard and alert rules naming only metrics that /metrics really exposes.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{TestApp, TestOptions, spawn_app, spawn_app_with};
use crate::kyc::load_test_list;
use crate::payments::{deposit, open_wallet, verified_customer};

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
/// Metric names in a dashboard or a rule expression: tokens of our prefixes, histogram series
/// named by their base name.
fn metric_names(text: &str) -> BTreeSet<String> {
    const PREFIXES: [&str; 7] = [
        "http_",
        "database_",
        "ledger_",
        "payment_",
        "payments_",
        "webhook_",
        "outbox_",
    ];
    text.split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
        .filter(|t| PREFIXES.iter().any(|p| t.starts_with(p)))
        .map(|t| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| t.strip_suffix(suffix))
                .unwrap_or(t)
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn the_charts_dashboard_and_alerts_name_only_metrics_that_metrics_exposes() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("chart");
    let dashboard = std::fs::read_to_string(root.join("dashboards/flowlet.json"))
        .expect("chart/dashboards/flowlet.json");
    let _: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let mut rules = String::new();
    for entry in std::fs::read_dir(root.join("templates")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default();
        if text.contains("kind: PrometheusRule") {
            rules.push_str(&text);
        }
    }
    assert!(!rules.is_empty(), "the chart has a PrometheusRule");
    let used: BTreeSet<String> = metric_names(&dashboard)
        .into_iter()
        .chain(metric_names(&rules))
        .collect();
    for expected in [
        "http_requests_total",
        "ledger_transfers_total",
        "payments_total",
        "outbox_pending",
        "ledger_verify_violations",
        "database_connections_max",
    ] {
        assert!(used.contains(expected), "{expected} is watched: {used:?}");
    }

    // Every family shows once it has a sample: requests, money moved, a webhook attempted.
    let app = spawn_app().await;
    load_test_list(&app).await;
    let partner = app.new_partner().await;
    let receiver = app
        .post_as(
            &partner.key,
            "/v1/webhook-endpoints",
            &json!({"url": "http://127.0.0.1:9/hook", "events": ["*"]}),
        )
        .await;
    assert_eq!(receiver.status().as_u16(), 201);
    let customer = verified_customer(&app, &partner).await;
    let wallet = open_wallet(&app, &partner.key, &customer, "USD").await;
    deposit(&app, &partner.key, &wallet, "10.00").await;
    let exposed = wait_for_metrics(&app, "a webhook delivery attempt", |s| {
        s.samples
            .iter()
            .any(|x| x.metric == "webhook_deliveries_total")
    })
    .await;
    let names: BTreeSet<String> = exposed.samples.iter().map(|s| s.metric.clone()).collect();
    let unknown: Vec<&String> = used.iter().filter(|m| !names.contains(*m)).collect();
    assert!(
        unknown.is_empty(),
        "the chart watches metrics /metrics does not expose: {unknown:?} (exposed: {names:?})"
    );
}
