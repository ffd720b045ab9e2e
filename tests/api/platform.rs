//! The platform routes: /health, /ready, /metrics, /openapi.json, /docs, and request ids.

use std::collections::BTreeSet;

use crate::helpers::{TestOptions, assert_problem, spawn_app, spawn_app_with};

#[tokio::test]
async fn health_answers_200_ok() {
    let app = spawn_app().await;
    let resp = app.get("/health").await;
    assert_eq!(resp.status().as_u16(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"status": "ok"}));
}

#[tokio::test]
async fn ready_reports_every_dependency_up() {
    let app = spawn_app().await;
    let resp = app.get("/ready").await;
    assert_eq!(resp.status().as_u16(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["database"]["status"], "up");
    assert_eq!(body["checks"]["migrations"]["status"], "up");
    assert_eq!(body["checks"]["redis"]["status"], "up");
}

#[tokio::test]
async fn ready_without_redis_configured_reports_the_in_process_fallback() {
    let app = spawn_app_with(TestOptions::default().var("FLOWLET__REDIS__URL", "")).await;
    let body: serde_json::Value = app.get("/ready").await.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["redis"]["status"], "in_process");
}

#[tokio::test]
async fn ready_is_503_when_a_migration_is_missing() {
    let app = spawn_app().await;
    let mut conn = app.db().await;
    use diesel_async::SimpleAsyncConnection;
    conn.batch_execute("DELETE FROM __diesel_schema_migrations")
        .await
        .unwrap();
    let body = assert_problem(app.get("/ready").await, 503, "not_ready").await;
    assert_eq!(body["checks"]["migrations"]["status"], "down");
    assert_eq!(body["checks"]["database"]["status"], "up");
    // Status words only: anyone may ask, and reasons can name hosts, users or versions.
    assert_eq!(
        body["checks"]["migrations"],
        serde_json::json!({"status": "down"})
    );
    assert!(!body.to_string().contains("pending"), "{body}");
}

#[tokio::test]
async fn a_client_request_id_is_echoed_and_otherwise_one_is_made() {
    let app = spawn_app().await;
    let resp = app
        .client
        .get(app.url("/health"))
        .header("x-request-id", "partner-trace-42")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "partner-trace-42");

    let made = app.get("/health").await;
    let id = made.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);
}

#[tokio::test]
async fn an_unsafe_client_request_id_is_replaced_not_echoed() {
    let app = spawn_app().await;
    let resp = app
        .client
        .get(app.url("/health"))
        .header("x-request-id", "evil\tinjected line")
        .send()
        .await
        .unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap();
    assert_ne!(id, "evil\tinjected line");
    assert!(uuid::Uuid::parse_str(id).is_ok());
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_label_routes_by_template() {
    let app = spawn_app().await;
    app.get("/health").await;
    app.get("/health").await;
    app.get("/no/such/path/12345").await;
    let resp = app.get("/metrics").await;
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = resp.text().await.unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("valid Prometheus text exposition");

    let value = |name: &str, labels: &[(&str, &str)]| -> Option<f64> {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    };
    assert_eq!(
        value(
            "http_requests_total",
            &[("method", "GET"), ("route", "/health"), ("status", "200")]
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            "http_requests_total",
            &[("route", "unmatched"), ("status", "404")]
        ),
        Some(1.0)
    );
    assert!(
        !text.contains("/no/such/path"),
        "raw paths must never become labels"
    );
    assert!(value("database_connections_active", &[]).is_some());
    assert!(value("database_connections_idle", &[]).is_some());
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "http_request_duration_seconds"
                && s.labels.get("route") == Some("/health")),
        "the latency histogram is labelled by route template"
    );
}

/// Every route the code registers: the literal of each `web::resource("...")` under src/.
fn registered_routes() -> BTreeSet<String> {
    fn walk(dir: &std::path::Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let source = std::fs::read_to_string(&path).unwrap();
                for piece in source.split("web::resource(\"").skip(1) {
                    out.insert(piece.split('"').next().unwrap().to_owned());
                }
            }
        }
    }
    let mut routes = BTreeSet::new();
    walk(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut routes,
    );
    routes
}

#[tokio::test]
async fn openapi_documents_every_route_and_every_documented_route_exists() {
    let app = spawn_app().await;
    let resp = app.get("/openapi.json").await;
    assert_eq!(resp.status().as_u16(), 200);
    let spec: serde_json::Value = resp.json().await.unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    let documented: BTreeSet<String> = spec["paths"].as_object().unwrap().keys().cloned().collect();
    let registered = registered_routes();
    assert!(registered.len() >= 5, "{registered:?}");
    for route in &registered {
        assert!(
            documented.contains(route),
            "{route} is registered but not documented"
        );
    }
    for route in &documented {
        assert!(
            registered.contains(route),
            "{route} is documented but not registered"
        );
    }
    for path in &documented {
        if !path.contains('{') && spec["paths"][path]["get"].is_object() {
            let status = app.get(path).await.status().as_u16();
            assert!(
                status != 404 && status != 405,
                "{path} is documented but answers {status}"
            );
        }
    }
}

