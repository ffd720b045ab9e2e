//! Authorizations: the decision ladder on facts read for the card, then, on an approval, the
//! hold: a pending ledger transfer from the wallet to the card network settlement account,
//! posted through the engine with the authorization row, the limit counters, the customer's
//! tier limits and the event attached (`writer`), so they commit together or not at all.
//!
//! Funds are the ledger's to decide, atomically with the hold. The card's limits and the
//! customer's tier limits are checked again under the card's and the customer's locks in the
//! posting's transaction: the counters read for the ladder may be stale by then (another
//! replica approved in between), and a limit crossed there refuses the hold, which goes back
//! through the ladder on fresh counters and is recorded as that decline.

use std::time::Instant;

use chrono::{DateTime, Duration as Span, Utc};
use serde_json::json;

use super::writer::{HoldAttached, card_lock_key};
use super::{CardService, now};
use crate::card::error::CardError;
use crate::card::model::decision::{
    self, CardFacts, CardState, CategorySpend, DeclineCode, Facts, PartnerDecision, RiskVerdict,
    TierLimits,
};
use crate::card::model::pan::Expiry;
use crate::card::model::spend::Counters;
use crate::card::network::{Authorization, AuthorizationId, AuthorizationRequest};
use crate::card::store::{self, AuthorizationRow, CardRow};
use crate::kernel::PartnerId;
use crate::kyc::{CustomerId, limit_lock_key};
use crate::ledger::{
    AccountId, Attachment, LedgerError, NewTransfer, ResultCode, Scope, TransferId,
};
use crate::platform::money::Money;
use crate::wallet::{WalletId, WalletRef};

/// Ledger transfer code of card holds (and their captures, increments and reversals).
pub const HOLD_CODE: i32 = 610;
/// Ledger transfer code of merchant refunds to a card's wallet.
pub const REFUND_CODE: i32 = 611;
/// Ledger transfer code of an over-capture's excess.
pub const EXCESS_CODE: i32 = 612;

/// How many times an approval refused under the locks (the counters moved) goes back through
/// the ladder before it is declined as it stands.
const ATTEMPTS: usize = 3;

/// Names transfer ids derived from network ids (so a repeated message posts nothing twice).
const NETWORK_IDS: uuid::Uuid = uuid::Uuid::from_u128(0x6361_7264_5f6e_6574_776f_726b_5f69_6473);

/// The transfer id for `kind` of the message with network id `network_id` of `partner`:
/// derived, so the same message moves money once; fresh when the network gave no id.
pub(super) fn network_transfer_id(
    partner: PartnerId,
    kind: &str,
    network_id: Option<&str>,
) -> TransferId {
    match network_id {
        Some(id) => {
            let name = format!("{}/{kind}/{id}", partner.uuid());
            TransferId::from_uuid(uuid::Uuid::new_v5(&NETWORK_IDS, name.as_bytes()))
        }
        None => TransferId::new(),
    }
}

/// What the service read about the card a PAN names.
pub(super) struct Found {
    pub(super) row: CardRow,
    pub(super) wallet: WalletRef,
    pub(super) expiry: Expiry,
    /// The card's limit counters as first read (a retry reads them again).
    pub(super) counters: Option<Counters>,
}

/// Why a hold's attached write refused it: the limits moved since the ladder read them.
#[derive(Debug, thiserror::Error)]
pub(super) enum LimitRace {
    #[error("the card's limits would be exceeded")]
    Card,
    #[error("the customer's tier limits would be exceeded")]
    Tier,
}

impl CardService {
    /// Decides an authorization and, on an approval, places its hold. A repeated network id
    /// answers with the authorization it first made.
    pub async fn authorize(
        &self,
        partner: PartnerId,
        request: AuthorizationRequest,
    ) -> Result<Authorization, CardError> {
        let started = Instant::now();
        let result = self.authorize_inner(partner, request).await;
        if let Some(m) = &self.inner.metrics {
            m.observe(&result, started.elapsed());
        }
        result
    }

