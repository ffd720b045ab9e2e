//! Unit tests of the templates: wording, escaping, single-line values, secrets kept out of
//! `Debug`, the stored JSON shape and validation.

use super::helpers::display_url;
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
            "<script", "<link", "<style", "<img", "<iframe", "src=", "href=", "url(", "@import",
            "http://", "https://",
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
    let err = serde_json::from_value::<Template>(json!({"template": "newsletter", "token": "x"}))
        .unwrap_err();
    assert!(err.to_string().contains("newsletter"), "{err}");
    assert!(serde_json::from_value::<Template>(json!({"token": "x", "valid_minutes": 1})).is_err());
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
    let r = endpoint("https://user:s3cret@hooks.example.com/in/flowlet?key=s3cret#frag").render();
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
