//! Transfers (`ledger_transfers`): stored ones by id, the resolutions of pending ones, the
//! remembered failures, pages in id order; and the expiry bookkeeping of pending transfers
//! (`ledger_pending_expiry`).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{
    Array, BigInt, Int4, Int8, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::platform::db::schema::ledger_transfers;

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
    /// Remembered failures among the ids.
    LoadFailed -> (SqlUuid, Text) { ids: Vec<Uuid> => Array<SqlUuid> }
    "SELECT id, result FROM ledger_transfers WHERE id = ANY(??) AND result IS NOT NULL"
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

/// Remembered failures among `ids`.
pub async fn load_failed(conn: &AsyncPgConnection, ids: Vec<Uuid>) -> QueryResult<Vec<FailedRow>> {
    let mut conn = conn;
    LoadFailed { ids }.load(&mut conn).await
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
