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
mod settings;
mod store;

use chrono::{DateTime, Utc};

pub use engine::{AttachedItem, Attachment, BatchWrite, EngineConfig, EngineMetrics, SideWrite};
pub use error::{LedgerError, SideWriteError};
pub use http::{TRANSFERS_ROUTE, configure};
pub use model::{
    AccountFlags, AccountId, AccountState, Applied, Entry, NewAccount, NewTransfer, Outcome,
    ResultCode, Scope, StoredTransfer, Totals, TransferFlags, TransferId,
};
pub use service::{
    Account, CheckRun, ExpiryConfig, HistoryEntry, LedgerService, TrialBalanceLine, VerifyMetrics,
    VerifyReport, Violation,
};
pub use settings::LedgerSettings;

use crate::platform::db::{LockKey, Tx};
use crate::platform::http::pagination::Page;

/// The ledger's face: how every other module moves money and reads balances. Callers hold an
/// `Arc<dyn Ledger>` built by the composition root (`wiring.rs`), never a [`LedgerService`].
/// Implemented in process by [`LedgerService`]; a split-out ledger would implement it as an
/// RPC client (transfer ids make posting idempotent).
#[async_trait::async_trait]
pub trait Ledger: Send + Sync {
    /// Posts `transfers` through the engine (batched with other requests, all-or-nothing per
    /// linked chain); `side`: a write of the caller's own in the batch's transaction.
    async fn post(
        &self,
        scope: Scope,
        transfers: Vec<NewTransfer>,
        side: Option<SideWrite>,
    ) -> Result<Vec<Outcome>, LedgerError>;

    /// [`Ledger::post`] with a write attached to the outcomes, under advisory `locks` the
    /// engine takes (in one global order) before any attached write runs.
    async fn post_attached(
        &self,
        scope: Scope,
        transfers: Vec<NewTransfer>,
        locks: Vec<LockKey>,
        side: Attachment,
    ) -> Result<Vec<Outcome>, LedgerError>;

    /// Opens accounts inside the caller's transaction (a wallet and its account appear
    /// together or not at all).
    async fn create_accounts_in(
        &self,
        tx: &mut Tx<'_>,
        scope: Scope,
        accounts: Vec<NewAccount>,
    ) -> Result<Vec<Account>, LedgerError>;

    /// Sets and clears account flags inside the caller's transaction (freezing a wallet).
    async fn set_account_flags_in(
        &self,
        tx: &mut Tx<'_>,
        scope: Scope,
        id: AccountId,
        set: AccountFlags,
        clear: AccountFlags,
    ) -> Result<Account, LedgerError>;

    async fn account(&self, scope: Scope, id: AccountId) -> Result<Account, LedgerError>;

    /// Posted transfers by id (absent ids are left out).
    async fn transfers(
        &self,
        scope: Scope,
        ids: Vec<TransferId>,
    ) -> Result<Vec<StoredTransfer>, LedgerError>;

    /// A page of every posted transfer in id order after `after` (the platform's view), for
    /// other modules' checks of their records against the ledger.
    async fn transfers_after(
        &self,
        after: Option<TransferId>,
        limit: u32,
    ) -> Result<Vec<StoredTransfer>, LedgerError>;

    /// An account's journal, newest first.
    async fn entries(
        &self,
        scope: Scope,
        account: AccountId,
        before_seq: Option<i64>,
        limit: u32,
    ) -> Result<Page<HistoryEntry>, LedgerError>;

    /// An account's totals as they stood at `at`.
    async fn balance_at(
        &self,
        scope: Scope,
        account: AccountId,
        at: DateTime<Utc>,
    ) -> Result<(Account, Totals), LedgerError>;
}

#[async_trait::async_trait]
impl Ledger for LedgerService {
    async fn post(
        &self,
        scope: Scope,
        transfers: Vec<NewTransfer>,
        side: Option<SideWrite>,
    ) -> Result<Vec<Outcome>, LedgerError> {
        LedgerService::post(self, scope, transfers, side).await
    }

    async fn post_attached(
        &self,
        scope: Scope,
        transfers: Vec<NewTransfer>,
        locks: Vec<LockKey>,
        side: Attachment,
    ) -> Result<Vec<Outcome>, LedgerError> {
        LedgerService::post_locked(self, scope, transfers, locks, side).await
    }

    async fn create_accounts_in(
        &self,
        tx: &mut Tx<'_>,
        scope: Scope,
        accounts: Vec<NewAccount>,
    ) -> Result<Vec<Account>, LedgerError> {
        LedgerService::create_accounts_in(self, tx, scope, accounts).await
    }

    async fn set_account_flags_in(
        &self,
        tx: &mut Tx<'_>,
        scope: Scope,
        id: AccountId,
        set: AccountFlags,
        clear: AccountFlags,
    ) -> Result<Account, LedgerError> {
        LedgerService::set_account_flags_in(self, tx, scope, id, set, clear).await
    }

    async fn account(&self, scope: Scope, id: AccountId) -> Result<Account, LedgerError> {
        LedgerService::account(self, scope, id).await
    }

    async fn transfers(
        &self,
        scope: Scope,
        ids: Vec<TransferId>,
    ) -> Result<Vec<StoredTransfer>, LedgerError> {
        LedgerService::transfers(self, scope, ids).await
    }

    async fn transfers_after(
        &self,
        after: Option<TransferId>,
        limit: u32,
    ) -> Result<Vec<StoredTransfer>, LedgerError> {
        LedgerService::transfers_after(self, after, limit).await
    }

    async fn entries(
        &self,
        scope: Scope,
        account: AccountId,
        before_seq: Option<i64>,
        limit: u32,
    ) -> Result<Page<HistoryEntry>, LedgerError> {
        LedgerService::entries(self, scope, account, before_seq, limit).await
    }

    async fn balance_at(
        &self,
        scope: Scope,
        account: AccountId,
        at: DateTime<Utc>,
    ) -> Result<(Account, Totals), LedgerError> {
        LedgerService::balance_at(self, scope, account, at).await
    }
}

pub fn openapi() -> utoipa::openapi::OpenApi {
    <http::LedgerDoc as utoipa::OpenApi>::openapi()
}
