//! Statements on authorizations, their operations, the limit counters and the settlement
//! accounts.

use chrono::{DateTime, NaiveDate, Utc};
use diesel::prelude::*;
use diesel::sql_types::{
    Array, BigInt, Date, Integer, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::card::model::spend::Counters;
use crate::platform::db::schema::{card_operations, card_settlement_accounts, card_spend};

/// An authorization as stored. (Read and written with SQL of its own: the table has more
/// columns than diesel's `table!` takes without a costlier feature.)
#[derive(Debug, Clone, QueryableByName)]
pub struct AuthorizationRow {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    pub partner_id: Uuid,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub card_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub wallet_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<Text>)]
    pub network_transaction_id: Option<String>,
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub decline_code: Option<String>,
    #[diesel(sql_type = Text)]
    pub response_code: String,
    #[diesel(sql_type = Text)]
    pub currency: String,
    #[diesel(sql_type = BigInt)]
    pub amount: i64,
    #[diesel(sql_type = BigInt)]
    pub held: i64,
    #[diesel(sql_type = BigInt)]
    pub captured: i64,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub hold_transfer_id: Option<Uuid>,
    #[diesel(sql_type = Jsonb)]
    pub merchant: serde_json::Value,
    #[diesel(sql_type = Jsonb)]
    pub trail: serde_json::Value,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub updated_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub expires_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, partner_id, card_id, wallet_id, network_transaction_id, status, \
    decline_code, response_code, currency, amount, held, captured, hold_transfer_id, merchant, \
    trail, created_at, updated_at, expires_at";

/// An increment, capture, reversal, expiry or refund as stored.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = card_operations, check_for_backend(diesel::pg::Pg))]
pub struct OperationRow {
    pub id: Uuid,
    pub partner_id: Uuid,
    pub card_id: Uuid,
    pub authorization_id: Option<Uuid>,
    pub kind: String,
    pub approved: bool,
    pub amount: i64,
    pub network_transaction_id: Option<String>,
    pub transfer_id: Option<Uuid>,
    pub detail: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// Inserts authorizations in one statement; one whose network id another already has is
/// left out (the caller answers with that one).
pub async fn insert_authorizations(
    conn: &AsyncPgConnection,
    rows: &[AuthorizationRow],
) -> QueryResult<usize> {
    if rows.is_empty() {
        return Ok(0);
    }
    fn col<T: Clone>(rows: &[AuthorizationRow], f: impl Fn(&AuthorizationRow) -> T) -> Vec<T> {
        rows.iter().map(f).collect()
    }
    diesel::sql_query(format!(
        "INSERT INTO card_authorizations ({COLUMNS}) \
         SELECT * FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
                              $16, $17, $18) \
         ON CONFLICT DO NOTHING"
    ))
    .bind::<Array<SqlUuid>, _>(col(rows, |r| r.id))
    .bind::<Array<SqlUuid>, _>(col(rows, |r| r.partner_id))
    .bind::<Array<Nullable<SqlUuid>>, _>(col(rows, |r| r.card_id))
    .bind::<Array<Nullable<SqlUuid>>, _>(col(rows, |r| r.wallet_id))
    .bind::<Array<Nullable<Text>>, _>(col(rows, |r| r.network_transaction_id.clone()))
    .bind::<Array<Text>, _>(col(rows, |r| r.status.clone()))
    .bind::<Array<Nullable<Text>>, _>(col(rows, |r| r.decline_code.clone()))
    .bind::<Array<Text>, _>(col(rows, |r| r.response_code.clone()))
    .bind::<Array<Text>, _>(col(rows, |r| r.currency.clone()))
    .bind::<Array<BigInt>, _>(col(rows, |r| r.amount))
    .bind::<Array<BigInt>, _>(col(rows, |r| r.held))
    .bind::<Array<BigInt>, _>(col(rows, |r| r.captured))
    .bind::<Array<Nullable<SqlUuid>>, _>(col(rows, |r| r.hold_transfer_id))
    .bind::<Array<Jsonb>, _>(col(rows, |r| r.merchant.clone()))
    .bind::<Array<Jsonb>, _>(col(rows, |r| r.trail.clone()))
    .bind::<Array<Timestamptz>, _>(col(rows, |r| r.created_at))
    .bind::<Array<Timestamptz>, _>(col(rows, |r| r.updated_at))
    .bind::<Array<Nullable<Timestamptz>>, _>(col(rows, |r| r.expires_at))
    .execute(&mut { conn })
    .await
}

pub async fn insert_operations(
    conn: &mut AsyncPgConnection,
    rows: &[OperationRow],
) -> QueryResult<usize> {
    if rows.is_empty() {
        return Ok(0);
    }
    diesel::insert_into(card_operations::table)
        .values(rows)
        .on_conflict_do_nothing()
        .execute(conn)
        .await
}

