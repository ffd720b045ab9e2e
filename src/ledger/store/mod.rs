//! Statements on the ledger's own tables (`ledger_*`). The posting engine's reads and its one
//! set-based write live here; so do the history, verification and trial-balance queries.
//!
//! Reads that take `&AsyncPgConnection` can be pipelined: polled together, they go to the
//! server back to back and run in that order, so a batch's lock and its reads cost one round
//! trip.
//!
//! One file per concern: `accounts` (and their entries), `transfers` (and pending expiry),
//! `tx` (the engine's transaction: BEGIN's reads, advisory locks, the fate of a broken commit),
//! `write` (the engine's one write) and `verify` (the invariant checks, the trial balance).

mod accounts;
mod transfers;
mod tx;
mod verify;
mod write;

pub use accounts::{
    AccountRow, EntryRow, entry_at, find_account, insert_accounts, list_entries, lock_account,
    lock_accounts, read_accounts, set_account_flags,
};
pub use transfers::{
    TransferRow, claim_expired, delete_expiry_rows, load_failed, load_resolutions, load_transfers,
    transfers_after,
};
pub use tx::{TxInfo, advisory_locks, tx_fate, tx_info};
pub use verify::{CHECKS, TrialBalanceRow, ViolationRow, trial_balance, verify};
pub use write::{WriteSet, write_batch};
