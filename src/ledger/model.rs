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

// The request section parses into the service's `NewAccount` and checks metadata with the
// service's own rule; both are pure.
use super::error::LedgerError;
use super::service::{NewAccount, check_metadata};
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
#[derive(Default)]
struct Undo {
    accounts: Vec<AccountState>,
    existing: Vec<TransferId>,
    /// Pending transfers this chain resolved.
    resolved: Vec<TransferId>,
    /// Pending transfers this chain created.
    created: Vec<TransferId>,
}

/// Applies one request's transfers, in order, honouring linked chains. `now` stamps the
/// transfers and decides expiry.
pub fn apply_request(
    snapshot: &mut Snapshot,
    scope: Scope,
    transfers: &[NewTransfer],
    now: DateTime<Utc>,
) -> Vec<Outcome> {
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(transfers.len());
    let mut start = 0;
    while start < transfers.len() {
        // A chain runs to the first transfer without `linked` (inclusive).
        let mut end = start;
        while end < transfers.len() && transfers[end].flags.contains(TransferFlags::LINKED) {
            end += 1;
        }
        if end == transfers.len() {
            // The request ends inside a chain: the chain is open and fails as a whole.
            for (i, t) in transfers[start..].iter().enumerate() {
                let code = if start + i + 1 == transfers.len() {
                    ResultCode::LinkedEventChainOpen
                } else {
                    ResultCode::LinkedEventFailed
                };
                outcomes.push(failure(snapshot, t.id, code));
            }
            break;
        }
        let chain = &transfers[start..=end];
        if chain.len() == 1 {
            outcomes.push(apply_one(snapshot, scope, &chain[0], now, None));
        } else {
            outcomes.extend(apply_chain(snapshot, scope, chain, now));
        }
        start = end + 1;
    }
    outcomes
}

fn apply_chain(
    snapshot: &mut Snapshot,
    scope: Scope,
    chain: &[NewTransfer],
    now: DateTime<Utc>,
) -> Vec<Outcome> {
    // A retried chain that fully exists answers `exists` for each transfer.
    if chain.iter().all(|t| {
        static_check(t).is_ok() && exists_check(snapshot, scope, t) == Some(ResultCode::Exists)
    }) {
        return chain
            .iter()
            .map(|t| Outcome {
                id: t.id,
                code: ResultCode::Exists,
                applied: None,
            })
            .collect();
    }
    let mut undo = Undo::default();
    let mut applied = Vec::with_capacity(chain.len());
    for (i, t) in chain.iter().enumerate() {
        let outcome = apply_one(snapshot, scope, t, now, Some(&mut undo));
        if outcome.code != ResultCode::Ok {
            rollback(snapshot, undo);
            let failed_code = outcome.code;
            return chain
                .iter()
                .enumerate()
                .map(|(j, t)| {
                    let code = if j == i {
                        failed_code
                    } else {
                        ResultCode::LinkedEventFailed
                    };
                    failure(snapshot, t.id, code)
                })
                .collect();
        }
        applied.push(outcome);
    }
    applied
}

fn rollback(snapshot: &mut Snapshot, undo: Undo) {
    for account in undo.accounts.into_iter().rev() {
        snapshot.accounts.insert(account.id, account);
    }
    for id in undo.existing {
        snapshot.existing.remove(&id);
    }
    for id in undo.resolved {
        if let Some(pending) = snapshot.pendings.get_mut(&id) {
            pending.1 = None;
        }
    }
    for id in undo.created {
        snapshot.pendings.remove(&id);
    }
}

/// A failed outcome; state failures are remembered so the id cannot be reused.
fn failure(snapshot: &mut Snapshot, id: TransferId, code: ResultCode) -> Outcome {
    if code.is_recorded_failure() && !snapshot.existing.contains_key(&id) {
        snapshot.failed.entry(id).or_insert(code);
    }
    Outcome {
        id,
        code,
        applied: None,
    }
}

