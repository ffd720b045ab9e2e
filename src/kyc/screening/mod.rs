//! Sanctions screening for KYC: matches a customer's name against a sanctions list
//! (OFAC SDN or a simple CSV) and explains every score.
//!
//! A regulator may ask why a person matched or did not, so scoring is deterministic
//! and built only from steps that can be written down: token similarity
//! (Jaro-Winkler), a coverage penalty, and fixed date-of-birth and country
//! adjustments. Every [`Match`] carries the reasons that produced its score.
//!
//! This file holds the screening itself (the types, name normalisation, scoring and the
//! [`ScreeningIndex`]); [`lists`] reads list files (OFAC SDN CSV and a simple CSV).

mod lists;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;

use chrono::{Datelike, NaiveDate};
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

pub use lists::{is_simple_csv, parse_list};

/// One person or entity on a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// The list's own reference (OFAC ent_num; for the simple CSV, the 1-based
    /// data row number as text), so a reviewer can find the entry in the source.
    pub reference: String,
    /// Primary name as written on the list (SDN: "LAST, First Middle").
    pub name: String,
    /// Other names the list gives (a.k.a., f.k.a., n.k.a.); screened like the name.
    pub aliases: Vec<String>,
    /// Date of birth as known: full date or year only.
    pub date_of_birth: Option<BirthDate>,
    /// ISO 3166-1 alpha-2 (upper case), when known.
    pub country: Option<String>,
    /// OFAC program(s) or free text; shown to reviewers.
    pub program: Option<String>,
    /// "individual", "entity", "vessel", "aircraft" or "unknown".
    pub kind: String,
}

/// A list's date of birth: lists often know only the year (or "circa" a year).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BirthDate {
    /// Exact date.
    Full(NaiveDate),
    /// Year only; compared with the subject's year of birth.
    Year(i32),
}

/// Who is screened: always a person, so vessels and aircraft are never compared.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// Name as given by the customer, in any order and with or without accents.
    pub full_name: &'a str,
    /// Date of birth, when known; adjusts the score.
    pub date_of_birth: Option<NaiveDate>,
    /// ISO 3166-1 alpha-2 country (nationality or residence), when known.
    pub country: Option<&'a str>,
}

/// A list entry that scored at or above the candidate floor, with its explanation.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    /// Index into the slice screened against ([`ScreeningIndex::entries`]).
    pub entry_index: usize,
    /// The name or alias that scored best.
    pub matched_name: String,
    /// 0..=1, from names alone.
    pub name_score: f64,
    /// 0..=1 after date-of-birth and country adjustments (clamped).
    pub score: f64,
    /// Human-readable steps that produced the score, for reviewers and audit.
    pub reasons: Vec<String>,
}

/// Where to draw the lines; these are policy, so they are settings, not constants.
#[derive(Debug, Clone, Copy)]
pub struct ScreeningSettings {
    /// A match at or above this score sends the application to review (default 0.88).
    pub threshold: f64,
    /// Matches below this score are not reported at all (default 0.80).
    pub candidate_floor: f64,
}

impl Default for ScreeningSettings {
    fn default() -> Self {
        Self {
            threshold: 0.88,
            candidate_floor: 0.80,
        }
    }
}

/// Whether the match is a strong one (score >= threshold): the caller sends the
/// application to review.
pub fn is_strong(m: &Match, settings: &ScreeningSettings) -> bool {
    m.score >= settings.threshold
}

/// Tokens that are titles rather than names; they would otherwise add noise tokens.
/// "al" and similar particles are kept: they are part of Arabic names.
const NOISE_TOKENS: [&str; 7] = ["mr", "mrs", "ms", "miss", "dr", "prof", "sir"];

/// Letters NFKD does not decompose, each followed by its ASCII spelling.
const FOLDS: &str = "ßss æae œoe þth øo łl đd ðd ıi";

/// Splits a name into comparable tokens: Unicode NFKD with combining marks dropped
/// (so "José Müller" becomes `["jose", "muller"]`), a few letters NFKD cannot
/// decompose mapped to ASCII (ß, æ, ø, ł, đ, ð, œ, þ, ı), lower case, every
/// non-alphanumeric character a separator, and titles (Mr, Dr, ...) removed.
/// Token order is kept; scoring ignores it.
pub fn normalise_name(name: &str) -> Vec<String> {
    let mut folded = String::with_capacity(name.len());
    for c in name.nfkd().filter(|c| !is_combining_mark(*c)) {
        for lower in c.to_lowercase() {
            match FOLDS.split(' ').find_map(|f| f.strip_prefix(lower)) {
                Some(ascii) => folded.push_str(ascii),
                None if lower.is_alphanumeric() => folded.push(lower),
                None => folded.push(' '),
            }
        }
    }
    folded
        .split(' ')
        .filter(|t| !t.is_empty() && !NOISE_TOKENS.contains(t))
        .map(str::to_owned)
        .collect()
}

