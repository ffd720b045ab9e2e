//! Deposits: money from outside into a wallet, from the rail's clearing account (the sandbox
//! rail settles at once).

use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::{
    Attached, Payment, PaymentService, check_open, money, new_row, now, rail_details, wallet_id,
};
use crate::kernel::PartnerId;
use crate::ledger::{NewTransfer, Scope, TransferId};
use crate::payment::error::PaymentError;
use crate::payment::model::{PaymentId, PaymentKind, PaymentStatus};
use crate::payment::store::PaymentRow;
use crate::platform::idempotency::Claim;
use crate::platform::money::{Amount, Currency};

/// `POST /v1/deposits`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDeposit {
    pub wallet_id: String,
    #[schema(value_type = String, example = "100.00")]
    pub amount: Amount,
    #[schema(value_type = String, example = "EUR")]
    pub currency: Currency,
    /// Where the money comes from (free-form details of the paying account), kept as given.
    #[schema(value_type = Object)]
    pub source: Option<serde_json::Value>,
}

impl PaymentService {
    /// A deposit from outside (the sandbox rail settles it at once).
    pub async fn deposit(
        &self,
        partner: PartnerId,
        input: NewDeposit,
        claim: Option<Claim>,
    ) -> Result<Payment, PaymentError> {
        let to_id = wallet_id("wallet_id", &input.wallet_id)?;
        let amount = money(&input.amount, input.currency)?;
        if let Some(source) = &input.source {
            rail_details("source", source)?;
        }
        let to = self.inner.wallets.wallet_ref(partner, to_id).await?;
        if to.currency != input.currency {
            return Err(PaymentError::CurrencyMismatch);
        }
        check_open(&to, false)?;
        let rail = self.rail_account(input.currency).await?;
        let rail_name = self.inner.rail.name();
        let id = PaymentId::new();
        let at = now();
        let row = PaymentRow {
            to_wallet_id: Some(to.id.uuid()),
            rail: input
                .source
                .map(|s| json!({ "rail": rail_name, "source": s })),
            ..new_row(
                id,
                partner,
                PaymentKind::Deposit,
                PaymentStatus::Completed,
                amount,
                at,
            )
        };
        let transfer = NewTransfer::movement(
            TransferId::from_uuid(id.uuid()),
            rail,
            to.account_id,
            amount,
            PaymentKind::Deposit.transfer_code(),
        )
        .with_metadata(json!({ "payment_id": id, "type": "deposit" }));
        self.post(
            Scope::System,
            transfer,
            Attached {
                partner,
                row,
                outgoing: None,
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