fn apply_one(
    snapshot: &mut Snapshot,
    scope: Scope,
    t: &NewTransfer,
    now: DateTime<Utc>,
    undo: Option<&mut Undo>,
) -> Outcome {
    match evaluate(snapshot, scope, t, now) {
        Ok(applied) => {
            commit(snapshot, &applied, undo);
            Outcome {
                id: t.id,
                code: ResultCode::Ok,
                applied: Some(applied),
            }
        }
        // Inside a chain, the chain decides what is remembered (after its rollback).
        Err(code) if undo.is_some() => Outcome {
            id: t.id,
            code,
            applied: None,
        },
        Err(code) => failure(snapshot, t.id, code),
    }
}

/// The shape rules (1-8 of the table, but chain rules which the caller applies).
fn static_check(t: &NewTransfer) -> Result<(), ResultCode> {
    let f = t.flags;
    let kinds = [
        TransferFlags::PENDING,
        TransferFlags::POST_PENDING,
        TransferFlags::VOID_PENDING,
    ]
    .iter()
    .filter(|b| f.contains(**b))
    .count();
    let balancing =
        f.contains(TransferFlags::BALANCING_DEBIT) || f.contains(TransferFlags::BALANCING_CREDIT);
    if kinds > 1
        || (balancing && f.is_post_or_void())
        || (f.contains(TransferFlags::EXPIRY) && !f.contains(TransferFlags::VOID_PENDING))
    {
        return Err(ResultCode::FlagsAreMutuallyExclusive);
    }
    if f.is_post_or_void() != t.pending_id.is_some() {
        // A pending id on anything but post/void is the same mistake seen from the other side.
        return Err(if f.is_post_or_void() {
            ResultCode::PendingIdRequired
        } else {
            ResultCode::FlagsAreMutuallyExclusive
        });
    }
    if t.timeout_secs.is_some() && !f.contains(TransferFlags::PENDING) {
        return Err(ResultCode::TimeoutReservedForPendingTransfer);
    }
    if !f.is_post_or_void() && t.amount <= 0 {
        return Err(ResultCode::AmountMustNotBeZero);
    }
    if f.is_post_or_void() && t.amount < 0 {
        return Err(ResultCode::AmountMustNotBeZero);
    }
    if !f.is_post_or_void()
        && (t.debit_account_id.is_none() || t.credit_account_id.is_none() || t.currency.is_none())
    {
        return Err(ResultCode::AccountsRequired);
    }
    if t.debit_account_id.is_some() && t.debit_account_id == t.credit_account_id {
        return Err(ResultCode::AccountsMustBeDifferent);
    }
    Ok(())
}

/// Rules 9-11: `exists`, `exists_with_different_fields`, `id_already_failed`; `None` when
/// the id is new.
fn exists_check(snapshot: &Snapshot, scope: Scope, t: &NewTransfer) -> Option<ResultCode> {
    if let Some(stored) = snapshot.existing.get(&t.id) {
        return Some(if scope.sees(stored.partner_id) && same_fields(stored, t) {
            ResultCode::Exists
        } else {
            ResultCode::ExistsWithDifferentFields
        });
    }
    snapshot
        .failed
        .contains_key(&t.id)
        .then_some(ResultCode::IdAlreadyFailed)
}

/// Whether a resubmission asks for exactly what was stored. Fields the client left to the
/// ledger (post/void accounts and currency, a full post's amount, a balancing amount that was
/// clamped) match what they resolved to.
fn same_fields(stored: &StoredTransfer, t: &NewTransfer) -> bool {
    let full_or_void = t.flags.contains(TransferFlags::VOID_PENDING)
        || (t.flags.contains(TransferFlags::POST_PENDING) && t.amount == 0);
    let amount_matches = if full_or_void {
        true
    } else if t.flags.contains(TransferFlags::BALANCING_DEBIT)
        || t.flags.contains(TransferFlags::BALANCING_CREDIT)
    {
        stored.amount <= t.amount
    } else {
        stored.amount == t.amount
    };
    amount_matches
        && t.debit_account_id
            .is_none_or(|d| d == stored.debit_account_id)
        && t.credit_account_id
            .is_none_or(|c| c == stored.credit_account_id)
        && t.currency.is_none_or(|c| c == stored.currency)
        && t.code == stored.code
        && t.flags == stored.flags
        && t.pending_id == stored.pending_id
        && t.timeout_secs == stored.timeout_secs
        && t.metadata == stored.metadata
}

