//! Events, endpoints, and the outbox worker that delivers webhooks and sends emails.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, SubsecRound, Utc};
use prometheus::{Gauge, Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::error::NotifyError;
use super::mail::{Email, Mailer};
use super::model::{
    Attempt, AttemptId, EmailBacklog, Endpoint, EndpointBacklog, EndpointId, EndpointWithSecret,
    Event, EventId,
};
use super::settings::WebhookSettings;
use super::store::{self, AttemptRow, ClaimedDelivery, EndpointRow, EventRow};
use super::templates::Template;
use super::webhook::{self, SigningKey};
use crate::kernel::PartnerId;
use crate::platform::db::{Db, DbError, Tx};
use crate::platform::http::pagination::Page;
use crate::platform::workers::Shutdown;

/// Longest response excerpt kept with an attempt.
const EXCERPT_BYTES: usize = 512;

/// An event to record: what happened, to whom, and its data.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// `None`: a platform event, delivered to no partner.
    pub partner_id: Option<PartnerId>,
    /// Dotted lower-case type, e.g. `payment.completed`.
    pub event_type: String,
    pub data: serde_json::Value,
}

/// Records an event in the caller's transaction, with one delivery per matching endpoint:
/// if the transaction rolls back, the event never existed and nothing is ever delivered.
pub async fn record_event(tx: &mut Tx<'_>, event: NewEvent) -> Result<EventId, DbError> {
    let tx: &Tx<'_> = tx;
    record_events(tx, vec![event])
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| DbError::Unavailable("recording an event returned no id".into()))
}

/// [`record_event`] for several events in one statement (a batch of payments' events).
///
/// Takes the transaction shared, so the caller may send it together with other statements.
pub async fn record_events(tx: &Tx<'_>, events: Vec<NewEvent>) -> Result<Vec<EventId>, DbError> {
    let created_at = Utc::now().trunc_subsecs(6);
    let rows: Vec<EventRow> = events
        .into_iter()
        .map(|event| EventRow {
            id: EventId::new().uuid(),
            partner_id: event.partner_id.map(|p| p.uuid()),
            event_type: event.event_type,
            data: event.data,
            created_at,
        })
        .collect();
    let ids = rows.iter().map(|r| EventId::from_uuid(r.id)).collect();
    store::insert_events(tx.shared(), rows).await?;
    Ok(ids)
}

/// Queues an email in the caller's transaction; the worker sends it after the commit (so a
/// rolled-back change never sends mail), and drops its content once sent.
pub async fn enqueue_email(
    tx: &mut Tx<'_>,
    recipient: &str,
    template: Template,
) -> Result<(), DbError> {
    let json = serde_json::to_value(&template)
        .map_err(|e| DbError::Unavailable(format!("serialising an email template: {e}")))?;
    store::insert_email(
        tx.conn(),
        Uuid::now_v7(),
        recipient,
        template.name(),
        &json,
        Utc::now(),
    )
    .await?;
    Ok(())
}

/// The outbox's metrics.
#[derive(Clone)]
pub struct NotifyMetrics {
    deliveries: IntCounterVec,
    delivery_seconds: Histogram,
    pending: IntGauge,
    oldest_age: Gauge,
    due_deliveries: IntGauge,
    due_emails: IntGauge,
}

impl NotifyMetrics {
    pub fn new(registry: &Registry) -> Result<NotifyMetrics, prometheus::Error> {
        let deliveries = IntCounterVec::new(
            Opts::new(
                "webhook_deliveries_total",
                "Webhook delivery attempts, by result.",
            ),
            &["result"],
        )?;
        let delivery_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "webhook_delivery_duration_seconds",
                "Time for an endpoint to answer a delivery.",
            )
            .buckets(vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )?;
        let pending = IntGauge::new("outbox_pending", "Webhook deliveries waiting to be sent.")?;
        let oldest_age = Gauge::new(
            "outbox_oldest_age_seconds",
            "Age of the oldest webhook delivery still waiting.",
        )?;
        registry.register(Box::new(deliveries.clone()))?;
        registry.register(Box::new(delivery_seconds.clone()))?;
        registry.register(Box::new(pending.clone()))?;
        registry.register(Box::new(oldest_age.clone()))?;
        let due_deliveries = IntGauge::new(
            "outbox_due_deliveries",
            "Webhook deliveries whose attempt is due now and that no worker holds.",
        )?;
        let due_emails = IntGauge::new(
            "outbox_due_emails",
            "Emails due to be sent now that no worker holds.",
        )?;
        registry.register(Box::new(due_deliveries.clone()))?;
        registry.register(Box::new(due_emails.clone()))?;
        Ok(NotifyMetrics {
            deliveries,
            delivery_seconds,
            pending,
            oldest_age,
            due_deliveries,
            due_emails,
        })
    }
}

