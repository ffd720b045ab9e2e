//! Wires the modules together and builds the actix App. `flowlet serve` and the test harness
//! both go through [`Application::build`], so tests exercise exactly what production runs.

use std::net::TcpListener;
use std::time::Duration;

use actix_web::dev::{Extensions, Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context;
use utoipa::OpenApi;

use crate::auth::{self, AuthService};
use crate::kyc::{self, KycService};
use crate::ledger::{self, EngineConfig, EngineMetrics, ExpiryConfig, LedgerService};
use crate::notify::{self, Notifier, NotifyMetrics};
use crate::payment::{self, PaymentMetrics, PaymentService, SandboxRail};
use crate::platform::config::LedgerSettings;
use crate::platform::config::Settings;
use crate::platform::docs;
use crate::platform::error::ApiError;
use crate::platform::http::{
    RequestContext, json_config, path_config, query_config, request_context,
};
use crate::platform::idempotency::{self, IdempotencyContext};
use crate::platform::infra::{Infra, Migrate};
use crate::platform::metrics::Metrics;
use crate::platform::ops::{self, OpsState};
use crate::platform::workers::Workers;
use crate::wallet::{self, WalletService};

/// Extra routes a caller adds beside the product's (the test harness's probe routes).
pub type ExtraRoutes = fn(&mut web::ServiceConfig);

/// The top of the OpenAPI document; each module merges its own paths into it.
#[derive(OpenApi)]
#[openapi(info(
    title = "Flowlet API",
    description = "Wallets, payments, cards, a double-entry ledger and KYC/AML for embedded-finance partners. \
                   Errors are RFC 9457 problem+json documents with a stable `code`; every response carries X-Request-Id."
))]
struct ApiDoc;

/// The complete OpenAPI document of this build.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc.merge(ops::OpsDoc::openapi());
    doc.merge(auth::openapi());
    doc.merge(ledger::openapi());
    doc.merge(notify::openapi());
    doc.merge(kyc::openapi());
    doc.merge(wallet::openapi());
    doc.merge(payment::openapi());
    doc
}

/// The auth service over running infrastructure (also used by `flowlet admin`).
pub fn auth_service(settings: &Settings, infra: &Infra) -> anyhow::Result<AuthService> {
    AuthService::new(
        infra.db.clone(),
        infra.shared.clone(),
        &settings.auth,
        &settings.rate_limit,
        settings.server.trust_forwarded_for,
    )
    .context("configuring auth")
}

/// The outbox service (webhooks and email) over running infrastructure (also used by
/// `flowlet admin`); `metrics` only where the worker runs.
pub fn notifier(
    settings: &Settings,
    infra: &Infra,
    metrics: Option<&Metrics>,
) -> anyhow::Result<Notifier> {
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
    Notifier::new(infra.db.clone(), mailer, &settings.webhooks, metrics)
        .context("configuring webhooks")
}

/// The KYC service over running infrastructure (also used by `flowlet admin`).
pub fn kyc_service(
    settings: &Settings,
    db: &crate::platform::db::Db,
) -> anyhow::Result<KycService> {
    KycService::new(db.clone(), &settings.kyc, kyc::system_clock())
        .context("configuring KYC (kyc.*)")
}

/// The payment service and the wallets it moves money between, over running infrastructure
/// (also used by `flowlet admin`); `metrics` only where requests are served.
pub fn payment_service(
    settings: &Settings,
    db: &crate::platform::db::Db,
    ledger: &LedgerService,
    metrics: Option<PaymentMetrics>,
) -> anyhow::Result<(WalletService, PaymentService)> {
    let kyc = kyc_service(settings, db)?;
    let wallets = WalletService::new(db.clone(), ledger.clone(), kyc.clone());
    let payments = PaymentService::new(
        db.clone(),
        ledger.clone(),
        wallets.clone(),
        kyc,
        metrics,
        std::sync::Arc::new(SandboxRail {
            delay: settings.payments.sandbox_settle_delay,
        }),
        settings.payments.settlement_batch,
    );
    Ok((wallets, payments))
}

/// Verifies the books: every ledger invariant, then every payment against its transfers.
/// One verification runs at a time across replicas; with `wait` false, `None` when another
/// is running (the periodic worker skips its turn), else this waits for it.
pub async fn verify_books(
    db: &crate::platform::db::Db,
    ledger: &LedgerService,
    payments: &PaymentService,
    wait: bool,
) -> anyhow::Result<Option<ledger::VerifyReport>> {
    let Some(_lock) = db
        .session_lock(
            crate::platform::db::LockKey::singleton(crate::platform::db::namespaces::VERIFICATION),
            wait,
        )
        .await
        .context("taking the verification lock")?
    else {
        return Ok(None);
    };
    let mut report = ledger.verify().await.context("verifying the ledger")?;
    payments
        .verify(&mut report)
        .await
        .context("verifying payments against the ledger")?;
    Ok(Some(report))
}

