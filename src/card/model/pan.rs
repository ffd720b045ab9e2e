//! Card numbers and what is derived from them: the issuer's BIN, PAN generation with a Luhn
//! check digit, the expiry date, and the CVC (derived, never stored).
//!
//! Secrets in this file ([`Pan`], [`Cvc`], [`CvcKey`]) are zeroed when dropped and their
//! `Debug` shows nothing but what PCI DSS lets anyone see (the last four digits of a PAN), so
//! a stray `{:?}` in a log line cannot leak them. Their digits are reached only through a
//! method named `expose`, which a reviewer can grep for.
//!
//! Randomness is the caller's (`getrandom` in the service): functions here take random bytes
//! as an argument, so they are pure and tested with fixed bytes.

use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use hmac::{Hmac, KeyInit, Mac};
use secrecy::zeroize::Zeroizing;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Digits of every PAN Flowlet issues (the usual length for Visa and Mastercard debit).
pub const PAN_LENGTH: usize = 16;

/// Shortest and longest BIN (issuer identification number) accepted. ISO/IEC 7812 moved from
/// 6 to 8 digits in 2017; networks still assign 6-digit BINs, so both are accepted.
pub const BIN_MIN_DIGITS: usize = 6;
/// See [`BIN_MIN_DIGITS`].
pub const BIN_MAX_DIGITS: usize = 8;

/// Random bytes [`Pan::generate`] needs: 128 bits, reduced modulo at most `10^9`, so the bias
/// towards small account numbers is below `10^9 / 2^128` (about `3e-30`): uniform for any
/// purpose, without a rejection loop that a broken random source could spin forever.
pub const PAN_RANDOM_BYTES: usize = 16;

/// Shortest and longest PAN [`Pan::parse`] accepts (ISO/IEC 7812-1 allows up to 19 digits;
/// networks issue nothing shorter than 12).
const PAN_MIN_DIGITS: usize = 12;
const PAN_MAX_DIGITS: usize = 19;

/// Longest validity a card may be issued with: ten years, beyond what any network allows.
pub const MAX_VALIDITY_MONTHS: u32 = 120;

/// Digits of a CVC (CVV2/CVC2 on Visa and Mastercard cards).
pub const CVC_DIGITS: usize = 3;

/// Why a BIN, PAN, expiry or CVC key was refused. Messages never quote a PAN or key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PanError {
    /// The configured BIN is not 6 to 8 ASCII digits.
    #[error("a BIN is {BIN_MIN_DIGITS} to {BIN_MAX_DIGITS} digits")]
    InvalidBin,
    /// The text is not a 12-19 digit number with a valid Luhn check digit.
    #[error(
        "not a card number: {PAN_MIN_DIGITS} to {PAN_MAX_DIGITS} digits with a valid check digit"
    )]
    InvalidPan,
    /// The expiry month is not 1-12 or the year is outside 2000-9999.
    #[error("not an expiry date: month 1-12 and a four-digit year from 2000")]
    InvalidExpiry,
    /// `validity_months` is 0 or above [`MAX_VALIDITY_MONTHS`].
    #[error("validity must be 1 to {MAX_VALIDITY_MONTHS} months")]
    InvalidValidity,
    /// The CVC key is empty (a configuration mistake; strength is configuration's business).
    #[error("the CVC key must not be empty")]
    EmptyCvcKey,
}

// ---------------------------------------------------------------------------------------------
// BIN
// ---------------------------------------------------------------------------------------------

/// The issuer's BIN (`cards.bin`): the first 6 to 8 digits of every PAN it issues.
///
/// Invariant: 6 to 8 ASCII digits, so a 16-digit PAN always has at least 7 random digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bin(String);

impl Bin {
    /// Parses a configured BIN: digits only, 6 to 8 of them, nothing trimmed.
    pub fn parse(text: &str) -> Result<Bin, PanError> {
        let len_ok = (BIN_MIN_DIGITS..=BIN_MAX_DIGITS).contains(&text.len());
        if len_ok && text.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Bin(text.to_owned()))
        } else {
            Err(PanError::InvalidBin)
        }
    }

    /// The BIN's digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

