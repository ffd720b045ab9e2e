//! A card's spending controls: the body of `PUT /v1/cards/{id}/controls` (and of `controls`
//! in `POST /v1/cards`), validated once into typed [`Controls`], the view sent back, and the
//! calendar windows the limits count in.
//!
//! # Semantics
//!
//! - `PUT` replaces the controls whole: a field left out is cleared, and `enabled` left out
//!   is `true`, so the seed shape `{"limits": {"daily": 1000.00, "monthly": 5000.00}}` works
//!   for `PUT` and at creation alike.
//! - Merchant categories: a blocked group (by name) or blocked MCC declines. When any
//!   allow-list is set (`allowed_categories` or `allowed_mccs`), the MCC must be in one of the
//!   allowed groups or be an allowed MCC. Blocked wins over allowed. An empty list is the same
//!   as no list (an empty allow-list would otherwise decline everything, which `enabled:
//!   false` says plainly).
//! - Countries (ISO 3166-1 alpha-2, upper case) work the same way.
//! - A list may not name a value that its opposite list names, and an allowed MCC may not lie
//!   in a blocked group (blocked would win, so the request contradicts itself). An allowed
//!   group that partly overlaps a blocked one (`transport` and `travel` share 4111) is fine:
//!   the shared codes are blocked.
//! - Limits are amounts in the card's currency, strictly positive, with at most the
//!   currency's decimals (never rounded); `daily_count` is a whole number from 1. An
//!   authorization of amount A is declined when what was already spent in the window plus A
//!   exceeds the limit; reaching the limit exactly is allowed.
//! - A limit on a window may not exceed the limit of a window that always contains it
//!   (`per_authorization` <= every other, `daily` <= `weekly`, `monthly`, `yearly`,
//!   `lifetime`; `monthly` <= `yearly`; every window <= `lifetime`): the larger one could never
//!   be reached, so the request is a mistake. `weekly` is not compared with `monthly` or
//!   `yearly`: an ISO week can straddle two months or two years, so a weekly limit above the
//!   monthly one can bind (spend the month's limit on the 31st and more on the 1st).
//!
//! # Windows
//!
//! Calendar windows in UTC: the day from 00:00, the ISO week from Monday 00:00, the month from
//! the 1st 00:00, the year from 1 January 00:00; lifetime from the beginning
//! ([`window_start`]).

use std::collections::BTreeSet;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Days, NaiveDate, NaiveTime, Utc};
use iso_country::Country;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::categories::{Category, CategoryTable, Mcc, MccInput};
use crate::platform::error::FieldError;
use crate::platform::money::{Amount, Currency, Money};

/// Most category groups limits may be set on.
pub const MAX_CATEGORY_LIMITS: usize = 32;

/// Longest list a request may carry in any of its fields: more than every MCC group and every
/// country, small enough that validating a request stays cheap.
pub const MAX_LIST_LEN: usize = 1000;

// ---------------------------------------------------------------------------------------------
// Windows
// ---------------------------------------------------------------------------------------------

/// A window spending limits are counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    /// The UTC calendar day.
    Day,
    /// The ISO week, Monday 00:00 UTC to Sunday 24:00 UTC.
    Week,
    /// The UTC calendar month.
    Month,
    /// The UTC calendar year.
    Year,
    /// Everything since the card was issued.
    Lifetime,
}

impl Window {
    /// Every window, shortest first: the order limits are checked in.
    pub const ALL: [Window; 5] = [
        Window::Day,
        Window::Week,
        Window::Month,
        Window::Year,
        Window::Lifetime,
    ];

    /// The stable name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
            Self::Year => "year",
            Self::Lifetime => "lifetime",
        }
    }
}

/// The first instant of the `window` that contains `now`: midnight UTC of the day, of the
/// Monday of the ISO week, of the 1st of the month, of 1 January; for `Lifetime` the Unix
/// epoch, which is before any card. Spend is counted from this instant (inclusive) to `now`.
pub fn window_start(window: Window, now: DateTime<Utc>) -> DateTime<Utc> {
    let date = now.date_naive();
    let start = match window {
        Window::Day => Some(date),
        Window::Week => {
            let since_monday = date.weekday().num_days_from_monday();
            date.checked_sub_days(Days::new(u64::from(since_monday)))
        }
        Window::Month => date.with_day(1),
        Window::Year => date.with_ordinal(1),
        Window::Lifetime => return DateTime::UNIX_EPOCH,
    };
    // The first of a month or year always exists; only a week starting before chrono's first
    // date has none, and starting earlier counts more spend, never less.
    start
        .unwrap_or(NaiveDate::MIN)
        .and_time(NaiveTime::MIN)
        .and_utc()
}

// ---------------------------------------------------------------------------------------------
// The request
// ---------------------------------------------------------------------------------------------

/// The body of `PUT /v1/cards/{id}/controls`, and `controls` in `POST /v1/cards`, as sent.
/// [`ControlsRequest::validate`] turns it into [`Controls`].
#[derive(Debug, Clone, Default, PartialEq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ControlsRequest {
    /// `false` declines every authorization (`card_disabled`); `true` when left out.
    pub enabled: Option<bool>,
    /// Named merchant category groups (`grocery`, `travel`, ...) the card may be used at.
    pub allowed_categories: Option<Vec<String>>,
    /// Named merchant category groups the card is declined at.
    pub blocked_categories: Option<Vec<String>>,
    /// Merchant category codes the card may be used at: four-digit strings (or integers).
    #[schema(value_type = Option<Vec<String>>)]
    pub allowed_mccs: Option<Vec<MccInput>>,
    /// Merchant category codes the card is declined at.
    #[schema(value_type = Option<Vec<String>>)]
    pub blocked_mccs: Option<Vec<MccInput>>,
    /// ISO 3166-1 alpha-2 codes of the merchant countries the card may be used in.
    pub allowed_countries: Option<Vec<String>>,
    /// ISO 3166-1 alpha-2 codes of the merchant countries the card is declined in.
    pub blocked_countries: Option<Vec<String>>,
    /// Spending limits in the card's currency.
    pub limits: Option<LimitsRequest>,
}

