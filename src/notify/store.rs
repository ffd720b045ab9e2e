//! Statements on notify's own tables (`notify_*`): events and their fan-out to deliveries,
//! endpoints, attempts, and the email outbox.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Int4, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::platform::db::schema::{
    notify_attempts, notify_emails, notify_endpoints, notify_events,
};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = notify_events, check_for_backend(diesel::pg::Pg))]
pub struct EventRow {
    pub id: Uuid,
    pub partner_id: Option<Uuid>,
    pub event_type: String,
    pub data: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = notify_endpoints, check_for_backend(diesel::pg::Pg))]
pub struct EndpointRow {
    pub id: Uuid,
    pub partner_id: Uuid,
    pub url: String,
    pub description: Option<String>,
    pub event_filters: Vec<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub alert_email: Option<String>,
    pub failing_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for EndpointRow {
    /// Never prints the signing secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointRow")
            .field("id", &self.id)
            .field("partner_id", &self.partner_id)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = notify_attempts, check_for_backend(diesel::pg::Pg))]
pub struct AttemptRow {
    pub id: Uuid,
    pub delivery_id: Uuid,
    pub endpoint_id: Uuid,
    pub event_id: Uuid,
    pub attempt: i32,
    pub status_code: Option<i32>,
    pub latency_ms: i32,
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
    pub created_at: DateTime<Utc>,
}

crate::prepared_statement! {
    /// Events and their deliveries (see [`insert_events`]).
    InsertEvents -> BigInt {
        ids: Vec<Uuid> => Array<SqlUuid>,
        partners: Vec<Option<Uuid>> => Array<Nullable<SqlUuid>>,
        types: Vec<String> => Array<Text>,
        data: Vec<serde_json::Value> => Array<Jsonb>,
        at: Vec<DateTime<Utc>> => Array<Timestamptz>,
    }
    "WITH new AS (SELECT * FROM unnest(??::uuid[], ??::uuid[], ??::text[], ??::jsonb[], ??::timestamptz[]) \
                  AS n(id, partner_id, type, data, created_at)), \
          ev AS (INSERT INTO notify_events (id, partner_id, type, data, created_at) \
                 SELECT id, partner_id, type, data, created_at FROM new RETURNING id), \
          d AS (INSERT INTO notify_deliveries (id, event_id, endpoint_id, status, next_attempt_at, created_at) \
                SELECT gen_random_uuid(), n.id, e.id, 'pending', n.created_at, n.created_at \
                FROM new n JOIN notify_endpoints e ON e.partner_id = n.partner_id \
                WHERE e.enabled AND e.deleted_at IS NULL \
                  AND EXISTS (SELECT 1 FROM unnest(e.event_filters) f \
                              WHERE f = '*' OR f = n.type \
                                 OR (right(f, 2) = '.*' AND starts_with(n.type, left(f, -1)))) \
                RETURNING 1) \
     SELECT count(*) FROM d"
}

/// Records events and, in the same prepared statement, one pending delivery per enabled
/// endpoint of each event's partner whose filters match its type (exact, `prefix.*`, or `*`).
/// The ids must be distinct. Returns how many deliveries were queued.
pub async fn insert_events(conn: &AsyncPgConnection, events: Vec<EventRow>) -> QueryResult<i64> {
    if events.is_empty() {
        return Ok(0);
    }
    let mut statement = InsertEvents {
        ids: Vec::with_capacity(events.len()),
        partners: Vec::with_capacity(events.len()),
        types: Vec::with_capacity(events.len()),
        data: Vec::with_capacity(events.len()),
        at: Vec::with_capacity(events.len()),
    };
    for e in events {
        statement.ids.push(e.id);
        statement.partners.push(e.partner_id);
        statement.types.push(e.event_type);
        statement.data.push(e.data);
        statement.at.push(e.created_at);
    }
    statement.get_result(&mut { conn }).await
}