// ---------------------------------------------------------------------------------------------
// Luhn
// ---------------------------------------------------------------------------------------------

/// The Luhn (mod 10, ISO/IEC 7812-1 annex B) sum of `digits` as if a check digit were to be
/// appended (`check_follows`) or as a whole number whose last digit is the check digit.
/// `None` when any byte is not an ASCII digit.
fn luhn_sum(digits: &str, check_follows: bool) -> Option<u32> {
    let mut sum = 0_u32;
    // Counting from the right, the digit next to the check digit is doubled.
    let mut double = check_follows;
    for byte in digits.bytes().rev() {
        if !byte.is_ascii_digit() {
            return None;
        }
        let mut digit = u32::from(byte - b'0');
        if double {
            digit *= 2;
            if digit > 9 {
                digit -= 9;
            }
        }
        sum += digit;
        double = !double;
    }
    Some(sum)
}

/// The Luhn check digit to append to `payload` (ASCII digits), or `None` when `payload` is
/// empty or holds anything but digits.
pub fn luhn_check_digit(payload: &str) -> Option<u8> {
    if payload.is_empty() {
        return None;
    }
    let sum = luhn_sum(payload, true)?;
    // (10 - sum mod 10) mod 10 is below 10, so it fits a u8.
    u8::try_from((10 - sum % 10) % 10).ok()
}

/// Whether `number` is at least two ASCII digits whose last is a correct Luhn check digit.
/// It says nothing about whether such a card exists.
pub fn luhn_valid(number: &str) -> bool {
    number.len() >= 2 && luhn_sum(number, false).is_some_and(|sum| sum % 10 == 0)
}

// ---------------------------------------------------------------------------------------------
// PAN
// ---------------------------------------------------------------------------------------------

/// A primary account number in clear: digits only, Luhn-valid.
///
/// Invariant: 12 to 19 ASCII digits with a valid check digit (16 for the ones Flowlet
/// issues). Zeroed on drop; `Debug` shows only the last four digits.
#[derive(Clone, PartialEq, Eq)]
pub struct Pan(Zeroizing<String>);

impl Pan {
    /// A new 16-digit PAN: `bin`, then random account digits, then the Luhn check digit.
    ///
    /// `random` must come from a cryptographically secure source (`getrandom`); it is read as
    /// one 128-bit number reduced modulo `10^k` for the `k = 15 - bin length` account digits
    /// (see [`PAN_RANDOM_BYTES`] for why that is uniform enough). Uniqueness is not this
    /// function's business: with an 8-digit BIN there are only `10^7` numbers, so the caller
    /// retries on a collision of the PAN's lookup hash.
    pub fn generate(bin: &Bin, random: &[u8; PAN_RANDOM_BYTES]) -> Pan {
        let width = PAN_LENGTH - 1 - bin.as_str().len();
        let modulus = (0..width).fold(1_u128, |m, _| m * 10);
        let account = u128::from_be_bytes(*random) % modulus;
        let mut digits = Zeroizing::new(String::with_capacity(PAN_LENGTH));
        digits.push_str(bin.as_str());
        // Written digit by digit into the zeroed-on-drop string: a `format!` would leave a
        // copy of the account digits in freed memory.
        let mut account_digits = Zeroizing::new([b'0'; PAN_LENGTH]);
        let mut rest = account;
        for slot in account_digits.iter_mut().take(width).rev() {
            // `rest % 10` is below 10, so it fits a u8; the fallback is unreachable.
            *slot = b'0' + u8::try_from(rest % 10).unwrap_or(0);
            rest /= 10;
        }
        for digit in account_digits.iter().take(width) {
            digits.push(char::from(*digit));
        }
        // The payload is all digits (the BIN's invariant and a formatted integer), so the
        // check digit always exists; '0' keeps this total without a panic path.
        let check = luhn_check_digit(&digits).unwrap_or(0);
        digits.push(char::from(b'0' + check));
        Pan(digits)
    }

