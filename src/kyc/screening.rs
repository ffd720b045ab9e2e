//! Sanctions screening for KYC: matches a customer's name against a sanctions list
//! (OFAC SDN or a simple CSV) and explains every score.
//!
//! A regulator may ask why a person matched or did not, so scoring is deterministic
//! and built only from steps that can be written down: token similarity
//! (Jaro-Winkler), a coverage penalty, and fixed date-of-birth and country
//! adjustments. Every [`Match`] carries the reasons that produced its score.

use std::io::Read;
use std::str::FromStr;

use chrono::{Datelike, NaiveDate};
use iso_country::Country;
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

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

/// Why a list could not be read; names the line so the file can be fixed.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// A whole record is wrong (field count, CSV syntax, header).
    #[error("line {line}: {message}")]
    Record {
        /// 1-based line in the file.
        line: u64,
        /// What is wrong, for the person fixing the file.
        message: String,
    },
    /// One field of a record has an invalid value.
    #[error("line {line}, field {field}: {message}")]
    Field {
        /// 1-based line in the file.
        line: u64,
        /// Column name, as in the format's documentation.
        field: &'static str,
        /// What is wrong, for the person fixing the file.
        message: String,
    },
    /// The input could not be read at all.
    #[error("cannot read the list: {0}")]
    Read(#[from] std::io::Error),
    /// The list has no entries: refused, because screening against an empty list
    /// (e.g. a truncated download) would silently clear everyone.
    #[error("the list has no entries")]
    Empty,
}

impl ListError {
    /// The 1-based line the error is on, if it concerns one.
    #[cfg(test)]
    pub fn line(&self) -> Option<u64> {
        match self {
            Self::Record { line, .. } | Self::Field { line, .. } => Some(*line),
            Self::Read(_) | Self::Empty => None,
        }
    }
}

/// One CSV record: its 1-based line in the file and its trimmed-later fields.
type Records = Vec<(u64, Vec<String>)>;

/// Reads all CSV records with their real line numbers. Lines are counted from byte
/// offsets because csv's own record line numbers are off by one on CRLF files
/// (and OFAC's sdn.csv is CRLF).
fn read_records(mut reader: impl Read) -> Result<Records, ListError> {
    let mut data = Vec::new();
    reader.read_to_end(&mut data)?;
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(data.as_slice());
    let (mut counted, mut line) = (0usize, 1u64);
    let mut line_at = |byte: u64| {
        let mut start = usize::try_from(byte).unwrap_or(usize::MAX).min(data.len());
        while matches!(data.get(start), Some(b'\r' | b'\n')) {
            start += 1;
        }
        let newlines = data
            .get(counted..start)
            .map_or(0, |d| d.iter().filter(|&&b| b == b'\n').count());
        line += u64::try_from(newlines).unwrap_or(0);
        counted = counted.max(start);
        line
    };
    let mut records = Vec::new();
    let mut record = csv::ByteRecord::new();
    loop {
        match csv.read_byte_record(&mut record) {
            Ok(false) => return Ok(records),
            Ok(true) => {
                let line = line_at(record.position().map_or(0, csv::Position::byte));
                records.push((line, record.iter().map(decode_field).collect()));
            }
            Err(e) => {
                let line = line_at(e.position().map_or(0, csv::Position::byte));
                return Err(ListError::Record {
                    line,
                    message: format!("invalid CSV: {e}"),
                });
            }
        }
    }
}

/// Trims whitespace and a byte-order mark (which would otherwise stick to the first field).
fn trim_field(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}')
}

/// UTF-8 if valid, else Latin-1 (older exports are not UTF-8); never fails.
fn decode_field(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
    }
}

fn strip_prefix_ci<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| text.get(prefix.len()..))
        .flatten()
}

/// Short country names used on lists that `iso_country::Country::from_name` lacks
/// (it knows "Iran" and "Venezuela", but not "Russia" or "Syria").
const COUNTRY_ALIASES: [(&str, &str); 8] = [
    ("russia", "RU"),
    ("syria", "SY"),
    ("north korea", "KP"),
    ("korea, north", "KP"),
    ("south korea", "KR"),
    ("korea, south", "KR"),
    ("burma", "MM"),
    ("vietnam", "VN"),
];

