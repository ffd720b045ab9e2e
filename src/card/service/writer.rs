//! The write attached to card holds: all of a ledger batch's new authorizations at once (the
//! card limit counters under the cards' locks, the customers' tier limits, the rows and their
//! events), so a batch costs a handful of statements whatever its size.

use std::collections::HashMap;
use std::sync::Arc;

use uuid::Uuid;

use super::authorize::LimitRace;
use crate::card::error::CardError;
use crate::card::model::categories::Mcc;
use crate::card::model::controls::{Controls, Limits};
use crate::card::model::decision::breach;
use crate::card::model::spend::Counters;
use crate::card::store::{self, AuthorizationRow};
use crate::kernel::PartnerId;
use crate::kyc::{Compliance, CustomerId, Direction, Movement, OutgoingKind};
use crate::ledger::{AttachedItem, BatchWrite, ResultCode, SideWriteError};
use crate::notify::{NewEvent, Outbox};
use crate::platform::db::{LockKey, LockNamespace, Tx, TxFuture};
use crate::platform::money::Money;

/// A card's limit counters (and its authorizations' state) being changed.
const CARD_SPEND: LockNamespace = LockNamespace::new("card.spend", 0x6361_7264_5f73_706e);
/// A currency's card network settlement account being created.
pub(super) const SETTLEMENT_ACCOUNTS: LockNamespace =
    LockNamespace::new("card.settlement_accounts", 0x6361_7264_5f73_6574);

/// The advisory lock key guarding a card's counters and its holds' rows; taken by the engine
/// (in one global order with the customers' limit keys) before attached writes run.
pub(super) fn card_lock_key(card: Uuid) -> LockKey {
    LockKey::new(CARD_SPEND, card)
}

pub(super) fn side_error(e: impl Into<CardError>) -> SideWriteError {
    match e.into() {
        CardError::Db(db) => SideWriteError(Box::new(db)),
        other => SideWriteError(Box::new(other)),
    }
}

/// What an approval's attached write needs.
pub(super) struct HoldAttached {
    pub(super) partner: PartnerId,
    pub(super) customer: CustomerId,
    pub(super) controls: Controls,
    pub(super) amount: Money,
    pub(super) mcc: Mcc,
    /// The row when the hold is placed.
    pub(super) row: AuthorizationRow,
    /// The row when the ledger refuses the hold (funds, a frozen or closed wallet).
    pub(super) declined_row: AuthorizationRow,
}

/// Writes the authorizations of a ledger batch.
pub(super) struct HoldWriter {
    pub(super) kyc: Arc<dyn Compliance>,
    pub(super) outbox: Arc<dyn Outbox>,
}

impl BatchWrite for HoldWriter {
    fn write<'t, 'c>(
        &'t self,
        tx: &'t mut Tx<'c>,
        items: &'t [AttachedItem<'t>],
    ) -> TxFuture<'t, Result<Vec<(usize, SideWriteError)>, SideWriteError>> {
        Box::pin(write_holds(tx, &*self.kyc, &*self.outbox, items))
    }
}

/// Whether `amount` more fits `limits` on counters read under the card's lock (the ladder's
/// own rule, [`breach`], on fresh counters).
pub(super) fn fits(
    limits: &Limits,
    counters: &Counters,
    amount: Money,
    now: chrono::DateTime<chrono::Utc>,
) -> bool {
    breach(limits, &counters.spend(amount.currency(), now), amount).is_none()
}

