use super::*;

use std::collections::{BTreeMap, HashSet};

use proptest::prelude::*;
use uuid::Uuid;

// --- fixtures ------------------------------------------------------------------------------

const P1: u128 = 1;
const P2: u128 = 2;

/// The accounts of [`world`]; all USD and owned by partner 1 unless said otherwise.
const SRC: u128 = 1;
const DST: u128 = 2;
/// `debits_must_not_exceed_credits`, 100 credited.
const LIMITED: u128 = 3;
/// `credits_must_not_exceed_debits`, 100 debited.
const CAPPED: u128 = 4;
/// EUR.
const EURO: u128 = 5;
/// Closed, and `debits_must_not_exceed_credits` with nothing credited.
const CLOSED: u128 = 6;
/// Partner 2's.
const FOREIGN: u128 = 7;
/// Partner 2's.
const FOREIGN_TOO: u128 = 8;
/// Credits posted 5 short of `i64::MAX`.
const FULL: u128 = 9;
/// Blocks debits (a frozen wallet), holds 100.
const FROZEN: u128 = 10;
/// Blocks credits.
const NO_CREDITS: u128 = 11;
/// Partner 1's, but the system's to move (a wallet): not partner 1's own books.
const WALLET: u128 = 12;
/// Not in the snapshot.
const MISSING: u128 = 99;

fn partner(n: u128) -> PartnerId {
    PartnerId::from_uuid(Uuid::from_u128(n))
}

fn acct(n: u128) -> AccountId {
    AccountId::from_uuid(Uuid::from_u128(n))
}

fn xfer(n: u128) -> TransferId {
    TransferId::from_uuid(Uuid::from_u128(n))
}

fn usd() -> Currency {
    Currency::parse("USD").unwrap()
}

fn eur() -> Currency {
    Currency::parse("EUR").unwrap()
}

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600, 0).unwrap()
}

fn at(secs: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::seconds(secs)
}

/// Partner 1, who owns most of [`world`].
fn me() -> Scope {
    Scope::Partner(partner(P1))
}

fn account(n: u128, currency: Currency, flags: AccountFlags, owner: Option<u128>) -> AccountState {
    AccountState {
        id: acct(n),
        partner_id: owner.map(partner),
        currency,
        flags,
        totals: Totals::default(),
        seq: 0,
        partner_books: owner.is_some(),
    }
}

fn world() -> Snapshot {
    let limit = AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS;
    let mut limited = account(LIMITED, usd(), limit, Some(P1));
    limited.totals.credits_posted = 100;
    limited.seq = 1;
    let mut capped = account(
        CAPPED,
        usd(),
        AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
        Some(P1),
    );
    capped.totals.debits_posted = 100;
    capped.seq = 1;
    let mut frozen = account(
        FROZEN,
        usd(),
        AccountFlags::DEBITS_BLOCKED | limit,
        Some(P1),
    );
    frozen.totals.credits_posted = 100;
    frozen.seq = 1;
    let mut full = account(FULL, usd(), AccountFlags::empty(), Some(P1));
    full.totals.credits_posted = i64::MAX - 5;
    full.seq = 1;
    let accounts = [
        account(SRC, usd(), AccountFlags::empty(), Some(P1)),
        account(DST, usd(), AccountFlags::empty(), Some(P1)),
        limited,
        capped,
        account(EURO, eur(), AccountFlags::empty(), Some(P1)),
        account(CLOSED, usd(), AccountFlags::CLOSED | limit, Some(P1)),
        account(FOREIGN, usd(), AccountFlags::empty(), Some(P2)),
        account(FOREIGN_TOO, usd(), AccountFlags::empty(), Some(P2)),
        full,
        frozen,
        account(NO_CREDITS, usd(), AccountFlags::CREDITS_BLOCKED, Some(P1)),
        AccountState {
            partner_books: false,
            ..account(WALLET, usd(), limit, Some(P1))
        },
    ];
    Snapshot {
        accounts: accounts.into_iter().map(|a| (a.id, a)).collect(),
        ..Snapshot::default()
    }
}

fn plain(id: u128, debit: u128, credit: u128, amount: i64) -> NewTransfer {
    NewTransfer {
        id: xfer(id),
        debit_account_id: Some(acct(debit)),
        credit_account_id: Some(acct(credit)),
        amount,
        currency: Some(usd()),
        code: 1,
        flags: TransferFlags::default(),
        pending_id: None,
        timeout_secs: None,
        metadata: None,
    }
}

fn pending(id: u128, debit: u128, credit: u128, amount: i64) -> NewTransfer {
    flagged(plain(id, debit, credit, amount), TransferFlags::PENDING)
}

fn post(id: u128, pending_id: u128, amount: i64) -> NewTransfer {
    NewTransfer {
        id: xfer(id),
        debit_account_id: None,
        credit_account_id: None,
        amount,
        currency: None,
        code: 1,
        flags: TransferFlags::POST_PENDING,
        pending_id: Some(xfer(pending_id)),
        timeout_secs: None,
        metadata: None,
    }
}

fn void(id: u128, pending_id: u128) -> NewTransfer {
    NewTransfer {
        flags: TransferFlags::VOID_PENDING,
        ..post(id, pending_id, 0)
    }
}

fn with(mut t: NewTransfer, change: impl FnOnce(&mut NewTransfer)) -> NewTransfer {
    change(&mut t);
    t
}

fn flagged(t: NewTransfer, bits: TransferFlags) -> NewTransfer {
    with(t, |t| t.flags |= bits)
}

fn linked(t: NewTransfer) -> NewTransfer {
    flagged(t, TransferFlags::LINKED)
}

fn timeout(t: NewTransfer, secs: u32) -> NewTransfer {
    with(t, |t| t.timeout_secs = Some(secs))
}

/// Changes one account's totals (setting up an overflow).
fn set(snapshot: &mut Snapshot, n: u128, change: fn(&mut Totals)) {
    if let Some(account) = snapshot.accounts.get_mut(&acct(n)) {
        change(&mut account.totals);
    }
}

fn codes(outcomes: &[Outcome]) -> Vec<ResultCode> {
    outcomes.iter().map(|o| o.code).collect()
}

/// Applies one request in partner 1's scope and returns its codes.
fn submit(snapshot: &mut Snapshot, request: &[NewTransfer], now: DateTime<Utc>) -> Vec<ResultCode> {
    codes(&apply_request(snapshot, me(), request, now))
}

/// Applies a single transfer in partner 1's scope at `t0` and returns its outcome.
fn single(snapshot: &mut Snapshot, t: NewTransfer) -> Outcome {
    let mut outcomes = apply_request(snapshot, me(), &[t], t0());
    assert_eq!(outcomes.len(), 1);
    outcomes.remove(0)
}

fn totals(snapshot: &Snapshot, n: u128) -> Totals {
    snapshot.accounts[&acct(n)].totals
}

fn ok(snapshot: &mut Snapshot, t: NewTransfer) -> Applied {
    let outcome = single(snapshot, t);
    assert_eq!(outcome.code, ResultCode::Ok);
    outcome.applied.unwrap()
}

// --- table tests ---------------------------------------------------------------------------

/// One row: a request run (in partner 1's scope) against [`world`] after `setup`.
struct Row {
    what: &'static str,
    /// Applied first, one request each, at `t0`; their results are not checked.
    setup: Vec<NewTransfer>,
    /// Changes the snapshot after the setup.
    prepare: fn(&mut Snapshot),
    request: Vec<NewTransfer>,
    /// Seconds after `t0` the request runs at.
    at: i64,
    expect: Vec<ResultCode>,
}

fn row(what: &'static str, request: Vec<NewTransfer>, expect: Vec<ResultCode>) -> Row {
    Row {
        what,
        setup: Vec::new(),
        prepare: |_| {},
        request,
        at: 0,
        expect,
    }
}

impl Row {
    fn after(self, setup: Vec<NewTransfer>) -> Row {
        Row { setup, ..self }
    }

    fn prepared(self, prepare: fn(&mut Snapshot)) -> Row {
        Row { prepare, ..self }
    }

    fn at(self, at: i64) -> Row {
        Row { at, ..self }
    }
}

