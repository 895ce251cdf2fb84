//! The HTTP v1 wire models: one typed struct per response body, shared by the
//! server (which serializes them) and `leviathanctl` (which deserializes them).
//! Domain types (the log's `StoredEvent`, the graph's `Node`, the read side's
//! results) are converted here and never serialized directly, so a change in
//! the domain cannot change the wire by accident.
//!
//! Field order is the order on the wire (serde writes declared order); bodies
//! that were built as JSON maps before these types existed list their keys
//! alphabetically, and keep doing so. docs/API.md documents every shape.

use crate::digest::Sha256;
use crate::seq::Seq;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::fmt;

// ---------------------------------------------------------------- errors

/// Every error: `{"detail", "error": {code, details?, message}}`. `detail`
/// repeats the message where FastAPI put it, for the original's clients.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub detail: String,
    pub error: ErrorInfo,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
    pub message: String,
}

// ---------------------------------------------------------------- the log

/// `POST /v1/events/ingest`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IngestResponse {
    pub ingested: u64,
    pub bundle_id: String,
    pub status: IngestStatus,
    pub first_seq: Option<Seq>,
    pub last_seq: Option<Seq>,
    pub head_seq: Seq,
    pub head_hash: Option<Sha256>,
    pub duplicates: u64,
    pub missing_artifacts: Vec<Sha256>,
}

/// Whether a bundle was appended now (`ok`) or had been before (`duplicate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IngestStatus {
    Ok,
    Duplicate,
}

impl From<crate::writer::AppendStatus> for IngestStatus {
    fn from(s: crate::writer::AppendStatus) -> IngestStatus {
        match s {
            crate::writer::AppendStatus::Ok => IngestStatus::Ok,
            crate::writer::AppendStatus::Duplicate => IngestStatus::Duplicate,
        }
    }
}

/// An event as the log routes serve it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
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

impl From<crate::log::record::StoredEvent> for Event {
    fn from(e: crate::log::record::StoredEvent) -> Event {
        Event {
            seq: e.seq,
            event_id: e.event_id,
            event_type: e.event_type,
            timestamp: e.timestamp,
            actor_id: e.actor_id,
            target: e.target,
            payload: e.payload,
            prev_hash: e.prev_hash,
            hash: e.hash,
        }
    }
}

/// `GET /v1/events?after_seq=&limit=`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventsPage {
    pub events: Vec<Event>,
    pub next_after_seq: Seq,
    pub head_seq: Seq,
}

/// `GET /v1/log/head`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub seq: Seq,
    pub hash: Option<Sha256>,
}

impl From<crate::log::Head> for Head {
    fn from(h: crate::log::Head) -> Head {
        Head {
            seq: h.seq,
            hash: h.hash,
        }
    }
}

/// `GET /v1/log/verify`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verify {
    pub ok: bool,
    pub verified_events: u64,
    pub head: Head,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_broken_seq: Option<Seq>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl From<crate::log::VerifyReport> for Verify {
    fn from(r: crate::log::VerifyReport) -> Verify {
        Verify {
            ok: r.ok,
            verified_events: r.verified_events,
            head: r.head.into(),
            first_broken_seq: r.first_broken_seq,
            error: r.error,
        }
    }
}

/// `GET /v1/failures`: one failure event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failure {
    pub attempt_id: Option<Value>,
    pub task_id: Option<Value>,
    pub target: Option<Value>,
    pub error: Option<Value>,
    pub failure_type: Option<Value>,
    pub timestamp: String,
    pub event_type: String,
    pub event_id: String,
    pub seq: Seq,
}

/// `GET /v1/failures?target=&limit=&cursor=`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failures {
    pub failures: Vec<Failure>,
    pub count: usize,
    /// Set when the scan stopped before the oldest failure: pass it back as
    /// `cursor` for older ones (the page may hold fewer than `limit`).
    #[serde(default)]
    pub next_cursor: Option<String>,
}

// ---------------------------------------------------------------- the graph

/// `(type, count)` pairs serialized as one JSON object, keys in list order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OrderedCounts(pub Vec<(String, u64)>);

impl Serialize for OrderedCounts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for OrderedCounts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedCounts;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object of counts")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<OrderedCounts, A::Error> {
                let mut out = Vec::new();
                while let Some(e) = m.next_entry()? {
                    out.push(e);
                }
                Ok(OrderedCounts(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// One of the summary's recent events.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecentEvent {
    pub event_id: String,
    pub timestamp: String,
    pub event_type: String,
    pub actor_id: Option<String>,
    pub target: Value,
    pub attempt_id: Value,
}

impl From<crate::log::record::StoredEvent> for RecentEvent {
    fn from(e: crate::log::record::StoredEvent) -> RecentEvent {
        let p = e.payload_value();
        RecentEvent {
            target: p.get("target_id").cloned().unwrap_or(Value::Null),
            attempt_id: p.get("attempt_id").cloned().unwrap_or(Value::Null),
            event_id: e.event_id,
            timestamp: e.timestamp,
            event_type: e.event_type,
            actor_id: e.actor_id,
        }
    }
}

/// `GET /v1/graph/summary`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub nodes_by_type: OrderedCounts,
    pub edges_by_type: OrderedCounts,
    pub recent_events: Vec<RecentEvent>,
}

