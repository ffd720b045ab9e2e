//! The ledger's use cases around the engine: accounts, lookups, history, point-in-time
//! balances, verification, the trial balance, and expiry of pending transfers.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::engine::{Attachment, Engine, EngineConfig, EngineHandle, EngineMetrics, SideWrite};
use super::error::LedgerError;
use super::model::{
    AccountFlags, AccountId, AccountState, NewAccount, NewTransfer, Outcome, ResultCode, Scope,
    StoredTransfer, Totals, TransferFlags, TransferId, check_metadata,
};
use super::store::{self, AccountRow, EntryRow, TransferRow, TrialBalanceRow, ViolationRow};
use crate::kernel::PartnerId;
use crate::platform::db::{Db, LockKey, Tx};
use crate::platform::http::pagination::Page;
use crate::platform::money::Currency;
use crate::platform::workers::Shutdown;

/// An account with everything the API shows.
#[derive(Debug, Clone)]
pub struct Account {
    pub state: AccountState,
    pub code: i32,
    pub metadata: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
}

/// One line of an account's history.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    pub account_id: AccountId,
    pub seq: i64,
    pub transfer_id: TransferId,
    pub is_credit: bool,
    pub pending_delta: i64,
    pub posted_delta: i64,
    pub totals: Totals,
    pub created_at: DateTime<Utc>,
}

/// Background expiry of pending transfers (configuration `ledger.expiry_*`).
#[derive(Debug, Clone)]
pub struct ExpiryConfig {
    pub interval: Duration,
    pub batch: i64,
}

/// One check a verification ran: its name, what it guards, and how many violations it found
/// (each check reports at most 100).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckRun {
    pub name: &'static str,
    pub about: &'static str,
    pub violations: usize,
}

/// One broken invariant a verification found: which check, on what, and how.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Violation {
    pub check: String,
    pub subject: String,
    pub detail: String,
}

impl From<ViolationRow> for Violation {
    fn from(row: ViolationRow) -> Self {
        Violation {
            check: row.check,
            subject: row.subject,
            detail: row.detail,
        }
    }
}

/// One line of the trial balance: per currency and account code, how many accounts and
/// their summed totals (decimal text, since sums can exceed 64 bits).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrialBalanceLine {
    pub currency: String,
    pub code: i32,
    pub accounts: i64,
    pub debits_posted: String,
    pub credits_posted: String,
    pub debits_pending: String,
    pub credits_pending: String,
}

impl From<TrialBalanceRow> for TrialBalanceLine {
    fn from(row: TrialBalanceRow) -> Self {
        TrialBalanceLine {
            currency: row.currency,
            code: row.code,
            accounts: row.accounts,
            debits_posted: row.debits_posted,
            credits_posted: row.credits_posted,
            debits_pending: row.debits_pending,
            credits_pending: row.credits_pending,
        }
    }
}

/// What a verification of the books checked and found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VerifyReport {
    pub checks: Vec<CheckRun>,
    pub violations: Vec<Violation>,
}

impl VerifyReport {
    /// Adds one check's findings (other modules add theirs: the books are more than the ledger).
    pub fn add(&mut self, name: &'static str, about: &'static str, violations: Vec<Violation>) {
        self.checks.push(CheckRun {
            name,
            about,
            violations: violations.len(),
        });
        self.violations.extend(violations);
    }

    /// Every check passed.
    pub fn is_sound(&self) -> bool {
        self.violations.is_empty()
    }

    /// Logs every violation, one line each.
    pub fn log_violations(&self) {
        for v in &self.violations {
            tracing::error!(
                ledger.check = %v.check,
                ledger.subject = %v.subject,
                ledger.detail = %v.detail,
                "ledger invariant violated"
            );
        }
    }
}

/// What the periodic verification reports on /metrics.
#[derive(Clone)]
pub struct VerifyMetrics {
    violations: prometheus::IntGauge,
    last_run: prometheus::Gauge,
}

impl VerifyMetrics {
    pub fn new(registry: &prometheus::Registry) -> Result<VerifyMetrics, prometheus::Error> {
        let violations = prometheus::IntGauge::new(
            "ledger_verify_violations",
            "Invariant violations the last periodic ledger verification found (0: sound).",
        )?;
        let last_run = prometheus::Gauge::new(
            "ledger_verify_last_run_timestamp_seconds",
            "Unix time the last periodic ledger verification finished (0: none yet).",
        )?;
        registry.register(Box::new(violations.clone()))?;
        registry.register(Box::new(last_run.clone()))?;
        Ok(VerifyMetrics {
            violations,
            last_run,
        })
    }

