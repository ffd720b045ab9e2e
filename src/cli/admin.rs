//! `flowlet admin ...`: the operator's verbs. Each prints a human table, or JSON with
//! `--json`, and exits non-zero on failure.

use std::io::BufRead;

use anyhow::Context;
use clap::Subcommand;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use crate::auth::{AuthService, Caller, RequestMeta};
use crate::kernel::{ApiKeyId, PartnerId, Role};
use crate::kyc::{ApplicationId, KycService, ReviewDecision, SanctionsList};
use crate::notify::{EndpointId, EventId, Notifier};
use crate::platform::config::Settings;
use crate::platform::db::migration_status;
use crate::platform::infra::{Infra, Migrate};
use crate::platform::money::Currency;
use crate::wallet::{Change, FreezeMode, WalletId};
use crate::wiring::with_services;

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// List the database migrations this binary knows, applied and pending.
    Migrations {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the effective configuration, with secrets shown only as set/unset.
    Config {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Create the first platform admin; the password is read from stdin. Runs once.
    Bootstrap {
        #[arg(long)]
        email: String,
        #[arg(long)]
        json: bool,
    },
    /// Partners (tenants).
    #[command(subcommand)]
    Partner(PartnerCommand),
    /// A partner's API keys.
    #[command(subcommand, name = "api-key")]
    ApiKey(ApiKeyCommand),
    /// A partner's users.
    #[command(subcommand)]
    User(UserCommand),
    /// The ledger's books.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Webhook deliveries.
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
    /// The outbox of webhooks and emails.
    #[command(subcommand)]
    Outbox(OutboxCommand),
    /// KYC applications and personal-data keys.
    #[command(subcommand)]
    Kyc(KycCommand),
    /// Sanctions screening lists.
    #[command(subcommand)]
    Sanctions(SanctionsCommand),
    /// Customers' wallets.
    #[command(subcommand)]
    Wallet(WalletCommand),
}

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

#[derive(Debug, Subcommand)]
pub enum SanctionsCommand {
    /// Load (replace) a screening list from a file: OFAC's sdn.csv, or a CSV with the header
    /// name,aliases,date_of_birth,country. Run `sanctions rescreen` afterwards.
    Load {
        file: std::path::PathBuf,
        /// The list's name (default: the file name without extension).
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Screen every customer holding a tier against the loaded lists again; strong matches
    /// are suspended to tier 0 and sent to review.
    Rescreen {
        #[arg(long)]
        json: bool,
    },
    /// The loaded lists.
    Lists {
        #[arg(long)]
        json: bool,
    },
}

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

#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// Deliveries pending and failed per endpoint, the oldest pending age, and the email outbox.
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Check every ledger invariant, recomputed from the entries; exit 1 with a report on any
    /// violation.
    Verify {
        #[arg(long)]
        json: bool,
    },
    /// Debit and credit totals per currency and account code.
    TrialBalance {
        /// Only this currency (ISO 4217).
        #[arg(long)]
        currency: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

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

/// Runs one admin verb.
pub async fn run(command: AdminCommand, settings: Settings) -> anyhow::Result<()> {
    match command {
        AdminCommand::Migrations { json } => {
            let infra = Infra::start(&settings, Migrate::Skip).await?;
            let status = migration_status(&infra.db).await;
            infra.shutdown().await;
            let status = status?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                let rows = status
                    .applied
                    .iter()
                    .map(|v| vec![v.clone(), "applied".to_owned()])
                    .chain(
                        status
                            .pending
                            .iter()
                            .map(|v| vec![v.clone(), "pending".to_owned()]),
                    )
                    .collect::<Vec<_>>();
                print!("{}", table(&["VERSION", "STATE"], &rows));
            }
            Ok(())
        }
        AdminCommand::Config { json } => {
            let view = ConfigView::of(&settings);
            if json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                let rows = view
                    .entries()
                    .into_iter()
                    .map(|(k, v)| vec![k.to_owned(), v])
                    .collect::<Vec<_>>();
                print!("{}", table(&["KEY", "VALUE"], &rows));
            }
            Ok(())
        }
        AdminCommand::Ledger(command) => run_ledger(command, &settings).await,
        AdminCommand::Webhooks(command) => run_webhooks(command, &settings).await,
        AdminCommand::Outbox(command) => run_outbox(command, &settings).await,
        AdminCommand::Kyc(command) => run_kyc(command, &settings).await,
        AdminCommand::Sanctions(command) => run_sanctions(command, &settings).await,
        AdminCommand::Wallet(command) => run_wallet(command, &settings).await,
        other => run_auth(other, &settings).await,
    }
}

/// Runs `f` with the auth service over started infrastructure, then shuts it down.
async fn with_auth<T, F, Fut>(settings: &Settings, f: F) -> anyhow::Result<T>
where
    F: FnOnce(AuthService) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    with_services(settings, |s| f((*s.auth).clone())).await
}

