//! Ingest bundles: parsing and validation of what an executor POSTs, before
//! anything is written. It owns the envelope rules (ids, event types, timestamps,
//! payloads, artifact refs, size limits) and turns a valid bundle into drafts the
//! writer can append. It never touches storage and knows nothing of HTTP.

use crate::digest::Sha256;
pub use crate::ids::MAX_ID_BYTES;
use crate::ids::{BundleId, EventId, Target, Timestamp};
use crate::jcs::{CanonicalJson, FromText};
use crate::log::record::{ArtifactRef, EventDraft};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::HashMap;
/// Longest accepted event type, in bytes.
pub(crate) const MAX_EVENT_TYPE_BYTES: usize = 128;

/// Size limits on what clients may send (`LEVIATHAN_MAX_*`): the ingest body
/// and bundle limits checked here and by the ingest route, and the artifact
/// size the artifact store enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_bundle_events: usize,
    pub max_payload_bytes: usize,
    pub max_artifact_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 32 * 1024 * 1024,
            max_bundle_events: 10_000,
            max_payload_bytes: 1024 * 1024,
            max_artifact_bytes: 1024 * 1024 * 1024,
        }
    }
}

/// A bundle that passed every check.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub target: Target,
    pub bundle_id: BundleId,
    pub events: Vec<EventDraft>,
    pub artifacts: Vec<ArtifactRef>,
    /// Digest of the bundle's content: a retry with the same bundle_id must
    /// carry the same digest. Stored with the bundle (`log_bundles`), so its
    /// byte encoding is fixed: SHA-256 over a sequence of length-prefixed
    /// parts (each part is its length as a big-endian u64, then its bytes):
    /// the target's UTF-8 bytes, then each event's content digest (32 bytes,
    /// see [`EventDraft::content_digest`]), then each artifact reference's
    /// [`ArtifactRef::digest_bytes`]. It is written field by field, never by
    /// serializing a struct, so renaming a field cannot change it; the test
    /// `bundle_digest_is_pinned` holds it to a literal value.
    pub digest: Sha256,
}

impl Bundle {
    /// A bundle of drafts the server builds itself (no artifact refs), with
    /// the digest `parse` gives the same content.
    pub fn from_drafts(target: Target, bundle_id: BundleId, events: Vec<EventDraft>) -> Bundle {
        let mut digest = DigestStream::new();
        digest.add(target.as_bytes());
        for e in &events {
            digest.add(e.content_digest.as_bytes());
        }
        Bundle {
            target,
            bundle_id,
            events,
            artifacts: Vec::new(),
            digest: digest.finish(),
        }
    }
}

/// Why a bundle is refused. Nothing of a refused bundle is stored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BundleError {
    /// The body is not JSON at all.
    #[error("request body is not valid JSON: {message}")]
    Malformed { message: String },
    /// A field is missing, of the wrong type, or breaks a rule.
    #[error("{path}: {message}")]
    Invalid {
        /// JSON path of the offending value, e.g. `events[3].timestamp`.
        path: String,
        message: String,
        /// Index of the offending event, if the problem is inside one.
        event_index: Option<usize>,
        event_id: Option<String>,
    },
    /// Something is over a configured limit.
    #[error("{path}: {what} is {actual} but the limit is {limit} ({setting})")]
    TooLarge {
        path: String,
        what: &'static str,
        actual: u64,
        limit: u64,
        setting: &'static str,
    },
}

/// A struct read from a JSON object only: serde's derived `Deserialize`
/// also takes an array of the fields in order (`["radix", "b1", [...]]`),
/// which the API does not accept for a bundle, an event or a ref.
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Only<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Only<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Only(std::marker::PhantomData))
            .map(Object)
    }
}

/// `Vec<T>` whose every element is a JSON object ([`Object`]).
fn objects<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    let v: Vec<Object<T>> = Deserialize::deserialize(d)?;
    Ok(v.into_iter().map(|o| o.0).collect())
}

