//! The card module's pure rules: no database, no clock of their own, no I/O.
//!
//! - [`pan`]: the BIN, PAN generation and the Luhn check, expiry, CVC derivation.
//! - [`categories`]: merchant category codes and the named groups controls refer to, from
//!   the data file `merchant_categories.csv`.
//! - [`controls`]: the controls request, its validation into typed controls, their view, and
//!   the calendar windows limits count in.
//! - [`decision`]: the authorization decision ladder, in documented precedence.

pub mod categories;
pub mod controls;
pub mod decision;
pub mod pan;
pub mod spend;
