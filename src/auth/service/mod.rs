//! Auth's use cases: authenticate a request, log in, manage partners, users and API keys,
//! reset passwords, rate-limit callers, and keep the audit log.
//!
//! This file holds the service itself (its state, constructor and the password hashing every
//! part uses) and who a request comes from ([`RequestMeta`], [`Caller`]); the methods live in
//! one file per group, each an `impl AuthService` block: [`authenticate`] (bearer tokens, the
//! API-key cache, rate limits), [`sessions`] (login, password reset, the caller's identity),
//! [`tenancy`] (partners, users, API keys) and [`audit`] (the audit log).

mod audit;
mod authenticate;
mod sessions;
mod tenancy;

use std::sync::Arc;

use secrecy::SecretString;

use super::crypto::{Jwt, JwtConfig, PasswordParams, Passwords, SecretDigester};
use super::error::AuthError;
use super::settings::{AuthSettings, RateLimitSettings};
use crate::kernel::{Access, Area, PartnerId, Principal};
use crate::notify::Outbox;
use crate::platform::db::Db;
use crate::platform::shared_state::SharedState;
use authenticate::CachedKey;

pub use audit::{AuditEntry, record_audit};

/// What is known about the request besides its credentials, for the audit log.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    pub ip: Option<String>,
    pub request_id: Option<String>,
}

/// Who asks for a change: an authenticated API caller, or an operator at the CLI (whose
/// authority is shell access to a configured host, so role checks do not apply).
#[derive(Debug, Clone)]
pub enum Caller {
    Principal(Principal),
    Operator(String),
}

impl Caller {
    fn principal(&self) -> Option<&Principal> {
        match self {
            Self::Principal(p) => Some(p),
            Self::Operator(_) => None,
        }
    }

    fn actor_type(&self) -> &'static str {
        match self {
            Self::Principal(p) => p.actor.kind(),
            Self::Operator(_) => "operator",
        }
    }

    fn actor_id(&self) -> String {
        match self {
            Self::Principal(p) => p.actor.id(),
            Self::Operator(name) => name.clone(),
        }
    }

    /// Operators may do anything; principals as their role and scopes allow.
    fn require(&self, area: Area, access: Access) -> Result<(), AuthError> {
        match self {
            Self::Operator(_) => Ok(()),
            Self::Principal(p) if p.allows(area, access) => Ok(()),
            Self::Principal(_) => Err(AuthError::forbidden(format!(
                "These credentials may not {} {}.",
                access.verb(),
                area.as_str()
            ))),
        }
    }

    /// The partner a request acts on: a partner's own, or for platform admins and operators
    /// the one they name. Naming another partner than one's own looks like "no such partner".
    fn target_partner(&self, requested: Option<PartnerId>) -> Result<PartnerId, AuthError> {
        match (self.principal().and_then(|p| p.partner_id), requested) {
            (Some(own), None) => Ok(own),
            (Some(own), Some(asked)) if asked == own => Ok(own),
            (Some(_), Some(_)) => Err(AuthError::NotFound("partner")),
            (None, Some(asked)) => Ok(asked),
            (None, None) => Err(AuthError::validation(
                "partner_id",
                "platform admins must name the partner",
            )),
        }
    }
}

/// The auth module's services. Cheap to clone.
#[derive(Clone)]
pub struct AuthService {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    shared: SharedState,
    /// API keys checked lately, by digest (never the key itself).
    keys: std::sync::Mutex<std::collections::HashMap<[u8; 32], CachedKey>>,
    jwt: Jwt,
    passwords: Arc<Passwords>,
    /// At most `auth.max_concurrent_hashes` argon2 computations at once: each takes
    /// `argon2_memory_kib`, so a login flood queues here instead of exhausting memory.
    hashing: Arc<tokio::sync::Semaphore>,
    digester: SecretDigester,
    settings: AuthSettings,
    limits: RateLimitSettings,
    trust_forwarded_for: bool,
    /// Where password-reset mail is queued, in the request's transaction.
    outbox: Arc<dyn Outbox>,
}

