//! Card authorizations through the network simulator: holds on the ledger, the decision
//! ladder's declines (nothing moved), captures, increments, reversals, expiry, refunds,
//! repeated network messages, and the concurrency of limits and funds across replicas. The
//! books are verified after every test that moves money.

use serde_json::{Value, json};

use crate::cards::{card_holder, issued};
use crate::helpers::{
    TestApp, TestOptions, TestPartner, assert_problem, spawn_app, spawn_app_with,
};
use crate::kyc::{get, load_test_list};
use crate::payments::deposit;

/// A card holder with a funded USD wallet and an active virtual card (with `controls`).
pub(crate) struct Holder {
    pub(crate) partner: TestPartner,
    pub(crate) wallet: String,
    pub(crate) card: Value,
}

/// A fresh app (its sanctions list loaded) and a holder on it.
async fn card_app(funds: &str, controls: Option<Value>) -> (TestApp, Holder) {
    let app = spawn_app().await;
    load_test_list(&app).await;
    let h = holder(&app, funds, controls).await;
    (app, h)
}

pub(crate) async fn holder(app: &TestApp, funds: &str, controls: Option<Value>) -> Holder {
    let partner = app.new_partner().await;
    holder_of(app, partner, funds, controls).await
}

async fn holder_of(
    app: &TestApp,
    partner: TestPartner,
    funds: &str,
    controls: Option<Value>,
) -> Holder {
    let (_, wallet) = card_holder(app, &partner).await;
    if funds != "0" {
        deposit(app, &partner.key, &wallet, funds).await;
    }
    let card = match controls {
        None => issued(app, &partner.key, &wallet, "virtual").await,
        Some(controls) => {
            let resp = app
                .post_as(
                    &partner.key,
                    "/v1/cards",
                    &json!({"wallet_id": wallet, "type": "virtual", "controls": controls}),
                )
                .await;
            assert_eq!(resp.status().as_u16(), 201, "{:?}", resp.text().await);
            resp.json().await.unwrap()
        }
    };
    Holder {
        partner,
        wallet,
        card,
    }
}

pub(crate) fn message(card: &Value, amount: &str, mcc: &str) -> Value {
    json!({
        "pan": card["pan"], "exp_month": card["exp_month"], "exp_year": card["exp_year"],
        "cvc": card["cvc"], "amount": amount, "currency": "USD",
        "merchant": {"name": "Corner Shop", "mcc": mcc, "country": "US"},
    })
}

pub(crate) async fn authorize(app: &TestApp, key: &str, body: &Value) -> Value {
    let resp = app.post_as(key, "/v1/simulator/authorizations", body).await;
    assert_eq!(resp.status().as_u16(), 201, "{:?}", resp.text().await);
    resp.json().await.unwrap()
}

async fn follow(
    app: &TestApp,
    key: &str,
    auth: &Value,
    verb: &str,
    body: Value,
) -> reqwest::Response {
    let id = auth["id"].as_str().unwrap();
    app.post_as(
        key,
        &format!("/v1/simulator/authorizations/{id}/{verb}"),
        &body,
    )
    .await
}

pub(crate) async fn followed(
    app: &TestApp,
    key: &str,
    auth: &Value,
    verb: &str,
    body: Value,
) -> Value {
    let resp = follow(app, key, auth, verb, body).await;
    assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.text().await);
    resp.json().await.unwrap()
}

/// (available, pending, posted) of the wallet.
pub(crate) async fn balance(app: &TestApp, h: &Holder) -> (String, String, String) {
    let b = get(
        app,
        &h.partner.key,
        &format!("/v1/wallets/{}/balance", h.wallet),
    )
    .await;
    let s = |k: &str| b[k].as_str().unwrap().to_owned();
    (s("available"), s("pending"), s("posted"))
}

pub(crate) fn money(a: &str, p: &str, q: &str) -> (String, String, String) {
    (a.to_owned(), p.to_owned(), q.to_owned())
}

/// Rows that record money movement: a refusal changes none of them.
async fn moved(app: &TestApp) -> (i64, i64) {
    (
        app.posted_transfers().await,
        app.count("ledger_entries").await,
    )
}

