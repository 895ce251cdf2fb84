//! The stored event record and its canonical encoding: the exact bytes that are
//! hashed into the chain (see docs/HASHING.md). It owns the encoding and decoding
//! of one record and never touches storage.
//!
//! The hashed form of an event is the RFC 8785 (JCS) canonical JSON of the object
//! `{actor_id, event_id, event_type, payload, prev_hash, seq, target, timestamp}`;
//! its SHA-256 is the event's `hash`. JCS sorts keys, so the object is the
//! concatenation of canonical pieces in that key order. Everything but
//! `prev_hash` and `seq` is known before the writer takes the event, so a draft
//! holds it pre-encoded and the writer only splices in the chain fields.

use crate::digest::Sha256;
use crate::ids::{EventId, Target, Timestamp};
use crate::jcs::CanonicalJson;
use crate::seq::Seq;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// An artifact reference carried by a bundle (`artifacts[]` of an ingest body).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactRef {
    pub sha256: Sha256,
    pub kind: String,
    pub uri: String,
    pub size: u64,
}

impl ArtifactRef {
    /// The bytes this reference contributes to its bundle's digest: the JSON
    /// object `{"sha256":<hex>,"kind":<string>,"uri":<string>,"size":<integer>}`
    /// with exactly these keys in this order, no whitespace, the digest as 64
    /// lowercase hex characters and strings escaped as RFC 8785 escapes them
    /// (`\"`, `\\`, `\b \f \n \r \t`, other control characters as
    /// `\u00xx`, everything else as is). These are the bytes
    /// `serde_json::to_vec` gave for this struct when bundle digests were first
    /// stored, written out field by field so that they never depend on the
    /// struct's field names or order again.
    pub fn digest_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.kind.len() + self.uri.len() + 120);
        out.extend_from_slice(b"{\"sha256\":\"");
        self.sha256.write_hex(&mut out);
        out.extend_from_slice(b"\",\"kind\":");
        crate::jcs::write_str(&self.kind, &mut out);
        out.extend_from_slice(b",\"uri\":");
        crate::jcs::write_str(&self.uri, &mut out);
        out.extend_from_slice(b",\"size\":");
        out.extend_from_slice(self.size.to_string().as_bytes());
        out.push(b'}');
        out
    }
}

/// An accepted event before it has a place in the log.
#[derive(Debug, Clone)]
pub struct EventDraft {
    pub event_id: EventId,
    pub event_type: String,
    pub timestamp: Timestamp,
    pub actor_id: Option<String>,
    /// `payload.attempt_id` when it is a string: feeds the attempt index.
    pub attempt_id: Option<String>,
    /// SHA-256 of the canonical event content (everything the sender chose:
    /// event_id, event_type, timestamp, actor_id, payload): two sends of the same
    /// event have the same content digest.
    pub content_digest: Sha256,
    /// `{"actor_id":…,"event_id":…,"event_type":…,"payload":…`
    head: String,
    /// Byte range of the payload's canonical JSON inside `head`.
    payload_at: std::ops::Range<usize>,
    /// `,"target":…,"timestamp":…}`
    tail: String,
}

const PAYLOAD_KEY: &str = ",\"payload\":";

/// A JSON string in RFC 8785 form (`crate::jcs`, as the payload is).
fn jcs_str(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len() + 2);
    crate::jcs::write_str(s, &mut out);
    String::from_utf8(out).expect("JCS of a string is UTF-8")
}