/// The periodic verification: every `interval` (the first within 10 s), on whichever replica
/// gets the lock, logging each violation and publishing the count on /metrics.
async fn run_verify(
    db: crate::platform::db::Db,
    ledger: LedgerService,
    payments: PaymentService,
    interval: Duration,
    metrics: ledger::VerifyMetrics,
    mut shutdown: crate::platform::workers::Shutdown,
) {
    let mut wait = interval.min(Duration::from_secs(10));
    loop {
        tokio::select! {
            () = shutdown.requested() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = interval;
        match verify_books(&db, &ledger, &payments, false).await {
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

/// A built, listening, not yet running service.
pub struct Application {
    port: u16,
    server: Server,
    infra: Infra,
    workers: Workers,
    shutdown_timeout: Duration,
}

impl Application {
    /// Starts the infrastructure, binds the listener and builds the HTTP server.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        Self::build_with(settings, None).await
    }

    /// As [`Application::build`], with extra routes mounted beside the product's.
    pub async fn build_with(
        settings: Settings,
        extra_routes: Option<ExtraRoutes>,
    ) -> anyhow::Result<Application> {
        crate::platform::tls::install_crypto_provider();
        let migrate = if settings.database.migrate_on_start {
            Migrate::Apply
        } else {
            Migrate::Skip
        };
        let infra = Infra::start(&settings, migrate).await?;
        let mut workers = Workers::new();
        match Self::assemble(&settings, &infra, &mut workers, extra_routes) {
            Ok((port, server)) => Ok(Application {
                port,
                server,
                infra,
                workers,
                shutdown_timeout: settings.server.shutdown_timeout,
            }),
            Err(err) => {
                workers.stop(settings.server.shutdown_timeout).await;
                infra.shutdown().await;
                Err(err)
            }
        }
    }

    /// Builds the modules, starts their background workers, and binds the HTTP server.
    fn assemble(
        settings: &Settings,
        infra: &Infra,
        workers: &mut Workers,
        extra_routes: Option<ExtraRoutes>,
    ) -> anyhow::Result<(u16, Server)> {
        let metrics = Metrics::new().context("creating the metrics registry")?;
        let engine_metrics =
            EngineMetrics::new(metrics.registry()).context("registering the ledger metrics")?;
        let (ledger, engine) = LedgerService::new(
            infra.db.clone(),
            engine_config(&settings.ledger),
            Some(engine_metrics),
        );
        workers.spawn("ledger-engine", |shutdown| engine.run(shutdown));
        let expiry = ExpiryConfig {
            interval: settings.ledger.expiry_interval,
            batch: settings.ledger.expiry_batch,
        };
        let expiring = ledger.clone();
        workers.spawn("ledger-expiry", move |shutdown| {
            expiring.run_expiry(expiry, shutdown)
        });
        let notifier = notifier(settings, infra, Some(&metrics))?;
        let outbox = notifier.clone();
        workers.spawn("outbox", move |shutdown| outbox.run(shutdown));
        let keys = infra.db.clone();
        workers.spawn("idempotency-purge", move |shutdown| {
            idempotency::run_purge(keys, shutdown)
        });
        Self::serve_on(
            settings,
            infra,
            workers,
            metrics,
            ledger,
            notifier,
            extra_routes,
        )
    }

    fn serve_on(
        settings: &Settings,
        infra: &Infra,
        workers: &mut Workers,
        metrics: Metrics,
        ledger: LedgerService,
        notifier: Notifier,
        extra_routes: Option<ExtraRoutes>,
    ) -> anyhow::Result<(u16, Server)> {
        let listener = TcpListener::bind(settings.server.bind)
            .with_context(|| format!("binding {} (server.bind)", settings.server.bind))?;
        let port = listener.local_addr()?.port();
        let auth = std::sync::Arc::new(auth_service(settings, infra)?);
        let partners: std::sync::Arc<dyn crate::kernel::Partners> = auth.clone();
        let partners = web::Data::from(partners);
        let auth = web::Data::from(auth);
        let ledger = web::Data::new(ledger);
        let notifier = web::Data::new(notifier);
        let kyc_svc = kyc_service(settings, &infra.db)?;
        let payment_metrics =
            PaymentMetrics::new(metrics.registry()).context("registering the payment metrics")?;
        let (wallets, payments) =
            payment_service(settings, &infra.db, ledger.get_ref(), Some(payment_metrics))?;
        let (wallets, payments) = (web::Data::new(wallets), web::Data::new(payments));
        let verify_metrics = ledger::VerifyMetrics::new(metrics.registry())
            .context("registering the ledger verification metrics")?;
        if let Some(interval) = settings.ledger.verify_interval {
            let (db, ledger, payments) = (
                infra.db.clone(),
                ledger.get_ref().clone(),
                payments.get_ref().clone(),
            );
            workers.spawn("ledger-verify", move |shutdown| {
                run_verify(db, ledger, payments, interval, verify_metrics, shutdown)
            });
        }
        let settling = payments.get_ref().clone();
        let settlement_interval = settings.payments.settlement_interval;
        workers.spawn("payment-settlement", move |shutdown| {
            settling.run_settlement(settlement_interval, shutdown)
        });
        let kyc = web::Data::new(kyc_svc);
        let spec = openapi();
        let spec_value = serde_json::to_value(&spec).context("serialising the OpenAPI document")?;
        let ops_state = web::Data::new(OpsState {
            db: infra.db.clone(),
            shared: infra.shared.clone(),
            metrics: metrics.clone(),
            openapi_json: spec_value.to_string(),
            docs_html: docs::render(&spec_value),
        });
        let body_limit = settings.server.body_limit_bytes;
        let ledger_body_limit = settings.ledger.max_request_bytes;
        let request_ctx = web::Data::new(RequestContext {
            metrics,
            body_limit_bytes: body_limit,
            large_bodies: vec![(
                ledger::TRANSFERS_ROUTE.to_owned(),
                settings.ledger.max_request_bytes,
            )],
        });
        let idempotency_ctx = web::Data::new(
            IdempotencyContext::new(infra.db.clone(), &settings.idempotency, idempotency_scope)
                .claiming_in_transaction(payment::CLAIMING_IN_TRANSACTION),
        );
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(ops_state.clone())
                .app_data(request_ctx.clone())
                .app_data(idempotency_ctx.clone())
                .app_data(auth.clone())
                .app_data(partners.clone())
                .app_data(ledger.clone())
                .app_data(notifier.clone())
                .app_data(kyc.clone())
                .app_data(wallets.clone())
                .app_data(payments.clone())
                .app_data(json_config(body_limit))
                .app_data(web::PayloadConfig::new(body_limit))
                .app_data(query_config())
                .app_data(path_config())
                // The last `wrap` runs first: request context, then authentication, then
                // idempotency (which needs the authenticated principal), then the handler.
                .wrap(from_fn(idempotency::idempotency))
                .wrap(from_fn(auth::authenticate))
                .wrap(from_fn(request_context))
                .configure(ops::configure)
                .configure(auth::configure)
                .configure(|cfg| ledger::configure(cfg, ledger_body_limit))
                .configure(notify::configure)
                .configure(kyc::configure)
                .configure(wallet::configure)
                .configure(payment::configure)
                .configure(|cfg| {
                    if let Some(extra) = extra_routes {
                        extra(cfg);
                    }
                })
                .default_service(web::to(not_found))
        })
        .disable_signals()
        .shutdown_timeout(settings.server.shutdown_timeout.as_secs());
        if let Some(workers) = settings.server.workers {
            server = server.workers(workers);
        }
        let server = server
            .listen(listener)
            .context("listening on the bound socket")?
            .run();
        Ok((port, server))
    }

    /// The port actually bound (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle to stop the server gracefully from another task (signal handling, tests).
    pub fn server_handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until stopped, then stops the workers, the pool and the embedded PostgreSQL, in
    /// that order.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let served = self.server.await.context("running the HTTP server");
        tracing::info!("HTTP server stopped; stopping background workers");
        self.workers.stop(self.shutdown_timeout).await;
        self.infra.shutdown().await;
        tracing::info!("shutdown complete");
        served
    }
}

/// Idempotency keys are scoped to the caller's partner; platform admins act for no partner,
/// so theirs are scoped to the acting user or API key.
fn idempotency_scope(extensions: &Extensions) -> Option<uuid::Uuid> {
    let principal = extensions.get::<crate::kernel::Principal>()?;
    Some(match (principal.partner_id, principal.actor) {
        (Some(partner), _) => partner.uuid(),
        (None, crate::kernel::Actor::User(user)) => user.uuid(),
        (None, crate::kernel::Actor::ApiKey(key)) => key.uuid(),
    })
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found("No resource exists at this path."))
}
