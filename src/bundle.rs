//! Ingest bundles: parsing and validation of what an executor POSTs, before
//! anything is written. It owns the envelope rules (ids, event types, timestamps,
//! payloads, artifact refs, size limits) and turns a valid bundle into drafts the
//! writer can append. It never touches storage and knows nothing of HTTP.

use crate::config::Limits;
use crate::digest::Sha256;
use crate::log::record::EventDraft;
use chrono::{DateTime, NaiveDateTime, SecondsFormat, Timelike, Utc};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::HashMap;

/// Longest accepted id (event_id, bundle_id, target, actor_id), in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Longest accepted event type, in bytes.
pub const MAX_EVENT_TYPE_BYTES: usize = 128;

/// An artifact reference carried by a bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactRef {
    pub sha256: Sha256,
    pub kind: String,
    pub uri: String,
    pub size: u64,
}

/// A bundle that passed every check.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub target: String,
    pub bundle_id: String,
    pub events: Vec<EventDraft>,
    pub artifacts: Vec<ArtifactRef>,
    /// Digest of the bundle's content (target, events, artifacts): a retry with
    /// the same bundle_id must carry the same digest.
    pub digest: Sha256,
}

impl Bundle {
    /// A bundle of drafts the server builds itself (no artifact refs), with
    /// the digest `parse` gives the same content.
    pub fn from_drafts(target: String, bundle_id: String, events: Vec<EventDraft>) -> Bundle {
        let mut h = sha2_stream();
        h.add(target.as_bytes());
        for e in &events {
            h.add(e.content_digest.as_bytes());
        }
        Bundle {
            target,
            bundle_id,
            events,
            artifacts: Vec::new(),
            digest: h.finish(),
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

#[derive(Deserialize)]
struct RawBundle<'a> {
    #[serde(borrow)]
    target: Cow<'a, str>,
    #[serde(borrow)]
    bundle_id: Cow<'a, str>,
    #[serde(borrow)]
    events: Vec<RawEvent<'a>>,
    #[serde(default, borrow)]
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
    payload: serde_json::Value,
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
    let mut de = serde_json::Deserializer::from_slice(body);
    let raw: RawBundle<'_> = match serde_path_to_error::deserialize(&mut de) {
        Ok(r) => r,
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                return Err(BundleError::Malformed {
                    message: inner.to_string(),
                });
            }
            let index = event_index_of(&path);
            return Err(BundleError::Invalid {
                path: if path == "." { "body".into() } else { path },
                message: strip_position(&inner.to_string()),
                event_index: index,
                event_id: None,
            });
        }
    };
    if let Err(e) = de.end() {
        return Err(BundleError::Malformed {
            message: e.to_string(),
        });
    }
    validate(raw, limits)
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

