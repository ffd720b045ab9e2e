//! Money for Flowlet: integer minor units inside, exact decimals at the API edge.
//!
//! Amounts are stored and computed as `i64` minor units (cents, fils, yen) with
//! checked arithmetic, so no operation can silently wrap or round. At the HTTP
//! edge they appear as exact decimals ([`Amount`]) that are converted with the
//! currency's ISO 4217 minor-unit exponent; a value with more decimal places
//! than the currency allows is rejected, never rounded. Floating point is never
//! involved.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::de::{self, IgnoredAny, MapAccess, Unexpected, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

/// What a client is told whenever an amount is not in an accepted form.
const AMOUNT_HINT: &str = "amount must be a decimal string like \"10.50\" or a JSON number";

/// The map key under which serde_json (feature `arbitrary_precision`) hands a
/// number's original text to a visitor. serde_json does not export it.
const SERDE_JSON_NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// Largest minor-unit exponent a [`Currency`] may have. Keeps `10^exponent`
/// inside `i64` and below `Decimal::MAX_SCALE`; real ISO 4217 exponents are 0..=4.
const MAX_EXPONENT: u16 = 18;

/// Largest number of fraction digits a `Decimal` can hold exactly.
const MAX_DECIMAL_SCALE: u32 = 28;

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

// ---------------------------------------------------------------------------
// Currency
// ---------------------------------------------------------------------------

/// An ISO 4217 currency that has a defined minor unit.
///
/// Invariant: the exponent is known (so `XAU`, `XDR`, `XXX` are unrepresentable)
/// and at most 18, which every conversion in this module relies on.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency(iso_currency::Currency);

impl Currency {
    /// Parses an ISO 4217 code. Only exactly three uppercase ASCII letters
    /// naming a currency with a minor unit are accepted, so `usd` or `XAU`
    /// never reach the ledger.
    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        let well_formed = code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase());
        if !well_formed {
            return Err(MoneyError::UnknownCurrency(echo(code)));
        }
        iso_currency::Currency::from_code(code)
            .ok_or_else(|| MoneyError::UnknownCurrency(echo(code)))
            .and_then(Self::try_from)
    }

    /// The three-letter ISO 4217 code, e.g. `"USD"`.
    #[must_use]
    pub fn code(&self) -> &'static str {
        self.0.code()
    }

    /// Number of minor-unit digits (USD 2, JPY 0, BHD 3); the scale every
    /// amount in this currency is converted with.
    #[must_use]
    pub fn exponent(&self) -> u32 {
        // Every constructor checked that the exponent exists; 0 is never taken.
        self.0.exponent().map_or(0, u32::from)
    }

    /// The underlying `iso_currency` value, for names, symbols and countries.
    #[must_use]
    pub fn iso(&self) -> iso_currency::Currency {
        self.0
    }
}

impl TryFrom<iso_currency::Currency> for Currency {
    type Error = MoneyError;

    /// Accepts only currencies with a defined minor unit, keeping the invariant
    /// that [`Currency::exponent`] is meaningful.
    fn try_from(currency: iso_currency::Currency) -> Result<Self, MoneyError> {
        match currency.exponent() {
            Some(exponent) if exponent <= MAX_EXPONENT => Ok(Self(currency)),
            _ => Err(MoneyError::UnknownCurrency(currency.code().to_owned())),
        }
    }
}

impl FromStr for Currency {
    type Err = MoneyError;

    /// Same rules as [`Currency::parse`].
    fn from_str(code: &str) -> Result<Self, MoneyError> {
        Self::parse(code)
    }
}

impl fmt::Display for Currency {
    /// Prints the ISO code, the same text that is serialized.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Currency").field(&self.code()).finish()
    }
}

impl Serialize for Currency {
    /// Serialized as the ISO code string, e.g. `"EUR"`.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    /// Deserialized through [`Currency::parse`], so input is validated identically.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CurrencyVisitor;

        impl Visitor<'_> for CurrencyVisitor {
            type Value = Currency;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an ISO 4217 currency code like \"USD\"")
            }

            fn visit_str<E: de::Error>(self, code: &str) -> Result<Currency, E> {
                Currency::parse(code).map_err(E::custom)
            }
        }

        deserializer.deserialize_str(CurrencyVisitor)
    }
}