/// The batch's holds, in arrival order: each placed one must still fit its card's limits and
/// its customer's tier (both may have moved since the ladder read them); a refused one is
/// written nowhere and the engine runs the batch again without it. Then every row (declined
/// ones too, for holds the ledger refused), the counters and the events.
async fn write_holds(
    tx: &mut Tx<'_>,
    kyc: &dyn Compliance,
    outbox: &dyn Outbox,
    items: &[AttachedItem<'_>],
) -> Result<Vec<(usize, SideWriteError)>, SideWriteError> {
    let mut placed: Vec<(usize, &HoldAttached)> = Vec::new();
    let mut refused_by_ledger: Vec<(&HoldAttached, ResultCode)> = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let attached = item
            .item
            .downcast_ref::<HoldAttached>()
            .ok_or_else(|| side_error(anyhow::anyhow!("a card batch got another item")))?;
        match item.outcomes.first().map(|o| o.code) {
            Some(ResultCode::Ok) => placed.push((index, attached)),
            // A repeated network message: the first one wrote everything.
            Some(ResultCode::Exists | ResultCode::ExistsWithDifferentFields) | None => {}
            Some(code) => refused_by_ledger.push((attached, code)),
        }
    }
    let now = super::now();
    let mut refused: Vec<(usize, SideWriteError)> = Vec::new();
    let mut counters: HashMap<Uuid, Counters> = HashMap::new();
    if !placed.is_empty() {
        let cards: Vec<Uuid> = placed.iter().filter_map(|(_, a)| a.row.card_id).collect();
        counters.extend(
            store::counters(tx.conn(), &cards)
                .await
                .map_err(side_error)?,
        );
        for (index, a) in &placed {
            let Some(card) = a.row.card_id else { continue };
            let current = counters
                .get(&card)
                .copied()
                .unwrap_or_else(|| Counters::empty(now));
            if fits(a.controls.limits(), &current, a.amount, now) {
                counters.insert(card, current.add(a.amount.minor(), true, now));
            } else {
                refused.push((*index, SideWriteError(Box::new(LimitRace::Card))));
            }
        }
        if !refused.is_empty() {
            return Ok(refused);
        }
        // The limits of the merchants' category groups, the same way.
        let keys: Vec<store::CategoryKey> = placed
            .iter()
            .filter_map(|(_, a)| Some((a.row.card_id?, a)))
            .flat_map(|(card, a)| {
                a.controls
                    .category_limits_for(a.mcc)
                    .map(move |(name, _)| (card, name.to_owned()))
            })
            .collect();
        if !keys.is_empty() {
            let mut by_key: HashMap<store::CategoryKey, Counters> =
                store::category_counters(tx.conn(), &keys)
                    .await
                    .map_err(side_error)?
                    .into_iter()
                    .collect();
            for (index, a) in &placed {
                let Some(card) = a.row.card_id else { continue };
                let mut next = Vec::new();
                let mut within = true;
                for (name, limits) in a.controls.category_limits_for(a.mcc) {
                    let key = (card, name.to_owned());
                    let current = by_key
                        .get(&key)
                        .copied()
                        .unwrap_or_else(|| Counters::empty(now));
                    within &= fits(limits, &current, a.amount, now);
                    next.push((key, current.add(a.amount.minor(), true, now)));
                }
                if within {
                    by_key.extend(next);
                } else {
                    refused.push((*index, SideWriteError(Box::new(LimitRace::Card))));
                }
            }
            if !refused.is_empty() {
                return Ok(refused);
            }
            let changed: Vec<(store::CategoryKey, Counters)> = by_key.into_iter().collect();
            store::store_category_counters(tx.conn(), &changed, now)
                .await
                .map_err(side_error)?;
        }
        let movements: Vec<(PartnerId, Movement)> = placed
            .iter()
            .map(|(_, a)| {
                (
                    a.partner,
                    Movement {
                        customer_id: a.customer,
                        amount: a.amount,
                        direction: Direction::Outgoing(OutgoingKind::Card),
                        balance_after: None,
                    },
                )
            })
            .collect();
        let answers = kyc
            .authorize_all(tx, &movements)
            .await
            .map_err(side_error)?;
        for ((index, _), answer) in placed.iter().zip(answers) {
            if answer.is_err() {
                refused.push((*index, SideWriteError(Box::new(LimitRace::Tier))));
            }
        }
        if !refused.is_empty() {
            return Ok(refused);
        }
    }
    let mut rows: Vec<AuthorizationRow> =
        Vec::with_capacity(placed.len() + refused_by_ledger.len());
    let mut events = Vec::with_capacity(rows.capacity());
    for (_, a) in &placed {
        events.push(event(a.partner, "card.authorization.approved", &a.row)?);
        rows.push(a.row.clone());
    }
    for (a, code) in &refused_by_ledger {
        let mut row = a.declined_row.clone();
        if matches!(
            code,
            ResultCode::DebitsBlocked | ResultCode::AccountClosed | ResultCode::CreditsBlocked
        ) {
            ledger_decline(&mut row, *code);
        }
        events.push(event(a.partner, "card.authorization.declined", &row)?);
        rows.push(row);
    }
    let counters: Vec<(Uuid, Counters)> = counters.into_iter().collect();
    // The rows, the counters and the events go together: one round trip.
    let shared: &Tx<'_> = tx;
    let (inserted, stored, recorded) = futures_util::future::join3(
        store::insert_authorizations(shared.shared(), &rows),
        store::store_counters(shared.shared(), &counters, now),
        outbox.record_events(shared, events),
    )
    .await;
    inserted.map_err(side_error)?;
    stored.map_err(side_error)?;
    recorded.map_err(side_error)?;
    Ok(Vec::new())
}

/// A hold the ledger refused for the wallet's state rather than its funds (frozen or closed
/// between the ladder's read and the posting): declined as the wallet's state.
fn ledger_decline(row: &mut AuthorizationRow, code: ResultCode) {
    row.decline_code = Some("wallet_frozen".to_owned());
    row.response_code = "62".to_owned();
    if let Some(steps) = row.trail.as_array_mut()
        && let Some(last) = steps.last_mut()
    {
        *last = serde_json::json!({
            "rule": "funds",
            "outcome": "fail",
            "detail": format!("the ledger refused the hold: {code} (the wallet is frozen or closed)"),
        });
    }
}

pub(super) fn event(
    partner: PartnerId,
    event_type: &str,
    row: &AuthorizationRow,
) -> Result<NewEvent, SideWriteError> {
    let view = super::authorization_views::view(row, None).map_err(side_error)?;
    Ok(NewEvent {
        partner_id: Some(partner),
        event_type: event_type.to_owned(),
        data: serde_json::to_value(&view).map_err(|e| side_error(anyhow::anyhow!("{e}")))?,
    })
}
