//! Migrations: embedded in the binary, applied by `flowlet migrate` and (unless disabled) when
//! `serve` starts.
//!
//! Several replicas may start at once; a session-level advisory lock makes them take turns, so
//! each migration is applied exactly once and the others find nothing pending. The lock is tied
//! to the connection, so a process that dies mid-way releases it.

use std::time::Duration;

use anyhow::Context;
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use super::{Db, DbError, PgConnector};

/// Every migration under `migrations/`, compiled in.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Advisory lock key for migrations: the bytes of "flowlet" plus 1.
const MIGRATION_LOCK_KEY: i64 = super::LockKey::singleton(super::namespaces::MIGRATIONS).value();

diesel::table! {
    /// diesel's bookkeeping table, read (never written) to report what is applied.
    __diesel_schema_migrations (version) {
        version -> VarChar,
    }
}

/// Applied and pending migrations, for `/ready` and `flowlet admin migrations`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MigrationStatus {
    pub applied: Vec<String>,
    pub pending: Vec<String>,
}

/// Bounds on a migration run, so a hook Job fails clearly instead of hanging a deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrationLimits {
    /// How long to wait for another instance's migration lock (`database.migration_lock_wait_ms`).
    pub lock_wait: Duration,
    /// How long each migration's statements may wait for a table lock
    /// (`database.migration_lock_timeout_ms`): a migration queued behind a long transaction
    /// would otherwise block every query on that table behind itself.
    pub lock_timeout: Duration,
    /// How long one statement may run (`database.migration_statement_timeout_ms`).
    pub statement_timeout: Duration,
}

impl Default for MigrationLimits {
    fn default() -> Self {
        MigrationLimits {
            lock_wait: Duration::from_secs(60),
            lock_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(300),
        }
    }
}

/// Applies every pending migration at `url` (plain `sslmode` rules, no CA file), with the
/// default limits: the tests' and benches' shorthand for [`run_migrations_with`].
pub async fn run_migrations(url: &str) -> anyhow::Result<Vec<String>> {
    let connector = PgConnector::new(url, None)?;
    run_migrations_with(&connector, MigrationLimits::default()).await
}

/// Applies every pending migration, waiting (at most `limits.lock_wait`) for any other
/// instance doing the same. Returns the versions this call applied.
pub async fn run_migrations_with(
    connector: &PgConnector,
    limits: MigrationLimits,
) -> anyhow::Result<Vec<String>> {
    let conn = connector
        .connect()
        .await
        .context("connecting to run migrations")?;
    tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::from(conn);
        let set = |conn: &mut AsyncConnectionWrapper<AsyncPgConnection>, sql: String| {
            diesel::connection::SimpleConnection::batch_execute(conn, &sql)
        };
        set(
            &mut conn,
            format!("SET lock_timeout = {}", millis(limits.lock_wait)),
        )
        .context("setting the migration lock wait")?;
        diesel::RunQueryDsl::execute(
            diesel::sql_query("SELECT pg_advisory_lock($1)").bind::<BigInt, _>(MIGRATION_LOCK_KEY),
            &mut conn,
        )
        .with_context(|| {
            format!(
                "taking the migration lock (another instance held it for more than {} s, or \
                 the database refused)",
                limits.lock_wait.as_secs()
            )
        })?;
        let applied = set(
            &mut conn,
            format!(
                "SET lock_timeout = {}; SET statement_timeout = {}",
                millis(limits.lock_timeout),
                millis(limits.statement_timeout)
            ),
        )
        .context("setting the migrations' timeouts")
        .and_then(|_| {
            conn.run_pending_migrations(MIGRATIONS)
                .map(|versions| versions.iter().map(ToString::to_string).collect::<Vec<_>>())
                .map_err(|e| anyhow::anyhow!("applying migrations: {e}"))
        });
        let unlocked = diesel::RunQueryDsl::execute(
            diesel::sql_query("SELECT pg_advisory_unlock($1)")
                .bind::<BigInt, _>(MIGRATION_LOCK_KEY),
            &mut conn,
        );
        let applied = applied?;
        unlocked.context("releasing the migration lock")?;
        Ok(applied)
    })
    .await
    .context("the migration task stopped")?
}

/// A duration as PostgreSQL's integer milliseconds (0 would mean "no limit": at least 1).
fn millis(d: Duration) -> u128 {
    d.as_millis().max(1)
}

/// Which of this binary's migrations the database has applied.
pub async fn migration_status(db: &Db) -> Result<MigrationStatus, DbError> {
    let mut conn = db.conn().await?;
    let exists: bool = diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(
        "to_regclass('__diesel_schema_migrations') IS NOT NULL",
    ))
    .get_result(&mut conn)
    .await?;
    let applied_versions: Vec<String> = if exists {
        __diesel_schema_migrations::table
            .select(__diesel_schema_migrations::version)
            .load(&mut conn)
            .await?
    } else {
        Vec::new()
    };
    let known = known_versions();
    let pending = known
        .iter()
        .filter(|v| !applied_versions.contains(v))
        .cloned()
        .collect();
    let applied = known
        .into_iter()
        .filter(|v| applied_versions.contains(v))
        .collect();
    Ok(MigrationStatus { applied, pending })
}

/// The versions of the compiled-in migrations, in order.
fn known_versions() -> Vec<String> {
    use diesel::migration::MigrationSource;
    <EmbeddedMigrations as MigrationSource<diesel::pg::Pg>>::migrations(&MIGRATIONS)
        .map(|ms| ms.iter().map(|m| m.name().version().to_string()).collect())
        .unwrap_or_default()
}