/// A graph node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub created_at: String,
    pub created_seq: Seq,
    pub node_id: String,
    pub node_type: String,
    pub properties: Map<String, Value>,
    pub updated_at: String,
    pub updated_seq: Seq,
}

impl From<crate::graph::Node> for Node {
    fn from(n: crate::graph::Node) -> Node {
        Node {
            created_at: n.created_at,
            created_seq: n.created_seq,
            node_id: n.id.into_string(),
            node_type: n.node_type,
            properties: n.properties,
            updated_at: n.updated_at,
            updated_seq: n.updated_seq,
        }
    }
}

/// `GET /v1/graph/nodes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodesPage {
    pub count: usize,
    pub next_cursor: Option<String>,
    pub nodes: Vec<Node>,
}

/// A graph edge; its id is `from:TYPE:to`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Edge {
    pub created_seq: Seq,
    pub edge_id: String,
    pub edge_type: String,
    pub from_node: String,
    pub properties: Map<String, Value>,
    pub to_node: String,
}

impl From<crate::graph::Edge> for Edge {
    fn from(e: crate::graph::Edge) -> Edge {
        Edge {
            created_seq: e.created_seq,
            edge_id: crate::graph::edge_id(&e.from, &e.edge_type, &e.to),
            edge_type: e.edge_type,
            from_node: e.from.into_string(),
            properties: e.properties,
            to_node: e.to.into_string(),
        }
    }
}

/// `GET /v1/graph/nodes/{id}/edges`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EdgesPage {
    pub count: usize,
    pub edges: Vec<Edge>,
    pub next_cursor: Option<String>,
    pub node_id: String,
}

/// One projector of `GET /v1/projection`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Projector {
    pub digest: Sha256,
    pub edge_types: Vec<String>,
    pub handles: Vec<String>,
    #[serde(default)]
    pub limits: Option<ProjectorLimits>,
    pub name: String,
    pub node_types: Vec<String>,
    /// `reject` or `record`.
    #[serde(default)]
    pub on_error: String,
    /// `inline` (in the writer's batch) or `async` (applied behind the head).
    #[serde(default)]
    pub mode: String,
    /// The last seq this projector has applied (the graph's applied seq for
    /// an inline one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_seq: Option<Seq>,
    /// Events it lags the log's head by (0 for an inline one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_events: Option<u64>,
    /// How long it has been behind the head, in seconds (0: caught up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<f64>,
    pub version: String,
}

/// The async projectors of the live generation (`GET /v1/projection`,
/// `async`): applied by the follower behind the head.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AsyncLane {
    /// The last seq every async projector has applied.
    pub applied_seq: Seq,
    pub lag_events: u64,
    pub lag_seconds: f64,
    pub events_per_second: f64,
    /// The async lane's rolling digest at `applied_seq`.
    pub async_digest: Sha256,
    /// `SHA-256(inline digest ‖ async digest)` at `applied_seq`: the state
    /// digest of every projector of the set at that seq.
    pub combined_digest: Option<Sha256>,
    /// Projection errors the async projectors recorded since the server started.
    pub errors: u64,
    /// The last failure that stopped a round of the follower (retried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The per-event limits a projector runs under.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProjectorLimits {
    pub fuel: u64,
    pub instances: usize,
    pub memory_mib: usize,
    pub tables: usize,
}

/// One recorded projection error (`GET /v1/projection/errors`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProjectionError {
    pub code: String,
    pub event_id: String,
    pub message: String,
    pub projector: String,
    pub seq: Seq,
}

impl From<crate::graph::ErrorRecord> for ProjectionError {
    fn from(e: crate::graph::ErrorRecord) -> Self {
        ProjectionError {
            code: e.code,
            event_id: e.event_id,
            message: e.message,
            projector: e.projector,
            seq: e.seq,
        }
    }
}

/// `GET /v1/projection/errors?projector=&limit=&cursor=`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProjectionErrorsPage {
    pub count: usize,
    pub errors: Vec<ProjectionError>,
    pub next_cursor: Option<String>,
}

