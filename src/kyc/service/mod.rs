//! The KYC service: customers (personal data sealed by the [`Vault`]), applications through
//! the automated checks and manual review, sanctions lists and re-screening, and the
//! [`Compliance`](super::Compliance) decisions other modules ask for before moving money.
//!
//! This file holds the service itself (its shared state and constructor) and what more than
//! one part uses; the methods live in one file per group, each an `impl KycService` block:
//! [`customers`], [`applications`] (submission, automated decision, review),
//! [`application_views`] (reading applications), [`sanctions`] (lists, screening,
//! re-screening), [`rotation`] (PII key rotation) and [`compliance`] (tiers and limits).

mod application_views;
mod applications;
mod compliance;
mod customers;
mod rotation;
mod sanctions;

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;
use uuid::Uuid;

use super::error::KycError;
use super::model::{Check, Denial};
use super::pii::{Vault, vault_for};
use super::screening::ScreeningIndex;
use super::settings::KycSettings;
use super::store::ApplicationRow;
use crate::notify::Outbox;
use crate::platform::db::Db;

pub use application_views::{Application, Transition};
pub use applications::{ReviewDecision, Submission};
pub use compliance::TierView;
pub use customers::{Customer, NewCustomer};
pub use sanctions::{Rescreening, SanctionsList, ScreeningHit};

/// The time source; tests pass a fake one.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(Utc::now)
}

struct LoadedLists {
    version: i64,
    index: ScreeningIndex,
    /// The list of each entry, by index.
    list_of: Vec<String>,
}

struct Inner {
    db: Db,
    outbox: Arc<dyn Outbox>,
    vault: Vault,
    settings: KycSettings,
    clock: Clock,
    lists: RwLock<Option<Arc<LoadedLists>>>,
}

/// Customers, KYC and compliance. Cheap to clone.
#[derive(Clone)]
pub struct KycService {
    inner: Arc<Inner>,
}

fn context(field: &str, id: Uuid) -> String {
    format!("customer.{field}:{id}")
}

fn application_context(id: Uuid) -> String {
    format!("application.document:{id}")
}

fn tier_u8(tier: i16) -> u8 {
    u8::try_from(tier).unwrap_or(0)
}

impl KycService {
    /// Builds the service; `outbox` takes its events and mail in the caller's transaction.
    pub fn new(
        db: Db,
        settings: &KycSettings,
        clock: Clock,
        outbox: Arc<dyn Outbox>,
    ) -> Result<KycService, KycError> {
        Ok(KycService {
            inner: Arc::new(Inner {
                db,
                outbox,
                vault: vault_for(settings)?,
                settings: settings.clone(),
                clock,
                lists: RwLock::new(None),
            }),
        })
    }

    fn db(&self) -> &Db {
        &self.inner.db
    }

    /// Now, to the microsecond PostgreSQL stores (so a response and a later read agree).
    fn now(&self) -> DateTime<Utc> {
        chrono::SubsecRound::trunc_subsecs((self.inner.clock)(), 6)
    }

    fn outbox(&self) -> &dyn Outbox {
        self.inner.outbox.as_ref()
    }

    fn vault(&self) -> &Vault {
        &self.inner.vault
    }
}

/// The identity document of an application, sealed as one value.
#[derive(Serialize, Deserialize)]
struct Document {
    #[serde(rename = "type")]
    document_type: String,
    number: String,
    country: String,
    expiry: Option<NaiveDate>,
}

/// What the checks found and decided, stored as the application's `outcome`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Outcome {
    #[serde(default)]
    checks: Vec<Check>,
    #[serde(default)]
    screening: Vec<ScreeningHit>,
    #[serde(default)]
    missing: Vec<String>,
    code: Option<String>,
    reason: Option<String>,
}

fn outcome_of(row: &ApplicationRow) -> Outcome {
    serde_json::from_value(row.outcome.clone()).unwrap_or_default()
}

fn set_outcome(row: &mut ApplicationRow, outcome: Outcome) -> Result<(), KycError> {
    row.outcome = serde_json::to_value(outcome).map_err(|e| KycError::Internal(e.into()))?;
    Ok(())
}

impl From<Denial> for KycError {
    fn from(d: Denial) -> Self {
        KycError::Denied(d)
    }
}
