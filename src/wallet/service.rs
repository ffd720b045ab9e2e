//! The wallet service: wallets on ledger accounts, their lifecycle, balances and statements.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::WalletError;
use super::model::{
    self, Change, ChangeRefused, EntryKind, FREEZE_FLAGS, FreezeMode, WalletId, WalletKind,
    WalletStatus,
};
use super::store::{self, StatusChangeRow, WalletRow};
use crate::kernel::{PartnerId, Principal};
use crate::kyc::{Compliance, CustomerId};
use crate::ledger::{AccountFlags, AccountId, Ledger, NewAccount, Scope, TransferId};
use crate::notify::{NewEvent, Outbox};
use crate::platform::db::{Db, Tx};
use crate::platform::http::pagination::Page;
use crate::platform::idempotency::Claim;
use crate::platform::money::{Currency, Money};

/// The ledger account code of customer wallets (chart of accounts: 1xx customer liabilities).
pub const WALLET_ACCOUNT_CODE: i32 = 100;

/// `POST /v1/wallets`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWallet {
    /// The customer (cus_...) of the calling partner.
    pub customer_id: String,
    /// ISO 4217, e.g. `EUR`.
    pub currency: String,
    /// `personal` or `business`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// A wallet.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Wallet {
    #[schema(value_type = String, example = "wal_01h455vb4pex5vsknk084sn02q")]
    pub id: WalletId,
    #[schema(value_type = String)]
    pub partner_id: PartnerId,
    #[schema(value_type = String)]
    pub customer_id: CustomerId,
    pub currency: String,
    #[serde(rename = "type")]
    pub kind: WalletKind,
    pub status: WalletStatus,
    /// While frozen: `all`, `debits` (nothing leaves) or `credits` (nothing arrives).
    pub freeze_mode: Option<FreezeMode>,
    /// The ledger account holding the money.
    #[schema(value_type = String)]
    pub ledger_account_id: AccountId,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
}

/// One status change, with who made it and why.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StatusChange {
    pub from: Option<String>,
    pub to: String,
    pub freeze_mode: Option<String>,
    pub reason: String,
    /// The user or API key, or `operator:<name>` for the CLI.
    pub actor: String,
    pub at: DateTime<Utc>,
}

/// A wallet with its status history (`GET /v1/wallets/{id}`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WalletDetail {
    #[serde(flatten)]
    pub wallet: Wallet,
    pub status_history: Vec<StatusChange>,
}

/// `GET /v1/wallets/{id}/balance`. `posted` = posted credits - posted debits; `available` =
/// posted - held; `pending` = incoming - held (money in flight either way).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Balance {
    #[schema(value_type = String)]
    pub wallet_id: WalletId,
    pub currency: String,
    pub available: String,
    pub pending: String,
    pub posted: String,
    /// Outgoing money held by pending transfers (withdrawals, card holds).
    pub held: String,
    /// Incoming money not yet settled.
    pub incoming: String,
}

/// One line of a wallet's statement.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Transaction {
    /// The ledger transfer.
    #[schema(value_type = String)]
    pub transfer_id: TransferId,
    /// Position in the wallet's journal (the cursor).
    pub seq: i64,
    pub amount: String,
    pub currency: String,
    /// `credit` (in) or `debit` (out).
    pub direction: String,
    pub kind: EntryKind,
    /// Posted balance after this entry.
    pub balance_after: String,
    /// Available balance after this entry.
    pub available_after: String,
    /// The other wallet, when the money came from or went to one.
    pub counterparty_wallet_id: Option<String>,
    pub payment_id: Option<String>,
    pub card_authorization_id: Option<String>,
    pub description: Option<String>,
    pub created: DateTime<Utc>,
}

/// What payments need of a wallet.
#[derive(Debug, Clone)]
pub struct WalletRef {
    pub id: WalletId,
    pub partner_id: PartnerId,
    pub customer_id: CustomerId,
    pub account_id: AccountId,
    pub currency: Currency,
    pub status: WalletStatus,
    pub freeze_mode: Option<FreezeMode>,
}