// ---------------------------------------------------------------------------
// Money
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Amount
// ---------------------------------------------------------------------------

/// A decimal exactly as read at the HTTP edge, before a currency is applied.
///
/// Invariant: it was parsed without rounding and without ever passing through
/// floating point; the written scale is kept (`"100.10"` has scale 2) so
/// [`Money::from_decimal`] can reject too many decimal places.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Amount(Decimal);

impl Amount {
    /// Wraps a decimal that is already exact (e.g. computed server-side).
    #[must_use]
    pub const fn new(decimal: Decimal) -> Self {
        Self(decimal)
    }

    /// The decimal value with its written scale.
    #[must_use]
    pub const fn decimal(&self) -> Decimal {
        self.0
    }
}

impl From<Decimal> for Amount {
    fn from(decimal: Decimal) -> Self {
        Self(decimal)
    }
}

impl From<Money> for Amount {
    /// Response amounts carry exactly the currency's digits.
    fn from(money: Money) -> Self {
        Self(money.to_decimal())
    }
}

impl FromStr for Amount {
    type Err = MoneyError;

    /// Strict grammar `-?[0-9]+(\.[0-9]+)?`: no `+`, spaces, exponent, `NaN`,
    /// separators, or leading/trailing `.`; exact or an error.
    fn from_str(text: &str) -> Result<Self, MoneyError> {
        parse_decimal(text, Grammar::PlainString).map(Self)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for Amount {
    /// Always a string (`"100.10"`), so clients in languages whose JSON
    /// numbers are doubles never lose digits.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Amount {
    /// Accepts a strict decimal string or a JSON number (read from its original
    /// text via serde_json's `arbitrary_precision`), rejects floats.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(AmountVisitor)
    }
}

struct AmountVisitor;

impl<'de> Visitor<'de> for AmountVisitor {
    type Value = Amount;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a decimal string like \"10.50\" or a JSON number")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Amount, E> {
        parse_decimal(text, Grammar::PlainString)
            .map(Amount)
            .map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Amount, E> {
        Ok(Amount(Decimal::from(value)))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Amount, E> {
        Ok(Amount(Decimal::from(value)))
    }

    fn visit_i128<E: de::Error>(self, value: i128) -> Result<Amount, E> {
        Decimal::try_from_i128_with_scale(value, 0)
            .map(Amount)
            .map_err(|_| E::custom(too_many_digits(&value.to_string())))
    }

    fn visit_u128<E: de::Error>(self, value: u128) -> Result<Amount, E> {
        i128::try_from(value)
            .map_err(|_| E::custom(too_many_digits(&value.to_string())))
            .and_then(|value| self.visit_i128(value))
    }

    fn visit_f64<E: de::Error>(self, _value: f64) -> Result<Amount, E> {
        Err(E::custom(format!(
            "{AMOUNT_HINT}; floating-point values are not accepted because they cannot represent money exactly"
        )))
    }

    /// serde_json with `arbitrary_precision` delivers non-`i64`/`u64` numbers
    /// as `{"$serde_json::private::Number": "<original text>"}`.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Amount, A::Error> {
        let is_number = map
            .next_key::<String>()?
            .is_some_and(|key| key == SERDE_JSON_NUMBER_TOKEN);
        if !is_number {
            return Err(de::Error::invalid_type(Unexpected::Map, &self));
        }
        let text: String = map.next_value()?;
        if map.next_key::<IgnoredAny>()?.is_some() {
            return Err(de::Error::invalid_type(Unexpected::Map, &self));
        }
        parse_decimal(&text, Grammar::JsonNumber)
            .map(Amount)
            .map_err(de::Error::custom)
    }
}

impl utoipa::PartialSchema for Amount {
    /// Documented as a string because that is what we send; JSON numbers are
    /// also accepted on input.
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "Decimal amount as a string (or JSON number), with at most the currency's minor-unit digits",
            ))
            .pattern(Some(r"^-?[0-9]+(\.[0-9]+)?$"))
            .examples(["100.00"])
            .into()
    }
}

impl utoipa::ToSchema for Amount {}

// ---------------------------------------------------------------------------
// Exact decimal parsing
// ---------------------------------------------------------------------------