    async fn authorize_inner(
        &self,
        partner: PartnerId,
        request: AuthorizationRequest,
    ) -> Result<Authorization, CardError> {
        if let Some(id) = &request.network_transaction_id
            && let Some(first) = self.by_network_id(partner, id).await?
        {
            return self.authorization_view(first, false).await;
        }
        let hash = self.pan_hash(&request.pan);
        let card = {
            let mut conn = self.db().conn().await?;
            store::card_by_pan_hash_with_counters(&mut conn, &hash)
                .await?
                .filter(|(c, _)| c.partner_id == partner.uuid())
        };
        let found = match card {
            None => None,
            Some((row, counters)) => {
                let wallet = self
                    .inner
                    .wallets
                    .wallet_ref(partner, WalletId::from_uuid(row.wallet_id))
                    .await?;
                let expiry = super::rows::expiry_of(&row)?;
                Some(Found {
                    row,
                    wallet,
                    expiry,
                    counters,
                })
            }
        };
        let mut tier_exceeded = false;
        for attempt in 0..ATTEMPTS {
            let at = now();
            let decision = self
                .decide(
                    partner,
                    &request,
                    found.as_ref(),
                    tier_exceeded,
                    attempt == 0,
                    at,
                )
                .await?;
            let Some(found) = found.as_ref().filter(|_| decision.approved) else {
                return self
                    .record_declined(partner, &request, found.as_ref(), decision, at)
                    .await;
            };
            match self.hold(partner, &request, found, decision, at).await {
                Ok(answer) => return Ok(answer),
                Err(Held::Race(LimitRace::Card)) => continue,
                Err(Held::Race(LimitRace::Tier)) => tier_exceeded = true,
                Err(Held::Failed(e)) => return Err(e),
            }
        }
        // Still refused on fresh counters: decline as the ladder now sees it (or as a limit,
        // when the counters keep moving under it).
        let at = now();
        let decision = self
            .decide(partner, &request, found.as_ref(), true, false, at)
            .await?;
        self.record_declined(partner, &request, found.as_ref(), decision, at)
            .await
    }

    /// The ladder on what is known now, and the partner's word when the ladder approves.
    async fn decide(
        &self,
        partner: PartnerId,
        request: &AuthorizationRequest,
        found: Option<&Found>,
        tier_exceeded: bool,
        first_read: bool,
        at: DateTime<Utc>,
    ) -> Result<decision::Decision, CardError> {
        let controls = found.map(|f| {
            super::rows::stored_controls(&f.row, f.wallet.currency, self.inner.categories)
        });
        let controls = controls.transpose()?;
        let card = match (found, controls.as_ref()) {
            (Some(f), Some(controls)) => {
                let counters = if first_read {
                    f.counters
                } else {
                    let mut conn = self.db().conn().await?;
                    store::counters(&mut conn, &[f.row.id])
                        .await?
                        .into_iter()
                        .next()
                        .map(|(_, c)| c)
                };
                let spend = counters
                    .unwrap_or_else(|| Counters::empty(at))
                    .spend(f.wallet.currency, at);
                let limited: Vec<(&str, &crate::card::model::controls::Limits)> =
                    controls.category_limits_for(request.merchant.mcc).collect();
                let category_spend = if limited.is_empty() {
                    Vec::new()
                } else {
                    let keys: Vec<store::CategoryKey> = limited
                        .iter()
                        .map(|(name, _)| (f.row.id, (*name).to_owned()))
                        .collect();
                    let stored = {
                        let mut conn = self.db().conn().await?;
                        store::category_counters(&mut conn, &keys).await?
                    };
                    limited
                        .into_iter()
                        .map(|(name, limits)| CategorySpend {
                            name,
                            limits,
                            spend: stored
                                .iter()
                                .find(|((_, n), _)| n == name)
                                .map_or_else(|| Counters::empty(at), |(_, c)| *c)
                                .spend(f.wallet.currency, at),
                        })
                        .collect()
                };
                Some(CardFacts {
                    expiry: f.expiry.check(request.exp_month, request.exp_year, at),
                    cvc: self
                        .inner
                        .cvc
                        .check(&request.pan, f.expiry, request.cvc.as_deref()),
                    state: card_state(&f.row)?,
                    wallet_status: f.wallet.status,
                    wallet_freeze: f.wallet.freeze_mode,
                    kyc_allows_cards: self.kyc_allows_cards(partner, f).await?,
                    controls,
                    currency: f.wallet.currency,
                    spend,
                    category_spend,
                    tier_limits: if tier_exceeded {
                        TierLimits::Exceeded
                    } else {
                        TierLimits::Within
                    },
                    risk: RiskVerdict::Allow,
                })
            }
            _ => None,
        };
        let facts = Facts {
            card,
            amount: request.amount,
            merchant: request.merchant,
        };
        let trail = match decision::pre_partner(&facts) {
            Ok(trail) => trail,
            Err(declined) => return Ok(declined),
        };
        let asked = match found {
            Some(f) => self.ask_partner(partner, request, f, &trail).await,
            None => PartnerDecision::NotAsked,
        };
        Ok(decision::with_partner(trail, asked))
    }

