//! The audit log: what changed, who did it and from where; recorded in the transaction of the
//! change (other modules use [`record_audit`]) or, for events with no other write, on its own.

use chrono::Utc;

use super::{AuthService, Caller, RequestMeta};
use crate::auth::store::{self, AuditRow};
use crate::kernel::PartnerId;
use crate::platform::db::{DbError, Tx};

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
    pub(super) fn by(caller: &Caller, action: &'static str, meta: &RequestMeta) -> AuditEntry {
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

    pub(super) fn target(mut self, kind: &'static str, id: impl ToString) -> AuditEntry {
        self.target_type = Some(kind);
        self.target_id = Some(id.to_string());
        self
    }

    pub(super) fn partner(mut self, partner: PartnerId) -> AuditEntry {
        self.partner_id = Some(partner);
        self
    }

    pub(super) fn details(mut self, details: serde_json::Value) -> AuditEntry {
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

impl AuthService {
    /// Audit records of events with no other write (failed logins) go in on their own; a
    /// failure to record is logged, not shown to the client.
    pub(super) async fn audit_now(&self, entry: AuditEntry) {
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
