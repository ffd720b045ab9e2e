//! PostgreSQL: the pool, the one transaction helper, migrations and the embedded server.
//!
//! Diesel runs through diesel-async on tokio-postgres, so the build needs neither libpq nor
//! OpenSSL. [`Tx`] is the only database handle that crosses module boundaries: the service
//! that owns a use case opens the transaction with [`Db::in_tx`] and passes `&mut Tx` to the
//! other modules' traits, so a payment, its ledger transfer and its outbox event commit
//! together or not at all.

mod connect;
pub mod embedded;
mod lock;
mod migrate;
mod prepared;
pub mod schema;
mod tx;

use std::time::Duration;

use actix_web::http::StatusCode;
use diesel::ConnectionError;
use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use futures_util::FutureExt;

use crate::platform::error::Problem;
use crate::platform::metrics::PoolUsage;

pub use connect::{ConnectConfigError, PgConnector, SslMode, TlsParams, split_tls_params};
pub use lock::{LockKey, LockNamespace, namespaces};
pub use migrate::{
    MigrationLimits, MigrationStatus, migration_status, run_migrations, run_migrations_with,
};
pub use tx::{Retryable, Tx, TxFuture, is_retryable, is_unavailable};

/// A pooled connection; only the platform and stores see it.
pub type Conn = Object<AsyncPgConnection>;

/// How a pool is sized and how long it waits.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub max_size: usize,
    pub wait_timeout: Duration,
    pub connect_timeout: Duration,
    pub tx_max_retries: u32,
    /// Trusted CAs for TLS (`database.ca_file`); `None`: the URL's `sslrootcert` or the
    /// system's roots.
    pub ca_file: Option<std::path::PathBuf>,
}

/// The database handle the application holds. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    pool: Pool<AsyncPgConnection>,
    tx_max_retries: u32,
}

/// Failures of the database layer itself (not of a module's rules).
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection could be had in time: the database is down or saturated. 503, retryable.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// A statement failed unexpectedly. 500.
    #[error("a database statement failed")]
    Query(#[from] diesel::result::Error),
}

/// A session advisory lock (see [`Db::session_lock`]); released when dropped.
pub struct SessionLock {
    conn: Option<Conn>,
}

impl Drop for SessionLock {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // Out of the pool and closed: the session, and with it the lock, ends.
            drop(deadpool::managed::Object::take(conn));
        }
    }
}

impl Problem for DbError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Query(e) if is_unavailable(e) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Query(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "database_unavailable",
            Self::Query(e) if is_unavailable(e) => "database_unavailable",
            Self::Query(_) => "internal_error",
        }
    }
}

impl Retryable for DbError {
    fn is_retryable(&self) -> bool {
        match self {
            Self::Query(e) => is_retryable(e),
            Self::Unavailable(_) => false,
        }
    }
}

impl Db {
    /// Builds the pool. Connections open lazily; call [`Db::ping`] to fail fast at start-up.
    pub fn connect(url: &str, options: &PoolOptions) -> Result<Db, DbError> {
        let connector = PgConnector::new(url, options.ca_file.as_deref())
            .map_err(|e| DbError::Unavailable(e.to_string()))?;
        Db::with_connector(connector, options)
    }

