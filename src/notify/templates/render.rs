//! One function per template: the subject, the plain-text body and the HTML body of each
//! mail, with every interpolated value made single-line and escaped.

use super::Rendered;
use super::helpers::{
    H1, H1_END, Html, P, P_END, TABLE, TABLE_END, TD_VALUE, TOKEN, TOKEN_END, TR_END, TR_LABEL,
    display_url, minutes, one_line, subject_line,
};

pub(super) fn password_reset(token: &str, valid_minutes: u64) -> Rendered {
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

/// Borrowed fields of [`Template::PaymentReceipt`](super::Template::PaymentReceipt), so the
/// renderer takes one argument.
pub(super) struct Receipt<'a> {
    pub(super) payment_id: &'a str,
    pub(super) amount: &'a str,
    pub(super) currency: &'a str,
    pub(super) direction: &'a str,
    pub(super) counterparty: Option<&'a str>,
    pub(super) description: Option<&'a str>,
    pub(super) completed_at: &'a str,
}

pub(super) fn payment_receipt(r: &Receipt<'_>) -> Rendered {
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

pub(super) fn kyc_decision(
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

pub(super) fn card_issued(card_last4: &str, card_type: &str, expiry: &str) -> Rendered {
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

pub(super) fn endpoint_disabled(endpoint_url: &str, failing_since: &str) -> Rendered {
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