/// Runs every row; fails listing each row whose codes differ.
fn check_rows(rows: &[Row]) {
    let mut failures = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let mut snapshot = world();
        for t in &r.setup {
            apply_request(&mut snapshot, me(), std::slice::from_ref(t), t0());
        }
        (r.prepare)(&mut snapshot);
        let got = submit(&mut snapshot, &r.request, at(r.at));
        if got != r.expect {
            failures.push(format!(
                "row {i} ({}): expected {:?}, got {:?}",
                r.what, r.expect, got
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// One row per result code, in the documented order; the first transfer's code is the one
/// the row is about.
fn code_rows() -> Vec<Row> {
    use ResultCode as R;
    vec![
        row(
            "linked_event_failed: the chain's next transfer names one account twice",
            vec![linked(plain(10, SRC, DST, 5)), plain(11, SRC, SRC, 5)],
            vec![R::LinkedEventFailed, R::AccountsMustBeDifferent],
        ),
        row(
            "linked_event_chain_open: the request ends with a linked transfer",
            vec![linked(plain(10, SRC, DST, 5))],
            vec![R::LinkedEventChainOpen],
        ),
        row(
            "flags_are_mutually_exclusive: pending and post_pending",
            vec![flagged(post(10, 20, 0), TransferFlags::PENDING)],
            vec![R::FlagsAreMutuallyExclusive],
        ),
        row(
            "pending_id_required: a post without the pending id",
            vec![with(post(10, 20, 0), |t| t.pending_id = None)],
            vec![R::PendingIdRequired],
        ),
        row(
            "timeout_reserved_for_pending_transfer: a timeout on a plain transfer",
            vec![timeout(plain(10, SRC, DST, 5), 30)],
            vec![R::TimeoutReservedForPendingTransfer],
        ),
        row(
            "amount_must_not_be_zero: a plain transfer of 0",
            vec![plain(10, SRC, DST, 0)],
            vec![R::AmountMustNotBeZero],
        ),
        row(
            "accounts_required: no credit account",
            vec![with(plain(10, SRC, DST, 5), |t| t.credit_account_id = None)],
            vec![R::AccountsRequired],
        ),
        row(
            "accounts_must_be_different: debit and credit the same",
            vec![plain(10, SRC, SRC, 5)],
            vec![R::AccountsMustBeDifferent],
        ),
        row(
            "exists: the same transfer again",
            vec![plain(10, SRC, DST, 5)],
            vec![R::Exists],
        )
        .after(vec![plain(10, SRC, DST, 5)]),
        row(
            "exists_with_different_fields: the same id with another amount",
            vec![plain(10, SRC, DST, 6)],
            vec![R::ExistsWithDifferentFields],
        )
        .after(vec![plain(10, SRC, DST, 5)]),
        row(
            "id_already_failed: the id of a transfer that exceeded credits",
            vec![plain(10, LIMITED, DST, 50)],
            vec![R::IdAlreadyFailed],
        )
        .after(vec![plain(10, LIMITED, DST, 101)]),
        row(
            "account_not_found: an unknown debit account",
            vec![plain(10, MISSING, DST, 5)],
            vec![R::AccountNotFound],
        ),
        row(
            "account_not_owned: a partner's transfer into its customer's wallet",
            vec![plain(10, SRC, WALLET, 5)],
            vec![R::AccountNotOwned],
        ),
        row(
            "currency_mismatch: a USD transfer to a EUR account",
            vec![plain(10, SRC, EURO, 5)],
            vec![R::CurrencyMismatch],
        ),
        row(
            "account_closed: a transfer to a closed account",
            vec![plain(10, SRC, CLOSED, 5)],
            vec![R::AccountClosed],
        ),
        row(
            "debits_blocked: a debit from a frozen account",
            vec![plain(10, FROZEN, DST, 5)],
            vec![R::DebitsBlocked],
        ),
        row(
            "credits_blocked: a credit to an account blocking credits",
            vec![plain(10, SRC, NO_CREDITS, 5)],
            vec![R::CreditsBlocked],
        ),
        row(
            "pending_transfer_not_found: a post of an unknown id",
            vec![post(10, 20, 0)],
            vec![R::PendingTransferNotFound],
        ),
        row(
            "pending_transfer_not_pending: a post of a plain transfer",
            vec![post(21, 20, 0)],
            vec![R::PendingTransferNotPending],
        )
        .after(vec![plain(20, SRC, DST, 5)]),
        row(
            "pending_transfer_has_different_accounts: a post naming another credit account",
            vec![with(post(21, 20, 0), |t| {
                t.credit_account_id = Some(acct(LIMITED));
            })],
            vec![R::PendingTransferHasDifferentAccounts],
        )
        .after(vec![pending(20, SRC, DST, 50)]),
        row(
            "pending_transfer_already_posted: a second post",
            vec![post(22, 20, 0)],
            vec![R::PendingTransferAlreadyPosted],
        )
        .after(vec![pending(20, SRC, DST, 50), post(21, 20, 0)]),
        row(
            "pending_transfer_already_voided: a post after a void",
            vec![post(22, 20, 0)],
            vec![R::PendingTransferAlreadyVoided],
        )
        .after(vec![pending(20, SRC, DST, 50), void(21, 20)]),
        row(
            "pending_transfer_expired: a post at the moment of its timeout",
            vec![post(21, 20, 0)],
            vec![R::PendingTransferExpired],
        )
        .after(vec![timeout(pending(20, SRC, DST, 50), 10)])
        .at(10),
        row(
            "exceeds_pending_amount: posting more than is pending",
            vec![post(21, 20, 51)],
            vec![R::ExceedsPendingAmount],
        )
        .after(vec![pending(20, SRC, DST, 50)]),
        row(
            "overflows_debits_pending: pending debits past i64::MAX",
            vec![pending(10, SRC, DST, 6)],
            vec![R::OverflowsDebitsPending],
        )
        .prepared(|s| set(s, SRC, |t| t.debits_pending = i64::MAX - 5)),
        row(
            "overflows_credits_pending: pending credits past i64::MAX",
            vec![pending(10, SRC, DST, 6)],
            vec![R::OverflowsCreditsPending],
        )
        .prepared(|s| set(s, DST, |t| t.credits_pending = i64::MAX - 5)),
        row(
            "overflows_debits_posted: posted debits past i64::MAX",
            vec![plain(10, SRC, DST, 6)],
            vec![R::OverflowsDebitsPosted],
        )
        .prepared(|s| set(s, SRC, |t| t.debits_posted = i64::MAX - 5)),
        row(
            "overflows_credits_posted: credits past i64::MAX",
            vec![plain(10, SRC, FULL, 6)],
            vec![R::OverflowsCreditsPosted],
        ),
        row(
            "overflows_debits: pending plus posted debits past i64::MAX",
            vec![plain(10, SRC, DST, 6)],
            vec![R::OverflowsDebits],
        )
        .prepared(|s| set(s, SRC, |t| t.debits_pending = i64::MAX - 5)),
        row(
            "overflows_credits: pending plus posted credits past i64::MAX",
            vec![plain(10, SRC, DST, 6)],
            vec![R::OverflowsCredits],
        )
        .prepared(|s| set(s, DST, |t| t.credits_pending = i64::MAX - 5)),
        row(
            "overflows_timeout: a timeout beyond 2^31 - 1 seconds",
            vec![timeout(pending(10, SRC, DST, 5), 2_147_483_648)],
            vec![R::OverflowsTimeout],
        ),
        row(
            "exceeds_credits: debiting more than a limited account's credits",
            vec![plain(10, LIMITED, DST, 101)],
            vec![R::ExceedsCredits],
        ),
        row(
            "exceeds_debits: crediting more than a capped account's debits",
            vec![plain(10, SRC, CAPPED, 101)],
            vec![R::ExceedsDebits],
        ),
    ]
}

#[test]
fn every_result_code_has_a_row_in_the_documented_order() {
    let rows = code_rows();
    let covered: Vec<ResultCode> = rows.iter().map(|r| r.expect[0]).collect();
    assert_eq!(covered, ResultCode::ALL[1..].to_vec());
}

#[test]
fn each_rule_alone_gives_its_own_code() {
    check_rows(&code_rows());
}

#[test]
fn a_transfer_breaking_two_rules_gets_the_code_listed_first() {
    use ResultCode as R;
    check_rows(&[
        row(
            "a transfer's own zero amount loses to the failure of its chain",
            vec![linked(plain(10, SRC, SRC, 5)), plain(11, SRC, DST, 0)],
            vec![R::AccountsMustBeDifferent, R::LinkedEventFailed],
        ),
        row(
            "an open chain's last transfer with a zero amount: linked_event_chain_open",
            vec![linked(plain(10, SRC, DST, 0))],
            vec![R::LinkedEventChainOpen],
        ),
        row(
            "pending and post_pending without a pending id: flags_are_mutually_exclusive",
            vec![with(
                flagged(post(10, 20, 0), TransferFlags::PENDING),
                |t| {
                    t.pending_id = None;
                },
            )],
            vec![R::FlagsAreMutuallyExclusive],
        ),
        row(
            "a post without pending id and a negative amount: pending_id_required",
            vec![with(post(10, 20, -1), |t| t.pending_id = None)],
            vec![R::PendingIdRequired],
        ),
        row(
            "a timeout on a plain transfer of 0: timeout_reserved_for_pending_transfer",
            vec![timeout(plain(10, SRC, DST, 0), 30)],
            vec![R::TimeoutReservedForPendingTransfer],
        ),
        row(
            "zero amount and the same account twice: amount_must_not_be_zero",
            vec![plain(10, SRC, SRC, 0)],
            vec![R::AmountMustNotBeZero],
        ),
        row(
            "an existing id without credit account: accounts_required",
            vec![with(plain(10, SRC, DST, 5), |t| t.credit_account_id = None)],
            vec![R::AccountsRequired],
        )
        .after(vec![plain(10, SRC, DST, 5)]),
        row(
            "an existing id naming one account twice: accounts_must_be_different",
            vec![plain(10, SRC, SRC, 5)],
            vec![R::AccountsMustBeDifferent],
        )
        .after(vec![plain(10, SRC, DST, 5)]),
        row(
            "a resubmission after its credit account closed: exists",
            vec![plain(10, SRC, DST, 5)],
            vec![R::Exists],
        )
        .after(vec![plain(10, SRC, DST, 5)])
        .prepared(|s| {
            if let Some(a) = s.accounts.get_mut(&acct(DST)) {
                a.flags |= AccountFlags::CLOSED;
            }
        }),
        row(
            "an existing id naming a missing account: exists_with_different_fields",
            vec![plain(10, MISSING, DST, 5)],
            vec![R::ExistsWithDifferentFields],
        )
        .after(vec![plain(10, SRC, DST, 5)]),
        row(
            "a failed id naming a missing account: id_already_failed",
            vec![plain(10, MISSING, DST, 5)],
            vec![R::IdAlreadyFailed],
        )
        .after(vec![plain(10, LIMITED, DST, 101)]),
        row(
            "a missing account and a EUR account: account_not_found",
            vec![plain(10, MISSING, EURO, 5)],
            vec![R::AccountNotFound],
        ),
        row(
            "a closed account and a EUR account: currency_mismatch",
            vec![plain(10, CLOSED, EURO, 5)],
            vec![R::CurrencyMismatch],
        ),
        row(
            "a debit from a closed account without credits: account_closed",
            vec![plain(10, CLOSED, DST, 5)],
            vec![R::AccountClosed],
        ),
        row(
            "a frozen account to a closed one: account_closed",
            vec![plain(10, FROZEN, CLOSED, 5)],
            vec![R::AccountClosed],
        ),
        row(
            "a frozen account to one blocking credits: debits_blocked",
            vec![plain(10, FROZEN, NO_CREDITS, 5)],
            vec![R::DebitsBlocked],
        ),
        row(
            "too much to an account blocking credits: credits_blocked",
            vec![plain(10, LIMITED, NO_CREDITS, 1_000)],
            vec![R::CreditsBlocked],
        ),
        row(
            "a post of an unknown id for too much: pending_transfer_not_found",
            vec![post(10, 20, 1_000)],
            vec![R::PendingTransferNotFound],
        ),
        row(
            "a post of a plain transfer naming other accounts: pending_transfer_not_pending",
            vec![with(post(21, 20, 0), |t| {
                t.debit_account_id = Some(acct(LIMITED))
            })],
            vec![R::PendingTransferNotPending],
        )
        .after(vec![plain(20, SRC, DST, 5)]),
        row(
            "a second post naming other accounts: pending_transfer_has_different_accounts",
            vec![with(post(22, 20, 0), |t| {
                t.credit_account_id = Some(acct(LIMITED))
            })],
            vec![R::PendingTransferHasDifferentAccounts],
        )
        .after(vec![pending(20, SRC, DST, 50), post(21, 20, 0)]),
        row(
            "a second post after the timeout: pending_transfer_already_posted",
            vec![post(22, 20, 0)],
            vec![R::PendingTransferAlreadyPosted],
        )
        .after(vec![
            timeout(pending(20, SRC, DST, 50), 10),
            post(21, 20, 0),
        ])
        .at(20),
        row(
            "a post after a void and the timeout: pending_transfer_already_voided",
            vec![post(22, 20, 0)],
            vec![R::PendingTransferAlreadyVoided],
        )
        .after(vec![timeout(pending(20, SRC, DST, 50), 10), void(21, 20)])
        .at(20),
        row(
            "an expired pending transfer posted for too much: pending_transfer_expired",
            vec![post(21, 20, 51)],
            vec![R::PendingTransferExpired],
        )
        .after(vec![timeout(pending(20, SRC, DST, 50), 10)])
        .at(10),
        row(
            "credits past i64::MAX from a limited account: overflows_credits_posted",
            vec![plain(10, LIMITED, FULL, 101)],
            vec![R::OverflowsCreditsPosted],
        ),
        row(
            "a limited account to a capped one, too much for both: exceeds_credits",
            vec![plain(10, LIMITED, CAPPED, 101)],
            vec![R::ExceedsCredits],
        ),
    ]);
}

// --- behaviour -----------------------------------------------------------------------------

#[test]
fn a_plain_transfer_moves_posted_totals_and_writes_two_entries() {
    let mut s = world();
    let applied = ok(&mut s, plain(10, SRC, LIMITED, 30));
    let [debit, credit] = &applied.entries;
    assert_eq!(
        debit,
        &Entry {
            account_id: acct(SRC),
            seq: 1,
            transfer_id: xfer(10),
            is_credit: false,
            pending_delta: 0,
            posted_delta: 30,
            totals: Totals {
                debits_posted: 30,
                ..Totals::default()
            },
        }
    );
    assert_eq!(
        credit,
        &Entry {
            account_id: acct(LIMITED),
            seq: 2,
            transfer_id: xfer(10),
            is_credit: true,
            pending_delta: 0,
            posted_delta: 30,
            totals: Totals {
                credits_posted: 130,
                ..Totals::default()
            },
        }
    );
    assert_eq!(s.accounts[&acct(SRC)].seq, 1);
    assert_eq!(s.accounts[&acct(LIMITED)].seq, 2);
    assert_eq!(totals(&s, SRC), debit.totals);
    assert_eq!(totals(&s, LIMITED), credit.totals);
    assert_eq!(applied.transfer.amount, 30);
    assert_eq!(applied.transfer.partner_id, Some(partner(P1)));
    assert_eq!(applied.transfer.created_at, t0());
    assert_eq!(s.existing.get(&xfer(10)), Some(&applied.transfer));
}

#[test]
fn a_pending_transfer_reserves_its_amount_in_the_pending_totals() {
    let mut s = world();
    let applied = ok(&mut s, timeout(pending(10, SRC, DST, 40), 60));
    assert_eq!(
        totals(&s, SRC),
        Totals {
            debits_pending: 40,
            ..Totals::default()
        }
    );
    assert_eq!(
        totals(&s, DST),
        Totals {
            credits_pending: 40,
            ..Totals::default()
        }
    );
    assert!(
        applied
            .entries
            .iter()
            .all(|e| e.pending_delta == 40 && e.posted_delta == 0)
    );
    assert_eq!(applied.transfer.expires_at, Some(at(60)));
    assert_eq!(s.pendings.get(&xfer(10)), Some(&(applied.transfer, None)));
}

#[test]
fn posting_with_amount_zero_posts_the_full_pending_amount() {
    let mut s = world();
    ok(&mut s, pending(10, SRC, DST, 40));
    let applied = ok(&mut s, post(11, 10, 0));
    assert_eq!(applied.transfer.amount, 40);
    assert_eq!(applied.transfer.pending_id, Some(xfer(10)));
    assert!(
        applied
            .entries
            .iter()
            .all(|e| e.pending_delta == -40 && e.posted_delta == 40 && e.seq == 2)
    );
    assert_eq!(
        totals(&s, SRC),
        Totals {
            debits_posted: 40,
            ..Totals::default()
        }
    );
    assert_eq!(
        totals(&s, DST),
        Totals {
            credits_posted: 40,
            ..Totals::default()
        }
    );
    assert_eq!(s.pendings[&xfer(10)].1, Some(Resolution::Posted));
}

#[test]
fn a_partial_post_posts_its_amount_and_releases_the_rest() {
    let mut s = world();
    ok(&mut s, pending(10, SRC, DST, 40));
    let applied = ok(&mut s, post(11, 10, 25));
    assert_eq!(applied.transfer.amount, 25);
    assert!(
        applied
            .entries
            .iter()
            .all(|e| e.pending_delta == -40 && e.posted_delta == 25)
    );
    assert_eq!(
        totals(&s, SRC),
        Totals {
            debits_posted: 25,
            ..Totals::default()
        }
    );
    assert_eq!(
        totals(&s, DST),
        Totals {
            credits_posted: 25,
            ..Totals::default()
        }
    );
}

#[test]
fn a_void_releases_the_whole_pending_amount() {
    let mut s = world();
    ok(&mut s, pending(10, SRC, DST, 40));
    let applied = ok(&mut s, void(11, 10));
    assert_eq!(applied.transfer.amount, 0);
    assert!(
        applied
            .entries
            .iter()
            .all(|e| e.pending_delta == -40 && e.posted_delta == 0)
    );
    assert_eq!(totals(&s, SRC), Totals::default());
    assert_eq!(totals(&s, DST), Totals::default());
    assert_eq!(s.pendings[&xfer(10)].1, Some(Resolution::Voided));
}

#[test]
fn posting_twice_or_voiding_after_a_post_answers_already_posted() {
    let mut s = world();
    ok(&mut s, pending(10, SRC, DST, 40));
    ok(&mut s, post(11, 10, 0));
    let before = totals(&s, SRC);
    assert_eq!(
        single(&mut s, post(12, 10, 0)).code,
        ResultCode::PendingTransferAlreadyPosted
    );
    assert_eq!(
        single(&mut s, void(13, 10)).code,
        ResultCode::PendingTransferAlreadyPosted
    );
    assert_eq!(totals(&s, SRC), before);
}

#[test]
fn a_pending_transfer_settles_although_its_debit_account_was_frozen_since() {
    let mut s = world();
    ok(&mut s, pending(10, SRC, DST, 40));
    ok(&mut s, pending(12, SRC, DST, 30));
    if let Some(a) = s.accounts.get_mut(&acct(SRC)) {
        a.flags |= AccountFlags::DEBITS_BLOCKED;
    }
    ok(&mut s, post(11, 10, 0));
    ok(&mut s, void(13, 12));
    assert_eq!(
        single(&mut s, plain(14, SRC, DST, 1)).code,
        ResultCode::DebitsBlocked
    );
}

#[test]
fn a_post_is_allowed_although_an_account_closed_since() {
    let mut s = world();
    ok(&mut s, pending(10, SRC, DST, 40));
    if let Some(a) = s.accounts.get_mut(&acct(DST)) {
        a.flags |= AccountFlags::CLOSED;
    }
    ok(&mut s, post(11, 10, 0));
}

#[test]
fn a_post_is_checked_against_its_pending_transfer_accounts_then_currency() {
    let mut s = world();
    ok(&mut s, pending(10, SRC, DST, 40));
    let other_currency = with(post(11, 10, 0), |t| t.currency = Some(eur()));
    assert_eq!(
        single(&mut s, other_currency.clone()).code,
        ResultCode::CurrencyMismatch
    );
    let also_other_account = with(other_currency, |t| {
        t.id = xfer(12);
        t.debit_account_id = Some(acct(MISSING));
    });
    assert_eq!(
        single(&mut s, also_other_account).code,
        ResultCode::PendingTransferHasDifferentAccounts
    );
    let named_right = with(post(13, 10, 0), |t| {
        t.debit_account_id = Some(acct(SRC));
        t.credit_account_id = Some(acct(DST));
        t.currency = Some(usd());
    });
    ok(&mut s, named_right);
}

#[test]
fn an_expired_pending_transfer_refuses_a_post_but_the_expiry_void_succeeds() {
    let mut s = world();
    ok(&mut s, timeout(pending(10, SRC, DST, 40), 10));

    let mut before_timeout = s.clone();
    let outcome = apply_request(&mut before_timeout, me(), &[post(11, 10, 0)], at(9));
    assert_eq!(codes(&outcome), [ResultCode::Ok]);

    assert_eq!(
        submit(&mut s, &[post(11, 10, 0)], at(10)),
        [ResultCode::PendingTransferExpired]
    );
    assert_eq!(
        submit(&mut s, &[void(12, 10)], at(10)),
        [ResultCode::PendingTransferExpired]
    );
    assert_eq!(totals(&s, SRC).debits_pending, 40);

    let expiry = flagged(void(13, 10), TransferFlags::EXPIRY);
    let outcome = apply_request(&mut s, Scope::System, &[expiry], at(10));
    assert_eq!(codes(&outcome), [ResultCode::Ok]);
    assert_eq!(totals(&s, SRC), Totals::default());
    assert_eq!(totals(&s, DST), Totals::default());
    assert_eq!(
        submit(&mut s, &[post(14, 10, 0)], at(11)),
        [ResultCode::PendingTransferAlreadyVoided]
    );
}

#[test]
fn balancing_debit_moves_at_most_the_available_balance() {
    let mut s = world();
    ok(&mut s, pending(10, LIMITED, DST, 30));
    let applied = ok(
        &mut s,
        flagged(plain(11, LIMITED, DST, 500), TransferFlags::BALANCING_DEBIT),
    );
    assert_eq!(applied.transfer.amount, 70);
    assert_eq!(totals(&s, LIMITED).available(), Some(0));
    let refill = ok(&mut s, plain(12, SRC, LIMITED, 10));
    assert_eq!(refill.transfer.amount, 10);
    let clamped = ok(
        &mut s,
        flagged(plain(13, LIMITED, DST, 3), TransferFlags::BALANCING_DEBIT),
    );
    assert_eq!(
        clamped.transfer.amount, 3,
        "an amount within the headroom moves in full"
    );
    let rest = ok(
        &mut s,
        flagged(plain(14, LIMITED, DST, 500), TransferFlags::BALANCING_DEBIT),
    );
    assert_eq!(rest.transfer.amount, 7);
    let none = single(
        &mut s,
        flagged(plain(15, LIMITED, DST, 500), TransferFlags::BALANCING_DEBIT),
    );
    assert_eq!(none.code, ResultCode::ExceedsCredits);
}

#[test]
fn balancing_credit_moves_at_most_the_debit_headroom() {
    let mut s = world();
    ok(&mut s, pending(10, SRC, CAPPED, 30));
    let applied = ok(
        &mut s,
        flagged(plain(11, SRC, CAPPED, 500), TransferFlags::BALANCING_CREDIT),
    );
    assert_eq!(applied.transfer.amount, 70);
    assert_eq!(
        totals(&s, CAPPED),
        Totals {
            debits_posted: 100,
            credits_pending: 30,
            credits_posted: 70,
            ..Totals::default()
        }
    );
    let none = single(
        &mut s,
        flagged(plain(12, SRC, CAPPED, 1), TransferFlags::BALANCING_CREDIT),
    );
    assert_eq!(none.code, ResultCode::ExceedsDebits);
}

#[test]
fn available_is_posted_credits_minus_posted_and_pending_debits() {
    let t = Totals {
        debits_pending: 20,
        debits_posted: 30,
        credits_pending: 999,
        credits_posted: 100,
    };
    assert_eq!(t.posted_balance(), Some(70));
    assert_eq!(t.available(), Some(50));
    let huge = Totals {
        debits_posted: 1,
        credits_posted: i64::MIN,
        ..Totals::default()
    };
    assert_eq!(huge.available(), None);
}

#[test]
fn a_failing_last_transfer_undoes_its_whole_chain() {
    let mut s = world();
    ok(&mut s, pending(5, SRC, DST, 50));
    let before = s.clone();
    let chain = [
        linked(plain(10, SRC, DST, 5)),
        linked(pending(11, SRC, DST, 7)),
        linked(post(12, 5, 0)),
        plain(13, LIMITED, DST, 1_000),
    ];
    let outcomes = apply_request(&mut s, me(), &chain, t0());
    use ResultCode as R;
    assert_eq!(
        codes(&outcomes),
        [
            R::LinkedEventFailed,
            R::LinkedEventFailed,
            R::LinkedEventFailed,
            R::ExceedsCredits
        ]
    );
    assert!(outcomes.iter().all(|o| o.applied.is_none()));
    assert_eq!(s.accounts, before.accounts);
    assert_eq!(s.existing, before.existing);
    assert_eq!(s.pendings, before.pendings);
    assert_eq!(s.failed.keys().collect::<Vec<_>>(), [&xfer(13)]);
    ok(&mut s, post(14, 5, 0));
}

#[test]
fn an_open_chain_at_the_end_of_a_request_fails_as_a_whole() {
    let mut s = world();
    let before = s.clone();
    let request = [
        plain(9, SRC, DST, 1),
        linked(plain(10, SRC, DST, 5)),
        linked(plain(11, SRC, DST, 5)),
        linked(plain(12, SRC, DST, 5)),
    ];
    use ResultCode as R;
    assert_eq!(
        submit(&mut s, &request, t0()),
        [
            R::Ok,
            R::LinkedEventFailed,
            R::LinkedEventFailed,
            R::LinkedEventChainOpen
        ]
    );
    assert_eq!(totals(&s, SRC).debits_posted, 1);
    assert_eq!(
        s.accounts[&acct(DST)].seq,
        before.accounts[&acct(DST)].seq + 1
    );
}

#[test]
fn an_open_chain_does_not_burn_its_ids() {
    let mut s = world();
    let open = [
        linked(plain(10, SRC, DST, 5)),
        linked(plain(11, SRC, DST, 5)),
    ];
    submit(&mut s, &open, t0());
    assert!(s.failed.is_empty());
    let closed = [linked(plain(10, SRC, DST, 5)), plain(11, SRC, DST, 5)];
    assert_eq!(
        submit(&mut s, &closed, t0()),
        [ResultCode::Ok, ResultCode::Ok]
    );
}

#[test]
fn a_chain_failing_on_a_request_error_leaves_the_other_ids_usable() {
    let mut s = world();
    let broken = [linked(plain(10, SRC, DST, 5)), plain(11, SRC, SRC, 5)];
    assert_eq!(
        submit(&mut s, &broken, t0()),
        [
            ResultCode::LinkedEventFailed,
            ResultCode::AccountsMustBeDifferent
        ]
    );
    let fixed = [linked(plain(10, SRC, DST, 5)), plain(11, SRC, DST, 5)];
    assert_eq!(
        submit(&mut s, &fixed, t0()),
        [ResultCode::Ok, ResultCode::Ok]
    );
}

#[test]
fn a_chain_may_create_a_pending_transfer_and_post_it() {
    let mut s = world();
    let chain = [linked(pending(10, SRC, DST, 50)), post(11, 10, 20)];
    assert_eq!(
        submit(&mut s, &chain, t0()),
        [ResultCode::Ok, ResultCode::Ok]
    );
    assert_eq!(
        totals(&s, SRC),
        Totals {
            debits_posted: 20,
            ..Totals::default()
        }
    );
    assert_eq!(s.accounts[&acct(SRC)].seq, 2);
    assert_eq!(s.pendings[&xfer(10)].1, Some(Resolution::Posted));
}

#[test]
fn a_failed_chain_leaves_no_postable_pending_transfer() {
    let mut s = world();
    let chain = [
        linked(pending(10, SRC, DST, 50)),
        plain(11, LIMITED, DST, 1_000),
    ];
    assert_eq!(
        submit(&mut s, &chain, t0()),
        [ResultCode::LinkedEventFailed, ResultCode::ExceedsCredits]
    );
    assert!(!s.pendings.contains_key(&xfer(10)));
    assert_eq!(
        single(&mut s, post(12, 10, 0)).code,
        ResultCode::PendingTransferNotFound
    );
    assert_eq!(totals(&s, SRC), Totals::default());
}

#[test]
fn an_identical_resubmission_answers_exists_and_moves_nothing() {
    let mut s = world();
    ok(&mut s, plain(10, SRC, DST, 5));
    let before = s.clone();
    let again = single(&mut s, plain(10, SRC, DST, 5));
    assert_eq!(again.code, ResultCode::Exists);
    assert!(again.applied.is_none());
    assert_eq!(s.accounts, before.accounts);
    assert_eq!(s.existing, before.existing);
    assert!(s.failed.is_empty());
}

#[test]
fn a_resubmission_with_another_amount_answers_exists_with_different_fields() {
    let mut s = world();
    ok(&mut s, plain(10, SRC, DST, 5));
    let before = s.clone();
    assert_eq!(
        single(&mut s, plain(10, SRC, DST, 6)).code,
        ResultCode::ExistsWithDifferentFields
    );
    let other_metadata = with(plain(10, SRC, DST, 5), |t| {
        t.metadata = Some(serde_json::json!({"a": 1}))
    });
    assert_eq!(
        single(&mut s, other_metadata).code,
        ResultCode::ExistsWithDifferentFields
    );
    let other_code = with(plain(10, SRC, DST, 5), |t| t.code = 2);
    assert_eq!(
        single(&mut s, other_code).code,
        ResultCode::ExistsWithDifferentFields
    );
    assert_eq!(s.accounts, before.accounts);
    assert!(s.failed.is_empty());
}

#[test]
fn resubmitting_a_full_post_or_a_clamped_balancing_transfer_answers_exists() {
    let mut s = world();
    ok(&mut s, pending(10, SRC, DST, 40));
    ok(&mut s, post(11, 10, 0));
    assert_eq!(single(&mut s, post(11, 10, 40)).code, ResultCode::Exists);
    assert_eq!(
        single(&mut s, post(11, 10, 39)).code,
        ResultCode::ExistsWithDifferentFields
    );
    let balancing = flagged(plain(12, LIMITED, DST, 500), TransferFlags::BALANCING_DEBIT);
    assert_eq!(ok(&mut s, balancing.clone()).transfer.amount, 100);
    assert_eq!(single(&mut s, balancing).code, ResultCode::Exists);
}

#[test]
fn a_state_failure_burns_the_id_even_once_funds_arrive() {
    let mut s = world();
    assert_eq!(
        single(&mut s, plain(10, LIMITED, DST, 150)).code,
        ResultCode::ExceedsCredits
    );
    ok(&mut s, plain(11, SRC, LIMITED, 100));
    assert_eq!(
        single(&mut s, plain(10, LIMITED, DST, 150)).code,
        ResultCode::IdAlreadyFailed
    );
    assert_eq!(s.failed.get(&xfer(10)), Some(&ResultCode::ExceedsCredits));
    assert_eq!(totals(&s, LIMITED).debits_posted, 0);
}

#[test]
fn a_request_error_does_not_burn_the_id() {
    let mut s = world();
    assert_eq!(
        single(&mut s, plain(10, SRC, SRC, 5)).code,
        ResultCode::AccountsMustBeDifferent
    );
    assert!(s.failed.is_empty());
    ok(&mut s, plain(10, SRC, DST, 5));
}

#[test]
fn a_fully_existing_chain_resubmitted_answers_exists_for_each() {
    let mut s = world();
    let chain = [
        linked(plain(10, SRC, DST, 5)),
        linked(pending(11, SRC, DST, 7)),
        post(12, 11, 0),
    ];
    assert_eq!(submit(&mut s, &chain, t0()), [ResultCode::Ok; 3]);
    let before = s.clone();
    assert_eq!(submit(&mut s, &chain, at(5)), [ResultCode::Exists; 3]);
    assert_eq!(s.accounts, before.accounts);
    assert_eq!(s.existing, before.existing);
}

#[test]
fn an_existing_chain_resubmitted_with_a_request_error_gets_that_error() {
    let mut s = world();
    ok(&mut s, pending(5, SRC, DST, 50));
    let chain = [linked(void(10, 5)), plain(11, SRC, DST, 5)];
    assert_eq!(submit(&mut s, &chain, t0()), [ResultCode::Ok; 2]);
    // Rule 6 (a negative amount) comes before rule 9 (exists), in a chain as alone.
    let negative = with(void(10, 5), |t| t.amount = -1);
    assert_eq!(
        single(&mut s, negative.clone()).code,
        ResultCode::AmountMustNotBeZero
    );
    let resubmitted = [linked(negative), plain(11, SRC, DST, 5)];
    assert_eq!(
        submit(&mut s, &resubmitted, t0()),
        [
            ResultCode::AmountMustNotBeZero,
            ResultCode::LinkedEventFailed
        ]
    );
}

#[test]
fn a_partner_cannot_see_another_partners_account() {
    let mut s = world();
    assert_eq!(
        single(&mut s, plain(10, SRC, FOREIGN, 5)).code,
        ResultCode::AccountNotFound
    );
    let theirs = Scope::Partner(partner(P2));
    let outcome = apply_request(&mut s, theirs, &[plain(11, FOREIGN, SRC, 5)], t0());
    assert_eq!(codes(&outcome), [ResultCode::AccountNotFound]);
    let outcome = apply_request(&mut s, theirs, &[plain(12, FOREIGN, FOREIGN_TOO, 5)], t0());
    assert_eq!(codes(&outcome), [ResultCode::Ok]);
    assert_eq!(totals(&s, SRC), Totals::default());
}

#[test]
fn a_partner_cannot_see_another_partners_pending_transfer() {
    let mut s = world();
    let theirs = Scope::Partner(partner(P2));
    let created = apply_request(
        &mut s,
        theirs,
        &[pending(10, FOREIGN, FOREIGN_TOO, 5)],
        t0(),
    );
    assert_eq!(codes(&created), [ResultCode::Ok]);
    assert_eq!(
        single(&mut s, post(11, 10, 0)).code,
        ResultCode::PendingTransferNotFound
    );
    assert_eq!(
        single(&mut s, void(12, 10)).code,
        ResultCode::PendingTransferNotFound
    );
    let outcome = apply_request(&mut s, theirs, &[post(13, 10, 0)], t0());
    assert_eq!(codes(&outcome), [ResultCode::Ok]);
}

#[test]
fn the_system_scope_sees_every_account_and_pending_transfer() {
    let mut s = world();
    let outcome = apply_request(&mut s, Scope::System, &[pending(10, SRC, FOREIGN, 5)], t0());
    assert_eq!(codes(&outcome), [ResultCode::Ok]);
    let stored = &outcome[0].applied.as_ref().unwrap().transfer;
    assert_eq!(stored.partner_id, None);
    assert_eq!(
        single(&mut s, post(11, 10, 0)).code,
        ResultCode::PendingTransferNotFound
    );
    let outcome = apply_request(&mut s, Scope::System, &[post(12, 10, 0)], t0());
    assert_eq!(codes(&outcome), [ResultCode::Ok]);
    assert_eq!(totals(&s, FOREIGN).credits_posted, 5);
}

#[test]
fn an_overflow_near_i64_max_changes_nothing() {
    let mut s = world();
    let before = s.clone();
    assert_eq!(
        single(&mut s, plain(10, SRC, FULL, 6)).code,
        ResultCode::OverflowsCreditsPosted
    );
    assert_eq!(s.accounts, before.accounts);
    assert!(s.existing.is_empty());
    ok(&mut s, plain(11, SRC, FULL, 5));
    assert_eq!(totals(&s, FULL).credits_posted, i64::MAX);
}

#[test]
fn a_pending_plus_posted_sum_beyond_i64_max_overflows_instead_of_exceeding_a_limit() {
    let mut s = world();
    let mut rich = account(
        20,
        usd(),
        AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
        Some(P1),
    );
    rich.totals.credits_posted = i64::MAX;
    rich.totals.debits_posted = i64::MAX - 10;
    let mut owed = account(
        21,
        usd(),
        AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
        Some(P1),
    );
    owed.totals.debits_posted = i64::MAX;
    owed.totals.credits_posted = i64::MAX - 10;
    s.accounts.insert(rich.id, rich);
    s.accounts.insert(owed.id, owed);
    // Every total stays in range; posted + pending would not: TigerBeetle's order says
    // overflows_* before exceeds_*, and nothing over the books can overflow afterwards.
    assert_eq!(
        single(&mut s, pending(10, 20, DST, 20)).code,
        ResultCode::OverflowsDebits
    );
    assert_eq!(
        single(&mut s, pending(11, SRC, 21, 20)).code,
        ResultCode::OverflowsCredits
    );
    ok(&mut s, pending(12, 20, DST, 10));
    ok(&mut s, pending(13, SRC, 21, 10));
}

#[test]
fn a_post_of_a_plain_transfer_answers_not_pending_in_the_same_batch_and_later() {
    let mut s = world();
    let request = [plain(10, SRC, DST, 5), post(11, 10, 0)];
    assert_eq!(
        submit(&mut s, &request, t0()),
        [ResultCode::Ok, ResultCode::PendingTransferNotPending]
    );
    assert_eq!(
        single(&mut s, post(12, 10, 0)).code,
        ResultCode::PendingTransferNotPending
    );
    assert_eq!(
        single(&mut s, post(13, 11, 0)).code,
        ResultCode::PendingTransferNotFound
    );
}

#[test]
fn result_codes_round_trip_through_their_names() {
    for code in ResultCode::ALL {
        assert_eq!(ResultCode::parse(code.as_str()), Some(code));
        assert_eq!(code.to_string(), code.as_str());
    }
    assert_eq!(ResultCode::parse("nope"), None);
}

// --- reference model -----------------------------------------------------------------------
//
// A deliberately naive second implementation of the documented rules: plain maps, i128
// arithmetic, and chains run on a clone of the whole state that is kept only if every
// transfer succeeds.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RefKind {
    Plain,
    Open,
    Posted,
    Voided,
}

#[derive(Debug, Clone)]
struct RefTransfer {
    asked: NewTransfer,
    partner: Option<PartnerId>,
    debit: AccountId,
    credit: AccountId,
    currency: Currency,
    moved: i64,
    expires_at: Option<DateTime<Utc>>,
    kind: RefKind,
}

impl RefTransfer {
    /// Identical fields, where those the client left to the ledger match what they became.
    fn asked_the_same(&self, t: &NewTransfer) -> bool {
        let f = |bit| t.flags.contains(bit);
        let balancing = f(TransferFlags::BALANCING_DEBIT) || f(TransferFlags::BALANCING_CREDIT);
        let amount = f(TransferFlags::VOID_PENDING)
            || (f(TransferFlags::POST_PENDING) && t.amount == 0)
            || if balancing {
                self.moved <= t.amount
            } else {
                self.moved == t.amount
            };
        amount
            && t.debit_account_id.unwrap_or(self.debit) == self.debit
            && t.credit_account_id.unwrap_or(self.credit) == self.credit
            && t.currency.unwrap_or(self.currency) == self.currency
            && t.code == self.asked.code
            && t.flags == self.asked.flags
            && t.pending_id == self.asked.pending_id
            && t.timeout_secs == self.asked.timeout_secs
            && t.metadata == self.asked.metadata
    }
}

#[derive(Debug, Clone)]
struct RefAccount {
    partner: Option<PartnerId>,
    /// The partner's own books (else the system's, even when a partner's: a wallet).
    books: bool,
    currency: Currency,
    flags: AccountFlags,
    totals: Totals,
}

#[derive(Debug, Clone, Default)]
struct Reference {
    accounts: BTreeMap<AccountId, RefAccount>,
    transfers: HashMap<TransferId, RefTransfer>,
    failed: HashMap<TransferId, ResultCode>,
}

/// Rules 12-33 depend on the ledger's state: their ids are burnt.
fn burns(code: ResultCode) -> bool {
    let rank = |c| ResultCode::ALL.iter().position(|x| *x == c);
    rank(code) >= rank(ResultCode::AccountNotFound)
}

fn wide(v: i64) -> i128 {
    i128::from(v)
}

fn narrow(v: i128, overflow: ResultCode) -> Result<i64, ResultCode> {
    i64::try_from(v).map_err(|_| overflow)
}

/// Rule 13: a partner's raw transfers move money only on its own books.
fn owned(scope: Scope, d: &RefAccount, c: &RefAccount) -> Result<(), ResultCode> {
    if matches!(scope, Scope::Partner(_)) && !(d.books && c.books) {
        Err(ResultCode::AccountNotOwned)
    } else {
        Ok(())
    }
}

/// Rules 29-30: each side's pending plus posted stays within 64 bits.
fn sums_fit(d: &Totals, c: &Totals) -> Result<(), ResultCode> {
    narrow(
        wide(d.debits_pending) + wide(d.debits_posted),
        ResultCode::OverflowsDebits,
    )?;
    narrow(
        wide(c.credits_pending) + wide(c.credits_posted),
        ResultCode::OverflowsCredits,
    )?;
    Ok(())
}

impl Reference {
    fn request(
        &mut self,
        scope: Scope,
        transfers: &[NewTransfer],
        now: DateTime<Utc>,
    ) -> Vec<ResultCode> {
        let mut codes = Vec::new();
        let mut chain = Vec::new();
        for t in transfers {
            chain.push(t.clone());
            if !t.flags.contains(TransferFlags::LINKED) {
                codes.extend(self.chain(scope, &chain, now));
                chain.clear();
            }
        }
        for i in 0..chain.len() {
            codes.push(if i + 1 == chain.len() {
                ResultCode::LinkedEventChainOpen
            } else {
                ResultCode::LinkedEventFailed
            });
        }
        codes
    }

    fn chain(
        &mut self,
        scope: Scope,
        chain: &[NewTransfer],
        now: DateTime<Utc>,
    ) -> Vec<ResultCode> {
        if chain
            .iter()
            .all(|t| self.clone().one(scope, t, now) == Err(ResultCode::Exists))
        {
            return vec![ResultCode::Exists; chain.len()];
        }
        let mut trial = self.clone();
        for (i, t) in chain.iter().enumerate() {
            if let Err(code) = trial.one(scope, t, now) {
                if burns(code) && !self.transfers.contains_key(&t.id) {
                    self.failed.entry(t.id).or_insert(code);
                }
                return (0..chain.len())
                    .map(|j| {
                        if j == i {
                            code
                        } else {
                            ResultCode::LinkedEventFailed
                        }
                    })
                    .collect();
            }
        }
        *self = trial;
        vec![ResultCode::Ok; chain.len()]
    }

    /// One transfer, rules 3-24 in the documented order; changes nothing on failure.
    fn one(&mut self, scope: Scope, t: &NewTransfer, now: DateTime<Utc>) -> Result<(), ResultCode> {
        use ResultCode as R;
        let f = |bit| t.flags.contains(bit);
        let (pending, post, void) = (
            f(TransferFlags::PENDING),
            f(TransferFlags::POST_PENDING),
            f(TransferFlags::VOID_PENDING),
        );
        let resolves = post || void;
        let balancing = f(TransferFlags::BALANCING_DEBIT) || f(TransferFlags::BALANCING_CREDIT);
        let kinds = [pending, post, void].into_iter().filter(|k| *k).count();
        if kinds > 1
            || (balancing && resolves)
            || (f(TransferFlags::EXPIRY) && !void)
            || (!resolves && t.pending_id.is_some())
        {
            return Err(R::FlagsAreMutuallyExclusive);
        }
        if resolves && t.pending_id.is_none() {
            return Err(R::PendingIdRequired);
        }
        if t.timeout_secs.is_some() && !pending {
            return Err(R::TimeoutReservedForPendingTransfer);
        }
        if t.amount < 0 || (t.amount == 0 && !resolves) {
            return Err(R::AmountMustNotBeZero);
        }
        if !resolves
            && (t.debit_account_id.is_none()
                || t.credit_account_id.is_none()
                || t.currency.is_none())
        {
            return Err(R::AccountsRequired);
        }
        if t.debit_account_id.is_some() && t.debit_account_id == t.credit_account_id {
            return Err(R::AccountsMustBeDifferent);
        }
        if let Some(old) = self.transfers.get(&t.id) {
            return Err(if scope.sees(old.partner) && old.asked_the_same(t) {
                R::Exists
            } else {
                R::ExistsWithDifferentFields
            });
        }
        if self.failed.contains_key(&t.id) {
            return Err(R::IdAlreadyFailed);
        }
        if resolves {
            self.resolve(scope, t, now)
        } else {
            self.movement(scope, t, now)
        }
    }

    fn movement(
        &mut self,
        scope: Scope,
        t: &NewTransfer,
        now: DateTime<Utc>,
    ) -> Result<(), ResultCode> {
        use ResultCode as R;
        let (Some(debit), Some(credit), Some(currency)) =
            (t.debit_account_id, t.credit_account_id, t.currency)
        else {
            return Err(R::AccountsRequired);
        };
        let visible = |id| {
            self.accounts
                .get(&id)
                .filter(|a| scope.sees(a.partner))
                .cloned()
                .ok_or(R::AccountNotFound)
        };
        let mut d = visible(debit)?;
        let mut c = visible(credit)?;
        owned(scope, &d, &c)?;
        if d.currency != currency || c.currency != currency {
            return Err(R::CurrencyMismatch);
        }
        if d.flags.contains(AccountFlags::CLOSED) || c.flags.contains(AccountFlags::CLOSED) {
            return Err(R::AccountClosed);
        }
        if d.flags.contains(AccountFlags::DEBITS_BLOCKED) {
            return Err(R::DebitsBlocked);
        }
        if c.flags.contains(AccountFlags::CREDITS_BLOCKED) {
            return Err(R::CreditsBlocked);
        }
        let debit_limited = d
            .flags
            .contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS);
        let credit_limited = c
            .flags
            .contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS);
        let mut amount = wide(t.amount);
        if t.flags.contains(TransferFlags::BALANCING_DEBIT) && debit_limited {
            let dt = d.totals;
            let headroom =
                wide(dt.credits_posted) - wide(dt.debits_posted) - wide(dt.debits_pending);
            amount = amount.min(headroom.max(0));
            if amount == 0 {
                return Err(R::ExceedsCredits);
            }
        }
        if t.flags.contains(TransferFlags::BALANCING_CREDIT) && credit_limited {
            let ct = c.totals;
            let headroom =
                wide(ct.debits_posted) - wide(ct.credits_posted) - wide(ct.credits_pending);
            amount = amount.min(headroom.max(0));
            if amount == 0 {
                return Err(R::ExceedsDebits);
            }
        }
        let pending = t.flags.contains(TransferFlags::PENDING);
        if pending {
            d.totals.debits_pending = narrow(
                wide(d.totals.debits_pending) + amount,
                R::OverflowsDebitsPending,
            )?;
            c.totals.credits_pending = narrow(
                wide(c.totals.credits_pending) + amount,
                R::OverflowsCreditsPending,
            )?;
        } else {
            d.totals.debits_posted = narrow(
                wide(d.totals.debits_posted) + amount,
                R::OverflowsDebitsPosted,
            )?;
            c.totals.credits_posted = narrow(
                wide(c.totals.credits_posted) + amount,
                R::OverflowsCreditsPosted,
            )?;
        }
        sums_fit(&d.totals, &c.totals)?;
        if t.timeout_secs.is_some_and(|secs| secs > 2_147_483_647) {
            return Err(R::OverflowsTimeout);
        }
        let (dt, ct) = (d.totals, c.totals);
        if debit_limited
            && wide(dt.debits_posted) + wide(dt.debits_pending) > wide(dt.credits_posted)
        {
            return Err(R::ExceedsCredits);
        }
        if credit_limited
            && wide(ct.credits_posted) + wide(ct.credits_pending) > wide(ct.debits_posted)
        {
            return Err(R::ExceedsDebits);
        }
        let moved = narrow(amount, R::OverflowsDebits)?;
        self.accounts.insert(debit, d);
        self.accounts.insert(credit, c);
        let expires_at = t
            .timeout_secs
            .filter(|secs| *secs > 0)
            .map(|secs| now + chrono::Duration::seconds(i64::from(secs)));
        let kind = if pending {
            RefKind::Open
        } else {
            RefKind::Plain
        };
        let stored = RefTransfer {
            asked: t.clone(),
            partner: scope.owner(),
            debit,
            credit,
            currency,
            moved,
            expires_at,
            kind,
        };
        self.transfers.insert(t.id, stored);
        Ok(())
    }

    fn resolve(
        &mut self,
        scope: Scope,
        t: &NewTransfer,
        now: DateTime<Utc>,
    ) -> Result<(), ResultCode> {
        use ResultCode as R;
        let pending_id = t.pending_id.ok_or(R::PendingIdRequired)?;
        let p = self
            .transfers
            .get(&pending_id)
            .filter(|p| scope.sees(p.partner))
            .cloned()
            .ok_or(R::PendingTransferNotFound)?;
        if p.kind == RefKind::Plain {
            return Err(R::PendingTransferNotPending);
        }
        owned(scope, &self.accounts[&p.debit], &self.accounts[&p.credit])?;
        if t.debit_account_id.unwrap_or(p.debit) != p.debit
            || t.credit_account_id.unwrap_or(p.credit) != p.credit
        {
            return Err(R::PendingTransferHasDifferentAccounts);
        }
        if t.currency.unwrap_or(p.currency) != p.currency {
            return Err(R::CurrencyMismatch);
        }
        match p.kind {
            RefKind::Posted => return Err(R::PendingTransferAlreadyPosted),
            RefKind::Voided => return Err(R::PendingTransferAlreadyVoided),
            RefKind::Open | RefKind::Plain => {}
        }
        if p.expires_at.is_some_and(|e| now >= e) && !t.flags.contains(TransferFlags::EXPIRY) {
            return Err(R::PendingTransferExpired);
        }
        let post = t.flags.contains(TransferFlags::POST_PENDING);
        let amount = match (post, t.amount) {
            (false, _) => 0,
            (true, 0) => p.moved,
            (true, a) if a > p.moved => return Err(R::ExceedsPendingAmount),
            (true, a) => a,
        };
        let mut d = self.accounts[&p.debit].clone();
        let mut c = self.accounts[&p.credit].clone();
        d.totals.debits_pending = narrow(
            wide(d.totals.debits_pending) - wide(p.moved),
            R::OverflowsDebitsPending,
        )?;
        d.totals.debits_posted = narrow(
            wide(d.totals.debits_posted) + wide(amount),
            R::OverflowsDebitsPosted,
        )?;
        c.totals.credits_pending = narrow(
            wide(c.totals.credits_pending) - wide(p.moved),
            R::OverflowsCreditsPending,
        )?;
        c.totals.credits_posted = narrow(
            wide(c.totals.credits_posted) + wide(amount),
            R::OverflowsCreditsPosted,
        )?;
        sums_fit(&d.totals, &c.totals)?;
        self.accounts.insert(p.debit, d);
        self.accounts.insert(p.credit, c);
        let resolved = RefTransfer {
            kind: if post {
                RefKind::Posted
            } else {
                RefKind::Voided
            },
            ..p.clone()
        };
        self.transfers.insert(pending_id, resolved);
        let stored = RefTransfer {
            asked: t.clone(),
            moved: amount,
            expires_at: None,
            kind: RefKind::Plain,
            ..p
        };
        self.transfers.insert(t.id, stored);
        Ok(())
    }
}

// --- property tests ------------------------------------------------------------------------

/// Accounts 1-3 are USD, 4-6 EUR.
#[derive(Debug, Clone)]
struct AccountSpec {
    /// 0 none, 1 `debits_must_not_exceed_credits`, 2 `credits_must_not_exceed_debits`.
    limit: u8,
    /// 0 partner 1, 1 partner 2, 2 the system, 3 the system's for partner 1 (a wallet).
    owner: u8,
    closed: bool,
}

#[derive(Debug, Clone, Copy)]
enum Shape {
    Plain,
    Pending,
    Post,
    Void,
    Expiry,
}

#[derive(Debug, Clone)]
struct OpSpec {
    shape: Shape,
    linked: bool,
    /// Reuse an earlier transfer's id with fresh fields.
    reuse: Option<usize>,
    /// Resubmit an earlier transfer: exactly, or (second value 0-3) with its metadata, code,
    /// amount or timeout changed.
    resubmit: Option<(usize, u8)>,
    /// Index into the accounts; 6 is an unknown account.
    debit: usize,
    /// 0 the debit account again, 1 an unknown account, 2 one of the other currency, else
    /// another of the same currency.
    credit: u8,
    other_currency: bool,
    amount: i64,
    full_post: bool,
    /// Which earlier pending (or, one time in eight, any earlier) transfer to post or void.
    target: usize,
    timeout: Option<u32>,
    /// 0 none, 1 debit, 2 credit, 3 both.
    balancing: u8,
    /// For post/void: 0-1 name nothing, 2 the pending transfer's accounts, 3 the op's.
    names: u8,
    noise_flags: i32,
    stray_timeout: bool,
    metadata: Option<u8>,
}

#[derive(Debug, Clone)]
struct RequestSpec {
    /// 0 the system, 1 partner 1, 2 partner 2.
    scope: u8,
    step_secs: i64,
    ops: Vec<OpSpec>,
    /// Replay an earlier request exactly.
    replay: Option<usize>,
    /// Keep the last transfer's `linked` flag (else cleared).
    leave_open: bool,
    /// Link every transfer (but the last, unless `leave_open`).
    chain: bool,
}

fn account_spec() -> impl Strategy<Value = AccountSpec> {
    (
        prop_oneof![2 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
        prop_oneof![16 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8), 2 => Just(3u8)],
        proptest::bool::weighted(0.05),
    )
        .prop_map(|(limit, owner, closed)| AccountSpec {
            limit,
            owner,
            closed,
        })
}

fn amount() -> impl Strategy<Value = i64> {
    const QUARTER: i64 = i64::MAX / 4;
    const HALF: i64 = i64::MAX / 2;
    prop_oneof![
        8 => 1i64..=300,
        2 => 300i64..=1_000_000,
        3 => (QUARTER - 1_000)..=QUARTER,
        1 => HALF..=(HALF + 1_000),
        1 => (i64::MAX - 10)..=i64::MAX,
        1 => -1i64..=0,
    ]
}

fn account_index() -> impl Strategy<Value = usize> {
    prop_oneof![30 => 0usize..6, 1 => Just(6usize)]
}

fn op_spec() -> impl Strategy<Value = OpSpec> {
    let shape = prop_oneof![
        5 => Just(Shape::Plain),
        4 => Just(Shape::Pending),
        3 => Just(Shape::Post),
        2 => Just(Shape::Void),
        1 => Just(Shape::Expiry),
    ];
    let ids = (
        prop_oneof![10 => Just(None), 1 => any::<usize>().prop_map(Some)],
        prop_oneof![10 => Just(None), 1 => (any::<usize>(), 0u8..8).prop_map(Some)],
    );
    let noise = (
        0u8..4,
        prop_oneof![40 => Just(0i32), 1 => 0i32..128],
        proptest::bool::weighted(0.03),
        prop_oneof![4 => Just(None), 1 => (0u8..2).prop_map(Some)],
    );
    (
        shape,
        proptest::bool::weighted(0.1),
        ids,
        account_index(),
        prop_oneof![1 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8), 40 => 3u8..5],
        proptest::bool::weighted(0.03),
        amount(),
        any::<bool>(),
        any::<usize>(),
        prop_oneof![3 => Just(None), 2 => (0u32..5).prop_map(|k| Some(k * 5))],
        prop_oneof![4 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8), 1 => Just(3u8)],
        noise,
    )
        .prop_map(
            |(
                shape,
                linked,
                (reuse, resubmit),
                debit,
                credit,
                other_currency,
                amount,
                full_post,
                target,
                timeout,
                balancing,
                (names, noise_flags, stray_timeout, metadata),
            )| OpSpec {
                shape,
                linked,
                reuse,
                resubmit,
                debit,
                credit,
                other_currency,
                amount,
                full_post,
                target,
                timeout,
                balancing,
                names,
                noise_flags,
                stray_timeout,
                metadata,
            },
        )
}

