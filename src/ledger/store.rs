//! Statements on the ledger's own tables (`ledger_*`). The posting engine's reads and its one
//! set-based write live here; so do the history, verification and trial-balance queries.
//!
//! Reads that take `&AsyncPgConnection` can be pipelined: polled together, they go to the
//! server back to back and run in that order, so a batch's lock and its reads cost one round
//! trip.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{
    Array, BigInt, Bool, Int4, Int8, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::platform::db::schema::{ledger_accounts, ledger_entries, ledger_transfers};

#[derive(Debug, Clone, Queryable, Selectable, Insertable, QueryableByName)]
#[diesel(table_name = ledger_accounts, check_for_backend(diesel::pg::Pg))]
pub struct AccountRow {
    pub id: Uuid,
    pub partner_id: Option<Uuid>,
    pub currency: String,
    pub code: i32,
    pub flags: i32,
    pub metadata: Option<serde_json::Value>,
    pub debits_pending: i64,
    pub debits_posted: i64,
    pub credits_pending: i64,
    pub credits_posted: i64,
    pub entry_seq: i64,
    pub created_at: DateTime<Utc>,
    /// Made by its partner through the ledger API: the partner's own books, the only
    /// accounts its raw transfers may move money on.
    pub partner_books: bool,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, QueryableByName)]
#[diesel(table_name = ledger_transfers, check_for_backend(diesel::pg::Pg))]
pub struct TransferRow {
    pub id: Uuid,
    pub partner_id: Option<Uuid>,
    pub debit_account_id: Uuid,
    pub credit_account_id: Uuid,
    pub amount: i64,
    pub currency: String,
    pub code: i32,
    pub flags: i32,
    pub pending_id: Option<Uuid>,
    pub timeout_secs: Option<i32>,
    pub expires_at: Option<DateTime<Utc>>,
    pub metadata: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = ledger_entries, check_for_backend(diesel::pg::Pg))]
pub struct EntryRow {
    pub account_id: Uuid,
    pub seq: i64,
    pub transfer_id: Uuid,
    pub is_credit: bool,
    pub pending_delta: i64,
    pub posted_delta: i64,
    pub debits_pending: i64,
    pub debits_posted: i64,
    pub credits_pending: i64,
    pub credits_posted: i64,
    pub created_at: DateTime<Utc>,
}

/// Everything one batch writes, column by column (the shape `unnest` wants).
#[derive(Debug, Default)]
pub struct WriteSet {
    pub transfers: TransferColumns,
    pub entries: EntryColumns,
    pub failed_ids: Vec<Uuid>,
    pub failed_partners: Vec<Option<Uuid>>,
    pub failed_results: Vec<String>,
    pub expiry_done: Vec<Uuid>,
    pub expiry_new_ids: Vec<Uuid>,
    pub expiry_new_at: Vec<DateTime<Utc>>,
    pub accounts: AccountColumns,
}

#[derive(Debug, Default)]
pub struct TransferColumns {
    pub id: Vec<Uuid>,
    pub partner_id: Vec<Option<Uuid>>,
    pub debit_account_id: Vec<Uuid>,
    pub credit_account_id: Vec<Uuid>,
    pub amount: Vec<i64>,
    pub currency: Vec<String>,
    pub code: Vec<i32>,
    pub flags: Vec<i32>,
    pub pending_id: Vec<Option<Uuid>>,
    pub timeout_secs: Vec<Option<i32>>,
    pub expires_at: Vec<Option<DateTime<Utc>>>,
    pub metadata: Vec<Option<serde_json::Value>>,
}

#[derive(Debug, Default)]
pub struct EntryColumns {
    pub account_id: Vec<Uuid>,
    pub seq: Vec<i64>,
    pub transfer_id: Vec<Uuid>,
    pub is_credit: Vec<bool>,
    pub pending_delta: Vec<i64>,
    pub posted_delta: Vec<i64>,
    pub debits_pending: Vec<i64>,
    pub debits_posted: Vec<i64>,
    pub credits_pending: Vec<i64>,
    pub credits_posted: Vec<i64>,
}

#[derive(Debug, Default)]
pub struct AccountColumns {
    pub id: Vec<Uuid>,
    pub debits_pending: Vec<i64>,
    pub debits_posted: Vec<i64>,
    pub credits_pending: Vec<i64>,
    pub credits_posted: Vec<i64>,
    pub entry_seq: Vec<i64>,
    /// The version read before the batch: the update applies only if it still holds.
    pub old_entry_seq: Vec<i64>,
    pub old_flags: Vec<i32>,
}

impl WriteSet {
    pub fn is_empty(&self) -> bool {
        self.transfers.id.is_empty() && self.failed_ids.is_empty()
    }
}

/// The columns of an account, in `AccountRow` order.
type AccountColumnsSql = (
    SqlUuid,
    Nullable<SqlUuid>,
    Text,
    Int4,
    Int4,
    Nullable<Jsonb>,
    Int8,
    Int8,
    Int8,
    Int8,
    Int8,
    Timestamptz,
    Bool,
);

/// The columns of a transfer, in `TransferRow` order.
type TransferColumnsSql = (
    SqlUuid,
    Nullable<SqlUuid>,
    SqlUuid,
    SqlUuid,
    Int8,
    Text,
    Int4,
    Int4,
    Nullable<SqlUuid>,
    Nullable<Int4>,
    Nullable<Timestamptz>,
    Nullable<Jsonb>,
    Timestamptz,
);