/// Which textual forms [`parse_decimal`] accepts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Grammar {
    /// `-?[0-9]+(\.[0-9]+)?` — what clients may send as a string.
    PlainString,
    /// The above plus a JSON exponent (`1e2`, `1.5E-3`, `2e+1`); only ever
    /// produced by a JSON parser, which already validated the syntax.
    JsonNumber,
}

fn not_a_decimal(text: &str, grammar: Grammar) -> MoneyError {
    let form = match grammar {
        Grammar::PlainString => {
            "digits with an optional leading '-' and an optional '.' followed by digits; no '+', spaces or exponent"
        }
        Grammar::JsonNumber => "a JSON number",
    };
    MoneyError::InvalidAmount(format!(
        "\"{}\" is not a decimal amount ({form}); {AMOUNT_HINT}",
        echo(text)
    ))
}

fn too_many_digits(text: &str) -> MoneyError {
    MoneyError::InvalidAmount(format!(
        "\"{}\" cannot be represented exactly (at most 28 significant digits and 28 decimal places)",
        echo(text)
    ))
}

fn all_digits(part: &str) -> bool {
    !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit())
}

/// Parses `text` into a `Decimal` with exactly the written scale, or fails;
/// it never rounds. An exponent shifts the scale (`1.50e1` is `15.0`).
fn parse_decimal(text: &str, grammar: Grammar) -> Result<Decimal, MoneyError> {
    let invalid = || not_a_decimal(text, grammar);

    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (number, exponent) = match grammar {
        Grammar::PlainString => (unsigned, None),
        Grammar::JsonNumber => match unsigned.split_once(['e', 'E']) {
            Some((number, exponent)) => (number, Some(exponent)),
            None => (unsigned, None),
        },
    };
    let (integer, fraction) = match number.split_once('.') {
        Some((integer, fraction)) => (integer, fraction),
        None => (number, ""),
    };
    if !all_digits(integer) || (number.contains('.') && !all_digits(fraction)) {
        return Err(invalid());
    }
    let exponent = match exponent {
        None => 0_i64,
        Some(exponent) => parse_exponent(exponent).ok_or_else(invalid)?,
    };

    let mut mantissa: i128 = 0;
    for digit in integer.bytes().chain(fraction.bytes()) {
        mantissa = mantissa
            .checked_mul(10)
            .and_then(|m| m.checked_add(i128::from(digit - b'0')))
            .ok_or_else(|| too_many_digits(text))?;
    }

    let fraction_digits = i64::try_from(fraction.len()).map_err(|_| too_many_digits(text))?;
    let mut scale = fraction_digits
        .checked_sub(exponent)
        .ok_or_else(|| too_many_digits(text))?;
    if scale < 0 {
        let shift = u32::try_from(-scale).map_err(|_| too_many_digits(text))?;
        mantissa = 10_i128
            .checked_pow(shift)
            .and_then(|factor| mantissa.checked_mul(factor))
            .ok_or_else(|| too_many_digits(text))?;
        scale = 0;
    }
    let scale = u32::try_from(scale)
        .ok()
        .filter(|scale| *scale <= MAX_DECIMAL_SCALE)
        .ok_or_else(|| too_many_digits(text))?;
    if negative {
        mantissa = -mantissa;
    }
    Decimal::try_from_i128_with_scale(mantissa, scale).map_err(|_| too_many_digits(text))
}

