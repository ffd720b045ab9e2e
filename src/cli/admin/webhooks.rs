//! `admin webhooks ...`: delivering an event again.

use anyhow::Context;
use clap::Subcommand;

use super::{print_json, with_notifier};
use crate::notify::{EndpointId, EventId};
use crate::settings::Settings;

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Deliver an event again: to one endpoint, or to every enabled endpoint whose filters
    /// match it.
    Replay {
        /// The event id (evt_...).
        event: String,
        /// Only this endpoint (whe_...), even if disabled.
        #[arg(long)]
        endpoint: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

pub(super) async fn run_webhooks(
    command: WebhooksCommand,
    settings: &Settings,
) -> anyhow::Result<()> {
    let WebhooksCommand::Replay {
        event,
        endpoint,
        json,
    } = command;
    let event: EventId = event.parse().context("not an event id (evt_...)")?;
    let endpoint: Option<EndpointId> = endpoint
        .map(|e| e.parse())
        .transpose()
        .context("--endpoint is not an endpoint id (whe_...)")?;
    let queued = with_notifier(
        settings,
        |n| async move { Ok(n.replay(event, endpoint).await?) },
    )
    .await?;
    if json {
        print_json(&serde_json::json!({"event_id": event, "queued": queued}))?;
    } else {
        println!(
            "Queued {queued} deliver{} of {event}.",
            if queued == 1 { "y" } else { "ies" }
        );
    }
    Ok(())
}
