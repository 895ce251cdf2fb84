//! Fuzz targets, run as bounded property tests by `cargo test` (bolero's test
//! engine on the stable toolchain: random inputs for a fixed number of
//! iterations, plus every input kept under `tests/__fuzz__/<target>/`), and
//! as coverage-guided fuzzers where a nightly toolchain and cargo-bolero exist:
//!
//! ```sh
//! cargo install cargo-bolero
//! cargo +nightly bolero test --test fuzz bundle_bytes_never_panic   # libFuzzer, runs until stopped
//! ```
//!
//! Each target states the property it checks. An input a fuzzer finds becomes a
//! regression test by copying it into `tests/__fuzz__/<target>/corpus/`, which
//! this same test replays on every `cargo test`.
//!
//! - `bundle_*`: the ingest parser never panics; what it accepts is canonical
//!   (payloads are RFC 8785 objects, timestamps normalized), what it refuses
//!   it explains.
//! - `jcs_matches_the_reference_encoder`: `jcs` is byte-identical to
//!   `serde_json_canonicalizer` on arbitrary JSON values.
//! - `record_splice_*`: the writer's splice of `seq` and `prev_hash` into a
//!   draft gives exactly the RFC 8785 encoding of the whole record, and the
//!   chain fields read back from it are the ones spliced in.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use bolero::generator::TypeGenerator;
use leviathan::bundle;
use leviathan::bundle::Limits;
use leviathan::digest::Sha256;
use leviathan::ids::{EventId, Target, Timestamp};
use leviathan::jcs::CanonicalJson;
use leviathan::log::record::{chain_fields, stored_value, EventDraft, StoredEvent};
use leviathan::seq::Seq;
use serde_json::{json, Map, Value};

const ITERATIONS: usize = 3_000;

/// A JSON value from fuzzer input. Keys are drawn partly from a small set so
/// that objects get duplicate and colliding keys.
#[derive(Debug, Clone, TypeGenerator)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(Key, Json)>),
}

#[derive(Debug, Clone, TypeGenerator)]
enum Key {
    Known(u8),
    Any(String),
}

const KNOWN_KEYS: [&str; 12] = [
    "target",
    "bundle_id",
    "events",
    "artifacts",
    "event_id",
    "event_type",
    "timestamp",
    "actor_id",
    "payload",
    "sha256",
    "a",
    "\u{1F600}",
];

impl Key {
    fn text(&self) -> String {
        match self {
            Key::Known(i) => KNOWN_KEYS[*i as usize % KNOWN_KEYS.len()].to_string(),
            Key::Any(s) => s.clone(),
        }
    }
}

impl Json {
    fn value(&self) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Int(i) => json!(i),
            Json::UInt(u) => json!(u),
            Json::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Json::Str(s) => Value::String(s.clone()),
            Json::Array(items) => Value::Array(items.iter().map(Json::value).collect()),
            Json::Object(fields) => {
                Value::Object(fields.iter().map(|(k, v)| (k.text(), v.value())).collect())
            }
        }
    }
}

/// A bundle-shaped body: the envelope's fields are either well-formed or any
/// JSON, so the parser's deeper rules are reached, not only its syntax check.
#[derive(Debug, Clone, TypeGenerator)]
struct BundleInput {
    target: Field,
    bundle_id: Field,
    events: Vec<EventInput>,
    extra: Option<(Key, Json)>,
    /// Cut the serialized body at this byte (when `Some`).
    cut: Option<u16>,
}

#[derive(Debug, Clone, TypeGenerator)]
struct EventInput {
    event_id: Field,
    event_type: Field,
    timestamp: Field,
    actor_id: Option<Field>,
    payload: Json,
}

#[derive(Debug, Clone, TypeGenerator)]
enum Field {
    /// A plausible value of the field (index into a list of good ones).
    Good(u8),
    Any(Json),
    Missing,
}

const GOOD: [&str; 8] = [
    "radix",
    "2026-01-24T10:00:00",
    "2026-01-24T10:00:00.123456+02:00",
    "attempt.created",
    "tests.failed",
    "e-\u{e9}",
    "9999-12-31T23:59:59Z",
    "x",
];

impl Field {
    fn put(&self, obj: &mut Map<String, Value>, name: &str) {
        match self {
            Field::Good(i) => {
                obj.insert(
                    name.into(),
                    Value::String(GOOD[*i as usize % GOOD.len()].into()),
                );
            }
            Field::Any(j) => {
                obj.insert(name.into(), j.value());
            }
            Field::Missing => {}
        }
    }
}

impl BundleInput {
    fn body(&self) -> Vec<u8> {
        let mut obj = Map::new();
        self.target.put(&mut obj, "target");
        self.bundle_id.put(&mut obj, "bundle_id");
        let events = self
            .events
            .iter()
            .map(|e| {
                let mut ev = Map::new();
                e.event_id.put(&mut ev, "event_id");
                e.event_type.put(&mut ev, "event_type");
                e.timestamp.put(&mut ev, "timestamp");
                if let Some(a) = &e.actor_id {
                    a.put(&mut ev, "actor_id");
                }
                ev.insert("payload".into(), e.payload.value());
                Value::Object(ev)
            })
            .collect();
        obj.insert("events".into(), Value::Array(events));
        if let Some((k, v)) = &self.extra {
            obj.insert(k.text(), v.value());
        }
        let mut body = serde_json::to_vec(&Value::Object(obj)).expect("serializes");
        if let Some(cut) = self.cut {
            body.truncate(cut as usize);
        }
        body
    }
}

