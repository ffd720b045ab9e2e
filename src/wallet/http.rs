//! Routes of API.md "Wallets". Another partner's wallet is 404.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::model::{Change, EntryKind, FreezeMode, WalletId, WalletKind, WalletStatus};
use super::service::{
    Balance, NewWallet, StatusChange, Transaction, Wallet, WalletDetail, WalletService,
};
use crate::kernel::{Access, Area, Principal};
use crate::kyc::CustomerId;
use crate::platform::error::{ApiError, ProblemBody};
use crate::platform::http::pagination::{List, PageQuery};
use crate::platform::http::{Json, PathId};
use crate::platform::idempotency::Idempotency;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/wallets")
            .route(web::post().to(create))
            .route(web::get().to(list)),
    )
    .service(web::resource("/v1/wallets/{id}").route(web::get().to(get)))
    .service(web::resource("/v1/wallets/{id}/balance").route(web::get().to(balance)))
    .service(web::resource("/v1/wallets/{id}/transactions").route(web::get().to(transactions)))
    .service(web::resource("/v1/wallets/{id}/freeze").route(web::post().to(freeze)))
    .service(web::resource("/v1/wallets/{id}/unfreeze").route(web::post().to(unfreeze)))
    .service(web::resource("/v1/wallets/{id}/close").route(web::post().to(close)));
}

#[derive(OpenApi)]
#[openapi(
    paths(create, list, get, balance, transactions, freeze, unfreeze, close),
    components(schemas(NewWallet, Wallet, WalletDetail, List<Wallet>, StatusChange, Balance,
                       Transaction, List<Transaction>, FreezeBody, ReasonBody, WalletKind,
                       WalletStatus, FreezeMode, EntryKind)),
    tags((name = "wallets", description = "A wallet is a customer's ledger account \
        (`debits_must_not_exceed_credits`). Balances and statements come straight from the \
        ledger. Freezing blocks debits, credits or both at the ledger, from the moment it \
        commits; closing needs a zero balance and is final."))
)]
pub struct WalletDoc;

