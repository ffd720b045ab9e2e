//! The ladder as a table: each rung alone, each pair of neighbours, and a clean approval.

use super::*;
use crate::card::model::categories::CategoryTable;
use crate::card::model::controls::ControlsRequest;
use serde_json::json;

// --- fixtures ------------------------------------------------------------------------------

fn usd() -> Currency {
    Currency::parse("USD").unwrap()
}

fn eur() -> Currency {
    Currency::parse("EUR").unwrap()
}

fn dollars(cents: i64) -> Money {
    Money::from_minor(cents, usd())
}

fn mcc(code: u16) -> Mcc {
    Mcc::new(code).unwrap()
}

/// Controls with every rule configured, so a clean authorization passes each one rather than
/// skipping it: grocery only, gambling blocked, US only, every limit set.
fn full_controls() -> Controls {
    let body = json!({
        "allowed_categories": ["grocery"],
        "blocked_categories": ["gambling"],
        "allowed_countries": ["US"],
        "blocked_countries": ["KP"],
        "limits": {
            "per_authorization": "100.00",
            "daily": "500.00",
            "weekly": "1000.00",
            "monthly": "2000.00",
            "yearly": "10000.00",
            "lifetime": "50000.00",
            "daily_count": 10,
            "categories": {"grocery": {"daily": "200.00", "daily_count": 5}}
        }
    });
    let request: ControlsRequest = serde_json::from_str(&body.to_string()).unwrap();
    request
        .validate(usd(), CategoryTable::shipped().unwrap(), "controls")
        .unwrap()
}

/// Everything the service would look up, owned, so a test can change any of it.
#[derive(Clone)]
struct Scenario {
    card_found: bool,
    expiry: ExpiryCheck,
    cvc: CvcCheck,
    state: CardState,
    wallet_status: WalletStatus,
    wallet_freeze: Option<FreezeMode>,
    kyc_allows_cards: bool,
    controls: Controls,
    card_currency: Currency,
    amount: Money,
    merchant: Merchant,
    spend: Spend,
    /// What the card spent at each limited category group the merchant is in.
    category_spend: Spend,
    tier_limits: TierLimits,
    risk: RiskVerdict,
    partner: PartnerDecision,
}

/// An authorization every rule approves: 50.00 USD at a US grocery, well within every limit.
fn clean() -> Scenario {
    Scenario {
        card_found: true,
        expiry: ExpiryCheck::Valid,
        cvc: CvcCheck::Matches,
        state: CardState::Active,
        wallet_status: WalletStatus::Active,
        wallet_freeze: None,
        kyc_allows_cards: true,
        controls: full_controls(),
        card_currency: usd(),
        amount: dollars(5_000),
        merchant: Merchant {
            mcc: mcc(5411),
            country: Country::US,
        },
        spend: Spend {
            day: dollars(10_000),
            week: dollars(20_000),
            month: dollars(30_000),
            year: dollars(40_000),
            lifetime: dollars(50_000),
            count_today: 2,
        },
        category_spend: Spend {
            day: dollars(10_000),
            week: dollars(10_000),
            month: dollars(10_000),
            year: dollars(10_000),
            lifetime: dollars(10_000),
            count_today: 2,
        },
        tier_limits: TierLimits::Within,
        risk: RiskVerdict::Allow,
        partner: PartnerDecision::Approved,
    }
}

impl Scenario {
    fn facts(&self) -> Facts<'_> {
        Facts {
            card: self.card_found.then(|| CardFacts {
                expiry: self.expiry,
                cvc: self.cvc,
                state: self.state,
                wallet_status: self.wallet_status,
                wallet_freeze: self.wallet_freeze,
                kyc_allows_cards: self.kyc_allows_cards,
                controls: &self.controls,
                currency: self.card_currency,
                spend: self.spend,
                category_spend: self
                    .controls
                    .category_limits_for(self.merchant.mcc)
                    .map(|(name, limits)| CategorySpend {
                        name,
                        limits,
                        spend: self.category_spend,
                    })
                    .collect(),
                tier_limits: self.tier_limits,
                risk: self.risk.clone(),
            }),
            amount: self.amount,
            merchant: self.merchant,
        }
    }

    /// Both phases, the way the service runs them: the partner only after `pre_partner`.
    fn decide(&self) -> Decision {
        match pre_partner(&self.facts()) {
            Err(decision) => decision,
            Ok(trail) => with_partner(trail, self.partner.clone()),
        }
    }
}

