//! Statements on the payment module's own tables (`payment_*`).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::platform::db::schema::{payment_payments, payment_rail_accounts};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = payment_payments, check_for_backend(diesel::pg::Pg))]
pub struct PaymentRow {
    pub id: Uuid,
    pub partner_id: Uuid,
    pub kind: String,
    pub status: String,
    pub from_wallet_id: Option<Uuid>,
    pub to_wallet_id: Option<Uuid>,
    pub amount: i64,
    pub currency: String,
    pub description: Option<String>,
    pub transfer_id: Uuid,
    pub rail: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub settlement_transfer_id: Option<Uuid>,
    pub settle_after: Option<DateTime<Utc>>,
    pub refund_of: Option<Uuid>,
}

crate::prepared_statement! {
    /// Several payments (see [`insert_payments`]).
    InsertPayments -> diesel::sql_types::BigInt {
        id: Vec<Uuid> => Array<SqlUuid>,
        partner_id: Vec<Uuid> => Array<SqlUuid>,
        kind: Vec<String> => Array<Text>,
        status: Vec<String> => Array<Text>,
        from_wallet_id: Vec<Option<Uuid>> => Array<Nullable<SqlUuid>>,
        to_wallet_id: Vec<Option<Uuid>> => Array<Nullable<SqlUuid>>,
        amount: Vec<i64> => Array<BigInt>,
        currency: Vec<String> => Array<Text>,
        description: Vec<Option<String>> => Array<Nullable<Text>>,
        transfer_id: Vec<Uuid> => Array<SqlUuid>,
        rail: Vec<Option<serde_json::Value>> => Array<Nullable<Jsonb>>,
        created_at: Vec<DateTime<Utc>> => Array<Timestamptz>,
        updated_at: Vec<DateTime<Utc>> => Array<Timestamptz>,
        settlement_transfer_id: Vec<Option<Uuid>> => Array<Nullable<SqlUuid>>,
        settle_after: Vec<Option<DateTime<Utc>>> => Array<Nullable<Timestamptz>>,
        refund_of: Vec<Option<Uuid>> => Array<Nullable<SqlUuid>>,
    }
    "INSERT INTO payment_payments (id, partner_id, kind, status, from_wallet_id, to_wallet_id, \
         amount, currency, description, transfer_id, rail, created_at, updated_at, \
         settlement_transfer_id, settle_after, refund_of) \
     SELECT * FROM unnest(??::uuid[], ??::uuid[], ??::text[], ??::text[], ??::uuid[], \
         ??::uuid[], ??::bigint[], ??::text[], ??::text[], ??::uuid[], ??::jsonb[], \
         ??::timestamptz[], ??::timestamptz[], ??::uuid[], ??::timestamptz[], ??::uuid[])"
}

/// Several payments in one prepared statement.
pub async fn insert_payments(conn: &AsyncPgConnection, rows: Vec<PaymentRow>) -> QueryResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let n = rows.len();
    let mut s = InsertPayments {
        id: Vec::with_capacity(n),
        partner_id: Vec::with_capacity(n),
        kind: Vec::with_capacity(n),
        status: Vec::with_capacity(n),
        from_wallet_id: Vec::with_capacity(n),
        to_wallet_id: Vec::with_capacity(n),
        amount: Vec::with_capacity(n),
        currency: Vec::with_capacity(n),
        description: Vec::with_capacity(n),
        transfer_id: Vec::with_capacity(n),
        rail: Vec::with_capacity(n),
        created_at: Vec::with_capacity(n),
        updated_at: Vec::with_capacity(n),
        settlement_transfer_id: Vec::with_capacity(n),
        settle_after: Vec::with_capacity(n),
        refund_of: Vec::with_capacity(n),
    };
    for r in rows {
        s.id.push(r.id);
        s.partner_id.push(r.partner_id);
        s.kind.push(r.kind);
        s.status.push(r.status);
        s.from_wallet_id.push(r.from_wallet_id);
        s.to_wallet_id.push(r.to_wallet_id);
        s.amount.push(r.amount);
        s.currency.push(r.currency);
        s.description.push(r.description);
        s.transfer_id.push(r.transfer_id);
        s.rail.push(r.rail);
        s.created_at.push(r.created_at);
        s.updated_at.push(r.updated_at);
        s.settlement_transfer_id.push(r.settlement_transfer_id);
        s.settle_after.push(r.settle_after);
        s.refund_of.push(r.refund_of);
    }
    s.execute(&mut { conn }).await.map(drop)
}

