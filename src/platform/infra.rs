//! The service's infrastructure, started in order and stopped in reverse: the database
//! (embedded when no URL is configured), migrations, the pool, and Redis or its in-process
//! stand-in. `serve`, `migrate`, `admin` and the test harness all start it the same way.

use anyhow::Context;
use diesel::sql_types::Text;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use secrecy::{ExposeSecret, SecretString};

use crate::platform::config::{DatabaseSettings, RedisSettings};
use crate::platform::db::embedded::EmbeddedPostgres;
use crate::platform::db::{Db, PoolOptions, run_migrations};
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
    pub db: Db,
    pub shared: SharedState,
    database_url: SecretString,
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
            if migrate == Migrate::Apply {
                let applied = run_migrations(database_url.expose_secret()).await?;
                if !applied.is_empty() {
                    tracing::info!(migrations.applied = ?applied, "migrations applied");
                }
            }
            let db = Db::connect(
                database_url.expose_secret(),
                &PoolOptions {
                    max_size: database.pool_size,
                    wait_timeout: database.pool_timeout,
                    connect_timeout: database.connect_timeout,
                    tx_max_retries: database.tx_max_retries,
                },
            )?;
            db.ping().await.context("connecting to PostgreSQL")?;
            let shared = match redis.expose_url() {
                Some(url) => {
                    SharedState::redis_or_degraded(url, &redis.key_prefix, redis.pool_size)
                        .await
                        .context("configuring Redis")?
                }
                None => SharedState::in_process(),
            };
            anyhow::Ok((db, shared))
        }
        .await;
        match result {
            Ok((db, shared)) => Ok(Infra {
                db,
                shared,
                database_url,
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

    /// The URL the pool connects to (contains credentials: never log it).
    pub fn database_url(&self) -> &SecretString {
        &self.database_url
    }

    /// Closes the pool, then stops the embedded PostgreSQL if this process started it.
    pub async fn shutdown(self) {
        self.db.close();
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
