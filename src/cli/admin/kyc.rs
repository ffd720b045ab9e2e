//! `admin kyc ...`: deciding an application in review (four eyes), and re-encrypting
//! personal data under the active key.

use anyhow::Context;
use clap::Subcommand;

use super::{print_json, table, with_kyc};
use crate::kyc::{ApplicationId, ReviewDecision};
use crate::settings::Settings;

#[derive(Debug, Subcommand)]
pub enum KycCommand {
    /// Decide an application in review. Four eyes: the reviewer (a platform admin) must not
    /// be who submitted or last changed it.
    #[command(group(clap::ArgGroup::new("decision").required(true).args(["approve", "reject"])))]
    Decide {
        /// The application id (kyc_...).
        id: String,
        #[arg(long)]
        approve: bool,
        #[arg(long)]
        reject: bool,
        /// Why; recorded on the application's history.
        #[arg(long)]
        reason: String,
        /// The deciding platform admin's email (recorded as the actor).
        #[arg(long)]
        reviewer: String,
        #[arg(long)]
        json: bool,
    },
    /// Re-encrypt personal data sealed under keys other than kyc.encryption_key_id (after
    /// adding a key and switching to it); then the old key can be removed.
    Reencrypt {
        #[arg(long)]
        json: bool,
    },
}

pub(super) async fn run_kyc(command: KycCommand, settings: &Settings) -> anyhow::Result<()> {
    match command {
        KycCommand::Decide {
            id,
            approve,
            reject: _,
            reason,
            reviewer,
            json,
        } => {
            let id: ApplicationId = id.parse().context("not an application id (kyc_...)")?;
            let decision = if approve {
                ReviewDecision::Approve
            } else {
                ReviewDecision::Reject
            };
            let application = with_kyc(settings, |kyc, auth| async move {
                let principal = auth
                    .platform_admin_by_email(&reviewer)
                    .await
                    .context("--reviewer must be a platform admin's email")?;
                Ok(kyc.review(&principal, id, decision, &reason).await?)
            })
            .await?;
            if json {
                return print_json(&application);
            }
            let row = vec![
                application.id.to_string(),
                application.customer_id.to_string(),
                application.status.as_str().to_owned(),
                application
                    .granted_tier
                    .map_or("-".to_owned(), |t| t.to_string()),
            ];
            print!(
                "{}",
                table(&["APPLICATION", "CUSTOMER", "STATUS", "TIER"], &[row])
            );
            Ok(())
        }
        KycCommand::Reencrypt { json } => {
            let changed =
                with_kyc(settings, |kyc, _| async move { Ok(kyc.reencrypt().await?) }).await?;
            if json {
                print_json(&serde_json::json!({ "reencrypted": changed }))
            } else {
                println!("Re-encrypted {changed} row(s) under the active key.");
                Ok(())
            }
        }
    }
}
