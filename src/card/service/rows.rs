//! The card rows as the service reads and answers them: views, the stored expiry and
//! controls, the bound context of a sealed number, and the checks of free text.

use crate::card::error::CardError;
use crate::card::model::categories::CategoryTable;
use crate::card::model::controls::{Controls, ControlsRequest};
use crate::card::model::pan::{Bin, Expiry};
use crate::card::store::{self, CardRow};
use crate::kernel::PartnerId;
use crate::kyc::CustomerId;
use crate::platform::db::Tx;
use crate::platform::idempotency::Claim;
use crate::platform::money::Currency;
use crate::wallet::WalletId;
use actix_web::http::StatusCode;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use uuid::Uuid;

use super::{Card, CardId};

/// The card, locked for the transaction; 404 for another partner's.
pub(super) async fn locked(
    tx: &mut Tx<'_>,
    partner: PartnerId,
    id: CardId,
) -> Result<CardRow, CardError> {
    store::lock_card(tx.conn(), id.uuid())
        .await?
        .filter(|r| r.partner_id == partner.uuid())
        .ok_or(CardError::NotFound("card"))
}

/// Stores the answer a retry of this request replays: the card, never its number.
pub(super) async fn complete(
    tx: &mut Tx<'_>,
    claim: Option<&Claim>,
    status: StatusCode,
    card: &Card,
) -> Result<(), CardError> {
    if let Some(claim) = claim {
        let body = serde_json::to_vec(card)
            .map_err(|e| CardError::Internal(anyhow::anyhow!("the stored answer: {e}")))?;
        claim.complete_in(tx, status, &body).await?;
    }
    Ok(())
}

/// The associated data a card's sealed number is bound to: the number of one card never
/// opens as another's.
pub(super) fn pan_context(card: Uuid) -> String {
    format!("card.pan:{card}")
}

pub(super) fn brand_of(bin: &Bin) -> &'static str {
    match bin.as_str().as_bytes().first() {
        Some(b'2' | b'5') => "mastercard",
        _ => "visa",
    }
}

/// The last day a card with `expiry` works: the end of its expiry month.
pub(super) fn last_day(expiry: Expiry) -> NaiveDate {
    // `valid_until` is the first instant after the card's last day.
    (expiry.valid_until() - chrono::Duration::days(1)).date_naive()
}

pub(super) fn expiry_of(row: &CardRow) -> Result<Expiry, CardError> {
    let month = u8::try_from(row.expires_on.month()).unwrap_or(0);
    let year = u16::try_from(row.expires_on.year()).unwrap_or(0);
    Expiry::new(month, year).map_err(|e| CardError::Internal(anyhow::anyhow!("stored expiry: {e}")))
}

/// The typed controls of a stored card (stored as their view, which reads as a request).
pub(super) fn stored_controls(
    row: &CardRow,
    currency: Currency,
    categories: &CategoryTable,
) -> Result<Controls, CardError> {
    let request: ControlsRequest = serde_json::from_value(row.controls.clone())
        .map_err(|e| CardError::Internal(anyhow::anyhow!("stored controls: {e}")))?;
    request
        .validate(currency, categories, "controls")
        .map_err(|e| CardError::Internal(anyhow::anyhow!("stored controls: {e}")))
}

pub(super) fn card_view(row: &CardRow) -> Result<Card, CardError> {
    let expiry = expiry_of(row)?;
    Ok(Card {
        id: CardId::from_uuid(row.id),
        wallet_id: WalletId::from_uuid(row.wallet_id),
        customer_id: CustomerId::from_uuid(row.customer_id),
        kind: row.kind.clone(),
        status: row.status.clone(),
        cancel_reason: row.cancel_reason.clone(),
        cardholder_name: row.cardholder_name.clone(),
        brand: row.brand.clone(),
        last4: row.last4.clone(),
        exp_month: expiry.month(),
        exp_year: expiry.year(),
        currency: row.currency.clone(),
        controls: row.controls.clone(),
        replaces: row.replaces.map(CardId::from_uuid),
        created: row.created_at,
    })
}

/// A name as embossed: 1-26 characters, letters (any script), spaces and `.-'`.
pub(super) fn cardholder_name(raw: &str) -> Result<String, CardError> {
    let name = raw.trim();
    let ok = (1..=26).contains(&name.chars().count())
        && name
            .chars()
            .all(|c| c.is_alphabetic() || matches!(c, ' ' | '.' | '-' | '\''));
    if ok {
        Ok(name.to_owned())
    } else {
        Err(CardError::validation(
            "cardholder_name",
            "must be 1-26 letters, spaces and .-'",
        ))
    }
}

/// A reason as kept with a change: 1-500 printable characters.
pub(super) fn reason_text(raw: &str) -> Result<String, CardError> {
    let reason = raw.trim();
    if reason.is_empty() || reason.chars().count() > 500 || reason.chars().any(char::is_control) {
        return Err(CardError::validation(
            "reason",
            "must be 1-500 printable characters",
        ));
    }
    Ok(reason.to_owned())
}

pub(super) fn now() -> DateTime<Utc> {
    chrono::SubsecRound::trunc_subsecs(Utc::now(), 6)
}