fn optional_objects<'de, D, T>(d: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    let v: Option<Vec<Object<T>>> = Deserialize::deserialize(d)?;
    Ok(v.map(|v| v.into_iter().map(|o| o.0).collect()))
}

#[derive(Deserialize)]
struct RawBundle<'a> {
    #[serde(borrow)]
    target: Cow<'a, str>,
    #[serde(borrow)]
    bundle_id: Cow<'a, str>,
    #[serde(borrow, deserialize_with = "objects")]
    events: Vec<RawEvent<'a>>,
    #[serde(default, borrow, deserialize_with = "optional_objects")]
    artifacts: Option<Vec<RawArtifact<'a>>>,
}

#[derive(Deserialize)]
struct RawEvent<'a> {
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    #[serde(borrow)]
    event_type: Cow<'a, str>,
    #[serde(borrow)]
    timestamp: Cow<'a, str>,
    #[serde(default, borrow)]
    actor_id: Option<Cow<'a, str>>,
    /// Read as text here and canonicalized event by event
    /// ([`CanonicalJson::from_text`]): a `serde_json::Value` of every
    /// payload at once cost up to ~17 times the body.
    #[serde(borrow)]
    payload: &'a RawValue,
}

#[derive(Deserialize)]
struct RawArtifact<'a> {
    #[serde(borrow)]
    sha256: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    uri: Cow<'a, str>,
    size: u64,
}

fn invalid(path: String, message: impl Into<String>) -> BundleError {
    BundleError::Invalid {
        path,
        message: message.into(),
        event_index: None,
        event_id: None,
    }
}

/// Parses and validates a request body.
pub fn parse(body: &[u8], limits: &Limits) -> Result<Bundle, BundleError> {
    // Tracking the JSON path costs every well-formed body ~a tenth of its
    // parse; only a body that fails needs the path, so it is parsed again
    // with it.
    match serde_json::from_slice::<Object<RawBundle<'_>>>(body) {
        Ok(Object(raw)) => validate(raw, limits),
        Err(untracked) => Err(parse_error(body, untracked)),
    }
}

/// The error of a body that does not parse, with the JSON path of what
/// failed (`untracked`: the error without it).
fn parse_error(body: &[u8], untracked: serde_json::Error) -> BundleError {
    let mut de = serde_json::Deserializer::from_slice(body);
    match serde_path_to_error::deserialize::<_, Object<RawBundle<'_>>>(&mut de) {
        Ok(_) => BundleError::Malformed {
            message: de.end().err().unwrap_or(untracked).to_string(),
        },
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                return BundleError::Malformed {
                    message: inner.to_string(),
                };
            }
            let index = event_index_of(&path);
            BundleError::Invalid {
                path: if path == "." { "body".into() } else { path },
                message: strip_position(&inner.to_string()),
                event_index: index,
                event_id: index.and_then(|i| event_id_at(body, i)),
            }
        }
    }
}

/// The `event_id` of `events[index]` in a body that failed to parse, when it
/// is a string (the fault is another field's: `actor_id: 5`, a missing
/// `payload`). Only the failing event's id is read.
fn event_id_at(body: &[u8], index: usize) -> Option<String> {
    #[derive(Deserialize)]
    struct Events<'a> {
        #[serde(borrow)]
        events: Vec<&'a RawValue>,
    }
    #[derive(Deserialize)]
    struct Id {
        event_id: Option<serde_json::Value>,
    }
    let events: Events<'_> = serde_json::from_slice(body).ok()?;
    let id: Id = serde_json::from_str(events.events.get(index)?.get()).ok()?;
    match id.event_id? {
        serde_json::Value::String(s) => Some(s),
        _ => None,
    }
}

/// `events[3].timestamp` → 3.
fn event_index_of(path: &str) -> Option<usize> {
    let rest = path.strip_prefix("events[")?;
    rest[..rest.find(']')?].parse().ok()
}

