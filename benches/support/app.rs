//! What the benchmarks that drive the real application over HTTP share (`payments`, `cards`):
//! the app as `flowlet serve` builds it on a scratch database, its partners and verified
//! customers set up through the API, concurrent clients on a load generator runtime of their
//! own, the measured window's view of where the time went (the app's /metrics, CPU by
//! component, PostgreSQL's backends), and the verification of the books afterwards.
//!
//! Include it beside `support` (it uses `crate::support`):
//! `#[path = "support/mod.rs"] mod support;` and `#[path = "support/app.rs"] mod app;`.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use anyhow::{Context, bail};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use flowlet::app::Application;
use flowlet::auth::{Caller, RequestMeta};
use flowlet::ledger::Violation;
use flowlet::platform::config::Sources;
use flowlet::platform::db::{Db, PoolOptions};
use flowlet::platform::shared_state::SharedState;
use flowlet::platform::workers::Workers;
use flowlet::settings::Settings;
use flowlet::wiring::Services;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{connect, env_or, percentile_ms, round, status_mb, to_f64};

const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// The sanctions list: one entry nobody matches (screening runs, and approves).
const SANCTIONS_CSV: &str = "name,aliases,date_of_birth,country\nNobody Listed,,1900-01-01,\n";
/// Rate limits stay on, raised through configuration (API.md) so they never refuse.
const RATE_LIMIT: &str = "1000000000";
/// Concurrent requests of the set-up.
pub const SET_UP_CONCURRENCY: usize = 32;
/// Linux reports CPU times in USER_HZ, which is 100 on every architecture it runs on.
const TICKS_PER_SEC: f64 = 100.0;
const ACTIVITY_SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// The configuration every HTTP bench reads from the environment:
/// - `FLOWLET_BENCH_DATABASE_URL`: a maintenance database URL (default
///   postgres://postgres@127.0.0.1:5432/postgres); a fresh `flowlet_bench_<uuid>` database is
///   created on that server, migrated by the app at start, and dropped at the end;
/// - `FLOWLET_BENCH_DATABASE_SET`: PostgreSQL parameters of that database (see
///   `support::in_scratch_database`), e.g. `log_min_duration_statement = 0`;
/// - `FLOWLET_BENCH_REDIS_URL` (redis://127.0.0.1:6379; empty: in-process limits);
/// - `FLOWLET_BENCH_SECS` (10) after `FLOWLET_BENCH_WARMUP_SECS` (2);
/// - `FLOWLET_BENCH_CLIENTS` (64): concurrent clients, each with one request at a time;
/// - `FLOWLET_BENCH_LOADGEN_THREADS` (1): threads of the load generator's own runtime;
/// - `FLOWLET_BENCH_ANALYZE` (1): ANALYZE after set-up and warm-up, as autovacuum would;
/// - any `FLOWLET__...` variable configures the app as it would `flowlet serve`.
#[derive(Debug, Clone)]
pub struct Common {
    pub server_url: String,
    pub redis_url: Option<String>,
    pub run_for: Duration,
    pub warmup: Duration,
    pub clients: usize,
    pub loadgen_threads: usize,
    pub analyze: bool,
    /// `FLOWLET__...` variables of this process, applied last.
    app_vars: Vec<(String, String)>,
}

impl Common {
    pub fn from_env() -> anyhow::Result<Common> {
        let clients: usize = env_or("FLOWLET_BENCH_CLIENTS", 64)?;
        let loadgen_threads: usize = env_or("FLOWLET_BENCH_LOADGEN_THREADS", 1)?;
        if clients == 0 || loadgen_threads == 0 {
            bail!("need at least 1 client and 1 load generator thread");
        }
        let redis_url = match std::env::var("FLOWLET_BENCH_REDIS_URL") {
            Ok(url) if url.trim().is_empty() => None,
            Ok(url) => Some(url),
            Err(_) => Some(DEFAULT_REDIS_URL.to_owned()),
        };
        Ok(Common {
            server_url: crate::support::server_url(),
            redis_url,
            run_for: Duration::from_secs_f64(env_or("FLOWLET_BENCH_SECS", 10.0)?),
            warmup: Duration::from_secs_f64(env_or("FLOWLET_BENCH_WARMUP_SECS", 2.0)?),
            clients,
            loadgen_threads,
            analyze: env_or::<u8>("FLOWLET_BENCH_ANALYZE", 1)? != 0,
            app_vars: std::env::vars()
                .filter(|(k, _)| k.starts_with("FLOWLET__"))
                .collect(),
        })
    }
}