fn request_spec() -> impl Strategy<Value = RequestSpec> {
    (
        prop_oneof![5 => Just(0u8), 4 => Just(1u8), 1 => Just(2u8)],
        prop_oneof![2 => Just(0i64), 1 => Just(1i64), 3 => Just(5i64), 1 => Just(10i64)],
        proptest::collection::vec(op_spec(), 1..=5),
        prop_oneof![12 => Just(None), 1 => any::<usize>().prop_map(Some)],
        proptest::bool::weighted(0.1),
        proptest::bool::weighted(0.25),
    )
        .prop_map(
            |(scope, step_secs, ops, replay, leave_open, chain)| RequestSpec {
                scope,
                step_secs,
                ops,
                replay,
                leave_open,
                chain,
            },
        )
}

/// Turns specs into concrete transfers, remembering what was submitted.
struct Generator {
    accounts: Vec<(AccountId, Currency)>,
    history: Vec<NewTransfer>,
    pendings: Vec<NewTransfer>,
    requests: Vec<Vec<NewTransfer>>,
    next_id: u128,
}

impl Generator {
    fn account(&self, index: usize) -> (AccountId, Currency) {
        self.accounts
            .get(index)
            .copied()
            .unwrap_or((acct(MISSING), usd()))
    }

    /// The credit account: mostly another account of the debit account's currency.
    fn credit_index(debit: usize, choice: u8) -> usize {
        let (group, member) = (debit / 3, debit % 3);
        match choice {
            0 => debit,
            1 => 6,
            2 => (debit + 3) % 6,
            _ => group * 3 + (member + usize::from(choice) - 2) % 3,
        }
    }

