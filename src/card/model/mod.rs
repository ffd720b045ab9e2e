//! The card module's pure rules: no database, no clock of their own, no I/O.
#![cfg_attr(
    not(test),
    allow(dead_code, reason = "wired into the card service as it lands")
)]
