//! The ledger's section of the configuration (`[ledger]`): the posting engine, the expiry
//! worker and the periodic verification.

use std::time::Duration;

use serde::Deserialize;

use crate::platform::config::{ConfigError, Environment, Section};

/// The ledger's posting engine and expiry worker.
#[derive(Debug, Clone)]
pub struct LedgerSettings {
    pub max_request_bytes: usize,
    pub batch_max_transfers: usize,
    pub batch_linger: Duration,
    pub queue_capacity: usize,
    /// Bytes the requests waiting for (or in) the engine may take, at most.
    pub queue_max_bytes: usize,
    pub enqueue_timeout: Duration,
    pub max_retries: u32,
    pub pipeline_depth: usize,
    pub expiry_interval: Duration,
    pub expiry_batch: i64,
    /// How often each replica re-checks the ledger's invariants (`None`: never).
    pub verify_interval: Option<Duration>,
}

impl LedgerSettings {
    /// Each batch in flight holds a connection of the pool: leave at least one of
    /// `pool_size` for requests (and keep one batch in flight, however small the pool).
    pub fn within_pool(mut self, pool_size: usize) -> Self {
        self.pipeline_depth = self.pipeline_depth.min(pool_size.saturating_sub(1)).max(1);
        self
    }
}

/// `[ledger]` as read, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLedger {
    max_request_bytes: usize,
    batch_max_transfers: usize,
    batch_linger_us: u64,
    queue_capacity: usize,
    queue_max_bytes: usize,
    enqueue_timeout_ms: u64,
    max_retries: u32,
    pipeline_depth: usize,
    expiry_interval_ms: u64,
    expiry_batch: i64,
    verify_interval_secs: u64,
}

impl Section for LedgerSettings {
    const KEY: &'static str = "ledger";
    type Raw = RawLedger;

    fn validate(raw: RawLedger, _env: Environment) -> Result<Self, ConfigError> {
        if raw.batch_max_transfers == 0 {
            return Err(ConfigError::invalid(
                "ledger.batch_max_transfers",
                "FLOWLET__LEDGER__BATCH_MAX_TRANSFERS",
                "must be greater than 0",
            ));
        }
        if raw.queue_capacity == 0 {
            return Err(ConfigError::invalid(
                "ledger.queue_capacity",
                "FLOWLET__LEDGER__QUEUE_CAPACITY",
                "must be greater than 0",
            ));
        }
        if raw.queue_max_bytes < raw.max_request_bytes {
            return Err(ConfigError::invalid(
                "ledger.queue_max_bytes",
                "FLOWLET__LEDGER__QUEUE_MAX_BYTES",
                "must be at least ledger.max_request_bytes (one largest request must fit)",
            ));
        }
        if raw.expiry_batch <= 0 || raw.expiry_interval_ms == 0 {
            return Err(ConfigError::invalid(
                "ledger.expiry_batch",
                "FLOWLET__LEDGER__EXPIRY_BATCH",
                "expiry_batch and expiry_interval_ms must be greater than 0",
            ));
        }
        Ok(LedgerSettings {
            max_request_bytes: raw.max_request_bytes.max(1),
            batch_max_transfers: raw.batch_max_transfers,
            batch_linger: Duration::from_micros(raw.batch_linger_us),
            queue_capacity: raw.queue_capacity,
            queue_max_bytes: raw.queue_max_bytes,
            enqueue_timeout: Duration::from_millis(raw.enqueue_timeout_ms),
            max_retries: raw.max_retries,
            pipeline_depth: raw.pipeline_depth.max(1),
            expiry_interval: Duration::from_millis(raw.expiry_interval_ms),
            expiry_batch: raw.expiry_batch,
            verify_interval: (raw.verify_interval_secs > 0)
                .then(|| Duration::from_secs(raw.verify_interval_secs)),
        })
    }
}
