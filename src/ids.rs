//! The identifiers and the timestamp that cross module boundaries: event ids,
//! bundle ids and targets as an executor sends them, and the one normalized
//! timestamp form of the log. Each is a string that passed its rules when it
//! was built ([`EventId::new`], [`Timestamp::normalize`], ...), so a function
//! that takes one need not check it again, and a bundle id cannot be passed
//! where an event id is meant. It owns those rules and nothing else.
//!
//! Values read back from the log were checked when they were appended; the
//! stored record keeps plain strings (see `log::record`).

use chrono::format::{Item, Parsed, StrftimeItems};
use chrono::{DateTime, Datelike, NaiveDateTime, SecondsFormat, Timelike, Utc};
use serde::Serialize;
use std::fmt;

/// Longest accepted id (event_id, bundle_id, target, actor_id), in bytes.
pub const MAX_ID_BYTES: usize = 256;

/// Why a string is not a valid id. The message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IdError(pub String);

/// The rules every sender-chosen id follows: not empty, at most
/// [`MAX_ID_BYTES`] bytes, no control characters.
pub(crate) fn check_id(field: &str, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError(format!("{field} must not be empty")));
    }
    if value.len() > MAX_ID_BYTES {
        return Err(IdError(format!(
            "{field} is {} bytes long; at most {MAX_ID_BYTES} are allowed",
            value.len()
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(IdError(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Checks `value` against the id rules (not empty, at most
            #[doc = concat!("[`MAX_ID_BYTES`] bytes, no control characters); the error names `", $field, "`.")]
            pub fn new(value: impl Into<String>) -> Result<$name, IdError> {
                let value = value.into();
                check_id($field, &value)?;
                Ok($name(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

id_type!(
    /// An event's id (`event_id`): chosen by the sender, permanent, one per
    /// stored event.
    EventId,
    "event_id"
);
id_type!(
    /// A bundle's id (`bundle_id`): the key of ingest idempotency.
    BundleId,
    "bundle_id"
);
id_type!(
    /// What a bundle is about (`target`, e.g. a repository): recorded in every
    /// event of the bundle.
    Target,
    "target"
);

/// A graph node's id, as a projector names it in its ops (`put-node`,
/// `merge-node`, `delete-node`, and an edge's `from`/`to`). Built once, where a
/// projector's output enters the host ([`NodeId::new`]): it is never empty.
/// Its length cap (`graph::MAX_ID_BYTES`) is the graph store's key limit and is
/// checked when the op is applied (`graph::Staging::apply`, a `graph_op`
/// failure naming the op's place in the event), as before this type existed.
///
/// Node ids read back from the graph store were checked when they were
/// written, and are not checked again; the stored and wire form is the bare
/// string.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct NodeId(String);

impl NodeId {
    /// Checks that `value` is not empty; the error is `"{what} is empty"`,
    /// where `what` names the op field (`node id`, `edge from`, `edge to`).
    pub fn new(what: &str, value: impl Into<String>) -> Result<NodeId, IdError> {
        let value = value.into();
        if value.is_empty() {
            return Err(IdError(format!("{what} is empty")));
        }
        Ok(NodeId(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::ops::Deref for NodeId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for NodeId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for NodeId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl PartialEq<str> for NodeId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for NodeId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl From<NodeId> for String {
    fn from(id: NodeId) -> String {
        id.0
    }
}

/// The forms of a timestamp without an offset (as Python's `isoformat()`
/// writes them), in the order they are tried.
const NAIVE_FORMAT_STRINGS: [&str; 2] = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"];

/// [`NAIVE_FORMAT_STRINGS`] parsed once: `NaiveDateTime::parse_from_str`
/// parses its format string again on every call, two thirds of normalizing
/// such a timestamp (docs/BENCHMARKS.md, session 31).
static NAIVE_FORMATS: std::sync::LazyLock<[Vec<Item<'static>>; 2]> =
    std::sync::LazyLock::new(|| {
        NAIVE_FORMAT_STRINGS.map(|f| {
            StrftimeItems::new(f)
                .parse_to_owned()
                .expect("a valid strftime format")
        })
    });

/// `NaiveDateTime::parse_from_str(value, format)` with the format's items
/// already parsed: the same parser, the same result.
fn parse_naive(value: &str, items: &[Item<'static>]) -> Option<NaiveDateTime> {
    let mut parsed = Parsed::new();
    chrono::format::parse(&mut parsed, value, items.iter()).ok()?;
    parsed.to_naive_datetime_with_offset(0).ok()
}

/// An event time in the log's one normalized form: RFC 3339, UTC, `Z`, at
/// most microsecond precision, trailing zero groups of the fraction dropped
/// (`.5` → `.500`). The only constructor is [`Timestamp::normalize`].
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Timestamp(String);

impl Timestamp {
    /// Parses an RFC 3339 timestamp (`T` or space; fraction optional; offset
    /// optional — a time without one, as Python's `isoformat()` writes it, is
    /// UTC) into the normalized form.
    pub fn normalize(value: &str) -> Result<Timestamp, String> {
        let parsed: Option<DateTime<Utc>> = DateTime::parse_from_rfc3339(value)
            .ok()
            .map(|d| d.with_timezone(&Utc))
            .or_else(|| {
                NAIVE_FORMATS
                    .iter()
                    .find_map(|items| parse_naive(value, items))
                    .map(|n| n.and_utc())
            });
        let Some(dt) = parsed else {
            return Err(format!(
                "timestamp {:?} is not an RFC 3339 date-time such as \"2026-01-24T10:00:00Z\" \
                 (an offset is optional; without one the time is read as UTC)",
                value.chars().take(64).collect::<String>()
            ));
        };
        // RFC 3339 has four-digit years: an offset that moves the instant
        // out of 0000..=9999 in UTC would be stored as `-0001-…` or
        // `+10000-…`, which is no RFC 3339 (nor readable back).
        if !(0..=9999).contains(&dt.year()) {
            return Err(format!(
                "timestamp {:?} is outside the years 0000–9999 once converted to UTC",
                value.chars().take(64).collect::<String>()
            ));
        }
        let micros = dt.nanosecond() / 1000 * 1000;
        let dt = dt.with_nanosecond(micros).unwrap_or(dt);
        Ok(Timestamp(dt.to_rfc3339_opts(SecondsFormat::AutoSi, true)))
    }

    /// A stored record's timestamp as the log holds it, for reading a record
    /// back (an export being imported or replayed): the form this version's
    /// [`Timestamp::normalize`] gives, or else the text as stored. Earlier
    /// versions stored some times that normalize now refuses at ingest (a
    /// year outside 0000–9999 once in UTC, `-0001-12-31T23:30:00Z`); the
    /// record's hash covers the text, so it is read as written, never
    /// refused (the caller checks that the record encodes back to its bytes).
    pub fn as_stored(value: &str) -> Timestamp {
        match Timestamp::normalize(value) {
            Ok(t) if t.0 == value => t,
            _ => Timestamp(value.to_owned()),
        }
    }

    /// Whether this is a leap second (`:60`). Ingest refuses them (the
    /// original read times with Python's `datetime`, which has none, and
    /// chrono accepts `:60` at any minute); records already stored with one
    /// still read.
    pub fn is_leap_second(&self) -> bool {
        self.0.get(17..19) == Some("60")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Timestamp {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_rules_and_name_their_field() {
        assert_eq!(EventId::new("e1").unwrap().as_str(), "e1");
        assert_eq!(
            BundleId::new("").unwrap_err().to_string(),
            "bundle_id must not be empty"
        );
        assert!(Target::new("x".repeat(MAX_ID_BYTES)).is_ok());
        assert!(Target::new("x".repeat(MAX_ID_BYTES + 1))
            .unwrap_err()
            .to_string()
            .starts_with("target is 257 bytes long"));
        assert!(EventId::new("a\nb").is_err());
        // The wire form is the bare string.
        assert_eq!(
            serde_json::to_string(&EventId::new("é").unwrap()).unwrap(),
            "\"é\""
        );
    }

    #[test]
    fn node_ids_are_never_empty_and_stay_bare_strings() {
        assert_eq!(
            NodeId::new("edge from", "").unwrap_err().to_string(),
            "edge from is empty"
        );
        let id = NodeId::new("node id", "task:t1").unwrap();
        assert_eq!(id, "task:t1");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"task:t1\"");
        let back: NodeId = serde_json::from_str("\"task:t1\"").unwrap();
        assert_eq!(back, id);
    }

    #[test]
    fn timestamps_normalize_to_one_utc_form() {
        for (input, want) in [
            ("2026-01-24T10:00:00Z", "2026-01-24T10:00:00Z"),
            ("2026-01-24T10:00:00", "2026-01-24T10:00:00Z"),
            ("2026-01-24 10:00:00.123456", "2026-01-24T10:00:00.123456Z"),
            ("2026-01-24T12:00:00+02:00", "2026-01-24T10:00:00Z"),
            ("2026-01-24T10:00:09.5", "2026-01-24T10:00:09.500Z"),
            (
                "2026-01-24T10:00:00.1234567891Z",
                "2026-01-24T10:00:00.123456Z",
            ),
        ] {
            assert_eq!(
                Timestamp::normalize(input).unwrap().as_str(),
                want,
                "{input}"
            );
        }
        for bad in [
            "yesterday",
            "2026-01-24",
            "1706090400",
            "2026-13-01T00:00:00Z",
            "",
            // Outside 0000..=9999 once in UTC.
            "0000-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-23:59",
        ] {
            assert!(Timestamp::normalize(bad).is_err(), "{bad}");
        }
        for edge in ["0000-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z"] {
            assert_eq!(Timestamp::normalize(edge).unwrap().as_str(), edge);
        }
        // A leap second normalizes (a stored record with one still reads),
        // and says so (ingest refuses it).
        let leap = Timestamp::normalize("2016-12-31T23:59:60+01:00").unwrap();
        assert_eq!(leap.as_str(), "2016-12-31T22:59:60Z");
        assert!(leap.is_leap_second());
        assert!(!Timestamp::normalize("2016-12-31T23:59:59Z")
            .unwrap()
            .is_leap_second());
    }

    #[test]
    fn the_preparsed_naive_formats_parse_as_chrono_parses_them() {
        for input in [
            "2026-01-24T10:00:00",
            "2026-01-24 10:00:00.123456",
            "2026-01-24T10:00:09.5",
            "2026-01-24T10:00:00.1234567891",
            "2026-01-24T23:59:60.5",
            "2026-02-30T10:00:00",
            "2026-01-24T10:00",
            "2026-01-24T10:00:00Z",
            "2026-01-24T10:00:00 ",
            "2026-01-24T10:00:00.",
            "+12026-01-24T10:00:00",
            "2026-1-4T1:2:3",
            "",
        ] {
            for (items, format) in NAIVE_FORMATS.iter().zip(NAIVE_FORMAT_STRINGS) {
                assert_eq!(
                    parse_naive(input, items),
                    NaiveDateTime::parse_from_str(input, format).ok(),
                    "{input:?} with {format}"
                );
            }
        }
    }
}
