//! Auth's HTTP face: the authentication and rate-limit middleware for `/v1`, the `Principal`
//! and `RequestMeta` extractors, and the routes of API.md "Auth and tenancy".

use std::future::{Ready, ready};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError, web};
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

use super::error::AuthError;
use super::model::{AccessToken, ApiKey, CreatedApiKey, Partner, User, ceil_secs, partner_field};
use super::service::{AuthService, Caller, RequestMeta};
use crate::kernel::{ApiKeyId, PartnerId, Principal, Role};
use crate::platform::error::{ApiError, ProblemBody};
use crate::platform::http::current_request_id;
use crate::platform::http::pagination::{List, PageQuery};
use crate::platform::http::{Json, PathId};
use crate::platform::shared_state::RateDecision;

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/v1/auth/login").route(web::post().to(login)))
        .service(web::resource("/v1/auth/me").route(web::get().to(me)))
        .service(web::resource("/v1/auth/password-reset").route(web::post().to(password_reset)))
        .service(
            web::resource("/v1/auth/password-reset/confirm")
                .route(web::post().to(password_reset_confirm)),
        )
        .service(web::resource("/v1/partners").route(web::post().to(create_partner)))
        .service(web::resource("/v1/partners/{id}").route(web::get().to(get_partner)))
        .service(web::resource("/v1/users").route(web::post().to(create_user)))
        .service(
            web::resource("/v1/api-keys")
                .route(web::post().to(create_api_key))
                .route(web::get().to(list_api_keys)),
        )
        .service(web::resource("/v1/api-keys/{id}").route(web::delete().to(revoke_api_key)));
}

/// Auth's part of the OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    paths(login, me, password_reset, password_reset_confirm, create_partner, get_partner,
          create_user, create_api_key, list_api_keys, revoke_api_key),
    components(schemas(LoginRequest, AccessToken, MeResponse, PasswordResetRequest,
                       PasswordResetConfirm, CreatePartner, Partner, CreateUser, User, Role,
                       CreateApiKey, ApiKey, CreatedApiKey, List<ApiKey>)),
    modifiers(&BearerAuth),
    tags((name = "auth", description = "Login, partners, users and API keys. Every /v1 request \
        authenticates with `Authorization: Bearer <API key or access token>`; limits per IP \
        (unauthenticated), per key or user, and per partner answer 429 with Retry-After, and \
        every /v1 response carries RateLimit-Limit, RateLimit-Remaining and RateLimit-Reset."))
)]
pub struct AuthDoc;

/// Declares the bearer scheme routes refer to.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A partner API key (flk_...) or an access token from POST /v1/auth/login.",
                    ))
                    .build(),
            ),
        );
    }
}

// ----- middleware ------------------------------------------------------------------------------

