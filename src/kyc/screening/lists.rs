//! Reading sanctions list files: the OFAC SDN CSV layout (facts read from its remarks) and
//! a simple CSV with a header, with errors that name the line and field to fix.

use std::io::Read;
use std::str::FromStr;

use chrono::NaiveDate;
use iso_country::Country;

use super::{BirthDate, ListEntry};

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

    const SIMPLE: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sanctions/sanctions_simple.csv"
    ));
    const SDN: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sanctions/sdn_sample.csv"
    ));

    fn date(y: i32, m: u32, d: u32) -> Option<NaiveDate> {
        NaiveDate::from_ymd_opt(y, m, d)
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
}
