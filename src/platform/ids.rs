//! Prefixed, time-sortable, opaque ids in the TypeID format.
//!
//! An id reads `ptn_01h455vb4pex5vsknk084sn02q`: a per-type prefix, `_`, and the
//! 128-bit UUID in 26 lowercase Crockford base32 characters. New ids are
//! UUIDv7, so sorting the strings (or the stored `uuid` column) sorts by
//! creation time. The prefix makes a partner id impossible to pass where a
//! wallet id is expected, both in Rust (distinct types) and over the API
//! (parsing checks the prefix).

use std::cmp::Ordering;
use std::fmt::{self, Write as _};
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::str::FromStr;

use diesel::deserialize::FromSqlRow;
use diesel::deserialize::{self, FromSql};
use diesel::expression::AsExpression;
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{self, Output, ToSql};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use uuid::Uuid;

use crate::platform::error::FieldError;

/// Number of base32 characters after the prefix: 26 × 5 = 130 bits ≥ 128.
pub const SUFFIX_LEN: usize = 26;

/// Lowercase Crockford base32 (no i, l, o, u), as fixed by the TypeID spec.
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// Value of one lowercase base32 digit, `None` for anything else (including
/// uppercase and the excluded letters i, l, o, u). Must mirror [`ALPHABET`];
/// a test checks all 256 bytes.
const fn decode_digit(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'h' => Some(byte - b'a' + 10),
        b'j'..=b'k' => Some(byte - b'j' + 18),
        b'm'..=b'n' => Some(byte - b'm' + 20),
        b'p'..=b't' => Some(byte - b'p' + 22),
        b'v'..=b'z' => Some(byte - b'v' + 27),
        _ => None,
    }
}

/// A kind of id: gives the string prefix (and the OpenAPI schema name) that
/// keeps ids of different entities apart. Implement it with [`define_id!`].
pub trait IdKind {
    /// TypeID prefix without the `_`, e.g. `"ptn"`: lowercase ASCII letters
    /// and inner underscores, at most 63 characters (checked by `define_id!`).
    const PREFIX: &'static str;
    /// Name of the OpenAPI component for this id type, e.g. `"PartnerId"`;
    /// must be unique, otherwise schemas of different id kinds collide.
    const SCHEMA_NAME: &'static str;
    /// What an id of this kind names, in words, for messages: `payment`, `webhook endpoint`
    /// ("No such payment.").
    const NOUN: &'static str;
}

/// Whether `prefix` is a valid TypeID prefix (`[a-z]([a-z_]{0,61}[a-z])?`);
/// used by [`define_id!`] to reject bad prefixes at compile time.
#[must_use]
pub const fn is_valid_prefix(prefix: &str) -> bool {
    let bytes = prefix.as_bytes();
    if bytes.is_empty() || bytes.len() > 63 {
        return false;
    }
    if bytes[0] == b'_' || bytes[bytes.len() - 1] == b'_' {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if !(bytes[i].is_ascii_lowercase() || bytes[i] == b'_') {
            return false;
        }
        i += 1;
    }
    true
}

