//! The ledger's rules, as a pure state machine: given a snapshot of the accounts and transfers
//! a batch touches, apply transfers one by one, in arrival order, and say for each either the
//! effects (the stored transfer, its two entries, the new account totals) or the one result
//! code that refused it. No I/O here: the engine reads the snapshot under row locks, runs this,
//! and writes what it returns. Unit- and property-tested without a database.
//!
//! # Result codes
#![doc = include_str!("result_codes.md")]

use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::ToSchema;

use super::error::LedgerError;
use crate::kernel::PartnerId;
use crate::platform::error::FieldError;
use crate::platform::ids::define_id;
use crate::platform::money::{Amount, Currency, Money};

define_id!(AccountId, AccountIdKind, "acct", "account");
define_id!(TransferId, TransferIdKind, "xfer", "transfer");

/// Who acts on the ledger: a partner sees and moves only its own accounts; the platform's own
/// modules (payments, cards, expiry) act as `System` and see every account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Partner(PartnerId),
    System,
}

impl Scope {
    /// Whether an object owned by `owner` is visible in this scope.
    pub fn sees(self, owner: Option<PartnerId>) -> bool {
        match self {
            Self::System => true,
            Self::Partner(p) => owner == Some(p),
        }
    }

    /// The owner recorded on objects created in this scope.
    pub fn owner(self) -> Option<PartnerId> {
        match self {
            Self::Partner(p) => Some(p),
            Self::System => None,
        }
    }
}

bitflags::bitflags! {
    /// Account flags (stored as their bits).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
    pub struct AccountFlags: i32 {
        const DEBITS_MUST_NOT_EXCEED_CREDITS = 1;
        const CREDITS_MUST_NOT_EXCEED_DEBITS = 2;
        const HISTORY = 4;
        const CLOSED = 8;
        /// No new debits (a frozen wallet); posting or voiding a pending transfer still works.
        const DEBITS_BLOCKED = 16;
        /// No new credits.
        const CREDITS_BLOCKED = 32;
    }
}

impl AccountFlags {
    const NAMES: [(AccountFlags, &'static str); 6] = [
        (
            Self::DEBITS_MUST_NOT_EXCEED_CREDITS,
            "debits_must_not_exceed_credits",
        ),
        (
            Self::CREDITS_MUST_NOT_EXCEED_DEBITS,
            "credits_must_not_exceed_debits",
        ),
        (Self::HISTORY, "history"),
        (Self::CLOSED, "closed"),
        (Self::DEBITS_BLOCKED, "debits_blocked"),
        (Self::CREDITS_BLOCKED, "credits_blocked"),
    ];

    /// Parses the API's flag names; unknown names are refused by name.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<AccountFlags, String> {
        let mut bits = AccountFlags::empty();
        for name in names {
            let name = name.as_ref();
            let bit = Self::NAMES
                .iter()
                .find(|(_, n)| *n == name)
                .map(|(b, _)| *b)
                .ok_or_else(|| {
                    format!(
                        "unknown account flag `{}`",
                        name.chars().take(40).collect::<String>()
                    )
                })?;
            bits |= bit;
        }
        if bits
            .contains(Self::DEBITS_MUST_NOT_EXCEED_CREDITS | Self::CREDITS_MUST_NOT_EXCEED_DEBITS)
        {
            return Err("debits_must_not_exceed_credits and credits_must_not_exceed_debits exclude each other".to_owned());
        }
        Ok(bits)
    }

    pub fn names(self) -> Vec<&'static str> {
        Self::NAMES
            .iter()
            .filter(|(b, _)| self.contains(*b))
            .map(|(_, n)| *n)
            .collect()
    }
}

bitflags::bitflags! {
    /// Transfer flags (stored as their bits).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
    pub struct TransferFlags: i32 {
        const LINKED = 1;
        const PENDING = 2;
        const POST_PENDING = 4;
        const VOID_PENDING = 8;
        const BALANCING_DEBIT = 16;
        const BALANCING_CREDIT = 32;
        /// Set by the expiry worker only: a void of a pending transfer whose timeout passed.
        const EXPIRY = 64;
    }
}

