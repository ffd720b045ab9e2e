//! `admin api-key ...`: creating and revoking a partner's API keys.

use anyhow::Context;
use clap::Subcommand;
use secrecy::ExposeSecret;

use super::{operator, print_json, table, with_auth};
use crate::auth::RequestMeta;
use crate::kernel::{ApiKeyId, PartnerId};
use crate::settings::Settings;

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create an API key for a partner (the secret is shown once).
    Create {
        #[arg(long)]
        partner: String,
        #[arg(long)]
        name: String,
        /// Comma-separated scopes, e.g. wallets:read,payments:write; omit for full access.
        #[arg(long, value_delimiter = ',')]
        scopes: Option<Vec<String>>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke an API key; refused on every replica from the next request on.
    Revoke {
        /// The key id (key_...).
        id: String,
        #[arg(long)]
        json: bool,
    },
}

/// Runs the API key verbs.
pub(super) async fn run_api_key(command: ApiKeyCommand, settings: &Settings) -> anyhow::Result<()> {
    let meta = RequestMeta::default();
    match command {
        ApiKeyCommand::Create {
            partner,
            name,
            scopes,
            json,
        } => {
            let partner: PartnerId = partner.parse().context("--partner is not a partner id")?;
            let key = with_auth(settings, |auth| async move {
                Ok(auth
                    .create_api_key(&operator(), Some(partner), &name, scopes, None, &meta)
                    .await?)
            })
            .await?;
            if json {
                print_json(&key)?;
            } else {
                print!(
                    "{}",
                    table(
                        &["API KEY", "NAME", "SECRET (shown once)"],
                        &[vec![
                            key.key.id.to_string(),
                            key.key.name,
                            key.secret.expose_secret().to_owned()
                        ]]
                    )
                );
            }
        }
        ApiKeyCommand::Revoke { id, json } => {
            let id: ApiKeyId = id.parse().context("not an API key id")?;
            with_auth(settings, |auth| async move {
                Ok(auth.revoke_api_key(&operator(), None, id, &meta).await?)
            })
            .await?;
            if json {
                print_json(&serde_json::json!({"id": id, "revoked": true}))?;
            } else {
                println!("Revoked {id}.");
            }
        }
    }
    Ok(())
}