/// Declares an id type in one line: `define_id!(PartnerId, PartnerIdKind, "ptn", "partner");`
/// creates the zero-sized kind `PartnerIdKind` and `pub type PartnerId = Id<PartnerIdKind>;`;
/// the last argument is what such an id names, in words (`"resource"` when left out).
/// An invalid prefix is a compile error.
///
/// The expansion names `$crate::platform::ids`.
#[macro_export]
macro_rules! define_id {
    ($(#[$meta:meta])* $alias:ident, $kind:ident, $prefix:literal) => {
        $crate::define_id!($(#[$meta])* $alias, $kind, $prefix, "resource");
    };
    ($(#[$meta:meta])* $alias:ident, $kind:ident, $prefix:literal, $noun:literal) => {
        #[doc = concat!("Kind marker for `", $prefix, "_…` ids; see [`", stringify!($alias), "`].")]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $kind;

        impl $crate::platform::ids::IdKind for $kind {
            const PREFIX: &'static str = $prefix;
            const SCHEMA_NAME: &'static str = stringify!($alias);
            const NOUN: &'static str = $noun;
        }

        const _: () = assert!(
            $crate::platform::ids::is_valid_prefix($prefix),
            concat!("invalid id prefix \"", $prefix, "\": use lowercase a-z and inner '_' (max 63)")
        );

        $(#[$meta])*
        #[doc = concat!("Id with prefix `", $prefix, "_`, e.g. `", $prefix, "_01h455vb4pex5vsknk084sn02q`.")]
        pub type $alias = $crate::platform::ids::Id<$kind>;
    };
}

/// Lets modules write `use crate::platform::ids::define_id;`.
pub use crate::define_id;

/// Why a string is not a valid id of the expected kind. Messages are safe to
/// return to API clients and never echo the whole input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The string does not start with this kind's `<prefix>_`, e.g. a wallet
    /// id sent where a partner id is expected.
    #[error("expected an id starting with `{expected}_`")]
    WrongPrefix {
        /// The prefix that was required.
        expected: &'static str,
    },
    /// The part after the prefix is not exactly 26 characters.
    #[error("expected {expected} characters after `{prefix}_`, found {found}")]
    WrongLength {
        /// The id kind's prefix.
        prefix: &'static str,
        /// Always [`SUFFIX_LEN`].
        expected: usize,
        /// Characters actually present.
        found: usize,
    },
    /// Ids are lowercase; uppercase is rejected rather than folded so each id
    /// has exactly one spelling.
    #[error("ids are lowercase, found uppercase `{character}`")]
    Uppercase {
        /// The first offending character.
        character: char,
    },
    /// A character outside the base32 alphabet (including i, l, o, u).
    #[error("invalid character `{character}` in id: allowed are 0-9 and a-z except i, l, o, u")]
    InvalidCharacter {
        /// The first offending character.
        character: char,
    },
    /// The first suffix character is above `7`, which would encode more than 128 bits.
    #[error("id suffix must start with 0-7, found `{character}`")]
    SuffixOverflow {
        /// The offending first character.
        character: char,
    },
}

/// A typed id: a UUID that prints and parses as `<prefix>_<base32>`.
///
/// Invariant: the kind `K` is part of the type, so ids of different entities
/// cannot be mixed up; the stored value is just the UUID (a PostgreSQL `uuid`).
#[derive(AsExpression, FromSqlRow)]
#[diesel(sql_type = diesel::sql_types::Uuid)]
pub struct Id<K: IdKind> {
    uuid: Uuid,
    kind: PhantomData<fn() -> K>,
}

impl<K: IdKind> Id<K> {
    /// A fresh UUIDv7 id; later ids compare (and print) greater, so string
    /// order is creation order.
    #[allow(
        clippy::new_without_default,
        reason = "a Default that invents random ids would be surprising"
    )]
    #[must_use]
    pub fn new() -> Self {
        Self::from_uuid(Uuid::now_v7())
    }

    /// Wraps an existing UUID (e.g. read from the database) as this kind of id.
    #[must_use]
    pub const fn from_uuid(uuid: Uuid) -> Self {
        Self {
            uuid,
            kind: PhantomData,
        }
    }

    /// The UUID, as stored in the database.
    #[must_use]
    pub const fn uuid(&self) -> Uuid {
        self.uuid
    }

    /// Parses `<prefix>_<26 lowercase base32 chars>` for this kind exactly.
    pub fn parse(text: &str) -> Result<Self, IdError> {
        // TypeID rule: the suffix never contains '_', so split at the last one.
        let suffix = text
            .rsplit_once('_')
            .filter(|(prefix, _)| *prefix == K::PREFIX)
            .map(|(_, suffix)| suffix)
            .ok_or(IdError::WrongPrefix {
                expected: K::PREFIX,
            })?;
        decode_suffix(suffix, K::PREFIX).map(|value| Self::from_uuid(Uuid::from_u128(value)))
    }

    /// Parses a request field that must hold an id of this kind; otherwise a 400 naming the
    /// field (`is not a wallet id (wal_...)`).
    pub fn parse_field(field: &'static str, text: &str) -> Result<Self, FieldError> {
        Self::parse(text).map_err(|_| {
            FieldError::new(
                field,
                format!("is not a {} id ({}_...)", K::NOUN, K::PREFIX),
            )
        })
    }

    /// Creation time in Unix milliseconds for v7 ids; `None` for other
    /// versions, whose bits carry no time.
    #[must_use]
    pub fn created_at_ms(&self) -> Option<u64> {
        if self.uuid.get_version_num() == 7 {
            u64::try_from(self.uuid.as_u128() >> 80).ok()
        } else {
            None
        }
    }
}

/// Encodes 128 bits as 26 base32 digits, most significant first; the first
/// digit holds the top 3 bits, so it is always 0..=7.
fn encode_suffix(value: u128) -> [u8; SUFFIX_LEN] {
    let mut out = [0_u8; SUFFIX_LEN];
    let mut shift = 5 * SUFFIX_LEN;
    for slot in &mut out {
        shift -= 5;
        let five_bits = (value >> shift).to_le_bytes()[0] & 0x1f;
        *slot = ALPHABET[usize::from(five_bits)];
    }
    out
}

/// Decodes a 26-character suffix; the exact inverse of [`encode_suffix`].
fn decode_suffix(suffix: &str, prefix: &'static str) -> Result<u128, IdError> {
    let found = suffix.chars().count();
    if found != SUFFIX_LEN {
        return Err(IdError::WrongLength {
            prefix,
            expected: SUFFIX_LEN,
            found,
        });
    }
    let mut value: u128 = 0;
    for character in suffix.chars() {
        if character.is_ascii_uppercase() {
            return Err(IdError::Uppercase { character });
        }
        let digit = u8::try_from(character)
            .ok()
            .and_then(decode_digit)
            .ok_or(IdError::InvalidCharacter { character })?;
        value = (value << 5) | u128::from(digit);
    }
    // The length check made every char one byte, so the first char is the
    // top 5 of 130 bits; above '7' the top two would be lost by the shifts.
    match suffix.chars().next() {
        Some(character @ '8'..='z') => Err(IdError::SuffixOverflow { character }),
        _ => Ok(value),
    }
}

impl<K: IdKind> fmt::Display for Id<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(K::PREFIX)?;
        f.write_char('_')?;
        encode_suffix(self.uuid.as_u128())
            .into_iter()
            .try_for_each(|byte| f.write_char(char::from(byte)))
    }
}

