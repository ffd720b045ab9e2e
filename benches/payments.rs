//! Payments per second through the real application: `POST /v1/payments` over HTTP (reqwest,
//! keep-alive) against the app as `flowlet serve` builds it, on a real PostgreSQL with durable
//! commits and the real Redis for rate limits.
//!
//! Run: `cargo bench --bench payments`. Environment:
//! - `FLOWLET_BENCH_DATABASE_URL`: a maintenance database URL (default
//!   postgres://postgres@127.0.0.1:5432/postgres); a fresh `flowlet_bench_<uuid>` database is
//!   created on that server, migrated by the app at start, and dropped at the end;
//! - `FLOWLET_BENCH_REDIS_URL` (redis://127.0.0.1:6379; empty: in-process limits);
//! - `FLOWLET_BENCH_SECS` (10) after `FLOWLET_BENCH_WARMUP_SECS` (2);
//! - `FLOWLET_BENCH_CLIENTS` (64): concurrent clients, each sending one payment at a time;
//! - `FLOWLET_BENCH_WALLETS` (1000): verified customers' USD wallets, each funded by a deposit;
//! - `FLOWLET_BENCH_LOADGEN_THREADS` (1): threads of the load generator's own runtime;
//! - `FLOWLET_BENCH_ANALYZE` (1): ANALYZE after set-up and warm-up, as autovacuum would;
//! - `FLOWLET_BENCH_IDEMPOTENCY_KEYS` (1): every payment carries a fresh `Idempotency-Key`, as
//!   a partner's retry-safe client sends it (its claim, and its stored answer in the payment's
//!   own transaction, are part of what is measured); 0 sends none;
//! - any `FLOWLET__...` variable configures the app as it would `flowlet serve` (e.g.
//!   `FLOWLET__LEDGER__BATCH_LINGER_US`, `FLOWLET__DATABASE__POOL_SIZE`,
//!   `FLOWLET__SERVER__WORKERS`).
//!
//! Rate limits stay on, raised through configuration (API.md); tier 1 limits are raised so
//! they never refuse. One partner, a one-entry sanctions list, and the customers approved at
//! tier 1 through the API. Each client picks a random payer and payee among the wallets and a
//! small random amount, so every answer must be 201; anything else is counted and fails the
//! run at the end. Besides throughput and latency it prints where the time went: the posting
//! engine's batches (from the app's /metrics), the server's own view of the request time, CPU
//! per component (load generator, HTTP workers, app runtime, PostgreSQL, Redis, the rest of
//! the machine) and what PostgreSQL's backends were doing (pg_stat_activity samples). Results
//! go to stdout and to `target/bench/payments.json`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use flowlet::app::Application;
use flowlet::auth::{AuthService, Caller, RequestMeta};
use flowlet::kyc::{KycService, system_clock};
use flowlet::ledger::LedgerService;
use flowlet::notify::TransactionalOutbox;
use flowlet::platform::config::Sources;
use flowlet::platform::db::{Db, PoolOptions};
use flowlet::platform::shared_state::SharedState;
use flowlet::settings::Settings;
use futures_util::StreamExt;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use uuid::Uuid;

#[path = "support/mod.rs"]
mod support;
use support::{connect, redact, with_database};

/// Loopback without TLS (`sslmode=disable`), so figures compare across releases; to measure
/// with TLS, set `FLOWLET_BENCH_DATABASE_URL` with `sslmode=require`.
const DEFAULT_SERVER_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable";
const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// The sanctions list: one entry nobody matches (screening runs, and approves).
const SANCTIONS_CSV: &str = "name,aliases,date_of_birth,country\nNobody Listed,,1900-01-01,\n";
/// Far above anything the benchmark moves.
const TIER_LIMIT: &str = "100000000.00";
const RATE_LIMIT: &str = "1000000000";
/// Each wallet's deposit, and the largest payment (minor units): no payment can find its
/// payer short within any sensible run.
const DEPOSIT: &str = "100000.00";
const MAX_AMOUNT_MINOR: u64 = 1_000;
const SET_UP_CONCURRENCY: usize = 32;
/// Linux reports CPU times in USER_HZ, which is 100 on every architecture it runs on.
const TICKS_PER_SEC: f64 = 100.0;
const ACTIVITY_SAMPLE_EVERY: Duration = Duration::from_millis(50);

fn main() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    // The app (its engine, workers and the set-up) runs here; actix starts its own HTTP
    // worker threads; the load generator gets a runtime of its own, so CPU can be told apart.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("flowlet-app")
        .enable_all()
        .build()
        .context("building the app's tokio runtime")?;
    let loadgen = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.loadgen_threads)
        .thread_name("loadgen")
        .enable_all()
        .build()
        .context("building the load generator's tokio runtime")?;
    let result = runtime.block_on(run(config, loadgen.handle().clone()));
    loadgen.shutdown_timeout(Duration::from_secs(5));
    result
}

