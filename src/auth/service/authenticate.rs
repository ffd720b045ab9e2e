//! Authentication and rate limits: who a bearer token (API key or access token) belongs to,
//! the per-replica cache of API-key checks (held while the shared key epoch is unchanged),
//! and counting requests against the IP, key or user, and partner limits.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::AuthService;
use crate::auth::crypto::{self, SecretKind};
use crate::auth::error::AuthError;
use crate::auth::model::tightest;
use crate::auth::store;
use crate::kernel::{Actor, Principal, Role, Scopes, UserId};
use crate::platform::shared_state::{Quota, RateDecision};

/// A request's principal plus the limits that apply to it.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub principal: Principal,
    /// Per-hour limit of this key or user.
    key_per_hour: u64,
    /// Per-hour limit of the partner; `None` for platform admins.
    partner_per_hour: Option<u64>,
}

/// The shared epoch API keys are cached under: moved on by every revocation.
pub(super) const KEY_EPOCH: &str = "auth:api_keys";
/// Longest an API key's check is reused without reading the database again.
const KEY_CACHE_TTL: Duration = Duration::from_secs(60);
/// Most API keys kept at once; the cache is emptied when it reaches this size.
const KEY_CACHE_MAX: usize = 10_000;

/// An API key's successful check, kept so that a request with the same key reads no row.
#[derive(Clone)]
pub(super) struct CachedKey {
    who: Authenticated,
    expires_at: Option<DateTime<Utc>>,
    /// The epoch read before the key's row: the check holds while the epoch is unchanged.
    epoch: String,
    cached_at: std::time::Instant,
}

impl AuthService {
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

    pub(super) fn forget_keys(&self, which: impl Fn(&[u8; 32]) -> bool) {
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
