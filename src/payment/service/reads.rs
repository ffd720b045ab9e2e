//! Reading payments back (one, or a page), and the payment module's checks of its records
//! against the ledger (`verify`).

use std::collections::HashMap;

use super::{Payment, PaymentService, view};
use crate::kernel::{PartnerId, Principal};
use crate::ledger::{Scope, TransferId};
use crate::payment::error::PaymentError;
use crate::payment::model::{self, PaymentId};
use crate::payment::store::{self, PaymentRow};
use crate::platform::http::pagination::Page;
use crate::wallet::WalletId;

impl PaymentService {
    /// A payment the principal may see.
    pub async fn payment(
        &self,
        principal: &Principal,
        id: PaymentId,
    ) -> Result<Payment, PaymentError> {
        let mut conn = self.db().conn().await?;
        let row = store::find_payment(&mut conn, id.uuid())
            .await?
            .filter(|r| principal.can_see_partner(PartnerId::from_uuid(r.partner_id)))
            .ok_or(PaymentError::NotFound("payment"))?;
        view(&row)
    }

    /// Payments, newest first, optionally of one wallet.
    pub async fn list(
        &self,
        principal: &Principal,
        wallet: Option<WalletId>,
        limit: u32,
        cursor: Option<PaymentId>,
    ) -> Result<Page<Payment>, PaymentError> {
        let mut conn = self.db().conn().await?;
        let rows = store::list_payments(
            &mut conn,
            principal.partner_id.map(|p| p.uuid()),
            wallet.map(|w| w.uuid()),
            cursor.map(|c| c.uuid()),
            i64::from(limit) + 1,
        )
        .await?;
        let data = rows.iter().map(view).collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_rows(data, limit, |p: &Payment| p.id.to_string()))
    }
}

/// The payment module's checks of its records against the ledger, run with the ledger's own
/// (`admin ledger verify` and the periodic verification).
const PAYMENT_TRANSFERS: (&str, &str) = (
    "payment_transfers",
    "every payment has its ledger transfers, moving its amount, in the state its status says",
);
const TRANSFER_PAYMENTS: (&str, &str) = (
    "transfer_payments",
    "every ledger transfer made for a payment is one of that payment's",
);
/// Payments (or transfers) read per page: verification runs in bounded memory.
const VERIFY_PAGE: u32 = 500;
/// Violations reported per check, at most (like the ledger's).
const VERIFY_MAX: usize = 100;

impl PaymentService {
    /// Adds the payment checks to `report`: every payment row has exactly its transfers.
    pub async fn verify(
        &self,
        report: &mut crate::ledger::VerifyReport,
    ) -> Result<(), PaymentError> {
        use crate::ledger::Violation;
        let violation = |check: &str, subject: String, detail: String| Violation {
            check: check.to_owned(),
            subject,
            detail,
        };
        // Each payment's transfers, as its kind and status say.
        let mut found = Vec::new();
        let mut after = None;
        loop {
            let rows = {
                let mut conn = self.db().conn().await?;
                store::payments_after(&mut conn, after, i64::from(VERIFY_PAGE)).await?
            };
            let Some(last) = rows.last() else { break };
            after = Some(last.id);
            let ids: Vec<TransferId> = rows
                .iter()
                .flat_map(|r| [Some(r.transfer_id), r.settlement_transfer_id])
                .flatten()
                .map(TransferId::from_uuid)
                .collect();
            let transfers: HashMap<uuid::Uuid, crate::ledger::StoredTransfer> = self
                .inner
                .ledger
                .transfers(Scope::System, ids)
                .await?
                .into_iter()
                .map(|t| (t.id.uuid(), t))
                .collect();
            for row in &rows {
                if let Some(problem) = model::transfers_problem(row_facts(row), |id| {
                    transfers.get(&id).map(|t| (t.amount, t.flags))
                }) && found.len() < VERIFY_MAX
                {
                    let subject = PaymentId::from_uuid(row.id).to_string();
                    found.push(violation(PAYMENT_TRANSFERS.0, subject, problem));
                }
            }
        }
        report.add(PAYMENT_TRANSFERS.0, PAYMENT_TRANSFERS.1, found);

        // Every transfer that names a payment is that payment's.
        let mut found = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .inner
                .ledger
                .transfers_after(after, VERIFY_PAGE)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            let named: Vec<(TransferId, uuid::Uuid)> = page
                .iter()
                .filter_map(|t| {
                    let payment = t.metadata.as_ref()?.get("payment_id")?.as_str()?;
                    Some((t.id, payment.parse::<PaymentId>().ok()?.uuid()))
                })
                .collect();
            if named.is_empty() {
                continue;
            }
            let rows: HashMap<uuid::Uuid, PaymentRow> = {
                let mut conn = self.db().conn().await?;
                store::find_payments(&mut conn, named.iter().map(|(_, p)| *p).collect())
                    .await?
                    .into_iter()
                    .map(|r| (r.id, r))
                    .collect()
            };
            for (transfer, payment) in named {
                let ours = rows.get(&payment).is_some_and(|r| {
                    r.transfer_id == transfer.uuid()
                        || r.settlement_transfer_id == Some(transfer.uuid())
                });
                if !ours && found.len() < VERIFY_MAX {
                    found.push(violation(
                        TRANSFER_PAYMENTS.0,
                        transfer.to_string(),
                        format!(
                            "names payment {} but is not one of its transfers",
                            PaymentId::from_uuid(payment)
                        ),
                    ));
                }
            }
        }
        report.add(TRANSFER_PAYMENTS.0, TRANSFER_PAYMENTS.1, found);
        Ok(())
    }
}

/// What verification compares of a payment row.
fn row_facts(row: &PaymentRow) -> model::PaymentFacts<'_> {
    model::PaymentFacts {
        kind: &row.kind,
        status: &row.status,
        amount: row.amount,
        transfer_id: row.transfer_id,
        settlement_transfer_id: row.settlement_transfer_id,
    }
}