/// One rung: what breaks it, and what it must answer.
struct Rung {
    name: &'static str,
    breaks: fn(&mut Scenario),
    rule: Rule,
    code: DeclineCode,
    response: &'static str,
}

/// The ladder's rungs in precedence order, one failure each (variants of a rung are tested
/// separately below).
fn rungs() -> Vec<Rung> {
    vec![
        Rung {
            name: "unknown PAN",
            breaks: |s| s.card_found = false,
            rule: Rule::Card,
            code: DeclineCode::CardNotFound,
            response: "14",
        },
        Rung {
            name: "expiry mismatch",
            breaks: |s| s.expiry = ExpiryCheck::Mismatch,
            rule: Rule::Expiry,
            code: DeclineCode::CardExpired,
            response: "54",
        },
        Rung {
            name: "CVC mismatch",
            breaks: |s| s.cvc = CvcCheck::Mismatch,
            rule: Rule::Cvc,
            code: DeclineCode::CvcMismatch,
            response: "82",
        },
        Rung {
            name: "card inactive",
            breaks: |s| s.state = CardState::Inactive,
            rule: Rule::CardState,
            code: DeclineCode::CardInactive,
            response: "78",
        },
        Rung {
            name: "wallet frozen",
            breaks: |s| s.wallet_status = WalletStatus::Frozen,
            rule: Rule::WalletState,
            code: DeclineCode::WalletFrozen,
            response: "62",
        },
        Rung {
            name: "KYC tier without cards",
            breaks: |s| s.kyc_allows_cards = false,
            rule: Rule::KycTier,
            code: DeclineCode::KycRequired,
            response: "57",
        },
        Rung {
            name: "card disabled",
            breaks: |s| s.controls = disabled(&s.controls),
            rule: Rule::ControlsEnabled,
            code: DeclineCode::CardDisabled,
            response: "57",
        },
        Rung {
            name: "category blocked",
            breaks: |s| s.merchant.mcc = mcc(7995),
            rule: Rule::ControlsCategory,
            code: DeclineCode::MerchantCategoryBlocked,
            response: "57",
        },
        Rung {
            name: "country blocked",
            breaks: |s| s.merchant.country = Country::KP,
            rule: Rule::ControlsCountry,
            code: DeclineCode::CountryBlocked,
            response: "57",
        },
        Rung {
            name: "currency",
            breaks: |s| s.card_currency = eur(),
            rule: Rule::Currency,
            code: DeclineCode::CurrencyNotSupported,
            response: "57",
        },
        Rung {
            name: "per-authorization limit",
            breaks: |s| s.amount = dollars(10_001),
            rule: Rule::LimitPerAuthorization,
            code: DeclineCode::LimitExceeded,
            response: "61",
        },
        Rung {
            name: "daily limit",
            breaks: |s| s.spend.day = dollars(45_001),
            rule: Rule::LimitDaily,
            code: DeclineCode::LimitExceeded,
            response: "61",
        },
        Rung {
            name: "weekly limit",
            breaks: |s| s.spend.week = dollars(95_001),
            rule: Rule::LimitWeekly,
            code: DeclineCode::LimitExceeded,
            response: "61",
        },
        Rung {
            name: "monthly limit",
            breaks: |s| s.spend.month = dollars(195_001),
            rule: Rule::LimitMonthly,
            code: DeclineCode::LimitExceeded,
            response: "61",
        },
        Rung {
            name: "yearly limit",
            breaks: |s| s.spend.year = dollars(995_001),
            rule: Rule::LimitYearly,
            code: DeclineCode::LimitExceeded,
            response: "61",
        },
        Rung {
            name: "lifetime limit",
            breaks: |s| s.spend.lifetime = dollars(4_995_001),
            rule: Rule::LimitLifetime,
            code: DeclineCode::LimitExceeded,
            response: "61",
        },
        Rung {
            name: "daily count",
            breaks: |s| s.spend.count_today = 10,
            rule: Rule::LimitDailyCount,
            code: DeclineCode::VelocityExceeded,
            response: "65",
        },
        Rung {
            name: "category limit",
            breaks: |s| s.category_spend.day = dollars(15_001),
            rule: Rule::LimitCategories,
            code: DeclineCode::LimitExceeded,
            response: "61",
        },
        Rung {
            name: "KYC tier limits",
            breaks: |s| s.tier_limits = TierLimits::Exceeded,
            rule: Rule::KycLimits,
            code: DeclineCode::LimitExceeded,
            response: "61",
        },
        Rung {
            name: "risk",
            breaks: |s| {
                s.risk = RiskVerdict::Decline {
                    reason: "velocity anomaly".to_owned(),
                }
            },
            rule: Rule::Risk,
            code: DeclineCode::FraudSuspected,
            response: "59",
        },
        Rung {
            name: "partner",
            breaks: |s| s.partner = PartnerDecision::Declined { reason: None },
            rule: Rule::Partner,
            code: DeclineCode::PartnerDeclined,
            response: "05",
        },
    ]
}

