//! KYC rules as pure functions, with the clock passed in: input validation, the automated
//! checks and the decision they lead to, the application state machine, and the tier limits
//! behind [`Compliance`](super::Compliance). No I/O here; the service reads the facts, runs
//! these, and stores what they say.
//!
//! The ids live here; the rules in one file per group: [`validation`] (request fields,
//! addresses, identity documents), [`checks`] (the automated checks, the application state
//! machine and the decision) and [`limits`] (tiers and limits: movements, usage, denials).

mod checks;
mod limits;
mod validation;

pub use checks::*;
pub use limits::*;
pub use validation::*;

use crate::platform::ids::define_id;

define_id!(CustomerId, CustomerIdKind, "cus", "customer");
define_id!(ApplicationId, ApplicationIdKind, "kyc", "application");
