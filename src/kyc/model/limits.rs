//! Tiers and limits: which way money moves, the counted usage, and the rules that allow a
//! movement or deny it (KYC required, or which limit it exceeds and what remains).

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::CustomerId;
use crate::kyc::settings::{TierLimits, TierSettings};
use crate::platform::money::{Currency, Money};

/// Which way money moves for the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Money arriving in the customer's wallet (checked against the balance cap).
    Incoming,
    /// Money leaving it.
    Outgoing(OutgoingKind),
}

/// Kinds of outgoing money; withdrawals and card spending need tiers that allow them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutgoingKind {
    Payment,
    Withdrawal,
    Card,
}

/// One money movement, as a mover asks about it.
#[derive(Debug, Clone, Copy)]
pub struct Movement {
    pub customer_id: CustomerId,
    pub amount: Money,
    pub direction: Direction,
    /// For incoming money: the wallet's balance once it arrived.
    pub balance_after: Option<Money>,
}

/// The limit that refused a movement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    MaxBalance,
    MaxSinglePayment,
    DailyOutgoing,
    MonthlyOutgoing,
}

impl LimitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MaxBalance => "max_balance",
            Self::MaxSinglePayment => "max_single_payment",
            Self::DailyOutgoing => "daily_outgoing",
            Self::MonthlyOutgoing => "monthly_outgoing",
        }
    }
}

/// Why a movement is refused: the exact rule, and for limits which one and what remains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    KycRequired {
        current_tier: u8,
        /// The lowest tier that would allow it; `None` if no tier does.
        required_tier: Option<u8>,
        reason: String,
    },
    LimitExceeded {
        limit: LimitKind,
        limit_amount: Money,
        /// What may still move under this limit now (never negative).
        remaining: Money,
    },
}

/// Outgoing money counted in the current UTC day and calendar month.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub day: NaiveDate,
    pub day_total: i64,
    /// The first day of the month counted.
    pub month: NaiveDate,
    pub month_total: i64,
}

impl Usage {
    /// Nothing counted yet, as of `today`.
    pub fn empty(today: NaiveDate) -> Usage {
        Usage {
            day: today,
            day_total: 0,
            month: first_of_month(today),
            month_total: 0,
        }
    }

    /// The same usage seen on `today`: a past day or month counts as zero.
    pub fn on(self, today: NaiveDate) -> Usage {
        let month = first_of_month(today);
        Usage {
            day: today,
            day_total: if self.day == today { self.day_total } else { 0 },
            month,
            month_total: if self.month == month {
                self.month_total
            } else {
                0
            },
        }
    }
}

fn first_of_month(day: NaiveDate) -> NaiveDate {
    day.with_day(1).unwrap_or(day)
}

/// The lowest tier whose settings satisfy `allows`.
/// Whether a customer at `tier` may hold a card in `currency` (issuing one): tier 1 or more, a
/// tier that allows cards, and limits in that currency; else `KycRequired` naming the lowest
/// tier that would.
pub fn may_hold_cards(tiers: &[TierSettings], tier: u8, currency: Currency) -> Result<(), Denial> {
    let allows = |t: &TierSettings| {
        t.tier >= 1
            && t.cards
            && t.limits
                .iter()
                .any(|l| l.max_balance.currency() == currency)
    };
    if tiers.iter().any(|t| t.tier == tier && allows(t)) {
        return Ok(());
    }
    Err(Denial::KycRequired {
        current_tier: tier,
        required_tier: lowest_tier(tiers, allows),
        reason: format!(
            "cards in {} are not allowed at KYC tier {tier}",
            currency.code()
        ),
    })
}

fn lowest_tier(tiers: &[TierSettings], allows: impl Fn(&TierSettings) -> bool) -> Option<u8> {
    tiers.iter().filter(|t| allows(t)).map(|t| t.tier).min()
}

fn limits_for(tier: &TierSettings, movement: &Movement) -> Option<TierLimits> {
    tier.limits
        .iter()
        .find(|l| l.max_balance.currency() == movement.amount.currency())
        .cloned()
}

fn minor(amount: i64, like: Money) -> Money {
    Money::from_minor(amount, like.currency())
}