/// `controls` with `enabled: false` and nothing else changed.
fn disabled(controls: &Controls) -> Controls {
    let mut view = serde_json::to_value(controls.view()).unwrap();
    view["enabled"] = json!(false);
    let request: ControlsRequest = serde_json::from_value(view).unwrap();
    request
        .validate(usd(), CategoryTable::shipped().unwrap(), "")
        .unwrap()
}

/// The rules of a trail, in order.
fn rules(trail: &[TrailStep]) -> Vec<Rule> {
    trail.iter().map(|step| step.rule).collect()
}

/// Asserts a decline by `rule` with its codes, and a trail that is every rule before it
/// (none failed) and then `rule` failed.
fn assert_declined_by(
    decision: &Decision,
    rule: Rule,
    code: DeclineCode,
    response: &str,
    name: &str,
) {
    assert!(!decision.approved, "{name}: approved");
    assert_eq!(decision.decline_code, Some(code), "{name}");
    assert_eq!(decision.response_code, response, "{name}");
    let position = Rule::ALL.iter().position(|r| *r == rule).unwrap();
    assert_eq!(rules(&decision.trail), Rule::ALL[..=position], "{name}");
    let (last, before) = decision.trail.split_last().unwrap();
    assert_eq!(last.outcome, Outcome::Fail, "{name}");
    assert!(before.iter().all(|s| s.outcome != Outcome::Fail), "{name}");
}

// --- the table -----------------------------------------------------------------------------

#[test]
fn a_clean_authorization_is_approved_with_00_and_every_rule_passed() {
    let decision = clean().decide();
    assert!(decision.approved);
    assert_eq!(decision.decline_code, None);
    assert_eq!(decision.response_code, "00");
    // Every rule but funds, which the ledger decides with the hold.
    assert_eq!(rules(&decision.trail), Rule::ALL[..Rule::ALL.len() - 1]);
    assert!(
        decision.trail.iter().all(|s| s.outcome == Outcome::Pass),
        "{:#?}",
        decision.trail
    );
}

#[test]
fn each_rung_alone_declines_with_its_code() {
    let rungs = rungs();
    // The table covers every rule the first phase and the partner decide, in order.
    assert_eq!(
        rungs.iter().map(|r| r.rule).collect::<Vec<_>>(),
        Rule::ALL[..Rule::ALL.len() - 1]
    );
    for rung in &rungs {
        let mut scenario = clean();
        (rung.breaks)(&mut scenario);
        assert_declined_by(
            &scenario.decide(),
            rung.rule,
            rung.code,
            rung.response,
            rung.name,
        );
    }
}

#[test]
fn when_neighbouring_rungs_both_fail_the_earlier_one_wins() {
    let rungs = rungs();
    for pair in rungs.windows(2) {
        let (earlier, later) = (&pair[0], &pair[1]);
        // Both orders of breaking, so neither mutation can undo the other unnoticed.
        for order in [[earlier, later], [later, earlier]] {
            let mut scenario = clean();
            for rung in order {
                (rung.breaks)(&mut scenario);
            }
            let name = format!("{} + {}", earlier.name, later.name);
            assert_declined_by(
                &scenario.decide(),
                earlier.rule,
                earlier.code,
                earlier.response,
                &name,
            );
        }
        // And the later one alone still fails, so the pair really had two failures.
        let mut scenario = clean();
        (later.breaks)(&mut scenario);
        assert_eq!(
            scenario.decide().decline_code,
            Some(later.code),
            "{}",
            later.name
        );
    }
}

