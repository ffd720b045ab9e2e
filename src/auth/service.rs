//! Auth's use cases: authenticate a request, log in, manage partners, users and API keys,
//! reset passwords, rate-limit callers, and keep the audit log.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use super::crypto::{
    self, Jwt, JwtConfig, PasswordParams, Passwords, SecretDigester, SecretKind,
    check_password_policy,
};
use super::error::AuthError;
use super::model::{AccessToken, ApiKey, CreatedApiKey, Partner, User, tightest};
use super::settings::{AuthSettings, RateLimitSettings};
use super::store::{self, ApiKeyRow, AuditRow, PartnerRow, PasswordResetRow, UserRow};
use crate::kernel::{
    Access, Actor, ApiKeyId, Area, PartnerId, Principal, Role, Scopes, UserId, valid_email,
};
use crate::notify::{Template, enqueue_email};
use crate::platform::db::{Db, DbError, LockKey, LockNamespace, Tx};

/// Concurrent bootstraps take turns (the tag is the key earlier releases used).
const BOOTSTRAP: LockNamespace = LockNamespace::new("auth.bootstrap", 7_266_315_040_653_538);
use crate::platform::http::pagination::Page;
use crate::platform::shared_state::{Quota, RateDecision, SharedState};

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
                match access {
                    Access::Read => "read",
                    Access::Write => "change",
                },
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

/// A request's principal plus the limits that apply to it.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub principal: Principal,
    /// Per-hour limit of this key or user.
    key_per_hour: u64,
    /// Per-hour limit of the partner; `None` for platform admins.
    partner_per_hour: Option<u64>,
}

/// A change that goes into the audit log. Other modules record their admin actions through
/// [`record_audit`], inside their own transaction.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub partner_id: Option<PartnerId>,
    /// `user`, `api_key`, `operator`, `anonymous` or `system`.
    pub actor_type: &'static str,
    pub actor_id: Option<String>,
    /// Dotted name of what happened, e.g. `api_key.revoked`.
    pub action: &'static str,
    pub target_type: Option<&'static str>,
    pub target_id: Option<String>,
    pub meta: RequestMeta,
    /// Never secrets or personal data beyond ids.
    pub details: serde_json::Value,
}

impl AuditEntry {
    /// An entry for `action` by `caller` on `target`.
    fn by(caller: &Caller, action: &'static str, meta: &RequestMeta) -> AuditEntry {
        AuditEntry {
            partner_id: caller.principal().and_then(|p| p.partner_id),
            actor_type: caller.actor_type(),
            actor_id: Some(caller.actor_id()),
            action,
            target_type: None,
            target_id: None,
            meta: meta.clone(),
            details: serde_json::Value::Object(serde_json::Map::new()),
        }
    }

    fn target(mut self, kind: &'static str, id: impl ToString) -> AuditEntry {
        self.target_type = Some(kind);
        self.target_id = Some(id.to_string());
        self
    }

    fn partner(mut self, partner: PartnerId) -> AuditEntry {
        self.partner_id = Some(partner);
        self
    }

    fn details(mut self, details: serde_json::Value) -> AuditEntry {
        self.details = details;
        self
    }
}

/// Appends to the audit log in the caller's transaction, so the record and the change commit
/// together.
pub async fn record_audit(tx: &mut Tx<'_>, entry: AuditEntry) -> Result<(), DbError> {
    insert_audit(tx.conn(), entry).await
}

async fn insert_audit(
    conn: &mut diesel_async::AsyncPgConnection,
    entry: AuditEntry,
) -> Result<(), DbError> {
    let row = AuditRow {
        id: uuid::Uuid::now_v7(),
        partner_id: entry.partner_id,
        actor_type: entry.actor_type.to_owned(),
        actor_id: entry.actor_id,
        action: entry.action.to_owned(),
        target_type: entry.target_type.map(str::to_owned),
        target_id: entry.target_id,
        ip: entry.meta.ip,
        request_id: entry.meta.request_id,
        details: entry.details,
        created_at: Utc::now(),
    };
    store::insert_audit(conn, &row).await?;
    Ok(())
}

/// The auth module's services. Cheap to clone.
#[derive(Clone)]
pub struct AuthService {
    inner: Arc<Inner>,
}

/// The shared epoch API keys are cached under: moved on by every revocation.
const KEY_EPOCH: &str = "auth:api_keys";
/// Longest an API key's check is reused without reading the database again.
const KEY_CACHE_TTL: Duration = Duration::from_secs(60);
/// Most API keys kept at once; the cache is emptied when it reaches this size.
const KEY_CACHE_MAX: usize = 10_000;

/// An API key's successful check, kept so that a request with the same key reads no row.
#[derive(Clone)]
struct CachedKey {
    who: Authenticated,
    expires_at: Option<DateTime<Utc>>,
    /// The epoch read before the key's row: the check holds while the epoch is unchanged.
    epoch: String,
    cached_at: std::time::Instant,
}

