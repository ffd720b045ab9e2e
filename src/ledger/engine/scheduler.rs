//! The engine's loop: it takes queued requests into batches and runs up to `pipeline_depth`
//! of them at once, keeping requests that share an account or a transfer id out of
//! concurrent batches.

use std::collections::{HashMap, HashSet, VecDeque};
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use tokio::task::JoinSet;
use uuid::Uuid;

use super::{Engine, Submission};
use crate::platform::workers::Shutdown;

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

impl Engine {
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
