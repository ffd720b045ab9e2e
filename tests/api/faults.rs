//! Money under faults: payments stay exactly-once while processes and the database die.
//!
//! Two real `flowlet serve` replicas share a private PostgreSQL (started for this test only,
//! so it can be crashed without touching anyone else's server) and a Redis key prefix. Several
//! clients make P2P payments through them, each payment with its own `Idempotency-Key`, while
//! the replicas are killed with SIGKILL again and again (and restarted on the same port) and
//! PostgreSQL is stopped with `pg_ctl stop -m immediate` (a crash: no checkpoint, every
//! connection cut) and started again. Each client retries a payment with the same key, on the
//! other replica, until it gets a definite answer.
//!
//! What this proves, once everything is up again:
//! - every acknowledged (201) payment exists exactly once, completed, with its own ledger
//!   transfer, and replaying its key answers 201 with the same payment;
//! - nothing was committed that no client was told about: the database holds exactly the
//!   acknowledged payments (each client retried every key to a definite answer, so a payment
//!   committed while its answer was lost must have been acknowledged on a retry);
//! - money is conserved: each wallet's balance is its deposit plus what it was acknowledged
//!   to have received minus what it was acknowledged to have sent, and the wallets together
//!   hold exactly the deposits;
//! - `flowlet admin ledger verify` finds every invariant holding (exit 0);
//! - no answer was ever a 5xx other than 503, and every 503 said `Retry-After` (connection
//!   errors and timeouts are expected while a replica is down);
//! - no replica ever died unless the test killed it.
//!
//! The replicas' logs and PostgreSQL's go to the test's temp dir, whose relevant lines the
//! failure messages quote; `FLOWLET_TEST_KEEP_DB=1` keeps that directory (the stopped cluster
//! and every log) for inspection.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use flowlet::payment::PaymentId;
use flowlet::platform::db::embedded::{EmbeddedPostgres, Placement, find_bin_dir};
use flowlet::wallet::WalletId;
use serde_json::{Value, json};

use crate::helpers::{free_port, redis_url, unique};