/// Every rule, in precedence order; on success, the effects (not yet applied).
fn evaluate(
    snapshot: &Snapshot,
    scope: Scope,
    t: &NewTransfer,
    now: DateTime<Utc>,
) -> Result<Applied, ResultCode> {
    static_check(t)?;
    if let Some(code) = exists_check(snapshot, scope, t) {
        return Err(code);
    }
    if t.flags.is_post_or_void() {
        evaluate_resolution(snapshot, scope, t, now)
    } else {
        evaluate_movement(snapshot, scope, t, now)
    }
}

fn visible_account(
    snapshot: &Snapshot,
    scope: Scope,
    id: AccountId,
) -> Result<&AccountState, ResultCode> {
    snapshot
        .accounts
        .get(&id)
        .filter(|a| scope.sees(a.partner_id))
        .ok_or(ResultCode::AccountNotFound)
}

/// A plain or pending transfer (rules 12-14, 22-24).
fn evaluate_movement(
    snapshot: &Snapshot,
    scope: Scope,
    t: &NewTransfer,
    now: DateTime<Utc>,
) -> Result<Applied, ResultCode> {
    let (Some(debit_id), Some(credit_id), Some(currency)) =
        (t.debit_account_id, t.credit_account_id, t.currency)
    else {
        return Err(ResultCode::AccountsRequired);
    };
    let debit = visible_account(snapshot, scope, debit_id)?;
    let credit = visible_account(snapshot, scope, credit_id)?;
    owned(scope, debit, credit)?;
    if debit.currency != currency || credit.currency != currency {
        return Err(ResultCode::CurrencyMismatch);
    }
    if debit.flags.contains(AccountFlags::CLOSED) || credit.flags.contains(AccountFlags::CLOSED) {
        return Err(ResultCode::AccountClosed);
    }
    if debit.flags.contains(AccountFlags::DEBITS_BLOCKED) {
        return Err(ResultCode::DebitsBlocked);
    }
    if credit.flags.contains(AccountFlags::CREDITS_BLOCKED) {
        return Err(ResultCode::CreditsBlocked);
    }
    let pending = t.flags.contains(TransferFlags::PENDING);
    let mut amount = t.amount;
    if t.flags.contains(TransferFlags::BALANCING_DEBIT)
        && debit
            .flags
            .contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
    {
        let headroom = debit
            .totals
            .available()
            .ok_or(ResultCode::OverflowsDebits)?
            .max(0);
        amount = amount.min(headroom);
        if amount == 0 {
            return Err(ResultCode::ExceedsCredits);
        }
    }
    if t.flags.contains(TransferFlags::BALANCING_CREDIT)
        && credit
            .flags
            .contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
    {
        let headroom = credit
            .totals
            .debits_posted
            .checked_sub(credit.totals.credits_posted)
            .and_then(|v| v.checked_sub(credit.totals.credits_pending))
            .ok_or(ResultCode::OverflowsCredits)?
            .max(0);
        amount = amount.min(headroom);
        if amount == 0 {
            return Err(ResultCode::ExceedsDebits);
        }
    }
    let (d_pending, d_posted) = if pending { (amount, 0) } else { (0, amount) };
    let debit_totals = Totals {
        debits_pending: add(
            debit.totals.debits_pending,
            d_pending,
            ResultCode::OverflowsDebitsPending,
        )?,
        debits_posted: add(
            debit.totals.debits_posted,
            d_posted,
            ResultCode::OverflowsDebitsPosted,
        )?,
        ..debit.totals
    };
    let credit_totals = Totals {
        credits_pending: add(
            credit.totals.credits_pending,
            d_pending,
            ResultCode::OverflowsCreditsPending,
        )?,
        credits_posted: add(
            credit.totals.credits_posted,
            d_posted,
            ResultCode::OverflowsCreditsPosted,
        )?,
        ..credit.totals
    };
    within_range(&debit_totals, &credit_totals)?;
    if t.timeout_secs
        .is_some_and(|secs| i32::try_from(secs).is_err())
    {
        return Err(ResultCode::OverflowsTimeout);
    }
    if breaks_debit_limit(debit.flags, &debit_totals) {
        return Err(ResultCode::ExceedsCredits);
    }
    if breaks_credit_limit(credit.flags, &credit_totals) {
        return Err(ResultCode::ExceedsDebits);
    }
    let expires_at = match t.timeout_secs {
        Some(secs) if secs > 0 => Some(now + chrono::Duration::seconds(i64::from(secs))),
        _ => None,
    };
    let stored = StoredTransfer {
        id: t.id,
        partner_id: scope.owner(),
        debit_account_id: debit_id,
        credit_account_id: credit_id,
        amount,
        currency,
        code: t.code,
        flags: t.flags,
        pending_id: None,
        timeout_secs: t.timeout_secs,
        expires_at,
        metadata: t.metadata.clone(),
        created_at: now,
    };
    Ok(Applied {
        entries: [
            Entry {
                account_id: debit_id,
                seq: debit.seq + 1,
                transfer_id: t.id,
                is_credit: false,
                pending_delta: d_pending,
                posted_delta: d_posted,
                totals: debit_totals,
            },
            Entry {
                account_id: credit_id,
                seq: credit.seq + 1,
                transfer_id: t.id,
                is_credit: true,
                pending_delta: d_pending,
                posted_delta: d_posted,
                totals: credit_totals,
            },
        ],
        transfer: stored,
    })
}