/// Where a bench runs: its scratch database and the load generator's runtime.
pub struct Scratch {
    pub url: String,
    pub db_name: String,
    pub loadgen: tokio::runtime::Handle,
}

/// Runs `bench` in a scratch database. The app (its engine, workers and the set-up) runs on
/// one runtime; actix starts its own HTTP worker threads; the load generator gets a runtime
/// of its own, so CPU can be told apart.
pub fn run<F, Fut>(label: &str, common: &Common, bench: F) -> anyhow::Result<()>
where
    F: FnOnce(Scratch) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("flowlet-app")
        .enable_all()
        .build()
        .context("building the app's tokio runtime")?;
    let loadgen = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(common.loadgen_threads)
        .thread_name("loadgen")
        .enable_all()
        .build()
        .context("building the load generator's tokio runtime")?;
    let handle = loadgen.handle().clone();
    let result = runtime.block_on(crate::support::in_scratch_database(
        label,
        &common.server_url,
        |url, db_name| {
            bench(Scratch {
                url,
                db_name,
                loadgen: handle,
            })
        },
    ));
    loadgen.shutdown_timeout(Duration::from_secs(5));
    result
}

/// The app as `flowlet serve` builds it, serving on a free port.
pub struct RunningApp {
    pub settings: Settings,
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    /// Keep-alive, no Nagle, enough idle connections for every client.
    pub client: reqwest::Client,
    handle: ServerHandle,
    serving: tokio::task::JoinHandle<anyhow::Result<()>>,
    _mail_dir: tempfile::TempDir,
}

impl RunningApp {
    /// Starts the app on `url` with the settings `flowlet serve` reads, the benchmarks' (rate
    /// limits raised, Redis, a mail directory), `bench_vars`, and the `FLOWLET__...` variables
    /// of the environment last.
    pub async fn start(
        common: &Common,
        url: &str,
        bench_vars: Vec<(String, String)>,
    ) -> anyhow::Result<RunningApp> {
        flowlet::platform::tls::install_crypto_provider();
        let mail_dir = tempfile::tempdir().context("a mail directory")?;
        let mut vars: Vec<(String, String)> = vec![
            ("FLOWLET__SERVER__BIND".into(), "127.0.0.1:0".into()),
            ("FLOWLET__DATABASE__URL".into(), url.into()),
            (
                "FLOWLET__SMTP__MAIL_DIR".into(),
                mail_dir.path().display().to_string(),
            ),
        ];
        for limit in ["KEY_PER_HOUR", "PARTNER_PER_HOUR", "IP_PER_MINUTE"] {
            vars.push((format!("FLOWLET__RATE_LIMIT__{limit}"), RATE_LIMIT.into()));
        }
        if let Some(redis) = &common.redis_url {
            vars.push(("FLOWLET__REDIS__URL".into(), redis.clone()));
            vars.push((
                "FLOWLET__REDIS__KEY_PREFIX".into(),
                format!("bench:{}:", Uuid::now_v7().simple()),
            ));
        }
        vars.extend(bench_vars);
        vars.extend(common.app_vars.iter().cloned());
        let settings =
            Settings::load_from(&Sources::with_vars(vars)).context("the app's settings")?;
        let app = Application::build_with(settings.clone(), None)
            .await
            .context("starting the app")?;
        let address = format!("http://127.0.0.1:{}", app.port());
        let handle = app.server_handle();
        let serving = tokio::spawn(app.run_until_stopped());
        let client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(common.clients.max(SET_UP_CONCURRENCY))
            .build()?;
        Ok(RunningApp {
            settings,
            address,
            client,
            handle,
            serving,
            _mail_dir: mail_dir,
        })
    }

    /// The app's line: how it is configured, and the load (`load` says the bench's own).
    pub fn describe(&self, common: &Common, load: &str) -> String {
        let settings = &self.settings;
        format!(
            "app: {}, HTTP workers {}, database pool {}, redis {}, ledger batch_max {} linger {} us \
             pipeline {}; {} clients ({} load generator thread(s)), {load}; {} s after {} s of \
             warm-up",
            self.address,
            settings
                .server
                .workers
                .map_or_else(|| "one per core".to_owned(), |w| w.to_string()),
            settings.database.pool_size,
            if common.redis_url.is_some() {
                "on"
            } else {
                "off (in-process)"
            },
            settings.ledger.batch_max_transfers,
            settings.ledger.batch_linger.as_micros(),
            settings.ledger.pipeline_depth,
            common.clients,
            common.loadgen_threads,
            common.run_for.as_secs_f64(),
            common.warmup.as_secs_f64(),
        )
    }

