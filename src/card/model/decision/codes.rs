//! The ladder's names: its decline codes and its rules, as partners read them.

use super::*;

/// Why an authorization was declined (API.md "Cards"); stable, partners branch on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeclineCode {
    /// No card has the PAN (14).
    CardNotFound,
    /// The presented expiry is not the card's, or the card has expired (54).
    CardExpired,
    /// The presented CVC is wrong (82).
    CvcMismatch,
    /// A physical card not yet activated (78).
    CardInactive,
    /// The card is frozen (62).
    CardFrozen,
    /// The card is canceled (62), or was reported lost or stolen (43).
    CardCanceled,
    /// The card's wallet is frozen for debits or closed (62).
    WalletFrozen,
    /// The customer's KYC tier does not allow cards (57).
    KycRequired,
    /// The card's controls disable it (57).
    CardDisabled,
    /// The merchant's category is blocked or not allowed (57).
    MerchantCategoryBlocked,
    /// The merchant's country is blocked or not allowed (57).
    CountryBlocked,
    /// The authorization is not in the card's currency (57).
    CurrencyNotSupported,
    /// A spending limit of the card, or of the customer's KYC tier, would be exceeded (61).
    LimitExceeded,
    /// The card's daily count of authorizations would be exceeded (65).
    VelocityExceeded,
    /// The risk check declined (59).
    FraudSuspected,
    /// The partner's real-time decision, or its fallback, declined (05).
    PartnerDeclined,
    /// The wallet's available balance does not cover the hold (51).
    InsufficientFunds,
}

impl DeclineCode {
    /// Every code, in the order of the ladder's rungs.
    #[cfg(test)]
    pub const ALL: [DeclineCode; 17] = [
        Self::CardNotFound,
        Self::CardExpired,
        Self::CvcMismatch,
        Self::CardInactive,
        Self::CardFrozen,
        Self::CardCanceled,
        Self::WalletFrozen,
        Self::KycRequired,
        Self::CardDisabled,
        Self::MerchantCategoryBlocked,
        Self::CountryBlocked,
        Self::CurrencyNotSupported,
        Self::LimitExceeded,
        Self::VelocityExceeded,
        Self::FraudSuspected,
        Self::PartnerDeclined,
        Self::InsufficientFunds,
    ];

    /// The stable snake_case code, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CardNotFound => "card_not_found",
            Self::CardExpired => "card_expired",
            Self::CvcMismatch => "cvc_mismatch",
            Self::CardInactive => "card_inactive",
            Self::CardFrozen => "card_frozen",
            Self::CardCanceled => "card_canceled",
            Self::WalletFrozen => "wallet_frozen",
            Self::KycRequired => "kyc_required",
            Self::CardDisabled => "card_disabled",
            Self::MerchantCategoryBlocked => "merchant_category_blocked",
            Self::CountryBlocked => "country_blocked",
            Self::CurrencyNotSupported => "currency_not_supported",
            Self::LimitExceeded => "limit_exceeded",
            Self::VelocityExceeded => "velocity_exceeded",
            Self::FraudSuspected => "fraud_suspected",
            Self::PartnerDeclined => "partner_declined",
            Self::InsufficientFunds => "insufficient_funds",
        }
    }

    /// Parses a stored code.
    #[cfg(test)]
    pub fn parse(value: &str) -> Option<DeclineCode> {
        Self::ALL.into_iter().find(|code| code.as_str() == value)
    }
}

