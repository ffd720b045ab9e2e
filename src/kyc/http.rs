//! Routes of API.md "Customers and KYC". Customers belong to a partner; another partner's are
//! 404. Platform admins read every partner's and decide applications in review.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::model::{Address, ApplicationId, Check, CheckName, CheckResult, CustomerId, Status};
use super::service::{
    Application, Customer, KycService, NewCustomer, ReviewDecision, ScreeningHit, Submission,
    TierView, Transition,
};
use crate::kernel::forbidden;
use crate::kernel::{Access, Area, Principal};
use crate::platform::error::{ApiError, ProblemBody};
use crate::platform::http::pagination::{List, PageQuery};
use crate::platform::http::{Json, PathId};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/customers")
            .route(web::post().to(create_customer))
            .route(web::get().to(list_customers)),
    )
    .service(web::resource("/v1/customers/{id}").route(web::get().to(get_customer)))
    .service(
        web::resource("/v1/customers/{id}/kyc")
            .route(web::post().to(submit))
            .route(web::get().to(latest_application)),
    )
    .service(web::resource("/v1/kyc/applications").route(web::get().to(list_applications)))
    .service(web::resource("/v1/kyc/applications/{id}").route(web::get().to(get_application)))
    .service(web::resource("/v1/kyc/applications/{id}/decision").route(web::post().to(decide)))
    .service(web::resource("/v1/kyc/tiers").route(web::get().to(tiers)));
}

#[derive(OpenApi)]
#[openapi(
    paths(create_customer, list_customers, get_customer, submit, latest_application,
          list_applications, get_application, decide, tiers),
    components(schemas(NewCustomer, Customer, List<Customer>, Address, Submission, Application,
                       List<Application>, Check, CheckName, CheckResult, Status, Transition,
                       ScreeningHit, DecisionBody, ReviewDecision, TierView, TierList)),
    tags((name = "kyc", description = "Customers, KYC applications and tiers. A submission runs \
        the automated checks (required data, age, document format and expiry, duplicate \
        identity, high-risk country, sanctions screening) and ends approved (tier 1), rejected, \
        in review, or awaiting documents. Tier 2 always needs a person's review. Money \
        movements over a tier's limits are refused with 403 `kyc_required` or \
        `limit_exceeded` (`limit`, `limit_amount`, `remaining`)."))
)]
pub struct KycDoc;