/// The notify service: endpoints, events, and the outbox worker.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    mailer: Arc<dyn Mailer>,
    http: reqwest::Client,
    settings: WebhookSettings,
    metrics: Option<NotifyMetrics>,
}

impl Notifier {
    pub fn new(
        db: Db,
        mailer: Arc<dyn Mailer>,
        settings: &WebhookSettings,
        metrics: Option<NotifyMetrics>,
    ) -> Result<Notifier, NotifyError> {
        let http = webhook::http_client(settings.timeout, settings.allow_private_targets)
            .map_err(|e| NotifyError::Internal(anyhow::anyhow!("webhook HTTP client: {e}")))?;
        Ok(Notifier {
            inner: Arc::new(Inner {
                db,
                mailer,
                http,
                settings: settings.clone(),
                metrics,
            }),
        })
    }

    /// This notifier over another pool: the outbox worker runs on the background workers'
    /// own pool, so a slow endpoint or mail server never costs a request its connection.
    pub fn on_pool(&self, db: Db) -> Notifier {
        Notifier {
            inner: Arc::new(Inner {
                db,
                mailer: self.inner.mailer.clone(),
                http: self.inner.http.clone(),
                settings: self.inner.settings.clone(),
                metrics: self.inner.metrics.clone(),
            }),
        }
    }

    fn db(&self) -> &Db {
        &self.inner.db
    }

    // ----- events ----------------------------------------------------------------------------

    /// A partner's events, newest first, optionally of one type.
    pub async fn list_events(
        &self,
        partner: PartnerId,
        event_type: Option<&str>,
        limit: u32,
        cursor: Option<EventId>,
    ) -> Result<Page<Event>, NotifyError> {
        let mut conn = self.db().conn().await?;
        let rows = store::list_events(
            &mut conn,
            partner.uuid(),
            event_type,
            cursor.map(|c| c.uuid()),
            i64::from(limit) + 1,
        )
        .await?;
        let events = rows.into_iter().map(event_view).collect();
        Ok(Page::from_rows(events, limit, |e: &Event| e.id.to_string()))
    }

    /// One of a partner's events.
    pub async fn event(&self, partner: PartnerId, id: EventId) -> Result<Event, NotifyError> {
        let mut conn = self.db().conn().await?;
        store::find_event(&mut conn, id.uuid())
            .await?
            .filter(|e| e.partner_id == Some(partner.uuid()))
            .map(event_view)
            .ok_or(NotifyError::NotFound("event"))
    }

    // ----- endpoints -------------------------------------------------------------------------

    fn check_endpoint_fields(&self, url: &str, events: &[String]) -> Result<(), NotifyError> {
        webhook::check_url(
            url,
            self.inner.settings.require_https,
            self.inner.settings.allow_private_targets,
        )
        .map_err(|e| NotifyError::validation("url", e.to_string()))?;
        if events.is_empty() || events.len() > 100 {
            return Err(NotifyError::validation(
                "events",
                "must list 1 to 100 event types",
            ));
        }
        for filter in events {
            webhook::validate_filter(filter)
                .map_err(|e| NotifyError::validation("events", e.to_string()))?;
        }
        Ok(())
    }