fn small_limits() -> Limits {
    Limits {
        max_body_bytes: 1 << 20,
        max_bundle_events: 8,
        max_payload_bytes: 4096,
        max_artifact_bytes: 1 << 20,
    }
}

/// What must hold for any body: no panic; an accepted bundle is canonical and
/// within the limits; a refusal has a message.
fn check_bundle(body: &[u8], limits: &Limits) {
    match bundle::parse(body, limits) {
        Ok(b) => {
            assert!(!b.events.is_empty() || b.events.len() <= limits.max_bundle_events);
            assert!(b.events.len() <= limits.max_bundle_events);
            for e in &b.events {
                let payload: Value =
                    serde_json::from_str(e.payload_json()).expect("payload is JSON");
                assert!(payload.is_object(), "payload is an object");
                assert_eq!(
                    leviathan::jcs::to_string(&payload),
                    e.payload_json(),
                    "payload is canonical"
                );
                assert!(e.payload_json().len() <= limits.max_payload_bytes);
                assert!(
                    e.timestamp.ends_with('Z'),
                    "timestamp normalized: {}",
                    e.timestamp
                );
                chrono::DateTime::parse_from_rfc3339(&e.timestamp).expect("timestamp is RFC 3339");
                assert!(!e.event_id.is_empty() && e.event_id.len() <= bundle::MAX_ID_BYTES);
                bundle::check_event_type(&e.event_type).expect("event type is valid");
            }
            // The same body always gives the same digest.
            let again = bundle::parse(body, limits).expect("accepted twice");
            assert_eq!(again.digest, b.digest);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

#[test]
fn bundle_bytes_never_panic() {
    let limits = small_limits();
    bolero::check!()
        .with_iterations(ITERATIONS)
        .for_each(|bytes: &[u8]| check_bundle(bytes, &limits));
}

#[test]
fn bundle_structured_never_panic_and_accepts_only_canonical() {
    let limits = small_limits();
    bolero::check!()
        .with_type::<BundleInput>()
        .with_iterations(ITERATIONS)
        .for_each(|input| check_bundle(&input.body(), &limits));
}

#[test]
fn jcs_matches_the_reference_encoder() {
    bolero::check!()
        .with_type::<Json>()
        .with_iterations(ITERATIONS)
        .for_each(|j| {
            let v = j.value();
            let ours = leviathan::jcs::to_string(&v);
            let reference = serde_json_canonicalizer::to_string(&v).expect("reference encodes");
            assert_eq!(ours, reference, "for {v}");
        });
}

#[derive(Debug, Clone, TypeGenerator)]
struct RecordInput {
    event_id: String,
    event_type: String,
    /// Seconds and microseconds since the epoch, within chrono's range.
    timestamp: (i32, u32),
    actor_id: Option<String>,
    target: String,
    payload: Vec<(Key, Json)>,
    seq: u64,
    prev: Option<[u8; 32]>,
}

#[test]
fn record_splice_is_the_canonical_record_and_reads_back() {
    bolero::check!()
        .with_type::<RecordInput>()
        .with_iterations(ITERATIONS)
        .for_each(|r| {
            let payload: Map<String, Value> = r
                .payload
                .iter()
                .map(|(k, v)| (k.text(), v.value()))
                .collect();
            let payload = Value::Object(payload);
            // Ids and targets the envelope rules refuse never reach the splice.
            let (Ok(event_id), Ok(target)) = (
                EventId::new(r.event_id.clone()),
                Target::new(r.target.clone()),
            ) else {
                return;
            };
            let (secs, micros) = r.timestamp;
            let Some(at) =
                chrono::DateTime::from_timestamp(i64::from(secs) * 8, micros % 1_000_000 * 1000)
            else {
                return;
            };
            let timestamp =
                Timestamp::normalize(&at.to_rfc3339()).expect("chrono's RFC 3339 normalizes");
            let ts = timestamp.as_str().to_string();
            let draft = EventDraft::new(
                event_id,
                r.event_type.clone(),
                timestamp,
                r.actor_id.clone(),
                None,
                &target,
                &CanonicalJson::of(&payload),
            );
            let seq = Seq(r.seq % (1 << 53));
            let prev = r.prev.map(Sha256);
            let bytes = draft.encode(seq, prev.as_ref());
            let whole = json!({
                "actor_id": r.actor_id, "event_id": r.event_id, "event_type": r.event_type,
                "payload": payload, "prev_hash": prev.map(|p| p.to_hex()), "seq": seq.0,
                "target": r.target, "timestamp": ts,
            });
            let reference = serde_json_canonicalizer::to_vec(&whole).expect("reference encodes");
            assert_eq!(
                String::from_utf8_lossy(&bytes),
                String::from_utf8_lossy(&reference)
            );
            assert_eq!(
                chain_fields(&bytes),
                Some((prev, seq)),
                "chain fields read back"
            );
            let hash = Sha256::of_parts(&[&bytes]);
            let stored = StoredEvent::decode(&stored_value(&hash, &bytes)).expect("decodes");
            assert_eq!(
                (stored.seq, stored.prev_hash, stored.hash),
                (seq, prev, hash)
            );
            assert_eq!(stored.event_id, r.event_id);
            assert_eq!(stored.target, r.target);
        });
}
