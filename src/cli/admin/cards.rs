//! `admin card ...` (alias `admin cards`): an operator's freeze, unfreeze and cancel of any
//! partner's card, recorded with the operator's name; and the card vault's key rotation.

use anyhow::Context;
use clap::{Args, Subcommand};

use super::{operator_actor, print_json, table};
use crate::card::{Card, CardId};
use crate::settings::Settings;
use crate::wiring::with_services;

#[derive(Debug, Subcommand)]
pub enum CardsCommand {
    /// Freeze a card (any partner's): every authorization is declined `card_frozen` until it is
    /// unfrozen. `card.frozen` goes to the partner as if it had frozen the card.
    Freeze(CardChange),
    /// Unfreeze a frozen card (`card.unfrozen`).
    Unfreeze(CardChange),
    /// Cancel a card for good (`card.canceled`); canceling is final. The reason must be
    /// canceled, lost or stolen: it is kept on the card as its cancel reason.
    Cancel {
        #[command(flatten)]
        change: CardChange,
        /// Free text kept on the card's history after the reason (e.g. a ticket number).
        #[arg(long)]
        note: Option<String>,
    },
    /// Re-seal card numbers and partners' decision endpoint secrets sealed under keys other
    /// than cards.encryption_key_id (after adding a key and switching every replica to it); run
    /// until it re-seals 0, then the old key can be removed.
    Reencrypt {
        #[arg(long)]
        json: bool,
    },
}

/// What every change of a card's status names.
#[derive(Debug, Args)]
pub struct CardChange {
    /// The card id (card_...).
    id: String,
    /// Why; kept on the card's history with the operator's name.
    #[arg(long)]
    reason: String,
    #[arg(long)]
    json: bool,
}

/// The status change an operator asked for.
enum Act {
    Freeze,
    Unfreeze,
    Cancel { note: Option<String> },
}

pub(super) async fn run_cards(command: CardsCommand, settings: &Settings) -> anyhow::Result<()> {
    let (change, act) = match command {
        CardsCommand::Freeze(change) => (change, Act::Freeze),
        CardsCommand::Unfreeze(change) => (change, Act::Unfreeze),
        CardsCommand::Cancel { change, note } => (change, Act::Cancel { note }),
        CardsCommand::Reencrypt { json } => return reencrypt(settings, json).await,
    };
    let id = card_id(&change.id)?;
    let reason = change.reason;
    let card = with_services(settings, |s| async move {
        let actor = operator_actor();
        let card = match act {
            Act::Freeze => s.cards.freeze_for_operator(&actor, id, &reason).await,
            Act::Unfreeze => s.cards.unfreeze_for_operator(&actor, id, &reason).await,
            Act::Cancel { note } => {
                s.cards
                    .cancel_for_operator(&actor, id, &reason, note.as_deref())
                    .await
            }
        };
        Ok(card?)
    })
    .await?;
    print_card(&card, change.json)
}

async fn reencrypt(settings: &Settings, json: bool) -> anyhow::Result<()> {
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