struct Inner {
    db: Db,
    shared: SharedState,
    /// API keys checked lately, by digest (never the key itself).
    keys: std::sync::Mutex<std::collections::HashMap<[u8; 32], CachedKey>>,
    jwt: Jwt,
    passwords: Arc<Passwords>,
    digester: SecretDigester,
    settings: AuthSettings,
    limits: RateLimitSettings,
    trust_forwarded_for: bool,
}

impl AuthService {
    /// Builds the service from configuration (fails on unusable keys or parameters).
    pub fn new(
        db: Db,
        shared: SharedState,
        settings: &AuthSettings,
        limits: &RateLimitSettings,
        trust_forwarded_for: bool,
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
                digester: SecretDigester::new(&settings.api_key_secret),
                settings: settings.clone(),
                limits: limits.clone(),
                trust_forwarded_for,
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

    // ----- authentication ------------------------------------------------------------------

    /// Who a bearer token belongs to. Every failure is the same `Unauthorized` to the client;
    /// the reason goes to the debug log.
    pub async fn authenticate(&self, token: &str) -> Result<Authenticated, AuthError> {
        if crypto::looks_like(SecretKind::ApiKey, token) {
            self.authenticate_key(token).await
        } else if token.bytes().filter(|b| *b == b'.').count() == 2 {
            self.authenticate_jwt(token).await
        } else {
            tracing::debug!(
                auth.reason = "unrecognised token format",
                "authentication failed"
            );
            Err(AuthError::Unauthorized)
        }
    }

    /// Authenticates a request's bearer token and counts it against the rate limits that
    /// apply (`None`: limits are off or the limiter failed open; a failed authentication is
    /// not counted here, the caller counts it against the client's IP).
    ///
    /// An API key checked lately on this replica is not read again while the shared key
    /// epoch is unchanged: the epoch comes back with the rate-limit check (one Redis round
    /// trip the request makes anyway), and every revocation moves it on, so a revoked key is
    /// refused at once on every replica. Without Redis every request reads the database.
    pub async fn authenticate_limited(
        &self,
        token: &str,
    ) -> (Result<Authenticated, AuthError>, Option<RateDecision>) {
        if self.key_cache_enabled() && crypto::looks_like(SecretKind::ApiKey, token) {
            let digest = self.inner.digester.digest(token);
            if let Some(cached) = self.cached_key(&digest) {
                let (decision, epoch) = self.limit_principal_reading(&cached.who, true).await;
                if epoch.as_deref() == Some(cached.epoch.as_str()) {
                    return (Ok(cached.who), decision);
                }
                self.forget_keys(|key| key == &digest);
                // Something changed: the database decides (the request is counted already).
                return (self.authenticate(token).await, decision);
            }
        }
        let result = self.authenticate(token).await;
        let decision = match &result {
            Ok(who) if self.rate_limits_enabled() => self.limit_principal(who).await,
            _ => None,
        };
        (result, decision)
    }

    /// Keys are cached only where a shared epoch comes with every request's rate-limit check.
    fn key_cache_enabled(&self) -> bool {
        self.rate_limits_enabled()
            && self.inner.shared.backend() == crate::platform::shared_state::Backend::Redis
    }

    fn cached_key(&self, digest: &[u8; 32]) -> Option<CachedKey> {
        let keys = self
            .inner
            .keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        keys.get(digest)
            .filter(|k| k.cached_at.elapsed() < KEY_CACHE_TTL)
            .filter(|k| k.expires_at.is_none_or(|at| at > Utc::now()))
            .cloned()
    }

    fn remember_key(&self, digest: [u8; 32], key: CachedKey) {
        let mut keys = self
            .inner
            .keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if keys.len() >= KEY_CACHE_MAX {
            keys.clear();
        }
        keys.insert(digest, key);
    }

    fn forget_keys(&self, which: impl Fn(&[u8; 32]) -> bool) {
        let mut keys = self
            .inner
            .keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        keys.retain(|digest, _| !which(digest));
    }

    async fn authenticate_key(&self, token: &str) -> Result<Authenticated, AuthError> {
        let digest = self.inner.digester.digest(token);
        // Read before the key's row: should a revocation commit in between, the epoch it moves
        // on no longer matches the one this check is cached under.
        let epoch = if self.key_cache_enabled() {
            self.inner.shared.epoch(KEY_EPOCH).await
        } else {
            None
        };
        let mut conn = self.db().conn().await?;
        let Some((key, partner)) = store::find_api_key_by_digest(&mut conn, &digest).await? else {
            return Err(unauthorized("unknown API key"));
        };
        if !self.inner.digester.verify(token, &key.secret_digest) {
            return Err(unauthorized("API key digest mismatch"));
        }
        if key.revoked_at.is_some() {
            return Err(unauthorized("API key revoked"));
        }
        if key.expires_at.is_some_and(|at| at <= Utc::now()) {
            return Err(unauthorized("API key expired"));
        }
        if partner.status != "active" {
            return Err(AuthError::PartnerSuspended);
        }
        let scopes = key
            .scopes
            .as_deref()
            .map(Scopes::parse)
            .transpose()
            .map_err(|e| {
                AuthError::Internal(anyhow::anyhow!("stored scopes of {}: {e}", key.id))
            })?;
        if key
            .last_used_at
            .is_none_or(|at| at < Utc::now() - chrono::Duration::seconds(60))
            && let Err(e) = store::touch_api_key(&mut conn, key.id).await
        {
            tracing::warn!(error.cause = %e, api_key.id = %key.id, "could not record key use");
        }
        let who = Authenticated {
            principal: Principal {
                partner_id: Some(key.partner_id),
                actor: Actor::ApiKey(key.id),
                role: Role::PartnerAdmin,
                scopes,
            },
            key_per_hour: per_hour(
                partner.key_rate_limit_per_hour,
                self.inner.limits.key_per_hour,
            ),
            partner_per_hour: Some(per_hour(
                partner.rate_limit_per_hour,
                self.inner.limits.partner_per_hour,
            )),
        };
        if let Some(epoch) = epoch {
            self.remember_key(
                digest,
                CachedKey {
                    who: who.clone(),
                    expires_at: key.expires_at,
                    epoch,
                    cached_at: std::time::Instant::now(),
                },
            );
        }
        Ok(who)
    }

    async fn authenticate_jwt(&self, token: &str) -> Result<Authenticated, AuthError> {
        let claims = self.inner.jwt.verify(token).map_err(|e| {
            tracing::debug!(auth.reason = %e, "token refused");
            AuthError::Unauthorized
        })?;
        let user_id = UserId::parse(&claims.sub).map_err(|_| unauthorized("bad subject"))?;
        let mut conn = self.db().conn().await?;
        let Some((user, partner)) = store::find_user(&mut conn, user_id).await? else {
            return Err(unauthorized("user no longer exists"));
        };
        if claims.pwv != Some(user.password_changed_at.timestamp_micros()) {
            return Err(unauthorized("token predates the last password change"));
        }
        let role = Role::parse(&user.role)
            .ok_or_else(|| AuthError::Internal(anyhow::anyhow!("stored role of {}", user.id)))?;
        if partner.as_ref().is_some_and(|p| p.status != "active") {
            return Err(AuthError::PartnerSuspended);
        }
        Ok(Authenticated {
            principal: Principal {
                partner_id: user.partner_id,
                actor: Actor::User(user.id),
                role,
                scopes: None,
            },
            key_per_hour: per_hour(
                partner.as_ref().and_then(|p| p.key_rate_limit_per_hour),
                self.inner.limits.key_per_hour,
            ),
            partner_per_hour: partner
                .as_ref()
                .map(|p| per_hour(p.rate_limit_per_hour, self.inner.limits.partner_per_hour)),
        })
    }

    // ----- rate limits ---------------------------------------------------------------------

    /// Whether limits are enforced at all (`rate_limit.enabled`).
    pub fn rate_limits_enabled(&self) -> bool {
        self.inner.limits.enabled
    }

    /// Counts one unauthenticated request or failed authentication from `ip`.
    pub async fn limit_ip(&self, ip: &str) -> Option<RateDecision> {
        let quota = Quota {
            limit: self.inner.limits.ip_per_minute,
            period: Duration::from_secs(60),
        };
        self.limit(&format!("ip:{ip}"), quota).await
    }

    /// Counts one request of an authenticated caller against its own and its partner's limits,
    /// returning the one that binds.
    pub async fn limit_principal(&self, who: &Authenticated) -> Option<RateDecision> {
        self.limit_principal_reading(who, false).await.0
    }

    /// [`Self::limit_principal`], reading the API keys' epoch with the caller's own check when
    /// `read_epoch` (`None` when it could not be read). Both checks at once.
    async fn limit_principal_reading(
        &self,
        who: &Authenticated,
        read_epoch: bool,
    ) -> (Option<RateDecision>, Option<String>) {
        let hour = Duration::from_secs(3600);
        let own_key = format!(
            "{}:{}",
            who.principal.actor.kind(),
            who.principal.actor.id()
        );
        let own_quota = Quota {
            limit: who.key_per_hour,
            period: hour,
        };
        let own = async {
            let limiter = self.inner.shared.rate_limiter();
            let answer = if read_epoch {
                limiter
                    .check_with_epoch(&own_key, own_quota, KEY_EPOCH)
                    .await
            } else {
                limiter.check(&own_key, own_quota).await.map(|d| (d, None))
            };
            match answer {
                Ok((decision, epoch)) => (Some(decision), epoch),
                Err(e) => {
                    tracing::error!(error.cause = %e, "rate limit check failed; letting the request through");
                    (None, None)
                }
            }
        };
        let partner = async {
            match (who.partner_per_hour, who.principal.partner_id) {
                (Some(limit), Some(partner)) => {
                    self.limit(
                        &format!("partner:{partner}"),
                        Quota {
                            limit,
                            period: hour,
                        },
                    )
                    .await
                }
                _ => None,
            }
        };
        let ((own, epoch), partner) = futures_util::future::join(own, partner).await;
        let decisions: Vec<RateDecision> = own.into_iter().chain(partner).collect();
        (tightest(&decisions), epoch)
    }

    /// One check; a limiter fault lets the request through (logged), never fails it.
    async fn limit(&self, key: &str, quota: Quota) -> Option<RateDecision> {
        match self.inner.shared.rate_limiter().check(key, quota).await {
            Ok(decision) => Some(decision),
            Err(e) => {
                tracing::error!(error.cause = %e, "rate limit check failed; letting the request through");
                None
            }
        }
    }

    // ----- login and password reset --------------------------------------------------------

    /// Email and password to an access token. Unknown email, wrong password and a locked
    /// account give the same error after about the same time.
    pub async fn login(
        &self,
        email: &str,
        password: SecretString,
        meta: &RequestMeta,
    ) -> Result<AccessToken, AuthError> {
        let mut conn = self.db().conn().await?;
        let found = store::find_user_by_email(&mut conn, email.trim()).await?;
        let Some((user, partner)) = found else {
            self.verify_dummy(password).await?;
            self.audit_now(anonymous(
                meta,
                "login.failed",
                serde_json::json!({"reason": "unknown_email"}),
            ))
            .await;
            return Err(AuthError::InvalidCredentials);
        };
        let audit_base = AuditEntry {
            partner_id: user.partner_id,
            actor_type: "user",
            actor_id: Some(user.id.to_string()),
            action: "login.failed",
            target_type: Some("user"),
            target_id: Some(user.id.to_string()),
            meta: meta.clone(),
            details: serde_json::json!({}),
        };
        if user.locked_until.is_some_and(|until| until > Utc::now()) {
            self.verify_dummy(password).await?;
            self.audit_now(AuditEntry {
                details: serde_json::json!({"reason": "locked"}),
                ..audit_base
            })
            .await;
            return Err(AuthError::InvalidCredentials);
        }
        if !self
            .verify_password(password.clone(), user.password_hash.clone())
            .await?
        {
            let failure = store::record_login_failure(
                &mut conn,
                user.id,
                i32::try_from(self.inner.settings.lockout_threshold).unwrap_or(i32::MAX),
                i32::try_from(self.inner.settings.lockout.as_secs()).unwrap_or(i32::MAX),
            )
            .await?;
            self.audit_now(AuditEntry {
                details: serde_json::json!({
                    "reason": "wrong_password",
                    "failed_logins": failure.failed_logins,
                    "locked": failure.locked_until.is_some(),
                }),
                ..audit_base
            })
            .await;
            return Err(AuthError::InvalidCredentials);
        }
        if partner.as_ref().is_some_and(|p| p.status != "active") {
            return Err(AuthError::PartnerSuspended);
        }
        let rehash = if self.inner.passwords.needs_rehash(&user.password_hash) {
            Some(self.hash_password(password).await?)
        } else {
            None
        };
        store::record_login_success(&mut conn, user.id, rehash).await?;
        let role = Role::parse(&user.role)
            .ok_or_else(|| AuthError::Internal(anyhow::anyhow!("stored role of {}", user.id)))?;
        let (token, expires_in) = self
            .inner
            .jwt
            .issue(
                &user.id.to_string(),
                user.partner_id.map(|p| p.to_string()).as_deref(),
                role.as_str(),
                Some(user.password_changed_at.timestamp_micros()),
            )
            .map_err(|e| AuthError::Internal(anyhow::anyhow!("issuing a token: {e}")))?;
        self.audit_now(AuditEntry {
            action: "login.succeeded",
            ..audit_base
        })
        .await;
        Ok(AccessToken {
            access_token: token,
            token_type: "Bearer",
            expires_in,
        })
    }

    /// Always succeeds; for a known email, mails a one-time token after the commit.
    pub async fn request_password_reset(
        &self,
        email: &str,
        meta: &RequestMeta,
    ) -> Result<(), AuthError> {
        let mut conn = self.db().conn().await?;
        let Some((user, _)) = store::find_user_by_email(&mut conn, email.trim()).await? else {
            self.audit_now(anonymous(
                meta,
                "password_reset.requested",
                serde_json::json!({"known": false}),
            ))
            .await;
            return Ok(());
        };
        drop(conn);
        let token = crypto::generate_secret(SecretKind::PasswordReset, "")
            .map_err(|e| AuthError::Internal(anyhow::anyhow!("generating a reset token: {e}")))?;
        let ttl = self.inner.settings.password_reset_ttl;
        let row = PasswordResetRow {
            id: uuid::Uuid::now_v7(),
            user_id: user.id,
            token_digest: self
                .inner
                .digester
                .digest(token.secret.expose_secret())
                .to_vec(),
            expires_at: Utc::now()
                + chrono::Duration::seconds(i64::try_from(ttl.as_secs()).unwrap_or(3600)),
            used_at: None,
            created_at: Utc::now(),
        };
        let audit = AuditEntry {
            partner_id: user.partner_id,
            actor_type: "anonymous",
            actor_id: None,
            action: "password_reset.requested",
            target_type: Some("user"),
            target_id: Some(user.id.to_string()),
            meta: meta.clone(),
            details: serde_json::json!({"known": true}),
        };
        let template = Template::PasswordReset {
            token: token.secret.expose_secret().to_owned(),
            valid_minutes: ttl.as_secs().div_ceil(60),
        };
        let recipient = user.email.clone();
        // The mail goes through the outbox, in this transaction: sent by the worker after the
        // commit, off this request (which must not wait on, or reveal anything through, mail).
        self.db()
            .in_tx(|tx| {
                let row = row.clone();
                let audit = audit.clone();
                let template = template.clone();
                let recipient = recipient.clone();
                Box::pin(async move {
                    store::insert_password_reset(tx.conn(), &row).await?;
                    record_audit(tx, audit).await?;
                    enqueue_email(tx, &recipient, template).await?;
                    Ok::<_, AuthError>(())
                })
            })
            .await?;
        Ok(())
    }

    /// Redeems a reset token: sets the new password, uses up every open token of the user,
    /// lifts any lockout and ends earlier sessions.
    pub async fn confirm_password_reset(
        &self,
        token: SecretString,
        new_password: SecretString,
        meta: &RequestMeta,
    ) -> Result<(), AuthError> {
        if !crypto::looks_like(SecretKind::PasswordReset, token.expose_secret()) {
            return Err(AuthError::InvalidResetToken);
        }
        let digest = self.inner.digester.digest(token.expose_secret()).to_vec();
        let (user, _) = {
            let mut conn = self.db().conn().await?;
            let reset = store::find_password_reset_for_update(&mut conn, &digest)
                .await?
                .filter(reset_is_open)
                .ok_or(AuthError::InvalidResetToken)?;
            store::find_user(&mut conn, reset.user_id)
                .await?
                .ok_or(AuthError::InvalidResetToken)?
        };
        check_password_policy(
            &new_password,
            self.inner.settings.password_min_length,
            &user.email,
        )?;
        let hash = self.hash_password(new_password).await?;
        let audit = AuditEntry {
            partner_id: user.partner_id,
            actor_type: "anonymous",
            actor_id: None,
            action: "password_reset.completed",
            target_type: Some("user"),
            target_id: Some(user.id.to_string()),
            meta: meta.clone(),
            details: serde_json::json!({}),
        };
        self.db()
            .in_tx(|tx| {
                let digest = digest.clone();
                let hash = hash.clone();
                let audit = audit.clone();
                let user_id = user.id;
                Box::pin(async move {
                    // Re-checked under the row lock: two concurrent redemptions, one wins.
                    store::find_password_reset_for_update(tx.conn(), &digest)
                        .await?
                        .filter(|r| reset_is_open(r) && r.user_id == user_id)
                        .ok_or(AuthError::InvalidResetToken)?;
                    store::set_password(tx.conn(), user_id, &hash).await?;
                    store::use_password_resets(tx.conn(), user_id).await?;
                    record_audit(tx, audit).await?;
                    Ok::<_, AuthError>(())
                })
            })
            .await
    }

    // ----- partners, users, keys -----------------------------------------------------------

    /// A new partner (platform admins and operators only).
    pub async fn create_partner(
        &self,
        caller: &Caller,
        name: &str,
        email: &str,
        meta: &RequestMeta,
    ) -> Result<Partner, AuthError> {
        if caller.principal().is_some_and(|p| !p.is_platform_admin()) {
            return Err(AuthError::forbidden(
                "Only platform admins create partners.",
            ));
        }
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(AuthError::validation("name", "must be 1 to 200 characters"));
        }
        let email = email.trim();
        if !valid_email(email) {
            return Err(AuthError::validation(
                "email",
                "is not a valid email address",
            ));
        }
        let row = PartnerRow {
            id: PartnerId::new(),
            name: name.to_owned(),
            email: email.to_owned(),
            status: "active".to_owned(),
            rate_limit_per_hour: None,
            key_rate_limit_per_hour: None,
            created_at: Utc::now(),
        };
        let audit = AuditEntry::by(caller, "partner.created", meta)
            .partner(row.id)
            .target("partner", row.id);
        self.db()
            .in_tx(|tx| {
                let row = row.clone();
                let audit = audit.clone();
                Box::pin(async move {
                    store::insert_partner(tx.conn(), &row).await?;
                    record_audit(tx, audit).await?;
                    Ok::<_, AuthError>(())
                })
            })
            .await?;
        Ok(partner_view(row))
    }

