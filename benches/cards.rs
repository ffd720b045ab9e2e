//! Card authorizations per second through the real application: the card network simulator's
//! `POST /v1/simulator/authorizations` over HTTP (reqwest, keep-alive) against the app as
//! `flowlet serve` builds it, on a real PostgreSQL with durable commits and the real Redis for
//! rate limits; captures (`POST /v1/simulator/authorizations/{id}/capture`) are sent in between
//! and timed apart.
//!
//! Run: `cargo bench --bench cards`. Environment: as the payments bench (`support/app.rs`:
//! `FLOWLET_BENCH_DATABASE_URL`, `FLOWLET_BENCH_DATABASE_SET` (e.g.
//! `log_min_duration_statement = 0` to log every statement of the run with its time),
//! `FLOWLET_BENCH_REDIS_URL`, `FLOWLET_BENCH_SECS` (10) after
//! `FLOWLET_BENCH_WARMUP_SECS` (2), `FLOWLET_BENCH_CLIENTS` (64), `FLOWLET_BENCH_LOADGEN_THREADS`
//! (1), `FLOWLET_BENCH_ANALYZE` (1), any `FLOWLET__...` variable for the app), and:
//! - `FLOWLET_BENCH_CARDS` (1000): virtual cards, each on its own customer's funded USD wallet;
//! - `FLOWLET_BENCH_PARTNERS` (10): the partners the cards are dealt to in turn (an issuing
//!   platform has a few programs with many cards each); a request uses its card's partner's key;
//! - `FLOWLET_BENCH_NETWORK_IDS` (1): every authorization carries a fresh
//!   `network_transaction_id`, as a card network always sends one (the lookup that makes a
//!   repeated message answer as the first is part of what is measured); 0 sends none;
//! - `FLOWLET_BENCH_CAPTURE_PERCENT` (50): the share of approvals captured at once.
//!
//! Set-up, not measured: the partners and their keys (as an operator makes them), a one-entry
//! sanctions list, and for each card a customer approved at tier 1 through KYC, then raised to
//! tier 2 directly in SQL (in production a reviewer's decision; tests/api/cards.rs does the
//! same), a USD wallet funded by a deposit of 20,000.00, and the card. Rate limits stay on,
//! raised through configuration (API.md); the tier 2 limits are the product's defaults (25,000
//! a day, more than any card spends here). Every other card is issued with controls
//! (`gambling` blocked, 500.00 per authorization, 10,000.00 a day); the others have none.
//!
//! The mix, per mille of authorizations, each on a card drawn at random:
//! - 800 approvals: any card, a grocery merchant (MCC 5411), 1.00-60.00; of these,
//!   `FLOWLET_BENCH_CAPTURE_PERCENT` are captured in full at once by the same client;
//! - 50 `cvc_mismatch` (the ladder's early rung): any card, a wrong CVC;
//! - 50 `merchant_category_blocked` (the controls): a card with controls, MCC 7995 (betting);
//! - 50 `limit_exceeded` (the limits): a card with controls, 750.00 (over 500.00 per
//!   authorization);
//! - 50 `insufficient_funds` (the last rung, decided by the ledger in the posting): a card
//!   without controls, 24,000.00 (more than its wallet ever holds).
//!
//! Every authorization must answer 201 with the outcome its kind expects, every capture 200
//! `captured`; anything else (any non-2xx, a transport error, an unexpected outcome) is counted
//! as an error and fails the run at the end. "authorizations/s" counts authorization requests
//! only (approved and declined), over the measured window that also carries the captures.
//! Afterwards the books are verified (`Services::verify_books`) and the authorization rows are
//! counted against the answers. Besides throughput and latency it prints where the time went,
//! as the payments bench does, plus the card service's own time by result. Results go to
//! stdout and to `target/bench/cards.json`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use diesel_async::SimpleAsyncConnection;
use futures_util::StreamExt;
use serde_json::{Value, json};

#[path = "support/mod.rs"]
mod support;
use support::{SplitMix64, env_or, round, status_mb, to_f64};
#[path = "support/app.rs"]
mod app;
use app::{Common, Latency, Merge, Observed, RunningApp, Scratch, Timed};