#[test]
fn the_first_rung_beats_every_other_failure_at_once() {
    let rungs = rungs();
    for (i, first) in rungs.iter().enumerate() {
        let mut scenario = clean();
        for rung in rungs.iter().skip(i) {
            (rung.breaks)(&mut scenario);
        }
        assert_declined_by(
            &scenario.decide(),
            first.rule,
            first.code,
            first.response,
            first.name,
        );
    }
}

// --- variants of a rung ----------------------------------------------------------------------

#[test]
fn an_expired_card_is_declined_54_like_a_wrong_expiry() {
    let mut scenario = clean();
    scenario.expiry = ExpiryCheck::Expired;
    let decision = scenario.decide();
    assert_declined_by(
        &decision,
        Rule::Expiry,
        DeclineCode::CardExpired,
        "54",
        "expired",
    );
    assert!(decision.trail.last().unwrap().detail.contains("expired"));
}

#[test]
fn an_absent_cvc_is_skipped_not_failed() {
    let mut scenario = clean();
    scenario.cvc = CvcCheck::NotPresented;
    let decision = scenario.decide();
    assert!(decision.approved);
    assert_eq!(decision.trail[2].rule, Rule::Cvc);
    assert_eq!(decision.trail[2].outcome, Outcome::Skipped);
}

#[test]
fn each_card_state_declines_with_its_own_codes() {
    let cases = [
        (CardState::Inactive, DeclineCode::CardInactive, "78"),
        (CardState::Frozen, DeclineCode::CardFrozen, "62"),
        (
            CardState::Canceled(CancelReason::Canceled),
            DeclineCode::CardCanceled,
            "62",
        ),
        (
            CardState::Canceled(CancelReason::Lost),
            DeclineCode::CardCanceled,
            "43",
        ),
        (
            CardState::Canceled(CancelReason::Stolen),
            DeclineCode::CardCanceled,
            "43",
        ),
    ];
    for (state, code, response) in cases {
        let mut scenario = clean();
        scenario.state = state;
        assert_declined_by(
            &scenario.decide(),
            Rule::CardState,
            code,
            response,
            &format!("{state:?}"),
        );
    }
}

#[test]
fn a_wallet_blocks_card_spend_when_closed_or_frozen_for_debits() {
    let cases = [
        (WalletStatus::Closed, None, false),
        (WalletStatus::Frozen, None, false),
        (WalletStatus::Frozen, Some(FreezeMode::All), false),
        (WalletStatus::Frozen, Some(FreezeMode::Debits), false),
        // Frozen for credits only: money may still leave.
        (WalletStatus::Frozen, Some(FreezeMode::Credits), true),
        (WalletStatus::Active, None, true),
    ];
    for (status, freeze, approved) in cases {
        let mut scenario = clean();
        scenario.wallet_status = status;
        scenario.wallet_freeze = freeze;
        let decision = scenario.decide();
        let name = format!("{status:?} {freeze:?}");
        if approved {
            assert!(decision.approved, "{name}");
        } else {
            assert_declined_by(
                &decision,
                Rule::WalletState,
                DeclineCode::WalletFrozen,
                "62",
                &name,
            );
        }
    }
}

#[test]
fn an_allow_list_declines_a_merchant_category_not_on_it() {
    let mut scenario = clean();
    scenario.merchant.mcc = mcc(5812);
    assert_declined_by(
        &scenario.decide(),
        Rule::ControlsCategory,
        DeclineCode::MerchantCategoryBlocked,
        "57",
        "restaurant",
    );
    let mut scenario = clean();
    scenario.merchant.country = Country::DE;
    assert_declined_by(
        &scenario.decide(),
        Rule::ControlsCountry,
        DeclineCode::CountryBlocked,
        "57",
        "DE",
    );
}