/// Open a wallet for a customer.
#[utoipa::path(post, path = "/v1/wallets", tag = "wallets", request_body = NewWallet, security(("bearer" = [])),
    responses(
        (status = 201, description = "Created, active, zero balance.", body = Wallet),
        (status = 400, description = "A missing or malformed field.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such customer.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn create(
    wallets: web::Data<WalletService>,
    principal: Principal,
    Idempotency(claim): Idempotency,
    body: Json<NewWallet>,
) -> Result<HttpResponse, ApiError> {
    let partner = principal.require_partner(Area::Wallets, Access::Write)?;
    let wallet = wallets.create(partner, body.into_inner(), claim).await?;
    Ok(HttpResponse::Created().json(wallet))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WalletQuery {
    customer_id: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Wallets, newest first (`?customer_id=` for one customer's).
#[utoipa::path(get, path = "/v1/wallets", tag = "wallets", security(("bearer" = [])), params(WalletQuery),
    responses((status = 200, description = "A page of wallets.", body = List<Wallet>)))]
async fn list(
    wallets: web::Data<WalletService>,
    principal: Principal,
    query: web::Query<WalletQuery>,
) -> Result<web::Json<List<Wallet>>, ApiError> {
    principal.require(Area::Wallets, Access::Read)?;
    let query = query.into_inner();
    let customer = query
        .customer_id
        .as_deref()
        .map(|raw| CustomerId::parse_field("customer_id", raw))
        .transpose()?;
    let page = PageQuery {
        limit: query.limit,
        cursor: query.cursor,
    };
    let cursor = page.cursor(|c| c.parse::<WalletId>())?;
    let result = wallets
        .list(&principal, customer, page.limit()?, cursor)
        .await?;
    Ok(web::Json(result))
}

/// A wallet, with its status history.
#[utoipa::path(get, path = "/v1/wallets/{id}", tag = "wallets", security(("bearer" = [])),
    params(("id" = String, Path, description = "Wallet id (wal_...)")),
    responses(
        (status = 200, description = "The wallet.", body = WalletDetail),
        (status = 404, description = "No such wallet.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn get(
    wallets: web::Data<WalletService>,
    principal: Principal,
    PathId(id): PathId<WalletId>,
) -> Result<web::Json<WalletDetail>, ApiError> {
    principal.require(Area::Wallets, Access::Read)?;
    Ok(web::Json(wallets.wallet(&principal, id).await?))
}

/// The wallet's balance.
#[utoipa::path(get, path = "/v1/wallets/{id}/balance", tag = "wallets", security(("bearer" = [])),
    params(("id" = String, Path, description = "Wallet id (wal_...)")),
    responses(
        (status = 200, description = "Available, pending and posted, as decimal strings.", body = Balance),
        (status = 404, description = "No such wallet.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn balance(
    wallets: web::Data<WalletService>,
    principal: Principal,
    PathId(id): PathId<WalletId>,
) -> Result<web::Json<Balance>, ApiError> {
    principal.require(Area::Wallets, Access::Read)?;
    Ok(web::Json(wallets.balance(&principal, id).await?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TransactionQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

/// The wallet's statement, newest first.
#[utoipa::path(get, path = "/v1/wallets/{id}/transactions", tag = "wallets", security(("bearer" = [])),
    params(("id" = String, Path, description = "Wallet id (wal_...)"), TransactionQuery),
    responses(
        (status = 200, description = "Entries with amount, direction, balance after, counterparty and reference.", body = List<Transaction>),
        (status = 404, description = "No such wallet.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn transactions(
    wallets: web::Data<WalletService>,
    principal: Principal,
    PathId(id): PathId<WalletId>,
    query: web::Query<TransactionQuery>,
) -> Result<web::Json<List<Transaction>>, ApiError> {
    principal.require(Area::Wallets, Access::Read)?;
    let query = query.into_inner();
    let page = PageQuery {
        limit: query.limit,
        cursor: query.cursor,
    };
    let cursor = page.cursor(|c| c.parse::<i64>())?;
    let result = wallets
        .transactions(&principal, id, page.limit()?, cursor)
        .await?;
    Ok(web::Json(result))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FreezeBody {
    /// Why; kept on the wallet's history.
    reason: String,
    /// `all` (default), `debits` (nothing leaves) or `credits` (nothing arrives).
    mode: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    /// Why; kept on the wallet's history.
    reason: String,
}

async fn change(
    wallets: &WalletService,
    principal: &Principal,
    id: WalletId,
    change: Change,
    reason: &str,
) -> Result<web::Json<Wallet>, ApiError> {
    principal.require(Area::Wallets, Access::Write)?;
    let scope = if principal.is_platform_admin() {
        None
    } else {
        principal.partner_id
    };
    Ok(web::Json(
        wallets
            .change_status(scope, &principal.actor.id(), id, change, reason)
            .await?,
    ))
}

/// Freeze a wallet.
#[utoipa::path(post, path = "/v1/wallets/{id}/freeze", tag = "wallets", request_body = FreezeBody, security(("bearer" = [])),
    params(("id" = String, Path, description = "Wallet id (wal_...)")),
    responses(
        (status = 200, description = "Frozen.", body = Wallet),
        (status = 409, description = "`wallet_already_frozen`.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "`wallet_closed`.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn freeze(
    wallets: web::Data<WalletService>,
    principal: Principal,
    PathId(id): PathId<WalletId>,
    body: Json<FreezeBody>,
) -> Result<web::Json<Wallet>, ApiError> {
    let mode = FreezeMode::from_request(body.mode.as_deref())?;
    change(&wallets, &principal, id, Change::Freeze(mode), &body.reason).await
}

/// Unfreeze a wallet.
#[utoipa::path(post, path = "/v1/wallets/{id}/unfreeze", tag = "wallets", request_body = ReasonBody, security(("bearer" = [])),
    params(("id" = String, Path, description = "Wallet id (wal_...)")),
    responses(
        (status = 200, description = "Active again.", body = Wallet),
        (status = 409, description = "`wallet_not_frozen`.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn unfreeze(
    wallets: web::Data<WalletService>,
    principal: Principal,
    PathId(id): PathId<WalletId>,
    body: Json<ReasonBody>,
) -> Result<web::Json<Wallet>, ApiError> {
    change(&wallets, &principal, id, Change::Unfreeze, &body.reason).await
}

/// Close a wallet (only at a zero balance with nothing pending; final).
#[utoipa::path(post, path = "/v1/wallets/{id}/close", tag = "wallets", request_body = ReasonBody, security(("bearer" = [])),
    params(("id" = String, Path, description = "Wallet id (wal_...)")),
    responses(
        (status = 200, description = "Closed.", body = Wallet),
        (status = 409, description = "`wallet_not_empty`.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "`wallet_closed`.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn close(
    wallets: web::Data<WalletService>,
    principal: Principal,
    PathId(id): PathId<WalletId>,
    body: Json<ReasonBody>,
) -> Result<web::Json<Wallet>, ApiError> {
    change(&wallets, &principal, id, Change::Close, &body.reason).await
}