const RATE_LIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const RATE_LIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RATE_LIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// Authenticates every `/v1` request that carries credentials and applies the rate limits:
/// per IP for unauthenticated requests and failed authentications, per key or user and per
/// partner otherwise. Puts the [`Principal`] in the request for handlers to extract. Platform
/// routes (`/health`, `/metrics`, ...) pass untouched: probes must never be throttled.
pub async fn authenticate(
    svc: web::Data<AuthService>,
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if !req.path().starts_with("/v1/") {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    }
    let ip = svc
        .client_ip(req.request())
        .unwrap_or_else(|| "unknown".to_owned());
    let credentials = req.headers().get(header::AUTHORIZATION).map(bearer_token);
    let (authenticated, failure, counted) = match credentials {
        None => (None, None, None),
        Some(None) => (None, Some(AuthError::Unauthorized), None),
        Some(Some(token)) => match svc.authenticate_limited(&token).await {
            (Ok(who), decision) => (Some(who), None, decision),
            (Err(e), _) => (None, Some(e), None),
        },
    };
    let decision = if !svc.rate_limits_enabled() {
        None
    } else if authenticated.is_some() {
        counted
    } else {
        svc.limit_ip(&ip).await
    };
    if let Some(decision) = decision.filter(|d| !d.allowed) {
        let retry_after = decision.retry_after.unwrap_or(decision.reset_after);
        let mut resp = ApiError::from(AuthError::RateLimited { retry_after }).error_response();
        set_rate_headers(resp.headers_mut(), &decision);
        if let Ok(v) = HeaderValue::from_str(&ceil_secs(retry_after).max(1).to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return Ok(req.into_response(resp));
    }
    if let Some(err) = failure {
        let mut resp = ApiError::from(err).error_response();
        if let Some(decision) = &decision {
            set_rate_headers(resp.headers_mut(), decision);
        }
        return Ok(req.into_response(resp));
    }
    if let Some(who) = authenticated {
        req.extensions_mut().insert(who.principal);
    }
    let mut res = next.call(req).await?.map_into_boxed_body();
    if let Some(decision) = &decision {
        set_rate_headers(res.headers_mut(), decision);
    }
    Ok(res)
}

/// The token of `Authorization: Bearer <token>`; `None` when the header is malformed.
fn bearer_token(value: &HeaderValue) -> Option<String> {
    let value = value.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= 4096)
        .then(|| token.to_owned())
}

fn set_rate_headers(headers: &mut header::HeaderMap, decision: &RateDecision) {
    for (name, value) in [
        (RATE_LIMIT_LIMIT, decision.limit),
        (RATE_LIMIT_REMAINING, decision.remaining),
        (RATE_LIMIT_RESET, ceil_secs(decision.reset_after)),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
            headers.insert(name, v);
        }
    }
}

// ----- extractors ------------------------------------------------------------------------------

impl FromRequest for RequestMeta {
    type Error = ApiError;
    type Future = Ready<Result<RequestMeta, ApiError>>;

    /// Client IP and request id, for the audit log.
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let ip = req
            .app_data::<web::Data<AuthService>>()
            .and_then(|svc| svc.client_ip(req));
        ready(Ok(RequestMeta {
            ip,
            request_id: current_request_id(),
        }))
    }
}

// ----- routes ----------------------------------------------------------------------------------

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    email: String,
    #[schema(value_type = String, format = Password)]
    password: SecretString,
}

