//! The platform's own routes, for orchestrators and operators: liveness, readiness, metrics,
//! and the API description (`/openapi.json`, `/docs`). No authentication: they expose no
//! partner data, and the NetworkPolicy keeps `/metrics` to Prometheus.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::ContentType;
use actix_web::{HttpResponse, web};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::platform::db::{Db, migration_status};
use crate::platform::error::{ApiError, ProblemBody};
use crate::platform::metrics::Metrics;
use crate::platform::shared_state::{Backend, SharedState};

/// How long a readiness check waits for each dependency.
const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What the platform routes need.
pub struct OpsState {
    /// The requests' pool (its usage is published on /metrics).
    pub db: Db,
    /// `/ready`'s own connection (a pool of one, never the requests'): a saturated request
    /// pool or a slow worker cannot make readiness wait, and readiness never takes a
    /// connection a request needs.
    pub probe: Db,
    /// Set once the process begins to shut down: `/ready` answers 503 so no new traffic comes.
    pub draining: Arc<AtomicBool>,
    pub shared: SharedState,
    pub metrics: Metrics,
    /// The OpenAPI document, serialised once at start-up.
    pub openapi_json: String,
    /// `/docs`, rendered once at start-up.
    pub docs_html: String,
}

/// Registers the platform routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/health").route(web::get().to(health)))
        .service(web::resource("/ready").route(web::get().to(ready)))
        .service(web::resource("/metrics").route(web::get().to(metrics)))
        .service(web::resource("/openapi.json").route(web::get().to(openapi)))
        .service(web::resource("/docs").route(web::get().to(docs)));
}

/// The platform routes' part of the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(health, ready, metrics, openapi, docs),
    components(schemas(Health, Readiness, Check, ProblemBody)),
    tags((name = "platform", description = "Liveness, readiness, metrics and this description."))
)]
pub struct OpsDoc;

/// `GET /health` body.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`: the process is alive and serving.
    pub status: &'static str,
}

/// `GET /ready` body: one check per dependency.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` when no check is `down`.
    pub status: &'static str,
    pub checks: Checks,
}

#[derive(Serialize, ToSchema)]
pub struct Checks {
    pub database: Check,
    pub migrations: Check,
    pub redis: Check,
}

/// One dependency's state.
#[derive(Serialize, ToSchema)]
pub struct Check {
    /// `up`, `down`; for migrations also `unknown` (the database did not answer); for Redis
    /// also `degraded` (configured but unreachable: rate limits run
    /// per replica, the service stays ready) and `in_process` (none configured). Only words:
    /// `/ready` answers anyone, so why a dependency is down (which can name hosts and users)
    /// goes to the log, never into the response.
    pub status: &'static str,
}

impl Check {
    fn up() -> Self {
        Self { status: "up" }
    }

    /// Down, with the reason logged.
    fn down(what: &str, why: impl std::fmt::Display) -> Self {
        tracing::warn!(ready.check = what, error.cause = %why, "readiness check failed");
        Self { status: "down" }
    }

    /// Degraded, with the reason logged.
    fn degraded(what: &str, why: impl std::fmt::Display) -> Self {
        tracing::warn!(ready.check = what, error.cause = %why, "readiness check degraded");
        Self { status: "degraded" }
    }

    fn is_ok(&self) -> bool {
        self.status != "down"
    }
}

/// Liveness: the process is up and its HTTP workers answer. Never touches a dependency, so a
/// database outage does not make the orchestrator restart healthy pods.
#[utoipa::path(get, path = "/health", tag = "platform",
    responses((status = 200, description = "The process is alive.", body = Health)))]
pub async fn health() -> web::Json<Health> {
    web::Json(Health { status: "ok" })
}

/// Readiness: whether THIS pod can serve. 503 (taking it out of the load balancer) only for
/// what is the pod's own: it is shutting down, or the schema lacks a migration this binary
/// needs. An outage every pod shares (the database or Redis down) is reported in the checks
/// but keeps the pod ready: out of rotation, every pod at once, the fleet could not even
/// answer 503 problem+json, and drains would block; the alerts on `database_up` and
/// `shared_state_backend_up` say it instead. Checked over its own one-connection pool.
#[utoipa::path(get, path = "/ready", tag = "platform",
    responses(
        (status = 200, description = "Ready to serve.", body = Readiness),
        (status = 503, description = "This instance is shutting down, or the database lacks a migration it needs; the body lists the checks.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn ready(state: web::Data<OpsState>) -> Result<web::Json<Readiness>, ApiError> {
    if state.draining.load(Ordering::Relaxed) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "This instance is shutting down.",
        ));
    }
    let database = match tokio::time::timeout(READY_CHECK_TIMEOUT, state.probe.ping()).await {
        Ok(Ok(())) => Check::up(),
        Ok(Err(e)) => Check::down("database", e),
        Err(_) => Check::down("database", "timed out"),
    };
    let migrations = if database.is_ok() {
        match tokio::time::timeout(READY_CHECK_TIMEOUT, migration_status(&state.probe)).await {
            Ok(Ok(status)) if status.pending.is_empty() => Check::up(),
            Ok(Ok(status)) => Check::down(
                "migrations",
                format!("pending: {}", status.pending.join(", ")),
            ),
            Ok(Err(e)) => Check::down("migrations", e),
            Err(_) => Check::down("migrations", "timed out"),
        }
    } else {
        // Unknown while the database does not answer: not a reason to take the pod out.
        Check { status: "unknown" }
    };
    let redis = match state.shared.backend() {
        Backend::InProcess => Check {
            status: "in_process",
        },
        // Redis down is not a reason to take the pod out: limits fall back to this process.
        Backend::Redis => {
            match tokio::time::timeout(READY_CHECK_TIMEOUT, state.shared.ping()).await {
                Ok(Ok(())) => Check::up(),
                Ok(Err(e)) => Check::degraded("redis", e),
                Err(_) => Check::degraded("redis", "timed out"),
            }
        }
    };
    let checks = Checks {
        database,
        migrations,
        redis,
    };
    state
        .metrics
        .set_dependencies(checks.database.is_ok(), !state.shared.is_degraded());
    // Only a missing migration (seen on a database that answers) is this pod's own problem.
    if checks.migrations.status != "down" {
        return Ok(web::Json(Readiness {
            status: "ready",
            checks,
        }));
    }
    let checks = serde_json::to_value(&checks).unwrap_or(Value::Object(Map::new()));
    tracing::warn!(checks = %checks, "not ready");
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "not_ready",
        "A dependency of the service is unavailable.",
    )
    .with_extension("checks", checks))
}

/// Prometheus text exposition (format 0.0.4).
#[utoipa::path(get, path = "/metrics", tag = "platform",
    responses((status = 200, description = "Metrics in Prometheus text format.", body = String, content_type = "text/plain")))]
pub async fn metrics(state: web::Data<OpsState>) -> Result<HttpResponse, ApiError> {
    state
        .metrics
        .set_shared_state_up(!state.shared.is_degraded());
    let text = state
        .metrics
        .render(state.db.usage())
        .map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text))
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", tag = "platform",
    responses((status = 200, description = "The OpenAPI document.", body = Object)))]
pub async fn openapi(state: web::Data<OpsState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(state.openapi_json.clone())
}

/// Human-readable API reference, rendered from the OpenAPI document; self-contained HTML.
#[utoipa::path(get, path = "/docs", tag = "platform",
    responses((status = 200, description = "The API reference as HTML.", body = String, content_type = "text/html")))]
pub async fn docs(state: web::Data<OpsState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::html())
        .body(state.docs_html.clone())
}
