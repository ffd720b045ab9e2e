//! Unit tests of the KYC rules, with a fake clock (every function takes `now` or `today`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use chrono::{DateTime, NaiveDate, TimeZone, Utc};

use super::model::*;
use super::settings::{KycSettings, TierSettings};
use crate::platform::config::{Sources, load_section};
use crate::platform::money::{Currency, Money};

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

/// The fake clock: a fixed instant.
fn at(s: &str) -> DateTime<Utc> {
    Utc.from_utc_datetime(&chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap())
}

fn tiers() -> Vec<TierSettings> {
    load_section::<KycSettings>(&Sources::with_vars([("FLOWLET_ENV", "test")]))
        .unwrap()
        .tiers
}

fn usd(amount: &str) -> Money {
    Money::from_decimal(amount.parse().unwrap(), Currency::parse("USD").unwrap()).unwrap()
}

fn out(amount: &str, kind: OutgoingKind) -> Movement {
    Movement {
        customer_id: CustomerId::new(),
        amount: usd(amount),
        direction: Direction::Outgoing(kind),
        balance_after: None,
    }
}

fn facts<'a>(today: &str, high_risk: &'a [String]) -> Facts<'a> {
    Facts {
        today: date(today),
        requested_tier: 1,
        date_of_birth: date("1990-05-17"),
        country: "DE",
        has_address: true,
        document_type: DocumentType::Passport,
        document_number: "C01X00T47",
        document_country: "DE",
        document_expiry: Some(date("2030-01-01")),
        minimum_age: 18,
        high_risk_countries: high_risk,
        duplicate_of: None,
        screening: ScreeningOutcome::Clear {
            screened: 10,
            best: None,
        },
    }
}

// ----- validation --------------------------------------------------------------------------------

#[test]
fn dates_of_birth_must_be_real_past_dates_written_iso() {
    let today = date("2026-11-24");
    assert_eq!(
        validate_date_of_birth("1990-02-28", today),
        Ok(date("1990-02-28"))
    );
    for bad in [
        "1990-02-30",
        "90-02-28",
        "1990-2-28",
        "28.02.1990",
        "",
        "1990-02-28T00:00:00",
    ] {
        assert_eq!(
            validate_date_of_birth(bad, today).unwrap_err().field,
            "date_of_birth",
            "{bad}"
        );
    }
    assert!(
        validate_date_of_birth("2026-11-25", today)
            .unwrap_err()
            .message
            .contains("future")
    );
    assert!(validate_date_of_birth("1899-12-31", today).is_err());
    assert!(
        validate_date_of_birth("2026-11-24", today).is_ok(),
        "born today is a date, not an age check"
    );
}

#[test]
fn countries_are_iso_alpha_2_in_upper_case() {
    assert_eq!(validate_country("country", "DE"), Ok("DE".into()));
    for bad in ["de", "DEU", "XX", "D", "", "ZZ"] {
        assert!(validate_country("country", bad).is_err(), "{bad}");
    }
}

#[test]
fn names_emails_and_external_ids_are_checked_and_trimmed() {
    assert_eq!(validate_name("first_name", "  Ada "), Ok("Ada".into()));
    assert!(validate_name("first_name", "   ").is_err());
    assert!(validate_name("first_name", &"x".repeat(101)).is_err());
    assert!(validate_name("first_name", "Ada\u{0}").is_err());
    assert_eq!(
        normalise_email(" Ada@Example.COM "),
        Ok("ada@example.com".into())
    );
    assert!(normalise_email("not-an-email").is_err());
    assert!(validate_external_id("crm-42").is_ok());
    assert!(validate_external_id("has space").is_err());
    assert!(validate_external_id("").is_err());
}

#[test]
fn addresses_name_the_bad_part() {
    let address = Address {
        line1: "1 Main St".into(),
        line2: None,
        city: " Berlin ".into(),
        postal_code: "10115".into(),
        region: None,
        country: "de".into(),
    };
    assert_eq!(
        address.clone().validated().unwrap_err().field,
        "address.country"
    );
    let ok = Address {
        country: "DE".into(),
        ..address
    }
    .validated()
    .unwrap();
    assert_eq!(ok.city, "Berlin");
}