pub async fn find_payment(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> QueryResult<Option<PaymentRow>> {
    payment_payments::table
        .find(id)
        .select(PaymentRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// A page of every payment in id order after `after` (verification pages through them all).
pub async fn payments_after(
    conn: &mut AsyncPgConnection,
    after: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<PaymentRow>> {
    let mut query = payment_payments::table
        .select(PaymentRow::as_select())
        .order(payment_payments::id)
        .limit(limit)
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(payment_payments::id.gt(after));
    }
    query.load(conn).await
}

/// The payments among `ids`.
pub async fn find_payments(
    conn: &mut AsyncPgConnection,
    ids: Vec<Uuid>,
) -> QueryResult<Vec<PaymentRow>> {
    payment_payments::table
        .filter(payment_payments::id.eq_any(ids))
        .select(PaymentRow::as_select())
        .load(conn)
        .await
}

/// Payments, newest first, of a partner (none: all), optionally touching one wallet.
pub async fn list_payments(
    conn: &mut AsyncPgConnection,
    partner: Option<Uuid>,
    wallet: Option<Uuid>,
    before: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<PaymentRow>> {
    let mut query = payment_payments::table
        .select(PaymentRow::as_select())
        .order(payment_payments::id.desc())
        .limit(limit)
        .into_boxed();
    if let Some(p) = partner {
        query = query.filter(payment_payments::partner_id.eq(p));
    }
    if let Some(w) = wallet {
        query = query.filter(
            payment_payments::from_wallet_id
                .eq(w)
                .or(payment_payments::to_wallet_id.eq(w)),
        );
    }
    if let Some(b) = before {
        query = query.filter(payment_payments::id.lt(b));
    }
    query.load(conn).await
}

pub async fn rail_account(
    conn: &mut AsyncPgConnection,
    currency: &str,
) -> QueryResult<Option<Uuid>> {
    payment_rail_accounts::table
        .find(currency)
        .select(payment_rail_accounts::account_id)
        .first(conn)
        .await
        .optional()
}

pub async fn insert_rail_account(
    conn: &mut AsyncPgConnection,
    currency: &str,
    account: Uuid,
) -> QueryResult<()> {
    diesel::insert_into(payment_rail_accounts::table)
        .values((
            payment_rail_accounts::currency.eq(currency),
            payment_rail_accounts::account_id.eq(account),
        ))
        .execute(conn)
        .await
        .map(drop)
}

/// The payment, locked until the transaction ends (refunds, settlement).
pub async fn lock_payment(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> QueryResult<Option<PaymentRow>> {
    payment_payments::table
        .find(id)
        .select(PaymentRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()
}

/// Pending withdrawals whose rail may have settled by `now`, oldest first.
pub async fn due_withdrawals(
    conn: &mut AsyncPgConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> QueryResult<Vec<PaymentRow>> {
    payment_payments::table
        .filter(payment_payments::kind.eq("withdrawal"))
        .filter(payment_payments::status.eq("pending"))
        .filter(payment_payments::settle_after.le(now))
        .order(payment_payments::settle_after.asc())
        .limit(limit)
        .select(PaymentRow::as_select())
        .load(conn)
        .await
}

/// Moves a pending payment to its final status; false if it was no longer pending (another
/// worker settled it first).
pub async fn finish_pending(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    status: &str,
    now: DateTime<Utc>,
) -> QueryResult<bool> {
    diesel::update(
        payment_payments::table
            .find(id)
            .filter(payment_payments::status.eq("pending")),
    )
    .set((
        payment_payments::status.eq(status),
        payment_payments::updated_at.eq(now),
    ))
    .execute(conn)
    .await
    .map(|n| n == 1)
}

/// What completed refunds of a payment returned so far (few rows per payment).
pub async fn refunded(conn: &mut AsyncPgConnection, payment: Uuid) -> QueryResult<i64> {
    let amounts: Vec<i64> = payment_payments::table
        .filter(payment_payments::refund_of.eq(payment))
        .filter(payment_payments::status.eq("completed"))
        .select(payment_payments::amount)
        .load(conn)
        .await?;
    Ok(amounts.into_iter().fold(0i64, i64::saturating_add))
}

pub async fn set_status(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    status: &str,
    now: DateTime<Utc>,
) -> QueryResult<()> {
    diesel::update(payment_payments::table.find(id))
        .set((
            payment_payments::status.eq(status),
            payment_payments::updated_at.eq(now),
        ))
        .execute(conn)
        .await
        .map(drop)
}
