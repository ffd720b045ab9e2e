//! Payments' section of the configuration (`[payments]`): the sandbox rail and the settlement
//! worker.

use std::time::Duration;

use serde::Deserialize;

use crate::platform::config::{ConfigError, Environment, InsecureKey, Section};

/// The payment rails this build has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RailKind {
    /// Settles against no bank: withdrawals succeed after a delay, amounts ending in `.13` fail.
    Sandbox,
}

/// Payments: the rail and the settlement worker.
#[derive(Debug, Clone)]
pub struct PaymentSettings {
    /// The rail withdrawals go out through (`payments.rail`).
    pub rail: RailKind,
    /// Production runs the sandbox rail only when this says so.
    pub allow_sandbox_rail: bool,
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
    rail: String,
    allow_sandbox_rail: bool,
    sandbox_settle_delay_ms: u64,
    settlement_interval_ms: u64,
    settlement_batch: i64,
}

impl Section for PaymentSettings {
    const KEY: &'static str = "payments";
    type Raw = RawPayments;

    fn validate(raw: RawPayments, _env: Environment) -> Result<Self, ConfigError> {
        let rail = match raw.rail.as_str() {
            "sandbox" => RailKind::Sandbox,
            other => {
                return Err(ConfigError::invalid(
                    "payments.rail",
                    "FLOWLET__PAYMENTS__RAIL",
                    format!(
                        "`{}` is not a rail of this build (sandbox)",
                        other.chars().take(40).collect::<String>()
                    ),
                ));
            }
        };

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
            rail,
            allow_sandbox_rail: raw.allow_sandbox_rail,
            sandbox_settle_delay: Duration::from_millis(raw.sandbox_settle_delay_ms),
            settlement_interval: Duration::from_millis(raw.settlement_interval_ms),
            settlement_batch: raw.settlement_batch,
        })
    }

    /// Production refuses the sandbox rail (withdrawals would settle against no bank) unless
    /// the operator allowed it, listed with the development secrets so one start-up names all.
    fn development_secrets(&self) -> Vec<InsecureKey> {
        if self.rail == RailKind::Sandbox && !self.allow_sandbox_rail {
            vec![InsecureKey {
                key: "payments.rail",
                env_var: "FLOWLET__PAYMENTS__RAIL",
                reason: "is `sandbox`, which settles withdrawals against no bank; configure a \
                         real rail, or set FLOWLET__PAYMENTS__ALLOW_SANDBOX_RAIL=true to run \
                         production against the sandbox knowingly",
            }]
        } else {
            Vec::new()
        }
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
        assert_eq!(s.rail, RailKind::Sandbox);
        let err = load(&[("FLOWLET__PAYMENTS__RAIL", "swift")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("payments.rail"), "{err}");
    }

    fn refused_in_production(allow: bool) -> Vec<InsecureKey> {
        PaymentSettings::validate(
            RawPayments {
                rail: "sandbox".into(),
                allow_sandbox_rail: allow,
                sandbox_settle_delay_ms: 2000,
                settlement_interval_ms: 250,
                settlement_batch: 100,
            },
            Environment::Production,
        )
        .unwrap()
        .development_secrets()
    }

    #[test]
    fn production_refuses_the_sandbox_rail_unless_it_is_explicitly_allowed() {
        let refused = refused_in_production(false);
        assert_eq!(refused.len(), 1);
        let text = refused[0].to_string();
        assert!(text.contains("payments.rail"), "{text}");
        assert!(text.contains("ALLOW_SANDBOX_RAIL"), "{text}");
        assert!(refused_in_production(true).is_empty());
    }
}
