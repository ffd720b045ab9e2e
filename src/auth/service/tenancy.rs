//! Tenancy: partners, their users (and platform admins, made by operators only) and their
//! API keys (created, listed, revoked at once on every replica).

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use super::authenticate::KEY_EPOCH;
use super::{AuditEntry, AuthService, Caller, RequestMeta, record_audit};
use crate::auth::crypto::{self, SecretKind, check_password_policy};
use crate::auth::error::AuthError;
use crate::auth::model::{ApiKey, CreatedApiKey, Partner, User};
use crate::auth::store::{self, ApiKeyRow, PartnerRow, UserRow};
use crate::kernel::{
    Access, Actor, ApiKeyId, Area, PartnerId, Principal, Role, Scopes, UserId, valid_email,
};
use crate::platform::db::{LockKey, LockNamespace, Tx};
use crate::platform::http::pagination::Page;

/// Concurrent bootstraps take turns (the tag is the key earlier releases used).
const BOOTSTRAP: LockNamespace = LockNamespace::new("auth.bootstrap", 7_266_315_040_653_538);

impl AuthService {
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