impl TransferFlags {
    const NAMES: [(TransferFlags, &'static str); 7] = [
        (Self::LINKED, "linked"),
        (Self::PENDING, "pending"),
        (Self::POST_PENDING, "post_pending"),
        (Self::VOID_PENDING, "void_pending"),
        (Self::BALANCING_DEBIT, "balancing_debit"),
        (Self::BALANCING_CREDIT, "balancing_credit"),
        (Self::EXPIRY, "expiry"),
    ];

    pub fn names(self) -> Vec<&'static str> {
        Self::NAMES
            .iter()
            .filter(|(b, _)| self.contains(*b))
            .map(|(_, n)| *n)
            .collect()
    }

    fn is_post_or_void(self) -> bool {
        self.intersects(Self::POST_PENDING | Self::VOID_PENDING)
    }
}

/// Why a transfer was refused; see the module documentation for the order of precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResultCode {
    Ok,
    LinkedEventFailed,
    LinkedEventChainOpen,
    FlagsAreMutuallyExclusive,
    PendingIdRequired,
    TimeoutReservedForPendingTransfer,
    AmountMustNotBeZero,
    AccountsRequired,
    AccountsMustBeDifferent,
    Exists,
    ExistsWithDifferentFields,
    IdAlreadyFailed,
    AccountNotFound,
    AccountNotOwned,
    CurrencyMismatch,
    AccountClosed,
    DebitsBlocked,
    CreditsBlocked,
    PendingTransferNotFound,
    PendingTransferNotPending,
    PendingTransferHasDifferentAccounts,
    PendingTransferAlreadyPosted,
    PendingTransferAlreadyVoided,
    PendingTransferExpired,
    ExceedsPendingAmount,
    OverflowsDebitsPending,
    OverflowsCreditsPending,
    OverflowsDebitsPosted,
    OverflowsCreditsPosted,
    OverflowsDebits,
    OverflowsCredits,
    OverflowsTimeout,
    ExceedsCredits,
    ExceedsDebits,
}

impl ResultCode {
    /// Every code, in the documented order (precedence), `ok` first.
    pub const ALL: [ResultCode; 34] = [
        Self::Ok,
        Self::LinkedEventFailed,
        Self::LinkedEventChainOpen,
        Self::FlagsAreMutuallyExclusive,
        Self::PendingIdRequired,
        Self::TimeoutReservedForPendingTransfer,
        Self::AmountMustNotBeZero,
        Self::AccountsRequired,
        Self::AccountsMustBeDifferent,
        Self::Exists,
        Self::ExistsWithDifferentFields,
        Self::IdAlreadyFailed,
        Self::AccountNotFound,
        Self::AccountNotOwned,
        Self::CurrencyMismatch,
        Self::AccountClosed,
        Self::DebitsBlocked,
        Self::CreditsBlocked,
        Self::PendingTransferNotFound,
        Self::PendingTransferNotPending,
        Self::PendingTransferHasDifferentAccounts,
        Self::PendingTransferAlreadyPosted,
        Self::PendingTransferAlreadyVoided,
        Self::PendingTransferExpired,
        Self::ExceedsPendingAmount,
        Self::OverflowsDebitsPending,
        Self::OverflowsCreditsPending,
        Self::OverflowsDebitsPosted,
        Self::OverflowsCreditsPosted,
        Self::OverflowsDebits,
        Self::OverflowsCredits,
        Self::OverflowsTimeout,
        Self::ExceedsCredits,
        Self::ExceedsDebits,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::LinkedEventFailed => "linked_event_failed",
            Self::LinkedEventChainOpen => "linked_event_chain_open",
            Self::FlagsAreMutuallyExclusive => "flags_are_mutually_exclusive",
            Self::PendingIdRequired => "pending_id_required",
            Self::TimeoutReservedForPendingTransfer => "timeout_reserved_for_pending_transfer",
            Self::AmountMustNotBeZero => "amount_must_not_be_zero",
            Self::AccountsRequired => "accounts_required",
            Self::AccountsMustBeDifferent => "accounts_must_be_different",
            Self::Exists => "exists",
            Self::ExistsWithDifferentFields => "exists_with_different_fields",
            Self::IdAlreadyFailed => "id_already_failed",
            Self::AccountNotFound => "account_not_found",
            Self::AccountNotOwned => "account_not_owned",
            Self::CurrencyMismatch => "currency_mismatch",
            Self::AccountClosed => "account_closed",
            Self::DebitsBlocked => "debits_blocked",
            Self::CreditsBlocked => "credits_blocked",
            Self::PendingTransferNotFound => "pending_transfer_not_found",
            Self::PendingTransferNotPending => "pending_transfer_not_pending",
            Self::PendingTransferHasDifferentAccounts => "pending_transfer_has_different_accounts",
            Self::PendingTransferAlreadyPosted => "pending_transfer_already_posted",
            Self::PendingTransferAlreadyVoided => "pending_transfer_already_voided",
            Self::PendingTransferExpired => "pending_transfer_expired",
            Self::ExceedsPendingAmount => "exceeds_pending_amount",
            Self::OverflowsDebitsPending => "overflows_debits_pending",
            Self::OverflowsCreditsPending => "overflows_credits_pending",
            Self::OverflowsDebitsPosted => "overflows_debits_posted",
            Self::OverflowsCreditsPosted => "overflows_credits_posted",
            Self::OverflowsDebits => "overflows_debits",
            Self::OverflowsCredits => "overflows_credits",
            Self::OverflowsTimeout => "overflows_timeout",
            Self::ExceedsCredits => "exceeds_credits",
            Self::ExceedsDebits => "exceeds_debits",
        }
    }

    pub fn parse(value: &str) -> Option<ResultCode> {
        Self::ALL.into_iter().find(|c| c.as_str() == value)
    }

    /// Failures that depend on the ledger's state, not only on the request: their ids are
    /// remembered, and reusing one answers `id_already_failed` (a retry must never succeed
    /// later, e.g. once funds arrive, and move money twice from the client's point of view).
    /// `linked_event_failed` is not the transfer's own failure: its id stays usable.
    pub fn is_recorded_failure(self) -> bool {
        !matches!(
            self,
            Self::Ok
                | Self::LinkedEventFailed
                | Self::LinkedEventChainOpen
                | Self::FlagsAreMutuallyExclusive
                | Self::PendingIdRequired
                | Self::TimeoutReservedForPendingTransfer
                | Self::AmountMustNotBeZero
                | Self::AccountsRequired
                | Self::AccountsMustBeDifferent
                | Self::Exists
                | Self::ExistsWithDifferentFields
                | Self::IdAlreadyFailed
        )
    }
}

