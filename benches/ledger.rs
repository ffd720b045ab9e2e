//! Throughput of the ledger's posting engine against a real PostgreSQL with durable commits
//! (`synchronous_commit` as the server has it, on by default), beside the naive design (one
//! database transaction per transfer) for comparison.
//!
//! Run: `cargo bench --bench ledger`. Environment:
//! - `FLOWLET_BENCH_DATABASE_URL`: a maintenance database URL (default
//!   postgres://postgres@127.0.0.1:5432/postgres); a fresh `flowlet_bench_<uuid>` database is
//!   created on that server, migrated, and dropped at the end;
//! - `FLOWLET_BENCH_SECS` (10), `FLOWLET_BENCH_WARMUP_SECS` (2): per scenario;
//! - `FLOWLET_BENCH_SUBMITTERS` (256): concurrent submitters of the engine scenarios;
//! - `FLOWLET_BENCH_SCENARIOS`: comma list among uniform, hot, two_phase, single,
//!   naive_uniform, naive_hot (default: all);
//! - `FLOWLET_BENCH_BATCH_MAX` (8190), `FLOWLET_BENCH_LINGER_US` (200),
//!   `FLOWLET_BENCH_ENGINE_POOL` (4), `FLOWLET_BENCH_PIPELINE` (3): engine configuration;
//! - `FLOWLET_BENCH_ANALYZE` (1): ANALYZE after each warm-up, as autovacuum keeps a live
//!   ledger's statistics; 0 measures a fresh database (no statistics yet).
//!
//! Every submitter sends ONE transfer per request and awaits its result before the next, as
//! API clients do: batching must come from the engine. Every outcome must be `ok`; anything
//! else is counted and fails the run at the end, as does a broken ledger invariant. Results go
//! to stdout and to `target/bench/ledger.json`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Int4, Text, Uuid as SqlUuid};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use flowlet::ledger::{
    AccountFlags, AccountId, EngineConfig, EngineMetrics, LedgerService, NewAccount, NewTransfer,
    ResultCode, Scope, TransferFlags, TransferId,
};
use flowlet::platform::db::{Db, DbError, PoolOptions, Tx, run_migrations};
use flowlet::platform::money::{Currency, Money};
use flowlet::platform::workers::Workers;
use prometheus::Registry;
use uuid::Uuid;

#[path = "support/mod.rs"]
mod support;
use support::{SplitMix64, env_or, percentile_ms, round, status_mb, to_f64};

const ACCOUNTS: usize = 100_000;
const ACCOUNT_CHUNK: usize = 5_000;
const NAIVE_POOL: usize = 16;
const NAIVE_SUBMITTERS: usize = 64;
/// Transfer amounts are 1..=MAX_AMOUNT minor units.
const MAX_AMOUNT: u64 = 10_000;

fn main() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    runtime.block_on(run(config))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Uniform,
    Hot,
    TwoPhase,
    Single,
    NaiveUniform,
    NaiveHot,
}

impl Scenario {
    const ALL: [Scenario; 6] = [
        Self::Uniform,
        Self::Hot,
        Self::TwoPhase,
        Self::Single,
        Self::NaiveUniform,
        Self::NaiveHot,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Uniform => "uniform",
            Self::Hot => "hot",
            Self::TwoPhase => "two_phase",
            Self::Single => "single",
            Self::NaiveUniform => "naive_uniform",
            Self::NaiveHot => "naive_hot",
        }
    }

    fn is_naive(self) -> bool {
        matches!(self, Self::NaiveUniform | Self::NaiveHot)
    }

    fn submitters(self, config: &Config) -> usize {
        match self {
            Self::Single => 1,
            Self::NaiveUniform | Self::NaiveHot => NAIVE_SUBMITTERS,
            Self::Uniform | Self::Hot | Self::TwoPhase => config.submitters,
        }
    }
}

#[derive(Debug, Clone)]
struct Config {
    server_url: String,
    run_for: Duration,
    warmup: Duration,
    submitters: usize,
    scenarios: Vec<Scenario>,
    batch_max_transfers: usize,
    batch_linger: Duration,
    engine_pool: usize,
    pipeline_depth: usize,
    analyze: bool,
}

