//! KYC rules as pure functions, with the clock passed in: input validation, the automated
//! checks and the decision they lead to, the application state machine, and the tier limits
//! behind [`Compliance`](super::Compliance). No I/O here; the service reads the facts, runs
//! these, and stores what they say.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::platform::config::{TierLimits, TierSettings};
pub use crate::platform::error::FieldError;
use crate::platform::ids::define_id;
use crate::platform::money::Money;

define_id!(CustomerId, CustomerIdKind, "cus", "customer");
define_id!(ApplicationId, ApplicationIdKind, "kyc", "application");

// ----- input validation ------------------------------------------------------------------------

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

// ----- automated checks ------------------------------------------------------------------------

/// The checks run on every submission, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckName {
    RequiredData,
    Age,
    DocumentFormat,
    DocumentExpiry,
    DuplicateIdentity,
    HighRiskCountry,
    Sanctions,
}

/// A check's result. `Missing`: data needed for the requested tier is absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckResult {
    Passed,
    Failed,
    Review,
    Missing,
}

/// One check as run: the result, a stable code when it did not pass, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Check {
    pub name: CheckName,
    pub result: CheckResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    pub detail: String,
}

impl Check {
    fn passed(name: CheckName, detail: impl Into<String>) -> Self {
        Self {
            name,
            result: CheckResult::Passed,
            code: None,
            detail: detail.into(),
        }
    }

    fn not_passed(
        name: CheckName,
        result: CheckResult,
        code: &str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            name,
            result,
            code: Some(code.to_owned()),
            detail: detail.into(),
        }
    }
}

/// What sanctions screening found, as the checks need it.
#[derive(Debug, Clone, PartialEq)]
pub enum ScreeningOutcome {
    /// No list is loaded: screening cannot clear anyone, so the application goes to review.
    NoList,
    /// Nothing at or above the threshold among `screened` entries.
    Clear { screened: usize, best: Option<f64> },
    /// A strong match: never auto-approved.
    Strong {
        name: String,
        score: f64,
        list: String,
        reference: String,
    },
}

/// Everything the checks look at, read by the service.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub today: NaiveDate,
    pub requested_tier: u8,
    pub date_of_birth: NaiveDate,
    pub country: &'a str,
    pub has_address: bool,
    pub document_type: DocumentType,
    /// Normalised.
    pub document_number: &'a str,
    pub document_country: &'a str,
    pub document_expiry: Option<NaiveDate>,
    pub minimum_age: u32,
    pub high_risk_countries: &'a [String],
    /// Another customer of the same partner with the same document.
    pub duplicate_of: Option<CustomerId>,
    pub screening: ScreeningOutcome,
}

/// Runs every automated check; one result per [`CheckName`], in order.
pub fn run_checks(f: &Facts<'_>) -> Vec<Check> {
    let mut checks = Vec::with_capacity(7);

    let mut missing = Vec::new();
    if f.requested_tier >= 2 {
        if !f.has_address {
            missing.push("address");
        }
        if f.document_expiry.is_none() {
            missing.push("document_expiry");
        }
    }
    checks.push(if missing.is_empty() {
        Check::passed(
            CheckName::RequiredData,
            format!("data for tier {} present and well-formed", f.requested_tier),
        )
    } else {
        Check::not_passed(
            CheckName::RequiredData,
            CheckResult::Missing,
            "data_missing",
            format!("tier {} needs: {}", f.requested_tier, missing.join(", ")),
        )
    });

    let age = age_on(f.date_of_birth, f.today);
    let minimum = i32::try_from(f.minimum_age).unwrap_or(i32::MAX);
    checks.push(if age >= minimum {
        Check::passed(
            CheckName::Age,
            format!("{age} years old, at least {minimum}"),
        )
    } else {
        Check::not_passed(
            CheckName::Age,
            CheckResult::Failed,
            "underage",
            format!("{age} years old, under the minimum of {minimum}"),
        )
    });

    checks.push(if f.document_type.accepts(f.document_number) {
        Check::passed(
            CheckName::DocumentFormat,
            format!(
                "{} number has the expected format",
                f.document_type.as_str()
            ),
        )
    } else {
        Check::not_passed(
            CheckName::DocumentFormat,
            CheckResult::Failed,
            "document_number_invalid",
            format!(
                "a {} number must be {}",
                f.document_type.as_str(),
                f.document_type.format_rule()
            ),
        )
    });

    checks.push(match f.document_expiry {
        Some(expiry) if expiry < f.today => Check::not_passed(
            CheckName::DocumentExpiry,
            CheckResult::Failed,
            "document_expired",
            format!("the document expired on {expiry}"),
        ),
        Some(expiry) => Check::passed(CheckName::DocumentExpiry, format!("valid until {expiry}")),
        None => Check::passed(CheckName::DocumentExpiry, "no expiry date given"),
    });

    checks.push(match f.duplicate_of {
        Some(other) => Check::not_passed(
            CheckName::DuplicateIdentity,
            CheckResult::Review,
            "duplicate_identity",
            format!("the same document is registered for customer {other}"),
        ),
        None => Check::passed(
            CheckName::DuplicateIdentity,
            "no other customer has this document",
        ),
    });

    let risky: Vec<&str> = [f.country, f.document_country]
        .into_iter()
        .filter(|c| f.high_risk_countries.iter().any(|h| h == c))
        .collect();
    checks.push(if risky.is_empty() {
        Check::passed(CheckName::HighRiskCountry, "no high-risk country")
    } else {
        let mut risky = risky;
        risky.dedup();
        Check::not_passed(
            CheckName::HighRiskCountry,
            CheckResult::Review,
            "high_risk_country",
            format!("high-risk country: {}", risky.join(", ")),
        )
    });

    checks.push(sanctions_check(&f.screening));
    checks
}

