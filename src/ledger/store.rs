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
}

impl WriteSet {
    pub fn is_empty(&self) -> bool {
        self.transfers.id.is_empty() && self.failed_ids.is_empty()
    }
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

/// Locks the accounts in id order (so concurrent batches never deadlock) and reads them.
pub async fn lock_accounts(
    conn: &AsyncPgConnection,
    ids: Vec<Uuid>,
) -> QueryResult<Vec<AccountRow>> {
    let mut conn = conn;
    diesel::sql_query(
        "SELECT id, partner_id, currency, code, flags, metadata, debits_pending, debits_posted, \
                credits_pending, credits_posted, entry_seq, created_at \
         FROM ledger_accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE",
    )
    .bind::<Array<SqlUuid>, _>(ids)
    .load(&mut conn)
    .await
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
    ledger_transfers::table
        .filter(ledger_transfers::id.eq_any(ids))
        .select(TransferRow::as_select())
        .load(&mut conn)
        .await
}

#[derive(QueryableByName)]
pub struct ResolutionRow {
    #[diesel(sql_type = SqlUuid)]
    pub pending_id: Uuid,
    #[diesel(sql_type = Int4)]
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
    diesel::sql_query("SELECT pending_id, flags FROM ledger_transfers WHERE pending_id = ANY($1)")
        .bind::<Array<SqlUuid>, _>(pending_ids)
        .load(&mut conn)
        .await
}

#[derive(QueryableByName)]
pub struct FailedRow {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = Text)]
    pub result: String,
}

/// Remembered failures among `ids`.
pub async fn load_failed(conn: &AsyncPgConnection, ids: Vec<Uuid>) -> QueryResult<Vec<FailedRow>> {
    let mut conn = conn;
    diesel::sql_query("SELECT id, result FROM ledger_failed_transfers WHERE id = ANY($1)")
        .bind::<Array<SqlUuid>, _>(ids)
        .load(&mut conn)
        .await
}

