//! The posting rules: one request applied to a snapshot of its accounts, transfer by
//! transfer, linked chains all-or-nothing, with the order of checks of the module docs.

use super::*;

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