/// Decides one movement for a customer at `tier` whose usage so far is `usage`, at `now`.
/// Allowed: the usage to store (outgoing money counted). Refused: the exact rule.
pub fn evaluate(
    tiers: &[TierSettings],
    tier: u8,
    movement: &Movement,
    usage: Usage,
    now: DateTime<Utc>,
) -> Result<Usage, Denial> {
    let today = now.date_naive();
    let usage = usage.on(today);
    let currency = movement.amount.currency();
    let Some(policy) = tiers.iter().find(|t| t.tier == tier) else {
        return Err(Denial::KycRequired {
            current_tier: tier,
            required_tier: lowest_tier(tiers, |t| !t.limits.is_empty()),
            reason: format!("tier {tier} is not configured"),
        });
    };
    let Some(limits) = limits_for(policy, movement) else {
        let required = lowest_tier(tiers, |t| {
            t.tier > tier
                && t.limits
                    .iter()
                    .any(|l| l.max_balance.currency() == currency)
        });
        return Err(Denial::KycRequired {
            current_tier: tier,
            required_tier: required,
            reason: match required {
                Some(r) => format!("{currency} needs KYC tier {r}"),
                None => format!("no KYC tier allows {currency}"),
            },
        });
    };
    match movement.direction {
        Direction::Incoming => {
            let after = movement.balance_after.unwrap_or(movement.amount);
            let cap = limits.max_balance;
            if after.minor() > cap.minor() {
                let before = after.minor().saturating_sub(movement.amount.minor());
                return Err(Denial::LimitExceeded {
                    limit: LimitKind::MaxBalance,
                    limit_amount: cap,
                    remaining: minor(cap.minor().saturating_sub(before).max(0), cap),
                });
            }
            Ok(usage)
        }
        Direction::Outgoing(kind) => {
            let (allowed, what): (fn(&TierSettings) -> bool, &str) = match kind {
                OutgoingKind::Payment => (|_| true, "payments"),
                OutgoingKind::Withdrawal => (|t| t.withdrawals, "withdrawals"),
                OutgoingKind::Card => (|t| t.cards, "card spending"),
            };
            if tier == 0 || !allowed(policy) {
                let required = lowest_tier(tiers, |t| {
                    t.tier >= 1
                        && allowed(t)
                        && t.limits
                            .iter()
                            .any(|l| l.max_balance.currency() == currency)
                });
                return Err(Denial::KycRequired {
                    current_tier: tier,
                    required_tier: required,
                    reason: format!("{what} are not allowed at KYC tier {tier}"),
                });
            }
            let amount = movement.amount.minor();
            if amount > limits.max_single_payment.minor() {
                return Err(Denial::LimitExceeded {
                    limit: LimitKind::MaxSinglePayment,
                    limit_amount: limits.max_single_payment,
                    remaining: limits.max_single_payment,
                });
            }
            let day_total = usage.day_total.saturating_add(amount);
            if day_total > limits.daily_outgoing.minor() {
                return Err(Denial::LimitExceeded {
                    limit: LimitKind::DailyOutgoing,
                    limit_amount: limits.daily_outgoing,
                    remaining: minor(
                        limits
                            .daily_outgoing
                            .minor()
                            .saturating_sub(usage.day_total)
                            .max(0),
                        limits.daily_outgoing,
                    ),
                });
            }
            let month_total = usage.month_total.saturating_add(amount);
            if month_total > limits.monthly_outgoing.minor() {
                return Err(Denial::LimitExceeded {
                    limit: LimitKind::MonthlyOutgoing,
                    limit_amount: limits.monthly_outgoing,
                    remaining: minor(
                        limits
                            .monthly_outgoing
                            .minor()
                            .saturating_sub(usage.month_total)
                            .max(0),
                        limits.monthly_outgoing,
                    ),
                });
            }
            Ok(Usage {
                day_total,
                month_total,
                ..usage
            })
        }
    }
}

/// Gives back an outgoing movement counted on `counted_at` (a payment that failed after it
/// was allowed, or was reversed): it leaves the day and month totals it is still part of.
pub fn release(
    usage: Usage,
    amount: Money,
    counted_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Usage {
    let usage = usage.on(now.date_naive());
    let counted = counted_at.date_naive();
    let amount = amount.minor();
    Usage {
        day_total: if counted == usage.day {
            usage.day_total.saturating_sub(amount).max(0)
        } else {
            usage.day_total
        },
        month_total: if first_of_month(counted) == usage.month {
            usage.month_total.saturating_sub(amount).max(0)
        } else {
            usage.month_total
        },
        ..usage
    }
}