/// Concurrent clients making payments.
const CLIENTS: usize = 6;
/// Concurrent clients replaying the acknowledged keys at the end.
const REPLAYERS: usize = 12;
/// Wallets (one verified customer each) the clients pay between.
const WALLETS: usize = 8;
/// What each wallet is funded with, in dollars and in cents.
const DEPOSIT: &str = "500.00";
const DEPOSIT_MINOR: i64 = 50_000;
/// Each payment's amount: small, so no balance or tier limit is ever the story.
const AMOUNT: &str = "0.01";
const AMOUNT_MINOR: i64 = 1;
/// A client gives up on one request after this (then retries the same key).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// A payment without a definite answer after this is a failure of the test (a stuck key).
const PAYMENT_DEADLINE: Duration = Duration::from_secs(60);
/// How long a replica or PostgreSQL may take to come back.
const START_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_survive_replica_kills_and_postgres_crashes_exactly_once() {
    flowlet::platform::tls::install_crypto_provider();
    let started = Instant::now();
    let mut system = System::start().await;
    let seeded = system.seed().await;
    let set_up = started.elapsed();

    let ctx = Arc::new(Load {
        ports: system.ports.clone(),
        http: reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(1))
            .build()
            .unwrap(),
        key: seeded.key.clone(),
        wallets: seeded.wallets.clone(),
        run: format!("faults-{}", uuid::Uuid::now_v7().simple()),
        stop: AtomicBool::new(false),
        stats: Stats::default(),
        violations: Mutex::new(Vec::new()),
    });
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| tokio::spawn(client(c, ctx.clone())))
        .collect();

    let faults = system.inject_faults().await;
    ctx.stop.store(true, Ordering::SeqCst);
    let mut reports = Vec::new();
    for handle in clients {
        reports.push(
            tokio::time::timeout(PAYMENT_DEADLINE + Duration::from_secs(30), handle)
                .await
                .expect("every client finishes its last payment")
                .expect("a client task"),
        );
    }
    let load_done = started.elapsed() - set_up;
    // Everything is up again before anything is checked.
    system.wait_all_ready().await;

    let acks: Vec<Ack> = reports.iter().flat_map(|r| r.acks.clone()).collect();
    let refusals: Vec<String> = reports.iter().flat_map(|r| r.refusals.clone()).collect();
    let stuck: Vec<String> = reports.iter().flat_map(|r| r.stuck.clone()).collect();
    let payments_made = acks.len();
    let violations = ctx.violations.lock().unwrap().clone();
    let stats = &ctx.stats;
    eprintln!(
        "faults: {payments_made} payments acknowledged by {CLIENTS} clients in {load_done:.1?} \
         (set-up {set_up:.1?}), {} of them only on a retry after a lost answer; {} replica \
         kills, {} PostgreSQL crashes; {} retries ({} answers 503, {} connection errors, {} \
         timeouts, {} answers 409 in use); {} forbidden answers",
        stats.answers_recovered.load(Ordering::Relaxed),
        faults.kills,
        faults.pg_crashes,
        stats.retries.load(Ordering::Relaxed),
        stats.unavailable.load(Ordering::Relaxed),
        stats.connection_errors.load(Ordering::Relaxed),
        stats.timeouts.load(Ordering::Relaxed),
        stats.in_use.load(Ordering::Relaxed),
        violations.len(),
    );
    // Every broken property at once, with the logs that explain it.
    let mut failures = Vec::new();
    if !violations.is_empty() {
        failures.push(format!(
            "answers other than 201, a refusal, 409 in use or 503 with Retry-After:\n{}",
            violations.join("\n")
        ));
    }
    if !stuck.is_empty() {
        failures.push(format!(
            "payments without a definite answer in {PAYMENT_DEADLINE:?}: {stuck:?}"
        ));
    }
    if !refusals.is_empty() {
        failures.push(format!(
            "refusals, though funds and limits are ample:\n{}",
            refusals.join("\n")
        ));
    }
    if payments_made < CLIENTS * 10 {
        failures.push(format!("the load hardly ran: {payments_made} payments"));
    }
    // What the database holds, before a replay could add anything to it.
    failures.extend(system.check_database(&seeded, &acks).await);
    assert!(
        failures.is_empty(),
        "{}\n{}",
        failures.join("\n"),
        system.log_context()
    );

    // Replaying each acknowledged key answers the same payment, marked as a replay.
    let replaying = Instant::now();
    let replays: Vec<_> = (0..REPLAYERS)
        .map(|r| {
            let ctx = ctx.clone();
            let mine: Vec<Ack> = acks.iter().skip(r).step_by(REPLAYERS).cloned().collect();
            tokio::spawn(async move {
                let mut wrong = Vec::new();
                for (n, ack) in mine.iter().enumerate() {
                    match pay_until_definite(&ctx, &ack.key, &ack.body, n % 2).await {
                        Outcome::Acked { id, replayed } if id == ack.id && replayed => {}
                        other => {
                            wrong.push(format!("{}: first {} then {other:?}", ack.key, ack.id))
                        }
                    }
                }
                wrong
            })
        })
        .collect();
    let mut replay_failures = Vec::new();
    for handle in replays {
        replay_failures.extend(handle.await.unwrap());
    }
    eprintln!(
        "faults: {payments_made} keys replayed in {:.1?}; total {:.1?}",
        replaying.elapsed(),
        started.elapsed()
    );
    let violations = ctx.violations.lock().unwrap().clone();
    assert!(
        violations.is_empty(),
        "answers to replays other than 201 or 503 with Retry-After:\n{}\n{}",
        violations.join("\n"),
        system.log_context()
    );
    assert!(
        replay_failures.is_empty(),
        "a replayed key answered something else: {replay_failures:#?}"
    );
    system.verify_ledger().await;
    // Its idle keep-alive connections would hold up the replicas' graceful shutdown.
    drop(ctx);
    system.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// The load: clients paying with fresh keys, retrying each key until a definite answer.

struct Load {
    /// Each replica's current port (a replica that could not get its port back moves).
    ports: Arc<[AtomicU16; 2]>,
    http: reqwest::Client,
    /// The partner's API key.
    key: String,
    wallets: Vec<String>,
    /// Makes this run's idempotency keys unique.
    run: String,
    stop: AtomicBool,
    stats: Stats,
    /// Answers that must never happen (a 500, a 503 without Retry-After), with their bodies.
    violations: Mutex<Vec<String>>,
}

#[derive(Default)]
struct Stats {
    retries: AtomicU64,
    unavailable: AtomicU64,
    connection_errors: AtomicU64,
    timeouts: AtomicU64,
    in_use: AtomicU64,
    /// Payments whose first 201 was a replay: an earlier attempt committed, its answer lost.
    answers_recovered: AtomicU64,
}