impl fmt::Display for ResultCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The four totals of an account, in minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    pub debits_pending: i64,
    pub debits_posted: i64,
    pub credits_pending: i64,
    pub credits_posted: i64,
}

impl Totals {
    /// Posted credits minus posted debits (may be negative, e.g. for settlement accounts).
    pub fn posted_balance(&self) -> Option<i64> {
        self.credits_posted.checked_sub(self.debits_posted)
    }

    /// What may still be spent: posted credits - posted debits - pending debits (API.md).
    pub fn available(&self) -> Option<i64> {
        self.posted_balance()?.checked_sub(self.debits_pending)
    }
}

/// An account as the state machine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountState {
    pub id: AccountId,
    pub partner_id: Option<PartnerId>,
    pub currency: Currency,
    pub flags: AccountFlags,
    pub totals: Totals,
    /// Number of entries written so far; the next entry gets `seq + 1`.
    pub seq: i64,
    /// The partner's own books (made through the ledger API): the only accounts a partner's
    /// raw transfers may move money on. Wallets, rails and cards are the system's.
    pub partner_books: bool,
}

/// A transfer as requested (amounts already in minor units).
#[derive(Debug, Clone, PartialEq)]
pub struct NewTransfer {
    pub id: TransferId,
    /// Optional for post/void (taken from the pending transfer).
    pub debit_account_id: Option<AccountId>,
    pub credit_account_id: Option<AccountId>,
    /// For post: 0 means the full pending amount. Ignored for void.
    pub amount: i64,
    /// Optional for post/void.
    pub currency: Option<Currency>,
    pub code: i32,
    pub flags: TransferFlags,
    pub pending_id: Option<TransferId>,
    pub timeout_secs: Option<u32>,
    pub metadata: Option<serde_json::Value>,
}

impl NewTransfer {
    /// Money moving now: `amount` from `debit` to `credit`.
    pub fn movement(
        id: TransferId,
        debit: AccountId,
        credit: AccountId,
        amount: Money,
        code: i32,
    ) -> NewTransfer {
        NewTransfer {
            id,
            debit_account_id: Some(debit),
            credit_account_id: Some(credit),
            amount: amount.minor(),
            currency: Some(amount.currency()),
            code,
            flags: TransferFlags::empty(),
            pending_id: None,
            timeout_secs: None,
            metadata: None,
        }
    }

