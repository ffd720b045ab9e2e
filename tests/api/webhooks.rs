//! Events and webhooks end to end: a real HTTP receiver (an actix server on port 0), with
//! signatures checked by a verifier written here from the Standard Webhooks specification
//! (not by calling the service's signer).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use flowlet::notify::{NewEvent, Outbox, TransactionalOutbox};
use flowlet::platform::db::DbError;
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, TestOptions, TestPartner, assert_problem, spawn_app, spawn_app_with,
};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// What the receiver answers next: a status, after an optional delay. Empty: 200 at once.
type Script = VecDeque<(u16, Duration)>;

/// A webhook receiver: records every request, answers as scripted.
pub struct Receiver {
    pub url: String,
    log: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<Script>>,
    handle: ServerHandle,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let log: Arc<Mutex<Vec<Received>>> = Arc::default();
        let script: Arc<Mutex<Script>> = Arc::default();
        let (l, s) = (log.clone(), script.clone());
        let server = HttpServer::new(move || {
            let (l, s) = (l.clone(), s.clone());
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let (l, s) = (l.clone(), s.clone());
                async move {
                    let header = |name: &str| {
                        req.headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned()
                    };
                    l.lock().unwrap().push(Received {
                        id: header("webhook-id"),
                        timestamp: header("webhook-timestamp"),
                        signature: header("webhook-signature"),
                        body: body.to_vec(),
                    });
                    let (status, delay) = s
                        .lock()
                        .unwrap()
                        .pop_front()
                        .unwrap_or((200, Duration::ZERO));
                    tokio::time::sleep(delay).await;
                    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
                        .body(format!("answered {status}"))
                }
            }))
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .unwrap();
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Receiver {
            url: format!("http://127.0.0.1:{port}/hooks"),
            log,
            script,
            handle,
        }
    }

    pub fn answer(&self, replies: &[(u16, Duration)]) {
        self.script.lock().unwrap().extend(replies.iter().copied());
    }

    pub fn received(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until `n` requests arrived (or fails after 10 s).
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let started = Instant::now();
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "only {} of {n} deliveries arrived",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

/// The Standard Webhooks verification, from the specification: the secret is the base64
/// after `whsec_`; the signed content is `{id}.{timestamp}.{body}`; the header holds
/// space-separated `v1,<base64 HMAC-SHA256>` signatures, any of which may match; the
/// timestamp must be within five minutes.
pub fn verify(secret: &str, r: &Received) -> bool {
    let Some(key) = secret
        .strip_prefix("whsec_")
        .and_then(|b| STANDARD.decode(b).ok())
    else {
        return false;
    };
    let Ok(ts) = r.timestamp.parse::<i64>() else {
        return false;
    };
    if (chrono::Utc::now().timestamp() - ts).abs() > 300 {
        return false;
    }
    let mut content = format!("{}.{}.", r.id, r.timestamp).into_bytes();
    content.extend_from_slice(&r.body);
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(&content);
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    r.signature
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|sig| sig == expected)
}

/// Creates an endpoint over HTTP; returns its id and secret.
pub(crate) async fn endpoint(
    app: &TestApp,
    partner: &TestPartner,
    url: &str,
    events: Value,
) -> (String, String) {
    let resp = app
        .post_as(
            &partner.key,
            "/v1/webhook-endpoints",
            &json!({"url": url, "events": events}),
        )
        .await;
    assert_eq!(resp.status().as_u16(), 201, "{:?}", resp.text().await);
    let v: Value = resp.json().await.unwrap();
    (
        v["id"].as_str().unwrap().to_owned(),
        v["secret"].as_str().unwrap().to_owned(),
    )
}

/// Records an event as a module would, in its own transaction; `commit = false` rolls back.
async fn record(
    app: &TestApp,
    partner: &TestPartner,
    event_type: &str,
    data: Value,
    commit: bool,
) -> Option<String> {
    let db = app.pool();
    let event_type = event_type.to_owned();
    let partner_id = partner.id;
    let result = db
        .in_tx(|tx| {
            let event = NewEvent {
                partner_id: Some(partner_id),
                event_type: event_type.clone(),
                data: data.clone(),
            };
            Box::pin(async move {
                let id = TransactionalOutbox.record_event(tx, event).await?;
                if commit {
                    Ok(id)
                } else {
                    Err(DbError::Unavailable("the change failed".into()))
                }
            })
        })
        .await;
    result.ok().map(|id| id.to_string())
}