crate::prepared_statement! {
    /// Reads accounts, without locking them (see [`write_batch`] for why that is safe).
    ReadAccounts -> AccountColumnsSql { ids: Vec<Uuid> => Array<SqlUuid> }
    "SELECT id, partner_id, currency, code, flags, metadata, debits_pending, debits_posted, \
            credits_pending, credits_posted, entry_seq, created_at, partner_books \
     FROM ledger_accounts WHERE id = ANY(??)"
}

crate::prepared_statement! {
    /// Stored transfers among the ids.
    LoadTransfers -> TransferColumnsSql { ids: Vec<Uuid> => Array<SqlUuid> }
    "SELECT id, partner_id, debit_account_id, credit_account_id, amount, currency, code, flags, \
            pending_id, timeout_secs, expires_at, metadata, created_at \
     FROM ledger_transfers WHERE id = ANY(??) AND result IS NULL"
}

crate::prepared_statement! {
    /// Resolutions (posts, voids) of pending transfers.
    LoadResolutions -> (SqlUuid, Int4) { ids: Vec<Uuid> => Array<SqlUuid> }
    "SELECT pending_id, flags FROM ledger_transfers WHERE pending_id = ANY(??)"
}

crate::prepared_statement! {
    /// The transaction's id and the server's start (to learn its fate should the connection
    /// break at commit), and its start time (the batch's clock); and the batch's planner
    /// settings, for the rest of its transaction (see the engine: one statement, not three).
    TxInfoQuery -> (BigInt, Timestamptz, Timestamptz) {}
    "SELECT txid_current(), now(), pg_postmaster_start_time() \
     WHERE set_config('enable_seqscan', 'off', true) IS NOT NULL \
       AND set_config('plan_cache_mode', 'force_generic_plan', true) IS NOT NULL \
       AND set_config('jit', 'off', true) IS NOT NULL"
}

crate::prepared_statement! {
    /// Remembered failures among the ids.
    LoadFailed -> (SqlUuid, Text) { ids: Vec<Uuid> => Array<SqlUuid> }
    "SELECT id, result FROM ledger_transfers WHERE id = ANY(??) AND result IS NOT NULL"
}

pub async fn insert_accounts(
    conn: &mut AsyncPgConnection,
    rows: &[AccountRow],
) -> QueryResult<usize> {
    diesel::insert_into(ledger_accounts::table)
        .values(rows)
        .execute(conn)
        .await
}

/// Reads the accounts a batch touches. No row lock here: the write takes the locks as late as
/// possible (see [`write_batch`]).
pub async fn read_accounts(
    conn: &AsyncPgConnection,
    ids: Vec<Uuid>,
) -> QueryResult<Vec<AccountRow>> {
    let mut conn = conn;
    ReadAccounts { ids }.load(&mut conn).await
}

/// Stored transfers among `ids`.
pub async fn load_transfers(
    conn: &AsyncPgConnection,
    ids: Vec<Uuid>,
) -> QueryResult<Vec<TransferRow>> {
    let mut conn = conn;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    LoadTransfers { ids }.load(&mut conn).await
}

#[derive(Queryable)]
pub struct ResolutionRow {
    pub pending_id: Uuid,
    pub flags: i32,
}

/// How each of `pending_ids` was resolved (posted, voided), if it was.
pub async fn load_resolutions(
    conn: &AsyncPgConnection,
    pending_ids: Vec<Uuid>,
) -> QueryResult<Vec<ResolutionRow>> {
    let mut conn = conn;
    if pending_ids.is_empty() {
        return Ok(Vec::new());
    }
    LoadResolutions { ids: pending_ids }.load(&mut conn).await
}

#[derive(Queryable)]
pub struct FailedRow {
    pub id: Uuid,
    pub result: String,
}

/// A batch's transaction, as [`tx_info`] reads it with BEGIN.
#[derive(Debug, Clone, Copy)]
pub struct TxInfo {
    pub txid: i64,
    /// The transaction's start: the batch's clock.
    pub now: DateTime<Utc>,
    /// When the server started: a restart since means the transaction died with it.
    pub server_started: DateTime<Utc>,
}

/// The current transaction's id, start time and server (see [`TxInfoQuery`]).
pub async fn tx_info(conn: &AsyncPgConnection) -> QueryResult<TxInfo> {
    let mut conn = conn;
    let (txid, now, server_started) = TxInfoQuery {}.get_result(&mut conn).await?;
    Ok(TxInfo {
        txid,
        now,
        server_started,
    })
}

/// What the database says of a batch whose connection broke: see [`tx_fate`].
#[derive(QueryableByName)]
pub struct TxFate {
    /// When the server answering started.
    #[diesel(sql_type = Timestamptz)]
    pub server_started: DateTime<Utc>,
    /// `committed`, `aborted` or `in progress`; `None` when too old to tell. Meaningful only
    /// on the server the transaction ran on (ids are reused after a crash).
    #[diesel(sql_type = Nullable<Text>)]
    pub status: Option<String>,
    /// How many of the batch's registered ids exist.
    #[diesel(sql_type = BigInt)]
    pub present: i64,
}

/// The server's start, transaction `txid`'s status and how many of `ids` are registered.
pub async fn tx_fate(
    conn: &mut AsyncPgConnection,
    txid: i64,
    ids: Vec<Uuid>,
) -> QueryResult<TxFate> {
    diesel::sql_query(
        "SELECT pg_postmaster_start_time() AS server_started, txid_status($1) AS status, \
                (SELECT count(*) FROM ledger_transfers WHERE id = ANY($2)) AS present",
    )
    .bind::<BigInt, _>(txid)
    .bind::<Array<SqlUuid>, _>(ids)
    .get_result(conn)
    .await
}