/// Each card's wallet: far more than approvals take in any sensible run (at 5,000
/// authorizations/s over 1,000 cards, about 4 approvals of 30.50 on average per card per
/// second: 20,000.00 lasts well over a minute of measurement).
const DEPOSIT: &str = "20000.00";
const CONTROLS: &str = r#"{"enabled": true, "blocked_categories": ["gambling"],
    "limits": {"per_authorization": "500.00", "daily": "10000.00"}}"#;
/// Approvals are 1.00-60.00 (minor units).
const APPROVAL_MINOR_MAX: u64 = 6_000;
const OVER_LIMIT: &str = "750.00";
const OVER_BALANCE: &str = "24000.00";
const AUTHORIZE: (&str, &str) = ("POST", "/v1/simulator/authorizations");
const CAPTURE: (&str, &str) = ("POST", "/v1/simulator/authorizations/{id}/capture");
/// The bar of issue 17 on the 2-core reference machine, and its goal.
const BAR_PER_SEC: f64 = 2_000.0;
const BAR_P99_MS: f64 = 50.0;
const GOAL_PER_SEC: f64 = 5_000.0;

fn main() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    app::run("cards bench", &config.common, |scratch| {
        bench(&config, scratch)
    })
}

#[derive(Debug, Clone)]
struct Config {
    common: Common,
    cards: usize,
    partners: usize,
    network_ids: bool,
    capture_percent: u64,
}

impl Config {
    fn from_env() -> anyhow::Result<Config> {
        let cards: usize = env_or("FLOWLET_BENCH_CARDS", 1000)?;
        let partners: usize = env_or("FLOWLET_BENCH_PARTNERS", 10)?;
        let capture_percent: u64 = env_or("FLOWLET_BENCH_CAPTURE_PERCENT", 50)?;
        if cards < 2 || partners == 0 || partners > cards || capture_percent > 100 {
            bail!(
                "need at least 2 cards, 1 to FLOWLET_BENCH_CARDS partners, and a capture \
                 percent of 0-100"
            );
        }
        Ok(Config {
            common: Common::from_env()?,
            cards,
            partners,
            network_ids: env_or::<u8>("FLOWLET_BENCH_NETWORK_IDS", 1)? != 0,
            capture_percent,
        })
    }
}

/// What an authorization request is meant to exercise, and so how it must be answered.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Approval,
    WrongCvc,
    BlockedCategory,
    OverLimit,
    OverBalance,
}

impl Kind {
    /// The mix (see the module's doc), per mille.
    fn draw(rng: &mut SplitMix64) -> Kind {
        match rng.below(1000) {
            0..800 => Kind::Approval,
            800..850 => Kind::WrongCvc,
            850..900 => Kind::BlockedCategory,
            900..950 => Kind::OverLimit,
            _ => Kind::OverBalance,
        }
    }

    /// The outcome this kind must get, as [`outcome`] names it.
    fn expected(self) -> &'static str {
        match self {
            Kind::Approval => "approved",
            Kind::WrongCvc => "declined cvc_mismatch",
            Kind::BlockedCategory => "declined merchant_category_blocked",
            Kind::OverLimit => "declined limit_exceeded",
            Kind::OverBalance => "declined insufficient_funds",
        }
    }
}

/// `approved`, or `declined <decline_code>`.
fn outcome(answer: &Value) -> String {
    if answer["approved"] == true {
        "approved".to_owned()
    } else {
        format!(
            "declined {}",
            answer["decline_code"].as_str().unwrap_or("(no code)")
        )
    }
}

/// A card as the network knows it, and whose key its authorizations are sent with.
struct Card {
    partner: usize,
    pan: String,
    cvc: String,
    exp_month: u64,
    exp_year: u64,
}

/// What the clients share.
struct Target {
    client: reqwest::Client,
    address: String,
    /// The partners' `Authorization` header values.
    partners: Vec<String>,
    /// Cards with controls, and cards without.
    controlled: Vec<Card>,
    plain: Vec<Card>,
    network_ids: bool,
    capture_percent: u64,
}

impl Target {
    fn cards(&self) -> usize {
        self.controlled.len() + self.plain.len()
    }

    /// Card `n` of all of them: those with controls first.
    fn card(&self, n: usize) -> Option<&Card> {
        match n.checked_sub(self.controlled.len()) {
            None => self.controlled.get(n),
            Some(i) => self.plain.get(i),
        }
    }
}

