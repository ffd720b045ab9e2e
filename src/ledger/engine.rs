//! The posting engine: the ONE path every transfer takes (HTTP, payments, cards, expiry).
//!
//! Callers submit a request (a list of transfers, optionally with writes of their own) to a
//! bounded queue and wait for its results. One task takes whatever is queued (up to
//! `ledger.batch_max_transfers`) and runs it as one database transaction — group commit:
//!
//! 1. read the pending transfers the batch posts or voids (immutable rows; no lock needed);
//! 2. in one pipelined round trip: read the touched accounts, which ids exist, which failed
//!    before, and how the referenced pending transfers were resolved (no row locks yet);
//! 3. apply every request in arrival order with the pure state machine (`model`), so one
//!    failing transfer fails alone with its own code;
//! 4. run the callers' attached writes inside the same transaction;
//! 5. write transfers, entries, failures, expiry bookkeeping and every touched account's new
//!    totals in ONE set-based statement, whose UPDATE takes the account locks (in id order)
//!    only now and applies each account's new totals only if it is still at the version read
//!    in step 2; commit; answer every waiter. A hot account's row is thus locked for the
//!    length of one statement and a commit, not for a whole batch.
//!
//! With nothing else queued a request is flushed at once (no added latency); under load the
//! queue fills while a batch commits, so batches grow by themselves. Correctness rests on the
//! database (row locks, unique ids, CHECK constraints), never on this process's memory, so
//! several replicas may run engines against one database. A conflict with another replica (a
//! unique violation, a deadlock) rolls the batch back and runs it again on fresh state.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use diesel::connection::{TransactionDepthChange, TransactionManagerStatus};
use diesel_async::{AnsiTransactionManager, AsyncPgConnection, TransactionManager};
use futures_util::FutureExt;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use uuid::Uuid;

use super::error::{LedgerError, SideWriteError};
use super::model::{
    AccountState, NewTransfer, Outcome, Resolution, ResultCode, Scope, Snapshot, StoredTransfer,
    TransferFlags, apply_request,
};
use super::service::{account_state, stored_transfer};
use super::store::{self, WriteSet};
use crate::platform::db::{Db, DbError, LockKey, Retryable, Tx, TxFuture, is_retryable};
use crate::platform::workers::Shutdown;

/// A write a caller attaches to its request: it runs inside the batch's transaction after the
/// request's transfers were decided (it sees their outcomes), and commits with them. It may
/// run more than once (a batch that conflicts is retried), so it must only write through `tx`.
pub type SideWrite = Box<
    dyn for<'t, 'c> FnMut(&'t mut Tx<'c>, &'t [Outcome]) -> TxFuture<'t, Result<(), SideWriteError>>
        + Send,
>;

/// A writer that runs the attached writes of all of a batch's requests that carry it at once,
/// set-based (one statement for every payment row of the batch, one for every event, ...),
/// instead of a few statements per request. Like a [`SideWrite`] it may run more than once.
pub trait BatchWrite: Send + Sync {
    /// Runs the writes of `items` (this writer's requests of the batch, in arrival order, each
    /// with its transfers' outcomes) inside the batch's transaction. Returns the requests it
    /// refuses, by index into `items`: the engine answers each with its error and runs the
    /// batch again without them, so a writer that refuses need not have written anything.
    /// `Err` is a failure of the whole write (a retryable database error runs the batch again).
    fn write<'t, 'c>(
        &'t self,
        tx: &'t mut Tx<'c>,
        items: &'t [AttachedItem<'t>],
    ) -> TxFuture<'t, Result<Vec<(usize, SideWriteError)>, SideWriteError>>;
}

/// One request's part of a [`BatchWrite`]: what the caller attached, and its outcomes.
pub struct AttachedItem<'a> {
    pub item: &'a (dyn std::any::Any + Send + Sync),
    pub outcomes: &'a [Outcome],
}

/// A batched writer's requests in a batch: their indexes in the batch, and their items.
type Group<'a> = (&'a Arc<dyn BatchWrite>, Vec<usize>, Vec<AttachedItem<'a>>);

/// What a request attaches to its transfers.
pub enum Attachment {
    /// Its own write, run for this request alone.
    Each(SideWrite),
    /// An item for a writer that handles all of a batch's items at once.
    Batched(Arc<dyn BatchWrite>, Box<dyn std::any::Any + Send + Sync>),
}