/// Parses a JSON exponent (`5`, `+5`, `-5`); absurd exponents are `None`.
fn parse_exponent(text: &str) -> Option<i64> {
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, text.get(1..)?),
        Some(b'+') => (false, text.get(1..)?),
        _ => (false, text),
    };
    if !all_digits(digits) {
        return None;
    }
    // Anything beyond a few hundred cannot produce a representable Decimal.
    let value: i64 = digits.parse().ok().filter(|v| *v <= 1_000)?;
    Some(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    /// Real codes covering exponents 0, 2, 3 and 4.
    const CODES: [&str; 22] = [
        "USD", "EUR", "GBP", "CHF", "CAD", "AUD", "SEK", "INR", "JPY", "KRW", "CLP", "ISK", "VND",
        "XAF", "BHD", "KWD", "JOD", "TND", "OMR", "IQD", "LYD", "CLF",
    ];

    #[derive(Deserialize)]
    struct Request {
        amount: Amount,
    }

    fn currency(code: &str) -> Currency {
        Currency::parse(code).unwrap()
    }

    fn dec(text: &str) -> Decimal {
        Decimal::from_str_exact(text).unwrap()
    }

    fn amount_from_json(json: &str) -> Result<Amount, String> {
        serde_json::from_str::<Request>(json)
            .map(|request| request.amount)
            .map_err(|e| e.to_string())
    }

    proptest! {
        #[test]
        fn minor_units_survive_decimal_and_display_round_trips_in_every_currency(
            code in prop::sample::select(&CODES[..]),
            minor in any::<i64>(),
        ) {
            let currency = currency(code);
            let money = Money::from_minor(minor, currency);

            let decimal = money.to_decimal();
            prop_assert_eq!(decimal.scale(), currency.exponent());
            prop_assert_eq!(Money::from_decimal(decimal, currency), Ok(money));

            let shown = money.to_string();
            prop_assert_eq!(&shown, &money.format_amount());
            let reparsed: Amount = shown.parse().unwrap();
            prop_assert_eq!(Money::from_decimal(reparsed.decimal(), currency), Ok(money));

            let digits_after_point = shown.split_once('.').map_or(0, |(_, fraction)| fraction.len());
            prop_assert_eq!(u32::try_from(digits_after_point).unwrap(), currency.exponent());
        }

        #[test]
        fn checked_add_and_sub_agree_with_wide_arithmetic_and_overflow_only_outside_i64(
            a in any::<i64>(),
            b in any::<i64>(),
        ) {
            let usd = currency("USD");
            let (left, right) = (Money::from_minor(a, usd), Money::from_minor(b, usd));

            let sum = i128::from(a) + i128::from(b);
            let expected_sum = i64::try_from(sum).map(|m| Money::from_minor(m, usd)).map_err(|_| MoneyError::Overflow);
            prop_assert_eq!(left.checked_add(right), expected_sum);

            let difference = i128::from(a) - i128::from(b);
            let expected_difference = i64::try_from(difference).map(|m| Money::from_minor(m, usd)).map_err(|_| MoneyError::Overflow);
            prop_assert_eq!(left.checked_sub(right), expected_difference);
        }

        #[test]
        fn plain_decimal_strings_parse_exactly_with_their_written_scale(
            integer in "-?[0-9]{1,14}",
            fraction in proptest::option::of("[0-9]{1,6}"),
        ) {
            let text = match &fraction {
                Some(fraction) => format!("{integer}.{fraction}"),
                None => integer.clone(),
            };
            let amount: Amount = text.parse().unwrap();
            prop_assert_eq!(amount.decimal(), dec(&text));
            prop_assert_eq!(amount.decimal().scale(), u32::try_from(fraction.map_or(0, |f| f.len())).unwrap());
        }
    }

    #[test]
    fn amount_with_more_decimals_than_currency_allows_is_rejected() {
        let usd = currency("USD");
        assert_eq!(
            Money::from_decimal(dec("100.100"), usd),
            Err(MoneyError::TooManyDecimals {
                currency: "USD",
                max: 2
            })
        );
        assert_eq!(
            Money::from_decimal(dec("100.5"), currency("JPY")),
            Err(MoneyError::TooManyDecimals {
                currency: "JPY",
                max: 0
            })
        );
        assert_eq!(
            MoneyError::TooManyDecimals {
                currency: "USD",
                max: 2
            }
            .to_string(),
            "USD amounts have at most 2 decimal places"
        );
        assert_eq!(
            MoneyError::TooManyDecimals {
                currency: "JPY",
                max: 0
            }
            .to_string(),
            "JPY amounts cannot have decimal places"
        );
    }

    #[test]
    fn amounts_within_the_currency_exponent_convert_to_minor_units() {
        let usd = currency("USD");
        assert_eq!(
            Money::from_decimal(dec("100.1"), usd).map(|m| m.minor()),
            Ok(10_010)
        );
        assert_eq!(
            Money::from_decimal(dec("100.10"), usd).map(|m| m.minor()),
            Ok(10_010)
        );
        assert_eq!(
            Money::from_decimal(dec("100"), usd).map(|m| m.minor()),
            Ok(10_000)
        );
        assert_eq!(
            Money::from_decimal(dec("-0.05"), usd).map(|m| m.minor()),
            Ok(-5)
        );
        assert_eq!(
            Money::from_decimal(dec("500"), currency("JPY")).map(|m| m.minor()),
            Ok(500)
        );
        assert_eq!(
            Money::from_decimal(dec("1.25"), currency("BHD")).map(|m| m.minor()),
            Ok(1_250)
        );
    }

    #[test]
    fn display_prints_exactly_the_currency_digits_without_a_code() {
        let cases = [
            (10_000, "USD", "100.00"),
            (5, "USD", "0.05"),
            (-310, "EUR", "-3.10"),
            (-5, "EUR", "-0.05"),
            (500, "JPY", "500"),
            (1_250, "BHD", "1.250"),
            (1_250, "KWD", "1.250"),
            (0, "USD", "0.00"),
        ];
        for (minor, code, expected) in cases {
            let money = Money::from_minor(minor, currency(code));
            assert_eq!(money.to_string(), expected);
            assert_eq!(money.format_amount(), expected);
            assert_eq!(format!("{money:.1}"), expected);
        }
    }

    #[test]
    fn minor_units_beyond_i64_overflow_instead_of_wrapping() {
        let usd = currency("USD");
        assert_eq!(
            Money::from_decimal(dec("92233720368547758.08"), usd),
            Err(MoneyError::Overflow)
        );
        assert_eq!(
            Money::from_decimal(dec("92233720368547758.07"), usd).map(|m| m.minor()),
            Ok(i64::MAX)
        );
        assert_eq!(
            Money::from_decimal(dec("-92233720368547758.08"), usd).map(|m| m.minor()),
            Ok(i64::MIN)
        );
        let huge = amount_from_json(r#"{"amount": 99999999999999999999999}"#).unwrap();
        assert_eq!(
            Money::from_decimal(huge.decimal(), usd),
            Err(MoneyError::Overflow)
        );
        let huge_yen = amount_from_json(r#"{"amount": "9223372036854775808"}"#).unwrap();
        assert_eq!(
            Money::from_decimal(huge_yen.decimal(), currency("JPY")),
            Err(MoneyError::Overflow)
        );
    }

    #[test]
    fn mixing_currencies_or_leaving_i64_is_an_error() {
        let usd = Money::from_minor(100, currency("USD"));
        let eur = Money::from_minor(100, currency("EUR"));
        let mismatch = MoneyError::CurrencyMismatch {
            left: "USD",
            right: "EUR",
        };
        assert_eq!(usd.checked_add(eur), Err(mismatch.clone()));
        assert_eq!(usd.checked_sub(eur), Err(mismatch.clone()));
        assert_eq!(mismatch.to_string(), "cannot combine USD and EUR amounts");
        assert_eq!(
            Money::from_minor(i64::MIN, currency("USD")).checked_neg(),
            Err(MoneyError::Overflow)
        );
        assert_eq!(usd.checked_neg().map(|m| m.minor()), Ok(-100));
    }

    #[test]
    fn sign_predicates_follow_the_minor_units() {
        let usd = currency("USD");
        assert!(Money::from_minor(1, usd).is_positive());
        assert!(Money::from_minor(-1, usd).is_negative());
        assert!(Money::zero(usd).is_zero());
        assert!(!Money::zero(usd).is_positive());
    }

    #[test]
    fn parse_positive_rejects_zero_and_negative_amounts() {
        let usd = currency("USD");
        let parse = |text: &str| Money::parse_positive(&text.parse::<Amount>().unwrap(), usd);
        assert_eq!(parse("0"), Err(MoneyError::NotPositive));
        assert_eq!(parse("0.00"), Err(MoneyError::NotPositive));
        assert_eq!(parse("-1.00"), Err(MoneyError::NotPositive));
        assert_eq!(
            parse("0.001"),
            Err(MoneyError::TooManyDecimals {
                currency: "USD",
                max: 2
            })
        );
        assert_eq!(parse("0.01").map(|m| m.minor()), Ok(1));
    }

    #[test]
    fn json_string_and_json_number_both_keep_the_written_scale() {
        let from_string = amount_from_json(r#"{"amount": "100.10"}"#).unwrap();
        let from_number = amount_from_json(r#"{"amount": 100.10}"#).unwrap();
        for amount in [from_string, from_number] {
            assert_eq!(amount.decimal().to_string(), "100.10");
            assert_eq!(amount.decimal().scale(), 2);
        }
    }

    #[test]
    fn json_number_one_tenth_is_exactly_one_tenth() {
        let amount = amount_from_json(r#"{"amount": 0.1}"#).unwrap();
        assert_eq!(amount.decimal().mantissa(), 1);
        assert_eq!(amount.decimal().scale(), 1);
    }

    #[test]
    fn long_json_number_keeps_every_digit() {
        let amount = amount_from_json(r#"{"amount": 12345678901234567.89}"#).unwrap();
        assert_eq!(amount.decimal().to_string(), "12345678901234567.89");
        assert_eq!(
            Money::from_decimal(amount.decimal(), currency("USD")).map(|m| m.minor()),
            Ok(1_234_567_890_123_456_789)
        );
    }

    #[test]
    fn json_integers_and_exponents_are_read_exactly() {
        assert_eq!(
            amount_from_json(r#"{"amount": 100}"#).unwrap().decimal(),
            dec("100")
        );
        assert_eq!(
            amount_from_json(r#"{"amount": -7}"#).unwrap().decimal(),
            dec("-7")
        );
        assert_eq!(
            amount_from_json(r#"{"amount": 1e2}"#)
                .unwrap()
                .decimal()
                .to_string(),
            "100"
        );
        assert_eq!(
            amount_from_json(r#"{"amount": 1.50E1}"#)
                .unwrap()
                .decimal()
                .to_string(),
            "15.0"
        );
        assert_eq!(
            amount_from_json(r#"{"amount": 25e-2}"#)
                .unwrap()
                .decimal()
                .to_string(),
            "0.25"
        );
        assert_eq!(
            amount_from_json(r#"{"amount": -0.0}"#).unwrap().decimal(),
            Decimal::ZERO
        );
    }

    #[test]
    fn thirty_digit_amounts_are_rejected_not_rounded() {
        let thirty = "123456789012345678901234567890";
        assert!(amount_from_json(&format!(r#"{{"amount": "{thirty}"}}"#)).is_err());
        assert!(amount_from_json(&format!(r#"{{"amount": {thirty}}}"#)).is_err());
        assert!(amount_from_json(r#"{"amount": "1.234567890123456789012345678901"}"#).is_err());
        assert!(amount_from_json(r#"{"amount": 0.12345678901234567890123456789}"#).is_err());
        assert!(amount_from_json(r#"{"amount": 1e400}"#).is_err());
        assert!(amount_from_json(r#"{"amount": 1e-400}"#).is_err());
    }

    #[test]
    fn malformed_amount_strings_are_rejected() {
        for bad in [
            "1e5", " 1", "1 ", "+1", "1.", ".5", "", "-", "-.5", "abc", "NaN", "inf", "1,000",
            "1_000", "1.2.3", "--1", "١",
        ] {
            let json = serde_json::to_string(&serde_json::json!({ "amount": bad })).unwrap();
            let error = amount_from_json(&json).expect_err(bad);
            assert!(
                error.contains("amount must be a decimal string like"),
                "{bad}: {error}"
            );
            assert!(
                matches!(bad.parse::<Amount>(), Err(MoneyError::InvalidAmount(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn non_numeric_json_values_are_rejected_with_a_clear_message() {
        for bad in ["true", "null", "[]", "{}", r#"{"value": 1}"#] {
            let error = amount_from_json(&format!(r#"{{"amount": {bad}}}"#)).expect_err(bad);
            assert!(
                error.contains(r#"a decimal string like "10.50" or a JSON number"#),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn floats_from_other_deserializers_are_refused() {
        use serde::de::IntoDeserializer;
        let deserializer: serde::de::value::F64Deserializer<serde::de::value::Error> =
            0.5_f64.into_deserializer();
        let error = Amount::deserialize(deserializer).expect_err("f64 must be refused");
        assert!(
            error
                .to_string()
                .contains("floating-point values are not accepted")
        );

        let deserializer: serde::de::value::I64Deserializer<serde::de::value::Error> =
            (-42_i64).into_deserializer();
        assert_eq!(
            Amount::deserialize(deserializer).map(|a| a.decimal()),
            Ok(dec("-42"))
        );
    }

    /// serde_json's `Value` hands a number to `visit_f64` whenever its f64
    /// prints back to the same text (0.1), so such numbers are refused there;
    /// request bodies must be deserialized directly, not via `Value`.
    #[test]
    fn float_like_numbers_read_through_a_json_value_are_refused() {
        let value: serde_json::Value = serde_json::from_str(r#"{"amount": 0.1}"#).unwrap();
        let error = serde_json::from_value::<Request>(value)
            .map(|r| r.amount)
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("floating-point values are not accepted")
        );

        let value: serde_json::Value = serde_json::from_str(r#"{"amount": 100.10}"#).unwrap();
        let amount = serde_json::from_value::<Request>(value).unwrap().amount;
        assert_eq!(amount.decimal().to_string(), "100.10");
    }

    #[test]
    fn amounts_serialize_as_strings_with_their_scale() {
        let amount = Amount::from(Money::from_minor(10_010, currency("USD")));
        assert_eq!(serde_json::to_string(&amount).unwrap(), r#""100.10""#);
        let round_trip: Amount = serde_json::from_str(r#""100.10""#).unwrap();
        assert_eq!(round_trip.decimal().scale(), 2);
    }

    #[test]
    fn amount_schema_is_a_documented_string() {
        let schema = serde_json::to_value(<Amount as utoipa::PartialSchema>::schema()).unwrap();
        assert_eq!(schema["type"], "string");
        assert_eq!(schema["examples"][0], "100.00");
        assert!(
            schema["description"]
                .as_str()
                .unwrap()
                .starts_with("Decimal amount as a string")
        );
    }

    #[test]
    fn currency_codes_must_be_uppercase_known_and_have_minor_units() {
        for bad in [
            "usd", "Usd", "XAU", "XXX", "XDR", "ZZZ", "US", "USDD", "", "ÜSD",
        ] {
            assert!(
                matches!(Currency::parse(bad), Err(MoneyError::UnknownCurrency(_))),
                "{bad}"
            );
        }
        assert_eq!(currency("JPY").exponent(), 0);
        assert_eq!(currency("USD").exponent(), 2);
        assert_eq!(currency("BHD").exponent(), 3);
        assert_eq!(currency("EUR").code(), "EUR");
        assert_eq!(currency("EUR").to_string(), "EUR");
        assert_eq!("GBP".parse::<Currency>(), Ok(currency("GBP")));
    }

    #[test]
    fn currencies_serialize_as_their_code_and_deserialize_through_parse() {
        assert_eq!(serde_json::to_string(&currency("KWD")).unwrap(), r#""KWD""#);
        assert_eq!(
            serde_json::from_str::<Currency>(r#""KWD""#).unwrap(),
            currency("KWD")
        );
        let error = serde_json::from_str::<Currency>(r#""XAU""#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown currency \"XAU\""), "{error}");
        assert!(serde_json::from_str::<Currency>(r#""usd""#).is_err());
        assert!(serde_json::from_str::<Currency>("840").is_err());
    }

    #[test]
    fn error_codes_are_stable_snake_case() {
        let cases = [
            (MoneyError::InvalidAmount(String::new()), "invalid_amount"),
            (
                MoneyError::UnknownCurrency(String::new()),
                "unknown_currency",
            ),
            (
                MoneyError::TooManyDecimals {
                    currency: "USD",
                    max: 2,
                },
                "too_many_decimals",
            ),
            (MoneyError::Overflow, "amount_overflow"),
            (MoneyError::NotPositive, "amount_not_positive"),
            (
                MoneyError::CurrencyMismatch {
                    left: "USD",
                    right: "EUR",
                },
                "currency_mismatch",
            ),
        ];
        for (error, code) in cases {
            assert_eq!(error.code(), code);
        }
    }

    #[test]
    fn error_messages_do_not_echo_huge_inputs() {
        let long = "9".repeat(10_000) + "x";
        let Err(MoneyError::InvalidAmount(message)) = long.parse::<Amount>() else {
            panic!("a 10 000 character string must be rejected");
        };
        assert!(message.len() < 400, "{message}");
    }
}