    /// A new endpoint; its secret is returned once.
    pub async fn create_endpoint(
        &self,
        partner: PartnerId,
        url: &str,
        events: Vec<String>,
        description: Option<String>,
        alert_email: Option<String>,
    ) -> Result<EndpointWithSecret, NotifyError> {
        self.check_endpoint_fields(url, &events)?;
        check_description(description.as_deref())?;
        let secret = webhook::generate_secret()
            .map_err(|e| NotifyError::Internal(anyhow::anyhow!("generating a secret: {e}")))?;
        let now = Utc::now().trunc_subsecs(6);
        let row = EndpointRow {
            id: EndpointId::new().uuid(),
            partner_id: partner.uuid(),
            url: url.to_owned(),
            description,
            event_filters: events,
            enabled: true,
            disabled_reason: None,
            secret: secret.expose_secret().to_owned(),
            previous_secret: None,
            previous_secret_expires_at: None,
            alert_email,
            failing_since: None,
            created_at: now,
            updated_at: now,
            deleted_at: None,
        };
        let mut conn = self.db().conn().await?;
        store::insert_endpoint(&mut conn, &row).await?;
        Ok(EndpointWithSecret {
            endpoint: endpoint_view(&row),
            secret,
        })
    }

    pub async fn endpoint(
        &self,
        partner: PartnerId,
        id: EndpointId,
    ) -> Result<Endpoint, NotifyError> {
        let mut conn = self.db().conn().await?;
        store::find_endpoint(&mut conn, partner.uuid(), id.uuid())
            .await?
            .map(|r| endpoint_view(&r))
            .ok_or(NotifyError::NotFound("webhook endpoint"))
    }

    pub async fn list_endpoints(
        &self,
        partner: PartnerId,
        limit: u32,
        cursor: Option<EndpointId>,
    ) -> Result<Page<Endpoint>, NotifyError> {
        let mut conn = self.db().conn().await?;
        let rows = store::list_endpoints(
            &mut conn,
            partner.uuid(),
            cursor.map(|c| c.uuid()),
            i64::from(limit) + 1,
        )
        .await?;
        let endpoints = rows.iter().map(endpoint_view).collect();
        Ok(Page::from_rows(endpoints, limit, |e: &Endpoint| {
            e.id.to_string()
        }))
    }

    /// Changes an endpoint; enabling it again clears its failure record.
    pub async fn update_endpoint(
        &self,
        partner: PartnerId,
        id: EndpointId,
        url: Option<String>,
        events: Option<Vec<String>>,
        description: Option<Option<String>>,
        enabled: Option<bool>,
    ) -> Result<Endpoint, NotifyError> {
        let mut conn = self.db().conn().await?;
        let current = store::find_endpoint(&mut conn, partner.uuid(), id.uuid())
            .await?
            .ok_or(NotifyError::NotFound("webhook endpoint"))?;
        self.check_endpoint_fields(
            url.as_deref().unwrap_or(&current.url),
            events.as_deref().unwrap_or(&current.event_filters),
        )?;
        if let Some(d) = &description {
            check_description(d.as_deref())?;
        }
        store::update_endpoint(
            &mut conn,
            id.uuid(),
            url,
            events,
            description,
            enabled,
            Utc::now(),
        )
        .await?;
        self.endpoint(partner, id).await
    }

    /// Deletes an endpoint: nothing more is delivered to it.
    pub async fn delete_endpoint(
        &self,
        partner: PartnerId,
        id: EndpointId,
    ) -> Result<(), NotifyError> {
        let mut conn = self.db().conn().await?;
        store::find_endpoint(&mut conn, partner.uuid(), id.uuid())
            .await?
            .ok_or(NotifyError::NotFound("webhook endpoint"))?;
        store::delete_endpoint(&mut conn, id.uuid(), Utc::now()).await?;
        Ok(())
    }