/// `limits` of a [`ControlsRequest`]: amounts as decimal strings or exact JSON numbers in the
/// card's currency, and a count of authorizations per UTC day.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsRequest {
    /// Largest single authorization.
    pub per_authorization: Option<Amount>,
    /// Most spent per UTC calendar day.
    pub daily: Option<Amount>,
    /// Most spent per ISO week (Monday 00:00 UTC).
    pub weekly: Option<Amount>,
    /// Most spent per UTC calendar month.
    pub monthly: Option<Amount>,
    /// Most spent per UTC calendar year.
    pub yearly: Option<Amount>,
    /// Most spent over the card's life.
    pub lifetime: Option<Amount>,
    /// Most approved authorizations per UTC calendar day.
    #[schema(value_type = Option<u32>, minimum = 1)]
    pub daily_count: Option<serde_json::Number>,
    /// Limits on what is spent at the merchants of a named category group (`restaurants`,
    /// `travel`, ...), counted apart from the card's own: the same fields, by group name (at
    /// most [`MAX_CATEGORY_LIMITS`] groups; no nesting).
    #[schema(value_type = Option<Object>)]
    pub categories: Option<std::collections::BTreeMap<String, LimitsRequest>>,
}

/// Names fields as the client wrote them: `controls.limits.daily` inside a card, or
/// `limits.daily` when the controls are the whole body.
struct Fields<'a> {
    prefix: &'a str,
}

impl Fields<'_> {
    fn name(&self, field: &str) -> String {
        if self.prefix.is_empty() {
            field.to_owned()
        } else {
            format!("{}.{field}", self.prefix)
        }
    }

    fn item(&self, field: &str, index: usize) -> String {
        self.name(&format!("{field}[{index}]"))
    }

    fn error(&self, field: &str, message: impl Into<String>) -> FieldError {
        FieldError::new(self.name(field), message)
    }
}

impl ControlsRequest {
    /// Validates the request for a card in `currency`, against the merchant category
    /// `categories` (the shipped table). Field names in errors start with `prefix`
    /// (`"controls"` at card creation, `""` for `PUT .../controls`).
    ///
    /// Checked in field order, so the error names the first bad field: each list (its
    /// length, then each entry, then its contradictions with the lists before it), then the
    /// limits (every amount in field order, then `daily_count`, then each limit's order
    /// against the windows that contain it). See the module docs for the rules.
    pub fn validate(
        &self,
        currency: Currency,
        categories: &CategoryTable,
        prefix: &str,
    ) -> Result<Controls, FieldError> {
        let fields = Fields { prefix };

        let allowed_categories = category_list(
            &fields,
            "allowed_categories",
            &self.allowed_categories,
            categories,
        )?;
        let blocked_categories = category_list(
            &fields,
            "blocked_categories",
            &self.blocked_categories,
            categories,
        )?;
        for (index, name) in listed(&self.blocked_categories) {
            if allowed_categories.iter().any(|c| c.name() == name) {
                return Err(FieldError::new(
                    fields.item("blocked_categories", index),
                    format!("\"{name}\" is also in allowed_categories"),
                ));
            }
        }

        let allowed_mccs = mcc_list(&fields, "allowed_mccs", &self.allowed_mccs)?;
        for (index, mcc) in listed(&self.allowed_mccs) {
            if let Some(category) = mcc
                .to_mcc()
                .and_then(|mcc| blocked_categories.iter().find(|c| c.contains(mcc)))
            {
                return Err(FieldError::new(
                    fields.item("allowed_mccs", index),
                    format!(
                        "is in blocked category \"{}\"; blocked wins, so it could never be used",
                        category.name()
                    ),
                ));
            }
        }
        let blocked_mccs = mcc_list(&fields, "blocked_mccs", &self.blocked_mccs)?;
        for (index, mcc) in listed(&self.blocked_mccs) {
            if mcc.to_mcc().is_some_and(|mcc| allowed_mccs.contains(&mcc)) {
                return Err(FieldError::new(
                    fields.item("blocked_mccs", index),
                    "is also in allowed_mccs",
                ));
            }
        }

        let allowed_countries =
            country_list(&fields, "allowed_countries", &self.allowed_countries)?;
        let blocked_countries =
            country_list(&fields, "blocked_countries", &self.blocked_countries)?;
        for (index, code) in listed(&self.blocked_countries) {
            if parse_country(code).is_some_and(|c| allowed_countries.contains(&c)) {
                return Err(FieldError::new(
                    fields.item("blocked_countries", index),
                    "is also in allowed_countries",
                ));
            }
        }

        let limits = match &self.limits {
            None => Limits::default(),
            Some(limits) => limits.validate(&fields, "limits", currency)?,
        };
        let category_limits = match self.limits.as_ref().and_then(|l| l.categories.as_ref()) {
            None => Vec::new(),
            Some(by_name) => category_limits(&fields, by_name, currency, categories)?,
        };

        Ok(Controls {
            enabled: self.enabled.unwrap_or(true),
            allowed_categories,
            blocked_categories,
            allowed_mccs,
            blocked_mccs,
            allowed_countries,
            blocked_countries,
            limits,
            category_limits,
        })
    }
}

/// `limits.categories`: each a known group, each group's limits valid on their own.
fn category_limits(
    fields: &Fields<'_>,
    by_name: &std::collections::BTreeMap<String, LimitsRequest>,
    currency: Currency,
    categories: &CategoryTable,
) -> Result<Vec<(Category, Limits)>, FieldError> {
    if by_name.len() > MAX_CATEGORY_LIMITS {
        return Err(fields.error(
            "limits.categories",
            format!("has at most {MAX_CATEGORY_LIMITS} groups"),
        ));
    }
    let mut resolved = Vec::with_capacity(by_name.len());
    for (name, request) in by_name {
        let root = format!("limits.categories.{name}");
        let category = categories.get(name).map_err(|e| {
            fields.error(
                &root,
                format!("{e}; known categories: {}", categories.names().join(", ")),
            )
        })?;
        if request.categories.is_some() {
            return Err(fields.error(&format!("{root}.categories"), "category limits do not nest"));
        }
        resolved.push((category.clone(), request.validate(fields, &root, currency)?));
    }
    Ok(resolved)
}

