//! Routes of API.md "Cards". Another partner's card is 404.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::model::controls::ControlsRequest;
use super::model::decision::Fallback;
use super::network::{Authorization, AuthorizationId};
use super::partner;
use super::service::{CancelReason, Card, CardId, CardService, Change, NewCard, RevealedCard};
use crate::kernel::{Access, Area, Principal};
use crate::platform::error::{ApiError, ProblemBody};
use crate::platform::http::pagination::{List, PageQuery};
use crate::platform::http::{Json, PathId, current_request_id};
use crate::platform::idempotency::Idempotency;
use crate::wallet::WalletId;

pub fn configure(cfg: &mut web::ServiceConfig) {
    // First: `/v1/cards/{id}` would take `decision-endpoint` for a card id.
    super::partner::configure(cfg);
    cfg.service(
        web::resource("/v1/cards")
            .route(web::post().to(issue))
            .route(web::get().to(list)),
    )
    .service(web::resource("/v1/cards/{id}").route(web::get().to(get)))
    .service(web::resource("/v1/cards/{id}/activate").route(web::post().to(activate)))
    .service(web::resource("/v1/cards/{id}/freeze").route(web::post().to(freeze)))
    .service(web::resource("/v1/cards/{id}/unfreeze").route(web::post().to(unfreeze)))
    .service(web::resource("/v1/cards/{id}/cancel").route(web::post().to(cancel)))
    .service(web::resource("/v1/cards/{id}/replace").route(web::post().to(replace)))
    .service(web::resource("/v1/cards/{id}/reveal").route(web::post().to(reveal)))
    .service(web::resource("/v1/cards/{id}/controls").route(web::put().to(controls)))
    .service(web::resource("/v1/card-authorizations").route(web::get().to(authorizations)))
    .service(web::resource("/v1/card-authorizations/{id}").route(web::get().to(authorization)));
}

#[derive(OpenApi)]
#[openapi(
    paths(issue, list, get, activate, freeze, unfreeze, cancel, replace, reveal, controls,
          authorizations, authorization, partner::put_decision_endpoint,
          partner::get_decision_endpoint, partner::delete_decision_endpoint),
    components(schemas(NewCard, Card, RevealedCard, List<Card>, ReasonBody, CancelBody,
                       CancelReason, Authorization, List<Authorization>,
                       partner::DecisionEndpointBody, partner::DecisionEndpoint,
                       partner::DecisionEndpointWithSecret, Fallback)),
    tags((name = "cards", description = "Debit cards on a customer's wallet. The number and \
        CVC appear in the issuing response and in a reveal (scope `cards:reveal`, audited) \
        only; a replayed request answers without them. Virtual cards start active, physical \
        ones inactive until activated; canceling is final."))
)]
pub struct CardDoc;

/// The actor a change is kept under: `api_key:key_...` / `user:usr_...`.
fn actor(principal: &Principal) -> String {
    format!("{}:{}", principal.actor.kind(), principal.actor.id())
}

/// Issue a card on a wallet.
#[utoipa::path(post, path = "/v1/cards", tag = "cards", request_body = NewCard, security(("bearer" = [])),
    responses(
        (status = 201, description = "Issued: the only response with the number and CVC (a replay answers without them).", body = RevealedCard),
        (status = 400, description = "A missing or malformed field.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "`kyc_required`: the customer's tier does not allow cards.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such wallet.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "`wallet_closed` or `wallet_frozen`.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn issue(
    cards: web::Data<CardService>,
    principal: Principal,
    Idempotency(claim): Idempotency,
    body: Json<NewCard>,
) -> Result<HttpResponse, ApiError> {
    let partner = principal.require_partner(Area::Cards, Access::Write)?;
    let card = cards
        .issue(partner, &actor(&principal), body.into_inner(), claim)
        .await?;
    Ok(HttpResponse::Created().json(card))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CardQuery {
    wallet_id: Option<String>,
    /// `active`, `inactive`, `frozen` or `canceled`.
    status: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Cards, newest first (`?wallet_id=`, `?status=`).
#[utoipa::path(get, path = "/v1/cards", tag = "cards", security(("bearer" = [])), params(CardQuery),
    responses((status = 200, description = "A page of cards.", body = List<Card>)))]
async fn list(
    cards: web::Data<CardService>,
    principal: Principal,
    query: web::Query<CardQuery>,
) -> Result<web::Json<List<Card>>, ApiError> {
    principal.require(Area::Cards, Access::Read)?;
    let query = query.into_inner();
    let wallet = query
        .wallet_id
        .as_deref()
        .map(|raw| WalletId::parse_field("wallet_id", raw))
        .transpose()?;
    let page = PageQuery {
        limit: query.limit,
        cursor: query.cursor,
    };
    let cursor = page.cursor(|c| c.parse::<CardId>())?;
    let result = cards
        .list(
            &principal,
            wallet,
            query.status.as_deref(),
            page.limit()?,
            cursor,
        )
        .await?;
    Ok(web::Json(result))
}

/// A card.
#[utoipa::path(get, path = "/v1/cards/{id}", tag = "cards", security(("bearer" = [])),
    params(("id" = String, Path, description = "Card id (card_...)")),
    responses(
        (status = 200, description = "The card, without its number.", body = Card),
        (status = 404, description = "No such card.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn get(
    cards: web::Data<CardService>,
    principal: Principal,
    PathId(id): PathId<CardId>,
) -> Result<web::Json<Card>, ApiError> {
    let partner = principal.require_partner(Area::Cards, Access::Read)?;
    Ok(web::Json(cards.card(partner, id).await?))
}

/// Why a status changes.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    /// Kept with the change (1-500 characters).
    reason: Option<String>,
}

/// How a card is canceled.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    reason: CancelReason,
}

