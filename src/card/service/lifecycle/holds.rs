//! Increments and reversals: the hold grows, shrinks or goes.

use super::*;

impl CardService {
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
        let settlement = self.settlement_account(amount.currency(), card.id).await?;
        let total = row
            .held
            .checked_add(amount.minor())
            .ok_or_else(|| CardError::validation("amount", "makes the authorization too large"))?;
        let per_authorization =
            super::super::rows::stored_controls(&card, amount.currency(), self.inner.categories)?
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
                Ok(LimitRace::Card | LimitRace::Tier) => {
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

    /// Voids all (or `amount`) of the hold.
    pub async fn reverse(
        &self,
        partner: PartnerId,
        id: AuthorizationId,
        message: FollowUp,
    ) -> Result<Authorization, CardError> {
        let Opened {
            row,
            amount,
            currency,
            hold: old_hold,
        } = match self.open(partner, id, "reversal", &message).await? {
            Open::Repeated(first) => return Ok(first),
            Open::Pending(opened) => opened,
        };
        if amount > row.held {
            return Err(CardError::validation(
                "amount",
                "is more than the authorization holds",
            ));
        }
        let ntid = message.network_transaction_id.as_deref();
        let at = now();
        let (account, customer) = self.wallet_account(&row).await?;
        let mut after = row.clone();
        after.updated_at = at;
        after.held = row.held - amount;
        let settlement = self
            .settlement_account(currency, row.card_id.unwrap_or_default())
            .await?;
        let transfers = if amount == row.held {
            after.status = "reversed".into();
            let void = NewTransfer::void_pending(
                network_transfer_id(partner, "reversal", ntid),
                old_hold,
                HOLD_CODE,
            );
            vec![
                with_accounts(void, account, settlement)
                    .with_metadata(self.metadata(&row, "card_reversal")),
            ]
        } else {
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
}