/// `GET /v1/projection`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Projection {
    pub applied_seq: Seq,
    pub fingerprint: Sha256,
    /// The live generation's id.
    #[serde(default)]
    pub generation: u64,
    pub log_head_seq: Seq,
    pub projectors: Vec<Projector>,
    pub state_digest: Sha256,
    /// The generation being built behind the live one (or the last build,
    /// until the server restarts): its progress, errors and ETA.
    #[serde(default)]
    pub build: Option<GenerationBuild>,
    /// The async projectors' progress, when the set has any.
    #[serde(default, rename = "async", skip_serializing_if = "Option::is_none")]
    pub asynchronous: Option<AsyncLane>,
    /// The generation kept for a roll back (`keep_previous = true`), if any.
    #[serde(default)]
    pub kept: Vec<KeptGeneration>,
}

/// A generation kept for a roll back (`GET /v1/projection`, `kept`): it no
/// longer follows the log; its set, started again, catches it up from
/// `applied_seq`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeptGeneration {
    pub generation: u64,
    pub fingerprint: Sha256,
    /// `name@version` of each projector of its set.
    pub projectors: Vec<String>,
    pub applied_seq: Seq,
    pub created_at: String,
    /// When it stopped being live (null for generations kept before
    /// session 36).
    pub kept_at: Option<String>,
}

/// A generation build's progress (`GET /v1/projection`, `build`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerationBuild {
    pub generation: u64,
    pub fingerprint: Sha256,
    /// `name@version` of each projector of the new set.
    pub projectors: Vec<String>,
    /// `building`, `switching`, `switched` (live now), `pending` (too many
    /// errors: not live) or `failed`.
    pub state: String,
    pub applied_seq: Seq,
    /// Where this run of the build started (above 0: a resumed build).
    pub resumed_from_seq: Seq,
    pub head_seq: Seq,
    pub lag_events: u64,
    pub events_per_second: f64,
    pub errors: u64,
    pub max_build_errors: u64,
    pub eta_seconds: Option<f64>,
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl From<crate::generations::BuildStatus> for GenerationBuild {
    fn from(s: crate::generations::BuildStatus) -> GenerationBuild {
        GenerationBuild {
            generation: s.generation,
            fingerprint: s.fingerprint,
            projectors: s.projectors,
            state: serde_json::to_value(s.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            applied_seq: s.applied_seq,
            resumed_from_seq: s.resumed_from_seq,
            head_seq: s.head_seq,
            lag_events: s.lag_events,
            events_per_second: s.events_per_second,
            errors: s.errors,
            max_build_errors: s.max_build_errors,
            eta_seconds: s.eta_seconds,
            started_at: s.started_at,
            message: s.message,
        }
    }
}

// ---------------------------------------------------------------- attempts

/// One row of `GET /v1/attempts`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptItem {
    pub attempt_id: String,
    pub created_seq: Seq,
    pub pr_number: Value,
    pub pr_url: Value,
    pub status: Value,
    pub target: Value,
    pub task_id: Value,
    pub timestamp: Value,
    pub updated_seq: Seq,
}

/// `GET /v1/attempts?target=&limit=&cursor=`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptsPage {
    pub attempts: Vec<AttemptItem>,
    pub count: usize,
    pub next_cursor: Option<String>,
}

/// An event of an attempt's detail.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptEvent {
    pub actor_id: Option<String>,
    pub event_id: String,
    pub event_type: String,
    pub payload: Box<RawValue>,
    pub seq: Seq,
    pub timestamp: String,
}

impl From<crate::log::record::StoredEvent> for AttemptEvent {
    fn from(e: crate::log::record::StoredEvent) -> AttemptEvent {
        AttemptEvent {
            actor_id: e.actor_id,
            event_id: e.event_id,
            event_type: e.event_type,
            payload: e.payload,
            seq: e.seq,
            timestamp: e.timestamp,
        }
    }
}

/// `GET /v1/attempts/{id}`. `attempt_node` is null when events name the
/// attempt but none created it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptDetail {
    pub artifacts: Vec<Node>,
    pub attempt_node: Option<Node>,
    pub events: Vec<AttemptEvent>,
    pub pull_requests: Vec<Node>,
}

/// The event an invalidation appends (or would append).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InvalidationEvent {
    pub actor_id: String,
    pub event_id: String,
    pub event_type: String,
    pub payload: Value,
    pub timestamp: String,
}

/// `POST /v1/attempts/{id}/invalidate?dry_run=true`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InvalidationPlan {
    pub attempt_id: String,
    pub current_status: Value,
    pub dry_run: bool,
    pub event: InvalidationEvent,
    pub status: String,
    pub target: String,
}

/// `POST /v1/attempts/{id}/invalidate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Invalidated {
    pub attempt_id: String,
    pub event_id: String,
    pub head_hash: Option<Sha256>,
    pub seq: Option<Seq>,
    pub status: String,
}

// ---------------------------------------------------------------- the rest

/// `PUT`/`POST /v1/artifacts`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stored {
    pub sha256: Sha256,
    pub size: u64,
    pub created: bool,
}

