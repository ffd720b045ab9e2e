//! The card network's boundary: what a card network (through a processor adapter) sends an
//! issuer, and what it gets back. The built-in simulator (`simulator.rs`) is one such adapter;
//! a production processor's adapter would be another, calling exactly this trait.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::CardError;
use super::model::decision::{Merchant, TrailStep};
use super::model::pan::Pan;
use super::service::{CardId, CardService};
use crate::kernel::PartnerId;
use crate::platform::ids::define_id;
use crate::platform::money::{Amount, Money};
use crate::wallet::WalletId;

define_id!(
    AuthorizationId,
    AuthorizationIdKind,
    "auth",
    "authorization"
);
define_id!(CardRefundId, CardRefundIdKind, "crf", "card refund");

/// An authorization request as the network sends it (validated by the adapter).
#[derive(Debug)]
pub struct AuthorizationRequest {
    pub pan: Pan,
    pub exp_month: u8,
    pub exp_year: u16,
    pub cvc: Option<String>,
    /// Positive, in the currency the merchant charges.
    pub amount: Money,
    pub merchant: Merchant,
    pub merchant_name: String,
    /// The network's id of this message: a repeated one answers as the first did.
    pub network_transaction_id: Option<String>,
}

/// A follow-up message on an authorization: an increment (`amount` required), a capture or a
/// reversal (`amount` absent: all of what is held).
#[derive(Debug, Clone)]
pub struct FollowUp {
    pub amount: Option<Amount>,
    pub network_transaction_id: Option<String>,
}

/// A merchant credit to a card (a refund), linked to its authorization when given.
#[derive(Debug)]
pub struct RefundRequest {
    pub pan: Pan,
    pub exp_month: u8,
    pub exp_year: u16,
    pub amount: Money,
    pub merchant: Merchant,
    pub merchant_name: String,
    pub authorization_id: Option<AuthorizationId>,
    pub network_transaction_id: Option<String>,
}

/// The merchant as an authorization shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MerchantView {
    pub name: String,
    /// The merchant category code, four digits.
    pub mcc: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
}

/// What happened to an authorization after its decision.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OperationView {
    /// `increment`, `capture`, `reversal`, `expiry` or `refund`.
    #[serde(rename = "type")]
    pub kind: String,
    pub approved: bool,
    pub amount: String,
    pub network_transaction_id: Option<String>,
    /// Kind-specific details (a capture's shortfall, a declined increment's reason).
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    pub created: DateTime<Utc>,
}

/// A card authorization (API.md "Cards").
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Authorization {
    #[schema(value_type = String, example = "auth_01h455vb4pex5vsknk084sn02q")]
    pub id: AuthorizationId,
    /// The card (none when no card has the presented number).
    #[schema(value_type = Option<String>)]
    pub card_id: Option<CardId>,
    #[schema(value_type = Option<String>)]
    pub wallet_id: Option<WalletId>,
    /// `pending` (held), `captured`, `reversed`, `expired` or `declined`.
    pub status: String,
    pub approved: bool,
    pub decline_code: Option<String>,
    /// ISO 8583: `00` approved, `51` insufficient funds, ...
    pub response_code: String,
    /// Asked for, with approved increments.
    pub amount: String,
    /// Held on the wallet now.
    pub held_amount: String,
    pub captured_amount: String,
    pub currency: String,
    pub merchant: MerchantView,
    /// Every rule of the decision, in order, and how it came out.
    #[schema(value_type = Vec<Object>)]
    pub trail: Vec<TrailStep>,
    pub network_transaction_id: Option<String>,
    /// When an uncaptured hold expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// Increments, captures, reversals and expiry (on `GET /v1/card-authorizations/{id}` and
    /// on the simulator's answers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operations: Option<Vec<OperationView>>,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
}

/// A merchant refund to a card's wallet.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CardRefund {
    #[schema(value_type = String, example = "crf_01h455vb4pex5vsknk084sn02q")]
    pub id: CardRefundId,
    #[schema(value_type = String)]
    pub card_id: CardId,
    #[schema(value_type = String)]
    pub wallet_id: WalletId,
    #[schema(value_type = Option<String>)]
    pub authorization_id: Option<AuthorizationId>,
    pub amount: String,
    pub currency: String,
    pub merchant: MerchantView,
    pub network_transaction_id: Option<String>,
    pub created: DateTime<Utc>,
}

/// What a card network asks of the issuer. Implemented by the card service; called by the
/// simulator's routes, and by a production processor's adapter.
#[async_trait::async_trait]
pub trait CardNetwork: Send + Sync {
    /// An authorization: approved (and held) or declined, with the decision's trail.
    async fn authorize(
        &self,
        partner: PartnerId,
        request: AuthorizationRequest,
    ) -> Result<Authorization, CardError>;

    /// More money on a pending authorization (a hotel stay growing): added to the hold, or
    /// declined on its own (the original hold stands).
    async fn increment(
        &self,
        partner: PartnerId,
        id: AuthorizationId,
        message: FollowUp,
    ) -> Result<Authorization, CardError>;

    /// Clearing: posts the hold (less: the rest released; more: within the over-capture
    /// allowance for tipping merchants).
    async fn capture(
        &self,
        partner: PartnerId,
        id: AuthorizationId,
        message: FollowUp,
    ) -> Result<Authorization, CardError>;

    /// A void of all or part of the hold.
    async fn reverse(
        &self,
        partner: PartnerId,
        id: AuthorizationId,
        message: FollowUp,
    ) -> Result<Authorization, CardError>;

    /// A merchant credit to the card's wallet.
    async fn refund(
        &self,
        partner: PartnerId,
        request: RefundRequest,
    ) -> Result<CardRefund, CardError>;
}

#[async_trait::async_trait]
impl CardNetwork for CardService {
    async fn authorize(
        &self,
        partner: PartnerId,
        request: AuthorizationRequest,
    ) -> Result<Authorization, CardError> {
        CardService::authorize(self, partner, request).await
    }

    async fn increment(
        &self,
        partner: PartnerId,
        id: AuthorizationId,
        message: FollowUp,
    ) -> Result<Authorization, CardError> {
        CardService::increment(self, partner, id, message).await
    }

    async fn capture(
        &self,
        partner: PartnerId,
        id: AuthorizationId,
        message: FollowUp,
    ) -> Result<Authorization, CardError> {
        CardService::capture(self, partner, id, message).await
    }

    async fn reverse(
        &self,
        partner: PartnerId,
        id: AuthorizationId,
        message: FollowUp,
    ) -> Result<Authorization, CardError> {
        CardService::reverse(self, partner, id, message).await
    }

    async fn refund(
        &self,
        partner: PartnerId,
        request: RefundRequest,
    ) -> Result<CardRefund, CardError> {
        CardService::refund(self, partner, request).await
    }
}