/// A post or void of a pending transfer (rules 15-22).
fn evaluate_resolution(
    snapshot: &Snapshot,
    scope: Scope,
    t: &NewTransfer,
    now: DateTime<Utc>,
) -> Result<Applied, ResultCode> {
    let pending_id = t.pending_id.ok_or(ResultCode::PendingIdRequired)?;
    let Some((pending, resolution)) = snapshot
        .pendings
        .get(&pending_id)
        .filter(|(p, _)| scope.sees(p.partner_id))
    else {
        // Transfers applied earlier in the batch enter `pendings` only if pending.
        let known = snapshot
            .existing
            .get(&pending_id)
            .is_some_and(|e| scope.sees(e.partner_id));
        return Err(if known {
            ResultCode::PendingTransferNotPending
        } else {
            ResultCode::PendingTransferNotFound
        });
    };
    if !pending.flags.contains(TransferFlags::PENDING) {
        return Err(ResultCode::PendingTransferNotPending);
    }
    if let (Some(debit), Some(credit)) = (
        snapshot.accounts.get(&pending.debit_account_id),
        snapshot.accounts.get(&pending.credit_account_id),
    ) {
        owned(scope, debit, credit)?;
    }
    if t.debit_account_id
        .is_some_and(|d| d != pending.debit_account_id)
        || t.credit_account_id
            .is_some_and(|c| c != pending.credit_account_id)
    {
        return Err(ResultCode::PendingTransferHasDifferentAccounts);
    }
    if t.currency.is_some_and(|c| c != pending.currency) {
        return Err(ResultCode::CurrencyMismatch);
    }
    match resolution {
        Some(Resolution::Posted) => return Err(ResultCode::PendingTransferAlreadyPosted),
        Some(Resolution::Voided) => return Err(ResultCode::PendingTransferAlreadyVoided),
        None => {}
    }
    let expired = pending.expires_at.is_some_and(|at| at <= now);
    if expired && !t.flags.contains(TransferFlags::EXPIRY) {
        return Err(ResultCode::PendingTransferExpired);
    }
    let post = t.flags.contains(TransferFlags::POST_PENDING);
    let amount = if !post {
        0
    } else if t.amount == 0 {
        pending.amount
    } else if t.amount > pending.amount {
        return Err(ResultCode::ExceedsPendingAmount);
    } else {
        t.amount
    };
    let debit = snapshot
        .accounts
        .get(&pending.debit_account_id)
        .ok_or(ResultCode::AccountNotFound)?;
    let credit = snapshot
        .accounts
        .get(&pending.credit_account_id)
        .ok_or(ResultCode::AccountNotFound)?;
    let release = pending.amount;
    let debit_totals = Totals {
        debits_pending: sub(
            debit.totals.debits_pending,
            release,
            ResultCode::OverflowsDebitsPending,
        )?,
        debits_posted: add(
            debit.totals.debits_posted,
            amount,
            ResultCode::OverflowsDebitsPosted,
        )?,
        ..debit.totals
    };
    let credit_totals = Totals {
        credits_pending: sub(
            credit.totals.credits_pending,
            release,
            ResultCode::OverflowsCreditsPending,
        )?,
        credits_posted: add(
            credit.totals.credits_posted,
            amount,
            ResultCode::OverflowsCreditsPosted,
        )?,
        ..credit.totals
    };
    within_range(&debit_totals, &credit_totals)?;
    let stored = StoredTransfer {
        id: t.id,
        partner_id: pending.partner_id,
        debit_account_id: pending.debit_account_id,
        credit_account_id: pending.credit_account_id,
        amount,
        currency: pending.currency,
        code: t.code,
        flags: t.flags,
        pending_id: Some(pending_id),
        timeout_secs: None,
        expires_at: None,
        metadata: t.metadata.clone(),
        created_at: now,
    };
    let pending_delta = release
        .checked_neg()
        .ok_or(ResultCode::OverflowsDebitsPending)?;
    Ok(Applied {
        entries: [
            Entry {
                account_id: debit.id,
                seq: debit.seq + 1,
                transfer_id: t.id,
                is_credit: false,
                pending_delta,
                posted_delta: amount,
                totals: debit_totals,
            },
            Entry {
                account_id: credit.id,
                seq: credit.seq + 1,
                transfer_id: t.id,
                is_credit: true,
                pending_delta,
                posted_delta: amount,
                totals: credit_totals,
            },
        ],
        transfer: stored,
    })
}