    /// The partner's real-time decision on an authorization that passed every rule of
    /// Flowlet's own (`NotAsked` when it registered no decision endpoint). Never the number.
    async fn ask_partner(
        &self,
        partner: PartnerId,
        request: &AuthorizationRequest,
        found: &Found,
        trail: &decision::Trail,
    ) -> PartnerDecision {
        let body = json!({
            "card_id": super::CardId::from_uuid(found.row.id),
            "wallet_id": found.wallet.id,
            "customer_id": found.wallet.customer_id,
            "amount": request.amount.format_amount(),
            "currency": request.amount.currency().code(),
            "merchant": {
                "name": request.merchant_name,
                "mcc": format!("{:04}", request.merchant.mcc.code()),
                "country": request.merchant.country.to_string(),
            },
            "network_transaction_id": request.network_transaction_id,
            "trail": trail.steps(),
        });
        self.inner.decisions.ask(partner, &body).await
    }

    async fn kyc_allows_cards(&self, partner: PartnerId, found: &Found) -> Result<bool, CardError> {
        let customer = CustomerId::from_uuid(found.row.customer_id);
        Ok(self
            .inner
            .kyc
            .cards_allowed(partner, customer, found.wallet.currency)
            .await?)
    }

    /// Places the hold of an approved authorization, its row and everything else attached.
    async fn hold(
        &self,
        partner: PartnerId,
        request: &AuthorizationRequest,
        found: &Found,
        decision: decision::Decision,
        at: DateTime<Utc>,
    ) -> Result<Authorization, Held> {
        let currency = found.wallet.currency;
        let settlement = self
            .settlement_account(currency, found.row.id)
            .await
            .map_err(Held::Failed)?;
        let id = AuthorizationId::new();
        let ntid = request.network_transaction_id.as_deref();
        let hold_id = match ntid {
            Some(_) => network_transfer_id(partner, "authorization", ntid),
            None => TransferId::from_uuid(id.uuid()),
        };
        let hold_secs = self.inner.settings.hold_expiry.as_secs();
        let expires_at = at + Span::seconds(i64::try_from(hold_secs).unwrap_or(i64::MAX / 2));
        let mut transfer = NewTransfer::pending(
            hold_id,
            found.wallet.account_id,
            settlement,
            request.amount,
            HOLD_CODE,
        )
        .with_metadata(json!({
            "type": "card_authorization",
            "card_id": super::CardId::from_uuid(found.row.id),
            "card_authorization_id": id,
            "description": request.merchant_name,
        }));
        // The ledger's own timeout voids a hold nobody captured, should the card module's
        // expiry not have come first (see `lifecycle`).
        transfer.timeout_secs = Some(u32::try_from(hold_secs).unwrap_or(u32::MAX));
        let approved = decision.clone().with_funds(true);
        let declined = decision.with_funds(false);
        let row = authorization_row(
            id,
            partner,
            request,
            Some(found),
            &approved,
            Some((hold_id, expires_at)),
            at,
        )
        .map_err(Held::Failed)?;
        let declined_row =
            authorization_row(id, partner, request, Some(found), &declined, None, at)
                .map_err(Held::Failed)?;
        let customer = CustomerId::from_uuid(found.row.customer_id);
        let written = row.clone();
        let attached = HoldAttached {
            partner,
            customer,
            controls: super::rows::stored_controls(&found.row, currency, self.inner.categories)
                .map_err(Held::Failed)?,
            amount: request.amount,
            mcc: request.merchant.mcc,
            row,
            declined_row,
        };
        let locks = vec![card_lock_key(found.row.id), limit_lock_key(customer)];
        let posted = self
            .inner
            .ledger
            .post_attached(
                Scope::System,
                vec![transfer],
                locks,
                Attachment::Batched(self.inner.writer.clone(), Box::new(attached)),
            )
            .await;
        let outcomes = match posted {
            Ok(outcomes) => outcomes,
            Err(e) => {
                return Err(match race_of(e) {
                    Ok(race) => Held::Race(race),
                    Err(e) => Held::Failed(e),
                });
            }
        };
        let code = outcomes.first().map_or(ResultCode::Ok, |o| o.code);
        if code == ResultCode::Ok {
            // Exactly the row the posting's transaction wrote.
            return super::authorization_views::view(&written, None).map_err(Held::Failed);
        }
        let stored = match (code, ntid) {
            // The same network message, posted by a request racing with this one.
            (ResultCode::Exists | ResultCode::ExistsWithDifferentFields, Some(ntid)) => {
                self.by_network_id(partner, ntid).await
            }
            _ => self.authorization_row(partner, id.uuid()).await,
        }
        .map_err(Held::Failed)?;
        match stored {
            Some(row) => self
                .authorization_view(row, false)
                .await
                .map_err(Held::Failed),
            None => Err(Held::Failed(CardError::Internal(anyhow::anyhow!(
                "the hold's transfer answered {code} and no authorization was recorded"
            )))),
        }
    }

