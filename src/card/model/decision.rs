//! The authorization decision ladder: whether a card authorization is approved, and if not,
//! the one decline code and ISO 8583 response code that refused it, with the trail of every
//! rule it went through. Pure: the service looks everything up first ([`Facts`]) and records
//! what this returns.
//!
//! # Precedence
//!
//! Rules are checked in this order; the first that fails decides (TigerBeetle's ladder of
//! result codes, written as early returns):
//!
//! | # | rule | fails when | decline code | ISO 8583 |
//! |---|------|------------|--------------|----------|
//! | 1 | `card` | no card has the PAN | `card_not_found` | 14 |
//! | 2 | `expiry` | the presented expiry is not the card's, or has passed | `card_expired` | 54 |
//! | 3 | `cvc` | a presented CVC is wrong (an absent one is not checked) | `cvc_mismatch` | 82 |
//! | 4 | `card_state` | inactive; frozen; canceled; reported lost or stolen | `card_inactive`; `card_frozen`; `card_canceled`; `card_canceled` | 78; 62; 62; 43 |
//! | 5 | `wallet_state` | the wallet is closed, or frozen for debits | `wallet_frozen` | 62 |
//! | 6 | `kyc_tier` | the customer's KYC tier does not allow cards | `kyc_required` | 57 |
//! | 7 | `controls.enabled` | the card's controls disable it | `card_disabled` | 57 |
//! | 8 | `controls.category` | the MCC is blocked, or not allowed | `merchant_category_blocked` | 57 |
//! | 9 | `controls.country` | the merchant country is blocked, or not allowed | `country_blocked` | 57 |
//! | 10 | `currency` | the authorization's currency is not the card's (the wallet's) | `currency_not_supported` | 57 |
//! | 11-16 | `limits.per_authorization`, `limits.daily`, `.weekly`, `.monthly`, `.yearly`, `.lifetime` | the amount, or spent in the window plus the amount, exceeds the limit | `limit_exceeded` | 61 |
//! | 17 | `limits.daily_count` | today's approved count plus this one exceeds the limit | `velocity_exceeded` | 65 |
//! | 18 | `limits.categories` | a limit of a category group the merchant is in (`limits.categories`: per authorization, a window, or the daily count) would be exceeded | `limit_exceeded`; count: `velocity_exceeded` | 61; 65 |
//! | 19 | `kyc_limits` | the customer's tier limits, shared with payments, would be exceeded | `limit_exceeded` | 61 |
//! | 20 | `risk` | the risk check declines | `fraud_suspected` | 59 |
//! | 21 | `partner` | the partner's real-time decision declines (or its fallback does) | `partner_declined` | 05 |
//! | 22 | `funds` | the wallet's available balance cannot cover the hold | `insufficient_funds` | 51 |
//!
//! # Two phases, and funds
//!
//! The partner must never be asked about an authorization Flowlet already declined, so the
//! ladder is split: [`pre_partner`] runs rules 1-20 and either declines or returns a
//! [`Trail`], which only it can make; [`with_partner`] takes that trail and the partner's
//! answer (or [`PartnerDecision::NotAsked`] when the partner has no decision endpoint) and
//! runs rule 21. An approval from the ladder means "approve pending funds": rule 22 is the
//! ledger's, decided atomically with the hold, and [`Decision::with_funds`] records its
//! result.
//!
//! # The trail
//!
//! The trail lists every rule evaluated, in order, up to and including the deciding one;
//! rules after a decline are not evaluated and are left out. A rule that does not apply (no
//! CVC presented, no such limit set, no list set, no partner endpoint) is in the trail as
//! `skipped`, so an approval's trail always names all 21 rules (22 once funds are known).
//! Details are for people: they name amounts, codes and countries, never a PAN or CVC.

use std::fmt;

use iso_country::Country;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::categories::Mcc;
use super::controls::{Controls, Limits, Screen, Window};
use super::pan::{CvcCheck, ExpiryCheck};
use crate::platform::money::{Currency, Money};
use crate::wallet::{FreezeMode, WalletStatus};

