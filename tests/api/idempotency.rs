//! `Idempotency-Key` on POSTs (API.md "Idempotency"): replays byte for byte, a reused key with
//! another request, keys per partner, failures that free the key, concurrent retries of a
//! money movement, a key held by a request that never finished, expiry and purging.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, TestOptions, TestPartner, assert_problem, spawn_app, spawn_app_with,
};

/// What a test compares between a first response and its replays.
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    status: u16,
    content_type: String,
    replayed: bool,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// The response as first sent, for comparing a replay with it.
    fn as_first(&self) -> Answer {
        Answer {
            replayed: false,
            ..self.clone()
        }
    }
}

async fn post_keyed(
    app: &TestApp,
    token: &str,
    path: &str,
    key: &str,
    body: &Value,
) -> reqwest::Response {
    app.request(Method::POST, path, token)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn answer(resp: reqwest::Response) -> Answer {
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header("content-type").unwrap_or_default();
    let replayed = match header("idempotent-replayed").as_deref() {
        None => false,
        Some("true") => true,
        Some(other) => panic!("Idempotent-Replayed: {other}"),
    };
    Answer {
        status: resp.status().as_u16(),
        content_type,
        replayed,
        body: resp.bytes().await.unwrap().to_vec(),
    }
}

async fn send_keyed(app: &TestApp, token: &str, path: &str, key: &str, body: &Value) -> Answer {
    answer(post_keyed(app, token, path, key, body).await).await
}

fn usd_account() -> Value {
    json!({"currency": "USD", "code": 7})
}

fn jane() -> Value {
    json!({"first_name": "Jane", "last_name": "Doe", "date_of_birth": "1990-05-17", "country": "DE"})
}

async fn account(app: &TestApp, partner: &TestPartner, body: Value) -> String {
    let resp = app
        .post_as(&partner.key, "/v1/ledger/accounts", &body)
        .await;
    assert_eq!(resp.status().as_u16(), 201);
    let v: Value = resp.json().await.unwrap();
    v["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_retried_account_creation_replays_the_first_response_and_creates_one_account() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let before = app.count("ledger_accounts").await;
    let path = "/v1/ledger/accounts";
    let first = send_keyed(&app, &partner.key, path, "acct-1", &usd_account()).await;
    assert_eq!(first.status, 201);
    assert_eq!(first.content_type, "application/json");
    assert!(!first.replayed, "a first response is not a replay");
    for _ in 0..2 {
        let again = send_keyed(&app, &partner.key, path, "acct-1", &usd_account()).await;
        assert!(again.replayed);
        assert_eq!(
            again.as_first(),
            first,
            "same status, content type and bytes"
        );
    }
    assert_eq!(app.count("ledger_accounts").await, before + 1);
    let id = first.json()["id"].as_str().unwrap().to_owned();
    let read = app
        .get_as(&partner.key, &format!("/v1/ledger/accounts/{id}"))
        .await;
    assert_eq!(read.status().as_u16(), 200);
}

#[tokio::test]
async fn a_retried_customer_creation_replays_the_first_response_and_creates_one_customer() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let first = send_keyed(&app, &partner.key, "/v1/customers", "cus-1", &jane()).await;
    assert_eq!(first.status, 201, "{:?}", first.json());
    assert!(!first.replayed);
    let again = send_keyed(&app, &partner.key, "/v1/customers", "cus-1", &jane()).await;
    assert!(again.replayed);
    assert_eq!(again.as_first(), first);
    assert_eq!(app.count("kyc_customers").await, 1);
}

#[tokio::test]
async fn the_same_key_with_another_request_is_refused_and_creates_nothing() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let path = "/v1/ledger/accounts";
    let first = send_keyed(&app, &partner.key, path, "k", &usd_account()).await;
    assert_eq!(first.status, 201);
    let before = app.count("ledger_accounts").await;

    let other_body = json!({"currency": "EUR", "code": 7});
    let resp = post_keyed(&app, &partner.key, path, "k", &other_body).await;
    assert_problem(resp, 422, "idempotency_key_reused").await;
    // Another path with the same body is another request too.
    let resp = post_keyed(&app, &partner.key, "/v1/customers", "k", &usd_account()).await;
    assert_problem(resp, 422, "idempotency_key_reused").await;
    assert_eq!(app.count("ledger_accounts").await, before);
    assert_eq!(app.count("kyc_customers").await, 0);

    // The first request still replays.
    let again = send_keyed(&app, &partner.key, path, "k", &usd_account()).await;
    assert_eq!(again.as_first(), first);
}

