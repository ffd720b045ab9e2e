//! Migrations: embedded in the binary, applied by `flowlet migrate` and (unless disabled) when
//! `serve` starts.
//!
//! Several replicas may start at once; a session-level advisory lock makes them take turns, so
//! each migration is applied exactly once and the others find nothing pending. The lock is tied
//! to the connection, so a process that dies mid-way releases it.

use anyhow::Context;
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use super::{Db, DbError};

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

/// Applies every pending migration, waiting for any other instance doing the same.
/// Returns the versions this call applied.
pub async fn run_migrations(url: &str) -> anyhow::Result<Vec<String>> {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url)
            .context("connecting to run migrations")?;
        diesel::RunQueryDsl::execute(
            diesel::sql_query("SELECT pg_advisory_lock($1)").bind::<BigInt, _>(MIGRATION_LOCK_KEY),
            &mut conn,
        )
        .context("taking the migration lock")?;
        let applied = conn
            .run_pending_migrations(MIGRATIONS)
            .map(|versions| versions.iter().map(ToString::to_string).collect::<Vec<_>>())
            .map_err(|e| anyhow::anyhow!("applying migrations: {e}"));
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
