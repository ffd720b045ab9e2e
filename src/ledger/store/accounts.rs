//! Accounts (`ledger_accounts`): opening them, reading them (pipelined with a batch's other
//! reads, or one by one), locking them, their flags; and their journal (`ledger_entries`): a
//! page of entries, and the entry that gives the balance at a point in time.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{
    Array, Bool, Int4, Int8, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::platform::db::schema::{ledger_accounts, ledger_entries};

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

crate::prepared_statement! {
    /// Reads accounts, without locking them (see [`write_batch`](super::write_batch) for
    /// why that is safe).
    ReadAccounts -> AccountColumnsSql { ids: Vec<Uuid> => Array<SqlUuid> }
    "SELECT id, partner_id, currency, code, flags, metadata, debits_pending, debits_posted, \
            credits_pending, credits_posted, entry_seq, created_at, partner_books \
     FROM ledger_accounts WHERE id = ANY(??)"
}

crate::prepared_statement! {
    /// Locks accounts in id order.
    LockAccounts -> SqlUuid { ids: Vec<Uuid> => Array<SqlUuid> }
    "SELECT id FROM ledger_accounts WHERE id = ANY(??) ORDER BY id FOR UPDATE"
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
/// possible (see [`write_batch`](super::write_batch)).
pub async fn read_accounts(
    conn: &AsyncPgConnection,
    ids: Vec<Uuid>,
) -> QueryResult<Vec<AccountRow>> {
    let mut conn = conn;
    ReadAccounts { ids }.load(&mut conn).await
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
