//! Routes of API.md "Webhooks and events". Endpoints and events belong to a partner; another
//! partner's are 404.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::model::{Attempt, AttemptId, Endpoint, EndpointId, EndpointWithSecret, Event, EventId};
use super::service::Notifier;
use crate::kernel::{Access, Area, Partners, Principal};
use crate::platform::error::{ApiError, ProblemBody};
use crate::platform::http::pagination::{List, PageQuery};
use crate::platform::http::{Json, PathId};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/webhook-endpoints")
            .route(web::post().to(create_endpoint))
            .route(web::get().to(list_endpoints)),
    )
    .service(
        web::resource("/v1/webhook-endpoints/{id}")
            .route(web::get().to(get_endpoint))
            .route(web::patch().to(update_endpoint))
            .route(web::delete().to(delete_endpoint)),
    )
    .service(
        web::resource("/v1/webhook-endpoints/{id}/rotate-secret")
            .route(web::post().to(rotate_secret)),
    )
    .service(web::resource("/v1/webhook-endpoints/{id}/test").route(web::post().to(send_test)))
    .service(
        web::resource("/v1/webhook-endpoints/{id}/attempts").route(web::get().to(list_attempts)),
    )
    .service(web::resource("/v1/events").route(web::get().to(list_events)))
    .service(web::resource("/v1/events/{id}").route(web::get().to(get_event)));
}

#[derive(OpenApi)]
#[openapi(
    paths(create_endpoint, list_endpoints, get_endpoint, update_endpoint, delete_endpoint,
          rotate_secret, send_test, list_attempts, list_events, get_event),
    components(schemas(CreateEndpoint, UpdateEndpoint, Endpoint, EndpointWithSecret, List<Endpoint>,
                       Attempt, List<Attempt>, Event, List<Event>, TestSent)),
    tags((name = "webhooks", description = "Webhook endpoints and events. Deliveries follow the \
        Standard Webhooks specification: headers `webhook-id` (the event id, the same on every \
        retry), `webhook-timestamp` and `webhook-signature` (`v1,` + base64 HMAC-SHA256 of \
        `{id}.{timestamp}.{body}` under the endpoint's `whsec_` secret; during a rotation two \
        signatures, space-separated). Body `{id, type, created, data}`. At least once: any 2xx \
        within 10 s is success, anything else is retried with backoff (about 5 s, 5 min, 30 min, \
        2 h, 5 h, 10 h, 10 h). Deduplicate on `webhook-id`."))
)]
pub struct NotifyDoc;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    /// Where to POST events (https in production).
    url: String,
    /// Event types to receive: exact (`payment.completed`), prefixes (`payment.*`) or `*`.
    events: Vec<String>,
    description: Option<String>,
}