/// An authorization of `partner`.
pub async fn find_authorization(
    conn: &mut AsyncPgConnection,
    partner: Uuid,
    id: Uuid,
) -> QueryResult<Option<AuthorizationRow>> {
    diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM card_authorizations WHERE id = $1 AND partner_id = $2"
    ))
    .bind::<SqlUuid, _>(id)
    .bind::<SqlUuid, _>(partner)
    .get_result(conn)
    .await
    .optional()
}

/// The authorization of `partner` that came with this network id.
pub async fn authorization_by_network_id(
    conn: &mut AsyncPgConnection,
    partner: Uuid,
    network_id: &str,
) -> QueryResult<Option<AuthorizationRow>> {
    diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM card_authorizations \
         WHERE partner_id = $1 AND network_transaction_id = $2"
    ))
    .bind::<SqlUuid, _>(partner)
    .bind::<Text, _>(network_id)
    .get_result(conn)
    .await
    .optional()
}

/// The operation of `partner` of this kind that came with this network id.
pub async fn operation_by_network_id(
    conn: &mut AsyncPgConnection,
    partner: Uuid,
    kind: &str,
    network_id: &str,
) -> QueryResult<Option<OperationRow>> {
    card_operations::table
        .filter(card_operations::partner_id.eq(partner))
        .filter(card_operations::kind.eq(kind))
        .filter(card_operations::network_transaction_id.eq(network_id))
        .select(OperationRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// An authorization's operations, oldest first.
pub async fn operations_of(
    conn: &mut AsyncPgConnection,
    authorization: Uuid,
) -> QueryResult<Vec<OperationRow>> {
    card_operations::table
        .filter(card_operations::authorization_id.eq(authorization))
        .select(OperationRow::as_select())
        .order((card_operations::created_at, card_operations::id))
        .load(conn)
        .await
}

/// Authorizations of a partner, newest first, optionally of one card and in one status.
pub async fn list_authorizations(
    conn: &mut AsyncPgConnection,
    partner: Uuid,
    card: Option<Uuid>,
    status: Option<&str>,
    before: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<AuthorizationRow>> {
    diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM card_authorizations \
         WHERE partner_id = $1 AND ($2::uuid IS NULL OR card_id = $2) \
           AND ($3::text IS NULL OR status = $3) AND ($4::uuid IS NULL OR id < $4) \
         ORDER BY id DESC LIMIT $5"
    ))
    .bind::<SqlUuid, _>(partner)
    .bind::<Nullable<SqlUuid>, _>(card)
    .bind::<Nullable<Text>, _>(status)
    .bind::<Nullable<SqlUuid>, _>(before)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await
}

/// Moves a pending authorization on, only if it is still pending on `hold` (so a capture, a
/// reversal and an expiry racing for one hold change the row once): whether it moved.
#[expect(
    clippy::too_many_arguments,
    reason = "the columns an operation changes"
)]
pub async fn advance_authorization(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    hold: Uuid,
    status: &str,
    amount: i64,
    held: i64,
    captured: i64,
    new_hold: Option<Uuid>,
    at: DateTime<Utc>,
) -> QueryResult<bool> {
    let changed = diesel::sql_query(
        "UPDATE card_authorizations SET status = $3, amount = $4, held = $5, captured = $6, \
                hold_transfer_id = coalesce($7, hold_transfer_id), updated_at = $8 \
         WHERE id = $1 AND status = 'pending' AND hold_transfer_id = $2",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<SqlUuid, _>(hold)
    .bind::<Text, _>(status)
    .bind::<BigInt, _>(amount)
    .bind::<BigInt, _>(held)
    .bind::<BigInt, _>(captured)
    .bind::<Nullable<SqlUuid>, _>(new_hold)
    .bind::<Timestamptz, _>(at)
    .execute(conn)
    .await?;
    Ok(changed == 1)
}

/// Pending authorizations whose hold has expired, oldest first.
pub async fn due_for_expiry(
    conn: &mut AsyncPgConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> QueryResult<Vec<AuthorizationRow>> {
    diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM card_authorizations \
         WHERE status = 'pending' AND expires_at <= $1 ORDER BY expires_at LIMIT $2"
    ))
    .bind::<Timestamptz, _>(now)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = card_spend, check_for_backend(diesel::pg::Pg))]
struct SpendRow {
    card_id: Uuid,
    day: NaiveDate,
    day_amount: i64,
    day_count: i32,
    week: NaiveDate,
    week_amount: i64,
    month: NaiveDate,
    month_amount: i64,
    year: NaiveDate,
    year_amount: i64,
    lifetime_amount: i64,
}

