//! [`Currency`]: an ISO 4217 currency with a defined minor unit, parsed strictly and
//! serialized as its code.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{MoneyError, echo};

/// Largest minor-unit exponent a [`Currency`] may have. Keeps `10^exponent`
/// inside `i64` and below `Decimal::MAX_SCALE`; real ISO 4217 exponents are 0..=4.
const MAX_EXPONENT: u16 = 18;

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