    /// A new secret, returned once; the old one keeps signing for `rotation_overlap`.
    pub async fn rotate_secret(
        &self,
        partner: PartnerId,
        id: EndpointId,
    ) -> Result<EndpointWithSecret, NotifyError> {
        let mut conn = self.db().conn().await?;
        store::find_endpoint(&mut conn, partner.uuid(), id.uuid())
            .await?
            .ok_or(NotifyError::NotFound("webhook endpoint"))?;
        let secret = webhook::generate_secret()
            .map_err(|e| NotifyError::Internal(anyhow::anyhow!("generating a secret: {e}")))?;
        let now = Utc::now();
        let overlap = chrono::Duration::from_std(self.inner.settings.rotation_overlap)
            .unwrap_or(chrono::Duration::days(1));
        store::rotate_secret(
            &mut conn,
            id.uuid(),
            secret.expose_secret(),
            now + overlap,
            now,
        )
        .await?;
        Ok(EndpointWithSecret {
            endpoint: self.endpoint(partner, id).await?,
            secret,
        })
    }

    /// Sends a `webhook.test` event to this endpoint only.
    pub async fn send_test(
        &self,
        partner: PartnerId,
        id: EndpointId,
    ) -> Result<EventId, NotifyError> {
        let endpoint = self.endpoint(partner, id).await?;
        let event_id = EventId::new();
        let now = Utc::now().trunc_subsecs(6);
        let row = EventRow {
            id: event_id.uuid(),
            partner_id: Some(partner.uuid()),
            event_type: "webhook.test".to_owned(),
            data: serde_json::json!({"endpoint_id": endpoint.id, "message": "This is a test event from Flowlet."}),
            created_at: now,
        };
        self.db()
            .in_tx(|tx| {
                let row = row.clone();
                Box::pin(async move {
                    store::insert_event_only(tx.conn(), &row).await?;
                    store::insert_delivery(tx.conn(), row.id, id.uuid(), now).await?;
                    Ok::<_, NotifyError>(())
                })
            })
            .await?;
        Ok(event_id)
    }

    /// An endpoint's delivery attempts, newest first.
    pub async fn attempts(
        &self,
        partner: PartnerId,
        id: EndpointId,
        limit: u32,
        cursor: Option<AttemptId>,
    ) -> Result<Page<Attempt>, NotifyError> {
        let mut conn = self.db().conn().await?;
        store::find_endpoint(&mut conn, partner.uuid(), id.uuid())
            .await?
            .ok_or(NotifyError::NotFound("webhook endpoint"))?;
        let rows = store::list_attempts(
            &mut conn,
            id.uuid(),
            cursor.map(|c| c.uuid()),
            i64::from(limit) + 1,
        )
        .await?;
        let attempts = rows.into_iter().map(attempt_view).collect();
        Ok(Page::from_rows(attempts, limit, |a: &Attempt| {
            a.id.to_string()
        }))
    }

    // ----- operators -------------------------------------------------------------------------

    /// Queues an event again (to one endpoint, or to every matching one); how many queued.
    pub async fn replay(
        &self,
        event: EventId,
        endpoint: Option<EndpointId>,
    ) -> Result<i64, NotifyError> {
        let mut conn = self.db().conn().await?;
        let Some(found) = store::find_event(&mut conn, event.uuid()).await? else {
            return Err(NotifyError::NotFound("event"));
        };
        if let Some(e) = endpoint {
            let Some(target) = store::find_endpoint_any(&mut conn, e.uuid()).await? else {
                return Err(NotifyError::NotFound("webhook endpoint"));
            };
            // An event is only ever sent to its own partner's endpoints.
            if found.partner_id != Some(target.partner_id) {
                return Err(NotifyError::validation(
                    "endpoint",
                    "the endpoint belongs to another partner than the event",
                ));
            }
        }
        Ok(store::replay(
            &mut conn,
            event.uuid(),
            endpoint.map(|e| e.uuid()),
            Utc::now(),
        )
        .await?)
    }