/// A payment a client was told was made.
#[derive(Clone, Debug)]
struct Ack {
    key: String,
    /// The exact request body (the same bytes on every retry).
    body: String,
    from: String,
    to: String,
    id: String,
}

#[derive(Default)]
struct ClientReport {
    acks: Vec<Ack>,
    refusals: Vec<String>,
    stuck: Vec<String>,
}

#[derive(Debug)]
enum Outcome {
    Acked { id: String, replayed: bool },
    Refused { status: u16, body: String },
    Stuck,
}

/// Pays between the wallets until told to stop, each payment under a fresh key, starting on
/// alternate replicas.
async fn client(c: usize, ctx: Arc<Load>) -> ClientReport {
    let mut report = ClientReport::default();
    let mut n = 0_usize;
    while !ctx.stop.load(Ordering::SeqCst) {
        n += 1;
        let from = (c * 3 + n) % WALLETS;
        let to = (from + 1 + n % 3) % WALLETS;
        let (from, to) = (ctx.wallets[from].clone(), ctx.wallets[to].clone());
        let key = format!("{}-{c}-{n}", ctx.run);
        let body = json!({"from_wallet_id": from, "to_wallet_id": to, "amount": AMOUNT,
                          "currency": "USD", "description": key})
        .to_string();
        match pay_until_definite(&ctx, &key, &body, (c + n) % 2).await {
            Outcome::Acked { id, replayed } => {
                if replayed {
                    // Committed by an attempt whose answer was lost; a retry learned it.
                    ctx.stats.answers_recovered.fetch_add(1, Ordering::Relaxed);
                }
                report.acks.push(Ack {
                    key,
                    body,
                    from,
                    to,
                    id,
                });
            }
            Outcome::Refused { status, body } => {
                report.refusals.push(format!("{key}: {status} {body}"));
            }
            Outcome::Stuck => report.stuck.push(key),
        }
    }
    report
}