/// Who runs the command, for the audit log.
fn operator_name() -> String {
    std::env::var("USER").unwrap_or_else(|_| "operator".to_owned())
}

fn operator() -> Caller {
    Caller::Operator(operator_name())
}

/// The first line of stdin, without its newline: passwords never go on the command line,
/// where `ps` and shell history would show them.
fn read_password() -> anyhow::Result<SecretString> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    let password = line.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        anyhow::bail!(
            "no password on stdin (e.g. `printf '%s\\n' \"$PASSWORD\" | flowlet admin ...`)"
        );
    }
    Ok(SecretString::from(password))
}

fn print_user(user: crate::auth::User, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&user);
    }
    let row = vec![user.id.to_string(), user.email, user.role.to_string()];
    print!("{}", table(&["USER", "EMAIL", "ROLE"], &[row]));
    Ok(())
}

fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Runs the auth verbs.
async fn run_auth(command: AdminCommand, settings: &Settings) -> anyhow::Result<()> {
    let meta = RequestMeta::default();
    match command {
        AdminCommand::Bootstrap { email, json } => {
            let password = read_password()?;
            let user = with_auth(settings, |auth| async move {
                Ok(auth.bootstrap(&operator_name(), &email, password).await?)
            })
            .await?;
            print_user(user, json)?;
        }
        AdminCommand::Partner(PartnerCommand::Create { name, email, json }) => {
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
        }
        AdminCommand::ApiKey(ApiKeyCommand::Create {
            partner,
            name,
            scopes,
            json,
        }) => {
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
        AdminCommand::ApiKey(ApiKeyCommand::Revoke { id, json }) => {
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
        AdminCommand::User(UserCommand::Create {
            partner,
            email,
            role,
            json,
        }) => {
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
        }
        AdminCommand::Migrations { .. }
        | AdminCommand::Config { .. }
        | AdminCommand::Ledger(_)
        | AdminCommand::Webhooks(_)
        | AdminCommand::Outbox(_)
        | AdminCommand::Kyc(_)
        | AdminCommand::Sanctions(_)
        | AdminCommand::Wallet(_) => {
            anyhow::bail!("not an auth command")
        }
    }
    Ok(())
}

/// Runs `f` with the outbox service over started infrastructure (no worker is started).
async fn with_notifier<T, F, Fut>(settings: &Settings, f: F) -> anyhow::Result<T>
where
    F: FnOnce(Notifier) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    with_services(settings, |s| f(s.notifier)).await
}

async fn run_webhooks(command: WebhooksCommand, settings: &Settings) -> anyhow::Result<()> {
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

async fn run_outbox(command: OutboxCommand, settings: &Settings) -> anyhow::Result<()> {
    let OutboxCommand::Status { json } = command;
    let (endpoints, emails) =
        with_notifier(settings, |n| async move { Ok(n.outbox_status().await?) }).await?;
    if json {
        let endpoints: Vec<serde_json::Value> = endpoints
            .iter()
            .map(|e| {
                serde_json::json!({
                    "endpoint_id": EndpointId::from_uuid(e.endpoint_id),
                    "partner_id": crate::kernel::PartnerId::from_uuid(e.partner_id),
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
                    EndpointId::from_uuid(e.endpoint_id).to_string(),
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

/// Runs `f` with the KYC and auth services over started infrastructure, then shuts it down.
async fn with_kyc<T, F, Fut>(settings: &Settings, f: F) -> anyhow::Result<T>
where
    F: FnOnce(KycService, AuthService) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    with_services(settings, |s| f(s.kyc, (*s.auth).clone())).await
}

async fn run_kyc(command: KycCommand, settings: &Settings) -> anyhow::Result<()> {
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

async fn run_sanctions(command: SanctionsCommand, settings: &Settings) -> anyhow::Result<()> {
    match command {
        SanctionsCommand::Load { file, name, json } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let name = match name {
                Some(n) => n,
                None => file
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .context("name the list with --name")?
                    .to_owned(),
            };
            let list = with_kyc(settings, |kyc, _| async move {
                Ok(kyc.load_list(&name, &bytes).await?)
            })
            .await?;
            if json {
                return print_json(&list);
            }
            print_lists(&[list]);
            println!("Run `flowlet admin sanctions rescreen` to screen approved customers again.");
            Ok(())
        }
        SanctionsCommand::Rescreen { json } => {
            let result =
                with_kyc(settings, |kyc, _| async move { Ok(kyc.rescreen().await?) }).await?;
            if json {
                return print_json(&result);
            }
            println!(
                "Screened {} customer(s): {} flagged for review, {} left to an open application.",
                result.screened, result.flagged, result.skipped
            );
            Ok(())
        }
        SanctionsCommand::Lists { json } => {
            let lists = with_kyc(settings, |kyc, _| async move { Ok(kyc.lists().await?) }).await?;
            if json {
                return print_json(&lists);
            }
            print_lists(&lists);
            Ok(())
        }
    }
}

fn print_lists(lists: &[SanctionsList]) {
    let rows: Vec<Vec<String>> = lists
        .iter()
        .map(|l| {
            vec![
                l.name.clone(),
                l.format.clone(),
                l.entries.to_string(),
                l.version.to_string(),
                l.loaded_at.to_rfc3339(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["LIST", "FORMAT", "ENTRIES", "VERSION", "LOADED"], &rows)
    );
}

/// Runs the ledger verbs (reads only: no engine is started).
async fn run_wallet(command: WalletCommand, settings: &Settings) -> anyhow::Result<()> {
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
    let actor = format!("operator:{}", operator_name());
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

async fn run_ledger(command: LedgerCommand, settings: &Settings) -> anyhow::Result<()> {
    with_services(settings, |services| async move {
        let ledger = &services.ledger;
        match command {
            LedgerCommand::Verify { json } => {
                let report = services
                    .verify_books(true)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("the verification lock was not granted"))?;
                let violations = &report.violations;
                if json {
                    print_json(&serde_json::json!({
                        "ok": report.is_sound(),
                        "checks": report.checks,
                        "violations": violations,
                    }))?;
                } else {
                    let checks: Vec<Vec<String>> = report
                        .checks
                        .iter()
                        .map(|c| {
                            let result = if c.violations == 0 {
                                "ok".to_owned()
                            } else {
                                format!("{} violation(s)", c.violations)
                            };
                            vec![c.name.to_owned(), result, c.about.to_owned()]
                        })
                        .collect();
                    print!("{}", table(&["CHECK", "RESULT", "WHAT IT GUARDS"], &checks));
                    if report.is_sound() {
                        println!("Ledger verified: every invariant holds.");
                    } else {
                        let rows: Vec<Vec<String>> = violations
                            .iter()
                            .map(|v| vec![v.check.clone(), v.subject.clone(), v.detail.clone()])
                            .collect();
                        print!("{}", table(&["CHECK", "SUBJECT", "DETAIL"], &rows));
                    }
                }
                if !report.is_sound() {
                    anyhow::bail!("{} ledger invariant violation(s)", violations.len());
                }
                Ok(())
            }
            LedgerCommand::TrialBalance { currency, json } => {
                let currency = currency
                    .map(|c| Currency::parse(&c))
                    .transpose()
                    .context("--currency is not an ISO 4217 code")?;
                let rows = ledger.trial_balance(currency).await?;
                if json {
                    let list: Vec<serde_json::Value> = rows
                        .iter()
                        .map(|r| {
                            serde_json::json!({
                                "currency": r.currency, "code": r.code, "accounts": r.accounts,
                                "debits_posted": r.debits_posted, "credits_posted": r.credits_posted,
                                "debits_pending": r.debits_pending, "credits_pending": r.credits_pending,
                            })
                        })
                        .collect();
                    print_json(&list)?;
                } else {
                    let lines: Vec<Vec<String>> = rows
                        .iter()
                        .map(|r| {
                            vec![
                                r.currency.clone(),
                                r.code.to_string(),
                                r.accounts.to_string(),
                                r.debits_posted.clone(),
                                r.credits_posted.clone(),
                                r.debits_pending.clone(),
                                r.credits_pending.clone(),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        table(
                            &["CURRENCY", "CODE", "ACCOUNTS", "DEBITS POSTED", "CREDITS POSTED", "DEBITS PENDING", "CREDITS PENDING"],
                            &lines
                        )
                    );
                    println!("(amounts in minor units of each currency)");
                }
                Ok(())
            }
        }
    })
    .await
}

/// The configuration as an operator may see it: secrets reduced to set/unset.
#[derive(Serialize)]
struct ConfigView {
    env: &'static str,
    server_bind: String,
    server_workers: Option<usize>,
    server_body_limit_bytes: usize,
    database_url: &'static str,
    database_embedded_dir: String,
    database_pool_size: usize,
    database_migrate_on_start: bool,
    redis_url: &'static str,
    redis_key_prefix: String,
    auth_jwt_secret: &'static str,
    auth_jwt_kid: String,
    auth_api_key_secret: &'static str,
    rate_limit_enabled: bool,
    rate_limit_ip_per_minute: u64,
    rate_limit_key_per_hour: u64,
    rate_limit_partner_per_hour: u64,
    smtp_url: &'static str,
    log_format: &'static str,
    log_level: String,
}

fn set_or_unset(value: Option<&str>) -> &'static str {
    if value.is_some() { "<set>" } else { "<unset>" }
}

impl ConfigView {
    fn of(s: &Settings) -> Self {
        Self {
            env: s.env.as_str(),
            server_bind: s.server.bind.to_string(),
            server_workers: s.server.workers,
            server_body_limit_bytes: s.server.body_limit_bytes,
            database_url: set_or_unset(s.database_url()),
            database_embedded_dir: s.database.embedded_dir.display().to_string(),
            database_pool_size: s.database.pool_size,
            database_migrate_on_start: s.database.migrate_on_start,
            redis_url: set_or_unset(s.redis_url()),
            redis_key_prefix: s.redis.key_prefix.clone(),
            auth_jwt_secret: set_or_unset(Some(s.auth.jwt_secret.expose_secret())),
            auth_jwt_kid: s.auth.jwt_kid.clone(),
            auth_api_key_secret: set_or_unset(Some(s.auth.api_key_secret.expose_secret())),
            rate_limit_enabled: s.rate_limit.enabled,
            rate_limit_ip_per_minute: s.rate_limit.ip_per_minute,
            rate_limit_key_per_hour: s.rate_limit.key_per_hour,
            rate_limit_partner_per_hour: s.rate_limit.partner_per_hour,
            smtp_url: set_or_unset(s.smtp_url()),
            log_format: match s.log.format {
                crate::platform::config::LogFormat::Pretty => "pretty",
                crate::platform::config::LogFormat::Json => "json",
            },
            log_level: s.log.level.clone(),
        }
    }

    fn entries(&self) -> Vec<(&'static str, String)> {
        vec![
            ("env", self.env.to_owned()),
            ("server.bind", self.server_bind.clone()),
            (
                "server.workers",
                self.server_workers
                    .map_or("auto".to_owned(), |w| w.to_string()),
            ),
            (
                "server.body_limit_bytes",
                self.server_body_limit_bytes.to_string(),
            ),
            ("database.url", self.database_url.to_owned()),
            ("database.embedded_dir", self.database_embedded_dir.clone()),
            ("database.pool_size", self.database_pool_size.to_string()),
            (
                "database.migrate_on_start",
                self.database_migrate_on_start.to_string(),
            ),
            ("redis.url", self.redis_url.to_owned()),
            ("redis.key_prefix", self.redis_key_prefix.clone()),
            ("auth.jwt_secret", self.auth_jwt_secret.to_owned()),
            ("auth.jwt_kid", self.auth_jwt_kid.clone()),
            ("auth.api_key_secret", self.auth_api_key_secret.to_owned()),
            ("rate_limit.enabled", self.rate_limit_enabled.to_string()),
            (
                "rate_limit.ip_per_minute",
                self.rate_limit_ip_per_minute.to_string(),
            ),
            (
                "rate_limit.key_per_hour",
                self.rate_limit_key_per_hour.to_string(),
            ),
            (
                "rate_limit.partner_per_hour",
                self.rate_limit_partner_per_hour.to_string(),
            ),
            ("smtp.url", self.smtp_url.to_owned()),
            ("log.format", self.log_format.to_owned()),
            ("log.level", self.log_level.clone()),
        ]
    }
}

/// A plain text table with aligned columns, for humans at a terminal.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| -> String {
        let mut out = cells
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    };
    let mut out = line(&mut headers.iter().copied());
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &["KEY", "VALUE"],
            &[
                vec!["a".into(), "1".into()],
                vec!["longer".into(), "2".into()],
            ],
        );
        assert_eq!(t, "KEY     VALUE\na       1\nlonger  2\n");
    }

    #[test]
    fn config_view_never_shows_secret_values() {
        let settings = Settings::load_from(&crate::platform::config::Sources::with_vars([(
            "FLOWLET__DATABASE__URL",
            "postgres://u:hunter2@db/x",
        )]))
        .unwrap();
        let json = serde_json::to_string(&ConfigView::of(&settings)).unwrap();
        assert!(!json.contains("hunter2"), "{json}");
        assert!(json.contains("<set>"), "{json}");
    }
}
