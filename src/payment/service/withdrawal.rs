//! Withdrawals: money out of a wallet to the rail, held at once (a pending transfer), and
//! their settlement: the worker that asks the rail and posts or voids the held money.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::writer::finish_withdrawal;
use super::{
    Attached, Payment, PaymentService, check_open, money, new_row, now, rail_details, wallet_id,
};
use crate::kernel::PartnerId;
use crate::kyc::{Direction, Movement, OutgoingKind, limit_lock_key};
use crate::ledger::{Attachment, NewTransfer, ResultCode, Scope, SideWrite, TransferId};
use crate::payment::error::PaymentError;
use crate::payment::model::{PaymentId, PaymentKind, PaymentStatus};
use crate::payment::rail::Settlement;
use crate::payment::store::{self, PaymentRow};
use crate::platform::db::Db;
use crate::platform::idempotency::Claim;
use crate::platform::money::{Amount, Currency, Money};
use crate::platform::workers::Shutdown;
use crate::wallet::WalletId;

/// `POST /v1/withdrawals`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWithdrawal {
    pub wallet_id: String,
    #[schema(value_type = String, example = "40.00")]
    pub amount: Amount,
    #[schema(value_type = String, example = "EUR")]
    pub currency: Currency,
    /// Where the money goes (the receiving account's details), kept as given.
    #[schema(value_type = Object)]
    pub destination: serde_json::Value,
}

impl PaymentService {
    /// A withdrawal to the outside rail: the money is held at once (a pending ledger transfer,
    /// status `pending`) and posted or released when the rail settles.
    pub async fn withdraw(
        &self,
        partner: PartnerId,
        input: NewWithdrawal,
        claim: Option<Claim>,
    ) -> Result<Payment, PaymentError> {
        let from_id = wallet_id("wallet_id", &input.wallet_id)?;
        let amount = money(&input.amount, input.currency)?;
        rail_details("destination", &input.destination)?;
        let from = self.inner.wallets.wallet_ref(partner, from_id).await?;
        if from.currency != input.currency {
            return Err(PaymentError::CurrencyMismatch);
        }
        check_open(&from, true)?;
        let rail_account = self.rail_account(input.currency).await?;
        let rail = &self.inner.rail;
        let id = PaymentId::new();
        let at = now();
        let row = PaymentRow {
            from_wallet_id: Some(from.id.uuid()),
            rail: Some(json!({ "rail": rail.name(), "destination": input.destination })),
            settlement_transfer_id: Some(TransferId::new().uuid()),
            settle_after: Some(rail.settle_after(at)),
            ..new_row(
                id,
                partner,
                PaymentKind::Withdrawal,
                PaymentStatus::Pending,
                amount,
                at,
            )
        };
        let transfer = NewTransfer::pending(
            TransferId::from_uuid(id.uuid()),
            from.account_id,
            rail_account,
            amount,
            PaymentKind::Withdrawal.transfer_code(),
        )
        .with_metadata(json!({ "payment_id": id, "type": "withdrawal" }));
        self.post(
            Scope::System,
            transfer,
            Attached {
                partner,
                row,
                outgoing: Some(Movement {
                    customer_id: from.customer_id,
                    amount,
                    direction: Direction::Outgoing(OutgoingKind::Withdrawal),
                    balance_after: None,
                }),
                incoming: None,
                amount,
                event: "payment.created",
                refund_of: None,
                claim,
            },
        )
        .await
    }

    /// Asks the rail about every pending withdrawal that is due and posts (settled) or voids
    /// (failed) its held money, with the payment's new status, the tier usage given back on a
    /// failure, and the event, in one transaction. Settling twice (another replica, a restart)
    /// is harmless: the settlement transfer id was chosen when the withdrawal was made.
    pub async fn settle_due(&self) -> Result<usize, PaymentError> {
        self.settle_due_on(self.db()).await
    }

