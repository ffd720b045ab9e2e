//! The writes attached to payments' postings: the batch writer that writes all of a ledger
//! batch's new payments at once (tier limits, refund bounds, rows, events, stored answers), and
//! the settlement's write that finishes a withdrawal.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Attached, now, view};
use crate::kernel::PartnerId;
use crate::kyc::{Compliance, Direction, Movement};
use crate::ledger::{AttachedItem, BatchWrite, Outcome, ResultCode, SideWriteError};
use crate::notify::{NewEvent, Outbox};
use crate::payment::error::PaymentError;
use crate::payment::model::PaymentStatus;
use crate::payment::store::{self, PaymentRow};
use crate::platform::db::{Tx, TxFuture};
use crate::platform::idempotency::{Claim, is_claim_lost};
use crate::platform::money::Money;

/// An attached write's error: database errors travel as themselves, so the engine can tell a
/// conflict (which it retries) from a refusal.
fn side_error(e: impl Into<PaymentError>) -> SideWriteError {
    match e.into() {
        PaymentError::Db(db) => SideWriteError(Box::new(db)),
        other => SideWriteError(Box::new(other)),
    }
}

/// Writes the payments of a ledger batch: all of a batch's payments at once, so a batch costs
/// a handful of statements whatever its size (customers and limit counters, payment rows,
/// events, stored answers) instead of several per payment.
pub(super) struct PaymentWriter {
    pub(super) kyc: Arc<dyn Compliance>,
    pub(super) outbox: Arc<dyn Outbox>,
}

impl BatchWrite for PaymentWriter {
    fn write<'t, 'c>(
        &'t self,
        tx: &'t mut Tx<'c>,
        items: &'t [AttachedItem<'t>],
    ) -> TxFuture<'t, Result<Vec<(usize, SideWriteError)>, SideWriteError>> {
        Box::pin(write_payments(tx, &*self.kyc, &*self.outbox, items))
    }
}

