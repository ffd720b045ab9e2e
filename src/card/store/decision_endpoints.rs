//! Statements on `card_decision_endpoints`, the partners' real-time decision endpoints.
//!
//! A store file of its own (`store/`, beside `store.rs`), declared by `partner.rs`, which is its
//! only caller: the house rule is that only a module's store names its tables, and keeping
//! these statements out of `store.rs` keeps the endpoint's code in one place.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::platform::db::schema::card_decision_endpoints;

/// A partner's endpoint as stored; `secret_enc` is the vault-sealed `whsec_` secret.
#[derive(Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = card_decision_endpoints, check_for_backend(diesel::pg::Pg))]
pub struct DecisionEndpointRow {
    pub partner_id: Uuid,
    pub url: String,
    pub secret_enc: String,
    pub fallback: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Inserts the partner's endpoint, or replaces its URL, secret and fallback (keeping when it
/// was first created); the row as stored.
pub async fn upsert(
    conn: &mut AsyncPgConnection,
    row: &DecisionEndpointRow,
) -> QueryResult<DecisionEndpointRow> {
    use card_decision_endpoints::dsl as d;
    diesel::insert_into(d::card_decision_endpoints)
        .values(row)
        .on_conflict(d::partner_id)
        .do_update()
        .set((
            d::url.eq(excluded(d::url)),
            d::secret_enc.eq(excluded(d::secret_enc)),
            d::fallback.eq(excluded(d::fallback)),
            d::updated_at.eq(excluded(d::updated_at)),
        ))
        .returning(DecisionEndpointRow::as_returning())
        .get_result(conn)
        .await
}

pub async fn find(
    conn: &mut AsyncPgConnection,
    partner: Uuid,
) -> QueryResult<Option<DecisionEndpointRow>> {
    card_decision_endpoints::table
        .find(partner)
        .select(DecisionEndpointRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// Deletes the partner's endpoint; whether there was one.
pub async fn delete(conn: &mut AsyncPgConnection, partner: Uuid) -> QueryResult<bool> {
    diesel::delete(card_decision_endpoints::table.find(partner))
        .execute(conn)
        .await
        .map(|n| n > 0)
}

/// Up to `limit` endpoints after `after` in partner order (for re-sealing after a key rotation).
pub async fn after(
    conn: &mut AsyncPgConnection,
    after: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<DecisionEndpointRow>> {
    use card_decision_endpoints::dsl as d;
    let mut query = d::card_decision_endpoints
        .select(DecisionEndpointRow::as_select())
        .order(d::partner_id)
        .limit(limit)
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(d::partner_id.gt(after));
    }
    query.load(conn).await
}

/// Replaces a sealed secret with the same secret sealed under the active key, only if it is
/// still `old` (a PUT in between rotated it: the new one is already under the active key).
pub async fn reseal(
    conn: &mut AsyncPgConnection,
    partner: Uuid,
    old: &str,
    fresh: &str,
) -> QueryResult<bool> {
    use card_decision_endpoints::dsl as d;
    diesel::update(
        d::card_decision_endpoints
            .filter(d::partner_id.eq(partner))
            .filter(d::secret_enc.eq(old)),
    )
    .set(d::secret_enc.eq(fresh))
    .execute(conn)
    .await
    .map(|n| n > 0)
}