#[tokio::test]
async fn keys_are_scoped_to_the_partner() {
    let app = spawn_app().await;
    let (a, b) = (app.new_partner().await, app.new_partner().await);
    let path = "/v1/ledger/accounts";
    let from_a = send_keyed(&app, &a.key, path, "shared-key", &usd_account()).await;
    let from_b = send_keyed(&app, &b.key, path, "shared-key", &usd_account()).await;
    assert_eq!((from_a.status, from_b.status), (201, 201));
    assert!(!from_b.replayed, "B's request ran; it did not replay A's");
    assert_ne!(from_a.json()["id"], from_b.json()["id"]);
    // Each partner's key replays its own response.
    let again_b = send_keyed(&app, &b.key, path, "shared-key", &usd_account()).await;
    assert_eq!(again_b.as_first(), from_b);
    // Another body under B's key is refused for B only.
    let resp = post_keyed(
        &app,
        &b.key,
        path,
        "shared-key",
        &json!({"currency": "EUR"}),
    )
    .await;
    assert_problem(resp, 422, "idempotency_key_reused").await;
}

#[tokio::test]
async fn a_validation_failure_is_not_stored_so_the_corrected_request_may_use_the_key() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let path = "/v1/ledger/accounts";
    let bad = json!({"currency": "USD", "code": 70000});
    let resp = post_keyed(&app, &partner.key, path, "fix-me", &bad).await;
    assert_problem(resp, 400, "validation_failed").await;
    assert_eq!(app.count("platform_idempotency_keys").await, 0);
    // The same bad request with the key is evaluated again (not replayed).
    let again = send_keyed(&app, &partner.key, path, "fix-me", &bad).await;
    assert_eq!((again.status, again.replayed), (400, false));

    let fixed = send_keyed(&app, &partner.key, path, "fix-me", &usd_account()).await;
    assert_eq!((fixed.status, fixed.replayed), (201, false));
    let replay = send_keyed(&app, &partner.key, path, "fix-me", &usd_account()).await;
    assert_eq!(replay.as_first(), fixed);
}

#[tokio::test]
async fn malformed_keys_are_refused_before_anything_runs() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let before = app.count("ledger_accounts").await;
    let too_long = "k".repeat(256);
    let resp = post_keyed(
        &app,
        &partner.key,
        "/v1/ledger/accounts",
        &too_long,
        &usd_account(),
    )
    .await;
    let body = assert_problem(resp, 400, "validation_failed").await;
    assert_eq!(body["field"], "Idempotency-Key");
    let resp = app
        .request(Method::POST, "/v1/ledger/accounts", &partner.key)
        .header(
            "Idempotency-Key",
            reqwest::header::HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        )
        .json(&usd_account())
        .send()
        .await
        .unwrap();
    let body = assert_problem(resp, 400, "validation_failed").await;
    assert_eq!(body["field"], "Idempotency-Key");
    assert_eq!(app.count("ledger_accounts").await, before);
    // 255 characters are fine.
    let longest = "k".repeat(255);
    let ok = send_keyed(
        &app,
        &partner.key,
        "/v1/ledger/accounts",
        &longest,
        &usd_account(),
    )
    .await;
    assert_eq!(ok.status, 201);
}

/// A funding account without limits and a destination that may not go negative.
async fn funding_and_destination(app: &TestApp, partner: &TestPartner) -> (String, String) {
    let funding = account(app, partner, json!({"currency": "USD", "code": 1})).await;
    let destination = account(
        app,
        partner,
        json!({"currency": "USD", "code": 2, "flags": ["debits_must_not_exceed_credits"]}),
    )
    .await;
    (funding, destination)
}

