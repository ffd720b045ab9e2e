//! Transactional email templates: what Flowlet says in each mail it sends.
//!
//! The outbox stores a [`Template`] (the template's name and its data, as JSON) and renders it
//! only when the mail is sent, so wording fixes reach mail that is still queued and the stored
//! row stays small and inspectable. [`Template::render`] produces the subject, a plain-text body
//! and a small self-contained HTML body ([`Rendered`]).
//!
//! The templates are few and fixed, so they are plain Rust functions rather than a template
//! engine. Safety rules every template follows:
//!
//! * HTML markup can only be added as `&'static str`; every runtime value
//!   goes through one function that escapes `& < > " '`. Interpolated data therefore
//!   cannot open a tag or an attribute.
//! * The HTML is one document with inline styles only: no scripts, remote images, fonts or
//!   style sheets, and no links built from data.
//! * Interpolated values are single-line: line breaks and other control or bidi-override
//!   characters become spaces in bodies (so a payment description cannot fake extra lines of
//!   the mail) and are removed from subjects (so no value can break a mail header).
//! * The password-reset token is the only secret any template carries; `Debug` of both
//!   [`Template`] and [`Rendered`] hides it.
//!
//! This file holds the stored [`Template`] and its [`Rendered`] form; [`render`] has one
//! function per template (subject, text and HTML), and [`helpers`] the escaping, single-line
//! values and the inline-styled HTML builder they share.

mod helpers;
mod render;
#[cfg(test)]
mod tests;

use std::fmt;

use serde::{Deserialize, Serialize};

use render::{
    Receipt, card_issued, endpoint_disabled, kyc_decision, password_reset, payment_receipt,
};

/// One mail the outbox will send: the template and its data, stored as
/// `{"template": "<name>", ...fields}` and rendered only when the mail goes out.
///
/// Field values are the display strings the sender already formatted (amounts, timestamps),
/// so rendering never depends on locale or database state. Unknown extra fields are ignored
/// when reading, so a queued row written by a newer release still renders during a rolling
/// deploy; a missing optional field reads as `None`.
///
/// `Debug` is written by hand so that the password-reset token never reaches a log.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "template", rename_all = "snake_case")]
pub enum Template {
    /// A one-time password-reset token. The token is the only secret any template carries.
    PasswordReset {
        /// The one-time token the user pastes back; shown once in each body, never in `Debug`.
        token: String,
        /// How long the token stays valid, as told to the user.
        valid_minutes: u64,
    },
    /// A completed payment, sent to the payer (`direction: "sent"`) or payee (`"received"`).
    PaymentReceipt {
        /// Flowlet's payment identifier, so support requests can quote it.
        payment_id: String,
        /// The amount as already formatted for display (e.g. `"12.50"`).
        amount: String,
        /// ISO 4217 code, e.g. `"EUR"`.
        currency: String,
        /// `"sent"` or `"received"`; anything else renders neutral wording.
        direction: String,
        /// Display name of the other party, if known.
        counterparty: Option<String>,
        /// Free text set by the payer: untrusted, escaped and kept on one line.
        description: Option<String>,
        /// When the payment completed, as already formatted for display.
        completed_at: String,
    },
    /// The outcome of an identity (KYC) check.
    ///
    /// Deliberately carries no document numbers, dates of birth or other identity data: a
    /// mailbox is not a safe place for them. Keep it that way when adding fields.
    KycDecision {
        /// The name to greet the customer with.
        customer_name: String,
        /// `"approved"`, `"rejected"` or `"review"`; anything else renders neutral wording.
        decision: String,
        /// The verification tier reached, mentioned when the decision is `"approved"`.
        tier: Option<u8>,
        /// Why, mentioned when the decision is `"rejected"`; must be customer-facing text.
        reason: Option<String>,
    },
    /// A card was issued to the customer.
    CardIssued {
        /// The last four digits; the full card number never enters a template.
        card_last4: String,
        /// `"virtual"` or `"physical"`.
        card_type: String,
        /// Expiry as `MM/YY`.
        expiry: String,
    },
    /// A partner's webhook endpoint was disabled after failing deliveries.
    EndpointDisabled {
        /// The endpoint; shown without credentials, query or fragment, which may hold secrets.
        endpoint_url: String,
        /// When deliveries started failing, as already formatted for display.
        failing_since: String,
    },
}

/// A rendered mail, ready to hand to the mailer.
///
/// `Debug` prints only the subject, because the bodies of a password-reset mail carry the
/// token.
#[derive(Clone, PartialEq, Eq)]
pub struct Rendered {
    /// Subject line; never contains CR or LF.
    pub subject: String,
    /// Plain-text body, `\n` line endings (the mailer sends CRLF).
    pub text: String,
    /// Self-contained HTML document with inline styles only.
    pub html: String,
}