    /// `count` partners with an API key each (their `Authorization` header values), made as
    /// an operator does, and the sanctions list the customers are screened against.
    pub async fn partners(&self, url: &str, count: usize) -> anyhow::Result<Vec<String>> {
        let (services, workers) = services(&self.settings, url)?;
        let made = async {
            let operator = Caller::Operator("bench".into());
            let meta = RequestMeta::default();
            let mut keys = Vec::with_capacity(count);
            for n in 0..count {
                let partner = services
                    .auth
                    .create_partner(
                        &operator,
                        &format!("Bench partner {n}"),
                        &format!("bench{n}@partner.example"),
                        &meta,
                    )
                    .await?;
                let key = services
                    .auth
                    .create_api_key(&operator, Some(partner.id), "bench", None, None, &meta)
                    .await?;
                keys.push(format!("Bearer {}", key.secret.expose_secret()));
            }
            services
                .kyc
                .load_list("bench", SANCTIONS_CSV.as_bytes())
                .await?;
            anyhow::Ok(keys)
        }
        .await;
        workers.stop(Duration::from_secs(10)).await;
        services.db.close();
        made
    }

    /// The calls of the set-up, as the partner `authorization`.
    pub fn api<'a>(&'a self, authorization: &'a str) -> Api<'a> {
        Api {
            client: &self.client,
            address: &self.address,
            authorization,
        }
    }

    /// Stops the app once it has been idle for 2 s, whatever `outcome` (what ran on it) was;
    /// returns its settings, the outcome, and the resident set the app kept by then, in MB.
    /// glibc keeps freed memory mapped by default; the chart's MALLOC_ARENA_MAX /
    /// MALLOC_TRIM_THRESHOLD_ make it return it (run the bench with and without them to
    /// compare).
    pub async fn stop_after<R>(
        self,
        outcome: anyhow::Result<R>,
    ) -> anyhow::Result<(Settings, R, f64)> {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle_rss_mb = status_mb("VmRSS:");
        self.handle.stop(true).await;
        let stopped = self.serving.await;
        let outcome = outcome?;
        stopped
            .context("the app's task died")?
            .context("the app stopped with an error")?;
        Ok((self.settings, outcome, idle_rss_mb))
    }
}

/// Every service, wired as `flowlet serve` wires them, on a small pool of `url` (its
/// posting engine runs in the returned workers: stop them when done).
fn services(settings: &Settings, url: &str) -> anyhow::Result<(Services, Workers)> {
    let db = Db::connect(
        url,
        &PoolOptions {
            max_size: 2,
            wait_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            tx_max_retries: 3,
            ca_file: None,
        },
    )?;
    let mut workers = Workers::new();
    let services = Services::build(
        settings,
        &db,
        &SharedState::in_process(),
        &mut workers,
        None,
    )?;
    Ok((services, workers))
}

/// What verifying the books found.
pub struct Verified {
    pub violations: Vec<Violation>,
    pub took: Duration,
}

impl Verified {
    /// Fails, listing them, when any invariant is broken.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.violations.is_empty() {
            return Ok(());
        }
        for v in &self.violations {
            eprintln!("VIOLATION {}: {} ({})", v.check, v.subject, v.detail);
        }
        bail!(
            "the books' invariants are broken: {} violations",
            self.violations.len()
        )
    }
}

/// Verifies the books as `flowlet admin ledger verify` does: every ledger invariant, then
/// every payment against its transfers.
pub async fn verify_books(settings: &Settings, url: &str) -> anyhow::Result<Verified> {
    let started = Instant::now();
    let (services, workers) = services(settings, url)?;
    let report = services.verify_books(true).await;
    workers.stop(Duration::from_secs(10)).await;
    services.db.close();
    let report = report?.context("the verification lock")?;
    Ok(Verified {
        violations: report.violations,
        took: started.elapsed(),
    })
}