impl EventDraft {
    /// `payload` is the canonical JSON of the event's payload (an object).
    pub fn new(
        event_id: EventId,
        event_type: String,
        timestamp: Timestamp,
        actor_id: Option<String>,
        attempt_id: Option<String>,
        target: &Target,
        payload: &CanonicalJson,
    ) -> EventDraft {
        let payload_canonical = payload.as_str();
        let mut head = String::with_capacity(payload_canonical.len() + 128);
        head.push_str("{\"actor_id\":");
        match &actor_id {
            Some(a) => head.push_str(&jcs_str(a)),
            None => head.push_str("null"),
        }
        head.push_str(",\"event_id\":");
        head.push_str(&jcs_str(&event_id));
        head.push_str(",\"event_type\":");
        head.push_str(&jcs_str(&event_type));
        head.push_str(PAYLOAD_KEY);
        let start = head.len();
        head.push_str(payload_canonical);
        let payload_at = start..head.len();
        let ts = jcs_str(&timestamp);
        let tail = format!(",\"target\":{},\"timestamp\":{}}}", jcs_str(target), ts);
        // Content: the head plus the timestamp, which together are the event as sent.
        let content_digest = Sha256::of_parts(&[head.as_bytes(), b"\0", ts.as_bytes()]);
        EventDraft {
            event_id,
            event_type,
            timestamp,
            actor_id,
            attempt_id,
            content_digest,
            head,
            payload_at,
            tail,
        }
    }

    /// The same draft with a `legacy` member (an imported event's original
    /// hash and the text it covered, see docs/HASHING.md): JCS puts it
    /// between `event_type` and `payload`, so the record stays the JCS of
    /// the whole object, and events without it are encoded as before.
    pub fn with_legacy(mut self, legacy: &CanonicalJson) -> EventDraft {
        let at = self.payload_at.start - PAYLOAD_KEY.len();
        let insert = format!(",\"legacy\":{}", legacy.as_str());
        self.head.insert_str(at, &insert);
        self.payload_at = self.payload_at.start + insert.len()..self.payload_at.end + insert.len();
        let ts = jcs_str(&self.timestamp);
        self.content_digest = Sha256::of_parts(&[self.head.as_bytes(), b"\0", ts.as_bytes()]);
        self
    }

    /// The draft a stored record was encoded from, rebuilt from its bytes
    /// (an export being imported). The caller checks that
    /// [`EventDraft::encode`] at the record's seq and `prev_hash` gives the
    /// same bytes back: a record this version would not have written so is
    /// refused there.
    pub fn from_record(canonical: &[u8]) -> Result<EventDraft, String> {
        #[derive(Deserialize)]
        struct Fields {
            actor_id: Option<String>,
            event_id: String,
            event_type: String,
            #[serde(default)]
            legacy: Option<serde_json::Value>,
            payload: serde_json::Value,
            target: String,
            timestamp: String,
        }
        let f: Fields = serde_json::from_slice(canonical).map_err(|e| e.to_string())?;
        let event_id = EventId::new(f.event_id).map_err(|e| e.0)?;
        let target = Target::new(f.target).map_err(|e| e.0)?;
        let timestamp = Timestamp::as_stored(&f.timestamp);
        let attempt_id = f
            .payload
            .get("attempt_id")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let draft = EventDraft::new(
            event_id,
            f.event_type,
            timestamp,
            f.actor_id,
            attempt_id,
            &target,
            &CanonicalJson::of(&f.payload),
        );
        Ok(match f.legacy {
            Some(l) => draft.with_legacy(&CanonicalJson::of(&l)),
            None => draft,
        })
    }

    /// The payload as canonical JSON text.
    pub fn payload_json(&self) -> &str {
        &self.head[self.payload_at.clone()]
    }

    /// The canonical bytes of the record at `seq` after `prev_hash`.
    pub fn encode(&self, seq: Seq, prev_hash: Option<&Sha256>) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.head.len() + self.tail.len() + 100);
        out.extend_from_slice(self.head.as_bytes());
        out.extend_from_slice(b",\"prev_hash\":");
        match prev_hash {
            Some(h) => {
                out.push(b'"');
                h.write_hex(&mut out);
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"seq\":");
        crate::jcs::write_digits(seq.0, &mut out);
        out.extend_from_slice(self.tail.as_bytes());
        out
    }
}

/// The stored value of one log entry: `hash (32 bytes) ‖ canonical record`.
pub fn stored_value(hash: &Sha256, canonical: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(32 + canonical.len());
    v.extend_from_slice(hash.as_bytes());
    v.extend_from_slice(canonical);
    v
}

