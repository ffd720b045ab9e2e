//! The cards' part of verifying the books: every pending authorization holds exactly what it
//! says on the ledger.

use std::collections::HashMap;

use super::CardService;
use super::authorize::HOLD_CODE;
use crate::card::error::CardError;
use crate::card::network::AuthorizationId;
use crate::card::store;
use crate::ledger::{Scope, TransferFlags, TransferId, VerifyReport, Violation};

const CARD_HOLDS: (&str, &str) = (
    "card_holds",
    "every pending card authorization's hold is a pending ledger transfer of the amount it holds",
);
/// Authorizations read per page: verification runs in bounded memory.
const PAGE: i64 = 500;
/// Violations reported per check, at most (like the ledger's).
const MAX: usize = 100;

impl CardService {
    /// Adds the card checks to `report`.
    pub async fn verify(&self, report: &mut VerifyReport) -> Result<(), CardError> {
        let mut found = Vec::new();
        let mut after = None;
        loop {
            let rows = {
                let mut conn = self.db().conn().await?;
                store::pending_after(&mut conn, after, PAGE).await?
            };
            let Some(last) = rows.last() else { break };
            after = Some(last.id);
            let ids: Vec<TransferId> = rows
                .iter()
                .filter_map(|r| r.hold_transfer_id)
                .map(TransferId::from_uuid)
                .collect();
            let holds: HashMap<uuid::Uuid, crate::ledger::StoredTransfer> = self
                .inner
                .ledger
                .transfers(Scope::System, ids)
                .await?
                .into_iter()
                .map(|t| (t.id.uuid(), t))
                .collect();
            for row in &rows {
                let problem = match row.hold_transfer_id.and_then(|h| holds.get(&h)) {
                    None => Some("its hold is not on the ledger".to_owned()),
                    Some(t) if !t.flags.contains(TransferFlags::PENDING) || t.code != HOLD_CODE => {
                        Some(format!("its hold {} is not a pending card hold", t.id))
                    }
                    Some(t) if t.amount != row.held => Some(format!(
                        "it holds {} (minor units) but its hold {} is of {}",
                        row.held, t.id, t.amount
                    )),
                    Some(_) => None,
                };
                if let Some(detail) = problem
                    && found.len() < MAX
                {
                    found.push(Violation {
                        check: CARD_HOLDS.0.to_owned(),
                        subject: AuthorizationId::from_uuid(row.id).to_string(),
                        detail,
                    });
                }
            }
        }
        report.add(CARD_HOLDS.0, CARD_HOLDS.1, found);
        Ok(())
    }
}
