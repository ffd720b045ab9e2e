//! The command line: `flowlet serve`, `flowlet migrate`, `flowlet admin ...`.
//!
//! Every command reads the same configuration as `serve`. Admin verbs print a human table, or
//! JSON with `--json`, and exit non-zero on failure. Later modules add their verbs to
//! [`AdminCommand`].

mod admin;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::platform::telemetry;
use crate::settings::{MigrationSettings, Settings};

/// Flowlet core: wallets, payments, cards, ledger, KYC/AML and auth for embedded-finance
/// partners.
///
/// Configuration comes from config/default.toml, config/$FLOWLET_ENV.toml and
/// FLOWLET__SECTION__KEY environment variables (see README.md). With no database URL, a
/// private PostgreSQL is started from the system's binaries in database.embedded_dir.
#[derive(Debug, Parser)]
#[command(name = "flowlet", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API and the background workers until SIGTERM or SIGINT.
    ///
    /// Applies pending migrations first unless database.migrate_on_start is false. On a
    /// signal: stop accepting, let in-flight requests finish (server.shutdown_timeout_secs),
    /// stop the workers, then the embedded PostgreSQL if one was started.
    Serve,
    /// Apply pending database migrations and exit. Safe to run from several places at once.
    Migrate,
    /// Operator commands (human table output, or JSON with --json).
    #[command(subcommand)]
    Admin(admin::AdminCommand),
}

/// The configuration a command reads.
enum Loaded {
    All(Box<Settings>),
    Migrate(Box<MigrationSettings>),
}

/// Parses the command line, runs the command, and turns the outcome into an exit code.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    // `migrate` reads only what it needs (the hook Job has only the database URL).
    let loaded = match cli.command {
        Command::Migrate => MigrationSettings::load().map(|s| Loaded::Migrate(Box::new(s))),
        Command::Serve | Command::Admin(_) => Settings::load().map(|s| Loaded::All(Box::new(s))),
    };
    let loaded = match loaded {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("flowlet: {err}");
            return ExitCode::from(2);
        }
    };
    let (log, runtime_threads) = match &loaded {
        Loaded::All(settings) => (&settings.log, settings.server.runtime_threads),
        Loaded::Migrate(settings) => (&settings.log, None),
    };
    telemetry::init(log);
    crate::platform::tls::install_crypto_provider();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // Unset, tokio takes one thread per CPU the process may use (a cgroup CPU limit counts).
    if let Some(threads) = runtime_threads {
        builder.worker_threads(threads);
    }
    let runtime = match builder.enable_all().thread_name("flowlet-main").build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("flowlet: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match (cli.command, loaded) {
            (Command::Serve, Loaded::All(settings)) => serve::serve(*settings).await,
            (Command::Migrate, Loaded::Migrate(settings)) => serve::migrate(*settings).await,
            (Command::Admin(command), Loaded::All(settings)) => {
                admin::run(command, *settings).await
            }
            _ => Err(anyhow::anyhow!(
                "the configuration read does not fit the command"
            )),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error.cause = format!("{err:#}"), "command failed");
            eprintln!("flowlet: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_explains_every_command() {
        let help = Cli::command().render_long_help().to_string();
        for word in ["serve", "migrate", "admin"] {
            assert!(help.contains(word), "{help}");
        }
    }
}
