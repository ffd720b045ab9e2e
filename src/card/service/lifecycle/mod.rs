//! An authorization's life on the ledger after its decision: increments, captures (clearing),
//! reversals, expiry, and merchant refunds. Each is one engine posting under the card's and
//! the customer's locks, with its write attached: the authorization row moved on (only if it
//! still holds the hold the operation resolved), the operation row, the limit counters and the
//! customer's tier counters given back or added to, and the event.
//!
//! - An increment and a partial reversal replace the hold: one linked chain voids it and
//!   places a new pending transfer for the new amount (the chain moves nothing if the new
//!   hold does not fit the wallet: an increment is then declined on its own).
//! - A capture posts the hold: less than held releases the rest; more (only for tipping
//!   merchant categories, within `cards.overcapture_percent`) posts the excess as a second
//!   transfer when the wallet covers it, and records a shortfall when it does not.
//! - Expiry voids an uncaptured hold `cards.hold_expiry_hours` after approval with the
//!   ledger's expiry void (the same id the ledger's own timeout would write, so whichever
//!   comes first wins and the other is a no-op).
//! - A repeated network id answers with the authorization as it stands and moves nothing.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::authorize::{EXCESS_CODE, HOLD_CODE, LimitRace, REFUND_CODE, network_transfer_id};
use super::writer::{card_lock_key, side_error};
use super::{CardId, CardService, now};
use crate::card::error::CardError;
use crate::card::model::spend::Counters;
use crate::card::network::{
    Authorization, AuthorizationId, CardRefund, CardRefundId, FollowUp, RefundRequest,
};
use crate::card::store::{self, AuthorizationRow, OperationRow};
use crate::kernel::PartnerId;
use crate::kyc::{Compliance, CustomerId, Direction, Movement, OutgoingKind, limit_lock_key};
use crate::ledger::{
    AccountId, Attachment, NewTransfer, Outcome, ResultCode, Scope, SideWrite, SideWriteError,
    TransferFlags, TransferId,
};
use crate::notify::{NewEvent, Outbox};
use crate::platform::db::Tx;
use crate::platform::money::Money;
use crate::wallet::WalletId;

mod capture;
mod expiry;
mod holds;
mod refund;

/// What an operation does to its authorization and the counters once its transfers post.
#[derive(Clone)]
struct Effect {
    partner: PartnerId,
    customer: CustomerId,
    authorization: AuthorizationRow,
    /// The authorization row after the operation.
    after: AuthorizationRow,
    operation: OperationRow,
    /// Limit counters: given back (counted when the authorization was approved) ...
    give_back: i64,
    /// ... or added (an approved increment, an over-capture's excess).
    add: i64,
    /// Whether `add` must still fit the card's limits (an increment) or is owed (a capture).
    check_limits: bool,
    event: Option<&'static str>,
}

/// The attached write of an operation: applied when `applies` says the outcomes moved the
/// money (or, for an expiry, that the hold is gone by expiry either way).
async fn apply_effect(
    tx: &mut Tx<'_>,
    kyc: &dyn Compliance,
    outbox: &dyn Outbox,
    controls: Option<&crate::card::model::controls::Controls>,
    effect: &Effect,
) -> Result<bool, SideWriteError> {
    let before = &effect.authorization;
    let Some(hold) = before.hold_transfer_id else {
        return Ok(false);
    };
    let after = &effect.after;
    let at = after.updated_at;
    let moved = store::advance_authorization(
        tx.conn(),
        before.id,
        hold,
        &after.status,
        after.amount,
        after.held,
        after.captured,
        after.hold_transfer_id,
        at,
    )
    .await
    .map_err(side_error)?;
    if !moved {
        return Ok(false);
    }
    if let Some(card) = before.card_id {
        let current = store::counters(tx.conn(), &[card])
            .await
            .map_err(side_error)?
            .into_iter()
            .next()
            .map_or_else(|| Counters::empty(at), |(_, c)| c);
        let mut next = current;
        if effect.give_back > 0 {
            next = next.give_back(effect.give_back, before.created_at, at);
        }
        if effect.add > 0 {
            if effect.check_limits
                && let Some(controls) = controls
                && !super::writer::fits(controls.limits(), &next, stored(effect.add, before)?, at)
            {
                return Err(SideWriteError(Box::new(LimitRace::Card)));
            }
            next = next.add(effect.add, false, at);
        }
        if next != current {
            store::store_counters(tx.conn(), &[(card, next)], at)
                .await
                .map_err(side_error)?;
        }
        if let Some(controls) = controls {
            category_effect(tx, controls, card, effect).await?;
        }
    }
    if effect.give_back > 0 {
        kyc.release(
            tx,
            effect.customer,
            stored(effect.give_back, before)?,
            before.created_at,
        )
        .await
        .map_err(side_error)?;
    }
    if effect.add > 0 && effect.check_limits {
        let movement = Movement {
            customer_id: effect.customer,
            amount: stored(effect.add, before)?,
            direction: Direction::Outgoing(OutgoingKind::Card),
            balance_after: None,
        };
        if kyc
            .authorize_all(tx, &[(effect.partner, movement)])
            .await
            .map_err(side_error)?
            .into_iter()
            .any(|a| a.is_err())
        {
            return Err(SideWriteError(Box::new(LimitRace::Tier)));
        }
    }
    store::insert_operations(tx.conn(), std::slice::from_ref(&effect.operation))
        .await
        .map_err(side_error)?;
    if let Some(event) = effect.event {
        let ev = super::writer::event(effect.partner, event, after)?;
        outbox
            .record_events(tx, vec![ev])
            .await
            .map_err(side_error)?;
    }
    Ok(true)
}