    /// [`Self::settle_due`], finding the due withdrawals through `db` (the background
    /// workers' pool).
    pub async fn settle_due_on(&self, db: &Db) -> Result<usize, PaymentError> {
        let at = now();
        let due = {
            let mut conn = db.conn().await?;
            store::due_withdrawals(&mut conn, at, self.settlement_batch()).await?
        };
        let mut settled = 0;
        for row in due {
            // One bad row (a record that no longer adds up) is logged and skipped: it must
            // never hold back the settlement of every withdrawal after it.
            match self.settle(&row, at).await {
                Ok(true) => settled += 1,
                Ok(false) => {}
                Err(e) => tracing::error!(
                    payment.id = %PaymentId::from_uuid(row.id),
                    error.cause = %e,
                    "settling a withdrawal failed; going on with the next"
                ),
            }
        }
        Ok(settled)
    }

    /// Settles one due withdrawal if the rail has decided it; whether it settled now.
    async fn settle(&self, row: &PaymentRow, at: DateTime<Utc>) -> Result<bool, PaymentError> {
        let Some(settlement_id) = row.settlement_transfer_id else {
            return Ok(false);
        };
        let currency = Currency::parse(&row.currency)
            .map_err(|e| PaymentError::Internal(anyhow::anyhow!("stored currency: {e}")))?;
        let amount = Money::from_minor(row.amount, currency);
        let verdict = self
            .inner
            .rail
            .settlement(amount, row.settle_after.unwrap_or(row.created_at), at)
            .await
            .map_err(|e| PaymentError::Internal(e.into()))?;
        let (resolve, status): (fn(TransferId, TransferId, i32) -> NewTransfer, _) = match verdict {
            Settlement::Pending => return Ok(false),
            Settlement::Succeeded => (NewTransfer::post_pending, PaymentStatus::Completed),
            Settlement::Failed(_) => (NewTransfer::void_pending, PaymentStatus::Failed),
        };
        let customer = match row.from_wallet_id {
            Some(w) => Some(
                self.inner
                    .wallets
                    .wallet_ref(PartnerId::from_uuid(row.partner_id), WalletId::from_uuid(w))
                    .await?
                    .customer_id,
            ),
            None => None,
        };
        let transfer = resolve(
            TransferId::from_uuid(settlement_id),
            TransferId::from_uuid(row.transfer_id),
            PaymentKind::Withdrawal.transfer_code(),
        )
        .with_metadata(json!({ "payment_id": PaymentId::from_uuid(row.id), "type": "withdrawal" }));
        let (kyc, outbox) = (self.inner.kyc.clone(), self.inner.outbox.clone());
        let side_row = row.clone();
        let side: SideWrite = Box::new(move |tx, outcomes| {
            let (kyc, outbox, row) = (kyc.clone(), outbox.clone(), side_row.clone());
            Box::pin(async move {
                let faces = (&*kyc, &*outbox);
                finish_withdrawal(tx, faces, &row, customer, amount, status, outcomes).await
            })
        });
        let locks = customer.map(limit_lock_key).into_iter().collect();
        let outcomes = self
            .inner
            .ledger
            .post_attached(Scope::System, vec![transfer], locks, Attachment::Each(side))
            .await?;
        if !outcomes.first().is_some_and(|o| o.code == ResultCode::Ok) {
            return Ok(false);
        }
        if let Some(m) = &self.inner.metrics {
            m.observe(
                PaymentKind::Withdrawal,
                status.as_str(),
                (status == PaymentStatus::Completed).then_some(amount),
            );
        }
        Ok(true)
    }

    fn settlement_batch(&self) -> i64 {
        self.inner.settlement_batch
    }

    /// The settlement worker: [`Self::settle_due_on`] `db` every `interval` until shutdown.
    pub async fn run_settlement(
        self,
        interval: std::time::Duration,
        db: Db,
        mut shutdown: Shutdown,
    ) {
        loop {
            tokio::select! {
                () = shutdown.requested() => return,
                () = tokio::time::sleep(interval) => {}
            }
            if let Err(e) = self.settle_due_on(&db).await {
                tracing::error!(error.cause = %e, "settling withdrawals failed");
            }
        }
    }
}
