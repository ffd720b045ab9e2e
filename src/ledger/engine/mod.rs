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
//!
//! This file holds the engine's face (what callers attach, its configuration, metrics and
//! handle) and builds it. The rest has a file each: `handle` submits a request and waits,
//! `scheduler` forms batches from the queue and pipelines them, `batch` runs a batch to an
//! answer for every request (retries, splitting, the fate of a broken commit), `transaction`
//! is one batch's transaction (steps 1 to 5 above) and `lock_plan` orders its advisory locks.

mod batch;
mod handle;
mod lock_plan;
mod scheduler;
mod transaction;

use std::sync::Arc;
use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};
use tokio::sync::{mpsc, oneshot};

use super::error::{LedgerError, SideWriteError};
use super::model::{NewTransfer, Outcome, Scope};
use crate::platform::db::{Db, LockKey, Tx, TxFuture};

pub(super) use lock_plan::LockPlan;

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
    /// KiB of request memory that may be queued or in flight (see
    /// [`request_kib`](handle::request_kib)).
    budget: Arc<tokio::sync::Semaphore>,
    budget_kib: u32,
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
}