impl<K: IdKind> fmt::Debug for Id<K> {
    /// The prefixed string, so logs show the same text as the API.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<K: IdKind> FromStr for Id<K> {
    type Err = IdError;

    /// Same rules as [`Id::parse`].
    fn from_str(text: &str) -> Result<Self, IdError> {
        Self::parse(text)
    }
}

// Manual impls: derives would demand `K: Clone`, `K: PartialEq`, ... even
// though only the UUID is compared, copied or hashed.

impl<K: IdKind> Clone for Id<K> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K: IdKind> Copy for Id<K> {}

impl<K: IdKind> PartialEq for Id<K> {
    fn eq(&self, other: &Self) -> bool {
        self.uuid == other.uuid
    }
}

impl<K: IdKind> Eq for Id<K> {}

impl<K: IdKind> Hash for Id<K> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.uuid.hash(state);
    }
}

impl<K: IdKind> PartialOrd for Id<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<K: IdKind> Ord for Id<K> {
    /// UUID byte order, which equals the order of the printed strings.
    fn cmp(&self, other: &Self) -> Ordering {
        self.uuid.cmp(&other.uuid)
    }
}

impl<K: IdKind> Serialize for Id<K> {
    /// Serialized as the prefixed string, never the raw UUID.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de, K: IdKind> Deserialize<'de> for Id<K> {
    /// Deserialized through [`Id::parse`], so the prefix is enforced.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IdVisitor<K>(PhantomData<fn() -> K>);

        impl<K: IdKind> Visitor<'_> for IdVisitor<K> {
            type Value = Id<K>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    "an id string like `{}_01h455vb4pex5vsknk084sn02q`",
                    K::PREFIX
                )
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Id<K>, E> {
                Id::parse(text).map_err(E::custom)
            }
        }

        deserializer.deserialize_str(IdVisitor(PhantomData))
    }
}

impl<K: IdKind> ToSql<diesel::sql_types::Uuid, Pg> for Id<K> {
    /// Stored as the plain UUID; the prefix lives only in the type.
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        <Uuid as ToSql<diesel::sql_types::Uuid, Pg>>::to_sql(&self.uuid, out)
    }
}