/// Open a customer. Personal data is encrypted at rest.
#[utoipa::path(post, path = "/v1/customers", tag = "kyc", request_body = NewCustomer, security(("bearer" = [])),
    responses(
        (status = 201, description = "Created, `kyc_status: none`, tier 0.", body = Customer),
        (status = 400, description = "A missing or malformed field (`field` names it).", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "`external_id_taken`.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn create_customer(
    kyc: web::Data<KycService>,
    principal: Principal,
    body: Json<NewCustomer>,
) -> Result<HttpResponse, ApiError> {
    let partner = principal.require_partner(Area::Customers, Access::Write)?;
    let customer = kyc.create_customer(partner, body.into_inner()).await?;
    Ok(HttpResponse::Created().json(customer))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CustomerQuery {
    /// The partner's own reference.
    external_id: Option<String>,
    /// Exact email (case-insensitive).
    email: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Customers, newest first.
#[utoipa::path(get, path = "/v1/customers", tag = "kyc", security(("bearer" = [])), params(CustomerQuery),
    responses((status = 200, description = "A page of customers.", body = List<Customer>)))]
async fn list_customers(
    kyc: web::Data<KycService>,
    principal: Principal,
    query: web::Query<CustomerQuery>,
) -> Result<web::Json<List<Customer>>, ApiError> {
    principal.require(Area::Customers, Access::Read)?;
    let query = query.into_inner();
    let page = PageQuery {
        limit: query.limit,
        cursor: query.cursor,
    };
    let cursor = page.cursor(|c| c.parse::<CustomerId>())?;
    let result = kyc
        .list_customers(
            &principal,
            query.external_id.as_deref(),
            query.email.as_deref(),
            page.limit()?,
            cursor,
        )
        .await?;
    Ok(web::Json(result))
}

/// A customer.
#[utoipa::path(get, path = "/v1/customers/{id}", tag = "kyc", security(("bearer" = [])),
    params(("id" = String, Path, description = "Customer id (cus_...)")),
    responses(
        (status = 200, description = "The customer.", body = Customer),
        (status = 404, description = "No such customer.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn get_customer(
    kyc: web::Data<KycService>,
    principal: Principal,
    PathId(id): PathId<CustomerId>,
) -> Result<web::Json<Customer>, ApiError> {
    principal.require(Area::Customers, Access::Read)?;
    Ok(web::Json(kyc.customer(&principal, id).await?))
}

/// Submit a KYC application (or send what an application awaiting documents misses). The
/// automated checks run at once; the response carries their results and the outcome.
#[utoipa::path(post, path = "/v1/customers/{id}/kyc", tag = "kyc", request_body = Submission, security(("bearer" = [])),
    params(("id" = String, Path, description = "Customer id (cus_...)")),
    responses(
        (status = 201, description = "The application: `approved`, `rejected`, `review` or `awaiting_documents`, with every check.", body = Application),
        (status = 400, description = "A missing or malformed field.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such customer.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "`application_in_progress`.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn submit(
    kyc: web::Data<KycService>,
    principal: Principal,
    PathId(id): PathId<CustomerId>,
    body: Json<Submission>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Area::Customers, Access::Write)?;
    let application = kyc.submit(&principal, id, body.into_inner()).await?;
    Ok(HttpResponse::Created().json(application))
}

/// The customer's latest KYC application.
#[utoipa::path(get, path = "/v1/customers/{id}/kyc", tag = "kyc", security(("bearer" = [])),
    params(("id" = String, Path, description = "Customer id (cus_...)")),
    responses(
        (status = 200, description = "The latest application, with its checks and transitions.", body = Application),
        (status = 404, description = "No such customer, or no application yet.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn latest_application(
    kyc: web::Data<KycService>,
    principal: Principal,
    PathId(id): PathId<CustomerId>,
) -> Result<web::Json<Application>, ApiError> {
    principal.require(Area::Customers, Access::Read)?;
    Ok(web::Json(kyc.latest_application(&principal, id).await?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ApplicationQuery {
    /// `pending`, `awaiting_documents`, `approved`, `rejected` or `review`.
    status: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// KYC applications, newest first (`?status=review` is the review queue).
#[utoipa::path(get, path = "/v1/kyc/applications", tag = "kyc", security(("bearer" = [])), params(ApplicationQuery),
    responses(
        (status = 200, description = "A page of applications.", body = List<Application>),
        (status = 400, description = "Unknown status.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn list_applications(
    kyc: web::Data<KycService>,
    principal: Principal,
    query: web::Query<ApplicationQuery>,
) -> Result<web::Json<List<Application>>, ApiError> {
    principal.require(Area::Customers, Access::Read)?;
    let query = query.into_inner();
    let status = query
        .status
        .as_deref()
        .map(Status::from_request)
        .transpose()?;
    let page = PageQuery {
        limit: query.limit,
        cursor: query.cursor,
    };
    let cursor = page.cursor(|c| c.parse::<ApplicationId>())?;
    let result = kyc
        .list_applications(&principal, status, page.limit()?, cursor)
        .await?;
    Ok(web::Json(result))
}

/// A KYC application.
#[utoipa::path(get, path = "/v1/kyc/applications/{id}", tag = "kyc", security(("bearer" = [])),
    params(("id" = String, Path, description = "Application id (kyc_...)")),
    responses(
        (status = 200, description = "The application.", body = Application),
        (status = 404, description = "No such application.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn get_application(
    kyc: web::Data<KycService>,
    principal: Principal,
    PathId(id): PathId<ApplicationId>,
) -> Result<web::Json<Application>, ApiError> {
    principal.require(Area::Customers, Access::Read)?;
    Ok(web::Json(kyc.application(&principal, id).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// `approve` or `reject`.
    decision: ReviewDecision,
    /// Why; recorded on the transition.
    reason: String,
}

/// Decide an application in review (platform admins; not the person who submitted or last
/// changed it).
#[utoipa::path(post, path = "/v1/kyc/applications/{id}/decision", tag = "kyc", request_body = DecisionBody, security(("bearer" = [])),
    params(("id" = String, Path, description = "Application id (kyc_...)")),
    responses(
        (status = 200, description = "The decided application.", body = Application),
        (status = 400, description = "Missing reason or unknown decision.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Not a platform admin, or `four_eyes_required`.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "`application_not_in_review`.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn decide(
    kyc: web::Data<KycService>,
    principal: Principal,
    PathId(id): PathId<ApplicationId>,
    body: Json<DecisionBody>,
) -> Result<web::Json<Application>, ApiError> {
    if !principal.is_platform_admin() {
        return Err(forbidden("Only platform admins decide KYC applications."));
    }
    let body = body.into_inner();
    Ok(web::Json(
        kyc.review(&principal, id, body.decision, &body.reason)
            .await?,
    ))
}

#[derive(Serialize, ToSchema)]
pub struct TierList {
    data: Vec<TierView>,
}

/// The KYC tiers and their limits per currency.
#[utoipa::path(get, path = "/v1/kyc/tiers", tag = "kyc", security(("bearer" = [])),
    responses((status = 200, description = "Tiers 0, 1 and 2.", body = TierList)))]
async fn tiers(
    kyc: web::Data<KycService>,
    principal: Principal,
) -> Result<web::Json<TierList>, ApiError> {
    principal.require(Area::Customers, Access::Read)?;
    Ok(web::Json(TierList { data: kyc.tiers() }))
}
