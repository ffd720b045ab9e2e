//! Statements on the wallet module's own tables (`wallet_*`).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::platform::db::schema::{wallet_status_changes, wallet_wallets};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = wallet_wallets, check_for_backend(diesel::pg::Pg))]
pub struct WalletRow {
    pub id: Uuid,
    pub partner_id: Uuid,
    pub customer_id: Uuid,
    pub account_id: Uuid,
    pub currency: String,
    pub kind: String,
    pub status: String,
    pub freeze_mode: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = wallet_status_changes)]
pub struct StatusChangeRow<'a> {
    pub wallet_id: Uuid,
    pub from_status: Option<&'a str>,
    pub to_status: &'a str,
    pub freeze_mode: Option<&'a str>,
    pub reason: &'a str,
    pub actor: &'a str,
    pub created_at: DateTime<Utc>,
}

pub async fn insert_wallet(conn: &mut AsyncPgConnection, row: &WalletRow) -> QueryResult<()> {
    diesel::insert_into(wallet_wallets::table)
        .values(row)
        .execute(conn)
        .await
        .map(drop)
}

pub async fn find_wallet(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Option<WalletRow>> {
    wallet_wallets::table
        .find(id)
        .select(WalletRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// The wallets among `ids`.
pub async fn find_wallets(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
) -> QueryResult<Vec<WalletRow>> {
    wallet_wallets::table
        .filter(wallet_wallets::id.eq_any(ids))
        .select(WalletRow::as_select())
        .load(conn)
        .await
}

/// The wallet, locked until the transaction ends (status changes).
pub async fn lock_wallet(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Option<WalletRow>> {
    wallet_wallets::table
        .find(id)
        .select(WalletRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()
}

/// Wallets, newest first, of a partner (none: every partner), optionally of one customer.
pub async fn list_wallets(
    conn: &mut AsyncPgConnection,
    partner: Option<Uuid>,
    customer: Option<Uuid>,
    before: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<WalletRow>> {
    let mut query = wallet_wallets::table
        .select(WalletRow::as_select())
        .order(wallet_wallets::id.desc())
        .limit(limit)
        .into_boxed();
    if let Some(p) = partner {
        query = query.filter(wallet_wallets::partner_id.eq(p));
    }
    if let Some(c) = customer {
        query = query.filter(wallet_wallets::customer_id.eq(c));
    }
    if let Some(b) = before {
        query = query.filter(wallet_wallets::id.lt(b));
    }
    query.load(conn).await
}

/// The wallets owning any of these ledger accounts.
pub async fn wallets_of_accounts(
    conn: &mut AsyncPgConnection,
    accounts: &[Uuid],
) -> QueryResult<Vec<WalletRow>> {
    wallet_wallets::table
        .filter(wallet_wallets::account_id.eq_any(accounts))
        .select(WalletRow::as_select())
        .load(conn)
        .await
}

pub async fn set_status(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    status: &str,
    freeze_mode: Option<&str>,
    now: DateTime<Utc>,
) -> QueryResult<()> {
    diesel::update(wallet_wallets::table.find(id))
        .set((
            wallet_wallets::status.eq(status),
            wallet_wallets::freeze_mode.eq(freeze_mode),
            wallet_wallets::updated_at.eq(now),
        ))
        .execute(conn)
        .await
        .map(drop)
}

pub async fn insert_status_change(
    conn: &mut AsyncPgConnection,
    row: &StatusChangeRow<'_>,
) -> QueryResult<()> {
    diesel::insert_into(wallet_status_changes::table)
        .values(row)
        .execute(conn)
        .await
        .map(drop)
}

/// A wallet's status history, oldest first.
pub async fn status_changes(
    conn: &mut AsyncPgConnection,
    wallet: Uuid,
) -> QueryResult<
    Vec<(
        Option<String>,
        String,
        Option<String>,
        String,
        String,
        DateTime<Utc>,
    )>,
> {
    wallet_status_changes::table
        .filter(wallet_status_changes::wallet_id.eq(wallet))
        .order(wallet_status_changes::id.asc())
        .select((
            wallet_status_changes::from_status,
            wallet_status_changes::to_status,
            wallet_status_changes::freeze_mode,
            wallet_status_changes::reason,
            wallet_status_changes::actor,
            wallet_status_changes::created_at,
        ))
        .load(conn)
        .await
}
