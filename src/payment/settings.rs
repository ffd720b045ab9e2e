//! Payments' section of the configuration (`[payments]`): the sandbox rail and the settlement
//! worker.

use std::time::Duration;

use serde::Deserialize;

use crate::platform::config::{ConfigError, Environment, Section};

/// Payments: the sandbox rail and the settlement worker.
#[derive(Debug, Clone)]
pub struct PaymentSettings {
    /// How long the sandbox rail takes to settle a withdrawal.
    pub sandbox_settle_delay: Duration,
    /// How often the settlement worker looks for withdrawals due.
    pub settlement_interval: Duration,
    /// Most withdrawals one pass settles.
    pub settlement_batch: i64,
}

/// `[payments]` as read, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPayments {
    sandbox_settle_delay_ms: u64,
    settlement_interval_ms: u64,
    settlement_batch: i64,
}

impl Section for PaymentSettings {
    const KEY: &'static str = "payments";
    type Raw = RawPayments;

    fn validate(raw: RawPayments, _env: Environment) -> Result<Self, ConfigError> {
        if raw.sandbox_settle_delay_ms > 86_400_000 {
            return Err(ConfigError::invalid(
                "payments.sandbox_settle_delay_ms",
                "FLOWLET__PAYMENTS__SANDBOX_SETTLE_DELAY_MS",
                "must be at most 86400000 (a day)",
            ));
        }
        if !(10..=60_000).contains(&raw.settlement_interval_ms) {
            return Err(ConfigError::invalid(
                "payments.settlement_interval_ms",
                "FLOWLET__PAYMENTS__SETTLEMENT_INTERVAL_MS",
                "must be between 10 and 60000",
            ));
        }
        if !(1..=10_000).contains(&raw.settlement_batch) {
            return Err(ConfigError::invalid(
                "payments.settlement_batch",
                "FLOWLET__PAYMENTS__SETTLEMENT_BATCH",
                "must be between 1 and 10000",
            ));
        }
        Ok(PaymentSettings {
            sandbox_settle_delay: Duration::from_millis(raw.sandbox_settle_delay_ms),
            settlement_interval: Duration::from_millis(raw.settlement_interval_ms),
            settlement_batch: raw.settlement_batch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::config::{Sources, load_section};

    fn load(vars: &[(&str, &str)]) -> Result<PaymentSettings, ConfigError> {
        load_section(&Sources::with_vars(vars.iter().copied()))
    }

    #[test]
    fn payment_settings_have_defaults_and_refuse_nonsense_naming_the_key() {
        let s = load(&[]).unwrap();
        assert_eq!(s.sandbox_settle_delay, Duration::from_millis(2000));
        assert_eq!(s.settlement_interval, Duration::from_millis(250));
        let err = load(&[("FLOWLET__PAYMENTS__SETTLEMENT_INTERVAL_MS", "0")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("payments.settlement_interval_ms"), "{err}");
    }
}