    /// Backlog per endpoint and of the email outbox.
    pub async fn outbox_status(&self) -> Result<(Vec<EndpointBacklog>, EmailBacklog), NotifyError> {
        let mut conn = self.db().conn().await?;
        let endpoints = store::backlog(&mut conn)
            .await?
            .into_iter()
            .map(|r| EndpointBacklog {
                endpoint_id: EndpointId::from_uuid(r.endpoint_id),
                partner_id: PartnerId::from_uuid(r.partner_id),
                url: r.url,
                enabled: r.enabled,
                pending: r.pending,
                failed: r.failed,
                oldest_pending_secs: r.oldest_pending_secs,
            })
            .collect();
        let emails = store::email_backlog(&mut conn).await?;
        Ok((
            endpoints,
            EmailBacklog {
                pending: emails.pending,
                failed: emails.failed,
                oldest_pending_secs: emails.oldest_pending_secs,
            },
        ))
    }

    // ----- the worker ------------------------------------------------------------------------

    /// The outbox worker: delivers due webhooks and sends due emails every poll interval,
    /// until shutdown. Several replicas may run it: rows are leased with SKIP LOCKED.
    pub async fn run(self, mut shutdown: Shutdown) {
        loop {
            let busy = match self.pass().await {
                Ok(worked) => worked,
                Err(e) => {
                    tracing::error!(error.cause = %e, "outbox pass failed");
                    false
                }
            };
            if shutdown.is_requested() {
                return;
            }
            if !busy {
                tokio::select! {
                    () = shutdown.requested() => return,
                    () = tokio::time::sleep(self.inner.settings.poll_interval) => {}
                }
            }
        }
    }

    /// One pass; whether there was work (then the next pass starts at once).
    pub async fn pass(&self) -> Result<bool, NotifyError> {
        let delivered = self.deliver_due().await?;
        let mailed = self.send_due_emails().await?;
        self.disable_failing().await?;
        self.update_gauges().await;
        Ok(delivered + mailed > 0)
    }

    async fn deliver_due(&self) -> Result<usize, NotifyError> {
        let settings = &self.inner.settings;
        let lease = i32::try_from(settings.lease.as_secs()).unwrap_or(i32::MAX);
        let claimed = {
            let mut conn = self.db().conn().await?;
            store::claim_deliveries(&mut conn, settings.batch, lease).await?
        };
        let count = claimed.len();
        let mut tasks = tokio::task::JoinSet::new();
        let mut queue = claimed.into_iter();
        loop {
            while tasks.len() < settings.concurrency {
                let Some(delivery) = queue.next() else { break };
                let this = self.clone();
                tasks.spawn(async move {
                    if let Err(e) = this.deliver(delivery).await {
                        tracing::error!(error.cause = %e, "recording a webhook delivery failed");
                    }
                });
            }
            if tasks.join_next().await.is_none() {
                break;
            }
        }
        Ok(count)
    }

