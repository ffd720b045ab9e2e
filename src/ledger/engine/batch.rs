//! Running a batch to an answer for every request in it: retries after conflicts, splitting
//! a batch that failed on one request's data, metrics, and learning the fate of a batch whose
//! connection broke at commit.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use diesel_async::{AnsiTransactionManager, AsyncPgConnection, TransactionManager};
use uuid::Uuid;

use super::{Core, Submission};
use crate::ledger::error::{LedgerError, SideWriteError};
use crate::ledger::model::{Outcome, ResultCode};
use crate::ledger::store;
use crate::platform::db::{DbError, is_retryable};

/// How a batch attempt failed.
pub(super) enum BatchError {
    /// Attached writes refused these requests (index into the batch): answer them, run the
    /// others again.
    Refused(Vec<(usize, SideWriteError)>),
    /// A conflict with another replica: run the batch again on fresh state.
    Retry(LedgerError),
    /// Anything else: every request of the batch gets the error.
    Fatal(LedgerError),
}

impl From<DbError> for BatchError {
    fn from(e: DbError) -> Self {
        let retry = match &e {
            DbError::Query(q) => is_retryable(q) || is_unique_violation(q) || is_connection_lost(q),
            DbError::Unavailable(_) => false,
        };
        if retry {
            BatchError::Retry(LedgerError::Db(e))
        } else {
            BatchError::Fatal(LedgerError::Db(e))
        }
    }
}

impl From<diesel::result::Error> for BatchError {
    fn from(e: diesel::result::Error) -> Self {
        BatchError::from(DbError::Query(e))
    }
}

/// A batch's failure for each of its requests: the same kind of error (a database that went
/// away is 503 `database_unavailable` for every one of them, never a 500 for all but one).
fn same_failure(error: &LedgerError) -> LedgerError {
    match error {
        LedgerError::Db(DbError::Unavailable(m)) => {
            LedgerError::Db(DbError::Unavailable(m.clone()))
        }
        LedgerError::Db(DbError::Query(e)) if crate::platform::db::is_unavailable(e) => {
            LedgerError::Db(DbError::Unavailable(e.to_string()))
        }
        LedgerError::Overloaded => LedgerError::Overloaded,
        LedgerError::Unavailable => LedgerError::Unavailable,
        other => LedgerError::Internal(anyhow::anyhow!("{other}")),
    }
}

/// Whether a batch's failure may come from one request's data: an attached write's own error,
/// or a statement the database refused (a value it cannot store, a constraint). Not a lost
/// connection or an unavailable database: splitting the batch would not help those.
fn caused_by_a_request(error: &LedgerError) -> bool {
    match error {
        LedgerError::SideWrite(_) => true,
        LedgerError::Db(DbError::Query(e)) => {
            matches!(e, diesel::result::Error::DatabaseError(..)) && !is_connection_lost(e)
        }
        _ => false,
    }
}

/// The connection broke or the server is going away (restart, network): a new connection
/// may well work, and the batch's fate must be learned before it runs again.
fn is_connection_lost(e: &diesel::result::Error) -> bool {
    crate::platform::db::is_unavailable(e)
}

/// Another replica wrote the same transfer id (or resolved the same pending transfer) first.
fn is_unique_violation(e: &diesel::result::Error) -> bool {
    matches!(
        e,
        diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)
    )
}

impl Core {
    /// Runs a batch to an answer for every request in it.
    ///
    /// One request must never fail its neighbours: when an attempt fails in a way that may
    /// come from one request's data (an attached write's error, a statement the database
    /// refused), the batch is split in two and each half runs on its own, first half first
    /// (arrival order), until the request at fault runs alone and gets the error by itself.
    pub(super) async fn process(&self, batch: Vec<Submission>) {
        let started = Instant::now();
        let mut parts = vec![batch];
        while let Some(part) = parts.pop() {
            if let Some((first, second)) = self.process_part(part, started).await {
                parts.push(second);
                parts.push(first);
            }
        }
    }