#[derive(Debug, Clone)]
struct Config {
    server_url: String,
    redis_url: Option<String>,
    run_for: Duration,
    warmup: Duration,
    clients: usize,
    wallets: usize,
    loadgen_threads: usize,
    analyze: bool,
    idempotency_keys: bool,
    /// `FLOWLET__...` variables of this process, applied last.
    app_vars: Vec<(String, String)>,
}

impl Config {
    fn from_env() -> anyhow::Result<Config> {
        let clients: usize = env_or("FLOWLET_BENCH_CLIENTS", 64)?;
        let wallets: usize = env_or("FLOWLET_BENCH_WALLETS", 1000)?;
        let loadgen_threads: usize = env_or("FLOWLET_BENCH_LOADGEN_THREADS", 1)?;
        if clients == 0 || wallets < 2 || loadgen_threads == 0 {
            bail!("need at least 1 client, 2 wallets and 1 load generator thread");
        }
        let redis_url = match std::env::var("FLOWLET_BENCH_REDIS_URL") {
            Ok(url) if url.trim().is_empty() => None,
            Ok(url) => Some(url),
            Err(_) => Some(DEFAULT_REDIS_URL.to_owned()),
        };
        Ok(Config {
            server_url: std::env::var("FLOWLET_BENCH_DATABASE_URL")
                .unwrap_or_else(|_| DEFAULT_SERVER_URL.to_owned()),
            redis_url,
            run_for: Duration::from_secs_f64(env_or("FLOWLET_BENCH_SECS", 10.0)?),
            warmup: Duration::from_secs_f64(env_or("FLOWLET_BENCH_WARMUP_SECS", 2.0)?),
            clients,
            wallets,
            loadgen_threads,
            analyze: env_or::<u8>("FLOWLET_BENCH_ANALYZE", 1)? != 0,
            idempotency_keys: env_or::<u8>("FLOWLET_BENCH_IDEMPOTENCY_KEYS", 1)? != 0,
            app_vars: std::env::vars()
                .filter(|(k, _)| k.starts_with("FLOWLET__"))
                .collect(),
        })
    }
}

fn env_or<T: FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .map_err(|_| anyhow!("{name}: cannot parse `{value}`")),
        Err(_) => Ok(default),
    }
}

/// Creates the database, runs the benchmark in it, and drops it whatever happened.
async fn run(config: Config, loadgen: tokio::runtime::Handle) -> anyhow::Result<()> {
    let mut admin = match connect(&config.server_url).await {
        Ok(conn) => conn,
        Err(e) => {
            eprintln!(
                "payments bench: no PostgreSQL reachable at {}: {e:#}\n\
                 Start PostgreSQL there, or set FLOWLET_BENCH_DATABASE_URL to the URL of a \
                 maintenance database (e.g. postgres://user@host:5432/postgres).",
                redact(&config.server_url)
            );
            std::process::exit(2);
        }
    };
    let name = format!("flowlet_bench_{}", Uuid::now_v7().simple());
    admin
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .with_context(|| format!("creating database {name}"))?;
    drop(admin);
    let url = with_database(&config.server_url, &name)?;
    println!(
        "payments bench: database {name} on {}",
        redact(&config.server_url)
    );

    let result = tokio::select! {
        result = bench(&config, &url, &name, loadgen) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };

    support::drop_database_after("payments bench", &config.server_url, &name, result).await
}

/// The app's settings: as `flowlet serve` reads them, plus the benchmark's.
fn settings(config: &Config, url: &str, mail_dir: &std::path::Path) -> anyhow::Result<Settings> {
    let mut vars: Vec<(String, String)> = vec![
        ("FLOWLET__SERVER__BIND".into(), "127.0.0.1:0".into()),
        ("FLOWLET__DATABASE__URL".into(), url.into()),
        (
            "FLOWLET__SMTP__MAIL_DIR".into(),
            mail_dir.display().to_string(),
        ),
        (
            "FLOWLET__RATE_LIMIT__KEY_PER_HOUR".into(),
            RATE_LIMIT.into(),
        ),
        (
            "FLOWLET__RATE_LIMIT__PARTNER_PER_HOUR".into(),
            RATE_LIMIT.into(),
        ),
        (
            "FLOWLET__RATE_LIMIT__IP_PER_MINUTE".into(),
            RATE_LIMIT.into(),
        ),
    ];
    if let Some(redis) = &config.redis_url {
        vars.push(("FLOWLET__REDIS__URL".into(), redis.clone()));
        vars.push((
            "FLOWLET__REDIS__KEY_PREFIX".into(),
            format!("bench:{}:", Uuid::now_v7().simple()),
        ));
    }
    for limit in [
        "MAX_BALANCE",
        "MAX_SINGLE_PAYMENT",
        "DAILY_OUTGOING",
        "MONTHLY_OUTGOING",
    ] {
        vars.push((
            format!("FLOWLET__KYC__TIERS__1__LIMITS__USD__{limit}"),
            TIER_LIMIT.into(),
        ));
    }
    vars.extend(config.app_vars.iter().cloned());
    Settings::load_from(&Sources::with_vars(vars)).context("the app's settings")
}

