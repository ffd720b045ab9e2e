//! Payments: money between a partner's wallets (P2P), into them (deposits) and out of them
//! (withdrawals), and refunds. Each payment is one ledger transfer whose id is the payment's; the payment
//! row, both customers' tier limits (`kyc::Compliance`) and the `payment.completed` event are
//! attached to the posting, so they commit in the engine's transaction or not at all.
//!
//! Withdrawals hold the money (a pending transfer) and settle through a [`Rail`] (the
//! sandbox in non-production) by the settlement worker: posted, or voided with the tier usage
//! given back. Refunds are new transfers back from the payee, never beyond what was paid.

mod error;
mod http;
mod model;
mod rail;
mod service;
mod settings;
mod store;

pub use error::PaymentError;
pub use http::configure;
pub use model::{PaymentId, PaymentKind, PaymentStatus};
pub use rail::{Rail, RailError, SandboxRail, Settlement};
pub use service::{
    CLAIMING_IN_TRANSACTION, Collaborators, Payment, PaymentMetrics, PaymentService,
};
pub use settings::{PaymentSettings, RailKind};

/// The payment module's part of the OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <http::PaymentDoc as utoipa::OpenApi>::openapi()
}