impl fmt::Debug for Rendered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rendered")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// A template's data that would render a misleading or malformed mail, so the caller can
/// refuse to enqueue it instead of sending wording that fits nothing.
///
/// It names the field and what was expected but never echoes the value, which may be the
/// reset token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template {template}: field {field} is invalid (expected {expected})")]
pub struct TemplateError {
    /// The template's name, as in [`Template::name`].
    pub template: &'static str,
    /// The offending field.
    pub field: &'static str,
    /// What the field should hold.
    pub expected: &'static str,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Every field is destructured, so adding one is a compile error here until someone
        // decides whether it may be printed.
        match self {
            Self::PasswordReset {
                token: _,
                valid_minutes,
            } => f
                .debug_struct("PasswordReset")
                .field("token", &"<redacted>")
                .field("valid_minutes", valid_minutes)
                .finish(),
            Self::PaymentReceipt {
                payment_id,
                amount,
                currency,
                direction,
                counterparty,
                description,
                completed_at,
            } => f
                .debug_struct("PaymentReceipt")
                .field("payment_id", payment_id)
                .field("amount", amount)
                .field("currency", currency)
                .field("direction", direction)
                .field("counterparty", counterparty)
                .field("description", description)
                .field("completed_at", completed_at)
                .finish(),
            Self::KycDecision {
                customer_name,
                decision,
                tier,
                reason,
            } => f
                .debug_struct("KycDecision")
                .field("customer_name", customer_name)
                .field("decision", decision)
                .field("tier", tier)
                .field("reason", reason)
                .finish(),
            Self::CardIssued {
                card_last4,
                card_type,
                expiry,
            } => f
                .debug_struct("CardIssued")
                .field("card_last4", card_last4)
                .field("card_type", card_type)
                .field("expiry", expiry)
                .finish(),
            Self::EndpointDisabled {
                endpoint_url,
                failing_since,
            } => f
                .debug_struct("EndpointDisabled")
                .field("endpoint_url", endpoint_url)
                .field("failing_since", failing_since)
                .finish(),
        }
    }
}

impl Template {
    /// The template's stored name (the serde `template` tag), for metrics and logs that must
    /// not print the data.
    pub fn name(&self) -> &'static str {
        match self {
            Self::PasswordReset { .. } => "password_reset",
            Self::PaymentReceipt { .. } => "payment_receipt",
            Self::KycDecision { .. } => "kyc_decision",
            Self::CardIssued { .. } => "card_issued",
            Self::EndpointDisabled { .. } => "endpoint_disabled",
        }
    }

    /// Renders subject, text and HTML. Infallible, because a queued mail must always be
    /// sendable: values outside the documented sets render neutral wording (call
    /// [`Template::validate`] before enqueueing to catch them early).
    pub fn render(&self) -> Rendered {
        match self {
            Self::PasswordReset {
                token,
                valid_minutes,
            } => password_reset(token, *valid_minutes),
            Self::PaymentReceipt {
                payment_id,
                amount,
                currency,
                direction,
                counterparty,
                description,
                completed_at,
            } => payment_receipt(&Receipt {
                payment_id,
                amount,
                currency,
                direction,
                counterparty: counterparty.as_deref(),
                description: description.as_deref(),
                completed_at,
            }),
            Self::KycDecision {
                customer_name,
                decision,
                tier,
                reason,
            } => kyc_decision(customer_name, decision, *tier, reason.as_deref()),
            Self::CardIssued {
                card_last4,
                card_type,
                expiry,
            } => card_issued(card_last4, card_type, expiry),
            Self::EndpointDisabled {
                endpoint_url,
                failing_since,
            } => endpoint_disabled(endpoint_url, failing_since),
        }
    }

    /// Checks the fields with a fixed vocabulary or format, so a typo (`"approve"`) is refused
    /// when the mail is enqueued rather than sent with neutral wording.
    pub fn validate(&self) -> Result<(), TemplateError> {
        let invalid = |field, expected| TemplateError {
            template: self.name(),
            field,
            expected,
        };
        match self {
            Self::PasswordReset {
                token,
                valid_minutes,
            } => {
                if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(invalid("token", "a non-empty token without whitespace"));
                }
                if *valid_minutes == 0 {
                    return Err(invalid("valid_minutes", "at least 1"));
                }
            }
            Self::PaymentReceipt { direction, .. } => {
                if !matches!(direction.as_str(), "sent" | "received") {
                    return Err(invalid("direction", "\"sent\" or \"received\""));
                }
            }
            Self::KycDecision { decision, .. } => {
                if !matches!(decision.as_str(), "approved" | "rejected" | "review") {
                    return Err(invalid(
                        "decision",
                        "\"approved\", \"rejected\" or \"review\"",
                    ));
                }
            }
            Self::CardIssued {
                card_last4,
                card_type,
                expiry,
            } => {
                if card_last4.len() != 4 || !card_last4.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(invalid("card_last4", "exactly four digits"));
                }
                if !matches!(card_type.as_str(), "virtual" | "physical") {
                    return Err(invalid("card_type", "\"virtual\" or \"physical\""));
                }
                if !is_mm_yy(expiry) {
                    return Err(invalid("expiry", "MM/YY with a month from 01 to 12"));
                }
            }
            Self::EndpointDisabled { endpoint_url, .. } => {
                if endpoint_url.trim().is_empty() {
                    return Err(invalid("endpoint_url", "a non-empty URL"));
                }
            }
        }
        Ok(())
    }
}

/// `MM/YY` with a real month.
fn is_mm_yy(value: &str) -> bool {
    let [m1, m2, b'/', y1, y2] = *value.as_bytes() else {
        return false;
    };
    [m1, m2, y1, y2].iter().all(u8::is_ascii_digit)
        && matches!((m1, m2), (b'0', b'1'..=b'9') | (b'1', b'0'..=b'2'))
}