/// The batch's payments whose transfer posted: the tier limits of every payer and payee (in
/// arrival order), refunds never beyond what was paid, then the payment rows, their events
/// and the stored idempotent answers, each one statement. Refuses (writing nothing) the
/// payments a rule refuses; the engine runs the batch again without them.
async fn write_payments(
    tx: &mut Tx<'_>,
    kyc: &dyn Compliance,
    outbox: &dyn Outbox,
    items: &[AttachedItem<'_>],
) -> Result<Vec<(usize, SideWriteError)>, SideWriteError> {
    let mut posted: Vec<(usize, &Attached, &crate::ledger::Applied)> = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let attached = item
            .item
            .downcast_ref::<Attached>()
            .ok_or_else(|| side_error(anyhow::anyhow!("a payment batch got another item")))?;
        // This may be a re-run of a batch that rolled back: what it stored is gone.
        if let Some(claim) = &attached.claim {
            claim.reset_completion();
        }
        if let Some(applied) = item
            .outcomes
            .first()
            .filter(|o| o.code == ResultCode::Ok)
            .and_then(|o| o.applied.as_ref())
        {
            posted.push((index, attached, applied));
        }
    }
    if posted.is_empty() {
        return Ok(Vec::new());
    }
    let mut movements: Vec<(PartnerId, Movement)> = Vec::with_capacity(posted.len() * 2);
    let mut movers: Vec<usize> = Vec::with_capacity(posted.len() * 2);
    for (index, a, applied) in &posted {
        if let Some(movement) = a.outgoing {
            movements.push((a.partner, movement));
            movers.push(*index);
        }
        if let Some((customer, account)) = a.incoming {
            let after = applied
                .entries
                .iter()
                .find(|e| e.account_id == account)
                .and_then(|e| e.totals.posted_balance())
                .unwrap_or(0);
            movements.push((
                a.partner,
                Movement {
                    customer_id: customer,
                    amount: a.amount,
                    direction: Direction::Incoming,
                    balance_after: Some(Money::from_minor(after, a.amount.currency())),
                },
            ));
            movers.push(*index);
        }
    }
    let answers = kyc
        .authorize_all(tx, &movements)
        .await
        .map_err(side_error)?;
    let mut refused: Vec<(usize, SideWriteError)> = Vec::new();
    for (index, answer) in movers.into_iter().zip(answers) {
        if let Err(e) = answer
            && !refused.iter().any(|(i, _)| *i == index)
        {
            refused.push((index, side_error(e)));
        }
    }
    if !refused.is_empty() {
        return Ok(refused);
    }
    // Refunds, under the original's row lock (and its advisory key, taken by the engine), so
    // concurrent refunds never return more than paid; this batch's earlier refunds count too.
    let mut refunding: HashMap<uuid::Uuid, i64> = HashMap::new();
    for (index, a, _) in &posted {
        let Some((original, paid)) = a.refund_of else {
            continue;
        };
        store::lock_payment(tx.conn(), original)
            .await
            .map_err(side_error)?;
        let earlier = refunding.get(&original).copied().unwrap_or(0);
        let before = store::refunded(tx.conn(), original)
            .await
            .map_err(side_error)?
            .saturating_add(earlier);
        let after = before.saturating_add(a.row.amount);
        if after > paid {
            refused.push((
                *index,
                side_error(PaymentError::RefundExceedsPayment {
                    remaining: Money::from_minor(paid.saturating_sub(before), a.amount.currency())
                        .format_amount(),
                }),
            ));
            continue;
        }
        refunding.insert(original, earlier.saturating_add(a.row.amount));
        if after == paid {
            store::set_status(
                tx.conn(),
                original,
                PaymentStatus::Reversed.as_str(),
                a.row.created_at,
            )
            .await
            .map_err(side_error)?;
        }
    }
    if !refused.is_empty() {
        return Ok(refused);
    }
    let rows: Vec<PaymentRow> = posted.iter().map(|(_, a, _)| a.row.clone()).collect();
    let mut events = Vec::with_capacity(posted.len());
    let mut bodies: Vec<(usize, &Claim, Vec<u8>)> = Vec::new();
    for (index, a, _) in &posted {
        let payment = view(&a.row).map_err(side_error)?;
        if let Some(claim) = &a.claim {
            let body =
                serde_json::to_vec(&payment).map_err(|e| side_error(anyhow::Error::from(e)))?;
            bodies.push((*index, claim, body));
        }
        events.push(NewEvent {
            partner_id: Some(a.partner),
            event_type: a.event.into(),
            data: serde_json::to_value(&payment).map_err(|e| side_error(anyhow::Error::from(e)))?,
        });
    }
    let answers: Vec<(&Claim, actix_web::http::StatusCode, &[u8])> = bodies
        .iter()
        .map(|(_, claim, body)| {
            (
                *claim,
                actix_web::http::StatusCode::CREATED,
                body.as_slice(),
            )
        })
        .collect();
    // The rows, the events and the stored answers go together: one round trip.
    let shared: &Tx<'_> = tx;
    let (inserted, recorded, stored) = futures_util::future::join3(
        store::insert_payments(shared.shared(), rows),
        outbox.record_events(shared, events),
        Claim::complete_all_in(shared, &answers),
    )
    .await;
    inserted.map_err(side_error)?;
    recorded.map_err(side_error)?;
    for ((index, _, _), result) in bodies.iter().zip(stored.map_err(side_error)?) {
        match result {
            Ok(()) => {}
            // A request racing with the same key committed (or is committing) first.
            Err(e) if is_claim_lost(&e) => {
                refused.push((*index, side_error(PaymentError::KeyInUse)))
            }
            Err(e) => refused.push((*index, side_error(e))),
        }
    }
    Ok(refused)
}

/// The settlement's attached write: the payment leaves `pending` exactly once (whoever posts
/// the settlement transfer first), with its event; a failed withdrawal gives its amount back to
/// the customer's daily and monthly totals.
pub(super) async fn finish_withdrawal(
    tx: &mut Tx<'_>,
    (kyc, outbox): (&dyn Compliance, &dyn Outbox),
    row: &PaymentRow,
    customer: Option<crate::kyc::CustomerId>,
    amount: Money,
    status: PaymentStatus,
    outcomes: &[Outcome],
) -> Result<(), SideWriteError> {
    let settled = outcomes.first().is_some_and(|o| {
        matches!(
            o.code,
            ResultCode::Ok
                | ResultCode::Exists
                | ResultCode::PendingTransferAlreadyPosted
                | ResultCode::PendingTransferAlreadyVoided
        )
    });
    if !settled {
        return Ok(());
    }
    let at = now();
    if !store::finish_pending(tx.conn(), row.id, status.as_str(), at)
        .await
        .map_err(side_error)?
    {
        return Ok(());
    }
    if status == PaymentStatus::Failed
        && let Some(customer) = customer
    {
        kyc.release(tx, customer, amount, row.created_at)
            .await
            .map_err(side_error)?;
    }
    let payment = view(&PaymentRow {
        status: status.as_str().into(),
        updated_at: at,
        ..row.clone()
    })
    .map_err(side_error)?;
    outbox
        .record_event(
            tx,
            NewEvent {
                partner_id: Some(PartnerId::from_uuid(row.partner_id)),
                event_type: match status {
                    PaymentStatus::Completed => "payment.completed",
                    _ => "payment.failed",
                }
                .into(),
                data: serde_json::to_value(&payment)
                    .map_err(|e| side_error(anyhow::Error::from(e)))?,
            },
        )
        .await
        .map_err(side_error)?;
    Ok(())
}
