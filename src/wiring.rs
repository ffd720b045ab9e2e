//! The composition root: the one place that builds every service from [`Settings`] and wires
//! each to the others through their faces (`Arc<dyn Ledger>`, `Arc<dyn Compliance>`,
//! `Arc<dyn Wallets>`, `Arc<dyn Outbox>`, `Arc<dyn Rail>`). `flowlet serve`, every
//! `flowlet admin` verb, the tests and the benches build their services here, so each runs
//! what production runs; no module constructs another module's service.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::auth::AuthService;
use crate::card::{self, CardMetrics, CardService};
use crate::kernel::Partners;
use crate::kyc::{self, Compliance, KycService};
use crate::ledger::{
    EngineConfig, EngineMetrics, ExpiryConfig, Ledger, LedgerService, LedgerSettings,
    VerifyMetrics, VerifyReport,
};
use crate::notify::{self, Notifier, NotifyMetrics, Outbox, TransactionalOutbox};
use crate::payment::{Collaborators, PaymentMetrics, PaymentService, Rail, RailKind, SandboxRail};
use crate::platform::db::{Db, LockKey, namespaces};
use crate::platform::idempotency;
use crate::platform::metrics::Metrics;
use crate::platform::shared_state::SharedState;
use crate::platform::workers::{Shutdown, Workers};
use crate::settings::Settings;
use crate::wallet::{WalletService, Wallets};

/// Where a verification of the books takes its lock and reads.
struct VerifyPools {
    lock: Db,
    read: Db,
}

/// Every service of the product, wired. The concrete services are here for their own
/// module's routes and for operators; modules hold each other only as trait objects.
#[derive(Clone)]
pub struct Services {
    pub db: Db,
    pub ledger: LedgerService,
    pub auth: Arc<AuthService>,
    pub kyc: KycService,
    pub wallets: WalletService,
    pub payments: PaymentService,
    pub cards: CardService,
    pub notifier: Notifier,
}

impl Services {
    /// Builds every service over `db` and `shared`. The ledger's posting engine runs in
    /// `workers` (so whoever builds services — `serve`, an admin verb, a test — gets a ledger
    /// that posts); `metrics` only where they are published (`serve`).
    pub fn build(
        settings: &Settings,
        db: &Db,
        shared: &SharedState,
        workers: &mut Workers,
        metrics: Option<&Metrics>,
    ) -> anyhow::Result<Services> {
        let engine_metrics = metrics
            .map(|m| EngineMetrics::new(m.registry()))
            .transpose()
            .context("registering the ledger metrics")?;
        let (ledger, engine) =
            LedgerService::new(db.clone(), engine_config(&settings.ledger), engine_metrics);
        workers.spawn("ledger-engine", |shutdown| engine.run(shutdown));
        let outbox: Arc<dyn Outbox> = Arc::new(TransactionalOutbox);
        let auth = AuthService::new(
            db.clone(),
            shared.clone(),
            &settings.auth,
            &settings.rate_limit,
            settings.server.trust_forwarded_for,
            outbox.clone(),
        )
        .context("configuring auth")?;
        let notifier = notifier(settings, db, metrics)?;
        let kyc = KycService::new(
            db.clone(),
            &settings.kyc,
            kyc::system_clock(),
            outbox.clone(),
        )
        .context("configuring KYC (kyc.*)")?;

        let ledger_face: Arc<dyn Ledger> = Arc::new(ledger.clone());
        let compliance: Arc<dyn Compliance> = Arc::new(kyc.clone());
        let wallets = WalletService::new(
            db.clone(),
            ledger_face.clone(),
            compliance.clone(),
            outbox.clone(),
        );
        let wallet_face: Arc<dyn Wallets> = Arc::new(wallets.clone());
        let card_metrics = metrics
            .map(|m| CardMetrics::new(m.registry()))
            .transpose()
            .context("registering the card metrics")?;
        let cards = CardService::new(
            db.clone(),
            &settings.cards,
            card::Collaborators {
                ledger: ledger_face.clone(),
                wallets: wallet_face.clone(),
                kyc: compliance.clone(),
                outbox: outbox.clone(),
            },
            card_metrics,
            &settings.webhooks,
        )
        .context("configuring cards (cards.*)")?;
        let payment_metrics = metrics
            .map(|m| PaymentMetrics::new(m.registry()))
            .transpose()
            .context("registering the payment metrics")?;
        let payments = PaymentService::new(
            db.clone(),
            Collaborators {
                ledger: ledger_face,
                wallets: wallet_face,
                kyc: compliance,
                outbox,
            },
            payment_metrics,
            rail(settings)?,
            settings.payments.settlement_batch,
        );
        Ok(Services {
            db: db.clone(),
            ledger,
            auth: Arc::new(auth),
            kyc,
            wallets,
            payments,
            cards,
            notifier,
        })
    }