/// A name normalised once: tokens sorted (order never matters, and sorting makes
/// tie-breaks depend on content only) and the sorted tokens joined by spaces.
#[derive(Debug, Clone)]
struct PreparedName {
    tokens: Vec<String>,
    joined: String,
}

impl PreparedName {
    fn new(name: &str) -> Self {
        let mut tokens = normalise_name(name);
        tokens.sort();
        let joined = tokens.join(" ");
        Self { tokens, joined }
    }
}

/// The names of one entry, prepared; `source` 0 is the primary name, k is alias k-1.
#[derive(Debug, Clone)]
struct PreparedEntry {
    names: Vec<(usize, PreparedName)>,
    screenable: bool,
}

/// Reusable buffers, so comparing against each list name allocates nothing on our
/// side (strsim's Jaro still allocates a small flag buffer per call).
/// `assigned` keeps the last token-set pairs (similarity, subject index, list index).
#[derive(Default)]
struct Scratch {
    pairs: Vec<(f64, usize, usize)>,
    used: Vec<bool>,
    assigned: Vec<(f64, usize, usize)>,
}

/// Which part of the name comparison produced the score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Exact,
    Tokens,
    WholeName,
}

/// Score for an initial ("v") against a token starting with that letter ("viktor").
const INITIAL_SIMILARITY: f64 = 0.90;
/// Full date of birth equal on both sides.
const DOB_FULL_MATCH: f64 = 0.05;
/// List knows only the year and it equals the subject's year of birth.
const DOB_YEAR_MATCH: f64 = 0.02;
/// Dates (or years) of birth differ.
const DOB_MISMATCH: f64 = -0.15;
/// Countries equal.
const COUNTRY_MATCH: f64 = 0.03;
/// Countries differ; small, since nationality and residence are often confused.
const COUNTRY_MISMATCH: f64 = -0.05;

fn to_f64(n: usize) -> f64 {
    f64::from(u32::try_from(n).unwrap_or(u32::MAX))
}

fn single_char(token: &str) -> Option<char> {
    let mut chars = token.chars();
    chars.next().filter(|_| chars.next().is_none())
}

/// Jaro-Winkler with its arguments in a fixed order, so similarity is symmetric.
fn jaro_winkler_sym(a: &str, b: &str) -> f64 {
    let (x, y) = if a <= b { (a, b) } else { (b, a) };
    strsim::jaro_winkler(x, y)
}

/// Similarity of two tokens: 1 if equal; an initial scores 0.90 against a token
/// that starts with it and 0 against anything else; otherwise Jaro-Winkler.
fn token_similarity(a: &str, b: &str) -> f64 {
    if a == b {
        return 1.0;
    }
    match (single_char(a), single_char(b)) {
        (Some(c), _) if b.starts_with(c) => INITIAL_SIMILARITY,
        (_, Some(c)) if a.starts_with(c) => INITIAL_SIMILARITY,
        (Some(_), _) | (_, Some(_)) => 0.0,
        _ => jaro_winkler_sym(a, b),
    }
}

/// Weight of a pair in the average: its longer token's length, or 1 for an initial,
/// so long, informative tokens count more than short ones and initials little.
fn pair_weight(a: &str, b: &str) -> f64 {
    if single_char(a).is_some() || single_char(b).is_some() {
        return 1.0;
    }
    to_f64(a.chars().count().max(b.chars().count()))
}

