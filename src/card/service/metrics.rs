//! `card_authorizations_total{result,code}` and `card_authorization_duration_seconds`.

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::card::error::CardError;
use crate::card::network::Authorization;

/// The card module's metrics.
#[derive(Clone)]
pub struct CardMetrics {
    authorizations: IntCounterVec,
    duration: HistogramVec,
}

impl CardMetrics {
    pub fn new(registry: &Registry) -> Result<CardMetrics, prometheus::Error> {
        let authorizations = IntCounterVec::new(
            Opts::new(
                "card_authorizations_total",
                "Card authorizations answered, by result (approved, declined, error) and \
                 ISO 8583 response code.",
            ),
            &["result", "code"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "card_authorization_duration_seconds",
                "Time to decide a card authorization, hold included.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0,
            ]),
            &["result"],
        )?;
        registry.register(Box::new(authorizations.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(CardMetrics {
            authorizations,
            duration,
        })
    }

    pub(super) fn observe(&self, result: &Result<Authorization, CardError>, took: Duration) {
        let (label, code) = match result {
            Ok(a) if a.approved => ("approved", a.response_code.as_str()),
            Ok(a) => ("declined", a.response_code.as_str()),
            Err(_) => ("error", ""),
        };
        self.authorizations.with_label_values(&[label, code]).inc();
        self.duration
            .with_label_values(&[label])
            .observe(took.as_secs_f64());
    }
}
