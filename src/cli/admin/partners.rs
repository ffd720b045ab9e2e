//! `admin partner ...`: creating a partner (tenant) with its first API key.

use clap::Subcommand;
use secrecy::ExposeSecret;

use super::{operator, print_json, table, with_auth};
use crate::auth::RequestMeta;
use crate::settings::Settings;

#[derive(Debug, Subcommand)]
pub enum PartnerCommand {
    /// Create a partner and its first API key (the secret is shown once).
    Create {
        #[arg(long)]
        name: String,
        /// The partner's contact email.
        #[arg(long)]
        email: String,
        #[arg(long)]
        json: bool,
    },
}

/// Runs the partner verbs.
pub(super) async fn run_partner(
    command: PartnerCommand,
    settings: &Settings,
) -> anyhow::Result<()> {
    let meta = RequestMeta::default();
    let PartnerCommand::Create { name, email, json } = command;
    let (partner, key) = with_auth(settings, |auth| async move {
        let caller = operator();
        let partner = auth.create_partner(&caller, &name, &email, &meta).await?;
        let key = auth
            .create_api_key(&caller, Some(partner.id), "default", None, None, &meta)
            .await?;
        Ok((partner, key))
    })
    .await?;
    if json {
        print_json(&serde_json::json!({"partner": partner, "api_key": key}))?;
    } else {
        print!(
            "{}",
            table(
                &["PARTNER", "NAME", "API KEY", "SECRET (shown once)"],
                &[vec![
                    partner.id.to_string(),
                    partner.name,
                    key.key.id.to_string(),
                    key.secret.expose_secret().to_owned(),
                ]]
            )
        );
    }
    Ok(())
}
