//! `admin card ...` (alias `admin cards`): an operator's freeze, unfreeze and cancel of any
//! partner's card, recorded with the operator's name; and the card vault's key rotation.

use anyhow::Context;
use clap::Subcommand;

use super::{operator_actor, print_json, table};
use crate::card::{Card, CardId};
use crate::settings::Settings;
use crate::wiring::with_services;

#[derive(Debug, Subcommand)]
pub enum CardsCommand {
    /// Freeze a card (any partner's): every authorization is declined `card_frozen` until it is
    /// unfrozen. `card.frozen` goes to the partner as if it had frozen the card.
    Freeze {
        /// The card id (card_...).
        id: String,
        /// Why; kept on the card's history with the operator's name.
        #[arg(long)]
        reason: String,
        #[arg(long)]
        json: bool,
    },
    /// Unfreeze a frozen card (`card.unfrozen`).
    Unfreeze {
        /// The card id (card_...).
        id: String,
        /// Why; kept on the card's history with the operator's name.
        #[arg(long)]
        reason: String,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a card for good (`card.canceled`); canceling is final.
    Cancel {
        /// The card id (card_...).
        id: String,
        /// canceled, lost or stolen: kept on the card as its cancel reason.
        #[arg(long)]
        reason: String,
        /// Free text kept on the card's history after the reason (e.g. a ticket number).
        #[arg(long)]
        note: Option<String>,
        #[arg(long)]
        json: bool,
    },
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
        CardsCommand::Freeze { id, reason, json } => {
            let id = card_id(&id)?;
            let card = with_services(settings, |s| async move {
                Ok(s.cards
                    .freeze_for_operator(&operator_actor(), id, &reason)
                    .await?)
            })
            .await?;
            print_card(&card, json)
        }
        CardsCommand::Unfreeze { id, reason, json } => {
            let id = card_id(&id)?;
            let card = with_services(settings, |s| async move {
                Ok(s.cards
                    .unfreeze_for_operator(&operator_actor(), id, &reason)
                    .await?)
            })
            .await?;
            print_card(&card, json)
        }
        CardsCommand::Cancel {
            id,
            reason,
            note,
            json,
        } => {
            let id = card_id(&id)?;
            let card = with_services(settings, |s| async move {
                Ok(s.cards
                    .cancel_for_operator(&operator_actor(), id, &reason, note.as_deref())
                    .await?)
            })
            .await?;
            print_card(&card, json)
        }
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

fn card_id(raw: &str) -> anyhow::Result<CardId> {
    raw.trim().parse().context("not a card id (card_...)")
}

/// The card as `GET /v1/cards/{id}` shows it (never its number), or one table row.
fn print_card(card: &Card, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(card);
    }
    let row = vec![
        card.id.to_string(),
        card.status.clone(),
        card.cancel_reason.clone().unwrap_or_else(|| "-".to_owned()),
        card.last4.clone(),
    ];
    print!(
        "{}",
        table(&["CARD", "STATUS", "CANCEL REASON", "LAST4"], &[row])
    );
    Ok(())
}
