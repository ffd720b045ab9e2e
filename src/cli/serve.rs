//! `flowlet serve` and `flowlet migrate`.

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};

use crate::app::Application;
use crate::platform::config::RedisSettings;
use crate::platform::infra::{Infra, Migrate};
use crate::settings::{MigrationSettings, Settings};

/// Runs the service until SIGTERM or SIGINT, then shuts down in order.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let app = Application::build(settings.clone()).await?;
    tracing::info!(
        server.bind = %settings.server.bind,
        server.port = app.port(),
        "serving the Flowlet API"
    );
    let handle = app.server_handle();
    let draining = app.drain_switch();
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
            _ = interrupt.recv() => tracing::info!(signal = "SIGINT", "shutting down"),
        }
        // Readiness goes 503 first (the chart's preStop sleep has let the endpoints drop this
        // pod already), then stop accepting and finish in-flight requests within
        // server.shutdown_timeout.
        draining.store(true, std::sync::atomic::Ordering::Relaxed);
        handle.stop(true).await;
    });
    app.run_until_stopped().await
}

/// Applies pending migrations and exits.
pub async fn migrate(settings: MigrationSettings) -> anyhow::Result<()> {
    // No Redis: migrating needs none, and the Job is given no Redis URL.
    let no_redis = RedisSettings {
        url: None,
        key_prefix: String::new(),
        pool_size: 1,
        ca_file: None,
    };
    let infra = Infra::start(&settings.database, &no_redis, Migrate::Skip).await?;
    let applied = infra.migrate().await;
    infra.shutdown().await;
    let applied = applied?;
    if applied.is_empty() {
        println!("No pending migrations.");
    } else {
        println!("Applied {} migration(s):", applied.len());
        for version in applied {
            println!("  {version}");
        }
    }
    Ok(())
}