/// The set-up's calls, as one partner.
pub struct Api<'a> {
    client: &'a reqwest::Client,
    address: &'a str,
    authorization: &'a str,
}

impl Api<'_> {
    /// POSTs `body` to `path`; anything but 201 is an error.
    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
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

    /// Customer `n`, approved at tier 1 through KYC (screened against the sanctions list).
    pub async fn verified_customer(&self, n: usize) -> anyhow::Result<String> {
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
        Ok(id.to_owned())
    }

    /// A USD wallet of `customer`, funded with a deposit of `amount`.
    pub async fn funded_wallet(&self, customer: &str, amount: &str) -> anyhow::Result<String> {
        let wallet = self
            .post(
                "/v1/wallets",
                json!({"customer_id": customer, "currency": "USD", "type": "personal"}),
            )
            .await?;
        let wallet = wallet["id"].as_str().context("wallet id")?.to_owned();
        self.post(
            "/v1/deposits",
            json!({"wallet_id": wallet, "amount": amount, "currency": "USD"}),
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

/// The statement `sql`, which selects one `count(*) AS n`.
pub async fn count(url: &str, sql: &str) -> anyhow::Result<i64> {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let mut conn = connect(url).await?;
    let count: Count = diesel::sql_query(sql)
        .get_result(&mut conn)
        .await
        .with_context(|| format!("counting: {sql}"))?;
    Ok(count.n)
}

// ---------------------------------------------------------------------------------------------
// The clients.

/// What the clients of one run saw, added up across them.
pub trait Merge {
    fn merge(&mut self, other: Self);
}

/// One kind of request, as the clients saw it: every latency, and what did not answer as
/// expected.
#[derive(Default)]
pub struct Timed {
    pub latencies_us: Vec<u64>,
    /// By `"<status> <code>"` or the transport's error.
    pub failures: BTreeMap<String, u64>,
}

impl Timed {
    /// Sends `request` and times it until its whole answer is read (so the connection goes
    /// back to the pool); the body when the status is `expected`, else the failure is counted.
    pub async fn send(
        &mut self,
        request: reqwest::RequestBuilder,
        expected: u16,
    ) -> Option<Vec<u8>> {
        let started = Instant::now();
        let answer = match request.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                match resp.bytes().await {
                    Ok(bytes) => Ok((status, bytes)),
                    Err(e) => Err(format!("reading the answer: {e}")),
                }
            }
            Err(e) => Err(format!("sending: {e}")),
        };
        self.latencies_us
            .push(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
        match answer {
            Ok((status, bytes)) if status == expected => Some(bytes.to_vec()),
            Ok((status, bytes)) => {
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let code = body["code"].as_str().unwrap_or("?");
                self.fail(format!("{status} {code}"));
                None
            }
            Err(what) => {
                self.fail(what);
                // Do not spin on a dead server.
                tokio::time::sleep(Duration::from_millis(1)).await;
                None
            }
        }
    }

    pub fn fail(&mut self, what: String) {
        *self.failures.entry(what).or_default() += 1;
    }

    /// Counts the warm-up's failures with these (they invalidate the run as much).
    pub fn add_warmup_failures(&mut self, warm: &Timed) {
        for (what, count) in &warm.failures {
            *self.failures.entry(format!("warm-up: {what}")).or_default() += count;
        }
    }

    /// Prints every failure (`what` names the request); whether there was any.
    pub fn report_failures(&self, what: &str) -> bool {
        for (failure, count) in &self.failures {
            eprintln!("FAILED: {count} x {what}: {failure}");
        }
        !self.failures.is_empty()
    }

    /// The latency figures.
    pub fn latency(&mut self) -> Latency {
        self.latencies_us.sort_unstable();
        let sorted = &self.latencies_us;
        let requests = u64::try_from(sorted.len()).unwrap_or(u64::MAX);
        Latency {
            requests,
            p50_ms: percentile_ms(sorted, 50),
            p90_ms: percentile_ms(sorted, 90),
            p99_ms: percentile_ms(sorted, 99),
            max_ms: sorted.last().map_or(0.0, |us| to_f64(*us) / 1000.0),
        }
    }
}

impl Merge for Timed {
    fn merge(&mut self, other: Timed) {
        self.latencies_us.extend(other.latencies_us);
        for (what, count) in other.failures {
            *self.failures.entry(what).or_default() += count;
        }
    }
}

/// How many requests of one kind the clients sent, and how long they took.
pub struct Latency {
    pub requests: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// What the clients saw in the warm-up and in the measured window, and how the window looked.
pub struct Run<S> {
    pub warm: S,
    pub measured: S,
    pub observed: Observed,
}

/// ANALYZE after the set-up (when configured), the warm-up, ANALYZE again, then the measured
/// window, watched by an [`Observer`]: `client(target, seed, deadline)` is one client's loop.
pub async fn measure<T, S, F, Fut>(
    app: &RunningApp,
    scratch: &Scratch,
    common: &Common,
    target: &Arc<T>,
    client: F,
) -> anyhow::Result<Run<S>>
where
    S: Merge + Default + Send + 'static,
    F: Fn(Arc<T>, u64, Instant) -> Fut,
    Fut: Future<Output = S> + Send + 'static,
{
    let client = |seed, deadline| client(target.clone(), seed, deadline);
    if common.analyze {
        analyze(&scratch.url).await?;
    }
    let mut warm = S::default();
    if !common.warmup.is_zero() {
        warm = drive(common.clients, common.warmup, 1, &scratch.loadgen, &client).await?;
        if common.analyze {
            analyze(&scratch.url).await?;
        }
    }
    let observer = Observer::start(app, scratch).await?;
    let measured = drive(common.clients, common.run_for, 2, &scratch.loadgen, &client).await?;
    let observed = observer.finish(app).await?;
    Ok(Run {
        warm,
        measured,
        observed,
    })
}

/// Runs `clients` concurrent clients on the load generator's runtime until `run_for` has
/// passed; each gets its own seed (from `phase` and its number) and the deadline. The
/// elapsed time the caller measures includes the requests still in flight at the deadline.
async fn drive<S, F, Fut>(
    clients: usize,
    run_for: Duration,
    phase: u64,
    loadgen: &tokio::runtime::Handle,
    client: &F,
) -> anyhow::Result<S>
where
    S: Merge + Default + Send + 'static,
    F: Fn(u64, Instant) -> Fut,
    Fut: Future<Output = S> + Send + 'static,
{
    let deadline = Instant::now() + run_for;
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let seed = (phase << 32) ^ u64::try_from(i).unwrap_or(0);
            loadgen.spawn(client(seed, deadline))
        })
        .collect();
    let mut total = S::default();
    for task in tasks {
        total.merge(task.await.context("a client task died")?);
    }
    Ok(total)
}