    /// Publishes a finished verification.
    pub fn record(&self, report: &VerifyReport) {
        self.violations
            .set(i64::try_from(report.violations.len()).unwrap_or(i64::MAX));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_run.set(now);
    }
}

/// The ledger service: the engine's handle plus direct reads.
#[derive(Clone)]
pub struct LedgerService {
    db: Db,
    engine: EngineHandle,
}

impl LedgerService {
    /// The service and its engine (to be run as a background worker).
    pub fn new(
        db: Db,
        config: EngineConfig,
        metrics: Option<EngineMetrics>,
    ) -> (LedgerService, Engine) {
        let (engine_handle, engine) = Engine::new(db.clone(), config, metrics);
        (
            LedgerService {
                db,
                engine: engine_handle,
            },
            engine,
        )
    }

    /// Posts transfers through the engine. One outcome per transfer, in order.
    pub async fn post(
        &self,
        scope: Scope,
        transfers: Vec<NewTransfer>,
        side: Option<SideWrite>,
    ) -> Result<Vec<Outcome>, LedgerError> {
        check_transfers(&transfers)?;
        self.engine
            .submit(scope, transfers, Vec::new(), side.map(Attachment::Each))
            .await
    }

    /// [`Self::post`] with advisory lock keys the attached write needs (see
    /// `EngineHandle::submit`): e.g. the customers whose limit counters it updates.
    pub async fn post_locked(
        &self,
        scope: Scope,
        transfers: Vec<NewTransfer>,
        locks: Vec<LockKey>,
        side: Attachment,
    ) -> Result<Vec<Outcome>, LedgerError> {
        check_transfers(&transfers)?;
        self.engine
            .submit(scope, transfers, locks, Some(side))
            .await
    }

    /// Creates accounts in their own transaction: a partner's own books when `scope` is a
    /// partner (the ledger API), the only accounts its raw transfers may move money on.
    pub async fn create_accounts(
        &self,
        scope: Scope,
        accounts: Vec<NewAccount>,
    ) -> Result<Vec<Account>, LedgerError> {
        let books = matches!(scope, Scope::Partner(_));
        let rows = account_rows(scope, accounts, books)?;
        let mut conn = self.db.conn().await?;
        store::insert_accounts(&mut conn, &rows)
            .await
            .map_err(duplicate_account)?;
        rows.into_iter().map(account_view).collect()
    }

    /// Creates accounts inside the caller's transaction (e.g. with the wallet that owns it).
    /// They belong to the system, whoever they are for: money moves on them only through the
    /// calling module (a partner sees a wallet's account, but cannot post to it).
    pub async fn create_accounts_in(
        &self,
        tx: &mut Tx<'_>,
        scope: Scope,
        accounts: Vec<NewAccount>,
    ) -> Result<Vec<Account>, LedgerError> {
        let rows = account_rows(scope, accounts, false)?;
        store::insert_accounts(tx.conn(), &rows)
            .await
            .map_err(duplicate_account)?;
        rows.into_iter().map(account_view).collect()
    }

    /// Sets and clears the flags an account may change after creation: `debits_blocked`,
    /// `credits_blocked` (freezing) and `closed` (which cannot be cleared). Inside the caller's
    /// transaction, so a wallet's state and its account's flags change together.
    pub async fn set_account_flags_in(
        &self,
        tx: &mut Tx<'_>,
        scope: Scope,
        id: AccountId,
        set: AccountFlags,
        clear: AccountFlags,
    ) -> Result<Account, LedgerError> {
        const CHANGEABLE: AccountFlags = AccountFlags::DEBITS_BLOCKED
            .union(AccountFlags::CREDITS_BLOCKED)
            .union(AccountFlags::CLOSED);
        if !CHANGEABLE.contains(set | clear) || clear.contains(AccountFlags::CLOSED) {
            return Err(LedgerError::validation(
                "flags",
                "only debits_blocked and credits_blocked may change, and closed may only be set",
            ));
        }
        let mut row = store::lock_account(tx.conn(), id.uuid())
            .await?
            .filter(|r| scope.sees(r.partner_id.map(PartnerId::from_uuid)))
            .ok_or(LedgerError::AccountNotFound)?;
        let flags = (AccountFlags::from_bits_retain(row.flags) | set) - clear;
        let flags = flags.bits();
        if flags != row.flags {
            store::set_account_flags(tx.conn(), id.uuid(), flags).await?;
            row.flags = flags;
        }
        account_view(row)
    }