fn add(a: i64, b: i64, overflow: ResultCode) -> Result<i64, ResultCode> {
    a.checked_add(b).ok_or(overflow)
}

fn sub(a: i64, b: i64, overflow: ResultCode) -> Result<i64, ResultCode> {
    a.checked_sub(b).ok_or(overflow)
}

/// Each side's pending plus posted total stays a 64-bit number too (TigerBeetle's
/// `overflows_debits` / `overflows_credits`), so balances, limits and every check over the
/// books can be computed without overflowing.
fn within_range(debit: &Totals, credit: &Totals) -> Result<(), ResultCode> {
    if debit
        .debits_pending
        .checked_add(debit.debits_posted)
        .is_none()
    {
        return Err(ResultCode::OverflowsDebits);
    }
    if credit
        .credits_pending
        .checked_add(credit.credits_posted)
        .is_none()
    {
        return Err(ResultCode::OverflowsCredits);
    }
    Ok(())
}

/// A partner's raw transfers move money only on its own books (rule 13).
fn owned(scope: Scope, debit: &AccountState, credit: &AccountState) -> Result<(), ResultCode> {
    match scope {
        Scope::Partner(_) if !debit.partner_books || !credit.partner_books => {
            Err(ResultCode::AccountNotOwned)
        }
        _ => Ok(()),
    }
}

/// `debits_must_not_exceed_credits`: posted + pending debits at most posted credits.
/// Summed in 128 bits: a sum past `i64::MAX` exceeds the limit, it overflows no total.
fn breaks_debit_limit(flags: AccountFlags, t: &Totals) -> bool {
    flags.contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
        && i128::from(t.debits_posted) + i128::from(t.debits_pending) > i128::from(t.credits_posted)
}

/// `credits_must_not_exceed_debits`: posted + pending credits at most posted debits.
fn breaks_credit_limit(flags: AccountFlags, t: &Totals) -> bool {
    flags.contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
        && i128::from(t.credits_posted) + i128::from(t.credits_pending)
            > i128::from(t.debits_posted)
}

