//! Background workers that `serve` runs beside the HTTP API (outbox delivery, expiry of
//! pending transfers and card holds, ...), and their orderly stop on shutdown.
//!
//! A worker is an async task that watches a shutdown signal and returns when it fires, after
//! finishing the unit of work in hand. Workers must be safe with several replicas running the
//! same worker at once (they claim rows with `FOR UPDATE SKIP LOCKED`); nothing here assumes a
//! single process.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

/// A worker's view of the shutdown signal.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Whether shutdown has begun.
    pub fn is_requested(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once shutdown has begun; use in `tokio::select!` beside the worker's sleep.
    pub async fn requested(&mut self) {
        // An error means the sender is gone, which also means "stop".
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// The set of running workers.
pub struct Workers {
    signal: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Default for Workers {
    fn default() -> Self {
        Self::new()
    }
}

impl Workers {
    pub fn new() -> Self {
        let (signal, _) = watch::channel(false);
        Self {
            signal,
            tasks: JoinSet::new(),
        }
    }

    /// Starts a worker; `name` appears in its log lines.
    pub fn spawn<F, Fut>(&mut self, name: &'static str, worker: F)
    where
        F: FnOnce(Shutdown) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let shutdown = Shutdown(self.signal.subscribe());
        let fut = worker(shutdown);
        self.tasks.spawn(async move {
            tracing::info!(worker = name, "worker started");
            fut.await;
            tracing::info!(worker = name, "worker stopped");
        });
    }

    /// How many workers are still running.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Signals shutdown and waits up to `grace` for every worker; stragglers are aborted.
    pub async fn stop(mut self, grace: Duration) {
        let _ = self.signal.send(true);
        let drained = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                workers.remaining = self.tasks.len(),
                "workers did not stop in time; aborting them"
            );
            self.tasks.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn stop_lets_a_worker_finish_its_current_work() {
        let finished = Arc::new(AtomicBool::new(false));
        let mut workers = Workers::new();
        let flag = finished.clone();
        workers.spawn("test", move |mut shutdown| async move {
            shutdown.requested().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            flag.store(true, Ordering::SeqCst);
        });
        assert_eq!(workers.len(), 1);
        workers.stop(Duration::from_secs(5)).await;
        assert!(finished.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_worker_that_ignores_shutdown_is_aborted_after_the_grace_period() {
        let mut workers = Workers::new();
        workers.spawn("stubborn", |_shutdown| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
        let started = std::time::Instant::now();
        workers.stop(Duration::from_millis(50)).await;
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