    /// The kernel's [`Partners`] face (implemented by auth), for modules that ask about a
    /// partner.
    pub fn partners(&self) -> Arc<dyn Partners> {
        self.auth.clone()
    }

    /// The background work of `serve`: expiry of pending transfers, outbox delivery, purge
    /// of old idempotency keys, periodic verification of the books, withdrawal settlement.
    /// They run on `background`, the workers' own pool (`database.worker_pool_size`), so
    /// none of them can take a request's connection; the ledger's checks read `replica`
    /// when one is configured.
    pub fn spawn_background(
        &self,
        settings: &Settings,
        workers: &mut Workers,
        metrics: &Metrics,
        background: &Db,
        replica: Option<&Db>,
    ) -> anyhow::Result<()> {
        let expiry = ExpiryConfig {
            interval: settings.ledger.expiry_interval,
            batch: settings.ledger.expiry_batch,
        };
        let expiring = self.ledger.clone();
        let claims = background.clone();
        workers.spawn("ledger-expiry", move |shutdown| {
            expiring.run_expiry(expiry, claims, shutdown)
        });
        let outbox = self.notifier.on_pool(background.clone());
        workers.spawn("outbox", move |shutdown| outbox.run(shutdown));
        let keys = background.clone();
        workers.spawn("idempotency-purge", move |shutdown| {
            idempotency::run_purge(keys, shutdown)
        });
        let verify_metrics = VerifyMetrics::new(metrics.registry())
            .context("registering the ledger verification metrics")?;
        if let Some(interval) = settings.ledger.verify_interval {
            let services = self.clone();
            let pools = VerifyPools {
                lock: background.clone(),
                read: replica.unwrap_or(background).clone(),
            };
            workers.spawn("ledger-verify", move |shutdown| {
                services.run_verify(interval, pools, verify_metrics, shutdown)
            });
        }
        let holds = self.cards.clone();
        let hold_interval = settings.ledger.expiry_interval;
        let due_holds = background.clone();
        workers.spawn("card-hold-expiry", move |shutdown| {
            holds.run_expiry(hold_interval, due_holds, shutdown)
        });
        let settling = self.payments.clone();
        let due = background.clone();
        let settlement_interval = settings.payments.settlement_interval;
        workers.spawn("payment-settlement", move |shutdown| {
            settling.run_settlement(settlement_interval, due, shutdown)
        });
        Ok(())
    }

    /// Verifies the books: every ledger invariant, then every payment against its transfers.
    /// One verification runs at a time across replicas; with `wait` false, `None` when another
    /// is running (the periodic worker skips its turn), else this waits for it.
    pub async fn verify_books(&self, wait: bool) -> anyhow::Result<Option<VerifyReport>> {
        let pools = VerifyPools {
            lock: self.db.clone(),
            read: self.db.clone(),
        };
        self.verify_books_on(wait, &pools).await
    }

