//! `flowlet admin ...`: the operator's verbs. Each prints a human table, or JSON with
//! `--json`, and exits non-zero on failure.

mod api_keys;
mod cards;
mod config;
mod kyc;
mod ledger;
mod outbox;
mod partners;
mod sanctions;
mod users;
mod wallets;
mod webhooks;

use std::io::BufRead;

use anyhow::Context;
use clap::Subcommand;
use secrecy::SecretString;
use serde::Serialize;

use crate::auth::{AuthService, Caller};
use crate::kyc::KycService;
use crate::notify::Notifier;
use crate::settings::Settings;
use crate::wiring::with_services;

pub use api_keys::ApiKeyCommand;
pub use cards::CardsCommand;
pub use kyc::KycCommand;
pub use ledger::LedgerCommand;
pub use outbox::OutboxCommand;
pub use partners::PartnerCommand;
pub use sanctions::SanctionsCommand;
pub use users::UserCommand;
pub use wallets::WalletCommand;
pub use webhooks::WebhooksCommand;

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// List the database migrations this binary knows, applied and pending.
    Migrations {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the effective configuration, with secrets shown only as set/unset.
    Config {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Create the first platform admin; the password is read from stdin. Runs once.
    Bootstrap {
        #[arg(long)]
        email: String,
        #[arg(long)]
        json: bool,
    },
    /// Partners (tenants).
    #[command(subcommand)]
    Partner(PartnerCommand),
    /// A partner's API keys.
    #[command(subcommand, name = "api-key")]
    ApiKey(ApiKeyCommand),
    /// A partner's users.
    #[command(subcommand)]
    User(UserCommand),
    /// The ledger's books.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Webhook deliveries.
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
    /// The outbox of webhooks and emails.
    #[command(subcommand)]
    Outbox(OutboxCommand),
    /// KYC applications and personal-data keys.
    #[command(subcommand)]
    Kyc(KycCommand),
    /// Sanctions screening lists.
    #[command(subcommand)]
    Sanctions(SanctionsCommand),
    /// Customers' wallets.
    #[command(subcommand)]
    Wallet(WalletCommand),
    /// Any partner's card (freeze, unfreeze, cancel) and the card vault.
    #[command(subcommand, name = "card", visible_alias = "cards")]
    Cards(CardsCommand),
}

/// Runs one admin verb.
pub async fn run(command: AdminCommand, settings: Settings) -> anyhow::Result<()> {
    match command {
        AdminCommand::Migrations { json } => config::run_migrations(&settings, json).await,
        AdminCommand::Config { json } => config::run_config(&settings, json),
        AdminCommand::Bootstrap { email, json } => {
            users::run_bootstrap(email, json, &settings).await
        }
        AdminCommand::Partner(command) => partners::run_partner(command, &settings).await,
        AdminCommand::ApiKey(command) => api_keys::run_api_key(command, &settings).await,
        AdminCommand::User(command) => users::run_user(command, &settings).await,
        AdminCommand::Ledger(command) => ledger::run_ledger(command, &settings).await,
        AdminCommand::Webhooks(command) => webhooks::run_webhooks(command, &settings).await,
        AdminCommand::Outbox(command) => outbox::run_outbox(command, &settings).await,
        AdminCommand::Kyc(command) => kyc::run_kyc(command, &settings).await,
        AdminCommand::Sanctions(command) => sanctions::run_sanctions(command, &settings).await,
        AdminCommand::Wallet(command) => wallets::run_wallet(command, &settings).await,
        AdminCommand::Cards(command) => cards::run_cards(command, &settings).await,
    }
}

/// Runs `f` with the auth service over started infrastructure, then shuts it down.
async fn with_auth<T, F, Fut>(settings: &Settings, f: F) -> anyhow::Result<T>
where
    F: FnOnce(AuthService) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    with_services(settings, |s| f((*s.auth).clone())).await
}

/// Who runs the command, for the audit log.
fn operator_name() -> String {
    std::env::var("USER").unwrap_or_else(|_| "operator".to_owned())
}

/// The actor a change made from the CLI is kept under: `operator:<name>`.
fn operator_actor() -> String {
    format!("operator:{}", operator_name())
}

fn operator() -> Caller {
    Caller::Operator(operator_name())
}

/// The first line of stdin, without its newline: passwords never go on the command line,
/// where `ps` and shell history would show them.
fn read_password() -> anyhow::Result<SecretString> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    let password = line.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        anyhow::bail!(
            "no password on stdin (e.g. `printf '%s\\n' \"$PASSWORD\" | flowlet admin ...`)"
        );
    }
    Ok(SecretString::from(password))
}

fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Runs `f` with the outbox service over started infrastructure (no worker is started).
async fn with_notifier<T, F, Fut>(settings: &Settings, f: F) -> anyhow::Result<T>
where
    F: FnOnce(Notifier) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    with_services(settings, |s| f(s.notifier)).await
}

/// Runs `f` with the KYC and auth services over started infrastructure, then shuts it down.
async fn with_kyc<T, F, Fut>(settings: &Settings, f: F) -> anyhow::Result<T>
where
    F: FnOnce(KycService, AuthService) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    with_services(settings, |s| f(s.kyc, (*s.auth).clone())).await
}

/// A plain text table with aligned columns, for humans at a terminal.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| -> String {
        let mut out = cells
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    };
    let mut out = line(&mut headers.iter().copied());
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &["KEY", "VALUE"],
            &[
                vec!["a".into(), "1".into()],
                vec!["longer".into(), "2".into()],
            ],
        );
        assert_eq!(t, "KEY     VALUE\na       1\nlonger  2\n");
    }
}
