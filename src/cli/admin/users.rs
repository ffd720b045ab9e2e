//! `admin bootstrap` and `admin user ...`: the first platform admin, and users of a partner
//! or further platform admins (passwords always read from stdin).

use anyhow::Context;
use clap::Subcommand;

use super::{operator, operator_name, print_json, read_password, table, with_auth};
use crate::auth::RequestMeta;
use crate::kernel::{PartnerId, Role};
use crate::settings::Settings;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user of a partner, or (without --partner) another platform admin; the
    /// password is read from stdin.
    Create {
        /// The partner (ptn_...); omitted for --role platform_admin.
        #[arg(long)]
        partner: Option<String>,
        #[arg(long)]
        email: String,
        /// partner_admin or partner_developer (with --partner), or platform_admin.
        #[arg(long)]
        role: String,
        #[arg(long)]
        json: bool,
    },
}

/// Runs `admin bootstrap`: creates the first platform admin.
pub(super) async fn run_bootstrap(
    email: String,
    json: bool,
    settings: &Settings,
) -> anyhow::Result<()> {
    let password = read_password()?;
    let user = with_auth(settings, |auth| async move {
        Ok(auth.bootstrap(&operator_name(), &email, password).await?)
    })
    .await?;
    print_user(user, json)?;
    Ok(())
}

/// Runs the user verbs.
pub(super) async fn run_user(command: UserCommand, settings: &Settings) -> anyhow::Result<()> {
    let meta = RequestMeta::default();
    let UserCommand::Create {
        partner,
        email,
        role,
        json,
    } = command;
    let role = Role::parse(&role)
        .context("--role must be partner_admin, partner_developer or platform_admin")?;
    let partner: Option<PartnerId> = partner
        .map(|p| p.parse().context("--partner is not a partner id"))
        .transpose()?;
    match (role, partner) {
        (Role::PlatformAdmin, Some(_)) => {
            anyhow::bail!("platform admins belong to no partner: omit --partner")
        }
        (Role::PartnerAdmin | Role::PartnerDeveloper, None) => {
            anyhow::bail!("--partner is required for a partner's user")
        }
        _ => {}
    }
    let password = read_password()?;
    let user = with_auth(settings, |auth| async move {
        Ok(match partner {
            None => {
                auth.add_platform_admin(&operator_name(), &email, password)
                    .await?
            }
            Some(partner) => {
                auth.create_user(&operator(), Some(partner), &email, password, role, &meta)
                    .await?
            }
        })
    })
    .await?;
    print_user(user, json)?;
    Ok(())
}

fn print_user(user: crate::auth::User, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&user);
    }
    let row = vec![user.id.to_string(), user.email, user.role.to_string()];
    print!("{}", table(&["USER", "EMAIL", "ROLE"], &[row]));
    Ok(())
}