/// Maps a country name (as in SDN remarks) to alpha-2; unknown names give None.
fn country_from_name(name: &str) -> Option<String> {
    let name = name.trim().trim_end_matches('.').trim();
    let lower = name.to_lowercase();
    let alias = || {
        COUNTRY_ALIASES
            .iter()
            .find(|(n, _)| *n == lower)
            .map(|(_, c)| (*c).to_owned())
    };
    Country::from_name(name)
        .map(|c| c.to_string())
        .filter(|c| c.len() == 2)
        .or_else(alias)
}

/// Parses the text after "DOB " in SDN remarks: "12 Jan 1965" is a full date;
/// "1970", "circa 1958", "Mar 1961" give the year; of a range ("05 Mar 1961 to
/// 1963") the first value is taken. Anything else gives None (remarks are free text).
fn parse_remark_dob(text: &str) -> Option<BirthDate> {
    let words: Vec<&str> = text
        .split_whitespace()
        .skip_while(|w| {
            ["circa", "ca.", "c.", "approximately", "approx."]
                .iter()
                .any(|a| w.eq_ignore_ascii_case(a))
        })
        .take_while(|w| !w.eq_ignore_ascii_case("to") && *w != "-")
        .collect();
    if let Some(first3) = words.get(..3) {
        let joined = first3.join(" ");
        let full = ["%d %b %Y", "%d %B %Y"]
            .iter()
            .find_map(|f| NaiveDate::parse_from_str(&joined, f).ok());
        if let Some(date) = full {
            return Some(BirthDate::Full(date));
        }
    }
    words.iter().find_map(|w| {
        let digits = w.split(|c: char| !c.is_ascii_digit()).next()?;
        (digits.len() == 4)
            .then(|| digits.parse().ok().map(BirthDate::Year))
            .flatten()
    })
}

/// What SDN remarks tell us: the first DOB, the first nationality or citizenship
/// that maps to a country, and a.k.a./f.k.a./n.k.a. aliases (all are screened).
fn parse_remarks(remarks: &str, entry: &mut ListEntry) {
    for part in remarks.split(';') {
        let part = part.trim().trim_end_matches('.').trim();
        if let Some(rest) = strip_prefix_ci(part, "DOB ") {
            entry.date_of_birth = entry.date_of_birth.or_else(|| parse_remark_dob(rest));
        } else if let Some(rest) =
            strip_prefix_ci(part, "nationality ").or_else(|| strip_prefix_ci(part, "citizen "))
        {
            entry.country = entry.country.take().or_else(|| country_from_name(rest));
        } else if let Some(rest) = ["a.k.a.", "f.k.a.", "n.k.a."]
            .iter()
            .find_map(|p| strip_prefix_ci(part, p))
        {
            let alias = rest.trim().trim_matches(['\'', '"']).trim();
            if !alias.is_empty() {
                entry.aliases.push(alias.to_owned());
            }
        }
    }
}

/// OFAC writes "-0-" (often with spaces around it) for an empty field.
fn sdn_value(raw: &str) -> Option<&str> {
    let v = trim_field(raw);
    (!v.is_empty() && v != "-0-").then_some(v)
}

fn field_count_error(line: u64, found: usize, expected: usize) -> ListError {
    ListError::Record {
        line,
        message: format!("expected {expected} fields, found {found}"),
    }
}

fn field_error(line: u64, field: &'static str, message: String) -> ListError {
    ListError::Field {
        line,
        field,
        message,
    }
}

fn non_empty(entries: Vec<ListEntry>) -> Result<Vec<ListEntry>, ListError> {
    (!entries.is_empty())
        .then_some(entries)
        .ok_or(ListError::Empty)
}