/// The entries of an optional list with their indexes (none when absent).
fn listed<T>(list: &Option<Vec<T>>) -> impl Iterator<Item = (usize, &T)> {
    list.iter().flatten().enumerate()
}

/// Refuses a list longer than [`MAX_LIST_LEN`].
fn check_len<T>(fields: &Fields<'_>, field: &str, list: &Option<Vec<T>>) -> Result<(), FieldError> {
    match list {
        Some(list) if list.len() > MAX_LIST_LEN => {
            Err(fields.error(field, format!("has at most {MAX_LIST_LEN} entries")))
        }
        _ => Ok(()),
    }
}

/// A list of category names resolved against the table, by name without duplicates.
fn category_list(
    fields: &Fields<'_>,
    field: &str,
    names: &Option<Vec<String>>,
    categories: &CategoryTable,
) -> Result<Vec<Category>, FieldError> {
    check_len(fields, field, names)?;
    let mut resolved: Vec<Category> = Vec::new();
    for (index, name) in listed(names) {
        let category = categories.get(name).map_err(|e| {
            FieldError::new(
                fields.item(field, index),
                format!("{e}; known categories: {}", categories.names().join(", ")),
            )
        })?;
        if !resolved.iter().any(|c| c.name() == category.name()) {
            resolved.push(category.clone());
        }
    }
    resolved.sort_by(|a, b| a.name().cmp(b.name()));
    Ok(resolved)
}

/// A list of MCCs, each four digits `0000`-`9999` (or an integer 0-9999).
fn mcc_list(
    fields: &Fields<'_>,
    field: &str,
    mccs: &Option<Vec<MccInput>>,
) -> Result<BTreeSet<Mcc>, FieldError> {
    check_len(fields, field, mccs)?;
    listed(mccs)
        .map(|(index, input)| {
            input.to_mcc().ok_or_else(|| {
                FieldError::new(
                    fields.item(field, index),
                    "is not a merchant category code: four digits from \"0000\" to \"9999\"",
                )
            })
        })
        .collect()
}

/// An ISO 3166-1 alpha-2 code in upper case that `iso_country` knows (its parser takes "" as
/// `Unspecified`, hence the length check).
pub fn parse_country(code: &str) -> Option<Country> {
    if code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase()) {
        Country::from_str(code)
            .ok()
            .filter(|c| *c != Country::Unspecified)
    } else {
        None
    }
}

/// A list of countries, each an upper-case ISO 3166-1 alpha-2 code.
fn country_list(
    fields: &Fields<'_>,
    field: &str,
    codes: &Option<Vec<String>>,
) -> Result<BTreeSet<Country>, FieldError> {
    check_len(fields, field, codes)?;
    listed(codes)
        .map(|(index, code)| {
            parse_country(code).ok_or_else(|| {
                FieldError::new(
                    fields.item(field, index),
                    "is not an ISO 3166-1 alpha-2 country code in upper case, like \"DE\"",
                )
            })
        })
        .collect()
}

/// The limit fields in check order, with the windows whose limits they may not exceed
/// (windows that always contain theirs; see the module docs).
const LIMIT_ORDER: [(&str, &[&str]); 6] = [
    (
        "per_authorization",
        &["daily", "weekly", "monthly", "yearly", "lifetime"],
    ),
    ("daily", &["weekly", "monthly", "yearly", "lifetime"]),
    ("weekly", &["lifetime"]),
    ("monthly", &["yearly", "lifetime"]),
    ("yearly", &["lifetime"]),
    ("lifetime", &[]),
];

impl LimitsRequest {
    /// The raw amount of the limit called `name` (one of [`LIMIT_ORDER`]'s).
    fn amount(&self, name: &str) -> Option<&Amount> {
        match name {
            "per_authorization" => self.per_authorization.as_ref(),
            "daily" => self.daily.as_ref(),
            "weekly" => self.weekly.as_ref(),
            "monthly" => self.monthly.as_ref(),
            "yearly" => self.yearly.as_ref(),
            "lifetime" => self.lifetime.as_ref(),
            _ => None,
        }
    }

    /// The limits, with field names under `root` (`limits`, or `limits.categories.<group>`).
    fn validate(
        &self,
        fields: &Fields<'_>,
        root: &str,
        currency: Currency,
    ) -> Result<Limits, FieldError> {
        // Every amount first, in field order, so an order error never hides a malformed one.
        let money = |name: &str| -> Result<Option<Money>, FieldError> {
            self.amount(name)
                .map(|amount| {
                    Money::parse_positive(amount, currency)
                        .map_err(|e| FieldError::amount(fields.name(&format!("{root}.{name}")), &e))
                })
                .transpose()
        };
        let limits = Limits {
            per_authorization: money("per_authorization")?,
            daily: money("daily")?,
            weekly: money("weekly")?,
            monthly: money("monthly")?,
            yearly: money("yearly")?,
            lifetime: money("lifetime")?,
            daily_count: self.daily_count(fields, root)?,
        };
        for (inner, outers) in LIMIT_ORDER {
            let Some(inner_limit) = limits.named(inner) else {
                continue;
            };
            for outer in outers {
                if let Some(outer_limit) = limits.named(outer)
                    && inner_limit.minor() > outer_limit.minor()
                {
                    return Err(fields.error(
                        &format!("{root}.{inner}"),
                        format!(
                            "must not exceed {root}.{outer} ({outer_limit}): the {outer} \
                             window always contains the {inner} one, so this limit could \
                             never be reached"
                        ),
                    ));
                }
            }
        }
        Ok(limits)
    }

    fn daily_count(&self, fields: &Fields<'_>, root: &str) -> Result<Option<u32>, FieldError> {
        let Some(number) = &self.daily_count else {
            return Ok(None);
        };
        number
            .as_u64()
            .and_then(|count| u32::try_from(count).ok())
            .filter(|count| *count > 0)
            .map(Some)
            .ok_or_else(|| {
                fields.error(
                    &format!("{root}.daily_count"),
                    format!("must be a whole number from 1 to {}", u32::MAX),
                )
            })
    }
}

