//! A partner's real-time decision endpoint for card authorizations: set over HTTP (its secret
//! shown once, rotated by every PUT, sealed at rest), and asked through the card service's
//! `decisions().ask` against a real local receiver, with signatures checked by the Standard
//! Webhooks verifier of `webhooks.rs` (written from the specification, not the signer).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use flowlet::card::{Fallback, PartnerDecision};
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, TestOptions, TestPartner, assert_problem, spawn_app, spawn_app_with,
};
use crate::webhooks::{Received, verify};

const PATH: &str = "/v1/cards/decision-endpoint";

/// What the receiver answers next: status, body, and a delay before answering.
type Reply = (u16, String, Duration);

/// A partner's decision endpoint: records every request, answers as scripted (200
/// `{"approved": true}` at once when nothing is scripted).
pub(crate) struct Receiver {
    pub(crate) url: String,
    log: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
    handle: ServerHandle,
}

impl Receiver {
    pub(crate) async fn start() -> Receiver {
        let log: Arc<Mutex<Vec<Received>>> = Arc::default();
        let script: Arc<Mutex<VecDeque<Reply>>> = Arc::default();
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
                    let (status, answer, delay) = s.lock().unwrap().pop_front().unwrap_or((
                        200,
                        r#"{"approved": true}"#.to_owned(),
                        Duration::ZERO,
                    ));
                    tokio::time::sleep(delay).await;
                    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
                        .content_type("application/json")
                        .body(answer)
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
            url: format!("http://127.0.0.1:{port}/decide"),
            log,
            script,
            handle,
        }
    }

    pub(crate) fn answer(&self, status: u16, body: &str, delay: Duration) {
        self.script
            .lock()
            .unwrap()
            .push_back((status, body.to_owned(), delay));
    }

    pub(crate) fn received(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

async fn put(app: &TestApp, key: &str, body: &Value) -> reqwest::Response {
    app.request(reqwest::Method::PUT, PATH, key)
        .json(body)
        .send()
        .await
        .unwrap()
}

pub(crate) async fn put_ok(app: &TestApp, key: &str, url: &str, fallback: &str) -> Value {
    let resp = put(app, key, &json!({"url": url, "fallback": fallback})).await;
    assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.text().await);
    assert_eq!(
        resp.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    resp.json().await.unwrap()
}

/// A key of `partner` with exactly `scopes`.
async fn key_with(app: &TestApp, partner: &TestPartner, scopes: &[&str]) -> String {
    let resp = app
        .post_as(
            &partner.key,
            "/v1/api-keys",
            &json!({"name": "scoped", "scopes": scopes}),
        )
        .await;
    assert_eq!(resp.status().as_u16(), 201);
    let created: Value = resp.json().await.unwrap();
    created["secret"].as_str().unwrap().to_owned()
}

/// The services as the app builds them, over its database (their own cache of endpoints).
/// What the authorization path would hand over: the authorization as the partner sees it.
fn authorization() -> Value {
    json!({
        "id": "auth_01h455vb4pex5vsknk084sn02q",
        "card_id": "card_01h455vb4pex5vsknk084sn02q",
        "amount": "12.50",
        "currency": "USD",
        "merchant": {"name": "Corner Shop", "mcc": "5411", "country": "US"},
    })
}

#[tokio::test]
async fn the_decision_secret_is_shown_once_sealed_at_rest_and_every_put_rotates_it() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    assert_problem(app.get_as(&partner.key, PATH).await, 404, "not_found").await;

    let first = put_ok(
        &app,
        &partner.key,
        "https://decide.example.com/cards",
        "approve",
    )
    .await;
    assert_eq!(first["url"], "https://decide.example.com/cards");
    assert_eq!(first["fallback"], "approve");
    let secret = first["secret"].as_str().unwrap().to_owned();
    assert!(
        secret.starts_with("whsec_") && secret.len() > 40,
        "{secret}"
    );
    assert!(first["created"].is_string() && first["updated"].is_string());

    let got: Value = app.get_as(&partner.key, PATH).await.json().await.unwrap();
    assert_eq!(got["url"], first["url"]);
    assert_eq!(got["fallback"], "approve");
    assert!(got.get("secret").is_none(), "{got}");
    assert!(!got.to_string().contains(&secret));

    // Sealed under the card vault's key, never in clear.
    let sealed = app
        .sql_count(&format!(
            "SELECT count(*) AS n FROM card_decision_endpoints WHERE partner_id = '{}' \
             AND secret_enc LIKE 'dev:%' AND position('{secret}' in secret_enc) = 0",
            partner.id.uuid()
        ))
        .await;
    assert_eq!(sealed, 1);

    let second = put_ok(
        &app,
        &partner.key,
        "https://decide.example.com/v2",
        "decline",
    )
    .await;
    let rotated = second["secret"].as_str().unwrap();
    assert!(rotated.starts_with("whsec_"));
    assert_ne!(rotated, secret);
    assert_eq!(second["fallback"], "decline");
    assert_eq!(
        second["created"], first["created"],
        "still the same endpoint"
    );
    assert_eq!(app.count("card_decision_endpoints").await, 1);

    let resp = app.delete_as(&partner.key, PATH).await;
    assert_eq!(resp.status().as_u16(), 204);
    assert_problem(app.get_as(&partner.key, PATH).await, 404, "not_found").await;
    assert_problem(app.delete_as(&partner.key, PATH).await, 404, "not_found").await;
    assert_eq!(app.count("card_decision_endpoints").await, 0);
}

