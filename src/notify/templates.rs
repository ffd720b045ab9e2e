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

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

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

// ---------------------------------------------------------------------------------------------
// Templates
// ---------------------------------------------------------------------------------------------

fn password_reset(token: &str, valid_minutes: u64) -> Rendered {
    let subject = "Reset your Flowlet password".to_owned();
    let minutes = minutes(valid_minutes);
    let token_line = one_line(token);

    let text = format!(
        "Someone asked to reset the password of your Flowlet account.\n\n\
         Your one-time reset token is valid for {minutes}:\n\n\
         {token_line}\n\n\
         If you did not request this, ignore this email: your password stays unchanged.\n"
    );

    let mut h = Html::start(&subject);
    h.markup(H1).value("Reset your password").markup(H1_END);
    h.markup(P)
        .value("Someone asked to reset the password of your Flowlet account. ")
        .value("Your one-time reset token is valid for ")
        .value(&minutes)
        .value(":")
        .markup(P_END);
    h.markup(TOKEN).value(token).markup(TOKEN_END);
    h.markup(P)
        .value("If you did not request this, ignore this email: your password stays unchanged.")
        .markup(P_END);

    Rendered {
        subject,
        text,
        html: h.finish(),
    }
}

/// Borrowed fields of [`Template::PaymentReceipt`], so the renderer takes one argument.
struct Receipt<'a> {
    payment_id: &'a str,
    amount: &'a str,
    currency: &'a str,
    direction: &'a str,
    counterparty: Option<&'a str>,
    description: Option<&'a str>,
    completed_at: &'a str,
}

fn payment_receipt(r: &Receipt<'_>) -> Rendered {
    let subject = subject_line(&format!("Payment receipt: {} {}", r.amount, r.currency));
    let money = format!("{} {}", r.amount, r.currency);
    let counterparty = r.counterparty.filter(|c| !c.trim().is_empty());

    // The headline sentence as (lead, party preposition) so text and HTML say the same.
    let (lead, preposition) = match r.direction {
        "sent" => ("You sent ", " to "),
        "received" => ("You received ", " from "),
        _ => ("A payment of ", " with "),
    };
    let tail = if matches!(r.direction, "sent" | "received") {
        "."
    } else {
        " was completed."
    };
    let headline = |party: Option<&str>| match party {
        Some(p) => format!("{lead}{money}{preposition}{p}{tail}"),
        None => format!("{lead}{money}{tail}"),
    };

    let mut details: Vec<(&'static str, &str)> = vec![
        ("Amount", &money),
        ("Completed", r.completed_at),
        ("Payment ID", r.payment_id),
    ];
    if let Some(p) = counterparty {
        let label = match r.direction {
            "sent" => "To",
            "received" => "From",
            _ => "Counterparty",
        };
        details.insert(1, (label, p));
    }
    if let Some(d) = r.description.filter(|d| !d.trim().is_empty()) {
        details.push(("Description", d));
    }

    let mut text = headline(counterparty.map(one_line).as_deref());
    text.push_str("\n\n");
    for (label, value) in &details {
        text.push_str(label);
        text.push_str(": ");
        text.push_str(&one_line(value));
        text.push('\n');
    }
    text.push_str("\nQuote the payment ID if you contact support about this payment.\n");

    let mut h = Html::start(&subject);
    h.markup(H1).value("Payment receipt").markup(H1_END);
    h.markup(P).value(&headline(counterparty)).markup(P_END);
    h.markup(TABLE);
    for (label, value) in &details {
        h.markup(TR_LABEL)
            .value(label)
            .markup(TD_VALUE)
            .value(value)
            .markup(TR_END);
    }
    h.markup(TABLE_END);
    h.markup(P)
        .value("Quote the payment ID if you contact support about this payment.")
        .markup(P_END);

    Rendered {
        subject,
        text,
        html: h.finish(),
    }
}