fn small_pool() -> PoolOptions {
    PoolOptions {
        max_size: 2,
        wait_timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(10),
        tx_max_retries: 3,
        ca_file: None,
    }
}

/// What the clients share.
struct Target {
    client: reqwest::Client,
    payments_url: String,
    authorization: String,
    wallets: Vec<String>,
    idempotency_keys: bool,
}

async fn bench(
    config: &Config,
    url: &str,
    db_name: &str,
    loadgen: tokio::runtime::Handle,
) -> anyhow::Result<()> {
    let started = Instant::now();
    flowlet::platform::tls::install_crypto_provider();
    let mail_dir = tempfile::tempdir().context("a mail directory")?;
    let settings = settings(config, url, mail_dir.path())?;
    let app = Application::build_with(settings.clone(), None)
        .await
        .context("starting the app")?;
    let address = format!("http://127.0.0.1:{}", app.port());
    let handle = app.server_handle();
    let serving = tokio::spawn(app.run_until_stopped());
    println!(
        "app: {address}, HTTP workers {}, database pool {}, redis {}, ledger batch_max {} linger {} us \
         pipeline {}; {} clients ({} load generator thread(s)), {} wallets, idempotency keys {}; \
         {} s after {} s of warm-up",
        settings
            .server
            .workers
            .map_or_else(|| "one per core".to_owned(), |w| w.to_string()),
        settings.database.pool_size,
        if config.redis_url.is_some() {
            "on"
        } else {
            "off (in-process)"
        },
        settings.ledger.batch_max_transfers,
        settings.ledger.batch_linger.as_micros(),
        settings.ledger.pipeline_depth,
        config.clients,
        config.loadgen_threads,
        config.wallets,
        if config.idempotency_keys { "on" } else { "off" },
        config.run_for.as_secs_f64(),
        config.warmup.as_secs_f64(),
    );

    let outcome = async {
        let target = Arc::new(set_up(config, &settings, url, &address).await?);
        println!(
            "set-up: {} verified customers with funded wallets in {:.1} s",
            target.wallets.len(),
            started.elapsed().as_secs_f64()
        );
        if config.analyze {
            analyze(url).await?;
        }
        let mut warm_failures = BTreeMap::new();
        let mut warm_ok = 0;
        if !config.warmup.is_zero() {
            let warm = drive(&target, config.clients, config.warmup, 1, &loadgen).await?;
            warm_failures = warm.failures;
            warm_ok = warm.ok;
            if config.analyze {
                analyze(url).await?;
            }
        }
        let metrics_before = scrape(&target.client, &address).await?;
        let cpu_before = CpuSample::take(db_name);
        let sampling = Arc::new(AtomicBool::new(true));
        let activity = tokio::spawn(sample_activity(url.to_owned(), sampling.clone()));
        let measured_at = Instant::now();
        let mut stats = drive(&target, config.clients, config.run_for, 2, &loadgen).await?;
        let elapsed = measured_at.elapsed();
        let cpu = CpuSample::take(db_name).since(&cpu_before, elapsed);
        sampling.store(false, Ordering::Relaxed);
        let activity = activity.await.context("the activity sampler died")??;
        let metrics = scrape(&target.client, &address)
            .await?
            .since(&metrics_before);
        for (what, count) in warm_failures {
            *stats
                .failures
                .entry(format!("warm-up: {what}"))
                .or_default() += count;
        }
        stats.latencies_us.sort_unstable();
        anyhow::Ok((stats, elapsed, cpu, activity, metrics, warm_ok))
    }
    .await;
    // What the process keeps once the spike is over, the app still running and idle: glibc
    // keeps freed memory mapped by default; the chart's MALLOC_ARENA_MAX / MALLOC_TRIM_THRESHOLD_
    // make it return it (run the bench with and without them to compare).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss_mb = status_mb("VmRSS:");
    handle.stop(true).await;
    let stopped = serving.await;
    let (stats, elapsed, cpu, activity, metrics, warm_ok) = outcome?;
    stopped
        .context("the app's task died")?
        .context("the app stopped with an error")?;

    let verify_started = Instant::now();
    let db = Db::connect(url, &small_pool())?;
    let (ledger, _engine) =
        LedgerService::new(db, flowlet::wiring::engine_config(&settings.ledger), None);
    let violations = ledger.verify().await?.violations;
    let rows = count_p2p(url).await?;
    let stored_answers = count_stored_answers(url).await?;
    let peak_rss_mb = status_mb("VmHWM:");

    let result = Measured::new(&stats, elapsed);
    result.print(config, &metrics, &cpu, &activity, peak_rss_mb);
    let malloc_env = |name: &str| std::env::var(name).unwrap_or_else(|_| "unset".into());
    println!(
        "  RSS 2 s after the load (app idle): {idle_rss_mb:.1} MB \
         (MALLOC_ARENA_MAX={}, MALLOC_TRIM_THRESHOLD_={})",
        malloc_env("MALLOC_ARENA_MAX"),
        malloc_env("MALLOC_TRIM_THRESHOLD_")
    );
    let mut failed = false;
    for (what, count) in &stats.failures {
        eprintln!("FAILED: {count} x {what}");
        failed = true;
    }
    if !violations.is_empty() {
        for v in &violations {
            eprintln!("VIOLATION {}: {} ({})", v.check, v.subject, v.detail);
        }
        bail!(
            "the ledger's invariants are broken: {} violations",
            violations.len()
        );
    }
    let answered = warm_ok + stats.ok;
    println!(
        "invariants: ok (verified in {:.1} s); payment rows {rows} = 201s {answered}: {}",
        verify_started.elapsed().as_secs_f64(),
        if rows == i64::try_from(answered).unwrap_or(-1) {
            "ok"
        } else {
            "MISMATCH"
        }
    );
    if rows != i64::try_from(answered).unwrap_or(-1) {
        bail!("{rows} P2P payment rows, but {answered} answers 201");
    }
    if config.idempotency_keys {
        println!(
            "idempotency: {stored_answers} answers stored under their keys (201s {answered}): {}",
            if stored_answers == i64::try_from(answered).unwrap_or(-1) {
                "ok"
            } else {
                "MISMATCH"
            }
        );
        if stored_answers != i64::try_from(answered).unwrap_or(-1) {
            bail!("{stored_answers} stored answers, but {answered} answers 201");
        }
    }
    if failed {
        bail!("some payments did not answer 201: the numbers above are not valid");
    }
    let path = write_json(config, &result, &metrics, &cpu, peak_rss_mb)?;
    println!("wrote {}", path.display());
    Ok(())
}

