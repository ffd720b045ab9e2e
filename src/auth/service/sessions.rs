//! Sessions: logging in with email and password (an access token), password reset (request
//! and redeem a one-time token), and the caller's own identity.

use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};

use super::{AuditEntry, AuthService, RequestMeta, record_audit};
use crate::auth::crypto::{self, SecretKind, check_password_policy};
use crate::auth::error::AuthError;
use crate::auth::model::AccessToken;
use crate::auth::store::{self, PasswordResetRow};
use crate::kernel::{Actor, Principal, Role};
use crate::notify::Template;

impl AuthService {
    /// Email and password to an access token. Unknown email, wrong password and a locked
    /// account give the same error after about the same time.
    pub async fn login(
        &self,
        email: &str,
        password: SecretString,
        meta: &RequestMeta,
    ) -> Result<AccessToken, AuthError> {
        // No connection is held while the password is hashed: hashing waits its turn
        // (auth.max_concurrent_hashes), and a login queue must never drain the request pool.
        let found = {
            let mut conn = self.db().conn().await?;
            store::find_user_by_email(&mut conn, email.trim()).await?
        };
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
            let mut conn = self.db().conn().await?;
            let failure = store::record_login_failure(
                &mut conn,
                user.id,
                i32::try_from(self.inner.settings.lockout_threshold).unwrap_or(i32::MAX),
                i32::try_from(self.inner.settings.lockout.as_secs()).unwrap_or(i32::MAX),
            )
            .await?;
            drop(conn);
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
        {
            let mut conn = self.db().conn().await?;
            store::record_login_success(&mut conn, user.id, rehash).await?;
        }
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
        let outbox = self.inner.outbox.clone();
        self.db()
            .in_tx(|tx| {
                let outbox = outbox.clone();
                let row = row.clone();
                let audit = audit.clone();
                let template = template.clone();
                let recipient = recipient.clone();
                Box::pin(async move {
                    store::insert_password_reset(tx.conn(), &row).await?;
                    record_audit(tx, audit).await?;
                    outbox.enqueue_email(tx, &recipient, template).await?;
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

fn reset_is_open(reset: &PasswordResetRow) -> bool {
    reset.used_at.is_none() && reset.expires_at > Utc::now()
}