/// Log in with email and password; answers an access token (JWT, HS256, 24 h by default).
/// Unknown email, wrong password and a locked account give the same 401.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in.", body = AccessToken),
        (status = 401, description = "Wrong email or password (`invalid_credentials`).", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts from this IP.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn login(
    svc: web::Data<AuthService>,
    meta: RequestMeta,
    body: Json<LoginRequest>,
) -> Result<web::Json<AccessToken>, ApiError> {
    let body = body.into_inner();
    Ok(web::Json(
        svc.login(&body.email, body.password, &meta).await?,
    ))
}

/// `GET /v1/auth/me`.
#[derive(Serialize, ToSchema)]
pub struct MeResponse {
    /// `user` or `api_key`.
    #[serde(rename = "type")]
    kind: &'static str,
    id: String,
    partner_id: Option<PartnerId>,
    role: Role,
    scopes: Option<Vec<String>>,
    email: Option<String>,
}

/// Who the credentials belong to.
#[utoipa::path(get, path = "/v1/auth/me", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller.", body = MeResponse),
        (status = 401, description = "No valid credentials.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn me(
    svc: web::Data<AuthService>,
    principal: Principal,
) -> Result<web::Json<MeResponse>, ApiError> {
    let me = svc.me(&principal).await?;
    let p = me.principal;
    Ok(web::Json(MeResponse {
        kind: p.actor.kind(),
        id: p.actor.id(),
        partner_id: p.partner_id,
        role: p.role,
        scopes: p.scopes.as_ref().map(crate::kernel::Scopes::to_strings),
        email: me.email,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordResetRequest {
    email: String,
}

/// Ask for a password-reset token by email. Always 202, whether or not the email is known.
#[utoipa::path(post, path = "/v1/auth/password-reset", tag = "auth", request_body = PasswordResetRequest,
    responses((status = 202, description = "If the email is known, a one-time token was sent to it.")))]
async fn password_reset(
    svc: web::Data<AuthService>,
    meta: RequestMeta,
    body: Json<PasswordResetRequest>,
) -> Result<HttpResponse, ApiError> {
    svc.request_password_reset(&body.email, &meta).await?;
    Ok(HttpResponse::Accepted().finish())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordResetConfirm {
    #[schema(value_type = String)]
    token: SecretString,
    #[schema(value_type = String, format = Password)]
    new_password: SecretString,
}

/// Set a new password with a reset token. The token works once; earlier sessions end.
#[utoipa::path(post, path = "/v1/auth/password-reset/confirm", tag = "auth", request_body = PasswordResetConfirm,
    responses(
        (status = 204, description = "Password changed."),
        (status = 400, description = "`invalid_token`, or the password breaks the policy (`password_too_short`, `password_too_common`, ...).", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn password_reset_confirm(
    svc: web::Data<AuthService>,
    meta: RequestMeta,
    body: Json<PasswordResetConfirm>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    svc.confirm_password_reset(body.token, body.new_password, &meta)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePartner {
    name: String,
    /// The partner's contact email.
    email: String,
}

/// Create a partner (platform admins only).
#[utoipa::path(post, path = "/v1/partners", tag = "auth", request_body = CreatePartner, security(("bearer" = [])),
    responses(
        (status = 201, description = "Created.", body = Partner),
        (status = 400, description = "Invalid name or email.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Not a platform admin.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn create_partner(
    svc: web::Data<AuthService>,
    principal: Principal,
    meta: RequestMeta,
    body: Json<CreatePartner>,
) -> Result<HttpResponse, ApiError> {
    let partner = svc
        .create_partner(
            &Caller::Principal(principal),
            &body.name,
            &body.email,
            &meta,
        )
        .await?;
    Ok(HttpResponse::Created().json(partner))
}

/// A partner: one's own, or any for platform admins. Another partner's is 404.
#[utoipa::path(get, path = "/v1/partners/{id}", tag = "auth", security(("bearer" = [])),
    params(("id" = String, Path, description = "Partner id (ptn_...)")),
    responses(
        (status = 200, description = "The partner.", body = Partner),
        (status = 404, description = "No such partner.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn get_partner(
    svc: web::Data<AuthService>,
    principal: Principal,
    PathId(id): PathId<PartnerId>,
) -> Result<web::Json<Partner>, ApiError> {
    Ok(web::Json(svc.get_partner(&principal, id).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    email: String,
    #[schema(value_type = String, format = Password)]
    password: SecretString,
    /// `partner_admin` or `partner_developer` (read-only).
    role: Role,
    /// Platform admins name the partner; partner admins may omit it.
    partner_id: Option<String>,
}

/// Create a user of a partner (partner admins; platform admins naming the partner).
#[utoipa::path(post, path = "/v1/users", tag = "auth", request_body = CreateUser, security(("bearer" = [])),
    responses(
        (status = 201, description = "Created.", body = User),
        (status = 400, description = "Invalid email, or the password breaks the policy.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "The caller may not create users, or asked for platform_admin.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "`email_taken`.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn create_user(
    svc: web::Data<AuthService>,
    principal: Principal,
    meta: RequestMeta,
    body: Json<CreateUser>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let partner = partner_field(body.partner_id.as_deref())?;
    let user = svc
        .create_user(
            &Caller::Principal(principal),
            partner,
            &body.email,
            body.password,
            body.role,
            &meta,
        )
        .await?;
    Ok(HttpResponse::Created().json(user))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    name: String,
    /// e.g. `["wallets:read", "payments:write"]`; omit for full access.
    scopes: Option<Vec<String>>,
    expires_at: Option<DateTime<Utc>>,
    /// Platform admins name the partner.
    partner_id: Option<String>,
}

/// Create an API key. The secret is in this response only.
#[utoipa::path(post, path = "/v1/api-keys", tag = "auth", request_body = CreateApiKey, security(("bearer" = [])),
    responses(
        (status = 201, description = "Created; `secret` is shown this once.", body = CreatedApiKey),
        (status = 400, description = "Invalid name, scopes or expiry.", body = ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "The caller may not manage keys.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn create_api_key(
    svc: web::Data<AuthService>,
    principal: Principal,
    meta: RequestMeta,
    body: Json<CreateApiKey>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let partner = partner_field(body.partner_id.as_deref())?;
    let created = svc
        .create_api_key(
            &Caller::Principal(principal),
            partner,
            &body.name,
            body.scopes,
            body.expires_at,
            &meta,
        )
        .await?;
    Ok(HttpResponse::Created().json(created))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListApiKeysQuery {
    /// 1 to 200, default 50.
    limit: Option<u32>,
    cursor: Option<String>,
    /// Platform admins name the partner.
    partner_id: Option<String>,
}

/// The partner's API keys, newest first (never their secrets).
#[utoipa::path(get, path = "/v1/api-keys", tag = "auth", security(("bearer" = [])), params(ListApiKeysQuery),
    responses(
        (status = 200, description = "A page of keys.", body = List<ApiKey>),
        (status = 400, description = "Invalid limit or cursor.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn list_api_keys(
    svc: web::Data<AuthService>,
    principal: Principal,
    query: web::Query<ListApiKeysQuery>,
) -> Result<web::Json<List<ApiKey>>, ApiError> {
    let query = query.into_inner();
    let page = PageQuery {
        limit: query.limit,
        cursor: query.cursor,
    };
    let partner = partner_field(query.partner_id.as_deref())?;
    let cursor = page.cursor(|c| c.parse::<ApiKeyId>())?;
    let result = svc
        .list_api_keys(&principal, partner, page.limit()?, cursor)
        .await?;
    Ok(web::Json(result))
}

/// Revoke an API key: refused on every replica from the next request on.
#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "auth", security(("bearer" = [])),
    params(("id" = String, Path, description = "API key id (key_...)")),
    responses(
        (status = 204, description = "Revoked (or already revoked)."),
        (status = 404, description = "No such key.", body = ProblemBody, content_type = "application/problem+json"),
    ))]
async fn revoke_api_key(
    svc: web::Data<AuthService>,
    principal: Principal,
    meta: RequestMeta,
    PathId(id): PathId<ApiKeyId>,
) -> Result<HttpResponse, ApiError> {
    svc.revoke_api_key(&Caller::Principal(principal), None, id, &meta)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_only_from_well_formed_headers() {
        let h = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(bearer_token(&h("Bearer abc")).as_deref(), Some("abc"));
        assert_eq!(bearer_token(&h("bearer abc")).as_deref(), Some("abc"));
        assert_eq!(bearer_token(&h("Basic abc")), None);
        assert_eq!(bearer_token(&h("Bearer")), None);
        assert_eq!(bearer_token(&h("Bearer ")), None);
        assert_eq!(bearer_token(&h("abc")), None);
    }

    #[test]
    fn rate_headers_carry_the_binding_decision() {
        let mut headers = header::HeaderMap::new();
        set_rate_headers(
            &mut headers,
            &RateDecision {
                allowed: true,
                limit: 100,
                remaining: 41,
                reset_after: std::time::Duration::from_millis(2500),
                retry_after: None,
            },
        );
        assert_eq!(headers.get("ratelimit-limit").unwrap(), "100");
        assert_eq!(headers.get("ratelimit-remaining").unwrap(), "41");
        assert_eq!(headers.get("ratelimit-reset").unwrap(), "3");
    }
}