/// What never changes about a wallet: its owners, ledger account and currency. Safe to keep
/// for the wallet's life; its status is not here: freezes and closure are the ledger account's
/// flags, which the posting engine enforces exactly when money moves.
#[derive(Debug, Clone, Copy)]
pub struct WalletAccount {
    pub id: WalletId,
    pub partner_id: PartnerId,
    pub customer_id: CustomerId,
    pub account_id: AccountId,
    pub currency: Currency,
}

/// Wallets whose [`WalletAccount`] this process has read; emptied when it reaches this size.
const ACCOUNT_CACHE_MAX: usize = 200_000;

struct Inner {
    db: Db,
    ledger: Arc<dyn Ledger>,
    kyc: Arc<dyn Compliance>,
    outbox: Arc<dyn Outbox>,
    /// Immutable facts of wallets, so a payment reads no wallet row.
    accounts: std::sync::Mutex<std::collections::HashMap<uuid::Uuid, WalletAccount>>,
}

/// Wallets. Cheap to clone.
#[derive(Clone)]
pub struct WalletService {
    inner: Arc<Inner>,
}

fn now() -> DateTime<Utc> {
    chrono::SubsecRound::trunc_subsecs(Utc::now(), 6)
}

fn view(row: &WalletRow) -> Result<Wallet, WalletError> {
    Ok(Wallet {
        id: WalletId::from_uuid(row.id),
        partner_id: PartnerId::from_uuid(row.partner_id),
        customer_id: CustomerId::from_uuid(row.customer_id),
        currency: row.currency.clone(),
        kind: WalletKind::parse(&row.kind)
            .ok_or_else(|| anyhow::anyhow!("stored wallet kind {:?}", row.kind))?,
        status: WalletStatus::parse(&row.status)
            .ok_or_else(|| anyhow::anyhow!("stored wallet status {:?}", row.status))?,
        freeze_mode: row.freeze_mode.as_deref().and_then(FreezeMode::parse),
        ledger_account_id: AccountId::from_uuid(row.account_id),
        created: row.created_at,
        updated: row.updated_at,
    })
}

fn format(minor: i64, currency: Currency) -> String {
    Money::from_minor(minor, currency).format_amount()
}

fn metadata_str(metadata: Option<&serde_json::Value>, key: &str) -> Option<String> {
    metadata?.get(key)?.as_str().map(str::to_owned)
}

impl WalletService {
    pub fn new(
        db: Db,
        ledger: Arc<dyn Ledger>,
        kyc: Arc<dyn Compliance>,
        outbox: Arc<dyn Outbox>,
    ) -> WalletService {
        WalletService {
            inner: Arc::new(Inner {
                db,
                ledger,
                kyc,
                outbox,
                accounts: std::sync::Mutex::default(),
            }),
        }
    }

    fn db(&self) -> &Db {
        &self.inner.db
    }