    /// An account visible in `scope`.
    pub async fn account(&self, scope: Scope, id: AccountId) -> Result<Account, LedgerError> {
        let mut conn = self.db.conn().await?;
        let row = store::find_account(&mut conn, id.uuid())
            .await?
            .filter(|r| scope.sees(r.partner_id.map(PartnerId::from_uuid)))
            .ok_or(LedgerError::AccountNotFound)?;
        account_view(row)
    }

    /// A transfer visible in `scope`: one it made, or one that touches one of its accounts
    /// (a partner reconciles the transfers behind its wallets' deposits, payments and
    /// settlements too).
    pub async fn transfer(
        &self,
        scope: Scope,
        id: TransferId,
    ) -> Result<StoredTransfer, LedgerError> {
        self.transfers(scope, vec![id])
            .await?
            .pop()
            .ok_or(LedgerError::TransferNotFound)
    }

    /// The transfers among `ids` visible in `scope` (see [`Self::transfer`]; any order,
    /// unknown ids are left out).
    pub async fn transfers(
        &self,
        scope: Scope,
        ids: Vec<TransferId>,
    ) -> Result<Vec<StoredTransfer>, LedgerError> {
        let conn = self.db.conn().await?;
        let rows = store::load_transfers(&conn, ids.iter().map(|i| i.uuid()).collect()).await?;
        let Scope::Partner(partner) = scope else {
            return rows.into_iter().map(stored_transfer).collect();
        };
        let mine = |owner: Option<Uuid>| owner == Some(partner.uuid());
        let unsure: Vec<Uuid> = rows
            .iter()
            .filter(|r| !mine(r.partner_id))
            .flat_map(|r| [r.debit_account_id, r.credit_account_id])
            .collect();
        let owners: std::collections::HashMap<Uuid, Option<Uuid>> = if unsure.is_empty() {
            std::collections::HashMap::new()
        } else {
            store::read_accounts(&conn, unsure)
                .await?
                .into_iter()
                .map(|a| (a.id, a.partner_id))
                .collect()
        };
        let touches_mine = |account: Uuid| owners.get(&account).is_some_and(|o| mine(*o));
        rows.into_iter()
            .filter(|r| {
                mine(r.partner_id)
                    || touches_mine(r.debit_account_id)
                    || touches_mine(r.credit_account_id)
            })
            .map(stored_transfer)
            .collect()
    }

    /// An account's entries, newest first; the cursor is the seq of the last entry seen.
    pub async fn entries(
        &self,
        scope: Scope,
        account: AccountId,
        before_seq: Option<i64>,
        limit: u32,
    ) -> Result<Page<HistoryEntry>, LedgerError> {
        self.account(scope, account).await?;
        let mut conn = self.db.conn().await?;
        let rows = store::list_entries(&mut conn, account.uuid(), before_seq, i64::from(limit) + 1)
            .await?;
        let entries = rows.into_iter().map(history_entry).collect();
        Ok(Page::from_rows(entries, limit, |e: &HistoryEntry| {
            e.seq.to_string()
        }))
    }

    /// The account's totals as they were at `at` (zero before its first entry).
    pub async fn balance_at(
        &self,
        scope: Scope,
        account: AccountId,
        at: DateTime<Utc>,
    ) -> Result<(Account, Totals), LedgerError> {
        let view = self.account(scope, account).await?;
        let mut conn = self.db.conn().await?;
        let totals = store::entry_at(&mut conn, account.uuid(), at)
            .await?
            .map(|e| history_entry(e).totals)
            .unwrap_or_default();
        Ok((view, totals))
    }

    /// Every invariant, recomputed from the entries; empty when the ledger is sound.
    pub async fn verify(&self) -> Result<VerifyReport, LedgerError> {
        self.verify_on(&self.db).await
    }

