//! Customers and KYC: who a partner's customers are, how far they are verified (their tier),
//! and what that lets their wallets do.
//!
//! - Customers (`cus_`): personal data is sealed with AES-256-GCM (key id beside each value)
//!   and searchable fields carry a keyed hash; nothing personal is logged.
//! - Applications (`kyc_`): `pending -> approved | rejected | review | awaiting_documents`,
//!   `awaiting_documents -> pending`, `review -> approved | rejected`. Every transition is
//!   recorded with its actor (a system rule or a person), reason and time, announced as an
//!   event (`kyc.approved`, `kyc.rejected`, `kyc.review`) and mailed to the customer.
//! - Automated checks: required data, age, document format and expiry, duplicate identity,
//!   high-risk countries, sanctions screening (fuzzy, against lists loaded by operators).
//! - Tiers and limits: [`Compliance`], which wallets, payments and cards ask inside their
//!   transaction before moving money.

mod error;
mod http;
mod model;
#[cfg(test)]
mod model_tests;
mod pii;
mod screening;
mod service;
mod settings;
mod store;

use chrono::{DateTime, Utc};

pub use error::KycError;
pub use http::configure;
pub use model::{
    Address, ApplicationId, Check, CheckName, CheckResult, CustomerId, Denial, Direction,
    DocumentType, LimitKind, Movement, OutgoingKind, Status,
};
pub use pii::PiiError;
pub use screening::{BirthDate, ListEntry, Match, ScreeningIndex, ScreeningSettings, Subject};
pub use service::{
    Application, Clock, Customer, KycService, Rescreening, ReviewDecision, SanctionsList,
    ScreeningHit, Submission, TierView, Transition, system_clock,
};
pub use settings::{KycSettings, SecretBytes, TierLimits, TierSettings};

use crate::kernel::PartnerId;
use crate::platform::db::{LockKey, LockNamespace, Tx};
use crate::platform::money::{Currency, Money};

/// What other modules ask before moving a customer's money, inside their own transaction (so
/// the counted usage commits or rolls back with the movement).
#[async_trait::async_trait]
pub trait Compliance: Send + Sync {
    /// Allows the movement (counting outgoing money against the daily and monthly limits) or
    /// refuses it with the exact rule: [`KycError::Denied`] holding `kyc_required` (with the
    /// tier that would allow it) or `limit_exceeded` (which limit, and what remains).
    async fn authorize(
        &self,
        tx: &mut Tx<'_>,
        partner: PartnerId,
        movement: &Movement,
    ) -> Result<(), KycError>;

    /// [`Compliance::authorize`] for many movements at once, as if one after another in the
    /// given order (a customer's second payment counts after their first; a refused one counts
    /// nothing): one answer per movement. A handful of statements whatever their number, for
    /// callers that authorize a whole batch (the ledger engine's batched attached writes).
    async fn authorize_all(
        &self,
        tx: &mut Tx<'_>,
        movements: &[(PartnerId, Movement)],
    ) -> Result<Vec<Result<(), KycError>>, KycError>;

    /// Gives back an outgoing movement allowed at `counted_at` that did not happen after all
    /// (failed or reversed), so it stops counting against the limits.
    async fn release(
        &self,
        tx: &mut Tx<'_>,
        customer: CustomerId,
        amount: Money,
        counted_at: DateTime<Utc>,
    ) -> Result<(), KycError>;

    /// The customer's tier and KYC status (404 for another partner's customer).
    async fn customer_tier(
        &self,
        tx: &mut Tx<'_>,
        partner: PartnerId,
        customer: CustomerId,
    ) -> Result<(u8, String), KycError>;

    /// Queues `template` to the customer's email address, in the caller's transaction; the
    /// address never leaves this module. `false` when the customer gave none.
    async fn email_customer(
        &self,
        tx: &mut Tx<'_>,
        partner: PartnerId,
        customer: CustomerId,
        template: crate::notify::Template,
    ) -> Result<bool, KycError>;

    /// Whether the customer's tier allows a card in `currency` (issuing one): `Ok`, or
    /// [`KycError::Denied`] with `kyc_required` and the tier that would.
    async fn allow_cards(
        &self,
        tx: &mut Tx<'_>,
        partner: PartnerId,
        customer: CustomerId,
        currency: Currency,
    ) -> Result<(), KycError>;

    /// Whether the customer's tier allows spending by card in `currency` now (a rung of an
    /// authorization's decision): one read, no transaction, nothing locked. The money's own
    /// checks (tier limits) run again in the posting's transaction.
    async fn cards_allowed(
        &self,
        partner: PartnerId,
        customer: CustomerId,
        currency: Currency,
    ) -> Result<bool, KycError>;
}

#[async_trait::async_trait]
impl Compliance for KycService {
    async fn cards_allowed(
        &self,
        partner: PartnerId,
        customer: CustomerId,
        currency: Currency,
    ) -> Result<bool, KycError> {
        self.cards_allowed_now(partner, customer, currency).await
    }

    async fn authorize(
        &self,
        tx: &mut Tx<'_>,
        partner: PartnerId,
        movement: &Movement,
    ) -> Result<(), KycError> {
        self.authorize_in(tx, partner, movement).await
    }

    async fn authorize_all(
        &self,
        tx: &mut Tx<'_>,
        movements: &[(PartnerId, Movement)],
    ) -> Result<Vec<Result<(), KycError>>, KycError> {
        self.authorize_all_in(tx, movements).await
    }

    async fn release(
        &self,
        tx: &mut Tx<'_>,
        customer: CustomerId,
        amount: Money,
        counted_at: DateTime<Utc>,
    ) -> Result<(), KycError> {
        self.release_in(tx, customer, amount, counted_at).await
    }

    async fn customer_tier(
        &self,
        tx: &mut Tx<'_>,
        partner: PartnerId,
        customer: CustomerId,
    ) -> Result<(u8, String), KycError> {
        self.tier_in(tx, partner, customer).await
    }

    async fn allow_cards(
        &self,
        tx: &mut Tx<'_>,
        partner: PartnerId,
        customer: CustomerId,
        currency: Currency,
    ) -> Result<(), KycError> {
        self.allow_cards_in(tx, partner, customer, currency).await
    }

    async fn email_customer(
        &self,
        tx: &mut Tx<'_>,
        partner: PartnerId,
        customer: CustomerId,
        template: crate::notify::Template,
    ) -> Result<bool, KycError> {
        self.email_customer_in(tx, partner, customer, template)
            .await
    }
}

/// The advisory lock key guarding a customer's limit counters. [`Compliance::authorize`] and
/// [`Compliance::release`] lock the counters' rows; a transaction that may touch several
/// customers' counters (a batch of the ledger engine) takes these keys first, in ascending
/// order, so two such transactions never wait on each other in a cycle.
pub fn limit_lock_key(customer: CustomerId) -> LockKey {
    LockKey::new(LIMITS, customer.uuid())
}

/// A customer's spending limits (the tag is the one earlier releases used).
const LIMITS: LockNamespace = LockNamespace::new("kyc.limits", 0x6b79_635f_6c69_6d74);

/// KYC's part of the OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <http::KycDoc as utoipa::OpenApi>::openapi()
}