    /// Opens a wallet for a customer of `partner`: its ledger account
    /// (`debits_must_not_exceed_credits`), the wallet and `wallet.created`, in one transaction.
    /// Under an idempotency claim, the answer is stored in the same transaction.
    pub async fn create(
        &self,
        partner: PartnerId,
        input: NewWallet,
        claim: Option<Claim>,
    ) -> Result<Wallet, WalletError> {
        let customer: CustomerId = input.customer_id.trim().parse().map_err(|_| {
            WalletError::validation("customer_id", "is not a customer id (cus_...)")
        })?;
        let currency = Currency::parse(input.currency.trim()).map_err(|_| {
            WalletError::validation("currency", "must be an ISO 4217 currency code, e.g. EUR")
        })?;
        let kind = WalletKind::parse(input.kind.trim())
            .ok_or_else(|| WalletError::validation("type", "must be personal or business"))?;
        self.db()
            .in_tx(|tx| {
                let (this, claim) = (self.clone(), claim.clone());
                Box::pin(async move {
                    this.inner.kyc.customer_tier(tx, partner, customer).await?;
                    let at = now();
                    let id = WalletId::new();
                    let account = AccountId::new();
                    this.inner
                        .ledger
                        .create_accounts_in(
                            tx,
                            Scope::Partner(partner),
                            vec![NewAccount {
                                id: Some(account),
                                currency,
                                code: WALLET_ACCOUNT_CODE,
                                flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS
                                    | AccountFlags::HISTORY,
                                metadata: Some(json!({ "wallet_id": id })),
                            }],
                        )
                        .await?;
                    let row = WalletRow {
                        id: id.uuid(),
                        partner_id: partner.uuid(),
                        customer_id: customer.uuid(),
                        account_id: account.uuid(),
                        currency: currency.code().to_owned(),
                        kind: kind.as_str().to_owned(),
                        status: WalletStatus::Active.as_str().to_owned(),
                        freeze_mode: None,
                        created_at: at,
                        updated_at: at,
                    };
                    store::insert_wallet(tx.conn(), &row).await?;
                    this.inner
                        .outbox
                        .record_event(
                            tx,
                            NewEvent {
                                partner_id: Some(partner),
                                event_type: "wallet.created".into(),
                                data: json!({
                                    "wallet_id": id,
                                    "customer_id": customer,
                                    "currency": currency.code(),
                                    "type": kind.as_str(),
                                }),
                            },
                        )
                        .await?;
                    let wallet = view(&row)?;
                    if let Some(claim) = claim {
                        let body = serde_json::to_vec(&wallet)
                            .map_err(|e| WalletError::Internal(e.into()))?;
                        claim
                            .complete_in(tx, actix_web::http::StatusCode::CREATED, &body)
                            .await?;
                    }
                    Ok(wallet)
                })
            })
            .await
    }

    /// A wallet row the principal may see.
    async fn visible(&self, principal: &Principal, id: WalletId) -> Result<WalletRow, WalletError> {
        let mut conn = self.db().conn().await?;
        store::find_wallet(&mut conn, id.uuid())
            .await?
            .filter(|r| principal.can_see_partner(PartnerId::from_uuid(r.partner_id)))
            .ok_or(WalletError::NotFound("wallet"))
    }

    /// A wallet with its status history.
    pub async fn wallet(
        &self,
        principal: &Principal,
        id: WalletId,
    ) -> Result<WalletDetail, WalletError> {
        let row = self.visible(principal, id).await?;
        let mut conn = self.db().conn().await?;
        let status_history = store::status_changes(&mut conn, row.id)
            .await?
            .into_iter()
            .map(|(from, to, freeze_mode, reason, actor, at)| StatusChange {
                from,
                to,
                freeze_mode,
                reason,
                actor,
                at,
            })
            .collect();
        Ok(WalletDetail {
            wallet: view(&row)?,
            status_history,
        })
    }

