//! Statements on the payment module's own tables (`payment_*`).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
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

/// Several payments in one statement, whose text does not depend on their number (so it is
/// prepared once per connection, unlike a multi-row VALUES list).
pub async fn insert_payments(conn: &AsyncPgConnection, rows: &[PaymentRow]) -> QueryResult<()> {
    use diesel::sql_types::{Array, BigInt, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid};
    if rows.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&PaymentRow) -> Uuid| rows.iter().map(f).collect::<Vec<_>>();
    let optional = |f: fn(&PaymentRow) -> Option<Uuid>| rows.iter().map(f).collect::<Vec<_>>();
    let text = |f: fn(&PaymentRow) -> &str| rows.iter().map(f).collect::<Vec<_>>();
    let at = |f: fn(&PaymentRow) -> DateTime<Utc>| rows.iter().map(f).collect::<Vec<_>>();
    diesel::sql_query(
        "INSERT INTO payment_payments (id, partner_id, kind, status, from_wallet_id, \
             to_wallet_id, amount, currency, description, transfer_id, rail, created_at, \
             updated_at, settlement_transfer_id, settle_after, refund_of) \
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::uuid[], \
             $6::uuid[], $7::bigint[], $8::text[], $9::text[], $10::uuid[], $11::jsonb[], \
             $12::timestamptz[], $13::timestamptz[], $14::uuid[], $15::timestamptz[], $16::uuid[])",
    )
    .bind::<Array<SqlUuid>, _>(column(|r| r.id))
    .bind::<Array<SqlUuid>, _>(column(|r| r.partner_id))
    .bind::<Array<Text>, _>(text(|r| &r.kind))
    .bind::<Array<Text>, _>(text(|r| &r.status))
    .bind::<Array<Nullable<SqlUuid>>, _>(optional(|r| r.from_wallet_id))
    .bind::<Array<Nullable<SqlUuid>>, _>(optional(|r| r.to_wallet_id))
    .bind::<Array<BigInt>, _>(rows.iter().map(|r| r.amount).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(text(|r| &r.currency))
    .bind::<Array<Nullable<Text>>, _>(
        rows.iter()
            .map(|r| r.description.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind::<Array<SqlUuid>, _>(column(|r| r.transfer_id))
    .bind::<Array<Nullable<Jsonb>>, _>(rows.iter().map(|r| r.rail.as_ref()).collect::<Vec<_>>())
    .bind::<Array<Timestamptz>, _>(at(|r| r.created_at))
    .bind::<Array<Timestamptz>, _>(at(|r| r.updated_at))
    .bind::<Array<Nullable<SqlUuid>>, _>(optional(|r| r.settlement_transfer_id))
    .bind::<Array<Nullable<Timestamptz>>, _>(
        rows.iter().map(|r| r.settle_after).collect::<Vec<_>>(),
    )
    .bind::<Array<Nullable<SqlUuid>>, _>(optional(|r| r.refund_of))
    .execute(&mut { conn })
    .await
    .map(drop)
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