mod codes;
mod facts;

pub use codes::{DeclineCode, Rule};
pub use facts::*;

/// The approval response code.
pub const APPROVED: &str = "00";

/// Longest partner- or risk-supplied reason kept in a trail detail, in characters.
const MAX_REASON_CHARS: usize = 200;

// ---------------------------------------------------------------------------------------------
// Outputs
// ---------------------------------------------------------------------------------------------

/// How one rule came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The rule was checked and held.
    Pass,
    /// The rule was checked and failed: it decided the decline.
    Fail,
    /// The rule did not apply (nothing configured, nothing presented).
    Skipped,
}

/// One rule of a decision's trail and how it came out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TrailStep {
    /// The rule.
    pub rule: Rule,
    /// Its outcome.
    pub outcome: Outcome,
    /// What was compared, for people (`spent 480.00 + 30.00 > daily limit 500.00`).
    pub detail: String,
}

/// The trail of an authorization that passed every rule before the partner's; only
/// [`pre_partner`] makes one, so [`with_partner`] cannot run on a declined authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trail {
    steps: Vec<TrailStep>,
}

impl Trail {
    /// The rules so far (e.g. to send along to the partner's decision endpoint).
    pub fn steps(&self) -> &[TrailStep] {
        &self.steps
    }
}

/// The ladder's verdict.
///
/// Invariant: `approved` exactly when `decline_code` is `None`, and then `response_code` is
/// `"00"`; the trail ends with the deciding rule (a `fail` for a decline).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Approved (pending funds until [`Decision::with_funds`] says otherwise).
    pub approved: bool,
    /// Why it was declined.
    pub decline_code: Option<DeclineCode>,
    /// The ISO 8583 response code sent to the network (`"00"`, `"51"`, ...).
    pub response_code: &'static str,
    /// Every rule evaluated, in order.
    pub trail: Vec<TrailStep>,
}