pub fn check_id(path: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{path} must not be empty"));
    }
    if value.len() > MAX_ID_BYTES {
        return Err(format!(
            "{path} is {} bytes long; at most {MAX_ID_BYTES} are allowed",
            value.len()
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{path} must not contain control characters"));
    }
    Ok(())
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

/// Parses an RFC 3339 timestamp (`T` or space; fraction optional; offset
/// optional — a time without one, as Python's `isoformat()` writes it, is UTC)
/// and returns the log's one normalized form: UTC, `Z`, microsecond precision
/// at most, trailing zero groups of the fraction dropped (`.5` → `.500`).
pub fn normalize_timestamp(value: &str) -> Result<String, String> {
    let parsed: Option<DateTime<Utc>> = DateTime::parse_from_rfc3339(value)
        .ok()
        .map(|d| d.with_timezone(&Utc))
        .or_else(|| {
            ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(value, f).ok())
                .map(|n| n.and_utc())
        });
    let Some(dt) = parsed else {
        return Err(format!(
            "timestamp {:?} is not an RFC 3339 date-time such as \"2026-01-24T10:00:00Z\" \
             (an offset is optional; without one the time is read as UTC)",
            value.chars().take(64).collect::<String>()
        ));
    };
    let micros = dt.nanosecond() / 1000 * 1000;
    let dt = dt.with_nanosecond(micros).unwrap_or(dt);
    Ok(dt.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

fn validate(raw: RawBundle<'_>, limits: &Limits) -> Result<Bundle, BundleError> {
    check_id("target", &raw.target).map_err(|m| invalid("target".into(), m))?;
    check_id("bundle_id", &raw.bundle_id).map_err(|m| invalid("bundle_id".into(), m))?;
    if raw.events.len() > limits.max_bundle_events {
        return Err(BundleError::TooLarge {
            path: "events".into(),
            what: "the number of events",
            actual: raw.events.len() as u64,
            limit: limits.max_bundle_events as u64,
            setting: "LEVIATHAN_MAX_BUNDLE_EVENTS",
        });
    }
    let artifacts_raw = raw.artifacts.unwrap_or_default();
    if artifacts_raw.len() > limits.max_bundle_events {
        return Err(BundleError::TooLarge {
            path: "artifacts".into(),
            what: "the number of artifact references",
            actual: artifacts_raw.len() as u64,
            limit: limits.max_bundle_events as u64,
            setting: "LEVIATHAN_MAX_BUNDLE_EVENTS",
        });
    }

    let mut events = Vec::with_capacity(raw.events.len());
    let mut seen: HashMap<String, (usize, Sha256)> = HashMap::with_capacity(raw.events.len());
    let mut bundle_hash = sha2_stream();
    bundle_hash.add(raw.target.as_bytes());
    for (i, ev) in raw.events.into_iter().enumerate() {
        let event_id = ev.event_id.into_owned();
        let fail = |field: &str, message: String| BundleError::Invalid {
            path: format!("events[{i}].{field}"),
            message,
            event_index: Some(i),
            event_id: Some(event_id.clone()),
        };
        check_id("event_id", &event_id).map_err(|m| fail("event_id", m))?;
        check_event_type(&ev.event_type).map_err(|m| fail("event_type", m))?;
        let timestamp = normalize_timestamp(&ev.timestamp).map_err(|m| fail("timestamp", m))?;
        if let Some(a) = &ev.actor_id {
            if a.len() > MAX_ID_BYTES || a.chars().any(char::is_control) {
                return Err(fail(
                    "actor_id",
                    format!(
                        "actor_id must be at most {MAX_ID_BYTES} bytes without control characters"
                    ),
                ));
            }
        }
        let serde_json::Value::Object(payload) = &ev.payload else {
            return Err(fail(
                "payload",
                format!(
                    "payload must be a JSON object, got {}",
                    json_kind(&ev.payload)
                ),
            ));
        };
        let attempt_id = payload
            .get("attempt_id")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let payload_canonical = crate::jcs::to_string(&ev.payload);
        if payload_canonical.len() > limits.max_payload_bytes {
            return Err(BundleError::TooLarge {
                path: format!("events[{i}].payload"),
                what: "the payload size in bytes (canonical JSON)",
                actual: payload_canonical.len() as u64,
                limit: limits.max_payload_bytes as u64,
                setting: "LEVIATHAN_MAX_PAYLOAD_BYTES",
            });
        }
        let draft = EventDraft::new(
            event_id.clone(),
            ev.event_type.into_owned(),
            timestamp,
            ev.actor_id.map(Cow::into_owned),
            attempt_id,
            &raw.target,
            &payload_canonical,
        );
        if let Some((first, digest)) = seen.get(&event_id) {
            if *digest != draft.content_digest {
                return Err(fail(
                    "event_id",
                    format!(
                        "event_id {event_id:?} appears twice in this bundle (events[{first}] and \
                         events[{i}]) with different content"
                    ),
                ));
            }
        } else {
            seen.insert(event_id, (i, draft.content_digest));
        }
        bundle_hash.add(draft.content_digest.as_bytes());
        events.push(draft);
    }

    let mut artifacts = Vec::with_capacity(artifacts_raw.len());
    for (i, a) in artifacts_raw.into_iter().enumerate() {
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
        bundle_hash.add(&serde_json::to_vec(&r).expect("serializable"));
        artifacts.push(r);
    }
    Ok(Bundle {
        target: raw.target.into_owned(),
        bundle_id: raw.bundle_id.into_owned(),
        events,
        artifacts,
        digest: bundle_hash.finish(),
    })
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Length-prefixed streaming hash, so that concatenations cannot collide.
struct Stream(sha2::Sha256);

fn sha2_stream() -> Stream {
    use sha2::Digest;
    Stream(sha2::Sha256::new())
}

impl Stream {
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
            assert_eq!(normalize_timestamp(input).unwrap(), want, "{input}");
        }
        for bad in [
            "yesterday",
            "2026-01-24",
            "1706090400",
            "2026-13-01T00:00:00Z",
            "",
        ] {
            assert!(normalize_timestamp(bad).is_err(), "{bad}");
        }
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
}
