//! Input validation: request fields (names, dates, countries, email, external ids), the
//! address, and identity documents (their kinds and numbers).

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use crate::platform::error::FieldError;

/// The oldest date of birth accepted: anything earlier is a typo, not a customer.
const EARLIEST_BIRTH: (i32, u32, u32) = (1900, 1, 1);

/// A name: 1 to 100 characters after trimming, no control characters.
pub fn validate_name(field: &'static str, value: &str) -> Result<String, FieldError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if value.chars().count() > 100 {
        return Err(FieldError::new(field, "must be at most 100 characters"));
    }
    if value.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(value.to_owned())
}

/// A calendar date written exactly `YYYY-MM-DD`.
pub fn parse_date(field: &'static str, value: &str) -> Result<NaiveDate, FieldError> {
    let well_formed = value.len() == 10
        && value.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    well_formed
        .then(|| NaiveDate::parse_from_str(value, "%Y-%m-%d").ok())
        .flatten()
        .ok_or_else(|| FieldError::new(field, "must be a date written YYYY-MM-DD"))
}

/// A date of birth: a real date, not in the future, not before 1900.
pub fn validate_date_of_birth(value: &str, today: NaiveDate) -> Result<NaiveDate, FieldError> {
    let date = parse_date("date_of_birth", value)?;
    if date > today {
        return Err(FieldError::new(
            "date_of_birth",
            "must not be in the future",
        ));
    }
    let (y, m, d) = EARLIEST_BIRTH;
    if NaiveDate::from_ymd_opt(y, m, d).is_some_and(|earliest| date < earliest) {
        return Err(FieldError::new(
            "date_of_birth",
            "must not be before 1900-01-01",
        ));
    }
    Ok(date)
}

/// An ISO 3166-1 alpha-2 country code, upper case (`DE`, `US`).
pub fn validate_country(field: &'static str, value: &str) -> Result<String, FieldError> {
    let ok = value.len() == 2
        && value.bytes().all(|b| b.is_ascii_uppercase())
        && value.parse::<iso_country::Country>().is_ok();
    if ok {
        Ok(value.to_owned())
    } else {
        Err(FieldError::new(
            field,
            "must be an ISO 3166-1 alpha-2 country code in upper case, e.g. DE",
        ))
    }
}

/// An email address as stored and searched: trimmed and lower-cased.
pub fn normalise_email(value: &str) -> Result<String, FieldError> {
    let email = value.trim().to_lowercase();
    if crate::kernel::valid_email(&email) {
        Ok(email)
    } else {
        Err(FieldError::new("email", "must be an email address"))
    }
}

/// The partner's own reference for a customer: 1 to 128 visible ASCII characters.
pub fn validate_external_id(value: &str) -> Result<String, FieldError> {
    let ok = !value.is_empty() && value.len() <= 128 && value.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(value.to_owned())
    } else {
        Err(FieldError::new(
            "external_id",
            "must be 1-128 visible ASCII characters without spaces",
        ))
    }
}

/// A postal address. Stored encrypted, as one value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Address {
    pub line1: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// ISO 3166-1 alpha-2.
    pub country: String,
}

impl Address {
    /// Trims every part and checks it; `address.<part>` names a bad one.
    pub fn validated(self) -> Result<Address, FieldError> {
        let part = |field: &'static str, v: &str, max: usize| -> Result<String, FieldError> {
            let v = v.trim();
            if v.is_empty() || v.chars().count() > max || v.chars().any(char::is_control) {
                Err(FieldError::new(
                    field,
                    format!("must be 1-{max} characters without control characters"),
                ))
            } else {
                Ok(v.to_owned())
            }
        };
        Ok(Address {
            line1: part("address.line1", &self.line1, 200)?,
            line2: self
                .line2
                .map(|v| part("address.line2", &v, 200))
                .transpose()?,
            city: part("address.city", &self.city, 100)?,
            postal_code: part("address.postal_code", &self.postal_code, 20)?,
            region: self
                .region
                .map(|v| part("address.region", &v, 100))
                .transpose()?,
            country: validate_country("address.country", &self.country)?,
        })
    }
}

// ----- documents -------------------------------------------------------------------------------

/// An identity document's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DocumentType {
    Passport,
    NationalId,
    DrivingLicence,
    ResidencePermit,
}

impl DocumentType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passport => "passport",
            Self::NationalId => "national_id",
            Self::DrivingLicence => "driving_licence",
            Self::ResidencePermit => "residence_permit",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [
            Self::Passport,
            Self::NationalId,
            Self::DrivingLicence,
            Self::ResidencePermit,
        ]
        .into_iter()
        .find(|t| t.as_str() == value)
    }

    /// The accepted shape of a normalised number, for messages.
    pub fn format_rule(self) -> &'static str {
        match self {
            Self::Passport => "6-9 letters and digits with at least one digit (ICAO 9303)",
            Self::NationalId => "5-20 letters and digits with at least one digit",
            Self::DrivingLicence => "5-20 letters and digits with at least one digit",
            Self::ResidencePermit => "6-12 letters and digits with at least one digit",
        }
    }

    /// Whether a normalised number has this kind's shape.
    pub fn accepts(self, number: &str) -> bool {
        let (min, max) = match self {
            Self::Passport => (6, 9),
            Self::NationalId | Self::DrivingLicence => (5, 20),
            Self::ResidencePermit => (6, 12),
        };
        (min..=max).contains(&number.len())
            && number
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
            && number.bytes().any(|b| b.is_ascii_digit())
    }
}

/// A document number as compared and hashed: upper case, without spaces and hyphens (which
/// people type inconsistently).
pub fn normalise_document_number(raw: &str) -> String {
    raw.chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .flat_map(char::to_uppercase)
        .collect()
}

/// The last four characters of a document number, the most any response shows.
pub fn last4(number: &str) -> String {
    let chars: Vec<char> = number.chars().collect();
    chars[chars.len().saturating_sub(4)..].iter().collect()
}

/// Completed years between `born` and `on`.
pub fn age_on(born: NaiveDate, on: NaiveDate) -> i32 {
    let mut years = on.year() - born.year();
    if (on.month(), on.day()) < (born.month(), born.day()) {
        years -= 1;
    }
    years
}
