//! A bank's busy hour: one or three replicas on one database take 2000 random P2P payments
//! between 20 funded wallets, 48 at a time, some of them more than the payer has. Afterwards
//! money is neither made nor lost, no wallet is negative, every balance is what the 201s say,
//! and every answer agrees with what was written: each 201 is exactly one completed payment
//! with exactly one ledger transfer of the same id, amount and accounts, and nothing else moved.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use flowlet::payment::PaymentId;
use flowlet::wallet::WalletId;
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::cli::flowlet_json;
use crate::helpers::{TestApp, TestOptions, spawn_app_with};
use crate::kyc::{get, load_test_list};
use crate::payments::{deposit, open_wallet, verified_customer};

const WALLETS: usize = 20;
const PAYMENTS: usize = 2000;
const IN_FLIGHT: usize = 48;
/// Payment amounts are 0.01..=MAX_PAYMENT_MINOR; deposits average about 500.00, so a fair
/// share of payments find the payer short.
const MAX_PAYMENT_MINOR: u64 = 40_000;

/// Tier 1 limits far above the workload's amounts, and rate limits above its request count:
/// this test is about money and concurrency, not about either kind of limit.
fn bank_options() -> TestOptions {
    let mut options = TestOptions::default();
    for limit in [
        "MAX_BALANCE",
        "MAX_SINGLE_PAYMENT",
        "DAILY_OUTGOING",
        "MONTHLY_OUTGOING",
    ] {
        options = options.var(
            &format!("FLOWLET__KYC__TIERS__1__LIMITS__USD__{limit}"),
            "100000000.00",
        );
    }
    options
        .var("FLOWLET__RATE_LIMIT__KEY_PER_HOUR", "1000000")
        .var("FLOWLET__RATE_LIMIT__PARTNER_PER_HOUR", "1000000")
}

/// splitmix64, seeded: the same workload on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n).unwrap()).unwrap()
    }

    /// 1..=max minor units.
    fn minor(&mut self, max: u64) -> i64 {
        i64::try_from(1 + self.next() % max).unwrap()
    }
}

/// `12345` -> `"123.45"`.
fn decimal(minor: i64) -> String {
    format!("{}.{:02}", minor / 100, minor % 100)
}

/// `"123.45"` -> `12345` (USD, as the API formats it: always two decimals).
fn minor_units(amount: &str) -> i64 {
    let (units, cents) = amount.split_once('.').unwrap();
    assert_eq!(cents.len(), 2, "{amount}");
    let units: i64 = units.parse().unwrap();
    let cents: i64 = cents.parse().unwrap();
    if amount.starts_with('-') {
        units * 100 - cents
    } else {
        units * 100 + cents
    }
}

/// One payment the workload sent.
struct Sent {
    from: usize,
    to: usize,
    amount: i64,
}

/// What came back for it.
enum Answer {
    Completed(PaymentId),
    InsufficientFunds,
    Unexpected(u16, String),
}

async fn send(
    client: &reqwest::Client,
    app: &TestApp,
    key: &str,
    wallets: &[String],
    p: &Sent,
) -> Answer {
    let resp = client
        .post(app.url("/v1/payments"))
        .bearer_auth(key)
        .json(
            &json!({"from_wallet_id": wallets[p.from], "to_wallet_id": wallets[p.to],
                      "amount": decimal(p.amount), "currency": "USD", "description": "busy hour"}),
        )
        .send()
        .await
        .expect("request sent");
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    let parsed: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    match (status, parsed["status"].as_str(), parsed["code"].as_str()) {
        (201, Some("completed"), _) => {
            assert_eq!(parsed["amount"], decimal(p.amount), "{body}");
            assert_eq!(parsed["from_wallet_id"], wallets[p.from].as_str(), "{body}");
            assert_eq!(parsed["to_wallet_id"], wallets[p.to].as_str(), "{body}");
            Answer::Completed(PaymentId::parse(parsed["id"].as_str().unwrap()).unwrap())
        }
        (422, _, Some("insufficient_funds")) => Answer::InsufficientFunds,
        _ => Answer::Unexpected(status, body),
    }
}

