//! Tests of money: properties of the minor-unit conversions and arithmetic, strict parsing of
//! currencies and amounts (strings and JSON numbers), and safe error messages.

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
        "1e5", " 1", "1 ", "+1", "1.", ".5", "", "-", "-.5", "abc", "NaN", "inf", "1,000", "1_000",
        "1.2.3", "--1", "١",
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
