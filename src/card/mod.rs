//! Cards: issuing virtual and physical debit cards on a partner's customers' wallets, the PAN
//! vault, spending controls, and authorizations as ledger holds (API.md "Cards").
//!
//! - `model/`: the pure rules (PAN and Luhn, expiry, controls and merchant categories, the
//!   authorization decision ladder), unit-tested without a database.

mod error;
mod http;
mod model;
mod partner;
mod service;
mod settings;
mod store;

pub use error::CardError;
pub use http::configure;
pub use model::decision::{Fallback, PartnerDecision};
pub use partner::{DecisionEndpoint, DecisionEndpointWithSecret, DecisionEndpoints};
pub use service::{CLAIMING_IN_TRANSACTION, Card, CardId, CardService, RevealedCard};
pub use settings::CardSettings;

/// The card module's part of the OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <http::CardDoc as utoipa::OpenApi>::openapi()
}