#[derive(QueryableByName)]
struct PaymentRow {
    #[diesel(sql_type = SqlUuid)]
    id: uuid::Uuid,
    #[diesel(sql_type = SqlUuid)]
    from_wallet_id: uuid::Uuid,
    #[diesel(sql_type = SqlUuid)]
    to_wallet_id: uuid::Uuid,
    #[diesel(sql_type = BigInt)]
    amount: i64,
    /// The ledger transfers with the payment's id, amount and the two wallets' accounts.
    #[diesel(sql_type = BigInt)]
    matching_transfers: i64,
    #[diesel(sql_type = SqlUuid)]
    transfer_id: uuid::Uuid,
}

#[tokio::test]
async fn one_replica_takes_two_thousand_concurrent_payments_and_every_cent_is_accounted_for() {
    busy_hour(1).await;
}

/// Three replicas' engines contend for the same twenty accounts: batches conflict and retry
/// (pessimistically after the first conflict), and the attached writes' limit counters are
/// guarded by advisory locks taken in one order, so nobody deadlocks or starves.
#[tokio::test]
async fn three_replicas_take_two_thousand_concurrent_payments_and_every_cent_is_accounted_for() {
    busy_hour(3).await;
}

/// The workload through `replicas` apps on one database, then every check.
async fn busy_hour(replicas: usize) {
    let first = spawn_app_with(bank_options()).await;
    let mut others = Vec::new();
    for _ in 1..replicas {
        others.push(spawn_app_with(bank_options().sharing(&first)).await);
    }
    let apps: Vec<&TestApp> = std::iter::once(&first).chain(others.iter()).collect();
    let apps = apps.as_slice();
    load_test_list(&first).await;
    let partner = &first.new_partner().await;
    let key = partner.key.as_str();
    let mut rng = Rng(0x0062_616e_6b00_2000);

    // 20 verified customers' wallets, opened and funded through every replica.
    let wallets: Vec<String> = futures_util::future::join_all((0..WALLETS).map(|i| async move {
        let app = apps[i % apps.len()];
        let customer = verified_customer(app, partner).await;
        open_wallet(app, key, &customer, "USD").await
    }))
    .await;
    let deposits: Vec<i64> = (0..WALLETS).map(|_| rng.minor(80_000) + 10_000).collect();
    futures_util::future::join_all(wallets.iter().zip(&deposits).enumerate().map(
        |(i, (wallet, amount))| async move {
            deposit(apps[i % apps.len()], key, wallet, &decimal(*amount)).await;
        },
    ))
    .await;
    let deposited: i64 = deposits.iter().sum();

    // The workload: random payer, payee and amount, IN_FLIGHT at a time, round-robin over
    // the replicas.
    let sent: Vec<Sent> = (0..PAYMENTS)
        .map(|_| {
            let from = rng.below(WALLETS);
            let to = (from + 1 + rng.below(WALLETS - 1)) % WALLETS;
            Sent {
                from,
                to,
                amount: rng.minor(MAX_PAYMENT_MINOR),
            }
        })
        .collect();
    // Idle connections are dropped well before the server's keep-alive (5 s) would close
    // them, so a POST never races the server's close (reqwest does not retry a POST).
    let client = &reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let started = Instant::now();
    let answers: Vec<(usize, Answer)> = futures_util::stream::iter(sent.iter().enumerate())
        .map(|(i, p)| {
            let wallets = &wallets;
            async move { (i, send(client, apps[i % apps.len()], key, wallets, p).await) }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let took = started.elapsed();

    let mut completed: HashMap<uuid::Uuid, usize> = HashMap::new();
    let mut short = 0;
    let mut unexpected = Vec::new();
    for (i, answer) in answers {
        match answer {
            Answer::Completed(id) => {
                assert!(completed.insert(id.uuid(), i).is_none(), "id {id} twice");
            }
            Answer::InsufficientFunds => short += 1,
            Answer::Unexpected(status, body) => unexpected.push(format!("{status} {body}")),
        }
    }
    eprintln!(
        "bank: {PAYMENTS} payments through {replicas} replica(s) in {:.1} s ({:.0}/s): {} completed, \
         {short} insufficient_funds, {} other",
        took.as_secs_f64(),
        f64::from(u32::try_from(PAYMENTS).unwrap()) / took.as_secs_f64(),
        completed.len(),
        unexpected.len(),
    );
    assert!(
        completed.len() > PAYMENTS / 4 && short > 20,
        "the workload must exercise both outcomes: {} completed, {short} short",
        completed.len()
    );

    // Balances: what the 201s say moved, from the deposits; their sum is what was deposited.
    let mut expected = deposits.clone();
    for i in completed.values() {
        let p = &sent[*i];
        expected[p.from] -= p.amount;
        expected[p.to] += p.amount;
    }
    let mut total = 0;
    for (w, wallet) in wallets.iter().enumerate() {
        let balance = get(&first, key, &format!("/v1/wallets/{wallet}/balance")).await;
        let posted = minor_units(balance["posted"].as_str().unwrap());
        assert_eq!(
            balance["available"], balance["posted"],
            "nothing pending: {balance}"
        );
        assert!(posted >= 0, "{wallet} is negative: {balance}");
        assert_eq!(
            posted, expected[w],
            "{wallet}: deposits and 201s vs {balance}"
        );
        total += posted;
    }
    assert_eq!(total, deposited, "payments neither make nor lose money");

    // Every completed payment row is one 201, with exactly one ledger transfer of its id and
    // amount between its wallets' accounts.
    let mut conn = first.db().await;
    let rows: Vec<PaymentRow> = diesel::sql_query(
        "SELECT p.id, p.from_wallet_id, p.to_wallet_id, p.amount, p.transfer_id, \
                (SELECT count(*) FROM ledger_transfers t \
                   JOIN wallet_wallets f ON f.id = p.from_wallet_id \
                   JOIN wallet_wallets c ON c.id = p.to_wallet_id \
                  WHERE t.id = p.transfer_id AND t.amount = p.amount AND t.code = 1 \
                    AND t.currency = p.currency AND t.debit_account_id = f.account_id \
                    AND t.credit_account_id = c.account_id) AS matching_transfers \
         FROM payment_payments p WHERE p.kind = 'p2p' AND p.status = 'completed'",
    )
    .load(&mut conn)
    .await
    .unwrap();
    assert_eq!(rows.len(), completed.len(), "one completed row per 201");
    for row in &rows {
        let id = PaymentId::from_uuid(row.id);
        let i = completed
            .get(&row.id)
            .unwrap_or_else(|| panic!("payment {id} was written but never answered 201"));
        let p = &sent[*i];
        assert_eq!(
            (row.from_wallet_id, row.to_wallet_id, row.amount),
            (
                WalletId::parse(&wallets[p.from]).unwrap().uuid(),
                WalletId::parse(&wallets[p.to]).unwrap().uuid(),
                p.amount
            ),
            "payment {id}"
        );
        assert_eq!(row.transfer_id, row.id, "payment {id}: transfer id");
        assert_eq!(
            row.matching_transfers, 1,
            "payment {id}: its ledger transfer"
        );
    }
    let ids: HashSet<uuid::Uuid> = rows.iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), rows.len());
    // No P2P transfer without its payment, and no refused payment left anything behind.
    let orphans = first
        .sql_count(
            "SELECT count(*) AS n FROM ledger_transfers t WHERE t.code = 1 \
             AND NOT EXISTS (SELECT 1 FROM payment_payments p WHERE p.transfer_id = t.id)",
        )
        .await;
    assert_eq!(orphans, 0, "ledger transfers of code 1 without a payment");
    let p2p_transfers = first
        .sql_count("SELECT count(*) AS n FROM ledger_transfers WHERE code = 1")
        .await;
    assert_eq!(p2p_transfers, i64::try_from(completed.len()).unwrap());
    let other_payments = first
        .sql_count(
            "SELECT count(*) AS n FROM payment_payments \
             WHERE NOT (kind = 'p2p' AND status = 'completed') AND kind <> 'deposit'",
        )
        .await;
    assert_eq!(other_payments, 0, "refused payments write no row");
    // Each completed payment announced itself once, in its own transaction.
    let events = first
        .sql_count(
            "SELECT count(*) AS n FROM notify_events \
             WHERE type = 'payment.completed' AND data->>'type' = 'p2p'",
        )
        .await;
    assert_eq!(events, i64::try_from(completed.len()).unwrap());

    first.assert_ledger_invariants().await;
    let verified = flowlet_json(&first, &["admin", "ledger", "verify", "--json"]).await;
    assert_eq!(verified["ok"], true, "{verified}");
    assert_eq!(verified["violations"], json!([]), "{verified}");

    // Last, so that the money checks above speak first: a valid payment is either made or
    // refused for want of funds, never an error.
    assert!(
        unexpected.is_empty(),
        "{} answers were neither 201 nor 422 insufficient_funds, e.g. {:#?}",
        unexpected.len(),
        &unexpected[..unexpected.len().min(5)]
    );
}