#[tokio::test]
async fn an_approval_holds_the_money_and_keeps_its_whole_trail() {
    let (app, h) = card_app("100.00", None).await;
    let auth = authorize(&app, &h.partner.key, &message(&h.card, "25.00", "5411")).await;
    assert_eq!(auth["approved"], true);
    assert_eq!(auth["status"], "pending");
    assert_eq!(auth["response_code"], "00");
    assert_eq!(auth["held_amount"], "25.00");
    assert_eq!(auth["captured_amount"], "0.00");
    assert_eq!(auth["merchant"]["mcc"], "5411");
    assert_eq!(auth["card_id"], h.card["id"]);
    assert_eq!(auth["wallet_id"], h.wallet.as_str());
    assert!(auth["id"].as_str().unwrap().starts_with("auth_"));
    // Every rule of the ladder, in order, funds last.
    let trail = auth["trail"].as_array().unwrap();
    assert_eq!(trail.len(), 22, "{trail:#?}");
    assert_eq!(trail[0]["rule"], "card");
    assert_eq!(trail[21]["rule"], "funds");
    assert!(trail.iter().all(|s| s["outcome"] != "fail"));
    assert_eq!(balance(&app, &h).await, money("75.00", "-25.00", "100.00"));

    let id = auth["id"].as_str().unwrap();
    let read = get(
        &app,
        &h.partner.key,
        &format!("/v1/card-authorizations/{id}"),
    )
    .await;
    assert_eq!(read["status"], "pending");
    assert_eq!(read["operations"], json!([]));
    let card_id = h.card["id"].as_str().unwrap();
    let list = get(
        &app,
        &h.partner.key,
        &format!("/v1/card-authorizations?card_id={card_id}&status=pending"),
    )
    .await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    let none = get(
        &app,
        &h.partner.key,
        "/v1/card-authorizations?status=captured",
    )
    .await;
    assert_eq!(none["data"], json!([]));
    // The statement shows the hold with its merchant and authorization.
    let statement = get(
        &app,
        &h.partner.key,
        &format!("/v1/wallets/{}/transactions", h.wallet),
    )
    .await;
    let hold = &statement["data"][0];
    assert_eq!(hold["card_authorization_id"], id);
    assert_eq!(hold["description"], "Corner Shop");
    assert_eq!(
        app.sql_count(
            "SELECT count(*) AS n FROM notify_events WHERE type = 'card.authorization.approved'"
        )
        .await,
        1
    );
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(r#"card_authorizations_total{code="00",result="approved"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("card_authorization_duration_seconds_count"));
    // The same Idempotency-Key and body: the first answer again, nothing moved twice.
    let body = message(&h.card, "5.00", "5411");
    let mut answers = Vec::new();
    for _ in 0..2 {
        let resp = app
            .request(
                reqwest::Method::POST,
                "/v1/simulator/authorizations",
                &h.partner.key,
            )
            .header("Idempotency-Key", "auth-4711")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201);
        let replayed = resp.headers().contains_key("idempotent-replayed");
        answers.push((replayed, resp.json::<Value>().await.unwrap()));
    }
    assert_eq!((answers[0].0, answers[1].0), (false, true));
    assert_eq!(answers[0].1["id"], answers[1].1["id"]);
    assert_eq!(balance(&app, &h).await, money("70.00", "-30.00", "100.00"));
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn every_decline_says_why_with_its_iso_code_and_moves_nothing() {
    let (app, h) = card_app(
        "50.00",
        Some(json!({"enabled": true, "blocked_categories": ["gambling"],
                    "blocked_countries": ["KP"], "limits": {"per_authorization": "40.00",
                    "daily_count": 5}})),
    )
    .await;
    let before = moved(&app).await;
    let base = message(&h.card, "10.00", "5411");
    let with = |f: &dyn Fn(&mut Value)| {
        let mut m = base.clone();
        f(&mut m);
        m
    };
    let cases: Vec<(Value, &str, &str)> = vec![
        // A number no card of this partner has (a valid Luhn number of the BIN).
        (
            with(&|m| m["pan"] = json!("4242424242424242")),
            "card_not_found",
            "14",
        ),
        (with(&|m| m["exp_year"] = json!(2099)), "card_expired", "54"),
        (
            with(&|m| {
                let cvc = m["cvc"].as_str().unwrap();
                let wrong = if cvc == "000" { "001" } else { "000" };
                m["cvc"] = json!(wrong);
            }),
            "cvc_mismatch",
            "82",
        ),
        (
            with(&|m| m["merchant"]["mcc"] = json!("7995")),
            "merchant_category_blocked",
            "57",
        ),
        (
            with(&|m| m["merchant"]["country"] = json!("KP")),
            "country_blocked",
            "57",
        ),
        (
            with(&|m| m["currency"] = json!("EUR")),
            "currency_not_supported",
            "57",
        ),
        (
            with(&|m| m["amount"] = json!("40.01")),
            "limit_exceeded",
            "61",
        ),
        (with(&|m| m["amount"] = json!("39.99")), "", "00"),
        (
            with(&|m| m["amount"] = json!("20.00")),
            "insufficient_funds",
            "51",
        ),
    ];
    for (body, code, response) in cases {
        let auth = authorize(&app, &h.partner.key, &body).await;
        assert_eq!(auth["response_code"], response, "{auth:#}");
        if code.is_empty() {
            assert_eq!(auth["approved"], true);
            continue;
        }
        assert_eq!(auth["approved"], false);
        assert_eq!(auth["status"], "declined");
        assert_eq!(auth["decline_code"], code, "{auth:#}");
        assert_eq!(auth["held_amount"], "0.00");
        let last = auth["trail"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["outcome"], "fail", "{auth:#}");
    }
    // Only the one approval moved money (its hold: one transfer, two entries).
    let after = moved(&app).await;
    assert_eq!((after.0 - before.0, after.1 - before.1), (1, 2));
    assert_eq!(balance(&app, &h).await, money("10.01", "-39.99", "50.00"));

    // The card's state: frozen (62), then canceled as stolen (43).
    let card = h.card["id"].as_str().unwrap();
    let resp = app
        .post_as(
            &h.partner.key,
            &format!("/v1/cards/{card}/freeze"),
            &json!({}),
        )
        .await;
    assert_eq!(resp.status().as_u16(), 200);
    let auth = authorize(&app, &h.partner.key, &base).await;
    assert_eq!(
        (
            auth["decline_code"].as_str(),
            auth["response_code"].as_str()
        ),
        (Some("card_frozen"), Some("62"))
    );
    let resp = app
        .post_as(
            &h.partner.key,
            &format!("/v1/cards/{card}/cancel"),
            &json!({"reason": "stolen"}),
        )
        .await;
    assert_eq!(resp.status().as_u16(), 200);
    let auth = authorize(&app, &h.partner.key, &base).await;
    assert_eq!(
        (
            auth["decline_code"].as_str(),
            auth["response_code"].as_str()
        ),
        (Some("card_canceled"), Some("43"))
    );
    assert_eq!(moved(&app).await, after);
    let declined = get(
        &app,
        &h.partner.key,
        "/v1/card-authorizations?status=declined",
    )
    .await;
    assert_eq!(declined["data"].as_array().unwrap().len(), 10);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn another_partners_card_is_an_unknown_number_and_its_authorizations_do_not_exist() {
    let (app, h) = card_app("50.00", None).await;
    let other = app.new_partner().await;
    let before = moved(&app).await;
    let auth = authorize(&app, &other.key, &message(&h.card, "10.00", "5411")).await;
    assert_eq!(auth["decline_code"], "card_not_found");
    assert_eq!(auth["card_id"], Value::Null);
    assert_eq!(moved(&app).await, before);
    let mine = authorize(&app, &h.partner.key, &message(&h.card, "10.00", "5411")).await;
    let id = mine["id"].as_str().unwrap();
    let resp = app
        .get_as(&other.key, &format!("/v1/card-authorizations/{id}"))
        .await;
    assert_problem(resp, 404, "not_found").await;
    let resp = follow(&app, &other.key, &mine, "capture", json!({})).await;
    assert_problem(resp, 404, "not_found").await;
    let list = get(&app, &other.key, "/v1/card-authorizations").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn malformed_network_messages_are_refused_and_record_nothing() {
    let (app, h) = card_app("50.00", None).await;
    let base = message(&h.card, "10.00", "5411");
    let before = (moved(&app).await, app.count("card_authorizations").await);
    let cases: Vec<(&str, Value)> = vec![
        ("pan", json!("4242424242424241")),
        ("pan", json!("42424242\u{0}4242424")),
        ("exp_month", json!(13)),
        ("exp_year", json!(99)),
        ("cvc", json!("12")),
        ("amount", json!("0")),
        ("amount", json!("-5.00")),
        ("amount", json!("10.001")),
        ("amount", json!("99999999999999999999999999.00")),
        ("currency", json!("XXX")),
        (
            "merchant",
            json!({"name": "Shop\u{0}", "mcc": "5411", "country": "US"}),
        ),
        (
            "merchant",
            json!({"name": "", "mcc": "5411", "country": "US"}),
        ),
        (
            "merchant",
            json!({"name": "Shop", "mcc": "54a1", "country": "US"}),
        ),
        (
            "merchant",
            json!({"name": "Shop", "mcc": "5411", "country": "us"}),
        ),
        ("network_transaction_id", json!("has space")),
        ("network_transaction_id", json!("x".repeat(65))),
        ("surprise", json!(true)),
    ];
    for (field, value) in cases {
        let mut body = base.clone();
        body[field] = value.clone();
        let resp = app
            .post_as(&h.partner.key, "/v1/simulator/authorizations", &body)
            .await;
        assert_eq!(resp.status().as_u16(), 400, "{field} = {value}");
        let problem: Value = resp.json().await.unwrap();
        let expected = if field == "surprise" {
            "unknown_field"
        } else {
            "validation_failed"
        };
        assert_eq!(problem["code"], expected, "{problem:#}");
    }
    // Follow-ups on something that is not an authorization id, or with a bad amount.
    let resp = app
        .post_as(
            &h.partner.key,
            "/v1/simulator/authorizations/card_01h455vb4pex5vsknk084sn02q/capture",
            &json!({}),
        )
        .await;
    // Not an authorization id: no such authorization.
    assert_problem(resp, 404, "not_found").await;
    assert_eq!(
        (moved(&app).await, app.count("card_authorizations").await),
        before
    );
    // A key without the cards write scope may read but not simulate.
    let resp = app
        .post_as(
            &h.partner.key,
            "/v1/api-keys",
            &json!({"name": "reader", "scopes": ["cards:read"]}),
        )
        .await;
    let reader: Value = resp.json().await.unwrap();
    let resp = app
        .post_as(
            reader["secret"].as_str().unwrap(),
            "/v1/simulator/authorizations",
            &base,
        )
        .await;
    assert_problem(resp, 403, "forbidden").await;
    let resp = app
        .post_raw(
            "/v1/simulator/authorizations",
            "application/json",
            base.to_string(),
        )
        .await;
    assert_eq!(resp.status().as_u16(), 401);
}

#[tokio::test]
async fn the_simulator_is_refused_where_it_is_switched_off() {
    let app =
        spawn_app_with(TestOptions::default().var("FLOWLET__CARDS__SIMULATOR__ENABLED", "false"))
            .await;
    let partner = app.new_partner().await;
    let resp = app
        .post_as(
            &partner.key,
            "/v1/simulator/authorizations",
            &json!({"pan": "4242424242424242", "exp_month": 1, "exp_year": 2030,
                    "amount": "1.00", "currency": "USD",
                    "merchant": {"name": "x", "mcc": "5411", "country": "US"}}),
        )
        .await;
    assert_problem(resp, 404, "simulator_disabled").await;
    assert_eq!(app.count("card_authorizations").await, 0);
}

#[tokio::test]
async fn a_partial_capture_posts_what_was_taken_and_releases_the_rest() {
    let (app, h) = card_app(
        "100.00",
        Some(json!({"enabled": true, "limits": {"daily": "50.00"}})),
    )
    .await;
    let auth = authorize(&app, &h.partner.key, &message(&h.card, "40.00", "5411")).await;
    let captured = followed(
        &app,
        &h.partner.key,
        &auth,
        "capture",
        json!({"amount": "30.00"}),
    )
    .await;
    assert_eq!(captured["status"], "captured");
    assert_eq!(captured["captured_amount"], "30.00");
    assert_eq!(captured["held_amount"], "0.00");
    assert_eq!(captured["operations"][0]["type"], "capture");
    assert_eq!(balance(&app, &h).await, money("70.00", "0.00", "70.00"));
    // The 10.00 released counts against the daily limit no more: 20.00 more fits exactly.
    let next = authorize(&app, &h.partner.key, &message(&h.card, "20.00", "5411")).await;
    assert_eq!(next["approved"], true, "{next:#}");
    let over = authorize(&app, &h.partner.key, &message(&h.card, "0.01", "5411")).await;
    assert_eq!(over["decline_code"], "limit_exceeded");
    // A captured authorization cannot be captured or reversed again.
    let resp = follow(&app, &h.partner.key, &auth, "capture", json!({})).await;
    assert_problem(resp, 409, "authorization_not_pending").await;
    let resp = follow(&app, &h.partner.key, &auth, "reverse", json!({})).await;
    assert_problem(resp, 409, "authorization_not_pending").await;
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn a_tip_may_be_captured_at_a_restaurant_within_the_allowance_only() {
    let (app, h) = card_app("100.00", None).await;
    // A shop is no restaurant: no more than authorized.
    let shop = authorize(&app, &h.partner.key, &message(&h.card, "10.00", "5411")).await;
    let before = moved(&app).await;
    let resp = follow(
        &app,
        &h.partner.key,
        &shop,
        "capture",
        json!({"amount": "10.01"}),
    )
    .await;
    assert_problem(resp, 422, "capture_exceeds_authorization").await;
    // A restaurant: up to 20% more (the default allowance), not a cent beyond.
    let dinner = authorize(&app, &h.partner.key, &message(&h.card, "50.00", "5812")).await;
    let after_auth = moved(&app).await;
    assert_eq!(after_auth.0 - before.0, 1);
    let resp = follow(
        &app,
        &h.partner.key,
        &dinner,
        "capture",
        json!({"amount": "60.01"}),
    )
    .await;
    assert_problem(resp, 422, "capture_exceeds_authorization").await;
    assert_eq!(moved(&app).await, after_auth);
    let tipped = followed(
        &app,
        &h.partner.key,
        &dinner,
        "capture",
        json!({"amount": "58.00"}),
    )
    .await;
    assert_eq!(tipped["captured_amount"], "58.00");
    // 100 - 58 posted; the shop's 10.00 still held.
    assert_eq!(balance(&app, &h).await, money("32.00", "-10.00", "42.00"));
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn a_tip_the_wallet_cannot_cover_is_recorded_as_a_shortfall() {
    let (app, h) = card_app("50.00", None).await;
    let dinner = authorize(&app, &h.partner.key, &message(&h.card, "50.00", "5812")).await;
    let captured = followed(
        &app,
        &h.partner.key,
        &dinner,
        "capture",
        json!({"amount": "55.00"}),
    )
    .await;
    assert_eq!(captured["status"], "captured");
    assert_eq!(captured["captured_amount"], "50.00");
    assert_eq!(captured["operations"][0]["detail"]["shortfall"], "5.00");
    assert_eq!(balance(&app, &h).await, money("0.00", "0.00", "0.00"));
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn increments_grow_the_hold_or_are_declined_on_their_own() {
    let (app, h) = card_app("100.00", None).await;
    let hotel = authorize(&app, &h.partner.key, &message(&h.card, "60.00", "7011")).await;
    let grown = followed(
        &app,
        &h.partner.key,
        &hotel,
        "increment",
        json!({"amount": "30.00"}),
    )
    .await;
    assert_eq!(grown["held_amount"], "90.00");
    assert_eq!(grown["amount"], "90.00");
    assert_eq!(balance(&app, &h).await, money("10.00", "-90.00", "100.00"));
    // 20.00 more does not fit: declined, the 90.00 still held.
    let before = moved(&app).await;
    let refused = followed(
        &app,
        &h.partner.key,
        &hotel,
        "increment",
        json!({"amount": "20.00"}),
    )
    .await;
    assert_eq!(refused["status"], "pending");
    assert_eq!(refused["held_amount"], "90.00");
    let ops = refused["operations"].as_array().unwrap();
    assert_eq!(ops.len(), 2);
    assert_eq!(ops[1]["approved"], false);
    assert_eq!(ops[1]["detail"]["decline_code"], "insufficient_funds");
    assert_eq!(moved(&app).await, before);
    assert_eq!(balance(&app, &h).await, money("10.00", "-90.00", "100.00"));
    // An increment needs an amount.
    let resp = follow(&app, &h.partner.key, &hotel, "increment", json!({})).await;
    assert_problem(resp, 400, "validation_failed").await;
    // Checkout: the grown hold is captured in full.
    let out = followed(&app, &h.partner.key, &hotel, "capture", json!({})).await;
    assert_eq!(out["captured_amount"], "90.00");
    assert_eq!(balance(&app, &h).await, money("10.00", "0.00", "10.00"));
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn reversals_void_part_then_all_of_a_hold_and_give_the_limit_back() {
    let (app, h) = card_app(
        "100.00",
        Some(json!({"enabled": true, "limits": {"daily": "60.00"}})),
    )
    .await;
    let auth = authorize(&app, &h.partner.key, &message(&h.card, "60.00", "5411")).await;
    let resp = follow(
        &app,
        &h.partner.key,
        &auth,
        "reverse",
        json!({"amount": "60.01"}),
    )
    .await;
    assert_problem(resp, 400, "validation_failed").await;
    let part = followed(
        &app,
        &h.partner.key,
        &auth,
        "reverse",
        json!({"amount": "15.00"}),
    )
    .await;
    assert_eq!(part["status"], "pending");
    assert_eq!(part["held_amount"], "45.00");
    assert_eq!(balance(&app, &h).await, money("55.00", "-45.00", "100.00"));
    // The 15.00 counts against the daily limit no more.
    let small = authorize(&app, &h.partner.key, &message(&h.card, "15.00", "5411")).await;
    assert_eq!(small["approved"], true, "{small:#}");
    let all = followed(&app, &h.partner.key, &auth, "reverse", json!({})).await;
    assert_eq!(all["status"], "reversed");
    assert_eq!(all["held_amount"], "0.00");
    assert_eq!(balance(&app, &h).await, money("85.00", "-15.00", "100.00"));
    assert_eq!(
        app.sql_count(
            "SELECT count(*) AS n FROM notify_events WHERE type = 'card.authorization.reversed'"
        )
        .await,
        2
    );
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn an_uncaptured_hold_expires_and_gives_the_money_and_limit_back() {
    let (app, h) = card_app(
        "100.00",
        Some(json!({"enabled": true, "limits": {"lifetime": "50.00"}})),
    )
    .await;
    let auth = authorize(&app, &h.partner.key, &message(&h.card, "50.00", "5411")).await;
    let over = authorize(&app, &h.partner.key, &message(&h.card, "1.00", "5411")).await;
    assert_eq!(over["decline_code"], "limit_exceeded");
    let (services, workers) = app.services();
    // Nothing is due yet; a week later (the default is 168 hours) the hold is.
    assert_eq!(
        services
            .cards
            .expire_due(chrono::Utc::now(), 100)
            .await
            .unwrap(),
        0
    );
    let later = chrono::Utc::now() + chrono::Duration::hours(169);
    assert_eq!(services.cards.expire_due(later, 100).await.unwrap(), 1);
    // Again: nothing left to expire, nothing moves twice.
    assert_eq!(services.cards.expire_due(later, 100).await.unwrap(), 0);
    workers.stop(std::time::Duration::from_secs(5)).await;
    let id = auth["id"].as_str().unwrap();
    let read = get(
        &app,
        &h.partner.key,
        &format!("/v1/card-authorizations/{id}"),
    )
    .await;
    assert_eq!(read["status"], "expired");
    assert_eq!(read["operations"][0]["type"], "expiry");
    assert_eq!(balance(&app, &h).await, money("100.00", "0.00", "100.00"));
    let again = authorize(&app, &h.partner.key, &message(&h.card, "50.00", "5411")).await;
    assert_eq!(again["approved"], true, "{again:#}");
    let resp = follow(&app, &h.partner.key, &auth, "capture", json!({})).await;
    assert_problem(resp, 409, "authorization_not_pending").await;
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn a_refund_credits_the_wallet_once_however_often_the_network_repeats_it() {
    let (app, h) = card_app("100.00", None).await;
    let auth = authorize(&app, &h.partner.key, &message(&h.card, "30.00", "5411")).await;
    followed(&app, &h.partner.key, &auth, "capture", json!({})).await;
    let body = json!({
        "pan": h.card["pan"], "exp_month": h.card["exp_month"], "exp_year": h.card["exp_year"],
        "amount": "12.50", "currency": "USD", "authorization_id": auth["id"],
        "merchant": {"name": "Corner Shop", "mcc": "5411", "country": "US"},
        "network_transaction_id": "refund-1",
    });
    let first = app
        .post_as(&h.partner.key, "/v1/simulator/refunds", &body)
        .await;
    assert_eq!(first.status().as_u16(), 201);
    let first: Value = first.json().await.unwrap();
    assert!(first["id"].as_str().unwrap().starts_with("crf_"));
    let again = app
        .post_as(&h.partner.key, "/v1/simulator/refunds", &body)
        .await;
    assert_eq!(again.status().as_u16(), 201);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    assert_eq!(balance(&app, &h).await, money("82.50", "0.00", "82.50"));
    // A number with the wrong expiry, or someone else's authorization: nothing moves.
    let other = holder(&app, "10.00", None).await;
    let theirs = authorize(
        &app,
        &other.partner.key,
        &message(&other.card, "1.00", "5411"),
    )
    .await;
    let before = moved(&app).await;
    let mut wrong = body.clone();
    wrong["exp_year"] = json!(2099);
    wrong["network_transaction_id"] = json!("refund-2");
    let resp = app
        .post_as(&h.partner.key, "/v1/simulator/refunds", &wrong)
        .await;
    assert_problem(resp, 404, "not_found").await;
    let mut foreign = body.clone();
    foreign["authorization_id"] = theirs["id"].clone();
    foreign["network_transaction_id"] = json!("refund-3");
    let resp = app
        .post_as(&h.partner.key, "/v1/simulator/refunds", &foreign)
        .await;
    assert_problem(resp, 404, "not_found").await;
    assert_eq!(moved(&app).await, before);
    assert_eq!(
        app.sql_count("SELECT count(*) AS n FROM notify_events WHERE type = 'card.refund.created'")
            .await,
        1
    );
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn a_repeated_network_message_answers_as_the_first_and_moves_nothing_twice() {
    let (app, h) = card_app("100.00", None).await;
    let mut body = message(&h.card, "20.00", "5411");
    body["network_transaction_id"] = json!("ntx-1");
    // Sent five times at once, as a network retrying at the worst moment would.
    let answers =
        futures_util::future::join_all((0..5).map(|_| authorize(&app, &h.partner.key, &body)))
            .await;
    for a in &answers {
        assert_eq!(a["id"], answers[0]["id"]);
        assert_eq!(a["approved"], true);
    }
    assert_eq!(balance(&app, &h).await, money("80.00", "-20.00", "100.00"));
    let auth = &answers[0];
    let capture = json!({"amount": "5.00", "network_transaction_id": "ntx-1-cap"});
    let first = followed(&app, &h.partner.key, auth, "capture", capture.clone()).await;
    let second = followed(&app, &h.partner.key, auth, "capture", capture).await;
    assert_eq!(first["captured_amount"], "5.00");
    assert_eq!(second["captured_amount"], "5.00");
    assert_eq!(balance(&app, &h).await, money("95.00", "0.00", "95.00"));
    assert_eq!(app.count("card_authorizations").await, 1);
    // A declined message repeats its decline.
    let mut declined = message(&h.card, "500.00", "5411");
    declined["network_transaction_id"] = json!("ntx-2");
    let a = authorize(&app, &h.partner.key, &declined).await;
    let b = authorize(&app, &h.partner.key, &declined).await;
    assert_eq!(
        (a["id"].clone(), a["decline_code"].clone()),
        (b["id"].clone(), json!("insufficient_funds"))
    );
    app.assert_ledger_invariants().await;
}

/// `count` authorizations of 10.00 at once, spread over three replicas: how many approved.
async fn race(apps: &[&TestApp], h: &Holder, count: usize) -> usize {
    let body = message(&h.card, "10.00", "5411");
    let answers = futures_util::future::join_all((0..count).map(|i| {
        let app = apps[i % apps.len()];
        let body = body.clone();
        let key = h.partner.key.clone();
        async move { authorize(app, &key, &body).await }
    }))
    .await;
    answers.iter().filter(|a| a["approved"] == true).count()
}

#[tokio::test]
async fn a_daily_limit_holds_exactly_under_a_hundred_authorizations_on_three_replicas() {
    let app = spawn_app().await;
    load_test_list(&app).await;
    let second = spawn_app_with(TestOptions::default().sharing(&app)).await;
    let third = spawn_app_with(TestOptions::default().sharing(&app)).await;
    let h = holder(
        &app,
        "2000.00",
        Some(json!({"enabled": true, "limits": {"daily": "500.00"}})),
    )
    .await;
    let approved = race(&[&app, &second, &third], &h, 100).await;
    assert_eq!(approved, 50);
    assert_eq!(
        balance(&app, &h).await,
        money("1500.00", "-500.00", "2000.00")
    );
    let declined = app
        .sql_count(
            "SELECT count(*) AS n FROM card_authorizations WHERE decline_code = 'limit_exceeded'",
        )
        .await;
    assert_eq!(declined, 50);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn funds_hold_exactly_under_a_hundred_authorizations_on_three_replicas() {
    let app = spawn_app().await;
    load_test_list(&app).await;
    let second = spawn_app_with(TestOptions::default().sharing(&app)).await;
    let third = spawn_app_with(TestOptions::default().sharing(&app)).await;
    let h = holder(&app, "300.00", None).await;
    let approved = race(&[&app, &second, &third], &h, 100).await;
    assert_eq!(approved, 30);
    assert_eq!(balance(&app, &h).await, money("0.00", "-300.00", "300.00"));
    let declined = app
        .sql_count(
            "SELECT count(*) AS n FROM card_authorizations WHERE decline_code = 'insufficient_funds'",
        )
        .await;
    assert_eq!(declined, 70);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn the_books_check_finds_an_authorization_that_holds_other_than_its_ledger_hold() {
    let (app, h) = card_app("100.00", None).await;
    authorize(&app, &h.partner.key, &message(&h.card, "25.00", "5411")).await;
    app.assert_ledger_invariants().await;
    // Someone edits the row behind the ledger's back.
    app.sql("UPDATE card_authorizations SET held = held + 1 WHERE status = 'pending'")
        .await;
    let (services, workers) = app.services();
    let report = services.verify_books(true).await.unwrap().unwrap();
    workers.stop(std::time::Duration::from_secs(5)).await;
    assert!(!report.is_sound());
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.check == "card_holds" && v.detail.contains("2501")),
        "{:#?}",
        report.violations
    );
}

#[tokio::test]
async fn a_category_limit_binds_at_its_merchants_only_and_reversals_give_it_back() {
    let (app, h) = card_app(
        "200.00",
        Some(json!({"enabled": true, "limits": {"daily": "150.00",
                    "categories": {"restaurants": {"daily": "30.00"}}}})),
    )
    .await;
    let card = get(
        &app,
        &h.partner.key,
        &format!("/v1/cards/{}", h.card["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(
        card["controls"]["limits"]["categories"]["restaurants"]["daily"],
        "30.00"
    );
    let lunch = authorize(&app, &h.partner.key, &message(&h.card, "20.00", "5812")).await;
    assert_eq!(lunch["approved"], true);
    let dinner = authorize(&app, &h.partner.key, &message(&h.card, "15.00", "5812")).await;
    assert_eq!(dinner["decline_code"], "limit_exceeded");
    let last = dinner["trail"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["rule"], "limits.categories");
    assert!(last["detail"].as_str().unwrap().contains("restaurants"));
    // A grocery is not a restaurant: only the card's own daily limit applies.
    let groceries = authorize(&app, &h.partner.key, &message(&h.card, "100.00", "5411")).await;
    assert_eq!(groceries["approved"], true, "{groceries:#}");
    // Reversing lunch gives its 20.00 back to the restaurants' day.
    followed(&app, &h.partner.key, &lunch, "reverse", json!({})).await;
    let again = authorize(&app, &h.partner.key, &message(&h.card, "30.00", "5812")).await;
    assert_eq!(again["approved"], true, "{again:#}");
    // Refusals of the controls themselves store nothing.
    let card_id = h.card["id"].as_str().unwrap();
    let resp = app
        .request(
            reqwest::Method::PUT,
            &format!("/v1/cards/{card_id}/controls"),
            &h.partner.key,
        )
        .json(&json!({"limits": {"categories": {"casinos": {"daily": "1.00"}}}}))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(resp, 400, "validation_failed").await;
    assert!(
        problem.to_string().contains("limits.categories.casinos"),
        "{problem}"
    );
    let card = get(&app, &h.partner.key, &format!("/v1/cards/{card_id}")).await;
    assert_eq!(
        card["controls"]["limits"]["categories"]["restaurants"]["daily"],
        "30.00"
    );
    app.assert_ledger_invariants().await;
}