#[tokio::test]
async fn bad_decision_endpoints_are_refused_and_store_nothing() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let long = format!("https://decide.example.com/{}", "a".repeat(2048));
    let bad: Vec<(Value, &str, &str)> = vec![
        (
            json!({"url": "ftp://decide.example.com/", "fallback": "approve"}),
            "validation_failed",
            "url",
        ),
        (
            json!({"url": "file:///etc/passwd", "fallback": "approve"}),
            "validation_failed",
            "url",
        ),
        (
            json!({"url": "https://user:hunter2@decide.example.com/", "fallback": "approve"}),
            "validation_failed",
            "url",
        ),
        (
            json!({"url": long, "fallback": "approve"}),
            "validation_failed",
            "url",
        ),
        (
            json!({"url": "https://decide.example.com/\u{0}", "fallback": "approve"}),
            "validation_failed",
            "url",
        ),
        (
            json!({"url": "https://decide.exa\nmple.com/", "fallback": "approve"}),
            "validation_failed",
            "url",
        ),
        (
            json!({"url": " https://decide.example.com/", "fallback": "approve"}),
            "validation_failed",
            "url",
        ),
        (
            json!({"url": "/relative", "fallback": "approve"}),
            "validation_failed",
            "url",
        ),
        (
            json!({"url": "https://decide.example.com/", "fallback": "maybe"}),
            "validation_failed",
            "fallback",
        ),
        (
            json!({"url": "https://decide.example.com/", "fallback": "Approve"}),
            "validation_failed",
            "fallback",
        ),
        (
            json!({"url": "https://decide.example.com/"}),
            "validation_failed",
            "",
        ),
        (
            json!({"url": "https://decide.example.com/", "fallback": "approve", "secret": "whsec_x"}),
            "unknown_field",
            "",
        ),
    ];
    for (body, code, field) in &bad {
        let problem = assert_problem(put(&app, &partner.key, body).await, 400, code).await;
        if !field.is_empty() {
            assert_eq!(problem["field"], *field, "{body}: {problem}");
        }
        assert!(
            !problem.to_string().contains("hunter2"),
            "credentials echoed: {problem}"
        );
    }
    assert_eq!(app.count("card_decision_endpoints").await, 0);

    // A refused PUT leaves the stored endpoint (and its secret) as it was.
    put_ok(&app, &partner.key, "https://decide.example.com/", "approve").await;
    let before = app
        .sql_count(
            "SELECT count(*) AS n FROM card_decision_endpoints \
             WHERE url = 'https://decide.example.com/' AND fallback = 'approve'",
        )
        .await;
    assert_eq!(before, 1);
    for (body, code, _) in &bad {
        assert_problem(put(&app, &partner.key, body).await, 400, code).await;
    }
    let got: Value = app.get_as(&partner.key, PATH).await.json().await.unwrap();
    assert_eq!(got["url"], "https://decide.example.com/");
    assert_eq!(got["fallback"], "approve");
    assert_eq!(got["created"], got["updated"], "never replaced");
}

