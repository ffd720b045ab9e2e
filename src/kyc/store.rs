//! Statements on KYC's own tables (`kyc_*`). Personal data arrives here already sealed.

use chrono::{DateTime, NaiveDate, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Date, Text, Uuid as SqlUuid};
use diesel::upsert::excluded;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::platform::db::schema::{
    kyc_applications, kyc_customers, kyc_sanctions_entries, kyc_sanctions_lists, kyc_transitions,
    kyc_usage,
};

/// A customer as stored: personal fields are ciphertext.
#[derive(Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = kyc_customers, check_for_backend(diesel::pg::Pg), treat_none_as_null = true)]
pub struct CustomerRow {
    pub id: Uuid,
    pub partner_id: Uuid,
    pub external_id: Option<String>,
    pub email_enc: Option<String>,
    pub email_hash: Option<Vec<u8>>,
    pub first_name_enc: String,
    pub last_name_enc: String,
    pub date_of_birth_enc: String,
    pub address_enc: Option<String>,
    pub country: String,
    pub kyc_status: String,
    pub kyc_tier: i16,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for CustomerRow {
    /// Ids and status only: even ciphertext stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomerRow")
            .field("id", &self.id)
            .field("partner_id", &self.partner_id)
            .field("kyc_status", &self.kyc_status)
            .field("kyc_tier", &self.kyc_tier)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = kyc_applications, check_for_backend(diesel::pg::Pg), treat_none_as_null = true)]
pub struct ApplicationRow {
    pub id: Uuid,
    pub partner_id: Uuid,
    pub customer_id: Uuid,
    pub status: String,
    pub requested_tier: i16,
    pub granted_tier: Option<i16>,
    pub origin: String,
    pub document_enc: Option<String>,
    pub document_hash: Option<Vec<u8>>,
    pub outcome: serde_json::Value,
    pub submitted_by: String,
    pub last_actor: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for ApplicationRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApplicationRow")
            .field("id", &self.id)
            .field("customer_id", &self.customer_id)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = kyc_transitions, check_for_backend(diesel::pg::Pg))]
pub struct TransitionRow {
    #[diesel(skip_insertion)]
    pub id: i64,
    pub application_id: Uuid,
    pub from_status: Option<String>,
    pub to_status: String,
    pub actor: String,
    pub reason: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = kyc_sanctions_lists, check_for_backend(diesel::pg::Pg))]
pub struct ListRow {
    pub name: String,
    pub version: i64,
    pub format: String,
    pub entries: i32,
    pub sha256: String,
    pub loaded_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = kyc_sanctions_entries, check_for_backend(diesel::pg::Pg))]
pub struct EntryRow {
    #[diesel(skip_insertion)]
    pub id: i64,
    pub list_name: String,
    pub reference: String,
    pub name: String,
    pub aliases: Vec<String>,
    pub date_of_birth: Option<String>,
    pub country: Option<String>,
    pub program: Option<String>,
    pub kind: String,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = kyc_usage, check_for_backend(diesel::pg::Pg))]
pub struct UsageRow {
    pub customer_id: Uuid,
    pub currency: String,
    pub day: NaiveDate,
    pub day_total: i64,
    pub month: NaiveDate,
    pub month_total: i64,
}

// ----- customers -------------------------------------------------------------------------------

pub async fn insert_customer(conn: &mut AsyncPgConnection, row: &CustomerRow) -> QueryResult<()> {
    diesel::insert_into(kyc_customers::table)
        .values(row)
        .execute(conn)
        .await
        .map(drop)
}

