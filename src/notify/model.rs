//! Notify's ids and the shapes partners see.

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use crate::platform::ids::define_id;

define_id!(EventId, EventIdKind, "evt", "event");
define_id!(EndpointId, EndpointIdKind, "whe", "webhook endpoint");
define_id!(AttemptId, AttemptIdKind, "wha", "delivery attempt");

/// An event as delivered and listed: `{id, type, created, data}` (API.md).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Event {
    pub id: EventId,
    #[serde(rename = "type")]
    pub event_type: String,
    pub created: DateTime<Utc>,
    pub data: serde_json::Value,
}

/// A webhook endpoint (never its secret, except once at creation or rotation).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Endpoint {
    pub id: EndpointId,
    pub url: String,
    pub description: Option<String>,
    /// Event types it receives: exact types, `payment.*` prefixes, or `*`.
    pub events: Vec<String>,
    pub enabled: bool,
    /// Why it was disabled, when the platform disabled it.
    pub disabled_reason: Option<String>,
    /// Until when the previous secret still signs, after a rotation.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// An endpoint with its signing secret: the only times the secret is shown.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct EndpointWithSecret {
    #[serde(flatten)]
    pub endpoint: Endpoint,
    /// `whsec_...`: verify deliveries with it (Standard Webhooks). Store it now.
    #[serde(serialize_with = "expose")]
    #[schema(value_type = String)]
    pub secret: SecretString,
}

/// One delivery attempt.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Attempt {
    pub id: AttemptId,
    pub event_id: EventId,
    /// 1 for the first try of this delivery, 2 for the first retry, ...
    pub attempt: i32,
    /// The HTTP status the endpoint answered, if it answered.
    pub status_code: Option<i32>,
    pub latency_ms: i32,
    /// What went wrong (timeout, refused, a non-2xx status).
    pub error: Option<String>,
    /// The first bytes of the endpoint's answer.
    pub response_excerpt: Option<String>,
    pub created_at: DateTime<Utc>,
}

fn expose<S: serde::Serializer>(secret: &SecretString, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(secret.expose_secret())
}

/// Per endpoint: deliveries pending and failed, and the age of the oldest pending one.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EndpointBacklog {
    pub endpoint_id: EndpointId,
    pub partner_id: crate::kernel::PartnerId,
    pub url: String,
    pub enabled: bool,
    pub pending: i64,
    pub failed: i64,
    pub oldest_pending_secs: Option<f64>,
}

/// Emails pending and failed, and the oldest pending age.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EmailBacklog {
    pub pending: i64,
    pub failed: i64,
    pub oldest_pending_secs: Option<f64>,
}