    /// Records a declined authorization (nothing held) with its event.
    async fn record_declined(
        &self,
        partner: PartnerId,
        request: &AuthorizationRequest,
        found: Option<&Found>,
        decision: decision::Decision,
        at: DateTime<Utc>,
    ) -> Result<Authorization, CardError> {
        let id = AuthorizationId::new();
        let row = authorization_row(id, partner, request, found, &decision, None, at)?;
        let view = super::authorization_views::view(&row, None)?;
        let data = serde_json::to_value(&view)
            .map_err(|e| CardError::Internal(anyhow::anyhow!("event data: {e}")))?;
        let outbox = self.inner.outbox.clone();
        let inserted = self
            .db()
            .in_tx(|tx| {
                let (row, data, outbox) = (row.clone(), data.clone(), outbox.clone());
                Box::pin(async move {
                    let inserted = store::insert_authorizations(tx.conn(), &[row]).await?;
                    if inserted == 1 {
                        outbox
                            .record_event(
                                tx,
                                crate::notify::NewEvent {
                                    partner_id: Some(partner),
                                    event_type: "card.authorization.declined".into(),
                                    data,
                                },
                            )
                            .await?;
                    }
                    Ok::<_, CardError>(inserted)
                })
            })
            .await?;
        if inserted == 0
            && let Some(ntid) = &request.network_transaction_id
            && let Some(first) = self.by_network_id(partner, ntid).await?
        {
            return self.authorization_view(first, false).await;
        }
        Ok(view)
    }

    pub(super) async fn by_network_id(
        &self,
        partner: PartnerId,
        network_id: &str,
    ) -> Result<Option<AuthorizationRow>, CardError> {
        let mut conn = self.db().conn().await?;
        Ok(store::authorization_by_network_id(&mut conn, partner.uuid(), network_id).await?)
    }

    pub(super) async fn authorization_row(
        &self,
        partner: PartnerId,
        id: uuid::Uuid,
    ) -> Result<Option<AuthorizationRow>, CardError> {
        let mut conn = self.db().conn().await?;
        Ok(store::find_authorization(&mut conn, partner.uuid(), id).await?)
    }

    /// The card network settlement account of `currency` that `card`'s money moves through
    /// (its shard), made on first use.
    pub(super) async fn settlement_account(
        &self,
        currency: crate::platform::money::Currency,
        card: uuid::Uuid,
    ) -> Result<AccountId, CardError> {
        let code = currency.code();
        let shard = settlement_shard(card);
        if let Ok(known) = self.inner.settlement.lock()
            && let Some(id) = known.get(&(code, shard))
        {
            return Ok(*id);
        }
        let ledger = self.inner.ledger.clone();
        let id = self
            .db()
            .in_tx(|tx| {
                let ledger = ledger.clone();
                Box::pin(async move {
                    tx.advisory_lock(crate::platform::db::LockKey::named(
                        super::writer::SETTLEMENT_ACCOUNTS,
                        code,
                    ))
                    .await?;
                    if let Some(id) = store::settlement_account(tx.conn(), code, shard).await? {
                        return Ok(AccountId::from_uuid(id));
                    }
                    let id = AccountId::new();
                    ledger
                        .create_accounts_in(
                            tx,
                            Scope::System,
                            vec![crate::ledger::NewAccount {
                                id: Some(id),
                                currency,
                                code: SETTLEMENT_ACCOUNT_CODE,
                                flags: crate::ledger::AccountFlags::HISTORY,
                                metadata: Some(
                                    json!({ "card_network": "settlement", "shard": shard }),
                                ),
                            }],
                        )
                        .await?;
                    store::insert_settlement_account(tx.conn(), code, shard, id.uuid(), now())
                        .await?;
                    Ok::<_, CardError>(id)
                })
            })
            .await?;
        if let Ok(mut known) = self.inner.settlement.lock() {
            known.insert((code, shard), id);
        }
        Ok(id)
    }
}

