//! Projector test vectors: an NDJSON file of events with the ops (or the
//! failure) each must produce, optionally on a starting graph. The server runs
//! a projector's vectors when it loads the set (a broken projector fails the
//! deploy, not the first event); a `leviathan projector test` command can run
//! the same files through [`run`]. The format is in docs/PROJECTORS.md. It
//! owns the format and the runner; it never touches the store (each vector
//! runs against its own in-memory scratch graph).
//!
//! One JSON object per line (blank lines are skipped):
//!
//! ```json
//! {"name": "attempt created",
//!  "graph": {"nodes": [{"id": "task:t1", "node_type": "Task", "properties": {}}],
//!            "edges": [{"edge_type": "DEPENDS_ON", "from": "a", "to": "b", "properties": {}}]},
//!  "event": {"event_type": "attempt.created", "payload": {"attempt_id": "a1"},
//!            "event_id": "e1", "timestamp": "2026-01-24T10:00:00Z", "actor_id": "w",
//!            "target": "radix", "seq": 1},
//!  "ops": [{"op": "put_node", "id": "a1", "node_type": "Attempt", "properties": {}}]}
//! ```
//!
//! Exactly one of `ops` (the exact op list, in the JSON form of the state
//! digest: `op` is `put_node`, `merge_node`, `delete_node`, `put_edge` or
//! `delete_edge`) and `error` (`{"code": "rejected", "guest_code": "…"}`,
//! `guest_code` optional) is given. Only `event.event_type` and
//! `event.payload` are required.

use crate::digest::Sha256;
use crate::graph::{Direction, Edge, GraphView, Node, NodeId, Properties};
use crate::projection::{EventInput, Failure, ProjectorSet};
use crate::seq::Seq;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Largest vectors file read, in bytes.
pub const MAX_VECTORS_BYTES: u64 = 16 << 20;
/// Longest op list shown in a failure message, in characters.
const MAX_SHOWN_CHARS: usize = 4000;

/// Why a vectors file did not pass.
#[derive(Debug, thiserror::Error)]
pub enum VectorError {
    #[error("cannot be read: {0}")]
    Read(std::io::Error),
    #[error("is over {MAX_VECTORS_BYTES} bytes")]
    TooLarge,
    #[error("has no vectors")]
    Empty,
    #[error("line {line}: not a test vector: {reason}")]
    Syntax { line: usize, reason: String },
    #[error("line {line}{}: expected ops {expected}, actual ops {actual}", name_part(.name))]
    OpsDiffer {
        line: usize,
        name: Option<String>,
        expected: String,
        actual: String,
    },
    #[error("line {line}{}: expected ops {expected}, but the projector failed: {failure}", name_part(.name))]
    UnexpectedFailure {
        line: usize,
        name: Option<String>,
        expected: String,
        failure: String,
    },
    #[error("line {line}{}: expected the failure {expected}, {actual}", name_part(.name))]
    FailureDiffers {
        line: usize,
        name: Option<String>,
        expected: String,
        actual: String,
    },
}

