//! Notify's sections of the configuration: webhook delivery (`[webhooks]`, which also paces
//! the outbox worker that sends the emails) and outgoing mail (`[smtp]`).

use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::platform::config::{ConfigError, Environment, Section, non_empty};

/// Webhook delivery (and the outbox worker, which also sends the emails).
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub timeout: Duration,
    pub poll_interval: Duration,
    pub batch: i64,
    pub concurrency: usize,
    pub lease: Duration,
    pub rotation_overlap: Duration,
    pub disable_after: Duration,
    pub require_https: bool,
    pub allow_private_targets: bool,
}

/// `[webhooks]` as read, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhooks {
    timeout_ms: u64,
    poll_interval_ms: u64,
    batch: i64,
    concurrency: usize,
    lease_secs: u64,
    rotation_overlap_secs: u64,
    disable_after_secs: u64,
    require_https: bool,
    allow_private_targets: bool,
}

impl Section for WebhookSettings {
    const KEY: &'static str = "webhooks";
    type Raw = RawWebhooks;

    fn validate(raw: RawWebhooks, _env: Environment) -> Result<Self, ConfigError> {
        if raw.timeout_ms == 0
            || raw.poll_interval_ms == 0
            || raw.batch <= 0
            || raw.concurrency == 0
        {
            return Err(ConfigError::invalid(
                "webhooks.timeout_ms",
                "FLOWLET__WEBHOOKS__TIMEOUT_MS",
                "timeout_ms, poll_interval_ms, batch and concurrency must be greater than 0",
            ));
        }
        if raw.lease_secs.saturating_mul(1000) <= raw.timeout_ms {
            return Err(ConfigError::invalid(
                "webhooks.lease_secs",
                "FLOWLET__WEBHOOKS__LEASE_SECS",
                "must be longer than webhooks.timeout_ms, or deliveries in flight get sent twice",
            ));
        }
        Ok(WebhookSettings {
            timeout: Duration::from_millis(raw.timeout_ms),
            poll_interval: Duration::from_millis(raw.poll_interval_ms),
            batch: raw.batch,
            concurrency: raw.concurrency,
            lease: Duration::from_secs(raw.lease_secs),
            rotation_overlap: Duration::from_secs(raw.rotation_overlap_secs),
            disable_after: Duration::from_secs(raw.disable_after_secs),
            require_https: raw.require_https,
            allow_private_targets: raw.allow_private_targets,
        })
    }
}

/// Outgoing mail.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    /// `None`: messages are written as .eml files under `mail_dir`.
    pub url: Option<SecretString>,
    pub from: String,
    pub mail_dir: PathBuf,
}

impl SmtpSettings {
    /// The SMTP URL to use, if one is configured.
    pub fn expose_url(&self) -> Option<&str> {
        self.url.as_ref().map(ExposeSecret::expose_secret)
    }
}

/// `[smtp]` as read, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSmtp {
    url: Option<String>,
    from: String,
    mail_dir: String,
}

impl Section for SmtpSettings {
    const KEY: &'static str = "smtp";
    type Raw = RawSmtp;

    fn validate(raw: RawSmtp, _env: Environment) -> Result<Self, ConfigError> {
        let url = non_empty(raw.url);
        if let Some(url) = &url
            && !(url.starts_with("smtp://") || url.starts_with("smtps://"))
        {
            return Err(ConfigError::invalid(
                "smtp.url",
                "FLOWLET__SMTP__URL",
                "must start with smtp:// or smtps://",
            ));
        }
        Ok(SmtpSettings {
            url: url.map(SecretString::from),
            from: raw.from,
            mail_dir: PathBuf::from(raw.mail_dir),
        })
    }
}