/// Applies a successful transfer to the snapshot (recording the undo information).
fn commit(snapshot: &mut Snapshot, applied: &Applied, mut undo: Option<&mut Undo>) {
    for entry in &applied.entries {
        if let Some(account) = snapshot.accounts.get_mut(&entry.account_id) {
            if let Some(undo) = undo.as_deref_mut() {
                undo.accounts.push(account.clone());
            }
            account.totals = entry.totals;
            account.seq = entry.seq;
        }
    }
    let t = &applied.transfer;
    snapshot.existing.insert(t.id, t.clone());
    if let Some(undo) = undo.as_deref_mut() {
        undo.existing.push(t.id);
    }
    if let Some(pending_id) = t.pending_id
        && let Some(pending) = snapshot.pendings.get_mut(&pending_id)
    {
        pending.1 = Some(if t.flags.contains(TransferFlags::POST_PENDING) {
            Resolution::Posted
        } else {
            Resolution::Voided
        });
        if let Some(undo) = undo.as_deref_mut() {
            undo.resolved.push(pending_id);
        }
    }
    if t.flags.contains(TransferFlags::PENDING) {
        // Later transfers of the batch may post or void it.
        snapshot.pendings.insert(t.id, (t.clone(), None));
        if let Some(undo) = undo {
            undo.created.push(t.id);
        }
    }
}

// ----- requests ---------------------------------------------------------------------------------
//
// What a partner sends to the ledger's routes, and its validation: a request either parses into
// what the service takes, or names its first malformed field (400 `validation_failed`, or a
// money code for a malformed amount).

/// Most transfers one request may carry (TigerBeetle's batch limit).
pub const MAX_TRANSFERS_PER_REQUEST: usize = 8190;

/// The body of `POST /v1/ledger/accounts`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    /// ISO 4217 code; each currency is its own ledger.
    #[schema(value_type = String, example = "USD")]
    currency: Currency,
    /// A number of your choosing that says what the account is for (0-65535).
    code: Option<i32>,
    /// Any of `debits_must_not_exceed_credits`, `credits_must_not_exceed_debits`, `history`.
    flags: Option<Vec<String>>,
    /// A JSON object of at most 4 KiB.
    metadata: Option<serde_json::Value>,
}

impl CreateAccount {
    /// The account to create, or the first malformed field.
    pub fn parse(self) -> Result<NewAccount, LedgerError> {
        let code = transfer_code(self.code, "code")?;
        let flags = AccountFlags::parse(self.flags.as_deref().unwrap_or_default())
            .map_err(|m| LedgerError::validation("flags", m))?;
        check_metadata(self.metadata.as_ref())?;
        Ok(NewAccount {
            id: None,
            currency: self.currency,
            code,
            flags,
            metadata: self.metadata,
        })
    }
}

/// One transfer of a request. Amounts are decimal strings (or exact JSON numbers) in the
/// currency's units.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferInput {
    /// `xfer_...`, chosen by the client: the idempotency key. Generated when absent.
    id: Option<String>,
    /// Required, except for post/void (taken from the pending transfer).
    debit_account_id: Option<String>,
    credit_account_id: Option<String>,
    /// Required and positive, except for post (absent: the full pending amount) and void.
    amount: Option<Amount>,
    /// Required when an amount is given.
    #[schema(value_type = Option<String>, example = "USD")]
    currency: Option<Currency>,
    /// A number of your choosing (0-65535).
    code: Option<i32>,
    /// Reserve the amount (two-phase); post or void it later.
    #[serde(default)]
    pending: bool,
    /// Seconds after which an unresolved pending transfer is voided.
    timeout_secs: Option<u32>,
    /// Post this pending transfer (the amount, if given, may be less: the rest is released).
    post_pending_id: Option<String>,
    /// Void this pending transfer.
    void_pending_id: Option<String>,
    /// Succeeds or fails together with the next transfer of the request.
    #[serde(default)]
    linked: bool,
    /// Move at most what the debit account's constraint allows.
    #[serde(default)]
    balancing_debit: bool,
    /// Move at most what the credit account's constraint allows.
    #[serde(default)]
    balancing_credit: bool,
    /// A JSON object of at most 4 KiB.
    metadata: Option<serde_json::Value>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTransfers {
    /// 1 to 8190 transfers, applied in order.
    transfers: Vec<TransferInput>,
}

impl CreateTransfers {
    /// The transfers, in order, or the first malformed field (`transfers[3].amount`).
    pub fn parse(self) -> Result<Vec<NewTransfer>, LedgerError> {
        if self.transfers.is_empty() || self.transfers.len() > MAX_TRANSFERS_PER_REQUEST {
            return Err(LedgerError::validation(
                "transfers",
                format!("must hold 1 to {MAX_TRANSFERS_PER_REQUEST} transfers"),
            ));
        }
        self.transfers
            .into_iter()
            .enumerate()
            .map(|(i, t)| t.parse(i))
            .collect()
    }
}