    /// A partner, if the caller may see it (another partner's is "not found").
    pub async fn get_partner(
        &self,
        principal: &Principal,
        id: PartnerId,
    ) -> Result<Partner, AuthError> {
        if !principal.can_see_partner(id) {
            return Err(AuthError::NotFound("partner"));
        }
        let mut conn = self.db().conn().await?;
        store::find_partner(&mut conn, id)
            .await?
            .map(partner_view)
            .ok_or(AuthError::NotFound("partner"))
    }

    /// The principal of a platform admin, by email: operators name themselves on CLI verbs
    /// that record who acted (a KYC decision). Anyone else is refused.
    pub async fn platform_admin_by_email(&self, email: &str) -> Result<Principal, AuthError> {
        let mut conn = self.db().conn().await?;
        match store::find_user_by_email(&mut conn, email).await? {
            Some((user, None)) if user.role == Role::PlatformAdmin.as_str() => Ok(Principal {
                partner_id: None,
                actor: Actor::User(user.id),
                role: Role::PlatformAdmin,
                scopes: None,
            }),
            _ => Err(AuthError::NotFound("platform admin")),
        }
    }

    /// The first platform admin. Runs once: refused when any platform admin exists.
    pub async fn bootstrap(
        &self,
        operator: &str,
        email: &str,
        password: SecretString,
    ) -> Result<User, AuthError> {
        self.insert_platform_admin(operator, email, password, true)
            .await
    }