#[test]
fn reaching_a_limit_exactly_is_allowed_and_one_cent_more_is_not() {
    for window in Window::ALL {
        let limit = full_controls().limits().window(window).unwrap();
        let mut at_limit = clean();
        // Spent so far + 50.00 == the limit.
        let spent = limit.checked_sub(dollars(5_000)).unwrap();
        set_spend(&mut at_limit.spend, window, spent);
        let decision = at_limit.decide();
        assert!(
            decision.approved,
            "{}: {:#?}",
            window.as_str(),
            decision.trail
        );

        let mut over = clean();
        set_spend(
            &mut over.spend,
            window,
            spent.checked_add(dollars(1)).unwrap(),
        );
        let decision = over.decide();
        assert_declined_by(
            &decision,
            Rule::of_window(window),
            DeclineCode::LimitExceeded,
            "61",
            window.as_str(),
        );
    }
    let mut exactly = clean();
    exactly.amount = dollars(10_000);
    assert!(exactly.decide().approved);
}

/// Sets what was spent in `window` alone.
fn set_spend(spend: &mut Spend, window: Window, amount: Money) {
    match window {
        Window::Day => spend.day = amount,
        Window::Week => spend.week = amount,
        Window::Month => spend.month = amount,
        Window::Year => spend.year = amount,
        Window::Lifetime => spend.lifetime = amount,
    }
}

#[test]
fn the_daily_count_allows_the_last_permitted_authorization() {
    let mut last = clean();
    last.spend.count_today = 9;
    assert!(last.decide().approved);
    let mut one_more = clean();
    one_more.spend.count_today = 10;
    assert_declined_by(
        &one_more.decide(),
        Rule::LimitDailyCount,
        DeclineCode::VelocityExceeded,
        "65",
        "count",
    );
    let mut saturated = clean();
    saturated.spend.count_today = u32::MAX;
    assert_eq!(
        saturated.decide().decline_code,
        Some(DeclineCode::VelocityExceeded)
    );
}

#[test]
fn a_spend_sum_that_cannot_be_formed_fails_closed() {
    let mut overflow = clean();
    overflow.spend.day = Money::from_minor(i64::MAX, usd());
    assert_declined_by(
        &overflow.decide(),
        Rule::LimitDaily,
        DeclineCode::LimitExceeded,
        "61",
        "overflow",
    );
    let mut wrong_currency = clean();
    wrong_currency.spend.day = Money::zero(eur());
    assert_eq!(
        wrong_currency.decide().decline_code,
        Some(DeclineCode::LimitExceeded)
    );
}

#[test]
fn unset_rules_are_skipped_and_the_card_still_approves() {
    let mut scenario = clean();
    scenario.controls = Controls::default();
    scenario.cvc = CvcCheck::NotPresented;
    scenario.partner = PartnerDecision::NotAsked;
    scenario.spend = Spend::zero(usd());
    let decision = scenario.decide();
    assert!(decision.approved);
    assert_eq!(rules(&decision.trail), Rule::ALL[..Rule::ALL.len() - 1]);
    let skipped: Vec<Rule> = decision
        .trail
        .iter()
        .filter(|s| s.outcome == Outcome::Skipped)
        .map(|s| s.rule)
        .collect();
    assert_eq!(
        skipped,
        [
            Rule::Cvc,
            Rule::ControlsCategory,
            Rule::ControlsCountry,
            Rule::LimitPerAuthorization,
            Rule::LimitDaily,
            Rule::LimitWeekly,
            Rule::LimitMonthly,
            Rule::LimitYearly,
            Rule::LimitLifetime,
            Rule::LimitDailyCount,
            Rule::LimitCategories,
            Rule::Partner,
        ]
    );
}

// --- the two phases --------------------------------------------------------------------------

#[test]
fn the_partner_is_asked_only_after_every_flowlet_rule_passed() {
    for rung in rungs().iter().filter(|r| r.rule != Rule::Partner) {
        let mut scenario = clean();
        (rung.breaks)(&mut scenario);
        assert!(pre_partner(&scenario.facts()).is_err(), "{}", rung.name);
    }
    let trail = pre_partner(&clean().facts()).unwrap();
    assert_eq!(rules(trail.steps()), Rule::ALL[..Rule::ALL.len() - 2]);
}