impl<K: IdKind> FromSql<diesel::sql_types::Uuid, Pg> for Id<K> {
    /// Any stored UUID is a valid id of the column's kind.
    fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
        <Uuid as FromSql<diesel::sql_types::Uuid, Pg>>::from_sql(value).map(Self::from_uuid)
    }
}

impl<K: IdKind> utoipa::PartialSchema for Id<K> {
    /// A string with this kind's prefix; the pattern lets clients validate ids.
    fn schema() -> RefOr<Schema> {
        let example = format!("{}_01h455vb4pex5vsknk084sn02q", K::PREFIX);
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(format!("Prefixed id, e.g. {example}")))
            .pattern(Some(format!(
                "^{}_[0-7][0-9a-hjkmnp-tv-z]{{25}}$",
                K::PREFIX
            )))
            .examples([example])
            .into()
    }
}

impl<K: IdKind> utoipa::ToSchema for Id<K> {
    /// Per-kind name, so `PartnerId` and `WalletId` get separate components
    /// (the default would call every kind `Id`).
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed(K::SCHEMA_NAME)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    crate::define_id!(PartnerId, PartnerIdKind, "ptn");
    crate::define_id!(WalletId, WalletIdKind, "wal");
    crate::define_id!(LedgerEntryId, LedgerEntryIdKind, "ledger_entry");

    fn suffix_of(uuid: &str) -> String {
        let value = Uuid::parse_str(uuid).unwrap().as_u128();
        String::from_utf8(encode_suffix(value).to_vec()).unwrap()
    }

    proptest! {
        #[test]
        fn any_128_bit_value_survives_encoding_and_decoding(value in any::<u128>()) {
            let suffix = String::from_utf8(encode_suffix(value).to_vec()).unwrap();
            prop_assert_eq!(decode_suffix(&suffix, "ptn"), Ok(value));

            let id = PartnerId::from_uuid(Uuid::from_u128(value));
            let text = id.to_string();
            prop_assert_eq!(text.len(), "ptn".len() + 1 + SUFFIX_LEN);
            prop_assert_eq!(PartnerId::parse(&text), Ok(id));
        }

        #[test]
        fn string_order_of_encodings_matches_numeric_order(a in any::<u128>(), b in any::<u128>()) {
            prop_assert_eq!(encode_suffix(a).cmp(&encode_suffix(b)), a.cmp(&b));
            let (ida, idb) = (PartnerId::from_uuid(Uuid::from_u128(a)), PartnerId::from_uuid(Uuid::from_u128(b)));
            prop_assert_eq!(ida.to_string().cmp(&idb.to_string()), ida.cmp(&idb));
        }

        #[test]
        fn suffixes_starting_above_seven_are_rejected(rest in "[0-9a-hjkmnp-tv-z]{25}", first in "[89a-hjkmnp-tv-z]") {
            let text = format!("ptn_{first}{rest}");
            let rejected = matches!(PartnerId::parse(&text), Err(IdError::SuffixOverflow { .. }));
            prop_assert!(rejected, "{} was accepted", text);
        }
    }

    #[test]
    fn decoding_accepts_exactly_the_alphabet() {
        for byte in 0..=u8::MAX {
            let position = ALPHABET.iter().position(|&b| b == byte);
            assert_eq!(decode_digit(byte).map(usize::from), position, "byte {byte}");
        }
    }

    #[test]
    fn typeid_spec_vectors_encode_exactly() {
        let vectors = [
            (
                "00000000-0000-0000-0000-000000000000",
                "00000000000000000000000000",
            ),
            (
                "00000000-0000-0000-0000-000000000001",
                "00000000000000000000000001",
            ),
            (
                "0110c853-1d09-52d8-d73e-1194e95b5f19",
                "0123456789abcdefghjkmnpqrs",
            ),
            (
                "ffffffff-ffff-ffff-ffff-ffffffffffff",
                "7zzzzzzzzzzzzzzzzzzzzzzzzz",
            ),
            (
                "01890a5d-ac96-774b-bcce-b302099a8057",
                "01h455vb4pex5vsknk084sn02q",
            ),
        ];
        for (uuid, suffix) in vectors {
            assert_eq!(suffix_of(uuid), suffix, "{uuid}");
            let parsed = PartnerId::parse(&format!("ptn_{suffix}")).unwrap();
            assert_eq!(parsed.uuid(), Uuid::parse_str(uuid).unwrap());
        }
    }