/// Token-set score: each token of the shorter list is paired with an unused token
/// of the other, best pairs first (ties by sorted position, so the result depends
/// on content only and is symmetric); the length-weighted average of the pair
/// similarities is multiplied by `coverage^0.25`, where coverage is
/// `2 * pairs with similarity > 0 / (|S| + |C|)`. Leaves the pairs in `scratch.assigned`.
fn token_set_score(subject: &[String], candidate: &[String], scratch: &mut Scratch) -> f64 {
    let swapped = (subject.len(), subject) > (candidate.len(), candidate);
    let (short, long) = if swapped {
        (candidate, subject)
    } else {
        (subject, candidate)
    };
    scratch.pairs.clear();
    scratch.assigned.clear();
    for (i, s) in short.iter().enumerate() {
        for (j, l) in long.iter().enumerate() {
            scratch.pairs.push((token_similarity(s, l), i, j));
        }
    }
    let order = |x: &(f64, usize, usize), y: &(f64, usize, usize)| {
        y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2))
    };
    scratch.pairs.sort_by(order);
    scratch.used.clear();
    scratch.used.resize(short.len() + long.len(), false);
    let (mut weighted, mut weights, mut matched) = (0.0, 0.0, 0usize);
    for &(similarity, i, j) in &scratch.pairs {
        if scratch.used[i] || scratch.used[short.len() + j] {
            continue;
        }
        scratch.used[i] = true;
        scratch.used[short.len() + j] = true;
        let weight = pair_weight(&short[i], &long[j]);
        weighted += weight * similarity;
        weights += weight;
        matched += usize::from(similarity > 0.0);
        let (si, ci) = if swapped { (j, i) } else { (i, j) };
        scratch.assigned.push((similarity, si, ci));
        if scratch.assigned.len() == short.len() {
            break;
        }
    }
    if weights <= 0.0 {
        return 0.0;
    }
    let coverage = 2.0 * to_f64(matched) / to_f64(short.len() + long.len());
    weighted / weights * coverage.powf(0.25)
}

/// Name score: max of the token-set score and Jaro-Winkler of the sorted, joined
/// tokens; exactly 1.0 for identical token multisets. Returns the winning method.
fn compare_names(
    subject: &PreparedName,
    candidate: &PreparedName,
    scratch: &mut Scratch,
) -> (f64, Method) {
    if subject.tokens.is_empty() || candidate.tokens.is_empty() {
        return (0.0, Method::Tokens);
    }
    if subject.tokens == candidate.tokens {
        return (1.0, Method::Exact);
    }
    let tokens = token_set_score(&subject.tokens, &candidate.tokens, scratch);
    let whole = jaro_winkler_sym(&subject.joined, &candidate.joined);
    if tokens >= whole {
        (tokens, Method::Tokens)
    } else {
        (whole, Method::WholeName)
    }
}

/// Date-of-birth adjustment and its reason; nothing when either side is unknown.
fn dob_adjustment(list: Option<BirthDate>, subject: Option<NaiveDate>) -> Option<(f64, String)> {
    Some(match (list?, subject?) {
        (BirthDate::Full(l), s) if l == s => (DOB_FULL_MATCH, "date of birth matches".into()),
        (BirthDate::Full(l), s) => (
            DOB_MISMATCH,
            format!("date of birth differs (list {l} vs subject {s})"),
        ),
        (BirthDate::Year(y), s) if y == s.year() => {
            (DOB_YEAR_MATCH, format!("year of birth matches ({y})"))
        }
        (BirthDate::Year(y), s) => (
            DOB_MISMATCH,
            format!("date of birth differs (list {y} vs subject {})", s.year()),
        ),
    })
}

/// Country adjustment and its reason; nothing when either side is unknown.
fn country_adjustment(list: Option<&str>, subject: Option<&str>) -> Option<(f64, String)> {
    let list = list?;
    let subject = subject?.trim();
    if subject.is_empty() {
        None
    } else if list.eq_ignore_ascii_case(subject) {
        Some((COUNTRY_MATCH, format!("country matches ({list})")))
    } else {
        let subject = subject.to_ascii_uppercase();
        Some((
            COUNTRY_MISMATCH,
            format!("country differs (list {list} vs subject {subject})"),
        ))
    }
}

/// Pre-normalised list, built once per list load and reused across screenings.
pub struct ScreeningIndex {
    entries: Vec<ListEntry>,
    prepared: Vec<PreparedEntry>,
}

