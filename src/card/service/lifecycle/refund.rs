//! Merchant refunds to a card's wallet.

use super::*;

impl CardService {
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
        let expiry = super::super::rows::expiry_of(&card)?;
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
        // The authorization refunded, when named, is one of this card's.
        if let Some(auth) = request.authorization_id {
            self.authorization_row(partner, auth.uuid())
                .await?
                .filter(|a| a.card_id == Some(card.id))
                .ok_or(CardError::NotFound("authorization"))?;
        }
        let settlement = self.settlement_account(wallet.currency, card.id).await?;
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
        amount: super::super::authorize::stored_money(op.amount, currency)?.format_amount(),
        currency: currency.to_owned(),
        merchant: super::super::authorization_views::merchant_view(
            op.detail
                .get("merchant")
                .unwrap_or(&serde_json::Value::Null),
        ),
        network_transaction_id: op.network_transaction_id.clone(),
        created: op.created_at,
    })
}
