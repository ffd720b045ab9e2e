//! Event-type filters: which events an endpoint subscribed with a filter receives, and which
//! filters are well formed.

use super::{MAX_FILTER_LEN, WebhookError};

/// Tells whether an endpoint subscribed with `filter` receives `event_type`,
/// so endpoints can subscribe to a whole family of events.
///
/// `*` matches everything; `payment.*` matches `payment.created` and
/// `payment.refund.created` but neither `payment` nor `payments.created`;
/// anything else must match exactly. Expects a filter that passed
/// [`validate_filter`].
///
/// Delivery matches in SQL (`store.rs`, the `.*` arm of the endpoint join); this is the
/// rule's statement the tests pin, kept beside the validation that guarantees its input.
#[cfg(test)]
#[must_use]
pub fn filter_matches(filter: &str, event_type: &str) -> bool {
    if filter == "*" {
        return true;
    }
    match filter.strip_suffix(".*") {
        Some(prefix) => {
            !prefix.is_empty()
                && event_type
                    .strip_prefix(prefix)
                    .and_then(|rest| rest.strip_prefix('.'))
                    .is_some_and(|rest| !rest.is_empty())
        }
        None => filter == event_type,
    }
}

/// Checks a filter before it is stored, so only filters with a clear meaning
/// reach [`filter_matches`]: `*`, or dot-separated `[a-z0-9_]+` segments,
/// optionally ending in `.*`, at most [`MAX_FILTER_LEN`] characters.
///
/// # Errors
/// [`WebhookError::InvalidFilter`] saying what is wrong.
pub fn validate_filter(filter: &str) -> Result<(), WebhookError> {
    if filter.is_empty() {
        return Err(WebhookError::InvalidFilter("it is empty"));
    }
    if filter.len() > MAX_FILTER_LEN {
        return Err(WebhookError::InvalidFilter(
            "it is longer than 100 characters",
        ));
    }
    if filter == "*" {
        return Ok(());
    }
    let segments = filter.strip_suffix(".*").unwrap_or(filter);
    for segment in segments.split('.') {
        if segment.is_empty() {
            return Err(WebhookError::InvalidFilter("it has an empty segment"));
        }
        if segment == "*" {
            return Err(WebhookError::InvalidFilter(
                "a wildcard may only stand alone or end the filter as \".*\"",
            ));
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(WebhookError::InvalidFilter(
                "segments may only contain a-z, 0-9 and _",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    #[test]
    fn a_lone_star_matches_every_event_type() {
        for event in ["payment.created", "card.frozen", "x"] {
            assert!(filter_matches("*", event));
        }
    }

    #[test]
    fn an_exact_filter_matches_only_that_event_type() {
        assert!(filter_matches("payment.created", "payment.created"));
        assert!(!filter_matches("payment.created", "payment.created.v2"));
        assert!(!filter_matches("payment.created", "payment"));
        assert!(!filter_matches("payment", "payment.created"));
    }

    #[test]
    fn a_prefix_wildcard_matches_descendants_but_not_the_prefix_or_lookalikes() {
        assert!(filter_matches("payment.*", "payment.created"));
        assert!(filter_matches("payment.*", "payment.refund.created"));
        assert!(!filter_matches("payment.*", "payment"));
        assert!(!filter_matches("payment.*", "payment."));
        assert!(!filter_matches("payment.*", "payments.created"));
        assert!(!filter_matches("payment.*", "card.payment.created"));
        assert!(filter_matches("payment.refund.*", "payment.refund.created"));
        assert!(!filter_matches("payment.refund.*", "payment.created"));
    }

    #[test]
    fn well_formed_filters_are_accepted() {
        for filter in [
            "*",
            "payment",
            "payment.created",
            "payment.*",
            "a_1.b2.*",
            "card_3ds.challenge_v2",
        ] {
            assert!(validate_filter(filter).is_ok(), "{filter}");
        }
        let longest = format!("{}.*", "a".repeat(MAX_FILTER_LEN - 2));
        assert!(validate_filter(&longest).is_ok());
    }

    #[test]
    fn malformed_filters_are_refused() {
        for filter in [
            "",
            ".*",
            "*.*",
            "**",
            "payment.",
            ".payment",
            "payment..created",
            "Payment.created",
            "payment.*.created",
            "payment*",
            "payment.cre-ated",
            "payment created",
            "payment.**",
            "*.created",
            "paymént",
        ] {
            assert!(
                matches!(validate_filter(filter), Err(WebhookError::InvalidFilter(_))),
                "{filter:?} was accepted"
            );
        }
    }

    #[test]
    fn filters_longer_than_100_characters_are_refused() {
        assert!(validate_filter(&"a".repeat(100)).is_ok());
        assert!(validate_filter(&"a".repeat(101)).is_err());
    }

    proptest! {
        #[test]
        fn a_valid_prefix_filter_matches_exactly_the_event_types_below_it(
            prefix in "[a-z0-9_]{1,8}(\\.[a-z0-9_]{1,8}){0,3}",
            event in "[a-z0-9_]{1,8}(\\.[a-z0-9_]{1,8}){0,4}",
        ) {
            let filter = format!("{prefix}.*");
            prop_assert!(validate_filter(&filter).is_ok());
            prop_assert!(validate_filter(&prefix).is_ok());
            let below = format!("{prefix}.{event}");
            prop_assert!(filter_matches(&filter, &below));
            prop_assert!(!filter_matches(&filter, &prefix));
            let expected = event.starts_with(&format!("{prefix}.")) && event.len() > prefix.len() + 1;
            prop_assert_eq!(filter_matches(&filter, &event), expected);
        }
    }
}
