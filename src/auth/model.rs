//! Auth's domain: partners, users and API keys as the API shows them, and rate-limit
//! arithmetic. Ids, roles, scopes and the principal live in `crate::kernel`.
//! Pure code, unit-tested without a database.

use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use crate::kernel::{ApiKeyId, PartnerId, Role, UserId};
use crate::platform::error::FieldError;
use crate::platform::shared_state::RateDecision;

/// The decision that binds: a denial if any check denied, else the one with the fewest
/// requests left. Its numbers go into the `RateLimit-*` headers.
pub fn tightest(decisions: &[RateDecision]) -> Option<RateDecision> {
    decisions.iter().copied().min_by(|a, b| {
        a.allowed
            .cmp(&b.allowed)
            .then(a.remaining.cmp(&b.remaining))
            .then(b.reset_after.cmp(&a.reset_after))
    })
}

/// The `partner_id` a request may name (platform admins name the partner they act on).
pub fn partner_field(raw: Option<&str>) -> Result<Option<PartnerId>, FieldError> {
    raw.map(|p| PartnerId::parse_field("partner_id", p))
        .transpose()
}

/// Whole seconds for a header, rounded up so a client never retries too early.
pub fn ceil_secs(duration: Duration) -> u64 {
    let secs = duration.as_secs();
    if duration.subsec_nanos() > 0 {
        secs.saturating_add(1)
    } else {
        secs
    }
}

/// A partner (tenant), as the API shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Partner {
    pub id: PartnerId,
    pub name: String,
    pub email: String,
    /// `active` or `suspended`.
    pub status: String,
    pub created_at: DateTime<Utc>,
}

/// A user, as the API shows it (never the password hash).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct User {
    pub id: UserId,
    /// Absent for platform admins.
    pub partner_id: Option<PartnerId>,
    pub email: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

/// An API key, as the API shows it (never the secret, except once at creation).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub partner_id: PartnerId,
    pub name: String,
    /// The key's first characters, e.g. `flk_live_AbCd`, to recognise it.
    pub hint: String,
    /// `null`: full access for the partner.
    pub scopes: Option<Vec<String>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// A new API key with its secret: the only time the secret is ever shown.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub key: ApiKey,
    /// The full key. Store it now: it cannot be shown again.
    #[serde(serialize_with = "expose")]
    #[schema(value_type = String)]
    pub secret: SecretString,
}

/// A login token.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AccessToken {
    #[serde(serialize_with = "expose")]
    #[schema(value_type = String)]
    pub access_token: SecretString,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the token expires.
    pub expires_in: u64,
}

/// Serialises a secret into the one response meant to carry it.
fn expose<S: serde::Serializer>(secret: &SecretString, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(secret.expose_secret())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partner_field_is_a_partner_id_or_absent() {
        let id = PartnerId::new();
        assert_eq!(partner_field(Some(&id.to_string())), Ok(Some(id)));
        assert_eq!(partner_field(None), Ok(None));
        let err = partner_field(Some(&UserId::new().to_string())).unwrap_err();
        assert_eq!(err.field, "partner_id");
    }

    #[test]
    fn the_tightest_decision_is_a_denial_else_the_fewest_remaining() {
        let d = |allowed, remaining, reset| RateDecision {
            allowed,
            limit: 10,
            remaining,
            reset_after: Duration::from_secs(reset),
            retry_after: None,
        };
        assert_eq!(
            tightest(&[d(true, 5, 1), d(true, 2, 9)]).unwrap().remaining,
            2
        );
        assert!(!tightest(&[d(true, 5, 1), d(false, 0, 9)]).unwrap().allowed);
        assert!(tightest(&[]).is_none());
    }

    #[test]
    fn header_seconds_round_up() {
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(3)), 3);
        assert_eq!(ceil_secs(Duration::from_millis(3001)), 4);
    }
}
