//! Cards: issuing virtual and physical debit cards on a partner's customers' wallets, the PAN
//! vault, spending controls, and authorizations as ledger holds (API.md "Cards").
//!
//! - `model/`: the pure rules (PAN and Luhn, expiry, controls and merchant categories, the
//!   authorization decision ladder), unit-tested without a database.

mod error;
mod model;
mod settings;
mod store;

pub use error::CardError;
pub use settings::CardSettings;