    /// Parses a presented PAN (a card network message, the simulator): 12 to 19 digits with a
    /// valid Luhn check digit, nothing trimmed. The caller answers "unknown card" (ISO 8583
    /// 14) for an error, exactly as for a well-formed number it does not know.
    pub fn parse(text: &str) -> Result<Pan, PanError> {
        let len_ok = (PAN_MIN_DIGITS..=PAN_MAX_DIGITS).contains(&text.len());
        if len_ok && luhn_valid(text) {
            Ok(Pan(Zeroizing::new(text.to_owned())))
        } else {
            Err(PanError::InvalidPan)
        }
    }

    /// The full number in clear. Only the vault (to seal or hash it), the CVC derivation and
    /// the issuing and reveal responses may call this.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The last four digits: the only part of a PAN stored in clear and shown on a card's
    /// ordinary responses.
    pub fn last4(&self) -> &str {
        // At least 12 ASCII digits by the invariant, so the slice is in range and on char
        // boundaries; the fallback is unreachable.
        self.0.get(self.0.len().saturating_sub(4)..).unwrap_or("")
    }
}

impl fmt::Debug for Pan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pan(…{})", self.last4())
    }
}

// ---------------------------------------------------------------------------------------------
// Expiry
// ---------------------------------------------------------------------------------------------

/// A card's expiry month. A card is valid through the last instant of its expiry month, in
/// UTC (networks give no time zone; UTC is the one the whole platform keeps time in).
///
/// Invariant: month 1-12, year 2000-9999.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Expiry {
    year: u16,
    month: u8,
}

/// How a presented expiry compares with the card's, for the decision ladder (ISO 8583 54).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryCheck {
    /// The presented month and year are the card's, and the card has not expired.
    Valid,
    /// The presented month or year is not the card's.
    Mismatch,
    /// The presented expiry is the card's, and it has passed.
    Expired,
}

impl Expiry {
    /// An expiry from its month (1-12) and four-digit year (2000-9999).
    pub fn new(month: u8, year: u16) -> Result<Expiry, PanError> {
        if (1..=12).contains(&month) && (2000..=9999).contains(&year) {
            Ok(Expiry { year, month })
        } else {
            Err(PanError::InvalidExpiry)
        }
    }

    /// The expiry of a card issued at `issued` and valid for `validity_months`
    /// (`cards.validity_months`, 1 to [`MAX_VALIDITY_MONTHS`]): the issue month plus that many
    /// months. Issued on 2026-01-31 for 36 months, it expires 01/2029 and works through
    /// 2029-01-31 23:59:59 UTC; the day of issue never matters.
    pub fn after(issued: DateTime<Utc>, validity_months: u32) -> Result<Expiry, PanError> {
        if validity_months == 0 || validity_months > MAX_VALIDITY_MONTHS {
            return Err(PanError::InvalidValidity);
        }
        // Months since year 0, plus the validity; i64 cannot overflow for chrono's years.
        let months =
            i64::from(issued.year()) * 12 + i64::from(issued.month0()) + i64::from(validity_months);
        let year = u16::try_from(months.div_euclid(12)).map_err(|_| PanError::InvalidExpiry)?;
        let month = u8::try_from(months.rem_euclid(12) + 1).map_err(|_| PanError::InvalidExpiry)?;
        Expiry::new(month, year)
    }

    /// The month, 1-12.
    pub fn month(&self) -> u8 {
        self.month
    }

    /// The four-digit year.
    pub fn year(&self) -> u16 {
        self.year
    }

    /// `MMYY`, the form printed on the card and mixed into the CVC.
    pub fn mmyy(&self) -> String {
        format!("{:02}{:02}", self.month, self.year % 100)
    }

    /// The first instant the card is no longer valid: midnight UTC starting the month after
    /// its expiry month.
    pub fn valid_until(&self) -> DateTime<Utc> {
        let (year, month) = if self.month == 12 {
            (i32::from(self.year) + 1, 1)
        } else {
            (i32::from(self.year), u32::from(self.month) + 1)
        };
        // Month 1-12 and a year up to 10000 always make a date; the fallback is unreachable
        // and errs towards "expired".
        NaiveDate::from_ymd_opt(year, month, 1).map_or(DateTime::<Utc>::MIN_UTC, |date| {
            date.and_time(chrono::NaiveTime::MIN).and_utc()
        })
    }