    /// Wallets, newest first; platform admins see every partner's.
    pub async fn list(
        &self,
        principal: &Principal,
        customer: Option<CustomerId>,
        limit: u32,
        cursor: Option<WalletId>,
    ) -> Result<Page<Wallet>, WalletError> {
        let mut conn = self.db().conn().await?;
        let rows = store::list_wallets(
            &mut conn,
            principal.partner_id.map(|p| p.uuid()),
            customer.map(|c| c.uuid()),
            cursor.map(|c| c.uuid()),
            i64::from(limit) + 1,
        )
        .await?;
        let wallets = rows.iter().map(view).collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_rows(wallets, limit, |w: &Wallet| {
            w.id.to_string()
        }))
    }

    /// The wallet's balances, straight from its ledger account.
    pub async fn balance(
        &self,
        principal: &Principal,
        id: WalletId,
    ) -> Result<Balance, WalletError> {
        let row = self.visible(principal, id).await?;
        let account = self
            .inner
            .ledger
            .account(Scope::System, AccountId::from_uuid(row.account_id))
            .await?;
        let t = account.state.totals;
        let currency = account.state.currency;
        let overflow = || WalletError::Internal(anyhow::anyhow!("balance overflow"));
        let posted = t.posted_balance().ok_or_else(overflow)?;
        let available = t.available().ok_or_else(overflow)?;
        let pending = t
            .credits_pending
            .checked_sub(t.debits_pending)
            .ok_or_else(overflow)?;
        Ok(Balance {
            wallet_id: id,
            currency: currency.code().to_owned(),
            available: format(available, currency),
            pending: format(pending, currency),
            posted: format(posted, currency),
            held: format(t.debits_pending, currency),
            incoming: format(t.credits_pending, currency),
        })
    }

    /// The wallet's statement, newest first, from the ledger's journal.
    pub async fn transactions(
        &self,
        principal: &Principal,
        id: WalletId,
        limit: u32,
        before_seq: Option<i64>,
    ) -> Result<Page<Transaction>, WalletError> {
        let row = self.visible(principal, id).await?;
        let ledger = &self.inner.ledger;
        let account = AccountId::from_uuid(row.account_id);
        let page = ledger
            .entries(Scope::System, account, before_seq, limit)
            .await?;
        let ids: Vec<TransferId> = page.data.iter().map(|e| e.transfer_id).collect();
        let transfers: HashMap<TransferId, _> = ledger
            .transfers(Scope::System, ids)
            .await?
            .into_iter()
            .map(|t| (t.id, t))
            .collect();
        let others: Vec<Uuid> = transfers
            .values()
            .map(|t| {
                if t.debit_account_id == account {
                    t.credit_account_id.uuid()
                } else {
                    t.debit_account_id.uuid()
                }
            })
            .collect();
        let wallet_of: HashMap<Uuid, Uuid> = {
            let mut conn = self.db().conn().await?;
            store::wallets_of_accounts(&mut conn, &others)
                .await?
                .into_iter()
                .map(|w| (w.account_id, w.id))
                .collect()
        };
        let currency = Currency::parse(&row.currency)
            .map_err(|e| WalletError::Internal(anyhow::anyhow!("stored currency: {e}")))?;
        let mut data = Vec::with_capacity(page.data.len());
        for entry in page.data {
            let transfer = transfers.get(&entry.transfer_id);
            let other = transfer.map(|t| {
                if t.debit_account_id == account {
                    t.credit_account_id.uuid()
                } else {
                    t.debit_account_id.uuid()
                }
            });
            let metadata = transfer.and_then(|t| t.metadata.as_ref());
            let (kind, amount) = model::entry_kind(entry.pending_delta, entry.posted_delta);
            let t = entry.totals;
            data.push(Transaction {
                transfer_id: entry.transfer_id,
                seq: entry.seq,
                amount: format(amount, currency),
                currency: currency.code().to_owned(),
                direction: if entry.is_credit { "credit" } else { "debit" }.to_owned(),
                kind,
                balance_after: format(t.posted_balance().unwrap_or(0), currency),
                available_after: format(t.available().unwrap_or(0), currency),
                counterparty_wallet_id: other
                    .and_then(|o| wallet_of.get(&o))
                    .map(|w| WalletId::from_uuid(*w).to_string()),
                payment_id: metadata_str(metadata, "payment_id"),
                card_authorization_id: metadata_str(metadata, "card_authorization_id"),
                description: metadata_str(metadata, "description"),
                created: entry.created_at,
            });
        }
        Ok(Page {
            data,
            next_cursor: page.next_cursor,
        })
    }

    /// Freezes, unfreezes or closes a wallet: its status, its ledger account's flags, the
    /// history line and the event commit together. `scope`: the partner acting (`None` for
    /// platform admins and operators).
    pub async fn change_status(
        &self,
        scope: Option<PartnerId>,
        actor: &str,
        id: WalletId,
        change: Change,
        reason: &str,
    ) -> Result<Wallet, WalletError> {
        let reason = reason.trim().to_owned();
        if reason.is_empty() || reason.chars().count() > 500 {
            return Err(WalletError::validation(
                "reason",
                "must be 1-500 characters",
            ));
        }
        let actor = actor.to_owned();
        self.db()
            .in_tx(|tx| {
                let (this, actor, reason) = (self.clone(), actor.clone(), reason.clone());
                Box::pin(
                    async move { this.change_in(tx, scope, &actor, id, change, &reason).await },
                )
            })
            .await
    }

    async fn change_in(
        &self,
        tx: &mut Tx<'_>,
        scope: Option<PartnerId>,
        actor: &str,
        id: WalletId,
        change: Change,
        reason: &str,
    ) -> Result<Wallet, WalletError> {
        let row = store::lock_wallet(tx.conn(), id.uuid())
            .await?
            .filter(|r| scope.is_none_or(|p| p.uuid() == r.partner_id))
            .ok_or(WalletError::NotFound("wallet"))?;
        let current = WalletStatus::parse(&row.status)
            .ok_or_else(|| anyhow::anyhow!("stored wallet status {:?}", row.status))?;
        let mode = row.freeze_mode.as_deref().and_then(FreezeMode::parse);
        let (status, new_mode) =
            model::next_status(current, mode, change).map_err(|e| match e {
                ChangeRefused::Closed => WalletError::Closed,
                ChangeRefused::NotFrozen => WalletError::NotFrozen,
                ChangeRefused::AlreadyFrozen => WalletError::AlreadyFrozen,
            })?;
        let (set, clear) = match change {
            Change::Freeze(m) => (m.account_flags(), FREEZE_FLAGS - m.account_flags()),
            Change::Unfreeze => (AccountFlags::empty(), FREEZE_FLAGS),
            Change::Close => (AccountFlags::CLOSED, AccountFlags::empty()),
        };
        let account = self
            .inner
            .ledger
            .set_account_flags_in(
                tx,
                Scope::System,
                AccountId::from_uuid(row.account_id),
                set,
                clear,
            )
            .await?;
        if change == Change::Close {
            let t = account.state.totals;
            if t.debits_pending != 0
                || t.credits_pending != 0
                || t.credits_posted != t.debits_posted
            {
                return Err(WalletError::NotEmpty);
            }
        }
        let at = now();
        store::set_status(
            tx.conn(),
            row.id,
            status.as_str(),
            new_mode.map(FreezeMode::as_str),
            at,
        )
        .await?;
        store::insert_status_change(
            tx.conn(),
            &StatusChangeRow {
                wallet_id: row.id,
                from_status: Some(current.as_str()),
                to_status: status.as_str(),
                freeze_mode: new_mode.map(FreezeMode::as_str),
                reason,
                actor,
                created_at: at,
            },
        )
        .await?;
        let event_type = match change {
            Change::Freeze(_) => "wallet.frozen",
            Change::Unfreeze => "wallet.unfrozen",
            Change::Close => "wallet.closed",
        };
        self.inner
            .outbox
            .record_event(
                tx,
                NewEvent {
                    partner_id: Some(PartnerId::from_uuid(row.partner_id)),
                    event_type: event_type.into(),
                    data: json!({
                        "wallet_id": id,
                        "customer_id": CustomerId::from_uuid(row.customer_id),
                        "status": status.as_str(),
                        "freeze_mode": new_mode.map(FreezeMode::as_str),
                        "reason": reason,
                    }),
                },
            )
            .await?;
        view(&WalletRow {
            status: status.as_str().to_owned(),
            freeze_mode: new_mode.map(|m| m.as_str().to_owned()),
            updated_at: at,
            ..row
        })
    }

    /// A wallet of `partner` as payments need it (404 for another partner's).
    pub async fn wallet_ref(
        &self,
        partner: PartnerId,
        id: WalletId,
    ) -> Result<WalletRef, WalletError> {
        let mut conn = self.db().conn().await?;
        let row = store::find_wallet(&mut conn, id.uuid())
            .await?
            .filter(|r| r.partner_id == partner.uuid())
            .ok_or(WalletError::NotFound("wallet"))?;
        wallet_ref(&row)
    }

    /// Two wallets of `partner` in one read (a payment's payer and payee).
    pub async fn wallet_pair(
        &self,
        partner: PartnerId,
        first: WalletId,
        second: WalletId,
    ) -> Result<(WalletRef, WalletRef), WalletError> {
        let mut conn = self.db().conn().await?;
        let rows = store::find_wallets(&mut conn, &[first.uuid(), second.uuid()]).await?;
        let pick = |id: WalletId| {
            rows.iter()
                .find(|r| r.id == id.uuid() && r.partner_id == partner.uuid())
                .ok_or(WalletError::NotFound("wallet"))
                .and_then(wallet_ref)
        };
        Ok((pick(first)?, pick(second)?))
    }
}