/// Queues a delivery of `event` to exactly one endpoint (test events, replays).
pub async fn insert_delivery(
    conn: &mut AsyncPgConnection,
    event: Uuid,
    endpoint: Uuid,
    now: DateTime<Utc>,
) -> QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO notify_deliveries (id, event_id, endpoint_id, status, next_attempt_at, created_at) \
         VALUES (gen_random_uuid(), $1, $2, 'pending', $3, $3)",
    )
    .bind::<SqlUuid, _>(event)
    .bind::<SqlUuid, _>(endpoint)
    .bind::<Timestamptz, _>(now)
    .execute(conn)
    .await
    .map(drop)
}

/// Inserts a bare event row (no fan-out).
pub async fn insert_event_only(conn: &mut AsyncPgConnection, event: &EventRow) -> QueryResult<()> {
    diesel::insert_into(notify_events::table)
        .values(event)
        .execute(conn)
        .await
        .map(drop)
}

pub async fn find_event(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<Option<EventRow>> {
    notify_events::table
        .find(id)
        .select(EventRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// A partner's events, newest first, optionally of one type.
pub async fn list_events(
    conn: &mut AsyncPgConnection,
    partner: Uuid,
    event_type: Option<&str>,
    before: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<EventRow>> {
    let mut query = notify_events::table
        .filter(notify_events::partner_id.eq(partner))
        .select(EventRow::as_select())
        .order(notify_events::id.desc())
        .limit(limit)
        .into_boxed();
    if let Some(t) = event_type {
        query = query.filter(notify_events::event_type.eq(t.to_owned()));
    }
    if let Some(before) = before {
        query = query.filter(notify_events::id.lt(before));
    }
    query.load(conn).await
}

pub async fn insert_endpoint(conn: &mut AsyncPgConnection, row: &EndpointRow) -> QueryResult<()> {
    diesel::insert_into(notify_endpoints::table)
        .values(row)
        .execute(conn)
        .await
        .map(drop)
}

/// A partner's endpoint (not deleted).
pub async fn find_endpoint(
    conn: &mut AsyncPgConnection,
    partner: Uuid,
    id: Uuid,
) -> QueryResult<Option<EndpointRow>> {
    notify_endpoints::table
        .filter(notify_endpoints::id.eq(id))
        .filter(notify_endpoints::partner_id.eq(partner))
        .filter(notify_endpoints::deleted_at.is_null())
        .select(EndpointRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// An endpoint of any partner (operators' replays).
pub async fn find_endpoint_any(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> QueryResult<Option<EndpointRow>> {
    notify_endpoints::table
        .find(id)
        .filter(notify_endpoints::deleted_at.is_null())
        .select(EndpointRow::as_select())
        .first(conn)
        .await
        .optional()
}

pub async fn list_endpoints(
    conn: &mut AsyncPgConnection,
    partner: Uuid,
    before: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<EndpointRow>> {
    let mut query = notify_endpoints::table
        .filter(notify_endpoints::partner_id.eq(partner))
        .filter(notify_endpoints::deleted_at.is_null())
        .select(EndpointRow::as_select())
        .order(notify_endpoints::id.desc())
        .limit(limit)
        .into_boxed();
    if let Some(before) = before {
        query = query.filter(notify_endpoints::id.lt(before));
    }
    query.load(conn).await
}

/// Applies a partial update; `None` leaves a field as it is.
pub async fn update_endpoint(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    url: Option<String>,
    filters: Option<Vec<String>>,
    description: Option<Option<String>>,
    enabled: Option<bool>,
    now: DateTime<Utc>,
) -> QueryResult<()> {
    diesel::sql_query(
        "UPDATE notify_endpoints SET \
           url = COALESCE($2, url), \
           event_filters = COALESCE($3, event_filters), \
           description = CASE WHEN $4 THEN $5 ELSE description END, \
           enabled = COALESCE($6, enabled), \
           disabled_reason = CASE WHEN $6 IS TRUE THEN NULL ELSE disabled_reason END, \
           failing_since = CASE WHEN $6 IS TRUE THEN NULL ELSE failing_since END, \
           updated_at = $7 \
         WHERE id = $1",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Nullable<Text>, _>(url)
    .bind::<Nullable<Array<Text>>, _>(filters)
    .bind::<diesel::sql_types::Bool, _>(description.is_some())
    .bind::<Nullable<Text>, _>(description.flatten())
    .bind::<Nullable<diesel::sql_types::Bool>, _>(enabled)
    .bind::<Timestamptz, _>(now)
    .execute(conn)
    .await
    .map(drop)
}

/// Soft-deletes an endpoint (its attempts stay for the record) and skips what it still owed.
pub async fn delete_endpoint(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    now: DateTime<Utc>,
) -> QueryResult<()> {
    diesel::sql_query(
        "WITH d AS (UPDATE notify_endpoints SET deleted_at = $2, enabled = false, updated_at = $2 WHERE id = $1) \
         UPDATE notify_deliveries SET status = 'skipped', completed_at = $2 \
         WHERE endpoint_id = $1 AND status = 'pending'",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Timestamptz, _>(now)
    .execute(conn)
    .await
    .map(drop)
}

/// A new current secret; the old one keeps signing until `previous_expires_at`.
pub async fn rotate_secret(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    new_secret: &str,
    previous_expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> QueryResult<()> {
    diesel::sql_query(
        "UPDATE notify_endpoints SET previous_secret = secret, previous_secret_expires_at = $3, \
                secret = $2, updated_at = $4 WHERE id = $1",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Text, _>(new_secret)
    .bind::<Timestamptz, _>(previous_expires_at)
    .bind::<Timestamptz, _>(now)
    .execute(conn)
    .await
    .map(drop)
}

/// An endpoint's attempts, newest first.
pub async fn list_attempts(
    conn: &mut AsyncPgConnection,
    endpoint: Uuid,
    before: Option<Uuid>,
    limit: i64,
) -> QueryResult<Vec<AttemptRow>> {
    let mut query = notify_attempts::table
        .filter(notify_attempts::endpoint_id.eq(endpoint))
        .select(AttemptRow::as_select())
        .order(notify_attempts::id.desc())
        .limit(limit)
        .into_boxed();
    if let Some(before) = before {
        query = query.filter(notify_attempts::id.lt(before));
    }
    query.load(conn).await
}

/// A claimed delivery with what it takes to send it.
#[derive(QueryableByName)]
pub struct ClaimedDelivery {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = Int4)]
    pub attempts: i32,
    #[diesel(sql_type = SqlUuid)]
    pub event_id: Uuid,
    #[diesel(sql_type = Text)]
    pub event_type: String,
    #[diesel(sql_type = Jsonb)]
    pub data: serde_json::Value,
    #[diesel(sql_type = Timestamptz)]
    pub event_created_at: DateTime<Utc>,
    #[diesel(sql_type = SqlUuid)]
    pub endpoint_id: Uuid,
    #[diesel(sql_type = Text)]
    pub url: String,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub enabled: bool,
    #[diesel(sql_type = Text)]
    pub secret: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub previous_secret: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
}

/// Leases up to `limit` due deliveries for `lease_secs`, skipping rows another worker holds.
/// A worker that dies mid-delivery leaves its lease to run out; another worker then retries.
pub async fn claim_deliveries(
    conn: &mut AsyncPgConnection,
    limit: i64,
    lease_secs: i32,
) -> QueryResult<Vec<ClaimedDelivery>> {
    diesel::sql_query(
        "WITH c AS ( \
           UPDATE notify_deliveries SET claimed_until = now() + make_interval(secs => $2) \
           WHERE id IN (SELECT id FROM notify_deliveries \
                        WHERE status = 'pending' AND next_attempt_at <= now() \
                          AND (claimed_until IS NULL OR claimed_until < now()) \
                        ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
           RETURNING id, attempts, event_id, endpoint_id) \
         SELECT c.id, c.attempts, c.event_id, ev.type AS event_type, ev.data, \
                ev.created_at AS event_created_at, c.endpoint_id, e.url, \
                (e.enabled AND e.deleted_at IS NULL) AS enabled, e.secret, e.previous_secret, \
                e.previous_secret_expires_at \
         FROM c JOIN notify_events ev ON ev.id = c.event_id JOIN notify_endpoints e ON e.id = c.endpoint_id",
    )
    .bind::<BigInt, _>(limit)
    .bind::<Int4, _>(lease_secs)
    .load(conn)
    .await
}

/// Records one attempt and moves the delivery on: succeeded, retried at `next_attempt_at`,
/// failed for good, or skipped (endpoint disabled). Also tracks the endpoint's health.
#[allow(clippy::too_many_arguments)]
pub async fn finish_attempt(
    conn: &mut AsyncPgConnection,
    attempt: &AttemptRow,
    outcome: &str,
    next_attempt_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> QueryResult<()> {
    diesel::insert_into(notify_attempts::table)
        .values(attempt)
        .execute(conn)
        .await?;
    diesel::sql_query(
        "WITH d AS (UPDATE notify_deliveries SET \
                      attempts = attempts + 1, last_attempt_at = $3, claimed_until = NULL, \
                      status = $2, \
                      next_attempt_at = COALESCE($4, next_attempt_at), \
                      completed_at = CASE WHEN $2 = 'pending' THEN NULL ELSE $3 END \
                    WHERE id = $1 RETURNING endpoint_id) \
         UPDATE notify_endpoints SET failing_since = CASE WHEN $5 THEN NULL \
                                                         ELSE COALESCE(failing_since, $3) END \
         WHERE id = (SELECT endpoint_id FROM d)",
    )
    .bind::<SqlUuid, _>(attempt.delivery_id)
    .bind::<Text, _>(outcome)
    .bind::<Timestamptz, _>(now)
    .bind::<Nullable<Timestamptz>, _>(next_attempt_at)
    .bind::<diesel::sql_types::Bool, _>(outcome == "succeeded")
    .execute(conn)
    .await
    .map(drop)
}

/// Marks a delivery skipped (its endpoint was disabled or deleted).
pub async fn skip_delivery(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    now: DateTime<Utc>,
) -> QueryResult<()> {
    diesel::sql_query(
        "UPDATE notify_deliveries SET status = 'skipped', completed_at = $2, claimed_until = NULL WHERE id = $1",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Timestamptz, _>(now)
    .execute(conn)
    .await
    .map(drop)
}

/// Endpoints failing since before `cutoff` (and still enabled): to be disabled.
#[derive(QueryableByName)]
pub struct FailingEndpoint {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = Text)]
    pub url: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub alert_email: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    pub failing_since: DateTime<Utc>,
}

/// Disables the endpoints failing since before `cutoff`, returning them (once each).
pub async fn disable_failing_endpoints(
    conn: &mut AsyncPgConnection,
    cutoff: DateTime<Utc>,
    now: DateTime<Utc>,
) -> QueryResult<Vec<FailingEndpoint>> {
    diesel::sql_query(
        "UPDATE notify_endpoints SET enabled = false, updated_at = $2, \
                disabled_reason = 'failing since ' || to_char(failing_since, 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') \
         WHERE enabled AND deleted_at IS NULL AND failing_since < $1 \
         RETURNING id, url, alert_email, failing_since",
    )
    .bind::<Timestamptz, _>(cutoff)
    .bind::<Timestamptz, _>(now)
    .load(conn)
    .await
}

/// Queues an email (template and data as JSON).
pub async fn insert_email(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    recipient: &str,
    template_name: &str,
    template: &serde_json::Value,
    now: DateTime<Utc>,
) -> QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO notify_emails (id, recipient, template_name, template, status, next_attempt_at, created_at) \
         VALUES ($1, $2, $3, $4, 'pending', $5, $5)",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Text, _>(recipient)
    .bind::<Text, _>(template_name)
    .bind::<Jsonb, _>(template)
    .bind::<Timestamptz, _>(now)
    .execute(conn)
    .await
    .map(drop)
}

#[derive(QueryableByName)]
pub struct ClaimedEmail {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = Text)]
    pub recipient: String,
    #[diesel(sql_type = Nullable<Jsonb>)]
    pub template: Option<serde_json::Value>,
    #[diesel(sql_type = Int4)]
    pub attempts: i32,
}

/// Leases due emails, as [`claim_deliveries`] does deliveries.
pub async fn claim_emails(
    conn: &mut AsyncPgConnection,
    limit: i64,
    lease_secs: i32,
) -> QueryResult<Vec<ClaimedEmail>> {
    diesel::sql_query(
        "UPDATE notify_emails SET claimed_until = now() + make_interval(secs => $2) \
         WHERE id IN (SELECT id FROM notify_emails \
                      WHERE status = 'pending' AND next_attempt_at <= now() \
                        AND (claimed_until IS NULL OR claimed_until < now()) \
                      ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
         RETURNING id, recipient, template, attempts",
    )
    .bind::<BigInt, _>(limit)
    .bind::<Int4, _>(lease_secs)
    .load(conn)
    .await
}

/// Sent: the template (which may hold a one-time token) is dropped from the table.
pub async fn email_sent(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    now: DateTime<Utc>,
) -> QueryResult<()> {
    diesel::update(notify_emails::table.find(id))
        .set((
            notify_emails::status.eq("sent"),
            notify_emails::template.eq(None::<serde_json::Value>),
            notify_emails::sent_at.eq(now),
            notify_emails::claimed_until.eq(None::<DateTime<Utc>>),
            notify_emails::attempts.eq(notify_emails::attempts + 1),
        ))
        .execute(conn)
        .await
        .map(drop)
}

/// Not sent: retry at `next` or, with `None`, give up (and drop the template).
pub async fn email_failed(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    error: &str,
    next: Option<DateTime<Utc>>,
) -> QueryResult<()> {
    diesel::sql_query(
        "UPDATE notify_emails SET attempts = attempts + 1, last_error = $2, claimed_until = NULL, \
                status = CASE WHEN $3::timestamptz IS NULL THEN 'failed' ELSE 'pending' END, \
                template = CASE WHEN $3::timestamptz IS NULL THEN NULL ELSE template END, \
                next_attempt_at = COALESCE($3, next_attempt_at) \
         WHERE id = $1",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Text, _>(error)
    .bind::<Nullable<Timestamptz>, _>(next)
    .execute(conn)
    .await
    .map(drop)
}

/// Per endpoint: deliveries pending and failed, and the age of the oldest pending one.
#[derive(Debug, Clone, QueryableByName)]
pub struct EndpointBacklogRow {
    #[diesel(sql_type = SqlUuid)]
    pub endpoint_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    pub partner_id: Uuid,
    #[diesel(sql_type = Text)]
    pub url: String,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub enabled: bool,
    #[diesel(sql_type = BigInt)]
    pub pending: i64,
    #[diesel(sql_type = BigInt)]
    pub failed: i64,
    #[diesel(sql_type = Nullable<diesel::sql_types::Double>)]
    pub oldest_pending_secs: Option<f64>,
}

pub async fn backlog(conn: &mut AsyncPgConnection) -> QueryResult<Vec<EndpointBacklogRow>> {
    diesel::sql_query(
        "SELECT e.id AS endpoint_id, e.partner_id, e.url, (e.enabled AND e.deleted_at IS NULL) AS enabled, \
                count(*) FILTER (WHERE d.status = 'pending') AS pending, \
                count(*) FILTER (WHERE d.status = 'failed') AS failed, \
                extract(epoch FROM now() - min(d.created_at) FILTER (WHERE d.status = 'pending'))::float8 \
                  AS oldest_pending_secs \
         FROM notify_endpoints e LEFT JOIN notify_deliveries d ON d.endpoint_id = e.id \
         GROUP BY e.id ORDER BY e.id",
    )
    .load(conn)
    .await
}

/// Emails pending and failed, and the oldest pending age.
#[derive(Debug, Clone, QueryableByName)]
pub struct EmailBacklogRow {
    #[diesel(sql_type = BigInt)]
    pub pending: i64,
    #[diesel(sql_type = BigInt)]
    pub failed: i64,
    #[diesel(sql_type = Nullable<diesel::sql_types::Double>)]
    pub oldest_pending_secs: Option<f64>,
}

pub async fn email_backlog(conn: &mut AsyncPgConnection) -> QueryResult<EmailBacklogRow> {
    diesel::sql_query(
        "SELECT count(*) FILTER (WHERE status = 'pending') AS pending, \
                count(*) FILTER (WHERE status = 'failed') AS failed, \
                extract(epoch FROM now() - min(created_at) FILTER (WHERE status = 'pending'))::float8 \
                  AS oldest_pending_secs \
         FROM notify_emails",
    )
    .get_result(conn)
    .await
}

/// Pending deliveries and the age of the oldest, and what is due now (deliveries and
/// emails whose time has come and that no worker holds): the outbox gauges. A retry scheduled
/// hours ahead is pending but not due, so alerts on "due" fire on a stuck outbox only.
#[derive(QueryableByName)]
pub struct OutboxGauge {
    #[diesel(sql_type = BigInt)]
    pub pending: i64,
    #[diesel(sql_type = Nullable<diesel::sql_types::Double>)]
    pub oldest_secs: Option<f64>,
    #[diesel(sql_type = BigInt)]
    pub due_deliveries: i64,
    #[diesel(sql_type = BigInt)]
    pub due_emails: i64,
}

pub async fn outbox_gauge(conn: &mut AsyncPgConnection) -> QueryResult<OutboxGauge> {
    diesel::sql_query(
        "SELECT count(*) AS pending, \
                extract(epoch FROM now() - min(created_at))::float8 AS oldest_secs, \
                count(*) FILTER (WHERE next_attempt_at <= now() \
                                   AND (claimed_until IS NULL OR claimed_until < now())) AS due_deliveries, \
                (SELECT count(*) FROM notify_emails m WHERE m.status = 'pending' \
                   AND m.next_attempt_at <= now() \
                   AND (m.claimed_until IS NULL OR m.claimed_until < now())) AS due_emails \
         FROM notify_deliveries WHERE status = 'pending'",
    )
    .get_result(conn)
    .await
}

/// Queues the event again for `endpoint` (or for every enabled endpoint of its partner whose
/// filters match); returns how many deliveries were queued.
pub async fn replay(
    conn: &mut AsyncPgConnection,
    event: Uuid,
    endpoint: Option<Uuid>,
    now: DateTime<Utc>,
) -> QueryResult<i64> {
    #[derive(QueryableByName)]
    struct Queued {
        #[diesel(sql_type = BigInt)]
        queued: i64,
    }
    diesel::sql_query(
        "WITH d AS (INSERT INTO notify_deliveries (id, event_id, endpoint_id, status, next_attempt_at, created_at) \
                    SELECT gen_random_uuid(), ev.id, e.id, 'pending', $3, $3 \
                    FROM notify_events ev JOIN notify_endpoints e ON e.partner_id = ev.partner_id \
                    WHERE ev.id = $1 AND e.deleted_at IS NULL \
                      AND (CASE WHEN $2::uuid IS NULL THEN e.enabled AND EXISTS ( \
                             SELECT 1 FROM unnest(e.event_filters) f WHERE f = '*' OR f = ev.type \
                               OR (right(f, 2) = '.*' AND starts_with(ev.type, left(f, -1)))) \
                           ELSE e.id = $2 END) \
                    RETURNING 1) \
         SELECT count(*) AS queued FROM d",
    )
    .bind::<SqlUuid, _>(event)
    .bind::<Nullable<SqlUuid>, _>(endpoint)
    .bind::<Timestamptz, _>(now)
    .get_result::<Queued>(conn)
    .await
    .map(|q| q.queued)
}
