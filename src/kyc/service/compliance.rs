//! Compliance: the configured tiers, a customer's tier, and the limits logic behind
//! [`Compliance`](crate::kyc::Compliance) (authorizing movements against the daily and monthly
//! counters, releasing what did not happen).

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{KycService, tier_u8};
use crate::kernel::PartnerId;
use crate::kyc::error::KycError;
use crate::kyc::model::{self, CustomerId, Movement, Usage};
use crate::kyc::settings::TierSettings;
use crate::kyc::store::{self, CustomerRow, UsageRow};
use crate::platform::db::Tx;
use crate::platform::money::Money;

/// One tier as partners read it (`GET /v1/kyc/tiers`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TierView {
    pub tier: u8,
    pub name: String,
    pub outgoing: bool,
    pub withdrawals: bool,
    pub cards: bool,
    pub limits: Vec<TierLimitsView>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TierLimitsView {
    pub currency: String,
    pub max_balance: String,
    pub max_single_payment: String,
    pub daily_outgoing: String,
    pub monthly_outgoing: String,
}

impl KycService {
    /// The configured tiers.
    pub fn tiers(&self) -> Vec<TierView> {
        self.inner
            .settings
            .tiers
            .iter()
            .map(|t| TierView {
                tier: t.tier,
                name: match t.tier {
                    0 => "none",
                    1 => "basic",
                    _ => "full",
                }
                .into(),
                outgoing: t.tier >= 1 && !t.limits.is_empty(),
                withdrawals: t.tier >= 1 && t.withdrawals,
                cards: t.tier >= 1 && t.cards,
                limits: t
                    .limits
                    .iter()
                    .map(|l| TierLimitsView {
                        currency: l.max_balance.currency().code().to_owned(),
                        max_balance: l.max_balance.format_amount(),
                        max_single_payment: l.max_single_payment.format_amount(),
                        daily_outgoing: l.daily_outgoing.format_amount(),
                        monthly_outgoing: l.monthly_outgoing.format_amount(),
                    })
                    .collect(),
            })
            .collect()
    }

    /// The customer's tier and status, for other modules (`Compliance::customer_tier`).
    pub(in crate::kyc) async fn tier_in(
        &self,
        tx: &mut Tx<'_>,
        partner: PartnerId,
        customer: CustomerId,
    ) -> Result<(u8, String), KycError> {
        let row = store::share_customer(tx.conn(), customer.uuid())
            .await?
            .filter(|r| r.partner_id == partner.uuid())
            .ok_or(KycError::NotFound("customer"))?;
        Ok((tier_u8(row.kyc_tier), row.kyc_status))
    }

    /// See [`Compliance::email_customer`](crate::kyc::Compliance::email_customer).
    pub(in crate::kyc) async fn email_customer_in(
        &self,
        tx: &mut Tx<'_>,
        partner: PartnerId,
        customer: CustomerId,
        template: crate::notify::Template,
    ) -> Result<bool, KycError> {
        let row = store::share_customer(tx.conn(), customer.uuid())
            .await?
            .filter(|r| r.partner_id == partner.uuid())
            .ok_or(KycError::NotFound("customer"))?;
        let Some(sealed) = &row.email_enc else {
            return Ok(false);
        };
        let email = self
            .vault()
            .open(&super::context("email", row.id), sealed)?;
        self.outbox().enqueue_email(tx, &email, template).await?;
        Ok(true)
    }

    /// See [`Compliance::allow_cards`](crate::kyc::Compliance::allow_cards).
    pub(in crate::kyc) async fn allow_cards_in(
        &self,
        tx: &mut Tx<'_>,
        partner: PartnerId,
        customer: CustomerId,
        currency: crate::platform::money::Currency,
    ) -> Result<(), KycError> {
        let (tier, _) = self.tier_in(tx, partner, customer).await?;
        model::may_hold_cards(&self.inner.settings.tiers, tier, currency).map_err(KycError::Denied)
    }

    /// See [`Compliance::cards_allowed`](crate::kyc::Compliance::cards_allowed).
    pub(in crate::kyc) async fn cards_allowed_now(
        &self,
        partner: PartnerId,
        customer: CustomerId,
        currency: crate::platform::money::Currency,
    ) -> Result<bool, KycError> {
        let row = {
            let mut conn = self.db().conn().await?;
            store::find_customer(&mut conn, customer.uuid()).await?
        }
        .filter(|r| r.partner_id == partner.uuid())
        .ok_or(KycError::NotFound("customer"))?;
        Ok(
            model::may_hold_cards(&self.inner.settings.tiers, tier_u8(row.kyc_tier), currency)
                .is_ok(),
        )
    }

    /// See [`Compliance::authorize`](crate::kyc::Compliance::authorize).
    pub(in crate::kyc) async fn authorize_in(
        &self,
        tx: &mut Tx<'_>,
        partner: PartnerId,
        movement: &Movement,
    ) -> Result<(), KycError> {
        self.authorize_all_in(tx, &[(partner, *movement)])
            .await?
            .into_iter()
            .next()
            .unwrap_or(Ok(()))
    }

