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
mod store;
mod templates;
mod webhook;

pub use error::NotifyError;
pub use http::{NotifyDoc, configure};
pub use mail::{DEFAULT_MAIL_DIR, Email, FileMailer, MailError, Mailer, SmtpMailer, mailer};
pub use model::{Attempt, AttemptId, Endpoint, EndpointId, EndpointWithSecret, Event, EventId};
pub use service::{NewEvent, Notifier, NotifyMetrics, enqueue_email, record_event, record_events};
pub use store::{EmailBacklog, EndpointBacklog};
pub use templates::{Rendered, Template};
pub use webhook::{MAX_ATTEMPTS as WEBHOOK_MAX_ATTEMPTS, filter_matches};

/// Notify's part of the OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <NotifyDoc as utoipa::OpenApi>::openapi()
}
