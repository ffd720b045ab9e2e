//! The built-in card network simulator (API.md "Cards"): a partner outside production sends
//! what a card network would, and gets what the network would get back. It is a card network
//! adapter like a production processor's: it validates the network's message and calls the
//! issuer through [`CardNetwork`], exactly the path a real one takes. Refused (404
//! `simulator_disabled`) unless `cards.simulator.enabled` (off in production by default).

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use utoipa::{OpenApi, ToSchema};

use super::error::CardError;
use super::model::categories::Mcc;
use super::model::controls::parse_country;
use super::model::decision::Merchant;
use super::model::pan::{CVC_DIGITS, Pan};
use super::network::{
    Authorization, AuthorizationId, AuthorizationRequest, CardNetwork, CardRefund, FollowUp,
    RefundRequest,
};
use super::service::CardService;
use crate::kernel::{Access, Area, PartnerId, Principal};
use crate::platform::error::{ApiError, FieldError, ProblemBody};
use crate::platform::http::{Json, PathId};
use crate::platform::money::{Amount, Currency, Money};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/v1/simulator/authorizations").route(web::post().to(authorize)))
        .service(
            web::resource("/v1/simulator/authorizations/{id}/increment")
                .route(web::post().to(increment)),
        )
        .service(
            web::resource("/v1/simulator/authorizations/{id}/capture")
                .route(web::post().to(capture)),
        )
        .service(
            web::resource("/v1/simulator/authorizations/{id}/reverse")
                .route(web::post().to(reverse)),
        )
        .service(web::resource("/v1/simulator/refunds").route(web::post().to(refund)));
}

#[derive(OpenApi)]
#[openapi(
    paths(authorize, increment, capture, reverse, refund),
    components(schemas(SimulatedAuthorization, SimulatedMerchant, SimulatedFollowUp,
                       SimulatedRefund, Authorization, CardRefund)),
    tags((name = "simulator", description = "The card network simulator (outside production, \
        or with `cards.simulator.enabled`): send what a card network would and get what it \
        would get back. Authorizations go through the same path a production processor's \
        messages take."))
)]
pub struct SimulatorDoc;

/// The merchant as the network sends it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulatedMerchant {
    /// 1-100 characters, no control characters.
    pub name: String,
    /// The merchant category code: four digits (ISO 18245).
    #[schema(example = "5411")]
    pub mcc: String,
    /// ISO 3166-1 alpha-2, upper case.
    #[schema(example = "US")]
    pub country: String,
}

/// `POST /v1/simulator/authorizations`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulatedAuthorization {
    pub pan: String,
    pub exp_month: u8,
    pub exp_year: u16,
    pub cvc: Option<String>,
    #[schema(value_type = String, example = "12.50")]
    pub amount: Amount,
    #[schema(value_type = String, example = "USD")]
    pub currency: Currency,
    pub merchant: SimulatedMerchant,
    /// The network's id of the message (1-64 printable characters): a repeated one answers
    /// as the first did and moves nothing twice.
    pub network_transaction_id: Option<String>,
}

/// `POST /v1/simulator/authorizations/{id}/increment|capture|reverse`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulatedFollowUp {
    /// Required for an increment; for a capture or reversal, all of what is held when absent.
    #[schema(value_type = Option<String>, example = "5.00")]
    pub amount: Option<Amount>,
    pub network_transaction_id: Option<String>,
}

/// `POST /v1/simulator/refunds`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulatedRefund {
    pub pan: String,
    pub exp_month: u8,
    pub exp_year: u16,
    #[schema(value_type = String, example = "12.50")]
    pub amount: Amount,
    #[schema(value_type = String, example = "USD")]
    pub currency: Currency,
    pub merchant: SimulatedMerchant,
    /// The authorization refunded, when the network links it.
    pub authorization_id: Option<String>,
    pub network_transaction_id: Option<String>,
}

fn field(name: &'static str, message: &str) -> CardError {
    CardError::validation(name, message)
}

fn pan_of(raw: &str) -> Result<Pan, CardError> {
    Pan::parse(raw).map_err(|_| field("pan", "is not a card number (12-19 digits, Luhn-valid)"))
}