/// Splits a stored value into its hash and canonical record bytes.
pub(crate) fn split_stored(value: &[u8]) -> Option<(Sha256, &[u8])> {
    if value.len() < 32 {
        return None;
    }
    let (h, rest) = value.split_at(32);
    Some((Sha256::from_slice(h)?, rest))
}

/// Reads the top-level `prev_hash` and `seq` from canonical record bytes without
/// parsing the whole record (used by chain verification).
///
/// Safe because of the canonical form: inside a JSON string a `"` is always
/// escaped, so `,"` never occurs in string content; the top-level `prev_hash`
/// key is followed only by `seq` (a number), `target` and `timestamp` (strings),
/// so its occurrence is the last one in the bytes.
pub fn chain_fields(canonical: &[u8]) -> Option<(Option<Sha256>, Seq)> {
    const PREV: &[u8] = b",\"prev_hash\":";
    const SEQ: &[u8] = b",\"seq\":";
    let p = rfind(canonical, PREV)? + PREV.len();
    let rest = &canonical[p..];
    let (prev, after) = if rest.starts_with(b"null") {
        (None, &rest[4..])
    } else if rest.len() >= 66 && rest[0] == b'"' && rest[65] == b'"' {
        let hex = std::str::from_utf8(&rest[1..65]).ok()?;
        (Some(hex.parse().ok()?), &rest[66..])
    } else {
        return None;
    };
    let after = after.strip_prefix(SEQ)?;
    let end = after.iter().position(|b| !b.is_ascii_digit())?;
    let seq = std::str::from_utf8(&after[..end]).ok()?.parse().ok()?;
    Some((prev, Seq(seq)))
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// A record decoded for reading (the API's event shape, without `hash`).
#[derive(Debug, Deserialize)]
pub(crate) struct RecordFields<'a> {
    #[serde(borrow)]
    pub actor_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    pub event_id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    pub event_type: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    pub payload: &'a RawValue,
    pub prev_hash: Option<Sha256>,
    pub seq: Seq,
    #[serde(borrow)]
    pub target: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    pub timestamp: std::borrow::Cow<'a, str>,
}

/// A stored event, decoded: the domain type (the API serves it as
/// `wire::Event`, which converts from it).
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub seq: Seq,
    pub event_id: String,
    pub event_type: String,
    pub timestamp: String,
    pub actor_id: Option<String>,
    pub target: String,
    pub payload: Box<RawValue>,
    pub prev_hash: Option<Sha256>,
    pub hash: Sha256,
}

impl StoredEvent {
    /// Decodes a stored value (`hash ‖ canonical record`).
    pub fn decode(value: &[u8]) -> Result<StoredEvent, DecodeError> {
        let (hash, canonical) = split_stored(value).ok_or(DecodeError::Truncated)?;
        let f: RecordFields<'_> = serde_json::from_slice(canonical).map_err(DecodeError::Json)?;
        Ok(StoredEvent {
            seq: f.seq,
            event_id: f.event_id.into_owned(),
            event_type: f.event_type.into_owned(),
            timestamp: f.timestamp.into_owned(),
            actor_id: f.actor_id.map(|a| a.into_owned()),
            target: f.target.into_owned(),
            payload: f.payload.to_owned(),
            prev_hash: f.prev_hash,
            hash,
        })
    }

    /// The payload parsed, for routes that read fields out of it.
    pub(crate) fn payload_value(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::from_str(self.payload.get()).unwrap_or_default()
    }
}