// ---------------------------------------------------------------------------------------------
// Typed controls
// ---------------------------------------------------------------------------------------------

/// A card's validated spending limits.
///
/// Invariant: every amount is positive and in the card's currency, and no limit exceeds the
/// limit of a window that contains its own (module docs); `daily_count` is at least 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    per_authorization: Option<Money>,
    daily: Option<Money>,
    weekly: Option<Money>,
    monthly: Option<Money>,
    yearly: Option<Money>,
    lifetime: Option<Money>,
    daily_count: Option<u32>,
}

impl Limits {
    /// Largest single authorization, if limited.
    pub fn per_authorization(&self) -> Option<Money> {
        self.per_authorization
    }

    /// The limit on spend in `window`, if any.
    pub fn window(&self, window: Window) -> Option<Money> {
        match window {
            Window::Day => self.daily,
            Window::Week => self.weekly,
            Window::Month => self.monthly,
            Window::Year => self.yearly,
            Window::Lifetime => self.lifetime,
        }
    }

    /// Most approved authorizations per UTC day, if limited.
    pub fn daily_count(&self) -> Option<u32> {
        self.daily_count
    }

    /// The limits as responses show them.
    fn view(&self) -> LimitsView {
        let amount = |money: Option<Money>| money.map(Amount::from);
        LimitsView {
            per_authorization: amount(self.per_authorization),
            daily: amount(self.daily),
            weekly: amount(self.weekly),
            monthly: amount(self.monthly),
            yearly: amount(self.yearly),
            lifetime: amount(self.lifetime),
            daily_count: self.daily_count,
            categories: std::collections::BTreeMap::new(),
        }
    }

    /// The amount limit called `name` as in the request (`daily`, ...).
    fn named(&self, name: &str) -> Option<Money> {
        match name {
            "per_authorization" => self.per_authorization,
            "daily" => self.daily,
            "weekly" => self.weekly,
            "monthly" => self.monthly,
            "yearly" => self.yearly,
            "lifetime" => self.lifetime,
            _ => None,
        }
    }
}

/// How a merchant fares against one kind of list (categories, or countries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Screen {
    /// Neither an allow-list nor a block-list is set: nothing to check.
    NoRule,
    /// Allowed; says why (`"no block applies"`, `"allowed category grocery"`).
    Allowed(String),
    /// Declined; says why (`"blocked category gambling"`).
    Blocked(String),
}

/// A card's validated controls (see the module docs for the rules).
///
/// Invariant: built only by [`ControlsRequest::validate`] (or [`Default`]: enabled, nothing
/// restricted), so every list is valid, free of duplicates and of contradictions, and every
/// limit obeys [`Limits`]' invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Controls {
    enabled: bool,
    allowed_categories: Vec<Category>,
    blocked_categories: Vec<Category>,
    allowed_mccs: BTreeSet<Mcc>,
    blocked_mccs: BTreeSet<Mcc>,
    allowed_countries: BTreeSet<Country>,
    blocked_countries: BTreeSet<Country>,
    limits: Limits,
    /// Limits per category group, by group name.
    category_limits: Vec<(Category, Limits)>,
}

impl Default for Controls {
    /// A new card without `controls`: enabled, no list, no limit.
    fn default() -> Self {
        Controls {
            enabled: true,
            allowed_categories: Vec::new(),
            blocked_categories: Vec::new(),
            allowed_mccs: BTreeSet::new(),
            blocked_mccs: BTreeSet::new(),
            allowed_countries: BTreeSet::new(),
            blocked_countries: BTreeSet::new(),
            limits: Limits::default(),
            category_limits: Vec::new(),
        }
    }
}

impl Controls {
    /// Whether the card may be used at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The spending limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The limits of the category groups a merchant with `mcc` is in, by group name.
    pub fn category_limits_for(&self, mcc: Mcc) -> impl Iterator<Item = (&str, &Limits)> {
        self.category_limits
            .iter()
            .filter(move |(c, _)| c.contains(mcc))
            .map(|(c, l)| (c.name(), l))
    }

    /// The category rule for a merchant with `mcc`: a blocked MCC or group declines; then, if
    /// any allow-list is set, the MCC must be allowed by code or by group.
    pub fn screen_category(&self, mcc: Mcc) -> Screen {
        if self.blocked_mccs.contains(&mcc) {
            return Screen::Blocked(format!("MCC {mcc} is in blocked_mccs"));
        }
        if let Some(category) = self.blocked_categories.iter().find(|c| c.contains(mcc)) {
            return Screen::Blocked(format!(
                "MCC {mcc} is in blocked category {}",
                category.name()
            ));
        }
        let allow_list = !self.allowed_mccs.is_empty() || !self.allowed_categories.is_empty();
        if !allow_list {
            return if self.blocked_mccs.is_empty() && self.blocked_categories.is_empty() {
                Screen::NoRule
            } else {
                Screen::Allowed(format!("MCC {mcc} is not blocked"))
            };
        }
        if self.allowed_mccs.contains(&mcc) {
            return Screen::Allowed(format!("MCC {mcc} is in allowed_mccs"));
        }
        match self.allowed_categories.iter().find(|c| c.contains(mcc)) {
            Some(category) => Screen::Allowed(format!(
                "MCC {mcc} is in allowed category {}",
                category.name()
            )),
            None => Screen::Blocked(format!(
                "MCC {mcc} is in neither allowed_categories nor allowed_mccs"
            )),
        }
    }

    /// The country rule for a merchant in `country`: blocked declines; then, if an
    /// allow-list is set, the country must be on it.
    pub fn screen_country(&self, country: Country) -> Screen {
        if self.blocked_countries.contains(&country) {
            return Screen::Blocked(format!("country {country} is in blocked_countries"));
        }
        if self.allowed_countries.is_empty() {
            return if self.blocked_countries.is_empty() {
                Screen::NoRule
            } else {
                Screen::Allowed(format!("country {country} is not blocked"))
            };
        }
        if self.allowed_countries.contains(&country) {
            Screen::Allowed(format!("country {country} is in allowed_countries"))
        } else {
            Screen::Blocked(format!("country {country} is not in allowed_countries"))
        }
    }