    /// [`Self::verify_books`] with the lock held through `pools.lock` and the ledger's checks
    /// read through `pools.read` (a replica keeps the long scans off the primary).
    async fn verify_books_on(
        &self,
        wait: bool,
        pools: &VerifyPools,
    ) -> anyhow::Result<Option<VerifyReport>> {
        let Some(_lock) = pools
            .lock
            .session_lock(LockKey::singleton(namespaces::VERIFICATION), wait)
            .await
            .context("taking the verification lock")?
        else {
            return Ok(None);
        };
        let mut report = self
            .ledger
            .verify_on(&pools.read)
            .await
            .context("verifying the ledger")?;
        self.payments
            .verify(&mut report)
            .await
            .context("verifying payments against the ledger")?;
        self.cards
            .verify(&mut report)
            .await
            .context("verifying card holds against the ledger")?;
        Ok(Some(report))
    }

    /// The periodic verification: every `interval` (the first within 10 s), on whichever
    /// replica gets the lock, logging each violation and publishing the count on /metrics.
    async fn run_verify(
        self,
        interval: Duration,
        pools: VerifyPools,
        metrics: VerifyMetrics,
        mut shutdown: Shutdown,
    ) {
        let mut wait = interval.min(Duration::from_secs(10));
        loop {
            tokio::select! {
                () = shutdown.requested() => return,
                () = tokio::time::sleep(wait) => {}
            }
            wait = interval;
            match self.verify_books_on(false, &pools).await {
                Ok(Some(report)) => {
                    report.log_violations();
                    metrics.record(&report);
                }
                Ok(None) => tracing::debug!("another replica is verifying the books"),
                Err(e) => {
                    tracing::error!(error.cause = %format!("{e:#}"), "verifying the books failed")
                }
            }
        }
    }
}

/// The outbox service (webhooks and email); `metrics` only where the worker runs.
fn notifier(settings: &Settings, db: &Db, metrics: Option<&Metrics>) -> anyhow::Result<Notifier> {
    let mailer = notify::mailer(
        settings.smtp_url(),
        &settings.smtp.from,
        &settings.smtp.mail_dir,
    )
    .context("configuring outgoing mail (smtp.*)")?;
    let metrics = metrics
        .map(|m| NotifyMetrics::new(m.registry()))
        .transpose()
        .context("registering the outbox metrics")?;
    Notifier::new(db.clone(), mailer, &settings.webhooks, metrics).context("configuring webhooks")
}

/// The payment rail the configuration names (`payments.rail`; production refuses the sandbox
/// unless `payments.allow_sandbox_rail` says otherwise, checked when the settings load).
fn rail(settings: &Settings) -> anyhow::Result<Arc<dyn Rail>> {
    Ok(match settings.payments.rail {
        RailKind::Sandbox => Arc::new(SandboxRail {
            delay: settings.payments.sandbox_settle_delay,
        }),
    })
}

/// The posting engine's tuning from configuration.
pub fn engine_config(settings: &LedgerSettings) -> EngineConfig {
    EngineConfig {
        batch_max_transfers: settings.batch_max_transfers,
        batch_linger: settings.batch_linger,
        queue_capacity: settings.queue_capacity,
        queue_max_bytes: settings.queue_max_bytes,
        enqueue_timeout: settings.enqueue_timeout,
        max_retries: settings.max_retries,
        pipeline_depth: settings.pipeline_depth,
    }
}

/// Runs `f` with every service over freshly started infrastructure (no migrations), then
/// stops the engine and the infrastructure: how each `flowlet admin` verb gets its services.
pub async fn with_services<T, F, Fut>(settings: &Settings, f: F) -> anyhow::Result<T>
where
    F: FnOnce(Services) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    use crate::platform::infra::{Infra, Migrate};
    let infra = Infra::start(&settings.database, &settings.redis, Migrate::Skip).await?;
    let mut workers = Workers::new();
    let result = match Services::build(settings, &infra.db, &infra.shared, &mut workers, None) {
        Ok(services) => f(services).await,
        Err(e) => Err(e),
    };
    workers.stop(settings.server.shutdown_timeout).await;
    infra.shutdown().await;
    result
}
