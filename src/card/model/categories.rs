//! Merchant category codes (ISO 18245 MCCs) and the named groups of them that card controls
//! allow or block (`grocery`, `gas`, `travel`, ...).
//!
//! The groups are data, not code: `merchant_categories.csv` next to this file (its header says
//! where the codes come from) is compiled in and parsed once, on first use. A table that does
//! not parse is an error [`CategoryTable::shipped`] returns rather than a panic; the service
//! calls it at start so a bad edit stops the process before it serves anything, and the unit
//! tests below fail on it first.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::LazyLock;

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The shipped table's text (see the module docs).
const SHIPPED_CSV: &str = include_str!("merchant_categories.csv");

/// The shipped table, parsed on first use.
static SHIPPED: LazyLock<Result<CategoryTable, CategoryError>> =
    LazyLock::new(|| CategoryTable::parse(SHIPPED_CSV));

/// How many characters of a rejected name an error quotes.
const MAX_ECHO_CHARS: usize = 40;

/// The map key under which serde_json (feature `arbitrary_precision`) hands a number's
/// original text to a visitor; serde_json does not export it.
const SERDE_JSON_NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// Why a category table or a category name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CategoryError {
    /// A row of the table is malformed; `line` is 1-based in the CSV text.
    #[error("merchant category table, line {line}: {message}")]
    Table {
        /// The line of the offending row.
        line: u64,
        /// What is wrong with it.
        message: String,
    },
    /// No group of that name (names are lowercase, e.g. `grocery`).
    #[error("unknown merchant category \"{0}\"")]
    UnknownCategory(String),
}

/// Shortens untrusted input before it is quoted in an error message.
fn echo(input: &str) -> String {
    let mut shown: String = input.chars().take(MAX_ECHO_CHARS).collect();
    if input.chars().nth(MAX_ECHO_CHARS).is_some() {
        shown.push('…');
    }
    shown
}

// ---------------------------------------------------------------------------------------------
// MCC
// ---------------------------------------------------------------------------------------------

/// A merchant category code: four decimal digits, `0000` to `9999`.
///
/// Invariant: the value is at most 9999. Written with leading zeros (`0742`), as networks
/// send it; serialized as that four-character string.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mcc(u16);

impl Mcc {
    /// The largest MCC.
    pub const MAX: u16 = 9999;

    /// An MCC from its numeric value, if it is at most 9999.
    pub fn new(code: u16) -> Option<Mcc> {
        (code <= Self::MAX).then_some(Mcc(code))
    }

    /// An MCC from exactly four ASCII digits (`"0742"`, `"5411"`); nothing trimmed.
    pub fn parse(text: &str) -> Option<Mcc> {
        if text.len() == 4 && text.bytes().all(|b| b.is_ascii_digit()) {
            text.parse().ok().and_then(Mcc::new)
        } else {
            None
        }
    }

    /// The numeric value, 0 to 9999.
    pub fn code(self) -> u16 {
        self.0
    }
}

impl fmt::Display for Mcc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}", self.0)
    }
}

impl fmt::Debug for Mcc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mcc({self})")
    }
}

impl Serialize for Mcc {
    /// Always the four-digit string (`"0742"`), never a number that would lose the zero.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// An MCC as a client sent it, before validation: a string or a JSON integer. Requests read
/// this rather than [`Mcc`] so that a bad code is reported by the request's validation,
/// naming its field (`controls.blocked_mccs[2]`), instead of by the JSON parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MccInput {
    /// A JSON string, or the text of a JSON number that is not an integer (`54.11`).
    Text(String),
    /// A JSON integer (possibly negative or too large).
    Integer(i128),
}

impl MccInput {
    /// The MCC, when the input is four digits or an integer from 0 to 9999.
    pub fn to_mcc(&self) -> Option<Mcc> {
        match self {
            Self::Text(text) => Mcc::parse(text),
            Self::Integer(value) => u16::try_from(*value).ok().and_then(Mcc::new),
        }
    }
}

