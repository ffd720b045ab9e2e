//! The engine's one set-based write: a batch's transfers, entries, failures, expiry bookkeeping
//! and new account totals, column by column, in one prepared statement.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{
    Array, BigInt, Bool, Int4, Int8, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

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
