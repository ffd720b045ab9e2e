//! The automated checks run on every submission, the application state machine, and the
//! decision the checks lead to.

use crate::platform::error::FieldError;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{CustomerId, DocumentType, age_on};

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