/// Every `$ref` of the document names a component, and every list a route answers is one
/// `List_<Item>` component shaped `{data: [Item], next_cursor}`, its items a reference to the
/// item's own component.
#[test]
fn openapi_references_resolve_and_every_list_is_the_one_envelope() {
    let spec = serde_json::to_value(flowlet::app::openapi()).unwrap();
    let schemas = spec["components"]["schemas"].as_object().unwrap();
    fn refs<'a>(value: &'a serde_json::Value, out: &mut Vec<&'a str>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(r) = map.get("$ref").and_then(|r| r.as_str()) {
                    out.push(r);
                }
                map.values().for_each(|v| refs(v, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    refs(&spec, &mut found);
    assert!(!found.is_empty());
    for reference in found {
        let name = reference
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{reference} points outside the components"));
        assert!(
            schemas.contains_key(name),
            "{reference} resolves to nothing"
        );
    }
    let lists: Vec<&String> = schemas.keys().filter(|k| k.starts_with("List_")).collect();
    for expected in [
        "List_Wallet",
        "List_Transaction",
        "List_Payment",
        "List_Customer",
        "List_Application",
        "List_Endpoint",
        "List_Attempt",
        "List_Event",
        "List_ApiKey",
        "List_EntryView",
    ] {
        assert!(
            lists.iter().any(|l| *l == expected),
            "{expected} missing from {lists:?}"
        );
    }
    for list in lists {
        let schema = &schemas[list];
        let item = list.trim_start_matches("List_");
        assert_eq!(
            schema["properties"]["data"]["items"]["$ref"],
            format!("#/components/schemas/{item}"),
            "{list}: {schema}"
        );
        assert!(
            schema["properties"]["next_cursor"].is_object(),
            "{list}: {schema}"
        );
        assert_eq!(
            schema["required"],
            serde_json::json!(["data"]),
            "{list}: {schema}"
        );
    }
}

#[tokio::test]
async fn docs_is_a_self_contained_html_page_listing_every_documented_path() {
    let app = spawn_app().await;
    let spec: serde_json::Value = app.get("/openapi.json").await.json().await.unwrap();
    let resp = app.get("/docs").await;
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = resp.text().await.unwrap();
    for path in spec["paths"].as_object().unwrap().keys() {
        assert!(html.contains(path.as_str()), "{path} missing from /docs");
    }
    assert!(
        !html.contains("<script src"),
        "nothing may be fetched from elsewhere"
    );
    assert!(
        !html.contains("https://"),
        "nothing may be fetched from elsewhere"
    );
}

#[tokio::test]
async fn graceful_stop_lets_an_in_flight_request_finish() {
    let app = spawn_app().await;
    let client = app.client.clone();
    let url = app.url("/__test/slow");
    let in_flight = tokio::spawn(async move { client.get(url).send().await });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    app.stop().await;
    let resp = in_flight
        .await
        .unwrap()
        .expect("the in-flight request completed");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.text().await.unwrap(), "done");
    assert!(
        app.client.get(app.url("/health")).send().await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn a_database_outage_every_pod_shares_keeps_the_pod_ready_and_requests_fail_fast() {
    use flowlet::platform::db::embedded::{EmbeddedPostgres, Placement};
    // A database of this test's own, so it can be stopped.
    let dir = tempfile::tempdir().unwrap();
    let pg = EmbeddedPostgres::start(&dir.path().join("pg"), Placement::Relocatable)
        .await
        .unwrap();
    let mut admin = flowlet::platform::db::PgConnector::new(&pg.url(), None)
        .unwrap()
        .connect()
        .await
        .unwrap();
    use diesel_async::SimpleAsyncConnection;
    admin.batch_execute("CREATE DATABASE outage").await.unwrap();
    drop(admin);
    let url = pg.url_for_database("outage");
    let app = spawn_app_with(
        TestOptions::default()
            .var("FLOWLET__DATABASE__URL", url.clone())
            .var("FLOWLET__DATABASE__POOL_TIMEOUT_MS", "1000")
            .var("FLOWLET__DATABASE__CONNECT_TIMEOUT_MS", "1000"),
    )
    .await;
    let key = crate::tls::partner_key(&app, &url, None).await;
    assert_eq!(app.get_as(&key, "/v1/wallets").await.status().as_u16(), 200);

    pg.stop().await.unwrap();
    // The pod stays in rotation: the outage is everyone's, and /ready says what it sees.
    let resp = app.get("/ready").await;
    assert_eq!(resp.status().as_u16(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["database"]["status"], "down");
    assert_eq!(body["checks"]["migrations"]["status"], "unknown");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("database_up 0"), "{metrics}");
    // A request gets a clear, retryable 503 rather than a hang.
    let body = assert_problem(
        app.get_as(&key, "/v1/wallets").await,
        503,
        "database_unavailable",
    )
    .await;
    assert_eq!(body["status"], 503);
}

#[tokio::test]
async fn a_pod_that_is_shutting_down_is_not_ready() {
    let app = spawn_app().await;
    assert_eq!(app.get("/ready").await.status().as_u16(), 200);
    app.drain.store(true, std::sync::atomic::Ordering::Relaxed);
    let body = assert_problem(app.get("/ready").await, 503, "not_ready").await;
    assert!(
        body["detail"].as_str().unwrap().contains("shutting down"),
        "{body}"
    );
    // Liveness is unaffected: the process is fine, it is leaving.
    assert_eq!(app.get("/health").await.status().as_u16(), 200);
}