/// OFAC SDN CSV layout (sdn.csv, no header row): ent_num, SDN_Name, SDN_Type, Program,
/// Title, Call_Sign, Vess_type, Tonnage, GRT, Vess_flag, Vess_owner, Remarks. "-0-"
/// (possibly with surrounding spaces) means empty; an empty SDN_Type means "entity".
/// A final line holding only 0x1A (SUB) is ignored; data after it is an error.
/// DOB, nationality/citizenship and aliases are read from Remarks; a Program like
/// "IRAN] [SDGT" becomes "IRAN; SDGT". Fields that are not UTF-8 are read as Latin-1.
#[cfg(test)]
pub fn parse_sdn_csv(reader: impl Read) -> Result<Vec<ListEntry>, ListError> {
    sdn_from_records(read_records(reader)?)
}

fn sdn_from_records(records: Records) -> Result<Vec<ListEntry>, ListError> {
    let mut entries = Vec::new();
    let mut sub_line = None;
    for (line, fields) in records {
        if let Some(sub) = sub_line {
            let message = format!("data after the end-of-file (0x1A) line {sub}");
            return Err(ListError::Record { line, message });
        }
        if let [only] = fields.as_slice()
            && trim_field(only) == "\u{1a}"
        {
            sub_line = Some(line);
            continue;
        }
        let [ent_num, name, kind, program, _, _, _, _, _, _, _, remarks] = fields.as_slice() else {
            return Err(field_count_error(line, fields.len(), 12));
        };
        let reference = sdn_value(ent_num)
            .filter(|r| r.chars().all(|c| c.is_ascii_digit()))
            .ok_or_else(|| {
                field_error(line, "ent_num", format!("\"{ent_num}\" is not a number"))
            })?;
        let name =
            sdn_value(name).ok_or_else(|| field_error(line, "SDN_Name", "name is empty".into()))?;
        let kind = match sdn_value(kind).map(str::to_ascii_lowercase).as_deref() {
            None => "entity",
            Some(k @ ("individual" | "vessel" | "aircraft")) => k,
            Some(_) => "unknown",
        }
        .to_owned();
        let program = sdn_value(program).map(|p| {
            let parts: Vec<&str> = p
                .split(['[', ']'])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            parts.join("; ")
        });
        let mut entry = ListEntry {
            reference: reference.to_owned(),
            name: name.to_owned(),
            aliases: Vec::new(),
            date_of_birth: None,
            country: None,
            program,
            kind,
        };
        if let Some(remarks) = sdn_value(remarks) {
            parse_remarks(remarks, &mut entry);
        }
        entries.push(entry);
    }
    non_empty(entries)
}

const SIMPLE_HEADER: [&str; 4] = ["name", "aliases", "date_of_birth", "country"];

fn is_simple_header(fields: &[String]) -> bool {
    fields.len() == SIMPLE_HEADER.len()
        && fields
            .iter()
            .zip(SIMPLE_HEADER)
            .all(|(f, h)| trim_field(f).eq_ignore_ascii_case(h))
}

/// Validates an alpha-2 code against iso_country (whose parser accepts "" as
/// `Unspecified`, hence the length check); returns it upper case.
fn parse_alpha2(code: &str) -> Result<String, String> {
    let upper = code.to_ascii_uppercase();
    let known = Country::from_str(&upper).is_ok_and(|c| c != Country::Unspecified);
    let error = || format!("\"{code}\" is not an ISO 3166-1 alpha-2 code");
    (upper.len() == 2 && known)
        .then_some(upper)
        .ok_or_else(error)
}

/// A simple-CSV date of birth: empty, YYYY or YYYY-MM-DD.
fn parse_simple_dob(dob: &str) -> Result<Option<BirthDate>, String> {
    if dob.is_empty() {
        return Ok(None);
    }
    if dob.len() == 4 && dob.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(dob.parse().ok().map(BirthDate::Year));
    }
    let error = |_| format!("\"{dob}\" is not YYYY-MM-DD or YYYY");
    NaiveDate::parse_from_str(dob, "%Y-%m-%d")
        .map(|d| Some(BirthDate::Full(d)))
        .map_err(error)
}