/// Remembered failures among `ids`.
pub async fn load_failed(conn: &AsyncPgConnection, ids: Vec<Uuid>) -> QueryResult<Vec<FailedRow>> {
    let mut conn = conn;
    LoadFailed { ids }.load(&mut conn).await
}

crate::prepared_statement! {
    /// The batch's single write (see [`write_batch`]).
    WriteBatch -> BigInt {
        t_now: DateTime<Utc> => Timestamptz,
        t_id: Vec<Uuid> => Array<SqlUuid>,
        t_partner_id: Vec<Option<Uuid>> => Array<Nullable<SqlUuid>>,
        t_debit: Vec<Uuid> => Array<SqlUuid>,
        t_credit: Vec<Uuid> => Array<SqlUuid>,
        t_amount: Vec<i64> => Array<Int8>,
        t_currency: Vec<String> => Array<Text>,
        t_code: Vec<i32> => Array<Int4>,
        t_flags: Vec<i32> => Array<Int4>,
        t_pending_id: Vec<Option<Uuid>> => Array<Nullable<SqlUuid>>,
        t_timeout: Vec<Option<i32>> => Array<Nullable<Int4>>,
        t_expires_at: Vec<Option<DateTime<Utc>>> => Array<Nullable<Timestamptz>>,
        t_metadata: Vec<Option<serde_json::Value>> => Array<Nullable<Jsonb>>,
        e_now: DateTime<Utc> => Timestamptz,
        e_account: Vec<Uuid> => Array<SqlUuid>,
        e_seq: Vec<i64> => Array<Int8>,
        e_transfer: Vec<Uuid> => Array<SqlUuid>,
        e_is_credit: Vec<bool> => Array<Bool>,
        e_pending_delta: Vec<i64> => Array<Int8>,
        e_posted_delta: Vec<i64> => Array<Int8>,
        e_dp: Vec<i64> => Array<Int8>,
        e_dpo: Vec<i64> => Array<Int8>,
        e_cp: Vec<i64> => Array<Int8>,
        e_cpo: Vec<i64> => Array<Int8>,
        f_now: DateTime<Utc> => Timestamptz,
        f_id: Vec<Uuid> => Array<SqlUuid>,
        f_partner: Vec<Option<Uuid>> => Array<Nullable<SqlUuid>>,
        f_result: Vec<String> => Array<Text>,
        x_done: Vec<Uuid> => Array<SqlUuid>,
        x_new_id: Vec<Uuid> => Array<SqlUuid>,
        x_new_at: Vec<DateTime<Utc>> => Array<Timestamptz>,
        a_id: Vec<Uuid> => Array<SqlUuid>,
        a_dp: Vec<i64> => Array<Int8>,
        a_dpo: Vec<i64> => Array<Int8>,
        a_cp: Vec<i64> => Array<Int8>,
        a_cpo: Vec<i64> => Array<Int8>,
        a_seq: Vec<i64> => Array<Int8>,
        a_old_seq: Vec<i64> => Array<Int8>,
        a_old_flags: Vec<i32> => Array<Int4>,
        expected: i64 => Int8,
        expected_failed: i64 => Int8,
    }
    "WITH \
     t AS (INSERT INTO ledger_transfers (id, partner_id, debit_account_id, credit_account_id, amount, \
             currency, code, flags, pending_id, timeout_secs, expires_at, metadata, created_at) \
           SELECT u.*, ??::timestamptz FROM unnest(??::uuid[], ??::uuid[], ??::uuid[], ??::uuid[], \
             ??::int8[], ??::text[], ??::int4[], ??::int4[], ??::uuid[], ??::int4[], ??::timestamptz[], \
             ??::jsonb[]) AS u), \
     e AS (INSERT INTO ledger_entries (account_id, seq, transfer_id, is_credit, pending_delta, \
             posted_delta, debits_pending, debits_posted, credits_pending, credits_posted, created_at) \
           SELECT u.*, ??::timestamptz FROM unnest(??::uuid[], ??::int8[], ??::uuid[], ??::bool[], \
             ??::int8[], ??::int8[], ??::int8[], ??::int8[], ??::int8[], ??::int8[]) AS u), \
     f AS (INSERT INTO ledger_transfers (id, partner_id, result, created_at) \
           SELECT u.*, ??::timestamptz FROM unnest(??::uuid[], ??::uuid[], ??::text[]) AS u \
           ON CONFLICT (id) DO NOTHING RETURNING 1), \
     xd AS (DELETE FROM ledger_pending_expiry WHERE transfer_id = ANY(??::uuid[])), \
     xi AS (INSERT INTO ledger_pending_expiry (transfer_id, expires_at) \
            SELECT * FROM unnest(??::uuid[], ??::timestamptz[])), \
     a AS (UPDATE ledger_accounts acc SET debits_pending = v.dp, debits_posted = v.dpo, \
             credits_pending = v.cp, credits_posted = v.cpo, entry_seq = v.seq \
           FROM unnest(??::uuid[], ??::int8[], ??::int8[], ??::int8[], ??::int8[], ??::int8[], \
             ??::int8[], ??::int4[]) AS v(id, dp, dpo, cp, cpo, seq, old_seq, old_flags) \
           WHERE acc.id = v.id AND acc.entry_seq = v.old_seq AND acc.flags = v.old_flags \
           RETURNING 1) \
     SELECT ledger_assert_unchanged(count(*), ??::int8) \
          + ledger_assert_recorded((SELECT count(*) FROM f), ??::int8) FROM a"
}