    fn request(&mut self, spec: &RequestSpec) -> Vec<NewTransfer> {
        let transfers = match spec.replay {
            Some(k) if !self.requests.is_empty() => self.requests[k % self.requests.len()].clone(),
            _ => {
                let mut transfers: Vec<NewTransfer> =
                    spec.ops.iter().map(|op| self.transfer(op)).collect();
                if spec.chain {
                    for t in &mut transfers {
                        t.flags |= TransferFlags::LINKED;
                    }
                }
                if let Some(last) = transfers.last_mut()
                    && !spec.leave_open
                {
                    last.flags -= TransferFlags::LINKED;
                }
                transfers
            }
        };
        self.requests.push(transfers.clone());
        transfers
    }

    /// Learns which pending transfers exist, to post and void them later.
    fn learn(&mut self, transfers: &[NewTransfer], outcomes: &[Outcome]) {
        for (t, o) in transfers.iter().zip(outcomes) {
            if o.code == ResultCode::Ok && t.flags.contains(TransferFlags::PENDING) {
                self.pendings.push(t.clone());
            }
        }
    }

    fn transfer(&mut self, op: &OpSpec) -> NewTransfer {
        if let Some((k, tweak)) = op.resubmit
            && !self.history.is_empty()
        {
            let mut t = self.history[k % self.history.len()].clone();
            match tweak {
                0 => t.metadata = Some(serde_json::Value::from(7)),
                1 => t.code += 1,
                2 => t.amount = t.amount.saturating_add(1),
                3 => t.timeout_secs = Some(t.timeout_secs.unwrap_or(0) + 5),
                _ => {}
            }
            return t;
        }
        let id = match op.reuse {
            Some(k) if !self.history.is_empty() => self.history[k % self.history.len()].id,
            _ => {
                self.next_id += 1;
                xfer(self.next_id)
            }
        };
        let (debit, debit_currency) = self.account(op.debit);
        let (credit, _) = self.account(Self::credit_index(op.debit.min(5), op.credit));
        let currency = if (debit_currency == usd()) != op.other_currency {
            usd()
        } else {
            eur()
        };
        let mut flags = TransferFlags::from_bits_retain(op.noise_flags);
        if op.linked {
            flags |= TransferFlags::LINKED;
        }
        let t = match op.shape {
            Shape::Plain | Shape::Pending => {
                if matches!(op.shape, Shape::Pending) {
                    flags |= TransferFlags::PENDING;
                }
                if op.balancing & 1 != 0 {
                    flags |= TransferFlags::BALANCING_DEBIT;
                }
                if op.balancing & 2 != 0 {
                    flags |= TransferFlags::BALANCING_CREDIT;
                }
                let timeout = match op.shape {
                    Shape::Pending => op.timeout,
                    _ => op.timeout.filter(|_| op.stray_timeout),
                };
                NewTransfer {
                    id,
                    debit_account_id: Some(debit),
                    credit_account_id: Some(credit),
                    amount: op.amount,
                    currency: Some(currency),
                    code: 1,
                    flags,
                    pending_id: None,
                    timeout_secs: timeout,
                    metadata: op.metadata.map(serde_json::Value::from),
                }
            }
            Shape::Post | Shape::Void | Shape::Expiry => {
                flags |= match op.shape {
                    Shape::Post => TransferFlags::POST_PENDING,
                    Shape::Void => TransferFlags::VOID_PENDING,
                    _ => TransferFlags::VOID_PENDING | TransferFlags::EXPIRY,
                };
                let target = if op.target.is_multiple_of(8) || self.pendings.is_empty() {
                    self.history
                        .get(op.target % self.history.len().max(1))
                        .cloned()
                } else {
                    Some(self.pendings[op.target % self.pendings.len()].clone())
                };
                let (pending_id, named) = match &target {
                    Some(p) => (p.id, (p.debit_account_id, p.credit_account_id, p.currency)),
                    None => (xfer(u128::MAX), (None, None, None)),
                };
                let named = match op.names {
                    2 => named,
                    3 => (Some(debit), Some(credit), Some(currency)),
                    _ => (None, None, None),
                };
                let amount = match op.shape {
                    Shape::Post if op.full_post => 0,
                    Shape::Post => op.amount,
                    _ => 0,
                };
                NewTransfer {
                    id,
                    debit_account_id: named.0,
                    credit_account_id: named.1,
                    amount,
                    currency: named.2,
                    code: 1,
                    flags,
                    pending_id: Some(pending_id),
                    timeout_secs: op.timeout.filter(|_| op.stray_timeout),
                    metadata: op.metadata.map(serde_json::Value::from),
                }
            }
        };
        self.history.push(t.clone());
        t
    }
}