impl AuthService {
    /// Builds the service from configuration (fails on unusable keys or parameters).
    pub fn new(
        db: Db,
        shared: SharedState,
        settings: &AuthSettings,
        limits: &RateLimitSettings,
        trust_forwarded_for: bool,
        outbox: Arc<dyn Outbox>,
    ) -> Result<AuthService, AuthError> {
        let jwt = Jwt::new(JwtConfig {
            active_kid: settings.jwt_kid.clone(),
            active_secret: settings.jwt_secret.clone(),
            previous: settings.jwt_previous_secrets.clone(),
            issuer: settings.jwt_issuer.clone(),
            audience: settings.jwt_audience.clone(),
            ttl: settings.jwt_ttl,
        })
        .map_err(|e| AuthError::Internal(anyhow::anyhow!("JWT configuration: {e}")))?;
        let passwords = Passwords::new(PasswordParams {
            memory_kib: settings.argon2_memory_kib,
            iterations: settings.argon2_iterations,
            parallelism: settings.argon2_parallelism,
        })
        .map_err(|e| AuthError::Internal(anyhow::anyhow!("argon2 parameters: {e}")))?;
        Ok(AuthService {
            inner: Arc::new(Inner {
                db,
                shared,
                keys: std::sync::Mutex::default(),
                jwt,
                passwords: Arc::new(passwords),
                hashing: Arc::new(tokio::sync::Semaphore::new(settings.max_concurrent_hashes)),
                digester: SecretDigester::new(&settings.api_key_secret),
                settings: settings.clone(),
                limits: limits.clone(),
                trust_forwarded_for,
                outbox,
            }),
        })
    }

    fn db(&self) -> &Db {
        &self.inner.db
    }

    /// The client's IP: the TCP peer, or behind a trusted proxy the last X-Forwarded-For
    /// entry (the one that proxy appended; earlier entries are the client's to invent).
    pub fn client_ip(&self, req: &actix_web::HttpRequest) -> Option<String> {
        if self.inner.trust_forwarded_for
            && let Some(forwarded) = req
                .headers()
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .map(str::trim)
                .filter(|v| v.parse::<std::net::IpAddr>().is_ok())
        {
            return Some(forwarded.to_owned());
        }
        req.peer_addr().map(|a| a.ip().to_string())
    }

    /// A turn to compute one argon2 hash (held by the blocking task until it is done).
    async fn hashing_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, AuthError> {
        self.inner
            .hashing
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| AuthError::Internal(anyhow::anyhow!("the hashing semaphore: {e}")))
    }

    /// Hashing is CPU- and memory-heavy: it runs on the blocking pool, never on the async
    /// workers that serve other requests, and at most `auth.max_concurrent_hashes` at once.
    async fn hash_password(&self, password: SecretString) -> Result<String, AuthError> {
        let passwords = self.inner.passwords.clone();
        let permit = self.hashing_permit().await?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            passwords.hash(&password)
        })
        .await
        .map_err(|e| AuthError::Internal(anyhow::anyhow!("hashing task: {e}")))?
        .map_err(|e| AuthError::Internal(anyhow::anyhow!("hashing a password: {e}")))
    }

    async fn verify_password(
        &self,
        password: SecretString,
        hash: String,
    ) -> Result<bool, AuthError> {
        let passwords = self.inner.passwords.clone();
        let permit = self.hashing_permit().await?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            passwords.verify(&password, &hash)
        })
        .await
        .map_err(|e| AuthError::Internal(anyhow::anyhow!("verifying task: {e}")))?
        .map_err(|e| AuthError::Internal(anyhow::anyhow!("verifying a password: {e}")))
    }

    async fn verify_dummy(&self, password: SecretString) -> Result<(), AuthError> {
        let passwords = self.inner.passwords.clone();
        let permit = self.hashing_permit().await?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            passwords.verify_dummy(&password)
        })
        .await
        .map(drop)
        .map_err(|e| AuthError::Internal(anyhow::anyhow!("verifying task: {e}")))
    }
}