impl Decision {
    /// Records the ledger's answer on an approval: `held` when the hold was placed (the
    /// approval stands), otherwise a decline for insufficient funds (51). A decline is
    /// returned unchanged: the ledger is never asked for one.
    pub fn with_funds(mut self, held: bool) -> Decision {
        if !self.approved {
            return self;
        }
        if held {
            self.trail.push(step(
                Rule::Funds,
                Outcome::Pass,
                "the hold was placed on the wallet",
            ));
            self
        } else {
            let mut ladder = Ladder { steps: self.trail };
            ladder.fail(
                Rule::Funds,
                "the wallet's available balance does not cover the amount",
                DeclineCode::InsufficientFunds,
                "51",
            )
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The ladder
// ---------------------------------------------------------------------------------------------

fn step(rule: Rule, outcome: Outcome, detail: impl Into<String>) -> TrailStep {
    TrailStep {
        rule,
        outcome,
        detail: detail.into(),
    }
}

/// The trail being built.
struct Ladder {
    steps: Vec<TrailStep>,
}

impl Ladder {
    fn pass(&mut self, rule: Rule, detail: impl Into<String>) {
        self.steps.push(step(rule, Outcome::Pass, detail));
    }

    fn skip(&mut self, rule: Rule, detail: impl Into<String>) {
        self.steps.push(step(rule, Outcome::Skipped, detail));
    }

    /// Ends the ladder on `rule` with a decline.
    fn fail(
        &mut self,
        rule: Rule,
        detail: impl Into<String>,
        code: DeclineCode,
        response_code: &'static str,
    ) -> Decision {
        self.steps.push(step(rule, Outcome::Fail, detail));
        Decision {
            approved: false,
            decline_code: Some(code),
            response_code,
            trail: std::mem::take(&mut self.steps),
        }
    }
}

/// Rules 1-20 (see the module docs): a decline, or the trail of an authorization the partner
/// may now be asked about.
pub fn pre_partner(facts: &Facts<'_>) -> Result<Trail, Decision> {
    let mut ladder = Ladder { steps: Vec::new() };
    let Some(card) = &facts.card else {
        return Err(ladder.fail(
            Rule::Card,
            "no card has this card number",
            DeclineCode::CardNotFound,
            "14",
        ));
    };
    ladder.pass(Rule::Card, "card found");

    match card.expiry {
        ExpiryCheck::Valid => ladder.pass(Rule::Expiry, "the card's expiry, not passed"),
        ExpiryCheck::Mismatch => {
            return Err(ladder.fail(
                Rule::Expiry,
                "the presented expiry is not the card's",
                DeclineCode::CardExpired,
                "54",
            ));
        }
        ExpiryCheck::Expired => {
            return Err(ladder.fail(
                Rule::Expiry,
                "the card has expired",
                DeclineCode::CardExpired,
                "54",
            ));
        }
    }

    match card.cvc {
        CvcCheck::NotPresented => ladder.skip(Rule::Cvc, "no CVC presented"),
        CvcCheck::Matches => ladder.pass(Rule::Cvc, "the CVC matches"),
        CvcCheck::Mismatch => {
            return Err(ladder.fail(
                Rule::Cvc,
                "the presented CVC is wrong",
                DeclineCode::CvcMismatch,
                "82",
            ));
        }
    }

    let state = match card.state {
        CardState::Active => None,
        CardState::Inactive => Some(("the card is not activated", DeclineCode::CardInactive, "78")),
        CardState::Frozen => Some(("the card is frozen", DeclineCode::CardFrozen, "62")),
        CardState::Canceled(CancelReason::Canceled) => {
            Some(("the card is canceled", DeclineCode::CardCanceled, "62"))
        }
        CardState::Canceled(CancelReason::Lost) => Some((
            "the card was reported lost",
            DeclineCode::CardCanceled,
            "43",
        )),
        CardState::Canceled(CancelReason::Stolen) => Some((
            "the card was reported stolen",
            DeclineCode::CardCanceled,
            "43",
        )),
    };
    if let Some((detail, code, response)) = state {
        return Err(ladder.fail(Rule::CardState, detail, code, response));
    }
    ladder.pass(Rule::CardState, "the card is active");

    let wallet_blocked = match (card.wallet_status, card.wallet_freeze) {
        (WalletStatus::Active, _) => None,
        (WalletStatus::Closed, _) => Some("the wallet is closed"),
        (WalletStatus::Frozen, Some(FreezeMode::Credits)) => None,
        (WalletStatus::Frozen, _) => Some("the wallet is frozen"),
    };
    if let Some(detail) = wallet_blocked {
        return Err(ladder.fail(Rule::WalletState, detail, DeclineCode::WalletFrozen, "62"));
    }
    if card.wallet_status == WalletStatus::Frozen {
        ladder.pass(Rule::WalletState, "the wallet is frozen for credits only");
    } else {
        ladder.pass(Rule::WalletState, "the wallet is active");
    }

    if !card.kyc_allows_cards {
        return Err(ladder.fail(
            Rule::KycTier,
            "the customer's KYC tier does not allow cards",
            DeclineCode::KycRequired,
            "57",
        ));
    }
    ladder.pass(Rule::KycTier, "the customer's KYC tier allows cards");

    let controls = card.controls;
    if !controls.enabled() {
        return Err(ladder.fail(
            Rule::ControlsEnabled,
            "the card's controls disable it",
            DeclineCode::CardDisabled,
            "57",
        ));
    }
    ladder.pass(Rule::ControlsEnabled, "enabled");

    match controls.screen_category(facts.merchant.mcc) {
        Screen::NoRule => ladder.skip(Rule::ControlsCategory, "no category controls"),
        Screen::Allowed(detail) => ladder.pass(Rule::ControlsCategory, detail),
        Screen::Blocked(detail) => {
            return Err(ladder.fail(
                Rule::ControlsCategory,
                detail,
                DeclineCode::MerchantCategoryBlocked,
                "57",
            ));
        }
    }

    match controls.screen_country(facts.merchant.country) {
        Screen::NoRule => ladder.skip(Rule::ControlsCountry, "no country controls"),
        Screen::Allowed(detail) => ladder.pass(Rule::ControlsCountry, detail),
        Screen::Blocked(detail) => {
            return Err(ladder.fail(
                Rule::ControlsCountry,
                detail,
                DeclineCode::CountryBlocked,
                "57",
            ));
        }
    }

    let amount = facts.amount;
    if amount.currency() != card.currency {
        return Err(ladder.fail(
            Rule::Currency,
            format!(
                "the authorization is in {}, the card in {}",
                amount.currency(),
                card.currency
            ),
            DeclineCode::CurrencyNotSupported,
            "57",
        ));
    }
    ladder.pass(Rule::Currency, card.currency.to_string());

    let limits = controls.limits();
    match limits.per_authorization() {
        None => ladder.skip(Rule::LimitPerAuthorization, "no per-authorization limit"),
        Some(limit) if amount.minor() > limit.minor() => {
            return Err(ladder.fail(
                Rule::LimitPerAuthorization,
                format!("{amount} > per-authorization limit {limit}"),
                DeclineCode::LimitExceeded,
                "61",
            ));
        }
        Some(limit) => ladder.pass(
            Rule::LimitPerAuthorization,
            format!("{amount} <= per-authorization limit {limit}"),
        ),
    }

    for window in Window::ALL {
        let rule = Rule::of_window(window);
        let Some(limit) = limits.window(window) else {
            ladder.skip(rule, format!("no {} limit", window.as_str()));
            continue;
        };
        let spent = card.spend.in_window(window);
        // A sum that cannot be formed (other currency, overflow) exceeds any limit: the
        // ladder fails closed.
        let total = spent.checked_add(amount).ok();
        match total {
            Some(total) if total.minor() <= limit.minor() => ladder.pass(
                rule,
                format!(
                    "spent {spent} + {amount} = {total} <= {} limit {limit}",
                    window.as_str()
                ),
            ),
            _ => {
                return Err(ladder.fail(
                    rule,
                    format!(
                        "spent {spent} + {amount} > {} limit {limit}",
                        window.as_str()
                    ),
                    DeclineCode::LimitExceeded,
                    "61",
                ));
            }
        }
    }

    match limits.daily_count() {
        None => ladder.skip(Rule::LimitDailyCount, "no daily count limit"),
        Some(max) => {
            let count = card.spend.count_today;
            if count.checked_add(1).is_some_and(|next| next <= max) {
                ladder.pass(
                    Rule::LimitDailyCount,
                    format!("{count} approved today + 1 <= {max}"),
                );
            } else {
                return Err(ladder.fail(
                    Rule::LimitDailyCount,
                    format!("{count} approved today + 1 > {max}"),
                    DeclineCode::VelocityExceeded,
                    "65",
                ));
            }
        }
    }

    if card.category_spend.is_empty() {
        ladder.skip(
            Rule::LimitCategories,
            "no limits on the merchant's categories",
        );
    } else {
        let mut within = Vec::new();
        for category in &card.category_spend {
            if let Some((detail, code, response)) = breach(category.limits, &category.spend, amount)
            {
                return Err(ladder.fail(
                    Rule::LimitCategories,
                    format!("category {}: {detail}", category.name),
                    code,
                    response,
                ));
            }
            within.push(category.name);
        }
        ladder.pass(
            Rule::LimitCategories,
            format!("within the limits of {}", within.join(", ")),
        );
    }

    match card.tier_limits {
        TierLimits::Within => ladder.pass(Rule::KycLimits, "within the KYC tier's limits"),
        TierLimits::Exceeded => {
            return Err(ladder.fail(
                Rule::KycLimits,
                "the customer's KYC tier limits would be exceeded",
                DeclineCode::LimitExceeded,
                "61",
            ));
        }
    }

    match &card.risk {
        RiskVerdict::Allow => ladder.pass(Rule::Risk, "no risk found"),
        RiskVerdict::Decline { reason } => {
            return Err(ladder.fail(
                Rule::Risk,
                format!("declined by the risk check: {}", bounded(reason)),
                DeclineCode::FraudSuspected,
                "59",
            ));
        }
    }

    Ok(Trail {
        steps: ladder.steps,
    })
}

/// The first of `limits` that `amount` more would break on `spend`: per authorization, each
/// window, then the daily count; with its detail, decline code and ISO 8583 code.
pub fn breach(
    limits: &Limits,
    spend: &Spend,
    amount: Money,
) -> Option<(String, DeclineCode, &'static str)> {
    if let Some(limit) = limits.per_authorization()
        && amount.minor() > limit.minor()
    {
        return Some((
            format!("{amount} > per-authorization limit {limit}"),
            DeclineCode::LimitExceeded,
            "61",
        ));
    }
    for window in Window::ALL {
        let Some(limit) = limits.window(window) else {
            continue;
        };
        let spent = spend.in_window(window);
        if !spent
            .checked_add(amount)
            .is_ok_and(|total| total.minor() <= limit.minor())
        {
            return Some((
                format!(
                    "spent {spent} + {amount} > {} limit {limit}",
                    window.as_str()
                ),
                DeclineCode::LimitExceeded,
                "61",
            ));
        }
    }
    if let Some(max) = limits.daily_count()
        && spend.count_today.checked_add(1).is_none_or(|n| n > max)
    {
        return Some((
            format!("{} approved today + 1 > {max}", spend.count_today),
            DeclineCode::VelocityExceeded,
            "65",
        ));
    }
    None
}

/// Rule 21 on an authorization that passed rules 1-20: the partner's decision, or its
/// fallback. An approval here is "approve pending funds" (see [`Decision::with_funds`]).
pub fn with_partner(trail: Trail, partner: PartnerDecision) -> Decision {
    let mut ladder = Ladder { steps: trail.steps };
    match partner {
        PartnerDecision::NotAsked => ladder.skip(Rule::Partner, "no partner decision endpoint"),
        PartnerDecision::Approved => ladder.pass(Rule::Partner, "approved by the partner"),
        PartnerDecision::Declined { reason } => {
            let detail = match reason {
                Some(reason) => format!("declined by the partner: {}", bounded(&reason)),
                None => "declined by the partner".to_owned(),
            };
            return ladder.fail(Rule::Partner, detail, DeclineCode::PartnerDeclined, "05");
        }
        PartnerDecision::TimedOut(fallback) => {
            let what = "the partner did not answer in time";
            if let Some(decision) = apply_fallback(&mut ladder, what, fallback) {
                return decision;
            }
        }
        PartnerDecision::Failed(fallback) => {
            let what = "the partner's decision endpoint failed";
            if let Some(decision) = apply_fallback(&mut ladder, what, fallback) {
                return decision;
            }
        }
    }
    Decision {
        approved: true,
        decline_code: None,
        response_code: APPROVED,
        trail: ladder.steps,
    }
}

/// The partner's fallback after `what` went wrong: a decline, or `None` after recording the
/// approval.
fn apply_fallback(ladder: &mut Ladder, what: &str, fallback: Fallback) -> Option<Decision> {
    match fallback {
        Fallback::Approve => {
            ladder.pass(Rule::Partner, format!("{what}; fallback approve"));
            None
        }
        Fallback::Decline => Some(ladder.fail(
            Rule::Partner,
            format!("{what}; fallback decline"),
            DeclineCode::PartnerDeclined,
            "05",
        )),
    }
}

/// Untrusted text (a partner's or the risk check's reason) made safe for a trail: at most
/// [`MAX_REASON_CHARS`] characters, control characters replaced.
fn bounded(reason: &str) -> String {
    let mut kept: String = reason
        .chars()
        .take(MAX_REASON_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if reason.chars().nth(MAX_REASON_CHARS).is_some() {
        kept.push('…');
    }
    kept
}

#[cfg(test)]
mod tests;