    /// Another platform admin, made by an operator on the command line (never over HTTP).
    /// Four-eyes review needs at least two.
    pub async fn add_platform_admin(
        &self,
        operator: &str,
        email: &str,
        password: SecretString,
    ) -> Result<User, AuthError> {
        self.insert_platform_admin(operator, email, password, false)
            .await
    }

    async fn insert_platform_admin(
        &self,
        operator: &str,
        email: &str,
        password: SecretString,
        bootstrap: bool,
    ) -> Result<User, AuthError> {
        let caller = Caller::Operator(operator.to_owned());
        let row = self
            .new_user_row(None, email, password, Role::PlatformAdmin)
            .await?;
        let audit = AuditEntry::by(&caller, "user.created", &RequestMeta::default())
            .target("user", row.id)
            .details(
                serde_json::json!({"role": Role::PlatformAdmin.as_str(), "bootstrap": bootstrap}),
            );
        self.db()
            .in_tx(|tx| {
                let row = row.clone();
                let audit = audit.clone();
                Box::pin(async move {
                    // Serialise concurrent bootstraps on a transaction-scoped lock.
                    tx.advisory_lock(LockKey::singleton(BOOTSTRAP)).await?;
                    let admins = store::count_platform_admins(tx.conn()).await?;
                    if bootstrap && admins > 0 {
                        return Err(AuthError::AlreadyBootstrapped);
                    }
                    if !bootstrap && admins == 0 {
                        return Err(AuthError::forbidden(
                            "No platform admin exists yet: run `flowlet admin bootstrap` first.",
                        ));
                    }
                    insert_user(tx, &row).await?;
                    record_audit(tx, audit).await?;
                    Ok(())
                })
            })
            .await?;
        user_view(row)
    }