    /// Whether the card has expired at `now` (it is valid through the end of its month).
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        now >= self.valid_until()
    }

    /// Whether a presented month and year are this expiry. A two-digit year (`YY`, as ISO 8583
    /// field 14 carries it) is compared with the last two digits of the year.
    pub fn matches(&self, month: u8, year: u16) -> bool {
        let year_ok = if year < 100 {
            year == self.year % 100
        } else {
            year == self.year
        };
        month == self.month && year_ok
    }

    /// The ladder's expiry rung for a presented month and year at `now`: a mismatch first (the
    /// stronger signal of a guessed card), then whether the card has expired.
    pub fn check(&self, month: u8, year: u16, now: DateTime<Utc>) -> ExpiryCheck {
        if !self.matches(month, year) {
            ExpiryCheck::Mismatch
        } else if self.is_expired(now) {
            ExpiryCheck::Expired
        } else {
            ExpiryCheck::Valid
        }
    }
}

/// Whether a card expiring in `exp_month`/`exp_year` (four-digit year) has expired at `now`.
/// Valid through the last instant of the expiry month in UTC. A month or year that is no
/// expiry at all counts as expired: a card with a corrupt expiry must not be usable.
#[cfg(test)]
pub fn is_expired(exp_month: u8, exp_year: u16, now: DateTime<Utc>) -> bool {
    Expiry::new(exp_month, exp_year).map_or(true, |expiry| expiry.is_expired(now))
}

// ---------------------------------------------------------------------------------------------
// CVC
// ---------------------------------------------------------------------------------------------

/// A card verification code in clear (three digits). Zeroed on drop; `Debug` shows nothing.
/// Deliberately not `PartialEq`: compare with [`Cvc::matches`], which takes constant time.
#[derive(Clone)]
pub struct Cvc(Zeroizing<String>);

impl Cvc {
    /// The three digits in clear, for the issuing and reveal responses only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this CVC, compared in constant time so the response time does
    /// not tell an attacker how many leading digits were right.
    pub fn matches(&self, presented: &str) -> bool {
        constant_time_eq(self.0.as_bytes(), presented.as_bytes())
    }
}

impl fmt::Debug for Cvc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cvc([REDACTED])")
    }
}

/// Whether the CVC was presented and right, for the decision ladder (ISO 8583 82).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CvcCheck {
    /// No CVC in the message (card-present or recurring): not checked.
    NotPresented,
    /// The presented CVC is the card's.
    Matches,
    /// The presented CVC is not the card's.
    Mismatch,
}

/// The key CVCs are derived under (`cards.cvc_key`), already expanded for HMAC-SHA256.
///
/// CVCs are never stored: `CVC = HMAC-SHA256(cvc_key, PAN || MMYY)` reduced to three digits,
/// so only the key needs protecting and rotating it (with re-issue) changes every CVC.
/// Invariant: the key never leaves this value and `Debug` shows none of it.
#[derive(Clone)]
pub struct CvcKey {
    mac: HmacSha256,
}

impl CvcKey {
    /// Keys the derivation. Any non-empty key works; its strength (at least 32 random bytes in
    /// production) is checked where configuration is validated.
    pub fn new(key: &[u8]) -> Result<CvcKey, PanError> {
        if key.is_empty() {
            return Err(PanError::EmptyCvcKey);
        }
        // HMAC takes keys of any length; the error arm cannot happen but keeps this total.
        let mac = HmacSha256::new_from_slice(key).map_err(|_| PanError::EmptyCvcKey)?;
        Ok(CvcKey { mac })
    }

    /// The CVC of the card `pan` expiring `expiry`.
    ///
    /// The first 8 bytes of the MAC, read as a big-endian `u64`, are reduced modulo 1000 and
    /// written with leading zeros. `2^64 mod 1000 = 616`, so codes `000`-`615` are more likely
    /// than the others by one part in `2^64 / 1000` (about `5e-17`): uniform for any purpose,
    /// with no rejection loop.
    pub fn derive(&self, pan: &Pan, expiry: Expiry) -> Cvc {
        let mut mac = self.mac.clone();
        mac.update(pan.expose().as_bytes());
        mac.update(expiry.mmyy().as_bytes());
        let tag = mac.finalize().into_bytes();
        let mut wide = [0_u8; 8];
        for (dst, src) in wide.iter_mut().zip(tag.iter()) {
            *dst = *src;
        }
        let code = u64::from_be_bytes(wide) % 1000;
        Cvc(Zeroizing::new(format!("{code:03}")))
    }

