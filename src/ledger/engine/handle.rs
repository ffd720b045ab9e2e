//! The submitting side: a request waits for room in the memory budget and the queue, then
//! for its outcomes.

use tokio::sync::oneshot;

use super::{Attachment, EngineHandle, Submission};
use crate::ledger::error::LedgerError;
use crate::ledger::model::{NewTransfer, Outcome, Scope};
use crate::platform::db::LockKey;

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