impl<'de> Deserialize<'de> for MccInput {
    /// Accepts any string or number; anything else (null, a list) is a type error.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(MccInputVisitor)
    }
}

struct MccInputVisitor;

impl<'de> Visitor<'de> for MccInputVisitor {
    type Value = MccInput;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a merchant category code like \"5411\"")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<MccInput, E> {
        Ok(MccInput::Text(echo(text)))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<MccInput, E> {
        Ok(MccInput::Integer(i128::from(value)))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<MccInput, E> {
        Ok(MccInput::Integer(i128::from(value)))
    }

    /// serde_json with `arbitrary_precision` delivers other numbers (`54.11`, `1e3`, huge
    /// integers) as `{"$serde_json::private::Number": "<text>"}`; kept as text, so they fail
    /// validation like any other malformed code.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MccInput, A::Error> {
        let is_number = map
            .next_key::<String>()?
            .is_some_and(|key| key == SERDE_JSON_NUMBER_TOKEN);
        if !is_number {
            return Err(de::Error::invalid_type(de::Unexpected::Map, &self));
        }
        let text: String = map.next_value()?;
        if map.next_key::<IgnoredAny>()?.is_some() {
            return Err(de::Error::invalid_type(de::Unexpected::Map, &self));
        }
        Ok(MccInput::Text(echo(&text)))
    }
}

// ---------------------------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------------------------

/// One row of the table: the MCCs `from..=to` and what they are.
///
/// Invariant: `from <= to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MccRange {
    from: Mcc,
    to: Mcc,
    description: String,
}

impl MccRange {
    /// The first MCC of the range.
    pub fn from(&self) -> Mcc {
        self.from
    }

    /// The last MCC of the range (inclusive).
    pub fn to(&self) -> Mcc {
        self.to
    }

    /// What merchants the range holds, for people reading the table.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Whether `mcc` is in the range (both ends included).
    pub fn contains(&self, mcc: Mcc) -> bool {
        self.from <= mcc && mcc <= self.to
    }
}

/// A named group of MCC ranges (`grocery`, `travel`, ...).
///
/// Invariant: at least one range; ranges ascending and disjoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Category {
    name: String,
    ranges: Vec<MccRange>,
}

impl Category {
    /// The name controls refer to it by.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its ranges, ascending and disjoint.
    pub fn ranges(&self) -> &[MccRange] {
        &self.ranges
    }

    /// Whether `mcc` is in any of its ranges.
    pub fn contains(&self, mcc: Mcc) -> bool {
        self.ranges.iter().any(|range| range.contains(mcc))
    }
}

/// Every named category, by name.
///
/// Invariant: every category satisfies [`Category`]'s invariant; names are lowercase ASCII
/// letters, digits and `_`, starting with a letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CategoryTable {
    categories: BTreeMap<String, Category>,
}

/// A CSV row before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    group: String,
    from_mcc: String,
    to_mcc: String,
    description: String,
}