#[tokio::test]
async fn only_cards_write_sets_the_decision_endpoint_and_a_partner_sees_only_its_own() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let reader = key_with(&app, &partner, &["cards:read"]).await;
    let stranger = key_with(&app, &partner, &["wallets:write"]).await;
    let body = json!({"url": "https://decide.example.com/", "fallback": "decline"});
    assert_problem(put(&app, &reader, &body).await, 403, "forbidden").await;
    assert_problem(put(&app, &stranger, &body).await, 403, "forbidden").await;
    assert_problem(app.get_as(&stranger, PATH).await, 403, "forbidden").await;
    assert_problem(app.delete_as(&reader, PATH).await, 403, "forbidden").await;
    assert_eq!(app.count("card_decision_endpoints").await, 0);

    put_ok(&app, &partner.key, "https://decide.example.com/", "decline").await;
    let got: Value = app.get_as(&reader, PATH).await.json().await.unwrap();
    assert_eq!(got["fallback"], "decline");

    let other = app.new_partner().await;
    assert_problem(app.get_as(&other.key, PATH).await, 404, "not_found").await;
    assert_problem(app.delete_as(&other.key, PATH).await, 404, "not_found").await;
    put_ok(&app, &other.key, "https://other.example.com/", "approve").await;
    let mine: Value = app.get_as(&partner.key, PATH).await.json().await.unwrap();
    assert_eq!(mine["url"], "https://decide.example.com/");
    assert_eq!(app.count("card_decision_endpoints").await, 2);
}

