//! Payments: money between a partner's wallets (P2P) and into them (deposits through the
//! sandbox rail). Each payment is one ledger transfer whose id is the payment's; the payment
//! row, both customers' tier limits (`kyc::Compliance`) and the `payment.completed` event are
//! attached to the posting, so they commit in the engine's transaction or not at all.
//!
//! Still to come (issue 7): withdrawals through a `Rail` with settlement, refunds.

mod error;
mod http;
mod model;
mod service;
mod store;

pub use error::PaymentError;
pub use http::{PaymentDoc, configure};
pub use model::{PaymentId, PaymentKind, PaymentStatus};
pub use service::{
    NewDeposit, NewPayment, Payment, PaymentMetrics, PaymentService, RAIL_ACCOUNT_CODE,
};

/// The payment module's part of the OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <PaymentDoc as utoipa::OpenApi>::openapi()
}