/// Simple CSV with a header row: name,aliases,date_of_birth,country. aliases are
/// separated by ';'; date_of_birth is YYYY-MM-DD, YYYY or empty; country is an
/// ISO 3166-1 alpha-2 code (any case) or empty. `reference` is the 1-based data row
/// number (the header not counted); errors give the file line; kind is "unknown".
#[cfg(test)]
pub fn parse_simple_csv(reader: impl Read) -> Result<Vec<ListEntry>, ListError> {
    simple_from_records(read_records(reader)?)
}

fn simple_from_records(records: Records) -> Result<Vec<ListEntry>, ListError> {
    let mut records = records.into_iter();
    match records.next() {
        Some((_, header)) if is_simple_header(&header) => {}
        Some((line, _)) => {
            let message = format!("expected the header {}", SIMPLE_HEADER.join(","));
            return Err(ListError::Record { line, message });
        }
        None => return Err(ListError::Empty),
    }
    let mut entries = Vec::new();
    for (line, fields) in records {
        let [name, aliases, dob, country] = fields.as_slice() else {
            return Err(field_count_error(line, fields.len(), 4));
        };
        let [name, dob, country] = [name, dob, country].map(|f| trim_field(f));
        if name.is_empty() {
            return Err(field_error(line, "name", "name is empty".into()));
        }
        let date_of_birth =
            parse_simple_dob(dob).map_err(|m| field_error(line, "date_of_birth", m))?;
        let country = match country {
            "" => None,
            code => Some(parse_alpha2(code).map_err(|m| field_error(line, "country", m))?),
        };
        entries.push(ListEntry {
            reference: (entries.len() + 1).to_string(),
            name: name.to_owned(),
            aliases: aliases
                .split(';')
                .map(trim_field)
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect(),
            date_of_birth,
            country,
            program: None,
            kind: "unknown".to_owned(),
        });
    }
    non_empty(entries)
}

/// Detects the format: simple if the first record is exactly the simple header
/// (case-insensitive, trimmed, byte-order mark ignored), else SDN.
/// Whether `bytes` start with the simple format's header (so [`parse_list`] reads them as
/// simple CSV rather than OFAC SDN).
pub fn is_simple_csv(bytes: &[u8]) -> bool {
    read_records(bytes)
        .ok()
        .and_then(|records| records.first().map(|(_, fields)| is_simple_header(fields)))
        .unwrap_or(false)
}