#[test]
fn document_numbers_are_normalised_and_checked_per_type() {
    assert_eq!(normalise_document_number(" c01x-00t 47 "), "C01X00T47");
    assert!(DocumentType::Passport.accepts("C01X00T47"));
    assert!(
        !DocumentType::Passport.accepts("C01X00T47X"),
        "10 characters"
    );
    assert!(!DocumentType::Passport.accepts("ABCDEFG"), "no digit");
    assert!(!DocumentType::Passport.accepts("AB12"), "too short");
    assert!(DocumentType::NationalId.accepts("T220001293"));
    assert!(!DocumentType::NationalId.accepts("T22000129$"));
    assert!(DocumentType::DrivingLicence.accepts("B072RRE2I55"));
    assert!(!DocumentType::ResidencePermit.accepts("Y1234567890123"));
    assert_eq!(last4("C01X00T47"), "0T47");
    assert_eq!(last4("AB"), "AB");
}

#[test]
fn age_counts_completed_years_including_leap_birthdays() {
    assert_eq!(age_on(date("2008-11-24"), date("2026-11-24")), 18);
    assert_eq!(age_on(date("2008-11-25"), date("2026-11-24")), 17);
    assert_eq!(age_on(date("2008-02-29"), date("2026-02-28")), 17);
    assert_eq!(age_on(date("2008-02-29"), date("2026-03-01")), 18);
}

// ----- checks and decisions --------------------------------------------------------------------------

#[test]
fn a_clean_tier_1_submission_is_approved_at_tier_1() {
    let checks = run_checks(&facts("2026-11-24", &[]));
    assert_eq!(checks.len(), 7);
    assert!(
        checks.iter().all(|c| c.result == CheckResult::Passed),
        "{checks:#?}"
    );
    let d = decide(1, &checks);
    assert_eq!(
        (d.status, d.granted_tier, d.code.as_str()),
        (Status::Approved, Some(1), "checks_passed")
    );
}