impl From<SpendRow> for Counters {
    fn from(r: SpendRow) -> Counters {
        Counters {
            day: r.day,
            day_amount: r.day_amount,
            day_count: r.day_count,
            week: r.week,
            week_amount: r.week_amount,
            month: r.month,
            month_amount: r.month_amount,
            year: r.year,
            year_amount: r.year_amount,
            lifetime_amount: r.lifetime_amount,
        }
    }
}

/// The card whose number has this keyed hash, with its limit counters (none when it never
/// spent): what an authorization reads first, in one statement.
pub async fn card_by_pan_hash_with_counters(
    conn: &mut AsyncPgConnection,
    hash: &[u8],
) -> QueryResult<Option<(super::CardRow, Option<Counters>)>> {
    use crate::platform::db::schema::{card_cards, card_vault};
    let found: Option<(super::CardRow, Option<SpendRow>)> = card_cards::table
        .inner_join(card_vault::table.on(card_vault::card_id.eq(card_cards::id)))
        .left_join(card_spend::table.on(card_spend::card_id.eq(card_cards::id)))
        .filter(card_vault::pan_hash.eq(hash))
        .select((super::CardRow::as_select(), Option::<SpendRow>::as_select()))
        .first(conn)
        .await
        .optional()?;
    Ok(found.map(|(card, spend)| (card, spend.map(Counters::from))))
}

/// The limit counters of `cards` (a card that never spent has none).
pub async fn counters(
    conn: &mut AsyncPgConnection,
    cards: &[Uuid],
) -> QueryResult<Vec<(Uuid, Counters)>> {
    let rows: Vec<SpendRow> = card_spend::table
        .filter(card_spend::card_id.eq_any(cards))
        .select(SpendRow::as_select())
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.card_id, Counters::from(r)))
        .collect())
}

/// Stores the counters of several cards in one statement.
pub async fn store_counters(
    conn: &AsyncPgConnection,
    counters: &[(Uuid, Counters)],
    at: DateTime<Utc>,
) -> QueryResult<()> {
    upsert_spend(conn, counters, None, at).await
}

/// Whose counters at a category group: the card and the group's name.
pub type CategoryKey = (Uuid, String);

#[derive(QueryableByName)]
struct CategorySpendRow {
    #[diesel(sql_type = SqlUuid)]
    card_id: Uuid,
    #[diesel(sql_type = Text)]
    category: String,
    #[diesel(sql_type = Date)]
    day: NaiveDate,
    #[diesel(sql_type = BigInt)]
    day_amount: i64,
    #[diesel(sql_type = Integer)]
    day_count: i32,
    #[diesel(sql_type = Date)]
    week: NaiveDate,
    #[diesel(sql_type = BigInt)]
    week_amount: i64,
    #[diesel(sql_type = Date)]
    month: NaiveDate,
    #[diesel(sql_type = BigInt)]
    month_amount: i64,
    #[diesel(sql_type = Date)]
    year: NaiveDate,
    #[diesel(sql_type = BigInt)]
    year_amount: i64,
    #[diesel(sql_type = BigInt)]
    lifetime_amount: i64,
}

/// The limit counters of cards at category groups (none for a pair that never spent).
pub async fn category_counters(
    conn: &mut AsyncPgConnection,
    keys: &[CategoryKey],
) -> QueryResult<Vec<(CategoryKey, Counters)>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let cards: Vec<Uuid> = keys.iter().map(|(c, _)| *c).collect();
    let names: Vec<String> = keys.iter().map(|(_, n)| n.clone()).collect();
    let rows: Vec<CategorySpendRow> = diesel::sql_query(
        "SELECT s.card_id, s.category, s.day, s.day_amount, s.day_count, s.week, s.week_amount, \
                s.month, s.month_amount, s.year, s.year_amount, s.lifetime_amount \
         FROM card_category_spend s \
         JOIN unnest($1::uuid[], $2::text[]) AS k (card_id, category) \
           ON k.card_id = s.card_id AND k.category = s.category",
    )
    .bind::<Array<SqlUuid>, _>(cards)
    .bind::<Array<Text>, _>(names)
    .load(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                (r.card_id, r.category),
                Counters {
                    day: r.day,
                    day_amount: r.day_amount,
                    day_count: r.day_count,
                    week: r.week,
                    week_amount: r.week_amount,
                    month: r.month,
                    month_amount: r.month_amount,
                    year: r.year,
                    year_amount: r.year_amount,
                    lifetime_amount: r.lifetime_amount,
                },
            )
        })
        .collect())
}