async fn change(
    cards: &CardService,
    principal: &Principal,
    id: CardId,
    change: Change,
    reason: &str,
) -> Result<web::Json<Card>, ApiError> {
    let partner = principal.require_partner(Area::Cards, Access::Write)?;
    Ok(web::Json(
        cards
            .change(partner, &actor(principal), id, change, reason)
            .await?,
    ))
}

fn reason_of(body: Option<Json<ReasonBody>>, default: &str) -> String {
    body.and_then(|b| b.into_inner().reason)
        .unwrap_or_else(|| default.to_owned())
}

/// Activate a physical card.
#[utoipa::path(post, path = "/v1/cards/{id}/activate", tag = "cards", security(("bearer" = [])),
    params(("id" = String, Path, description = "Card id (card_...)")),
    responses(
        (status = 200, description = "Active.", body = Card),
        (status = 404, description = "No such card.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "`card_state_conflict` (not inactive) or `card_canceled`.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn activate(
    cards: web::Data<CardService>,
    principal: Principal,
    PathId(id): PathId<CardId>,
    body: Option<Json<ReasonBody>>,
) -> Result<web::Json<Card>, ApiError> {
    change(
        &cards,
        &principal,
        id,
        Change::Activate,
        &reason_of(body, "activated"),
    )
    .await
}

/// Freeze a card: every authorization is declined until unfrozen.
#[utoipa::path(post, path = "/v1/cards/{id}/freeze", tag = "cards", security(("bearer" = [])),
    params(("id" = String, Path, description = "Card id (card_...)")),
    responses(
        (status = 200, description = "Frozen.", body = Card),
        (status = 404, description = "No such card.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "`card_state_conflict` (not active) or `card_canceled`.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn freeze(
    cards: web::Data<CardService>,
    principal: Principal,
    PathId(id): PathId<CardId>,
    body: Option<Json<ReasonBody>>,
) -> Result<web::Json<Card>, ApiError> {
    change(
        &cards,
        &principal,
        id,
        Change::Freeze,
        &reason_of(body, "frozen"),
    )
    .await
}

/// Unfreeze a card.
#[utoipa::path(post, path = "/v1/cards/{id}/unfreeze", tag = "cards", security(("bearer" = [])),
    params(("id" = String, Path, description = "Card id (card_...)")),
    responses(
        (status = 200, description = "Active again.", body = Card),
        (status = 404, description = "No such card.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "`card_state_conflict` (not frozen) or `card_canceled`.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn unfreeze(
    cards: web::Data<CardService>,
    principal: Principal,
    PathId(id): PathId<CardId>,
    body: Option<Json<ReasonBody>>,
) -> Result<web::Json<Card>, ApiError> {
    change(
        &cards,
        &principal,
        id,
        Change::Unfreeze,
        &reason_of(body, "unfrozen"),
    )
    .await
}

/// Cancel a card for good (`canceled`, `lost` or `stolen`).
#[utoipa::path(post, path = "/v1/cards/{id}/cancel", tag = "cards", request_body = CancelBody, security(("bearer" = [])),
    params(("id" = String, Path, description = "Card id (card_...)")),
    responses(
        (status = 200, description = "Canceled.", body = Card),
        (status = 404, description = "No such card.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "`card_canceled`: already.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn cancel(
    cards: web::Data<CardService>,
    principal: Principal,
    PathId(id): PathId<CardId>,
    body: Json<CancelBody>,
) -> Result<web::Json<Card>, ApiError> {
    let reason = body.into_inner().reason;
    change(
        &cards,
        &principal,
        id,
        Change::Cancel(reason),
        reason.as_str(),
    )
    .await
}

/// Replace a card: a new number on the same wallet with the same controls; the old card is
/// canceled (`lost`, `stolen` or, by default, `canceled`) in the same transaction.
#[utoipa::path(post, path = "/v1/cards/{id}/replace", tag = "cards", security(("bearer" = [])),
    params(("id" = String, Path, description = "Card id (card_...)")),
    responses(
        (status = 201, description = "The new card, with its number and CVC.", body = RevealedCard),
        (status = 404, description = "No such card.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "`card_canceled`.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn replace(
    cards: web::Data<CardService>,
    principal: Principal,
    Idempotency(claim): Idempotency,
    PathId(id): PathId<CardId>,
    body: Option<Json<CancelBody>>,
) -> Result<HttpResponse, ApiError> {
    let partner = principal.require_partner(Area::Cards, Access::Write)?;
    let reason = body.map_or(CancelReason::Canceled, |b| b.into_inner().reason);
    let card = cards
        .replace(partner, &actor(&principal), id, reason, claim)
        .await?;
    Ok(HttpResponse::Created().json(card))
}

/// Reveal a card's number and CVC (scope `cards:reveal`; audited; limited per card).
#[utoipa::path(post, path = "/v1/cards/{id}/reveal", tag = "cards", security(("bearer" = [])),
    params(("id" = String, Path, description = "Card id (card_...)")),
    responses(
        (status = 200, description = "The card with its number and CVC.", body = RevealedCard),
        (status = 403, description = "Not `cards:reveal`.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such card.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "`card_canceled`.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "`reveal_limit_exceeded`.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn reveal(
    cards: web::Data<CardService>,
    principal: Principal,
    Idempotency(claim): Idempotency,
    PathId(id): PathId<CardId>,
) -> Result<HttpResponse, ApiError> {
    let partner = principal.require_partner(Area::Cards, Access::Reveal)?;
    let request_id = current_request_id();
    let card = cards
        .reveal(
            partner,
            &actor(&principal),
            id,
            request_id.as_deref(),
            claim,
        )
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .json(card))
}

/// Replace a card's spending controls.
#[utoipa::path(put, path = "/v1/cards/{id}/controls", tag = "cards", security(("bearer" = [])),
    params(("id" = String, Path, description = "Card id (card_...)")),
    request_body(content = Object, description = "The controls: `enabled`, category, MCC and country lists, `limits`."),
    responses(
        (status = 200, description = "The card with its new controls.", body = Card),
        (status = 400, description = "A malformed control, named.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such card.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "`card_canceled`.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn controls(
    cards: web::Data<CardService>,
    principal: Principal,
    PathId(id): PathId<CardId>,
    body: Json<ControlsRequest>,
) -> Result<web::Json<Card>, ApiError> {
    let partner = principal.require_partner(Area::Cards, Access::Write)?;
    Ok(web::Json(
        cards
            .set_controls(partner, &actor(&principal), id, body.into_inner())
            .await?,
    ))
}

/// Filters of `GET /v1/card-authorizations`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationQuery {
    card_id: Option<String>,
    /// `pending`, `captured`, `reversed`, `expired` or `declined`.
    status: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Card authorizations, newest first (`?card_id=`, `?status=`), approved and declined.
#[utoipa::path(get, path = "/v1/card-authorizations", tag = "cards", security(("bearer" = [])),
    params(AuthorizationQuery),
    responses(
        (status = 200, description = "A page of authorizations, each with its decision's trail.", body = List<Authorization>),
        (status = 400, description = "A malformed filter.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn authorizations(
    cards: web::Data<CardService>,
    principal: Principal,
    query: web::Query<AuthorizationQuery>,
) -> Result<web::Json<List<Authorization>>, ApiError> {
    let partner = principal.require_partner(Area::Cards, Access::Read)?;
    let query = query.into_inner();
    let card = query
        .card_id
        .as_deref()
        .map(|raw| CardId::parse_field("card_id", raw))
        .transpose()?;
    let page = PageQuery {
        limit: query.limit,
        cursor: query.cursor,
    };
    let cursor = page.cursor(|c| c.parse::<AuthorizationId>())?;
    let result = cards
        .authorizations(
            partner,
            card,
            query.status.as_deref(),
            cursor,
            page.limit()?,
        )
        .await?;
    Ok(web::Json(result))
}

/// A card authorization with its trail, increments, captures and reversals.
#[utoipa::path(get, path = "/v1/card-authorizations/{id}", tag = "cards", security(("bearer" = [])),
    params(("id" = String, Path, description = "Authorization id (auth_...)")),
    responses(
        (status = 200, description = "The authorization.", body = Authorization),
        (status = 404, description = "No such authorization.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn authorization(
    cards: web::Data<CardService>,
    principal: Principal,
    PathId(id): PathId<AuthorizationId>,
) -> Result<web::Json<Authorization>, ApiError> {
    let partner = principal.require_partner(Area::Cards, Access::Read)?;
    Ok(web::Json(cards.authorization(partner, id).await?))
}