    /// Runs one part of a batch to an answer for every request in it, or hands it back split
    /// in two when a failure must be traced to its request.
    async fn process_part(
        &self,
        mut batch: Vec<Submission>,
        started: Instant,
    ) -> Option<(Vec<Submission>, Vec<Submission>)> {
        let mut attempt = 0;
        loop {
            if batch.is_empty() {
                return None;
            }
            // After a conflict with another batch (another replica), the retry locks what it
            // touches up front: optimistic first, pessimistic after, so hot accounts cannot
            // starve a batch through endless conflicts.
            match self.attempt(&mut batch, attempt > 0).await {
                Ok(results) => {
                    self.observe(&results, started);
                    for (submission, outcomes) in batch.into_iter().zip(results) {
                        let _ = submission.reply.send(Ok(outcomes));
                    }
                    return None;
                }
                Err(BatchError::Refused(mut refused)) => {
                    // From the back, so the indexes still to remove stay valid.
                    refused.sort_by_key(|(index, _)| std::cmp::Reverse(*index));
                    for (index, error) in refused {
                        if index < batch.len() {
                            let submission = batch.remove(index);
                            let _ = submission.reply.send(Err(LedgerError::SideWrite(error)));
                        }
                    }
                }
                Err(BatchError::Retry(error)) if attempt < self.config.max_retries => {
                    attempt += 1;
                    tracing::debug!(ledger.attempt = attempt, error.cause = %error, "batch conflicted; retrying");
                    tokio::time::sleep(Duration::from_millis(u64::from(attempt))).await;
                }
                Err(BatchError::Fatal(error)) if batch.len() > 1 && caused_by_a_request(&error) => {
                    tracing::warn!(error.cause = %error, ledger.batch_requests = batch.len(),
                        "a batch failed on a request's data; splitting it to find that request");
                    let second = batch.split_off(batch.len() / 2);
                    return Some((batch, second));
                }
                Err(BatchError::Retry(error) | BatchError::Fatal(error)) => {
                    tracing::error!(error.cause = %error, ledger.batch_requests = batch.len(), "batch failed");
                    for submission in batch {
                        let _ = submission.reply.send(Err(same_failure(&error)));
                    }
                    return None;
                }
            }
        }
    }

    fn observe(&self, results: &[Vec<Outcome>], started: Instant) {
        let Some(m) = &self.metrics else { return };
        let mut count = 0usize;
        let mut by_code: HashMap<ResultCode, u64> = HashMap::new();
        for outcome in results.iter().flatten() {
            count += 1;
            *by_code.entry(outcome.code).or_default() += 1;
        }
        for (code, n) in by_code {
            m.transfers.with_label_values(&[code.as_str()]).inc_by(n);
        }
        m.batch_transfers
            .observe(f64::from(u32::try_from(count).unwrap_or(u32::MAX)));
        m.batch_seconds.observe(started.elapsed().as_secs_f64());
    }