    /// The controls as responses show them: every key present, lists sorted, amounts as
    /// strings with the currency's decimals. Sending the view back as a request gives the same
    /// controls, so it is also the form to store.
    pub fn view(&self) -> ControlsView {
        let countries = |set: &BTreeSet<Country>| {
            let mut codes: Vec<String> = set.iter().map(Country::to_string).collect();
            codes.sort();
            codes
        };
        let names = |list: &[Category]| list.iter().map(|c| c.name().to_owned()).collect();
        ControlsView {
            enabled: self.enabled,
            allowed_categories: names(&self.allowed_categories),
            blocked_categories: names(&self.blocked_categories),
            allowed_mccs: self.allowed_mccs.iter().copied().collect(),
            blocked_mccs: self.blocked_mccs.iter().copied().collect(),
            allowed_countries: countries(&self.allowed_countries),
            blocked_countries: countries(&self.blocked_countries),
            limits: LimitsView {
                categories: self
                    .category_limits
                    .iter()
                    .map(|(c, l)| (c.name().to_owned(), l.view()))
                    .collect(),
                ..self.limits.view()
            },
        }
    }
}

/// A card's controls in a response (and in storage): see [`Controls::view`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ControlsView {
    /// `false`: every authorization is declined (`card_disabled`).
    pub enabled: bool,
    /// Allowed merchant category groups, by name.
    pub allowed_categories: Vec<String>,
    /// Blocked merchant category groups, by name.
    pub blocked_categories: Vec<String>,
    /// Allowed MCCs, four-digit strings, ascending.
    #[schema(value_type = Vec<String>)]
    pub allowed_mccs: Vec<Mcc>,
    /// Blocked MCCs, four-digit strings, ascending.
    #[schema(value_type = Vec<String>)]
    pub blocked_mccs: Vec<Mcc>,
    /// Allowed merchant countries, ISO 3166-1 alpha-2, sorted.
    pub allowed_countries: Vec<String>,
    /// Blocked merchant countries, ISO 3166-1 alpha-2, sorted.
    pub blocked_countries: Vec<String>,
    /// Spending limits; `null` where none is set.
    pub limits: LimitsView,
}