type Tweak = Box<dyn Fn(&mut Facts<'_>)>;

#[test]
fn each_check_that_fails_names_its_rule() {
    let hr = vec!["IR".to_owned()];
    let cases: Vec<(Tweak, CheckName, CheckResult, &str, Status)> = vec![
        (
            Box::new(|f| f.date_of_birth = date("2008-11-25")),
            CheckName::Age,
            CheckResult::Failed,
            "underage",
            Status::Rejected,
        ),
        (
            Box::new(|f| f.document_number = "12AB"),
            CheckName::DocumentFormat,
            CheckResult::Failed,
            "document_number_invalid",
            Status::Rejected,
        ),
        (
            Box::new(|f| f.document_expiry = Some(date("2026-11-23"))),
            CheckName::DocumentExpiry,
            CheckResult::Failed,
            "document_expired",
            Status::Rejected,
        ),
        (
            Box::new(|f| f.duplicate_of = Some(CustomerId::new())),
            CheckName::DuplicateIdentity,
            CheckResult::Review,
            "duplicate_identity",
            Status::Review,
        ),
        (
            Box::new(|f| f.country = "IR"),
            CheckName::HighRiskCountry,
            CheckResult::Review,
            "high_risk_country",
            Status::Review,
        ),
        (
            Box::new(|f| f.document_country = "IR"),
            CheckName::HighRiskCountry,
            CheckResult::Review,
            "high_risk_country",
            Status::Review,
        ),
        (
            Box::new(|f| {
                f.screening = ScreeningOutcome::Strong {
                    name: "X".into(),
                    score: 0.97,
                    list: "l".into(),
                    reference: "1".into(),
                }
            }),
            CheckName::Sanctions,
            CheckResult::Review,
            "sanctions_match",
            Status::Review,
        ),
        (
            Box::new(|f| f.screening = ScreeningOutcome::NoList),
            CheckName::Sanctions,
            CheckResult::Review,
            "screening_unavailable",
            Status::Review,
        ),
        (
            Box::new(|f| {
                f.requested_tier = 2;
                f.has_address = false;
            }),
            CheckName::RequiredData,
            CheckResult::Missing,
            "data_missing",
            Status::AwaitingDocuments,
        ),
    ];
    for (change, name, result, code, status) in cases {
        let mut f = facts("2026-11-24", &hr);
        change(&mut f);
        let checks = run_checks(&f);
        let check = checks.iter().find(|c| c.name == name).unwrap();
        assert_eq!(
            (check.result, check.code.as_deref()),
            (result, Some(code)),
            "{check:?}"
        );
        let others = checks.iter().filter(|c| c.name != name);
        assert!(
            others.clone().all(|c| c.result == CheckResult::Passed),
            "{checks:#?}"
        );
        let d = decide(f.requested_tier, &checks);
        assert_eq!((d.status, d.code.as_str()), (status, code));
        assert_eq!(d.granted_tier, None);
    }
}

#[test]
fn the_decision_follows_the_precedence_failed_missing_review_document_review() {
    let hr = vec!["DE".to_owned()];
    let mut f = facts("2026-11-24", &hr);
    f.requested_tier = 2;
    f.document_expiry = None;
    f.date_of_birth = date("2010-01-01");
    assert_eq!(
        decide(2, &run_checks(&f)).code,
        "underage",
        "failed beats missing and review"
    );
    f.date_of_birth = date("1990-01-01");
    let d = decide(2, &run_checks(&f));
    assert_eq!(
        (d.status, d.missing.clone()),
        (
            Status::AwaitingDocuments,
            vec!["document_expiry".to_owned()]
        )
    );
    f.document_expiry = Some(date("2031-01-01"));
    assert_eq!(
        decide(2, &run_checks(&f)).code,
        "high_risk_country",
        "review beats document review"
    );
    let clean = facts("2026-11-24", &[]);
    let tier2 = Facts {
        requested_tier: 2,
        ..clean
    };
    let d = decide(2, &run_checks(&tier2));
    assert_eq!(
        (d.status, d.code.as_str()),
        (Status::Review, "document_review")
    );
}

#[test]
fn the_state_machine_allows_exactly_the_documented_transitions() {
    use Status::*;
    let all = [Pending, AwaitingDocuments, Approved, Rejected, Review];
    let allowed = [
        (Pending, Approved),
        (Pending, Rejected),
        (Pending, Review),
        (Pending, AwaitingDocuments),
        (AwaitingDocuments, Pending),
        (Review, Approved),
        (Review, Rejected),
    ];
    for from in all {
        for to in all {
            assert_eq!(
                from.can_become(to),
                allowed.contains(&(from, to)),
                "{from:?} -> {to:?}"
            );
        }
        assert_eq!(Status::parse(from.as_str()), Some(from));
    }
    assert!(!Approved.is_open() && !Rejected.is_open() && Review.is_open());
}

// ----- tier limits, with a fake clock --------------------------------------------------------

#[test]
fn tier_0_moves_no_money_out_and_holds_none() {
    let t = tiers();
    let now = at("2026-11-24 10:00:00");
    let denial = evaluate(
        &t,
        0,
        &out("1.00", OutgoingKind::Payment),
        Usage::empty(now.date_naive()),
        now,
    )
    .unwrap_err();
    assert!(
        matches!(
            denial,
            Denial::KycRequired {
                current_tier: 0,
                required_tier: Some(1),
                ..
            }
        ),
        "{denial:?}"
    );
    let incoming = Movement {
        direction: Direction::Incoming,
        balance_after: Some(usd("1.00")),
        ..out("1.00", OutgoingKind::Payment)
    };
    assert!(matches!(
        evaluate(&t, 0, &incoming, Usage::empty(now.date_naive()), now),
        Err(Denial::KycRequired {
            required_tier: Some(1),
            ..
        })
    ));
}

#[test]
fn withdrawals_and_cards_need_the_tiers_that_allow_them() {
    let t = tiers();
    let now = at("2026-11-24 10:00:00");
    let empty = Usage::empty(now.date_naive());
    assert!(evaluate(&t, 1, &out("10.00", OutgoingKind::Withdrawal), empty, now).is_ok());
    let denial = evaluate(&t, 1, &out("10.00", OutgoingKind::Card), empty, now).unwrap_err();
    assert!(
        matches!(
            denial,
            Denial::KycRequired {
                current_tier: 1,
                required_tier: Some(2),
                ..
            }
        ),
        "{denial:?}"
    );
    assert!(evaluate(&t, 2, &out("10.00", OutgoingKind::Card), empty, now).is_ok());
}

#[test]
fn a_single_payment_over_the_cap_is_refused_naming_the_limit() {
    let t = tiers();
    let now = at("2026-11-24 10:00:00");
    let empty = Usage::empty(now.date_naive());
    assert!(evaluate(&t, 1, &out("1000.00", OutgoingKind::Payment), empty, now).is_ok());
    assert_eq!(
        evaluate(&t, 1, &out("1000.01", OutgoingKind::Payment), empty, now),
        Err(Denial::LimitExceeded {
            limit: LimitKind::MaxSinglePayment,
            limit_amount: usd("1000.00"),
            remaining: usd("1000.00"),
        })
    );
}

#[test]
fn the_daily_total_resets_at_utc_midnight_and_says_what_remains() {
    let t = tiers();
    let morning = at("2026-11-24 08:00:00");
    let mut usage = Usage::empty(morning.date_naive());
    for _ in 0..3 {
        usage = evaluate(&t, 1, &out("300.00", OutgoingKind::Payment), usage, morning).unwrap();
    }
    assert_eq!(usage.day_total, 90_000);
    let late = at("2026-11-24 23:59:59");
    assert_eq!(
        evaluate(&t, 1, &out("100.01", OutgoingKind::Payment), usage, late),
        Err(Denial::LimitExceeded {
            limit: LimitKind::DailyOutgoing,
            limit_amount: usd("1000.00"),
            remaining: usd("100.00"),
        })
    );
    let next_day = at("2026-11-25 00:00:00");
    let usage = evaluate(
        &t,
        1,
        &out("900.00", OutgoingKind::Payment),
        usage,
        next_day,
    )
    .unwrap();
    assert_eq!((usage.day_total, usage.month_total), (90_000, 180_000));
}

#[test]
fn the_monthly_total_spans_days_and_resets_with_the_calendar_month() {
    let t = tiers();
    let mut usage = Usage::empty(date("2026-11-01"));
    for day in 1..=3 {
        let now = at(&format!("2026-11-0{day} 12:00:00"));
        usage = evaluate(&t, 1, &out("1000.00", OutgoingKind::Payment), usage, now).unwrap();
    }
    let now = at("2026-11-30 12:00:00");
    assert_eq!(
        evaluate(&t, 1, &out("0.01", OutgoingKind::Payment), usage, now),
        Err(Denial::LimitExceeded {
            limit: LimitKind::MonthlyOutgoing,
            limit_amount: usd("3000.00"),
            remaining: usd("0.00"),
        })
    );
    let december = at("2026-12-01 00:00:01");
    let usage = evaluate(
        &t,
        1,
        &out("1000.00", OutgoingKind::Payment),
        usage,
        december,
    )
    .unwrap();
    assert_eq!(
        (usage.month, usage.month_total),
        (date("2026-12-01"), 100_000)
    );
}

#[test]
fn incoming_money_may_not_push_the_balance_over_the_tier_cap() {
    let t = tiers();
    let now = at("2026-11-24 10:00:00");
    let incoming = |amount: &str, after: &str| Movement {
        customer_id: CustomerId::new(),
        amount: usd(amount),
        direction: Direction::Incoming,
        balance_after: Some(usd(after)),
    };
    let empty = Usage::empty(now.date_naive());
    assert_eq!(
        evaluate(&t, 1, &incoming("500.00", "2000.00"), empty, now),
        Ok(empty)
    );
    assert_eq!(
        evaluate(&t, 1, &incoming("500.00", "2000.01"), empty, now),
        Err(Denial::LimitExceeded {
            limit: LimitKind::MaxBalance,
            limit_amount: usd("2000.00"),
            remaining: usd("499.99"),
        })
    );
}

#[test]
fn a_currency_no_tier_lists_is_refused_and_one_a_higher_tier_lists_asks_for_it() {
    let mut t = tiers();
    let now = at("2026-11-24 10:00:00");
    let jpy = Movement {
        amount: Money::from_minor(100, Currency::parse("JPY").unwrap()),
        ..out("1.00", OutgoingKind::Payment)
    };
    let empty = Usage::empty(now.date_naive());
    assert!(matches!(
        evaluate(&t, 1, &jpy, empty, now),
        Err(Denial::KycRequired {
            required_tier: None,
            ..
        })
    ));
    let mut jpy_limits = t[2].limits[0].clone();
    let yen = Currency::parse("JPY").unwrap();
    jpy_limits.max_balance = Money::from_minor(1_000_000, yen);
    jpy_limits.max_single_payment = Money::from_minor(100_000, yen);
    jpy_limits.daily_outgoing = Money::from_minor(100_000, yen);
    jpy_limits.monthly_outgoing = Money::from_minor(100_000, yen);
    t[2].limits.push(jpy_limits);
    assert!(matches!(
        evaluate(&t, 1, &jpy, empty, now),
        Err(Denial::KycRequired {
            required_tier: Some(2),
            ..
        })
    ));
    assert!(evaluate(&t, 2, &jpy, empty, now).is_ok());
}

#[test]
fn a_released_movement_leaves_only_the_periods_it_was_counted_in() {
    let t = tiers();
    let day1 = at("2026-11-24 10:00:00");
    let usage = evaluate(
        &t,
        1,
        &out("400.00", OutgoingKind::Payment),
        Usage::empty(day1.date_naive()),
        day1,
    )
    .unwrap();
    let same_day = release(usage, usd("400.00"), day1, at("2026-11-24 18:00:00"));
    assert_eq!((same_day.day_total, same_day.month_total), (0, 0));
    let next_day = release(usage, usd("400.00"), day1, at("2026-11-25 09:00:00"));
    assert_eq!(
        (next_day.day_total, next_day.month_total),
        (0, 0),
        "day rolled over, month still counts it"
    );
    let usage2 = evaluate(
        &t,
        1,
        &out("100.00", OutgoingKind::Payment),
        usage,
        at("2026-11-25 09:00:00"),
    )
    .unwrap();
    let released = release(usage2, usd("400.00"), day1, at("2026-11-25 10:00:00"));
    assert_eq!((released.day_total, released.month_total), (10_000, 10_000));
    let next_month = release(usage, usd("400.00"), day1, at("2026-12-01 00:00:00"));
    assert_eq!((next_month.day_total, next_month.month_total), (0, 0));
}

#[test]
fn a_status_filter_names_the_statuses_it_knows() {
    assert_eq!(Status::from_request("review"), Ok(Status::Review));
    let err = Status::from_request("open").unwrap_err();
    assert_eq!(err.field, "status");
    assert!(err.message.contains("awaiting_documents"), "{err}");
}

#[test]
fn cards_need_a_tier_that_allows_them_in_the_wallets_currency() {
    let tiers = tiers();
    let usd = Currency::parse("USD").unwrap();
    let lowest = tiers
        .iter()
        .filter(|t| t.tier >= 1 && t.cards)
        .map(|t| t.tier)
        .min()
        .unwrap();
    assert!(may_hold_cards(&tiers, lowest, usd).is_ok());
    for tier in 0..lowest {
        match may_hold_cards(&tiers, tier, usd) {
            Err(Denial::KycRequired {
                current_tier,
                required_tier,
                ..
            }) => {
                assert_eq!(current_tier, tier);
                assert_eq!(required_tier, Some(lowest));
            }
            other => panic!("tier {tier}: {other:?}"),
        }
    }
    // A currency no tier has limits in: no tier would do.
    let yen = Currency::parse("JPY").unwrap();
    assert!(matches!(
        may_hold_cards(&tiers, lowest, yen),
        Err(Denial::KycRequired {
            required_tier: None,
            ..
        })
    ));
}