/// POSTs one payment with its key until a definite answer: 201, or a refusal. Connection
/// errors, timeouts, 503 and 409 `idempotency_key_in_use` are retried with the same key on
/// the other replica.
async fn pay_until_definite(ctx: &Load, key: &str, body: &str, first: usize) -> Outcome {
    let deadline = Instant::now() + PAYMENT_DEADLINE;
    let mut replica = first;
    let mut pause = Duration::from_millis(20);
    loop {
        let port = ctx.ports[replica].load(Ordering::SeqCst);
        let sent = ctx
            .http
            .post(format!("http://127.0.0.1:{port}/v1/payments"))
            .bearer_auth(&ctx.key)
            .header("idempotency-key", key)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await;
        let answer = match sent {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp.headers().contains_key("retry-after");
                let replayed = resp
                    .headers()
                    .get("idempotent-replayed")
                    .is_some_and(|v| v == "true");
                resp.text()
                    .await
                    .map(|text| (status, retry_after, replayed, text))
            }
            Err(e) => Err(e),
        };
        match answer {
            Ok((201, _, replayed, text)) => {
                let payment: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(payment["status"], "completed", "{text}");
                return Outcome::Acked {
                    id: payment["id"].as_str().unwrap().to_owned(),
                    replayed,
                };
            }
            Ok((503, retry_after, _, text)) => {
                ctx.stats.unavailable.fetch_add(1, Ordering::Relaxed);
                if !retry_after {
                    ctx.violation(format!(
                        "{key} on replica {replica}: 503 without Retry-After: {text}"
                    ));
                }
            }
            Ok((409, _, _, text)) if text.contains("idempotency_key_in_use") => {
                ctx.stats.in_use.fetch_add(1, Ordering::Relaxed);
            }
            Ok((status, _, _, text)) if status >= 500 => {
                ctx.violation(format!("{key} on replica {replica}: {status} {text}"));
            }
            Ok((status, _, _, text)) => return Outcome::Refused { status, body: text },
            Err(e) if e.is_timeout() => {
                ctx.stats.timeouts.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                ctx.stats.connection_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        if Instant::now() > deadline {
            return Outcome::Stuck;
        }
        ctx.stats.retries.fetch_add(1, Ordering::Relaxed);
        replica = 1 - replica;
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

impl Load {
    fn violation(&self, what: String) {
        self.violations
            .lock()
            .unwrap()
            .push(format!("{} {what}", clock()));
    }
}

// ---------------------------------------------------------------------------------------------
// The system under test: a private PostgreSQL and two `flowlet serve` processes.

/// What the set-up made: the partner's API key and the funded wallets.
struct Seeded {
    key: String,
    wallets: Vec<String>,
}

/// One fault of the schedule.
#[derive(Clone, Copy)]
enum Fault {
    /// SIGKILL replica `i`, start it again on its port.
    Kill(usize),
    /// `pg_ctl stop -m immediate`, a second down, start again.
    CrashPostgres,
    /// Both at once: replica `i` killed, PostgreSQL crashed, then both back.
    KillDuringCrash(usize),
}

/// The faults in order, each followed by a pause (ms) under load.
const SCHEDULE: [(Fault, u64); 11] = [
    (Fault::Kill(0), 1500),
    (Fault::CrashPostgres, 2000),
    (Fault::Kill(1), 1500),
    (Fault::CrashPostgres, 2000),
    (Fault::Kill(0), 1000),
    (Fault::Kill(1), 1500),
    (Fault::KillDuringCrash(0), 2000),
    (Fault::Kill(1), 1500),
    (Fault::CrashPostgres, 2000),
    (Fault::Kill(0), 1500),
    (Fault::Kill(1), 2000),
];

/// What the fault injection did.
struct Faults {
    kills: usize,
    pg_crashes: usize,
}

/// Two replicas on a private PostgreSQL; killed (replicas) and stopped (PostgreSQL) when the
/// test ends, passed or not.
struct System {
    replicas: [Option<Child>; 2],
    ports: Arc<[AtomicU16; 2]>,
    pg: Option<EmbeddedPostgres>,
    /// Where PostgreSQL's cluster, its log and the replicas' logs are.
    dir: PathBuf,
    db_url: String,
    redis_prefix: String,
    mail_dir: PathBuf,
    /// Replicas found dead before the test killed them, with their last log lines.
    crashes: Vec<String>,
    /// What the test did when (UTC, as the logs' timestamps).
    timeline: Vec<String>,
    /// Removed last (fields drop in order), unless FLOWLET_TEST_KEEP_DB is set.
    tmp: Option<tempfile::TempDir>,
}

impl Drop for System {
    fn drop(&mut self) {
        for child in self.replicas.iter_mut().filter_map(Option::take) {
            kill(child);
        }
        if std::env::var_os("FLOWLET_TEST_KEEP_DB").is_some()
            && let Some(tmp) = self.tmp.take()
        {
            eprintln!("faults: kept {} (cluster and logs)", tmp.keep().display());
        }
        // `pg`, when still here, stops its server as it drops.
    }
}

fn kill(mut child: Child) {
    drop(child.kill());
    drop(child.wait());
}

impl System {
    /// PostgreSQL in a fresh temp dir, the `flowlet` database migrated, both replicas up.
    async fn start() -> System {
        let tmp = tempfile::tempdir().unwrap();
        // As root the server runs as `postgres`; the directory itself is handed to it.
        let pg = EmbeddedPostgres::start(tmp.path(), Placement::Exact)
            .await
            .expect("a private PostgreSQL");
        let dir = pg.dir().to_path_buf();
        let mut admin = AsyncPgConnection::establish(&pg.url()).await.unwrap();
        admin
            .batch_execute("CREATE DATABASE flowlet")
            .await
            .unwrap();
        drop(admin);
        let mail_dir = dir.join("mail");
        std::fs::create_dir_all(&mail_dir).unwrap();
        let mut system = System {
            replicas: [None, None],
            ports: Arc::new([AtomicU16::new(free_port()), AtomicU16::new(free_port())]),
            db_url: pg.url_for_database("flowlet"),
            pg: Some(pg),
            dir,
            redis_prefix: format!("t:{}:", uuid::Uuid::now_v7().simple()),
            mail_dir,
            crashes: Vec::new(),
            timeline: Vec::new(),
            tmp: Some(tmp),
        };
        let out = system.cli(&["migrate"]).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for i in 0..2 {
            system.start_replica(i).await;
        }
        system
    }

    /// `flowlet` configured like the replicas.
    fn flowlet(&self) -> Command {
        let mut cmd = crate::cli::flowlet();
        cmd.env("FLOWLET_ENV", "test")
            .env("FLOWLET__LOG__FORMAT", "json")
            .env("FLOWLET__LOG__LEVEL", "warn")
            .env("FLOWLET__DATABASE__URL", &self.db_url)
            .env("FLOWLET__DATABASE__MIGRATE_ON_START", "false")
            .env("FLOWLET__DATABASE__POOL_SIZE", "4")
            .env("FLOWLET__DATABASE__CONNECT_TIMEOUT_MS", "1000")
            .env("FLOWLET__DATABASE__POOL_TIMEOUT_MS", "1000")
            .env("FLOWLET__REDIS__URL", redis_url())
            .env("FLOWLET__REDIS__KEY_PREFIX", &self.redis_prefix)
            .env("FLOWLET__REDIS__POOL_SIZE", "4")
            .env("FLOWLET__RATE_LIMIT__ENABLED", "false")
            .env("FLOWLET__SMTP__MAIL_DIR", &self.mail_dir)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `flowlet ARGS` to completion.
    async fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = self.flowlet();
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap()
    }

    fn log_file(&self, i: usize) -> PathBuf {
        self.dir.join(format!("replica-{i}.log"))
    }

    /// Starts replica `i` on its port (another one if that was taken meanwhile) and waits
    /// until it answers /health.
    async fn start_replica(&mut self, i: usize) {
        assert!(self.replicas[i].is_none(), "replica {i} already runs");
        for attempt in 0..3 {
            if attempt > 0 {
                self.ports[i].store(free_port(), Ordering::SeqCst);
            }
            let port = self.ports[i].load(Ordering::SeqCst);
            let mut log = File::options()
                .create(true)
                .append(true)
                .open(self.log_file(i))
                .unwrap();
            writeln!(
                log,
                "--- test {}: starting replica {i} on port {port}",
                clock()
            )
            .unwrap();
            let child = self
                .flowlet()
                .arg("serve")
                .env("FLOWLET__SERVER__BIND", format!("127.0.0.1:{port}"))
                .env("FLOWLET__SERVER__WORKERS", "1")
                .env("FLOWLET__SERVER__SHUTDOWN_TIMEOUT_SECS", "5")
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            self.replicas[i] = Some(child);
            if self.wait_healthy(i, port).await {
                self.timeline
                    .push(format!("{} replica {i} up on port {port}", clock()));
                return;
            }
            self.replicas[i] = None; // Exited: its port was taken? Try another.
        }
        panic!(
            "replica {i} did not start:\n{}",
            tail(&self.log_file(i), 40)
        );
    }

    /// Whether replica `i` answers /health (false: it exited).
    async fn wait_healthy(&mut self, i: usize, port: u16) -> bool {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        let started = Instant::now();
        loop {
            if let Some(child) = self.replicas[i].as_mut()
                && child.try_wait().unwrap().is_some()
            {
                return false;
            }
            if let Ok(resp) = http
                .get(format!("http://127.0.0.1:{port}/health"))
                .send()
                .await
                && resp.status() == 200
            {
                return true;
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "replica {i} not healthy in {START_TIMEOUT:?}:\n{}",
                tail(&self.log_file(i), 40)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no shutdown of any kind, requests cut wherever they were.
    fn kill_replica(&mut self, i: usize) {
        let mut child = self.replicas[i].take().expect("the replica runs");
        self.note_exit(i, &mut child);
        kill(child);
        let mut log = File::options().append(true).open(self.log_file(i)).unwrap();
        writeln!(log, "--- test {}: replica {i} killed with SIGKILL", clock()).unwrap();
        self.timeline
            .push(format!("{} replica {i} killed with SIGKILL", clock()));
    }

    /// A replica must only ever die when the test kills it.
    fn note_exit(&mut self, i: usize, child: &mut Child) {
        if let Some(status) = child.try_wait().unwrap() {
            self.crashes.push(format!(
                "replica {i} exited by itself ({status}):\n{}",
                tail(&self.log_file(i), 40)
            ));
        }
    }

    async fn kill_and_restart(&mut self, i: usize) {
        self.kill_replica(i);
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.start_replica(i).await;
    }

    /// `pg_ctl` as the server's own user (`postgres` when we are root).
    fn pg_ctl(&self) -> Command {
        let mut cmd = Command::new(find_bin_dir().unwrap().join("pg_ctl"));
        cmd.current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .arg("-D")
            .arg(self.dir.join("data"));
        if nix::unistd::Uid::effective().is_root() {
            let user = nix::unistd::User::from_name("postgres")
                .unwrap()
                .expect("a postgres user");
            cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
        cmd
    }

    async fn run_pg_ctl(&self, args: &[&str]) {
        let mut cmd = self.pg_ctl();
        cmd.args(args).process_group(0);
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl {args:?}: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.dir.join("postgres.log"), 30)
        );
    }

    /// `pg_ctl stop -m immediate` (every backend dies, recovery on the next start), `down`,
    /// then a start on the same port.
    async fn crash_postgres(&mut self, down: Duration) {
        self.run_pg_ctl(&["-m", "immediate", "-w", "stop"]).await;
        self.timeline
            .push(format!("{} PostgreSQL stopped (-m immediate)", clock()));
        tokio::time::sleep(down).await;
        let port = self.pg.as_ref().unwrap().port();
        let log = self.dir.join("postgres.log");
        let options =
            format!("-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''");
        self.run_pg_ctl(&[
            "-l",
            log.to_str().unwrap(),
            "-w",
            "-t",
            "60",
            "-o",
            &options,
            "start",
        ])
        .await;
        self.timeline
            .push(format!("{} PostgreSQL up again", clock()));
    }

    /// The faults, while the clients pay: [`SCHEDULE`], about 30 s.
    async fn inject_faults(&mut self) -> Faults {
        let mut faults = Faults {
            kills: 0,
            pg_crashes: 0,
        };
        tokio::time::sleep(Duration::from_millis(3000)).await;
        for (fault, then) in SCHEDULE {
            match fault {
                Fault::Kill(i) => {
                    self.kill_and_restart(i).await;
                    faults.kills += 1;
                }
                Fault::CrashPostgres => {
                    self.crash_postgres(Duration::from_millis(1000)).await;
                    faults.pg_crashes += 1;
                }
                Fault::KillDuringCrash(i) => {
                    self.kill_replica(i);
                    self.crash_postgres(Duration::from_millis(1000)).await;
                    self.start_replica(i).await;
                    faults.kills += 1;
                    faults.pg_crashes += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(then)).await;
        }
        faults
    }

    /// Both replicas (still the same processes) answer /ready with 200 (database, migrations,
    /// Redis).
    async fn wait_all_ready(&mut self) {
        for i in 0..2 {
            let mut child = self.replicas[i].take().expect("the replica runs");
            self.note_exit(i, &mut child);
            self.replicas[i] = Some(child);
        }
        assert!(self.crashes.is_empty(), "{}", self.crashes.join("\n"));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        for i in 0..2 {
            let port = self.ports[i].load(Ordering::SeqCst);
            let started = Instant::now();
            loop {
                let status = http
                    .get(format!("http://127.0.0.1:{port}/ready"))
                    .send()
                    .await
                    .map(|r| r.status().as_u16());
                if matches!(status, Ok(200)) {
                    break;
                }
                assert!(
                    started.elapsed() < START_TIMEOUT,
                    "replica {i} not ready: {status:?}\n{}",
                    tail(&self.log_file(i), 40)
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// A partner (CLI), the sanctions list (CLI), and WALLETS verified customers with a
    /// funded USD wallet each (HTTP, through replica 0).
    async fn seed(&self) -> Seeded {
        let n = unique();
        let out = self
            .cli(&[
                "admin",
                "partner",
                "create",
                "--name",
                &format!("Faults {n}"),
                "--email",
                &format!("ops{n}@faults.example"),
                "--json",
            ])
            .await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let created: Value = serde_json::from_slice(&out.stdout).unwrap();
        let key = created["api_key"]["secret"].as_str().unwrap().to_owned();
        let list = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/sanctions/sanctions_simple.csv"
        );
        let out = self.cli(&["admin", "sanctions", "load", list]).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        let mut wallets = Vec::new();
        for w in 0..WALLETS {
            let customer = self
                .setup_post(
                    &key,
                    "/v1/customers",
                    json!({"first_name": "Emma", "last_name": "Johnson",
                           "date_of_birth": "1990-05-17", "country": "DE"}),
                )
                .await;
            let customer = customer["id"].as_str().unwrap().to_owned();
            let application = self
                .setup_post(
                    &key,
                    &format!("/v1/customers/{customer}/kyc"),
                    json!({"document_type": "passport",
                           "document_number": format!("F{:08}", (n * 16 + u64::try_from(w).unwrap()) % 100_000_000),
                           "document_country": "DE"}),
                )
                .await;
            assert_eq!(application["status"], "approved", "{application}");
            let wallet = self
                .setup_post(
                    &key,
                    "/v1/wallets",
                    json!({"customer_id": customer, "currency": "USD", "type": "personal"}),
                )
                .await;
            let wallet = wallet["id"].as_str().unwrap().to_owned();
            self.setup_post(
                &key,
                "/v1/deposits",
                json!({"wallet_id": wallet, "amount": DEPOSIT, "currency": "USD",
                       "source": {"iban": "DE89370400440532013000"}}),
            )
            .await;
            wallets.push(wallet);
        }
        Seeded { key, wallets }
    }

    /// A set-up POST through replica 0; must answer 201 (503 and connection errors are
    /// retried with the same key: the machine may be busy).
    async fn setup_post(&self, key: &str, path: &str, body: Value) -> Value {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let idempotency_key = uuid::Uuid::now_v7().to_string();
        let started = Instant::now();
        loop {
            let port = self.ports[0].load(Ordering::SeqCst);
            let resp = http
                .post(format!("http://127.0.0.1:{port}{path}"))
                .bearer_auth(key)
                .header("idempotency-key", &idempotency_key)
                .json(&body)
                .send()
                .await;
            if let Ok(resp) = resp {
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap_or_default();
                match status {
                    201 => return serde_json::from_str(&text).unwrap(),
                    503 | 409 => {}
                    _ => panic!("set-up POST {path}: {status} {text}"),
                }
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "set-up POST {path} did not succeed"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether the database holds exactly the acknowledged payments, each once and completed
    /// with its transfer, and every wallet its deposit plus what it was acknowledged to
    /// receive minus what it was acknowledged to send: what is wrong, if anything.
    async fn check_database(&self, seeded: &Seeded, acks: &[Ack]) -> Vec<String> {
        // Here, not at the top: its `load` would shadow the atomics' own.
        use diesel_async::RunQueryDsl;

        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = Text)]
            id: String,
            #[diesel(sql_type = Text)]
            status: String,
            #[diesel(sql_type = BigInt)]
            amount: i64,
            #[diesel(sql_type = Text)]
            description: String,
            #[diesel(sql_type = Text)]
            from_wallet: String,
            #[diesel(sql_type = Text)]
            to_wallet: String,
            #[diesel(sql_type = BigInt)]
            transfer_amount: i64,
        }
        #[derive(diesel::QueryableByName)]
        struct Balance {
            #[diesel(sql_type = Text)]
            wallet: String,
            #[diesel(sql_type = BigInt)]
            posted: i64,
            #[diesel(sql_type = BigInt)]
            pending: i64,
        }
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        let mut conn = AsyncPgConnection::establish(&self.db_url).await.unwrap();
        let rows: Vec<Row> = diesel::sql_query(
            "SELECT p.id::text AS id, p.status, p.amount, coalesce(p.description, '') AS description, \
             p.from_wallet_id::text AS from_wallet, p.to_wallet_id::text AS to_wallet, \
             coalesce(t.amount, -1) AS transfer_amount \
             FROM payment_payments p LEFT JOIN ledger_transfers t ON t.id = p.transfer_id \
             WHERE p.kind = 'p2p'",
        )
        .load(&mut conn)
        .await
        .unwrap();
        let uuid_of_wallet = |w: &str| WalletId::parse(w).unwrap().uuid().to_string();

        // Every problem, not only the first: a lost payment and a duplicate tell apart.
        let mut problems = Vec::new();
        let mut by_id: HashMap<&str, &Row> = HashMap::new();
        let mut keys_seen: HashSet<&str> = HashSet::new();
        for row in &rows {
            by_id.insert(&row.id, row);
            if !keys_seen.insert(&row.description) {
                problems.push(format!("made twice under key {}", row.description));
            }
        }
        let mut acked_ids = HashSet::new();
        for ack in acks {
            let uuid = PaymentId::parse(&ack.id).unwrap().uuid().to_string();
            if !acked_ids.insert(uuid.clone()) {
                problems.push(format!("{} acknowledged for two keys", ack.id));
            }
            let Some(row) = by_id.get(uuid.as_str()) else {
                problems.push(format!(
                    "acknowledged (201) but not in the database: {} (uuid {uuid}, key {})",
                    ack.id, ack.key
                ));
                continue;
            };
            let found = (
                row.status.as_str(),
                row.amount,
                row.transfer_amount,
                row.description.as_str(),
                row.from_wallet.clone(),
                row.to_wallet.clone(),
            );
            let wanted = (
                "completed",
                AMOUNT_MINOR,
                AMOUNT_MINOR,
                ack.key.as_str(),
                uuid_of_wallet(&ack.from),
                uuid_of_wallet(&ack.to),
            );
            if found != wanted {
                problems.push(format!("{}: {found:?}, wanted {wanted:?}", ack.id));
            }
        }
        for row in rows.iter().filter(|r| !acked_ids.contains(&r.id)) {
            problems.push(format!(
                "committed but never acknowledged: {} (key {})",
                row.id, row.description
            ));
        }
        let mut failures = Vec::new();
        if !problems.is_empty() {
            failures.push(format!(
                "{} acknowledged payments, {} p2p payments in the database; {} problems:\n{}",
                acks.len(),
                rows.len(),
                problems.len(),
                problems
                    .iter()
                    .take(20)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }

        // Money: each wallet from the acknowledged payments alone; all wallets = the deposits.
        let mut expected: HashMap<String, i64> = seeded
            .wallets
            .iter()
            .map(|w| (uuid_of_wallet(w), DEPOSIT_MINOR))
            .collect();
        for ack in acks {
            *expected.get_mut(&uuid_of_wallet(&ack.from)).unwrap() -= AMOUNT_MINOR;
            *expected.get_mut(&uuid_of_wallet(&ack.to)).unwrap() += AMOUNT_MINOR;
        }
        let balances: Vec<Balance> = diesel::sql_query(
            "SELECT w.id::text AS wallet, a.credits_posted - a.debits_posted AS posted, \
             a.debits_pending + a.credits_pending AS pending \
             FROM wallet_wallets w JOIN ledger_accounts a ON a.id = w.account_id",
        )
        .load(&mut conn)
        .await
        .unwrap();
        assert_eq!(balances.len(), WALLETS);
        let actual: HashMap<String, i64> = balances
            .iter()
            .map(|b| (b.wallet.clone(), b.posted))
            .collect();
        for (wallet, wanted) in &expected {
            let found = actual.get(wallet).copied().unwrap_or_default();
            if found != *wanted {
                failures.push(format!(
                    "wallet {wallet} holds {found} cents; the acknowledged payments say {wanted}"
                ));
            }
        }
        if balances.iter().any(|b| b.pending != 0) {
            failures.push("money left pending on a wallet".to_owned());
        }
        let deposits = diesel::sql_query(
            "SELECT coalesce(sum(amount), 0)::bigint AS n FROM payment_payments \
             WHERE kind = 'deposit' AND status = 'completed'",
        )
        .get_result::<Count>(&mut conn)
        .await
        .unwrap()
        .n;
        assert_eq!(deposits, DEPOSIT_MINOR * i64::try_from(WALLETS).unwrap());
        let held: i64 = actual.values().sum();
        if held != deposits {
            failures.push(format!(
                "the wallets hold {held} cents, the deposits were {deposits}"
            ));
        }
        failures
    }

    /// `flowlet admin ledger verify` on the database: every invariant holds (exit 0).
    async fn verify_ledger(&self) {
        let out = self.cli(&["admin", "ledger", "verify", "--json"]).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "ledger verify: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// What explains a failure: the replicas' log lines of internal errors, panics and commits
    /// whose fate the engine had to learn (errors are logged outside the request's span, so
    /// without its request id), and what the test did when.
    fn log_context(&self) -> String {
        let logs: Vec<String> = (0..2)
            .map(|i| std::fs::read_to_string(self.log_file(i)).unwrap_or_default())
            .collect();
        let mut out = String::new();
        for (i, log) in logs.iter().enumerate() {
            for line in log
                .lines()
                .filter(|l| {
                    l.contains("internal_error") || l.contains("panic") || l.contains("at commit")
                })
                .take(20)
            {
                out.push_str(&format!("replica {i}: {line}\n"));
            }
        }
        out.push_str("timeline (UTC):\n");
        for event in &self.timeline {
            out.push_str(&format!("  {event}\n"));
        }
        out
    }

    /// SIGTERM to both replicas (each must exit 0), then PostgreSQL stopped.
    async fn shutdown(mut self) {
        for child in self.replicas.iter().flatten() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        }
        for i in 0..2 {
            let mut child = self.replicas[i].take().unwrap();
            let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
                .await
                .unwrap();
            assert!(
                status.success(),
                "replica {i} exited with {status}:\n{}",
                tail(&self.log_file(i), 40)
            );
        }
        self.pg.take().unwrap().stop().await.unwrap();
    }
}

/// The time of day in UTC, as the replicas' logs stamp their lines.
fn clock() -> String {
    chrono::Utc::now().format("%H:%M:%S%.3f").to_string()
}

/// The last `lines` lines of a log file.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