    /// The ladder's CVC rung: not checked when none was presented, else a constant-time
    /// comparison with the derived CVC.
    pub fn check(&self, pan: &Pan, expiry: Expiry, presented: Option<&str>) -> CvcCheck {
        match presented {
            None => CvcCheck::NotPresented,
            Some(presented) if self.derive(pan, expiry).matches(presented) => CvcCheck::Matches,
            Some(_) => CvcCheck::Mismatch,
        }
    }
}

impl fmt::Debug for CvcKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CvcKey([REDACTED])")
    }
}

/// Compares two byte strings in time that depends only on their lengths (which are not
/// secret: a CVC is always three digits), never on where they first differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y));
    // Keeps the optimiser from turning the fold into an early-exit comparison.
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    /// Random bytes that are all `byte`.
    fn random(byte: u8) -> [u8; PAN_RANDOM_BYTES] {
        [byte; PAN_RANDOM_BYTES]
    }

    #[test]
    fn a_bin_is_six_to_eight_digits_and_nothing_else() {
        let cases = [
            ("424242", true),
            ("4242424", true),
            ("42424242", true),
            ("42424", false),
            ("424242424", false),
            ("", false),
            ("42424a", false),
            (" 424242", false),
            ("４２４２４２", false),
        ];
        for (text, ok) in cases {
            assert_eq!(Bin::parse(text).is_ok(), ok, "{text:?}");
        }
        assert_eq!(Bin::parse("424242").unwrap().as_str(), "424242");
        assert_eq!(Bin::parse("4242").unwrap_err(), PanError::InvalidBin);
    }

    #[test]
    fn the_luhn_check_digit_matches_published_test_numbers() {
        // Card networks' published test PANs, and the ISO/IEC 7812 worked example.
        let cases = [
            ("424242424242424", 2),
            ("555555555555444", 4),
            ("37828224631000", 5),
            ("7992739871", 3),
            ("0", 0),
        ];
        for (payload, check) in cases {
            assert_eq!(luhn_check_digit(payload), Some(check), "{payload}");
        }
        assert_eq!(luhn_check_digit(""), None);
        assert_eq!(luhn_check_digit("12a4"), None);
    }

    #[test]
    fn luhn_validity_accepts_real_numbers_and_refuses_any_single_digit_change() {
        for number in [
            "4242424242424242",
            "5555555555554444",
            "378282246310005",
            "79927398713",
        ] {
            assert!(luhn_valid(number), "{number}");
            // Every single-digit substitution breaks the check (Luhn's guarantee).
            for (i, byte) in number.bytes().enumerate() {
                for replacement in b'0'..=b'9' {
                    if replacement == byte {
                        continue;
                    }
                    let mut changed = number.as_bytes().to_vec();
                    changed[i] = replacement;
                    let changed = String::from_utf8(changed).unwrap();
                    assert!(!luhn_valid(&changed), "{changed}");
                }
            }
        }
        for bad in [
            "",
            "0",
            "4242 4242 4242 4242",
            "424242424242424a",
            "-4242424242424242",
        ] {
            assert!(!luhn_valid(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_generated_pan_is_sixteen_digits_starting_with_the_bin_and_luhn_valid() {
        for bin in ["424242", "4242424", "42424242"] {
            let bin = Bin::parse(bin).unwrap();
            for byte in [0x00, 0x01, 0x7f, 0xff] {
                let pan = Pan::generate(&bin, &random(byte));
                assert_eq!(pan.expose().len(), PAN_LENGTH);
                assert!(pan.expose().starts_with(bin.as_str()));
                assert!(luhn_valid(pan.expose()), "{}", pan.expose());
                assert_eq!(Pan::parse(pan.expose()).unwrap(), pan);
            }
        }
    }

    #[test]
    fn generation_is_a_function_of_the_random_bytes_and_pads_small_numbers_with_zeros() {
        let bin = Bin::parse("400000").unwrap();
        let zero = Pan::generate(&bin, &random(0));
        assert_eq!(zero.expose(), "4000000000000002");
        let mut one = random(0);
        one[PAN_RANDOM_BYTES - 1] = 1;
        assert_eq!(Pan::generate(&bin, &one).expose(), "4000000000000010");
        assert_eq!(Pan::generate(&bin, &one), Pan::generate(&bin, &one));
        assert_ne!(Pan::generate(&bin, &random(7)), zero);
    }

    #[test]
    fn account_digits_are_spread_over_the_whole_range() {
        // 1000 different random inputs land in many different leading account digits: the
        // reduction does not collapse onto a few values.
        let bin = Bin::parse("424242").unwrap();
        let mut leading = std::collections::BTreeSet::new();
        for i in 0..1000_u32 {
            let mut bytes = [0_u8; PAN_RANDOM_BYTES];
            bytes[..4].copy_from_slice(&i.wrapping_mul(2_654_435_761).to_be_bytes());
            bytes[12..].copy_from_slice(&i.wrapping_mul(40_503).to_be_bytes());
            let pan = Pan::generate(&bin, &bytes);
            leading.insert(pan.expose()[6..7].to_owned());
        }
        assert_eq!(leading.len(), 10);
    }

    #[test]
    fn a_presented_pan_must_be_twelve_to_nineteen_luhn_valid_digits() {
        assert!(Pan::parse("4242424242424242").is_ok());
        assert!(Pan::parse("378282246310005").is_ok());
        assert!(Pan::parse("6011000990139424").is_ok());
        for bad in [
            "4242424242424241",
            "42424242424",
            "42424242424242424242",
            "4242 4242 4242 4242",
            "",
        ] {
            assert_eq!(Pan::parse(bad), Err(PanError::InvalidPan), "{bad:?}");
        }
    }

    #[test]
    fn last4_is_the_last_four_digits_and_debug_shows_nothing_more() {
        let pan = Pan::parse("5555555555554444").unwrap();
        assert_eq!(pan.last4(), "4444");
        let debug = format!("{pan:?}");
        assert_eq!(debug, "Pan(…4444)");
        assert!(!debug.contains("5555"));
    }

    #[test]
    fn expiry_is_the_issue_month_plus_the_validity_whatever_the_day() {
        let cases = [
            ("2026-01-31T12:00:00Z", 36, (1, 2029)),
            ("2026-01-01T00:00:00Z", 1, (2, 2026)),
            ("2026-11-15T08:00:00Z", 2, (1, 2027)),
            ("2026-12-31T23:59:59Z", 1, (1, 2027)),
            ("2026-12-01T00:00:00Z", 12, (12, 2027)),
            ("2026-06-30T00:00:00Z", 120, (6, 2036)),
        ];
        for (issued, months, (month, year)) in cases {
            let expiry = Expiry::after(at(issued), months).unwrap();
            assert_eq!(
                (expiry.month(), expiry.year()),
                (month, year),
                "{issued} + {months}"
            );
        }
        let issued = at("2026-01-31T12:00:00Z");
        assert_eq!(Expiry::after(issued, 0), Err(PanError::InvalidValidity));
        assert_eq!(Expiry::after(issued, 121), Err(PanError::InvalidValidity));
    }

    #[test]
    fn an_expiry_is_a_month_from_one_to_twelve_and_a_four_digit_year() {
        assert!(Expiry::new(1, 2000).is_ok());
        assert!(Expiry::new(12, 9999).is_ok());
        for (month, year) in [(0, 2030), (13, 2030), (1, 1999), (1, 29), (1, 10000)] {
            assert_eq!(Expiry::new(month, year), Err(PanError::InvalidExpiry));
        }
        assert_eq!(Expiry::new(3, 2029).unwrap().mmyy(), "0329");
        assert_eq!(Expiry::new(11, 2030).unwrap().mmyy(), "1130");
    }

    #[test]
    fn a_card_is_valid_through_the_last_instant_of_its_expiry_month_in_utc() {
        let cases = [
            (1, 2029, "2029-01-31T23:59:59.999999Z", false),
            (1, 2029, "2029-02-01T00:00:00Z", true),
            (1, 2029, "2028-12-31T23:59:59Z", false),
            (12, 2029, "2029-12-31T23:59:59Z", false),
            (12, 2029, "2030-01-01T00:00:00Z", true),
            (2, 2028, "2028-02-29T23:59:59Z", false),
            (2, 2028, "2028-03-01T00:00:00Z", true),
            // An expiry that is no expiry counts as expired.
            (0, 2029, "2000-01-01T00:00:00Z", true),
            (13, 2029, "2000-01-01T00:00:00Z", true),
        ];
        for (month, year, now, expired) in cases {
            assert_eq!(
                is_expired(month, year, at(now)),
                expired,
                "{month}/{year} at {now}"
            );
        }
        let expiry = Expiry::new(12, 2029).unwrap();
        assert_eq!(expiry.valid_until(), at("2030-01-01T00:00:00Z"));
        assert!(!expiry.is_expired(at("2029-12-31T23:59:59Z")));
    }

    #[test]
    fn a_presented_expiry_matches_with_a_two_or_four_digit_year() {
        let expiry = Expiry::new(3, 2029).unwrap();
        assert!(expiry.matches(3, 2029));
        assert!(expiry.matches(3, 29));
        assert!(!expiry.matches(4, 2029));
        assert!(!expiry.matches(3, 2030));
        assert!(!expiry.matches(3, 30));
        assert!(!expiry.matches(3, 2129));
    }

    #[test]
    fn the_expiry_check_reports_a_mismatch_before_expiry() {
        let expiry = Expiry::new(3, 2029).unwrap();
        let before = at("2029-03-31T23:59:59Z");
        let after = at("2029-04-01T00:00:00Z");
        assert_eq!(expiry.check(3, 2029, before), ExpiryCheck::Valid);
        assert_eq!(expiry.check(3, 2029, after), ExpiryCheck::Expired);
        assert_eq!(expiry.check(4, 2029, before), ExpiryCheck::Mismatch);
        assert_eq!(expiry.check(4, 2029, after), ExpiryCheck::Mismatch);
    }

    #[test]
    fn the_cvc_is_three_digits_determined_by_key_pan_and_expiry() {
        let key = CvcKey::new(b"an example CVC key of 32 bytes!!").unwrap();
        let pan = Pan::parse("4242424242424242").unwrap();
        let expiry = Expiry::new(3, 2029).unwrap();
        let cvc = key.derive(&pan, expiry);
        assert_eq!(cvc.expose().len(), CVC_DIGITS);
        assert!(cvc.expose().bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(key.derive(&pan, expiry).expose(), cvc.expose());

        // The specification: HMAC-SHA256(key, PAN || MMYY), first 8 bytes, mod 1000.
        let mut reference =
            HmacSha256::new_from_slice(b"an example CVC key of 32 bytes!!").unwrap();
        reference.update(b"42424242424242420329");
        let tag = reference.finalize().into_bytes();
        let wide = u64::from_be_bytes(tag[..8].try_into().unwrap());
        assert_eq!(cvc.expose(), format!("{:03}", wide % 1000));
    }

    #[test]
    fn another_key_pan_or_expiry_gives_other_cvcs() {
        let key = CvcKey::new(b"key one").unwrap();
        let other_key = CvcKey::new(b"key two").unwrap();
        let pan = Pan::parse("4242424242424242").unwrap();
        let expiry = Expiry::new(3, 2029).unwrap();
        // Three-digit codes collide by chance one time in a thousand, so compare over many
        // expiries: the derivations must disagree on most of them.
        let months = (1..=12).flat_map(|m| (2030..2040).map(move |y| (m, y)));
        let mut differ_key = 0;
        let mut differ_pan = 0;
        let other_pan = Pan::parse("5555555555554444").unwrap();
        for (month, year) in months {
            let e = Expiry::new(month, year).unwrap();
            differ_key +=
                usize::from(key.derive(&pan, e).expose() != other_key.derive(&pan, e).expose());
            differ_pan +=
                usize::from(key.derive(&pan, e).expose() != key.derive(&other_pan, e).expose());
        }
        assert!(differ_key > 100 && differ_pan > 100);
        let next_year = Expiry::new(3, 2030).unwrap();
        let distinct: std::collections::BTreeSet<String> = (1..=12)
            .map(|m| {
                key.derive(&pan, Expiry::new(m, 2029).unwrap())
                    .expose()
                    .to_owned()
            })
            .chain([key.derive(&pan, next_year).expose().to_owned()])
            .collect();
        assert!(distinct.len() > 8);
        assert_eq!(
            key.derive(&pan, expiry).expose(),
            key.derive(&pan, expiry).expose()
        );
    }

    #[test]
    fn cvcs_use_every_code_about_equally_often() {
        // 30,000 derivations over 1000 codes: each expected 30 times; a biased reduction
        // (e.g. reading one byte) would leave codes unused or double others.
        let key = CvcKey::new(b"distribution key").unwrap();
        let bin = Bin::parse("424242").unwrap();
        let expiry = Expiry::new(3, 2029).unwrap();
        let mut counts = vec![0_u32; 1000];
        for i in 0..30_000_u32 {
            let mut bytes = [0_u8; PAN_RANDOM_BYTES];
            bytes[12..].copy_from_slice(&i.to_be_bytes());
            let cvc = key.derive(&Pan::generate(&bin, &bytes), expiry);
            let code: usize = cvc.expose().parse().unwrap();
            counts[code] += 1;
        }
        let unused = counts.iter().filter(|c| **c == 0).count();
        let max = counts.iter().max().copied().unwrap();
        assert_eq!(unused, 0);
        assert!(max < 70, "a code came up {max} times");
    }

    #[test]
    fn the_cvc_check_skips_an_absent_cvc_and_compares_a_presented_one() {
        let key = CvcKey::new(b"check key").unwrap();
        let pan = Pan::parse("4242424242424242").unwrap();
        let expiry = Expiry::new(3, 2029).unwrap();
        let right = key.derive(&pan, expiry);
        let wrong = format!("{:03}", (right.expose().parse::<u32>().unwrap() + 1) % 1000);
        assert_eq!(key.check(&pan, expiry, None), CvcCheck::NotPresented);
        assert_eq!(
            key.check(&pan, expiry, Some(right.expose())),
            CvcCheck::Matches
        );
        assert_eq!(key.check(&pan, expiry, Some(&wrong)), CvcCheck::Mismatch);
        assert_eq!(key.check(&pan, expiry, Some("")), CvcCheck::Mismatch);
        assert!(right.matches(right.expose()));
        assert!(!right.matches(&format!("{}0", right.expose())));
    }

    #[test]
    fn an_empty_cvc_key_is_refused_and_no_secret_shows_in_debug() {
        assert_eq!(CvcKey::new(b"").unwrap_err(), PanError::EmptyCvcKey);
        let key = CvcKey::new(b"super secret key").unwrap();
        assert_eq!(format!("{key:?}"), "CvcKey([REDACTED])");
        let pan = Pan::parse("4242424242424242").unwrap();
        let cvc = key.derive(&pan, Expiry::new(3, 2029).unwrap());
        assert_eq!(format!("{cvc:?}"), "Cvc([REDACTED])");
    }

    #[test]
    fn constant_time_equality_is_plain_equality_of_bytes() {
        let cases: [(&[u8], &[u8], bool); 6] = [
            (b"123", b"123", true),
            (b"", b"", true),
            (b"123", b"124", false),
            (b"123", b"023", false),
            (b"123", b"12", false),
            (b"12", b"123", false),
        ];
        for (a, b, equal) in cases {
            assert_eq!(constant_time_eq(a, b), equal, "{a:?} {b:?}");
        }
    }

    #[test]
    fn errors_say_what_is_wrong_without_quoting_the_input() {
        for err in [
            PanError::InvalidBin,
            PanError::InvalidPan,
            PanError::InvalidExpiry,
            PanError::InvalidValidity,
            PanError::EmptyCvcKey,
        ] {
            let message = err.to_string();
            assert!(!message.is_empty());
            assert!(!message.contains("4242"));
        }
    }
}
