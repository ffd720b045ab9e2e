//! Wallets and payments over HTTP: opening wallets, deposits and P2P payments, statements,
//! every refusal (with nothing moved), freezing and closing, and the operator's CLI. The
//! ledger's invariants are checked after every test that moves money.

use serde_json::{Value, json};

use crate::cli::flowlet_json;
use crate::helpers::{TestApp, TestPartner, assert_problem, spawn_app, unique};
use crate::kyc::{create, get, load_test_list, passport, person, submit};

/// A customer of `partner` approved at tier 1 (USD: balance 2000, single 1000, daily 1000).
pub(crate) async fn verified_customer(app: &TestApp, partner: &TestPartner) -> String {
    let id = create(
        app,
        &partner.key,
        &person("Emma", "Johnson", "1990-05-17", "DE"),
    )
    .await;
    let doc = passport(&format!("C{:08}", unique() % 100_000_000));
    assert_eq!(
        submit(app, &partner.key, &id, &doc).await["status"],
        "approved"
    );
    id
}

pub(crate) async fn open_wallet(
    app: &TestApp,
    key: &str,
    customer: &str,
    currency: &str,
) -> String {
    let resp = app
        .post_as(
            key,
            "/v1/wallets",
            &json!({"customer_id": customer, "currency": currency, "type": "personal"}),
        )
        .await;
    assert_eq!(
        resp.status().as_u16(),
        201,
        "{}",
        resp.text().await.unwrap()
    );
    let wallet: Value = resp.json().await.unwrap();
    wallet["id"].as_str().unwrap().to_owned()
}

pub(crate) async fn deposit(app: &TestApp, key: &str, wallet: &str, amount: &str) -> Value {
    let resp = app
        .post_as(
            key,
            "/v1/deposits",
            &json!({"wallet_id": wallet, "amount": amount, "currency": "USD",
                    "source": {"iban": "DE89370400440532013000"}}),
        )
        .await;
    assert_eq!(
        resp.status().as_u16(),
        201,
        "{}",
        resp.text().await.unwrap()
    );
    resp.json().await.unwrap()
}

pub(crate) async fn pay(
    app: &TestApp,
    key: &str,
    from: &str,
    to: &str,
    amount: Value,
) -> reqwest::Response {
    app.post_as(
        key,
        "/v1/payments",
        &json!({"from_wallet_id": from, "to_wallet_id": to, "amount": amount,
                "currency": "USD", "description": "rent"}),
    )
    .await
}