/// Tuning of the engine (configuration `ledger.*`).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Most transfers one batch (one transaction) takes.
    pub batch_max_transfers: usize,
    /// Under load, how long to wait for more requests before running a batch that is not full.
    pub batch_linger: Duration,
    /// Requests that may wait in the queue; beyond it, submitters wait (back-pressure).
    pub queue_capacity: usize,
    /// Bytes (estimated) of the requests waiting or running, at most; beyond, submitters
    /// wait too. Bounds memory whatever the requests' size.
    pub queue_max_bytes: usize,
    /// How long a submitter waits for room in the queue before `ledger_overloaded`.
    pub enqueue_timeout: Duration,
    /// Retries of a batch after a conflict with another replica.
    pub max_retries: u32,
    /// Batches in flight at once (each on its own connection).
    pub pipeline_depth: usize,
}

struct Submission {
    scope: Scope,
    transfers: Vec<NewTransfer>,
    /// Advisory lock keys the attached write needs (see [`EngineHandle::submit`]).
    locks: Vec<LockKey>,
    side: Option<Attachment>,
    reply: oneshot::Sender<Result<Vec<Outcome>, LedgerError>>,
}

/// The submitting side; cheap to clone.
#[derive(Clone)]
pub struct EngineHandle {
    queue: mpsc::Sender<Submission>,
    enqueue_timeout: Duration,
    /// KiB of request memory that may be queued or in flight (see [`request_kib`]).
    budget: Arc<tokio::sync::Semaphore>,
    budget_kib: u32,
}

/// A request's memory, estimated in KiB (at least 1): a transfer's fixed size plus its
/// metadata's text; what the attached write carries is small next to it.
fn request_kib(transfers: &[NewTransfer]) -> u32 {
    const PER_TRANSFER: usize = 256;
    let bytes: usize = transfers
        .iter()
        .map(|t| {
            PER_TRANSFER
                + t.metadata
                    .as_ref()
                    .map_or(0, |m| m.to_string().len().saturating_mul(2))
        })
        .sum();
    u32::try_from(bytes.div_ceil(1024))
        .unwrap_or(u32::MAX)
        .max(1)
}

impl EngineHandle {
    /// Submits one request and waits for its outcomes (one per transfer, in order). `locks`:
    /// transaction-scoped advisory lock keys the attached write needs before it locks rows of
    /// its own (e.g. a customer's limit counters). The engine takes every key of a batch in
    /// ascending order before any attached write runs, so attached writes of batches running
    /// at once (pipelined, or on other replicas) never wait on each other in a cycle.
    pub async fn submit(
        &self,
        scope: Scope,
        transfers: Vec<NewTransfer>,
        locks: Vec<LockKey>,
        side: Option<Attachment>,
    ) -> Result<Vec<Outcome>, LedgerError> {
        if transfers.is_empty() {
            return Ok(Vec::new());
        }
        // Memory first: a request waits for room in the byte budget as for room in the queue
        // (one larger than the whole budget takes all of it, and runs alone).
        let kib = request_kib(&transfers).min(self.budget_kib);
        let room = match tokio::time::timeout(
            self.enqueue_timeout,
            self.budget.clone().acquire_many_owned(kib),
        )
        .await
        {
            Ok(Ok(room)) => room,
            Ok(Err(_)) => return Err(LedgerError::Unavailable),
            Err(_) => return Err(LedgerError::Overloaded),
        };
        let (reply, answer) = oneshot::channel();
        let submission = Submission {
            scope,
            transfers,
            locks,
            side,
            reply,
        };
        match tokio::time::timeout(self.enqueue_timeout, self.queue.send(submission)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(LedgerError::Unavailable),
            Err(_) => return Err(LedgerError::Overloaded),
        }
        let answer = answer.await.map_err(|_| LedgerError::Unavailable)?;
        drop(room);
        answer
    }
}

/// The engine's metrics.
#[derive(Clone)]
pub struct EngineMetrics {
    transfers: IntCounterVec,
    batch_transfers: Histogram,
    batch_seconds: Histogram,
    queue_depth: IntGauge,
}

impl EngineMetrics {
    pub fn new(registry: &Registry) -> Result<EngineMetrics, prometheus::Error> {
        let transfers = IntCounterVec::new(
            Opts::new(
                "ledger_transfers_total",
                "Transfers decided by the posting engine, by result code.",
            ),
            &["result"],
        )?;
        let batch_transfers = Histogram::with_opts(
            HistogramOpts::new("ledger_batch_transfers", "Transfers per committed batch.").buckets(
                vec![
                    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
                    8190.0,
                ],
            ),
        )?;
        let batch_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "ledger_batch_duration_seconds",
                "Time to run and commit one batch.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            ]),
        )?;
        let queue_depth = IntGauge::new(
            "ledger_queue_depth",
            "Requests waiting for the posting engine.",
        )?;
        registry.register(Box::new(transfers.clone()))?;
        registry.register(Box::new(batch_transfers.clone()))?;
        registry.register(Box::new(batch_seconds.clone()))?;
        registry.register(Box::new(queue_depth.clone()))?;
        Ok(EngineMetrics {
            transfers,
            batch_transfers,
            batch_seconds,
            queue_depth,
        })
    }
}

