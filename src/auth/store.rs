//! Diesel statements on auth's own tables (`auth_*`), and nothing else. Every query about a
//! partner's objects takes the partner id and filters by it.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Int4, Nullable, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::kernel::{ApiKeyId, PartnerId, UserId};
use crate::platform::db::schema::{
    auth_api_keys, auth_audit_log, auth_partners, auth_password_resets, auth_users,
};

diesel::define_sql_function! {
    /// PostgreSQL's lower(), for the case-insensitive email index.
    fn lower(x: diesel::sql_types::Text) -> diesel::sql_types::Text;
}

/// Name of the unique index that makes an email name one user.
pub const EMAIL_UNIQUE_INDEX: &str = "auth_users_email_key";

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = auth_partners, check_for_backend(diesel::pg::Pg))]
pub struct PartnerRow {
    pub id: PartnerId,
    pub name: String,
    pub email: String,
    pub status: String,
    pub rate_limit_per_hour: Option<i32>,
    pub key_rate_limit_per_hour: Option<i32>,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = auth_users, check_for_backend(diesel::pg::Pg))]
pub struct UserRow {
    pub id: UserId,
    pub partner_id: Option<PartnerId>,
    pub email: String,
    pub password_hash: String,
    pub role: String,
    pub failed_logins: i32,
    pub locked_until: Option<DateTime<Utc>>,
    pub password_changed_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for UserRow {
    /// Never prints the password hash.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRow")
            .field("id", &self.id)
            .field("partner_id", &self.partner_id)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = auth_api_keys, check_for_backend(diesel::pg::Pg))]
pub struct ApiKeyRow {
    pub id: ApiKeyId,
    pub partner_id: PartnerId,
    pub name: String,
    pub hint: String,
    pub secret_digest: Vec<u8>,
    pub scopes: Option<Vec<String>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = auth_password_resets, check_for_backend(diesel::pg::Pg))]
pub struct PasswordResetRow {
    pub id: uuid::Uuid,
    pub user_id: UserId,
    pub token_digest: Vec<u8>,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = auth_audit_log, check_for_backend(diesel::pg::Pg))]