fn expiry_fields(month: u8, year: u16) -> Result<(), CardError> {
    if !(1..=12).contains(&month) {
        return Err(field("exp_month", "must be 1-12"));
    }
    if !(2000..=2099).contains(&year) {
        return Err(field("exp_year", "must be a four-digit year"));
    }
    Ok(())
}

fn merchant_of(m: &SimulatedMerchant) -> Result<(Merchant, String), CardError> {
    let name = m.name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(field(
            "merchant.name",
            "must be 1-100 characters without control characters",
        ));
    }
    let mcc = Mcc::parse(&m.mcc).ok_or_else(|| {
        field(
            "merchant.mcc",
            "must be a four-digit merchant category code",
        )
    })?;
    let country = parse_country(&m.country).ok_or_else(|| {
        field(
            "merchant.country",
            "is not an ISO 3166-1 alpha-2 country code in upper case, like \"US\"",
        )
    })?;
    Ok((Merchant { mcc, country }, name.to_owned()))
}

fn network_id(raw: Option<&String>) -> Result<Option<String>, CardError> {
    match raw {
        None => Ok(None),
        Some(id)
            if !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(Some(id.clone()))
        }
        Some(_) => Err(field(
            "network_transaction_id",
            "must be 1-64 printable ASCII characters without spaces",
        )),
    }
}

fn money(amount: &Amount, currency: Currency) -> Result<Money, CardError> {
    Money::parse_positive(amount, currency).map_err(|e| field("amount", &e.to_string()))
}

/// The partner a simulator request acts for, when the simulator is on.
fn simulating(cards: &CardService, principal: &Principal) -> Result<PartnerId, ApiError> {
    let partner = principal.require_partner(Area::Cards, Access::Write)?;
    if !cards.simulator_enabled() {
        return Err(CardError::SimulatorDisabled.into());
    }
    Ok(partner)
}

