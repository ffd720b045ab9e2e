//! The ladder's inputs: what the service looks up about the card, its wallet and customer,
//! the merchant and the partner before deciding.

use super::*;

/// Why a card was canceled; canceled is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    /// Closed by the partner or the customer.
    Canceled,
    /// Reported lost.
    Lost,
    /// Reported stolen.
    Stolen,
}

impl CancelReason {
    /// Parses the `reason` of `POST /v1/cards/{id}/cancel` (and a stored reason).
    pub fn parse(value: &str) -> Option<CancelReason> {
        match value {
            "canceled" => Some(Self::Canceled),
            "lost" => Some(Self::Lost),
            "stolen" => Some(Self::Stolen),
            _ => None,
        }
    }

    /// The stable name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Canceled => "canceled",
            Self::Lost => "lost",
            Self::Stolen => "stolen",
        }
    }
}

/// A card's state as the ladder needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardState {
    /// Usable.
    Active,
    /// A physical card not yet activated.
    Inactive,
    /// Frozen by the partner or the customer; unfreezing makes it usable again.
    Frozen,
    /// Canceled for good, with the reason.
    Canceled(CancelReason),
}

/// The merchant of an authorization, as the network sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Merchant {
    /// Its merchant category code.
    pub mcc: Mcc,
    /// Its country (ISO 3166-1).
    pub country: Country,
}

/// What the card has already spent, in the card's currency, in each window containing now
/// ([`super::controls::window_start`]): approved authorizations still held or captured, less
/// what reversals and expiries gave back. Refunds do not restore limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spend {
    /// Spent today (UTC).
    pub day: Money,
    /// Spent this ISO week.
    pub week: Money,
    /// Spent this calendar month.
    pub month: Money,
    /// Spent this calendar year.
    pub year: Money,
    /// Spent since the card was issued.
    pub lifetime: Money,
    /// Authorizations approved today (UTC).
    pub count_today: u32,
}

impl Spend {
    /// Nothing spent yet, in `currency`.
    #[cfg(test)]
    pub fn zero(currency: Currency) -> Spend {
        let zero = Money::zero(currency);
        Spend {
            day: zero,
            week: zero,
            month: zero,
            year: zero,
            lifetime: zero,
            count_today: 0,
        }
    }

    /// What was spent in `window`.
    pub fn in_window(&self, window: Window) -> Money {
        match window {
            Window::Day => self.day,
            Window::Week => self.week,
            Window::Month => self.month,
            Window::Year => self.year,
            Window::Lifetime => self.lifetime,
        }
    }
}

/// The KYC module's verdict on the customer's tier limits, which card spend shares with
/// payments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TierLimits {
    /// The authorization fits the tier's limits.
    Within,
    /// It would exceed them.
    Exceeded,
}

/// The risk check's verdict (the AML/fraud module plugs in here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RiskVerdict {
    /// Nothing suspicious.
    Allow,
    /// Suspected fraud; `reason` goes into the trail (bounded), never to the network.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "the AML and fraud issue's risk check returns it")
    )]
    Decline {
        /// Why, for the partner reading the trail.
        reason: String,
    },
}

/// What applies when the partner's decision endpoint does not answer in time or fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// Approve as if the partner had.
    Approve,
    /// Decline as if the partner had.
    Decline,
}

/// The partner's real-time decision on an authorization that passed Flowlet's own rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartnerDecision {
    /// The partner has no decision endpoint: nothing to ask.
    NotAsked,
    /// The partner approved.
    Approved,
    /// The partner declined, optionally saying why.
    Declined {
        /// The partner's `reason`, kept bounded in the trail.
        reason: Option<String>,
    },
    /// No answer within `cards.decision_timeout_ms`: the partner's fallback applies.
    TimedOut(Fallback),
    /// The call failed (connection, status, malformed or unsigned answer): the fallback
    /// applies.
    Failed(Fallback),
}

/// What the service knows about a card it found by the PAN.
#[derive(Debug, Clone)]
pub struct CardFacts<'a> {
    /// The presented expiry against the card's ([`super::pan::Expiry::check`]).
    pub expiry: ExpiryCheck,
    /// The presented CVC, if any, against the card's ([`super::pan::CvcKey::check`]).
    pub cvc: CvcCheck,
    /// The card's state.
    pub state: CardState,
    /// The wallet's status.
    pub wallet_status: WalletStatus,
    /// What a frozen wallet's freeze blocks (`None` when not frozen). A wallet frozen for
    /// credits only still pays by card.
    pub wallet_freeze: Option<FreezeMode>,
    /// Whether the customer's KYC tier allows cards.
    pub kyc_allows_cards: bool,
    /// The card's controls.
    pub controls: &'a Controls,
    /// The card's currency, which is its wallet's.
    pub currency: Currency,
    /// What the card has spent in each window, in its currency.
    pub spend: Spend,
    /// The limits of the category groups the merchant is in, each with what the card spent
    /// there (empty when none is limited).
    pub category_spend: Vec<CategorySpend<'a>>,
    /// The customer's tier limits, with this authorization added.
    pub tier_limits: TierLimits,
    /// The risk check's verdict.
    pub risk: RiskVerdict,
}

/// A category group's limits on a card and what the card spent at it.
#[derive(Debug, Clone)]
pub struct CategorySpend<'a> {
    /// The group's name (`restaurants`, ...).
    pub name: &'a str,
    pub limits: &'a Limits,
    pub spend: Spend,
}

/// Everything the ladder decides on.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    /// The card the PAN names, or `None` when no card has it.
    pub card: Option<CardFacts<'a>>,
    /// The amount asked for, in the authorization's currency. Positive, or zero for an
    /// account verification (validated at the edge).
    pub amount: Money,
    /// The merchant.
    pub merchant: Merchant,
}