/// The batch's single write: transfers, entries, failures, expiry bookkeeping and the new
/// account totals, in one statement (one round trip, one plan). Returns the number of
/// accounts updated.
pub async fn write_batch(
    conn: &mut AsyncPgConnection,
    w: WriteSet,
    now: DateTime<Utc>,
) -> QueryResult<i64> {
    #[derive(QueryableByName)]
    struct Updated {
        #[diesel(sql_type = BigInt)]
        updated: i64,
    }
    let t = w.transfers;
    let e = w.entries;
    let a = w.accounts;
    diesel::sql_query(
        "WITH \
         t AS (INSERT INTO ledger_transfers (id, partner_id, debit_account_id, credit_account_id, amount, \
                 currency, code, flags, pending_id, timeout_secs, expires_at, metadata, created_at) \
               SELECT u.*, $13 FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::int8[], \
                 $6::text[], $7::int4[], $8::int4[], $9::uuid[], $10::int4[], $11::timestamptz[], \
                 $12::jsonb[]) AS u), \
         e AS (INSERT INTO ledger_entries (account_id, seq, transfer_id, is_credit, pending_delta, \
                 posted_delta, debits_pending, debits_posted, credits_pending, credits_posted, created_at) \
               SELECT u.*, $13 FROM unnest($14::uuid[], $15::int8[], $16::uuid[], $17::bool[], \
                 $18::int8[], $19::int8[], $20::int8[], $21::int8[], $22::int8[], $23::int8[]) AS u), \
         f AS (INSERT INTO ledger_failed_transfers (id, partner_id, result, created_at) \
               SELECT u.*, $13 FROM unnest($24::uuid[], $25::uuid[], $26::text[]) AS u \
               ON CONFLICT (id) DO NOTHING), \
         xd AS (DELETE FROM ledger_pending_expiry WHERE transfer_id = ANY($27::uuid[])), \
         xi AS (INSERT INTO ledger_pending_expiry (transfer_id, expires_at) \
                SELECT * FROM unnest($28::uuid[], $29::timestamptz[])), \
         a AS (UPDATE ledger_accounts acc SET debits_pending = v.dp, debits_posted = v.dpo, \
                 credits_pending = v.cp, credits_posted = v.cpo, entry_seq = v.seq \
               FROM unnest($30::uuid[], $31::int8[], $32::int8[], $33::int8[], $34::int8[], $35::int8[]) \
                 AS v(id, dp, dpo, cp, cpo, seq) \
               WHERE acc.id = v.id RETURNING 1) \
         SELECT count(*) AS updated FROM a",
    )
    .bind::<Array<SqlUuid>, _>(t.id)
    .bind::<Array<Nullable<SqlUuid>>, _>(t.partner_id)
    .bind::<Array<SqlUuid>, _>(t.debit_account_id)
    .bind::<Array<SqlUuid>, _>(t.credit_account_id)
    .bind::<Array<Int8>, _>(t.amount)
    .bind::<Array<Text>, _>(t.currency)
    .bind::<Array<Int4>, _>(t.code)
    .bind::<Array<Int4>, _>(t.flags)
    .bind::<Array<Nullable<SqlUuid>>, _>(t.pending_id)
    .bind::<Array<Nullable<Int4>>, _>(t.timeout_secs)
    .bind::<Array<Nullable<Timestamptz>>, _>(t.expires_at)
    .bind::<Array<Nullable<Jsonb>>, _>(t.metadata)
    .bind::<Timestamptz, _>(now)
    .bind::<Array<SqlUuid>, _>(e.account_id)
    .bind::<Array<Int8>, _>(e.seq)
    .bind::<Array<SqlUuid>, _>(e.transfer_id)
    .bind::<Array<Bool>, _>(e.is_credit)
    .bind::<Array<Int8>, _>(e.pending_delta)
    .bind::<Array<Int8>, _>(e.posted_delta)
    .bind::<Array<Int8>, _>(e.debits_pending)
    .bind::<Array<Int8>, _>(e.debits_posted)
    .bind::<Array<Int8>, _>(e.credits_pending)
    .bind::<Array<Int8>, _>(e.credits_posted)
    .bind::<Array<SqlUuid>, _>(w.failed_ids)
    .bind::<Array<Nullable<SqlUuid>>, _>(w.failed_partners)
    .bind::<Array<Text>, _>(w.failed_results)
    .bind::<Array<SqlUuid>, _>(w.expiry_done)
    .bind::<Array<SqlUuid>, _>(w.expiry_new_ids)
    .bind::<Array<Timestamptz>, _>(w.expiry_new_at)
    .bind::<Array<SqlUuid>, _>(a.id)
    .bind::<Array<Int8>, _>(a.debits_pending)
    .bind::<Array<Int8>, _>(a.debits_posted)
    .bind::<Array<Int8>, _>(a.credits_pending)
    .bind::<Array<Int8>, _>(a.credits_posted)
    .bind::<Array<Int8>, _>(a.entry_seq)
    .get_result::<Updated>(conn)
    .await
    .map(|u| u.updated)
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

pub async fn find_transfer(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> QueryResult<Option<TransferRow>> {
    ledger_transfers::table
        .find(id)
        .select(TransferRow::as_select())
        .first(conn)
        .await
        .optional()
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

/// Every invariant of DESIGN.md, recomputed from entries and transfers (not from the cached
/// totals, which are checked against them). Returns the violations, at most 100 per check.
pub async fn verify(conn: &mut AsyncPgConnection) -> QueryResult<Vec<Violation>> {
    let checks = [
        // Per currency, posted and pending debits equal credits, from the entries.
        "SELECT 'debits_equal_credits' AS check, a.currency AS subject, \
                format('entries: debits posted %s, credits posted %s, debits pending %s, credits pending %s', \
                  sum(e.posted_delta) FILTER (WHERE NOT e.is_credit), sum(e.posted_delta) FILTER (WHERE e.is_credit), \
                  sum(e.pending_delta) FILTER (WHERE NOT e.is_credit), sum(e.pending_delta) FILTER (WHERE e.is_credit)) AS detail \
         FROM ledger_entries e JOIN ledger_accounts a ON a.id = e.account_id GROUP BY a.currency \
         HAVING coalesce(sum(e.posted_delta) FILTER (WHERE NOT e.is_credit), 0) <> coalesce(sum(e.posted_delta) FILTER (WHERE e.is_credit), 0) \
             OR coalesce(sum(e.pending_delta) FILTER (WHERE NOT e.is_credit), 0) <> coalesce(sum(e.pending_delta) FILTER (WHERE e.is_credit), 0) LIMIT 100",
        // Per currency, the cached totals balance too.
        "SELECT 'totals_balance' AS check, currency AS subject, \
                format('debits posted %s, credits posted %s, debits pending %s, credits pending %s', \
                  sum(debits_posted), sum(credits_posted), sum(debits_pending), sum(credits_pending)) AS detail \
         FROM ledger_accounts GROUP BY currency \
         HAVING sum(debits_posted) <> sum(credits_posted) OR sum(debits_pending) <> sum(credits_pending) LIMIT 100",
        // Every account's totals equal the sum of its entries.
        "SELECT 'account_equals_entries' AS check, a.id::text AS subject, \
                format('cached %s/%s/%s/%s, entries %s/%s/%s/%s', a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted, \
                  coalesce(s.dp, 0), coalesce(s.dpo, 0), coalesce(s.cp, 0), coalesce(s.cpo, 0)) AS detail \
         FROM ledger_accounts a LEFT JOIN ( \
           SELECT account_id, \
             sum(pending_delta) FILTER (WHERE NOT is_credit) AS dp, sum(posted_delta) FILTER (WHERE NOT is_credit) AS dpo, \
             sum(pending_delta) FILTER (WHERE is_credit) AS cp, sum(posted_delta) FILTER (WHERE is_credit) AS cpo, \
             count(*) AS n FROM ledger_entries GROUP BY account_id) s ON s.account_id = a.id \
         WHERE a.debits_pending <> coalesce(s.dp, 0) OR a.debits_posted <> coalesce(s.dpo, 0) \
            OR a.credits_pending <> coalesce(s.cp, 0) OR a.credits_posted <> coalesce(s.cpo, 0) \
            OR a.entry_seq <> coalesce(s.n, 0) LIMIT 100",
        // Each entry's totals-after follow from the previous entry and its own deltas.
        "SELECT 'entry_chain' AS check, account_id::text || '#' || seq AS subject, 'totals after do not follow from the previous entry' AS detail \
         FROM (SELECT *, \
             lag(debits_pending, 1, 0::bigint) OVER w AS p_dp, lag(debits_posted, 1, 0::bigint) OVER w AS p_dpo, \
             lag(credits_pending, 1, 0::bigint) OVER w AS p_cp, lag(credits_posted, 1, 0::bigint) OVER w AS p_cpo, \
             lag(seq, 1, 0::bigint) OVER w AS p_seq \
           FROM ledger_entries WINDOW w AS (PARTITION BY account_id ORDER BY seq)) x \
         WHERE seq <> p_seq + 1 \
            OR (NOT is_credit AND (debits_pending <> p_dp + pending_delta OR debits_posted <> p_dpo + posted_delta \
                                   OR credits_pending <> p_cp OR credits_posted <> p_cpo)) \
            OR (is_credit AND (credits_pending <> p_cp + pending_delta OR credits_posted <> p_cpo + posted_delta \
                               OR debits_pending <> p_dp OR debits_posted <> p_dpo)) LIMIT 100",
        // No account with debits_must_not_exceed_credits was ever negative, at any entry.
        "SELECT 'never_negative' AS check, e.account_id::text || '#' || e.seq AS subject, \
                format('debits %s + %s pending over credits %s', e.debits_posted, e.debits_pending, e.credits_posted) AS detail \
         FROM ledger_entries e JOIN ledger_accounts a ON a.id = e.account_id \
         WHERE a.flags & 1 <> 0 AND e.debits_posted + e.debits_pending > e.credits_posted LIMIT 100",
        "SELECT 'credits_within_debits' AS check, e.account_id::text || '#' || e.seq AS subject, \
                format('credits %s + %s pending over debits %s', e.credits_posted, e.credits_pending, e.debits_posted) AS detail \
         FROM ledger_entries e JOIN ledger_accounts a ON a.id = e.account_id \
         WHERE a.flags & 2 <> 0 AND e.credits_posted + e.credits_pending > e.debits_posted LIMIT 100",
        // Every transfer is posted exactly once: one debit entry on its debit account and one
        // credit entry on its credit account, of its amount; and no entry without a transfer.
        "SELECT 'transfer_entries' AS check, t.id::text AS subject, \
                format('%s debit and %s credit entries', count(e.*) FILTER (WHERE NOT e.is_credit), count(e.*) FILTER (WHERE e.is_credit)) AS detail \
         FROM ledger_transfers t LEFT JOIN ledger_entries e ON e.transfer_id = t.id \
         GROUP BY t.id, t.debit_account_id, t.credit_account_id \
         HAVING count(*) FILTER (WHERE NOT e.is_credit AND e.account_id = t.debit_account_id) <> 1 \
             OR count(*) FILTER (WHERE e.is_credit AND e.account_id = t.credit_account_id) <> 1 \
             OR count(e.*) <> 2 LIMIT 100",
        "SELECT 'orphan_entry' AS check, e.account_id::text || '#' || e.seq AS subject, 'entry without a transfer' AS detail \
         FROM ledger_entries e LEFT JOIN ledger_transfers t ON t.id = e.transfer_id WHERE t.id IS NULL LIMIT 100",
        // A pending transfer is resolved at most once (the unique index guards it; this checks).
        "SELECT 'pending_resolved_once' AS check, pending_id::text AS subject, format('%s resolutions', count(*)) AS detail \
         FROM ledger_transfers WHERE pending_id IS NOT NULL GROUP BY pending_id HAVING count(*) > 1 LIMIT 100",
    ];
    let mut violations = Vec::new();
    for sql in checks {
        let found: Vec<Violation> = diesel::sql_query(sql).load(conn).await?;
        violations.extend(found);
    }
    Ok(violations)
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