impl CategoryTable {
    /// The table shipped in the binary (`merchant_categories.csv`), parsed once. An error
    /// means the shipped file is broken: the service refuses to start on it.
    pub fn shipped() -> Result<&'static CategoryTable, CategoryError> {
        SHIPPED.as_ref().map_err(Clone::clone)
    }

    /// Parses a table in the shipped format: `#` comment lines, then the header
    /// `group,from_mcc,to_mcc,description`, then one row per range. Refuses the first row with
    /// a malformed group name or MCC, `from_mcc > to_mcc`, an empty description, or a range
    /// that does not come after the group's previous range (ranges are listed ascending and
    /// never overlap within a group), and a table without rows.
    pub fn parse(text: &str) -> Result<CategoryTable, CategoryError> {
        let mut reader = csv::ReaderBuilder::new()
            .comment(Some(b'#'))
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let headers = reader
            .headers()
            .map_err(|e| CategoryError::Table {
                line: e.position().map_or(0, csv::Position::line),
                message: e.to_string(),
            })?
            .clone();
        let mut categories: BTreeMap<String, Category> = BTreeMap::new();
        for record in reader.records() {
            let table_error = |e: csv::Error| CategoryError::Table {
                line: e.position().map_or(0, csv::Position::line),
                message: e.to_string(),
            };
            let record = record.map_err(table_error)?;
            let line = record.position().map_or(0, csv::Position::line);
            let row: Row =
                record
                    .deserialize(Some(&headers))
                    .map_err(|e| CategoryError::Table {
                        line,
                        message: e.to_string(),
                    })?;
            let bad = |message: String| CategoryError::Table { line, message };
            if !valid_name(&row.group) {
                return Err(bad(format!(
                    "group \"{}\" is not a lowercase snake_case name",
                    echo(&row.group)
                )));
            }
            let from = Mcc::parse(&row.from_mcc).ok_or_else(|| {
                bad(format!(
                    "from_mcc \"{}\" is not 4 digits",
                    echo(&row.from_mcc)
                ))
            })?;
            let to = Mcc::parse(&row.to_mcc)
                .ok_or_else(|| bad(format!("to_mcc \"{}\" is not 4 digits", echo(&row.to_mcc))))?;
            if from > to {
                return Err(bad(format!("from_mcc {from} is after to_mcc {to}")));
            }
            if row.description.is_empty() {
                return Err(bad("the description is empty".to_owned()));
            }
            let category = categories
                .entry(row.group.clone())
                .or_insert_with(|| Category {
                    name: row.group.clone(),
                    ranges: Vec::new(),
                });
            if let Some(previous) = category.ranges.last()
                && from <= previous.to
            {
                return Err(bad(format!(
                    "{from}-{to} does not come after {}-{} in group {}: list a group's ranges \
                     ascending, without overlaps",
                    previous.from, previous.to, row.group
                )));
            }
            category.ranges.push(MccRange {
                from,
                to,
                description: row.description,
            });
        }
        if categories.is_empty() {
            return Err(CategoryError::Table {
                line: 0,
                message: "the table has no rows".to_owned(),
            });
        }
        Ok(CategoryTable { categories })
    }

    /// The category called `name` (exactly: names are lowercase).
    pub fn get(&self, name: &str) -> Result<&Category, CategoryError> {
        self.categories
            .get(name)
            .ok_or_else(|| CategoryError::UnknownCategory(echo(name)))
    }

    /// Every category that contains `mcc`, by name; empty for an MCC in no group.
    pub fn groups_of(&self, mcc: Mcc) -> Vec<&Category> {
        self.categories
            .values()
            .filter(|category| category.contains(mcc))
            .collect()
    }

    /// Every category, by name.
    pub fn categories(&self) -> impl Iterator<Item = &Category> {
        self.categories.values()
    }

    /// Every category's name, in order: for error messages that list the valid names.
    pub fn names(&self) -> Vec<&str> {
        self.categories.keys().map(String::as_str).collect()
    }
}