/// How many settlement accounts each currency has: holds of cards in different shards
/// credit different accounts, so the posting engine runs their batches side by side (it
/// never runs two batches touching one account at once).
pub const SETTLEMENT_SHARDS: u8 = 16;

/// The settlement shard of `card`: fixed for the card's life (its holds, captures,
/// reversals and refunds all use it).
pub(super) fn settlement_shard(card: uuid::Uuid) -> i16 {
    i16::from(card.as_bytes()[15] % SETTLEMENT_SHARDS)
}

/// Whether the posting failed because an attached write found the limits moved (`Ok`), or
/// the error that failed it, unwrapped from the attached write where it came from one.
pub(super) fn race_of(e: LedgerError) -> Result<LimitRace, CardError> {
    let LedgerError::SideWrite(side) = e else {
        return Err(e.into());
    };
    let side = match side.0.downcast::<LimitRace>() {
        Ok(race) => return Ok(*race),
        Err(other) => other,
    };
    let side = match side.downcast::<CardError>() {
        Ok(card) => return Err(*card),
        Err(other) => other,
    };
    match side.downcast::<crate::platform::db::DbError>() {
        Ok(db) => Err(CardError::Db(*db)),
        Err(other) => Err(CardError::Internal(anyhow::anyhow!("{other}"))),
    }
}

/// Ledger account code of the card network settlement accounts.
pub const SETTLEMENT_ACCOUNT_CODE: i32 = 910;

/// How placing a hold went wrong.
enum Held {
    /// The limits moved under the ladder: decide again.
    Race(LimitRace),
    Failed(CardError),
}

fn card_state(row: &CardRow) -> Result<CardState, CardError> {
    Ok(match row.status.as_str() {
        "active" => CardState::Active,
        "inactive" => CardState::Inactive,
        "frozen" => CardState::Frozen,
        _ => CardState::Canceled(
            row.cancel_reason
                .as_deref()
                .and_then(decision::CancelReason::parse)
                .ok_or_else(|| anyhow::anyhow!("stored cancel reason {:?}", row.cancel_reason))?,
        ),
    })
}

/// The row of a decided authorization; `hold` for an approval (its transfer and expiry).
fn authorization_row(
    id: AuthorizationId,
    partner: PartnerId,
    request: &AuthorizationRequest,
    found: Option<&Found>,
    decision: &decision::Decision,
    hold: Option<(TransferId, DateTime<Utc>)>,
    at: DateTime<Utc>,
) -> Result<AuthorizationRow, CardError> {
    let held = if decision.approved {
        request.amount.minor()
    } else {
        0
    };
    let trail = serde_json::to_value(&decision.trail)
        .map_err(|e| CardError::Internal(anyhow::anyhow!("trail: {e}")))?;
    Ok(AuthorizationRow {
        id: id.uuid(),
        partner_id: partner.uuid(),
        card_id: found.map(|f| f.row.id),
        wallet_id: found.map(|f| f.row.wallet_id),
        network_transaction_id: request.network_transaction_id.clone(),
        status: if decision.approved {
            "pending"
        } else {
            "declined"
        }
        .to_owned(),
        decline_code: decision
            .decline_code
            .map(|c| DeclineCode::as_str(c).to_owned()),
        response_code: decision.response_code.to_owned(),
        currency: request.amount.currency().code().to_owned(),
        amount: request.amount.minor(),
        held,
        captured: 0,
        hold_transfer_id: hold.filter(|_| decision.approved).map(|(t, _)| t.uuid()),
        merchant: json!({
            "name": request.merchant_name,
            "mcc": format!("{:04}", request.merchant.mcc.code()),
            "country": request.merchant.country.to_string(),
        }),
        trail,
        created_at: at,
        updated_at: at,
        expires_at: hold.filter(|_| decision.approved).map(|(_, e)| e),
    })
}

/// The money of a stored amount.
pub(super) fn stored_money(minor: i64, currency: &str) -> Result<Money, CardError> {
    Ok(Money::from_minor(minor, stored_currency(currency)?))
}

/// A stored currency code.
pub(super) fn stored_currency(code: &str) -> Result<crate::platform::money::Currency, CardError> {
    crate::platform::money::Currency::parse(code)
        .map_err(|e| CardError::Internal(anyhow::anyhow!("stored currency: {e}")))
}