impl TransferInput {
    /// The transfer at `index` of its request, or its first malformed field.
    fn parse(self, index: usize) -> Result<NewTransfer, LedgerError> {
        let field = |name: &str| format!("transfers[{index}].{name}");
        let invalid = |name: &str, message: String| LedgerError::validation(field(name), message);
        let id = match self.id {
            Some(raw) => raw
                .parse::<TransferId>()
                .map_err(|e| invalid("id", e.to_string()))?,
            None => TransferId::new(),
        };
        let account = |raw: Option<String>, name: &str| -> Result<Option<AccountId>, LedgerError> {
            raw.map(|r| {
                r.parse::<AccountId>()
                    .map_err(|e| invalid(name, e.to_string()))
            })
            .transpose()
        };
        let debit_account_id = account(self.debit_account_id, "debit_account_id")?;
        let credit_account_id = account(self.credit_account_id, "credit_account_id")?;
        let pending_ref =
            |raw: Option<String>, name: &str| -> Result<Option<TransferId>, LedgerError> {
                raw.map(|r| {
                    r.parse::<TransferId>()
                        .map_err(|e| invalid(name, e.to_string()))
                })
                .transpose()
            };
        let post = pending_ref(self.post_pending_id, "post_pending_id")?;
        let void = pending_ref(self.void_pending_id, "void_pending_id")?;
        let mut flags = TransferFlags::empty();
        let pending_id = match (post, void) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "post_pending_id",
                    "post_pending_id and void_pending_id exclude each other".to_owned(),
                ));
            }
            (Some(p), None) => {
                flags |= TransferFlags::POST_PENDING;
                Some(p)
            }
            (None, Some(v)) => {
                flags |= TransferFlags::VOID_PENDING;
                Some(v)
            }
            (None, None) => None,
        };
        for (set, bit) in [
            (self.pending, TransferFlags::PENDING),
            (self.linked, TransferFlags::LINKED),
            (self.balancing_debit, TransferFlags::BALANCING_DEBIT),
            (self.balancing_credit, TransferFlags::BALANCING_CREDIT),
        ] {
            if set {
                flags |= bit;
            }
        }
        let resolves = pending_id.is_some();
        let amount = match (&self.amount, self.currency) {
            (Some(amount), Some(currency)) => Money::parse_positive(amount, currency)
                .map_err(|e| FieldError::amount(field("amount"), &e))?
                .minor(),
            (Some(_), None) => {
                return Err(invalid("currency", "is required with an amount".to_owned()));
            }
            (None, _) if resolves => 0,
            (None, _) => return Err(invalid("amount", "is required".to_owned())),
        };
        if !resolves && self.currency.is_none() {
            return Err(invalid("currency", "is required".to_owned()));
        }
        if !resolves && (debit_account_id.is_none() || credit_account_id.is_none()) {
            let missing = if debit_account_id.is_none() {
                "debit_account_id"
            } else {
                "credit_account_id"
            };
            return Err(invalid(missing, "is required".to_owned()));
        }
        let code = transfer_code(self.code, &field("code"))?;
        check_metadata(self.metadata.as_ref()).map_err(|e| match e {
            LedgerError::Validation(e) => invalid("metadata", e.message),
            other => other,
        })?;
        Ok(NewTransfer {
            id,
            debit_account_id,
            credit_account_id,
            amount,
            currency: self.currency,
            code,
            flags,
            pending_id,
            timeout_secs: self.timeout_secs,
            metadata: self.metadata,
        })
    }
}

/// An account's or a transfer's `code`: 0 to 65535, 0 when absent.
fn transfer_code(code: Option<i32>, field: &str) -> Result<i32, LedgerError> {
    let code = code.unwrap_or(0);
    if (0..=65535).contains(&code) {
        Ok(code)
    } else {
        Err(LedgerError::validation(
            field.to_owned(),
            "must be between 0 and 65535",
        ))
    }
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
