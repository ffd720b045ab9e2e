//! Reveals of a card's number (audited, limited) and re-sealing after a key rotation.

use crate::card::error::CardError;
use crate::card::model::pan::Pan;
use crate::card::store::{self, RevealRow};
use crate::kernel::PartnerId;
use crate::platform::idempotency::Claim;
use actix_web::http::StatusCode;

use super::rows::{card_view, complete, expiry_of, locked, now, pan_context};
use super::{CardId, CardService, RevealedCard};

impl CardService {
    /// The card's number and CVC, audited (who, when, which request) and limited per card
    /// (`cards.reveals_per_hour`). A canceled card's number is not shown.
    pub async fn reveal(
        &self,
        partner: PartnerId,
        actor: &str,
        id: CardId,
        request_id: Option<&str>,
        claim: Option<Claim>,
    ) -> Result<RevealedCard, CardError> {
        let this = self.clone();
        let actor = actor.to_owned();
        let request_id = request_id.map(str::to_owned);
        self.db()
            .in_tx(|tx| {
                let (this, actor, request_id, claim) = (
                    this.clone(),
                    actor.clone(),
                    request_id.clone(),
                    claim.clone(),
                );
                Box::pin(async move {
                    let row = locked(tx, partner, id).await?;
                    if row.status == "canceled" {
                        return Err(CardError::Canceled);
                    }
                    let now = now();
                    let hour_ago = now - chrono::Duration::hours(1);
                    let recent = store::reveals_since(tx.conn(), row.id, hour_ago).await?;
                    if recent >= i64::from(this.inner.settings.reveals_per_hour) {
                        return Err(CardError::RevealsExhausted(3600));
                    }
                    store::insert_reveal(
                        tx.conn(),
                        &RevealRow {
                            card_id: row.id,
                            partner_id: partner.uuid(),
                            actor: &actor,
                            request_id: request_id.as_deref(),
                            created_at: now,
                        },
                    )
                    .await?;
                    let sealed = store::find_vault(tx.conn(), row.id).await?.ok_or_else(|| {
                        CardError::Internal(anyhow::anyhow!("a card without its number"))
                    })?;
                    let plain = this
                        .inner
                        .vault
                        .open(&pan_context(row.id), &sealed.pan_enc)?;
                    let pan = Pan::parse(&plain).map_err(|e| {
                        CardError::Internal(anyhow::anyhow!("a stored number: {e}"))
                    })?;
                    let expiry = expiry_of(&row)?;
                    let cvc = this.inner.cvc.derive(&pan, expiry);
                    let card = card_view(&row)?;
                    complete(tx, claim.as_ref(), StatusCode::OK, &card).await?;
                    tracing::info!(card.id = %id, actor = %actor, "card number revealed");
                    Ok(RevealedCard {
                        card,
                        pan: pan.expose().to_owned(),
                        cvc: cvc.expose().to_owned(),
                    })
                })
            })
            .await
    }

    /// Re-seals every card number sealed under a key other than the active one (after a key
    /// rotation); the count re-sealed.
    pub async fn reencrypt(&self) -> Result<usize, CardError> {
        let mut after = None;
        let mut resealed = 0;
        loop {
            let mut conn = self.db().conn().await?;
            let page = store::vault_after(&mut conn, after, 500).await?;
            let Some(last) = page.last() else {
                return Ok(resealed);
            };
            after = Some(last.card_id);
            for row in page
                .iter()
                .filter(|r| self.inner.vault.is_stale(&r.pan_enc))
            {
                let context = pan_context(row.card_id);
                let plain = self.inner.vault.open(&context, &row.pan_enc)?;
                let fresh = self.inner.vault.seal(&context, &plain)?;
                if store::reseal(&mut conn, row.card_id, &row.pan_enc, &fresh).await? {
                    resealed += 1;
                }
            }
        }
    }
}
