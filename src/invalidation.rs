//! Invalidation of an attempt: the `attempt.invalidated` event the server
//! itself appends, built here as a validated bundle (the same checks and the
//! same digest as an ingested one) and appended through the writer like any
//! other, so that the graph changes only by projection (the core projector
//! sets `status: "invalidated"`, `invalidation_reason`, `invalidated_at`).

use crate::bundle::{Bundle, BundleError, Limits};
use crate::graph::Node;
use crate::ids::{BundleId, EventId, IdError, Target, Timestamp};
use crate::jcs::CanonicalJson;
use crate::log::record::EventDraft;
use crate::wire::InvalidationEvent;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

/// The event type an invalidation appends.
pub const EVENT_TYPE: &str = "attempt.invalidated";
/// The bundle's target when the attempt has no `target_id`.
pub const DEFAULT_TARGET: &str = "leviathan";

/// What invalidating an attempt appends.
#[derive(Debug, Clone)]
pub struct Invalidation {
    pub attempt_id: String,
    /// The attempt's `target_id`, the bundle's target.
    pub target: String,
    /// The attempt's status before.
    pub current_status: Value,
    /// The event, as it will be stored.
    pub event: InvalidationEvent,
    /// The bundle to append.
    pub bundle: Bundle,
}

/// Plans the invalidation of `attempt` (an Attempt node) at `now`, asked by
/// `actor` (the name of the token that asked) on behalf of `requested_by`
/// (what the request names, kept in the payload). The reason must not be
/// blank; ids and sizes follow the ingest rules.
pub fn plan(
    attempt: &Node,
    reason: &str,
    actor: &str,
    requested_by: Option<&str>,
    now: DateTime<Utc>,
    limits: &Limits,
) -> Result<Invalidation, BundleError> {
    let invalid = |path: &str, message: String| BundleError::Invalid {
        path: path.to_owned(),
        message,
        event_index: None,
        event_id: None,
    };
    if reason.trim().is_empty() {
        return Err(invalid(
            "reason",
            "reason must not be empty: say why the attempt is invalidated".into(),
        ));
    }
    let checked = |path: &str, r: Result<(), IdError>| r.map_err(|e| invalid(path, e.0));
    checked("actor_id", crate::ids::check_id("actor_id", actor))?;
    if let Some(by) = requested_by {
        checked("actor_id", crate::ids::check_id("actor_id", by))?;
    }
    let at = format!("{}.{:06}", now.timestamp(), now.timestamp_subsec_micros());
    // The original's form; an attempt id that cannot be part of an event id
    // (node ids may be 1024 bytes, event ids 256, and node ids may hold
    // control characters, which event ids may not) is named by its SHA-256.
    let mut event_id = format!("invalidation-{}-{at}", attempt.id);
    if event_id.len() > crate::ids::MAX_ID_BYTES - "bundle-".len()
        || event_id.chars().any(char::is_control)
    {
        let digest = crate::digest::Sha256::of(attempt.id.as_bytes());
        event_id = format!("invalidation-sha256:{digest}-{at}");
    }
    let event_id = EventId::new(event_id).map_err(|e| invalid("attempt_id", e.0))?;
    let bundle_id =
        BundleId::new(format!("bundle-{event_id}")).map_err(|e| invalid("attempt_id", e.0))?;
    let timestamp = Timestamp::normalize(&now.to_rfc3339_opts(SecondsFormat::Micros, true))
        .map_err(|m| invalid("timestamp", m))?;
    let target = attempt
        .properties
        .get("target_id")
        .and_then(Value::as_str)
        .and_then(|t| Target::new(t).ok())
        .map_or_else(|| Target::new(DEFAULT_TARGET), Ok)
        .map_err(|e| invalid("target", e.0))?;
    let payload = match requested_by {
        Some(by) => json!({"attempt_id": attempt.id, "reason": reason, "requested_by": by}),
        None => json!({"attempt_id": attempt.id, "reason": reason}),
    };
    let payload_canonical = CanonicalJson::of(&payload);
    if payload_canonical.as_str().len() > limits.max_payload_bytes {
        return Err(BundleError::TooLarge {
            path: "reason".into(),
            what: "the payload size in bytes (canonical JSON)",
            actual: payload_canonical.as_str().len() as u64,
            limit: limits.max_payload_bytes as u64,
            setting: "LEVIATHAN_MAX_PAYLOAD_BYTES",
        });
    }
    let draft = EventDraft::new(
        event_id.clone(),
        EVENT_TYPE.to_owned(),
        timestamp.clone(),
        Some(actor.to_owned()),
        Some(attempt.id.to_string()),
        &target,
        &payload_canonical,
    );
    let bundle = Bundle::from_drafts(target.clone(), bundle_id, vec![draft]);
    Ok(Invalidation {
        attempt_id: attempt.id.to_string(),
        current_status: attempt
            .properties
            .get("status")
            .cloned()
            .unwrap_or(Value::Null),
        event: InvalidationEvent {
            actor_id: actor.to_owned(),
            event_id: event_id.into_string(),
            event_type: EVENT_TYPE.to_owned(),
            payload,
            timestamp: timestamp.as_str().to_owned(),
        },
        target: target.into_string(),
        bundle,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seq::Seq;

    fn attempt(id: &str, target: Option<&str>) -> Node {
        let mut properties = serde_json::Map::new();
        properties.insert("status".into(), json!("failed"));
        if let Some(t) = target {
            properties.insert("target_id".into(), json!(t));
        }
        Node {
            id: crate::graph::NodeId::new("node id", id).expect("test ids are not empty"),
            node_type: "Attempt".into(),
            properties,
            created_at: "2026-01-24T10:00:00Z".into(),
            updated_at: "2026-01-24T10:00:00Z".into(),
            created_seq: Seq(1),
            updated_seq: Seq(1),
        }
    }

    #[test]
    fn the_bundle_is_the_one_ingest_would_build_from_the_same_event() {
        let now = DateTime::parse_from_rfc3339("2026-01-24T10:00:00.250Z")
            .expect("time")
            .with_timezone(&Utc);
        let inv = plan(
            &attempt("a1", Some("radix")),
            "flaky",
            "ops",
            None,
            now,
            &Limits::default(),
        )
        .expect("plan");
        assert_eq!(inv.event.event_id, "invalidation-a1-1769248800.250000");
        assert_eq!(inv.event.timestamp, "2026-01-24T10:00:00.250Z");
        assert_eq!(inv.current_status, json!("failed"));
        let body = json!({"target": "radix", "bundle_id": inv.bundle.bundle_id, "events": [{
            "event_id": inv.event.event_id, "event_type": "attempt.invalidated",
            "timestamp": "2026-01-24T10:00:00.250000Z", "actor_id": "ops",
            "payload": {"attempt_id": "a1", "reason": "flaky"}}]});
        let parsed = crate::bundle::parse(
            &serde_json::to_vec(&body).expect("json"),
            &Limits::default(),
        )
        .expect("valid");
        assert_eq!(parsed.digest, inv.bundle.digest);
        assert_eq!(parsed.target, inv.bundle.target);
        let (a, b) = (&parsed.events[0], &inv.bundle.events[0]);
        assert_eq!(a.encode(Seq(7), None), b.encode(Seq(7), None));
        assert_eq!(a.attempt_id, b.attempt_id);
    }

    #[test]
    fn blank_reasons_and_oversized_ids_are_refused() {
        let now = Utc::now();
        let limits = Limits::default();
        assert!(plan(&attempt("a1", None), "  ", "ops", None, now, &limits).is_err());
        let long = "x".repeat(300);
        // A node id too long for `invalidation-<id>-<time>` is named by its
        // digest; the event stays within the id limits.
        let inv = plan(&attempt(&long, None), "r", "ops", None, now, &limits).expect("plan");
        let id = inv.event.event_id.to_string();
        assert!(
            id.starts_with(&format!(
                "invalidation-sha256:{}-",
                crate::digest::Sha256::of(long.as_bytes())
            )) && id.len() <= crate::ids::MAX_ID_BYTES,
            "{id}"
        );
        assert!(plan(&attempt("a1", None), "r", "ops", Some(&long), now, &limits).is_err());
        let inv = plan(
            &attempt("a1", None),
            "r",
            "ops",
            Some("alice"),
            now,
            &limits,
        )
        .expect("plan");
        assert_eq!(inv.target, DEFAULT_TARGET);
        assert_eq!(inv.event.actor_id, "ops");
        assert_eq!(inv.event.payload["requested_by"], "alice");
    }
}
