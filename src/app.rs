//! Builds the actix App over the services the composition root ([`crate::wiring`]) wires.
//! `flowlet serve` and the test harness
//! both go through [`Application::build`], so tests exercise exactly what production runs.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use actix_web::dev::{Extensions, Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context;
use utoipa::OpenApi;

use crate::auth;
use crate::card;
use crate::kyc;
use crate::ledger;
use crate::notify;
use crate::payment;
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
use crate::settings::Settings;
use crate::wallet;
use crate::wiring::Services;

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
    doc.merge(card::openapi());
    doc
}

/// A built, listening, not yet running service.
pub struct Application {
    port: u16,
    server: Server,
    infra: Infra,
    workers: Workers,
    shutdown_timeout: Duration,
    draining: Arc<AtomicBool>,
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
        let infra = Infra::start(&settings.database, &settings.redis, migrate).await?;
        let mut workers = Workers::new();
        let draining = Arc::new(AtomicBool::new(false));
        match Self::assemble(&settings, &infra, &mut workers, extra_routes, &draining) {
            Ok((port, server)) => Ok(Application {
                port,
                server,
                infra,
                workers,
                shutdown_timeout: settings.server.shutdown_timeout,
                draining,
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
        draining: &Arc<AtomicBool>,
    ) -> anyhow::Result<(u16, Server)> {
        let metrics = Metrics::new().context("creating the metrics registry")?;
        let services =
            Services::build(settings, &infra.db, &infra.shared, workers, Some(&metrics))?;
        services.spawn_background(
            settings,
            workers,
            &metrics,
            &infra.worker_db,
            infra.replica_db.as_ref(),
        )?;
        let listener = TcpListener::bind(settings.server.bind)
            .with_context(|| format!("binding {} (server.bind)", settings.server.bind))?;
        let port = listener.local_addr()?.port();
        let partners = web::Data::from(services.partners());
        let auth = web::Data::from(services.auth.clone());
        let ledger = web::Data::new(services.ledger.clone());
        let notifier = web::Data::new(services.notifier.clone());
        let kyc = web::Data::new(services.kyc.clone());
        let wallets = web::Data::new(services.wallets.clone());
        let payments = web::Data::new(services.payments.clone());
        let cards = web::Data::new(services.cards.clone());
        let spec = openapi();
        let spec_value = serde_json::to_value(&spec).context("serialising the OpenAPI document")?;
        let ops_state = web::Data::new(OpsState {
            db: infra.db.clone(),
            probe: infra.probe_db.clone(),
            draining: draining.clone(),
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
                .claiming_in_transaction(
                    &[
                        payment::CLAIMING_IN_TRANSACTION,
                        card::CLAIMING_IN_TRANSACTION,
                    ]
                    .concat(),
                ),
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
                .app_data(cards.clone())
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
                .configure(card::configure)
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

    /// Marks the instance as shutting down: `/ready` answers 503 from now on.
    pub fn drain_switch(&self) -> Arc<AtomicBool> {
        self.draining.clone()
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