    #[test]
    fn ids_made_in_sequence_sort_in_creation_order() {
        let ids: Vec<PartnerId> = (0..1000).map(|_| PartnerId::new()).collect();
        let strings: Vec<String> = ids.iter().map(ToString::to_string).collect();
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(strings.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn new_ids_are_v7_and_report_their_creation_time() {
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let id = PartnerId::new();
        let created = u128::from(id.created_at_ms().unwrap());
        assert_eq!(id.uuid().get_version_num(), 7);
        assert!(
            created >= before && created <= before + 5_000,
            "{created} vs {before}"
        );
        assert_eq!(PartnerId::from_uuid(Uuid::nil()).created_at_ms(), None);
    }

    #[test]
    fn ids_of_another_kind_or_without_prefix_are_rejected() {
        let wallet = WalletId::new().to_string();
        let expected = Err(IdError::WrongPrefix { expected: "ptn" });
        assert_eq!(PartnerId::parse(&wallet), expected);
        assert_eq!(PartnerId::parse("01h455vb4pex5vsknk084sn02q"), expected);
        assert_eq!(PartnerId::parse("ptn01h455vb4pex5vsknk084sn02q"), expected);
        assert_eq!(PartnerId::parse("PTN_01h455vb4pex5vsknk084sn02q"), expected);
        assert_eq!(
            PartnerId::parse("ptnx_01h455vb4pex5vsknk084sn02q"),
            expected
        );
        assert_eq!(
            PartnerId::parse("ptn__01h455vb4pex5vsknk084sn02q"),
            expected
        );
        assert_eq!(
            PartnerId::parse("ptn_01h455vb4pex5vsknk084sn02q_"),
            expected
        );
        assert_eq!(
            IdError::WrongPrefix { expected: "ptn" }.to_string(),
            "expected an id starting with `ptn_`"
        );
    }

    #[test]
    fn suffixes_of_the_wrong_length_are_rejected() {
        for (text, found) in [
            ("ptn_", 0),
            ("ptn_01h455vb4pex5vsknk084sn02", 25),
            ("ptn_01h455vb4pex5vsknk084sn02qq", 27),
        ] {
            assert_eq!(
                PartnerId::parse(text),
                Err(IdError::WrongLength {
                    prefix: "ptn",
                    expected: 26,
                    found
                }),
                "{text}"
            );
        }
    }

    #[test]
    fn uppercase_and_foreign_characters_are_rejected() {
        assert_eq!(
            PartnerId::parse("ptn_01H455VB4PEX5VSKNK084SN02Q"),
            Err(IdError::Uppercase { character: 'H' })
        );
        for bad in ['i', 'l', 'o', 'u', '-', ' ', 'é', '\u{0}'] {
            let text = format!("ptn_01h455vb4pex5vsknk084sn02{bad}");
            assert_eq!(
                PartnerId::parse(&text),
                Err(IdError::InvalidCharacter { character: bad }),
                "{text:?}"
            );
        }
        assert_eq!(
            PartnerId::parse("ptn_81h455vb4pex5vsknk084sn02q"),
            Err(IdError::SuffixOverflow { character: '8' })
        );
    }

    #[test]
    fn ids_serialize_as_prefixed_strings_and_debug_matches_display() {
        let id = PartnerId::parse("ptn_01h455vb4pex5vsknk084sn02q").unwrap();
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            r#""ptn_01h455vb4pex5vsknk084sn02q""#
        );
        assert_eq!(
            serde_json::from_str::<PartnerId>(r#""ptn_01h455vb4pex5vsknk084sn02q""#).unwrap(),
            id
        );
        assert_eq!(format!("{id:?}"), "ptn_01h455vb4pex5vsknk084sn02q");
        assert_eq!(
            "ptn_01h455vb4pex5vsknk084sn02q".parse::<PartnerId>(),
            Ok(id)
        );
        let error =
            serde_json::from_str::<WalletId>(r#""ptn_01h455vb4pex5vsknk084sn02q""#).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("expected an id starting with `wal_`"),
            "{error}"
        );
    }

    #[test]
    fn a_field_that_holds_no_id_of_the_kind_is_a_field_error_naming_it() {
        crate::define_id!(CustomerId, CustomerIdKind, "cus", "customer");
        let id = CustomerId::new();
        assert_eq!(
            CustomerId::parse_field("customer_id", &id.to_string()),
            Ok(id)
        );
        let err = CustomerId::parse_field("customer_id", &WalletId::new().to_string()).unwrap_err();
        assert_eq!(err.field, "customer_id");
        assert_eq!(err.message, "is not a customer id (cus_...)");
        assert_eq!(<PartnerIdKind as IdKind>::NOUN, "resource");
    }

    #[test]
    fn prefixes_may_contain_inner_underscores() {
        let id = LedgerEntryId::new();
        let text = id.to_string();
        assert!(text.starts_with("ledger_entry_"));
        assert_eq!(LedgerEntryId::parse(&text), Ok(id));
    }

    #[test]
    fn prefix_validation_follows_the_typeid_rules() {
        assert!(is_valid_prefix("ptn"));
        assert!(is_valid_prefix("ledger_entry"));
        for bad in ["", "Ptn", "ptn_", "_ptn", "pt1", "pt-n", &"a".repeat(64)] {
            assert!(!is_valid_prefix(bad), "{bad}");
        }
    }

    #[test]
    fn id_schema_is_a_prefixed_string_with_a_per_kind_name() {
        use utoipa::{PartialSchema, ToSchema};
        let schema = serde_json::to_value(PartnerId::schema()).unwrap();
        assert_eq!(schema["type"], "string");
        assert_eq!(
            schema["description"],
            "Prefixed id, e.g. ptn_01h455vb4pex5vsknk084sn02q"
        );
        assert_eq!(PartnerId::name(), "PartnerId");
        assert_eq!(WalletId::name(), "WalletId");

        #[derive(utoipa::ToSchema)]
        #[allow(dead_code)]
        struct PartnerResponse {
            id: PartnerId,
            wallet: WalletId,
        }
        let mut components = Vec::new();
        <PartnerResponse as ToSchema>::schemas(&mut components);
        let names: Vec<&str> = components.iter().map(|(name, _)| name.as_str()).collect();
        assert!(
            names.contains(&"PartnerId") && names.contains(&"WalletId"),
            "{names:?}"
        );
    }

    mod schema {
        diesel::table! {
            partners (id) {
                id -> Uuid,
                wallet_id -> Nullable<Uuid>,
                name -> Text,
            }
        }
    }

    #[derive(
        diesel::prelude::Insertable, diesel::prelude::Queryable, diesel::prelude::Selectable, Debug,
    )]
    #[diesel(table_name = schema::partners, check_for_backend(diesel::pg::Pg))]
    #[allow(dead_code)]
    struct PartnerRow {
        id: PartnerId,
        wallet_id: Option<WalletId>,
        name: String,
    }

