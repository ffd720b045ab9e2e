//! One batch's transaction: BEGIN with the first reads, the decisions of the state machine,
//! the callers' attached writes, and the one set-based write with COMMIT (steps 1 to 5 of the
//! engine).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use diesel::connection::{TransactionDepthChange, TransactionManagerStatus};
use diesel_async::{AnsiTransactionManager, AsyncPgConnection, TransactionManager};
use uuid::Uuid;

use super::batch::{BatchError, Progress};
use super::lock_plan::LockPlan;
use super::{AttachedItem, Attachment, BatchWrite, Core, Submission};
use crate::ledger::error::{LedgerError, SideWriteError};
use crate::ledger::model::{
    AccountState, Outcome, Resolution, ResultCode, Snapshot, StoredTransfer, TransferFlags,
    apply_request,
};
use crate::ledger::service::{account_state, stored_transfer};
use crate::ledger::store::{self, WriteSet};
use crate::platform::db::{DbError, Retryable, Tx};

/// A batched writer's requests in a batch: their indexes in the batch, and their items.
type Group<'a> = (&'a Arc<dyn BatchWrite>, Vec<usize>, Vec<AttachedItem<'a>>);

impl Core {
    /// BEGIN travels with the first reads and COMMIT with the write: a batch costs two round
    /// trips (three when it posts or voids pending transfers) plus the commit's flush. The
    /// transaction's id and start time come back with BEGIN's round trip; the start time is
    /// the batch's clock (one clock for every replica: the database's), stamping transfers
    /// and entries and deciding expiry.
    pub(super) async fn in_transaction(
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
                    .insert(crate::ledger::model::TransferId::from_uuid(row.id), code);
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
                .get(&crate::ledger::model::AccountId::from_uuid(id)),
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
