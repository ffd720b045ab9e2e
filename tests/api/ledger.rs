//! The ledger over HTTP and through its engine: accounts, transfers and their result codes,
//! two-phase transfers and expiry, history, point-in-time balances, isolation, concurrency.
//! Every test that moves money ends with the ledger's invariant check.

use serde_json::{Value, json};

use crate::helpers::{TestApp, TestPartner, assert_problem, spawn_app};

async fn account(app: &TestApp, partner: &TestPartner, body: Value) -> String {
    let resp = app
        .post_as(&partner.key, "/v1/ledger/accounts", &body)
        .await;
    assert_eq!(resp.status().as_u16(), 201, "{:?}", resp.text().await);
    let v: Value = resp.json().await.unwrap();
    v["id"].as_str().unwrap().to_owned()
}

/// A settlement account (no limits) and a customer account that may not go negative.
pub(crate) async fn two_accounts(app: &TestApp, partner: &TestPartner) -> (String, String) {
    let settlement = account(app, partner, json!({"currency": "USD", "code": 1})).await;
    let customer = account(
        app,
        partner,
        json!({"currency": "USD", "code": 2, "flags": ["debits_must_not_exceed_credits"]}),
    )
    .await;
    (settlement, customer)
}

async fn post(app: &TestApp, partner: &TestPartner, transfers: Value) -> Vec<String> {
    let resp = app
        .post_as(
            &partner.key,
            "/v1/ledger/transfers",
            &json!({"transfers": transfers}),
        )
        .await;
    assert_eq!(resp.status().as_u16(), 200);
    let v: Value = resp.json().await.unwrap();
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["result"].as_str().unwrap().to_owned())
        .collect()
}

async fn get(app: &TestApp, partner: &TestPartner, path: &str) -> Value {
    let resp = app.get_as(&partner.key, path).await;
    assert_eq!(resp.status().as_u16(), 200, "{path}");
    resp.json().await.unwrap()
}