/// `GET /v1/topology/summary`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopologySummary {
    pub areas_count: Value,
    pub commit_sha: Value,
    pub dependencies_count: Value,
    pub flows_count: u64,
    pub subsystems_count: Value,
    pub target_id: String,
}

/// `GET /v1/topology/{kind}`: `{<kind>: [payload…], target_id}`.
#[derive(Debug, Clone, PartialEq)]
pub struct TopologyList {
    /// `areas`, `subsystems` or `dependencies`: the key of the list.
    pub kind: String,
    pub items: Vec<Value>,
    pub target_id: String,
}

impl Serialize for TopologyList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Keys in alphabetical order, as the map it replaced.
        let mut entries: Vec<(&str, Value)> = vec![
            (self.kind.as_str(), Value::Array(self.items.clone())),
            ("target_id", Value::String(self.target_id.clone())),
        ];
        entries.sort_by(|a, b| a.0.cmp(b.0));
        let mut m = s.serialize_map(Some(entries.len()))?;
        for (k, v) in &entries {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// `GET /v1/autonomy/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AutonomyStatus {
    pub autonomy_enabled: bool,
    pub source: String,
}

/// `POST /v1/backlog/suggest`: the original's placeholder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BacklogSuggestion {
    pub attempt_id: Option<String>,
    pub message: String,
    pub pr_url: Option<String>,
    pub status: String,
    pub tasks_proposed: Option<u64>,
}

/// `GET /healthz`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_node_on_the_wire_has_the_shape_and_byte_order_clients_saw() {
        let mut properties = Map::new();
        properties.insert("status".into(), json!("running"));
        let n = crate::graph::Node {
            id: crate::graph::NodeId::new("node id", "a1").expect("not empty"),
            node_type: "Attempt".into(),
            properties,
            created_seq: Seq(3),
            updated_seq: Seq(4),
            created_at: "2026-01-01T00:00:00Z".into(),
            updated_at: "2026-01-01T00:00:01Z".into(),
        };
        let text = serde_json::to_string(&Node::from(n)).expect("serializable");
        assert_eq!(
            text,
            r#"{"created_at":"2026-01-01T00:00:00Z","created_seq":3,"node_id":"a1","node_type":"Attempt","properties":{"status":"running"},"updated_at":"2026-01-01T00:00:01Z","updated_seq":4}"#
        );
        let back: Node = serde_json::from_str(&text).expect("round trip");
        assert_eq!(back.node_id, "a1");
    }

    #[test]
    fn an_error_body_carries_detail_beside_error() {
        let body = ErrorBody {
            detail: "no event".into(),
            error: ErrorInfo {
                code: "not_found".into(),
                details: None,
                message: "no event".into(),
            },
        };
        assert_eq!(
            serde_json::to_string(&body).expect("serializable"),
            r#"{"detail":"no event","error":{"code":"not_found","message":"no event"}}"#
        );
    }
}

// ---------------------------------------------------------------- chain verification

/// `GET /v1/log/verification`: the last result of the server's background
/// chain verifier (`LEVIATHAN_VERIFY_INTERVAL_SECS`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainVerification {
    /// `pending` (no pass has finished yet), `ok`, `failed` (the chain is
    /// broken at `first_broken_seq`) or `error` (the log could not be read).
    pub status: String,
    /// The chain is verified from seq 1 up to this seq (0: nothing yet).
    pub verified_seq: Seq,
    /// The hash of the record at `verified_seq`.
    pub verified_hash: Option<Sha256>,
    /// When the last pass finished (RFC 3339, UTC).
    pub last_verified_at: Option<String>,
    /// How long the last pass took, and how many records it checked.
    pub last_duration_ms: Option<f64>,
    pub last_checked_events: Option<u64>,
    /// Passes finished since the server started, and those that failed.
    pub passes: u64,
    pub failures: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_broken_seq: Option<Seq>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Seconds between passes.
    pub interval_secs: u64,
}

// ---------------------------------------------------------------- history

/// One change of a node (`GET /v1/graph/nodes/{id}/history`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeChange {
    pub seq: Seq,
    /// Position among the changes of the same event (0, 1, ...).
    pub ord: u32,
    pub event_id: String,
    pub event_type: String,
    /// `name@version` of the projector whose op made the change.
    pub projector: Option<String>,
    /// The op as the projector emitted it.
    pub op: Value,
    /// The node right after the change; `null` when the change deleted it.
    pub node: Option<Node>,
}

/// `GET /v1/graph/nodes/{id}/history`: oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeHistoryPage {
    pub node_id: String,
    pub count: usize,
    pub changes: Vec<NodeChange>,
    pub next_cursor: Option<String>,
    /// The first seq the history covers (1 unless the store predates the
    /// history index and was not rebuilt since).
    pub history_from: Seq,
}