/// One partner, the sanctions list, and `config.wallets` verified customers' funded wallets.
async fn set_up(
    config: &Config,
    settings: &Settings,
    url: &str,
    address: &str,
) -> anyhow::Result<Target> {
    let db = Db::connect(url, &small_pool())?;
    let auth = AuthService::new(
        db.clone(),
        SharedState::in_process(),
        &settings.auth,
        &settings.rate_limit,
        false,
        Arc::new(TransactionalOutbox),
    )?;
    let operator = Caller::Operator("bench".into());
    let meta = RequestMeta::default();
    let partner = auth
        .create_partner(&operator, "Bench partner", "bench@partner.example", &meta)
        .await?;
    let key = auth
        .create_api_key(&operator, Some(partner.id), "bench", None, None, &meta)
        .await?;
    KycService::new(
        db.clone(),
        &settings.kyc,
        system_clock(),
        Arc::new(TransactionalOutbox),
    )?
    .load_list("bench", SANCTIONS_CSV.as_bytes())
    .await?;
    db.close();

    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(config.clients.max(SET_UP_CONCURRENCY))
        .build()?;
    let authorization = format!("Bearer {}", key.secret.expose_secret());
    let setup = Api {
        client: &client,
        address,
        authorization: &authorization,
    };
    let wallets: Vec<String> = futures_util::stream::iter(0..config.wallets)
        .map(|n| setup.verified_wallet(n))
        .buffer_unordered(SET_UP_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    Ok(Target {
        payments_url: format!("{address}/v1/payments"),
        client,
        authorization,
        wallets,
        idempotency_keys: config.idempotency_keys,
    })
}

/// The set-up's calls.
struct Api<'a> {
    client: &'a reqwest::Client,
    address: &'a str,
    authorization: &'a str,
}

impl Api<'_> {
    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let resp = self
            .client
            .post(format!("{}{path}", self.address))
            .header("authorization", self.authorization)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = resp.status();
        let text = resp.text().await?;
        if status.as_u16() != 201 {
            bail!("POST {path}: {status}: {text}");
        }
        serde_json::from_str(&text).with_context(|| format!("POST {path}: {text}"))
    }

    /// A customer approved at tier 1, their USD wallet, and its deposit.
    async fn verified_wallet(&self, n: usize) -> anyhow::Result<String> {
        let customer = self
            .post(
                "/v1/customers",
                json!({"first_name": "Bench", "last_name": format!("Customer{n}"),
                       "date_of_birth": "1990-05-17", "country": "DE"}),
            )
            .await?;
        let id = customer["id"].as_str().context("customer id")?;
        let application = self
            .post(
                &format!("/v1/customers/{id}/kyc"),
                json!({"document_type": "passport", "document_number": format!("B{n:08}"),
                       "document_country": "DE"}),
            )
            .await?;
        if application["status"] != "approved" {
            bail!("customer {n} not approved: {application}");
        }
        let wallet = self
            .post(
                "/v1/wallets",
                json!({"customer_id": id, "currency": "USD", "type": "personal"}),
            )
            .await?;
        let wallet = wallet["id"].as_str().context("wallet id")?.to_owned();
        self.post(
            "/v1/deposits",
            json!({"wallet_id": wallet, "amount": DEPOSIT, "currency": "USD"}),
        )
        .await?;
        Ok(wallet)
    }
}