    /// A new partner user (partner admins for their partner, platform admins and operators
    /// for any). Platform admins are made only by operators (`flowlet admin bootstrap`,
    /// `flowlet admin user create --role platform_admin`).
    pub async fn create_user(
        &self,
        caller: &Caller,
        partner: Option<PartnerId>,
        email: &str,
        password: SecretString,
        role: Role,
        meta: &RequestMeta,
    ) -> Result<User, AuthError> {
        caller.require(Area::Auth, Access::Write)?;
        if role == Role::PlatformAdmin {
            return Err(AuthError::forbidden(
                "Platform admins are created by operators (flowlet admin user create).",
            ));
        }
        if let Some(Principal {
            actor: Actor::ApiKey(_),
            ..
        }) = caller.principal()
        {
            return Err(AuthError::forbidden(
                "Users are managed by users, not API keys.",
            ));
        }
        let partner = caller.target_partner(partner)?;
        self.ensure_partner_exists(partner).await?;
        let row = self
            .new_user_row(Some(partner), email, password, role)
            .await?;
        let audit = AuditEntry::by(caller, "user.created", meta)
            .partner(partner)
            .target("user", row.id)
            .details(serde_json::json!({"role": role.as_str()}));
        self.db()
            .in_tx(|tx| {
                let row = row.clone();
                let audit = audit.clone();
                Box::pin(async move {
                    insert_user(tx, &row).await?;
                    record_audit(tx, audit).await?;
                    Ok::<_, AuthError>(())
                })
            })
            .await?;
        user_view(row)
    }