crate::prepared_statement! {
    /// The common case of [`WriteBatch`]: no failures to remember and no pending transfers to
    /// track, so the statement has three parts instead of six (cheaper for small batches).
    WriteMovements -> BigInt {
        t_now: DateTime<Utc> => Timestamptz,
        t_id: Vec<Uuid> => Array<SqlUuid>,
        t_partner_id: Vec<Option<Uuid>> => Array<Nullable<SqlUuid>>,
        t_debit: Vec<Uuid> => Array<SqlUuid>,
        t_credit: Vec<Uuid> => Array<SqlUuid>,
        t_amount: Vec<i64> => Array<Int8>,
        t_currency: Vec<String> => Array<Text>,
        t_code: Vec<i32> => Array<Int4>,
        t_flags: Vec<i32> => Array<Int4>,
        t_pending_id: Vec<Option<Uuid>> => Array<Nullable<SqlUuid>>,
        t_timeout: Vec<Option<i32>> => Array<Nullable<Int4>>,
        t_expires_at: Vec<Option<DateTime<Utc>>> => Array<Nullable<Timestamptz>>,
        t_metadata: Vec<Option<serde_json::Value>> => Array<Nullable<Jsonb>>,
        e_now: DateTime<Utc> => Timestamptz,
        e_account: Vec<Uuid> => Array<SqlUuid>,
        e_seq: Vec<i64> => Array<Int8>,
        e_transfer: Vec<Uuid> => Array<SqlUuid>,
        e_is_credit: Vec<bool> => Array<Bool>,
        e_pending_delta: Vec<i64> => Array<Int8>,
        e_posted_delta: Vec<i64> => Array<Int8>,
        e_dp: Vec<i64> => Array<Int8>,
        e_dpo: Vec<i64> => Array<Int8>,
        e_cp: Vec<i64> => Array<Int8>,
        e_cpo: Vec<i64> => Array<Int8>,
        a_id: Vec<Uuid> => Array<SqlUuid>,
        a_dp: Vec<i64> => Array<Int8>,
        a_dpo: Vec<i64> => Array<Int8>,
        a_cp: Vec<i64> => Array<Int8>,
        a_cpo: Vec<i64> => Array<Int8>,
        a_seq: Vec<i64> => Array<Int8>,
        a_old_seq: Vec<i64> => Array<Int8>,
        a_old_flags: Vec<i32> => Array<Int4>,
        expected: i64 => Int8,
    }
    "WITH \
     t AS (INSERT INTO ledger_transfers (id, partner_id, debit_account_id, credit_account_id, amount, \
             currency, code, flags, pending_id, timeout_secs, expires_at, metadata, created_at) \
           SELECT u.*, ??::timestamptz FROM unnest(??::uuid[], ??::uuid[], ??::uuid[], ??::uuid[], \
             ??::int8[], ??::text[], ??::int4[], ??::int4[], ??::uuid[], ??::int4[], ??::timestamptz[], \
             ??::jsonb[]) AS u), \
     e AS (INSERT INTO ledger_entries (account_id, seq, transfer_id, is_credit, pending_delta, \
             posted_delta, debits_pending, debits_posted, credits_pending, credits_posted, created_at) \
           SELECT u.*, ??::timestamptz FROM unnest(??::uuid[], ??::int8[], ??::uuid[], ??::bool[], \
             ??::int8[], ??::int8[], ??::int8[], ??::int8[], ??::int8[], ??::int8[]) AS u), \
     a AS (UPDATE ledger_accounts acc SET debits_pending = v.dp, debits_posted = v.dpo, \
             credits_pending = v.cp, credits_posted = v.cpo, entry_seq = v.seq \
           FROM unnest(??::uuid[], ??::int8[], ??::int8[], ??::int8[], ??::int8[], ??::int8[], \
             ??::int8[], ??::int4[]) AS v(id, dp, dpo, cp, cpo, seq, old_seq, old_flags) \
           WHERE acc.id = v.id AND acc.entry_seq = v.old_seq AND acc.flags = v.old_flags \
           RETURNING 1) \
     SELECT ledger_assert_unchanged(count(*), ??::int8) FROM a"
}

