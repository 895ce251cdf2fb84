//! The event files of `leviathan projector test` / `bench` and the scratch
//! graph they are projected into.
//!
//! One JSON object per line (blank lines skipped): the `event` of a test
//! vector (`event_type` and `payload` required; `event_id`, `timestamp`,
//! `actor_id`, `target` optional, with the vectors' defaults), or an event as
//! the API serves it (`GET /v1/events`: `seq`, `prev_hash` and `hash` are
//! accepted too, so `curl …/v1/events | jq -c '.events[]'` is an event file).
//! The scratch log numbers the events it accepts 1, 2, … (a line's `seq` is
//! not used); the event's hash (which seeds a WASI guest's randomness) is the
//! line's `hash` when given, else SHA-256 of its `event_id`, as for vectors.

use crate::digest::Sha256;
use crate::graph::{Direction, Edge, GraphStore, GraphView, Node, Op, Properties, Staging};
use crate::projection::EventInput;
use crate::seq::Seq;
use anyhow::{bail, Context};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

/// Largest event file read, in bytes.
const MAX_EVENTS_BYTES: u64 = 256 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventLine {
    event_type: String,
    payload: Properties,
    event_id: Option<String>,
    timestamp: Option<String>,
    actor_id: Option<String>,
    target: Option<String>,
    #[allow(dead_code)]
    seq: Option<u64>,
    #[allow(dead_code)]
    prev_hash: Option<Value>,
    hash: Option<String>,
}

/// One event of an event file, owned.
pub(crate) struct FileEvent {
    /// Line number in the file (1-based).
    pub line: usize,
    pub event_id: String,
    pub event_type: String,
    pub timestamp: String,
    pub actor_id: Option<String>,
    pub target: String,
    /// RFC 8785 canonical text.
    pub payload: String,
    pub hash: Sha256,
}

impl FileEvent {
    /// The event as a projector gets it, at `seq`.
    pub fn input(&self, seq: Seq) -> EventInput<'_> {
        EventInput {
            seq,
            event_id: &self.event_id,
            event_type: &self.event_type,
            timestamp: &self.timestamp,
            actor_id: self.actor_id.as_deref(),
            target: &self.target,
            payload_json: &self.payload,
            event_hash: self.hash,
        }
    }

    /// `line L (id, type)`, as messages name the event.
    pub fn who(&self) -> String {
        format!(
            "line {} ({}, {})",
            self.line, self.event_id, self.event_type
        )
    }
}

/// Reads a file as text (bounded).
pub(crate) fn read_text(file: &Path) -> anyhow::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(MAX_EVENTS_BYTES + 1).read_to_string(&mut text))
        .with_context(|| format!("reading {}", file.display()))?;
    if text.len() as u64 > MAX_EVENTS_BYTES {
        bail!("{} is over {MAX_EVENTS_BYTES} bytes", file.display());
    }
    Ok(text)
}

/// Whether `text` is a test-vectors file (its first object has an `event`).
pub(crate) fn is_vectors(text: &str) -> bool {
    text.lines()
        .find(|l| !l.trim().is_empty())
        .and_then(|l| serde_json::from_str::<Value>(l).ok())
        .is_some_and(|v| v.get("event").is_some())
}

/// Parses an event file; `file` names it in errors.
pub(crate) fn parse(file: &Path, text: &str) -> anyhow::Result<Vec<FileEvent>> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let at = || format!("{} line {line}", file.display());
        let e: EventLine =
            serde_json::from_str(raw).with_context(|| format!("{}: not an event", at()))?;
        let event_id = e.event_id.unwrap_or_else(|| format!("event-{line}"));
        let timestamp = crate::ids::Timestamp::normalize(
            e.timestamp.as_deref().unwrap_or("2026-01-01T00:00:00Z"),
        )
        .map_err(|r| anyhow::anyhow!("{}: timestamp: {r}", at()))?;
        let hash: Sha256 = match &e.hash {
            Some(h) => h
                .parse()
                .map_err(|r| anyhow::anyhow!("{}: hash: {r}", at()))?,
            None => Sha256::of(event_id.as_bytes()),
        };
        out.push(FileEvent {
            line,
            payload: crate::jcs::to_string(&Value::Object(e.payload)),
            event_id,
            event_type: e.event_type,
            timestamp: timestamp.as_str().to_owned(),
            actor_id: e.actor_id,
            target: e.target.unwrap_or_else(|| "test".into()),
            hash,
        });
    }
    if out.is_empty() {
        bail!("{} has no events", file.display());
    }
    Ok(out)
}

/// An empty graph in a temporary fjall directory (removed on drop), staged
/// as the writer stages a batch.
pub(crate) struct Scratch {
    pub staging: Staging,
    /// Every node id an applied op named: with an empty start, every node and
    /// every edge's origin is among them.
    touched: BTreeSet<String>,
    _db: fjall::Database,
    _dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> anyhow::Result<Scratch> {
        // On tmpfs when there is one: fjall syncs as it creates keyspaces.
        let dir = tempfile::Builder::new()
            .prefix("leviathan-projector-")
            .tempdir_in("/dev/shm")
            .or_else(|_| {
                tempfile::Builder::new()
                    .prefix("leviathan-projector-")
                    .tempdir()
            })
            .context("creating a temporary directory for the scratch graph")?;
        let db = crate::storage::open_database(dir.path()).context("opening the scratch graph")?;
        let store = GraphStore::open(&db).context("opening the scratch graph")?;
        let staging = store.staging().context("opening the scratch graph")?;
        Ok(Scratch {
            staging,
            touched: BTreeSet::new(),
            _db: db,
            _dir: dir,
        })
    }

    /// The next seq the scratch log gives.
    pub fn next_seq(&self) -> Seq {
        self.staging.state().0.next()
    }

    /// Notes the node ids `ops` name (after they were applied).
    pub fn touch(&mut self, ops: &[Op]) {
        for op in ops {
            match op {
                Op::PutNode { id, .. } | Op::MergeNode { id, .. } | Op::DeleteNode { id } => {
                    self.touched.insert(id.as_str().to_owned());
                }
                Op::PutEdge { from, to, .. } | Op::DeleteEdge { from, to, .. } => {
                    self.touched.insert(from.as_str().to_owned());
                    self.touched.insert(to.as_str().to_owned());
                }
            }
        }
    }

    /// Every node, by id, and every edge, by (from, type, to).
    pub fn contents(&self) -> (Vec<Node>, Vec<Edge>) {
        let nodes = self
            .touched
            .iter()
            .filter_map(|id| self.staging.get_node(id))
            .collect();
        let mut edges = Vec::new();
        for id in &self.touched {
            edges.extend(
                self.staging
                    .edges(id, Direction::Outgoing, None, usize::MAX),
            );
        }
        (nodes, edges)
    }
}