pub fn parse_list(bytes: &[u8]) -> Result<Vec<ListEntry>, ListError> {
    let records = read_records(bytes)?;
    if records
        .first()
        .is_some_and(|(_, fields)| is_simple_header(fields))
    {
        simple_from_records(records)
    } else {
        sdn_from_records(records)
    }
}
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SIMPLE: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sanctions/sanctions_simple.csv"
    ));
    const SDN: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sanctions/sdn_sample.csv"
    ));
    const DEFAULT: ScreeningSettings = ScreeningSettings {
        threshold: 0.88,
        candidate_floor: 0.80,
    };
    const ALL: ScreeningSettings = ScreeningSettings {
        threshold: 0.88,
        candidate_floor: 0.0,
    };

    fn index(list: &[u8]) -> ScreeningIndex {
        ScreeningIndex::new(parse_list(list).unwrap())
    }
    fn who<'a>(name: &'a str, dob: Option<NaiveDate>, country: Option<&'a str>) -> Subject<'a> {
        let (full_name, date_of_birth) = (name, dob);
        Subject {
            full_name,
            date_of_birth,
            country,
        }
    }
    fn date(y: i32, m: u32, d: u32) -> Option<NaiveDate> {
        NaiveDate::from_ymd_opt(y, m, d)
    }
    /// Best match (with `settings`); asserts it is entry `reference`, prints it.
    fn top(list: &[u8], s: Subject<'_>, settings: ScreeningSettings, reference: &str) -> Match {
        let index = index(list);
        let found = index.screen(&s, &settings, 5);
        let m = found.first().cloned().expect("a match");
        assert_eq!(index.entries()[m.entry_index].reference, reference);
        let (name, score) = (m.name_score, m.score);
        println!(
            "{:<32} name {name:.4} score {score:.4} {:?}",
            s.full_name, m.reasons
        );
        m
    }
    fn best(list: &[u8], name: &str, reference: &str) -> Match {
        top(list, who(name, None, None), DEFAULT, reference)
    }
    fn assert_close(actual: f64, expected: f64) {
        assert!((actual - expected).abs() < 5e-5, "{actual} vs {expected}");
    }

    #[test]
    fn normalisation_folds_accents_case_titles_and_punctuation() {
        assert_eq!(normalise_name("José Müller"), ["jose", "muller"]);
        let folded = normalise_name("Dr. Jürgen GROSS-Øster, Straße Łukasz Þór");
        assert_eq!(
            folded,
            ["jurgen", "gross", "oster", "strasse", "lukasz", "thor"]
        );
        assert_eq!(
            normalise_name("AL-MANSOURI, Abdul"),
            ["al", "mansouri", "abdul"]
        );
        assert!(normalise_name(" -- Mr. ").is_empty());
    }

    #[test]
    fn case1_exact_name_is_strong() {
        let m = best(SIMPLE, "Viktor Aleksandrovich Kovalenko", "1");
        assert_eq!((m.name_score, m.score), (1.0, 1.0));
        let defaults = ScreeningSettings::default();
        assert_eq!((defaults.threshold, defaults.candidate_floor), (0.88, 0.80));
        assert!(is_strong(&m, &defaults));
        assert_eq!(m.reasons, ["name 1.000 (exact token match)"]);
    }

    #[test]
    fn case2_reordered_name_is_strong() {
        let m = best(SIMPLE, "KOVALENKO Viktor Aleksandrovich", "1");
        assert_eq!(m.score, 1.0);
        let m = best(SDN, "Viktor Aleksandrovich Kovalenko", "9101");
        assert_eq!(m.matched_name, "KOVALENKO, Viktor Aleksandrovich");
        assert_eq!(m.score, 1.0);
    }

    #[test]
    fn case3_accents_and_case_do_not_matter() {
        assert_eq!(best(SIMPLE, "Jose Maria Ibarra Gomez", "2").score, 1.0);
        assert_eq!(best(SDN, "josé maría ibarra-gómez", "9104").score, 1.0);
    }

    #[test]
    fn case4_typos_are_strong() {
        let kovalenkko = best(SIMPLE, "Viktor Kovalenkko", "1");
        assert_close(kovalenkko.score, 0.9339);
        let ibara = best(SIMPLE, "Jose Maria Ibara Gomez", "2");
        assert_close(ibara.score, 0.9900);
        assert!(is_strong(&kovalenkko, &DEFAULT) && is_strong(&ibara, &DEFAULT));
    }

    #[test]
    fn case5_initials_are_reported() {
        // kovalenko 1.0 (weight 9), v~viktor and a~aleksandrovich 0.90 (weight 1
        // each), all tokens paired: (9 + 0.9 + 0.9) / 11 = 0.9818, strong as well.
        let m = best(SIMPLE, "V. A. Kovalenko", "1");
        assert_close(m.score, 0.9818);
        let pairs = "kovalenko~kovalenko 1.000, a~aleksandrovich 0.900, v~viktor 0.900";
        assert_eq!(
            m.reasons[1],
            format!("token pairs: {pairs} (3 subject vs 3 list tokens)")
        );
        // One initial: (9 + 0.9) / 10 * (4/5)^0.25 = 0.9363.
        assert_close(best(SIMPLE, "V. Kovalenko", "1").score, 0.9363);
        // Initials only: every pair 0.90, so 0.90, strong under the rules as given.
        assert_close(best(SIMPLE, "V. A. K.", "1").score, 0.9);
    }

    #[test]
    fn case6_unrelated_names_do_not_match() {
        let names = [
            "Emma Johnson",
            "Peter Schmidt",
            "Maria Gonzalez",
            "Ivan Petrov",
        ];
        for (name, list) in names.iter().flat_map(|n| [(n, SIMPLE), (n, SDN)]) {
            let found = index(list).screen(&who(name, None, None), &DEFAULT, 10);
            assert!(found.is_empty(), "{name}: {found:?}");
        }
    }

    #[test]
    fn case7_date_of_birth_and_country_adjust_the_score() {
        let typo = |dob| who("Viktor Kovalenkko", dob, None);
        let none = top(SIMPLE, typo(None), DEFAULT, "1").score;
        let same = top(SIMPLE, typo(date(1965, 1, 12)), DEFAULT, "1").score;
        let other = top(SIMPLE, typo(date(1980, 3, 4)), ALL, "1");
        assert!(same > none && none > other.score);
        assert_close(same, 0.9339 + 0.05);
        assert_close(other.score, 0.9339 - 0.15);
        let differs = "date of birth differs (list 1965-01-12 vs subject 1980-03-04)";
        assert_eq!(other.reasons[2], differs);
        // 0.7839 is below the default floor: with a different DOB it is not reported.
        let subject = typo(date(1980, 3, 4));
        assert!(index(SIMPLE).screen(&subject, &DEFAULT, 5).is_empty());
        // A perfect name cannot rise above 1.0, so a DOB match adds nothing there.
        let exact = who("Viktor Aleksandrovich Kovalenko", date(1965, 1, 12), None);
        assert_eq!(top(SIMPLE, exact, DEFAULT, "1").score, 1.0);
        // Year-only list DOB and country (entry 3: 1970, SY).
        let mansouri = |dob, country| who("Abdul Rahman Mansouri", dob, Some(country));
        let hit = top(SIMPLE, mansouri(date(1970, 6, 1), "sy"), ALL, "3");
        assert_close(hit.score, (hit.name_score + 0.02 + 0.03).min(1.0));
        assert_eq!(
            hit.reasons[2..],
            ["year of birth matches (1970)", "country matches (SY)"]
        );
        let miss = top(SIMPLE, mansouri(date(1981, 6, 1), "DE"), ALL, "3");
        assert_close(miss.score - miss.name_score, -0.15 - 0.05);
        assert_eq!(miss.reasons[3], "country differs (list SY vs subject DE)");
    }

    #[test]
    fn case8_aliases_match_like_names() {
        let m = best(SIMPLE, "Abu Samir al-Qudayri", "3");
        assert_eq!(
            (m.matched_name.as_str(), m.score),
            ("Abu Samir Al-Qudayri", 1.0)
        );
        let alias = "exact token match on alias \"Abu Samir Al-Qudayri\"";
        assert_eq!(m.reasons[0], format!("name 1.000 ({alias})"));
        let m = best(SDN, "Abd al Rahman Mansouri", "9103");
        assert_eq!(
            (m.matched_name.as_str(), m.score),
            ("MANSOURI, Abd al-Rahman", 1.0)
        );
        let alias_typo = best(SDN, "Abd al Rahman Mansuri", "9103");
        let name_typo = best(SDN, "Abdul Rahman Al Mansuri", "9103");
        // Both typos are close to their name; 0.9909 (alias) and 0.9917 (primary).
        assert_close(alias_typo.score, 0.9909);
        assert_close(name_typo.score, 0.9917);
        assert_eq!(name_typo.matched_name, "AL-MANSOURI, Abdul Rahman");
    }

    #[test]
    fn vessels_are_not_screened() {
        // "VIKTOR KOVALENKO" is also a vessel (9106); only the person is reported.
        let index = index(SDN);
        let found = index.screen(&who("Viktor Kovalenko", None, None), &ALL, 10);
        let refs: Vec<&str> = found
            .iter()
            .map(|m| index.entries()[m.entry_index].reference.as_str())
            .collect();
        assert_eq!(refs[0], "9101");
        assert!(!refs.contains(&"9106"));
    }

    #[test]
    fn case9_sdn_parsing() {
        let entries = parse_sdn_csv(SDN).unwrap();
        assert_eq!(entries.len(), 7);
        let facts = |i: usize| {
            let e = &entries[i];
            let dob = e.date_of_birth;
            (e.kind.as_str(), dob, e.country.as_deref(), e.aliases.len())
        };
        let full = |y, m, d| date(y, m, d).map(BirthDate::Full);
        let year = BirthDate::Year;
        assert_eq!(facts(0), ("individual", full(1961, 3, 5), Some("RU"), 1));
        assert_eq!(facts(1), ("individual", full(1965, 1, 12), Some("IR"), 0));
        assert_eq!(facts(2), ("individual", Some(year(1970)), Some("SY"), 2));
        assert_eq!(facts(3), ("individual", Some(year(1958)), Some("VE"), 0));
        assert_eq!(facts(4), ("entity", None, None, 1));
        assert_eq!(facts(5), ("vessel", None, None, 0));
        assert_eq!(facts(6), ("individual", full(1982, 11, 3), Some("KP"), 0));
        assert_eq!(entries[0].reference, "9101");
        assert_eq!(entries[4].aliases, ["NORTHWIND SHIPPING"]);
        assert_eq!(entries[1].program.as_deref(), Some("IRAN; SDGT"));
        assert_eq!(country_from_name("Iran"), Some("IR".into()));
        assert_eq!(country_from_name("Atlantis"), None);
        assert_eq!(parse_remark_dob("Jan 1961"), Some(year(1961)));
        assert_eq!(parse_remark_dob("unknown"), None);
    }

    #[test]
    fn case9_sdn_errors_name_the_line() {
        // The fixture is CRLF, where csv's own line numbers would be off by one.
        let second_line = SDN.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
        let (head, tail) = SDN.split_at(second_line);
        let broken = [head, b"5,\"X, Y\",-0-\r\n", tail].concat();
        let err = parse_sdn_csv(broken.as_slice()).unwrap_err();
        assert_eq!(err.to_string(), "line 2: expected 12 fields, found 3");
        let after_sub = [SDN, b"\r\n1,a,-0-,-0-,-0-,-0-,-0-,-0-,-0-,-0-,-0-,-0-\r\n"].concat();
        assert_eq!(
            parse_sdn_csv(after_sub.as_slice()).unwrap_err().line(),
            Some(9)
        );
        let bad_num = &b"\n\nx1,\"A, B\",-0-,-0-,-0-,-0-,-0-,-0-,-0-,-0-,-0-,-0-\n"[..];
        let err = parse_sdn_csv(bad_num).unwrap_err().to_string();
        assert_eq!(err, "line 3, field ent_num: \"x1\" is not a number");
        assert!(matches!(parse_sdn_csv(&b"\x1a"[..]), Err(ListError::Empty)));
        let latin1 = &b"7,\"M\xdcLLER, J\xf6rg\",individual,-0-,,,,,,,,-0-"[..];
        assert_eq!(parse_sdn_csv(latin1).unwrap()[0].name, "MÜLLER, Jörg");
    }

    #[test]
    fn case10_simple_csv_parsing_and_errors() {
        let entries = parse_simple_csv(SIMPLE).unwrap();
        assert_eq!((entries.len(), entries[7].reference.as_str()), (8, "8"));
        let dob = entries[0].date_of_birth;
        assert_eq!(dob, date(1965, 1, 12).map(BirthDate::Full));
        assert_eq!(
            entries[2].aliases,
            ["Abu Samir Al-Qudayri", "Abd al-Rahman Mansouri"]
        );
        assert_eq!(entries[4].date_of_birth, Some(BirthDate::Year(1958)));
        assert_eq!(parse_list(SIMPLE).unwrap(), entries);
        let with_bom = [&b"\xEF\xBB\xBF"[..], SIMPLE].concat();
        assert_eq!(parse_list(&with_bom).unwrap(), entries);
        let parse = |body: &str| {
            let text = format!(" Name,ALIASES ,date_of_birth,Country\r\n{body}");
            parse_simple_csv(text.as_bytes()).map_err(|e| e.to_string())
        };
        let bad_date = parse("A B,,1965-01-12,IR\r\nC D,,1965-13-01,IR\r\n").unwrap_err();
        assert_eq!(
            bad_date,
            "line 3, field date_of_birth: \"1965-13-01\" is not YYYY-MM-DD or YYYY"
        );
        let bad_country = parse("A B,,,UK\n").unwrap_err();
        assert_eq!(
            bad_country,
            "line 2, field country: \"UK\" is not an ISO 3166-1 alpha-2 code"
        );
        for body in ["A B,,,XX", "A B,,,IRN", "A B,,65,", " ,x,,"] {
            let err = parse(body).unwrap_err();
            assert!(err.starts_with("line 2, field "), "{body}: {err}");
        }
        let err = parse("A B,,").unwrap_err();
        assert_eq!(err, "line 2: expected 4 fields, found 3");
        assert_eq!(parse("a b,,,ir").unwrap()[0].country.as_deref(), Some("IR"));
        assert_eq!(parse("").unwrap_err(), "the list has no entries");
        assert_eq!(parse_simple_csv(SDN).unwrap_err().line(), Some(1));
    }

    #[test]
    fn case11_deterministic_and_sorted() {
        let index = index(SIMPLE);
        let subject = who("Kovalenko Zhang Ibarra", None, None);
        let first = index.screen(&subject, &ALL, 100);
        assert_eq!(first.len(), 8);
        assert_eq!(first, index.screen(&subject, &ALL, 100));
        let key = |m: &Match| (std::cmp::Reverse(m.score.to_bits()), m.entry_index);
        assert!(first.windows(2).all(|w| key(&w[0]) < key(&w[1])));
        assert_eq!(index.screen(&subject, &ALL, 3), first[..3]);
        assert!(index.screen(&subject, &ALL, 0).is_empty());
        assert!(index.screen(&who("Mr.", None, None), &ALL, 10).is_empty());
    }

    fn name_score(a: &str, b: &str) -> f64 {
        let (a, b) = (PreparedName::new(a), PreparedName::new(b));
        compare_names(&a, &b, &mut Scratch::default()).0
    }

    proptest! {
        #[test]
        fn scores_are_bounded_and_exact_names_score_one(
            name in "[A-Za-zÀ-ÿ.'-]{1,10}( [A-Za-zÀ-ÿ.'-]{1,10}){0,3}",
            other in "[A-Za-z -]{0,30}",
            year in 1900i32..2010,
        ) {
            prop_assume!(!normalise_name(&name).is_empty());
            let entry = |name: &str| ListEntry {
                reference: "1".into(),
                name: name.into(),
                aliases: vec![],
                date_of_birth: Some(BirthDate::Year(year)),
                country: Some("IR".into()),
                program: None,
                kind: "individual".into(),
            };
            let index = ScreeningIndex::new(vec![entry(&other), entry(&name)]);
            let found = index.screen(&who(&name, date(1950, 1, 1), Some("IR")), &ALL, 10);
            for m in &found {
                prop_assert!((0.0..=1.0).contains(&m.score));
                prop_assert!((0.0..=1.0).contains(&m.name_score));
            }
            let own = found.iter().find(|m| m.entry_index == 1);
            prop_assert_eq!(own.map(|m| m.name_score), Some(1.0));
        }

        #[test]
        fn name_score_is_symmetric_and_order_free(
            a in "[a-z]{1,8}( [a-z]{1,8}){0,3}",
            b in "[a-z]{1,8}( [a-z]{1,8}){0,3}",
        ) {
            // A name made only of titles ("mr", "dr") has no tokens left to compare.
            prop_assume!(!normalise_name(&a).is_empty() && !normalise_name(&b).is_empty());
            let ab = name_score(&a, &b);
            prop_assert!((0.0..=1.0).contains(&ab));
            prop_assert_eq!(ab, name_score(&b, &a));
            let reversed: Vec<&str> = a.split(' ').rev().collect();
            prop_assert_eq!(ab, name_score(&reversed.join(" "), &b));
            prop_assert_eq!(name_score(&a, &a), 1.0);
        }
    }
}