pub async fn find_customer(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> QueryResult<Option<CustomerRow>> {
    kyc_customers::table
        .find(id)
        .select(CustomerRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// The customer, locked against concurrent KYC changes until the transaction ends.
pub async fn lock_customer(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> QueryResult<Option<CustomerRow>> {
    kyc_customers::table
        .find(id)
        .select(CustomerRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()
}

/// The customer, read for a money decision: shared lock, so a KYC change waits for the
/// movement's transaction (and the other way round).
pub async fn share_customer(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> QueryResult<Option<CustomerRow>> {
    kyc_customers::table
        .find(id)
        .select(CustomerRow::as_select())
        .for_share()
        .first(conn)
        .await
        .optional()
}

/// Several customers, locked against change (tier, status) until the transaction ends; taken
/// in id order, so two transactions locking overlapping sets never wait on each other in a
/// cycle.
pub async fn share_customers(
    conn: &AsyncPgConnection,
    ids: &[Uuid],
) -> QueryResult<Vec<CustomerRow>> {
    kyc_customers::table
        .filter(kyc_customers::id.eq_any(ids))
        .order(kyc_customers::id)
        .select(CustomerRow::as_select())
        .for_share()
        .load(&mut { conn })
        .await
}

/// Customers, newest first, filtered by partner (none: every partner), exact external id
/// and email hash; `before` is the cursor.
pub async fn list_customers(
    conn: &mut AsyncPgConnection,
    partner: Option<Uuid>,
    external_id: Option<&str>,
    email_hash: Option<&[u8]>,
    before: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<CustomerRow>> {
    let mut query = kyc_customers::table
        .select(CustomerRow::as_select())
        .order(kyc_customers::id.desc())
        .limit(limit)
        .into_boxed();
    if let Some(p) = partner {
        query = query.filter(kyc_customers::partner_id.eq(p));
    }
    if let Some(e) = external_id {
        query = query.filter(kyc_customers::external_id.eq(e));
    }
    if let Some(h) = email_hash {
        query = query.filter(kyc_customers::email_hash.eq(h));
    }
    if let Some(b) = before {
        query = query.filter(kyc_customers::id.lt(b));
    }
    query.load(conn).await
}

pub async fn update_customer(conn: &mut AsyncPgConnection, row: &CustomerRow) -> QueryResult<()> {
    diesel::update(kyc_customers::table.find(row.id))
        .set(row)
        .execute(conn)
        .await
        .map(drop)
}

/// Approved customers after `after`, by id, for re-screening in batches.
pub async fn approved_customers(
    conn: &mut AsyncPgConnection,
    after: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<CustomerRow>> {
    let mut query = kyc_customers::table
        .select(CustomerRow::as_select())
        .filter(kyc_customers::kyc_tier.gt(0))
        .order(kyc_customers::id.asc())
        .limit(limit)
        .into_boxed();
    if let Some(a) = after {
        query = query.filter(kyc_customers::id.gt(a));
    }
    query.load(conn).await
}

/// Every customer after `after`, by id, in batches (re-encryption).
pub async fn customers_after(
    conn: &mut AsyncPgConnection,
    after: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<CustomerRow>> {
    let mut query = kyc_customers::table
        .select(CustomerRow::as_select())
        .order(kyc_customers::id.asc())
        .limit(limit)
        .into_boxed();
    if let Some(a) = after {
        query = query.filter(kyc_customers::id.gt(a));
    }
    query.load(conn).await
}

// ----- applications ------------------------------------------------------------------------------

pub async fn insert_application(
    conn: &mut AsyncPgConnection,
    row: &ApplicationRow,
) -> QueryResult<()> {
    diesel::insert_into(kyc_applications::table)
        .values(row)
        .execute(conn)
        .await
        .map(drop)
}

pub async fn update_application(
    conn: &mut AsyncPgConnection,
    row: &ApplicationRow,
) -> QueryResult<()> {
    diesel::update(kyc_applications::table.find(row.id))
        .set(row)
        .execute(conn)
        .await
        .map(drop)
}

pub async fn find_application(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> QueryResult<Option<ApplicationRow>> {
    kyc_applications::table
        .find(id)
        .select(ApplicationRow::as_select())
        .first(conn)
        .await
        .optional()
}

pub async fn lock_application(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> QueryResult<Option<ApplicationRow>> {
    kyc_applications::table
        .find(id)
        .select(ApplicationRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()
}

/// The customer's open application (pending, awaiting documents or in review), if any.
pub async fn open_application(
    conn: &mut AsyncPgConnection,
    customer: Uuid,
) -> QueryResult<Option<ApplicationRow>> {
    kyc_applications::table
        .filter(kyc_applications::customer_id.eq(customer))
        .filter(kyc_applications::status.eq_any(["pending", "awaiting_documents", "review"]))
        .select(ApplicationRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()
}

/// The customer's latest application.
pub async fn latest_application(
    conn: &mut AsyncPgConnection,
    customer: Uuid,
) -> QueryResult<Option<ApplicationRow>> {
    kyc_applications::table
        .filter(kyc_applications::customer_id.eq(customer))
        .order(kyc_applications::id.desc())
        .select(ApplicationRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// Applications, newest first, by partner (none: all) and status.
pub async fn list_applications(
    conn: &mut AsyncPgConnection,
    partner: Option<Uuid>,
    status: Option<&str>,
    before: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<ApplicationRow>> {
    let mut query = kyc_applications::table
        .select(ApplicationRow::as_select())
        .order(kyc_applications::id.desc())
        .limit(limit)
        .into_boxed();
    if let Some(p) = partner {
        query = query.filter(kyc_applications::partner_id.eq(p));
    }
    if let Some(s) = status {
        query = query.filter(kyc_applications::status.eq(s));
    }
    if let Some(b) = before {
        query = query.filter(kyc_applications::id.lt(b));
    }
    query.load(conn).await
}

/// Another customer of the same partner whose application carries the same document.
pub async fn customer_with_document(
    conn: &mut AsyncPgConnection,
    partner: Uuid,
    document_hash: &[u8],
    except_customer: Uuid,
) -> QueryResult<Option<Uuid>> {
    kyc_applications::table
        .filter(kyc_applications::partner_id.eq(partner))
        .filter(kyc_applications::document_hash.eq(document_hash))
        .filter(kyc_applications::customer_id.ne(except_customer))
        .select(kyc_applications::customer_id)
        .order(kyc_applications::id.asc())
        .first(conn)
        .await
        .optional()
}

/// Applications after `after`, by id, in batches (re-encryption).
pub async fn applications_after(
    conn: &mut AsyncPgConnection,
    after: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<ApplicationRow>> {
    let mut query = kyc_applications::table
        .select(ApplicationRow::as_select())
        .order(kyc_applications::id.asc())
        .limit(limit)
        .into_boxed();
    if let Some(a) = after {
        query = query.filter(kyc_applications::id.gt(a));
    }
    query.load(conn).await
}

pub async fn insert_transition(
    conn: &mut AsyncPgConnection,
    application: Uuid,
    from: Option<&str>,
    to: &str,
    actor: &str,
    reason: &str,
    at: DateTime<Utc>,
) -> QueryResult<()> {
    diesel::insert_into(kyc_transitions::table)
        .values((
            kyc_transitions::application_id.eq(application),
            kyc_transitions::from_status.eq(from),
            kyc_transitions::to_status.eq(to),
            kyc_transitions::actor.eq(actor),
            kyc_transitions::reason.eq(reason),
            kyc_transitions::created_at.eq(at),
        ))
        .execute(conn)
        .await
        .map(drop)
}

/// Transitions of the given applications, oldest first.
pub async fn transitions(
    conn: &mut AsyncPgConnection,
    applications: &[Uuid],
) -> QueryResult<Vec<TransitionRow>> {
    kyc_transitions::table
        .filter(kyc_transitions::application_id.eq_any(applications))
        .order(kyc_transitions::id.asc())
        .select(TransitionRow::as_select())
        .load(conn)
        .await
}

// ----- sanctions lists ---------------------------------------------------------------------------

/// Replaces a list's entries as a whole; returns the new global version.
pub async fn replace_list(
    conn: &mut AsyncPgConnection,
    name: &str,
    format: &str,
    sha256: &str,
    entries: &[EntryRow],
    at: DateTime<Utc>,
) -> QueryResult<i64> {
    let version: i64 = kyc_sanctions_lists::table
        .select(diesel::dsl::max(kyc_sanctions_lists::version))
        .first::<Option<i64>>(conn)
        .await?
        .unwrap_or(0)
        .saturating_add(1);
    let count = i32::try_from(entries.len()).unwrap_or(i32::MAX);
    diesel::insert_into(kyc_sanctions_lists::table)
        .values((
            kyc_sanctions_lists::name.eq(name),
            kyc_sanctions_lists::version.eq(version),
            kyc_sanctions_lists::format.eq(format),
            kyc_sanctions_lists::entries.eq(count),
            kyc_sanctions_lists::sha256.eq(sha256),
            kyc_sanctions_lists::loaded_at.eq(at),
        ))
        .on_conflict(kyc_sanctions_lists::name)
        .do_update()
        .set((
            kyc_sanctions_lists::version.eq(excluded(kyc_sanctions_lists::version)),
            kyc_sanctions_lists::format.eq(excluded(kyc_sanctions_lists::format)),
            kyc_sanctions_lists::entries.eq(excluded(kyc_sanctions_lists::entries)),
            kyc_sanctions_lists::sha256.eq(excluded(kyc_sanctions_lists::sha256)),
            kyc_sanctions_lists::loaded_at.eq(excluded(kyc_sanctions_lists::loaded_at)),
        ))
        .execute(conn)
        .await?;
    diesel::delete(kyc_sanctions_entries::table.filter(kyc_sanctions_entries::list_name.eq(name)))
        .execute(conn)
        .await?;
    // Bind parameters are limited to 65535 per statement: 8 columns per row.
    for chunk in entries.chunks(4000) {
        diesel::insert_into(kyc_sanctions_entries::table)
            .values(chunk)
            .execute(conn)
            .await?;
    }
    Ok(version)
}

pub async fn lists(conn: &mut AsyncPgConnection) -> QueryResult<Vec<ListRow>> {
    kyc_sanctions_lists::table
        .order(kyc_sanctions_lists::name.asc())
        .select(ListRow::as_select())
        .load(conn)
        .await
}

/// The highest list version: changes on every load, so caches know when to reload.
pub async fn lists_version(conn: &mut AsyncPgConnection) -> QueryResult<i64> {
    Ok(kyc_sanctions_lists::table
        .select(diesel::dsl::max(kyc_sanctions_lists::version))
        .first::<Option<i64>>(conn)
        .await?
        .unwrap_or(0))
}

pub async fn all_entries(conn: &mut AsyncPgConnection) -> QueryResult<Vec<EntryRow>> {
    kyc_sanctions_entries::table
        .order(kyc_sanctions_entries::id.asc())
        .select(EntryRow::as_select())
        .load(conn)
        .await
}

// ----- usage -------------------------------------------------------------------------------------

/// The customer's usage row in `currency`, created if missing, locked until the transaction
/// ends (so two movements of one customer cannot both spend the same remaining limit).
/// The customer's counters in `currency`, created if missing, locked until the transaction
/// ends: one statement (an upsert whose no-op update takes the row lock and returns the row).
pub async fn lock_usage(
    conn: &mut AsyncPgConnection,
    customer: Uuid,
    currency: &str,
    today: NaiveDate,
    month: NaiveDate,
) -> QueryResult<UsageRow> {
    diesel::insert_into(kyc_usage::table)
        .values(UsageRow {
            customer_id: customer,
            currency: currency.to_owned(),
            day: today,
            day_total: 0,
            month,
            month_total: 0,
        })
        .on_conflict((kyc_usage::customer_id, kyc_usage::currency))
        .do_update()
        .set(kyc_usage::customer_id.eq(excluded(kyc_usage::customer_id)))
        .returning(UsageRow::as_returning())
        .get_result(conn)
        .await
}

crate::prepared_statement! {
    /// Locks (creating when missing) several customers' counters (see [`lock_usages`]).
    LockUsages -> (SqlUuid, Text, Date, BigInt, Date, BigInt) {
        customers: Vec<Uuid> => Array<SqlUuid>,
        currencies: Vec<String> => Array<Text>,
        days: Vec<NaiveDate> => Array<Date>,
        months: Vec<NaiveDate> => Array<Date>,
    }
    "INSERT INTO kyc_usage AS u (customer_id, currency, day, day_total, month, month_total) \
     SELECT n.customer_id, n.currency, n.day, 0, n.month, 0 \
     FROM unnest(??::uuid[], ??::text[], ??::date[], ??::date[]) \
          AS n(customer_id, currency, day, month) \
     WHERE EXISTS (SELECT 1 FROM kyc_customers c WHERE c.id = n.customer_id) \
     ORDER BY n.customer_id, n.currency \
     ON CONFLICT (customer_id, currency) DO UPDATE SET customer_id = excluded.customer_id \
     RETURNING u.customer_id, u.currency, u.day, u.day_total, u.month, u.month_total"
}

crate::prepared_statement! {
    /// Stores several customers' counters (see [`save_usages`]).
    SaveUsages -> BigInt {
        customers: Vec<Uuid> => Array<SqlUuid>,
        currencies: Vec<String> => Array<Text>,
        days: Vec<NaiveDate> => Array<Date>,
        day_totals: Vec<i64> => Array<BigInt>,
        months: Vec<NaiveDate> => Array<Date>,
        month_totals: Vec<i64> => Array<BigInt>,
    }
    "UPDATE kyc_usage u SET day = n.day, day_total = n.day_total, month = n.month, \
         month_total = n.month_total \
     FROM unnest(??::uuid[], ??::text[], ??::date[], ??::bigint[], ??::date[], ??::bigint[]) \
          AS n(customer_id, currency, day, day_total, month, month_total) \
     WHERE u.customer_id = n.customer_id AND u.currency = n.currency"
}

/// [`lock_usage`] for several customers and currencies in one statement. `rows` must be
/// distinct by (customer, currency) and sorted, so row locks are taken in a global order.
/// Customers that do not exist get no row (and no error): their movements are refused.
pub async fn lock_usages(
    conn: &AsyncPgConnection,
    rows: &[UsageRow],
) -> QueryResult<Vec<UsageRow>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    LockUsages {
        customers: rows.iter().map(|r| r.customer_id).collect(),
        currencies: rows.iter().map(|r| r.currency.clone()).collect(),
        days: rows.iter().map(|r| r.day).collect(),
        months: rows.iter().map(|r| r.month).collect(),
    }
    .load(&mut { conn })
    .await
}

/// [`save_usage`] for several rows (already locked by [`lock_usages`]) in one statement.
pub async fn save_usages(conn: &mut AsyncPgConnection, rows: &[UsageRow]) -> QueryResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    SaveUsages {
        customers: rows.iter().map(|r| r.customer_id).collect(),
        currencies: rows.iter().map(|r| r.currency.clone()).collect(),
        days: rows.iter().map(|r| r.day).collect(),
        day_totals: rows.iter().map(|r| r.day_total).collect(),
        months: rows.iter().map(|r| r.month).collect(),
        month_totals: rows.iter().map(|r| r.month_total).collect(),
    }
    .execute(conn)
    .await
    .map(drop)
}

pub async fn save_usage(conn: &mut AsyncPgConnection, row: &UsageRow) -> QueryResult<()> {
    diesel::update(kyc_usage::table.find((row.customer_id, row.currency.clone())))
        .set(row)
        .execute(conn)
        .await
        .map(drop)
}
