//! What every module stands on: configuration, database and transactions, Redis or its
//! in-process stand-in, telemetry, metrics, errors, money, ids and HTTP plumbing.

pub mod config;
pub mod db;
pub mod docs;
pub mod error;
pub mod http;
pub mod idempotency;
pub mod ids;
pub mod infra;
pub mod metrics;
pub mod money;
pub mod ops;
pub mod shared_state;
pub mod telemetry;
pub mod tls;
pub mod vault;
pub mod workers;

/// The Redis the unit tests use (found, or started for the run): one file shared with
/// `tests/api`, never part of the library.
#[cfg(test)]
#[path = "../../tests/support/redis_server.rs"]
pub(crate) mod test_redis;