#[tokio::test]
async fn a_transfer_moves_money_between_accounts_and_the_books_balance() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let (settlement, customer) = two_accounts(&app, &partner).await;
    let results = post(
        &app,
        &partner,
        json!([
            {"debit_account_id": settlement, "credit_account_id": customer, "amount": "100.00", "currency": "USD"},
            {"debit_account_id": customer, "credit_account_id": settlement, "amount": "30.25", "currency": "USD"},
            {"debit_account_id": customer, "credit_account_id": settlement, "amount": "70.00", "currency": "USD"},
        ]),
    )
    .await;
    assert_eq!(results, ["ok", "ok", "exceeds_credits"]);
    let c = get(&app, &partner, &format!("/v1/ledger/accounts/{customer}")).await;
    assert_eq!(c["credits_posted"], "100.00");
    assert_eq!(c["debits_posted"], "30.25");
    assert_eq!(c["balance"]["posted"], "69.75");
    assert_eq!(c["balance"]["available"], "69.75");
    let s = get(&app, &partner, &format!("/v1/ledger/accounts/{settlement}")).await;
    assert_eq!(s["balance"]["posted"], "-69.75");
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn accounts_are_created_read_and_validated() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let resp = app
        .post_as(
            &partner.key,
            "/v1/ledger/accounts",
            &json!({"currency": "JPY", "code": 7, "flags": ["credits_must_not_exceed_debits", "history"], "metadata": {"purpose": "fees"}}),
        )
        .await;
    assert_eq!(resp.status().as_u16(), 201);
    let created: Value = resp.json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    assert!(id.starts_with("acct_"));
    assert_eq!(created["currency"], "JPY");
    assert_eq!(created["debits_posted"], "0", "JPY has no minor digits");
    assert_eq!(
        created["flags"],
        json!(["credits_must_not_exceed_debits", "history"])
    );
    let got = get(&app, &partner, &format!("/v1/ledger/accounts/{id}")).await;
    assert_eq!(got["metadata"], json!({"purpose": "fees"}));

    let before = app.count("ledger_accounts").await;
    for (body, field) in [
        (json!({"currency": "USD", "flags": ["overdraft"]}), "flags"),
        (json!({"currency": "USD", "flags": ["closed"]}), "flags"),
        (
            json!({"currency": "USD", "flags": ["debits_must_not_exceed_credits", "credits_must_not_exceed_debits"]}),
            "flags",
        ),
        (json!({"currency": "USD", "code": 70000}), "code"),
        (json!({"currency": "USD", "metadata": [1, 2]}), "metadata"),
        (
            json!({"currency": "USD", "metadata": {"x": "y".repeat(5000)}}),
            "metadata",
        ),
    ] {
        let p = assert_problem(
            app.post_as(&partner.key, "/v1/ledger/accounts", &body)
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
            "/v1/ledger/accounts",
            &json!({"currency": "ZZZ"}),
        )
        .await,
        400,
        "validation_failed",
    )
    .await;
    assert_problem(
        app.post_as(
            &partner.key,
            "/v1/ledger/accounts",
            &json!({"currency": "USD", "id": "acct_x"}),
        )
        .await,
        400,
        "unknown_field",
    )
    .await;
    assert_eq!(app.count("ledger_accounts").await, before);
    assert_problem(
        app.get_as(&partner.key, "/v1/ledger/accounts/acct_nope")
            .await,
        404,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn malformed_transfer_requests_are_400_and_move_nothing() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let (s, c) = two_accounts(&app, &partner).await;
    let ok =
        json!({"debit_account_id": s, "credit_account_id": c, "amount": "1.00", "currency": "USD"});
    let with = |patch: Value| {
        let mut t = ok.clone();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                t.as_object_mut().unwrap().remove(k);
            } else {
                t[k] = v.clone();
            }
        }
        json!({"transfers": [ok.clone(), t]})
    };
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"transfers": []}), 400, "validation_failed"),
        (with(json!({"amount": "1.001"})), 400, "too_many_decimals"),
        (with(json!({"amount": "0"})), 400, "amount_not_positive"),
        (with(json!({"amount": "-1.00"})), 400, "amount_not_positive"),
        (with(json!({"amount": null})), 400, "validation_failed"),
        (with(json!({"currency": "XXX"})), 400, "validation_failed"),
        (with(json!({"currency": null})), 400, "validation_failed"),
        (
            with(json!({"debit_account_id": "not-an-id"})),
            400,
            "validation_failed",
        ),
        (
            with(json!({"credit_account_id": null})),
            400,
            "validation_failed",
        ),
        (with(json!({"id": "xfer_bad"})), 400, "validation_failed"),
        (
            with(
                json!({"post_pending_id": "xfer_00000000000000000000000000", "void_pending_id": "xfer_00000000000000000000000000"}),
            ),
            400,
            "validation_failed",
        ),
        (with(json!({"code": -1})), 400, "validation_failed"),
        (with(json!({"metadata": "text"})), 400, "validation_failed"),
        (with(json!({"colour": "red"})), 400, "unknown_field"),
    ];
    for (body, status, code) in cases {
        let resp = app
            .post_as(&partner.key, "/v1/ledger/transfers", &body)
            .await;
        assert_problem(resp, status, code).await;
    }
    let too_many: Vec<Value> = (0..8191).map(|_| ok.clone()).collect();
    let p = assert_problem(
        app.post_as(
            &partner.key,
            "/v1/ledger/transfers",
            &json!({"transfers": too_many}),
        )
        .await,
        400,
        "validation_failed",
    )
    .await;
    assert_eq!(p["field"], "transfers");
    assert_eq!(app.posted_transfers().await, 0);
    assert_eq!(app.count("ledger_entries").await, 0);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn a_transfer_id_moves_money_once_and_failures_burn_their_id() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let (s, c) = two_accounts(&app, &partner).await;
    let id = "xfer_01jq0000000000000000000001";
    let t = json!({"id": id, "debit_account_id": s, "credit_account_id": c, "amount": "5.00", "currency": "USD"});
    assert_eq!(post(&app, &partner, json!([t])).await, ["ok"]);
    assert_eq!(post(&app, &partner, json!([t])).await, ["exists"]);
    let mut other = t.clone();
    other["amount"] = json!("6.00");
    assert_eq!(
        post(&app, &partner, json!([other])).await,
        ["exists_with_different_fields"]
    );
    let c_view = get(&app, &partner, &format!("/v1/ledger/accounts/{c}")).await;
    assert_eq!(c_view["credits_posted"], "5.00", "moved once");

    let burnt = "xfer_01jq0000000000000000000002";
    let too_much = json!({"id": burnt, "debit_account_id": c, "credit_account_id": s, "amount": "50.00", "currency": "USD"});
    assert_eq!(
        post(&app, &partner, json!([too_much])).await,
        ["exceeds_credits"]
    );
    post(&app, &partner, json!([{"debit_account_id": s, "credit_account_id": c, "amount": "100.00", "currency": "USD"}])).await;
    assert_eq!(
        post(&app, &partner, json!([too_much])).await,
        ["id_already_failed"],
        "a failed id stays failed"
    );

    let same = json!({"id": "xfer_01jq0000000000000000000003", "debit_account_id": s, "credit_account_id": s, "amount": "1.00", "currency": "USD"});
    assert_eq!(
        post(&app, &partner, json!([same])).await,
        ["accounts_must_be_different"]
    );
    let fixed = json!({"id": "xfer_01jq0000000000000000000003", "debit_account_id": s, "credit_account_id": c, "amount": "1.00", "currency": "USD"});
    assert_eq!(
        post(&app, &partner, json!([fixed])).await,
        ["ok"],
        "a malformed transfer does not burn its id"
    );
    let got = get(&app, &partner, &format!("/v1/ledger/transfers/{id}")).await;
    assert_eq!(got["amount"], "5.00");
    assert_eq!(got["debit_account_id"], s);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn two_phase_transfers_reserve_then_post_partially_or_void() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let (s, c) = two_accounts(&app, &partner).await;
    post(&app, &partner, json!([{"debit_account_id": s, "credit_account_id": c, "amount": "100.00", "currency": "USD"}])).await;
    let hold = "xfer_01jq0000000000000000000010";
    let results = post(&app, &partner, json!([{"id": hold, "debit_account_id": c, "credit_account_id": s, "amount": "40.00", "currency": "USD", "pending": true}])).await;
    assert_eq!(results, ["ok"]);
    let view = get(&app, &partner, &format!("/v1/ledger/accounts/{c}")).await;
    assert_eq!(view["debits_pending"], "40.00");
    assert_eq!(view["balance"]["available"], "60.00");
    assert_eq!(view["balance"]["posted"], "100.00");
    // Spending beyond what is available fails while the hold stands.
    assert_eq!(
        post(&app, &partner, json!([{"debit_account_id": c, "credit_account_id": s, "amount": "60.01", "currency": "USD"}])).await,
        ["exceeds_credits"]
    );
    assert_eq!(
        post(
            &app,
            &partner,
            json!([{"post_pending_id": hold, "amount": "40.01", "currency": "USD"}])
        )
        .await,
        ["exceeds_pending_amount"]
    );
    assert_eq!(
        post(
            &app,
            &partner,
            json!([{"post_pending_id": hold, "amount": "25.00", "currency": "USD"}])
        )
        .await,
        ["ok"]
    );
    let view = get(&app, &partner, &format!("/v1/ledger/accounts/{c}")).await;
    assert_eq!(
        view["debits_pending"], "0.00",
        "the rest of the hold is released"
    );
    assert_eq!(view["debits_posted"], "25.00");
    assert_eq!(
        post(&app, &partner, json!([{"void_pending_id": hold}])).await,
        ["pending_transfer_already_posted"]
    );

    let second = "xfer_01jq0000000000000000000011";
    post(&app, &partner, json!([{"id": second, "debit_account_id": c, "credit_account_id": s, "amount": "10.00", "currency": "USD", "pending": true}])).await;
    assert_eq!(
        post(&app, &partner, json!([{"void_pending_id": second}])).await,
        ["ok"]
    );
    assert_eq!(
        post(&app, &partner, json!([{"post_pending_id": second}])).await,
        ["pending_transfer_already_voided"]
    );
    assert_eq!(
        post(
            &app,
            &partner,
            json!([{"post_pending_id": "xfer_01jq0000000000000000000099"}])
        )
        .await,
        ["pending_transfer_not_found"]
    );
    let view = get(&app, &partner, &format!("/v1/ledger/accounts/{c}")).await;
    assert_eq!(view["balance"]["available"], "75.00");
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn pending_transfers_past_their_timeout_are_voided_by_the_worker() {
    let app = crate::helpers::spawn_app_with(
        crate::helpers::TestOptions::default().var("FLOWLET__LEDGER__EXPIRY_INTERVAL_MS", "100"),
    )
    .await;
    let partner = app.new_partner().await;
    let (s, c) = two_accounts(&app, &partner).await;
    post(&app, &partner, json!([{"debit_account_id": s, "credit_account_id": c, "amount": "10.00", "currency": "USD"}])).await;
    let hold = "xfer_01jq0000000000000000000020";
    post(&app, &partner, json!([{"id": hold, "debit_account_id": c, "credit_account_id": s, "amount": "4.00", "currency": "USD", "pending": true, "timeout_secs": 1}])).await;
    let view = get(&app, &partner, &format!("/v1/ledger/accounts/{c}")).await;
    assert_eq!(view["balance"]["available"], "6.00");
    let started = std::time::Instant::now();
    loop {
        let view = get(&app, &partner, &format!("/v1/ledger/accounts/{c}")).await;
        if view["balance"]["available"] == "10.00" {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the hold never expired"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        post(&app, &partner, json!([{"post_pending_id": hold}])).await,
        ["pending_transfer_already_voided"]
    );
    assert_eq!(
        app.count("ledger_pending_expiry").await,
        0,
        "the expiry queue is empty again"
    );
    // A second pass finds nothing: expiry is idempotent.
    assert_eq!(app.ledger().expire_due(100).await.unwrap(), 0);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn a_linked_chain_succeeds_or_fails_as_a_whole() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let (s, c) = two_accounts(&app, &partner).await;
    let other = account(
        &app,
        &partner,
        json!({"currency": "USD", "flags": ["debits_must_not_exceed_credits"]}),
    )
    .await;
    let results = post(
        &app,
        &partner,
        json!([
            {"debit_account_id": s, "credit_account_id": c, "amount": "10.00", "currency": "USD", "linked": true},
            {"debit_account_id": c, "credit_account_id": other, "amount": "10.00", "currency": "USD", "linked": true},
            {"debit_account_id": other, "credit_account_id": s, "amount": "10.01", "currency": "USD"},
            {"debit_account_id": s, "credit_account_id": other, "amount": "1.00", "currency": "USD"},
        ]),
    )
    .await;
    assert_eq!(
        results,
        [
            "linked_event_failed",
            "linked_event_failed",
            "exceeds_credits",
            "ok"
        ]
    );
    let c_view = get(&app, &partner, &format!("/v1/ledger/accounts/{c}")).await;
    assert_eq!(c_view["credits_posted"], "0.00", "the chain left no trace");
    let open = post(
        &app,
        &partner,
        json!([{"debit_account_id": s, "credit_account_id": c, "amount": "1.00", "currency": "USD", "linked": true}]),
    )
    .await;
    assert_eq!(open, ["linked_event_chain_open"]);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn balancing_transfers_move_at_most_what_is_there() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let (s, c) = two_accounts(&app, &partner).await;
    post(&app, &partner, json!([{"debit_account_id": s, "credit_account_id": c, "amount": "12.34", "currency": "USD"}])).await;
    let sweep = "xfer_01jq0000000000000000000030";
    assert_eq!(
        post(&app, &partner, json!([{"id": sweep, "debit_account_id": c, "credit_account_id": s, "amount": "1000.00", "currency": "USD", "balancing_debit": true}])).await,
        ["ok"]
    );
    assert_eq!(
        get(&app, &partner, &format!("/v1/ledger/transfers/{sweep}")).await["amount"],
        "12.34"
    );
    assert_eq!(
        post(&app, &partner, json!([{"debit_account_id": c, "credit_account_id": s, "amount": "1.00", "currency": "USD", "balancing_debit": true}])).await,
        ["exceeds_credits"]
    );
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn history_lists_entries_with_balances_and_answers_point_in_time() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let (s, c) = two_accounts(&app, &partner).await;
    for amount in ["1.00", "2.00", "3.00"] {
        post(&app, &partner, json!([{"debit_account_id": s, "credit_account_id": c, "amount": amount, "currency": "USD"}])).await;
    }
    let between = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    post(&app, &partner, json!([{"debit_account_id": c, "credit_account_id": s, "amount": "0.50", "currency": "USD"}])).await;

    let page = get(
        &app,
        &partner,
        &format!("/v1/ledger/accounts/{c}/entries?limit=3"),
    )
    .await;
    let data = page["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    assert_eq!(data[0]["seq"], 4);
    assert_eq!(data[0]["direction"], "debit");
    assert_eq!(data[0]["posted_amount"], "0.50");
    assert_eq!(data[0]["balance"]["posted"], "5.50");
    assert_eq!(data[1]["balance"]["posted"], "6.00");
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = get(
        &app,
        &partner,
        &format!("/v1/ledger/accounts/{c}/entries?limit=3&cursor={cursor}"),
    )
    .await;
    assert_eq!(rest["data"].as_array().unwrap().len(), 1);
    assert_eq!(rest["data"][0]["balance"]["posted"], "1.00");
    assert_eq!(rest["next_cursor"], Value::Null);

    let at = between.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let then = get(
        &app,
        &partner,
        &format!("/v1/ledger/accounts/{c}/balance?at={}", urlencode(&at)),
    )
    .await;
    assert_eq!(then["balance"]["posted"], "6.00");
    let now = get(&app, &partner, &format!("/v1/ledger/accounts/{c}/balance")).await;
    assert_eq!(now["balance"]["posted"], "5.50");
    let before_all = get(
        &app,
        &partner,
        &format!("/v1/ledger/accounts/{c}/balance?at=2000-01-01T00:00:00Z"),
    )
    .await;
    assert_eq!(before_all["balance"]["posted"], "0.00");

    for bad in ["?limit=0", "?cursor=abc"] {
        assert_problem(
            app.get_as(
                &partner.key,
                &format!("/v1/ledger/accounts/{c}/entries{bad}"),
            )
            .await,
            400,
            "validation_failed",
        )
        .await;
    }
    assert_problem(
        app.get_as(
            &partner.key,
            &format!("/v1/ledger/accounts/{c}/balance?at=yesterday"),
        )
        .await,
        400,
        "invalid_query",
    )
    .await;
    app.assert_ledger_invariants().await;
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn a_partner_sees_and_moves_only_its_own_accounts() {
    let app = spawn_app().await;
    let a = app.new_partner().await;
    let b = app.new_partner().await;
    let (a_settlement, a_customer) = two_accounts(&app, &a).await;
    let (b_settlement, _) = two_accounts(&app, &b).await;
    let xfer = "xfer_01jq0000000000000000000040";
    post(&app, &a, json!([{"id": xfer, "debit_account_id": a_settlement, "credit_account_id": a_customer, "amount": "9.00", "currency": "USD"}])).await;

    assert_problem(
        app.get_as(&b.key, &format!("/v1/ledger/accounts/{a_customer}"))
            .await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        app.get_as(&b.key, &format!("/v1/ledger/accounts/{a_customer}/entries"))
            .await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        app.get_as(&b.key, &format!("/v1/ledger/accounts/{a_customer}/balance"))
            .await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        app.get_as(&b.key, &format!("/v1/ledger/transfers/{xfer}"))
            .await,
        404,
        "not_found",
    )
    .await;
    assert_eq!(
        post(&app, &b, json!([{"debit_account_id": a_customer, "credit_account_id": b_settlement, "amount": "9.00", "currency": "USD"}])).await,
        ["account_not_found"]
    );
    assert_eq!(
        post(&app, &b, json!([{"id": xfer, "debit_account_id": a_settlement, "credit_account_id": a_customer, "amount": "9.00", "currency": "USD"}])).await,
        ["exists_with_different_fields"],
        "another partner's id is taken but reveals nothing"
    );
    let a_view = get(&app, &a, &format!("/v1/ledger/accounts/{a_customer}")).await;
    assert_eq!(a_view["balance"]["posted"], "9.00");
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn a_developer_reads_the_ledger_but_cannot_post() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let (s, c) = two_accounts(&app, &partner).await;
    let dev = app
        .new_user(Some(partner.id), flowlet::kernel::Role::PartnerDeveloper)
        .await;
    let token = app.login(&dev).await;
    assert_eq!(
        app.get_as(&token, &format!("/v1/ledger/accounts/{c}"))
            .await
            .status()
            .as_u16(),
        200
    );
    let body = json!({"transfers": [{"debit_account_id": s, "credit_account_id": c, "amount": "1.00", "currency": "USD"}]});
    assert_problem(
        app.post_as(&token, "/v1/ledger/transfers", &body).await,
        403,
        "forbidden",
    )
    .await;
    assert_problem(
        app.post_as(&token, "/v1/ledger/accounts", &json!({"currency": "USD"}))
            .await,
        403,
        "forbidden",
    )
    .await;
    assert_eq!(app.posted_transfers().await, 0);
}

/// The ledger API of a test, for concurrency tests that drive engines directly.
pub(crate) mod direct {
    pub use flowlet::ledger::{
        AccountFlags, AccountId, NewAccount, NewTransfer, ResultCode, Scope, TransferFlags,
        TransferId,
    };
    pub use flowlet::platform::money::Currency;
}

pub(crate) fn usd() -> direct::Currency {
    direct::Currency::parse("USD").unwrap()
}

pub(crate) fn transfer(
    id: direct::TransferId,
    debit: direct::AccountId,
    credit: direct::AccountId,
    minor: i64,
) -> direct::NewTransfer {
    direct::NewTransfer {
        id,
        debit_account_id: Some(debit),
        credit_account_id: Some(credit),
        amount: minor,
        currency: Some(usd()),
        code: 0,
        flags: direct::TransferFlags::default(),
        pending_id: None,
        timeout_secs: None,
        metadata: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_debits_of_an_account_holding_five_hundred_succeed_exactly_five_hundred_times()
 {
    let app = spawn_app().await;
    // Two more engines on the same database, as two more replicas would run, each with its
    // own pool; requests go round-robin to the app's engine (over HTTP) and the two others.
    let (engine_a, workers_a) = app.spawn_engine(3);
    let (engine_b, workers_b) = app.spawn_engine(3);
    let partner = app.new_partner().await;
    let scope = direct::Scope::Partner(partner.id);
    let accounts = engine_a
        .create_accounts(
            scope,
            vec![
                direct::NewAccount {
                    id: None,
                    currency: usd(),
                    code: 1,
                    flags: direct::AccountFlags::default(),
                    metadata: None,
                },
                direct::NewAccount {
                    id: None,
                    currency: usd(),
                    code: 2,
                    flags: direct::AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
                    metadata: None,
                },
            ],
        )
        .await
        .unwrap();
    let (settlement, customer) = (accounts[0].state.id, accounts[1].state.id);
    let funded = engine_a
        .post(
            scope,
            vec![transfer(
                direct::TransferId::new(),
                settlement,
                customer,
                50_000,
            )],
            None,
        )
        .await
        .unwrap();
    assert_eq!(funded[0].code, direct::ResultCode::Ok);

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let id = direct::TransferId::new();
        match i % 3 {
            0 => {
                let engine = engine_a.clone();
                tasks.spawn(async move {
                    engine
                        .post(scope, vec![transfer(id, customer, settlement, 100)], None)
                        .await
                        .unwrap()[0]
                        .code
                });
            }
            1 => {
                let engine = engine_b.clone();
                tasks.spawn(async move {
                    engine
                        .post(scope, vec![transfer(id, customer, settlement, 100)], None)
                        .await
                        .unwrap()[0]
                        .code
                });
            }
            _ => {
                let client = app.client.clone();
                let url = app.url("/v1/ledger/transfers");
                let key = partner.key.clone();
                let body = json!({"transfers": [{"id": id.to_string(), "debit_account_id": customer.to_string(), "credit_account_id": settlement.to_string(), "amount": "1.00", "currency": "USD"}]});
                tasks.spawn(async move {
                    let v: Value = client
                        .post(url)
                        .bearer_auth(key)
                        .json(&body)
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    direct::ResultCode::parse(v["results"][0]["result"].as_str().unwrap()).unwrap()
                });
            }
        }
    }
    let mut ok = 0;
    let mut refused = 0;
    while let Some(code) = tasks.join_next().await {
        match code.unwrap() {
            direct::ResultCode::Ok => ok += 1,
            direct::ResultCode::ExceedsCredits => refused += 1,
            other => panic!("unexpected result {other}"),
        }
    }
    assert_eq!((ok, refused), (500, 500));
    let view = get(&app, &partner, &format!("/v1/ledger/accounts/{customer}")).await;
    assert_eq!(view["balance"]["posted"], "0.00");
    assert_eq!(view["balance"]["available"], "0.00");
    workers_a.stop(std::time::Duration::from_secs(5)).await;
    workers_b.stop(std::time::Duration::from_secs(5)).await;
    app.assert_ledger_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_submissions_of_one_transfer_id_move_money_once() {
    let app = spawn_app().await;
    let (engine_a, workers_a) = app.spawn_engine(3);
    let (engine_b, workers_b) = app.spawn_engine(3);
    let scope = direct::Scope::System;
    let accounts = engine_a
        .create_accounts(
            scope,
            (0..2)
                .map(|_| direct::NewAccount {
                    id: None,
                    currency: usd(),
                    code: 0,
                    flags: direct::AccountFlags::default(),
                    metadata: None,
                })
                .collect(),
        )
        .await
        .unwrap();
    let (from, to) = (accounts[0].state.id, accounts[1].state.id);
    let id = direct::TransferId::new();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        let engine = if i % 2 == 0 {
            engine_a.clone()
        } else {
            engine_b.clone()
        };
        tasks.spawn(async move {
            engine
                .post(scope, vec![transfer(id, from, to, 700)], None)
                .await
                .unwrap()[0]
                .code
        });
    }
    let mut codes = Vec::new();
    while let Some(code) = tasks.join_next().await {
        codes.push(code.unwrap());
    }
    assert_eq!(
        codes
            .iter()
            .filter(|c| **c == direct::ResultCode::Ok)
            .count(),
        1,
        "{codes:?}"
    );
    assert!(
        codes
            .iter()
            .all(|c| matches!(c, direct::ResultCode::Ok | direct::ResultCode::Exists)),
        "{codes:?}"
    );
    let to_account = engine_a.account(scope, to).await.unwrap();
    assert_eq!(to_account.state.totals.credits_posted, 700);
    assert_eq!(app.posted_transfers().await, 1);
    workers_a.stop(std::time::Duration::from_secs(5)).await;
    workers_b.stop(std::time::Duration::from_secs(5)).await;
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn a_request_of_8190_transfers_is_taken_whole_and_answered_in_order() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let (s, c) = two_accounts(&app, &partner).await;
    let transfers: Vec<Value> = (0..8190)
        .map(|i| {
            // Every 1000th one breaks a rule, to see results stay in order.
            let amount = if i % 1000 == 999 { "0.01" } else { "1.00" };
            let (debit, credit) = if i % 1000 == 999 { (&c, &c) } else { (&s, &c) };
            json!({"debit_account_id": debit, "credit_account_id": credit, "amount": amount, "currency": "USD"})
        })
        .collect();
    let results = post(&app, &partner, Value::Array(transfers)).await;
    assert_eq!(results.len(), 8190);
    for (i, r) in results.iter().enumerate() {
        let expected = if i % 1000 == 999 {
            "accounts_must_be_different"
        } else {
            "ok"
        };
        assert_eq!(r, expected, "transfer {i}");
    }
    let view = get(&app, &partner, &format!("/v1/ledger/accounts/{c}")).await;
    assert_eq!(view["credits_posted"], "8182.00");
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn a_transfer_batch_over_its_byte_limit_is_413() {
    let app = crate::helpers::spawn_app_with(
        crate::helpers::TestOptions::default().var("FLOWLET__LEDGER__MAX_REQUEST_BYTES", "2048"),
    )
    .await;
    let partner = app.new_partner().await;
    let (s, c) = two_accounts(&app, &partner).await;
    let one =
        json!({"debit_account_id": s, "credit_account_id": c, "amount": "1.00", "currency": "USD"});
    let small: Vec<Value> = (0..5).map(|_| one.clone()).collect();
    assert_eq!(post(&app, &partner, Value::Array(small)).await.len(), 5);
    let big: Vec<Value> = (0..50).map(|_| one.clone()).collect();
    let resp = app
        .post_as(
            &partner.key,
            "/v1/ledger/transfers",
            &json!({"transfers": big}),
        )
        .await;
    assert_problem(resp, 413, "payload_too_large").await;
    app.assert_ledger_invariants().await;
}

/// A write a caller attaches: records the ids of its request's transfers that went through.
fn record_ok_transfers() -> flowlet::ledger::SideWrite {
    Box::new(|tx, outcomes| {
        let ids: Vec<uuid::Uuid> = outcomes
            .iter()
            .filter(|o| o.code == direct::ResultCode::Ok)
            .map(|o| o.id.uuid())
            .collect();
        Box::pin(async move {
            diesel_async::RunQueryDsl::execute(
                diesel::sql_query("INSERT INTO test_side_writes SELECT unnest($1::uuid[])")
                    .bind::<diesel::sql_types::Array<diesel::sql_types::Uuid>, _>(ids),
                tx.conn(),
            )
            .await
            .map_err(|e| flowlet::ledger::SideWriteError(Box::new(e)))?;
            Ok(())
        })
    })
}

#[tokio::test]
async fn attached_writes_commit_with_their_transfers_and_a_refusing_one_moves_nothing() {
    let app = spawn_app().await;
    let mut conn = app.db().await;
    diesel_async::SimpleAsyncConnection::batch_execute(
        &mut conn,
        "CREATE TABLE test_side_writes (id uuid PRIMARY KEY)",
    )
    .await
    .unwrap();
    let (engine, workers) = app.spawn_engine(2);
    let scope = direct::Scope::System;
    let accounts = engine
        .create_accounts(
            scope,
            (0..2)
                .map(|_| direct::NewAccount {
                    id: None,
                    currency: usd(),
                    code: 0,
                    flags: direct::AccountFlags::default(),
                    metadata: None,
                })
                .collect(),
        )
        .await
        .unwrap();
    let (a, b) = (accounts[0].state.id, accounts[1].state.id);

    let first = direct::TransferId::new();
    let outcomes = engine
        .post(
            scope,
            vec![transfer(first, a, b, 100)],
            Some(record_ok_transfers()),
        )
        .await
        .unwrap();
    assert_eq!(outcomes[0].code, direct::ResultCode::Ok);
    assert_eq!(
        app.count("test_side_writes").await,
        1,
        "the attached write committed with the transfer"
    );

    // A refusing write (here: its insert collides) takes its own request down, and only it:
    // a request batched with it still goes through.
    let refused = engine.post(
        scope,
        vec![transfer(direct::TransferId::new(), a, b, 5)],
        Some(Box::new(move |tx, _| {
            Box::pin(async move {
                diesel_async::RunQueryDsl::execute(
                    diesel::sql_query("INSERT INTO test_side_writes VALUES ($1)")
                        .bind::<diesel::sql_types::Uuid, _>(first.uuid()),
                    tx.conn(),
                )
                .await
                .map_err(|e| flowlet::ledger::SideWriteError(Box::new(e)))?;
                Ok(())
            })
        })),
    );
    let other_id = direct::TransferId::new();
    let other = engine.post(
        scope,
        vec![transfer(other_id, a, b, 7)],
        Some(record_ok_transfers()),
    );
    let (refused, other) = tokio::join!(refused, other);
    assert!(
        matches!(refused, Err(flowlet::ledger::LedgerError::SideWrite(_))),
        "{refused:?}"
    );
    assert_eq!(other.unwrap()[0].code, direct::ResultCode::Ok);
    let b_account = engine.account(scope, b).await.unwrap();
    assert_eq!(
        b_account.state.totals.credits_posted, 107,
        "the refused request moved nothing"
    );
    assert_eq!(app.count("test_side_writes").await, 2);
    assert_eq!(app.posted_transfers().await, 2);
    workers.stop(std::time::Duration::from_secs(5)).await;
    app.assert_ledger_invariants().await;
}

/// A batched writer: records, in one statement per batch, the transfers of its requests that
/// went through, refusing the requests whose item says so; remembers how many items each call
/// got.
struct RecordAll {
    calls: std::sync::Mutex<Vec<usize>>,
}

impl flowlet::ledger::BatchWrite for RecordAll {
    fn write<'t, 'c>(
        &'t self,
        tx: &'t mut flowlet::platform::db::Tx<'c>,
        items: &'t [flowlet::ledger::AttachedItem<'t>],
    ) -> flowlet::platform::db::TxFuture<
        't,
        Result<Vec<(usize, flowlet::ledger::SideWriteError)>, flowlet::ledger::SideWriteError>,
    > {
        self.calls.lock().unwrap().push(items.len());
        let refused: Vec<(usize, flowlet::ledger::SideWriteError)> = items
            .iter()
            .enumerate()
            .filter(|(_, item)| item.item.downcast_ref::<bool>() == Some(&true))
            .map(|(i, _)| {
                (
                    i,
                    flowlet::ledger::SideWriteError("refused by the test".into()),
                )
            })
            .collect();
        let ids: Vec<uuid::Uuid> = items
            .iter()
            .flat_map(|item| item.outcomes)
            .filter(|o| o.code == direct::ResultCode::Ok)
            .map(|o| o.id.uuid())
            .collect();
        Box::pin(async move {
            if !refused.is_empty() {
                return Ok(refused);
            }
            diesel_async::RunQueryDsl::execute(
                diesel::sql_query("INSERT INTO test_side_writes SELECT unnest($1::uuid[])")
                    .bind::<diesel::sql_types::Array<diesel::sql_types::Uuid>, _>(ids),
                tx.conn(),
            )
            .await
            .map_err(|e| flowlet::ledger::SideWriteError(Box::new(e)))?;
            Ok(Vec::new())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batched_writer_writes_a_whole_batch_at_once_and_refuses_requests_alone() {
    let app = spawn_app().await;
    let mut conn = app.db().await;
    diesel_async::SimpleAsyncConnection::batch_execute(
        &mut conn,
        "CREATE TABLE test_side_writes (id uuid PRIMARY KEY)",
    )
    .await
    .unwrap();
    let (engine, workers) = app.spawn_engine(2);
    let scope = direct::Scope::System;
    let accounts = engine
        .create_accounts(
            scope,
            (0..4)
                .map(|_| direct::NewAccount {
                    id: None,
                    currency: usd(),
                    code: 0,
                    flags: direct::AccountFlags::default(),
                    metadata: None,
                })
                .collect(),
        )
        .await
        .unwrap();
    let ids: Vec<direct::AccountId> = accounts.iter().map(|a| a.state.id).collect();
    let writer = std::sync::Arc::new(RecordAll {
        calls: std::sync::Mutex::default(),
    });
    let shared: std::sync::Arc<dyn flowlet::ledger::BatchWrite> = writer.clone();
    // 60 requests at once; every tenth is refused by the writer.
    let posts = (0..60).map(|i| {
        let engine = engine.clone();
        let shared = shared.clone();
        let (debit, credit) = (ids[i % 4], ids[(i + 1) % 4]);
        async move {
            let outcome = engine
                .post_locked(
                    scope,
                    vec![transfer(direct::TransferId::new(), debit, credit, 10)],
                    Vec::new(),
                    flowlet::ledger::Attachment::Batched(shared, Box::new(i % 10 == 3)),
                )
                .await;
            (i, outcome)
        }
    });
    let results = futures_util::future::join_all(posts).await;
    for (i, result) in results {
        if i % 10 == 3 {
            assert!(
                matches!(result, Err(flowlet::ledger::LedgerError::SideWrite(_))),
                "{i}: {result:?}"
            );
        } else {
            assert_eq!(result.unwrap()[0].code, direct::ResultCode::Ok, "{i}");
        }
    }
    assert_eq!(
        app.posted_transfers().await,
        54,
        "the refused moved nothing"
    );
    assert_eq!(
        app.count("test_side_writes").await,
        54,
        "each with its write"
    );
    let calls = writer.calls.lock().unwrap().clone();
    assert!(
        calls.iter().any(|n| *n > 1),
        "requests queued behind a running batch were written together: {calls:?}"
    );
    workers.stop(std::time::Duration::from_secs(5)).await;
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn a_conflict_inside_an_attached_write_runs_the_batch_again_instead_of_refusing() {
    let app = spawn_app().await;
    let (engine, workers) = app.spawn_engine(2);
    let scope = direct::Scope::System;
    let accounts = engine
        .create_accounts(
            scope,
            (0..2)
                .map(|_| direct::NewAccount {
                    id: None,
                    currency: usd(),
                    code: 0,
                    flags: direct::AccountFlags::default(),
                    metadata: None,
                })
                .collect(),
        )
        .await
        .unwrap();
    let (a, b) = (accounts[0].state.id, accounts[1].state.id);
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = runs.clone();
    let outcomes = engine
        .post(
            scope,
            vec![transfer(direct::TransferId::new(), a, b, 100)],
            Some(Box::new(move |tx, _| {
                let first = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
                Box::pin(async move {
                    if first {
                        // What a deadlock or serialization failure looks like from inside.
                        diesel_async::SimpleAsyncConnection::batch_execute(
                            tx.conn(),
                            "DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$",
                        )
                        .await
                        .map_err(|e| {
                            flowlet::ledger::SideWriteError(Box::new(
                                flowlet::platform::db::DbError::Query(e),
                            ))
                        })?;
                    }
                    Ok(())
                })
            })),
        )
        .await
        .unwrap();
    assert_eq!(outcomes[0].code, direct::ResultCode::Ok);
    assert_eq!(
        runs.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "ran again"
    );
    assert_eq!(app.posted_transfers().await, 1);
    workers.stop(std::time::Duration::from_secs(5)).await;
    app.assert_ledger_invariants().await;
}
