//! Auth and tenancy: partners (tenants), their users and API keys, login tokens, roles and
//! scopes, rate limits, password reset and the audit log.
//!
//! Every other module is multi-tenant through this one. A handler takes a [`Principal`]
//! (extracted from the request the [`authenticate`] middleware checked), asks
//! [`Principal::allows`] for the action, and filters every query by the principal's partner.
//! Another partner's object is answered exactly like a missing one (404).
//!
//! Credentials: API keys (`flk_<tag>_...`, stored only as an HMAC-SHA256 under
//! `auth.api_key_secret`, checked against the database on every request so revocation is
//! immediate on every replica) and access tokens (JWT HS256 with `kid` rotation, from
//! `POST /v1/auth/login`). Passwords are argon2id.

mod crypto;
mod error;
mod http;
mod model;
mod service;
mod settings;
mod store;

pub use error::AuthError;
pub use http::{authenticate, configure};
pub use model::{ApiKey, Partner, User};
pub use service::{AuthService, Caller, RequestMeta};
pub use settings::{AuthSettings, RateLimitSettings};

/// Auth's part of the OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <http::AuthDoc as utoipa::OpenApi>::openapi()
}

#[async_trait::async_trait]
impl crate::kernel::Partners for AuthService {
    async fn contact_email(
        &self,
        principal: &crate::kernel::Principal,
        partner: crate::kernel::PartnerId,
    ) -> Result<String, crate::platform::error::ApiError> {
        Ok(self.get_partner(principal, partner).await?.email)
    }
}