    async fn new_user_row(
        &self,
        partner: Option<PartnerId>,
        email: &str,
        password: SecretString,
        role: Role,
    ) -> Result<UserRow, AuthError> {
        let email = email.trim();
        if !valid_email(email) {
            return Err(AuthError::validation(
                "email",
                "is not a valid email address",
            ));
        }
        check_password_policy(&password, self.inner.settings.password_min_length, email)?;
        let hash = self.hash_password(password).await?;
        let now = Utc::now();
        Ok(UserRow {
            id: UserId::new(),
            partner_id: partner,
            email: email.to_owned(),
            password_hash: hash,
            role: role.as_str().to_owned(),
            failed_logins: 0,
            locked_until: None,
            password_changed_at: now,
            created_at: now,
            updated_at: now,
        })
    }

    /// The caller's own identity.
    pub async fn me(&self, principal: &Principal) -> Result<Me, AuthError> {
        let email = match principal.actor {
            Actor::User(id) => {
                let mut conn = self.db().conn().await?;
                store::find_user(&mut conn, id).await?.map(|(u, _)| u.email)
            }
            Actor::ApiKey(_) => None,
        };
        Ok(Me {
            principal: principal.clone(),
            email,
        })
    }

    /// A new API key for a partner; the secret is returned once and never stored.
    pub async fn create_api_key(
        &self,
        caller: &Caller,
        partner: Option<PartnerId>,
        name: &str,
        scopes: Option<Vec<String>>,
        expires_at: Option<DateTime<Utc>>,
        meta: &RequestMeta,
    ) -> Result<CreatedApiKey, AuthError> {
        caller.require(Area::Auth, Access::Write)?;
        let partner = caller.target_partner(partner)?;
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(AuthError::validation("name", "must be 1 to 100 characters"));
        }
        let scopes = scopes
            .map(|s| Scopes::parse(&s).map_err(|m| AuthError::validation("scopes", m)))
            .transpose()?;
        if expires_at.is_some_and(|at| at <= Utc::now()) {
            return Err(AuthError::validation("expires_at", "must be in the future"));
        }
        self.ensure_partner_exists(partner).await?;
        let secret = crypto::generate_secret(SecretKind::ApiKey, &self.inner.settings.api_key_tag)
            .map_err(|e| AuthError::Internal(anyhow::anyhow!("generating a key: {e}")))?;
        let row = ApiKeyRow {
            id: ApiKeyId::new(),
            partner_id: partner,
            name: name.to_owned(),
            hint: secret.hint.clone(),
            secret_digest: self
                .inner
                .digester
                .digest(secret.secret.expose_secret())
                .to_vec(),
            scopes: scopes.as_ref().map(Scopes::to_strings),
            expires_at,
            last_used_at: None,
            revoked_at: None,
            created_by: format!("{}:{}", caller.actor_type(), caller.actor_id()),
            created_at: Utc::now(),
        };
        let audit = AuditEntry::by(caller, "api_key.created", meta)
            .partner(partner)
            .target("api_key", row.id)
            .details(serde_json::json!({"name": row.name, "scopes": row.scopes}));
        self.db()
            .in_tx(|tx| {
                let row = row.clone();
                let audit = audit.clone();
                Box::pin(async move {
                    store::insert_api_key(tx.conn(), &row).await?;
                    record_audit(tx, audit).await?;
                    Ok::<_, AuthError>(())
                })
            })
            .await?;
        Ok(CreatedApiKey {
            key: api_key_view(row),
            secret: secret.secret,
        })
    }

    /// A partner's keys, newest first.
    pub async fn list_api_keys(
        &self,
        principal: &Principal,
        partner: Option<PartnerId>,
        limit: u32,
        cursor: Option<ApiKeyId>,
    ) -> Result<Page<ApiKey>, AuthError> {
        let caller = Caller::Principal(principal.clone());
        caller.require(Area::Auth, Access::Read)?;
        let partner = caller.target_partner(partner)?;
        let mut conn = self.db().conn().await?;
        let rows = store::list_api_keys(&mut conn, partner, cursor, i64::from(limit) + 1).await?;
        let rows = rows.into_iter().map(api_key_view).collect();
        Ok(Page::from_rows(rows, limit, |k: &ApiKey| k.id.to_string()))
    }

    /// Revokes a key at once, for every replica: the database says so, and the shared key
    /// epoch moves on so no replica trusts a cached check of any key (see
    /// [`Self::authenticate_limited`]). Revoking a revoked key is a no-op (that moves the
    /// epoch on again).
    pub async fn revoke_api_key(
        &self,
        caller: &Caller,
        partner: Option<PartnerId>,
        id: ApiKeyId,
        meta: &RequestMeta,
    ) -> Result<(), AuthError> {
        caller.require(Area::Auth, Access::Write)?;
        let partner = match (caller, partner) {
            // Operators name a key only; find its partner.
            (Caller::Operator(_), None) => {
                let mut conn = self.db().conn().await?;
                store::find_api_key_any_partner(&mut conn, id)
                    .await?
                    .ok_or(AuthError::NotFound("API key"))?
                    .partner_id
            }
            _ => caller.target_partner(partner)?,
        };
        let audit = AuditEntry::by(caller, "api_key.revoked", meta)
            .partner(partner)
            .target("api_key", id);
        self.db()
            .in_tx(|tx| {
                let audit = audit.clone();
                Box::pin(async move {
                    if store::find_api_key(tx.conn(), partner, id).await?.is_none() {
                        return Err(AuthError::NotFound("API key"));
                    }
                    if store::revoke_api_key(tx.conn(), partner, id).await? {
                        record_audit(tx, audit).await?;
                    }
                    Ok(())
                })
            })
            .await?;
        // Every replica's cached checks of keys go stale (this one's at once) before the
        // caller hears that the key is revoked.
        self.forget_keys(|_| true);
        self.inner.shared.bump_epoch(KEY_EPOCH).await.map_err(|e| {
            AuthError::Internal(anyhow::anyhow!(
                "the key is revoked in the database, but replicas could not be told to stop \
                     trusting their cached checks of keys (retry the revocation): {e}"
            ))
        })
    }

    async fn ensure_partner_exists(&self, partner: PartnerId) -> Result<(), AuthError> {
        let mut conn = self.db().conn().await?;
        match store::find_partner(&mut conn, partner).await? {
            Some(_) => Ok(()),
            None => Err(AuthError::NotFound("partner")),
        }
    }

    // ----- helpers -------------------------------------------------------------------------

    /// Hashing is CPU- and memory-heavy: it runs on the blocking pool, never on the async
    /// workers that serve other requests.
    async fn hash_password(&self, password: SecretString) -> Result<String, AuthError> {
        let passwords = self.inner.passwords.clone();
        tokio::task::spawn_blocking(move || passwords.hash(&password))
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
        tokio::task::spawn_blocking(move || passwords.verify(&password, &hash))
            .await
            .map_err(|e| AuthError::Internal(anyhow::anyhow!("verifying task: {e}")))?
            .map_err(|e| AuthError::Internal(anyhow::anyhow!("verifying a password: {e}")))
    }

    async fn verify_dummy(&self, password: SecretString) -> Result<(), AuthError> {
        let passwords = self.inner.passwords.clone();
        tokio::task::spawn_blocking(move || passwords.verify_dummy(&password))
            .await
            .map(drop)
            .map_err(|e| AuthError::Internal(anyhow::anyhow!("verifying task: {e}")))
    }

    /// Audit records of events with no other write (failed logins) go in on their own; a
    /// failure to record is logged, not shown to the client.
    async fn audit_now(&self, entry: AuditEntry) {
        let result = async {
            let mut conn = self.db().conn().await?;
            insert_audit(&mut conn, entry).await
        }
        .await;
        if let Err(e) = result {
            tracing::error!(error.cause = %e, "writing the audit log failed");
        }
    }
}