/// The effect on the counters of the category groups the merchant is in that the card has
/// limits on: given back, or added to (within their limits for an increment).
async fn category_effect(
    tx: &mut Tx<'_>,
    controls: &crate::card::model::controls::Controls,
    card: uuid::Uuid,
    effect: &Effect,
) -> Result<(), SideWriteError> {
    let before = &effect.authorization;
    let at = effect.after.updated_at;
    let Some(mcc) = before
        .merchant
        .get("mcc")
        .and_then(serde_json::Value::as_str)
        .and_then(crate::card::model::categories::Mcc::parse)
    else {
        return Ok(());
    };
    let limited: Vec<(&str, &crate::card::model::controls::Limits)> =
        controls.category_limits_for(mcc).collect();
    if limited.is_empty() || (effect.give_back == 0 && effect.add == 0) {
        return Ok(());
    }
    let keys: Vec<store::CategoryKey> = limited
        .iter()
        .map(|(name, _)| (card, (*name).to_owned()))
        .collect();
    let stored_now = store::category_counters(tx.conn(), &keys)
        .await
        .map_err(side_error)?;
    let mut changed = Vec::with_capacity(keys.len());
    for (key, (_, limits)) in keys.into_iter().zip(&limited) {
        let mut next = stored_now
            .iter()
            .find(|(k, _)| *k == key)
            .map_or_else(|| Counters::empty(at), |(_, c)| *c);
        if effect.give_back > 0 {
            next = next.give_back(effect.give_back, before.created_at, at);
        }
        if effect.add > 0 {
            if effect.check_limits
                && !super::writer::fits(limits, &next, stored(effect.add, before)?, at)
            {
                return Err(SideWriteError(Box::new(LimitRace::Card)));
            }
            next = next.add(effect.add, false, at);
        }
        changed.push((key, next));
    }
    store::store_category_counters(tx.conn(), &changed, at)
        .await
        .map_err(side_error)
}

fn stored(minor: i64, row: &AuthorizationRow) -> Result<Money, SideWriteError> {
    super::authorize::stored_money(minor, &row.currency).map_err(side_error)
}

/// Why a chain failed: the code of the transfer that failed it (the others answer
/// `linked_event_failed`), or `ok`.
fn first_failure(outcomes: &[Outcome]) -> ResultCode {
    let mut failed = outcomes
        .iter()
        .map(|o| o.code)
        .filter(|c| *c != ResultCode::Ok);
    let first = failed.clone().next();
    failed
        .find(|c| *c != ResultCode::LinkedEventFailed)
        .or(first)
        .unwrap_or(ResultCode::Ok)
}

/// A capture's or reversal's authorization, still pending: the amount the message names (all
/// that is held when it names none) and the hold it resolves.
struct Opened {
    row: AuthorizationRow,
    amount: i64,
    currency: crate::platform::money::Currency,
    hold: TransferId,
}

/// How a capture or reversal starts.
enum Open {
    /// The network repeated a message: the authorization as it stands.
    Repeated(Authorization),
    Pending(Opened),
}

