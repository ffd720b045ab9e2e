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
//! the machine) and what PostgreSQL's backends were doing (pg_stat_activity samples). The
//! books are verified afterwards (`Services::verify_books`), and every 201 must have its
//! payment row. Results go to stdout and to `target/bench/payments.json`.

use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use futures_util::StreamExt;
use serde_json::json;

#[path = "support/mod.rs"]
mod support;
use support::{SplitMix64, env_or, round, status_mb, to_f64};
#[path = "support/app.rs"]
mod app;
use app::{Common, Latency, Merge, Observed, RunningApp, Scratch, Timed};

/// Far above anything the benchmark moves.
const TIER_LIMIT: &str = "100000000.00";
/// Each wallet's deposit, and the largest payment (minor units): no payment can find its
/// payer short within any sensible run.
const DEPOSIT: &str = "100000.00";
const MAX_AMOUNT_MINOR: u64 = 1_000;
const ROUTE: (&str, &str) = ("POST", "/v1/payments");

fn main() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    app::run("payments bench", &config.common, |scratch| {
        bench(&config, scratch)
    })
}

#[derive(Debug, Clone)]
struct Config {
    common: Common,
    wallets: usize,
    idempotency_keys: bool,
}

impl Config {
    fn from_env() -> anyhow::Result<Config> {
        let wallets: usize = env_or("FLOWLET_BENCH_WALLETS", 1000)?;
        if wallets < 2 {
            bail!("need at least 2 wallets");
        }
        Ok(Config {
            common: Common::from_env()?,
            wallets,
            idempotency_keys: env_or::<u8>("FLOWLET_BENCH_IDEMPOTENCY_KEYS", 1)? != 0,
        })
    }
}

/// Tier 1 limits raised so they never refuse a payment of the benchmark.
fn tier_limits() -> Vec<(String, String)> {
    [
        "MAX_BALANCE",
        "MAX_SINGLE_PAYMENT",
        "DAILY_OUTGOING",
        "MONTHLY_OUTGOING",
    ]
    .into_iter()
    .map(|limit| {
        (
            format!("FLOWLET__KYC__TIERS__1__LIMITS__USD__{limit}"),
            TIER_LIMIT.into(),
        )
    })
    .collect()
}

/// What the clients share.
struct Target {
    client: reqwest::Client,
    payments_url: String,
    authorization: String,
    wallets: Vec<String>,
    idempotency_keys: bool,
}

