//! Money safety under hostile and careless input: one request's bad data never fails its
//! neighbours, system accounts move only through their modules, ids are decided once, and the
//! engine's limits hold. Every test that moves money ends with the ledger's invariants.

use serde_json::{Value, json};

use crate::helpers::{TestApp, TestPartner, assert_problem, spawn_app};

/// The ledger API of a test, for tests that drive the engine directly.
mod direct {
    pub use flowlet::ledger::{
        AccountId, NewTransfer, ResultCode, Scope, TransferFlags, TransferId,
    };
    pub use flowlet::platform::money::Currency;
}

fn usd() -> direct::Currency {
    direct::Currency::parse("USD").unwrap()
}

fn transfer(
    debit: direct::AccountId,
    credit: direct::AccountId,
    minor: i64,
    metadata: Option<Value>,
) -> direct::NewTransfer {
    direct::NewTransfer {
        id: direct::TransferId::new(),
        debit_account_id: Some(debit),
        credit_account_id: Some(credit),
        amount: minor,
        currency: Some(usd()),
        code: 0,
        flags: direct::TransferFlags::default(),
        pending_id: None,
        timeout_secs: None,
        metadata,
    }
}

/// A partner's own books: a settlement account and a customer account (no overdraft).
async fn books(app: &TestApp, partner: &TestPartner) -> (String, String) {
    let mut ids = Vec::new();
    for body in [
        json!({"currency": "USD", "code": 1}),
        json!({"currency": "USD", "code": 2, "flags": ["debits_must_not_exceed_credits"]}),
    ] {
        let resp = app
            .post_as(&partner.key, "/v1/ledger/accounts", &body)
            .await;
        assert_eq!(resp.status().as_u16(), 201);
        let v: Value = resp.json().await.unwrap();
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    (ids[0].clone(), ids[1].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ninety_concurrent_transfers_nine_with_a_nul_in_metadata_the_nine_get_400_the_rest_ok() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let (settlement, customer) = books(&app, &partner).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..90 {
        let note = if i % 10 == 3 { "a\u{0}b" } else { "ab" };
        let body = json!({"transfers": [{
            "debit_account_id": settlement, "credit_account_id": customer,
            "amount": "1.00", "currency": "USD", "metadata": {"note": note}}]});
        let (client, url, key) = (
            app.client.clone(),
            app.url("/v1/ledger/transfers"),
            partner.key.clone(),
        );
        tasks.spawn(async move {
            let resp = client
                .post(url)
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (i, status, resp.json::<Value>().await.unwrap())
        });
    }
    let (mut ok, mut refused) = (0, 0);
    while let Some(answer) = tasks.join_next().await {
        let (i, status, body) = answer.unwrap();
        if i % 10 == 3 {
            assert_eq!(status, 400, "{body}");
            assert_eq!(body["code"], "validation_failed");
            assert_eq!(body["field"], "transfers[0].metadata.note");
            refused += 1;
        } else {
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["results"][0]["result"], "ok", "{body}");
            ok += 1;
        }
    }
    assert_eq!((ok, refused), (81, 9));
    assert_eq!(app.count("ledger_transfers").await, 81);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn text_postgres_cannot_store_is_refused_at_the_edge_of_every_write() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let (settlement, customer) = books(&app, &partner).await;
    let before = app.count("ledger_transfers").await;
    for (path, body, field) in [
        (
            "/v1/ledger/accounts",
            json!({"currency": "USD", "metadata": {"k\u{0}": 1}}),
            "metadata.k\\u{0}",
        ),
        (
            "/v1/ledger/transfers",
            json!({"transfers": [{"debit_account_id": settlement, "credit_account_id": customer,
                   "amount": "1.00", "currency": "USD",
                   "metadata": {"n": serde_json::from_str::<Value>("1e999999").unwrap()}}]}),
            "transfers[0].metadata.n",
        ),
        (
            "/v1/deposits",
            json!({"wallet_id": "wal_x", "amount": "1.00", "currency": "USD",
                   "source": {"iban": "DE\u{0}89"}}),
            "source.iban",
        ),
        (
            "/v1/withdrawals",
            json!({"wallet_id": "wal_x", "amount": "1.00", "currency": "USD",
                   "destination": {"iban": ["x", "\u{0}"]}}),
            "destination.iban[1]",
        ),
        (
            "/v1/payments",
            json!({"from_wallet_id": "wal_a", "to_wallet_id": "wal_b", "amount": "1.00",
                   "currency": "USD", "description": "rent\u{0}"}),
            "description",
        ),
        (
            "/v1/customers",
            json!({"first_name": "Ada\u{0}", "last_name": "L", "date_of_birth": "1990-01-01",
                   "country": "DE"}),
            "first_name",
        ),
        (
            "/v1/webhook-endpoints",
            json!({"url": "https://example.com/\u{0}", "events": ["*"]}),
            "url",
        ),
    ] {
        let resp = app.post_as(&partner.key, path, &body).await;
        let problem = assert_problem(resp, 400, "validation_failed").await;
        assert_eq!(problem["field"], field, "{path}: {problem}");
    }
    assert_eq!(app.count("ledger_transfers").await, before);
    assert_eq!(app.count("ledger_accounts").await, 2);
    assert_eq!(app.count("payment_payments").await, 0);
    assert_eq!(app.count("kyc_customers").await, 0);
    assert_eq!(app.count("notify_endpoints").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_database_refuses_fails_alone_and_its_batch_neighbours_commit() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let scope = direct::Scope::Partner(partner.id);
    let (settlement, customer) = books(&app, &partner).await;
    let (settlement, customer): (direct::AccountId, direct::AccountId) =
        (settlement.parse().unwrap(), customer.parse().unwrap());
    // Past the edge (a module's bug, say): metadata PostgreSQL refuses reaches the engine.
    let (ledger, workers) = app.spawn_engine(3);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..60 {
        let note = if i % 10 == 7 { "a\u{0}b" } else { "ab" };
        let t = transfer(settlement, customer, 100, Some(json!({ "note": note })));
        let ledger = ledger.clone();
        tasks.spawn(async move { (i, ledger.post(scope, vec![t], None).await) });
    }
    let (mut ok, mut failed) = (0, 0);
    while let Some(answer) = tasks.join_next().await {
        let (i, result) = answer.unwrap();
        if i % 10 == 7 {
            assert!(result.is_err(), "the bad request fails: {result:?}");
            failed += 1;
        } else {
            let outcomes = result.expect("a neighbour of a bad request is answered");
            assert_eq!(outcomes[0].code, direct::ResultCode::Ok);
            ok += 1;
        }
    }
    assert_eq!((ok, failed), (54, 6));
    assert_eq!(app.count("ledger_transfers").await, 54);
    workers.stop(std::time::Duration::from_secs(5)).await;
    app.assert_ledger_invariants().await;
}

async fn get_json(app: &TestApp, key: &str, path: &str) -> (u16, Value) {
    let resp = app.get_as(key, path).await;
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn raw_transfer(app: &TestApp, key: &str, transfer: Value) -> String {
    let resp = app
        .post_as(key, "/v1/ledger/transfers", &json!({ "transfers": [transfer] }))
        .await;
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.unwrap();
    body["results"][0]["result"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn wallet_money_moves_only_through_payments_and_partners_read_every_transfer_of_their_wallets()
{
    use crate::payments::{app_settling_after, funded_pair, pay, settled, withdraw};
    let app = app_settling_after(100).await;
    crate::kyc::load_test_list(&app).await;
    let (partner, other) = (app.new_partner().await, app.new_partner().await);
    let (a, b) = funded_pair(&app, &partner).await;
    let (settlement, _) = books(&app, &partner).await;
    let wallet = |id: &str| {
        let (app, key, id) = (&app, partner.key.clone(), id.to_owned());
        async move { get_json(app, &key, &format!("/v1/wallets/{id}")).await.1 }
    };
    let account_a = wallet(&a).await["ledger_account_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let account_b = wallet(&b).await["ledger_account_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The raw ledger API cannot put money into a wallet, take it out, or move it between
    // wallets: no KYC limit, payment record or event would be written.
    let before = (
        app.count("ledger_transfers").await,
        app.count("ledger_failed_transfers").await,
    );
    for (debit, credit) in [
        (&settlement, &account_a),
        (&account_a, &settlement),
        (&account_a, &account_b),
    ] {
        let result = raw_transfer(
            &app,
            &partner.key,
            json!({"debit_account_id": debit, "credit_account_id": credit,
                   "amount": "1.00", "currency": "USD"}),
        )
        .await;
        assert_eq!(result, "account_not_owned", "{debit} -> {credit}");
    }
    assert_eq!(app.count("ledger_transfers").await, before.0, "nothing moved");
    assert_eq!(
        app.count("ledger_failed_transfers").await,
        before.1 + 3,
        "the ids are burnt like any refusal on the ledger's state"
    );
    // It may still read its wallets' accounts.
    let (status, account) = get_json(
        &app,
        &partner.key,
        &format!("/v1/ledger/accounts/{account_a}"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(account["balance"]["posted"], "100.00");

    // Payments still move wallet money, and every transfer behind them reads back, for the
    // partner whose wallets they touch and nobody else.
    assert_eq!(
        pay(&app, &partner.key, &a, &b, json!("10.00"))
            .await
            .status()
            .as_u16(),
        201
    );
    let out = withdraw(&app, &partner.key, &a, "5.00").await;
    let out = settled(&app, &partner.key, out["id"].as_str().unwrap()).await;
    assert_eq!(out["status"], "completed");
    let (_, lines) = get_json(&app, &partner.key, &format!("/v1/wallets/{a}/transactions")).await;
    let transfers: Vec<String> = lines["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["transfer_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(transfers.len(), 4, "deposit, payment, hold, settlement: {lines}");
    for id in &transfers {
        let path = format!("/v1/ledger/transfers/{id}");
        let (status, transfer) = get_json(&app, &partner.key, &path).await;
        assert_eq!(status, 200, "{id}: {transfer}");
        assert_eq!(transfer["id"], id.as_str());
        let resp = app.get_as(&other.key, &path).await;
        assert_problem(resp, 404, "not_found").await;
    }
    // Reading is not moving: the partner cannot settle or release a hold itself.
    let hold = &transfers[1];
    let result = raw_transfer(&app, &partner.key, json!({"void_pending_id": hold})).await;
    assert_eq!(result, "pending_transfer_not_found");
    app.assert_ledger_invariants().await;
}