/// Statistics as autovacuum keeps them on a live database.
async fn analyze(url: &str) -> anyhow::Result<()> {
    let mut conn = connect(url).await?;
    conn.batch_execute("ANALYZE").await.context("ANALYZE")
}

async fn count_p2p(url: &str) -> anyhow::Result<i64> {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let mut conn = connect(url).await?;
    let count: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM payment_payments WHERE kind = 'p2p' AND status = 'completed'",
    )
    .get_result(&mut conn)
    .await?;
    Ok(count.n)
}

/// Payments whose answer is stored under their idempotency key (the set-up sends none).
async fn count_stored_answers(url: &str) -> anyhow::Result<i64> {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let mut conn = connect(url).await?;
    let count: Count =
        diesel::sql_query("SELECT count(*) AS n FROM platform_idempotency_keys WHERE status = 201")
            .get_result(&mut conn)
            .await?;
    Ok(count.n)
}

/// What the clients saw.
#[derive(Default)]
struct Stats {
    ok: u64,
    latencies_us: Vec<u64>,
    failures: BTreeMap<String, u64>,
}

impl Stats {
    fn merge(&mut self, other: Stats) {
        self.ok += other.ok;
        self.latencies_us.extend(other.latencies_us);
        for (what, count) in other.failures {
            *self.failures.entry(what).or_default() += count;
        }
    }
}

/// Runs `clients` concurrent clients on the load generator's runtime for `run_for`; the
/// elapsed time the caller measures includes the requests still in flight at the deadline.
async fn drive(
    target: &Arc<Target>,
    clients: usize,
    run_for: Duration,
    phase: u64,
    loadgen: &tokio::runtime::Handle,
) -> anyhow::Result<Stats> {
    let deadline = Instant::now() + run_for;
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let seed = (phase << 32) ^ u64::try_from(i).unwrap_or(0);
            loadgen.spawn(client(target.clone(), seed, deadline))
        })
        .collect();
    let mut total = Stats::default();
    for task in tasks {
        total.merge(task.await.context("a client task died")?);
    }
    Ok(total)
}

