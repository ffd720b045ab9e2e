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
use super::writer::card_lock_key;
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
    AccountId, Attachment, LedgerError, NewTransfer, Outcome, ResultCode, Scope, SideWrite,
    SideWriteError, TransferFlags, TransferId,
};
use crate::notify::{NewEvent, Outbox};
use crate::platform::db::Tx;
use crate::platform::money::Money;
use crate::wallet::WalletId;

/// The merchant category groups whose captures may exceed the authorization (a tip).
const TIPPING_GROUPS: [&str; 2] = ["restaurants", "transport"];

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

fn side_error(e: impl Into<CardError>) -> SideWriteError {
    match e.into() {
        CardError::Db(db) => SideWriteError(Box::new(db)),
        other => SideWriteError(Box::new(other)),
    }
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
                && !super::writer::fits(controls, &next, stored(effect.add, before)?, at)
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

impl CardService {
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
        let currency = super::authorize::stored_money(0, &row.currency)?.currency();
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
        let controls = match self.card_row(effect.authorization.card_id).await? {
            Some(row) => Some(super::rows::stored_controls(
                &row,
                super::authorize::stored_money(0, &row.currency)?.currency(),
                self.inner.categories,
            )?),
            None => None,
        };
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

    /// More money on a pending authorization, or a declined increment (the hold stands).
    pub async fn increment(
        &self,
        partner: PartnerId,
        id: AuthorizationId,
        message: FollowUp,
    ) -> Result<Authorization, CardError> {
        if let Some(first) = self.repeated(partner, id, "increment", &message).await? {
            return Ok(first);
        }
        let row = self.pending_authorization(partner, id).await?;
        let amount = message
            .amount
            .as_ref()
            .ok_or_else(|| CardError::validation("amount", "is required for an increment"))?;
        let amount = self.money_of(&row, amount)?;
        let card = self
            .card_row(row.card_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("an approved authorization without a card"))?;
        let ntid = message.network_transaction_id.as_deref();
        let at = now();
        let (account, customer) = self.wallet_account(&row).await?;
        let settlement = self.settlement_account(amount.currency()).await?;
        let total = row
            .held
            .checked_add(amount.minor())
            .ok_or_else(|| CardError::validation("amount", "makes the authorization too large"))?;
        let per_authorization =
            super::rows::stored_controls(&card, amount.currency(), self.inner.categories)?
                .limits()
                .per_authorization();
        let declined = |reason: &str, code: &str| OperationRow {
            id: uuid::Uuid::now_v7(),
            partner_id: partner.uuid(),
            card_id: card.id,
            authorization_id: Some(row.id),
            kind: "increment".into(),
            approved: false,
            amount: amount.minor(),
            network_transaction_id: message.network_transaction_id.clone(),
            transfer_id: None,
            detail: json!({ "decline_code": reason, "response_code": code }),
            created_at: at,
        };
        let refusal = if card.status != "active" {
            Some(("card_frozen", "62"))
        } else if per_authorization.is_some_and(|limit| total > limit.minor()) {
            Some(("limit_exceeded", "61"))
        } else {
            None
        };
        if let Some((reason, code)) = refusal {
            return self
                .record_declined_increment(partner, id, declined(reason, code))
                .await;
        }
        let old_hold = row
            .hold_transfer_id
            .ok_or_else(|| anyhow::anyhow!("a pending authorization without a hold"))?;
        let new_hold = network_transfer_id(partner, "increment", ntid);
        let transfers = replace_hold(
            partner,
            ntid,
            "increment",
            TransferId::from_uuid(old_hold),
            new_hold,
            (account, settlement),
            Money::from_minor(total, amount.currency()),
            row.expires_at,
            at,
            self.metadata(&row, "card_increment"),
        );
        let mut after = row.clone();
        after.amount = row.amount.saturating_add(amount.minor());
        after.held = total;
        after.hold_transfer_id = Some(new_hold.uuid());
        after.updated_at = at;
        let operation = OperationRow {
            approved: true,
            transfer_id: Some(new_hold.uuid()),
            detail: json!({}),
            ..declined("", "00")
        };
        let effect = Effect {
            partner,
            customer,
            authorization: row.clone(),
            after,
            operation,
            give_back: 0,
            add: amount.minor(),
            check_limits: true,
            event: Some("card.authorization.incremented"),
        };
        match self
            .post_effect(transfers, effect, |o| first_failure(o) == ResultCode::Ok)
            .await
        {
            Ok((outcomes, applied)) => match first_failure(&outcomes) {
                ResultCode::Ok if applied => self.answer(partner, id).await,
                ResultCode::Ok | ResultCode::Exists | ResultCode::ExistsWithDifferentFields => {
                    self.answer(partner, id).await
                }
                ResultCode::ExceedsCredits => {
                    self.record_declined_increment(
                        partner,
                        id,
                        declined("insufficient_funds", "51"),
                    )
                    .await
                }
                ResultCode::DebitsBlocked | ResultCode::AccountClosed => {
                    self.record_declined_increment(partner, id, declined("wallet_frozen", "62"))
                        .await
                }
                other => Err(resolved_elsewhere(other)),
            },
            Err(e) => match race_of(e) {
                Ok(LimitRace::Card) => {
                    self.record_declined_increment(partner, id, declined("limit_exceeded", "61"))
                        .await
                }
                Ok(LimitRace::Tier) => {
                    self.record_declined_increment(partner, id, declined("limit_exceeded", "61"))
                        .await
                }
                Err(e) => Err(e),
            },
        }
    }

    async fn record_declined_increment(
        &self,
        partner: PartnerId,
        id: AuthorizationId,
        operation: OperationRow,
    ) -> Result<Authorization, CardError> {
        let mut conn = self.db().conn().await?;
        store::insert_operations(&mut conn, &[operation]).await?;
        drop(conn);
        self.answer(partner, id).await
    }

    /// Clearing: posts all (or `amount`) of the hold.
    pub async fn capture(
        &self,
        partner: PartnerId,
        id: AuthorizationId,
        message: FollowUp,
    ) -> Result<Authorization, CardError> {
        if let Some(first) = self.repeated(partner, id, "capture", &message).await? {
            return Ok(first);
        }
        let row = self.pending_authorization(partner, id).await?;
        let amount = match &message.amount {
            Some(a) => self.money_of(&row, a)?.minor(),
            None => row.held,
        };
        let currency = super::authorize::stored_money(0, &row.currency)?.currency();
        let ntid = message.network_transaction_id.as_deref();
        let at = now();
        let hold = TransferId::from_uuid(
            row.hold_transfer_id
                .ok_or_else(|| anyhow::anyhow!("a pending authorization without a hold"))?,
        );
        let excess = amount.saturating_sub(row.held).max(0);
        if excess > 0 {
            self.check_overcapture(&row, amount)?;
        }
        let (account, customer) = self.wallet_account(&row).await?;
        let post_id = network_transfer_id(partner, "capture", ntid);
        let mut post = NewTransfer::post_pending(post_id, hold, HOLD_CODE);
        post.amount = amount.min(row.held);
        let mut transfers = vec![post.with_metadata(self.metadata(&row, "card_capture"))];
        if excess > 0 {
            let settlement = self.settlement_account(currency).await?;
            let excess_id = network_transfer_id(partner, "capture-excess", ntid);
            transfers.push(
                NewTransfer::movement(
                    excess_id,
                    account,
                    settlement,
                    Money::from_minor(excess, currency),
                    EXCESS_CODE,
                )
                .with_metadata(self.metadata(&row, "card_capture_excess")),
            );
        }
        let mut after = row.clone();
        after.status = "captured".into();
        after.held = 0;
        after.captured = amount.min(row.held);
        after.updated_at = at;
        let operation = OperationRow {
            id: uuid::Uuid::now_v7(),
            partner_id: partner.uuid(),
            card_id: row.card_id.unwrap_or_default(),
            authorization_id: Some(row.id),
            kind: "capture".into(),
            approved: true,
            amount,
            network_transaction_id: message.network_transaction_id.clone(),
            transfer_id: Some(post_id.uuid()),
            detail: json!({}),
            created_at: at,
        };
        let effect = Effect {
            partner,
            customer,
            authorization: row.clone(),
            after,
            operation,
            give_back: row.held.saturating_sub(amount).max(0),
            add: 0,
            check_limits: false,
            event: Some("card.authorization.captured"),
        };
        // The excess rides along: the capture stands even when the excess does not fit (the
        // shortfall is recorded), so the effect is decided once the outcomes are known.
        let effect = ExcessEffect {
            base: effect,
            excess,
            currency,
        };
        let (outcomes, _) = self.post_capture(transfers, effect).await?;
        match outcomes.first().map(|o| o.code) {
            Some(ResultCode::Ok | ResultCode::Exists | ResultCode::ExistsWithDifferentFields) => {
                self.answer(partner, id).await
            }
            Some(other) => Err(resolved_elsewhere(other)),
            None => self.answer(partner, id).await,
        }
    }

    fn metadata(&self, row: &AuthorizationRow, kind: &str) -> serde_json::Value {
        json!({
            "type": kind,
            "card_id": row.card_id.map(CardId::from_uuid),
            "card_authorization_id": AuthorizationId::from_uuid(row.id),
            "description": row.merchant.get("name"),
        })
    }

    /// A capture above the hold is allowed only for tipping merchants, within the allowance.
    fn check_overcapture(&self, row: &AuthorizationRow, amount: i64) -> Result<(), CardError> {
        let mcc = row
            .merchant
            .get("mcc")
            .and_then(serde_json::Value::as_str)
            .and_then(crate::card::model::categories::Mcc::parse);
        let tipping = mcc.is_some_and(|mcc| {
            self.inner
                .categories
                .groups_of(mcc)
                .iter()
                .any(|g| TIPPING_GROUPS.contains(&g.name()))
        });
        let pct = i128::from(self.inner.settings.overcapture_percent);
        let allowed = i128::from(row.held) * (100 + pct) / 100;
        if !tipping {
            return Err(CardError::OverCapture(
                "only tipping merchant categories (restaurants, transport) may capture more than was authorized".into(),
            ));
        }
        if i128::from(amount) > allowed {
            return Err(CardError::OverCapture(format!(
                "at most {}% more than held may be captured",
                self.inner.settings.overcapture_percent
            )));
        }
        Ok(())
    }

    async fn post_capture(
        &self,
        transfers: Vec<NewTransfer>,
        effect: ExcessEffect,
    ) -> Result<(Vec<Outcome>, bool), CardError> {
        let ExcessEffect {
            base,
            excess,
            currency,
        } = effect;
        if excess == 0 {
            return self
                .post_effect(transfers, base, |o| {
                    o.first().is_some_and(|o| o.code == ResultCode::Ok)
                })
                .await;
        }
        // Two shapes of the same capture: with the excess posted, or with a shortfall.
        let mut with_excess = base.clone();
        with_excess.after.captured = base.after.captured + excess;
        with_excess.add = excess;
        let mut short = base;
        short.operation.detail = json!({
            "shortfall": Money::from_minor(excess, currency).format_amount(),
        });
        let (kyc, outbox) = (self.inner.kyc.clone(), self.inner.outbox.clone());
        let locks = vec![
            card_lock_key(short.authorization.card_id.unwrap_or_default()),
            limit_lock_key(short.customer),
        ];
        let side: SideWrite = Box::new(move |tx, outcomes| {
            let (kyc, outbox) = (kyc.clone(), outbox.clone());
            let posted = outcomes.first().is_some_and(|o| o.code == ResultCode::Ok);
            let excess_posted = outcomes.get(1).is_some_and(|o| o.code == ResultCode::Ok);
            let effect = if excess_posted {
                with_excess.clone()
            } else {
                short.clone()
            };
            Box::pin(async move {
                if posted {
                    apply_effect(tx, &*kyc, &*outbox, None, &effect).await?;
                }
                Ok(())
            })
        });
        let outcomes = self
            .inner
            .ledger
            .post_attached(Scope::System, transfers, locks, Attachment::Each(side))
            .await?;
        Ok((outcomes, true))
    }

    /// Voids all (or `amount`) of the hold.
    pub async fn reverse(
        &self,
        partner: PartnerId,
        id: AuthorizationId,
        message: FollowUp,
    ) -> Result<Authorization, CardError> {
        if let Some(first) = self.repeated(partner, id, "reversal", &message).await? {
            return Ok(first);
        }
        let row = self.pending_authorization(partner, id).await?;
        let amount = match &message.amount {
            Some(a) => self.money_of(&row, a)?.minor(),
            None => row.held,
        };
        if amount > row.held {
            return Err(CardError::validation(
                "amount",
                "is more than the authorization holds",
            ));
        }
        let currency = super::authorize::stored_money(0, &row.currency)?.currency();
        let ntid = message.network_transaction_id.as_deref();
        let at = now();
        let old_hold = TransferId::from_uuid(
            row.hold_transfer_id
                .ok_or_else(|| anyhow::anyhow!("a pending authorization without a hold"))?,
        );
        let (account, customer) = self.wallet_account(&row).await?;
        let mut after = row.clone();
        after.updated_at = at;
        after.held = row.held - amount;
        let transfers = if amount == row.held {
            after.status = "reversed".into();
            vec![
                NewTransfer::void_pending(
                    network_transfer_id(partner, "reversal", ntid),
                    old_hold,
                    HOLD_CODE,
                )
                .with_metadata(self.metadata(&row, "card_reversal")),
            ]
        } else {
            let settlement = self.settlement_account(currency).await?;
            let new_hold = network_transfer_id(partner, "reversal", ntid);
            after.hold_transfer_id = Some(new_hold.uuid());
            replace_hold(
                partner,
                ntid,
                "reversal",
                old_hold,
                new_hold,
                (account, settlement),
                Money::from_minor(after.held, currency),
                row.expires_at,
                at,
                self.metadata(&row, "card_reversal"),
            )
        };
        let operation = OperationRow {
            id: uuid::Uuid::now_v7(),
            partner_id: partner.uuid(),
            card_id: row.card_id.unwrap_or_default(),
            authorization_id: Some(row.id),
            kind: "reversal".into(),
            approved: true,
            amount,
            network_transaction_id: message.network_transaction_id.clone(),
            transfer_id: after.hold_transfer_id,
            detail: json!({}),
            created_at: at,
        };
        let effect = Effect {
            partner,
            customer,
            authorization: row.clone(),
            after,
            operation,
            give_back: amount,
            add: 0,
            check_limits: false,
            event: Some("card.authorization.reversed"),
        };
        let (outcomes, _) = self
            .post_effect(transfers, effect, |o| first_failure(o) == ResultCode::Ok)
            .await?;
        match first_failure(&outcomes) {
            ResultCode::Ok | ResultCode::Exists | ResultCode::ExistsWithDifferentFields => {
                self.answer(partner, id).await
            }
            other => Err(resolved_elsewhere(other)),
        }
    }

    /// One pass of hold expiry as of `now`: voids up to `limit` uncaptured holds whose time
    /// has come; how many were expired.
    pub async fn expire_due(&self, now: DateTime<Utc>, limit: i64) -> Result<usize, CardError> {
        let due = {
            let mut conn = self.db().conn().await?;
            store::due_for_expiry(&mut conn, now, limit).await?
        };
        let mut expired = 0;
        for row in due {
            let Some(hold) = row.hold_transfer_id else {
                continue;
            };
            let Ok((_, customer)) = self.wallet_account(&row).await else {
                continue;
            };
            let mut after = row.clone();
            after.status = "expired".into();
            after.held = 0;
            after.updated_at = now;
            let void = NewTransfer::expiry_of(TransferId::from_uuid(hold));
            let operation = OperationRow {
                id: uuid::Uuid::now_v7(),
                partner_id: row.partner_id,
                card_id: row.card_id.unwrap_or_default(),
                authorization_id: Some(row.id),
                kind: "expiry".into(),
                approved: true,
                amount: row.held,
                network_transaction_id: None,
                transfer_id: Some(void.id.uuid()),
                detail: json!({}),
                created_at: now,
            };
            let effect = Effect {
                partner: PartnerId::from_uuid(row.partner_id),
                customer,
                give_back: row.held,
                authorization: row,
                after,
                operation,
                add: 0,
                check_limits: false,
                event: Some("card.authorization.expired"),
            };
            // Voided now, or already by the ledger's own timeout (the same void): either
            // way the hold is gone by expiry.
            let (_, applied) = self
                .post_effect(vec![void], effect, |o| {
                    o.first().is_some_and(|o| {
                        matches!(
                            o.code,
                            ResultCode::Ok
                                | ResultCode::Exists
                                | ResultCode::PendingTransferAlreadyVoided
                        )
                    })
                })
                .await?;
            if applied {
                expired += 1;
            }
        }
        Ok(expired)
    }

    /// The expiry worker: a pass every `interval` until shutdown.
    pub async fn run_expiry(
        self,
        interval: std::time::Duration,
        mut shutdown: crate::platform::workers::Shutdown,
    ) {
        loop {
            tokio::select! {
                () = shutdown.requested() => return,
                () = tokio::time::sleep(interval) => {}
            }
            if let Err(e) = self.expire_due(now(), 500).await {
                tracing::error!(error.cause = %e, "expiring card holds failed");
            }
        }
    }

    /// A merchant credit to the card's wallet.
    pub async fn refund(
        &self,
        partner: PartnerId,
        request: RefundRequest,
    ) -> Result<CardRefund, CardError> {
        let ntid = request.network_transaction_id.clone();
        if let Some(id) = &ntid {
            let op = {
                let mut conn = self.db().conn().await?;
                store::operation_by_network_id(&mut conn, partner.uuid(), "refund", id).await?
            };
            if let Some(op) = op {
                return self.refund_view(&op).await;
            }
        }
        let hash = self.pan_hash(&request.pan);
        let card = {
            let mut conn = self.db().conn().await?;
            store::find_by_pan_hash(&mut conn, &hash)
                .await?
                .filter(|c| c.partner_id == partner.uuid())
        }
        .ok_or(CardError::NotFound("card"))?;
        let expiry = super::rows::expiry_of(&card)?;
        if !expiry.matches(request.exp_month, request.exp_year) {
            return Err(CardError::NotFound("card"));
        }
        let wallet = self
            .inner
            .wallets
            .wallet_ref(partner, WalletId::from_uuid(card.wallet_id))
            .await?;
        if request.amount.currency() != wallet.currency {
            return Err(CardError::validation(
                "currency",
                "is not the card's currency",
            ));
        }
        if let Some(auth) = request.authorization_id {
            let original = self
                .authorization_row(partner, auth.uuid())
                .await?
                .filter(|a| a.card_id == Some(card.id))
                .ok_or(CardError::NotFound("authorization"))?;
            let _ = original;
        }
        let settlement = self.settlement_account(wallet.currency).await?;
        let at = now();
        let transfer_id = network_transfer_id(partner, "refund", ntid.as_deref());
        let id = CardRefundId::new();
        let operation = OperationRow {
            id: id.uuid(),
            partner_id: partner.uuid(),
            card_id: card.id,
            authorization_id: request.authorization_id.map(|a| a.uuid()),
            kind: "refund".into(),
            approved: true,
            amount: request.amount.minor(),
            network_transaction_id: ntid.clone(),
            transfer_id: Some(transfer_id.uuid()),
            detail: json!({ "merchant": {
                "name": request.merchant_name,
                "mcc": format!("{:04}", request.merchant.mcc.code()),
                "country": request.merchant.country.to_string(),
            }}),
            created_at: at,
        };
        let transfer = NewTransfer::movement(
            transfer_id,
            settlement,
            wallet.account_id,
            request.amount,
            REFUND_CODE,
        )
        .with_metadata(json!({
            "type": "card_refund",
            "card_id": CardId::from_uuid(card.id),
            "refund_id": id,
            "card_authorization_id": request.authorization_id,
            "description": request.merchant_name,
        }));
        let view = refund_view(&operation, card.wallet_id, wallet.currency.code())?;
        let data = serde_json::to_value(&view)
            .map_err(|e| CardError::Internal(anyhow::anyhow!("event data: {e}")))?;
        let outbox = self.inner.outbox.clone();
        let side: SideWrite = Box::new(move |tx, outcomes| {
            let (outbox, operation, data) = (outbox.clone(), operation.clone(), data.clone());
            let posted = outcomes.first().is_some_and(|o| o.code == ResultCode::Ok);
            Box::pin(async move {
                if posted {
                    store::insert_operations(tx.conn(), &[operation])
                        .await
                        .map_err(side_error)?;
                    outbox
                        .record_events(
                            tx,
                            vec![NewEvent {
                                partner_id: Some(partner),
                                event_type: "card.refund.created".into(),
                                data,
                            }],
                        )
                        .await
                        .map_err(side_error)?;
                }
                Ok(())
            })
        });
        let outcomes = self
            .inner
            .ledger
            .post_attached(
                Scope::System,
                vec![transfer],
                vec![card_lock_key(card.id)],
                Attachment::Each(side),
            )
            .await?;
        match outcomes.first().map_or(ResultCode::Ok, |o| o.code) {
            ResultCode::Ok => Ok(view),
            ResultCode::Exists | ResultCode::ExistsWithDifferentFields => match &ntid {
                Some(n) => {
                    let op = {
                        let mut conn = self.db().conn().await?;
                        store::operation_by_network_id(&mut conn, partner.uuid(), "refund", n)
                            .await?
                    };
                    match op {
                        Some(op) => self.refund_view(&op).await,
                        None => Ok(view),
                    }
                }
                None => Ok(view),
            },
            ResultCode::CreditsBlocked => {
                Err(crate::wallet::WalletError::Frozen("the wallet is frozen for credits").into())
            }
            ResultCode::AccountClosed => Err(CardError::WalletClosed),
            other => Err(CardError::Internal(anyhow::anyhow!(
                "the ledger refused a card refund: {other}"
            ))),
        }
    }

    async fn refund_view(&self, op: &OperationRow) -> Result<CardRefund, CardError> {
        let card = self
            .card_row(Some(op.card_id))
            .await?
            .ok_or_else(|| anyhow::anyhow!("a refund without its card"))?;
        refund_view(op, card.wallet_id, &card.currency)
    }
}

fn refund_view(
    op: &OperationRow,
    wallet: uuid::Uuid,
    currency: &str,
) -> Result<CardRefund, CardError> {
    Ok(CardRefund {
        id: CardRefundId::from_uuid(op.id),
        card_id: CardId::from_uuid(op.card_id),
        wallet_id: WalletId::from_uuid(wallet),
        authorization_id: op.authorization_id.map(AuthorizationId::from_uuid),
        amount: super::authorize::stored_money(op.amount, currency)?.format_amount(),
        currency: currency.to_owned(),
        merchant: super::authorization_views::merchant_view(
            op.detail
                .get("merchant")
                .unwrap_or(&serde_json::Value::Null),
        ),
        network_transaction_id: op.network_transaction_id.clone(),
        created: op.created_at,
    })
}

/// A capture's effect and, for an over-capture, its excess.
struct ExcessEffect {
    base: Effect,
    excess: i64,
    currency: crate::platform::money::Currency,
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
    let void = NewTransfer::void_pending(void_id, old, HOLD_CODE)
        .with_flags(TransferFlags::LINKED)
        .with_metadata(metadata.clone());
    let mut hold =
        NewTransfer::pending(new, account, settlement, amount, HOLD_CODE).with_metadata(metadata);
    let left = expires_at.map_or(3600, |e| (e - at).num_seconds().max(1));
    hold.timeout_secs = Some(u32::try_from(left).unwrap_or(u32::MAX));
    vec![void, hold]
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
        CardError::Ledger(LedgerError::SideWrite(side)) => match side.0.downcast::<LimitRace>() {
            Ok(race) => Ok(*race),
            Err(other) => Err(CardError::Internal(anyhow::anyhow!("{other}"))),
        },
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
