//! Money for Flowlet: integer minor units inside, exact decimals at the API edge.
//!
//! Amounts are stored and computed as `i64` minor units (cents, fils, yen) with
//! checked arithmetic, so no operation can silently wrap or round. At the HTTP
//! edge they appear as exact decimals ([`Amount`]) that are converted with the
//! currency's ISO 4217 minor-unit exponent; a value with more decimal places
//! than the currency allows is rejected, never rounded. Floating point is never
//! involved.

mod amount;
mod currency;
#[cfg(test)]
mod tests;

use std::fmt;

use rust_decimal::Decimal;

pub use amount::Amount;
pub use currency::Currency;

/// How much of a rejected input is echoed back in an error message, so a
/// hostile megabyte-long value does not end up in logs and responses.
const MAX_ECHO_CHARS: usize = 40;

/// Why a money value was rejected. Every variant is safe to show to API
/// clients, and [`MoneyError::code`] gives a stable machine-readable code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The text is not an exact decimal in the accepted grammar, or cannot be
    /// represented exactly (more than 28 significant digits / decimal places).
    #[error("invalid amount: {0}")]
    InvalidAmount(String),
    /// Not an ISO 4217 code with a defined minor unit (e.g. lowercase, `XAU`, `ZZZ`).
    #[error("unknown currency \"{0}\": expected an ISO 4217 code with minor units, like \"USD\"")]
    UnknownCurrency(String),
    /// The amount has more decimal places than the currency's minor unit allows;
    /// it is rejected rather than rounded.
    #[error("{}", too_many_decimals_message(currency, *max))]
    TooManyDecimals {
        /// ISO code of the currency whose exponent was exceeded.
        currency: &'static str,
        /// The currency's minor-unit exponent.
        max: u32,
    },
    /// The value does not fit in `i64` minor units, or arithmetic left that range.
    #[error("amount is outside the supported range")]
    Overflow,
    /// The operation needs an amount strictly greater than zero.
    #[error("amount must be greater than zero")]
    NotPositive,
    /// Two amounts in different currencies were combined.
    #[error("cannot combine {left} and {right} amounts")]
    CurrencyMismatch {
        /// Currency of the left operand.
        left: &'static str,
        /// Currency of the right operand.
        right: &'static str,
    },
}

impl MoneyError {
    /// Stable snake_case code for API error bodies; clients branch on this,
    /// never on the message text, so these strings must not change.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidAmount(_) => "invalid_amount",
            Self::UnknownCurrency(_) => "unknown_currency",
            Self::TooManyDecimals { .. } => "too_many_decimals",
            Self::Overflow => "amount_overflow",
            Self::NotPositive => "amount_not_positive",
            Self::CurrencyMismatch { .. } => "currency_mismatch",
        }
    }
}

fn too_many_decimals_message(currency: &str, max: u32) -> String {
    match max {
        0 => format!("{currency} amounts cannot have decimal places"),
        1 => format!("{currency} amounts have at most 1 decimal place"),
        _ => format!("{currency} amounts have at most {max} decimal places"),
    }
}

/// Shortens untrusted input before it is quoted in an error message.
fn echo(input: &str) -> String {
    let mut shown: String = input.chars().take(MAX_ECHO_CHARS).collect();
    if input.chars().nth(MAX_ECHO_CHARS).is_some() {
        shown.push('…');
    }
    shown
}

/// An amount of one currency as a whole number of minor units.
///
/// Invariant: arithmetic is checked and never mixes currencies, so a `Money`
/// value is always exact and always in range.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Money {
    minor: i64,
    currency: Currency,
}

impl Money {
    /// Builds from minor units (e.g. cents); always exact.
    #[must_use]
    pub const fn from_minor(minor: i64, currency: Currency) -> Self {
        Self { minor, currency }
    }

    /// Zero in `currency`, the identity for sums.
    #[must_use]
    pub const fn zero(currency: Currency) -> Self {
        Self::from_minor(0, currency)
    }