/// The sanctions check alone, as a re-screening runs it.
pub fn run_checks_sanctions_only(screening: &ScreeningOutcome) -> Vec<Check> {
    vec![sanctions_check(screening)]
}

fn sanctions_check(screening: &ScreeningOutcome) -> Check {
    match screening {
        ScreeningOutcome::NoList => Check::not_passed(
            CheckName::Sanctions,
            CheckResult::Review,
            "screening_unavailable",
            "no sanctions list is loaded; a person must screen this customer",
        ),
        ScreeningOutcome::Clear { screened, best } => Check::passed(
            CheckName::Sanctions,
            match best {
                Some(best) => {
                    format!("no strong match among {screened} list entries (best {best:.2})")
                }
                None => format!("no match among {screened} list entries"),
            },
        ),
        ScreeningOutcome::Strong {
            name,
            score,
            list,
            reference,
        } => Check::not_passed(
            CheckName::Sanctions,
            CheckResult::Review,
            "sanctions_match",
            format!("matches {name} ({list} {reference}) with score {score:.2}"),
        ),
    }
}

/// The state of an application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    AwaitingDocuments,
    Approved,
    Rejected,
    Review,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::AwaitingDocuments => "awaiting_documents",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Review => "review",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::AwaitingDocuments,
            Self::Approved,
            Self::Rejected,
            Self::Review,
        ]
        .into_iter()
        .find(|s| s.as_str() == value)
    }

    /// A `status` filter of a request.
    pub fn from_request(value: &str) -> Result<Self, FieldError> {
        Self::parse(value).ok_or_else(|| {
            FieldError::new(
                "status",
                "must be pending, awaiting_documents, approved, rejected or review",
            )
        })
    }

    /// The state machine: `pending -> approved | rejected | review | awaiting_documents`,
    /// `awaiting_documents -> pending` (the missing data arrived), `review -> approved |
    /// rejected`. Approved and rejected are final.
    pub fn can_become(self, next: Status) -> bool {
        use Status::{Approved, AwaitingDocuments, Pending, Rejected, Review};
        matches!(
            (self, next),
            (Pending, Approved | Rejected | Review | AwaitingDocuments)
                | (AwaitingDocuments, Pending)
                | (Review, Approved | Rejected)
        )
    }

    /// Whether the application is still open (at most one per customer).
    pub fn is_open(self) -> bool {
        matches!(self, Self::Pending | Self::AwaitingDocuments | Self::Review)
    }
}

/// Where the automated checks leave an application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub status: Status,
    /// Set when approved.
    pub granted_tier: Option<u8>,
    /// The rule that decided (`underage`, `sanctions_match`, `document_review`, ...).
    pub code: String,
    pub reason: String,
    /// Data to send for `awaiting_documents`.
    pub missing: Vec<String>,
}

/// The decision the checks lead to. Precedence: a failed check rejects (no point asking for
/// more data from someone who cannot be accepted); then missing data waits for documents;
/// then anything for review goes to review; a tier-2 request always needs a person to review
/// the document; otherwise tier 1 is approved automatically.
pub fn decide(requested_tier: u8, checks: &[Check]) -> Decision {
    let first = |result: CheckResult| checks.iter().find(|c| c.result == result);
    if let Some(failed) = first(CheckResult::Failed) {
        return Decision {
            status: Status::Rejected,
            granted_tier: None,
            code: failed.code.clone().unwrap_or_else(|| "check_failed".into()),
            reason: failed.detail.clone(),
            missing: Vec::new(),
        };
    }
    if let Some(missing) = first(CheckResult::Missing) {
        let fields = missing
            .detail
            .split_once(": ")
            .map(|(_, list)| list.split(", ").map(str::to_owned).collect())
            .unwrap_or_default();
        return Decision {
            status: Status::AwaitingDocuments,
            granted_tier: None,
            code: "data_missing".into(),
            reason: missing.detail.clone(),
            missing: fields,
        };
    }
    let reviews: Vec<&Check> = checks
        .iter()
        .filter(|c| c.result == CheckResult::Review)
        .collect();
    if let Some(first) = reviews.first() {
        return Decision {
            status: Status::Review,
            granted_tier: None,
            code: first.code.clone().unwrap_or_else(|| "review".into()),
            reason: reviews
                .iter()
                .map(|c| c.detail.as_str())
                .collect::<Vec<_>>()
                .join("; "),
            missing: Vec::new(),
        };
    }
    if requested_tier >= 2 {
        return Decision {
            status: Status::Review,
            granted_tier: None,
            code: "document_review".into(),
            reason: "tier 2 needs a person to review the document".into(),
            missing: Vec::new(),
        };
    }
    Decision {
        status: Status::Approved,
        granted_tier: Some(1),
        code: "checks_passed".into(),
        reason: "every automated check passed".into(),
        missing: Vec::new(),
    }
}

// ----- tiers and limits --------------------------------------------------------------------------

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