/// [`Limits`] in a response: amounts as strings in the card's currency, `null` when unset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct LimitsView {
    /// Largest single authorization.
    pub per_authorization: Option<Amount>,
    /// Most spent per UTC calendar day.
    pub daily: Option<Amount>,
    /// Most spent per ISO week (Monday 00:00 UTC).
    pub weekly: Option<Amount>,
    /// Most spent per UTC calendar month.
    pub monthly: Option<Amount>,
    /// Most spent per UTC calendar year.
    pub yearly: Option<Amount>,
    /// Most spent over the card's life.
    pub lifetime: Option<Amount>,
    /// Most approved authorizations per UTC calendar day.
    pub daily_count: Option<u32>,
    /// Limits per merchant category group, by name (left out when none is set).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    #[schema(value_type = Object)]
    pub categories: std::collections::BTreeMap<String, LimitsView>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn usd() -> Currency {
        Currency::parse("USD").unwrap()
    }

    fn table() -> &'static CategoryTable {
        CategoryTable::shipped().unwrap()
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn mcc(code: u16) -> Mcc {
        Mcc::new(code).unwrap()
    }

    fn request(body: serde_json::Value) -> Result<ControlsRequest, serde_json::Error> {
        // Through text, as the HTTP extractor reads bodies: numbers keep their exact text.
        serde_json::from_str(&body.to_string())
    }

    fn controls(body: serde_json::Value) -> Result<Controls, FieldError> {
        request(body).unwrap().validate(usd(), table(), "controls")
    }

    /// The field (and code) a body is refused with.
    fn refused(body: serde_json::Value) -> (String, String) {
        let err = controls(body).unwrap_err();
        let code = crate::platform::error::Problem::code(&err).to_owned();
        (err.field.to_string(), code)
    }

    #[test]
    fn category_limits_name_known_groups_follow_the_window_rules_and_do_not_nest() {
        let ok = controls(json!({"limits": {"daily": "100.00",
            "categories": {"restaurants": {"daily": "30.00", "daily_count": 2}}}}))
        .unwrap();
        let (name, limits) = ok.category_limits_for(mcc(5812)).next().unwrap();
        assert_eq!(name, "restaurants");
        assert_eq!(limits.window(Window::Day).map(|m| m.minor()), Some(3000));
        assert_eq!(limits.daily_count(), Some(2));
        assert_eq!(ok.category_limits_for(mcc(5411)).count(), 0);
        // The view reads back as the same controls (it is the stored form).
        let view = serde_json::to_value(ok.view()).unwrap();
        assert_eq!(
            view["limits"]["categories"]["restaurants"]["daily"],
            "30.00"
        );
        assert_eq!(controls(view).unwrap(), ok);
        // Without category limits the view has no `categories` key.
        let plain = serde_json::to_value(Controls::default().view()).unwrap();
        assert!(plain["limits"].get("categories").is_none());

        let cases = [
            (
                json!({"limits": {"categories": {"casinos": {"daily": "1.00"}}}}),
                "controls.limits.categories.casinos",
            ),
            (
                json!({"limits": {"categories": {"travel": {"daily": "0"}}}}),
                "controls.limits.categories.travel.daily",
            ),
            (
                json!({"limits": {"categories": {"travel": {"daily": "20.00", "per_authorization": "30.00"}}}}),
                "controls.limits.categories.travel.per_authorization",
            ),
            (
                json!({"limits": {"categories": {"travel": {"daily_count": 0}}}}),
                "controls.limits.categories.travel.daily_count",
            ),
            (
                json!({"limits": {"categories": {"travel": {"categories": {}}}}}),
                "controls.limits.categories.travel.categories",
            ),
        ];
        for (body, field) in cases {
            assert_eq!(refused(body).0, field);
        }
        let many: serde_json::Map<String, serde_json::Value> = (0..=MAX_CATEGORY_LIMITS)
            .map(|i| (format!("g{i}"), json!({"daily": "1.00"})))
            .collect();
        assert_eq!(
            refused(json!({"limits": {"categories": many}})).0,
            "controls.limits.categories"
        );
    }

    #[test]
    fn windows_start_at_midnight_utc_of_their_calendar_unit() {
        // 2026-07-15 is a Wednesday.
        let now = at("2026-07-15T13:45:12.5Z");
        let cases = [
            (Window::Day, "2026-07-15T00:00:00Z"),
            (Window::Week, "2026-07-13T00:00:00Z"),
            (Window::Month, "2026-07-01T00:00:00Z"),
            (Window::Year, "2026-01-01T00:00:00Z"),
            (Window::Lifetime, "1970-01-01T00:00:00Z"),
        ];
        for (window, start) in cases {
            assert_eq!(window_start(window, now), at(start), "{}", window.as_str());
        }
    }

    #[test]
    fn the_iso_week_starts_on_monday_even_across_months_and_years() {
        let cases = [
            // A Monday is its own week's start, from its first instant.
            ("2026-07-13T00:00:00Z", "2026-07-13T00:00:00Z"),
            // Sunday's last second is still in the week that began on Monday.
            ("2026-07-19T23:59:59Z", "2026-07-13T00:00:00Z"),
            // Friday 1 January 2027 belongs to the week of Monday 28 December 2026.
            ("2027-01-01T10:00:00Z", "2026-12-28T00:00:00Z"),
            // Sunday 1 March 2026: the week began in February.
            ("2026-03-01T08:00:00Z", "2026-02-23T00:00:00Z"),
        ];
        for (now, start) in cases {
            assert_eq!(window_start(Window::Week, at(now)), at(start), "{now}");
        }
        assert_eq!(
            window_start(Window::Year, at("2026-12-31T23:59:59Z")),
            at("2026-01-01T00:00:00Z")
        );
        assert_eq!(
            window_start(Window::Month, at("2028-02-29T23:59:59Z")),
            at("2028-02-01T00:00:00Z")
        );
    }

    #[test]
    fn windows_are_listed_shortest_first_with_stable_names() {
        let names: Vec<&str> = Window::ALL.iter().map(|w| w.as_str()).collect();
        assert_eq!(names, ["day", "week", "month", "year", "lifetime"]);
        assert_eq!(
            serde_json::to_value(Window::Lifetime).unwrap(),
            json!("lifetime")
        );
    }

    #[test]
    fn the_seed_shape_parses_with_exact_amounts_and_the_card_enabled() {
        let controls = controls(json!({"limits": {"daily": 1000.00, "monthly": 5000.00}})).unwrap();
        assert!(controls.enabled());
        let limits = controls.limits();
        assert_eq!(
            limits.window(Window::Day),
            Some(Money::from_minor(100_000, usd()))
        );
        assert_eq!(
            limits.window(Window::Month),
            Some(Money::from_minor(500_000, usd()))
        );
        assert_eq!(limits.window(Window::Week), None);
        assert_eq!(limits.per_authorization(), None);
        assert_eq!(limits.daily_count(), None);
        // The exact same body through the text parser, as a client writes it.
        let text = r#"{"limits": {"daily": 1000.00, "monthly": 5000.00}}"#;
        let parsed: ControlsRequest = serde_json::from_str(text).unwrap();
        assert_eq!(parsed.validate(usd(), table(), "").unwrap(), controls);
    }

    #[test]
    fn an_empty_body_is_the_default_controls() {
        assert_eq!(controls(json!({})).unwrap(), Controls::default());
        assert_eq!(
            ControlsRequest::default()
                .validate(usd(), table(), "")
                .unwrap(),
            Controls::default()
        );
        assert!(Controls::default().enabled());
        assert_eq!(
            Controls::default().screen_category(mcc(7995)),
            Screen::NoRule
        );
        assert_eq!(
            Controls::default().screen_country(Country::US),
            Screen::NoRule
        );
    }

    #[test]
    fn every_field_parses_into_typed_controls() {
        let controls = controls(json!({
            "enabled": false,
            "allowed_categories": ["grocery", "restaurants", "grocery"],
            "blocked_categories": ["gambling"],
            "allowed_mccs": ["0742", 5999],
            "blocked_mccs": ["5813"],
            "allowed_countries": ["US", "DE"],
            "blocked_countries": ["KP"],
            "limits": {
                "per_authorization": "100.00",
                "daily": "500",
                "weekly": 1500.5,
                "monthly": "5000.00",
                "yearly": "20000",
                "lifetime": "50000",
                "daily_count": 20
            }
        }))
        .unwrap();
        assert!(!controls.enabled());
        let limits = controls.limits();
        let usd = |minor| Some(Money::from_minor(minor, usd()));
        assert_eq!(limits.per_authorization(), usd(10_000));
        assert_eq!(limits.window(Window::Day), usd(50_000));
        assert_eq!(limits.window(Window::Week), usd(150_050));
        assert_eq!(limits.window(Window::Month), usd(500_000));
        assert_eq!(limits.window(Window::Year), usd(2_000_000));
        assert_eq!(limits.window(Window::Lifetime), usd(5_000_000));
        assert_eq!(limits.daily_count(), Some(20));
        let view = controls.view();
        assert_eq!(view.allowed_categories, ["grocery", "restaurants"]);
        assert_eq!(view.allowed_mccs, [mcc(742), mcc(5999)]);
        assert_eq!(view.allowed_countries, ["DE", "US"]);
    }

    #[test]
    fn unknown_fields_are_refused_at_every_level() {
        assert!(request(json!({"enabled": true, "limit": {}})).is_err());
        assert!(request(json!({"limits": {"dayly": "10.00"}})).is_err());
        // Wrong types are refused by the parser itself.
        assert!(request(json!({"limits": {"daily": true}})).is_err());
        assert!(request(json!({"allowed_mccs": [null]})).is_err());
    }

    #[test]
    fn each_malformed_field_is_named_in_the_error() {
        let cases = [
            (
                json!({"allowed_categories": ["grocery", "casinos"]}),
                "controls.allowed_categories[1]",
                "validation_failed",
            ),
            (
                json!({"blocked_categories": ["Grocery"]}),
                "controls.blocked_categories[0]",
                "validation_failed",
            ),
            (
                json!({"allowed_mccs": ["5411", "541"]}),
                "controls.allowed_mccs[1]",
                "validation_failed",
            ),
            (
                json!({"allowed_mccs": [10000]}),
                "controls.allowed_mccs[0]",
                "validation_failed",
            ),
            (
                json!({"blocked_mccs": [-1]}),
                "controls.blocked_mccs[0]",
                "validation_failed",
            ),
            (
                json!({"blocked_mccs": ["54.11"]}),
                "controls.blocked_mccs[0]",
                "validation_failed",
            ),
            (
                json!({"allowed_countries": ["us"]}),
                "controls.allowed_countries[0]",
                "validation_failed",
            ),
            (
                json!({"blocked_countries": ["DE", "XX"]}),
                "controls.blocked_countries[1]",
                "validation_failed",
            ),
            (
                json!({"blocked_countries": [""]}),
                "controls.blocked_countries[0]",
                "validation_failed",
            ),
            (
                json!({"allowed_countries": ["USA"]}),
                "controls.allowed_countries[0]",
                "validation_failed",
            ),
            (
                json!({"limits": {"daily": "10.001"}}),
                "controls.limits.daily",
                "too_many_decimals",
            ),
            (
                json!({"limits": {"weekly": "0"}}),
                "controls.limits.weekly",
                "amount_not_positive",
            ),
            (
                json!({"limits": {"monthly": "-5.00"}}),
                "controls.limits.monthly",
                "amount_not_positive",
            ),
            (
                json!({"limits": {"lifetime": "99999999999999999999"}}),
                "controls.limits.lifetime",
                "amount_overflow",
            ),
            (
                json!({"limits": {"daily_count": 0}}),
                "controls.limits.daily_count",
                "validation_failed",
            ),
            (
                json!({"limits": {"daily_count": -3}}),
                "controls.limits.daily_count",
                "validation_failed",
            ),
            (
                json!({"limits": {"daily_count": 2.5}}),
                "controls.limits.daily_count",
                "validation_failed",
            ),
            (
                json!({"limits": {"daily_count": 4_294_967_296_u64}}),
                "controls.limits.daily_count",
                "validation_failed",
            ),
        ];
        for (body, field, code) in cases {
            let shown = body.to_string();
            assert_eq!(
                refused(body),
                (field.to_owned(), code.to_owned()),
                "{shown}"
            );
        }
    }

    #[test]
    fn the_first_bad_field_in_field_order_is_reported() {
        let (field, _) = refused(json!({
            "allowed_countries": ["XX"],
            "allowed_mccs": ["bad"],
            "limits": {"daily": "0"}
        }));
        assert_eq!(field, "controls.allowed_mccs[0]");
        let (field, _) = refused(json!({"limits": {"daily": "0", "per_authorization": "1.001"}}));
        assert_eq!(field, "controls.limits.per_authorization");
    }

    #[test]
    fn the_prefix_names_fields_for_creation_or_for_put() {
        let body = request(json!({"limits": {"daily": "0"}})).unwrap();
        assert_eq!(
            body.validate(usd(), table(), "").unwrap_err().field,
            "limits.daily"
        );
        assert_eq!(
            body.validate(usd(), table(), "controls").unwrap_err().field,
            "controls.limits.daily"
        );
    }

    #[test]
    fn allowed_and_blocked_lists_may_not_overlap() {
        let cases = [
            (
                json!({"allowed_categories": ["grocery", "gas"], "blocked_categories": ["travel", "gas"]}),
                "controls.blocked_categories[1]",
            ),
            (
                json!({"allowed_mccs": ["5411"], "blocked_mccs": [5411]}),
                "controls.blocked_mccs[0]",
            ),
            (
                json!({"allowed_countries": ["DE"], "blocked_countries": ["DE"]}),
                "controls.blocked_countries[0]",
            ),
            // An allowed code inside a blocked group could never be used.
            (
                json!({"blocked_categories": ["gambling"], "allowed_mccs": ["5411", "7995"]}),
                "controls.allowed_mccs[1]",
            ),
        ];
        for (body, field) in cases {
            let shown = body.to_string();
            assert_eq!(refused(body).0, field, "{shown}");
        }
        // A blocked code inside an allowed group narrows it, and groups may share codes.
        assert!(
            controls(json!({"allowed_categories": ["grocery"], "blocked_mccs": ["5499"]})).is_ok()
        );
        assert!(
            controls(
                json!({"allowed_categories": ["transport"], "blocked_categories": ["travel"]})
            )
            .is_ok()
        );
    }

    #[test]
    fn lists_longer_than_the_maximum_are_refused() {
        let many: Vec<String> = (0..=MAX_LIST_LEN).map(|_| "US".to_owned()).collect();
        assert_eq!(
            refused(json!({"allowed_countries": many})).0,
            "controls.allowed_countries"
        );
        let enough: Vec<String> = (0..MAX_LIST_LEN).map(|_| "US".to_owned()).collect();
        assert!(controls(json!({"allowed_countries": enough})).is_ok());
    }

    #[test]
    fn a_limit_may_not_exceed_the_limit_of_a_window_containing_it() {
        let refused_cases = [
            (
                json!({"per_authorization": "100.01", "lifetime": "100.00"}),
                "controls.limits.per_authorization",
            ),
            (
                json!({"per_authorization": "60", "daily": "50"}),
                "controls.limits.per_authorization",
            ),
            (
                json!({"daily": "600", "monthly": "500"}),
                "controls.limits.daily",
            ),
            (
                json!({"daily": "600", "weekly": "500"}),
                "controls.limits.daily",
            ),
            (
                json!({"daily": "600", "yearly": "500"}),
                "controls.limits.daily",
            ),
            (
                json!({"weekly": "600", "lifetime": "500"}),
                "controls.limits.weekly",
            ),
            (
                json!({"monthly": "600", "yearly": "500"}),
                "controls.limits.monthly",
            ),
            (
                json!({"yearly": "600", "lifetime": "500"}),
                "controls.limits.yearly",
            ),
        ];
        for (limits, field) in refused_cases {
            let shown = limits.to_string();
            assert_eq!(refused(json!({"limits": limits})).0, field, "{shown}");
        }
        let accepted = [
            json!({"per_authorization": "100", "daily": "100", "weekly": "100", "monthly": "100", "yearly": "100", "lifetime": "100"}),
            // Weeks straddle months and years: a weekly limit above them can still bind.
            json!({"weekly": "900", "monthly": "500"}),
            json!({"weekly": "900", "yearly": "500"}),
            json!({"daily": "10", "lifetime": "1000000"}),
        ];
        for limits in accepted {
            let shown = limits.to_string();
            assert!(controls(json!({"limits": limits})).is_ok(), "{shown}");
        }
    }

    #[test]
    fn limits_use_the_card_currencys_decimals() {
        let jpy = Currency::parse("JPY").unwrap();
        let body =
            request(json!({"limits": {"daily": "1000", "per_authorization": "1.5"}})).unwrap();
        assert_eq!(
            body.validate(jpy, table(), "").unwrap_err().field,
            "limits.per_authorization"
        );
        let body = request(json!({"limits": {"daily": "1000"}})).unwrap();
        let controls = body.validate(jpy, table(), "").unwrap();
        assert_eq!(
            controls.limits().window(Window::Day),
            Some(Money::from_minor(1000, jpy))
        );
        assert_eq!(controls.view().limits.daily.unwrap().to_string(), "1000");
    }

    #[test]
    fn category_screening_blocks_first_then_requires_an_allow_when_one_is_set() {
        let blocked_only =
            controls(json!({"blocked_categories": ["gambling"], "blocked_mccs": ["5813"]}))
                .unwrap();
        assert!(
            matches!(blocked_only.screen_category(mcc(7995)), Screen::Blocked(why) if why.contains("gambling"))
        );
        assert!(
            matches!(blocked_only.screen_category(mcc(5813)), Screen::Blocked(why) if why.contains("blocked_mccs"))
        );
        assert!(matches!(
            blocked_only.screen_category(mcc(5411)),
            Screen::Allowed(_)
        ));

        let allow = controls(json!({"allowed_categories": ["grocery"], "allowed_mccs": ["0742"], "blocked_mccs": ["5499"]})).unwrap();
        assert!(
            matches!(allow.screen_category(mcc(5411)), Screen::Allowed(why) if why.contains("grocery"))
        );
        assert!(
            matches!(allow.screen_category(mcc(742)), Screen::Allowed(why) if why.contains("allowed_mccs"))
        );
        assert!(matches!(
            allow.screen_category(mcc(5499)),
            Screen::Blocked(_)
        ));
        assert!(
            matches!(allow.screen_category(mcc(5812)), Screen::Blocked(why) if why.contains("neither"))
        );

        // Blocked wins where an allowed group and a blocked group share a code.
        let shared = controls(
            json!({"allowed_categories": ["transport"], "blocked_categories": ["travel"]}),
        )
        .unwrap();
        assert!(matches!(
            shared.screen_category(mcc(4111)),
            Screen::Blocked(_)
        ));
        assert!(matches!(
            shared.screen_category(mcc(7523)),
            Screen::Allowed(_)
        ));

        // Empty lists are no lists.
        let empty = controls(json!({"allowed_categories": [], "allowed_mccs": []})).unwrap();
        assert_eq!(empty.screen_category(mcc(7995)), Screen::NoRule);
    }

    #[test]
    fn country_screening_blocks_first_then_requires_an_allow_when_one_is_set() {
        let blocked = controls(json!({"blocked_countries": ["KP", "IR"]})).unwrap();
        assert!(matches!(
            blocked.screen_country(Country::KP),
            Screen::Blocked(_)
        ));
        assert!(matches!(
            blocked.screen_country(Country::DE),
            Screen::Allowed(_)
        ));
        let allowed = controls(json!({"allowed_countries": ["DE", "FR"]})).unwrap();
        assert!(matches!(
            allowed.screen_country(Country::FR),
            Screen::Allowed(_)
        ));
        assert!(
            matches!(allowed.screen_country(Country::US), Screen::Blocked(why) if why.contains("US"))
        );
        let empty = controls(json!({"allowed_countries": []})).unwrap();
        assert_eq!(empty.screen_country(Country::US), Screen::NoRule);
    }

    #[test]
    fn the_view_shows_every_key_with_amounts_as_strings() {
        let controls = controls(json!({"blocked_mccs": [742], "allowed_countries": ["US", "DE"], "limits": {"daily": 1000, "daily_count": 5}})).unwrap();
        assert_eq!(
            serde_json::to_value(controls.view()).unwrap(),
            json!({
                "enabled": true,
                "allowed_categories": [],
                "blocked_categories": [],
                "allowed_mccs": [],
                "blocked_mccs": ["0742"],
                "allowed_countries": ["DE", "US"],
                "blocked_countries": [],
                "limits": {
                    "per_authorization": null,
                    "daily": "1000.00",
                    "weekly": null,
                    "monthly": null,
                    "yearly": null,
                    "lifetime": null,
                    "daily_count": 5
                }
            })
        );
    }

    #[test]
    fn the_view_sent_back_as_a_request_gives_the_same_controls() {
        let original = controls(json!({
            "enabled": false,
            "allowed_categories": ["travel"],
            "blocked_categories": ["gambling"],
            "allowed_mccs": ["0742"],
            "blocked_mccs": ["3001"],
            "allowed_countries": ["DE"],
            "blocked_countries": ["KP"],
            "limits": {"per_authorization": "10.5", "daily": 100, "lifetime": "1000.00", "daily_count": 3}
        }))
        .unwrap();
        let stored = serde_json::to_string(&original.view()).unwrap();
        let reread: ControlsRequest = serde_json::from_str(&stored).unwrap();
        assert_eq!(reread.validate(usd(), table(), "").unwrap(), original);
    }
}
