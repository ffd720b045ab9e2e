//! Refunds: (part of) a completed P2P payment back from the payee, a new transfer, never more
//! in total than was paid.

use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::{Attached, Payment, PaymentService, check_open, money, new_row, now};
use crate::kernel::PartnerId;
use crate::ledger::{NewTransfer, Scope, TransferId};
use crate::payment::error::PaymentError;
use crate::payment::model::{PaymentId, PaymentKind, PaymentStatus};
use crate::payment::store::{self, PaymentRow};
use crate::platform::idempotency::Claim;
use crate::platform::money::{Amount, Currency, Money};
use crate::wallet::WalletId;

/// `POST /v1/payments/{id}/refunds`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRefund {
    /// Default: everything not refunded yet.
    #[schema(value_type = Option<String>, example = "5.00")]
    pub amount: Option<Amount>,
}

impl PaymentService {
    /// Refunds (part of) a completed P2P payment: a new transfer back from the payee, never
    /// more in total than was paid; the original becomes `reversed` once fully refunded.
    pub async fn refund(
        &self,
        partner: PartnerId,
        original: PaymentId,
        input: NewRefund,
        claim: Option<Claim>,
    ) -> Result<Payment, PaymentError> {
        let row = {
            let mut conn = self.db().conn().await?;
            store::find_payment(&mut conn, original.uuid())
                .await?
                .filter(|r| r.partner_id == partner.uuid())
                .ok_or(PaymentError::NotFound("payment"))?
        };
        let (Some(payer), Some(payee)) = (row.from_wallet_id, row.to_wallet_id) else {
            return Err(PaymentError::NotRefundable(
                "only payments between wallets are refunded",
            ));
        };
        if row.kind != PaymentKind::P2p.as_str() {
            return Err(PaymentError::NotRefundable(
                "only payments between wallets are refunded",
            ));
        }
        let currency = Currency::parse(&row.currency)
            .map_err(|e| PaymentError::Internal(anyhow::anyhow!("stored currency: {e}")))?;
        let nothing_left = || PaymentError::RefundExceedsPayment {
            remaining: Money::zero(currency).format_amount(),
        };
        if row.status == PaymentStatus::Reversed.as_str() {
            return Err(nothing_left());
        }
        if row.status != PaymentStatus::Completed.as_str() {
            return Err(PaymentError::NotRefundable(
                "only completed payments are refunded",
            ));
        }
        let amount = match &input.amount {
            Some(a) => money(a, currency)?,
            None => {
                let mut conn = self.db().conn().await?;
                let done = store::refunded(&mut conn, row.id).await?;
                let rest = row.amount.saturating_sub(done);
                if rest <= 0 {
                    return Err(nothing_left());
                }
                Money::from_minor(rest, currency)
            }
        };
        let wallets = &self.inner.wallets;
        let (from, to) = wallets
            .wallet_pair(
                partner,
                WalletId::from_uuid(payee),
                WalletId::from_uuid(payer),
            )
            .await?;
        check_open(&from, true)?;
        check_open(&to, false)?;
        let id = PaymentId::new();
        let at = now();
        let refund = PaymentRow {
            from_wallet_id: Some(payee),
            to_wallet_id: Some(payer),
            refund_of: Some(row.id),
            ..new_row(
                id,
                partner,
                PaymentKind::Refund,
                PaymentStatus::Completed,
                amount,
                at,
            )
        };
        let transfer = NewTransfer::movement(
            TransferId::from_uuid(id.uuid()),
            from.account_id,
            to.account_id,
            amount,
            PaymentKind::Refund.transfer_code(),
        )
        .with_metadata(json!({ "payment_id": id, "type": "refund", "refund_of": original }));
        // The payment module moves the money, on accounts it checked are the partner's
        // wallets: the system's scope (a partner's own scope may not touch wallet accounts).
        self.post(
            Scope::System,
            transfer,
            Attached {
                partner,
                row: refund,
                outgoing: None,
                incoming: None,
                amount,
                event: "payment.refunded",
                refund_of: Some((row.id, row.amount)),
                claim,
            },
        )
        .await
    }
}