    /// See [`Compliance::authorize_all`](crate::kyc::Compliance::authorize_all): three statements
    /// whatever the number of movements (customers, counters, counters' new values).
    pub(in crate::kyc) async fn authorize_all_in(
        &self,
        tx: &mut Tx<'_>,
        movements: &[(PartnerId, Movement)],
    ) -> Result<Vec<Result<(), KycError>>, KycError> {
        if movements.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.now();
        let today = now.date_naive();
        let mut ids: Vec<Uuid> = movements
            .iter()
            .map(|(_, m)| m.customer_id.uuid())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        // Every paying customer's counters, locked (created when missing) in key order: all
        // of them, whoever's they are; a movement refused below leaves its row unchanged.
        let mut keys: Vec<(Uuid, &str)> = movements
            .iter()
            .filter(|(_, m)| matches!(m.direction, model::Direction::Outgoing(_)))
            .map(|(_, m)| (m.customer_id.uuid(), m.amount.currency().code()))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let empty = Usage::empty(today);
        let wanted: Vec<UsageRow> = keys
            .iter()
            .map(|(customer, currency)| usage_row(*customer, currency, empty))
            .collect();
        // The customers and the counters in one round trip.
        let shared: &Tx<'_> = tx;
        let (customers, counters) = futures_util::future::join(
            store::share_customers(shared.shared(), &ids),
            store::lock_usages(shared.shared(), &wanted),
        )
        .await;
        let customers: HashMap<Uuid, CustomerRow> =
            customers?.into_iter().map(|row| (row.id, row)).collect();
        let customer_of = |partner: PartnerId, m: &Movement| {
            customers
                .get(&m.customer_id.uuid())
                .filter(|c| c.partner_id == partner.uuid())
        };
        let mut usage: HashMap<(Uuid, String), Usage> = counters?
            .into_iter()
            .map(|row| {
                let counted = Usage {
                    day: row.day,
                    day_total: row.day_total,
                    month: row.month,
                    month_total: row.month_total,
                };
                ((row.customer_id, row.currency), counted)
            })
            .collect();
        // In order, as one movement after another: a customer's second payment counts after
        // their first; a refused movement counts nothing.
        let tiers = &self.inner.settings.tiers;
        let mut changed: BTreeSet<(Uuid, String)> = BTreeSet::new();
        let answers = movements
            .iter()
            .map(|(partner, m)| {
                let customer = customer_of(*partner, m).ok_or(KycError::NotFound("customer"))?;
                let tier = tier_u8(customer.kyc_tier);
                if let model::Direction::Incoming = m.direction {
                    model::evaluate(tiers, tier, m, empty, now).map_err(KycError::Denied)?;
                    return Ok(());
                }
                let key = (customer.id, m.amount.currency().code().to_owned());
                let before = usage.get(&key).copied().ok_or_else(|| {
                    KycError::Internal(anyhow::anyhow!("limit counters were not locked"))
                })?;
                let after =
                    model::evaluate(tiers, tier, m, before, now).map_err(KycError::Denied)?;
                if after != before {
                    usage.insert(key.clone(), after);
                    changed.insert(key);
                }
                Ok(())
            })
            .collect();
        let rows: Vec<UsageRow> = changed
            .iter()
            .filter_map(|key| {
                usage
                    .get(key)
                    .map(|counted| usage_row(key.0, &key.1, *counted))
            })
            .collect();
        store::save_usages(tx.conn(), &rows).await?;
        Ok(answers)
    }

    /// See [`Compliance::release`](crate::kyc::Compliance::release).
    pub(in crate::kyc) async fn release_in(
        &self,
        tx: &mut Tx<'_>,
        customer: CustomerId,
        amount: Money,
        counted_at: DateTime<Utc>,
    ) -> Result<(), KycError> {
        let now = self.now();
        let currency = amount.currency().code();
        let usage = locked_usage(tx, customer.uuid(), currency, now).await?;
        let released = model::release(usage, amount, counted_at, now);
        store::save_usage(tx.conn(), &usage_row(customer.uuid(), currency, released)).await?;
        Ok(())
    }

    /// The tier settings, for the Compliance face.
    pub fn tier_settings(&self) -> &[TierSettings] {
        &self.inner.settings.tiers
    }
}

/// The customer's counted usage in `currency`, locked for the rest of the transaction.
async fn locked_usage(
    tx: &mut Tx<'_>,
    customer: Uuid,
    currency: &str,
    now: DateTime<Utc>,
) -> Result<Usage, KycError> {
    let today = now.date_naive();
    let stored = store::lock_usage(
        tx.conn(),
        customer,
        currency,
        today,
        Usage::empty(today).month,
    )
    .await?;
    Ok(Usage {
        day: stored.day,
        day_total: stored.day_total,
        month: stored.month,
        month_total: stored.month_total,
    })
}

fn usage_row(customer: Uuid, currency: &str, usage: Usage) -> UsageRow {
    UsageRow {
        customer_id: customer,
        currency: currency.to_owned(),
        day: usage.day,
        day_total: usage.day_total,
        month: usage.month,
        month_total: usage.month_total,
    }
}