#[test]
fn the_partners_answer_or_its_fallback_decides_rule_20() {
    let cases = [
        (PartnerDecision::Approved, true, "approved"),
        (PartnerDecision::NotAsked, true, "no partner"),
        (
            PartnerDecision::Declined {
                reason: Some("over budget".to_owned()),
            },
            false,
            "over budget",
        ),
        (
            PartnerDecision::Declined { reason: None },
            false,
            "declined by the partner",
        ),
        (
            PartnerDecision::TimedOut(Fallback::Approve),
            true,
            "in time; fallback approve",
        ),
        (
            PartnerDecision::TimedOut(Fallback::Decline),
            false,
            "in time; fallback decline",
        ),
        (
            PartnerDecision::Failed(Fallback::Approve),
            true,
            "failed; fallback approve",
        ),
        (
            PartnerDecision::Failed(Fallback::Decline),
            false,
            "failed; fallback decline",
        ),
    ];
    for (partner, approved, detail) in cases {
        let name = format!("{partner:?}");
        let decision = with_partner(pre_partner(&clean().facts()).unwrap(), partner);
        assert_eq!(decision.approved, approved, "{name}");
        let last = decision.trail.last().unwrap();
        assert_eq!(last.rule, Rule::Partner, "{name}");
        assert!(last.detail.contains(detail), "{name}: {}", last.detail);
        if !approved {
            assert_declined_by(
                &decision,
                Rule::Partner,
                DeclineCode::PartnerDeclined,
                "05",
                &name,
            );
        }
    }
}

#[test]
fn funds_are_the_ledgers_last_word_on_an_approval() {
    let approved = clean().decide();
    let held = approved.clone().with_funds(true);
    assert!(held.approved);
    assert_eq!(held.response_code, "00");
    assert_eq!(rules(&held.trail), Rule::ALL);
    assert_eq!(held.trail.last().unwrap().outcome, Outcome::Pass);

    let short = approved.with_funds(false);
    assert_declined_by(
        &short,
        Rule::Funds,
        DeclineCode::InsufficientFunds,
        "51",
        "funds",
    );

    // A decline stays as it was: the ledger is never asked about one.
    let mut frozen = clean();
    frozen.state = CardState::Frozen;
    let declined = frozen.decide();
    assert_eq!(declined.clone().with_funds(false), declined);
    assert_eq!(declined.clone().with_funds(true), declined);
}

// --- what the trail says -------------------------------------------------------------------

#[test]
fn untrusted_reasons_are_bounded_and_stripped_of_control_characters() {
    let mut scenario = clean();
    scenario.partner = PartnerDecision::Declined {
        reason: Some(format!("line\nbreak{}", "x".repeat(1000))),
    };
    let detail = scenario.decide().trail.last().unwrap().detail.clone();
    assert!(!detail.contains('\n'));
    assert!(detail.chars().count() < 260, "{}", detail.len());
    assert!(detail.ends_with('…'));
    assert_eq!(bounded("short"), "short");

    let mut risky = clean();
    risky.risk = RiskVerdict::Decline {
        reason: "device\tfarm".to_owned(),
    };
    assert!(
        risky
            .decide()
            .trail
            .last()
            .unwrap()
            .detail
            .contains("device farm")
    );
}

#[test]
fn limit_details_show_the_amounts_compared() {
    let mut scenario = clean();
    scenario.spend.day = dollars(48_000);
    scenario.amount = dollars(3_000);
    let decision = scenario.decide();
    assert_eq!(
        decision.trail.last().unwrap().detail,
        "spent 480.00 + 30.00 > day limit 500.00"
    );
    let approved = clean().decide();
    let daily = approved
        .trail
        .iter()
        .find(|s| s.rule == Rule::LimitDaily)
        .unwrap();
    assert_eq!(
        daily.detail,
        "spent 100.00 + 50.00 = 150.00 <= day limit 500.00"
    );
}

#[test]
fn the_decision_serializes_with_stable_names() {
    let mut scenario = clean();
    scenario.merchant.mcc = mcc(7995);
    let value = serde_json::to_value(scenario.decide()).unwrap();
    assert_eq!(value["approved"], json!(false));
    assert_eq!(value["decline_code"], json!("merchant_category_blocked"));
    assert_eq!(value["response_code"], json!("57"));
    let last = &value["trail"][7];
    assert_eq!(last["rule"], json!("controls.category"));
    assert_eq!(last["outcome"], json!("fail"));
    // A stored trail step reads back.
    let step: TrailStep = serde_json::from_value(last.clone()).unwrap();
    assert_eq!(step.rule, Rule::ControlsCategory);
}