    /// A reservation: `amount` held on `debit` for `credit` until it is posted or voided.
    pub fn pending(
        id: TransferId,
        debit: AccountId,
        credit: AccountId,
        amount: Money,
        code: i32,
    ) -> NewTransfer {
        NewTransfer {
            flags: TransferFlags::PENDING,
            ..NewTransfer::movement(id, debit, credit, amount, code)
        }
    }

    /// Completes the pending transfer `pending` for its full amount.
    pub fn post_pending(id: TransferId, pending: TransferId, code: i32) -> NewTransfer {
        NewTransfer::resolving(id, pending, code, TransferFlags::POST_PENDING)
    }

    /// Releases the pending transfer `pending`: nothing moves.
    pub fn void_pending(id: TransferId, pending: TransferId, code: i32) -> NewTransfer {
        NewTransfer::resolving(id, pending, code, TransferFlags::VOID_PENDING)
    }

    /// The expiry of the pending transfer `pending`: its void, with an id derived from it, so
    /// every replica (and a module expiring its own holds) that expires P writes it once; the
    /// second gets `exists`.
    pub fn expiry_of(pending: TransferId) -> NewTransfer {
        let id = uuid::Uuid::new_v5(&EXPIRY_NAMESPACE, pending.uuid().as_bytes());
        NewTransfer::void_pending(TransferId::from_uuid(id), pending, 0)
            .with_flags(TransferFlags::EXPIRY)
    }

    fn resolving(
        id: TransferId,
        pending: TransferId,
        code: i32,
        flags: TransferFlags,
    ) -> NewTransfer {
        NewTransfer {
            id,
            debit_account_id: None,
            credit_account_id: None,
            amount: 0,
            currency: None,
            code,
            flags,
            pending_id: Some(pending),
            timeout_secs: None,
            metadata: None,
        }
    }

    /// With `metadata` kept on the transfer (shown on statements and webhooks).
    pub fn with_metadata(mut self, metadata: serde_json::Value) -> NewTransfer {
        self.metadata = Some(metadata);
        self
    }

    /// With `flags` added (e.g. [`TransferFlags::LINKED`]).
    pub fn with_flags(mut self, flags: TransferFlags) -> NewTransfer {
        self.flags |= flags;
        self
    }
}

/// Namespace of the ids of expiry voids (see [`NewTransfer::expiry_of`]).
const EXPIRY_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6f1e_2d3c_4b5a_4968_8776_6554_4332_2110);

/// A transfer as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTransfer {
    pub id: TransferId,
    pub partner_id: Option<PartnerId>,
    pub debit_account_id: AccountId,
    pub credit_account_id: AccountId,
    /// What actually moved (a balancing transfer's clamped amount, a post's posted amount).
    pub amount: i64,
    pub currency: Currency,
    pub code: i32,
    pub flags: TransferFlags,
    pub pending_id: Option<TransferId>,
    pub timeout_secs: Option<u32>,
    pub expires_at: Option<DateTime<Utc>>,
    pub metadata: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
}

/// How a pending transfer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    Posted,
    Voided,
}

/// A new account.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub id: Option<AccountId>,
    pub currency: Currency,
    pub code: i32,
    pub flags: AccountFlags,
    pub metadata: Option<serde_json::Value>,
}

/// One line of an account's history: what a transfer did to it, and its totals afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub account_id: AccountId,
    pub seq: i64,
    pub transfer_id: TransferId,
    pub is_credit: bool,
    pub pending_delta: i64,
    pub posted_delta: i64,
    pub totals: Totals,
}

/// What a successful transfer changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub transfer: StoredTransfer,
    pub entries: [Entry; 2],
}

/// The state a batch works on. The engine fills it from the database under row locks; the
/// state machine updates it as transfers apply, so later transfers see earlier ones.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub accounts: HashMap<AccountId, AccountState>,
    /// Transfers that exist (stored before, or applied earlier in this batch).
    pub existing: HashMap<TransferId, StoredTransfer>,
    /// Ids of failed transfers and their code.
    pub failed: HashMap<TransferId, ResultCode>,
    /// Pending transfers referenced by this batch, and how they ended if they did.
    pub pendings: HashMap<TransferId, (StoredTransfer, Option<Resolution>)>,
}

/// The result of one transfer.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub id: TransferId,
    pub code: ResultCode,
    /// Present when `code` is `ok`.
    pub applied: Option<Applied>,
}

/// What to undo when a linked chain fails.
mod posting;
mod requests;

pub use posting::*;
pub use requests::*;

#[cfg(test)]
mod tests;
