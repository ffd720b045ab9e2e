//! `admin cards ...`: the card vault's key rotation.

use clap::Subcommand;

use super::print_json;
use crate::settings::Settings;
use crate::wiring::with_services;

#[derive(Debug, Subcommand)]
pub enum CardsCommand {
    /// Re-seal card numbers and partners' decision endpoint secrets sealed under keys other
    /// than cards.encryption_key_id (after adding a key and switching every replica to it); run
    /// until it re-seals 0, then the old key can be removed.
    Reencrypt {
        #[arg(long)]
        json: bool,
    },
}

pub(super) async fn run_cards(command: CardsCommand, settings: &Settings) -> anyhow::Result<()> {
    match command {
        CardsCommand::Reencrypt { json } => {
            let changed = with_services(settings, |s| async move {
                let numbers = s.cards.reencrypt().await?;
                let secrets = s.cards.decisions().reencrypt().await?;
                Ok(numbers + secrets)
            })
            .await?;
            if json {
                print_json(&serde_json::json!({ "reencrypted": changed }))
            } else {
                println!(
                    "Re-sealed {changed} card number(s) and decision endpoint secret(s) under the active key."
                );
                Ok(())
            }
        }
    }
}