/// The batching task. Build with [`Engine::new`], then `run` it as a background worker.
pub struct Engine {
    queue: mpsc::Receiver<Submission>,
    core: Arc<Core>,
}

/// What a batch needs, shared by the batches in flight.
struct Core {
    db: Db,
    config: EngineConfig,
    metrics: Option<EngineMetrics>,
}

/// What a request touches: two requests that share a key never run in concurrent batches,
/// so each sees the other's effects in arrival order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Account(Uuid),
    Transfer(Uuid),
}

fn keys_of(submission: &Submission) -> Vec<Key> {
    let mut keys = Vec::with_capacity(submission.transfers.len() * 3);
    for t in &submission.transfers {
        keys.push(Key::Transfer(t.id.uuid()));
        keys.extend(t.pending_id.map(|p| Key::Transfer(p.uuid())));
        keys.extend(t.debit_account_id.map(|a| Key::Account(a.uuid())));
        keys.extend(t.credit_account_id.map(|a| Key::Account(a.uuid())));
    }
    keys
}

/// How a batch attempt failed.
enum BatchError {
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

impl Engine {
    /// The engine and the handle to submit to it.
    pub fn new(
        db: Db,
        config: EngineConfig,
        metrics: Option<EngineMetrics>,
    ) -> (EngineHandle, Engine) {
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let budget_kib = u32::try_from(config.queue_max_bytes / 1024)
            .unwrap_or(u32::MAX)
            .clamp(
                1,
                u32::try_from(tokio::sync::Semaphore::MAX_PERMITS).unwrap_or(u32::MAX),
            );
        let handle = EngineHandle {
            queue: tx,
            enqueue_timeout: config.enqueue_timeout,
            budget: Arc::new(tokio::sync::Semaphore::new(
                usize::try_from(budget_kib).unwrap_or(1),
            )),
            budget_kib,
        };
        (
            handle,
            Engine {
                queue: rx,
                core: Arc::new(Core {
                    db,
                    config,
                    metrics,
                }),
            },
        )
    }