impl CardService {
    /// Opens a capture or reversal (`kind`) of authorization `id`.
    async fn open(
        &self,
        partner: PartnerId,
        id: AuthorizationId,
        kind: &str,
        message: &FollowUp,
    ) -> Result<Open, CardError> {
        if let Some(first) = self.repeated(partner, id, kind, message).await? {
            return Ok(Open::Repeated(first));
        }
        let row = self.pending_authorization(partner, id).await?;
        let amount = match &message.amount {
            Some(a) => self.money_of(&row, a)?.minor(),
            None => row.held,
        };
        let currency = super::authorize::stored_currency(&row.currency)?;
        let hold = TransferId::from_uuid(
            row.hold_transfer_id
                .ok_or_else(|| anyhow::anyhow!("a pending authorization without a hold"))?,
        );
        Ok(Open::Pending(Opened {
            row,
            amount,
            currency,
            hold,
        }))
    }

    /// A pending authorization of `partner` and the money of `amount` in its currency.
    async fn pending_authorization(
        &self,
        partner: PartnerId,
        id: AuthorizationId,
    ) -> Result<AuthorizationRow, CardError> {
        let row = self
            .authorization_row(partner, id.uuid())
            .await?
            .ok_or(CardError::NotFound("authorization"))?;
        if row.status != "pending" {
            return Err(CardError::NotPending(status_word(&row.status)));
        }
        Ok(row)
    }

    /// The authorization as it stands, when `message` repeats an earlier `kind` message.
    async fn repeated(
        &self,
        partner: PartnerId,
        id: AuthorizationId,
        kind: &str,
        message: &FollowUp,
    ) -> Result<Option<Authorization>, CardError> {
        let Some(ntid) = &message.network_transaction_id else {
            return Ok(None);
        };
        let op = {
            let mut conn = self.db().conn().await?;
            store::operation_by_network_id(&mut conn, partner.uuid(), kind, ntid).await?
        };
        match op {
            Some(op) if op.authorization_id == Some(id.uuid()) => {
                Ok(Some(self.authorization(partner, id).await?))
            }
            Some(_) => Err(CardError::validation(
                "network_transaction_id",
                "was used for another authorization's message",
            )),
            None => Ok(None),
        }
    }

    fn money_of(
        &self,
        row: &AuthorizationRow,
        amount: &crate::platform::money::Amount,
    ) -> Result<Money, CardError> {
        let currency = super::authorize::stored_currency(&row.currency)?;
        Money::parse_positive(amount, currency)
            .map_err(|e| CardError::validation("amount", e.to_string()))
    }

    /// Posts an operation's transfers with its effect attached; `Ok(false)` when the ledger
    /// refused them (nothing written).
    async fn post_effect(
        &self,
        transfers: Vec<NewTransfer>,
        effect: Effect,
        applies: fn(&[Outcome]) -> bool,
    ) -> Result<(Vec<Outcome>, bool), CardError> {
        let (kyc, outbox) = (self.inner.kyc.clone(), self.inner.outbox.clone());
        let controls = self.controls_of(&effect.authorization).await?;
        let applied = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = applied.clone();
        let locks = vec![
            card_lock_key(effect.authorization.card_id.unwrap_or_default()),
            limit_lock_key(effect.customer),
        ];
        let side: SideWrite = Box::new(move |tx, outcomes| {
            let (kyc, outbox, effect, controls, flag) = (
                kyc.clone(),
                outbox.clone(),
                effect.clone(),
                controls.clone(),
                flag.clone(),
            );
            let go = applies(outcomes);
            Box::pin(async move {
                flag.store(false, std::sync::atomic::Ordering::SeqCst);
                if go {
                    let done =
                        apply_effect(tx, &*kyc, &*outbox, controls.as_ref(), &effect).await?;
                    flag.store(done, std::sync::atomic::Ordering::SeqCst);
                }
                Ok(())
            })
        });
        let outcomes = self
            .inner
            .ledger
            .post_attached(Scope::System, transfers, locks, Attachment::Each(side))
            .await?;
        Ok((outcomes, applied.load(std::sync::atomic::Ordering::SeqCst)))
    }

