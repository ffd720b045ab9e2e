//! The ledger: double-entry accounts and transfers in TigerBeetle's model, posted through one
//! group-commit engine. Every wallet balance, payment and card hold is a ledger transfer.
//!
//! - Accounts (`acct_`) have four totals (debits/credits, pending/posted) and flags
//!   (`debits_must_not_exceed_credits`, `credits_must_not_exceed_debits`, `history`, `closed`).
//! - Transfers (`xfer_`) carry a client-chosen id (the idempotency key): single-phase, or
//!   two-phase (`pending`, then `post_pending` full or partial, or `void_pending`, or expiry
//!   after a timeout), `linked` chains that succeed or fail together, and balancing
//!   transfers. Each gets a result code; the codes and their precedence are documented in
//!   [`model`](self#result-codes) — see `ResultCode`.
//! - Entries: per account, in order, with the totals after each, so history and
//!   point-in-time balances come from the journal.
//!
//! Other modules post through [`Ledger::post`], attaching their own writes (a payment row, an
//! outbox event) so they commit in the same transaction as the transfers.

mod engine;
mod error;
mod http;
mod model;
mod service;
mod store;

use std::future::Future;

use chrono::{DateTime, Utc};

pub use engine::{AttachedItem, Attachment, BatchWrite, EngineConfig, EngineMetrics, SideWrite};
pub use error::{LedgerError, SideWriteError};
pub use http::{LedgerDoc, TRANSFERS_ROUTE, configure};
pub use model::{
    AccountFlags, AccountId, AccountState, Applied, Entry, NewTransfer, Outcome, ResultCode, Scope,
    StoredTransfer, Totals, TransferFlags, TransferId,
};
pub use service::{
    Account, CheckRun, ExpiryConfig, HistoryEntry, LedgerService, NewAccount, VerifyMetrics,
    VerifyReport,
};
pub use store::{TrialBalanceRow, Violation};

use crate::platform::db::{LockKey, Tx};
use crate::platform::http::pagination::Page;

/// What other modules may ask of the ledger. Implemented by [`LedgerService`]; a split-out
/// ledger service would implement it as an RPC client (transfer ids make posting idempotent).
pub trait Ledger: Send + Sync {
    /// Posts transfers through the engine; one outcome per transfer, in order. `side` runs in
    /// the same transaction after the outcomes are known.
    fn post(
        &self,
        scope: Scope,
        transfers: Vec<NewTransfer>,
        side: Option<SideWrite>,
    ) -> impl Future<Output = Result<Vec<Outcome>, LedgerError>> + Send;

    /// [`Ledger::post`] with advisory lock keys the attached write needs, taken by the engine
    /// in ascending order for the whole batch before any attached write runs, and a write of
    /// its own or an item for a [`BatchWrite`] that writes all of a batch's items at once.
    fn post_locked(
        &self,
        scope: Scope,
        transfers: Vec<NewTransfer>,
        locks: Vec<LockKey>,
        side: Attachment,
    ) -> impl Future<Output = Result<Vec<Outcome>, LedgerError>> + Send;

    /// Creates accounts inside the caller's transaction.
    fn create_accounts_in(
        &self,
        tx: &mut Tx<'_>,
        scope: Scope,
        accounts: Vec<NewAccount>,
    ) -> impl Future<Output = Result<Vec<Account>, LedgerError>> + Send;

    /// Sets and clears `debits_blocked`, `credits_blocked` and (set only) `closed`, inside the
    /// caller's transaction.
    fn set_account_flags_in(
        &self,
        tx: &mut Tx<'_>,
        scope: Scope,
        id: AccountId,
        set: i32,
        clear: i32,
    ) -> impl Future<Output = Result<Account, LedgerError>> + Send;

    /// An account visible in `scope`.
    fn account(
        &self,
        scope: Scope,
        id: AccountId,
    ) -> impl Future<Output = Result<Account, LedgerError>> + Send;

    /// The transfers among `ids` visible in `scope`.
    fn transfers(
        &self,
        scope: Scope,
        ids: Vec<TransferId>,
    ) -> impl Future<Output = Result<Vec<StoredTransfer>, LedgerError>> + Send;

    /// An account's entries, newest first.
    fn entries(
        &self,
        scope: Scope,
        account: AccountId,
        before_seq: Option<i64>,
        limit: u32,
    ) -> impl Future<Output = Result<Page<HistoryEntry>, LedgerError>> + Send;

    /// An account's totals at a past instant.
    fn balance_at(
        &self,
        scope: Scope,
        account: AccountId,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(Account, Totals), LedgerError>> + Send;
}

impl Ledger for LedgerService {
    fn post(
        &self,
        scope: Scope,
        transfers: Vec<NewTransfer>,
        side: Option<SideWrite>,
    ) -> impl Future<Output = Result<Vec<Outcome>, LedgerError>> + Send {
        LedgerService::post(self, scope, transfers, side)
    }

    fn post_locked(
        &self,
        scope: Scope,
        transfers: Vec<NewTransfer>,
        locks: Vec<LockKey>,
        side: Attachment,
    ) -> impl Future<Output = Result<Vec<Outcome>, LedgerError>> + Send {
        LedgerService::post_locked(self, scope, transfers, locks, side)
    }

    fn create_accounts_in(
        &self,
        tx: &mut Tx<'_>,
        scope: Scope,
        accounts: Vec<NewAccount>,
    ) -> impl Future<Output = Result<Vec<Account>, LedgerError>> + Send {
        LedgerService::create_accounts_in(self, tx, scope, accounts)
    }

    fn set_account_flags_in(
        &self,
        tx: &mut Tx<'_>,
        scope: Scope,
        id: AccountId,
        set: i32,
        clear: i32,
    ) -> impl Future<Output = Result<Account, LedgerError>> + Send {
        LedgerService::set_account_flags_in(self, tx, scope, id, set, clear)
    }

    fn account(
        &self,
        scope: Scope,
        id: AccountId,
    ) -> impl Future<Output = Result<Account, LedgerError>> + Send {
        LedgerService::account(self, scope, id)
    }

    fn transfers(
        &self,
        scope: Scope,
        ids: Vec<TransferId>,
    ) -> impl Future<Output = Result<Vec<StoredTransfer>, LedgerError>> + Send {
        LedgerService::transfers(self, scope, ids)
    }

    fn entries(
        &self,
        scope: Scope,
        account: AccountId,
        before_seq: Option<i64>,
        limit: u32,
    ) -> impl Future<Output = Result<Page<HistoryEntry>, LedgerError>> + Send {
        LedgerService::entries(self, scope, account, before_seq, limit)
    }

    fn balance_at(
        &self,
        scope: Scope,
        account: AccountId,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(Account, Totals), LedgerError>> + Send {
        LedgerService::balance_at(self, scope, account, at)
    }
}

/// The ledger's part of the OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <LedgerDoc as utoipa::OpenApi>::openapi()
}