    /// Takes batches until shutdown, then answers what is still queued and returns.
    ///
    /// Up to `pipeline_depth` batches run at once, each on its own connection, so one batch's
    /// statements run while another commits and both database cores work. Requests that share
    /// an account or a transfer id with a running batch wait for it (in arrival order), so
    /// concurrent batches never race on the same rows; a post or void whose accounts are only
    /// known from its pending transfer is still safe: the version check of the write turns
    /// such a race into a retry.
    pub async fn run(mut self, mut shutdown: Shutdown) {
        let depth = self.core.config.pipeline_depth.max(1);
        let max = self.core.config.batch_max_transfers.max(1);
        let mut running: JoinSet<u64> = JoinSet::new();
        let mut busy: HashMap<u64, Vec<Key>> = HashMap::new();
        let mut waiting: VecDeque<Submission> = VecDeque::new();
        let mut next_batch: u64 = 0;
        let mut closing = false;
        loop {
            if waiting.is_empty() && self.queue.is_empty() {
                if closing && running.is_empty() {
                    return;
                }
                tokio::select! {
                    biased;
                    Some(done) = running.join_next(), if !running.is_empty() => {
                        if let Ok(id) = done {
                            busy.remove(&id);
                        }
                        continue;
                    }
                    next = self.queue.recv(), if !closing => match next {
                        Some(s) => waiting.push_back(s),
                        None => closing = true,
                    },
                    () = shutdown.requested(), if !closing => {
                        // Finish what was accepted, so no waiter is left without an answer.
                        closing = true;
                        self.queue.close();
                    }
                }
                continue;
            }
            if running.len() >= depth {
                if let Some(Ok(id)) = running.join_next().await {
                    busy.remove(&id);
                }
                continue;
            }
            if !running.is_empty() && !self.core.config.batch_linger.is_zero() && waiting.len() < 2
            {
                // Under load only: a batch is in flight, so waiting briefly for company costs
                // this request little and saves a transaction.
                tokio::time::sleep(self.core.config.batch_linger).await;
            }
            while waiting.len() < max {
                match self.queue.try_recv() {
                    Ok(s) => waiting.push_back(s),
                    Err(_) => break,
                }
            }
            if let Some(m) = &self.core.metrics {
                m.queue_depth
                    .set(i64::try_from(self.queue.len() + waiting.len()).unwrap_or(i64::MAX));
            }
            let in_flight: HashSet<Key> = busy.values().flatten().copied().collect();
            let mut blocked: HashSet<Key> = HashSet::new();
            let mut batch: Vec<Submission> = Vec::new();
            let mut batch_keys: Vec<Key> = Vec::new();
            let mut count = 0;
            let mut later = VecDeque::with_capacity(waiting.len());
            while let Some(submission) = waiting.pop_front() {
                if count >= max {
                    later.push_back(submission);
                    continue;
                }
                let keys = keys_of(&submission);
                if keys
                    .iter()
                    .any(|k| in_flight.contains(k) || blocked.contains(k))
                {
                    blocked.extend(keys);
                    later.push_back(submission);
                } else {
                    count += submission.transfers.len();
                    batch_keys.extend(keys);
                    batch.push(submission);
                }
            }
            waiting = later;
            if batch.is_empty() {
                // Everything waiting depends on a running batch.
                if let Some(Ok(id)) = running.join_next().await {
                    busy.remove(&id);
                }
                continue;
            }
            next_batch += 1;
            let id = next_batch;
            busy.insert(id, batch_keys);
            let core = self.core.clone();
            running.spawn(async move {
                // A panic must not leave the batch's keys busy forever.
                if AssertUnwindSafe(core.process(batch))
                    .catch_unwind()
                    .await
                    .is_err()
                {
                    tracing::error!("a ledger batch panicked");
                }
                id
            });
        }
    }
}

impl Core {
    /// Runs a batch to an answer for every request in it.
    ///
    /// One request must never fail its neighbours: when an attempt fails in a way that may
    /// come from one request's data (an attached write's error, a statement the database
    /// refused), the batch is split in two and each half runs on its own, first half first
    /// (arrival order), until the request at fault runs alone and gets the error by itself.
    async fn process(&self, batch: Vec<Submission>) {
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

    /// BEGIN travels with the first reads and COMMIT with the write: a batch costs two round
    /// trips (three when it posts or voids pending transfers) plus the commit's flush. The
    /// transaction's id and start time come back with BEGIN's round trip; the start time is
    /// the batch's clock (one clock for every replica: the database's), stamping transfers
    /// and entries and deciding expiry.
    async fn in_transaction(
        &self,
        conn: &mut AsyncPgConnection,
        batch: &mut [Submission],
        pessimistic: bool,
        progress: &mut Progress,
    ) -> Result<Vec<Vec<Outcome>>, BatchError> {
        let mut lock_keys = LockPlan::new(
            batch
                .iter()
                .filter(|s| s.side.is_some())
                .flat_map(|s| s.locks.iter().map(|k| k.value()))
                .collect(),
        );
        let mut transfer_ids: Vec<Uuid> = Vec::new();
        let mut pending_ids: BTreeSet<Uuid> = BTreeSet::new();
        let mut account_ids: BTreeSet<Uuid> = BTreeSet::new();
        for submission in batch.iter() {
            for t in &submission.transfers {
                transfer_ids.push(t.id.uuid());
                if let Some(p) = t.pending_id {
                    pending_ids.insert(p.uuid());
                }
                account_ids.extend(t.debit_account_id.map(|a| a.uuid()));
                account_ids.extend(t.credit_account_id.map(|a| a.uuid()));
            }
        }
        // The transaction's settings come with its first statement (`store::tx_info`):
        // the engine's statements are prepared once per connection; should a plan be made
        // while the tables are tiny, it must still not scan them once they are big
        // (enable_seqscan off). Their plans depend on the batch's size only through array
        // lengths, so one generic plan serves every batch (no re-planning of small batches
        // each time, no merge join over the whole accounts key chosen for a large one), and a
        // large batch's estimated cost must not make PostgreSQL spend longer compiling it
        // (JIT) than running it.
        const BEGIN: &str = "BEGIN";
        let mut pending_rows = Vec::new();
        let mut begun = false;
        let mut now: Option<DateTime<Utc>> = None;
        if !pending_ids.is_empty() {
            // Pending transfers are immutable: read them first, to learn their accounts.
            let shared: &AsyncPgConnection = conn;
            let (began, info, rows) = futures_util::future::join3(
                async move {
                    let mut c = shared;
                    diesel_async::SimpleAsyncConnection::batch_execute(&mut c, BEGIN).await
                },
                store::tx_info(shared),
                store::load_transfers(shared, pending_ids.iter().copied().collect()),
            )
            .await;
            began?;
            note_depth(conn, TransactionDepthChange::IncreaseDepth)?;
            begun = true;
            let info = info?;
            now = Some(info.now);
            progress.tx = Some(info);
            pending_rows = rows?;
            for row in &pending_rows {
                account_ids.insert(row.debit_account_id);
                account_ids.insert(row.credit_account_id);
            }
        }
        if pessimistic {
            // The global lock order: advisory keys (ascending), then accounts (by id).
            if !begun {
                let shared: &AsyncPgConnection = conn;
                let (began, info) = futures_util::future::join(
                    async move {
                        let mut c = shared;
                        diesel_async::SimpleAsyncConnection::batch_execute(&mut c, BEGIN).await
                    },
                    store::tx_info(shared),
                )
                .await;
                began?;
                note_depth(conn, TransactionDepthChange::IncreaseDepth)?;
                begun = true;
                let info = info?;
                now = Some(info.now);
                progress.tx = Some(info);
            }
            if !lock_keys.is_empty() {
                store::advisory_locks(&mut &*conn, std::mem::take(&mut lock_keys)).await?;
            }
            store::lock_accounts(conn, account_ids.iter().copied().collect()).await?;
        }
        // Accounts, ids and resolutions: one pipelined round trip, no row locks; with them the
        // advisory locks the attached writes asked for (all in one statement, ascending), when
        // not taken already.
        // Empty when the pessimistic path took them already.
        let advisory = lock_keys;
        let shared: &AsyncPgConnection = conn;
        let (began, info, locked, reads) = futures_util::future::join4(
            async move {
                if begun {
                    return Ok(());
                }
                let mut c = shared;
                diesel_async::SimpleAsyncConnection::batch_execute(&mut c, BEGIN).await
            },
            async move {
                if begun {
                    return Ok(None);
                }
                store::tx_info(shared).await.map(Some)
            },
            async move {
                if advisory.is_empty() {
                    return Ok(0);
                }
                store::advisory_locks(&mut { shared }, advisory).await
            },
            futures_util::future::try_join4(
                store::read_accounts(shared, account_ids.into_iter().collect()),
                store::load_transfers(shared, transfer_ids.clone()),
                store::load_resolutions(shared, pending_ids.iter().copied().collect()),
                store::load_failed(shared, transfer_ids),
            ),
        )
        .await;
        began?;
        if !begun {
            note_depth(conn, TransactionDepthChange::IncreaseDepth)?;
        }
        if let Some(info) = info? {
            now = Some(info.now);
            progress.tx = Some(info);
        }
        let now = now.ok_or_else(|| {
            BatchError::Fatal(LedgerError::Internal(anyhow::anyhow!(
                "a batch began without its transaction's clock"
            )))
        })?;
        locked?;
        let (accounts, existing, resolutions, failed) = reads?;

        let mut snapshot = Snapshot::default();
        let mut versions: HashMap<Uuid, (i64, i32)> = HashMap::with_capacity(accounts.len());
        for row in accounts {
            versions.insert(row.id, (row.entry_seq, row.flags));
            let state = account_state(row).map_err(BatchError::Fatal)?;
            snapshot.accounts.insert(state.id, state);
        }
        for row in existing {
            let stored = stored_transfer(row).map_err(BatchError::Fatal)?;
            snapshot.existing.insert(stored.id, stored);
        }
        for row in failed {
            if let Some(code) = ResultCode::parse(&row.result) {
                snapshot
                    .failed
                    .insert(super::model::TransferId::from_uuid(row.id), code);
            }
        }
        let resolved: HashMap<Uuid, Resolution> = resolutions
            .into_iter()
            .map(|r| {
                let how = if TransferFlags::from_bits_retain(r.flags)
                    .contains(TransferFlags::POST_PENDING)
                {
                    Resolution::Posted
                } else {
                    Resolution::Voided
                };
                (r.pending_id, how)
            })
            .collect();
        for row in pending_rows {
            let resolution = resolved.get(&row.id).copied();
            let stored = stored_transfer(row).map_err(BatchError::Fatal)?;
            snapshot.pendings.insert(stored.id, (stored, resolution));
        }
        let known_failures: HashSet<Uuid> = snapshot.failed.keys().map(|id| id.uuid()).collect();

        // 3. Decide every transfer in arrival order.
        let results: Vec<Vec<Outcome>> = batch
            .iter()
            .map(|s| apply_request(&mut snapshot, s.scope, &s.transfers, now))
            .collect();

        // 4. The callers' own writes, in the same transaction, under the advisory locks.
        for (index, submission) in batch.iter_mut().enumerate() {
            if let Some(Attachment::Each(side)) = submission.side.as_mut() {
                let mut tx = Tx::within_open_transaction(conn);
                if let Err(e) = side(&mut tx, &results[index]).await {
                    // A conflict inside an attached write (deadlock, serialization failure) is
                    // the batch's, not the request's: run the batch again.
                    return Err(match side_failure(e) {
                        Ok(retry) => retry,
                        Err(e) => BatchError::Refused(vec![(index, e)]),
                    });
                }
            }
        }
        // Writers of batched attachments, each once with all of its items.
        let mut groups: Vec<Group<'_>> = Vec::new();
        for (index, submission) in batch.iter().enumerate() {
            if let Some(Attachment::Batched(writer, item)) = &submission.side {
                let attached = AttachedItem {
                    item: item.as_ref(),
                    outcomes: &results[index],
                };
                match groups.iter_mut().find(|(w, _, _)| Arc::ptr_eq(w, writer)) {
                    Some((_, indexes, items)) => {
                        indexes.push(index);
                        items.push(attached);
                    }
                    None => groups.push((writer, vec![index], vec![attached])),
                }
            }
        }
        for (writer, indexes, items) in &groups {
            let mut tx = Tx::within_open_transaction(conn);
            match writer.write(&mut tx, items).await {
                Ok(refused) if refused.is_empty() => {}
                Ok(refused) => {
                    return Err(BatchError::Refused(
                        refused
                            .into_iter()
                            .filter_map(|(i, e)| indexes.get(i).map(|index| (*index, e)))
                            .collect(),
                    ));
                }
                Err(e) => {
                    return Err(match side_failure(e) {
                        Ok(retry) => retry,
                        Err(e) => BatchError::Fatal(LedgerError::SideWrite(e)),
                    });
                }
            }
        }

        progress.results = Some(results.clone());

        // 5. One statement writes it all, then COMMIT. The COMMIT must not be pipelined with
        // the write: on a connection's first batch the write's statement is still being
        // prepared (a round trip of its own), so a COMMIT sent alongside overtook it and
        // committed the attached writes while the transfers landed in a transaction of their
        // own. When another replica moved one of the accounts since it was read, the write
        // fails (as a serialization failure, 40001) and the batch rolls back and runs again.
        let write = write_set(batch, &results, &snapshot, &known_failures, &versions);
        // The ids this batch registers, should its commit's fate have to be read from them.
        progress.written = write
            .transfers
            .id
            .iter()
            .chain(&write.failed_ids)
            .copied()
            .collect();
        let expected = i64::try_from(write.accounts.id.len()).unwrap_or(i64::MAX);
        if !write.is_empty() {
            let shared: &AsyncPgConnection = conn;
            let mut c = shared;
            store::write_batch(&mut c, write, expected, now).await?;
        }
        diesel_async::SimpleAsyncConnection::batch_execute(&mut *conn, "COMMIT").await?;
        note_depth(conn, TransactionDepthChange::DecreaseDepth)?;
        Ok(results)
    }
}

/// Most advisory keys a batch locks one by one; a batch with more locks their buckets instead,
/// so no batch holds more than [`LOCK_BUCKETS`] advisory locks, whatever its size: PostgreSQL's
/// shared lock table (`max_locks_per_transaction` x connections, 6,400 by default) is shared by
/// every transaction, and two batches of 8,190 keys each used to exhaust it and fail.
const EXACT_LOCKS_MAX: usize = 128;
/// Buckets the keys fold into (`key` mod this), locked in PostgreSQL's two-int key space
/// (class [`LOCK_BUCKET_CLASS`]), which never meets the single-bigint keys.
const LOCK_BUCKETS: i64 = 256;
/// The class of the bucket locks: "fl" in ASCII.
const LOCK_BUCKET_CLASS: i32 = 0x666c;

/// The advisory locks of a batch, multi-granularity: a small batch takes each key's bucket
/// shared and the key itself exclusive; a large one takes its keys' buckets exclusive. Any two
/// batches sharing a key therefore conflict (exact-exact on the key, bucket-bucket exclusive
/// otherwise), small batches on different keys still run side by side, and everyone takes the
/// buckets first and the keys second, each in ascending order, so no two batches wait on each
/// other in a cycle.
#[derive(Debug, Default, PartialEq)]
pub struct LockPlan {
    /// The two-int key space's class of the buckets.
    pub class: i32,
    /// The bucket (0..LOCK_BUCKETS) or the key, in the order to take them.
    pub keys: Vec<i64>,
    /// Whether the entry is a key (else a bucket).
    pub exact: Vec<bool>,
    /// Whether a bucket is taken shared.
    pub shared: Vec<bool>,
}

impl LockPlan {
    fn new(mut keys: Vec<i64>) -> LockPlan {
        keys.sort_unstable();
        keys.dedup();
        let mut buckets: Vec<i64> = keys.iter().map(|k| k.rem_euclid(LOCK_BUCKETS)).collect();
        buckets.sort_unstable();
        buckets.dedup();
        let small = keys.len() <= EXACT_LOCKS_MAX;
        let mut plan = LockPlan {
            class: LOCK_BUCKET_CLASS,
            ..LockPlan::default()
        };
        for bucket in buckets {
            plan.keys.push(bucket);
            plan.exact.push(false);
            plan.shared.push(small);
        }
        if small {
            for key in keys {
                plan.keys.push(key);
                plan.exact.push(true);
                plan.shared.push(false);
            }
        }
        plan
    }

    fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// How long the engine tries to learn the fate of a batch whose connection broke at commit.
const FATE_TIMEOUT: Duration = Duration::from_secs(10);

/// What an attempt got as far as, for when its connection breaks.
#[derive(Default)]
struct Progress {
    /// The transaction's id and server, once it began.
    tx: Option<store::TxInfo>,
    /// The ids the batch registers (posted transfers, recorded failures), once decided.
    written: Vec<Uuid>,
    /// The batch's answers, once decided and its attached writes ran.
    results: Option<Vec<Vec<Outcome>>>,
}

/// What became of a transaction whose connection broke.
enum Fate {
    Committed,
    RolledBack,
    Unknown,
}

/// An attached write's failure: `Ok` with a retry of the batch when it is a conflict with
/// other transactions (deadlock, serialization failure), else the error itself.
fn side_failure(e: SideWriteError) -> Result<BatchError, SideWriteError> {
    match e.0.downcast::<DbError>() {
        Ok(db) if db.is_retryable() => Ok(BatchError::Retry(LedgerError::Db(*db))),
        Ok(db) => Err(SideWriteError(db)),
        Err(other) => Err(SideWriteError(other)),
    }
}

/// Tells diesel's transaction manager about a BEGIN or COMMIT sent as plain SQL (pipelined
/// with other statements), so nested transactions of attached writes become savepoints and
/// the pool never hands out a connection it believes idle while a transaction is open.
fn note_depth(
    conn: &mut AsyncPgConnection,
    change: TransactionDepthChange,
) -> Result<(), BatchError> {
    match AnsiTransactionManager::transaction_manager_status_mut(conn) {
        TransactionManagerStatus::Valid(status) => status
            .change_transaction_depth(change)
            .map_err(|e| BatchError::Fatal(LedgerError::Db(DbError::Query(e)))),
        TransactionManagerStatus::InError => Err(BatchError::Fatal(LedgerError::Db(
            DbError::Query(diesel::result::Error::BrokenTransactionManager),
        ))),
    }
}

/// Whether the connection is inside a transaction (so a failed batch must roll back).
fn in_transaction(conn: &mut AsyncPgConnection) -> bool {
    matches!(
        AnsiTransactionManager::transaction_manager_status_mut(conn).transaction_depth(),
        Ok(Some(_))
    )
}

/// Turns the batch's outcomes into the columns of the one write.
fn write_set(
    batch: &[Submission],
    results: &[Vec<Outcome>],
    snapshot: &Snapshot,
    known_failures: &HashSet<Uuid>,
    versions: &HashMap<Uuid, (i64, i32)>,
) -> WriteSet {
    let mut w = WriteSet::default();
    let mut touched: BTreeSet<Uuid> = BTreeSet::new();
    let mut failed_seen: HashSet<Uuid> = HashSet::new();
    let mut resolved: HashSet<Uuid> = HashSet::new();
    let mut new_expiries: Vec<(Uuid, DateTime<Utc>)> = Vec::new();
    for (submission, outcomes) in batch.iter().zip(results) {
        for outcome in outcomes {
            match &outcome.applied {
                Some(applied) => {
                    push_transfer(&mut w, &applied.transfer);
                    for e in &applied.entries {
                        touched.insert(e.account_id.uuid());
                        w.entries.account_id.push(e.account_id.uuid());
                        w.entries.seq.push(e.seq);
                        w.entries.transfer_id.push(e.transfer_id.uuid());
                        w.entries.is_credit.push(e.is_credit);
                        w.entries.pending_delta.push(e.pending_delta);
                        w.entries.posted_delta.push(e.posted_delta);
                        w.entries.debits_pending.push(e.totals.debits_pending);
                        w.entries.debits_posted.push(e.totals.debits_posted);
                        w.entries.credits_pending.push(e.totals.credits_pending);
                        w.entries.credits_posted.push(e.totals.credits_posted);
                    }
                    if let Some(pending) = applied.transfer.pending_id {
                        resolved.insert(pending.uuid());
                        w.expiry_done.push(pending.uuid());
                    }
                    if let Some(at) = applied.transfer.expires_at {
                        new_expiries.push((applied.transfer.id.uuid(), at));
                    }
                }
                None => {
                    let id = outcome.id.uuid();
                    if outcome.code.is_recorded_failure()
                        && !known_failures.contains(&id)
                        && failed_seen.insert(id)
                    {
                        w.failed_ids.push(id);
                        w.failed_partners
                            .push(submission.scope.owner().map(|p| p.uuid()));
                        w.failed_results.push(outcome.code.as_str().to_owned());
                    }
                }
            }
        }
    }
    for (id, at) in new_expiries {
        // Created and resolved in the same batch: nothing to expire.
        if !resolved.contains(&id) {
            w.expiry_new_ids.push(id);
            w.expiry_new_at.push(at);
        }
    }
    // Sorted by id (a BTreeSet): concurrent batches take row locks in the same order.
    for id in touched {
        if let (Some(account), Some((seq, flags))) = (
            snapshot
                .accounts
                .get(&super::model::AccountId::from_uuid(id)),
            versions.get(&id),
        ) {
            push_account(&mut w, account);
            w.accounts.old_entry_seq.push(*seq);
            w.accounts.old_flags.push(*flags);
        }
    }
    w
}

fn push_transfer(w: &mut WriteSet, t: &StoredTransfer) {
    w.transfers.id.push(t.id.uuid());
    w.transfers.partner_id.push(t.partner_id.map(|p| p.uuid()));
    w.transfers.debit_account_id.push(t.debit_account_id.uuid());
    w.transfers
        .credit_account_id
        .push(t.credit_account_id.uuid());
    w.transfers.amount.push(t.amount);
    w.transfers.currency.push(t.currency.code().to_owned());
    w.transfers.code.push(t.code);
    w.transfers.flags.push(t.flags.bits());
    w.transfers.pending_id.push(t.pending_id.map(|p| p.uuid()));
    w.transfers
        .timeout_secs
        .push(t.timeout_secs.and_then(|s| i32::try_from(s).ok()));
    w.transfers.expires_at.push(t.expires_at);
    w.transfers.metadata.push(t.metadata.clone());
}

fn push_account(w: &mut WriteSet, a: &AccountState) {
    w.accounts.id.push(a.id.uuid());
    w.accounts.debits_pending.push(a.totals.debits_pending);
    w.accounts.debits_posted.push(a.totals.debits_posted);
    w.accounts.credits_pending.push(a.totals.credits_pending);
    w.accounts.credits_posted.push(a.totals.credits_posted);
    w.accounts.entry_seq.push(a.seq);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_batch_locks_each_key_under_its_shared_bucket() {
        let plan = LockPlan::new(vec![300, -1, 44, 300]);
        // Buckets first (ascending, shared), then the keys (ascending, exclusive).
        assert_eq!(plan.keys, vec![44, 255, -1, 44, 300]);
        assert_eq!(plan.exact, vec![false, false, true, true, true]);
        assert_eq!(plan.shared, vec![true, true, false, false, false]);
        assert_eq!(plan.class, LOCK_BUCKET_CLASS);
        assert!(LockPlan::new(Vec::new()).is_empty());
    }

    #[test]
    fn a_large_batch_takes_at_most_the_buckets_exclusively() {
        let keys: Vec<i64> = (0..8190).map(|k| k * 7919 - 3_000_000).collect();
        let plan = LockPlan::new(keys);
        assert_eq!(plan.keys.len(), usize::try_from(LOCK_BUCKETS).unwrap());
        assert!(plan.exact.iter().all(|e| !e));
        assert!(plan.shared.iter().all(|s| !s));
        assert!(plan.keys.windows(2).all(|w| w[0] < w[1]), "ascending");
        let just_over = LockPlan::new((0..=i64::try_from(EXACT_LOCKS_MAX).unwrap()).collect());
        assert!(just_over.exact.iter().all(|e| !e));
    }
}