    /// The controls of the authorization's card as they are now.
    async fn controls_of(
        &self,
        row: &AuthorizationRow,
    ) -> Result<Option<crate::card::model::controls::Controls>, CardError> {
        match self.card_row(row.card_id).await? {
            Some(card) => Ok(Some(super::rows::stored_controls(
                &card,
                super::authorize::stored_currency(&card.currency)?,
                self.inner.categories,
            )?)),
            None => Ok(None),
        }
    }

    async fn card_row(
        &self,
        card: Option<uuid::Uuid>,
    ) -> Result<Option<store::CardRow>, CardError> {
        let Some(card) = card else { return Ok(None) };
        let mut conn = self.db().conn().await?;
        Ok(store::find_card(&mut conn, card).await?)
    }

    async fn wallet_account(
        &self,
        row: &AuthorizationRow,
    ) -> Result<(AccountId, CustomerId), CardError> {
        let wallet = row
            .wallet_id
            .ok_or_else(|| anyhow::anyhow!("an approved authorization without a wallet"))?;
        let wallet = self
            .inner
            .wallets
            .wallet_ref(
                PartnerId::from_uuid(row.partner_id),
                WalletId::from_uuid(wallet),
            )
            .await?;
        Ok((wallet.account_id, wallet.customer_id))
    }

    /// The answer after an operation: the authorization with its operations.
    async fn answer(
        &self,
        partner: PartnerId,
        id: AuthorizationId,
    ) -> Result<Authorization, CardError> {
        self.authorization(partner, id).await
    }

    fn metadata(&self, row: &AuthorizationRow, kind: &str) -> serde_json::Value {
        json!({
            "type": kind,
            "card_id": row.card_id.map(CardId::from_uuid),
            "card_authorization_id": AuthorizationId::from_uuid(row.id),
            "description": row.merchant.get("name"),
        })
    }
}

/// The linked chain replacing a hold: the old one voided, a new one for `amount` placed, both
/// or neither. The new hold keeps the authorization's expiry.
#[expect(
    clippy::too_many_arguments,
    reason = "a chain's facts, each needed once"
)]
fn replace_hold(
    partner: PartnerId,
    ntid: Option<&str>,
    kind: &str,
    old: TransferId,
    new: TransferId,
    (account, settlement): (AccountId, AccountId),
    amount: Money,
    expires_at: Option<DateTime<Utc>>,
    at: DateTime<Utc>,
    metadata: serde_json::Value,
) -> Vec<NewTransfer> {
    let void_id = network_transfer_id(partner, &format!("{kind}-void"), ntid);
    let void = with_accounts(
        NewTransfer::void_pending(void_id, old, HOLD_CODE),
        account,
        settlement,
    )
    .with_flags(TransferFlags::LINKED)
    .with_metadata(metadata.clone());
    let mut hold =
        NewTransfer::pending(new, account, settlement, amount, HOLD_CODE).with_metadata(metadata);
    let left = expires_at.map_or(3600, |e| (e - at).num_seconds().max(1));
    hold.timeout_secs = Some(u32::try_from(left).unwrap_or(u32::MAX));
    vec![void, hold]
}

/// A post or void of a hold naming the hold's accounts (the ledger checks they are the
/// pending transfer's): the posting engine's scheduler sees which accounts it touches, so it
/// never runs it beside a batch on the same accounts.
fn with_accounts(mut t: NewTransfer, debit: AccountId, credit: AccountId) -> NewTransfer {
    t.debit_account_id = Some(debit);
    t.credit_account_id = Some(credit);
    t
}

/// An operation the ledger refused because the hold was resolved by another message first.
fn resolved_elsewhere(code: ResultCode) -> CardError {
    match code {
        ResultCode::PendingTransferAlreadyPosted => CardError::NotPending("captured"),
        ResultCode::PendingTransferAlreadyVoided | ResultCode::PendingTransferExpired => {
            CardError::NotPending("reversed or expired")
        }
        ResultCode::ExceedsCredits => CardError::InsufficientFunds,
        other => CardError::Internal(anyhow::anyhow!("the ledger refused: {other}")),
    }
}

/// The limit race inside a card error from an attached write, if that is what it is.
fn race_of(e: CardError) -> Result<LimitRace, CardError> {
    match e {
        CardError::Ledger(e) => super::authorize::race_of(e),
        other => Err(other),
    }
}

fn status_word(status: &str) -> &'static str {
    match status {
        "captured" => "captured",
        "reversed" => "reversed",
        "expired" => "expired",
        _ => "declined",
    }
}