pub struct AuditRow {
    pub id: uuid::Uuid,
    pub partner_id: Option<PartnerId>,
    pub actor_type: String,
    pub actor_id: Option<String>,
    pub action: String,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub ip: Option<String>,
    pub request_id: Option<String>,
    pub details: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

pub async fn insert_partner(conn: &mut AsyncPgConnection, row: &PartnerRow) -> QueryResult<()> {
    diesel::insert_into(auth_partners::table)
        .values(row)
        .execute(conn)
        .await
        .map(drop)
}

pub async fn find_partner(
    conn: &mut AsyncPgConnection,
    id: PartnerId,
) -> QueryResult<Option<PartnerRow>> {
    auth_partners::table
        .find(id)
        .select(PartnerRow::as_select())
        .first(conn)
        .await
        .optional()
}

pub async fn insert_user(conn: &mut AsyncPgConnection, row: &UserRow) -> QueryResult<()> {
    diesel::insert_into(auth_users::table)
        .values(row)
        .execute(conn)
        .await
        .map(drop)
}

/// A user and their partner (absent for platform admins), by case-insensitive email.
pub async fn find_user_by_email(
    conn: &mut AsyncPgConnection,
    email: &str,
) -> QueryResult<Option<(UserRow, Option<PartnerRow>)>> {
    auth_users::table
        .left_join(auth_partners::table)
        .filter(lower(auth_users::email).eq(email.to_lowercase()))
        .select((UserRow::as_select(), Option::<PartnerRow>::as_select()))
        .first(conn)
        .await
        .optional()
}

/// A user and their partner, by id.
pub async fn find_user(
    conn: &mut AsyncPgConnection,
    id: UserId,
) -> QueryResult<Option<(UserRow, Option<PartnerRow>)>> {
    auth_users::table
        .left_join(auth_partners::table)
        .filter(auth_users::id.eq(id))
        .select((UserRow::as_select(), Option::<PartnerRow>::as_select()))
        .first(conn)
        .await
        .optional()
}

pub async fn count_platform_admins(conn: &mut AsyncPgConnection) -> QueryResult<i64> {
    auth_users::table
        .filter(auth_users::role.eq("platform_admin"))
        .count()
        .get_result(conn)
        .await
}

#[derive(QueryableByName)]
pub struct LoginFailure {
    #[diesel(sql_type = Int4)]
    pub failed_logins: i32,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub locked_until: Option<DateTime<Utc>>,
}

/// Counts one wrong password atomically; at `threshold` in a row the account locks for
/// `lockout_secs`. Called only for accounts not currently locked (a lock is never extended by
/// more attempts); a failure after an expired lock starts counting afresh.
pub async fn record_login_failure(
    conn: &mut AsyncPgConnection,
    id: UserId,
    threshold: i32,
    lockout_secs: i32,
) -> QueryResult<LoginFailure> {
    // Every SET expression sees the row as it was, so `count` is computed once per branch.
    diesel::sql_query(
        "UPDATE auth_users SET \
           failed_logins = CASE WHEN locked_until IS NOT NULL THEN 1 ELSE failed_logins + 1 END, \
           locked_until = CASE \
             WHEN (CASE WHEN locked_until IS NOT NULL THEN 1 ELSE failed_logins + 1 END) >= $2 \
             THEN now() + make_interval(secs => $3) END, \
           updated_at = now() \
         WHERE id = $1 \
         RETURNING failed_logins, locked_until",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Int4, _>(threshold)
    .bind::<Int4, _>(lockout_secs)
    .get_result(conn)
    .await
}

/// A successful login clears the failure count; `rehash` replaces the stored hash when the
/// hashing parameters changed since it was made.
pub async fn record_login_success(
    conn: &mut AsyncPgConnection,
    id: UserId,
    rehash: Option<String>,
) -> QueryResult<()> {
    match rehash {
        Some(hash) => diesel::update(auth_users::table.find(id))
            .set((
                auth_users::failed_logins.eq(0),
                auth_users::locked_until.eq(None::<DateTime<Utc>>),
                auth_users::password_hash.eq(hash),
                auth_users::updated_at.eq(Utc::now()),
            ))
            .execute(conn)
            .await
            .map(drop),
        None => diesel::update(auth_users::table.find(id))
            .filter(auth_users::failed_logins.ne(0))
            .set((
                auth_users::failed_logins.eq(0),
                auth_users::locked_until.eq(None::<DateTime<Utc>>),
            ))
            .execute(conn)
            .await
            .map(drop),
    }
}

/// A new password also lifts any lockout and ends every session made with the old one.
pub async fn set_password(conn: &mut AsyncPgConnection, id: UserId, hash: &str) -> QueryResult<()> {
    let now = Utc::now();
    diesel::update(auth_users::table.find(id))
        .set((
            auth_users::password_hash.eq(hash),
            auth_users::failed_logins.eq(0),
            auth_users::locked_until.eq(None::<DateTime<Utc>>),
            auth_users::password_changed_at.eq(now),
            auth_users::updated_at.eq(now),
        ))
        .execute(conn)
        .await
        .map(drop)
}

pub async fn insert_api_key(conn: &mut AsyncPgConnection, row: &ApiKeyRow) -> QueryResult<()> {
    diesel::insert_into(auth_api_keys::table)
        .values(row)
        .execute(conn)
        .await
        .map(drop)
}

/// The key with this digest and its partner, revoked or not (the caller decides).
pub async fn find_api_key_by_digest(
    conn: &mut AsyncPgConnection,
    digest: &[u8],
) -> QueryResult<Option<(ApiKeyRow, PartnerRow)>> {
    auth_api_keys::table
        .inner_join(auth_partners::table)
        .filter(auth_api_keys::secret_digest.eq(digest))
        .select((ApiKeyRow::as_select(), PartnerRow::as_select()))
        .first(conn)
        .await
        .optional()
}

/// A partner's keys, newest first, after `before` (a cursor), at most `limit`.
pub async fn list_api_keys(
    conn: &mut AsyncPgConnection,
    partner: PartnerId,
    before: Option<ApiKeyId>,
    limit: i64,
) -> QueryResult<Vec<ApiKeyRow>> {
    let mut query = auth_api_keys::table
        .filter(auth_api_keys::partner_id.eq(partner))
        .select(ApiKeyRow::as_select())
        .order(auth_api_keys::id.desc())
        .limit(limit)
        .into_boxed();
    if let Some(before) = before {
        query = query.filter(auth_api_keys::id.lt(before));
    }
    query.load(conn).await
}

pub async fn find_api_key(
    conn: &mut AsyncPgConnection,
    partner: PartnerId,
    id: ApiKeyId,
) -> QueryResult<Option<ApiKeyRow>> {
    auth_api_keys::table
        .filter(auth_api_keys::id.eq(id))
        .filter(auth_api_keys::partner_id.eq(partner))
        .select(ApiKeyRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// A key by id alone, for operators who name a key without its partner.
pub async fn find_api_key_any_partner(
    conn: &mut AsyncPgConnection,
    id: ApiKeyId,
) -> QueryResult<Option<ApiKeyRow>> {
    auth_api_keys::table
        .find(id)
        .select(ApiKeyRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// Revokes the partner's key unless already revoked; `false` when nothing changed.
pub async fn revoke_api_key(
    conn: &mut AsyncPgConnection,
    partner: PartnerId,
    id: ApiKeyId,
) -> QueryResult<bool> {
    diesel::update(auth_api_keys::table)
        .filter(auth_api_keys::id.eq(id))
        .filter(auth_api_keys::partner_id.eq(partner))
        .filter(auth_api_keys::revoked_at.is_null())
        .set(auth_api_keys::revoked_at.eq(Utc::now()))
        .execute(conn)
        .await
        .map(|n| n > 0)
}

/// Records use of a key, at most once a minute, so busy keys cost no write per request.
pub async fn touch_api_key(conn: &mut AsyncPgConnection, id: ApiKeyId) -> QueryResult<()> {
    let stale = Utc::now() - chrono::Duration::seconds(60);
    diesel::update(auth_api_keys::table.find(id))
        .filter(
            auth_api_keys::last_used_at
                .is_null()
                .or(auth_api_keys::last_used_at.lt(stale)),
        )
        .set(auth_api_keys::last_used_at.eq(Utc::now()))
        .execute(conn)
        .await
        .map(drop)
}

pub async fn insert_password_reset(
    conn: &mut AsyncPgConnection,
    row: &PasswordResetRow,
) -> QueryResult<()> {
    diesel::insert_into(auth_password_resets::table)
        .values(row)
        .execute(conn)
        .await
        .map(drop)
}

/// The reset with this digest, locked so it can be used once only.
pub async fn find_password_reset_for_update(
    conn: &mut AsyncPgConnection,
    digest: &[u8],
) -> QueryResult<Option<PasswordResetRow>> {
    auth_password_resets::table
        .filter(auth_password_resets::token_digest.eq(digest))
        .select(PasswordResetRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()
}

/// Uses up every open reset of the user (the one just redeemed and any older ones).
pub async fn use_password_resets(conn: &mut AsyncPgConnection, user: UserId) -> QueryResult<()> {
    diesel::update(auth_password_resets::table)
        .filter(auth_password_resets::user_id.eq(user))
        .filter(auth_password_resets::used_at.is_null())
        .set(auth_password_resets::used_at.eq(Utc::now()))
        .execute(conn)
        .await
        .map(drop)
}

pub async fn insert_audit(conn: &mut AsyncPgConnection, row: &AuditRow) -> QueryResult<()> {
    diesel::insert_into(auth_audit_log::table)
        .values(row)
        .execute(conn)
        .await
        .map(drop)
}
