//! The card service: issuing, the card lifecycle, controls, and reveals of the number.
//!
//! A card's number exists in clear only inside one request: generated and sealed at issuing
//! (and answered once), opened for a reveal (answered once, audited). The idempotent answer a
//! retry replays is stored without it (`pan` and `cvc` left out): a retried issuing answers
//! with the same card, and the number is seen again through a reveal.

use std::sync::Arc;

use actix_web::http::StatusCode;
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::error::CardError;
use super::model::categories::CategoryTable;
use super::model::controls::{Controls, ControlsRequest};
pub use super::model::decision::CancelReason;
use super::model::pan::{Bin, CvcKey, Expiry, PAN_RANDOM_BYTES, Pan};
use super::settings::CardSettings;
use super::store::{self, CardRow, StatusChangeRow, VaultRow};
use crate::kernel::{PartnerId, Principal};
use crate::kyc::{Compliance, CustomerId};
use crate::ledger::{AccountId, BatchWrite, Ledger};
use crate::notify::{NewEvent, Outbox, Template};
use crate::platform::db::{Db, Tx};
use crate::platform::http::pagination::Page;
use crate::platform::idempotency::Claim;
use crate::platform::ids::define_id;
use crate::platform::money::Currency;
use crate::platform::vault::Vault;
use crate::wallet::{WalletId, WalletStatus, Wallets};

mod authorization_views;
mod authorize;
mod lifecycle;
mod metrics;
mod operator;
mod reveal;
mod rows;
mod verify;
mod writer;

pub use metrics::CardMetrics;

use rows::{
    brand_of, card_view, cardholder_name, complete, last_day, locked, now, pan_context,
    reason_text, stored_controls,
};

define_id!(CardId, CardIdKind, "card", "card");

/// Route patterns whose idempotent answer the service stores itself, without the number.
pub const CLAIMING_IN_TRANSACTION: &[&str] = &[
    "/v1/cards",
    "/v1/cards/{id}/replace",
    "/v1/cards/{id}/reveal",
];

/// How many numbers are drawn before giving up on a free one (an 8-digit BIN has 10^7).
const PAN_ATTEMPTS: usize = 8;

/// The body of `POST /v1/cards`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCard {
    /// The wallet the card spends from (`wal_...`).
    pub wallet_id: String,
    /// `virtual` (active at once) or `physical` (inactive until activated).
    #[serde(rename = "type")]
    pub kind: String,
    /// The name embossed on a physical card: 1-26 letters, spaces and `.-'`.
    pub cardholder_name: Option<String>,
    /// The card's spending controls (see `PUT /v1/cards/{id}/controls`).
    #[schema(value_type = Option<Object>)]
    pub controls: Option<ControlsRequest>,
}

/// A card, as every response but issuing and reveal shows it: never its number or CVC.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Card {
    #[schema(value_type = String, example = "card_01h455vb4pex5vsknk084sn02q")]
    pub id: CardId,
    #[schema(value_type = String)]
    pub wallet_id: WalletId,
    #[schema(value_type = String)]
    pub customer_id: CustomerId,
    #[serde(rename = "type")]
    pub kind: String,
    /// `active`, `inactive`, `frozen` or `canceled`.
    pub status: String,
    /// Why a canceled card was canceled: `canceled`, `lost` or `stolen`.
    pub cancel_reason: Option<String>,
    pub cardholder_name: Option<String>,
    pub brand: String,
    pub last4: String,
    pub exp_month: u8,
    pub exp_year: u16,
    pub currency: String,
    pub controls: serde_json::Value,
    /// The card this one replaced.
    #[schema(value_type = Option<String>)]
    pub replaces: Option<CardId>,
    pub created: DateTime<Utc>,
}

/// A card with its number and CVC: the answer of issuing and of a reveal, and nothing else.
#[derive(Clone, Serialize, ToSchema)]
pub struct RevealedCard {
    #[serde(flatten)]
    pub card: Card,
    pub pan: String,
    pub cvc: String,
}

impl std::fmt::Debug for RevealedCard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevealedCard")
            .field("card", &self.card)
            .finish_non_exhaustive()
    }
}

/// How a card's status changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Activate,
    Freeze,
    Unfreeze,
    Cancel(CancelReason),
}