/// One transfer without a transfer id: without a key, each request posts a transfer of its own.
fn transfer_body(funding: &str, destination: &str) -> Value {
    json!({"transfers": [{
        "debit_account_id": funding, "credit_account_id": destination,
        "amount": "12.34", "currency": "USD",
    }]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_transfers_with_one_key_move_money_once() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let (funding, destination) = funding_and_destination(&app, &partner).await;
    let body = transfer_body(&funding, &destination);
    let requests = (0..50).map(|_| {
        send_keyed(
            &app,
            &partner.key,
            "/v1/ledger/transfers",
            "pay-once",
            &body,
        )
    });
    let answers = futures_util::future::join_all(requests).await;

    let originals: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.status == 200 && !a.replayed)
        .collect();
    assert_eq!(originals.len(), 1, "one request ran: {answers:?}");
    let first = originals[0].clone();
    assert_eq!(first.content_type, "application/json");
    assert_eq!(first.json()["results"][0]["result"], "ok");
    for a in &answers {
        match (a.status, a.replayed) {
            (200, false) => {}
            (200, true) => assert_eq!(a.as_first(), first, "a replay is the first response"),
            (409, false) => {
                assert_eq!(a.content_type, "application/problem+json");
                assert_eq!(a.json()["code"], "idempotency_key_in_use");
            }
            other => panic!("unexpected answer {other:?}: {a:?}"),
        }
    }
    assert_eq!(app.posted_transfers().await, 1);
    let dest = app
        .get_as(&partner.key, &format!("/v1/ledger/accounts/{destination}"))
        .await;
    let dest: Value = dest.json().await.unwrap();
    assert_eq!(dest["credits_posted"], "12.34");
    // A retry after completion gets the same bytes and moves nothing.
    let later = send_keyed(
        &app,
        &partner.key,
        "/v1/ledger/transfers",
        "pay-once",
        &body,
    )
    .await;
    assert!(later.replayed);
    assert_eq!(later.as_first(), first);
    assert_eq!(app.posted_transfers().await, 1);
    app.assert_ledger_invariants().await;
}

/// Records the transaction of every UPDATE that stores a response, so a test can compare it
/// with the transaction (`xmin`) that wrote the transfer.
const RECORD_STORING_TRANSACTION: &str = "\
    CREATE TABLE test_stored_by (txid bigint NOT NULL); \
    CREATE FUNCTION test_record_store() RETURNS trigger LANGUAGE plpgsql AS $$ \
    BEGIN \
        IF NEW.status IS NOT NULL THEN INSERT INTO test_stored_by VALUES (txid_current()); END IF; \
        RETURN NEW; \
    END $$; \
    CREATE TRIGGER test_record_store BEFORE UPDATE ON platform_idempotency_keys \
        FOR EACH ROW EXECUTE FUNCTION test_record_store();";

/// Stored responses written by the transaction that wrote the transfer `id`.
async fn stored_with_transfer(app: &TestApp, id: &str) -> i64 {
    let uuid = id.parse::<flowlet::ledger::TransferId>().unwrap().uuid();
    app.sql_count(&format!(
        "SELECT count(*) AS n FROM test_stored_by s JOIN ledger_transfers t \
         ON t.xmin::text = (s.txid % 4294967296)::text WHERE t.id = '{uuid}'"
    ))
    .await
}

#[tokio::test]
async fn a_transfers_answer_is_stored_in_the_transaction_that_posts_it() {
    // One connection, warmed by a first transfer: see the ignored test below for why.
    let app = spawn_app_with(TestOptions::default().var("FLOWLET__DATABASE__POOL_SIZE", "1")).await;
    app.sql(RECORD_STORING_TRANSACTION).await;
    let partner = app.new_partner().await;
    let (funding, destination) = funding_and_destination(&app, &partner).await;
    let body = transfer_body(&funding, &destination);
    let warm = app
        .post_as(&partner.key, "/v1/ledger/transfers", &body)
        .await;
    assert_eq!(warm.status().as_u16(), 200);

    let first = send_keyed(&app, &partner.key, "/v1/ledger/transfers", "atomic", &body).await;
    assert_eq!(first.status, 200);
    let id = first.json()["results"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.sql_count("SELECT count(*) AS n FROM test_stored_by")
            .await,
        1
    );
    assert_eq!(
        stored_with_transfer(&app, &id).await,
        1,
        "the answer was stored by the transfer's own transaction"
    );
    app.assert_ledger_invariants().await;
}

/// The same on a connection's first batch: the engine once pipelined its write statement with
/// COMMIT, and on a connection that had not prepared that statement yet the prepare round trip
/// let COMMIT reach the server first (the attached writes committed in one transaction, the
/// transfers in another). The engine now sends COMMIT after the write.
#[tokio::test]
async fn a_transfers_answer_is_stored_with_it_even_on_a_fresh_connection() {
    let app = spawn_app().await;
    app.sql(RECORD_STORING_TRANSACTION).await;
    let partner = app.new_partner().await;
    let (funding, destination) = funding_and_destination(&app, &partner).await;
    let body = transfer_body(&funding, &destination);
    let first = send_keyed(&app, &partner.key, "/v1/ledger/transfers", "atomic", &body).await;
    assert_eq!(first.status, 200);
    let id = first.json()["results"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        stored_with_transfer(&app, &id).await,
        1,
        "the answer was stored by the transfer's own transaction"
    );
}

#[tokio::test]
async fn a_key_held_by_a_running_request_answers_409_until_the_lock_times_out() {
    let app =
        spawn_app_with(TestOptions::default().var("FLOWLET__IDEMPOTENCY__LOCK_TIMEOUT_SECS", "5"))
            .await;
    let partner = app.new_partner().await;
    let path = "/v1/ledger/accounts";
    let first = send_keyed(&app, &partner.key, path, "slow", &usd_account()).await;
    assert_eq!(first.status, 201);
    let before = app.count("ledger_accounts").await;
    // Put the key back into the state a first request leaves while it runs (or after it
    // crashed): claimed just now, no response.
    let held_since = |secs: u32| {
        format!(
            "UPDATE platform_idempotency_keys SET status = NULL, response_body = NULL, \
             content_type = NULL, locked_at = now() - interval '{secs} seconds' \
             WHERE key = 'slow'"
        )
    };
    app.sql(&held_since(0)).await;
    let resp = post_keyed(&app, &partner.key, path, "slow", &usd_account()).await;
    assert_problem(resp, 409, "idempotency_key_in_use").await;
    // Even another body is refused as a reuse, not run.
    let resp = post_keyed(
        &app,
        &partner.key,
        path,
        "slow",
        &json!({"currency": "EUR"}),
    )
    .await;
    assert_problem(resp, 422, "idempotency_key_reused").await;
    app.sql(&held_since(3)).await;
    let resp = post_keyed(&app, &partner.key, path, "slow", &usd_account()).await;
    assert_problem(resp, 409, "idempotency_key_in_use").await;
    assert_eq!(app.count("ledger_accounts").await, before);

    // Held longer than the lock timeout (5 s here): the holder is presumed dead, this request
    // takes the key over and runs; its response is what the key replays from now on.
    app.sql(&held_since(10)).await;
    let taken = send_keyed(&app, &partner.key, path, "slow", &usd_account()).await;
    assert_eq!((taken.status, taken.replayed), (201, false));
    assert_ne!(taken.json()["id"], first.json()["id"]);
    assert_eq!(app.count("ledger_accounts").await, before + 1);
    let again = send_keyed(&app, &partner.key, path, "slow", &usd_account()).await;
    assert_eq!(again.as_first(), taken);
}

#[tokio::test]
async fn expired_keys_count_as_absent_and_are_purged() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let path = "/v1/ledger/accounts";
    let first = send_keyed(&app, &partner.key, path, "old", &usd_account()).await;
    assert_eq!(first.status, 201);
    let kept = send_keyed(&app, &partner.key, path, "fresh", &usd_account()).await;
    assert_eq!(kept.status, 201);
    let expire = "UPDATE platform_idempotency_keys SET expires_at = now() - interval '1 second' \
                  WHERE key = 'old'";
    app.sql(expire).await;
    // An expired key is free again, even for another request.
    let reused = send_keyed(&app, &partner.key, path, "old", &json!({"currency": "EUR"})).await;
    assert_eq!((reused.status, reused.replayed), (201, false));

    app.sql(expire).await;
    let db = app.pool();
    let purged = flowlet::platform::idempotency::purge_expired(&db, 100)
        .await
        .unwrap();
    assert_eq!(purged, 1);
    assert_eq!(app.count("platform_idempotency_keys").await, 1);
    let still = send_keyed(&app, &partner.key, path, "fresh", &usd_account()).await;
    assert_eq!(still.as_first(), kept, "an unexpired key still replays");
    assert_eq!(
        flowlet::platform::idempotency::purge_expired(&db, 100)
            .await
            .unwrap(),
        0
    );
}
