//! Expiry of uncaptured holds.

use super::*;

impl CardService {
    /// One pass of hold expiry as of `now`: voids up to `limit` uncaptured holds whose time
    /// has come; how many were expired.
    pub async fn expire_due(&self, now: DateTime<Utc>, limit: i64) -> Result<usize, CardError> {
        self.expire_due_on(self.db(), now, limit).await
    }

    /// [`Self::expire_due`], finding the due holds through `db` (the background workers'
    /// pool); the voids go through the engine as always.
    pub async fn expire_due_on(
        &self,
        db: &crate::platform::db::Db,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<usize, CardError> {
        let due = {
            let mut conn = db.conn().await?;
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
        background: crate::platform::db::Db,
        mut shutdown: crate::platform::workers::Shutdown,
    ) {
        loop {
            tokio::select! {
                () = shutdown.requested() => return,
                () = tokio::time::sleep(interval) => {}
            }
            if let Err(e) = self.expire_due_on(&background, now(), 500).await {
                tracing::error!(error.cause = %e, "expiring card holds failed");
            }
        }
    }
}
