//! `admin ledger ...`: verifying every ledger invariant, and the trial balance.

use anyhow::Context;
use clap::Subcommand;

use super::{print_json, table};
use crate::platform::money::Currency;
use crate::settings::Settings;
use crate::wiring::with_services;

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Check every ledger invariant, recomputed from the entries; exit 1 with a report on any
    /// violation.
    Verify {
        #[arg(long)]
        json: bool,
    },
    /// Debit and credit totals per currency and account code.
    TrialBalance {
        /// Only this currency (ISO 4217).
        #[arg(long)]
        currency: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

pub(super) async fn run_ledger(command: LedgerCommand, settings: &Settings) -> anyhow::Result<()> {
    with_services(settings, |services| async move {
        let ledger = &services.ledger;
        match command {
            LedgerCommand::Verify { json } => {
                let report = services
                    .verify_books(true)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("the verification lock was not granted"))?;
                let violations = &report.violations;
                if json {
                    print_json(&serde_json::json!({
                        "ok": report.is_sound(),
                        "checks": report.checks,
                        "violations": violations,
                    }))?;
                } else {
                    let checks: Vec<Vec<String>> = report
                        .checks
                        .iter()
                        .map(|c| {
                            let result = if c.violations == 0 {
                                "ok".to_owned()
                            } else {
                                format!("{} violation(s)", c.violations)
                            };
                            vec![c.name.to_owned(), result, c.about.to_owned()]
                        })
                        .collect();
                    print!("{}", table(&["CHECK", "RESULT", "WHAT IT GUARDS"], &checks));
                    if report.is_sound() {
                        println!("Ledger verified: every invariant holds.");
                    } else {
                        let rows: Vec<Vec<String>> = violations
                            .iter()
                            .map(|v| vec![v.check.clone(), v.subject.clone(), v.detail.clone()])
                            .collect();
                        print!("{}", table(&["CHECK", "SUBJECT", "DETAIL"], &rows));
                    }
                }
                if !report.is_sound() {
                    anyhow::bail!("{} ledger invariant violation(s)", violations.len());
                }
                Ok(())
            }
            LedgerCommand::TrialBalance { currency, json } => {
                let currency = currency
                    .map(|c| Currency::parse(&c))
                    .transpose()
                    .context("--currency is not an ISO 4217 code")?;
                let rows = ledger.trial_balance(currency).await?;
                if json {
                    print_json(&rows)?;
                } else {
                    let lines: Vec<Vec<String>> = rows
                        .iter()
                        .map(|r| {
                            vec![
                                r.currency.clone(),
                                r.code.to_string(),
                                r.accounts.to_string(),
                                r.debits_posted.clone(),
                                r.credits_posted.clone(),
                                r.debits_pending.clone(),
                                r.credits_pending.clone(),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        table(
                            &[
                                "CURRENCY",
                                "CODE",
                                "ACCOUNTS",
                                "DEBITS POSTED",
                                "CREDITS POSTED",
                                "DEBITS PENDING",
                                "CREDITS PENDING"
                            ],
                            &lines
                        )
                    );
                    println!("(amounts in minor units of each currency)");
                }
                Ok(())
            }
        }
    })
    .await
}
