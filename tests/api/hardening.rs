//! Money safety under hostile and careless input: one request's bad data never fails its
//! neighbours, system accounts move only through their modules, ids are decided once, and the
//! engine's limits hold. Every test that moves money ends with the ledger's invariants.

use flowlet::platform::db::{LockKey, LockNamespace};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, spawn_app};

use crate::ledger::{direct, two_accounts as books, usd};

/// A transfer with a fresh id (and maybe metadata), for tests that drive the engine.
fn transfer(
    debit: direct::AccountId,
    credit: direct::AccountId,
    minor: i64,
    metadata: Option<Value>,
) -> direct::NewTransfer {
    direct::NewTransfer {
        metadata,
        ..crate::ledger::transfer(direct::TransferId::new(), debit, credit, minor)
    }
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
    assert_eq!(app.posted_transfers().await, 81);
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn text_postgres_cannot_store_is_refused_at_the_edge_of_every_write() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let (settlement, customer) = books(&app, &partner).await;
    let before = app.posted_transfers().await;
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
    assert_eq!(app.posted_transfers().await, before);
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
    assert_eq!(app.posted_transfers().await, 54);
    workers.stop(std::time::Duration::from_secs(5)).await;
    app.assert_ledger_invariants().await;
}

async fn get_json(app: &TestApp, key: &str, path: &str) -> (u16, Value) {
    let resp = app.get_as(key, path).await;
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn raw_transfer(app: &TestApp, key: &str, transfer: Value) -> String {
    let resp = app
        .post_as(
            key,
            "/v1/ledger/transfers",
            &json!({ "transfers": [transfer] }),
        )
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
    let before = (app.posted_transfers().await, app.failed_transfers().await);
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
    assert_eq!(app.posted_transfers().await, before.0, "nothing moved");
    assert_eq!(
        app.failed_transfers().await,
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
    assert_eq!(
        transfers.len(),
        4,
        "deposit, payment, hold, settlement: {lines}"
    );
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

/// A partner's books through the engine: a settlement account and a customer account that
/// may not go negative.
async fn direct_books(
    ledger: &flowlet::ledger::LedgerService,
    scope: direct::Scope,
) -> (direct::AccountId, direct::AccountId) {
    let accounts = ledger
        .create_accounts(
            scope,
            vec![
                flowlet::ledger::NewAccount {
                    id: None,
                    currency: usd(),
                    code: 1,
                    flags: flowlet::ledger::AccountFlags::default(),
                    metadata: None,
                },
                flowlet::ledger::NewAccount {
                    id: None,
                    currency: usd(),
                    code: 2,
                    flags: flowlet::ledger::AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
                    metadata: None,
                },
            ],
        )
        .await
        .unwrap();
    (accounts[0].state.id, accounts[1].state.id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_id_is_never_both_failed_and_posted_across_replicas() {
    use diesel_async::SimpleAsyncConnection;
    let app = spawn_app().await;
    let (replica_a, workers_a) = app.spawn_engine(3);
    let (replica_b, workers_b) = app.spawn_engine(3);
    let partner = app.new_partner().await;
    let scope = direct::Scope::Partner(partner.id);
    let (settlement, customer) = direct_books(&replica_a, scope).await;
    let x = transfer(customer, settlement, 100, None);

    // Replica A decides X fails (the customer holds nothing), but its write of the failure
    // is held back: its batch's attached write waits on a key another session holds.
    const K: i64 = 0x0d0_5e1f;
    let mut blocker = app.db().await;
    blocker
        .batch_execute(&format!("SELECT pg_advisory_lock({K})"))
        .await
        .unwrap();
    let first = {
        let (replica_a, x) = (replica_a.clone(), x.clone());
        let side: flowlet::ledger::SideWrite = Box::new(|tx, _outcomes| {
            Box::pin(async move {
                tx.conn()
                    .batch_execute(&format!("SELECT pg_advisory_xact_lock({K})"))
                    .await
                    .map_err(|e| flowlet::ledger::SideWriteError(Box::new(e)))
            })
        });
        tokio::spawn(async move { replica_a.post(scope, vec![x], Some(side)).await })
    };
    let waiting = "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted";
    let started = std::time::Instant::now();
    while app.sql_count(waiting).await == 0 {
        assert!(
            started.elapsed().as_secs() < 10,
            "replica A never got to its write"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Meanwhile money arrives and the client's retry of X reaches replica B: it posts.
    let funded = replica_b
        .post(scope, vec![transfer(settlement, customer, 100, None)], None)
        .await
        .unwrap();
    assert_eq!(funded[0].code, direct::ResultCode::Ok);
    let retried = replica_b.post(scope, vec![x.clone()], None).await.unwrap();
    assert_eq!(retried[0].code, direct::ResultCode::Ok);
    blocker
        .batch_execute(&format!("SELECT pg_advisory_unlock({K})"))
        .await
        .unwrap();

    // Replica A's failure now conflicts with the posted id: it runs again on what committed
    // and answers as the ledger stands, instead of recording a failure for money that moved.
    let first = first.await.unwrap().unwrap();
    assert_eq!(first[0].code, direct::ResultCode::Exists);
    assert_eq!(
        app.failed_transfers().await,
        0,
        "no failure recorded for an id that posted"
    );
    assert_eq!(app.posted_transfers().await, 2);
    // Any id reused later answers from the one id space.
    let again = replica_a.post(scope, vec![x], None).await.unwrap();
    assert_eq!(again[0].code, direct::ResultCode::Exists);
    workers_a.stop(std::time::Duration::from_secs(5)).await;
    workers_b.stop(std::time::Duration::from_secs(5)).await;
    app.assert_ledger_invariants().await;
}

/// A TCP proxy in front of the test's PostgreSQL that can cut one connection right after it
/// forwards a COMMIT: the server commits, the client never hears so (the worst moment for a
/// connection to break). Armed with a needle: the connection whose traffic carries it is the
/// one cut, at its next COMMIT.
struct CommitCutter {
    port: u16,
    needle: std::sync::Arc<std::sync::Mutex<Option<Vec<u8>>>>,
    cuts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    server: tokio::task::JoinHandle<()>,
}

/// The simple-query message `COMMIT` (what the engine sends to commit a batch).
const COMMIT_MESSAGE: &[u8] = b"Q\0\0\0\x0bCOMMIT\0";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

impl CommitCutter {
    async fn start(database_url: &str) -> CommitCutter {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let target = url::Url::parse(database_url).unwrap();
        let upstream = format!(
            "{}:{}",
            target.host_str().unwrap(),
            target.port().unwrap_or(5432)
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let needle = std::sync::Arc::new(std::sync::Mutex::new(None::<Vec<u8>>));
        let cuts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (armed, counted) = (needle.clone(), cuts.clone());
        let server = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (armed, counted) = (armed.clone(), counted.clone());
                tokio::spawn(async move {
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let back = tokio::spawn(async move {
                        drop(tokio::io::copy(&mut server_read, &mut client_write).await);
                    });
                    let mut marked = false;
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match client_read.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let chunk = &buf[..n];
                        if !marked && let Some(needle) = armed.lock().unwrap().as_deref() {
                            marked = contains(chunk, needle);
                        }
                        let cut = marked && contains(chunk, COMMIT_MESSAGE);
                        if cut {
                            // Nothing more reaches the client: not even COMMIT's answer.
                            back.abort();
                        }
                        if server_write.write_all(chunk).await.is_err() {
                            break;
                        }
                        if cut {
                            // Forwarded: give the server a moment to commit, then cut.
                            armed.lock().unwrap().take();
                            counted.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                            break;
                        }
                    }
                    back.abort();
                });
            }
        });
        CommitCutter {
            port,
            needle,
            cuts,
            server,
        }
    }

    fn url(&self, database_url: &str) -> String {
        let mut url = url::Url::parse(database_url).unwrap();
        url.set_host(Some("127.0.0.1")).unwrap();
        url.set_port(Some(self.port)).unwrap();
        // Plaintext, so the cutter can read the protocol (libpq's default, prefer, would
        // encrypt whenever the server offers TLS).
        url.query_pairs_mut().append_pair("sslmode", "disable");
        url.to_string()
    }

    fn arm(&self, needle: &str) {
        *self.needle.lock().unwrap() = Some(needle.as_bytes().to_vec());
    }

    fn cuts(&self) -> usize {
        self.cuts.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for CommitCutter {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[tokio::test]
async fn a_payment_whose_connection_breaks_right_after_commit_is_answered_as_committed() {
    use crate::helpers::{TestOptions, spawn_app_with};
    // The app reaches PostgreSQL through the cutter.
    let direct = spawn_app().await;
    let cutter = CommitCutter::start(&direct.db_url).await;
    let app = spawn_app_with(
        TestOptions::default()
            .sharing(&direct)
            .var("FLOWLET__DATABASE__URL", cutter.url(&direct.db_url)),
    )
    .await;
    crate::kyc::load_test_list(&app).await;
    let partner = app.new_partner().await;
    let (a, b) = crate::payments::funded_pair(&app, &partner).await;
    let needle = format!("cut-{}", uuid::Uuid::now_v7().simple());
    cutter.arm(&needle);
    let resp = app
        .post_as(
            &partner.key,
            "/v1/payments",
            &json!({"from_wallet_id": a, "to_wallet_id": b, "amount": "10.00",
                    "currency": "USD", "description": needle}),
        )
        .await;
    assert_eq!(cutter.cuts(), 1, "the commit's connection was cut");
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        status, 201,
        "it committed, so it is answered as done: {body}"
    );
    assert_eq!(body["status"], "completed");
    assert_eq!(
        app.sql_count(&format!(
            "SELECT count(*) AS n FROM payment_payments WHERE description = '{needle}'"
        ))
        .await,
        1
    );
    let (_, balance) = get_json(&app, &partner.key, &format!("/v1/wallets/{b}/balance")).await;
    assert_eq!(balance["available"], "10.00", "the money moved once");
    direct.assert_ledger_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_batches_of_8190_locked_requests_stay_within_postgres_lock_table() {
    use crate::helpers::{TestOptions, spawn_app_with};
    use diesel_async::SimpleAsyncConnection;
    // Room in the queue for every request, and three batches in flight at once.
    let app =
        spawn_app_with(TestOptions::default().var("FLOWLET__LEDGER__QUEUE_CAPACITY", "20000"))
            .await;
    let (ledger, workers) = app.spawn_engine(4);
    // Every request: one transfer between accounts of its own (batches never wait for each
    // other over an account), a key of its own (a customer's limits, say) and an attached
    // write.
    let post = |keys: Vec<LockKey>| {
        let ledger = ledger.clone();
        let side = flowlet::ledger::Attachment::Each(Box::new(|_tx, _outcomes| {
            Box::pin(async { Ok(()) })
        }));
        let t = transfer(direct::AccountId::new(), direct::AccountId::new(), 1, None);
        tokio::spawn(async move {
            ledger
                .post_locked(direct::Scope::System, vec![t], keys, side)
                .await
        })
    };
    // Three batches wait on a key another session holds, so all the requests queue up
    // behind them; let go, the engine takes them as two batches of 8,190 at once.
    const K: i64 = i64::MAX;
    let mut holder = app.db().await;
    holder
        .batch_execute(&format!("SELECT pg_advisory_lock({K})"))
        .await
        .unwrap();
    let waiting = "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted";
    let mut blockers = Vec::new();
    for n in 1..=3 {
        blockers.push(post(vec![key(-n), key(K)]));
        let started = std::time::Instant::now();
        while app.sql_count(waiting).await < n {
            assert!(started.elapsed().as_secs() < 10, "blocker {n} never waited");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    let requests: Vec<_> = (0..16_380_i64).map(|i| post(vec![key(i * 7919)])).collect();
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    // How many advisory locks are held at once, at most, while the batches run.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let peak = {
        let (url, done) = (app.db_url.clone(), done.clone());
        tokio::spawn(async move {
            use diesel_async::{AsyncConnection, RunQueryDsl};
            #[derive(diesel::QueryableByName)]
            struct Held {
                #[diesel(sql_type = diesel::sql_types::BigInt)]
                n: i64,
            }
            let mut conn = diesel_async::AsyncPgConnection::establish(&url)
                .await
                .unwrap();
            let mut peak = 0;
            while !std::sync::atomic::AtomicBool::load(&done, std::sync::atomic::Ordering::SeqCst) {
                let held: Held = diesel::sql_query(
                    "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND granted",
                )
                .get_result(&mut conn)
                .await
                .unwrap();
                peak = peak.max(held.n);
            }
            peak
        })
    };
    holder
        .batch_execute(&format!("SELECT pg_advisory_unlock({K})"))
        .await
        .unwrap();
    for task in blockers.into_iter().chain(requests) {
        let outcomes = task
            .await
            .unwrap()
            .expect("no request fails for want of lock table space");
        assert_eq!(outcomes[0].code, direct::ResultCode::AccountNotFound);
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let peak = peak.await.unwrap();
    // Three batches in flight, each at most 256 buckets (or 128 keys and their buckets).
    assert!(peak <= 3 * 256, "{peak} advisory locks held at once");
    workers.stop(std::time::Duration::from_secs(5)).await;
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn verify_checks_the_whole_books_and_names_each_kind_of_damage() {
    use crate::payments::{app_settling_after, funded_pair, pay, settled, withdraw};
    let app = app_settling_after(50).await;
    crate::kyc::load_test_list(&app).await;
    let partner = app.new_partner().await;
    let (a, b) = funded_pair(&app, &partner).await;
    assert_eq!(
        pay(&app, &partner.key, &a, &b, json!("3.00"))
            .await
            .status()
            .as_u16(),
        201
    );
    let out = withdraw(&app, &partner.key, &a, "2.00").await;
    settled(&app, &partner.key, out["id"].as_str().unwrap()).await;
    let (settlement, customer) = books(&app, &partner).await;
    let hold = raw_transfer(
        &app,
        &partner.key,
        json!({"debit_account_id": settlement, "credit_account_id": customer,
               "amount": "4.00", "currency": "USD", "pending": true}),
    )
    .await;
    assert_eq!(hold, "ok");

    let verify = || async {
        let out = crate::cli::flowlet_on(&app, &["admin", "ledger", "verify", "--json"]).await;
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        (out.status.code(), report)
    };
    let (code, report) = verify().await;
    assert_eq!(code, Some(0), "{report}");
    let checked: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for name in [
        "debits_equal_credits",
        "account_equals_entries",
        "transfer_entries",
        "pending_totals",
        "within_limits",
        "failed_and_posted",
        "payment_transfers",
        "transfer_payments",
    ] {
        assert!(checked.contains(&name), "{name} is checked: {checked:?}");
    }

    // Damage behind the ledger's back (triggers off, as only a superuser could).
    app.sql(
        "SET session_replication_role = replica;
         -- A posted id is also recorded as failed.
         INSERT INTO ledger_failed_transfers (id, partner_id, result, created_at)
             SELECT id, partner_id, 'exceeds_credits', now() FROM ledger_transfers
             WHERE flags = 0 ORDER BY created_at LIMIT 1;
         -- The partner's hold is half-released in the cached totals and the entries alike.
         UPDATE ledger_accounts SET debits_pending = debits_pending - 100
             WHERE debits_pending > 0 AND partner_books;
         UPDATE ledger_entries SET debits_pending = debits_pending - 100,
             pending_delta = pending_delta - 100
             WHERE NOT is_credit AND pending_delta = 400;
         -- A payment whose transfer is gone, and a payment that says it moved more.
         UPDATE payment_payments SET transfer_id = gen_random_uuid() WHERE kind = 'deposit';
         UPDATE payment_payments SET amount = amount + 1 WHERE kind = 'p2p';",
    )
    .await;
    let (code, report) = verify().await;
    assert_eq!(code, Some(1), "{report}");
    let failed: Vec<&str> = report["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["check"].as_str().unwrap())
        .collect();
    for name in [
        "failed_and_posted",
        "pending_totals",
        "transfer_entries",
        "payment_transfers",
        "transfer_payments",
    ] {
        assert!(failed.contains(&name), "{name} catches it: {report}");
    }
}

#[tokio::test]
async fn one_withdrawal_that_cannot_settle_never_holds_back_the_ones_after_it() {
    use crate::payments::{app_settling_after, funded_pair, settled, withdraw};
    // Settles after 2 s, so both are made (and one broken) before either is due, even on a
    // loaded machine (at 300 ms the first one sometimes settled before it was broken).
    let app = app_settling_after(2000).await;
    crate::kyc::load_test_list(&app).await;
    let partner = app.new_partner().await;
    let (a, _) = funded_pair(&app, &partner).await;
    let broken = withdraw(&app, &partner.key, &a, "1.00").await;
    let fine = withdraw(&app, &partner.key, &a, "2.00").await;
    // The first no longer adds up: its wallet is gone from under it.
    let broken_id = broken["id"].as_str().unwrap();
    app.sql(
        "UPDATE payment_payments SET from_wallet_id = gen_random_uuid() \
         WHERE created_at = (SELECT min(created_at) FROM payment_payments WHERE kind = 'withdrawal')",
    )
    .await;
    let fine = settled(&app, &partner.key, fine["id"].as_str().unwrap()).await;
    assert_eq!(fine["status"], "completed", "the later withdrawal settles");
    let (_, broken) = get_json(&app, &partner.key, &format!("/v1/payments/{broken_id}")).await;
    assert_eq!(
        broken["status"], "pending",
        "the broken one waits for an operator"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_queue_is_bounded_in_bytes_not_only_in_requests() {
    use crate::helpers::{TestOptions, spawn_app_with};
    use diesel_async::SimpleAsyncConnection;
    let app = spawn_app_with(
        TestOptions::default()
            .var("FLOWLET__LEDGER__MAX_REQUEST_BYTES", "1048576")
            .var("FLOWLET__LEDGER__QUEUE_MAX_BYTES", "1048576")
            .var("FLOWLET__LEDGER__ENQUEUE_TIMEOUT_MS", "500"),
    )
    .await;
    let (ledger, workers) = app.spawn_engine(3);
    // The engine is held up (its batches wait on a key another session holds) while 200
    // requests of 10 transfers with 4 KiB of metadata each arrive: far fewer than the queue's
    // 10,000 places, far more than its MiB.
    const K: i64 = 0x0bad_cafe;
    let mut holder = app.db().await;
    holder
        .batch_execute(&format!("SELECT pg_advisory_lock({K})"))
        .await
        .unwrap();
    let note = "x".repeat(4000);
    let mut tasks = tokio::task::JoinSet::new();
    let finished = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for _ in 0..200 {
        let ledger = ledger.clone();
        let transfers: Vec<_> = (0..10)
            .map(|_| {
                transfer(
                    direct::AccountId::new(),
                    direct::AccountId::new(),
                    1,
                    Some(json!({ "note": note })),
                )
            })
            .collect();
        let side = flowlet::ledger::Attachment::Each(Box::new(|_tx, _outcomes| {
            Box::pin(async { Ok(()) })
        }));
        let finished = finished.clone();
        tasks.spawn(async move {
            let answer = ledger
                .post_locked(direct::Scope::System, transfers, vec![key(K)], side)
                .await;
            finished.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            answer
        });
    }
    // Let go only once every request not admitted has been turned away (each waits at most
    // the 500 ms enqueue timeout from when it first ran; on a loaded machine that may be
    // well after it was spawned).
    let started = std::time::Instant::now();
    while finished.load(std::sync::atomic::Ordering::SeqCst) < 180
        && started.elapsed() < std::time::Duration::from_secs(20)
    {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    holder
        .batch_execute(&format!("SELECT pg_advisory_unlock({K})"))
        .await
        .unwrap();
    let (mut answered, mut overloaded) = (0, 0);
    while let Some(result) = tasks.join_next().await {
        match result.unwrap() {
            Ok(outcomes) => {
                assert_eq!(outcomes[0].code, direct::ResultCode::AccountNotFound);
                answered += 1;
            }
            Err(flowlet::ledger::LedgerError::Overloaded) => overloaded += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(answered >= 1, "admitted requests are answered");
    assert!(
        answered <= 20,
        "at most a MiB of requests (about 12 of them) got in: {answered}"
    );
    assert_eq!(answered + overloaded, 200);
    workers.stop(std::time::Duration::from_secs(5)).await;
    app.assert_ledger_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_decided_by_a_batch_rerun_is_the_answer_its_key_replays() {
    use diesel_async::SimpleAsyncConnection;
    let app = spawn_app().await;
    crate::kyc::load_test_list(&app).await;
    let partner = app.new_partner().await;
    let (a, b) = crate::payments::funded_pair(&app, &partner).await;
    let body = json!({"from_wallet_id": a, "to_wallet_id": b, "amount": "5.00",
                      "currency": "USD", "description": "rerun"});
    let send = || {
        app.client
            .post(app.url("/v1/payments"))
            .bearer_auth(&partner.key)
            .header("idempotency-key", "rerun-refusal-1")
            .json(&body)
            .send()
    };

    // The payment's batch is held just before it writes its row (and after it stored its
    // answer), while the paying wallet is frozen: its final write then finds the account
    // changed, the batch runs again, and this time the payment is refused.
    let mut holder = app.db().await;
    holder
        .batch_execute("BEGIN; LOCK TABLE payment_payments IN SHARE MODE")
        .await
        .unwrap();
    let first = tokio::spawn(send());
    let waiting = "SELECT count(*) AS n FROM pg_locks WHERE relation = \
                   'payment_payments'::regclass AND NOT granted";
    let started = std::time::Instant::now();
    while app.sql_count(waiting).await == 0 {
        assert!(
            started.elapsed().as_secs() < 10,
            "the payment never got to its row"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let freeze = app
        .post_as(
            &partner.key,
            &format!("/v1/wallets/{a}/freeze"),
            &json!({"reason": "fraud review", "mode": "debits"}),
        )
        .await;
    assert_eq!(freeze.status().as_u16(), 200);
    holder.batch_execute("COMMIT").await.unwrap();
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.status().as_u16(), 422);
    let first_body = first.text().await.unwrap();
    assert!(first_body.contains("wallet_frozen"), "{first_body}");

    // The wallet thaws; the client retries its key: it gets the refusal it was given, not a
    // second, different outcome (the money does not move now).
    let unfreeze = app
        .post_as(
            &partner.key,
            &format!("/v1/wallets/{a}/unfreeze"),
            &json!({"reason": "cleared"}),
        )
        .await;
    assert_eq!(unfreeze.status().as_u16(), 200);
    let replay = send().await.unwrap();
    assert_eq!(replay.status().as_u16(), 422);
    assert_eq!(
        replay
            .headers()
            .get("idempotent-replayed")
            .map(|v| v.to_str().unwrap()),
        Some("true")
    );
    assert_eq!(replay.text().await.unwrap(), first_body);
    assert_eq!(app.count("payment_payments").await, 1, "only the deposit");
    app.assert_ledger_invariants().await;
}

#[tokio::test]
async fn totals_near_64_bits_are_refused_with_overflow_codes_and_verify_still_adds_up() {
    let app = spawn_app().await;
    let partner = app.new_partner().await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let resp = app
            .post_as(
                &partner.key,
                "/v1/ledger/accounts",
                &json!({"currency": "USD"}),
            )
            .await;
        let v: Value = resp.json().await.unwrap();
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    let (x, y) = (&ids[0], &ids[1]);
    let most = "92233720368547758.07"; // i64::MAX minor units
    let move_ = |amount: &str, pending: bool| {
        json!({"debit_account_id": x, "credit_account_id": y, "amount": amount,
               "currency": "USD", "pending": pending})
    };
    assert_eq!(
        raw_transfer(&app, &partner.key, move_(most, true)).await,
        "ok"
    );
    // Each total would still fit; pending plus posted would not.
    assert_eq!(
        raw_transfer(&app, &partner.key, move_("0.01", false)).await,
        "overflows_debits"
    );
    assert_eq!(
        raw_transfer(&app, &partner.key, move_("0.01", true)).await,
        "overflows_debits_pending"
    );
    let long = json!({"debit_account_id": y, "credit_account_id": x, "amount": "0.01",
                      "currency": "USD", "pending": true, "timeout_secs": 2_147_483_648_u64});
    assert_eq!(
        raw_transfer(&app, &partner.key, long).await,
        "overflows_timeout"
    );
    // Beyond what an amount can be at all: refused at the edge, naming the field.
    let resp = app
        .post_as(
            &partner.key,
            "/v1/ledger/transfers",
            &json!({"transfers": [move_("92233720368547758.08", false)]}),
        )
        .await;
    let problem = assert_problem(resp, 400, "amount_overflow").await;
    assert_eq!(problem["field"], "transfers[0].amount");
    let out = crate::cli::flowlet_on(&app, &["admin", "ledger", "verify", "--json"]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    app.assert_ledger_invariants().await;
}

/// The advisory key whose value is `value`, as a test holds it from SQL.
fn key(value: i64) -> LockKey {
    LockKey::singleton(LockNamespace::new("test", value))
}
