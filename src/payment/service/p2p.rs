//! P2P payments: money between two wallets of the partner, one ledger transfer with both
//! customers' tier limits checked in its transaction.

use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::{Attached, Payment, PaymentService, money, new_row, now, wallet_id};
use crate::kernel::PartnerId;
use crate::kyc::{Direction, Movement, OutgoingKind};
use crate::ledger::{NewTransfer, Scope, TransferId};
use crate::payment::error::PaymentError;
use crate::payment::model::{self, PaymentId, PaymentKind, PaymentStatus};
use crate::payment::store::PaymentRow;
use crate::platform::idempotency::Claim;
use crate::platform::money::{Amount, Currency};

/// `POST /v1/payments`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPayment {
    pub from_wallet_id: String,
    pub to_wallet_id: String,
    /// A decimal string (or exact JSON number) with at most the currency's minor digits.
    #[schema(value_type = String, example = "25.00")]
    pub amount: Amount,
    #[schema(value_type = String, example = "EUR")]
    pub currency: Currency,
    pub description: Option<String>,
}

impl PaymentService {
    /// A P2P payment between two wallets of the partner.
    pub async fn pay(
        &self,
        partner: PartnerId,
        input: NewPayment,
        claim: Option<Claim>,
    ) -> Result<Payment, PaymentError> {
        let from_id = wallet_id("from_wallet_id", &input.from_wallet_id)?;
        let to_id = wallet_id("to_wallet_id", &input.to_wallet_id)?;
        if from_id == to_id {
            return Err(PaymentError::validation(
                "to_wallet_id",
                "must be another wallet than from_wallet_id",
            ));
        }
        let amount = money(&input.amount, input.currency)?;
        let description = model::description(input.description.as_deref())
            .map_err(|m| PaymentError::validation("description", m))?;
        let wallets = &self.inner.wallets;
        // The wallets' immutable facts (from memory once read); whether they are frozen or
        // closed is the ledger's to say when the transfer posts (debits_blocked,
        // credits_blocked, account_closed), exactly at commit time.
        let (from, to) = wallets.wallet_accounts(partner, from_id, to_id).await?;
        if from.currency != input.currency || to.currency != input.currency {
            return Err(PaymentError::CurrencyMismatch);
        }
        let id = PaymentId::new();
        let at = now();
        let row = PaymentRow {
            from_wallet_id: Some(from.id.uuid()),
            to_wallet_id: Some(to.id.uuid()),
            description: description.clone(),
            ..new_row(
                id,
                partner,
                PaymentKind::P2p,
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
            PaymentKind::P2p.transfer_code(),
        )
        .with_metadata(json!({
            "payment_id": id,
            "type": "p2p",
            "description": description,
        }));
        // The payment module moves the money, on accounts it checked are the partner's
        // wallets: the system's scope (a partner's own scope may not touch wallet accounts).
        self.post(
            Scope::System,
            transfer,
            Attached {
                partner,
                row,
                outgoing: Some(Movement {
                    customer_id: from.customer_id,
                    amount,
                    direction: Direction::Outgoing(OutgoingKind::Payment),
                    balance_after: None,
                }),
                incoming: Some((to.customer_id, to.account_id)),
                amount,
                event: "payment.completed",
                refund_of: None,
                claim,
            },
        )
        .await
    }
}