/// The batch's single write: transfers, entries, failures (rows of `ledger_transfers` too,
/// so a failure and a success of one id conflict on its primary key, whichever replica writes
/// them; a failure that finds its id taken fails the batch, which runs again), expiry
/// bookkeeping and the new account totals, in one prepared statement (one round trip,
/// planned once per connection).
/// Returns the number of accounts updated.
///
/// Accounts are locked here, by this UPDATE, as late as possible: a hot account's row is held
/// only from this statement to the commit, not for the whole batch. The engine decided every
/// transfer on the totals it read without a lock; each account is updated only if it is
/// still at the version (entry count and flags) that was read. If another replica changed it
/// in between, fewer rows are updated than `expected`: `ledger_assert_unchanged` then fails the
/// statement with a serialization failure (40001), the transaction rolls back, and the batch
/// runs again on fresh state. The accounts arrive sorted by id, so concurrent batches lock in the
/// same order; the CHECK constraints on the table remain the last guard.
pub async fn write_batch(
    conn: &mut &AsyncPgConnection,
    w: WriteSet,
    expected: i64,
    now: DateTime<Utc>,
) -> QueryResult<i64> {
    let expected_failed = i64::try_from(w.failed_ids.len()).unwrap_or(i64::MAX);
    let t = w.transfers;
    let e = w.entries;
    let a = w.accounts;
    if w.failed_ids.is_empty() && w.expiry_done.is_empty() && w.expiry_new_ids.is_empty() {
        return WriteMovements {
            t_now: now,
            t_id: t.id,
            t_partner_id: t.partner_id,
            t_debit: t.debit_account_id,
            t_credit: t.credit_account_id,
            t_amount: t.amount,
            t_currency: t.currency,
            t_code: t.code,
            t_flags: t.flags,
            t_pending_id: t.pending_id,
            t_timeout: t.timeout_secs,
            t_expires_at: t.expires_at,
            t_metadata: t.metadata,
            e_now: now,
            e_account: e.account_id,
            e_seq: e.seq,
            e_transfer: e.transfer_id,
            e_is_credit: e.is_credit,
            e_pending_delta: e.pending_delta,
            e_posted_delta: e.posted_delta,
            e_dp: e.debits_pending,
            e_dpo: e.debits_posted,
            e_cp: e.credits_pending,
            e_cpo: e.credits_posted,
            a_id: a.id,
            a_dp: a.debits_pending,
            a_dpo: a.debits_posted,
            a_cp: a.credits_pending,
            a_cpo: a.credits_posted,
            a_seq: a.entry_seq,
            a_old_seq: a.old_entry_seq,
            a_old_flags: a.old_flags,
            expected,
        }
        .get_result(conn)
        .await;
    }
    WriteBatch {
        t_id: t.id,
        t_partner_id: t.partner_id,
        t_debit: t.debit_account_id,
        t_credit: t.credit_account_id,
        t_amount: t.amount,
        t_currency: t.currency,
        t_code: t.code,
        t_flags: t.flags,
        t_pending_id: t.pending_id,
        t_timeout: t.timeout_secs,
        t_expires_at: t.expires_at,
        t_metadata: t.metadata,
        t_now: now,
        e_account: e.account_id,
        e_seq: e.seq,
        e_transfer: e.transfer_id,
        e_is_credit: e.is_credit,
        e_pending_delta: e.pending_delta,
        e_posted_delta: e.posted_delta,
        e_dp: e.debits_pending,
        e_dpo: e.debits_posted,
        e_cp: e.credits_pending,
        e_cpo: e.credits_posted,
        e_now: now,
        f_id: w.failed_ids,
        f_partner: w.failed_partners,
        f_result: w.failed_results,
        f_now: now,
        x_done: w.expiry_done,
        x_new_id: w.expiry_new_ids,
        x_new_at: w.expiry_new_at,
        a_id: a.id,
        a_dp: a.debits_pending,
        a_dpo: a.debits_posted,
        a_cp: a.credits_pending,
        a_cpo: a.credits_posted,
        a_seq: a.entry_seq,
        a_old_seq: a.old_entry_seq,
        a_old_flags: a.old_flags,
        expected,
        expected_failed,
    }
    .get_result(conn)
    .await
}