// ---------------------------------------------------------------------------------------------
// The measured window: the app's metrics, CPU by component, PostgreSQL's backends.

/// Watches the measured window from its start.
struct Observer {
    metrics_before: MetricsSnapshot,
    tables_before: TableCounters,
    cpu_before: CpuSample,
    sampling: Arc<AtomicBool>,
    activity: tokio::task::JoinHandle<anyhow::Result<Activity>>,
    db_name: String,
    url: String,
    started: Instant,
}

/// What the measured window looked like from the app and the machine.
pub struct Observed {
    pub elapsed: Duration,
    pub metrics: MetricsDelta,
    pub tables: TableCounters,
    pub cpu: CpuSplit,
    pub activity: Activity,
}

impl Observer {
    async fn start(app: &RunningApp, scratch: &Scratch) -> anyhow::Result<Observer> {
        let metrics_before = scrape(&app.client, &app.address).await?;
        let tables_before = TableCounters::read(&scratch.url).await?;
        let cpu_before = CpuSample::take(&scratch.db_name);
        let sampling = Arc::new(AtomicBool::new(true));
        let activity = tokio::spawn(sample_activity(scratch.url.clone(), sampling.clone()));
        Ok(Observer {
            metrics_before,
            tables_before,
            cpu_before,
            sampling,
            activity,
            db_name: scratch.db_name.clone(),
            url: scratch.url.clone(),
            started: Instant::now(),
        })
    }

    async fn finish(self, app: &RunningApp) -> anyhow::Result<Observed> {
        let elapsed = self.started.elapsed();
        let cpu = CpuSample::take(&self.db_name).since(&self.cpu_before, elapsed);
        self.sampling.store(false, Ordering::Relaxed);
        let activity = self.activity.await.context("the activity sampler died")??;
        let metrics = scrape(&app.client, &app.address)
            .await?
            .since(&self.metrics_before);
        let tables = TableCounters::read(&self.url)
            .await?
            .since(&self.tables_before);
        Ok(Observed {
            elapsed,
            metrics,
            tables,
            cpu,
            activity,
        })
    }
}