/// Simulate an authorization request.
#[utoipa::path(post, path = "/v1/simulator/authorizations", tag = "simulator",
    request_body = SimulatedAuthorization, security(("bearer" = [])),
    responses(
        (status = 201, description = "The authorization, approved or declined (see `decline_code`, `response_code` and `trail`).", body = Authorization),
        (status = 400, description = "A malformed message.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "`simulator_disabled`.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn authorize(
    cards: web::Data<CardService>,
    principal: Principal,
    body: Json<SimulatedAuthorization>,
) -> Result<HttpResponse, ApiError> {
    let partner = simulating(&cards, &principal)?;
    let body = body.into_inner();
    let pan = pan_of(&body.pan)?;
    expiry_fields(body.exp_month, body.exp_year)?;
    if let Some(cvc) = &body.cvc
        && !(cvc.len() == CVC_DIGITS && cvc.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(field("cvc", "must be three digits").into());
    }
    let (merchant, merchant_name) = merchant_of(&body.merchant)?;
    let request = AuthorizationRequest {
        pan,
        exp_month: body.exp_month,
        exp_year: body.exp_year,
        cvc: body.cvc,
        amount: money(&body.amount, body.currency)?,
        merchant,
        merchant_name,
        network_transaction_id: network_id(body.network_transaction_id.as_ref())?,
    };
    let network: &dyn CardNetwork = cards.get_ref();
    let answer = network.authorize(partner, request).await?;
    Ok(HttpResponse::Created().json(answer))
}

fn follow_up(body: Option<Json<SimulatedFollowUp>>) -> Result<FollowUp, CardError> {
    let body = body.map(Json::into_inner).unwrap_or_default();
    Ok(FollowUp {
        amount: body.amount,
        network_transaction_id: network_id(body.network_transaction_id.as_ref())?,
    })
}

/// Simulate an incremental authorization: more on the hold, or declined on its own.
#[utoipa::path(post, path = "/v1/simulator/authorizations/{id}/increment", tag = "simulator",
    request_body = SimulatedFollowUp, security(("bearer" = [])),
    params(("id" = String, Path, description = "Authorization id (auth_...)")),
    responses(
        (status = 200, description = "The authorization with its operations (a declined increment is listed with `approved: false`).", body = Authorization),
        (status = 404, description = "No such authorization.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "`authorization_not_pending`.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn increment(
    cards: web::Data<CardService>,
    principal: Principal,
    PathId(id): PathId<AuthorizationId>,
    body: Option<Json<SimulatedFollowUp>>,
) -> Result<web::Json<Authorization>, ApiError> {
    let partner = simulating(&cards, &principal)?;
    let network: &dyn CardNetwork = cards.get_ref();
    Ok(web::Json(
        network.increment(partner, id, follow_up(body)?).await?,
    ))
}

/// Simulate clearing: capture all or part of the hold (more only for tipping merchants).
#[utoipa::path(post, path = "/v1/simulator/authorizations/{id}/capture", tag = "simulator",
    request_body = SimulatedFollowUp, security(("bearer" = [])),
    params(("id" = String, Path, description = "Authorization id (auth_...)")),
    responses(
        (status = 200, description = "The captured authorization.", body = Authorization),
        (status = 404, description = "No such authorization.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "`authorization_not_pending`.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "`capture_exceeds_authorization`.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn capture(
    cards: web::Data<CardService>,
    principal: Principal,
    PathId(id): PathId<AuthorizationId>,
    body: Option<Json<SimulatedFollowUp>>,
) -> Result<web::Json<Authorization>, ApiError> {
    let partner = simulating(&cards, &principal)?;
    let network: &dyn CardNetwork = cards.get_ref();
    Ok(web::Json(
        network.capture(partner, id, follow_up(body)?).await?,
    ))
}

/// Simulate a reversal of all or part of the hold.
#[utoipa::path(post, path = "/v1/simulator/authorizations/{id}/reverse", tag = "simulator",
    request_body = SimulatedFollowUp, security(("bearer" = [])),
    params(("id" = String, Path, description = "Authorization id (auth_...)")),
    responses(
        (status = 200, description = "The authorization after the reversal.", body = Authorization),
        (status = 400, description = "More than is held.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such authorization.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "`authorization_not_pending`.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn reverse(
    cards: web::Data<CardService>,
    principal: Principal,
    PathId(id): PathId<AuthorizationId>,
    body: Option<Json<SimulatedFollowUp>>,
) -> Result<web::Json<Authorization>, ApiError> {
    let partner = simulating(&cards, &principal)?;
    let network: &dyn CardNetwork = cards.get_ref();
    Ok(web::Json(
        network.reverse(partner, id, follow_up(body)?).await?,
    ))
}

/// Simulate a merchant refund to a card.
#[utoipa::path(post, path = "/v1/simulator/refunds", tag = "simulator",
    request_body = SimulatedRefund, security(("bearer" = [])),
    responses(
        (status = 201, description = "The refund, credited to the card's wallet.", body = CardRefund),
        (status = 400, description = "A malformed message.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No card of yours has this number and expiry.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn refund(
    cards: web::Data<CardService>,
    principal: Principal,
    body: Json<SimulatedRefund>,
) -> Result<HttpResponse, ApiError> {
    let partner = simulating(&cards, &principal)?;
    let body = body.into_inner();
    let pan = pan_of(&body.pan)?;
    expiry_fields(body.exp_month, body.exp_year)?;
    let (merchant, merchant_name) = merchant_of(&body.merchant)?;
    let authorization_id = body
        .authorization_id
        .as_deref()
        .map(|raw| AuthorizationId::parse_field("authorization_id", raw))
        .transpose()
        .map_err(|e: FieldError| CardError::from(e))?;
    let request = RefundRequest {
        pan,
        exp_month: body.exp_month,
        exp_year: body.exp_year,
        amount: money(&body.amount, body.currency)?,
        merchant,
        merchant_name,
        authorization_id,
        network_transaction_id: network_id(body.network_transaction_id.as_ref())?,
    };
    let network: &dyn CardNetwork = cards.get_ref();
    let answer = network.refund(partner, request).await?;
    Ok(HttpResponse::Created().json(answer))
}