async fn bench(config: &Config, scratch: Scratch) -> anyhow::Result<()> {
    let started = Instant::now();
    let common = &config.common;
    let url = scratch.url.as_str();
    let app = RunningApp::start(common, url, Vec::new()).await?;
    println!(
        "{}",
        app.describe(
            common,
            &format!(
                "{} cards over {} partners, network transaction ids {}, {}% of approvals captured",
                config.cards,
                config.partners,
                if config.network_ids { "on" } else { "off" },
                config.capture_percent,
            )
        )
    );

    let outcome = async {
        let target = Arc::new(set_up(config, &app, url).await?);
        println!(
            "set-up: {} cards ({} with controls) on tier 2 customers' funded wallets, {} partners, \
             in {:.1} s",
            target.cards(),
            target.controlled.len(),
            target.partners.len(),
            started.elapsed().as_secs_f64()
        );
        app::measure(&app, &scratch, common, &target, client).await
    }
    .await;
    let (settings, run, idle_rss_mb) = app.stop_after(outcome).await?;
    let (warm, mut stats, observed) = (run.warm, run.measured, run.observed);
    stats
        .authorizations
        .add_warmup_failures(&warm.authorizations);
    stats.captures.add_warmup_failures(&warm.captures);

    let verified = app::verify_books(&settings, url).await?;
    let rows = AuthorizationRows::count(url).await?;
    let peak_rss_mb = status_mb("VmHWM:");

    let figures = Figures::new(&mut stats, &observed);
    figures.print(config, &stats, &observed, peak_rss_mb);
    app::print_idle_rss(idle_rss_mb);
    let failed_authorizations = stats.authorizations.report_failures("authorization");
    let failed_captures = stats.captures.report_failures("capture");
    verified.check()?;
    println!(
        "invariants: ok (verified in {:.1} s)",
        verified.took.as_secs_f64()
    );
    rows.check(&stats, &warm)?;
    if failed_authorizations || failed_captures {
        bail!(
            "{} errors (see FAILED above): the numbers above are not valid",
            figures.errors
        );
    }
    let doc = figures.json(config, &stats, &observed, idle_rss_mb, peak_rss_mb);
    let path = support::write_json("cards.json", &doc)?;
    println!("wrote {}", path.display());
    Ok(())
}

