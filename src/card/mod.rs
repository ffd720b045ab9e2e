//! Cards: issuing virtual and physical debit cards on a partner's customers' wallets, the PAN
//! vault, spending controls, and authorizations as ledger holds (API.md "Cards").
//!
//! - `model/`: the pure rules (PAN and Luhn, expiry, controls and merchant categories, the
//!   authorization decision ladder, the limit counters), unit-tested without a database.
//! - `service/`: issuing, the card lifecycle and reveals; authorizations (`authorize`, with
//!   the batch `writer` attached to holds) and their life on the ledger (`lifecycle`).
//! - `network`: the [`CardNetwork`] boundary a card network's adapter calls; `simulator`: the
//!   built-in adapter partners test with (`/v1/simulator/...`).

mod error;
mod http;
mod model;
mod network;
mod partner;
mod service;
mod settings;
mod simulator;
mod store;

pub use error::CardError;
pub use model::decision::{Fallback, PartnerDecision};
pub use network::{
    Authorization, AuthorizationId, AuthorizationRequest, CardNetwork, CardRefund, FollowUp,
    RefundRequest,
};
pub use partner::{DecisionEndpoint, DecisionEndpointWithSecret, DecisionEndpoints};
pub use service::{
    CLAIMING_IN_TRANSACTION, Card, CardId, CardMetrics, CardService, Collaborators, RevealedCard,
};
pub use settings::CardSettings;

/// The card routes, the card authorizations' and the network simulator's.
pub fn configure(cfg: &mut actix_web::web::ServiceConfig) {
    http::configure(cfg);
    simulator::configure(cfg);
}

/// The card module's part of the OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = <http::CardDoc as utoipa::OpenApi>::openapi();
    doc.merge(<simulator::SimulatorDoc as utoipa::OpenApi>::openapi());
    doc
}