#[tokio::test]
async fn the_partner_is_asked_with_a_signed_request_and_its_answer_decides() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let receiver = Receiver::start().await;
    let (services, workers) = app.services();
    let decisions = services.cards.decisions();
    let request = authorization();

    // No endpoint: nothing is asked.
    assert_eq!(
        decisions.ask(partner.id, &request).await,
        PartnerDecision::NotAsked
    );
    assert!(receiver.received().is_empty());

    // Set over HTTP, through the app's own instance: this one keeps its cached "none" for up
    // to its TTL (the documented staleness across replicas). Set through this one, its own
    // entry is dropped at once.
    put_ok(&app, &partner.key, &receiver.url, "decline").await;
    assert_eq!(
        decisions.ask(partner.id, &request).await,
        PartnerDecision::NotAsked
    );
    let set = decisions
        .set(partner.id, &receiver.url, Fallback::Decline)
        .await
        .unwrap();
    let secret = secrecy::ExposeSecret::expose_secret(&set.secret).to_owned();

    assert_eq!(
        decisions.ask(partner.id, &request).await,
        PartnerDecision::Approved
    );
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    let sent = &got[0];
    assert!(
        verify(&secret, sent),
        "the signature does not verify: {sent:?}"
    );
    let body = sent.json();
    assert_eq!(body["type"], "card.authorization.request");
    assert_eq!(body["data"], request);
    assert_eq!(body["id"], sent.id.as_str());
    assert!(sent.id.starts_with("evt_"), "{}", sent.id);
    assert!(body["created"].is_string());
    assert!(sent.signature.starts_with("v1,") && !sent.signature.contains(' '));

    receiver.answer(
        200,
        r#"{"approved": false, "reason": "over the partner's own limit", "score": 7}"#,
        Duration::ZERO,
    );
    assert_eq!(
        decisions.ask(partner.id, &request).await,
        PartnerDecision::Declined {
            reason: Some("over the partner's own limit".to_owned())
        }
    );
    receiver.answer(200, r#"{"approved": false}"#, Duration::ZERO);
    assert_eq!(
        decisions.ask(partner.id, &request).await,
        PartnerDecision::Declined { reason: None }
    );

    // Anything but a 2xx with that JSON fails, and the fallback applies.
    receiver.answer(500, r#"{"approved": true}"#, Duration::ZERO);
    assert_eq!(
        decisions.ask(partner.id, &request).await,
        PartnerDecision::Failed(Fallback::Decline)
    );
    receiver.answer(200, "<html>approved</html>", Duration::ZERO);
    assert_eq!(
        decisions.ask(partner.id, &request).await,
        PartnerDecision::Failed(Fallback::Decline)
    );
    receiver.answer(200, r#"{"approved": "yes"}"#, Duration::ZERO);
    assert_eq!(
        decisions.ask(partner.id, &request).await,
        PartnerDecision::Failed(Fallback::Decline)
    );
    let huge = format!(r#"{{"approved": true, "pad": "{}"}}"#, "x".repeat(20_000));
    receiver.answer(200, &huge, Duration::ZERO);
    assert_eq!(
        decisions.ask(partner.id, &request).await,
        PartnerDecision::Failed(Fallback::Decline)
    );
    // Every request had its own id, and each verifies.
    let got = receiver.received();
    assert_eq!(got.len(), 7);
    let mut ids: Vec<&str> = got.iter().map(|r| r.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 7);
    assert!(got.iter().all(|r| verify(&secret, r)));

    // Nothing listening: the fallback, the other way round.
    let url = format!("http://127.0.0.1:{}/decide", crate::helpers::free_port());
    decisions
        .set(partner.id, &url, Fallback::Approve)
        .await
        .unwrap();
    assert_eq!(
        decisions.ask(partner.id, &request).await,
        PartnerDecision::Failed(Fallback::Approve)
    );

    // Deleted: not asked any more (at once on this replica).
    assert!(decisions.delete(partner.id).await.unwrap());
    assert_eq!(
        decisions.ask(partner.id, &request).await,
        PartnerDecision::NotAsked
    );
    // Another partner never reaches this one's endpoint.
    let other = app.new_partner().await;
    assert_eq!(
        decisions.ask(other.id, &request).await,
        PartnerDecision::NotAsked
    );
    workers.stop(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_partner_that_does_not_answer_in_time_gets_its_fallback_within_the_budget() {
    let app =
        spawn_app_with(TestOptions::default().var("FLOWLET__CARDS__DECISION_TIMEOUT_MS", "200"))
            .await;
    let partner = app.new_partner().await;
    let receiver = Receiver::start().await;
    let (services, workers) = app.services();
    let decisions = services.cards.decisions();
    let request = authorization();

    for fallback in [Fallback::Approve, Fallback::Decline] {
        decisions
            .set(partner.id, &receiver.url, fallback)
            .await
            .unwrap();
        receiver.answer(200, r#"{"approved": true}"#, Duration::from_secs(2));
        let started = Instant::now();
        assert_eq!(
            decisions.ask(partner.id, &request).await,
            PartnerDecision::TimedOut(fallback)
        );
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(190) && took < Duration::from_millis(1500),
            "{took:?}"
        );
    }
    assert_eq!(receiver.received().len(), 2);
    workers.stop(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn after_a_key_rotation_an_operator_reseals_the_decision_secret_and_it_still_signs() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let receiver = Receiver::start().await;
    let set = put_ok(&app, &partner.key, &receiver.url, "decline").await;
    let secret = set["secret"].as_str().unwrap().to_owned();

    let c2 = "YzItcm90YXRpb24ta2V5LTMyLWJ5dGVzLWxvbmchISE=";
    let rotated = [
        ("FLOWLET__CARDS__ENCRYPTION_KEYS__C2", c2),
        ("FLOWLET__CARDS__ENCRYPTION_KEY_ID", "c2"),
    ];
    let out =
        crate::cli::flowlet_on_env(&app, &["admin", "cards", "reencrypt", "--json"], &rotated)
            .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(first["reencrypted"], 1);
    assert_eq!(
        app.sql_count(
            "SELECT count(*) AS n FROM card_decision_endpoints WHERE secret_enc LIKE 'c2:%'"
        )
        .await,
        1
    );

    // A replica on c2 opens it (sealed under c2 now, as counted above, so the development
    // key could go; config/default.toml keeps it), and signs with the same secret.
    let replica = spawn_app_with(
        TestOptions::default()
            .sharing(&app)
            .var("FLOWLET__CARDS__ENCRYPTION_KEYS__C2", c2)
            .var("FLOWLET__CARDS__ENCRYPTION_KEY_ID", "c2"),
    )
    .await;
    let (services, workers) = replica.services();
    assert_eq!(
        services
            .cards
            .decisions()
            .ask(partner.id, &authorization())
            .await,
        PartnerDecision::Approved
    );
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    assert!(verify(&secret, &got[0]));
    workers.stop(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn an_authorization_that_passes_flowlets_rules_is_the_partners_to_decide() {
    use crate::card_authorizations::{authorize, balance, holder, message, money};
    let app =
        spawn_app_with(TestOptions::default().var("FLOWLET__CARDS__DECISION_TIMEOUT_MS", "300"))
            .await;
    crate::kyc::load_test_list(&app).await;
    let h = holder(
        &app,
        "100.00",
        Some(json!({"enabled": true, "blocked_categories": ["gambling"]})),
    )
    .await;
    let receiver = Receiver::start().await;
    let endpoint = put_ok(&app, &h.partner.key, &receiver.url, "decline").await;
    let secret = endpoint["secret"].as_str().unwrap().to_owned();

    // The partner approves: held, and the partner saw the authorization but never the number.
    let approved = authorize(&app, &h.partner.key, &message(&h.card, "10.00", "5411")).await;
    assert_eq!(approved["approved"], true, "{approved:#}");
    let asked = receiver.received();
    assert_eq!(asked.len(), 1);
    assert!(verify(&secret, &asked[0]), "a Standard Webhooks signature");
    let body: Value = serde_json::from_slice(&asked[0].body).unwrap();
    assert_eq!(body["type"], "card.authorization.request");
    assert_eq!(body["data"]["amount"], "10.00");
    assert_eq!(body["data"]["card_id"], h.card["id"]);
    let text = String::from_utf8_lossy(&asked[0].body).to_string();
    assert!(!text.contains(h.card["pan"].as_str().unwrap()));

    // The partner declines, with a reason kept in the trail: nothing held.
    receiver.answer(
        200,
        r#"{"approved": false, "reason": "over budget"}"#,
        Duration::ZERO,
    );
    let declined = authorize(&app, &h.partner.key, &message(&h.card, "10.00", "5411")).await;
    assert_eq!(declined["decline_code"], "partner_declined");
    assert_eq!(declined["response_code"], "05");
    let last = declined["trail"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["rule"], "partner");
    assert!(last["detail"].as_str().unwrap().contains("over budget"));

    // Flowlet declines first (a blocked category): the partner is never asked.
    let blocked = authorize(&app, &h.partner.key, &message(&h.card, "10.00", "7995")).await;
    assert_eq!(blocked["decline_code"], "merchant_category_blocked");
    assert_eq!(receiver.received().len(), 2);

    // No answer in time: the fallback (decline) applies.
    receiver.answer(200, r#"{"approved": true}"#, Duration::from_millis(1500));
    let late = authorize(&app, &h.partner.key, &message(&h.card, "10.00", "5411")).await;
    assert_eq!(late["decline_code"], "partner_declined");
    assert_eq!(balance(&app, &h).await, money("90.00", "-10.00", "100.00"));
    app.assert_ledger_invariants().await;
}