impl fmt::Display for DeclineCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rule of the ladder, named as the trail shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum Rule {
    /// 1: a card has the PAN.
    #[serde(rename = "card")]
    Card,
    /// 2: the presented expiry.
    #[serde(rename = "expiry")]
    Expiry,
    /// 3: the presented CVC.
    #[serde(rename = "cvc")]
    Cvc,
    /// 4: the card's state.
    #[serde(rename = "card_state")]
    CardState,
    /// 5: the wallet's state.
    #[serde(rename = "wallet_state")]
    WalletState,
    /// 6: the KYC tier allows cards.
    #[serde(rename = "kyc_tier")]
    KycTier,
    /// 7: the controls enable the card.
    #[serde(rename = "controls.enabled")]
    ControlsEnabled,
    /// 8: the merchant category controls.
    #[serde(rename = "controls.category")]
    ControlsCategory,
    /// 9: the merchant country controls.
    #[serde(rename = "controls.country")]
    ControlsCountry,
    /// 10: the card's currency.
    #[serde(rename = "currency")]
    Currency,
    /// 11: the per-authorization limit.
    #[serde(rename = "limits.per_authorization")]
    LimitPerAuthorization,
    /// 12: the daily limit.
    #[serde(rename = "limits.daily")]
    LimitDaily,
    /// 13: the weekly limit.
    #[serde(rename = "limits.weekly")]
    LimitWeekly,
    /// 14: the monthly limit.
    #[serde(rename = "limits.monthly")]
    LimitMonthly,
    /// 15: the yearly limit.
    #[serde(rename = "limits.yearly")]
    LimitYearly,
    /// 16: the lifetime limit.
    #[serde(rename = "limits.lifetime")]
    LimitLifetime,
    /// 17: the daily count of authorizations.
    #[serde(rename = "limits.daily_count")]
    LimitDailyCount,
    /// 18: the limits of the merchant's category groups.
    #[serde(rename = "limits.categories")]
    LimitCategories,
    /// 19: the KYC tier's limits.
    #[serde(rename = "kyc_limits")]
    KycLimits,
    /// 20: the risk check.
    #[serde(rename = "risk")]
    Risk,
    /// 21: the partner's real-time decision.
    #[serde(rename = "partner")]
    Partner,
    #[serde(rename = "funds")]
    Funds,
}

impl Rule {
    /// Every rule, in the order the ladder checks them.
    pub const ALL: [Rule; 22] = [
        Self::Card,
        Self::Expiry,
        Self::Cvc,
        Self::CardState,
        Self::WalletState,
        Self::KycTier,
        Self::ControlsEnabled,
        Self::ControlsCategory,
        Self::ControlsCountry,
        Self::Currency,
        Self::LimitPerAuthorization,
        Self::LimitDaily,
        Self::LimitWeekly,
        Self::LimitMonthly,
        Self::LimitYearly,
        Self::LimitLifetime,
        Self::LimitDailyCount,
        Self::LimitCategories,
        Self::KycLimits,
        Self::Risk,
        Self::Partner,
        Self::Funds,
    ];

    /// The name in the trail (`limits.daily`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Card => "card",
            Self::Expiry => "expiry",
            Self::Cvc => "cvc",
            Self::CardState => "card_state",
            Self::WalletState => "wallet_state",
            Self::KycTier => "kyc_tier",
            Self::ControlsEnabled => "controls.enabled",
            Self::ControlsCategory => "controls.category",
            Self::ControlsCountry => "controls.country",
            Self::Currency => "currency",
            Self::LimitPerAuthorization => "limits.per_authorization",
            Self::LimitDaily => "limits.daily",
            Self::LimitWeekly => "limits.weekly",
            Self::LimitMonthly => "limits.monthly",
            Self::LimitYearly => "limits.yearly",
            Self::LimitLifetime => "limits.lifetime",
            Self::LimitDailyCount => "limits.daily_count",
            Self::LimitCategories => "limits.categories",
            Self::KycLimits => "kyc_limits",
            Self::Risk => "risk",
            Self::Partner => "partner",
            Self::Funds => "funds",
        }
    }

    /// The limit rule of `window`.
    pub(super) fn of_window(window: Window) -> Rule {
        match window {
            Window::Day => Self::LimitDaily,
            Window::Week => Self::LimitWeekly,
            Window::Month => Self::LimitMonthly,
            Window::Year => Self::LimitYearly,
            Window::Lifetime => Self::LimitLifetime,
        }
    }
}