impl ScreeningIndex {
    /// Normalises every name and alias once, so [`ScreeningIndex::screen`] only
    /// normalises the subject. Vessels and aircraft are marked as not screenable.
    pub fn new(entries: Vec<ListEntry>) -> Self {
        let prepared = entries
            .iter()
            .map(|e| {
                let mut names: Vec<(usize, PreparedName)> = Vec::new();
                let all = std::iter::once(&e.name).chain(e.aliases.iter());
                for (source, name) in all.enumerate() {
                    let p = PreparedName::new(name);
                    // An alias that normalises like an earlier name adds nothing.
                    if !p.tokens.is_empty() && names.iter().all(|(_, n)| n.tokens != p.tokens) {
                        names.push((source, p));
                    }
                }
                let kind = e.kind.trim();
                let screenable =
                    !kind.eq_ignore_ascii_case("vessel") && !kind.eq_ignore_ascii_case("aircraft");
                PreparedEntry { names, screenable }
            })
            .collect();
        Self { entries, prepared }
    }

    /// The entries, in the order `Match::entry_index` refers to.
    pub fn entries(&self) -> &[ListEntry] {
        &self.entries
    }

    /// Number of entries (including vessels and aircraft).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the list has no entries; screening against it finds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// All matches at or above `settings.candidate_floor` (after adjustments), best
    /// first (ties: lower entry_index first), at most `limit`. Deterministic.
    pub fn screen(
        &self,
        subject: &Subject<'_>,
        settings: &ScreeningSettings,
        limit: usize,
    ) -> Vec<Match> {
        let subject_name = PreparedName::new(subject.full_name);
        if subject_name.tokens.is_empty() || limit == 0 {
            return Vec::new();
        }
        let mut scratch = Scratch::default();
        let mut found = Vec::new();
        for (entry_index, (entry, prepared)) in self.entries.iter().zip(&self.prepared).enumerate()
        {
            if !prepared.screenable {
                continue;
            }
            let mut best: Option<(f64, Method, usize, &PreparedName)> = None;
            for (source, name) in &prepared.names {
                let (score, method) = compare_names(&subject_name, name, &mut scratch);
                if best.is_none_or(|(b, ..)| score > b) {
                    best = Some((score, method, *source, name));
                }
            }
            // Skip before building reason strings: even the largest bonus cannot lift it.
            let Some((name_score, method, source, name)) = best
                .filter(|(n, ..)| n + DOB_FULL_MATCH + COUNTRY_MATCH >= settings.candidate_floor)
            else {
                continue;
            };
            let adjustments = [
                dob_adjustment(entry.date_of_birth, subject.date_of_birth),
                country_adjustment(entry.country.as_deref(), subject.country),
            ];
            let delta: f64 = adjustments.iter().flatten().map(|(d, _)| d).sum();
            let score = (name_score + delta).clamp(0.0, 1.0);
            if score < settings.candidate_floor {
                continue;
            }
            let matched_name = if source == 0 {
                entry.name.clone()
            } else {
                entry.aliases.get(source - 1).cloned().unwrap_or_default()
            };
            let alias = (source > 0).then_some(matched_name.as_str());
            let mut reasons = name_reasons(&subject_name, name, name_score, method, alias);
            reasons.extend(adjustments.into_iter().flatten().map(|(_, r)| r));
            found.push(Match {
                entry_index,
                matched_name,
                name_score,
                score,
                reasons,
            });
        }
        found.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then(a.entry_index.cmp(&b.entry_index))
        });
        found.truncate(limit);
        found
    }
}

/// Explains a name score; computed only for reported matches.
fn name_reasons(
    subject: &PreparedName,
    candidate: &PreparedName,
    score: f64,
    method: Method,
    alias: Option<&str>,
) -> Vec<String> {
    let how = match method {
        Method::Exact => "exact token match",
        Method::Tokens => "token match",
        Method::WholeName => "whole-name match",
    };
    let on = alias.map_or(String::new(), |a| format!(" on alias \"{a}\""));
    let mut reasons = vec![format!("name {score:.3} ({how}{on})")];
    if method == Method::Tokens {
        let mut scratch = Scratch::default();
        token_set_score(&subject.tokens, &candidate.tokens, &mut scratch);
        let listed: Vec<String> = scratch
            .assigned
            .iter()
            .map(|&(sim, s, c)| format!("{}~{} {sim:.3}", subject.tokens[s], candidate.tokens[c]))
            .collect();
        let (s, c) = (subject.tokens.len(), candidate.tokens.len());
        reasons.push(format!(
            "token pairs: {} ({s} subject vs {c} list tokens)",
            listed.join(", ")
        ));
    } else if method == Method::WholeName {
        reasons.push(format!(
            "sorted names \"{}\" vs \"{}\"",
            subject.joined, candidate.joined
        ));
    }
    reasons
}