async fn client(target: Arc<Target>, seed: u64, deadline: Instant) -> Stats {
    let mut rng = SplitMix64(seed.wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut stats = Stats::default();
    let n = target.wallets.len();
    let mut sent_count: u64 = 0;
    while Instant::now() < deadline {
        sent_count += 1;
        let from = rng.below(n);
        let to = (from + 1 + rng.below(n - 1)) % n;
        let amount = 1 + rng.next() % MAX_AMOUNT_MINOR;
        let body = format!(
            r#"{{"from_wallet_id":"{}","to_wallet_id":"{}","amount":"{}.{:02}","currency":"USD"}}"#,
            target.wallets[from],
            target.wallets[to],
            amount / 100,
            amount % 100
        );
        let started = Instant::now();
        let mut request = target
            .client
            .post(&target.payments_url)
            .header("authorization", &target.authorization)
            .header("content-type", "application/json");
        if target.idempotency_keys {
            request = request.header("idempotency-key", format!("bench-{seed}-{sent_count}"));
        }
        let sent = request.body(body).send().await;
        let answer = match sent {
            Ok(resp) => {
                let status = resp.status().as_u16();
                // Read the whole body, so the connection goes back to the pool.
                match resp.bytes().await {
                    Ok(bytes) => Ok((status, bytes)),
                    Err(e) => Err(format!("reading the answer: {e}")),
                }
            }
            Err(e) => Err(format!("sending: {e}")),
        };
        stats
            .latencies_us
            .push(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
        match answer {
            Ok((201, _)) => stats.ok += 1,
            Ok((status, bytes)) => {
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let code = body["code"].as_str().unwrap_or("?");
                *stats
                    .failures
                    .entry(format!("{status} {code}"))
                    .or_default() += 1;
            }
            Err(what) => {
                *stats.failures.entry(what).or_default() += 1;
                // Do not spin on a dead server.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    stats
}

/// The measured figures.
struct Measured {
    requests: u64,
    payments: u64,
    payments_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    elapsed: Duration,
}

impl Measured {
    fn new(stats: &Stats, elapsed: Duration) -> Measured {
        Measured {
            requests: u64::try_from(stats.latencies_us.len()).unwrap_or(u64::MAX),
            payments: stats.ok,
            payments_per_sec: to_f64(stats.ok) / elapsed.as_secs_f64(),
            p50_ms: percentile_ms(&stats.latencies_us, 50),
            p99_ms: percentile_ms(&stats.latencies_us, 99),
            max_ms: stats
                .latencies_us
                .last()
                .map_or(0.0, |us| to_f64(*us) / 1000.0),
            elapsed,
        }
    }

    fn print(
        &self,
        config: &Config,
        metrics: &MetricsDelta,
        cpu: &CpuSplit,
        activity: &Activity,
        peak_rss_mb: f64,
    ) {
        println!();
        println!(
            "p2p payments: {:.1} payments/s  p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  \
             ({} requests, {} payments in {:.2} s, {} clients)",
            self.payments_per_sec,
            self.p50_ms,
            self.p99_ms,
            self.max_ms,
            self.requests,
            self.payments,
            self.elapsed.as_secs_f64(),
            config.clients,
        );
        println!(
            "goal (>= 2000 payments/s, p99 < 50 ms): {}",
            if self.payments_per_sec >= 2000.0 && self.p99_ms < 50.0 {
                "met"
            } else {
                "NOT met"
            }
        );
        println!();
        println!("where the time goes:");
        metrics.print();
        cpu.print();
        activity.print();
        println!("  peak RSS of the bench process (app + load generator): {peak_rss_mb:.1} MB");
    }
}

// ---------------------------------------------------------------------------------------------
// The app's own metrics (GET /metrics), before and after the measured run.

/// Counters and histograms of one scrape, by metric name with labels.
#[derive(Default)]
struct MetricsSnapshot {
    values: HashMap<String, f64>,
    /// Cumulative bucket counts of `ledger_batch_transfers`, by upper bound.
    batch_buckets: Vec<(f64, f64)>,
}

async fn scrape(client: &reqwest::Client, address: &str) -> anyhow::Result<MetricsSnapshot> {
    let text = client
        .get(format!("{address}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))?;
    let mut snapshot = MetricsSnapshot::default();
    for sample in scrape.samples {
        let mut labels: Vec<String> = sample
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        labels.sort();
        let key = if labels.is_empty() {
            sample.metric.clone()
        } else {
            format!("{}{{{}}}", sample.metric, labels.join(","))
        };
        match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => {
                snapshot.values.insert(key, v);
            }
            prometheus_parse::Value::Histogram(buckets) => {
                if sample.metric == "ledger_batch_transfers" {
                    snapshot.batch_buckets =
                        buckets.iter().map(|b| (b.less_than, b.count)).collect();
                }
            }
            prometheus_parse::Value::Summary(_) => {}
        }
    }
    Ok(snapshot)
}

impl MetricsSnapshot {
    fn get(&self, key: &str) -> f64 {
        self.values.get(key).copied().unwrap_or(0.0)
    }

    fn since(self, before: &MetricsSnapshot) -> MetricsDelta {
        let d = |key: &str| self.get(key) - before.get(key);
        let buckets = self
            .batch_buckets
            .iter()
            .map(|(le, count)| {
                let earlier = before
                    .batch_buckets
                    .iter()
                    .find(|(l, _)| l == le)
                    .map_or(0.0, |(_, c)| *c);
                (*le, count - earlier)
            })
            .collect();
        let route = "method=POST,route=/v1/payments";
        MetricsDelta {
            batches: d("ledger_batch_transfers_count"),
            batch_transfers: d("ledger_batch_transfers_sum"),
            batch_seconds: d("ledger_batch_duration_seconds_sum"),
            batch_buckets: buckets,
            server_requests: d(&format!("http_request_duration_seconds_count{{{route}}}")),
            server_seconds: d(&format!("http_request_duration_seconds_sum{{{route}}}")),
            queue_depth: self.get("ledger_queue_depth"),
        }
    }
}

struct MetricsDelta {
    batches: f64,
    batch_transfers: f64,
    batch_seconds: f64,
    batch_buckets: Vec<(f64, f64)>,
    server_requests: f64,
    server_seconds: f64,
    queue_depth: f64,
}

impl MetricsDelta {
    fn mean_batch(&self) -> f64 {
        if self.batches > 0.0 {
            self.batch_transfers / self.batches
        } else {
            0.0
        }
    }

    fn ms_per_batch(&self) -> f64 {
        if self.batches > 0.0 {
            self.batch_seconds * 1000.0 / self.batches
        } else {
            0.0
        }
    }

    fn server_mean_ms(&self) -> f64 {
        if self.server_requests > 0.0 {
            self.server_seconds * 1000.0 / self.server_requests
        } else {
            0.0
        }
    }

    fn print(&self) {
        println!(
            "  posting engine: {:.0} batches, {:.1} transfers/batch, {:.2} ms/batch \
             (run and commit, attached writes included); queue depth at the end {:.0}",
            self.batches,
            self.mean_batch(),
            self.ms_per_batch(),
            self.queue_depth
        );
        let mut previous = 0.0;
        let mut shares = Vec::new();
        for (le, cumulative) in &self.batch_buckets {
            let n = cumulative - previous;
            previous = *cumulative;
            if n > 0.0 && self.batches > 0.0 {
                shares.push(format!("<={le}: {:.0}%", n * 100.0 / self.batches));
            }
        }
        println!("    batch sizes (transfers): {}", shares.join(", "));
        println!(
            "  server-side POST /v1/payments: {:.0} requests, mean {:.2} ms from request to \
             response (the rest of the client's latency is the client, the socket and the \
             accept queue)",
            self.server_requests,
            self.server_mean_ms()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// CPU: this process's threads by role, PostgreSQL's processes, Redis, and the whole machine.

#[derive(Default)]
struct CpuSample {
    /// Busy ticks of the whole machine (/proc/stat), those in interrupts, and its CPU count.
    machine_busy: u64,
    machine_irq: u64,
    cpus: u64,
    /// Ticks per thread of this process, by (tid, role).
    threads: HashMap<(String, &'static str), u64>,
    /// Ticks per process of interest, by (pid, role).
    processes: HashMap<(String, &'static str), u64>,
}

const ROLES: [&str; 9] = [
    "load generator (reqwest clients)",
    "app: HTTP workers (actix: auth, rate limits, wallet lookups, JSON)",
    "app: tokio runtime (posting engine, attached writes, workers)",
    "postgres: this database's backends",
    "postgres: its own processes and other databases",
    "redis",
    "other processes on the machine",
    "kernel: interrupts and softirq (loopback TCP)",
    "unattributed (processes that exited, rounding)",
];

/// `(comm, utime + stime)` of a /proc/.../stat file.
fn stat_ticks(path: &str) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = text.get(close + 2..)?.split_whitespace().collect();
    // After the comm: state is field 3 of the file, utime 14 and stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

impl CpuSample {
    fn take(db_name: &str) -> CpuSample {
        let mut sample = CpuSample::default();
        if let Ok(stat) = std::fs::read_to_string("/proc/stat") {
            for line in stat.lines() {
                let mut parts = line.split_whitespace();
                match parts.next() {
                    Some("cpu") => {
                        let v: Vec<u64> = parts.filter_map(|p| p.parse().ok()).collect();
                        // user nice system idle iowait irq softirq steal
                        sample.machine_busy =
                            [0, 1, 2, 5, 6, 7].iter().filter_map(|i| v.get(*i)).sum();
                    }
                    Some(name) if name.starts_with("cpu") => sample.cpus += 1,
                    _ => {}
                }
            }
        }
        if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
            for task in tasks.flatten() {
                let tid = task.file_name().to_string_lossy().into_owned();
                if let Some((comm, ticks)) = stat_ticks(&format!("/proc/self/task/{tid}/stat")) {
                    let role = if comm.starts_with("loadgen") {
                        ROLES[0]
                    } else if comm.starts_with("actix") {
                        ROLES[1]
                    } else {
                        ROLES[2]
                    };
                    sample.threads.insert((tid, role), ticks);
                }
            }
        }
        let own_pid = std::process::id().to_string();
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for proc in procs.flatten() {
                let pid = proc.file_name().to_string_lossy().into_owned();
                if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == own_pid {
                    continue;
                }
                let Some((comm, ticks)) = stat_ticks(&format!("/proc/{pid}/stat")) else {
                    continue;
                };
                let role = match comm.as_str() {
                    "postgres" => {
                        let title =
                            std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                        if String::from_utf8_lossy(&title).contains(db_name) {
                            ROLES[3]
                        } else {
                            ROLES[4]
                        }
                    }
                    "redis-server" => ROLES[5],
                    _ => ROLES[6],
                };
                sample.processes.insert((pid, role), ticks);
            }
        }
        sample
    }

    fn since(&self, before: &CpuSample, elapsed: Duration) -> CpuSplit {
        let mut by_role: BTreeMap<&'static str, u64> = BTreeMap::new();
        for (key, ticks) in self.threads.iter().chain(&self.processes) {
            let earlier = before
                .threads
                .get(key)
                .or_else(|| before.processes.get(key))
                .copied()
                .unwrap_or(0);
            *by_role.entry(key.1).or_default() += ticks.saturating_sub(earlier);
        }
        let busy = self.machine_busy.saturating_sub(before.machine_busy);
        let irq = self.machine_irq.saturating_sub(before.machine_irq);
        by_role.insert(ROLES[7], irq);
        let known: u64 = by_role.values().sum();
        by_role.insert(ROLES[8], busy.saturating_sub(known));
        let secs = elapsed.as_secs_f64();
        CpuSplit {
            cores: ROLES
                .iter()
                .map(|role| {
                    let ticks = by_role.get(role).copied().unwrap_or(0);
                    (*role, to_f64(ticks) / TICKS_PER_SEC / secs)
                })
                .collect(),
            busy_cores: to_f64(busy) / TICKS_PER_SEC / secs,
            cpus: self.cpus,
        }
    }
}

/// Cores busy on average during the measured run, by role.
struct CpuSplit {
    cores: Vec<(&'static str, f64)>,
    busy_cores: f64,
    cpus: u64,
}

impl CpuSplit {
    fn print(&self) {
        println!(
            "  CPU: {:.2} of {} cores busy on average",
            self.busy_cores, self.cpus
        );
        for (role, cores) in &self.cores {
            println!(
                "    {cores:>5.2} cores {:>5.1}%  {role}",
                if self.busy_cores > 0.0 {
                    cores * 100.0 / self.busy_cores
                } else {
                    0.0
                }
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// What PostgreSQL's backends of this database were doing, sampled during the measured run.

#[derive(QueryableByName)]
struct ActivityRow {
    #[diesel(sql_type = Text)]
    what: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(Default)]
struct Activity {
    samples: u64,
    /// Backends seen in each state, summed over the samples.
    seen: BTreeMap<String, i64>,
}

async fn sample_activity(url: String, running: Arc<AtomicBool>) -> anyhow::Result<Activity> {
    let mut conn = connect(&url).await?;
    let mut activity = Activity::default();
    while AtomicBool::load(&running, Ordering::Relaxed) {
        let rows: Vec<ActivityRow> = diesel::sql_query(
            "SELECT coalesce(state, '?') || coalesce(': ' || wait_event_type || '/' || wait_event, \
                    CASE WHEN state = 'active' THEN ': on CPU (no wait event)' ELSE '' END) AS what, \
                    count(*) AS n \
             FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() \
               AND backend_type = 'client backend' \
             GROUP BY 1",
        )
        .load(&mut conn)
        .await
        .context("sampling pg_stat_activity")?;
        activity.samples += 1;
        for row in rows {
            *activity.seen.entry(row.what).or_default() += row.n;
        }
        tokio::time::sleep(ACTIVITY_SAMPLE_EVERY).await;
    }
    Ok(activity)
}

impl Activity {
    fn print(&self) {
        if self.samples == 0 {
            return;
        }
        let mut seen: Vec<(&String, &i64)> = self.seen.iter().collect();
        seen.sort_by(|a, b| b.1.cmp(a.1));
        println!(
            "  PostgreSQL backends of this database, average over {} samples of pg_stat_activity:",
            self.samples
        );
        for (what, n) in seen.iter().take(10) {
            let mean = f64::from(i32::try_from(**n).unwrap_or(i32::MAX)) / to_f64(self.samples);
            println!("    {mean:>6.2}  {what}");
        }
    }
}

// ---------------------------------------------------------------------------------------------

fn write_json(
    config: &Config,
    m: &Measured,
    metrics: &MetricsDelta,
    cpu: &CpuSplit,
    peak_rss_mb: f64,
) -> anyhow::Result<PathBuf> {
    let cpu_cores: serde_json::Map<String, Value> = cpu
        .cores
        .iter()
        .map(|(role, cores)| ((*role).to_owned(), json!(round(*cores, 2))))
        .collect();
    let doc = json!({
        "p2p": {
            "payments_per_sec": round(m.payments_per_sec, 1),
            "p50_ms": round(m.p50_ms, 3),
            "p99_ms": round(m.p99_ms, 3),
            "max_ms": round(m.max_ms, 3),
            "requests": m.requests,
            "clients": config.clients,
            "wallets": config.wallets,
            "seconds": round(m.elapsed.as_secs_f64(), 2),
            "batches": round(metrics.batches, 0),
            "transfers_per_batch": round(metrics.mean_batch(), 1),
            "ms_per_batch": round(metrics.ms_per_batch(), 3),
            "server_mean_ms": round(metrics.server_mean_ms(), 3),
            "cpu_busy_cores": round(cpu.busy_cores, 2),
            "cpu_cores": cpu_cores,
        },
        "peak_rss_mb": round(peak_rss_mb, 1),
    });
    let dir = target_dir().join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("payments.json");
    let text = serde_json::to_string_pretty(&doc)?;
    std::fs::write(&path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Cargo's target directory: `CARGO_TARGET_DIR` if set (relative to the package), else
/// `target/` beside Cargo.toml.
fn target_dir() -> PathBuf {
    let manifest = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    );
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => manifest.join(dir),
        _ => manifest.join("target"),
    }
}

/// A memory figure of this process (`VmHWM:` the peak resident set, `VmRSS:` the current
/// one), in MB.
fn status_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u32>().ok())
        })
        .map_or(0.0, |kb| f64::from(kb) / 1024.0)
}

/// Nearest-rank percentile of sorted microseconds, in milliseconds.
fn percentile_ms(sorted_us: &[u64], pct: usize) -> f64 {
    let rank = (sorted_us.len() * pct).div_ceil(100).max(1);
    sorted_us
        .get(rank - 1)
        .map_or(0.0, |us| to_f64(*us) / 1000.0)
}

fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// `u64` to `f64` without `as` (exact below 2^53).
fn to_f64(n: u64) -> f64 {
    let high = u32::try_from(n >> 32).unwrap_or(u32::MAX);
    let low = u32::try_from(n & 0xffff_ffff).unwrap_or(u32::MAX);
    f64::from(high) * 4_294_967_296.0 + f64::from(low)
}

/// splitmix64: small, fast, and good enough to pick wallets.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        let n = u64::try_from(n).unwrap_or(u64::MAX).max(1);
        usize::try_from(self.next() % n).unwrap_or(0)
    }
}