/// Makes every pending delivery due now (instead of waiting out the backoff).
async fn due_now(app: &TestApp) {
    app.sql("UPDATE notify_deliveries SET next_attempt_at = now() WHERE status = 'pending'")
        .await;
}

#[tokio::test]
async fn an_event_is_delivered_signed_to_the_endpoints_whose_filters_match() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let receiver = Receiver::start().await;
    let other = Receiver::start().await;
    let (_, secret) = endpoint(&app, &partner, &receiver.url, json!(["payment.*"])).await;
    endpoint(
        &app,
        &partner,
        &other.url,
        json!(["card.authorization.approved"]),
    )
    .await;

    let id = record(
        &app,
        &partner,
        "payment.completed",
        json!({"payment_id": "pay_1", "amount": "10.00"}),
        true,
    )
    .await
    .unwrap();
    let got = receiver.wait_for(1).await;
    assert_eq!(got[0].id, id, "webhook-id is the event id");
    assert!(verify(&secret, &got[0]), "the signature verifies");
    let body = got[0].json();
    assert_eq!(body["id"], id);
    assert_eq!(body["type"], "payment.completed");
    assert_eq!(body["data"]["amount"], "10.00");
    assert!(body["created"].is_string());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        other.received().is_empty(),
        "a non-matching endpoint gets nothing"
    );
    assert_eq!(receiver.received().len(), 1, "delivered once");

    let listed: Value = app
        .get_as(&partner.key, "/v1/events?type=payment.completed")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"][0]["id"], id);
    let one: Value = app
        .get_as(&partner.key, &format!("/v1/events/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one["type"], "payment.completed");
}

#[tokio::test]
async fn an_event_recorded_in_a_rolled_back_transaction_is_never_delivered() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let receiver = Receiver::start().await;
    endpoint(&app, &partner, &receiver.url, json!(["*"])).await;
    assert!(
        record(&app, &partner, "payment.created", json!({}), false)
            .await
            .is_none()
    );
    let committed = record(&app, &partner, "payment.failed", json!({}), true)
        .await
        .unwrap();
    let got = receiver.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 1);
    assert_eq!(got[0].id, committed);
    assert_eq!(app.count("notify_events").await, 1);
    let listed: Value = app
        .get_as(&partner.key, "/v1/events")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn failed_deliveries_are_retried_with_the_same_webhook_id_and_every_attempt_is_listed() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let receiver = Receiver::start().await;
    receiver.answer(&[(500, Duration::ZERO), (503, Duration::ZERO)]);
    let (endpoint_id, secret) = endpoint(&app, &partner, &receiver.url, json!(["payment.*"])).await;
    let id = record(&app, &partner, "payment.created", json!({"n": 1}), true)
        .await
        .unwrap();
    receiver.wait_for(1).await;
    for n in 2..=3 {
        // The backoff says 5 s then 5 min; the test does not wait for it.
        let started = Instant::now();
        while app.count("notify_attempts").await < n - 1 {
            assert!(started.elapsed() < Duration::from_secs(5));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        due_now(&app).await;
        receiver.wait_for(usize::try_from(n).unwrap()).await;
    }
    let got = receiver.received();
    assert!(
        got.iter().all(|r| r.id == id),
        "the same webhook-id on every retry"
    );
    assert!(got.iter().all(|r| verify(&secret, r)));
    let started = Instant::now();
    let attempts = loop {
        let v: Value = app
            .get_as(
                &partner.key,
                &format!("/v1/webhook-endpoints/{endpoint_id}/attempts"),
            )
            .await
            .json()
            .await
            .unwrap();
        if v["data"].as_array().unwrap().len() == 3 {
            break v;
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let codes: Vec<i64> = attempts["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status_code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, [200, 503, 500], "newest first");
    assert_eq!(attempts["data"][2]["error"], "endpoint answered 500");
    assert_eq!(attempts["data"][2]["response_excerpt"], "answered 500");
    assert_eq!(attempts["data"][0]["attempt"], 3);
    assert_eq!(attempts["data"][0]["event_id"], id);
}

#[tokio::test]
async fn a_slow_endpoint_times_out_and_is_retried() {
    let app =
        spawn_app_with(TestOptions::default().var("FLOWLET__WEBHOOKS__TIMEOUT_MS", "300")).await;
    let partner = app.new_partner().await;
    let receiver = Receiver::start().await;
    receiver.answer(&[(200, Duration::from_secs(2))]);
    let (endpoint_id, secret) = endpoint(&app, &partner, &receiver.url, json!(["*"])).await;
    record(&app, &partner, "payment.created", json!({}), true)
        .await
        .unwrap();
    receiver.wait_for(1).await;
    let started = Instant::now();
    while app.count("notify_attempts").await < 1 {
        assert!(started.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    due_now(&app).await;
    let got = receiver.wait_for(2).await;
    assert_eq!(got[0].id, got[1].id);
    assert!(verify(&secret, &got[1]));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let attempts: Value = app
        .get_as(
            &partner.key,
            &format!("/v1/webhook-endpoints/{endpoint_id}/attempts"),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(attempts["data"][1]["error"], "timed out");
    assert_eq!(attempts["data"][1]["status_code"], Value::Null);
    assert_eq!(attempts["data"][0]["status_code"], 200);
}

#[tokio::test]
async fn after_a_rotation_old_and_new_secrets_both_sign_until_the_overlap_ends() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let receiver = Receiver::start().await;
    let (endpoint_id, old) = endpoint(&app, &partner, &receiver.url, json!(["webhook.test"])).await;
    let rotated: Value = app
        .post_as(
            &partner.key,
            &format!("/v1/webhook-endpoints/{endpoint_id}/rotate-secret"),
            &json!({}),
        )
        .await
        .json()
        .await
        .unwrap();
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert!(rotated["previous_secret_expires_at"].is_string());
    let resp = app
        .post_as(
            &partner.key,
            &format!("/v1/webhook-endpoints/{endpoint_id}/test"),
            &json!({}),
        )
        .await;
    assert_eq!(resp.status().as_u16(), 202);
    let got = receiver.wait_for(1).await;
    assert_eq!(
        got[0].signature.split(' ').count(),
        2,
        "{}",
        got[0].signature
    );
    assert!(
        verify(&old, &got[0]),
        "receivers still on the old secret verify"
    );
    assert!(verify(&new, &got[0]), "receivers on the new secret verify");
    assert_eq!(got[0].json()["type"], "webhook.test");

    app.sql("UPDATE notify_endpoints SET previous_secret_expires_at = now() - interval '1 second'")
        .await;
    app.post_as(
        &partner.key,
        &format!("/v1/webhook-endpoints/{endpoint_id}/test"),
        &json!({}),
    )
    .await;
    let got = receiver.wait_for(2).await;
    assert_eq!(got[1].signature.split(' ').count(), 1);
    assert!(verify(&new, &got[1]));
    assert!(!verify(&old, &got[1]), "the old secret no longer signs");
}

/// Events recorded together (a batch of payments) fan out like events recorded one by one:
/// each to exactly the endpoints of its partner whose filters match.
#[tokio::test]
async fn events_recorded_together_reach_exactly_the_matching_endpoints() {
    let app = spawn_app().await;
    let (partner, other) = (app.new_partner().await, app.new_partner().await);
    let receiver = Receiver::start().await;
    let (payments, _) = endpoint(&app, &partner, &receiver.url, json!(["payment.*"])).await;
    let (wallets, _) = endpoint(&app, &partner, &receiver.url, json!(["wallet.created"])).await;
    let (foreign, _) = endpoint(&app, &other, &receiver.url, json!(["*"])).await;
    let event = |event_type: &str| NewEvent {
        partner_id: Some(partner.id),
        event_type: event_type.into(),
        data: json!({ "n": event_type }),
    };
    let events = vec![
        event("payment.completed"),
        event("payment.refunded"),
        event("wallet.created"),
        event("card.created"),
        NewEvent {
            partner_id: None,
            event_type: "payment.completed".into(),
            data: json!({}),
        },
    ];
    let db = app.pool();
    let ids = db
        .in_tx(|tx| {
            let events = events.clone();
            Box::pin(async move { TransactionalOutbox.record_events(tx, events).await })
        })
        .await
        .unwrap();
    assert_eq!(ids.len(), 5);
    assert_eq!(app.count("notify_events").await, 5);
    let deliveries = |endpoint: &str| {
        let endpoint: flowlet::notify::EndpointId = endpoint.parse().unwrap();
        let app = &app;
        async move {
            app.sql_count(&format!(
                "SELECT count(*) AS n FROM notify_deliveries WHERE endpoint_id = '{}'",
                endpoint.uuid()
            ))
            .await
        }
    };
    assert_eq!(deliveries(&payments).await, 2);
    assert_eq!(deliveries(&wallets).await, 1);
    assert_eq!(deliveries(&foreign).await, 0);
    let got = receiver.wait_for(3).await;
    assert_eq!(got.len(), 3);
    // Nothing at all: nothing written.
    let none = db
        .in_tx(|tx| {
            Box::pin(async move { TransactionalOutbox.record_events(tx, Vec::new()).await })
        })
        .await
        .unwrap();
    assert!(none.is_empty());
}

#[tokio::test]
async fn disabled_and_deleted_endpoints_receive_nothing() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let receiver = Receiver::start().await;
    let (endpoint_id, _) = endpoint(&app, &partner, &receiver.url, json!(["*"])).await;
    let patched: Value = app
        .request(
            reqwest::Method::PATCH,
            &format!("/v1/webhook-endpoints/{endpoint_id}"),
            &partner.key,
        )
        .json(&json!({"enabled": false}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(patched["enabled"], false);
    record(&app, &partner, "payment.created", json!({}), true)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(receiver.received().is_empty());

    app.request(
        reqwest::Method::PATCH,
        &format!("/v1/webhook-endpoints/{endpoint_id}"),
        &partner.key,
    )
    .json(&json!({"enabled": true}))
    .send()
    .await
    .unwrap();
    record(&app, &partner, "payment.completed", json!({}), true)
        .await
        .unwrap();
    let got = receiver.wait_for(1).await;
    assert_eq!(
        got[0].json()["type"],
        "payment.completed",
        "only events after re-enabling"
    );

    assert_eq!(
        app.delete_as(
            &partner.key,
            &format!("/v1/webhook-endpoints/{endpoint_id}")
        )
        .await
        .status()
        .as_u16(),
        204
    );
    assert_problem(
        app.get_as(
            &partner.key,
            &format!("/v1/webhook-endpoints/{endpoint_id}"),
        )
        .await,
        404,
        "not_found",
    )
    .await;
    record(&app, &partner, "payment.refunded", json!({}), true)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test]
async fn an_endpoint_failing_for_too_long_is_disabled_and_its_partner_emailed() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let receiver = Receiver::start().await;
    receiver.answer(&[(500, Duration::ZERO)]);
    let (endpoint_id, _) = endpoint(&app, &partner, &receiver.url, json!(["*"])).await;
    record(&app, &partner, "payment.created", json!({}), true)
        .await
        .unwrap();
    receiver.wait_for(1).await;
    let started = Instant::now();
    while app.count("notify_attempts").await < 1 {
        assert!(started.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Failing since four days (the default limit is three).
    app.sql("UPDATE notify_endpoints SET failing_since = now() - interval '4 days'")
        .await;
    let started = Instant::now();
    let view = loop {
        let v: Value = app
            .get_as(
                &partner.key,
                &format!("/v1/webhook-endpoints/{endpoint_id}"),
            )
            .await
            .json()
            .await
            .unwrap();
        if v["enabled"] == false {
            break v;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "never disabled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        view["disabled_reason"]
            .as_str()
            .unwrap()
            .starts_with("failing since")
    );
    let mail = app.mail(1).await;
    assert_eq!(mail.len(), 1);
    assert!(mail[0].to.contains("@partner.example"), "{}", mail[0].to);
    assert_eq!(mail[0].subject, "Webhook endpoint disabled");
}

#[tokio::test]
async fn endpoint_input_is_validated_and_endpoints_are_partner_scoped() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let other = app.new_partner().await;
    let receiver = Receiver::start().await;
    for (body, field) in [
        (json!({"url": "not a url", "events": ["*"]}), "url"),
        (
            json!({"url": "ftp://example.com/x", "events": ["*"]}),
            "url",
        ),
        (
            json!({"url": "https://user:pw@example.com/x", "events": ["*"]}),
            "url",
        ),
        (json!({"url": receiver.url, "events": []}), "events"),
        (
            json!({"url": receiver.url, "events": ["Payment.Created"]}),
            "events",
        ),
        (
            json!({"url": receiver.url, "events": ["payment.**"]}),
            "events",
        ),
    ] {
        let p = assert_problem(
            app.post_as(&partner.key, "/v1/webhook-endpoints", &body)
                .await,
            400,
            "validation_failed",
        )
        .await;
        assert_eq!(p["field"], field, "{body}");
    }
    assert_problem(
        app.post_as(
            &partner.key,
            "/v1/webhook-endpoints",
            &json!({"url": receiver.url, "events": ["*"], "secret": "mine"}),
        )
        .await,
        400,
        "unknown_field",
    )
    .await;
    assert_eq!(app.count("notify_endpoints").await, 0);

    let (endpoint_id, _) = endpoint(&app, &partner, &receiver.url, json!(["*"])).await;
    let listed: Value = app
        .get_as(&partner.key, "/v1/webhook-endpoints")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert!(
        listed["data"][0].get("secret").is_none(),
        "the secret is never shown again"
    );
    for path in [
        format!("/v1/webhook-endpoints/{endpoint_id}"),
        format!("/v1/webhook-endpoints/{endpoint_id}/attempts"),
    ] {
        assert_problem(app.get_as(&other.key, &path).await, 404, "not_found").await;
    }
    assert_problem(
        app.delete_as(&other.key, &format!("/v1/webhook-endpoints/{endpoint_id}"))
            .await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        app.post_as(
            &other.key,
            &format!("/v1/webhook-endpoints/{endpoint_id}/rotate-secret"),
            &json!({}),
        )
        .await,
        404,
        "not_found",
    )
    .await;
    let dev = app
        .new_user(Some(partner.id), flowlet::kernel::Role::PartnerDeveloper)
        .await;
    let token = app.login(&dev).await;
    assert_problem(
        app.post_as(
            &token,
            "/v1/webhook-endpoints",
            &json!({"url": receiver.url, "events": ["*"]}),
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    assert_eq!(
        app.get_as(&token, "/v1/webhook-endpoints")
            .await
            .status()
            .as_u16(),
        200
    );
    let other_events: Value = app
        .get_as(&other.key, "/v1/events")
        .await
        .json()
        .await
        .unwrap();
    assert!(other_events["data"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn production_settings_refuse_plain_http_and_private_targets() {
    let app = spawn_app_with(
        TestOptions::default()
            .var("FLOWLET__WEBHOOKS__REQUIRE_HTTPS", "true")
            .var("FLOWLET__WEBHOOKS__ALLOW_PRIVATE_TARGETS", "false"),
    )
    .await;
    let partner = app.new_partner().await;
    for url in [
        "http://example.com/hooks",
        "https://127.0.0.1/hooks",
        "https://10.0.0.8/hooks",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hooks",
    ] {
        let p = assert_problem(
            app.post_as(
                &partner.key,
                "/v1/webhook-endpoints",
                &json!({"url": url, "events": ["*"]}),
            )
            .await,
            400,
            "validation_failed",
        )
        .await;
        assert_eq!(p["field"], "url", "{url}");
    }
    // A name that resolves to loopback passes the syntax check, and is refused when the
    // delivery resolves it.
    let (endpoint_id, _) =
        endpoint(&app, &partner, "https://localhost:9/hooks", json!(["*"])).await;
    record(&app, &partner, "payment.created", json!({}), true)
        .await
        .unwrap();
    let started = Instant::now();
    let attempts = loop {
        let v: Value = app
            .get_as(
                &partner.key,
                &format!("/v1/webhook-endpoints/{endpoint_id}/attempts"),
            )
            .await
            .json()
            .await
            .unwrap();
        if !v["data"].as_array().unwrap().is_empty() {
            break v;
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(attempts["data"][0]["status_code"], Value::Null);
    assert_eq!(attempts["data"][0]["error"], "could not connect");
}

#[tokio::test]
async fn deliveries_survive_a_worker_killed_mid_delivery() {
    // The app's own worker sleeps for an hour after its first pass: the test runs its own.
    let app = spawn_app_with(
        TestOptions::default()
            .var("FLOWLET__WEBHOOKS__POLL_INTERVAL_MS", "3600000")
            .var("FLOWLET__WEBHOOKS__TIMEOUT_MS", "5000")
            .var("FLOWLET__WEBHOOKS__LEASE_SECS", "6"),
    )
    .await;
    let partner = app.new_partner().await;
    let receiver = Receiver::start().await;
    // The first deliveries hang, as if the network stalled mid-request.
    receiver.answer(&[(200, Duration::from_secs(30)); 3]);
    endpoint(&app, &partner, &receiver.url, json!(["*"])).await;
    let mut ids = Vec::new();
    for n in 0..10 {
        ids.push(
            record(&app, &partner, "payment.created", json!({"n": n}), true)
                .await
                .unwrap(),
        );
    }
    let worker = |concurrency: &str| {
        let mut settings = app.settings.webhooks.clone();
        settings.poll_interval = Duration::from_millis(50);
        settings.concurrency = concurrency.parse().unwrap();
        let mailer = flowlet::notify::mailer(None, &app.settings.smtp.from, &app.mail_dir).unwrap();
        flowlet::notify::Notifier::new(app.pool(), mailer, &settings, None).unwrap()
    };
    let first = worker("3");
    let mut first_run = flowlet::platform::workers::Workers::new();
    first_run.spawn("doomed-outbox", |shutdown| first.run(shutdown));
    receiver.wait_for(3).await;
    // Kill it mid-delivery: its tasks are dropped, its leases stay until they run out.
    first_run.stop(Duration::ZERO).await;
    let second = worker("8");
    let mut second_run = flowlet::platform::workers::Workers::new();
    second_run.spawn("outbox", |shutdown| second.run(shutdown));
    let started = Instant::now();
    loop {
        let got: std::collections::HashSet<String> =
            receiver.received().into_iter().map(|r| r.id).collect();
        if ids.iter().all(|id| got.contains(id)) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{} of 10 delivered",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    second_run.stop(Duration::from_secs(5)).await;
    let mut conn = app.db().await;
    #[derive(diesel::QueryableByName)]
    struct Left {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let left: Left = diesel_async::RunQueryDsl::get_result(
        diesel::sql_query(
            "SELECT count(*) AS n FROM notify_deliveries WHERE status <> 'succeeded'",
        ),
        &mut conn,
    )
    .await
    .unwrap();
    assert_eq!(left.n, 0, "every delivery ended succeeded");
}

#[tokio::test]
async fn the_outbox_metrics_are_exported() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let receiver = Receiver::start().await;
    endpoint(&app, &partner, &receiver.url, json!(["*"])).await;
    record(&app, &partner, "payment.created", json!({}), true)
        .await
        .unwrap();
    receiver.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(
        text.contains("webhook_deliveries_total{result=\"success\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("webhook_delivery_duration_seconds_count 1"),
        "{text}"
    );
    assert!(text.contains("outbox_pending 0"), "{text}");
    assert!(text.contains("outbox_oldest_age_seconds"), "{text}");
}

#[tokio::test]
async fn an_operator_replays_an_event_and_reads_the_outbox_status() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let other = app.new_partner().await;
    let receiver = Receiver::start().await;
    let failing = Receiver::start().await;
    failing.answer(&[(500, Duration::ZERO); 10]);
    let (endpoint_id, secret) = endpoint(&app, &partner, &receiver.url, json!(["payment.*"])).await;
    let (failing_id, _) = endpoint(&app, &partner, &failing.url, json!(["payment.*"])).await;
    let (foreign_id, _) = endpoint(&app, &other, &receiver.url, json!(["*"])).await;
    let id = record(&app, &partner, "payment.completed", json!({"n": 1}), true)
        .await
        .unwrap();
    receiver.wait_for(1).await;
    failing.wait_for(1).await;
    let started = Instant::now();
    while app
        .sql_count("SELECT count(*) AS n FROM notify_attempts")
        .await
        < 2
    {
        assert!(started.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let status = crate::cli::flowlet_json(&app, &["admin", "outbox", "status", "--json"]).await;
    let row = |id: &str| {
        status["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["endpoint_id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} missing from {status}"))
    };
    assert_eq!(row(&failing_id)["pending"], 1, "waiting for its retry");
    assert!(row(&failing_id)["oldest_pending_secs"].as_f64().unwrap() >= 0.0);
    assert_eq!(row(&endpoint_id)["pending"], 0);
    assert_eq!(status["emails"]["pending"], 0);
    let table = crate::cli::flowlet_on(&app, &["admin", "outbox", "status"]).await;
    assert!(table.status.success());
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(
        table.contains("PENDING") && table.contains(&failing_id),
        "{table}"
    );

    // Replay to one endpoint: the same webhook-id again, freshly signed.
    let replayed = crate::cli::flowlet_json(
        &app,
        &[
            "admin",
            "webhooks",
            "replay",
            &id,
            "--endpoint",
            &endpoint_id,
            "--json",
        ],
    )
    .await;
    assert_eq!(replayed["queued"], 1);
    let got = receiver.wait_for(2).await;
    assert_eq!(got[1].id, id);
    assert!(verify(&secret, &got[1]));

    // Never to another partner's endpoint; unknown ids are named.
    for (args, expected) in [
        (
            vec![
                "admin",
                "webhooks",
                "replay",
                id.as_str(),
                "--endpoint",
                foreign_id.as_str(),
            ],
            "another partner",
        ),
        (
            vec![
                "admin",
                "webhooks",
                "replay",
                "evt_01jdzzzzzzzzzzzzzzzzzzzzzz",
            ],
            "No such event",
        ),
        (
            vec![
                "admin",
                "webhooks",
                "replay",
                "pay_01jdzzzzzzzzzzzzzzzzzzzzzz",
            ],
            "not an event id",
        ),
    ] {
        let out = crate::cli::flowlet_on(&app, &args).await;
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        receiver.received().len(),
        2,
        "the refused replays sent nothing"
    );

    // Replay without --endpoint: to every enabled endpoint whose filter matches.
    let replayed =
        crate::cli::flowlet_json(&app, &["admin", "webhooks", "replay", &id, "--json"]).await;
    assert_eq!(replayed["queued"], 2);
    receiver.wait_for(3).await;
}

#[tokio::test]
async fn a_hanging_partner_endpoint_never_costs_requests_their_connections_nor_the_pod_its_readiness()
 {
    // Requests give up on the pool after 1 s; the outbox sends 8 at a time and waits up to
    // 10 s on each endpoint. Were a delivery to hold a request connection while it waits, the
    // 4-connection request pool would be gone and every request below a 503.
    let app = spawn_app_with(
        TestOptions::default()
            .var("FLOWLET__DATABASE__POOL_SIZE", "4")
            .var("FLOWLET__DATABASE__POOL_TIMEOUT_MS", "1000")
            .var("FLOWLET__DATABASE__WORKER_POOL_SIZE", "2")
            .var("FLOWLET__WEBHOOKS__TIMEOUT_MS", "10000")
            .var("FLOWLET__WEBHOOKS__CONCURRENCY", "8"),
    )
    .await;
    let partner = app.new_partner().await;
    let receiver = Receiver::start().await;
    receiver.answer(&[(200, Duration::from_secs(6)); 8]);
    endpoint(&app, &partner, &receiver.url, json!(["*"])).await;
    for n in 0..8 {
        record(&app, &partner, "payment.created", json!({ "n": n }), true)
            .await
            .unwrap();
    }
    // At least as many as the request pool has connections are now in flight, each held by
    // the endpoint for 6 s.
    receiver.wait_for(4).await;
    for _ in 0..12 {
        let resp = app.get_as(&partner.key, "/v1/webhook-endpoints").await;
        assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.text().await);
        let resp = app.get_as(&partner.key, "/v1/events").await;
        assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.text().await);
    }
    let ready = app.get("/ready").await;
    assert_eq!(ready.status().as_u16(), 200);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["checks"]["database"]["status"], "up");
    // The deliveries themselves still complete and are recorded.
    let started = Instant::now();
    while app.count("notify_attempts").await < 8 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the hung deliveries were never recorded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_outbox_gauges_count_what_is_due_now_not_retries_scheduled_for_later() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let receiver = Receiver::start().await;
    receiver.answer(&[(500, Duration::ZERO)]);
    endpoint(&app, &partner, &receiver.url, json!(["*"])).await;
    record(&app, &partner, "payment.created", json!({}), true)
        .await
        .unwrap();
    receiver.wait_for(1).await;
    let started = Instant::now();
    while app.count("notify_attempts").await < 1 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the failure was never recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The failed delivery waits for its retry in ~5 s: pending, but not due. The gauges are
    // refreshed at the end of each worker pass, so a scrape may still show the pass before
    // the failure was recorded (due then); the pass that recorded it must show it not due,
    // well before the retry's time comes.
    let started = Instant::now();
    loop {
        let text = app.get("/metrics").await.text().await.unwrap();
        if text.contains("outbox_pending 1") && text.contains("outbox_due_deliveries 0") {
            assert!(text.contains("outbox_due_emails 0"), "{text}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(3), "{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
