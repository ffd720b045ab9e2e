//! Captures (clearing), over-captures for tipping merchants, and their shortfalls.

use super::*;

/// The merchant category groups whose captures may exceed the authorization (a tip).
const TIPPING_GROUPS: [&str; 2] = ["restaurants", "transport"];

impl CardService {
    /// Clearing: posts all (or `amount`) of the hold.
    pub async fn capture(
        &self,
        partner: PartnerId,
        id: AuthorizationId,
        message: FollowUp,
    ) -> Result<Authorization, CardError> {
        let Opened {
            row,
            amount,
            currency,
            hold,
        } = match self.open(partner, id, "capture", &message).await? {
            Open::Repeated(first) => return Ok(first),
            Open::Pending(opened) => opened,
        };
        let ntid = message.network_transaction_id.as_deref();
        let at = now();
        let excess = amount.saturating_sub(row.held).max(0);
        if excess > 0 {
            self.check_overcapture(&row, amount)?;
        }
        let (account, customer) = self.wallet_account(&row).await?;
        let settlement = self
            .settlement_account(currency, row.card_id.unwrap_or_default())
            .await?;
        let post_id = network_transfer_id(partner, "capture", ntid);
        let mut post = NewTransfer::post_pending(post_id, hold, HOLD_CODE);
        post.amount = amount.min(row.held);
        let mut transfers = vec![
            with_accounts(post, account, settlement)
                .with_metadata(self.metadata(&row, "card_capture")),
        ];
        if excess > 0 {
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
        let controls = self.controls_of(&short.authorization).await?;
        let locks = vec![
            card_lock_key(short.authorization.card_id.unwrap_or_default()),
            limit_lock_key(short.customer),
        ];
        let side: SideWrite = Box::new(move |tx, outcomes| {
            let (kyc, outbox, controls) = (kyc.clone(), outbox.clone(), controls.clone());
            let posted = outcomes.first().is_some_and(|o| o.code == ResultCode::Ok);
            let excess_posted = outcomes.get(1).is_some_and(|o| o.code == ResultCode::Ok);
            let effect = if excess_posted {
                with_excess.clone()
            } else {
                short.clone()
            };
            Box::pin(async move {
                if posted {
                    apply_effect(tx, &*kyc, &*outbox, controls.as_ref(), &effect).await?;
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
}

/// A capture's effect and, for an over-capture, its excess.
struct ExcessEffect {
    base: Effect,
    excess: i64,
    currency: crate::platform::money::Currency,
}
