//! `admin outbox ...`: the state of the outbox of webhook deliveries and emails.

use clap::Subcommand;

use super::{print_json, table, with_notifier};
use crate::settings::Settings;

#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// Deliveries pending and failed per endpoint, the oldest pending age, and the email outbox.
    Status {
        #[arg(long)]
        json: bool,
    },
}

pub(super) async fn run_outbox(command: OutboxCommand, settings: &Settings) -> anyhow::Result<()> {
    let OutboxCommand::Status { json } = command;
    let (endpoints, emails) =
        with_notifier(settings, |n| async move { Ok(n.outbox_status().await?) }).await?;
    if json {
        let endpoints: Vec<serde_json::Value> = endpoints
            .iter()
            .map(|e| {
                serde_json::json!({
                    "endpoint_id": e.endpoint_id,
                    "partner_id": e.partner_id,
                    "url": e.url, "enabled": e.enabled, "pending": e.pending, "failed": e.failed,
                    "oldest_pending_secs": e.oldest_pending_secs,
                })
            })
            .collect();
        print_json(&serde_json::json!({"endpoints": endpoints, "emails": emails}))?;
    } else {
        let age = |secs: Option<f64>| secs.map_or("-".to_owned(), |s| format!("{}s", s.round()));
        let rows: Vec<Vec<String>> = endpoints
            .iter()
            .map(|e| {
                vec![
                    e.endpoint_id.to_string(),
                    if e.enabled { "yes" } else { "no" }.to_owned(),
                    e.pending.to_string(),
                    e.failed.to_string(),
                    age(e.oldest_pending_secs),
                    e.url.clone(),
                ]
            })
            .collect();
        print!(
            "{}",
            table(
                &["ENDPOINT", "ENABLED", "PENDING", "FAILED", "OLDEST", "URL"],
                &rows
            )
        );
        println!(
            "emails: {} pending, {} failed, oldest pending {}",
            emails.pending,
            emails.failed,
            age(emails.oldest_pending_secs)
        );
    }
    Ok(())
}