#[test]
fn codes_and_rule_names_are_stable_and_round_trip() {
    let names: Vec<&str> = DeclineCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(
        names,
        [
            "card_not_found",
            "card_expired",
            "cvc_mismatch",
            "card_inactive",
            "card_frozen",
            "card_canceled",
            "wallet_frozen",
            "kyc_required",
            "card_disabled",
            "merchant_category_blocked",
            "country_blocked",
            "currency_not_supported",
            "limit_exceeded",
            "velocity_exceeded",
            "fraud_suspected",
            "partner_declined",
            "insufficient_funds",
        ]
    );
    for code in DeclineCode::ALL {
        assert_eq!(DeclineCode::parse(code.as_str()), Some(code));
        assert_eq!(code.to_string(), code.as_str());
        assert_eq!(serde_json::to_value(code).unwrap(), json!(code.as_str()));
    }
    assert_eq!(DeclineCode::parse("nope"), None);
    for rule in Rule::ALL {
        assert_eq!(serde_json::to_value(rule).unwrap(), json!(rule.as_str()));
    }
    assert_eq!(
        serde_json::to_value(Outcome::Skipped).unwrap(),
        json!("skipped")
    );
    assert_eq!(
        serde_json::to_value(Fallback::Approve).unwrap(),
        json!("approve")
    );
    for reason in [
        CancelReason::Canceled,
        CancelReason::Lost,
        CancelReason::Stolen,
    ] {
        assert_eq!(CancelReason::parse(reason.as_str()), Some(reason));
        assert_eq!(
            serde_json::to_value(reason).unwrap(),
            json!(reason.as_str())
        );
    }
    assert_eq!(CancelReason::parse("misplaced"), None);
}

#[test]
fn spend_starts_at_zero_and_reads_by_window() {
    let spend = Spend::zero(eur());
    for window in Window::ALL {
        assert_eq!(spend.in_window(window), Money::zero(eur()));
    }
    assert_eq!(spend.count_today, 0);
    let spend = clean().spend;
    assert_eq!(spend.in_window(Window::Week), dollars(20_000));
    assert_eq!(spend.in_window(Window::Lifetime), dollars(50_000));
}

#[test]
fn a_category_limit_counts_only_at_its_own_merchants() {
    // The grocery group's daily 200.00: 150.00 spent there + 50.00 reaches it exactly.
    let mut at_limit = clean();
    at_limit.category_spend.day = dollars(15_000);
    let decision = at_limit.decide();
    assert!(decision.approved, "{decision:#?}");
    let step = decision
        .trail
        .iter()
        .find(|s| s.rule == Rule::LimitCategories)
        .unwrap();
    assert_eq!(step.outcome, Outcome::Pass);
    assert!(step.detail.contains("grocery"), "{}", step.detail);
    // Its daily count (5) is its own: the fifth grocery authorization today is the last.
    let mut counted = clean();
    counted.category_spend.count_today = 5;
    assert_declined_by(
        &counted.decide(),
        Rule::LimitCategories,
        DeclineCode::VelocityExceeded,
        "65",
        "grocery",
    );
    // A merchant outside the group (allowed by MCC, not by group) is not counted against it.
    let mut elsewhere = clean();
    elsewhere.controls = {
        let mut view = serde_json::to_value(elsewhere.controls.view()).unwrap();
        view["allowed_mccs"] = json!(["5812"]);
        let request: ControlsRequest = serde_json::from_value(view).unwrap();
        request
            .validate(usd(), CategoryTable::shipped().unwrap(), "")
            .unwrap()
    };
    elsewhere.merchant.mcc = mcc(5812);
    elsewhere.category_spend.day = dollars(20_000);
    let decision = elsewhere.decide();
    assert!(decision.approved, "{decision:#?}");
    let step = decision
        .trail
        .iter()
        .find(|s| s.rule == Rule::LimitCategories)
        .unwrap();
    assert_eq!(step.outcome, Outcome::Skipped);
}
