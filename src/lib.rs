//! Flowlet core: the money core that embedded-finance partners run their products on.
//!
//! One process (a modular monolith): each domain module sits behind its own face (`mod.rs`),
//! shares one PostgreSQL schema through tables prefixed with its name, and reaches other
//! modules only through their faces. `platform` holds what every module needs. See
//! README.md and DESIGN.md.

pub mod app;
pub mod auth;
pub mod card;
pub mod cli;
pub mod kernel;
pub mod kyc;
pub mod ledger;
pub mod notify;
pub mod payment;
pub mod platform;
pub mod settings;
pub mod wallet;
pub mod wiring;
