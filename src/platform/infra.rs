//! The service's infrastructure, started in order and stopped in reverse: the database
//! (embedded when no URL is configured), migrations, the pool, and Redis or its in-process
//! stand-in. `serve`, `migrate`, `admin` and the test harness all start it the same way.

use anyhow::Context;
use diesel::sql_types::Text;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use secrecy::{ExposeSecret, SecretString};

use crate::platform::config::{DatabaseSettings, RedisSettings};
use crate::platform::db::embedded::EmbeddedPostgres;
use crate::platform::db::{Db, MigrationLimits, PgConnector, PoolOptions, run_migrations_with};
use crate::platform::shared_state::SharedState;

/// Name of the database the service creates inside its embedded PostgreSQL.
const EMBEDDED_DATABASE: &str = "flowlet";

/// Whether starting applies pending migrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Migrate {
    Apply,
    Skip,
}

/// Running infrastructure. Call [`Infra::shutdown`] to stop it in order.
pub struct Infra {
    /// The requests' pool.
    pub db: Db,
    /// The background workers' own pool (`database.worker_pool_size`): a worker waiting on a
    /// slow partner endpoint or a long verification never holds a request's connection.
    pub worker_db: Db,
    /// A read replica for verification (`database.replica_url`), if one is configured.
    pub replica_db: Option<Db>,
    /// `/ready`'s own pool of one connection.
    pub probe_db: Db,
    pub shared: SharedState,
    connector: PgConnector,
    limits: MigrationLimits,
    embedded: Option<EmbeddedPostgres>,
}

impl Infra {
    /// Starts everything the configuration asks for and checks that it answers.
    pub async fn start(
        database: &DatabaseSettings,
        redis: &RedisSettings,
        migrate: Migrate,
    ) -> anyhow::Result<Infra> {
        let (database_url, embedded) = match database.expose_url() {
            Some(url) => (SecretString::from(url.to_owned()), None),
            None => {
                let embedded =
                    EmbeddedPostgres::start(&database.embedded_dir, database.embedded_placement)
                        .await?;
                let url = embedded.url_for_database(EMBEDDED_DATABASE);
                ensure_database(&embedded.url(), EMBEDDED_DATABASE).await?;
                (SecretString::from(url), Some(embedded))
            }
        };
        Self::connect(database, redis, migrate, database_url, embedded).await
    }

    async fn connect(
        database: &DatabaseSettings,
        redis: &RedisSettings,
        migrate: Migrate,
        database_url: SecretString,
        embedded: Option<EmbeddedPostgres>,
    ) -> anyhow::Result<Infra> {
        let result = async {
            let connector =
                PgConnector::new(database_url.expose_secret(), database.ca_file.as_deref())
                    .context("database.url")?;
            if migrate == Migrate::Apply {
                let applied = run_migrations_with(&connector, database.migration_limits).await?;
                if !applied.is_empty() {
                    tracing::info!(migrations.applied = ?applied, "migrations applied");
                }
            }
            let db = Db::with_connector(connector.clone(), &database.pool_options())?;
            db.ping().await.context("connecting to PostgreSQL")?;
            let worker_db = Db::with_connector(connector.clone(), &database.worker_pool_options())?;
            let probe_db = Db::with_connector(
                connector.clone(),
                &PoolOptions {
                    max_size: 1,
                    wait_timeout: std::time::Duration::from_secs(1),
                    ..database.pool_options()
                },
            )?;
            let replica_db = match &database.replica_url {
                Some(url) => {
                    let replica =
                        PgConnector::new(url.expose_secret(), database.ca_file.as_deref())
                            .context("database.replica_url")?;
                    Some(Db::with_connector(
                        replica,
                        &database.worker_pool_options(),
                    )?)
                }
                None => None,
            };
            let shared = match redis.expose_url() {
                Some(url) => SharedState::redis_or_degraded(
                    url,
                    &redis.key_prefix,
                    redis.pool_size,
                    redis.ca_file.as_deref(),
                )
                .await
                .context("configuring Redis")?,
                None => SharedState::in_process(),
            };
            anyhow::Ok((db, worker_db, replica_db, probe_db, shared, connector))
        }
        .await;
        match result {
            Ok((db, worker_db, replica_db, probe_db, shared, connector)) => Ok(Infra {
                db,
                worker_db,
                replica_db,
                probe_db,
                shared,
                connector,
                limits: database.migration_limits,
                embedded,
            }),
            Err(err) => {
                // Do not leave a private PostgreSQL running behind a failed start.
                if let Some(embedded) = embedded
                    && let Err(stop) = embedded.stop().await
                {
                    tracing::error!(error.cause = %stop, "stopping the embedded PostgreSQL failed");
                }
                Err(err)
            }
        }
    }

    /// Applies pending migrations (waiting, within `database.migration_*` limits, for any
    /// other instance doing the same); the versions applied.
    pub async fn migrate(&self) -> anyhow::Result<Vec<String>> {
        run_migrations_with(&self.connector, self.limits).await
    }

    /// Closes the pool, then stops the embedded PostgreSQL if this process started it.
    pub async fn shutdown(self) {
        self.db.close();
        self.worker_db.close();
        self.probe_db.close();
        if let Some(replica) = &self.replica_db {
            replica.close();
        }
        if let Some(embedded) = self.embedded
            && let Err(err) = embedded.stop().await
        {
            tracing::error!(error.cause = %err, "stopping the embedded PostgreSQL failed");
        }
    }
}

/// Creates `name` in the embedded server unless it exists (two instances may race: fine).
async fn ensure_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    #[derive(diesel::QueryableByName)]
    struct Found {
        #[diesel(sql_type = Text)]
        #[expect(dead_code, reason = "only the row's existence matters")]
        datname: String,
    }
    let mut conn = AsyncPgConnection::establish(admin_url)
        .await
        .context("connecting to the embedded PostgreSQL")?;
    let found: Vec<Found> = diesel::sql_query("SELECT datname FROM pg_database WHERE datname = $1")
        .bind::<Text, _>(name)
        .load(&mut conn)
        .await?;
    if found.is_empty() {
        // Identifiers cannot be bound; `name` is a constant of ours, not input.
        match diesel::sql_query(format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
        {
            Ok(_) => tracing::info!(database = name, "created the embedded database"),
            Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _,
            )) => {}
            Err(e) => return Err(e).context("creating the embedded database"),
        }
    }
    Ok(())
}