/// A stored value that cannot be read back: storage corruption.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("stored event is shorter than its hash")]
    Truncated,
    #[error("stored event is not a valid record: {0}")]
    Json(serde_json::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft() -> EventDraft {
        let payload = CanonicalJson::of(&serde_json::json!({
            "z": {"b": 1, "a": [2]}, "k": "é", "n": 1.0, "q": "a\"b,\"prev_hash\":null"
        }));
        EventDraft::new(
            EventId::new("e2").unwrap(),
            "custom.thing".into(),
            Timestamp::normalize("2026-01-24T10:00:09.5Z").unwrap(),
            None,
            None,
            &Target::new("radix").unwrap(),
            &payload,
        )
    }

    /// Earlier versions stored times that ingest refuses now (a year out of
    /// 0000–9999 once in UTC): such a record still reads back, as written,
    /// so an export of an older log imports and replays.
    #[test]
    fn a_record_with_a_timestamp_ingest_refuses_now_reads_back_as_written() {
        let prev = Sha256::of(b"x");
        let bytes = draft().encode(Seq(2), Some(&prev));
        let text = String::from_utf8(bytes).unwrap();
        for stored in [
            "-0001-12-31T23:30:00Z",
            "+10000-01-01T00:30:00Z",
            "2026-01-24T23:59:60Z",
        ] {
            let old = text.replace("2026-01-24T10:00:09.500Z", stored);
            assert_ne!(old, text);
            let back = EventDraft::from_record(old.as_bytes()).unwrap();
            assert_eq!(back.encode(Seq(2), Some(&prev)), old.as_bytes(), "{stored}");
        }
        // A normal one is read in its normalized form, as before.
        let back = EventDraft::from_record(text.as_bytes()).unwrap();
        assert_eq!(back.encode(Seq(2), Some(&prev)), text.as_bytes());
    }

    #[test]
    fn encoding_is_the_jcs_of_the_whole_record() {
        let d = draft();
        let prev = Sha256::of(b"x");
        let bytes = d.encode(Seq(2), Some(&prev));
        let as_value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let jcs = serde_json_canonicalizer::to_vec(&as_value).unwrap();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            String::from_utf8(jcs).unwrap()
        );
        assert_eq!(
            d.payload_json(),
            r#"{"k":"é","n":1,"q":"a\"b,\"prev_hash\":null","z":{"a":[2],"b":1}}"#
        );
    }

    #[test]
    fn chain_fields_ignores_lookalikes_inside_strings() {
        let d = draft();
        let prev = Sha256::of(b"x");
        assert_eq!(
            chain_fields(&d.encode(Seq(7), Some(&prev))),
            Some((Some(prev), Seq(7)))
        );
        assert_eq!(chain_fields(&d.encode(Seq(1), None)), Some((None, Seq(1))));
    }

    #[test]
    fn a_record_rebuilds_its_draft_with_or_without_legacy() {
        let prev = Sha256::of(b"x");
        let plain = draft().encode(Seq(4), Some(&prev));
        let again = EventDraft::from_record(&plain).unwrap();
        assert_eq!(again.encode(Seq(4), Some(&prev)), plain);
        assert_eq!(again.content_digest, draft().content_digest);
        let legacy = CanonicalJson::of(&serde_json::json!({"hash": "ab", "prev_hash": null}));
        let with = draft().with_legacy(&legacy).encode(Seq(4), Some(&prev));
        let as_value: serde_json::Value = serde_json::from_slice(&with).unwrap();
        assert_eq!(
            with,
            serde_json_canonicalizer::to_vec(&as_value).unwrap(),
            "still the JCS of the whole record"
        );
        assert_eq!(as_value["legacy"]["hash"], "ab");
        assert_eq!(chain_fields(&with), Some((Some(prev), Seq(4))));
        let e = StoredEvent::decode(&stored_value(&Sha256::of(&with), &with)).unwrap();
        assert_eq!(e.payload.get(), draft().payload_json());
        let rebuilt = EventDraft::from_record(&with).unwrap();
        assert_eq!(rebuilt.encode(Seq(4), Some(&prev)), with);
        assert_ne!(rebuilt.content_digest, draft().content_digest);
    }

    #[test]
    fn decode_round_trip() {
        let d = draft();
        let bytes = d.encode(Seq(3), None);
        let hash = Sha256::of(&bytes);
        let e = StoredEvent::decode(&stored_value(&hash, &bytes)).unwrap();
        assert_eq!(e.seq, Seq(3));
        assert_eq!(e.event_id, "e2");
        assert_eq!(e.target, "radix");
        assert_eq!(e.hash, hash);
        assert_eq!(e.payload.get(), d.payload_json());
        assert_eq!(e.prev_hash, None);
    }
}