fn name_part(name: &Option<String>) -> String {
    name.as_ref()
        .map(|n| format!(" ({n:?})"))
        .unwrap_or_default()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VectorDoc {
    name: Option<String>,
    #[serde(default)]
    graph: GraphDoc,
    event: EventDoc,
    ops: Option<Vec<Value>>,
    error: Option<ErrorDoc>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct GraphDoc {
    #[serde(default)]
    nodes: Vec<NodeDoc>,
    #[serde(default)]
    edges: Vec<EdgeDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeDoc {
    id: String,
    node_type: String,
    #[serde(default)]
    properties: Properties,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EdgeDoc {
    edge_type: String,
    from: String,
    to: String,
    #[serde(default)]
    properties: Properties,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventDoc {
    event_type: String,
    payload: Properties,
    event_id: Option<String>,
    timestamp: Option<String>,
    actor_id: Option<String>,
    target: Option<String>,
    seq: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorDoc {
    code: String,
    guest_code: Option<String>,
}

/// Runs the vectors in `file` against the projector at `index` of `set`;
/// the number of vectors that passed (all of them) or the first failure.
pub fn run_file(set: &ProjectorSet, index: usize, file: &Path) -> Result<usize, VectorError> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(file)
        .map_err(VectorError::Read)?
        .take(MAX_VECTORS_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(VectorError::Read)?;
    if text.len() as u64 > MAX_VECTORS_BYTES {
        return Err(VectorError::TooLarge);
    }
    run(set, index, &text)
}

/// Runs the vectors in `text` (NDJSON) against the projector at `index`.
pub fn run(set: &ProjectorSet, index: usize, text: &str) -> Result<usize, VectorError> {
    let mut passed = 0;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let syntax = |reason: String| VectorError::Syntax { line, reason };
        let doc: VectorDoc = serde_json::from_str(raw).map_err(|e| syntax(e.to_string()))?;
        run_one(set, index, line, doc)?;
        passed += 1;
    }
    if passed == 0 {
        return Err(VectorError::Empty);
    }
    Ok(passed)
}

fn run_one(
    set: &ProjectorSet,
    index: usize,
    line: usize,
    doc: VectorDoc,
) -> Result<(), VectorError> {
    let syntax = |reason: String| VectorError::Syntax { line, reason };
    let graph = ScratchGraph::from_doc(doc.graph).map_err(syntax)?;
    let e = doc.event;
    let event_id = e.event_id.unwrap_or_else(|| format!("vector-{line}"));
    let timestamp =
        crate::ids::Timestamp::normalize(e.timestamp.as_deref().unwrap_or("2026-01-01T00:00:00Z"))
            .map_err(syntax)?;
    let payload = crate::jcs::to_string(&Value::Object(e.payload));
    let input = EventInput {
        seq: Seq(e.seq.unwrap_or(line as u64)),
        event_id: &event_id,
        event_type: &e.event_type,
        timestamp: timestamp.as_str(),
        actor_id: e.actor_id.as_deref(),
        target: e.target.as_deref().unwrap_or("test"),
        payload_json: &payload,
        event_hash: Sha256::of(event_id.as_bytes()),
    };
    let result = set.run_one(index, &input, &graph);
    let name = doc.name;
    match (doc.ops, doc.error) {
        (Some(expected), None) => {
            check_expected_ops(&expected).map_err(syntax)?;
            let expected = Value::Array(expected);
            match result {
                Ok(ops) => {
                    let actual = serde_json::to_value(&ops).map_err(|e| syntax(e.to_string()))?;
                    // Compared as the state digest sees them (RFC 8785):
                    // key order and a number's spelling (`7.0`, `7`) do not
                    // matter.
                    if crate::jcs::to_string(&actual) != crate::jcs::to_string(&expected) {
                        return Err(VectorError::OpsDiffer {
                            line,
                            name,
                            expected: shown(&expected),
                            actual: shown(&actual),
                        });
                    }
                    Ok(())
                }
                Err(failure) => Err(VectorError::UnexpectedFailure {
                    line,
                    name,
                    expected: shown(&expected),
                    failure: format!("{}: {failure}", failure.code()),
                }),
            }
        }
        (None, Some(want)) => {
            if !Failure::CODES.contains(&want.code.as_str()) {
                return Err(syntax(format!(
                    "error.code {:?} is not a failure cause (one of {})",
                    want.code,
                    Failure::CODES.join(", ")
                )));
            }
            let expected = match &want.guest_code {
                Some(g) => format!("{} (guest code {g:?})", want.code),
                None => want.code.clone(),
            };
            let actual = match result {
                Ok(ops) => format!(
                    "but the projector returned ops {}",
                    shown(&serde_json::to_value(&ops).unwrap_or(Value::Null))
                ),
                Err(failure) => {
                    let guest = match &failure {
                        Failure::Rejected { code, .. } => Some(code.as_str()),
                        _ => None,
                    };
                    if failure.code() == want.code
                        && want.guest_code.as_deref().is_none_or(|g| guest == Some(g))
                    {
                        return Ok(());
                    }
                    format!("actual failure {}: {failure}", failure.code())
                }
            };
            Err(VectorError::FailureDiffers {
                line,
                name,
                expected,
                actual,
            })
        }
        _ => Err(syntax(
            "give exactly one of `ops` (the expected op list) and `error` (the expected failure)"
                .into(),
        )),
    }
}

/// The keys of each op's JSON form, `op` first.
const OP_KEYS: [(&str, &[&str]); 5] = [
    ("put_node", &["op", "id", "node_type", "properties"]),
    (
        "merge_node",
        &["op", "id", "node_type", "properties", "create_if_absent"],
    ),
    ("delete_node", &["op", "id"]),
    ("put_edge", &["op", "edge_type", "from", "to", "properties"]),
    ("delete_edge", &["op", "edge_type", "from", "to"]),
];

/// An expected op list in the ops' JSON form, or what is wrong with it (a
/// misspelt op or key would otherwise only show as a long difference).
fn check_expected_ops(ops: &[Value]) -> Result<(), String> {
    let names = || {
        OP_KEYS
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (i, op) in ops.iter().enumerate() {
        let Some(obj) = op.as_object() else {
            return Err(format!("ops[{i}] is not an object"));
        };
        let Some(name) = obj.get("op").and_then(Value::as_str) else {
            return Err(format!("ops[{i}] has no \"op\" (one of {})", names()));
        };
        let Some((_, keys)) = OP_KEYS.iter().find(|(n, _)| *n == name) else {
            return Err(format!(
                "ops[{i}]: unknown op {name:?} (one of {}; underscores, as in the state digest)",
                names()
            ));
        };
        for k in obj.keys() {
            if !keys.contains(&k.as_str()) {
                return Err(format!(
                    "ops[{i}] ({name}): unknown key {k:?}; its keys are {}",
                    keys.join(", ")
                ));
            }
        }
        for k in keys.iter() {
            if !obj.contains_key(*k) {
                return Err(format!(
                    "ops[{i}] ({name}): missing {k:?}; its keys are {}",
                    keys.join(", ")
                ));
            }
        }
    }
    Ok(())
}

fn shown(v: &Value) -> String {
    let text = v.to_string();
    match text.char_indices().nth(MAX_SHOWN_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// The in-memory graph a vector's projector reads: its `graph` section.
/// Edges are listed in the store's order (by type, then the other end).
#[derive(Default)]
struct ScratchGraph {
    nodes: BTreeMap<String, Node>,
    /// (from, type, to) → edge.
    out: BTreeMap<(String, String, String), Edge>,
    /// (to, type, from) → present.
    inc: BTreeMap<(String, String, String), ()>,
}

impl ScratchGraph {
    fn from_doc(doc: GraphDoc) -> Result<ScratchGraph, String> {
        let id = |what: &str, s: String| NodeId::new(what, s).map_err(|e| format!("graph: {e}"));
        let mut g = ScratchGraph::default();
        for n in doc.nodes {
            let node = Node {
                id: id("node id", n.id.clone())?,
                node_type: n.node_type,
                properties: n.properties,
                created_seq: Seq::ZERO,
                updated_seq: Seq::ZERO,
                created_at: "1970-01-01T00:00:00Z".into(),
                updated_at: "1970-01-01T00:00:00Z".into(),
            };
            g.nodes.insert(n.id, node);
        }
        for e in doc.edges {
            let edge = Edge {
                edge_type: e.edge_type.clone(),
                from: id("edge from", e.from.clone())?,
                to: id("edge to", e.to.clone())?,
                properties: e.properties,
                created_seq: Seq::ZERO,
            };
            g.inc
                .insert((e.to.clone(), e.edge_type.clone(), e.from.clone()), ());
            g.out.insert((e.from, e.edge_type, e.to), edge);
        }
        Ok(g)
    }
}

impl GraphView for ScratchGraph {
    fn get_node(&self, id: &str) -> Option<Node> {
        self.nodes.get(id).cloned()
    }

    fn edges(&self, id: &str, dir: Direction, edge_type: Option<&str>, limit: usize) -> Vec<Edge> {
        let matches =
            |k: &(String, String, String)| k.0 == id && edge_type.is_none_or(|t| k.1 == t);
        let mut out = Vec::new();
        if matches!(dir, Direction::Outgoing | Direction::Both) {
            out.extend(
                self.out
                    .iter()
                    .filter(|(k, _)| matches(k))
                    .map(|(_, e)| e.clone()),
            );
        }
        if matches!(dir, Direction::Incoming | Direction::Both) {
            for (k, ()) in self.inc.iter().filter(|(k, _)| matches(k)) {
                if dir == Direction::Both && k.0 == k.2 {
                    continue;
                }
                if let Some(e) = self.out.get(&(k.2.clone(), k.1.clone(), k.0.clone())) {
                    out.push(e.clone());
                }
            }
        }
        out.truncate(limit);
        out
    }
}