async fn available(app: &TestApp, key: &str, wallet: &str) -> String {
    get(app, key, &format!("/v1/wallets/{wallet}/balance")).await["available"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Rows that record money: neither may change on a refusal.
async fn money_rows(app: &TestApp) -> (i64, i64, i64) {
    (
        app.posted_transfers().await,
        app.count("ledger_entries").await,
        app.count("payment_payments").await,
    )
}

/// Two verified customers' USD wallets, A funded with 100.00.
pub(crate) async fn funded_pair(app: &TestApp, partner: &TestPartner) -> (String, String) {
    let alice = verified_customer(app, partner).await;
    let bob = verified_customer(app, partner).await;
    let a = open_wallet(app, &partner.key, &alice, "USD").await;
    let b = open_wallet(app, &partner.key, &bob, "USD").await;
    deposit(app, &partner.key, &a, "100.00").await;
    (a, b)
}

#[tokio::test]
async fn a_wallet_opens_for_a_customer_and_reads_back_empty() {
    let app = spawn_app().await;
    load_test_list(&app).await;
    let (partner, other) = (app.new_partner().await, app.new_partner().await);
    let customer = verified_customer(&app, &partner).await;
    let resp = app
        .post_as(
            &partner.key,
            "/v1/wallets",
            &json!({"customer_id": customer, "currency": "USD", "type": "business"}),
        )
        .await;
    assert_eq!(resp.status().as_u16(), 201);
    let wallet: Value = resp.json().await.unwrap();
    let id = wallet["id"].as_str().unwrap();
    assert!(id.starts_with("wal_"));
    assert_eq!(
        (
            &wallet["status"],
            &wallet["type"],
            &wallet["currency"],
            &wallet["customer_id"]
        ),
        (
            &json!("active"),
            &json!("business"),
            &json!("USD"),
            &json!(customer)
        )
    );
    let read = get(&app, &partner.key, &format!("/v1/wallets/{id}")).await;
    assert_eq!(read["id"], id);
    assert_eq!(read["status_history"], json!([]));
    let listed = get(
        &app,
        &partner.key,
        &format!("/v1/wallets?customer_id={customer}"),
    )
    .await;
    assert_eq!(listed["data"][0]["id"], id);
    let balance = get(&app, &partner.key, &format!("/v1/wallets/{id}/balance")).await;
    assert_eq!(
        balance,
        json!({"wallet_id": id, "currency": "USD", "available": "0.00", "pending": "0.00",
               "posted": "0.00", "held": "0.00", "incoming": "0.00"})
    );
    let statement = get(
        &app,
        &partner.key,
        &format!("/v1/wallets/{id}/transactions"),
    )
    .await;
    assert_eq!(statement["data"], json!([]));
    assert_eq!(
        app.sql_count(&format!(
            "SELECT count(*) AS n FROM notify_events WHERE type = 'wallet.created' \
             AND data->>'wallet_id' = '{id}'"
        ))
        .await,
        1
    );
    // The wallet's ledger account refuses to go negative.
    assert_eq!(
        app.sql_count(
            "SELECT count(*) AS n FROM ledger_accounts a JOIN wallet_wallets w \
             ON w.account_id = a.id WHERE a.flags & 1 = 1 AND a.currency = 'USD'"
        )
        .await,
        1
    );

    // Another partner sees nothing of it.
    for path in [
        format!("/v1/wallets/{id}"),
        format!("/v1/wallets/{id}/balance"),
        format!("/v1/wallets/{id}/transactions"),
        "/v1/wallets/wal_nope".to_owned(),
    ] {
        assert_problem(app.get_as(&other.key, &path).await, 404, "not_found").await;
    }
    assert_eq!(
        get(&app, &other.key, "/v1/wallets").await["data"],
        json!([])
    );
    let resp = app
        .post_as(
            &other.key,
            &format!("/v1/wallets/{id}/freeze"),
            &json!({"reason": "x"}),
        )
        .await;
    assert_problem(resp, 404, "not_found").await;

    // Bad bodies: a 4xx naming the problem, and no wallet or ledger account made.
    let before = (
        app.count("wallet_wallets").await,
        app.count("ledger_accounts").await,
    );
    let other_customer = verified_customer(&app, &other).await;
    let cases = [
        (
            json!({"currency": "USD", "type": "personal"}),
            400,
            "validation_failed",
        ),
        (
            json!({"customer_id": customer, "currency": "XXX", "type": "personal"}),
            400,
            "validation_failed",
        ),
        (
            json!({"customer_id": customer, "currency": "usd", "type": "personal"}),
            400,
            "validation_failed",
        ),
        (
            json!({"customer_id": customer, "currency": "USD", "type": "savings"}),
            400,
            "validation_failed",
        ),
        (
            json!({"customer_id": "cus_nope", "currency": "USD", "type": "personal"}),
            400,
            "validation_failed",
        ),
        (
            json!({"customer_id": customer, "currency": "USD", "type": "personal", "limit": 5}),
            400,
            "unknown_field",
        ),
        (
            json!({"customer_id": other_customer, "currency": "USD", "type": "personal"}),
            404,
            "not_found",
        ),
    ];
    for (body, status, code) in cases {
        let resp = app.post_as(&partner.key, "/v1/wallets", &body).await;
        assert_problem(resp, status, code).await;
    }
    let after = (
        app.count("wallet_wallets").await,
        app.count("ledger_accounts").await,
    );
    assert_eq!(after.0, before.0, "no wallet for a bad body");
    assert_eq!(after.1, before.1, "no ledger account for a bad body");
}

#[tokio::test]
async fn deposits_and_payments_move_money_and_the_statement_shows_each_step() {
    let app = spawn_app().await;
    load_test_list(&app).await;
    let partner = app.new_partner().await;
    let (a, b) = funded_pair(&app, &partner).await;
    assert_eq!(available(&app, &partner.key, &a).await, "100.00");

    let resp = pay(&app, &partner.key, &a, &b, json!("30.00")).await;
    assert_eq!(resp.status().as_u16(), 201);
    let payment: Value = resp.json().await.unwrap();
    let pay_id = payment["id"].as_str().unwrap();
    assert!(pay_id.starts_with("pay_"));
    assert_eq!(
        (
            &payment["status"],
            &payment["type"],
            &payment["amount"],
            &payment["description"]
        ),
        (
            &json!("completed"),
            &json!("p2p"),
            &json!("30.00"),
            &json!("rent")
        )
    );
    // A JSON number is parsed exactly too.
    let resp = pay(&app, &partner.key, &a, &b, json!(0.1)).await;
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(available(&app, &partner.key, &a).await, "69.90");
    assert_eq!(available(&app, &partner.key, &b).await, "30.10");

    let statement = get(&app, &partner.key, &format!("/v1/wallets/{a}/transactions")).await;
    let lines = statement["data"].as_array().unwrap();
    assert_eq!(lines.len(), 3);
    assert_eq!(
        (
            &lines[1]["direction"],
            &lines[1]["amount"],
            &lines[1]["balance_after"]
        ),
        (&json!("debit"), &json!("30.00"), &json!("70.00"))
    );
    assert_eq!(lines[1]["counterparty_wallet_id"], b.as_str());
    assert_eq!(lines[1]["payment_id"], pay_id);
    assert_eq!(lines[1]["kind"], "posted");
    assert_eq!(
        (
            &lines[2]["direction"],
            &lines[2]["amount"],
            &lines[2]["counterparty_wallet_id"]
        ),
        (&json!("credit"), &json!("100.00"), &Value::Null)
    );
    let page = get(
        &app,
        &partner.key,
        &format!("/v1/wallets/{a}/transactions?limit=2"),
    )
    .await;
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = get(
        &app,
        &partner.key,
        &format!("/v1/wallets/{a}/transactions?cursor={cursor}"),
    )
    .await;
    assert_eq!(rest["data"].as_array().unwrap().len(), 1);

    let read = get(&app, &partner.key, &format!("/v1/payments/{pay_id}")).await;
    assert_eq!(read, payment);
    let listed = get(&app, &partner.key, &format!("/v1/payments?wallet_id={b}")).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 2);
    let all = get(&app, &partner.key, "/v1/payments").await;
    assert_eq!(
        all["data"].as_array().unwrap().len(),
        3,
        "two payments and the deposit"
    );
    assert_eq!(
        app.sql_count("SELECT count(*) AS n FROM notify_events WHERE type = 'payment.completed'")
            .await,
        3
    );
    let other = app.new_partner().await;
    let resp = app
        .get_as(&other.key, &format!("/v1/payments/{pay_id}"))
        .await;
    assert_problem(resp, 404, "not_found").await;

    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("payments_total{status=\"completed\",type=\"p2p\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("payment_amount_minor_total{currency=\"USD\",type=\"deposit\"} 10000")
    );
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn every_refused_payment_is_a_problem_and_moves_nothing() {
    let app = spawn_app().await;
    load_test_list(&app).await;
    let (partner, other) = (app.new_partner().await, app.new_partner().await);
    let (a, b) = funded_pair(&app, &partner).await;
    let alice = get(&app, &partner.key, &format!("/v1/wallets/{a}")).await["customer_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let euro = open_wallet(&app, &partner.key, &alice, "EUR").await;
    let unverified = create(
        &app,
        &partner.key,
        &person("Tom", "Newman", "1990-05-17", "DE"),
    )
    .await;
    let tier0 = open_wallet(&app, &partner.key, &unverified, "USD").await;
    let foreign = {
        let c = verified_customer(&app, &other).await;
        open_wallet(&app, &other.key, &c, "USD").await
    };
    let before = money_rows(&app).await;

    let body = |from: &str, to: &str, amount: Value, currency: &str| json!({"from_wallet_id": from, "to_wallet_id": to, "amount": amount, "currency": currency});
    let cases = vec![
        (
            "insufficient funds",
            body(&a, &b, json!("100.01"), "USD"),
            422,
            "insufficient_funds",
        ),
        (
            "zero",
            body(&a, &b, json!("0"), "USD"),
            400,
            "validation_failed",
        ),
        (
            "negative",
            body(&a, &b, json!("-5.00"), "USD"),
            400,
            "validation_failed",
        ),
        (
            "too many decimals",
            body(&a, &b, json!("1.001"), "USD"),
            400,
            "validation_failed",
        ),
        (
            "non-numeric",
            body(&a, &b, json!("ten"), "USD"),
            400,
            "validation_failed",
        ),
        (
            "huge",
            body(&a, &b, json!("99999999999999999999.00"), "USD"),
            400,
            "validation_failed",
        ),
        (
            "unknown currency",
            body(&a, &b, json!("1.00"), "ABC"),
            400,
            "validation_failed",
        ),
        (
            "a EUR wallet",
            body(&a, &euro, json!("1.00"), "USD"),
            422,
            "currency_mismatch",
        ),
        (
            "wallets in USD, payment in EUR",
            body(&a, &b, json!("1.00"), "EUR"),
            422,
            "currency_mismatch",
        ),
        (
            "the same wallet",
            body(&a, &a, json!("1.00"), "USD"),
            400,
            "validation_failed",
        ),
        (
            "an unknown wallet",
            body(&a, "wal_01h455vb4pex5vsknk084sn02q", json!("1.00"), "USD"),
            404,
            "not_found",
        ),
        (
            "a malformed wallet id",
            body(&a, "nope", json!("1.00"), "USD"),
            400,
            "validation_failed",
        ),
        (
            "another partner's wallet",
            body(&a, &foreign, json!("1.00"), "USD"),
            404,
            "not_found",
        ),
        (
            "an unverified payee",
            body(&a, &tier0, json!("1.00"), "USD"),
            403,
            "kyc_required",
        ),
        (
            "over the balance and the single cap: the balance first",
            body(&a, &b, json!("1000.01"), "USD"),
            422,
            "insufficient_funds",
        ),
    ];
    for (what, body, status, code) in cases {
        let resp = app.post_as(&partner.key, "/v1/payments", &body).await;
        assert_eq!(resp.status().as_u16(), status, "{what}");
        assert_problem(resp, status, code).await;
        assert_eq!(money_rows(&app).await, before, "{what}: nothing moved");
    }
    // Tier limits: the cap on incoming money (tier 1 USD balance 2000).
    let resp = app
        .post_as(
            &partner.key,
            "/v1/deposits",
            &json!({"wallet_id": b, "amount": "2000.01", "currency": "USD"}),
        )
        .await;
    let problem = assert_problem(resp, 403, "limit_exceeded").await;
    assert_eq!(
        (&problem["limit"], &problem["remaining"]),
        (&json!("max_balance"), &json!("2000.00"))
    );
    // Nobody tier 0 receives money either.
    let resp = app
        .post_as(
            &partner.key,
            "/v1/deposits",
            &json!({"wallet_id": tier0, "amount": "1", "currency": "USD"}),
        )
        .await;
    assert_problem(resp, 403, "kyc_required").await;
    // A bad deposit body.
    let resp = app
        .post_as(
            &partner.key,
            "/v1/deposits",
            &json!({"wallet_id": b, "amount": "1", "currency": "USD", "source": "cash"}),
        )
        .await;
    assert_problem(resp, 400, "validation_failed").await;
    assert_eq!(money_rows(&app).await, before, "nothing moved");
    // The daily limit counts what moved: 100 in, 60 out now, then 50 more would pass the
    // balance but a 1000.00 single payment cannot be covered.
    deposit(&app, &partner.key, &a, "1000.00").await;
    assert_eq!(
        pay(&app, &partner.key, &a, &b, json!("600.00"))
            .await
            .status()
            .as_u16(),
        201
    );
    let resp = pay(&app, &partner.key, &a, &b, json!("400.01")).await;
    let problem = assert_problem(resp, 403, "limit_exceeded").await;
    assert_eq!(
        (&problem["limit"], &problem["remaining"]),
        (&json!("daily_outgoing"), &json!("400.00"))
    );
    assert_eq!(available(&app, &partner.key, &a).await, "500.00");
    // A developer (read-only) cannot pay.
    let developer = app
        .new_user(Some(partner.id), flowlet::kernel::Role::PartnerDeveloper)
        .await;
    let token = app.login(&developer).await;
    assert_problem(
        pay(&app, &token, &a, &b, json!("1.00")).await,
        403,
        "forbidden",
    )
    .await;
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn frozen_and_closed_wallets_refuse_as_their_state_says() {
    let app = spawn_app().await;
    load_test_list(&app).await;
    let partner = app.new_partner().await;
    let (a, b) = funded_pair(&app, &partner).await;
    let post = |path: String, body: Value| {
        let (app, key) = (&app, partner.key.clone());
        async move { app.post_as(&key, &path, &body).await }
    };

    let frozen = post(
        format!("/v1/wallets/{a}/freeze"),
        json!({"reason": "suspicious login"}),
    )
    .await;
    assert_eq!(frozen.status().as_u16(), 200);
    let frozen: Value = frozen.json().await.unwrap();
    assert_eq!(
        (&frozen["status"], &frozen["freeze_mode"]),
        (&json!("frozen"), &json!("all"))
    );
    let before = money_rows(&app).await;
    assert_problem(
        pay(&app, &partner.key, &a, &b, json!("1.00")).await,
        422,
        "wallet_frozen",
    )
    .await;
    assert_problem(
        pay(&app, &partner.key, &b, &a, json!("1.00")).await,
        422,
        "wallet_frozen",
    )
    .await;
    let resp = post(
        "/v1/deposits".into(),
        json!({"wallet_id": a, "amount": "1", "currency": "USD"}),
    )
    .await;
    assert_problem(resp, 422, "wallet_frozen").await;
    assert_eq!(money_rows(&app).await, before);
    let again = post(
        format!("/v1/wallets/{a}/freeze"),
        json!({"reason": "again"}),
    )
    .await;
    assert_problem(again, 409, "wallet_already_frozen").await;

    // Blocking debits only (the operator's CLI): money still arrives.
    let cli = flowlet_json(
        &app,
        &[
            "admin",
            "wallet",
            "freeze",
            &a,
            "--mode",
            "debits",
            "--reason",
            "chargeback review",
            "--json",
        ],
    )
    .await;
    assert_eq!(
        (&cli["status"], &cli["freeze_mode"]),
        (&json!("frozen"), &json!("debits"))
    );
    deposit(&app, &partner.key, &a, "5.00").await;
    assert_problem(
        pay(&app, &partner.key, &a, &b, json!("1.00")).await,
        422,
        "wallet_frozen",
    )
    .await;
    let cli = flowlet_json(
        &app,
        &[
            "admin", "wallet", "unfreeze", &a, "--reason", "cleared", "--json",
        ],
    )
    .await;
    assert_eq!(cli["status"], "active");
    assert_eq!(
        pay(&app, &partner.key, &a, &b, json!("1.00"))
            .await
            .status()
            .as_u16(),
        201
    );
    let resp = post(format!("/v1/wallets/{a}/unfreeze"), json!({"reason": "x"})).await;
    assert_problem(resp, 409, "wallet_not_frozen").await;
    for (body, code) in [
        (json!({}), "validation_failed"),
        (json!({"reason": " "}), "validation_failed"),
        (json!({"reason": "x", "mode": "half"}), "validation_failed"),
    ] {
        assert_problem(
            post(format!("/v1/wallets/{a}/freeze"), body).await,
            400,
            code,
        )
        .await;
    }

    // Closing needs zero.
    let resp = post(
        format!("/v1/wallets/{a}/close"),
        json!({"reason": "customer left"}),
    )
    .await;
    assert_problem(resp, 409, "wallet_not_empty").await;
    let rest = available(&app, &partner.key, &a).await;
    assert_eq!(
        pay(&app, &partner.key, &a, &b, json!(rest))
            .await
            .status()
            .as_u16(),
        201
    );
    let closed = post(
        format!("/v1/wallets/{a}/close"),
        json!({"reason": "customer left"}),
    )
    .await;
    assert_eq!(closed.status().as_u16(), 200);
    let before = money_rows(&app).await;
    assert_problem(
        pay(&app, &partner.key, &b, &a, json!("1.00")).await,
        422,
        "wallet_closed",
    )
    .await;
    let resp = post(format!("/v1/wallets/{a}/freeze"), json!({"reason": "x"})).await;
    assert_problem(resp, 422, "wallet_closed").await;
    let resp = post(format!("/v1/wallets/{a}/close"), json!({"reason": "x"})).await;
    assert_problem(resp, 422, "wallet_closed").await;
    assert_eq!(money_rows(&app).await, before);

    let history =
        get(&app, &partner.key, &format!("/v1/wallets/{a}")).await["status_history"].clone();
    let steps: Vec<(String, String)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["to"].as_str().unwrap().to_owned(),
                h["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("frozen".into(), "suspicious login".into()),
            ("frozen".into(), "chargeback review".into()),
            ("active".into(), "cleared".into()),
            ("closed".into(), "customer left".into()),
        ]
    );
    assert_eq!(history[0]["actor"], partner.key_id);
    assert!(
        history[1]["actor"]
            .as_str()
            .unwrap()
            .starts_with("operator:")
    );
    for (event, n) in [
        ("wallet.frozen", 2),
        ("wallet.unfrozen", 1),
        ("wallet.closed", 1),
    ] {
        let count = app
            .sql_count(&format!(
                "SELECT count(*) AS n FROM notify_events WHERE type = '{event}' AND data->>'wallet_id' = '{a}'"
            ))
            .await;
        assert_eq!(count, n, "{event}");
    }
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn fifty_concurrent_payments_with_one_key_move_money_once() {
    let app = spawn_app().await;
    load_test_list(&app).await;
    let partner = app.new_partner().await;
    let (a, b) = funded_pair(&app, &partner).await;
    let before = money_rows(&app).await;
    let body =
        json!({"from_wallet_id": a, "to_wallet_id": b, "amount": "10.00", "currency": "USD"});
    let send = |body: Value| {
        let request = app
            .request(reqwest::Method::POST, "/v1/payments", &partner.key)
            .header("Idempotency-Key", "order-4711")
            .json(&body);
        async move {
            let resp = request.send().await.unwrap();
            let status = resp.status().as_u16();
            let replayed = resp.headers().contains_key("idempotent-replayed");
            (status, replayed, resp.bytes().await.unwrap())
        }
    };
    let answers = futures_util::future::join_all((0..50).map(|_| send(body.clone()))).await;
    let created: Vec<_> = answers.iter().filter(|(s, ..)| *s == 201).collect();
    assert!(!created.is_empty());
    let first = &created[0].2;
    for (status, replayed, bytes) in &answers {
        match status {
            201 => assert_eq!(
                bytes, first,
                "every 201 is the one payment (replayed: {replayed})"
            ),
            409 => assert!(String::from_utf8_lossy(bytes).contains("idempotency_key_in_use")),
            other => panic!("unexpected {other}: {}", String::from_utf8_lossy(bytes)),
        }
    }
    let after = money_rows(&app).await;
    assert_eq!(after.0, before.0 + 1, "one ledger transfer");
    assert_eq!(after.2, before.2 + 1, "one payment");
    assert_eq!(available(&app, &partner.key, &a).await, "90.00");

    // Later: the identical answer, marked replayed; another body under the key is refused.
    let (status, replayed, bytes) = send(body.clone()).await;
    assert_eq!((status, replayed, &bytes), (201, true, first));
    let mut other = body.clone();
    other["amount"] = json!("11.00");
    let (status, _, bytes) = send(other).await;
    assert_eq!(status, 422);
    assert!(String::from_utf8_lossy(&bytes).contains("idempotency_key_reused"));
    assert_eq!(money_rows(&app).await, after);
    app.assert_ledger_invariants().await;
}

/// Payments claim their key with the INSERT of their answer in the posting's own transaction
/// (no claim of its own before): answers, refusals and keys held elsewhere still behave as
/// API.md says.
#[tokio::test]
async fn a_payment_claims_its_key_in_its_own_transaction() {
    let app = spawn_app().await;
    load_test_list(&app).await;
    let partner = app.new_partner().await;
    let (a, b) = funded_pair(&app, &partner).await;
    let send = |key: &'static str, amount: &'static str| {
        let request = app
            .request(reqwest::Method::POST, "/v1/payments", &partner.key)
            .header("Idempotency-Key", key)
            .json(
                &json!({"from_wallet_id": a, "to_wallet_id": b, "amount": amount,
                          "currency": "USD"}),
            );
        async move {
            let resp = request.send().await.unwrap();
            let status = resp.status().as_u16();
            let replayed = resp.headers().contains_key("idempotent-replayed");
            (status, replayed, resp.bytes().await.unwrap())
        }
    };
    let stored = |key: &'static str| {
        let app = &app;
        async move {
            app.sql_count(&format!(
                "SELECT count(*) AS n FROM platform_idempotency_keys \
                 WHERE key = '{key}' AND status IS NOT NULL"
            ))
            .await
        }
    };
    let (status, replayed, paid) = send("pay-1", "10.00").await;
    assert_eq!((status, replayed), (201, false));
    assert_eq!(
        stored("pay-1").await,
        1,
        "the answer is stored under the key"
    );
    assert_eq!(send("pay-1", "10.00").await, (201, true, paid));
    let before = money_rows(&app).await;

    // A refusal is stored after the fact, and replayed.
    let (status, replayed, refused) = send("pay-2", "1000.00").await;
    assert_eq!((status, replayed), (422, false));
    assert!(String::from_utf8_lossy(&refused).contains("insufficient_funds"));
    assert_eq!(stored("pay-2").await, 1);
    assert_eq!(send("pay-2", "1000.00").await, (422, true, refused));
    // Another body under a used key.
    let (status, _, bytes) = send("pay-2", "1.00").await;
    assert_eq!(status, 422);
    assert!(String::from_utf8_lossy(&bytes).contains("idempotency_key_reused"));

    assert_eq!(money_rows(&app).await, before, "the refusals moved nothing");

    // A key another request holds (claimed, no answer yet: the state a running or crashed
    // first request leaves) is in use.
    assert_eq!(send("pay-3", "1.00").await.0, 201);
    let before = money_rows(&app).await;
    app.sql(
        "UPDATE platform_idempotency_keys SET status = NULL, response_body = NULL, \
         content_type = NULL, locked_at = now() WHERE key = 'pay-3'",
    )
    .await;
    let (status, _, bytes) = send("pay-3", "1.00").await;
    assert_eq!(status, 409);
    assert!(String::from_utf8_lossy(&bytes).contains("idempotency_key_in_use"));
    assert_eq!(money_rows(&app).await, before, "nothing moved");
    assert_eq!(available(&app, &partner.key, &a).await, "89.00");
    app.assert_ledger_invariants().await;
}

/// An app whose sandbox rail settles withdrawals after `delay_ms`.
pub(crate) async fn app_settling_after(delay_ms: u64) -> TestApp {
    crate::helpers::spawn_app_with(
        crate::helpers::TestOptions::default()
            .var(
                "FLOWLET__PAYMENTS__SANDBOX_SETTLE_DELAY_MS",
                delay_ms.to_string(),
            )
            .var("FLOWLET__PAYMENTS__SETTLEMENT_INTERVAL_MS", "50"),
    )
    .await
}

pub(crate) async fn withdraw(app: &TestApp, key: &str, wallet: &str, amount: &str) -> Value {
    let resp = app
        .post_as(
            key,
            "/v1/withdrawals",
            &json!({"wallet_id": wallet, "amount": amount, "currency": "USD",
                    "destination": {"iban": "DE02120300000000202051"}}),
        )
        .await;
    assert_eq!(
        resp.status().as_u16(),
        201,
        "{}",
        resp.text().await.unwrap()
    );
    resp.json().await.unwrap()
}

/// Waits until the payment leaves `pending` (or 10 s pass) and returns it.
pub(crate) async fn settled(app: &TestApp, key: &str, id: &str) -> Value {
    let started = std::time::Instant::now();
    loop {
        let payment = get(app, key, &format!("/v1/payments/{id}")).await;
        if payment["status"] != "pending" || started.elapsed() > std::time::Duration::from_secs(10)
        {
            return payment;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn count_events(app: &TestApp, event: &str, payment: &str) -> i64 {
    app.sql_count(&format!(
        "SELECT count(*) AS n FROM notify_events WHERE type = '{event}' AND data->>'id' = '{payment}'"
    ))
    .await
}

#[tokio::test]
async fn a_withdrawal_holds_the_money_then_settles_or_fails_and_gives_it_back() {
    let app = app_settling_after(300).await;
    load_test_list(&app).await;
    let partner = app.new_partner().await;
    let (a, _) = funded_pair(&app, &partner).await;

    let ok = withdraw(&app, &partner.key, &a, "40.00").await;
    assert_eq!(
        (&ok["status"], &ok["type"]),
        (&json!("pending"), &json!("withdrawal"))
    );
    assert_eq!(ok["rail"]["destination"]["iban"], "DE02120300000000202051");
    let balance = get(&app, &partner.key, &format!("/v1/wallets/{a}/balance")).await;
    assert_eq!(
        (&balance["available"], &balance["posted"], &balance["held"]),
        (&json!("60.00"), &json!("100.00"), &json!("40.00"))
    );
    let fails = withdraw(&app, &partner.key, &a, "10.13").await;
    assert_eq!(available(&app, &partner.key, &a).await, "49.87");

    let ok = settled(&app, &partner.key, ok["id"].as_str().unwrap()).await;
    assert_eq!(ok["status"], "completed");
    let fails = settled(&app, &partner.key, fails["id"].as_str().unwrap()).await;
    assert_eq!(fails["status"], "failed");
    let balance = get(&app, &partner.key, &format!("/v1/wallets/{a}/balance")).await;
    assert_eq!(
        (&balance["available"], &balance["posted"], &balance["held"]),
        (&json!("60.00"), &json!("60.00"), &json!("0.00")),
        "the failed withdrawal's money is released"
    );
    let ok_id = ok["id"].as_str().unwrap();
    let fails_id = fails["id"].as_str().unwrap();
    assert_eq!(count_events(&app, "payment.created", ok_id).await, 1);
    assert_eq!(count_events(&app, "payment.completed", ok_id).await, 1);
    assert_eq!(count_events(&app, "payment.failed", fails_id).await, 1);
    // The statement shows the hold and its settlement.
    let lines =
        get(&app, &partner.key, &format!("/v1/wallets/{a}/transactions")).await["data"].clone();
    let kinds: Vec<&str> = lines
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.iter().filter(|k| **k == "held").count(), 2);
    assert_eq!(kinds.iter().filter(|k| **k == "released").count(), 1);
    // The failed one no longer counts against the daily limit: 1000 - 40 = 960 remain.
    deposit(&app, &partner.key, &a, "1000.00").await;
    let too_much = app
        .post_as(&partner.key, "/v1/withdrawals",
                 &json!({"wallet_id": a, "amount": "960.01", "currency": "USD", "destination": {"iban": "x"}}))
        .await;
    let problem = assert_problem(too_much, 403, "limit_exceeded").await;
    assert_eq!(problem["remaining"], "960.00");

    // Bad withdrawals move nothing.
    let before = money_rows(&app).await;
    for (body, status, code) in [
        (
            json!({"wallet_id": a, "amount": "1", "currency": "USD"}),
            400,
            "validation_failed",
        ),
        (
            json!({"wallet_id": a, "amount": "1", "currency": "USD", "destination": "cash"}),
            400,
            "validation_failed",
        ),
        (
            json!({"wallet_id": a, "amount": "0", "currency": "USD", "destination": {}}),
            400,
            "validation_failed",
        ),
        (
            json!({"wallet_id": a, "amount": "5000", "currency": "USD", "destination": {}}),
            422,
            "insufficient_funds",
        ),
        (
            json!({"wallet_id": a, "amount": "1", "currency": "EUR", "destination": {}}),
            422,
            "currency_mismatch",
        ),
    ] {
        let resp = app.post_as(&partner.key, "/v1/withdrawals", &body).await;
        assert_problem(resp, status, code).await;
    }
    assert_eq!(money_rows(&app).await, before);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn a_withdrawal_settles_exactly_once_across_a_restart_and_two_replicas() {
    let first = app_settling_after(1500).await;
    load_test_list(&first).await;
    let partner = first.new_partner().await;
    let (a, _) = funded_pair(&first, &partner).await;
    let pending = withdraw(&first, &partner.key, &a, "25.00").await;
    let id = pending["id"].as_str().unwrap().to_owned();
    first.stop().await;

    // Two replicas come up on the same database; both run the settlement worker.
    let options = || {
        crate::helpers::TestOptions::default()
            .sharing(&first)
            .var("FLOWLET__PAYMENTS__SETTLEMENT_INTERVAL_MS", "20")
    };
    let second = crate::helpers::spawn_app_with(options()).await;
    let third = crate::helpers::spawn_app_with(options()).await;
    let done = settled(&second, &partner.key, &id).await;
    assert_eq!(done["status"], "completed");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        second
            .sql_count(
                "SELECT count(*) AS n FROM ledger_transfers t JOIN payment_payments p \
                 ON t.pending_id = p.transfer_id WHERE p.kind = 'withdrawal'"
            )
            .await,
        1,
        "one settlement transfer"
    );
    assert_eq!(count_events(&second, "payment.completed", &id).await, 1);
    assert_eq!(available(&third, &partner.key, &a).await, "75.00");
    second.assert_ledger_invariants().await;
}

#[tokio::test]
async fn refunds_return_money_up_to_what_was_paid_and_reverse_the_payment() {
    let app = spawn_app().await;
    load_test_list(&app).await;
    let partner = app.new_partner().await;
    let (a, b) = funded_pair(&app, &partner).await;
    let payment: Value = pay(&app, &partner.key, &a, &b, json!("30.00"))
        .await
        .json()
        .await
        .unwrap();
    let id = payment["id"].as_str().unwrap();
    let refunds = format!("/v1/payments/{id}/refunds");
    // The payee holds more than the payment, so only the refund rule can stop a refund.
    deposit(&app, &partner.key, &b, "50.00").await;

    let partial = app
        .post_as(&partner.key, &refunds, &json!({"amount": "10.00"}))
        .await;
    assert_eq!(partial.status().as_u16(), 201);
    let partial: Value = partial.json().await.unwrap();
    assert_eq!(
        (
            &partial["type"],
            &partial["amount"],
            &partial["refund_of"],
            &partial["from_wallet_id"]
        ),
        (&json!("refund"), &json!("10.00"), &json!(id), &json!(b))
    );
    assert_eq!(available(&app, &partner.key, &a).await, "80.00");
    let before = money_rows(&app).await;
    let over = app
        .post_as(&partner.key, &refunds, &json!({"amount": "20.01"}))
        .await;
    let problem = assert_problem(over, 422, "refund_exceeds_payment").await;
    assert_eq!(problem["remaining"], "20.00");
    for (body, code) in [
        (json!({"amount": "0"}), "validation_failed"),
        (json!({"amount": "1.001"}), "validation_failed"),
        (json!({"amount": "1", "reason": "x"}), "unknown_field"),
    ] {
        assert_problem(app.post_as(&partner.key, &refunds, &body).await, 400, code).await;
    }
    assert_eq!(money_rows(&app).await, before, "nothing moved");

    // Concurrent refunds of the rest: exactly 20.00 more goes back, never more.
    let attempts = futures_util::future::join_all((0..5).map(|_| {
        app.request(reqwest::Method::POST, &refunds, &partner.key)
            .json(&json!({"amount": "7.00"}))
            .send()
    }))
    .await;
    let ok = attempts
        .iter()
        .filter(|r| r.as_ref().unwrap().status().as_u16() == 201)
        .count();
    assert_eq!(ok, 2, "two of 7.00 fit in the 20.00 left");
    let rest = app.post_as(&partner.key, &refunds, &json!({})).await;
    assert_eq!(rest.status().as_u16(), 201);
    let rest: Value = rest.json().await.unwrap();
    assert_eq!(rest["amount"], "6.00", "the default is what is left");
    assert_eq!(
        get(&app, &partner.key, &format!("/v1/payments/{id}")).await["status"],
        "reversed"
    );
    assert_eq!(available(&app, &partner.key, &a).await, "100.00");
    assert_eq!(available(&app, &partner.key, &b).await, "50.00");
    let again = app.post_as(&partner.key, &refunds, &json!({})).await;
    let problem = assert_problem(again, 422, "refund_exceeds_payment").await;
    assert_eq!(problem["remaining"], "0.00");
    assert_eq!(
        app.sql_count(&format!(
            "SELECT count(*) AS n FROM notify_events WHERE type = 'payment.refunded' \
             AND data->>'refund_of' = '{id}'"
        ))
        .await,
        4
    );
    // Deposits are not refunded; unknown payments are 404.
    let deposit_id = get(&app, &partner.key, &format!("/v1/payments?wallet_id={a}")).await["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["type"] == "deposit")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let resp = app
        .post_as(
            &partner.key,
            &format!("/v1/payments/{deposit_id}/refunds"),
            &json!({}),
        )
        .await;
    assert_problem(resp, 422, "payment_not_refundable").await;
    let resp = app
        .post_as(
            &partner.key,
            "/v1/payments/pay_01h455vb4pex5vsknk084sn02q/refunds",
            &json!({}),
        )
        .await;
    assert_problem(resp, 404, "not_found").await;
    app.assert_ledger_invariants().await;
}