/// Create an endpoint. Its `secret` is in this response only.
#[utoipa::path(post, path = "/v1/webhook-endpoints", tag = "webhooks", request_body = CreateEndpoint, security(("bearer" = [])),
    responses(
        (status = 201, description = "Created.", body = EndpointWithSecret),
        (status = 400, description = "Invalid URL or event filter (`field` names it).", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn create_endpoint(
    notifier: web::Data<Notifier>,
    partners: web::Data<dyn Partners>,
    principal: Principal,
    body: Json<CreateEndpoint>,
) -> Result<HttpResponse, ApiError> {
    let partner = principal.require_partner(Area::Webhooks, Access::Write)?;
    let alert_email = partners.contact_email(&principal, partner).await?;
    let body = body.into_inner();
    let created = notifier
        .create_endpoint(
            partner,
            &body.url,
            body.events,
            body.description,
            Some(alert_email),
        )
        .await?;
    Ok(HttpResponse::Created().json(created))
}

/// The partner's endpoints, newest first.
#[utoipa::path(get, path = "/v1/webhook-endpoints", tag = "webhooks", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, description = "A page of endpoints.", body = List<Endpoint>)))]
async fn list_endpoints(
    notifier: web::Data<Notifier>,
    principal: Principal,
    query: web::Query<PageQuery>,
) -> Result<web::Json<List<Endpoint>>, ApiError> {
    let partner = principal.require_partner(Area::Webhooks, Access::Read)?;
    let cursor = query.cursor(|c| c.parse::<EndpointId>())?;
    let page = notifier
        .list_endpoints(partner, query.limit()?, cursor)
        .await?;
    Ok(web::Json(page))
}

/// An endpoint.
#[utoipa::path(get, path = "/v1/webhook-endpoints/{id}", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path, description = "Endpoint id (whe_...)")),
    responses(
        (status = 200, description = "The endpoint.", body = Endpoint),
        (status = 404, description = "No such endpoint.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn get_endpoint(
    notifier: web::Data<Notifier>,
    principal: Principal,
    PathId(id): PathId<EndpointId>,
) -> Result<web::Json<Endpoint>, ApiError> {
    let partner = principal.require_partner(Area::Webhooks, Access::Read)?;
    Ok(web::Json(notifier.endpoint(partner, id).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEndpoint {
    url: Option<String>,
    events: Option<Vec<String>>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    description: Option<Option<String>>,
    /// `true` re-enables an endpoint the platform disabled (and forgets its failures).
    enabled: Option<bool>,
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
fn double_option<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// Change an endpoint's URL, events, description, or enable/disable it.
#[utoipa::path(patch, path = "/v1/webhook-endpoints/{id}", tag = "webhooks", request_body = UpdateEndpoint, security(("bearer" = [])),
    params(("id" = String, Path, description = "Endpoint id")),
    responses(
        (status = 200, description = "The endpoint as changed.", body = Endpoint),
        (status = 400, description = "Invalid URL or event filter.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn update_endpoint(
    notifier: web::Data<Notifier>,
    principal: Principal,
    PathId(id): PathId<EndpointId>,
    body: Json<UpdateEndpoint>,
) -> Result<web::Json<Endpoint>, ApiError> {
    let partner = principal.require_partner(Area::Webhooks, Access::Write)?;
    let body = body.into_inner();
    let updated = notifier
        .update_endpoint(
            partner,
            id,
            body.url,
            body.events,
            body.description,
            body.enabled,
        )
        .await?;
    Ok(web::Json(updated))
}

/// Delete an endpoint: nothing more is delivered to it.
#[utoipa::path(delete, path = "/v1/webhook-endpoints/{id}", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path, description = "Endpoint id")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, description = "No such endpoint.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn delete_endpoint(
    notifier: web::Data<Notifier>,
    principal: Principal,
    PathId(id): PathId<EndpointId>,
) -> Result<HttpResponse, ApiError> {
    let partner = principal.require_partner(Area::Webhooks, Access::Write)?;
    notifier.delete_endpoint(partner, id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// A new secret (in this response only); the old one keeps signing alongside it for the
/// configured overlap (24 h by default).
#[utoipa::path(post, path = "/v1/webhook-endpoints/{id}/rotate-secret", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path, description = "Endpoint id")),
    responses(
        (status = 200, description = "Rotated.", body = EndpointWithSecret),
        (status = 404, description = "No such endpoint.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn rotate_secret(
    notifier: web::Data<Notifier>,
    principal: Principal,
    PathId(id): PathId<EndpointId>,
) -> Result<web::Json<EndpointWithSecret>, ApiError> {
    let partner = principal.require_partner(Area::Webhooks, Access::Write)?;
    Ok(web::Json(notifier.rotate_secret(partner, id).await?))
}

#[derive(Serialize, ToSchema)]
pub struct TestSent {
    event_id: EventId,
}

/// Send a `webhook.test` event to this endpoint.
#[utoipa::path(post, path = "/v1/webhook-endpoints/{id}/test", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path, description = "Endpoint id")),
    responses(
        (status = 202, description = "Queued for delivery.", body = TestSent),
        (status = 404, description = "No such endpoint.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn send_test(
    notifier: web::Data<Notifier>,
    principal: Principal,
    PathId(id): PathId<EndpointId>,
) -> Result<HttpResponse, ApiError> {
    let partner = principal.require_partner(Area::Webhooks, Access::Write)?;
    let event_id = notifier.send_test(partner, id).await?;
    Ok(HttpResponse::Accepted().json(TestSent { event_id }))
}

/// Every delivery attempt to this endpoint, newest first: status, latency, error, and the
/// first bytes of the answer.
#[utoipa::path(get, path = "/v1/webhook-endpoints/{id}/attempts", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path, description = "Endpoint id"), PageQuery),
    responses(
        (status = 200, description = "A page of attempts.", body = List<Attempt>),
        (status = 404, description = "No such endpoint.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn list_attempts(
    notifier: web::Data<Notifier>,
    principal: Principal,
    PathId(id): PathId<EndpointId>,
    query: web::Query<PageQuery>,
) -> Result<web::Json<List<Attempt>>, ApiError> {
    let partner = principal.require_partner(Area::Webhooks, Access::Read)?;
    let cursor = query.cursor(|c| c.parse::<AttemptId>())?;
    let page = notifier
        .attempts(partner, id, query.limit()?, cursor)
        .await?;
    Ok(web::Json(page))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    /// Only events of this type.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    event_type: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// The partner's events, newest first.
#[utoipa::path(get, path = "/v1/events", tag = "webhooks", security(("bearer" = [])), params(EventQuery),
    responses(
        (status = 200, description = "A page of events.", body = List<Event>),
        (status = 400, description = "Invalid limit or cursor.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn list_events(
    notifier: web::Data<Notifier>,
    principal: Principal,
    query: web::Query<EventQuery>,
) -> Result<web::Json<List<Event>>, ApiError> {
    let partner = principal.require_partner(Area::Webhooks, Access::Read)?;
    let query = query.into_inner();
    let page = PageQuery {
        limit: query.limit,
        cursor: query.cursor,
    };
    let cursor = page.cursor(|c| c.parse::<EventId>())?;
    let result = notifier
        .list_events(partner, query.event_type.as_deref(), page.limit()?, cursor)
        .await?;
    Ok(web::Json(result))
}

/// An event.
#[utoipa::path(get, path = "/v1/events/{id}", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path, description = "Event id (evt_...)")),
    responses(
        (status = 200, description = "The event.", body = Event),
        (status = 404, description = "No such event.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn get_event(
    notifier: web::Data<Notifier>,
    principal: Principal,
    PathId(id): PathId<EventId>,
) -> Result<web::Json<Event>, ApiError> {
    let partner = principal.require_partner(Area::Webhooks, Access::Read)?;
    Ok(web::Json(notifier.event(partner, id).await?))
}