    /// One attempt at one delivery, recorded whatever happens. No connection is held while
    /// the partner's endpoint takes its time: one is taken to record the outcome.
    async fn deliver(&self, delivery: ClaimedDelivery) -> Result<(), NotifyError> {
        let now = Utc::now();
        if !delivery.enabled {
            let mut conn = self.db().conn().await?;
            store::skip_delivery(&mut conn, delivery.id, now).await?;
            return Ok(());
        }
        let event_id = EventId::from_uuid(delivery.event_id).to_string();
        let body = serde_json::to_vec(&serde_json::json!({
            "id": event_id,
            "type": delivery.event_type,
            "created": delivery.event_created_at,
            "data": delivery.data,
        }))
        .map_err(|e| NotifyError::Internal(e.into()))?;
        let keys = signing_keys(&delivery, now)?;
        let timestamp = now.timestamp();
        let headers = webhook::headers(&keys, &event_id, timestamp, &body);
        let started = Instant::now();
        let sent = self
            .inner
            .http
            .post(&delivery.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(webhook::HEADER_WEBHOOK_ID, &headers.id)
            .header(webhook::HEADER_WEBHOOK_TIMESTAMP, &headers.timestamp)
            .header(webhook::HEADER_WEBHOOK_SIGNATURE, &headers.signature)
            .body(body)
            .send()
            .await;
        let (status_code, error, excerpt) = match sent {
            Ok(resp) => {
                let status = resp.status();
                let excerpt = read_excerpt(resp).await;
                let error = (!status.is_success())
                    .then(|| format!("endpoint answered {}", status.as_u16()));
                (Some(i32::from(status.as_u16())), error, excerpt)
            }
            Err(e) => (None, Some(describe_send_error(&e)), None),
        };
        let elapsed = started.elapsed();
        let succeeded = error.is_none();
        let attempt_number = delivery.attempts.saturating_add(1);
        let (outcome, next) = if succeeded {
            ("succeeded", None)
        } else {
            match webhook::next_attempt_delay(
                u32::try_from(attempt_number).unwrap_or(u32::MAX),
                uuid::Uuid::now_v7().as_u128().to_le_bytes()[0].into(),
            ) {
                Some(delay) => (
                    "pending",
                    Some(
                        now + chrono::Duration::from_std(delay)
                            .unwrap_or(chrono::Duration::hours(10)),
                    ),
                ),
                None => ("failed", None),
            }
        };
        if let Some(m) = &self.inner.metrics {
            let label = match outcome {
                "succeeded" => "success",
                "pending" => "retry",
                _ => "failed",
            };
            m.deliveries.with_label_values(&[label]).inc();
            m.delivery_seconds.observe(elapsed.as_secs_f64());
        }
        tracing::info!(
            webhook.endpoint_id = %EndpointId::from_uuid(delivery.endpoint_id),
            webhook.event_id = %event_id,
            webhook.attempt = attempt_number,
            webhook.status = status_code,
            webhook.outcome = outcome,
            duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            "webhook delivery attempt"
        );
        let attempt = AttemptRow {
            id: AttemptId::new().uuid(),
            delivery_id: delivery.id,
            endpoint_id: delivery.endpoint_id,
            event_id: delivery.event_id,
            attempt: attempt_number,
            status_code,
            latency_ms: i32::try_from(elapsed.as_millis()).unwrap_or(i32::MAX),
            error,
            response_excerpt: excerpt,
            created_at: Utc::now(),
        };
        let mut conn = self.db().conn().await?;
        store::finish_attempt(&mut conn, &attempt, outcome, next, Utc::now()).await?;
        Ok(())
    }

    /// Sends the due emails. Like deliveries, no connection is held while the mail server
    /// takes its time: the claim is leased, and each outcome is recorded with a fresh one.
    async fn send_due_emails(&self) -> Result<usize, NotifyError> {
        let lease = i32::try_from(self.inner.settings.lease.as_secs()).unwrap_or(i32::MAX);
        let claimed = {
            let mut conn = self.db().conn().await?;
            store::claim_emails(&mut conn, self.inner.settings.batch, lease).await?
        };
        let count = claimed.len();
        for email in claimed {
            let template = email
                .template
                .and_then(|t| serde_json::from_value::<Template>(t).ok());
            let Some(template) = template else {
                let mut conn = self.db().conn().await?;
                store::email_failed(&mut conn, email.id, "unreadable template", None).await?;
                continue;
            };
            let rendered = template.render();
            let message = Email {
                to: email.recipient.clone(),
                subject: rendered.subject,
                text: rendered.text,
                html: Some(rendered.html),
            };
            let sent = self.inner.mailer.send(&message).await;
            let mut conn = self.db().conn().await?;
            match sent {
                Ok(()) => store::email_sent(&mut conn, email.id, Utc::now()).await?,
                Err(e) => {
                    let attempts =
                        u32::try_from(email.attempts.saturating_add(1)).unwrap_or(u32::MAX);
                    let next = webhook::next_attempt_delay(attempts, u64::from(attempts))
                        .and_then(|d| chrono::Duration::from_std(d).ok())
                        .map(|d| Utc::now() + d);
                    tracing::warn!(error.cause = %e, email.attempts = attempts, "sending an email failed");
                    store::email_failed(&mut conn, email.id, &e.to_string(), next).await?;
                }
            }
        }
        Ok(count)
    }

    /// Endpoints failing for longer than `disable_after` are disabled and their partner told.
    async fn disable_failing(&self) -> Result<(), NotifyError> {
        let Ok(after) = chrono::Duration::from_std(self.inner.settings.disable_after) else {
            return Ok(());
        };
        let now = Utc::now();
        let db = self.db().clone();
        db.in_tx(|tx| {
            Box::pin(async move {
                let disabled = store::disable_failing_endpoints(tx.conn(), now - after, now).await?;
                for endpoint in disabled {
                    tracing::warn!(webhook.endpoint_id = %EndpointId::from_uuid(endpoint.id), "disabled a failing webhook endpoint");
                    if let Some(to) = endpoint.alert_email {
                        let template = Template::EndpointDisabled {
                            endpoint_url: endpoint.url,
                            failing_since: endpoint.failing_since.to_rfc3339(),
                        };
                        enqueue_email(tx, &to, template).await?;
                    }
                }
                Ok::<_, NotifyError>(())
            })
        })
        .await
    }

    async fn update_gauges(&self) {
        let Some(m) = &self.inner.metrics else { return };
        let gauge = async {
            let mut conn = self.db().conn().await?;
            Ok::<_, NotifyError>(store::outbox_gauge(&mut conn).await?)
        }
        .await;
        if let Ok(g) = gauge {
            m.pending.set(g.pending);
            m.oldest_age.set(g.oldest_secs.unwrap_or(0.0));
            m.due_deliveries.set(g.due_deliveries);
            m.due_emails.set(g.due_emails);
        }
    }
}

/// The keys that sign a delivery now: the current secret, and the previous one while its
/// overlap lasts.
fn signing_keys(
    delivery: &ClaimedDelivery,
    now: DateTime<Utc>,
) -> Result<Vec<SigningKey>, NotifyError> {
    let parse = |s: &str| {
        SigningKey::parse(&SecretString::from(s.to_owned()))
            .map_err(|e| NotifyError::Internal(anyhow::anyhow!("stored webhook secret: {e}")))
    };
    let mut keys = vec![parse(&delivery.secret)?];
    if let (Some(previous), Some(until)) = (
        &delivery.previous_secret,
        delivery.previous_secret_expires_at,
    ) && until > now
    {
        keys.push(parse(previous)?);
    }
    Ok(keys)
}

/// The first bytes of an answer, as text, for the attempt log.
async fn read_excerpt(resp: reqwest::Response) -> Option<String> {
    let bytes = resp.bytes().await.ok()?;
    let cut = &bytes[..bytes.len().min(EXCERPT_BYTES)];
    let text = String::from_utf8_lossy(cut).into_owned();
    (!text.is_empty()).then_some(text)
}

/// A short, secret-free description of why a request did not get an answer.
fn describe_send_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "could not connect".to_owned()
    } else if e.is_redirect() {
        "redirects are not followed".to_owned()
    } else {
        "request failed".to_owned()
    }
}

