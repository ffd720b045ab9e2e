//! Platform-scope card changes: an operator (`flowlet admin card ...`) acts on any partner's
//! card by its id alone.
//!
//! The operator knows no partner, so the card's own partner is looked up first; the change
//! itself is then exactly the one `POST /v1/cards/{id}/freeze|unfreeze|cancel` makes
//! ([`CardService::change`]: one transaction, the status change row with its actor and reason,
//! the `card.*` event). A card never changes partner, so the lookup outside that transaction
//! cannot name a wrong one.

use super::{CancelReason, Card, CardError, CardId, CardService, Change, reason_text, store};
use crate::kernel::PartnerId;

impl CardService {
    /// Freezes any partner's card for an operator: every authorization is declined
    /// `card_frozen` until it is unfrozen. `actor` names the operator (`operator:<name>`).
    pub async fn freeze_for_operator(
        &self,
        actor: &str,
        id: CardId,
        reason: &str,
    ) -> Result<Card, CardError> {
        self.change_for_operator(actor, id, Change::Freeze, reason)
            .await
    }

    /// Unfreezes any partner's card for an operator.
    pub async fn unfreeze_for_operator(
        &self,
        actor: &str,
        id: CardId,
        reason: &str,
    ) -> Result<Card, CardError> {
        self.change_for_operator(actor, id, Change::Unfreeze, reason)
            .await
    }

    /// Cancels any partner's card for good, for an operator. `reason` is the cancel reason
    /// (`canceled`, `lost` or `stolen`), kept on the card as the HTTP route keeps it; the
    /// status change keeps it too, followed by the operator's `note` when there is one.
    pub async fn cancel_for_operator(
        &self,
        actor: &str,
        id: CardId,
        reason: &str,
        note: Option<&str>,
    ) -> Result<Card, CardError> {
        let why = CancelReason::parse(reason).ok_or_else(|| {
            CardError::validation("reason", "must be `canceled`, `lost` or `stolen`")
        })?;
        let kept = match note {
            Some(note) => {
                let note = reason_text(note).map_err(|_| {
                    CardError::validation("note", "must be 1-500 printable characters")
                })?;
                format!("{}: {note}", why.as_str())
            }
            None => why.as_str().to_owned(),
        };
        self.change_for_operator(actor, id, Change::Cancel(why), &kept)
            .await
    }

    /// The card's partner, then the partner's own change path.
    async fn change_for_operator(
        &self,
        actor: &str,
        id: CardId,
        change: Change,
        reason: &str,
    ) -> Result<Card, CardError> {
        let partner = {
            let mut conn = self.db().conn().await?;
            store::find_card(&mut conn, id.uuid())
                .await?
                .ok_or(CardError::NotFound("card"))?
                .partner_id
        };
        self.change(PartnerId::from_uuid(partner), actor, id, change, reason)
            .await
    }
}