fn kyc_decision(
    customer_name: &str,
    decision: &str,
    tier: Option<u8>,
    reason: Option<&str>,
) -> Rendered {
    let in_words = match decision {
        "approved" => "approved",
        "rejected" => "not approved",
        "review" => "under review",
        _ => "status update",
    };
    let subject = format!("Your identity verification: {in_words}");
    let reason = reason.filter(|r| !r.trim().is_empty());

    // Paragraphs as plain strings (values interpolated unescaped); escaped once per output.
    let mut paragraphs: Vec<String> = Vec::new();
    match decision {
        "approved" => {
            paragraphs.push("Good news: your identity verification has been approved.".into());
            if let Some(t) = tier {
                paragraphs.push(format!("Your account is now verified at tier {t}."));
            }
        }
        "rejected" => {
            paragraphs.push("We're sorry: we could not approve your identity verification.".into());
            if let Some(r) = reason {
                paragraphs.push(format!("Reason: {r}"));
            }
            paragraphs.push("If you think this is a mistake, please contact support.".into());
        }
        "review" => paragraphs.push(
            "Thank you for submitting your identity verification. We need to take a closer \
             look before we can decide. We will email you again when there is a decision or \
             if we need anything from you."
                .into(),
        ),
        _ => paragraphs.push(
            "There is an update on your identity verification. Please sign in to see it.".into(),
        ),
    }

    let mut text = format!("Hello {},\n\n", one_line(customer_name));
    for p in &paragraphs {
        text.push_str(&one_line(p));
        text.push_str("\n\n");
    }
    text.push_str("Flowlet\n");

    let mut h = Html::start(&subject);
    h.markup(H1).value("Identity verification").markup(H1_END);
    h.markup(P)
        .value("Hello ")
        .value(customer_name)
        .value(",")
        .markup(P_END);
    for p in &paragraphs {
        h.markup(P).value(p).markup(P_END);
    }

    Rendered {
        subject,
        text,
        html: h.finish(),
    }
}

fn card_issued(card_last4: &str, card_type: &str, expiry: &str) -> Rendered {
    // A type outside the documented set is left out rather than repeated verbatim.
    let kind = match card_type {
        "virtual" => "virtual ",
        "physical" => "physical ",
        _ => "",
    };
    let subject = subject_line(&format!("Your new {kind}card ending {card_last4}"));
    let headline = format!("Your new {kind}card ending in {card_last4} has been issued.");
    let expires = format!("It expires at the end of {expiry} (MM/YY).");
    let warning = "If you did not ask for this card, contact support immediately.";

    let text = format!(
        "{}\n{}\n\n{warning}\n",
        one_line(&headline),
        one_line(&expires)
    );

    let mut h = Html::start(&subject);
    h.markup(H1).value("Your new card").markup(H1_END);
    h.markup(P)
        .value(&headline)
        .value(" ")
        .value(&expires)
        .markup(P_END);
    h.markup(P).value(warning).markup(P_END);

    Rendered {
        subject,
        text,
        html: h.finish(),
    }
}