fn check_description(description: Option<&str>) -> Result<(), NotifyError> {
    if description.is_some_and(|d| d.chars().count() > 500) {
        return Err(NotifyError::validation(
            "description",
            "must be at most 500 characters",
        ));
    }
    Ok(())
}

fn event_view(row: EventRow) -> Event {
    Event {
        id: EventId::from_uuid(row.id),
        event_type: row.event_type,
        created: row.created_at,
        data: row.data,
    }
}

fn endpoint_view(row: &EndpointRow) -> Endpoint {
    Endpoint {
        id: EndpointId::from_uuid(row.id),
        url: row.url.clone(),
        description: row.description.clone(),
        events: row.event_filters.clone(),
        enabled: row.enabled,
        disabled_reason: row.disabled_reason.clone(),
        previous_secret_expires_at: row.previous_secret_expires_at.filter(|at| *at > Utc::now()),
        created_at: row.created_at,
    }
}

fn attempt_view(row: AttemptRow) -> Attempt {
    Attempt {
        id: AttemptId::from_uuid(row.id),
        event_id: EventId::from_uuid(row.event_id),
        attempt: row.attempt,
        status_code: row.status_code,
        latency_ms: row.latency_ms,
        error: row.error,
        response_excerpt: row.response_excerpt,
        created_at: row.created_at,
    }
}
