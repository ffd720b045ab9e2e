//! Statements on the card module's own tables (`card_*`).

use chrono::{DateTime, NaiveDate, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::platform::db::schema::{card_cards, card_reveals, card_status_changes, card_vault};

/// A card as stored (its number is in the vault table).
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = card_cards, check_for_backend(diesel::pg::Pg))]
pub struct CardRow {
    pub id: Uuid,
    pub partner_id: Uuid,
    pub wallet_id: Uuid,
    pub customer_id: Uuid,
    pub currency: String,
    pub kind: String,
    pub status: String,
    pub cancel_reason: Option<String>,
    pub cardholder_name: Option<String>,
    pub brand: String,
    pub last4: String,
    pub expires_on: NaiveDate,
    pub controls: serde_json::Value,
    pub replaces: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A card's number, sealed and hashed.
#[derive(Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = card_vault, check_for_backend(diesel::pg::Pg))]
pub struct VaultRow {
    pub card_id: Uuid,
    pub pan_enc: String,
    pub pan_hash: Vec<u8>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = card_status_changes)]
pub struct StatusChangeRow<'a> {
    pub card_id: Uuid,
    pub from_status: Option<&'a str>,
    pub to_status: &'a str,
    pub reason: &'a str,
    pub actor: &'a str,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = card_reveals)]
pub struct RevealRow<'a> {
    pub card_id: Uuid,
    pub partner_id: Uuid,
    pub actor: &'a str,
    pub request_id: Option<&'a str>,
    pub created_at: DateTime<Utc>,
}

pub async fn insert_card(conn: &mut AsyncPgConnection, row: &CardRow) -> QueryResult<()> {
    diesel::insert_into(card_cards::table)
        .values(row)
        .execute(conn)
        .await
        .map(drop)
}

pub async fn find_card(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Option<CardRow>> {
    card_cards::table
        .find(id)
        .select(CardRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// The card, locked until the transaction ends (status and control changes).
pub async fn lock_card(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Option<CardRow>> {
    card_cards::table
        .find(id)
        .select(CardRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()
}

pub async fn insert_vault(conn: &mut AsyncPgConnection, row: &VaultRow) -> QueryResult<()> {
    diesel::insert_into(card_vault::table)
        .values(row)
        .execute(conn)
        .await
        .map(drop)
}

/// The sealed number of a card.
pub async fn find_vault(conn: &mut AsyncPgConnection, card: Uuid) -> QueryResult<Option<VaultRow>> {
    card_vault::table
        .find(card)
        .select(VaultRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// The card whose number has this keyed hash.
pub async fn find_by_pan_hash(
    conn: &mut AsyncPgConnection,
    hash: &[u8],
) -> QueryResult<Option<CardRow>> {
    card_cards::table
        .inner_join(card_vault::table.on(card_vault::card_id.eq(card_cards::id)))
        .filter(card_vault::pan_hash.eq(hash))
        .select(CardRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// Cards of a partner, newest first, optionally of one wallet and in one status.
pub async fn list_cards(
    conn: &mut AsyncPgConnection,
    partner: Uuid,
    wallet: Option<Uuid>,
    status: Option<&str>,
    before: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<CardRow>> {
    let mut query = card_cards::table
        .filter(card_cards::partner_id.eq(partner))
        .select(CardRow::as_select())
        .order(card_cards::id.desc())
        .limit(limit)
        .into_boxed();
    if let Some(w) = wallet {
        query = query.filter(card_cards::wallet_id.eq(w));
    }
    if let Some(s) = status {
        query = query.filter(card_cards::status.eq(s.to_owned()));
    }
    if let Some(b) = before {
        query = query.filter(card_cards::id.lt(b));
    }
    query.load(conn).await
}

pub async fn set_status(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    status: &str,
    cancel_reason: Option<&str>,
    now: DateTime<Utc>,
) -> QueryResult<()> {
    diesel::update(card_cards::table.find(id))
        .set((
            card_cards::status.eq(status),
            card_cards::cancel_reason.eq(cancel_reason),
            card_cards::updated_at.eq(now),
        ))
        .execute(conn)
        .await
        .map(drop)
}

pub async fn set_controls(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    controls: &serde_json::Value,
    now: DateTime<Utc>,
) -> QueryResult<()> {
    diesel::update(card_cards::table.find(id))
        .set((
            card_cards::controls.eq(controls),
            card_cards::updated_at.eq(now),
        ))
        .execute(conn)
        .await
        .map(drop)
}

/// Re-seals a card's number (key rotation); only when it is still sealed as `stale`.
pub async fn reseal(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    stale: &str,
    fresh: &str,
) -> QueryResult<bool> {
    diesel::update(
        card_vault::table
            .find(id)
            .filter(card_vault::pan_enc.eq(stale)),
    )
    .set(card_vault::pan_enc.eq(fresh))
    .execute(conn)
    .await
    .map(|n| n == 1)
}

/// A page of sealed numbers in card order after `after`, for re-sealing.
pub async fn vault_after(
    conn: &mut AsyncPgConnection,
    after: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<VaultRow>> {
    let mut query = card_vault::table
        .select(VaultRow::as_select())
        .order(card_vault::card_id.asc())
        .limit(limit)
        .into_boxed();
    if let Some(a) = after {
        query = query.filter(card_vault::card_id.gt(a));
    }
    query.load(conn).await
}

pub async fn insert_status_change(
    conn: &mut AsyncPgConnection,
    row: &StatusChangeRow<'_>,
) -> QueryResult<()> {
    diesel::insert_into(card_status_changes::table)
        .values(row)
        .execute(conn)
        .await
        .map(drop)
}

pub async fn insert_reveal(conn: &mut AsyncPgConnection, row: &RevealRow<'_>) -> QueryResult<()> {
    diesel::insert_into(card_reveals::table)
        .values(row)
        .execute(conn)
        .await
        .map(drop)
}

/// Reveals of `card` since `since`.
pub async fn reveals_since(
    conn: &mut AsyncPgConnection,
    card: Uuid,
    since: DateTime<Utc>,
) -> QueryResult<i64> {
    card_reveals::table
        .filter(card_reveals::card_id.eq(card))
        .filter(card_reveals::created_at.ge(since))
        .count()
        .get_result(conn)
        .await
}

mod authorizations;
pub use authorizations::*;