    /// Converts an exact decimal. Rejects (never rounds) a value written with
    /// more decimal places than the currency allows — `100.100` USD is
    /// rejected even though it equals `100.10` — and values whose minor units
    /// do not fit `i64`.
    pub fn from_decimal(amount: Decimal, currency: Currency) -> Result<Self, MoneyError> {
        let exponent = currency.exponent();
        let scale = amount.scale();
        if scale > exponent {
            return Err(MoneyError::TooManyDecimals {
                currency: currency.code(),
                max: exponent,
            });
        }
        let factor = 10_i128
            .checked_pow(exponent - scale)
            .ok_or(MoneyError::Overflow)?;
        let minor = amount
            .mantissa()
            .checked_mul(factor)
            .ok_or(MoneyError::Overflow)?;
        let minor = i64::try_from(minor).map_err(|_| MoneyError::Overflow)?;
        Ok(Self::from_minor(minor, currency))
    }

    /// Parses a request amount that must be strictly positive (payments,
    /// transfers), checking decimals and range first.
    pub fn parse_positive(amount: &Amount, currency: Currency) -> Result<Self, MoneyError> {
        let money = Self::from_decimal(amount.decimal(), currency)?;
        if money.is_positive() {
            Ok(money)
        } else {
            Err(MoneyError::NotPositive)
        }
    }

    /// The amount in minor units, the form stored in the ledger.
    #[must_use]
    pub const fn minor(&self) -> i64 {
        self.minor
    }

    /// The currency the minor units are counted in.
    #[must_use]
    pub const fn currency(&self) -> Currency {
        self.currency
    }

    /// The amount as a decimal whose scale is exactly the currency exponent
    /// (`100.00` USD, `500` JPY, `1.250` BHD).
    #[must_use]
    pub fn to_decimal(&self) -> Decimal {
        // Cannot panic: `Decimal::new` only rejects scales above 28 and the
        // Currency invariant bounds the exponent by 18.
        Decimal::new(self.minor, self.currency.exponent())
    }

    /// The amount with exactly the currency's digits and no currency code
    /// (`"100.00"`, `"-3.10"`, `"500"`); the text sent to clients.
    #[must_use]
    pub fn format_amount(&self) -> String {
        self.to_decimal().to_string()
    }

    /// Adds two amounts of the same currency; `CurrencyMismatch` or `Overflow`
    /// instead of a wrong result.
    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        self.ensure_same_currency(other)?;
        self.minor
            .checked_add(other.minor)
            .map(|minor| Self::from_minor(minor, self.currency))
            .ok_or(MoneyError::Overflow)
    }

    /// Subtracts `other`; `CurrencyMismatch` or `Overflow` instead of a wrong result.
    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        self.ensure_same_currency(other)?;
        self.minor
            .checked_sub(other.minor)
            .map(|minor| Self::from_minor(minor, self.currency))
            .ok_or(MoneyError::Overflow)
    }

    /// Negates (e.g. to reverse an entry); `Overflow` for `i64::MIN` minor units.
    pub fn checked_neg(self) -> Result<Money, MoneyError> {
        self.minor
            .checked_neg()
            .map(|minor| Self::from_minor(minor, self.currency))
            .ok_or(MoneyError::Overflow)
    }

    /// True when strictly above zero.
    #[must_use]
    pub const fn is_positive(&self) -> bool {
        self.minor > 0
    }

    /// True when strictly below zero.
    #[must_use]
    pub const fn is_negative(&self) -> bool {
        self.minor < 0
    }

    /// True when exactly zero.
    #[must_use]
    pub const fn is_zero(&self) -> bool {
        self.minor == 0
    }

    fn ensure_same_currency(self, other: Money) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch {
                left: self.currency.code(),
                right: other.currency.code(),
            })
        }
    }
}

impl fmt::Display for Money {
    /// Same text as [`Money::format_amount`]; formatting flags are ignored so
    /// a `{:.1}` can never round money.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_decimal())
    }
}