impl Change {
    /// The status after the change from `from`, or why it cannot happen.
    pub fn apply(self, from: &str) -> Result<&'static str, CardError> {
        match (self, from) {
            (_, "canceled") => Err(CardError::Canceled),
            (Self::Activate, "inactive") => Ok("active"),
            (Self::Activate, _) => Err(CardError::WrongState(
                status_word(from),
                "an inactive card can be activated",
            )),
            (Self::Freeze, "active") => Ok("frozen"),
            (Self::Freeze, _) => Err(CardError::WrongState(
                status_word(from),
                "an active card can be frozen",
            )),
            (Self::Unfreeze, "frozen") => Ok("active"),
            (Self::Unfreeze, _) => Err(CardError::WrongState(
                status_word(from),
                "a frozen card can be unfrozen",
            )),
            (Self::Cancel(_), _) => Ok("canceled"),
        }
    }

    fn event(self) -> &'static str {
        match self {
            Self::Activate => "card.activated",
            Self::Freeze => "card.frozen",
            Self::Unfreeze => "card.unfrozen",
            Self::Cancel(_) => "card.canceled",
        }
    }
}

fn status_word(status: &str) -> &'static str {
    match status {
        "active" => "active",
        "inactive" => "inactive",
        "frozen" => "frozen",
        _ => "canceled",
    }
}

/// The other modules' faces cards work through (built by the composition root).
pub struct Collaborators {
    pub ledger: Arc<dyn Ledger>,
    pub wallets: Arc<dyn Wallets>,
    pub kyc: Arc<dyn Compliance>,
    pub outbox: Arc<dyn Outbox>,
}

/// Cards. Cheap to clone.
#[derive(Clone)]
pub struct CardService {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    ledger: Arc<dyn Ledger>,
    /// Writes the authorizations of each ledger batch together.
    writer: Arc<dyn BatchWrite>,
    /// The card network settlement accounts of each currency and shard, once known.
    settlement: std::sync::Mutex<std::collections::HashMap<(&'static str, i16), AccountId>>,
    metrics: Option<CardMetrics>,
    wallets: Arc<dyn Wallets>,
    kyc: Arc<dyn Compliance>,
    outbox: Arc<dyn Outbox>,
    vault: Vault,
    cvc: CvcKey,
    bin: Bin,
    categories: &'static CategoryTable,
    settings: CardSettings,
    decisions: super::partner::DecisionEndpoints,
}

impl CardService {
    /// Builds the service from validated settings.
    pub fn new(
        db: Db,
        settings: &CardSettings,
        collaborators: Collaborators,
        metrics: Option<CardMetrics>,
        webhooks: &crate::notify::WebhookSettings,
    ) -> Result<CardService, CardError> {
        let Collaborators {
            ledger,
            wallets,
            kyc,
            outbox,
        } = collaborators;
        let internal = |what: &str, e: String| CardError::Internal(anyhow::anyhow!("{what}: {e}"));
        let vault = Vault::new(
            &settings.encryption_key_id,
            &settings.encryption_keys,
            settings.hash_key.expose_secret().as_bytes(),
        )?;
        let cvc = CvcKey::new(settings.cvc_key.expose_secret().as_bytes())
            .map_err(|e| internal("cards.cvc_key", e.to_string()))?;
        let bin = Bin::parse(&settings.bin).map_err(|e| internal("cards.bin", e.to_string()))?;
        let categories = CategoryTable::shipped()
            .map_err(|e| internal("the merchant category table", e.to_string()))?;
        // The partners' decision endpoints: their secrets sealed by the card vault, their URLs
        // held to the webhook rules.
        let decisions = super::partner::DecisionEndpoints::new(
            db.clone(),
            vault.clone(),
            settings.decision_timeout,
            webhooks.require_https,
            webhooks.allow_private_targets,
        )?;
        Ok(CardService {
            inner: Arc::new(Inner {
                db,
                ledger,
                writer: Arc::new(writer::HoldWriter {
                    kyc: kyc.clone(),
                    outbox: outbox.clone(),
                }),
                settlement: std::sync::Mutex::new(std::collections::HashMap::new()),
                metrics,
                wallets,
                kyc,
                outbox,
                vault,
                cvc,
                bin,
                categories,
                settings: settings.clone(),
                decisions,
            }),
        })
    }

    /// The partners' real-time decision endpoints: the authorization path asks them with
    /// `decisions().ask(partner, &request)`.
    pub fn decisions(&self) -> &super::partner::DecisionEndpoints {
        &self.inner.decisions
    }