impl Observed {
    /// Where the time went: the posting engine's batches, the server's own view of the
    /// `routes` (method, route template), PostgreSQL's work per request of the `requests`
    /// the clients sent, CPU by component and PostgreSQL's backends.
    pub fn print(&self, routes: &[(&str, &str)], requests: u64, peak_rss_mb: f64) {
        self.metrics.print(routes);
        self.tables.print(requests);
        self.cpu.print();
        self.activity.print();
        println!("  peak RSS of the bench process (app + load generator): {peak_rss_mb:.1} MB");
    }
}

/// The resident set the app kept once idle, and the allocator settings it ran with.
pub fn print_idle_rss(idle_rss_mb: f64) {
    let malloc_env = |name: &str| std::env::var(name).unwrap_or_else(|_| "unset".into());
    println!(
        "  RSS 2 s after the load (app idle): {idle_rss_mb:.1} MB \
         (MALLOC_ARENA_MAX={}, MALLOC_TRIM_THRESHOLD_={})",
        malloc_env("MALLOC_ARENA_MAX"),
        malloc_env("MALLOC_TRIM_THRESHOLD_")
    );
}

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
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(braces_out(l))))?;
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

/// `line` with the braces inside its quoted label values (route templates such as
/// `/v1/x/{id}`) turned into angle brackets: prometheus-parse ends the labels at the first `}`.
fn braces_out(line: &str) -> String {
    let mut quoted = false;
    line.chars()
        .map(|c| match c {
            '"' => {
                quoted = !quoted;
                c
            }
            '{' if quoted => '<',
            '}' if quoted => '>',
            _ => c,
        })
        .collect()
}

impl MetricsSnapshot {
    fn since(self, before: &MetricsSnapshot) -> MetricsDelta {
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
        let queue_depth = self
            .values
            .get("ledger_queue_depth")
            .copied()
            .unwrap_or(0.0);
        let values = self
            .values
            .into_iter()
            .map(|(key, value)| {
                let earlier = before.values.get(&key).copied().unwrap_or(0.0);
                (key, value - earlier)
            })
            .collect();
        MetricsDelta {
            values,
            batch_buckets: buckets,
            queue_depth,
        }
    }
}

/// How the app's counters moved over the measured window.
pub struct MetricsDelta {
    /// Every counter and gauge, by name with its labels sorted (`name{a=x,b=y}`), less its
    /// value before.
    values: HashMap<String, f64>,
    batch_buckets: Vec<(f64, f64)>,
    queue_depth: f64,
}

impl MetricsDelta {
    /// How much `key` (`name` or `name{labels sorted}`) moved; 0 when the app has no such.
    pub fn get(&self, key: &str) -> f64 {
        self.values.get(key).copied().unwrap_or(0.0)
    }

    pub fn batches(&self) -> f64 {
        self.get("ledger_batch_transfers_count")
    }

    pub fn mean_batch(&self) -> f64 {
        ratio(self.get("ledger_batch_transfers_sum"), self.batches())
    }

    pub fn ms_per_batch(&self) -> f64 {
        ratio(
            self.get("ledger_batch_duration_seconds_sum") * 1000.0,
            self.batches(),
        )
    }

    /// The server's count of `method route` requests and its mean time from request to
    /// response, in ms.
    pub fn server(&self, method: &str, route: &str) -> (f64, f64) {
        let labels = braces_out(&format!("method=\"{method}\",route=\"{route}\"")).replace('"', "");
        let requests = self.get(&format!("http_request_duration_seconds_count{{{labels}}}"));
        let seconds = self.get(&format!("http_request_duration_seconds_sum{{{labels}}}"));
        (requests, ratio(seconds * 1000.0, requests))
    }

    fn print(&self, routes: &[(&str, &str)]) {
        println!(
            "  posting engine: {:.0} batches, {:.1} transfers/batch, {:.2} ms/batch \
             (run and commit, attached writes included); queue depth at the end {:.0}",
            self.batches(),
            self.mean_batch(),
            self.ms_per_batch(),
            self.queue_depth
        );
        let mut previous = 0.0;
        let mut shares = Vec::new();
        for (le, cumulative) in &self.batch_buckets {
            let n = cumulative - previous;
            previous = *cumulative;
            if n > 0.0 && self.batches() > 0.0 {
                shares.push(format!("<={le}: {:.0}%", n * 100.0 / self.batches()));
            }
        }
        println!("    batch sizes (transfers): {}", shares.join(", "));
        for (method, route) in routes {
            let (requests, mean_ms) = self.server(method, route);
            println!(
                "  server-side {method} {route}: {requests:.0} requests, mean {mean_ms:.2} ms from \
                 request to response (the rest of the client's latency is the client, the \
                 socket and the accept queue)",
            );
        }
    }
}