/// The caller's identity as `GET /v1/auth/me` shows it.
#[derive(Debug, Clone)]
pub struct Me {
    pub principal: Principal,
    pub email: Option<String>,
}

fn anonymous(meta: &RequestMeta, action: &'static str, details: serde_json::Value) -> AuditEntry {
    AuditEntry {
        partner_id: None,
        actor_type: "anonymous",
        actor_id: None,
        action,
        target_type: None,
        target_id: None,
        meta: meta.clone(),
        details,
    }
}

fn unauthorized(reason: &'static str) -> AuthError {
    tracing::debug!(auth.reason = reason, "authentication failed");
    AuthError::Unauthorized
}

fn per_hour(partner_override: Option<i32>, default: u64) -> u64 {
    partner_override
        .and_then(|v| u64::try_from(v).ok())
        .filter(|v| *v > 0)
        .unwrap_or(default)
}

fn reset_is_open(reset: &PasswordResetRow) -> bool {
    reset.used_at.is_none() && reset.expires_at > Utc::now()
}

async fn insert_user(tx: &mut Tx<'_>, row: &UserRow) -> Result<(), AuthError> {
    match store::insert_user(tx.conn(), row).await {
        Ok(()) => Ok(()),
        Err(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            info,
        )) if info.constraint_name() == Some(store::EMAIL_UNIQUE_INDEX) => {
            Err(AuthError::EmailTaken)
        }
        Err(e) => Err(e.into()),
    }
}

fn partner_view(row: PartnerRow) -> Partner {
    Partner {
        id: row.id,
        name: row.name,
        email: row.email,
        status: row.status,
        created_at: row.created_at,
    }
}

fn user_view(row: UserRow) -> Result<User, AuthError> {
    let role = Role::parse(&row.role)
        .ok_or_else(|| AuthError::Internal(anyhow::anyhow!("stored role of {}", row.id)))?;
    Ok(User {
        id: row.id,
        partner_id: row.partner_id,
        email: row.email,
        role,
        created_at: row.created_at,
    })
}

fn api_key_view(row: ApiKeyRow) -> ApiKey {
    ApiKey {
        id: row.id,
        partner_id: row.partner_id,
        name: row.name,
        hint: row.hint,
        scopes: row.scopes,
        expires_at: row.expires_at,
        last_used_at: row.last_used_at,
        revoked_at: row.revoked_at,
        created_at: row.created_at,
    }
}