    fn db(&self) -> &Db {
        &self.inner.db
    }

    /// Whether the card network simulator's routes answer (`cards.simulator.enabled`).
    pub fn simulator_enabled(&self) -> bool {
        self.inner.settings.simulator_enabled
    }

    /// Issues a card on a wallet of `partner`: the customer's tier must allow cards in the
    /// wallet's currency. A virtual card is active at once, a physical one inactive until
    /// activated. `card.created` and the customer's email go out with the commit.
    pub async fn issue(
        &self,
        partner: PartnerId,
        actor: &str,
        input: NewCard,
        claim: Option<Claim>,
    ) -> Result<RevealedCard, CardError> {
        let wallet_id: WalletId = input
            .wallet_id
            .trim()
            .parse()
            .map_err(|_| CardError::validation("wallet_id", "is not a wallet id (wal_...)"))?;
        let kind = match input.kind.as_str() {
            "virtual" => "virtual",
            "physical" => "physical",
            _ => {
                return Err(CardError::validation(
                    "type",
                    "must be `virtual` or `physical`",
                ));
            }
        };
        let name = input
            .cardholder_name
            .as_deref()
            .map(cardholder_name)
            .transpose()?;
        let wallet = self.inner.wallets.wallet_ref(partner, wallet_id).await?;
        match wallet.status {
            WalletStatus::Active => {}
            WalletStatus::Closed => return Err(CardError::WalletClosed),
            WalletStatus::Frozen => {
                return Err(crate::wallet::WalletError::Frozen("the wallet is frozen").into());
            }
        }
        let controls = match &input.controls {
            Some(c) => c.validate(wallet.currency, self.inner.categories, "controls")?,
            None => Controls::default(),
        };
        let issued = self
            .new_card(
                partner,
                wallet_id,
                wallet.customer_id,
                wallet.currency,
                kind,
                name,
                &controls,
                None,
            )
            .await?;
        let this = self.clone();
        let (row, vault) = (issued.row.clone(), issued.vault.clone());
        let answer = issued.answer.clone();
        let actor = actor.to_owned();
        self.db()
            .in_tx(|tx| {
                let (this, row, vault, claim) =
                    (this.clone(), row.clone(), vault.clone(), claim.clone());
                let (answer, actor) = (answer.clone(), actor.clone());
                Box::pin(async move {
                    this.inner
                        .kyc
                        .allow_cards(
                            tx,
                            partner,
                            CustomerId::from_uuid(row.customer_id),
                            wallet.currency,
                        )
                        .await?;
                    this.insert_card(tx, &row, &vault, &actor, "issued").await?;
                    this.announce(tx, partner, "card.created", &answer.card)
                        .await?;
                    this.email_issued(tx, partner, &answer.card).await?;
                    complete(tx, claim.as_ref(), StatusCode::CREATED, &answer.card).await?;
                    Ok::<_, CardError>(())
                })
            })
            .await?;
        Ok(issued.answer)
    }

