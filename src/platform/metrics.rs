//! Prometheus metrics, served as text at `/metrics`.
//!
//! One registry per application instance (not a process global), so parallel tests and several
//! apps in one process never mix their counters. Labels are always bounded sets: the route
//! template (`/v1/wallets/{id}`), never the raw path. Durations are seconds as `f64`, which is
//! what the exposition format wants; money never goes through here.

use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Connection counts of a pool at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolUsage {
    pub active: usize,
    pub idle: usize,
    /// The most connections the pool opens.
    pub max: usize,
}

/// The platform's own metrics; modules register theirs on [`Metrics::registry`].
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    http_requests_total: IntCounterVec,
    http_request_duration_seconds: HistogramVec,
    database_connections_active: IntGauge,
    database_connections_idle: IntGauge,
    database_connections_max: IntGauge,
    database_up: IntGauge,
    shared_state_backend_up: IntGauge,
}

impl Metrics {
    /// Creates the registry and the platform metrics.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let http_requests_total = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests served, by route template and status.",
            ),
            &["method", "route", "status"],
        )?;
        let http_request_duration_seconds = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time from receiving a request to producing its response, by route template.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["method", "route"],
        )?;
        let database_connections_active = IntGauge::new(
            "database_connections_active",
            "Database connections currently lent out by the pool.",
        )?;
        let database_connections_idle = IntGauge::new(
            "database_connections_idle",
            "Open database connections waiting in the pool.",
        )?;
        registry.register(Box::new(http_requests_total.clone()))?;
        registry.register(Box::new(http_request_duration_seconds.clone()))?;
        registry.register(Box::new(database_connections_active.clone()))?;
        let database_connections_max = IntGauge::new(
            "database_connections_max",
            "The most database connections the pool opens (saturation: active / max).",
        )?;
        registry.register(Box::new(database_connections_idle.clone()))?;
        registry.register(Box::new(database_connections_max.clone()))?;
        let database_up = IntGauge::new(
            "database_up",
            "1 when the database answered the last readiness check, 0 when it did not.",
        )?;
        let shared_state_backend_up = IntGauge::new(
            "shared_state_backend_up",
            "1 when Redis answers (or none is configured), 0 while limits run in-process.",
        )?;
        database_up.set(1);
        shared_state_backend_up.set(1);
        registry.register(Box::new(database_up.clone()))?;
        registry.register(Box::new(shared_state_backend_up.clone()))?;
        Ok(Self {
            registry,
            http_requests_total,
            http_request_duration_seconds,
            database_connections_active,
            database_connections_idle,
            database_connections_max,
            database_up,
            shared_state_backend_up,
        })
    }

    /// What the last readiness check found of the shared dependencies.
    pub fn set_dependencies(&self, database_up: bool, shared_state_up: bool) {
        self.database_up.set(i64::from(database_up));
        self.set_shared_state_up(shared_state_up);
    }

    /// Whether Redis answers (or none is configured), as of now.
    pub fn set_shared_state_up(&self, up: bool) {
        self.shared_state_backend_up.set(i64::from(up));
    }

    /// The registry modules add their own metrics to.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Counts one served request.
    pub fn observe_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let status = status.to_string();
        self.http_requests_total
            .with_label_values(&[method, route, status.as_str()])
            .inc();
        self.http_request_duration_seconds
            .with_label_values(&[method, route])
            .observe(elapsed.as_secs_f64());
    }

    /// The exposition text, with the pool gauges read at scrape time.
    pub fn render(&self, pool: PoolUsage) -> Result<String, prometheus::Error> {
        self.database_connections_active
            .set(i64::try_from(pool.active).unwrap_or(i64::MAX));
        self.database_connections_idle
            .set(i64::try_from(pool.idle).unwrap_or(i64::MAX));
        self.database_connections_max
            .set(i64::try_from(pool.max).unwrap_or(i64::MAX));
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        String::from_utf8(buffer).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_text_holds_every_platform_metric() {
        let metrics = Metrics::new().unwrap();
        metrics.observe_request("GET", "/health", 200, Duration::from_millis(3));
        let text = metrics
            .render(PoolUsage {
                active: 2,
                idle: 5,
                max: 16,
            })
            .unwrap();
        assert!(
            text.contains(r#"http_requests_total{method="GET",route="/health",status="200"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("http_request_duration_seconds_bucket"),
            "{text}"
        );
        assert!(text.contains("database_connections_active 2"), "{text}");
        assert!(text.contains("database_connections_idle 5"), "{text}");
        assert!(text.contains("database_connections_max 16"), "{text}");
    }
}