    /// One transaction for the whole batch.
    ///
    /// Should the connection break once the batch was decided (while its write or COMMIT
    /// travels), the transaction may or may not have committed: the database is asked what
    /// became of it (`txid_status`) before anything runs again, so a batch that committed is
    /// answered as committed, never run a second time (where its own transfers would answer
    /// `exists`). If that cannot be learned, every request gets `database_unavailable`: the
    /// client retries with the same ids and keys, which is safe either way.
    async fn attempt(
        &self,
        batch: &mut [Submission],
        pessimistic: bool,
    ) -> Result<Vec<Vec<Outcome>>, BatchError> {
        let mut conn = self
            .db
            .conn()
            .await
            .map_err(|e| BatchError::Fatal(LedgerError::Db(e)))?;
        let mut progress = Progress::default();
        let result = self
            .in_transaction(&mut conn, batch, pessimistic, &mut progress)
            .await;
        if result.is_err()
            && in_transaction(&mut conn)
            && let Err(rollback) = AnsiTransactionManager::rollback_transaction(&mut *conn).await
        {
            tracing::error!(error.cause = %rollback, "rollback of a ledger batch failed; dropping the connection");
            drop(deadpool::managed::Object::take(conn));
        }
        match result {
            Err(BatchError::Retry(LedgerError::Db(DbError::Query(e))))
                if is_connection_lost(&e) =>
            {
                let (Some(tx), Some(results)) = (progress.tx, progress.results) else {
                    return Err(BatchError::Retry(LedgerError::Db(DbError::Query(e))));
                };
                match self.fate_of(&tx, progress.written).await {
                    Fate::Committed => {
                        tracing::warn!(
                            ledger.txid = tx.txid,
                            "the connection broke at commit; the batch had committed"
                        );
                        Ok(results)
                    }
                    Fate::RolledBack => Err(BatchError::Retry(LedgerError::Db(DbError::Query(e)))),
                    Fate::Unknown => {
                        tracing::error!(ledger.txid = tx.txid, error.cause = %e,
                            "the connection broke at commit and the batch's fate is unknown");
                        Err(BatchError::Fatal(LedgerError::Db(DbError::Unavailable(
                            "the outcome of a ledger commit could not be learned".into(),
                        ))))
                    }
                }
            }
            other => other,
        }
    }

    /// What became of the batch's transaction, asked on a fresh connection.
    ///
    /// The batch's own rows say it: the ids it registers (its posted transfers and recorded
    /// failures, in one at-most-once id space) are all there if it committed and none if it
    /// did not. A transaction id alone cannot say it after a crash: ids not yet on disk are
    /// given out again after recovery, so `txid_status` may describe another transaction.
    /// It serves only to wait while the server, unaware yet of the dead client, still runs
    /// the transaction (`in progress` on the same server). A batch that registers no id wrote
    /// nothing that running it again would not write the same way, so it simply runs again.
    async fn fate_of(&self, tx: &store::TxInfo, written: Vec<Uuid>) -> Fate {
        if written.is_empty() {
            return Fate::RolledBack;
        }
        let expected = i64::try_from(written.len()).unwrap_or(i64::MAX);
        let deadline = Instant::now() + FATE_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(mut conn) = self.db.conn().await {
                match store::tx_fate(&mut conn, tx.txid, written.clone()).await {
                    Ok(fate)
                        if fate.server_started == tx.server_started
                            && fate.status.as_deref() == Some("in progress") => {}
                    Ok(fate) if fate.present == expected => return Fate::Committed,
                    Ok(fate) if fate.present == 0 => return Fate::RolledBack,
                    Ok(_) => return Fate::Unknown,
                    Err(e) => {
                        tracing::debug!(error.cause = %e, "asking for a batch's fate failed");
                        drop(deadpool::managed::Object::take(conn));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Fate::Unknown
    }
}

/// How long the engine tries to learn the fate of a batch whose connection broke at commit.
const FATE_TIMEOUT: Duration = Duration::from_secs(10);

/// What an attempt got as far as, for when its connection breaks.
#[derive(Default)]
pub(super) struct Progress {
    /// The transaction's id and server, once it began.
    pub(super) tx: Option<store::TxInfo>,
    /// The ids the batch registers (posted transfers, recorded failures), once decided.
    pub(super) written: Vec<Uuid>,
    /// The batch's answers, once decided and its attached writes ran.
    pub(super) results: Option<Vec<Vec<Outcome>>>,
}

/// What became of a transaction whose connection broke.
enum Fate {
    Committed,
    RolledBack,
    Unknown,
}

/// Whether the connection is inside a transaction (so a failed batch must roll back).
fn in_transaction(conn: &mut AsyncPgConnection) -> bool {
    matches!(
        AnsiTransactionManager::transaction_manager_status_mut(conn).transaction_depth(),
        Ok(Some(_))
    )
}