    /// A new card's rows and its one-time answer (not yet stored): a number from the BIN no
    /// other card has, sealed for this card's id, and its CVC.
    #[expect(
        clippy::too_many_arguments,
        reason = "a card's facts, each needed once"
    )]
    async fn new_card(
        &self,
        partner: PartnerId,
        wallet: WalletId,
        customer: CustomerId,
        currency: Currency,
        kind: &'static str,
        name: Option<String>,
        controls: &Controls,
        replaces: Option<CardId>,
    ) -> Result<Issued, CardError> {
        let now = now();
        let id = CardId::new();
        let expiry = Expiry::after(now, self.inner.settings.validity_months)
            .map_err(|e| CardError::Internal(anyhow::anyhow!("card expiry: {e}")))?;
        let (pan, hash) = self.free_number().await?;
        let cvc = self.inner.cvc.derive(&pan, expiry);
        let status = if kind == "virtual" {
            "active"
        } else {
            "inactive"
        };
        let view = serde_json::to_value(controls.view())
            .map_err(|e| CardError::Internal(anyhow::anyhow!("controls view: {e}")))?;
        let row = CardRow {
            id: id.uuid(),
            partner_id: partner.uuid(),
            wallet_id: wallet.uuid(),
            customer_id: customer.uuid(),
            currency: currency.code().to_owned(),
            kind: kind.to_owned(),
            status: status.to_owned(),
            cancel_reason: None,
            cardholder_name: name,
            brand: brand_of(&self.inner.bin).to_owned(),
            last4: pan.last4().to_owned(),
            expires_on: last_day(expiry),
            controls: view,
            replaces: replaces.map(|r| r.uuid()),
            created_at: now,
            updated_at: now,
        };
        let vault = VaultRow {
            card_id: id.uuid(),
            pan_enc: self
                .inner
                .vault
                .seal(&pan_context(id.uuid()), pan.expose())?,
            pan_hash: hash,
            created_at: now,
        };
        let answer = RevealedCard {
            card: card_view(&row)?,
            pan: pan.expose().to_owned(),
            cvc: cvc.expose().to_owned(),
        };
        Ok(Issued { row, vault, answer })
    }

    /// A number no card has yet, with its lookup hash.
    async fn free_number(&self) -> Result<(Pan, Vec<u8>), CardError> {
        let mut conn = self.db().conn().await?;
        for _ in 0..PAN_ATTEMPTS {
            let mut random = [0u8; PAN_RANDOM_BYTES];
            getrandom::fill(&mut random)
                .map_err(|e| CardError::Internal(anyhow::anyhow!("the random generator: {e}")))?;
            let pan = Pan::generate(&self.inner.bin, &random);
            let hash = self.pan_hash(&pan);
            if store::find_by_pan_hash(&mut conn, &hash).await?.is_none() {
                return Ok((pan, hash));
            }
        }
        Err(CardError::Internal(anyhow::anyhow!(
            "no free card number after {PAN_ATTEMPTS} draws: the BIN's range is nearly full"
        )))
    }

    fn pan_hash(&self, pan: &Pan) -> Vec<u8> {
        self.inner.vault.hash("pan", pan.expose())
    }

    async fn insert_card(
        &self,
        tx: &mut Tx<'_>,
        row: &CardRow,
        vault: &VaultRow,
        actor: &str,
        reason: &str,
    ) -> Result<(), CardError> {
        store::insert_card(tx.conn(), row).await?;
        store::insert_vault(tx.conn(), vault).await?;
        store::insert_status_change(
            tx.conn(),
            &StatusChangeRow {
                card_id: row.id,
                from_status: None,
                to_status: &row.status,
                reason,
                actor,
                created_at: row.created_at,
            },
        )
        .await?;
        Ok(())
    }

    async fn announce(
        &self,
        tx: &mut Tx<'_>,
        partner: PartnerId,
        event: &str,
        card: &Card,
    ) -> Result<(), CardError> {
        let data = serde_json::to_value(card)
            .map_err(|e| CardError::Internal(anyhow::anyhow!("event data: {e}")))?;
        self.inner
            .outbox
            .record_event(
                tx,
                NewEvent {
                    partner_id: Some(partner),
                    event_type: event.to_owned(),
                    data,
                },
            )
            .await?;
        Ok(())
    }

    async fn email_issued(
        &self,
        tx: &mut Tx<'_>,
        partner: PartnerId,
        card: &Card,
    ) -> Result<(), CardError> {
        let template = Template::CardIssued {
            card_last4: card.last4.clone(),
            card_type: card.kind.clone(),
            expiry: format!("{:02}/{:02}", card.exp_month, card.exp_year % 100),
        };
        self.inner
            .kyc
            .email_customer(tx, partner, card.customer_id, template)
            .await?;
        Ok(())
    }

    /// A card of `partner` (404 for another partner's).
    pub async fn card(&self, partner: PartnerId, id: CardId) -> Result<Card, CardError> {
        let mut conn = self.db().conn().await?;
        let row = store::find_card(&mut conn, id.uuid())
            .await?
            .filter(|r| r.partner_id == partner.uuid())
            .ok_or(CardError::NotFound("card"))?;
        card_view(&row)
    }

    /// The partner's cards, newest first, optionally of one wallet and in one status.
    pub async fn list(
        &self,
        principal: &Principal,
        wallet: Option<WalletId>,
        status: Option<&str>,
        limit: u32,
        cursor: Option<CardId>,
    ) -> Result<Page<Card>, CardError> {
        let Some(partner) = principal.partner_id else {
            return Ok(Page::from_rows(Vec::new(), limit, |c: &Card| {
                c.id.to_string()
            }));
        };
        if let Some(s) = status
            && !["active", "inactive", "frozen", "canceled"].contains(&s)
        {
            return Err(CardError::validation(
                "status",
                "must be active, inactive, frozen or canceled",
            ));
        }
        let mut conn = self.db().conn().await?;
        let rows = store::list_cards(
            &mut conn,
            partner.uuid(),
            wallet.map(|w| w.uuid()),
            status,
            cursor.map(|c| c.uuid()),
            i64::from(limit) + 1,
        )
        .await?;
        let cards = rows.iter().map(card_view).collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_rows(cards, limit, |c: &Card| c.id.to_string()))
    }

    /// Activates, freezes, unfreezes or cancels a card, keeping who and why, with its event.
    pub async fn change(
        &self,
        partner: PartnerId,
        actor: &str,
        id: CardId,
        change: Change,
        reason: &str,
    ) -> Result<Card, CardError> {
        let reason = reason_text(reason)?;
        let this = self.clone();
        let actor = actor.to_owned();
        self.db()
            .in_tx(|tx| {
                let (this, actor, reason) = (this.clone(), actor.clone(), reason.clone());
                Box::pin(async move {
                    this.change_in(tx, partner, &actor, id, change, &reason)
                        .await
                })
            })
            .await
    }

    async fn change_in(
        &self,
        tx: &mut Tx<'_>,
        partner: PartnerId,
        actor: &str,
        id: CardId,
        change: Change,
        reason: &str,
    ) -> Result<Card, CardError> {
        let mut row = locked(tx, partner, id).await?;
        let to = change.apply(&row.status)?;
        let cancel_reason = match change {
            Change::Cancel(why) => Some(why.as_str()),
            _ => None,
        };
        let now = now();
        store::set_status(tx.conn(), row.id, to, cancel_reason, now).await?;
        store::insert_status_change(
            tx.conn(),
            &StatusChangeRow {
                card_id: row.id,
                from_status: Some(&row.status),
                to_status: to,
                reason,
                actor,
                created_at: now,
            },
        )
        .await?;
        row.status = to.to_owned();
        row.cancel_reason = cancel_reason.map(str::to_owned);
        row.updated_at = now;
        let card = card_view(&row)?;
        self.announce(tx, partner, change.event(), &card).await?;
        Ok(card)
    }

    /// Replaces a card: a new number on the same wallet with the same controls, and the old
    /// card canceled, in one transaction (`card.replaced`, then the new card's `card.created`).
    pub async fn replace(
        &self,
        partner: PartnerId,
        actor: &str,
        id: CardId,
        reason: CancelReason,
        claim: Option<Claim>,
    ) -> Result<RevealedCard, CardError> {
        let old = {
            let mut conn = self.db().conn().await?;
            store::find_card(&mut conn, id.uuid())
                .await?
                .filter(|r| r.partner_id == partner.uuid())
                .ok_or(CardError::NotFound("card"))?
        };
        if old.status == "canceled" {
            return Err(CardError::Canceled);
        }
        let currency = Currency::parse(&old.currency)
            .map_err(|e| CardError::Internal(anyhow::anyhow!("stored currency: {e}")))?;
        let controls = stored_controls(&old, currency, self.inner.categories)?;
        let kind = if old.kind == "physical" {
            "physical"
        } else {
            "virtual"
        };
        let issued = self
            .new_card(
                partner,
                WalletId::from_uuid(old.wallet_id),
                CustomerId::from_uuid(old.customer_id),
                currency,
                kind,
                old.cardholder_name.clone(),
                &controls,
                Some(id),
            )
            .await?;
        let this = self.clone();
        let actor = actor.to_owned();
        let (row, vault, answer) = (
            issued.row.clone(),
            issued.vault.clone(),
            issued.answer.clone(),
        );
        self.db()
            .in_tx(|tx| {
                let (this, actor, claim) = (this.clone(), actor.clone(), claim.clone());
                let (row, vault, answer) = (row.clone(), vault.clone(), answer.clone());
                Box::pin(async move {
                    let old = this
                        .change_in(tx, partner, &actor, id, Change::Cancel(reason), "replaced")
                        .await?;
                    this.insert_card(tx, &row, &vault, &actor, "replacement")
                        .await?;
                    let data = json!({ "card": old, "replacement": answer.card });
                    this.inner
                        .outbox
                        .record_event(
                            tx,
                            NewEvent {
                                partner_id: Some(partner),
                                event_type: "card.replaced".to_owned(),
                                data,
                            },
                        )
                        .await?;
                    this.announce(tx, partner, "card.created", &answer.card)
                        .await?;
                    this.email_issued(tx, partner, &answer.card).await?;
                    complete(tx, claim.as_ref(), StatusCode::CREATED, &answer.card).await?;
                    Ok::<_, CardError>(())
                })
            })
            .await?;
        Ok(issued.answer)
    }

    /// Replaces a card's controls.
    pub async fn set_controls(
        &self,
        partner: PartnerId,
        actor: &str,
        id: CardId,
        request: ControlsRequest,
    ) -> Result<Card, CardError> {
        let this = self.clone();
        let actor = actor.to_owned();
        let request = Arc::new(request);
        self.db()
            .in_tx(|tx| {
                let (this, actor, request) = (this.clone(), actor.clone(), request.clone());
                Box::pin(async move {
                    let mut row = locked(tx, partner, id).await?;
                    if row.status == "canceled" {
                        return Err(CardError::Canceled);
                    }
                    let currency = Currency::parse(&row.currency).map_err(|e| {
                        CardError::Internal(anyhow::anyhow!("stored currency: {e}"))
                    })?;
                    let controls = request.validate(currency, this.inner.categories, "")?;
                    let view = serde_json::to_value(controls.view())
                        .map_err(|e| CardError::Internal(anyhow::anyhow!("controls view: {e}")))?;
                    let now = now();
                    store::set_controls(tx.conn(), row.id, &view, now).await?;
                    store::insert_status_change(
                        tx.conn(),
                        &StatusChangeRow {
                            card_id: row.id,
                            from_status: Some(&row.status),
                            to_status: &row.status,
                            reason: "controls changed",
                            actor: &actor,
                            created_at: now,
                        },
                    )
                    .await?;
                    row.controls = view;
                    row.updated_at = now;
                    let card = card_view(&row)?;
                    this.announce(tx, partner, "card.updated", &card).await?;
                    Ok(card)
                })
            })
            .await
    }
}