async fn bench(config: &Config, scratch: Scratch) -> anyhow::Result<()> {
    let started = Instant::now();
    let common = &config.common;
    let url = scratch.url.as_str();
    let app = RunningApp::start(common, url, tier_limits()).await?;
    println!(
        "{}",
        app.describe(
            common,
            &format!(
                "{} wallets, idempotency keys {}",
                config.wallets,
                if config.idempotency_keys { "on" } else { "off" }
            )
        )
    );

    let outcome = async {
        let target = Arc::new(set_up(config, &app, url).await?);
        println!(
            "set-up: {} verified customers with funded wallets in {:.1} s",
            target.wallets.len(),
            started.elapsed().as_secs_f64()
        );
        app::measure(&app, &scratch, common, &target, client).await
    }
    .await;
    let (settings, run, idle_rss_mb) = app.stop_after(outcome).await?;
    let (warm, mut stats, observed) = (run.warm, run.measured, run.observed);
    stats.timed.add_warmup_failures(&warm.timed);
    let warm_ok = warm.ok;

    let verified = app::verify_books(&settings, url).await?;
    let rows = app::count(
        url,
        "SELECT count(*) AS n FROM payment_payments WHERE kind = 'p2p' AND status = 'completed'",
    )
    .await?;
    // Payments whose answer is stored under their idempotency key (the set-up sends none).
    let stored_answers = app::count(
        url,
        "SELECT count(*) AS n FROM platform_idempotency_keys WHERE status = 201",
    )
    .await?;
    let peak_rss_mb = status_mb("VmHWM:");

    let latency = stats.timed.latency();
    let payments_per_sec = to_f64(stats.ok) / observed.elapsed.as_secs_f64();
    print(
        config,
        &latency,
        stats.ok,
        payments_per_sec,
        &observed,
        peak_rss_mb,
    );
    app::print_idle_rss(idle_rss_mb);
    let failed = stats.timed.report_failures("payment");
    verified.check()?;
    let answered = warm_ok + stats.ok;
    println!(
        "invariants: ok (verified in {:.1} s); payment rows {rows} = 201s {answered}: {}",
        verified.took.as_secs_f64(),
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
    let doc = json!({
        "p2p": {
            "payments_per_sec": round(payments_per_sec, 1),
            "p50_ms": round(latency.p50_ms, 3),
            "p90_ms": round(latency.p90_ms, 3),
            "p99_ms": round(latency.p99_ms, 3),
            "max_ms": round(latency.max_ms, 3),
            "requests": latency.requests,
            "clients": common.clients,
            "wallets": config.wallets,
            "seconds": round(observed.elapsed.as_secs_f64(), 2),
            "batches": round(observed.metrics.batches(), 0),
            "transfers_per_batch": round(observed.metrics.mean_batch(), 1),
            "ms_per_batch": round(observed.metrics.ms_per_batch(), 3),
            "server_mean_ms": round(observed.metrics.server(ROUTE.0, ROUTE.1).1, 3),
            "cpu_busy_cores": round(observed.cpu.busy_cores, 2),
            "cpu_cores": observed.cpu.cores_json(),
        },
        "peak_rss_mb": round(peak_rss_mb, 1),
    });
    let path = support::write_json("payments.json", &doc)?;
    println!("wrote {}", path.display());
    Ok(())
}

/// One partner, the sanctions list, and `config.wallets` verified customers' funded wallets.
async fn set_up(config: &Config, app: &RunningApp, url: &str) -> anyhow::Result<Target> {
    let authorization = app
        .partners(url, 1)
        .await?
        .pop()
        .ok_or_else(|| anyhow::anyhow!("no partner"))?;
    let setup = &app.api(&authorization);
    let wallets: Vec<String> = futures_util::stream::iter(0..config.wallets)
        .map(|n| async move {
            let customer = setup.verified_customer(n).await?;
            setup.funded_wallet(&customer, DEPOSIT).await
        })
        .buffer_unordered(app::SET_UP_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    Ok(Target {
        payments_url: format!("{}/v1/payments", app.address),
        client: app.client.clone(),
        authorization,
        wallets,
        idempotency_keys: config.idempotency_keys,
    })
}

/// What the clients saw.
#[derive(Default)]
struct Stats {
    ok: u64,
    timed: Timed,
}

impl Merge for Stats {
    fn merge(&mut self, other: Stats) {
        self.ok += other.ok;
        self.timed.merge(other.timed);
    }
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
        let mut request = target
            .client
            .post(&target.payments_url)
            .header("authorization", &target.authorization)
            .header("content-type", "application/json");
        if target.idempotency_keys {
            request = request.header("idempotency-key", format!("bench-{seed}-{sent_count}"));
        }
        if stats.timed.send(request.body(body), 201).await.is_some() {
            stats.ok += 1;
        }
    }
    stats
}

fn print(
    config: &Config,
    latency: &Latency,
    payments: u64,
    payments_per_sec: f64,
    observed: &Observed,
    peak_rss_mb: f64,
) {
    println!();
    println!(
        "p2p payments: {payments_per_sec:.1} payments/s  p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  \
         max {:.2} ms  ({} requests, {payments} payments in {:.2} s, {} clients)",
        latency.p50_ms,
        latency.p90_ms,
        latency.p99_ms,
        latency.max_ms,
        latency.requests,
        observed.elapsed.as_secs_f64(),
        config.common.clients,
    );
    println!(
        "goal (>= 2000 payments/s, p99 < 50 ms): {}",
        if payments_per_sec >= 2000.0 && latency.p99_ms < 50.0 {
            "met"
        } else {
            "NOT met"
        }
    );
    println!();
    println!("where the time goes:");
    observed.print(&[ROUTE], latency.requests, peak_rss_mb);
}
