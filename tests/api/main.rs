//! The one integration-test binary: the real application over real HTTP, real PostgreSQL and
//! real Redis. Test names read as sentences.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a failed unwrap in a test is a failed test"
)]

mod auth;
mod bank;
mod card_admin;
mod card_authorizations;
mod card_decisions;
mod card_secrets;
mod cards;
mod cli;
mod db;
mod email;
mod errors;
mod faults;
mod hardening;
mod helpers;
mod idempotency;
mod kyc;
mod ledger;
mod ledger_contract;
mod mailbox;
mod observability;
mod payments;
mod platform;
mod rate_limits;
#[path = "../support/redis_server.rs"]
mod redis_server;
mod tls;
mod webhooks;