fn endpoint_disabled(endpoint_url: &str, failing_since: &str) -> Rendered {
    let subject = "Webhook endpoint disabled".to_owned();
    let url = display_url(endpoint_url);
    let what = format!(
        "We disabled your webhook endpoint {url} because deliveries to it have been failing \
         since {failing_since}."
    );
    let next = "No events are delivered to it while it is disabled. Fix the endpoint, then \
                re-enable it to resume deliveries.";

    let text = format!("{}\n\n{next}\n", one_line(&what));

    let mut h = Html::start(&subject);
    h.markup(H1)
        .value("Webhook endpoint disabled")
        .markup(H1_END);
    h.markup(P).value(&what).markup(P_END);
    h.markup(P).value(next).markup(P_END);

    Rendered {
        subject,
        text,
        html: h.finish(),
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// "1 minute", "60 minutes".
fn minutes(n: u64) -> String {
    if n == 1 {
        "1 minute".to_owned()
    } else {
        format!("{n} minutes")
    }
}

/// Characters that must not survive into a single line of mail: control characters (CR, LF,
/// tab, NEL, ...), Unicode line/paragraph separators, and bidi embedding/override/isolate
/// controls (which can make untrusted text display reversed, e.g. to spoof an amount).
fn breaks_line(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// A value as one line of body text: line-breaking characters become spaces.
fn one_line(value: &str) -> Cow<'_, str> {
    if value.chars().any(breaks_line) {
        Cow::Owned(
            value
                .chars()
                .map(|c| if breaks_line(c) { ' ' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(value)
    }
}

/// A subject line: line-breaking characters are removed, so no value can end the header.
fn subject_line(subject: &str) -> String {
    subject.chars().filter(|&c| !breaks_line(c)).collect()
}

/// The endpoint as shown to the partner: scheme, host and path only. Userinfo
/// (`user:pass@`), query and fragment are dropped because webhook URLs often carry secrets
/// there. No link is made from it.
fn display_url(url: &str) -> String {
    let without_query = url.split(['?', '#']).next().unwrap_or_default();
    let (scheme, rest) = match without_query.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, without_query),
    };
    let (authority, path) = match rest.find(['/', '\\']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    match scheme {
        Some(scheme) => format!("{scheme}://{host}{path}"),
        None => format!("{host}{path}"),
    }
}

/// Appends `value` HTML-escaped (`& < > " '`) and kept on one line.
fn push_escaped(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if breaks_line(c) => out.push(' '),
            c => out.push(c),
        }
    }
}

// Inline styles: mail clients drop <style> blocks and remote CSS, so every element carries its
// own. System fonts only; no images.
const H1: &str = "<h1 style=\"margin:0 0 16px;font-size:20px;line-height:28px;color:#111827;\">";
const H1_END: &str = "</h1>\n";
const P: &str = "<p style=\"margin:0 0 16px;font-size:15px;line-height:22px;\">";
const P_END: &str = "</p>\n";
const TOKEN: &str = "<p style=\"margin:0 0 16px;padding:12px 16px;background-color:#f3f4f6;\
                     border-radius:6px;font-family:Menlo,Consolas,monospace;font-size:16px;\
                     word-break:break-all;\">";
const TOKEN_END: &str = "</p>\n";
const TABLE: &str = "<table role=\"presentation\" cellpadding=\"0\" cellspacing=\"0\" \
                     style=\"width:100%;margin:0 0 16px;border-collapse:collapse;\">\n";
const TABLE_END: &str = "</table>\n";
const TR_LABEL: &str = "<tr><td style=\"padding:6px 12px 6px 0;font-size:14px;color:#6b7280;\
                        vertical-align:top;white-space:nowrap;\">";
const TD_VALUE: &str = "</td><td style=\"padding:6px 0;font-size:14px;word-break:break-word;\">";
const TR_END: &str = "</td></tr>\n";

/// An HTML document under construction. Markup can only be `&'static str` (written in this
/// file); runtime values can only enter through [`Html::value`], which escapes them. That
/// split is what keeps interpolated data from ever becoming markup.
struct Html {
    buf: String,
}

impl Html {
    /// Opens the document and the card every template writes into.
    fn start(title: &str) -> Self {
        let mut h = Self {
            buf: String::with_capacity(2048),
        };
        h.markup(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>",
        )
        .value(title)
        .markup(
            "</title>\n</head>\n<body style=\"margin:0;padding:24px 12px;\
             background-color:#f3f4f6;font-family:-apple-system,'Segoe UI',Helvetica,Arial,\
             sans-serif;color:#1f2937;\">\n<div style=\"max-width:560px;margin:0 auto;\
             padding:32px;background-color:#ffffff;border-radius:8px;\">\n\
             <p style=\"margin:0 0 24px;font-size:16px;font-weight:bold;color:#111827;\">\
             Flowlet</p>\n",
        );
        h
    }

    /// Appends trusted markup written in this file.
    fn markup(&mut self, markup: &'static str) -> &mut Self {
        self.buf.push_str(markup);
        self
    }

    /// Appends a value as escaped text.
    fn value(&mut self, value: &str) -> &mut Self {
        push_escaped(&mut self.buf, value);
        self
    }

    /// Closes the card and the document.
    fn finish(mut self) -> String {
        self.markup(
            "<p style=\"margin:24px 0 0;font-size:12px;line-height:18px;color:#6b7280;\">\
             This is an automated message from Flowlet; replies are not read.</p>\n\
             </div>\n</body>\n</html>\n",
        );
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TOKEN_VALUE: &str = "flr_Zm9vYmFyYmF6cXV4LXRva2VuLXZhbHVlLTEyMzQ1Njc4OQ";
    const HOSTILE: &str = "<script>alert(1)</script>";

    fn reset() -> Template {
        Template::PasswordReset {
            token: TOKEN_VALUE.into(),
            valid_minutes: 60,
        }
    }

    fn receipt(direction: &str, description: Option<&str>) -> Template {
        Template::PaymentReceipt {
            payment_id: "pay_0192".into(),
            amount: "12.50".into(),
            currency: "EUR".into(),
            direction: direction.into(),
            counterparty: Some("Ada's Bakery & Co".into()),
            description: description.map(Into::into),
            completed_at: "2026-03-21 14:05 UTC".into(),
        }
    }

    fn kyc(name: &str, decision: &str, tier: Option<u8>, reason: Option<&str>) -> Template {
        Template::KycDecision {
            customer_name: name.into(),
            decision: decision.into(),
            tier,
            reason: reason.map(Into::into),
        }
    }

    fn card() -> Template {
        Template::CardIssued {
            card_last4: "4242".into(),
            card_type: "virtual".into(),
            expiry: "09/29".into(),
        }
    }

    fn endpoint(url: &str) -> Template {
        Template::EndpointDisabled {
            endpoint_url: url.into(),
            failing_since: "2026-03-20 08:00 UTC".into(),
        }
    }

    /// One of each variant, plus the branches that change wording.
    fn samples() -> Vec<Template> {
        vec![
            reset(),
            receipt("sent", Some("Lunch")),
            receipt("received", None),
            kyc("Ada Lovelace", "approved", Some(2), None),
            kyc(
                "Ada Lovelace",
                "rejected",
                None,
                Some("The photo was blurry"),
            ),
            kyc("Ada Lovelace", "review", None, None),
            card(),
            endpoint("https://hooks.example.com/flowlet"),
        ]
    }

    #[test]
    fn every_template_renders_a_non_empty_subject_text_and_html() {
        for t in samples() {
            let r = t.render();
            assert!(!r.subject.trim().is_empty(), "{}", t.name());
            assert!(!r.text.trim().is_empty(), "{}", t.name());
            assert!(r.html.starts_with("<!DOCTYPE html>"), "{}", t.name());
            assert!(r.html.trim_end().ends_with("</html>"), "{}", t.name());
            assert!(t.validate().is_ok(), "{}", t.name());
        }
    }

    #[test]
    fn subjects_read_as_specified() {
        let subjects: Vec<String> = [
            reset(),
            receipt("sent", None),
            kyc("A", "approved", None, None),
            kyc("A", "rejected", None, None),
            kyc("A", "review", None, None),
            card(),
            endpoint("https://x.example"),
        ]
        .iter()
        .map(|t| t.render().subject)
        .collect();
        assert_eq!(
            subjects,
            [
                "Reset your Flowlet password",
                "Payment receipt: 12.50 EUR",
                "Your identity verification: approved",
                "Your identity verification: not approved",
                "Your identity verification: under review",
                "Your new virtual card ending 4242",
                "Webhook endpoint disabled",
            ]
        );
    }

    #[test]
    fn html_is_self_contained_with_inline_styles_only() {
        for t in samples() {
            let html = t.render().html.to_ascii_lowercase();
            for banned in [
                "<script", "<link", "<style", "<img", "<iframe", "src=", "href=", "url(",
                "@import", "http://", "https://",
            ] {
                // The endpoint URL is shown as escaped text, so skip the scheme check there.
                if banned.starts_with("http") && t.name() == "endpoint_disabled" {
                    continue;
                }
                assert!(!html.contains(banned), "{} contains {banned}", t.name());
            }
        }
    }

    #[test]
    fn a_hostile_description_is_escaped_in_the_html() {
        let r = receipt("sent", Some(HOSTILE)).render();
        assert!(!r.html.contains("<script"));
        assert!(r.html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(r.text.contains(HOSTILE), "plain text shows the value as is");
    }

    #[test]
    fn a_hostile_customer_name_is_escaped_in_the_html() {
        let r = kyc(HOSTILE, "approved", Some(1), None).render();
        assert!(!r.html.contains("<script"));
        assert!(
            r.html
                .contains("Hello &lt;script&gt;alert(1)&lt;/script&gt;,")
        );
    }

    #[test]
    fn every_interpolated_field_is_escaped_in_the_html() {
        let h = "\"'&<x>";
        let escaped = "&quot;&#39;&amp;&lt;x&gt;";
        let templates = [
            Template::PasswordReset {
                token: h.into(),
                valid_minutes: 5,
            },
            Template::PaymentReceipt {
                payment_id: h.into(),
                amount: h.into(),
                currency: h.into(),
                direction: "sent".into(),
                counterparty: Some(h.into()),
                description: Some(h.into()),
                completed_at: h.into(),
            },
            kyc(h, "rejected", None, Some(h)),
            Template::CardIssued {
                card_last4: h.into(),
                card_type: "physical".into(),
                expiry: h.into(),
            },
            Template::EndpointDisabled {
                endpoint_url: h.into(),
                failing_since: h.into(),
            },
        ];
        for t in templates {
            let html = t.render().html;
            assert!(!html.contains("<x>"), "{}", t.name());
            assert!(!html.contains("\"'"), "{}", t.name());
            assert!(html.contains(escaped), "{}", t.name());
        }
    }

    #[test]
    fn the_reset_token_appears_exactly_once_in_the_text_and_once_in_the_html() {
        let r = reset().render();
        assert_eq!(r.text.matches(TOKEN_VALUE).count(), 1);
        assert_eq!(r.html.matches(TOKEN_VALUE).count(), 1);
        assert!(!r.subject.contains(TOKEN_VALUE));
    }

    #[test]
    fn the_reset_text_puts_the_token_on_its_own_line_with_validity_and_an_ignore_note() {
        let text = reset().render().text;
        assert!(text.lines().any(|l| l == TOKEN_VALUE));
        assert!(text.contains("valid for 60 minutes"));
        assert!(text.contains("If you did not request this, ignore this email"));
        let one = Template::PasswordReset {
            token: TOKEN_VALUE.into(),
            valid_minutes: 1,
        };
        assert!(one.render().text.contains("valid for 1 minute:"));
    }

    #[test]
    fn debug_output_never_shows_the_reset_token() {
        let t = reset();
        let debug = format!("{t:?} {t:#?} {:?}", t.render());
        assert!(!debug.contains(TOKEN_VALUE));
        assert!(!debug.contains("flr_"));
        assert!(debug.contains("<redacted>"));
        assert!(debug.contains("valid_minutes: 60"));
    }

    #[test]
    fn validation_errors_never_echo_the_token() {
        let t = Template::PasswordReset {
            token: "flr_secret with space".into(),
            valid_minutes: 60,
        };
        let err = t.validate().unwrap_err();
        assert_eq!(err.field, "token");
        assert!(!format!("{err} {err:?}").contains("secret"));
    }

    #[test]
    fn password_reset_serialises_to_the_documented_shape() {
        let value = serde_json::to_value(reset()).unwrap();
        assert_eq!(
            value,
            json!({"template": "password_reset", "token": TOKEN_VALUE, "valid_minutes": 60})
        );
        let back: Template = serde_json::from_str(&format!(
            r#"{{"template":"password_reset","token":"{TOKEN_VALUE}","valid_minutes":60}}"#
        ))
        .unwrap();
        assert_eq!(back, reset());
    }

    #[test]
    fn every_variant_survives_a_json_round_trip() {
        for t in samples() {
            let json = serde_json::to_string(&t).unwrap();
            assert!(json.starts_with(&format!(r#"{{"template":"{}""#, t.name())));
            let back: Template = serde_json::from_str(&json).unwrap();
            assert_eq!(back, t);
            let via_value: Template =
                serde_json::from_value(serde_json::to_value(&t).unwrap()).unwrap();
            assert_eq!(via_value, t);
        }
    }

    #[test]
    fn the_name_is_the_serde_tag_of_every_variant() {
        for t in samples() {
            assert_eq!(serde_json::to_value(&t).unwrap()["template"], t.name());
        }
    }

    #[test]
    fn stored_rows_may_omit_optional_fields_and_carry_unknown_ones() {
        let t: Template = serde_json::from_value(json!({
            "template": "kyc_decision",
            "customer_name": "Ada",
            "decision": "review",
            "added_by_a_newer_release": true
        }))
        .unwrap();
        assert_eq!(t, kyc("Ada", "review", None, None));
    }

    #[test]
    fn an_unknown_template_name_fails_to_deserialize() {
        let err =
            serde_json::from_value::<Template>(json!({"template": "newsletter", "token": "x"}))
                .unwrap_err();
        assert!(err.to_string().contains("newsletter"), "{err}");
        assert!(
            serde_json::from_value::<Template>(json!({"token": "x", "valid_minutes": 1})).is_err()
        );
        assert!(
            serde_json::from_value::<Template>(
                json!({"template": "PasswordReset", "token": "x", "valid_minutes": 1})
            )
            .is_err()
        );
    }

    #[test]
    fn subjects_have_line_breaks_stripped_from_interpolated_values() {
        let t = Template::PaymentReceipt {
            payment_id: "p".into(),
            amount: "10\r\nBcc: victim@example.com".into(),
            currency: "EUR\n".into(),
            direction: "received".into(),
            counterparty: None,
            description: None,
            completed_at: "now".into(),
        };
        let subject = t.render().subject;
        assert!(!subject.contains(['\r', '\n']));
        assert_eq!(subject, "Payment receipt: 10Bcc: victim@example.com EUR");

        let c = Template::CardIssued {
            card_last4: "42\r\n42".into(),
            card_type: "physical".into(),
            expiry: "01/30".into(),
        };
        assert_eq!(c.render().subject, "Your new physical card ending 4242");
    }

    #[test]
    fn body_values_cannot_add_lines_to_the_mail() {
        let r = receipt(
            "sent",
            Some("Rent\n\nYour account is locked, call +1 555\u{2028}now"),
        )
        .render();
        assert!(
            r.text
                .contains("Description: Rent  Your account is locked, call +1 555 now\n")
        );
        assert!(!r.html.contains("Rent\n"));
        let bidi = receipt("sent", Some("abc\u{202E}01.0")).render();
        assert!(!bidi.text.contains('\u{202E}') && !bidi.html.contains('\u{202E}'));
    }

    #[test]
    fn receipts_say_who_paid_whom() {
        let sent = receipt("sent", None).render();
        assert!(
            sent.text
                .starts_with("You sent 12.50 EUR to Ada's Bakery & Co.\n")
        );
        assert!(
            sent.html
                .contains("You sent 12.50 EUR to Ada&#39;s Bakery &amp; Co.")
        );
        assert!(sent.text.contains("Payment ID: pay_0192\n"));
        let received = receipt("received", None).render();
        assert!(
            received
                .text
                .starts_with("You received 12.50 EUR from Ada's Bakery & Co.\n")
        );
        let odd = receipt("reversed", None).render();
        assert!(
            odd.text
                .starts_with("A payment of 12.50 EUR with Ada's Bakery & Co was completed.")
        );
    }

    #[test]
    fn kyc_wording_follows_the_decision() {
        let approved = kyc("Ada", "approved", Some(2), None).render();
        assert!(approved.text.contains("has been approved"));
        assert!(approved.text.contains("tier 2"));
        let approved_no_tier = kyc("Ada", "approved", None, None).render();
        assert!(!approved_no_tier.text.contains("tier"));

        let rejected = kyc("Ada", "rejected", None, Some("The photo was blurry")).render();
        assert!(rejected.text.contains("could not approve"));
        assert!(rejected.text.contains("Reason: The photo was blurry"));
        let rejected_no_reason = kyc("Ada", "rejected", None, None).render();
        assert!(!rejected_no_reason.text.contains("Reason"));

        let review = kyc("Ada", "review", None, None).render();
        assert!(review.text.contains("take a closer look"));
        assert!(review.html.contains("take a closer look"));

        let unknown = kyc("Ada", "approve", Some(3), None).render();
        assert_eq!(unknown.subject, "Your identity verification: status update");
        assert!(!unknown.text.contains("approved") && !unknown.text.contains("tier"));
    }

    #[test]
    fn the_endpoint_is_shown_without_credentials_query_or_fragment() {
        let r =
            endpoint("https://user:s3cret@hooks.example.com/in/flowlet?key=s3cret#frag").render();
        assert!(!r.text.contains("s3cret") && !r.html.contains("s3cret"));
        assert!(
            r.text
                .contains("https://hooks.example.com/in/flowlet because")
        );
        assert_eq!(
            display_url("hooks.example.com:8443"),
            "hooks.example.com:8443"
        );
        assert_eq!(display_url("a:b@host/p?q"), "host/p");
    }

    #[test]
    fn validation_refuses_values_outside_the_documented_sets() {
        let field = |t: Template| t.validate().unwrap_err().field;
        assert_eq!(field(receipt("outgoing", None)), "direction");
        assert_eq!(field(kyc("A", "approve", None, None)), "decision");
        assert_eq!(field(endpoint(" ")), "endpoint_url");
        let card = |last4: &str, kind: &str, expiry: &str| Template::CardIssued {
            card_last4: last4.into(),
            card_type: kind.into(),
            expiry: expiry.into(),
        };
        assert_eq!(field(card("424", "virtual", "01/30")), "card_last4");
        assert_eq!(field(card("4242", "plastic", "01/30")), "card_type");
        assert_eq!(field(card("4242", "virtual", "13/30")), "expiry");
        assert_eq!(field(card("4242", "virtual", "1/30")), "expiry");
        assert!(card("4242", "physical", "12/30").validate().is_ok());
        let zero = Template::PasswordReset {
            token: TOKEN_VALUE.into(),
            valid_minutes: 0,
        };
        assert_eq!(field(zero), "valid_minutes");
    }
}