    #[test]
    fn ids_bind_as_uuids_in_diesel_queries_and_inserts() {
        use diesel::prelude::*;
        use schema::partners;

        let id = PartnerId::parse("ptn_01h455vb4pex5vsknk084sn02q").unwrap();
        let select = partners::table
            .filter(partners::id.eq(id))
            .filter(partners::wallet_id.eq(WalletId::from_uuid(Uuid::nil())))
            .select(PartnerRow::as_select());
        let sql = diesel::debug_query::<diesel::pg::Pg, _>(&select).to_string();
        assert!(sql.contains("WHERE"), "{sql}");
        assert!(sql.contains("ptn_01h455vb4pex5vsknk084sn02q"), "{sql}");

        let row = PartnerRow {
            id,
            wallet_id: None,
            name: "Acme".to_owned(),
        };
        let insert = diesel::insert_into(partners::table).values(&row);
        let sql = diesel::debug_query::<diesel::pg::Pg, _>(&insert).to_string();
        assert!(sql.starts_with("INSERT INTO \"partners\""), "{sql}");

        let by_ids = partners::table.filter(partners::id.eq_any(vec![id, PartnerId::new()]));
        let sql = diesel::debug_query::<diesel::pg::Pg, _>(&by_ids).to_string();
        assert!(sql.contains("= ANY("), "{sql}");
    }
}