    /// Builds the pool over `connector` (its URL and TLS).
    pub fn with_connector(connector: PgConnector, options: &PoolOptions) -> Result<Db, DbError> {
        let connect_timeout = options.connect_timeout;
        let mut config = ManagerConfig::default();
        // A checkout only checks for a dangling transaction (no `SELECT 1` round trip per
        // request); a connection that died shows as an error on first use, which callers
        // treat like any other database error (the ledger engine retries its batch).
        config.recycling_method = RecyclingMethod::Fast;
        // Each connection's driver (the task that reads and writes its socket) runs on the
        // runtime that builds the pool, the app's multi-threaded one, not on whichever HTTP
        // worker happened to need a connection first: otherwise the posting engine's every
        // statement waited for that worker's single thread to be free to read the answer.
        let home = tokio::runtime::Handle::try_current().ok();
        // Connections come from the connector (TLS per `sslmode`), not from the URL the
        // manager keeps: it only ever holds a placeholder.
        config.custom_setup = Box::new(move |_| {
            let connector = connector.clone();
            let home = home.clone();
            async move {
                let connect = async move {
                    match tokio::time::timeout(connect_timeout, connector.connect()).await {
                        Ok(result) => result,
                        Err(_) => Err(ConnectionError::BadConnection(format!(
                            "connecting took longer than {} ms",
                            connect_timeout.as_millis()
                        ))),
                    }
                };
                match home {
                    Some(runtime) => runtime.spawn(connect).await.unwrap_or_else(|e| {
                        Err(ConnectionError::BadConnection(format!(
                            "the connecting task failed: {e}"
                        )))
                    }),
                    None => connect.await,
                }
            }
            .boxed()
        });
        let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
            "postgres://connector",
            config,
        );
        let pool = Pool::builder(manager)
            .max_size(options.max_size)
            .runtime(deadpool::Runtime::Tokio1)
            .wait_timeout(Some(options.wait_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .build()
            .map_err(|e| DbError::Unavailable(e.to_string()))?;
        Ok(Db {
            pool,
            tx_max_retries: options.tx_max_retries,
        })
    }

    /// A connection from the pool, for reads outside a transaction.
    pub async fn conn(&self) -> Result<Conn, DbError> {
        self.pool
            .get()
            .await
            .map_err(|e| DbError::Unavailable(e.to_string()))
    }

    /// A session-level advisory lock on `key`, held by a connection of its own until the
    /// returned guard is dropped (the connection then leaves the pool and its session ends,
    /// releasing the lock even if the process dies). `wait`: queue for it; else `None` when
    /// another session holds it. For work one replica at a time (ledger verification).
    pub async fn session_lock(
        &self,
        key: LockKey,
        wait: bool,
    ) -> Result<Option<SessionLock>, DbError> {
        use diesel::sql_types::{BigInt, Bool};
        use diesel_async::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct Taken {
            #[diesel(sql_type = Bool)]
            taken: bool,
        }
        let mut conn = self.conn().await?;
        let sql = if wait {
            "SELECT true AS taken FROM (SELECT pg_advisory_lock($1)) AS l"
        } else {
            "SELECT pg_try_advisory_lock($1) AS taken"
        };
        let taken: Taken = diesel::sql_query(sql)
            .bind::<BigInt, _>(key.value())
            .get_result(&mut *conn)
            .await?;
        if taken.taken {
            Ok(Some(SessionLock { conn: Some(conn) }))
        } else {
            Ok(None)
        }
    }

    /// Checks that a connection can be had and answers.
    pub async fn ping(&self) -> Result<(), DbError> {
        use diesel_async::SimpleAsyncConnection;
        let mut conn = self.conn().await?;
        conn.batch_execute("SELECT 1").await?;
        Ok(())
    }

    /// Connections lent out and idle, for `/metrics`.
    pub fn usage(&self) -> PoolUsage {
        let status = self.pool.status();
        PoolUsage {
            active: status.size.saturating_sub(status.available),
            idle: status.available,
            max: status.max_size,
        }
    }

    /// Closes the pool: idle connections are dropped, new `get`s fail.
    pub fn close(&self) {
        self.pool.close();
    }

    /// Runs `f` in one transaction, committing on `Ok` and rolling back on `Err`.
    ///
    /// A deadlock or serialization failure (from any statement or from COMMIT) rolls back
    /// and runs `f` again on a fresh transaction, at most `database.tx_max_retries` times,
    /// with a short growing pause; so `f` must only touch the database through `tx` (no
    /// network calls, no side effects that a retry would repeat).
    pub async fn in_tx<T, E, F>(&self, mut f: F) -> Result<T, E>
    where
        F: for<'t, 'c> FnMut(&'t mut Tx<'c>) -> TxFuture<'t, Result<T, E>>,
        E: From<DbError> + Retryable,
    {
        let mut attempt: u32 = 0;
        loop {
            let mut conn = self.conn().await?;
            match tx::run_once(&mut conn, &mut f).await {
                Err(err) if err.is_retryable() && attempt < self.tx_max_retries => {
                    attempt += 1;
                    tracing::warn!(db.attempt = attempt, "transaction conflict, retrying");
                    tokio::time::sleep(tx::backoff(attempt)).await;
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::result::{DatabaseErrorKind, Error as DieselError};

    fn server_said(kind: DatabaseErrorKind, message: &str) -> DbError {
        DbError::Query(DieselError::DatabaseError(
            kind,
            Box::new(message.to_owned()),
        ))
    }

    #[test]
    fn a_database_that_went_away_is_503_database_unavailable_not_500() {
        for gone in [
            server_said(DatabaseErrorKind::UnableToSendCommand, "connection closed"),
            server_said(DatabaseErrorKind::ClosedConnection, "closed"),
            server_said(
                DatabaseErrorKind::Unknown,
                "terminating connection due to administrator command",
            ),
            server_said(
                DatabaseErrorKind::Unknown,
                "the database system is shutting down",
            ),
            server_said(
                DatabaseErrorKind::Unknown,
                "the database system is starting up",
            ),
            server_said(
                DatabaseErrorKind::Unknown,
                "sorry, too many clients already",
            ),
            DbError::Query(DieselError::BrokenTransactionManager),
            DbError::Unavailable("pool timed out".into()),
        ] {
            assert_eq!(gone.status(), StatusCode::SERVICE_UNAVAILABLE, "{gone:?}");
            assert_eq!(gone.code(), "database_unavailable");
        }
        for broken in [
            server_said(DatabaseErrorKind::UniqueViolation, "duplicate key value"),
            server_said(
                DatabaseErrorKind::Unknown,
                "unsupported Unicode escape sequence",
            ),
        ] {
            assert_eq!(
                broken.status(),
                StatusCode::INTERNAL_SERVER_ERROR,
                "{broken:?}"
            );
        }
    }
}