/// serde_json appends " at line 1 column 42" to type errors; the JSON path says more.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// A dotted lowercase name: at least two segments of `[a-z][a-z0-9_]*`.
pub fn check_event_type(value: &str) -> Result<(), String> {
    let ok = value.len() <= MAX_EVENT_TYPE_BYTES
        && value.split('.').count() >= 2
        && value.split('.').all(|seg| {
            let mut chars = seg.chars();
            matches!(chars.next(), Some('a'..='z'))
                && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "event_type {value:?} is not a dotted lowercase name such as \"attempt.created\" \
             (segments of a-z, 0-9 and _, each starting with a letter, at most {MAX_EVENT_TYPE_BYTES} bytes)"
        ))
    }
}

/// The checks of a parsed body, in order: the bundle's ids, its counts, each
/// event, then each artifact reference; the first failure is the answer.
fn validate(raw: RawBundle<'_>, limits: &Limits) -> Result<Bundle, BundleError> {
    let target = Target::new(raw.target).map_err(|e| invalid("target".into(), e.0))?;
    let bundle_id = BundleId::new(raw.bundle_id).map_err(|e| invalid("bundle_id".into(), e.0))?;
    let artifacts_raw = raw.artifacts.unwrap_or_default();
    check_counts(raw.events.len(), artifacts_raw.len(), limits)?;
    let mut digest = DigestStream::new();
    digest.add(target.as_bytes());
    let events = validate_events(raw.events, &target, limits, &mut digest)?;
    let artifacts = validate_artifacts(artifacts_raw, &mut digest)?;
    Ok(Bundle {
        target,
        bundle_id,
        events,
        artifacts,
        digest: digest.finish(),
    })
}

/// The number of events and of artifact references, each against
/// `LEVIATHAN_MAX_BUNDLE_EVENTS`.
fn check_counts(events: usize, artifacts: usize, limits: &Limits) -> Result<(), BundleError> {
    for (path, what, count) in [
        ("events", "the number of events", events),
        ("artifacts", "the number of artifact references", artifacts),
    ] {
        if count > limits.max_bundle_events {
            return Err(BundleError::TooLarge {
                path: path.into(),
                what,
                actual: count as u64,
                limit: limits.max_bundle_events as u64,
                setting: "LEVIATHAN_MAX_BUNDLE_EVENTS",
            });
        }
    }
    Ok(())
}

/// Every event, in order, into drafts; an event id repeated in the bundle
/// must repeat the same content. Each draft's content digest joins `digest`.
fn validate_events(
    raw: Vec<RawEvent<'_>>,
    target: &Target,
    limits: &Limits,
    digest: &mut DigestStream,
) -> Result<Vec<EventDraft>, BundleError> {
    let mut events = Vec::with_capacity(raw.len());
    let mut seen: HashMap<EventId, (usize, Sha256)> = HashMap::with_capacity(raw.len());
    for (i, ev) in raw.into_iter().enumerate() {
        let draft = validate_event(i, ev, target, limits)?;
        if let Some((first, earlier)) = seen.get(&draft.event_id) {
            if *earlier != draft.content_digest {
                return Err(BundleError::Invalid {
                    path: format!("events[{i}].event_id"),
                    message: format!(
                        "event_id {:?} appears twice in this bundle (events[{first}] and \
                         events[{i}]) with different content",
                        draft.event_id.as_str()
                    ),
                    event_index: Some(i),
                    event_id: Some(draft.event_id.to_string()),
                });
            }
        } else {
            seen.insert(draft.event_id.clone(), (i, draft.content_digest));
        }
        digest.add(draft.content_digest.as_bytes());
        events.push(draft);
    }
    Ok(events)
}