/// A group name: a lowercase ASCII letter, then lowercase letters, digits or `_`.
fn valid_name(name: &str) -> bool {
    name.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mcc(code: u16) -> Mcc {
        Mcc::new(code).unwrap()
    }

    fn shipped() -> &'static CategoryTable {
        CategoryTable::shipped().unwrap()
    }

    fn names(categories: Vec<&Category>) -> Vec<&str> {
        categories.into_iter().map(Category::name).collect()
    }

    #[test]
    fn the_shipped_table_parses_with_every_row() {
        let table = shipped();
        let rows = SHIPPED_CSV
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .count();
        let ranges: usize = table.categories().map(|c| c.ranges().len()).sum();
        // Every line but the header became a range.
        assert_eq!(ranges, rows - 1);
    }

    #[test]
    fn every_groups_ranges_are_ordered_and_disjoint() {
        for category in shipped().categories() {
            assert!(!category.ranges().is_empty(), "{}", category.name());
            for range in category.ranges() {
                assert!(range.from() <= range.to(), "{}", category.name());
                assert!(!range.description().is_empty());
            }
            for pair in category.ranges().windows(2) {
                assert!(pair[0].to() < pair[1].from(), "{}", category.name());
            }
        }
    }

    #[test]
    fn the_groups_api_md_and_the_issue_name_exist() {
        let table = shipped();
        for name in [
            "grocery",
            "gas",
            "restaurants",
            "travel",
            "entertainment",
            "gambling",
            "cash",
            "money_transfer",
            "quasi_cash",
            "digital_goods",
            "utilities",
            "healthcare",
            "retail",
            "transport",
        ] {
            assert_eq!(table.get(name).unwrap().name(), name);
        }
        assert!(table.names().contains(&"grocery"));
        assert_eq!(table.names().len(), table.categories().count());
    }

    #[test]
    fn groups_hold_the_iso_18245_codes_they_are_named_for() {
        let table = shipped();
        let cases: [(&str, &[u16], &[u16]); 10] = [
            ("grocery", &[5411, 5499], &[5412, 5812]),
            ("gas", &[5541, 5542], &[5983]),
            ("restaurants", &[5812, 5814], &[5411]),
            (
                "travel",
                &[
                    3000, 3350, 3351, 3500, 3501, 3999, 4111, 4112, 4121, 4131, 4411, 4511, 4722,
                    7011, 7512,
                ],
                &[2999, 4000, 5812],
            ),
            ("gambling", &[7995, 7800, 7801, 7802], &[7803, 7996]),
            ("cash", &[6010, 6011], &[6012]),
            ("quasi_cash", &[6012, 6051, 6540, 4829], &[6011]),
            ("digital_goods", &[5815, 5816, 5817, 5818], &[5814, 5819]),
            ("healthcare", &[8011, 8062, 8099, 5912], &[8100, 8211]),
            (
                "retail",
                &[5300, 5311, 5399, 5611, 5699, 5999],
                &[5400, 5610],
            ),
        ];
        for (name, inside, outside) in cases {
            let category = table.get(name).unwrap();
            for code in inside {
                assert!(category.contains(mcc(*code)), "{name} lacks {code}");
            }
            for code in outside {
                assert!(!category.contains(mcc(*code)), "{name} holds {code}");
            }
        }
        assert!(table.get("utilities").unwrap().contains(mcc(4900)));
        assert!(table.get("transport").unwrap().contains(mcc(4789)));
        assert!(table.get("entertainment").unwrap().contains(mcc(7832)));
        assert!(!table.get("entertainment").unwrap().contains(mcc(7995)));
    }

    #[test]
    fn groups_of_an_mcc_lists_every_group_holding_it() {
        let table = shipped();
        assert_eq!(names(table.groups_of(mcc(4111))), ["transport", "travel"]);
        assert_eq!(
            names(table.groups_of(mcc(4829))),
            ["money_transfer", "quasi_cash"]
        );
        assert_eq!(names(table.groups_of(mcc(5411))), ["grocery"]);
        assert_eq!(names(table.groups_of(mcc(3456))), ["travel"]);
        assert!(table.groups_of(mcc(0)).is_empty());
        assert!(table.groups_of(mcc(9999)).is_empty());
    }

    #[test]
    fn an_unknown_group_name_is_an_error() {
        let table = shipped();
        assert_eq!(
            table.get("casinos"),
            Err(CategoryError::UnknownCategory("casinos".to_owned()))
        );
        assert!(table.get("Grocery").is_err());
        assert!(table.get("").is_err());
        let long = "x".repeat(100);
        let CategoryError::UnknownCategory(shown) = table.get(&long).unwrap_err() else {
            panic!("not an unknown category");
        };
        assert!(shown.chars().count() <= MAX_ECHO_CHARS + 1);
    }

    #[test]
    fn a_malformed_table_is_refused_naming_the_line() {
        let header = "# comment\ngroup,from_mcc,to_mcc,description\n";
        let cases = [
            ("Grocery,5411,5411,x", 3, "group"),
            ("grocery,541,541,x", 3, "from_mcc"),
            ("grocery,5411,54111,x", 3, "to_mcc"),
            ("grocery,5412,5411,x", 3, "after"),
            ("grocery,5411,5411,", 3, "description"),
            ("grocery,5411,5420,x\ngrocery,5420,5430,y", 4, "ascending"),
            ("grocery,5411,5420,x\ngrocery,5400,5400,y", 4, "ascending"),
            ("grocery,5411,5411", 3, "fields"),
        ];
        for (rows, line, says) in cases {
            let err = CategoryTable::parse(&format!("{header}{rows}\n")).unwrap_err();
            let CategoryError::Table { line: at, message } = &err else {
                panic!("{rows}: {err:?}");
            };
            assert_eq!(*at, line, "{rows}: {message}");
            assert!(message.contains(says), "{rows}: {message}");
        }
        assert!(CategoryTable::parse(header).is_err());
        assert!(CategoryTable::parse("grp,from,to,description\na,0001,0001,x\n").is_err());
    }

    #[test]
    fn a_small_table_parses_ranges_in_the_order_given() {
        let table = CategoryTable::parse(
            "group,from_mcc,to_mcc,description\n\
             b,0001,0002,\"one, two\"\n\
             a,0742,0742,vets\n\
             b,0010,0010,ten\n",
        )
        .unwrap();
        assert_eq!(table.names(), ["a", "b"]);
        let b = table.get("b").unwrap();
        assert_eq!(b.ranges().len(), 2);
        assert_eq!(b.ranges()[0].description(), "one, two");
        assert!(b.contains(mcc(2)) && b.contains(mcc(10)) && !b.contains(mcc(5)));
    }

    #[test]
    fn an_mcc_is_four_digits_from_0000_to_9999() {
        assert_eq!(Mcc::parse("0742"), Some(mcc(742)));
        assert_eq!(Mcc::parse("9999").map(Mcc::code), Some(9999));
        assert_eq!(Mcc::parse("0000").map(Mcc::code), Some(0));
        for bad in ["742", "07420", "54 1", "+541", "-541", "", "٥٤١١"] {
            assert_eq!(Mcc::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Mcc::new(10_000), None);
        assert_eq!(mcc(742).to_string(), "0742");
        assert_eq!(format!("{:?}", mcc(742)), "Mcc(0742)");
        assert_eq!(serde_json::to_string(&mcc(742)).unwrap(), "\"0742\"");
    }

    #[test]
    fn mcc_input_takes_strings_and_integers_and_validates_later() {
        let cases = [
            (r#""5411""#, Some(5411)),
            (r#""0742""#, Some(742)),
            ("742", Some(742)),
            ("0", Some(0)),
            ("9999", Some(9999)),
            ("10000", None),
            ("-1", None),
            ("54.11", None),
            ("5411.0", None),
            ("1e3", None),
            ("123456789012345678901234567890", None),
            (r#""742""#, None),
            (r#""abcd""#, None),
        ];
        for (json, expected) in cases {
            let input: MccInput = serde_json::from_str(json).unwrap();
            assert_eq!(input.to_mcc().map(Mcc::code), expected, "{json}");
        }
        assert!(serde_json::from_str::<MccInput>("null").is_err());
        assert!(serde_json::from_str::<MccInput>("[5411]").is_err());
        assert!(serde_json::from_str::<MccInput>(r#"{"a": 1}"#).is_err());
    }
}
