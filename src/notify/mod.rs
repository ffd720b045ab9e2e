//! Notifications: events, signed webhooks, and email, through a transactional outbox.
//!
//! Any module records an event with [`record_event`] (or queues an email with
//! [`enqueue_email`]) inside its own transaction: the event, its deliveries to the partner's
//! matching endpoints and the email commit with the change they describe, or not at all. A
//! worker in `serve` ([`Notifier::run`]) claims due rows with `FOR UPDATE SKIP LOCKED` (so
//! replicas share the work) and delivers them at least once: webhooks signed per the
//! Standard Webhooks specification, retried with backoff; emails through the [`Mailer`].

mod error;
mod http;
mod mail;
mod model;
mod service;
mod settings;
mod store;
mod templates;
mod webhook;

pub use error::NotifyError;
pub use http::configure;
pub use mail::{Email, FileMailer, MailError, mailer};
pub use model::{
    Attempt, AttemptId, EmailBacklog, Endpoint, EndpointBacklog, EndpointId, EndpointWithSecret,
    Event, EventId,
};
pub use service::{NewEvent, Notifier, NotifyMetrics};
pub use settings::{SmtpSettings, WebhookSettings};
pub use templates::Template;
/// What another module needs to call a partner's URL under the webhooks' policy (the card
/// module's real-time decision endpoint): the guarded client (no redirects, no proxies, the
/// SSRF-guarded resolver), the URL check, `whsec_` secrets and Standard Webhooks headers.
pub use webhook::{
    HEADER_WEBHOOK_ID, HEADER_WEBHOOK_SIGNATURE, HEADER_WEBHOOK_TIMESTAMP, SigningKey,
    WebhookError, check_url, generate_secret, headers, http_client,
};

/// The outbox's face: what other modules write into their own transaction, so an event (and
/// its webhook deliveries) or an email exists exactly when the change that caused it commits.
/// Callers hold an `Arc<dyn Outbox>` from the composition root.
#[async_trait::async_trait]
pub trait Outbox: Send + Sync {
    /// Records one event (and a delivery per matching endpoint) in the caller's transaction.
    async fn record_event(
        &self,
        tx: &mut crate::platform::db::Tx<'_>,
        event: NewEvent,
    ) -> Result<EventId, crate::platform::db::DbError>;

    /// Records many events in one statement each for events and deliveries.
    async fn record_events(
        &self,
        tx: &crate::platform::db::Tx<'_>,
        events: Vec<NewEvent>,
    ) -> Result<Vec<EventId>, crate::platform::db::DbError>;

    /// Queues an email in the caller's transaction; the outbox worker sends it.
    async fn enqueue_email(
        &self,
        tx: &mut crate::platform::db::Tx<'_>,
        recipient: &str,
        template: Template,
    ) -> Result<(), crate::platform::db::DbError>;
}

/// The in-process outbox: rows in this module's tables, in the caller's transaction.
#[derive(Debug, Clone, Copy, Default)]
pub struct TransactionalOutbox;

#[async_trait::async_trait]
impl Outbox for TransactionalOutbox {
    async fn record_event(
        &self,
        tx: &mut crate::platform::db::Tx<'_>,
        event: NewEvent,
    ) -> Result<EventId, crate::platform::db::DbError> {
        service::record_event(tx, event).await
    }

    async fn record_events(
        &self,
        tx: &crate::platform::db::Tx<'_>,
        events: Vec<NewEvent>,
    ) -> Result<Vec<EventId>, crate::platform::db::DbError> {
        service::record_events(tx, events).await
    }

    async fn enqueue_email(
        &self,
        tx: &mut crate::platform::db::Tx<'_>,
        recipient: &str,
        template: Template,
    ) -> Result<(), crate::platform::db::DbError> {
        service::enqueue_email(tx, recipient, template).await
    }
}

/// Notify's part of the OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <http::NotifyDoc as utoipa::OpenApi>::openapi()
}