/// Stores the counters of cards at category groups in one statement.
pub async fn store_category_counters(
    conn: &AsyncPgConnection,
    counters: &[(CategoryKey, Counters)],
    at: DateTime<Utc>,
) -> QueryResult<()> {
    let rows: Vec<(Uuid, Counters)> = counters.iter().map(|((c, _), n)| (*c, *n)).collect();
    let names: Vec<String> = counters.iter().map(|((_, n), _)| n.clone()).collect();
    upsert_spend(conn, &rows, Some(names), at).await
}

/// The one upsert of counters: a card's (`card_spend`), or, with `categories` (one per row),
/// a card's at each category group (`card_category_spend`).
async fn upsert_spend(
    conn: &AsyncPgConnection,
    counters: &[(Uuid, Counters)],
    categories: Option<Vec<String>>,
    at: DateTime<Utc>,
) -> QueryResult<()> {
    if counters.is_empty() {
        return Ok(());
    }
    let col =
        |f: fn(&Counters) -> NaiveDate| counters.iter().map(|(_, c)| f(c)).collect::<Vec<_>>();
    let amt = |f: fn(&Counters) -> i64| counters.iter().map(|(_, c)| f(c)).collect::<Vec<_>>();
    let ids: Vec<Uuid> = counters.iter().map(|(id, _)| *id).collect();
    let counts: Vec<i32> = counters.iter().map(|(_, c)| c.day_count).collect();
    let (table, key, conflict) = match categories {
        None => ("card_spend", "", "card_id"),
        Some(_) => ("card_category_spend", ", category", "card_id, category"),
    };
    let category_arg = if categories.is_some() { ", $13" } else { "" };
    let sql = format!(
        "INSERT INTO {table} (card_id, day, day_amount, day_count, week, week_amount, month, \
                              month_amount, year, year_amount, lifetime_amount, updated_at{key}) \
         SELECT t.* FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
                                array_fill($12::timestamptz, ARRAY[cardinality($1)]){category_arg}) AS t \
         ON CONFLICT ({conflict}) DO UPDATE SET day = EXCLUDED.day, \
             day_amount = EXCLUDED.day_amount, day_count = EXCLUDED.day_count, \
             week = EXCLUDED.week, week_amount = EXCLUDED.week_amount, \
             month = EXCLUDED.month, month_amount = EXCLUDED.month_amount, \
             year = EXCLUDED.year, year_amount = EXCLUDED.year_amount, \
             lifetime_amount = EXCLUDED.lifetime_amount, updated_at = EXCLUDED.updated_at"
    );
    let query = diesel::sql_query(sql)
        .into_boxed()
        .bind::<Array<SqlUuid>, _>(ids)
        .bind::<Array<Date>, _>(col(|c| c.day))
        .bind::<Array<BigInt>, _>(amt(|c| c.day_amount))
        .bind::<Array<Integer>, _>(counts)
        .bind::<Array<Date>, _>(col(|c| c.week))
        .bind::<Array<BigInt>, _>(amt(|c| c.week_amount))
        .bind::<Array<Date>, _>(col(|c| c.month))
        .bind::<Array<BigInt>, _>(amt(|c| c.month_amount))
        .bind::<Array<Date>, _>(col(|c| c.year))
        .bind::<Array<BigInt>, _>(amt(|c| c.year_amount))
        .bind::<Array<BigInt>, _>(amt(|c| c.lifetime_amount))
        .bind::<Timestamptz, _>(at);
    let query = match categories {
        Some(names) => query.bind::<Array<Text>, _>(names),
        None => query,
    };
    query.execute(&mut { conn }).await?;
    Ok(())
}

/// The card network settlement account of `currency`'s `shard`, if made.
pub async fn settlement_account(
    conn: &mut AsyncPgConnection,
    currency: &str,
    shard: i16,
) -> QueryResult<Option<Uuid>> {
    card_settlement_accounts::table
        .find((currency, shard))
        .select(card_settlement_accounts::account_id)
        .first(conn)
        .await
        .optional()
}

pub async fn insert_settlement_account(
    conn: &mut AsyncPgConnection,
    currency: &str,
    shard: i16,
    account: Uuid,
    at: DateTime<Utc>,
) -> QueryResult<()> {
    diesel::insert_into(card_settlement_accounts::table)
        .values((
            card_settlement_accounts::currency.eq(currency),
            card_settlement_accounts::shard.eq(shard),
            card_settlement_accounts::account_id.eq(account),
            card_settlement_accounts::created_at.eq(at),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Pending authorizations in id order after `after`: the verification's pages.
pub async fn pending_after(
    conn: &mut AsyncPgConnection,
    after: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<AuthorizationRow>> {
    diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM card_authorizations \
         WHERE status = 'pending' AND ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT $2"
    ))
    .bind::<Nullable<SqlUuid>, _>(after)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await
}
