//! [`Amount`]: a decimal exactly as read at the HTTP edge (a string or a JSON number, never a
//! float), its OpenAPI schema, and the exact decimal parser behind it.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::de::{self, IgnoredAny, MapAccess, Unexpected, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

use super::{Money, MoneyError, echo};

/// What a client is told whenever an amount is not in an accepted form.
const AMOUNT_HINT: &str = "amount must be a decimal string like \"10.50\" or a JSON number";

/// The map key under which serde_json (feature `arbitrary_precision`) hands a
/// number's original text to a visitor. serde_json does not export it.
const SERDE_JSON_NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// Largest number of fraction digits a `Decimal` can hold exactly.
const MAX_DECIMAL_SCALE: u32 = 28;

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