    /// [`Self::verify`] reading through `db`: a read replica, or the background workers' pool.
    pub async fn verify_on(&self, db: &Db) -> Result<VerifyReport, LedgerError> {
        let mut conn = db.conn().await?;
        let mut violations: Vec<Violation> = store::verify(&mut conn)
            .await?
            .into_iter()
            .map(Violation::from)
            .collect();
        let mut report = VerifyReport::default();
        for check in store::CHECKS {
            let (found, rest) = violations.into_iter().partition(|v| v.check == check.name);
            violations = rest;
            report.add(check.name, check.about, found);
        }
        Ok(report)
    }

    /// A page of every transfer, in id order after `after` (the platform's view), for other
    /// modules' checks of their records against the ledger.
    pub async fn transfers_after(
        &self,
        after: Option<TransferId>,
        limit: u32,
    ) -> Result<Vec<StoredTransfer>, LedgerError> {
        let mut conn = self.db.conn().await?;
        store::transfers_after(&mut conn, after.map(|a| a.uuid()), i64::from(limit))
            .await?
            .into_iter()
            .map(stored_transfer)
            .collect()
    }

    /// Totals per currency and account code.
    pub async fn trial_balance(
        &self,
        currency: Option<Currency>,
    ) -> Result<Vec<TrialBalanceLine>, LedgerError> {
        let mut conn = self.db.conn().await?;
        let rows = store::trial_balance(&mut conn, currency.map(|c| c.code().to_owned())).await?;
        Ok(rows.into_iter().map(TrialBalanceLine::from).collect())
    }

    /// One pass of the expiry worker: voids up to `limit` pending transfers whose timeout
    /// passed. Safe with several replicas: rows are leased with SKIP LOCKED, and each void has
    /// an id derived from its pending transfer, so a duplicate is an idempotent `exists`.
    pub async fn expire_due(&self, limit: i64) -> Result<usize, LedgerError> {
        self.expire_due_on(&self.db, limit).await
    }

    /// [`Self::expire_due`], claiming through `db` (the background workers' pool); the voids
    /// go through the engine as always.
    pub async fn expire_due_on(&self, db: &Db, limit: i64) -> Result<usize, LedgerError> {
        let claimed = {
            let mut conn = db.conn().await?;
            store::claim_expired(&mut conn, limit, 60).await?
        };
        if claimed.is_empty() {
            return Ok(0);
        }
        let voids: Vec<NewTransfer> = claimed
            .iter()
            .map(|pending| NewTransfer::expiry_of(TransferId::from_uuid(*pending)))
            .collect();
        let outcomes = self.post(Scope::System, voids, None).await?;
        let mut voided = 0;
        let mut stale = Vec::new();
        for (pending, outcome) in claimed.into_iter().zip(&outcomes) {
            match outcome.code {
                ResultCode::Ok => voided += 1,
                // Resolved some other way, or gone: the expiry row is stale.
                ResultCode::PendingTransferAlreadyPosted
                | ResultCode::PendingTransferAlreadyVoided
                | ResultCode::PendingTransferNotFound
                | ResultCode::Exists => stale.push(pending),
                other => {
                    tracing::warn!(ledger.pending_id = %pending, ledger.result = %other, "could not expire a pending transfer");
                }
            }
        }
        if !stale.is_empty() {
            let mut conn = self.db.conn().await?;
            store::delete_expiry_rows(&mut conn, stale).await?;
        }
        if voided > 0 {
            tracing::info!(ledger.voided = voided, "expired pending transfers");
        }
        Ok(voided)
    }

    /// The expiry worker: a pass every `interval` until shutdown.
    /// The verification worker: checks the invariants (as `admin ledger verify` does) soon
    /// after start and then every `interval`, and reports the outcome on /metrics, so an
    /// alert fires when the books stop balancing or the check stops running. Every violation
    /// is also logged.
    pub async fn run_expiry(self, config: ExpiryConfig, db: Db, mut shutdown: Shutdown) {
        loop {
            tokio::select! {
                () = shutdown.requested() => return,
                () = tokio::time::sleep(config.interval) => {}
            }
            if let Err(e) = self.expire_due_on(&db, config.batch).await {
                tracing::error!(error.cause = %e, "expiring pending transfers failed");
            }
        }
    }
}