/// One event: its envelope fields, then its payload (an object, canonical
/// JSON within `LEVIATHAN_MAX_PAYLOAD_BYTES`).
fn validate_event(
    i: usize,
    ev: RawEvent<'_>,
    target: &Target,
    limits: &Limits,
) -> Result<EventDraft, BundleError> {
    let RawEvent {
        event_id,
        event_type,
        timestamp,
        actor_id,
        payload,
    } = ev;
    let fail = |field: &str, message: String| BundleError::Invalid {
        path: format!("events[{i}].{field}"),
        message,
        event_index: Some(i),
        event_id: Some(event_id.to_string()),
    };
    let id = EventId::new(event_id.as_ref()).map_err(|e| fail("event_id", e.0))?;
    check_event_type(&event_type).map_err(|m| fail("event_type", m))?;
    let timestamp = Timestamp::normalize(&timestamp).map_err(|m| fail("timestamp", m))?;
    if timestamp.is_leap_second() {
        return Err(fail(
            "timestamp",
            format!(
                "timestamp {timestamp:?} has second 60: leap seconds are not accepted (use :59)"
            ),
        ));
    }
    if let Some(a) = &actor_id {
        if a.len() > MAX_ID_BYTES || a.chars().any(char::is_control) {
            return Err(fail(
                "actor_id",
                format!("actor_id must be at most {MAX_ID_BYTES} bytes without control characters"),
            ));
        }
    }
    let text = payload.get().trim_start();
    if !text.starts_with('{') {
        return Err(fail(
            "payload",
            format!("payload must be a JSON object, got {}", json_kind(text)),
        ));
    }
    let path = format!("events[{i}].payload");
    let (payload_canonical, attempt_id) =
        match CanonicalJson::from_text(text, limits.max_payload_bytes, "attempt_id") {
            Ok(FromText::Canonical(canonical, attempt_id)) => {
                (canonical, attempt_id.filter(|s| !s.is_empty()))
            }
            Ok(FromText::TooLarge(actual)) => {
                return Err(BundleError::TooLarge {
                    path,
                    what: "the payload size in bytes (canonical JSON)",
                    actual: actual as u64,
                    limit: limits.max_payload_bytes as u64,
                    setting: "LEVIATHAN_MAX_PAYLOAD_BYTES",
                })
            }
            Err(e) => {
                let at = if e.path.is_empty() {
                    path
                } else {
                    format!("{path}.{}", e.path)
                };
                return Err(if e.syntax {
                    BundleError::Malformed {
                        message: format!("{at}: {}", e.message),
                    }
                } else {
                    BundleError::Invalid {
                        path: at,
                        message: e.message,
                        event_index: Some(i),
                        event_id: Some(event_id.to_string()),
                    }
                });
            }
        };
    Ok(EventDraft::new(
        id,
        event_type.into_owned(),
        timestamp,
        actor_id.map(Cow::into_owned),
        attempt_id,
        target,
        &payload_canonical,
    ))
}

/// Every artifact reference, in order; each one's
/// [`ArtifactRef::digest_bytes`] join `digest`.
fn validate_artifacts(
    raw: Vec<RawArtifact<'_>>,
    digest: &mut DigestStream,
) -> Result<Vec<ArtifactRef>, BundleError> {
    let mut artifacts = Vec::with_capacity(raw.len());
    for (i, a) in raw.into_iter().enumerate() {
        let sha256: Sha256 = a
            .sha256
            .parse()
            .map_err(|e: crate::digest::ParseSha256Error| {
                invalid(format!("artifacts[{i}].sha256"), e.to_string())
            })?;
        let r = ArtifactRef {
            sha256,
            kind: a.kind.into_owned(),
            uri: a.uri.into_owned(),
            size: a.size,
        };
        digest.add(&r.digest_bytes());
        artifacts.push(r);
    }
    Ok(artifacts)
}

/// What a JSON text holds, by its first character (the text is valid JSON).
fn json_kind(text: &str) -> &'static str {
    match text.as_bytes().first() {
        Some(b'n') => "null",
        Some(b't' | b'f') => "a boolean",
        Some(b'"') => "a string",
        Some(b'[') => "an array",
        Some(b'{') => "an object",
        _ => "a number",
    }
}

/// The bundle digest's hash: SHA-256 over length-prefixed parts (a
/// big-endian u64 length, then the bytes), so that concatenations cannot
/// collide. See [`Bundle::digest`].
struct DigestStream(sha2::Sha256);

