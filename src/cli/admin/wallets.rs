//! `admin wallet ...`: freezing and unfreezing any partner's wallet, recorded with the
//! operator's name.

use anyhow::Context;
use clap::Subcommand;

use super::{operator_actor, print_json, table};
use crate::settings::Settings;
use crate::wallet::{Change, FreezeMode, WalletId};
use crate::wiring::with_services;

#[derive(Debug, Subcommand)]
pub enum WalletCommand {
    /// Freeze a wallet (any partner's): the ledger refuses its movements from the commit on.
    Freeze {
        /// The wallet id (wal_...).
        id: String,
        /// Why; kept on the wallet's history with the operator's name.
        #[arg(long)]
        reason: String,
        /// all (default), debits (nothing leaves) or credits (nothing arrives).
        #[arg(long, default_value = "all")]
        mode: String,
        #[arg(long)]
        json: bool,
    },
    /// Unfreeze a wallet.
    Unfreeze {
        id: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        json: bool,
    },
}

/// Runs the wallet verbs (freeze, unfreeze) through the wired services.
pub(super) async fn run_wallet(command: WalletCommand, settings: &Settings) -> anyhow::Result<()> {
    let (id, change, reason, json) = match command {
        WalletCommand::Freeze {
            id,
            reason,
            mode,
            json,
        } => {
            let mode = FreezeMode::parse(&mode).context("--mode must be all, debits or credits")?;
            (id, Change::Freeze(mode), reason, json)
        }
        WalletCommand::Unfreeze { id, reason, json } => (id, Change::Unfreeze, reason, json),
    };
    let id: WalletId = id.parse().context("not a wallet id (wal_...)")?;
    let actor = operator_actor();
    let wallet = with_services(settings, |s| async move {
        Ok(s.wallets
            .change_status(None, &actor, id, change, &reason)
            .await?)
    })
    .await?;
    if json {
        return print_json(&wallet);
    }
    let row = vec![
        wallet.id.to_string(),
        wallet.status.as_str().to_owned(),
        wallet
            .freeze_mode
            .map_or("-".to_owned(), |m| m.as_str().to_owned()),
    ];
    print!("{}", table(&["WALLET", "STATUS", "FROZEN"], &[row]));
    Ok(())
}