fn duplicate_account(e: diesel::result::Error) -> LedgerError {
    match e {
        diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        ) => LedgerError::validation("id", "an account with this id exists"),
        other => other.into(),
    }
}

fn account_rows(
    scope: Scope,
    accounts: Vec<NewAccount>,
    partner_books: bool,
) -> Result<Vec<AccountRow>, LedgerError> {
    let now = Utc::now();
    accounts
        .into_iter()
        .map(|a| {
            if a.flags.contains(AccountFlags::CLOSED) {
                return Err(LedgerError::validation(
                    "flags",
                    "an account cannot be created closed",
                ));
            }
            check_metadata(a.metadata.as_ref())?;
            Ok(AccountRow {
                id: a.id.unwrap_or_else(AccountId::new).uuid(),
                partner_id: scope.owner().map(|p| p.uuid()),
                currency: a.currency.code().to_owned(),
                code: a.code,
                flags: a.flags.bits(),
                metadata: a.metadata,
                debits_pending: 0,
                debits_posted: 0,
                credits_pending: 0,
                credits_posted: 0,
                entry_seq: 0,
                created_at: now,
                partner_books,
            })
        })
        .collect()
}

/// Every transfer's metadata is storable (see [`check_metadata`]): a module's mistake is its
/// own request's 400, never a failed batch.
fn check_transfers(transfers: &[NewTransfer]) -> Result<(), LedgerError> {
    for (i, t) in transfers.iter().enumerate() {
        check_metadata(t.metadata.as_ref()).map_err(|e| match e {
            LedgerError::Validation(e) => {
                LedgerError::validation(format!("transfers[{i}].metadata"), e.message)
            }
            other => other,
        })?;
    }
    Ok(())
}

fn currency_of(code: &str) -> Result<Currency, LedgerError> {
    Currency::parse(code)
        .map_err(|e| LedgerError::Internal(anyhow::anyhow!("stored currency {code}: {e}")))
}

/// A stored account as the state machine sees it.
pub(super) fn account_state(row: AccountRow) -> Result<AccountState, LedgerError> {
    Ok(AccountState {
        id: AccountId::from_uuid(row.id),
        partner_id: row.partner_id.map(PartnerId::from_uuid),
        currency: currency_of(&row.currency)?,
        flags: AccountFlags::from_bits_retain(row.flags),
        totals: Totals {
            debits_pending: row.debits_pending,
            debits_posted: row.debits_posted,
            credits_pending: row.credits_pending,
            credits_posted: row.credits_posted,
        },
        seq: row.entry_seq,
        partner_books: row.partner_books,
    })
}

fn account_view(row: AccountRow) -> Result<Account, LedgerError> {
    let code = row.code;
    let metadata = row.metadata.clone();
    let created_at = row.created_at;
    Ok(Account {
        state: account_state(row)?,
        code,
        metadata,
        created_at,
    })
}

/// A stored transfer as the state machine sees it.
pub(super) fn stored_transfer(row: TransferRow) -> Result<StoredTransfer, LedgerError> {
    Ok(StoredTransfer {
        id: TransferId::from_uuid(row.id),
        partner_id: row.partner_id.map(PartnerId::from_uuid),
        debit_account_id: AccountId::from_uuid(row.debit_account_id),
        credit_account_id: AccountId::from_uuid(row.credit_account_id),
        amount: row.amount,
        currency: currency_of(&row.currency)?,
        code: row.code,
        flags: TransferFlags::from_bits_retain(row.flags),
        pending_id: row.pending_id.map(TransferId::from_uuid),
        timeout_secs: row.timeout_secs.and_then(|s| u32::try_from(s).ok()),
        expires_at: row.expires_at,
        metadata: row.metadata,
        created_at: row.created_at,
    })
}

fn history_entry(row: EntryRow) -> HistoryEntry {
    HistoryEntry {
        account_id: AccountId::from_uuid(row.account_id),
        seq: row.seq,
        transfer_id: TransferId::from_uuid(row.transfer_id),
        is_credit: row.is_credit,
        pending_delta: row.pending_delta,
        posted_delta: row.posted_delta,
        totals: Totals {
            debits_pending: row.debits_pending,
            debits_posted: row.debits_posted,
            credits_pending: row.credits_pending,
            credits_posted: row.credits_posted,
        },
        created_at: row.created_at,
    }
}