/// `a / b`, 0 when `b` is.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL's own counters of this database: transactions, and scans and row writes by table.

/// `pg_stat_database` and `pg_stat_user_tables` of this database, by counter name. Backends
/// report them about once a second, so a window's figures are good to a second's worth.
pub struct TableCounters(BTreeMap<String, i64>);

const TRANSACTIONS: &str = "transactions";
const ROLLBACKS: &str = "rollbacks";
const SCANS: &str = "scans ";
const WRITES: &str = "rows written ";

impl TableCounters {
    async fn read(url: &str) -> anyhow::Result<TableCounters> {
        let mut conn = connect(url).await?;
        let rows: Vec<ActivityRow> = diesel::sql_query(format!(
            "SELECT '{TRANSACTIONS}' AS what, (xact_commit + xact_rollback)::bigint AS n \
             FROM pg_stat_database WHERE datname = current_database() \
             UNION ALL \
             SELECT '{ROLLBACKS}', xact_rollback FROM pg_stat_database \
             WHERE datname = current_database() \
             UNION ALL \
             SELECT '{SCANS}' || relname, (coalesce(idx_scan, 0) + seq_scan)::bigint \
             FROM pg_stat_user_tables \
             UNION ALL \
             SELECT '{WRITES}' || relname, (n_tup_ins + n_tup_upd + n_tup_del)::bigint \
             FROM pg_stat_user_tables"
        ))
        .load(&mut conn)
        .await
        .context("reading pg_stat_database and pg_stat_user_tables")?;
        Ok(TableCounters(
            rows.into_iter().map(|row| (row.what, row.n)).collect(),
        ))
    }

    fn since(self, before: &TableCounters) -> TableCounters {
        TableCounters(
            self.0
                .into_iter()
                .map(|(what, n)| {
                    let earlier = before.0.get(&what).copied().unwrap_or(0);
                    (what, n - earlier)
                })
                .collect(),
        )
    }

    /// How much `what` (`transactions`, `rollbacks`, `scans <table>`, `rows written <table>`)
    /// moved.
    pub fn get(&self, what: &str) -> i64 {
        self.0.get(what).copied().unwrap_or(0)
    }

    fn print(&self, requests: u64) {
        let per = |n: i64| {
            ratio(
                f64::from(i32::try_from(n).unwrap_or(i32::MAX)),
                to_f64(requests),
            )
        };
        println!(
            "  PostgreSQL per client request ({requests} requests; from its statistics, good to \
             about a second's worth): {:.2} transactions (each statement outside one counts), \
             {:.3} rolled back",
            per(self.get(TRANSACTIONS)),
            per(self.get(ROLLBACKS))
        );
        for (label, prefix) in [("table scans", SCANS), ("rows written", WRITES)] {
            let mut by_table: Vec<(&str, i64)> = self
                .0
                .iter()
                .filter_map(|(what, n)| Some((what.strip_prefix(prefix)?, *n)))
                .filter(|(_, n)| *n > 0)
                .collect();
            by_table.sort_by_key(|entry| std::cmp::Reverse(entry.1));
            let shown: Vec<String> = by_table
                .iter()
                .take(12)
                .map(|(table, n)| format!("{table} {:.2}", per(*n)))
                .collect();
            println!("    {label}: {}", shown.join(", "));
        }
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
    "app: HTTP workers (actix: auth, rate limits, reads and decisions, JSON)",
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
pub struct CpuSplit {
    cores: Vec<(&'static str, f64)>,
    pub busy_cores: f64,
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

    /// Cores by role, for the JSON.
    pub fn cores_json(&self) -> Value {
        let cores: serde_json::Map<String, Value> = self
            .cores
            .iter()
            .map(|(role, cores)| ((*role).to_owned(), json!(round(*cores, 2))))
            .collect();
        Value::Object(cores)
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
pub struct Activity {
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