impl WalletService {
    /// The [`WalletAccount`]s of two wallets of `partner` (a payment's payer and payee): from
    /// memory once read, so the hot path of a payment reads no wallet row.
    pub async fn wallet_accounts(
        &self,
        partner: PartnerId,
        first: WalletId,
        second: WalletId,
    ) -> Result<(WalletAccount, WalletAccount), WalletError> {
        let cached = |id: WalletId| self.cached_account(id);
        let (mut a, mut b) = (cached(first), cached(second));
        if a.is_none() || b.is_none() {
            let missing: Vec<uuid::Uuid> = [(first, &a), (second, &b)]
                .iter()
                .filter(|(_, found)| found.is_none())
                .map(|(id, _)| id.uuid())
                .collect();
            let mut conn = self.db().conn().await?;
            let rows = store::find_wallets(&mut conn, &missing).await?;
            drop(conn);
            for row in &rows {
                let account = wallet_account(row)?;
                self.remember(account);
                if account.id == first {
                    a = Some(account);
                }
                if account.id == second {
                    b = Some(account);
                }
            }
        }
        let mine = |found: Option<WalletAccount>| {
            found
                .filter(|w| w.partner_id == partner)
                .ok_or(WalletError::NotFound("wallet"))
        };
        Ok((mine(a)?, mine(b)?))
    }

