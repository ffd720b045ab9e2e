//! Routes of API.md "Payments" (P2P payments and deposits so far).

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi};

use super::model::{PaymentId, PaymentKind, PaymentStatus};
use super::service::{NewDeposit, NewPayment, NewRefund, NewWithdrawal, Payment, PaymentService};
use crate::kernel::{Access, Area, Principal};
use crate::platform::error::{ApiError, ProblemBody};
use crate::platform::http::pagination::{List, PageQuery};
use crate::platform::http::{Json, PathId};
use crate::platform::idempotency::Idempotency;
use crate::wallet::WalletId;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/payments")
            .route(web::post().to(pay))
            .route(web::get().to(list)),
    )
    .service(web::resource("/v1/payments/{id}").route(web::get().to(get)))
    .service(web::resource("/v1/payments/{id}/refunds").route(web::post().to(refund)))
    .service(web::resource("/v1/deposits").route(web::post().to(deposit)))
    .service(web::resource("/v1/withdrawals").route(web::post().to(withdraw)));
}

#[derive(OpenApi)]
#[openapi(
    paths(pay, deposit, withdraw, refund, get, list),
    components(schemas(NewPayment, NewDeposit, NewWithdrawal, NewRefund, Payment, List<Payment>,
                       PaymentKind, PaymentStatus)),
    tags((name = "payments", description = "Money between wallets (P2P) and into them \
        (deposits). Every payment is one ledger transfer committed with the payment, the \
        customers' tier limits and its event. Refusals: 422 `insufficient_funds`, \
        `wallet_frozen`, `wallet_closed`, `currency_mismatch`; 403 `kyc_required`, \
        `limit_exceeded`. Nothing moves on a refusal."))
)]
pub struct PaymentDoc;

/// Pay from one wallet to another.
#[utoipa::path(post, path = "/v1/payments", tag = "payments", request_body = NewPayment, security(("bearer" = [])),
    responses(
        (status = 201, description = "Completed.", body = Payment),
        (status = 400, description = "A missing or malformed field, or a bad amount.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "`kyc_required` or `limit_exceeded`.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such wallet.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "`insufficient_funds`, `wallet_frozen`, `wallet_closed`, `currency_mismatch`.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn pay(
    payments: web::Data<PaymentService>,
    principal: Principal,
    Idempotency(claim): Idempotency,
    body: Json<NewPayment>,
) -> Result<HttpResponse, ApiError> {
    let partner = principal.require_partner(Area::Payments, Access::Write)?;
    let payment = payments.pay(partner, body.into_inner(), claim).await?;
    Ok(HttpResponse::Created().json(payment))
}

/// Fund a wallet from outside (the sandbox rail settles at once).
#[utoipa::path(post, path = "/v1/deposits", tag = "payments", request_body = NewDeposit, security(("bearer" = [])),
    responses(
        (status = 201, description = "Completed.", body = Payment),
        (status = 400, description = "A missing or malformed field, or a bad amount.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "`kyc_required` or `limit_exceeded` (the tier's balance cap).", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such wallet.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "`wallet_frozen`, `wallet_closed`, `currency_mismatch`.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn deposit(
    payments: web::Data<PaymentService>,
    principal: Principal,
    Idempotency(claim): Idempotency,
    body: Json<NewDeposit>,
) -> Result<HttpResponse, ApiError> {
    let partner = principal.require_partner(Area::Payments, Access::Write)?;
    let payment = payments.deposit(partner, body.into_inner(), claim).await?;
    Ok(HttpResponse::Created().json(payment))
}

/// Pay out of a wallet: the money is held at once (`pending`) and the payment completes or
/// fails when the rail settles (`payment.completed` / `payment.failed`). The sandbox rail fails
/// amounts ending in `.13`.
#[utoipa::path(post, path = "/v1/withdrawals", tag = "payments", request_body = NewWithdrawal, security(("bearer" = [])),
    responses(
        (status = 201, description = "Pending: the money is held.", body = Payment),
        (status = 400, description = "A missing or malformed field, or a bad amount.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "`kyc_required` or `limit_exceeded`.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "`insufficient_funds`, `wallet_frozen`, `wallet_closed`, `currency_mismatch`.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn withdraw(
    payments: web::Data<PaymentService>,
    principal: Principal,
    Idempotency(claim): Idempotency,
    body: Json<NewWithdrawal>,
) -> Result<HttpResponse, ApiError> {
    let partner = principal.require_partner(Area::Payments, Access::Write)?;
    let payment = payments.withdraw(partner, body.into_inner(), claim).await?;
    Ok(HttpResponse::Created().json(payment))
}

/// Refund (part of) a completed payment between wallets: money goes back from the payee;
/// never more in total than was paid. Fully refunded, the payment becomes `reversed`.
#[utoipa::path(post, path = "/v1/payments/{id}/refunds", tag = "payments", request_body = NewRefund, security(("bearer" = [])),
    params(("id" = String, Path, description = "Payment id (pay_...)")),
    responses(
        (status = 201, description = "The refund, itself a payment of type `refund`.", body = Payment),
        (status = 404, description = "No such payment.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "`refund_exceeds_payment` (with `remaining`), `payment_not_refundable`, `insufficient_funds`, `wallet_frozen`, `wallet_closed`.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn refund(
    payments: web::Data<PaymentService>,
    principal: Principal,
    Idempotency(claim): Idempotency,
    PathId(id): PathId<PaymentId>,
    body: Json<NewRefund>,
) -> Result<HttpResponse, ApiError> {
    let partner = principal.require_partner(Area::Payments, Access::Write)?;
    let payment = payments
        .refund(partner, id, body.into_inner(), claim)
        .await?;
    Ok(HttpResponse::Created().json(payment))
}

/// A payment.
#[utoipa::path(get, path = "/v1/payments/{id}", tag = "payments", security(("bearer" = [])),
    params(("id" = String, Path, description = "Payment id (pay_...)")),
    responses(
        (status = 200, description = "The payment.", body = Payment),
        (status = 404, description = "No such payment.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn get(
    payments: web::Data<PaymentService>,
    principal: Principal,
    PathId(id): PathId<PaymentId>,
) -> Result<web::Json<Payment>, ApiError> {
    principal.require(Area::Payments, Access::Read)?;
    Ok(web::Json(payments.payment(&principal, id).await?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PaymentQuery {
    wallet_id: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Payments, newest first (`?wallet_id=` for one wallet's, either side).
#[utoipa::path(get, path = "/v1/payments", tag = "payments", security(("bearer" = [])), params(PaymentQuery),
    responses((status = 200, description = "A page of payments.", body = List<Payment>)))]
async fn list(
    payments: web::Data<PaymentService>,
    principal: Principal,
    query: web::Query<PaymentQuery>,
) -> Result<web::Json<List<Payment>>, ApiError> {
    principal.require(Area::Payments, Access::Read)?;
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
    let cursor = page.cursor(|c| c.parse::<PaymentId>())?;
    let result = payments
        .list(&principal, wallet, page.limit()?, cursor)
        .await?;
    Ok(web::Json(result))
}