impl DigestStream {
    fn new() -> DigestStream {
        use sha2::Digest;
        DigestStream(sha2::Sha256::new())
    }
    fn add(&mut self, bytes: &[u8]) {
        use sha2::Digest;
        self.0.update((bytes.len() as u64).to_be_bytes());
        self.0.update(bytes);
    }
    fn finish(self) -> Sha256 {
        use sha2::Digest;
        Sha256(self.0.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }

    fn ev(id: &str) -> serde_json::Value {
        json!({"event_id": id, "event_type": "attempt.created", "timestamp": "2026-01-24T10:00:00",
               "actor_id": "w", "payload": {"attempt_id": "a1"}})
    }

    #[test]
    fn event_types() {
        for ok in [
            "attempt.created",
            "topo.area.discovered",
            "model.call_started",
            "x1.y",
        ] {
            assert!(check_event_type(ok).is_ok(), "{ok}");
        }
        for bad in [
            "attempt",
            "Attempt.Created",
            "a..b",
            ".a",
            "a.",
            "a.1b",
            "a b.c",
            "a-b.c",
        ] {
            assert!(check_event_type(bad).is_err(), "{bad}");
        }
    }

    fn with_payload(payload: &str) -> Vec<u8> {
        format!(
            r#"{{"target": "t", "bundle_id": "b", "events": [{{"event_id": "e1",
                "event_type": "note.x", "timestamp": "2026-01-24T10:00:00Z",
                "payload": {payload}}}]}}"#
        )
        .into_bytes()
    }

    #[test]
    fn a_payload_object_with_a_repeated_key_is_refused_at_its_path() {
        for (payload, path) in [
            (r#"{"a": 1, "a": 2}"#, "events[0].payload"),
            (
                r#"{"a": 1, "b": {"c": [1, {"d": 1, "d": 1}]}}"#,
                "events[0].payload.b.c[1]",
            ),
            (r#"{"x": {"y": "1", "y": "2"}}"#, "events[0].payload.x"),
        ] {
            match parse(&with_payload(payload), &Limits::default()) {
                Err(BundleError::Invalid {
                    path: p, message, ..
                }) => {
                    assert!(p.starts_with(path), "{payload}: {p}");
                    assert!(message.contains("duplicate key"), "{payload}: {message}");
                }
                other => panic!("{payload}: {:?}", other.map(|_| ())),
            }
        }
    }

    /// Without repeated keys, a payload reads exactly as serde_json's Value.
    #[test]
    fn a_payload_reads_as_serde_jsons_value() {
        let payload = r#"{"n": [0, -1, 18446744073709551615, -9223372036854775808, 1.5,
            1e300, 5e-324, 0.1, -0.0, 1.2345678901234568e+29], "s": "\u00e9\ud83d\ude00\n",
            "t": true, "f": false, "z": null, "o": {"b": {}, "a": []}}"#;
        let b = parse(&with_payload(payload), &Limits::default()).unwrap();
        let expected: serde_json::Value = serde_json::from_str(payload).unwrap();
        assert_eq!(
            b.events[0].payload_json(),
            CanonicalJson::of(&expected).as_str()
        );
    }

    #[test]
    fn a_bad_event_is_named_with_its_index_and_field() {
        let mut bad = ev("e2");
        bad["timestamp"] = json!("not a time");
        let err = parse(
            &body(json!({"target": "t", "bundle_id": "b", "events": [ev("e1"), bad]})),
            &Limits::default(),
        )
        .unwrap_err();
        match err {
            BundleError::Invalid {
                path,
                event_index,
                event_id,
                ..
            } => {
                assert_eq!(path, "events[1].timestamp");
                assert_eq!(event_index, Some(1));
                assert_eq!(event_id.as_deref(), Some("e2"));
            }
            other => panic!("{other:?}"),
        }
        let err = parse(
            br#"{"target":"t","bundle_id":"b","events":[{"event_id":"e"}]}"#,
            &Limits::default(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, BundleError::Invalid { path, event_index: Some(0), .. } if path.starts_with("events[0]")),
            "{err:?}"
        );
        assert!(matches!(
            parse(b"{nope", &Limits::default()),
            Err(BundleError::Malformed { .. })
        ));
        // A whole bundle followed by more is malformed, as is a cut one.
        let whole = body(json!({"target": "t", "bundle_id": "b", "events": [ev("e1")]}));
        for tail in [&b" x"[..], b"{}", b"]"] {
            let err = parse(&[&whole[..], tail].concat(), &Limits::default()).unwrap_err();
            assert!(
                matches!(&err, BundleError::Malformed { message } if message.contains("trailing")),
                "{err:?}"
            );
        }
        let err = parse(&whole[..whole.len() - 1], &Limits::default()).unwrap_err();
        assert!(matches!(err, BundleError::Malformed { .. }), "{err:?}");
        // A wrong type deep in a payload-free field is named by its path.
        let err = parse(
            br#"{"target":"t","bundle_id":"b","events":[],"artifacts":[{"sha256":1}]}"#,
            &Limits::default(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, BundleError::Invalid { path, .. } if path == "artifacts[0].sha256"),
            "{err:?}"
        );
    }

    #[test]
    fn same_content_same_digest_and_limits() {
        let b = body(json!({"target": "t", "bundle_id": "b", "events": [ev("e1")]}));
        let d1 = parse(&b, &Limits::default()).unwrap().digest;
        let b2 =
            body(json!({"target": "t", "bundle_id": "b", "events": [ev("e1")], "artifacts": null}));
        assert_eq!(parse(&b2, &Limits::default()).unwrap().digest, d1);
        let mut other = ev("e1");
        other["payload"]["x"] = json!(1);
        let b3 = body(json!({"target": "t", "bundle_id": "b", "events": [other]}));
        assert_ne!(parse(&b3, &Limits::default()).unwrap().digest, d1);

        let small = Limits {
            max_bundle_events: 1,
            ..Limits::default()
        };
        let b4 = body(json!({"target": "t", "bundle_id": "b", "events": [ev("e1"), ev("e2")]}));
        assert!(matches!(
            parse(&b4, &small),
            Err(BundleError::TooLarge { .. })
        ));
    }

    /// The digest is stored with every bundle and compared on retries, so its
    /// value for a given bundle must never change. The literal was computed
    /// outside this crate from the encoding documented on `Bundle::digest`.
    #[test]
    fn bundle_digest_is_pinned() {
        let b = body(json!({
            "target": "radix",
            "bundle_id": "b1",
            "events": [{"event_id": "e1", "event_type": "attempt.created",
                        "timestamp": "2026-01-24T10:00:00", "actor_id": "w",
                        "payload": {"n": 1.5, "attempt_id": "a1"}}],
            "artifacts": [{"sha256": Sha256::of(b"abc").to_hex(), "kind": "log",
                           "uri": "s3://b/é\n\"x\"\\\u{1}", "size": 42}],
        }));
        let bundle = parse(&b, &Limits::default()).unwrap();
        assert_eq!(
            bundle.digest.to_hex(),
            "2864ce0344fdb3d65d98763575a965c30c3fad575d2fcc070ad619aadfa8c55b"
        );
    }

    /// Bundles stored before the explicit encoding hashed `serde_json::to_vec`
    /// of the artifact reference: the explicit bytes are the same.
    #[test]
    fn artifact_digest_bytes_are_the_old_serde_json_bytes() {
        let mut odd: String = (0u8..0x80).map(char::from).collect();
        odd.push_str("é\u{2028}\u{fffd}😀");
        for (kind, uri) in [("log", "file:///x"), ("", ""), (odd.as_str(), "\"\\/")] {
            let r = ArtifactRef {
                sha256: Sha256::of(kind.as_bytes()),
                kind: kind.into(),
                uri: uri.into(),
                size: u64::MAX,
            };
            assert_eq!(
                r.digest_bytes(),
                serde_json::to_vec(&r).unwrap(),
                "{kind:?}"
            );
        }
    }
}