pub async fn find_account(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> QueryResult<Option<AccountRow>> {
    ledger_accounts::table
        .find(id)
        .select(AccountRow::as_select())
        .first(conn)
        .await
        .optional()
}

crate::prepared_statement! {
    /// Transaction-scoped advisory locks, in the order given (its SQL type is never read): a
    /// key exclusive, or a bucket (in the plan's class) shared or exclusive; see the engine's
    /// `LockPlan`.
    AdvisoryLocks -> BigInt {
        class: i32 => Int4,
        keys: Vec<i64> => Array<BigInt>,
        exact: Vec<bool> => Array<Bool>,
        shared: Vec<bool> => Array<Bool>,
    }
    "SELECT CASE WHEN u.exact THEN pg_advisory_xact_lock(u.k) \
                 WHEN u.shared THEN pg_advisory_xact_lock_shared(c.class, u.k::int4) \
                 ELSE pg_advisory_xact_lock(c.class, u.k::int4) END \
     FROM (SELECT ??::int4 AS class) AS c, \
          unnest(??::bigint[], ??::bool[], ??::bool[]) AS u(k, exact, shared)"
}

crate::prepared_statement! {
    /// Locks accounts in id order.
    LockAccounts -> SqlUuid { ids: Vec<Uuid> => Array<SqlUuid> }
    "SELECT id FROM ledger_accounts WHERE id = ANY(??) ORDER BY id FOR UPDATE"
}

/// Takes transaction-scoped advisory locks, in the order given (the engine's lock plan).
pub async fn advisory_locks(
    conn: &mut &AsyncPgConnection,
    plan: super::engine::LockPlan,
) -> QueryResult<usize> {
    AdvisoryLocks {
        class: plan.class,
        keys: plan.keys,
        exact: plan.exact,
        shared: plan.shared,
    }
    .execute(conn)
    .await
}

/// Locks the accounts in id order (a batch retried after a conflict).
pub async fn lock_accounts(conn: &mut AsyncPgConnection, mut ids: Vec<Uuid>) -> QueryResult<usize> {
    ids.sort_unstable();
    LockAccounts { ids }.execute(conn).await
}

/// The account, locked until the transaction ends (flag changes).
pub async fn lock_account(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> QueryResult<Option<AccountRow>> {
    ledger_accounts::table
        .find(id)
        .select(AccountRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()
}

/// Replaces an account's flags. The engine writes only accounts whose flags are still what it
/// read, so a batch racing this change runs again on the new flags.
pub async fn set_account_flags(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    flags: i32,
) -> QueryResult<usize> {
    diesel::update(ledger_accounts::table.find(id))
        .set(ledger_accounts::flags.eq(flags))
        .execute(conn)
        .await
}

/// An account's entries, newest first, before `before_seq`, at most `limit`.
pub async fn list_entries(
    conn: &mut AsyncPgConnection,
    account: Uuid,
    before_seq: Option<i64>,
    limit: i64,
) -> QueryResult<Vec<EntryRow>> {
    let mut query = ledger_entries::table
        .filter(ledger_entries::account_id.eq(account))
        .select(EntryRow::as_select())
        .order(ledger_entries::seq.desc())
        .limit(limit)
        .into_boxed();
    if let Some(before) = before_seq {
        query = query.filter(ledger_entries::seq.lt(before));
    }
    query.load(conn).await
}

/// The account's last entry at or before `at` (its totals are the balance then).
pub async fn entry_at(
    conn: &mut AsyncPgConnection,
    account: Uuid,
    at: DateTime<Utc>,
) -> QueryResult<Option<EntryRow>> {
    ledger_entries::table
        .filter(ledger_entries::account_id.eq(account))
        .filter(ledger_entries::created_at.le(at))
        .select(EntryRow::as_select())
        .order(ledger_entries::seq.desc())
        .first(conn)
        .await
        .optional()
}

/// Leases up to `limit` pending transfers whose timeout has passed, for `lease_secs`, skipping
/// rows another replica holds; returns their ids.
pub async fn claim_expired(
    conn: &mut AsyncPgConnection,
    limit: i64,
    lease_secs: i32,
) -> QueryResult<Vec<Uuid>> {
    #[derive(QueryableByName)]
    struct Claimed {
        #[diesel(sql_type = SqlUuid)]
        transfer_id: Uuid,
    }
    let rows: Vec<Claimed> = diesel::sql_query(
        "UPDATE ledger_pending_expiry SET claimed_until = now() + make_interval(secs => $2) \
         WHERE transfer_id IN ( \
           SELECT transfer_id FROM ledger_pending_expiry \
           WHERE expires_at <= now() AND (claimed_until IS NULL OR claimed_until < now()) \
           ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
         RETURNING transfer_id",
    )
    .bind::<BigInt, _>(limit)
    .bind::<Int4, _>(lease_secs)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.transfer_id).collect())
}

/// Drops expiry rows of pending transfers that were resolved some other way.
pub async fn delete_expiry_rows(
    conn: &mut AsyncPgConnection,
    ids: Vec<Uuid>,
) -> QueryResult<usize> {
    use crate::platform::db::schema::ledger_pending_expiry;
    diesel::delete(
        ledger_pending_expiry::table.filter(ledger_pending_expiry::transfer_id.eq_any(ids)),
    )
    .execute(conn)
    .await
}

/// One broken invariant found by [`verify`].
#[derive(Debug, Clone, QueryableByName, serde::Serialize)]
pub struct Violation {
    #[diesel(sql_type = Text)]
    pub check: String,
    #[diesel(sql_type = Text)]
    pub subject: String,
    #[diesel(sql_type = Text)]
    pub detail: String,
}

/// One check of [`verify`]: its name (the `check` of its violations), what it guards, and
/// the query that lists its violations (at most 100).
pub struct Check {
    pub name: &'static str,
    pub about: &'static str,
    sql: &'static str,
}

/// Every invariant of the books, recomputed from entries and transfers (the cached totals are
/// checked against them). Sums and sums of totals are computed in `numeric`: a check can
/// never fail on the books it checks (a 64-bit overflow), only report them.
pub const CHECKS: &[Check] = &[
    Check {
        name: "debits_equal_credits",
        about: "per currency, the entries' debits equal their credits (posted and pending)",
        sql: "SELECT 'debits_equal_credits' AS check, d.currency AS subject, \
                format('entries: debits posted %s, credits posted %s, debits pending %s, credits pending %s', \
                  d.dpo, d.cpo, d.dp, d.cp) AS detail \
         FROM (SELECT a.currency, \
                 coalesce(sum(e.posted_delta::numeric) FILTER (WHERE NOT e.is_credit), 0) AS dpo, \
                 coalesce(sum(e.posted_delta::numeric) FILTER (WHERE e.is_credit), 0) AS cpo, \
                 coalesce(sum(e.pending_delta::numeric) FILTER (WHERE NOT e.is_credit), 0) AS dp, \
                 coalesce(sum(e.pending_delta::numeric) FILTER (WHERE e.is_credit), 0) AS cp \
               FROM ledger_entries e JOIN ledger_accounts a ON a.id = e.account_id GROUP BY a.currency) d \
         WHERE d.dpo <> d.cpo OR d.dp <> d.cp LIMIT 100",
    },
    Check {
        name: "totals_balance",
        about: "per currency, the accounts' cached debits equal their cached credits",
        sql: "SELECT 'totals_balance' AS check, currency AS subject, \
                format('debits posted %s, credits posted %s, debits pending %s, credits pending %s', \
                  dpo, cpo, dp, cp) AS detail \
         FROM (SELECT currency, sum(debits_posted::numeric) AS dpo, sum(credits_posted::numeric) AS cpo, \
                 sum(debits_pending::numeric) AS dp, sum(credits_pending::numeric) AS cp \
               FROM ledger_accounts GROUP BY currency) t \
         WHERE dpo <> cpo OR dp <> cp LIMIT 100",
    },
    Check {
        name: "account_equals_entries",
        about: "every account's four totals and entry count equal the sums of its entries",
        sql: "SELECT 'account_equals_entries' AS check, a.id::text AS subject, \
                format('cached %s/%s/%s/%s, entries %s/%s/%s/%s', a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted, \
                  coalesce(s.dp, 0), coalesce(s.dpo, 0), coalesce(s.cp, 0), coalesce(s.cpo, 0)) AS detail \
         FROM ledger_accounts a LEFT JOIN ( \
           SELECT account_id, \
             sum(pending_delta::numeric) FILTER (WHERE NOT is_credit) AS dp, sum(posted_delta::numeric) FILTER (WHERE NOT is_credit) AS dpo, \
             sum(pending_delta::numeric) FILTER (WHERE is_credit) AS cp, sum(posted_delta::numeric) FILTER (WHERE is_credit) AS cpo, \
             count(*) AS n FROM ledger_entries GROUP BY account_id) s ON s.account_id = a.id \
         WHERE a.debits_pending <> coalesce(s.dp, 0) OR a.debits_posted <> coalesce(s.dpo, 0) \
            OR a.credits_pending <> coalesce(s.cp, 0) OR a.credits_posted <> coalesce(s.cpo, 0) \
            OR a.entry_seq <> coalesce(s.n, 0) LIMIT 100",
    },
    Check {
        name: "entry_chain",
        about: "each entry's totals-after follow from the account's previous entry and its own amounts",
        sql: "SELECT 'entry_chain' AS check, account_id::text || '#' || seq AS subject, 'totals after do not follow from the previous entry' AS detail \
         FROM (SELECT *, \
             lag(debits_pending::numeric, 1, 0) OVER w AS p_dp, lag(debits_posted::numeric, 1, 0) OVER w AS p_dpo, \
             lag(credits_pending::numeric, 1, 0) OVER w AS p_cp, lag(credits_posted::numeric, 1, 0) OVER w AS p_cpo, \
             lag(seq, 1, 0::bigint) OVER w AS p_seq \
           FROM ledger_entries WINDOW w AS (PARTITION BY account_id ORDER BY seq)) x \
         WHERE seq <> p_seq + 1 \
            OR (NOT is_credit AND (debits_pending <> p_dp + pending_delta OR debits_posted <> p_dpo + posted_delta \
                                   OR credits_pending <> p_cp OR credits_posted <> p_cpo)) \
            OR (is_credit AND (credits_pending <> p_cp + pending_delta OR credits_posted <> p_cpo + posted_delta \
                               OR debits_pending <> p_dp OR debits_posted <> p_dpo)) LIMIT 100",
    },
    Check {
        name: "never_negative",
        about: "no account with debits_must_not_exceed_credits ever owed more than it held, at any entry",
        sql: "SELECT 'never_negative' AS check, e.account_id::text || '#' || e.seq AS subject, \
                format('debits %s + %s pending over credits %s', e.debits_posted, e.debits_pending, e.credits_posted) AS detail \
         FROM ledger_entries e JOIN ledger_accounts a ON a.id = e.account_id \
         WHERE a.flags & 1 <> 0 AND e.debits_posted::numeric + e.debits_pending > e.credits_posted LIMIT 100",
    },
    Check {
        name: "credits_within_debits",
        about: "no account with credits_must_not_exceed_debits ever went beyond its debits, at any entry",
        sql: "SELECT 'credits_within_debits' AS check, e.account_id::text || '#' || e.seq AS subject, \
                format('credits %s + %s pending over debits %s', e.credits_posted, e.credits_pending, e.debits_posted) AS detail \
         FROM ledger_entries e JOIN ledger_accounts a ON a.id = e.account_id \
         WHERE a.flags & 2 <> 0 AND e.credits_posted::numeric + e.credits_pending > e.debits_posted LIMIT 100",
    },
    Check {
        name: "transfer_entries",
        about: "every transfer has exactly one debit entry on its debit account and one credit entry on its \
                credit account, both moving its amount (a post or void releasing its pending transfer's)",
        sql: "SELECT 'transfer_entries' AS check, t.id::text AS subject, \
                format('%s debit and %s credit entries; debit moved %s posted / %s pending, credit %s / %s; \
                        transfer amount %s', \
                  count(e.*) FILTER (WHERE NOT e.is_credit), count(e.*) FILTER (WHERE e.is_credit), \
                  max(e.posted_delta) FILTER (WHERE NOT e.is_credit), max(e.pending_delta) FILTER (WHERE NOT e.is_credit), \
                  max(e.posted_delta) FILTER (WHERE e.is_credit), max(e.pending_delta) FILTER (WHERE e.is_credit), \
                  t.amount) AS detail \
         FROM ledger_transfers t \
         LEFT JOIN ledger_transfers p ON p.id = t.pending_id \
         LEFT JOIN ledger_entries e ON e.transfer_id = t.id \
         WHERE t.result IS NULL \
         GROUP BY t.id, t.debit_account_id, t.credit_account_id, t.amount, t.flags, p.amount \
         HAVING count(*) FILTER (WHERE NOT e.is_credit AND e.account_id = t.debit_account_id) <> 1 \
             OR count(*) FILTER (WHERE e.is_credit AND e.account_id = t.credit_account_id) <> 1 \
             OR count(e.*) <> 2 \
             OR bool_or(e.posted_delta <> CASE WHEN t.flags & 2 <> 0 OR t.flags & 8 <> 0 THEN 0 ELSE t.amount END) \
             OR bool_or(e.pending_delta <> CASE WHEN t.flags & 2 <> 0 THEN t.amount \
                                                WHEN t.flags & 12 <> 0 THEN -coalesce(p.amount, 0) \
                                                ELSE 0 END) \
         LIMIT 100",
    },
    Check {
        name: "orphan_entry",
        about: "no entry without its transfer",
        sql: "SELECT 'orphan_entry' AS check, e.account_id::text || '#' || e.seq AS subject, 'entry without a transfer' AS detail \
         FROM ledger_entries e LEFT JOIN ledger_transfers t ON t.id = e.transfer_id WHERE t.id IS NULL LIMIT 100",
    },
    Check {
        name: "pending_resolved_once",
        about: "a pending transfer is posted or voided at most once",
        sql: "SELECT 'pending_resolved_once' AS check, pending_id::text AS subject, format('%s resolutions', count(*)) AS detail \
         FROM ledger_transfers WHERE pending_id IS NOT NULL GROUP BY pending_id HAVING count(*) > 1 LIMIT 100",
    },
    Check {
        name: "pending_totals",
        about: "every account's pending totals equal the amounts of its open (unresolved) pending transfers",
        sql: "SELECT 'pending_totals' AS check, a.id::text AS subject, \
                format('pending debits %s, credits %s; open pending transfers debit %s, credit %s', \
                  a.debits_pending, a.credits_pending, coalesce(d.open, 0), coalesce(c.open, 0)) AS detail \
         FROM ledger_accounts a \
         LEFT JOIN (SELECT t.debit_account_id AS id, sum(t.amount::numeric) AS open FROM ledger_transfers t \
                    WHERE t.flags & 2 <> 0 AND NOT EXISTS (SELECT 1 FROM ledger_transfers r WHERE r.pending_id = t.id) \
                    GROUP BY t.debit_account_id) d ON d.id = a.id \
         LEFT JOIN (SELECT t.credit_account_id AS id, sum(t.amount::numeric) AS open FROM ledger_transfers t \
                    WHERE t.flags & 2 <> 0 AND NOT EXISTS (SELECT 1 FROM ledger_transfers r WHERE r.pending_id = t.id) \
                    GROUP BY t.credit_account_id) c ON c.id = a.id \
         WHERE a.debits_pending <> coalesce(d.open, 0) OR a.credits_pending <> coalesce(c.open, 0) LIMIT 100",
    },
    Check {
        name: "within_limits",
        about: "no account with a limit flag is beyond it now",
        sql: "SELECT 'within_limits' AS check, id::text AS subject, \
                format('debits %s + %s pending, credits %s + %s pending', debits_posted, debits_pending, credits_posted, credits_pending) AS detail \
         FROM ledger_accounts \
         WHERE (flags & 1 <> 0 AND debits_posted::numeric + debits_pending > credits_posted) \
            OR (flags & 2 <> 0 AND credits_posted::numeric + credits_pending > debits_posted) LIMIT 100",
    },
    Check {
        name: "failed_moved_nothing",
        about: "a failed transfer moved nothing: no entry names it",
        sql: "SELECT 'failed_moved_nothing' AS check, t.id::text AS subject, \
                format('failed with %s, yet has entries', t.result) AS detail \
         FROM ledger_transfers t JOIN ledger_entries e ON e.transfer_id = t.id \
         WHERE t.result IS NOT NULL LIMIT 100",
    },
    Check {
        name: "failed_and_posted",
        about: "no transfer id is both failed and posted (failures recorded by the previous version too)",
        sql: "SELECT 'failed_and_posted' AS check, f.id::text AS subject, \
                format('failed with %s, yet posted', f.result) AS detail \
         FROM ledger_failed_transfers f JOIN ledger_transfers t ON t.id = f.id AND t.result IS NULL \
         LIMIT 100",
    },
];

/// Runs every check of [`CHECKS`]; the violations, at most 100 per check, in check order.
pub async fn verify(conn: &mut AsyncPgConnection) -> QueryResult<Vec<Violation>> {
    let mut violations = Vec::new();
    for check in CHECKS {
        let found: Vec<Violation> = diesel::sql_query(check.sql).load(conn).await?;
        violations.extend(found);
    }
    Ok(violations)
}

/// A page of transfers in id order after `after`, for checks of other modules against the
/// ledger (bounded memory: they page through).
pub async fn transfers_after(
    conn: &mut AsyncPgConnection,
    after: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<TransferRow>> {
    let mut query = ledger_transfers::table
        .filter(ledger_transfers::result.is_null())
        .select(TransferRow::as_select())
        .order(ledger_transfers::id)
        .limit(limit)
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(ledger_transfers::id.gt(after));
    }
    query.load(conn).await
}

/// Per currency and account code: the posted and pending totals (sums as decimal text,
/// since they can exceed 64 bits).
#[derive(Debug, Clone, QueryableByName)]
pub struct TrialBalanceRow {
    #[diesel(sql_type = Text)]
    pub currency: String,
    #[diesel(sql_type = Int4)]
    pub code: i32,
    #[diesel(sql_type = BigInt)]
    pub accounts: i64,
    #[diesel(sql_type = Text)]
    pub debits_posted: String,
    #[diesel(sql_type = Text)]
    pub credits_posted: String,
    #[diesel(sql_type = Text)]
    pub debits_pending: String,
    #[diesel(sql_type = Text)]
    pub credits_pending: String,
}

pub async fn trial_balance(
    conn: &mut AsyncPgConnection,
    currency: Option<String>,
) -> QueryResult<Vec<TrialBalanceRow>> {
    diesel::sql_query(
        "SELECT currency, code, count(*) AS accounts, \
                sum(debits_posted)::text AS debits_posted, sum(credits_posted)::text AS credits_posted, \
                sum(debits_pending)::text AS debits_pending, sum(credits_pending)::text AS credits_pending \
         FROM ledger_accounts WHERE $1::text IS NULL OR currency = $1 \
         GROUP BY currency, code ORDER BY currency, code",
    )
    .bind::<Nullable<Text>, _>(currency)
    .load(conn)
    .await
}