impl Config {
    fn from_env() -> anyhow::Result<Config> {
        let scenarios = match std::env::var("FLOWLET_BENCH_SCENARIOS") {
            Ok(list) if !list.trim().is_empty() => list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|name| {
                    Scenario::ALL
                        .into_iter()
                        .find(|s| s.name() == name)
                        .ok_or_else(|| {
                            anyhow!("FLOWLET_BENCH_SCENARIOS: unknown scenario `{name}`")
                        })
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
            _ => Scenario::ALL.to_vec(),
        };
        let submitters: usize = env_or("FLOWLET_BENCH_SUBMITTERS", 256)?;
        let engine_pool: usize = env_or("FLOWLET_BENCH_ENGINE_POOL", 4)?;
        let batch_max_transfers: usize = env_or("FLOWLET_BENCH_BATCH_MAX", 8190)?;
        if submitters == 0 || engine_pool == 0 || batch_max_transfers == 0 {
            bail!("submitters, engine pool and batch size must be positive");
        }
        Ok(Config {
            server_url: support::server_url(),
            run_for: Duration::from_secs_f64(env_or("FLOWLET_BENCH_SECS", 10.0)?),
            warmup: Duration::from_secs_f64(env_or("FLOWLET_BENCH_WARMUP_SECS", 2.0)?),
            submitters,
            scenarios,
            batch_max_transfers,
            batch_linger: Duration::from_micros(env_or("FLOWLET_BENCH_LINGER_US", 200)?),
            engine_pool,
            pipeline_depth: env_or("FLOWLET_BENCH_PIPELINE", 3)?,
            analyze: env_or::<u8>("FLOWLET_BENCH_ANALYZE", 1)? != 0,
        })
    }
}

/// Runs the benchmark in a scratch database.
async fn run(config: Config) -> anyhow::Result<()> {
    let server_url = config.server_url.clone();
    support::in_scratch_database("ledger bench", &server_url, |url, _name| async move {
        bench(&config, &url).await
    })
    .await
}

/// What every submitter shares.
struct Ctx {
    ledger: LedgerService,
    /// The engine's pool, for ANALYZE.
    db: Db,
    naive: Option<Db>,
    accounts: Vec<AccountId>,
    settlement: AccountId,
    usd: Currency,
}

/// One scenario's result.
struct Measured {
    scenario: Scenario,
    transfers_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
    transfers: u64,
    elapsed: Duration,
    failures: BTreeMap<String, u64>,
    batches: Option<BatchStats>,
}

async fn bench(config: &Config, url: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    run_migrations(url)
        .await
        .context("migrating the benchmark database")?;
    let pool = |max_size| PoolOptions {
        max_size,
        wait_timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(10),
        tx_max_retries: 10,
        ca_file: None,
    };
    let engine_db = Db::connect(url, &pool(config.engine_pool))?;
    engine_db.ping().await?;
    let engine_config = EngineConfig {
        batch_max_transfers: config.batch_max_transfers,
        batch_linger: config.batch_linger,
        queue_capacity: 10_000,
        queue_max_bytes: 256 << 20,
        enqueue_timeout: Duration::from_secs(30),
        max_retries: 10,
        pipeline_depth: config.pipeline_depth,
    };
    println!(
        "engine: batch_max_transfers {}, batch_linger {} us, queue_capacity {}, enqueue_timeout {} s, \
         max_retries {}, pipeline_depth {}, pool {} connections; submitters {} (single 1, naive {} on a pool of {}); \
         {} s per scenario after {} s of warm-up",
        engine_config.batch_max_transfers,
        engine_config.batch_linger.as_micros(),
        engine_config.queue_capacity,
        engine_config.enqueue_timeout.as_secs(),
        engine_config.max_retries,
        engine_config.pipeline_depth,
        config.engine_pool,
        config.submitters,
        NAIVE_SUBMITTERS,
        NAIVE_POOL,
        config.run_for.as_secs_f64(),
        config.warmup.as_secs_f64(),
    );
    let registry = Registry::new();
    let metrics = EngineMetrics::new(&registry)?;
    let (ledger, engine) = LedgerService::new(engine_db.clone(), engine_config, Some(metrics));
    let mut workers = Workers::new();
    workers.spawn("engine", move |shutdown| engine.run(shutdown));

    let naive = if config.scenarios.iter().any(|s| s.is_naive()) {
        let db = Db::connect(url, &pool(NAIVE_POOL))?;
        db.ping().await?;
        Some(db)
    } else {
        None
    };

    let measured = async {
        let ctx = Arc::new(set_up(ledger.clone(), engine_db.clone(), naive.clone()).await?);
        println!(
            "set-up: {} accounts (flags none) + 1 settlement account in {:.1} s; {}",
            ctx.accounts.len(),
            started.elapsed().as_secs_f64(),
            if config.analyze {
                "ANALYZE after each warm-up"
            } else {
                "no ANALYZE"
            },
        );
        let mut measured = Vec::new();
        for (index, scenario) in config.scenarios.iter().enumerate() {
            let m = run_scenario(&ctx, *scenario, index, config, &registry).await?;
            println!(
                "  {:<14} {:>10.1} transfers/s  p50 {:.2} ms  p99 {:.2} ms  {} requests in {:.2} s{}",
                scenario.name(),
                m.transfers_per_sec,
                m.p50_ms,
                m.p99_ms,
                m.requests,
                m.elapsed.as_secs_f64(),
                m.batches
                    .as_ref()
                    .map(BatchStats::describe)
                    .unwrap_or_default(),
            );
            measured.push(m);
        }
        anyhow::Ok(measured)
    }
    .await;
    workers.stop(Duration::from_secs(30)).await;
    if let Some(db) = &naive {
        db.close();
    }
    let measured = measured?;

    let verify_started = Instant::now();
    let violations = ledger.verify().await?.violations;
    engine_db.close();
    let peak_rss_mb = status_mb("VmHWM:");

    print_table(&measured, peak_rss_mb);
    let mut failed = false;
    for m in &measured {
        for (what, count) in &m.failures {
            eprintln!("FAILED {}: {count} x {what}", m.scenario.name());
            failed = true;
        }
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
    println!(
        "invariants: ok (verified in {:.1} s)",
        verify_started.elapsed().as_secs_f64()
    );
    if failed {
        bail!("some transfers did not answer `ok`: the numbers above are not valid");
    }
    let path = write_json(&measured, peak_rss_mb)?;
    println!("wrote {}", path.display());
    Ok(())
}

async fn set_up(ledger: LedgerService, db: Db, naive: Option<Db>) -> anyhow::Result<Ctx> {
    let usd = Currency::parse("USD").map_err(|e| anyhow!("USD: {e}"))?;
    let new_account = || NewAccount {
        id: None,
        currency: usd,
        code: 1,
        flags: AccountFlags::default(),
        metadata: None,
    };
    let settlement = ledger
        .create_accounts(Scope::System, vec![new_account()])
        .await?
        .into_iter()
        .next()
        .map(|a| a.state.id)
        .ok_or_else(|| anyhow!("no settlement account created"))?;
    let mut accounts = Vec::with_capacity(ACCOUNTS);
    while accounts.len() < ACCOUNTS {
        let n = ACCOUNT_CHUNK.min(ACCOUNTS - accounts.len());
        let created = ledger
            .create_accounts(Scope::System, (0..n).map(|_| new_account()).collect())
            .await?;
        accounts.extend(created.into_iter().map(|a| a.state.id));
    }
    Ok(Ctx {
        ledger,
        db,
        naive,
        accounts,
        settlement,
        usd,
    })
}

async fn run_scenario(
    ctx: &Arc<Ctx>,
    scenario: Scenario,
    index: usize,
    config: &Config,
    registry: &Registry,
) -> anyhow::Result<Measured> {
    let submitters = scenario.submitters(config);
    let seed = u64::try_from(index).unwrap_or(0) << 32;
    let mut failures = BTreeMap::new();
    if !config.warmup.is_zero() {
        let warm = drive(ctx, scenario, submitters, config.warmup, seed).await?;
        failures = warm.failures;
    }
    if config.analyze {
        // Statistics as autovacuum keeps them on a live ledger. Without them, a statement the
        // engine's connections prepared while `ledger_transfers` was empty keeps a generic
        // Seq Scan plan as the table grows (see FLOWLET_BENCH_ANALYZE=0).
        let mut conn = ctx.db.conn().await?;
        conn.batch_execute("ANALYZE").await.context("ANALYZE")?;
    }
    let before = BatchStats::read(registry);
    let started = Instant::now();
    let mut stats = drive(ctx, scenario, submitters, config.run_for, seed | (1 << 31)).await?;
    let elapsed = started.elapsed();
    let batches = (!scenario.is_naive()).then(|| BatchStats::read(registry).since(&before));
    for (what, count) in std::mem::take(&mut stats.failures) {
        *failures.entry(what).or_default() += count;
    }
    stats.latencies_us.sort_unstable();
    Ok(Measured {
        scenario,
        transfers_per_sec: to_f64(stats.ok_transfers) / elapsed.as_secs_f64(),
        p50_ms: percentile_ms(&stats.latencies_us, 50),
        p99_ms: percentile_ms(&stats.latencies_us, 99),
        requests: stats.requests,
        transfers: stats.ok_transfers,
        elapsed,
        failures,
        batches,
    })
}

/// Runs `submitters` concurrent submitters for `run_for`; the elapsed time the caller measures
/// includes the requests still in flight at the deadline.
async fn drive(
    ctx: &Arc<Ctx>,
    scenario: Scenario,
    submitters: usize,
    run_for: Duration,
    seed: u64,
) -> anyhow::Result<Stats> {
    let deadline = Instant::now() + run_for;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..submitters {
        let ctx = Arc::clone(ctx);
        let seed = seed ^ u64::try_from(i).unwrap_or(0);
        tasks.spawn(submitter(ctx, scenario, seed, deadline));
    }
    let mut total = Stats::default();
    while let Some(joined) = tasks.join_next().await {
        total.merge(joined.context("a submitter task died")?);
    }
    Ok(total)
}

/// What one submitter saw.
#[derive(Default)]
struct Stats {
    ok_transfers: u64,
    requests: u64,
    latencies_us: Vec<u64>,
    failures: BTreeMap<String, u64>,
}

impl Stats {
    fn record(&mut self, latency: Duration) {
        self.requests += 1;
        self.latencies_us
            .push(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
    }

    fn fail(&mut self, what: String) {
        *self.failures.entry(what).or_default() += 1;
    }

    fn merge(&mut self, other: Stats) {
        self.ok_transfers += other.ok_transfers;
        self.requests += other.requests;
        self.latencies_us.extend(other.latencies_us);
        for (what, count) in other.failures {
            *self.failures.entry(what).or_default() += count;
        }
    }
}

async fn submitter(ctx: Arc<Ctx>, scenario: Scenario, seed: u64, deadline: Instant) -> Stats {
    let mut rng = SplitMix64(seed);
    let mut stats = Stats::default();
    while Instant::now() < deadline {
        let amount = rng.amount();
        match scenario {
            Scenario::Uniform | Scenario::Single => {
                let (debit, credit) = ctx.random_pair(&mut rng);
                let t = ctx.movement(debit, credit, amount, TransferFlags::empty());
                engine_post(&ctx, t, &mut stats).await;
            }
            Scenario::Hot => {
                let credit = ctx.random_account(&mut rng);
                let t = ctx.movement(ctx.settlement, credit, amount, TransferFlags::empty());
                engine_post(&ctx, t, &mut stats).await;
            }
            Scenario::TwoPhase => {
                let (debit, credit) = ctx.random_pair(&mut rng);
                let pending = ctx.movement(debit, credit, amount, TransferFlags::PENDING);
                let pending_id = pending.id;
                if engine_post(&ctx, pending, &mut stats).await {
                    engine_post(&ctx, post_pending(pending_id), &mut stats).await;
                }
            }
            Scenario::NaiveUniform => {
                let (debit, credit) = ctx.random_pair(&mut rng);
                naive_post(&ctx, debit, credit, amount, &mut stats).await;
            }
            Scenario::NaiveHot => {
                let credit = ctx.random_account(&mut rng);
                naive_post(&ctx, ctx.settlement, credit, amount, &mut stats).await;
            }
        }
    }
    stats
}

impl Ctx {
    fn random_account(&self, rng: &mut SplitMix64) -> AccountId {
        self.accounts[rng.below(self.accounts.len())]
    }

    /// Two distinct accounts of the pool.
    fn random_pair(&self, rng: &mut SplitMix64) -> (AccountId, AccountId) {
        let n = self.accounts.len();
        let a = rng.below(n);
        let mut b = rng.below(n - 1);
        if b >= a {
            b += 1;
        }
        (self.accounts[a], self.accounts[b])
    }

    fn movement(
        &self,
        debit: AccountId,
        credit: AccountId,
        amount: i64,
        flags: TransferFlags,
    ) -> NewTransfer {
        NewTransfer::movement(
            TransferId::new(),
            debit,
            credit,
            Money::from_minor(amount, self.usd),
            1,
        )
        .with_flags(flags)
    }
}

/// Posts the full amount of a pending transfer.
fn post_pending(pending_id: TransferId) -> NewTransfer {
    NewTransfer::post_pending(TransferId::new(), pending_id, 1)
}

/// One request of one transfer through the engine; whether it was applied.
async fn engine_post(ctx: &Ctx, transfer: NewTransfer, stats: &mut Stats) -> bool {
    let started = Instant::now();
    let result = ctx.ledger.post(Scope::System, vec![transfer], None).await;
    stats.record(started.elapsed());
    match result {
        Ok(outcomes) => match outcomes.as_slice() {
            [o] if o.code == ResultCode::Ok && o.applied.is_some() => {
                stats.ok_transfers += 1;
                true
            }
            [o] => {
                stats.fail(format!("result {}", o.code));
                false
            }
            other => {
                stats.fail(format!("{} outcomes for one transfer", other.len()));
                false
            }
        },
        Err(e) => {
            stats.fail(format!("error: {e}"));
            // Do not spin on a dead engine.
            tokio::time::sleep(Duration::from_millis(1)).await;
            false
        }
    }
}

/// One transfer in its own transaction, the naive way (not through the engine).
async fn naive_post(
    ctx: &Ctx,
    debit: AccountId,
    credit: AccountId,
    amount: i64,
    stats: &mut Stats,
) {
    let Some(db) = &ctx.naive else {
        stats.fail("no pool for the naive design".to_owned());
        return;
    };
    let id = TransferId::new().uuid();
    let (debit, credit) = (debit.uuid(), credit.uuid());
    let currency = ctx.usd.code();
    let started = Instant::now();
    let result = db
        .in_tx(|tx| Box::pin(naive_transfer(tx, id, debit, credit, amount, currency)))
        .await;
    stats.record(started.elapsed());
    match result {
        Ok(ResultCode::Ok) => stats.ok_transfers += 1,
        Ok(code) => stats.fail(format!("result {code}")),
        Err(e) => {
            stats.fail(format!("error: {e}: {e:?}"));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

#[derive(QueryableByName)]
struct LockedAccount {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = Text)]
    currency: String,
    #[diesel(sql_type = Int4)]
    flags: i32,
    #[diesel(sql_type = BigInt)]
    debits_pending: i64,
    #[diesel(sql_type = BigInt)]
    debits_posted: i64,
    #[diesel(sql_type = BigInt)]
    credits_pending: i64,
    #[diesel(sql_type = BigInt)]
    credits_posted: i64,
    #[diesel(sql_type = BigInt)]
    entry_seq: i64,
}

/// Writes what the engine writes for one plain transfer (the transfer, one entry per
/// account with its totals after, both accounts' totals and entry count), in the caller's
/// transaction, with a statement per step.
async fn naive_transfer(
    tx: &mut Tx<'_>,
    id: Uuid,
    debit: Uuid,
    credit: Uuid,
    amount: i64,
    currency: &'static str,
) -> Result<ResultCode, DbError> {
    let rows: Vec<LockedAccount> = diesel::sql_query(
        "SELECT id, currency, flags, debits_pending, debits_posted, credits_pending, \
                credits_posted, entry_seq \
         FROM ledger_accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE",
    )
    .bind::<Array<SqlUuid>, _>(vec![debit, credit])
    .load(tx.conn())
    .await?;
    let (Some(d), Some(c)) = (
        rows.iter().find(|r| r.id == debit),
        rows.iter().find(|r| r.id == credit),
    ) else {
        return Ok(ResultCode::AccountNotFound);
    };
    if d.currency != currency || c.currency != currency {
        return Ok(ResultCode::CurrencyMismatch);
    }
    if (d.flags | c.flags) & AccountFlags::CLOSED.bits() != 0 {
        return Ok(ResultCode::AccountClosed);
    }
    let Some(d_posted) = d.debits_posted.checked_add(amount) else {
        return Ok(ResultCode::OverflowsDebitsPosted);
    };
    let Some(c_posted) = c.credits_posted.checked_add(amount) else {
        return Ok(ResultCode::OverflowsCreditsPosted);
    };
    if d.flags & AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS.bits() != 0
        && d_posted.saturating_add(d.debits_pending) > d.credits_posted
    {
        return Ok(ResultCode::ExceedsCredits);
    }
    if c.flags & AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS.bits() != 0
        && c_posted.saturating_add(c.credits_pending) > c.debits_posted
    {
        return Ok(ResultCode::ExceedsDebits);
    }
    diesel::sql_query(
        "INSERT INTO ledger_transfers (id, partner_id, debit_account_id, credit_account_id, \
            amount, currency, code, flags, pending_id, timeout_secs, expires_at, metadata, \
            created_at) \
         VALUES ($1, NULL, $2, $3, $4, $5, 1, 0, NULL, NULL, NULL, NULL, now())",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<SqlUuid, _>(debit)
    .bind::<SqlUuid, _>(credit)
    .bind::<BigInt, _>(amount)
    .bind::<Text, _>(currency)
    .execute(tx.conn())
    .await?;
    diesel::sql_query(
        "INSERT INTO ledger_entries (account_id, seq, transfer_id, is_credit, pending_delta, \
            posted_delta, debits_pending, debits_posted, credits_pending, credits_posted, \
            created_at) \
         VALUES ($1, $2, $3, false, 0, $4, $5, $6, $7, $8, now()), \
                ($9, $10, $3, true, 0, $4, $11, $12, $13, $14, now())",
    )
    .bind::<SqlUuid, _>(debit)
    .bind::<BigInt, _>(d.entry_seq + 1)
    .bind::<SqlUuid, _>(id)
    .bind::<BigInt, _>(amount)
    .bind::<BigInt, _>(d.debits_pending)
    .bind::<BigInt, _>(d_posted)
    .bind::<BigInt, _>(d.credits_pending)
    .bind::<BigInt, _>(d.credits_posted)
    .bind::<SqlUuid, _>(credit)
    .bind::<BigInt, _>(c.entry_seq + 1)
    .bind::<BigInt, _>(c.debits_pending)
    .bind::<BigInt, _>(c.debits_posted)
    .bind::<BigInt, _>(c.credits_pending)
    .bind::<BigInt, _>(c_posted)
    .execute(tx.conn())
    .await?;
    let update = "UPDATE ledger_accounts SET debits_pending = $2, debits_posted = $3, \
                  credits_pending = $4, credits_posted = $5, entry_seq = $6 WHERE id = $1";
    for (id, dp, dpo, cp, cpo, seq) in [
        (
            debit,
            d.debits_pending,
            d_posted,
            d.credits_pending,
            d.credits_posted,
            d.entry_seq + 1,
        ),
        (
            credit,
            c.debits_pending,
            c.debits_posted,
            c.credits_pending,
            c_posted,
            c.entry_seq + 1,
        ),
    ] {
        diesel::sql_query(update)
            .bind::<SqlUuid, _>(id)
            .bind::<BigInt, _>(dp)
            .bind::<BigInt, _>(dpo)
            .bind::<BigInt, _>(cp)
            .bind::<BigInt, _>(cpo)
            .bind::<BigInt, _>(seq)
            .execute(tx.conn())
            .await?;
    }
    Ok(ResultCode::Ok)
}

/// The engine's batch histograms (sizes and durations), from its metrics.
#[derive(Debug, Clone, Copy, Default)]
struct BatchStats {
    batches: u64,
    transfers: f64,
    seconds: f64,
}

impl BatchStats {
    fn read(registry: &Registry) -> BatchStats {
        let mut stats = BatchStats::default();
        for family in registry.gather() {
            let Some(histogram) = family.get_metric().first().map(|m| m.get_histogram()) else {
                continue;
            };
            match family.name() {
                "ledger_batch_transfers" => {
                    stats.batches = histogram.get_sample_count();
                    stats.transfers = histogram.get_sample_sum();
                }
                "ledger_batch_duration_seconds" => stats.seconds = histogram.get_sample_sum(),
                _ => {}
            }
        }
        stats
    }

    fn since(self, before: &BatchStats) -> BatchStats {
        BatchStats {
            batches: self.batches.saturating_sub(before.batches),
            transfers: self.transfers - before.transfers,
            seconds: self.seconds - before.seconds,
        }
    }

    fn describe(&self) -> String {
        if self.batches == 0 {
            return String::new();
        }
        let n = to_f64(self.batches);
        format!(
            "; {} batches, {:.1} transfers/batch, {:.2} ms/batch",
            self.batches,
            self.transfers / n,
            self.seconds * 1000.0 / n
        )
    }
}

fn print_table(measured: &[Measured], peak_rss_mb: f64) {
    println!();
    println!(
        "{:<14} {:>12} {:>9} {:>9} {:>10}",
        "scenario", "transfers/s", "p50 ms", "p99 ms", "requests"
    );
    for m in measured {
        println!(
            "{:<14} {:>12.1} {:>9.2} {:>9.2} {:>10}",
            m.scenario.name(),
            m.transfers_per_sec,
            m.p50_ms,
            m.p99_ms,
            m.requests
        );
    }
    let tps = |s: Scenario| {
        measured
            .iter()
            .find(|m| m.scenario == s)
            .map(|m| m.transfers_per_sec)
    };
    for (engine, naive) in [
        (Scenario::Uniform, Scenario::NaiveUniform),
        (Scenario::Hot, Scenario::NaiveHot),
    ] {
        if let (Some(e), Some(n)) = (tps(engine), tps(naive))
            && n > 0.0
        {
            println!("engine/naive {}: {:.1}x", engine.name(), e / n);
        }
    }
    let total: u64 = measured.iter().map(|m| m.transfers).sum();
    println!("transfers written: {total}");
    println!("peak RSS: {peak_rss_mb:.1} MB");
}

fn write_json(measured: &[Measured], peak_rss_mb: f64) -> anyhow::Result<PathBuf> {
    let mut doc = serde_json::Map::new();
    for m in measured {
        doc.insert(
            m.scenario.name().to_owned(),
            serde_json::json!({
                "transfers_per_sec": round(m.transfers_per_sec, 1),
                "p50_ms": round(m.p50_ms, 3),
                "p99_ms": round(m.p99_ms, 3),
            }),
        );
    }
    doc.insert(
        "peak_rss_mb".to_owned(),
        serde_json::json!(round(peak_rss_mb, 1)),
    );
    support::write_json("ledger.json", &serde_json::Value::Object(doc))
}

/// Transfer amounts of the scenarios.
impl SplitMix64 {
    fn amount(&mut self) -> i64 {
        i64::try_from(1 + self.next() % MAX_AMOUNT).unwrap_or(1)
    }
}