    fn cached_account(&self, id: WalletId) -> Option<WalletAccount> {
        // A poisoned lock only means another thread panicked while holding it: the map of
        // immutable facts is still right.
        let map = self
            .inner
            .accounts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(&id.uuid()).copied()
    }

    fn remember(&self, account: WalletAccount) {
        let mut map = self
            .inner
            .accounts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= ACCOUNT_CACHE_MAX {
            map.clear();
        }
        map.insert(account.id.uuid(), account);
    }
}

fn wallet_account(row: &WalletRow) -> Result<WalletAccount, WalletError> {
    Ok(WalletAccount {
        id: WalletId::from_uuid(row.id),
        partner_id: PartnerId::from_uuid(row.partner_id),
        customer_id: CustomerId::from_uuid(row.customer_id),
        account_id: AccountId::from_uuid(row.account_id),
        currency: Currency::parse(&row.currency)
            .map_err(|e| WalletError::Internal(anyhow::anyhow!("stored currency: {e}")))?,
    })
}

fn wallet_ref(row: &WalletRow) -> Result<WalletRef, WalletError> {
    let wallet = view(row)?;
    Ok(WalletRef {
        id: wallet.id,
        partner_id: wallet.partner_id,
        customer_id: wallet.customer_id,
        account_id: wallet.ledger_account_id,
        currency: Currency::parse(&row.currency)
            .map_err(|e| WalletError::Internal(anyhow::anyhow!("stored currency: {e}")))?,
        status: wallet.status,
        freeze_mode: wallet.freeze_mode,
    })
}
