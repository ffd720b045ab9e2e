//! The transaction handle that crosses modules, and the retry rule.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::{AnsiTransactionManager, AsyncPgConnection, TransactionManager};

use super::DbError;

/// The future a transaction body returns; boxed so any module's body fits one signature.
pub type TxFuture<'t, T> = Pin<Box<dyn Future<Output = T> + Send + 't>>;

/// An open transaction. Modules receive `&mut Tx` from the service that owns the use case and
/// run their store's statements on [`Tx::conn`]; they never begin or commit themselves.
pub struct Tx<'c> {
    conn: &'c mut AsyncPgConnection,
}

impl<'c> Tx<'c> {
    /// Wraps a connection on which the caller has already begun a transaction, for code that
    /// runs its own transactions (the ledger's posting engine hands this to attached writes).
    pub fn within_open_transaction(conn: &'c mut AsyncPgConnection) -> Tx<'c> {
        Tx { conn }
    }

    /// The connection inside the transaction, for a store's diesel statements.
    pub fn conn(&mut self) -> &mut AsyncPgConnection {
        self.conn
    }

    /// The connection, shared: statements whose futures run at once on it (joined) are sent
    /// together and answered in one round trip (pipelining), in the order they were sent.
    /// Takes a transaction-scoped advisory lock (released at commit or rollback).
    pub async fn advisory_lock(
        &mut self,
        key: super::LockKey,
    ) -> Result<(), diesel::result::Error> {
        use diesel_async::RunQueryDsl;
        diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
            .bind::<diesel::sql_types::BigInt, _>(key.value())
            .execute(self.conn())
            .await
            .map(drop)
    }

    pub fn shared(&self) -> &AsyncPgConnection {
        self.conn
    }
}

/// Whether an error means "the same work may succeed if simply tried again".
pub trait Retryable {
    fn is_retryable(&self) -> bool;
}

/// Serialization failures (40001) and deadlocks (40P01) are the database asking for a retry.
///
/// diesel-async maps 40001 to `SerializationFailure` but 40P01 to `Unknown`, so deadlocks are
/// recognised by PostgreSQL's message, which is English unless the server's `lc_messages`
/// says otherwise (the embedded server runs with the C locale).
pub fn is_retryable(err: &DieselError) -> bool {
    match err {
        DieselError::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => true,
        DieselError::DatabaseError(_, info) => info.message().starts_with("deadlock detected"),
        _ => false,
    }
}

/// The database is not there for this statement: the connection broke or was never had, or
/// the server is shutting down, starting up, recovering or full. The statement said nothing
/// about the request, so the answer is 503 `database_unavailable` and the same work may well
/// succeed on another connection shortly.
///
/// diesel's error carries no SQLSTATE, so server-side cases (57P01-57P03, 53300, the
/// connection-failure class) are recognised by PostgreSQL's messages (English: see
/// [`is_retryable`]); errors with no SQLSTATE at all (a closed socket) come as
/// `UnableToSendCommand`.
pub fn is_unavailable(err: &DieselError) -> bool {
    const MESSAGES: &[&str] = &[
        "terminating connection",
        "the database system is",
        "sorry, too many clients",
        "remaining connection slots are reserved",
        "connection to server",
        "server closed the connection",
        "could not connect",
        "connection closed",
        "no connection to the server",
    ];
    match err {
        DieselError::DatabaseError(
            DatabaseErrorKind::UnableToSendCommand | DatabaseErrorKind::ClosedConnection,
            _,
        )
        | DieselError::BrokenTransactionManager => true,
        DieselError::DatabaseError(_, info) => {
            let message = info.message();
            MESSAGES.iter().any(|m| message.starts_with(m))
        }
        _ => false,
    }
}

/// A short pause that grows with each attempt, so conflicting transactions drift apart.
pub(super) fn backoff(attempt: u32) -> Duration {
    let jitter = u64::from(uuid::Uuid::now_v7().as_u128().to_le_bytes()[0] % 8);
    Duration::from_millis(
        5u64.saturating_mul(u64::from(attempt.min(8)))
            .saturating_add(jitter),
    )
}

/// One attempt: BEGIN, the body, then COMMIT or ROLLBACK.
pub(super) async fn run_once<T, E, F>(conn: &mut AsyncPgConnection, f: &mut F) -> Result<T, E>
where
    F: for<'t, 'c> FnMut(&'t mut Tx<'c>) -> TxFuture<'t, Result<T, E>>,
    E: From<DbError>,
{
    AnsiTransactionManager::begin_transaction(conn)
        .await
        .map_err(DbError::from)?;
    let outcome = {
        let mut tx = Tx { conn: &mut *conn };
        f(&mut tx).await
    };
    match outcome {
        Ok(value) => {
            AnsiTransactionManager::commit_transaction(conn)
                .await
                .map_err(DbError::from)?;
            Ok(value)
        }
        Err(err) => {
            if let Err(rollback) = AnsiTransactionManager::rollback_transaction(conn).await {
                tracing::error!(error.cause = %rollback, "rollback failed");
            }
            Err(err)
        }
    }
}