/// What issuing a card will store and answer.
struct Issued {
    row: CardRow,
    vault: VaultRow,
    answer: RevealedCard,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_changes_follow_the_lifecycle_and_canceling_is_final() {
        assert_eq!(Change::Activate.apply("inactive").unwrap(), "active");
        assert_eq!(Change::Freeze.apply("active").unwrap(), "frozen");
        assert_eq!(Change::Unfreeze.apply("frozen").unwrap(), "active");
        for from in ["active", "inactive", "frozen"] {
            assert_eq!(
                Change::Cancel(CancelReason::Lost).apply(from).unwrap(),
                "canceled"
            );
        }
        for change in [
            Change::Activate,
            Change::Freeze,
            Change::Unfreeze,
            Change::Cancel(CancelReason::Stolen),
        ] {
            assert!(matches!(change.apply("canceled"), Err(CardError::Canceled)));
        }
        assert!(matches!(
            Change::Activate.apply("active"),
            Err(CardError::WrongState(..))
        ));
        assert!(matches!(
            Change::Freeze.apply("inactive"),
            Err(CardError::WrongState(..))
        ));
        assert!(matches!(
            Change::Unfreeze.apply("active"),
            Err(CardError::WrongState(..))
        ));
    }

    #[test]
    fn names_and_reasons_are_checked_before_anything_is_stored() {
        assert_eq!(cardholder_name(" Ada Lovelace ").unwrap(), "Ada Lovelace");
        assert_eq!(
            cardholder_name("Zoë O'Brien-Núñez").unwrap(),
            "Zoë O'Brien-Núñez"
        );
        for bad in [
            "",
            "   ",
            "A\0B",
            "Robert'); DROP",
            "x".repeat(27).as_str(),
            "4242",
        ] {
            assert!(cardholder_name(bad).is_err(), "{bad:?}");
        }
        assert!(reason_text("lost at the airport").is_ok());
        for bad in ["", "a\nb", "nul\0", "r".repeat(501).as_str()] {
            assert!(reason_text(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_card_number_is_bound_to_its_card() {
        let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
        assert_ne!(pan_context(a), pan_context(b));
    }
}