/// Runs the requests against the model and the reference, checking the invariants after each.
fn check_run(accounts: &[AccountSpec], requests: &[RequestSpec]) -> Result<(), TestCaseError> {
    let mut snapshot = Snapshot::default();
    let mut reference = Reference::default();
    let mut generator = Generator {
        accounts: Vec::new(),
        history: Vec::new(),
        pendings: Vec::new(),
        requests: Vec::new(),
        next_id: 1_000,
    };
    for (n, spec) in (1u128..).zip(accounts) {
        let currency = if n > 3 { eur() } else { usd() };
        let limit = match spec.limit {
            1 => AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
            2 => AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
            _ => AccountFlags::empty(),
        };
        let closed = if spec.closed {
            AccountFlags::CLOSED
        } else {
            AccountFlags::empty()
        };
        let owner = match spec.owner {
            0 | 3 => Some(P1),
            1 => Some(P2),
            _ => None,
        };
        let mut state = account(n, currency, limit | closed, owner);
        state.partner_books = spec.owner < 2;
        let mirror = RefAccount {
            partner: state.partner_id,
            books: state.partner_books,
            currency,
            flags: state.flags,
            totals: Totals::default(),
        };
        generator.accounts.push((state.id, currency));
        reference.accounts.insert(state.id, mirror);
        snapshot.accounts.insert(state.id, state);
    }

    // Per account: the last entry's seq and the running sums of all entries' deltas.
    let mut journal: HashMap<AccountId, (i64, Totals)> = HashMap::new();
    let mut applied_ids: HashSet<TransferId> = HashSet::new();
    let mut now = t0();
    for (r, spec) in requests.iter().enumerate() {
        now += chrono::Duration::seconds(spec.step_secs);
        let scope = match spec.scope {
            0 => Scope::System,
            1 => Scope::Partner(partner(P1)),
            _ => Scope::Partner(partner(P2)),
        };
        let transfers = generator.request(spec);
        let outcomes = apply_request(&mut snapshot, scope, &transfers, now);
        let expected = reference.request(scope, &transfers, now);
        generator.learn(&transfers, &outcomes);

        // e. Same codes as the reference.
        prop_assert_eq!(
            codes(&outcomes),
            expected,
            "request {} in {:?} at {}: {:#?}",
            r,
            scope,
            now,
            transfers
        );
        let ids: Vec<TransferId> = outcomes.iter().map(|o| o.id).collect();
        let asked: Vec<TransferId> = transfers.iter().map(|t| t.id).collect();
        prop_assert_eq!(ids, asked);

        for outcome in &outcomes {
            prop_assert_eq!(outcome.applied.is_some(), outcome.code == ResultCode::Ok);
            let Some(applied) = &outcome.applied else {
                continue;
            };
            // d. Applied at most once.
            prop_assert!(
                applied_ids.insert(outcome.id),
                "{} applied twice",
                outcome.id
            );
            // b. Entries follow each other and carry their running totals.
            for entry in &applied.entries {
                let (seq, sums) = journal.entry(entry.account_id).or_default();
                prop_assert_eq!(entry.seq, *seq + 1);
                if entry.is_credit {
                    sums.credits_pending += entry.pending_delta;
                    sums.credits_posted += entry.posted_delta;
                } else {
                    sums.debits_pending += entry.pending_delta;
                    sums.debits_posted += entry.posted_delta;
                }
                prop_assert_eq!(entry.totals, *sums);
                *seq = entry.seq;
            }
        }

        let mut per_currency: BTreeMap<&str, [i128; 4]> = BTreeMap::new();
        for a in snapshot.accounts.values() {
            let t = a.totals;
            // b. Totals are the sums of the entries.
            let (seq, sums) = journal.get(&a.id).copied().unwrap_or_default();
            prop_assert_eq!((a.seq, a.totals), (seq, sums), "account {}", a.id);
            // c. Limits hold.
            if a.flags
                .contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
            {
                prop_assert!(
                    wide(t.debits_posted) + wide(t.debits_pending) <= wide(t.credits_posted)
                );
            }
            if a.flags
                .contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
            {
                prop_assert!(
                    wide(t.credits_posted) + wide(t.credits_pending) <= wide(t.debits_posted)
                );
            }
            prop_assert!(t.debits_pending >= 0 && t.credits_pending >= 0);
            let sums = per_currency.entry(a.currency.code()).or_default();
            sums[0] += wide(t.debits_posted);
            sums[1] += wide(t.credits_posted);
            sums[2] += wide(t.debits_pending);
            sums[3] += wide(t.credits_pending);
            // e. Same totals as the reference.
            prop_assert_eq!(t, reference.accounts[&a.id].totals, "account {}", a.id);
        }
        // a. Double entry, per currency.
        for (currency, [dp, cp, dpend, cpend]) in per_currency {
            prop_assert_eq!(dp, cp, "posted in {}", currency);
            prop_assert_eq!(dpend, cpend, "pending in {}", currency);
        }
        // e. The same ids exist and the same ids are burnt.
        let existing: HashSet<TransferId> = snapshot.existing.keys().copied().collect();
        let reference_existing: HashSet<TransferId> = reference.transfers.keys().copied().collect();
        prop_assert_eq!(existing, reference_existing);
        prop_assert_eq!(&snapshot.failed, &reference.failed);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_requests_keep_the_books_balanced_and_agree_with_the_reference(
        accounts in proptest::collection::vec(account_spec(), 6),
        requests in proptest::collection::vec(request_spec(), 1..=16),
    ) {
        check_run(&accounts, &requests)?;
    }
}

// --- requests ------------------------------------------------------------------------------

fn transfers(body: serde_json::Value) -> Result<Vec<NewTransfer>, LedgerError> {
    serde_json::from_value::<CreateTransfers>(body)
        .unwrap()
        .parse()
}

/// The field and code of a refused request.
fn refusal(result: Result<Vec<NewTransfer>, LedgerError>) -> (String, &'static str) {
    use crate::platform::error::Problem;
    let err = result.unwrap_err();
    let field = err.extensions().unwrap()["field"]
        .as_str()
        .unwrap()
        .to_owned();
    (field, err.code())
}

#[test]
fn a_transfer_request_parses_into_new_transfers_in_order() {
    let (debit, credit, pending) = (AccountId::new(), AccountId::new(), TransferId::new());
    let parsed = transfers(serde_json::json!({"transfers": [
        {"debit_account_id": debit.to_string(), "credit_account_id": credit.to_string(),
         "amount": "12.34", "currency": "USD", "pending": true, "linked": true, "code": 7},
        {"post_pending_id": pending.to_string()},
    ]}))
    .unwrap();
    assert_eq!(parsed.len(), 2);
    assert_eq!(parsed[0].amount, 1234);
    assert_eq!(parsed[0].debit_account_id, Some(debit));
    assert_eq!(parsed[0].code, 7);
    assert_eq!(
        parsed[0].flags,
        TransferFlags::PENDING | TransferFlags::LINKED
    );
    assert_eq!(parsed[1].amount, 0, "a post without amount posts it all");
    assert_eq!(parsed[1].pending_id, Some(pending));
    assert_eq!(parsed[1].flags, TransferFlags::POST_PENDING);
}

#[test]
fn a_malformed_transfer_names_its_first_bad_field() {
    let (debit, credit) = (AccountId::new().to_string(), AccountId::new().to_string());
    let ok = serde_json::json!({"debit_account_id": debit, "credit_account_id": credit,
                                "amount": "1.00", "currency": "USD"});
    let with = |change: serde_json::Value| {
        let mut t = ok.clone();
        t.as_object_mut()
            .unwrap()
            .extend(change.as_object().unwrap().clone());
        serde_json::json!({"transfers": [ok.clone(), t]})
    };
    for (change, field, code) in [
        (
            serde_json::json!({"id": "pay_1"}),
            "transfers[1].id",
            "validation_failed",
        ),
        (
            serde_json::json!({"credit_account_id": "acct_x"}),
            "transfers[1].credit_account_id",
            "validation_failed",
        ),
        (
            serde_json::json!({"amount": "1.001"}),
            "transfers[1].amount",
            "too_many_decimals",
        ),
        (
            serde_json::json!({"amount": "0"}),
            "transfers[1].amount",
            "amount_not_positive",
        ),
        (
            serde_json::json!({"currency": null}),
            "transfers[1].currency",
            "validation_failed",
        ),
        (
            serde_json::json!({"code": 65536}),
            "transfers[1].code",
            "validation_failed",
        ),
        (
            serde_json::json!({"metadata": []}),
            "transfers[1].metadata",
            "validation_failed",
        ),
        (
            serde_json::json!({"post_pending_id": TransferId::new().to_string(),
                               "void_pending_id": TransferId::new().to_string()}),
            "transfers[1].post_pending_id",
            "validation_failed",
        ),
    ] {
        let got = refusal(transfers(with(change.clone())));
        assert_eq!(got, (field.to_owned(), code), "{change}");
    }
    let missing = serde_json::json!({"transfers": [{"amount": "1.00", "currency": "USD",
                                                    "credit_account_id": credit}]});
    assert_eq!(
        refusal(transfers(missing)),
        (
            "transfers[0].debit_account_id".to_owned(),
            "validation_failed"
        )
    );
    assert_eq!(
        refusal(transfers(serde_json::json!({"transfers": []}))),
        ("transfers".to_owned(), "validation_failed")
    );
}

#[test]
fn an_account_request_checks_code_flags_and_metadata() {
    use crate::platform::error::Problem;
    let parse = |body: serde_json::Value| {
        serde_json::from_value::<CreateAccount>(body)
            .unwrap()
            .parse()
    };
    let account = parse(serde_json::json!({"currency": "EUR", "code": 3,
        "flags": ["debits_must_not_exceed_credits"], "metadata": {"k": "v"}}))
    .unwrap();
    assert_eq!(account.code, 3);
    assert!(
        account
            .flags
            .contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
    );
    for (body, field) in [
        (serde_json::json!({"currency": "EUR", "code": -1}), "code"),
        (
            serde_json::json!({"currency": "EUR", "flags": ["nope"]}),
            "flags",
        ),
        (
            serde_json::json!({"currency": "EUR", "metadata": "text"}),
            "metadata",
        ),
    ] {
        let err = parse(body.clone()).unwrap_err();
        assert_eq!(err.code(), "validation_failed", "{body}");
        assert_eq!(err.extensions().unwrap()["field"], field, "{body}");
    }
}