/// The partners, the sanctions list, and `config.cards` cards on tier 2 customers' funded
/// wallets, every other one with controls.
async fn set_up(config: &Config, app: &RunningApp, url: &str) -> anyhow::Result<Target> {
    let partners = app.partners(url, config.partners).await?;
    let apis: Vec<app::Api<'_>> = partners.iter().map(|key| app.api(key)).collect();
    let apis = &apis;
    let partner_of = |n: usize| n % partners.len();
    let customers: Vec<(usize, String)> = futures_util::stream::iter(0..config.cards)
        .map(|n| async move {
            let customer = apis[partner_of(n)].verified_customer(n).await?;
            anyhow::Ok((n, customer))
        })
        .buffer_unordered(app::SET_UP_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    // Tier 2 takes a reviewer's decision; here it is set directly, as the card tests do.
    let mut conn = support::connect(url).await?;
    conn.batch_execute("UPDATE kyc_customers SET kyc_tier = 2")
        .await
        .context("raising the customers to tier 2")?;
    drop(conn);
    let controls: Value = serde_json::from_str(CONTROLS).context("the bench's controls")?;
    let controls = &controls;
    let cards: Vec<(bool, Card)> = futures_util::stream::iter(customers)
        .map(|(n, customer)| async move {
            let api = &apis[partner_of(n)];
            let wallet = api.funded_wallet(&customer, DEPOSIT).await?;
            let controlled = n % 2 == 0;
            let mut body = json!({"wallet_id": wallet, "type": "virtual"});
            if controlled {
                body["controls"] = controls.clone();
            }
            let card = api.post("/v1/cards", body).await?;
            let field = |name: &str| {
                card[name]
                    .as_str()
                    .map(str::to_owned)
                    .with_context(|| format!("the card's {name}: {card}"))
            };
            let number = |name: &str| {
                card[name]
                    .as_u64()
                    .with_context(|| format!("the card's {name}: {card}"))
            };
            anyhow::Ok((
                controlled,
                Card {
                    partner: partner_of(n),
                    pan: field("pan")?,
                    cvc: field("cvc")?,
                    exp_month: number("exp_month")?,
                    exp_year: number("exp_year")?,
                },
            ))
        })
        .buffer_unordered(app::SET_UP_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let (controlled, plain): (Vec<_>, Vec<_>) = cards.into_iter().partition(|(c, _)| *c);
    Ok(Target {
        client: app.client.clone(),
        address: app.address.clone(),
        partners,
        controlled: controlled.into_iter().map(|(_, card)| card).collect(),
        plain: plain.into_iter().map(|(_, card)| card).collect(),
        network_ids: config.network_ids,
        capture_percent: config.capture_percent,
    })
}

/// What the clients saw.
#[derive(Default)]
struct Stats {
    authorizations: Timed,
    captures: Timed,
    /// Authorizations answered 201, by [`outcome`].
    outcomes: BTreeMap<String, u64>,
    /// Captures answered 200 `captured`.
    captured: u64,
}

impl Stats {
    fn count(&self, outcome: &str) -> u64 {
        self.outcomes.get(outcome).copied().unwrap_or(0)
    }

    fn declined(&self) -> u64 {
        self.outcomes
            .iter()
            .filter(|(outcome, _)| outcome.starts_with("declined"))
            .map(|(_, n)| n)
            .sum()
    }
}

impl Merge for Stats {
    fn merge(&mut self, other: Stats) {
        self.authorizations.merge(other.authorizations);
        self.captures.merge(other.captures);
        for (outcome, n) in other.outcomes {
            *self.outcomes.entry(outcome).or_default() += n;
        }
        self.captured += other.captured;
    }
}

/// `minor` units as a USD amount.
fn usd(minor: u64) -> String {
    format!("{}.{:02}", minor / 100, minor % 100)
}

async fn client(target: Arc<Target>, seed: u64, deadline: Instant) -> Stats {
    let mut rng = SplitMix64(seed.wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut stats = Stats::default();
    let authorize_url = format!("{}{}", target.address, AUTHORIZE.1);
    let mut sent_count: u64 = 0;
    while Instant::now() < deadline {
        sent_count += 1;
        let kind = Kind::draw(&mut rng);
        let (card, amount, mcc, merchant) = match kind {
            Kind::Approval | Kind::WrongCvc => {
                let card = target.card(rng.below(target.cards()));
                let amount = usd(100 + rng.next() % (APPROVAL_MINOR_MAX - 99));
                (card, amount, "5411", "Corner Grocery")
            }
            Kind::BlockedCategory => (
                target.controlled.get(rng.below(target.controlled.len())),
                usd(2_000),
                "7995",
                "Lucky Bets",
            ),
            Kind::OverLimit => (
                target.controlled.get(rng.below(target.controlled.len())),
                OVER_LIMIT.to_owned(),
                "5732",
                "Electronics Outlet",
            ),
            Kind::OverBalance => (
                target.plain.get(rng.below(target.plain.len())),
                OVER_BALANCE.to_owned(),
                "5944",
                "Fine Jewellery",
            ),
        };
        let Some(card) = card else {
            stats.authorizations.fail(format!("no card for {kind:?}"));
            continue;
        };
        let cvc = match kind {
            // Another three digits than the card's.
            Kind::WrongCvc => format!(
                "{:03}",
                (card.cvc.parse::<u64>().unwrap_or(0) + 1 + rng.next() % 998) % 1000
            ),
            _ => card.cvc.clone(),
        };
        let mut body = json!({
            "pan": card.pan,
            "exp_month": card.exp_month,
            "exp_year": card.exp_year,
            "cvc": cvc,
            "amount": amount,
            "currency": "USD",
            "merchant": {"name": merchant, "mcc": mcc, "country": "US"},
        });
        if target.network_ids {
            body["network_transaction_id"] = json!(format!("bench-{seed:x}-{sent_count}"));
        }
        let authorization = &target.partners[card.partner];
        let request = target
            .client
            .post(&authorize_url)
            .header("authorization", authorization)
            .json(&body);
        let Some(bytes) = stats.authorizations.send(request, 201).await else {
            continue;
        };
        let Ok(answer) = serde_json::from_slice::<Value>(&bytes) else {
            stats
                .authorizations
                .fail("201 with an unreadable body".into());
            continue;
        };
        let got = outcome(&answer);
        *stats.outcomes.entry(got.clone()).or_default() += 1;
        if got != kind.expected() {
            stats
                .authorizations
                .fail(format!("{kind:?} wanted {}, got {got}", kind.expected()));
            continue;
        }
        if !matches!(kind, Kind::Approval) || rng.next() % 100 >= target.capture_percent {
            continue;
        }
        let Some(id) = answer["id"].as_str() else {
            stats
                .authorizations
                .fail("an approval without an id".into());
            continue;
        };
        let request = target
            .client
            .post(format!("{authorize_url}/{id}/capture"))
            .header("authorization", authorization)
            .json(&json!({}));
        let Some(bytes) = stats.captures.send(request, 200).await else {
            continue;
        };
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(captured) if captured["status"] == "captured" => stats.captured += 1,
            Ok(other) => stats
                .captures
                .fail(format!("200 with status {}", other["status"])),
            Err(_) => stats.captures.fail("200 with an unreadable body".into()),
        }
    }
    stats
}

/// The authorization rows by status, to hold against the answers.
struct AuthorizationRows {
    pending: i64,
    captured: i64,
    declined: i64,
    other: i64,
}

impl AuthorizationRows {
    async fn count(url: &str) -> anyhow::Result<AuthorizationRows> {
        let of = |status: &str| {
            format!("SELECT count(*) AS n FROM card_authorizations WHERE status = '{status}'")
        };
        Ok(AuthorizationRows {
            pending: app::count(url, &of("pending")).await?,
            captured: app::count(url, &of("captured")).await?,
            declined: app::count(url, &of("declined")).await?,
            other: app::count(
                url,
                "SELECT count(*) AS n FROM card_authorizations \
                 WHERE status NOT IN ('pending', 'captured', 'declined')",
            )
            .await?,
        })
    }

    /// Every approval answered (warm-up included) is a pending or captured row, every capture
    /// a captured one, every decline a declined one; nothing else.
    fn check(&self, stats: &Stats, warm: &Stats) -> anyhow::Result<()> {
        let answered = |n: u64| i64::try_from(n).unwrap_or(-1);
        let approved = answered(stats.count("approved") + warm.count("approved"));
        let captured = answered(stats.captured + warm.captured);
        let declined = answered(stats.declined() + warm.declined());
        let holds = self.pending + self.captured;
        let ok = holds == approved
            && self.captured == captured
            && self.declined == declined
            && self.other == 0;
        println!(
            "authorization rows: pending + captured {holds} = approvals {approved}, captured {} \
             = captures {captured}, declined {} = declines {declined}, other {}: {}",
            self.captured,
            self.declined,
            self.other,
            if ok { "ok" } else { "MISMATCH" }
        );
        if !ok {
            bail!("the authorization rows do not match the answers");
        }
        Ok(())
    }
}

/// The measured figures.
struct Figures {
    authorizations: Latency,
    authorizations_per_sec: f64,
    captures: Latency,
    captures_per_sec: f64,
    errors: u64,
}

impl Figures {
    fn new(stats: &mut Stats, observed: &Observed) -> Figures {
        let secs = observed.elapsed.as_secs_f64();
        let authorizations = stats.authorizations.latency();
        let captures = stats.captures.latency();
        Figures {
            authorizations_per_sec: to_f64(authorizations.requests) / secs,
            captures_per_sec: to_f64(captures.requests) / secs,
            authorizations,
            captures,
            errors: stats.authorizations.failures.values().sum::<u64>()
                + stats.captures.failures.values().sum::<u64>(),
        }
    }

    fn bar_met(&self) -> bool {
        self.authorizations_per_sec >= BAR_PER_SEC && self.authorizations.p99_ms < BAR_P99_MS
    }

    fn goal_met(&self) -> bool {
        self.authorizations_per_sec >= GOAL_PER_SEC && self.authorizations.p99_ms < BAR_P99_MS
    }

    fn print(&self, config: &Config, stats: &Stats, observed: &Observed, peak_rss_mb: f64) {
        let a = &self.authorizations;
        let c = &self.captures;
        println!();
        println!(
            "card authorizations: {:.1} authorizations/s  p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  \
             max {:.2} ms  ({} requests in {:.2} s, {} clients, {} cards, {} partners)",
            self.authorizations_per_sec,
            a.p50_ms,
            a.p90_ms,
            a.p99_ms,
            a.max_ms,
            a.requests,
            observed.elapsed.as_secs_f64(),
            config.common.clients,
            config.cards,
            config.partners,
        );
        let total = to_f64(stats.outcomes.values().sum());
        let outcomes: Vec<String> = stats
            .outcomes
            .iter()
            .map(|(outcome, n)| {
                format!(
                    "{outcome} {n} ({:.1}%)",
                    app::ratio(to_f64(*n) * 100.0, total)
                )
            })
            .collect();
        println!("  outcomes: {}", outcomes.join(", "));
        println!(
            "captures: {:.1} captures/s  p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms  \
             ({} requests, {} captured)",
            self.captures_per_sec,
            c.p50_ms,
            c.p90_ms,
            c.p99_ms,
            c.max_ms,
            c.requests,
            stats.captured,
        );
        println!("errors: {}", self.errors);
        println!(
            "bar (>= {BAR_PER_SEC:.0} authorizations/s, p99 < {BAR_P99_MS:.0} ms): {}; goal \
             (>= {GOAL_PER_SEC:.0}/s): {}",
            if self.bar_met() { "met" } else { "NOT met" },
            if self.goal_met() { "met" } else { "NOT met" },
        );
        println!();
        println!("where the time goes:");
        observed.print(&[AUTHORIZE, CAPTURE], a.requests + c.requests, peak_rss_mb);
        let m = &observed.metrics;
        let service: Vec<String> = ["approved", "declined", "error"]
            .iter()
            .filter_map(|result| {
                let n = m.get(&format!(
                    "card_authorization_duration_seconds_count{{result={result}}}"
                ));
                let secs = m.get(&format!(
                    "card_authorization_duration_seconds_sum{{result={result}}}"
                ));
                (n > 0.0).then(|| format!("{result} {:.2} ms ({n:.0})", secs * 1000.0 / n))
            })
            .collect();
        println!(
            "  card service (ladder, partner decision, hold), mean by result: {}",
            service.join(", ")
        );
    }

    fn json(
        &self,
        config: &Config,
        stats: &Stats,
        observed: &Observed,
        idle_rss_mb: f64,
        peak_rss_mb: f64,
    ) -> Value {
        let a = &self.authorizations;
        let c = &self.captures;
        let m = &observed.metrics;
        json!({
            "authorizations": {
                "authorizations_per_sec": round(self.authorizations_per_sec, 1),
                "p50_ms": round(a.p50_ms, 3),
                "p90_ms": round(a.p90_ms, 3),
                "p99_ms": round(a.p99_ms, 3),
                "max_ms": round(a.max_ms, 3),
                "requests": a.requests,
                "outcomes": stats.outcomes,
                "server_mean_ms": round(m.server(AUTHORIZE.0, AUTHORIZE.1).1, 3),
            },
            "captures": {
                "captures_per_sec": round(self.captures_per_sec, 1),
                "p50_ms": round(c.p50_ms, 3),
                "p90_ms": round(c.p90_ms, 3),
                "p99_ms": round(c.p99_ms, 3),
                "max_ms": round(c.max_ms, 3),
                "requests": c.requests,
                "server_mean_ms": round(m.server(CAPTURE.0, CAPTURE.1).1, 3),
            },
            "errors": self.errors,
            "bar_met": self.bar_met(),
            "goal_met": self.goal_met(),
            "clients": config.common.clients,
            "cards": config.cards,
            "partners": config.partners,
            "network_transaction_ids": config.network_ids,
            "capture_percent": config.capture_percent,
            "seconds": round(observed.elapsed.as_secs_f64(), 2),
            "batches": round(m.batches(), 0),
            "transfers_per_batch": round(m.mean_batch(), 1),
            "ms_per_batch": round(m.ms_per_batch(), 3),
            "cpu_busy_cores": round(observed.cpu.busy_cores, 2),
            "cpu_cores": observed.cpu.cores_json(),
            "idle_rss_mb": round(idle_rss_mb, 1),
            "peak_rss_mb": round(peak_rss_mb, 1),
        })
    }
}
