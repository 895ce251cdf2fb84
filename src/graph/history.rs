//! Node and edge history: every change the writer's batch makes to a node or
//! an edge, indexed by (id, seq), with what caused it (the event, its type,
//! the projector and the op) and the record as it stood right after. It
//! answers "why is this node what it is" and "what was it at seq N" without a
//! replay. It is an index beside the graph, like `graph_errors`: written into
//! the same batch as the changes it describes, rebuilt by `leviathan rebuild`
//! (which clears and re-projects every graph keyspace), and **not** part of
//! the state digest (docs/HASHING.md): the digest covers the ops, and this
//! index is derived from the same ops.
//!
//! # Layout (keyspace `graph_history`)
//! `lp(s)` = `u32` big-endian byte length ‖ UTF-8 bytes (as in `keys`); `seq`
//! = `Seq::to_key`; `ord` = `u32` big-endian, the change's position among the
//! changes of its event (0, 1, ...), so an event that touches one node twice
//! keeps both changes in order.
//!
//! | key | value |
//! |---|---|
//! | `b'n' ‖ lp(node id) ‖ seq ‖ ord` | change record, `"node"` = the node after it (`null`: deleted) |
//! | `b'e' ‖ lp(from) ‖ lp(type) ‖ lp(to) ‖ seq ‖ ord` | change record, `"edge"` = the edge after it (`null`: deleted) |
//!
//! The keyspace is key-value separated (`storage::separated_keyspace_options`):
//! a record is written once, never overwritten, and read only by the history
//! routes, so it goes into an append-only blob file and compaction, which
//! the node-id keys make frequent, moves only the keys and blob handles.
//!
//! An edge's changes are indexed once, under the edge (its `from`, type and
//! `to`), not under both endpoints: a node's outgoing edge changes are one
//! prefix scan (`b'e' ‖ lp(from)`), and each change is written once. A
//! `delete-node` records the node's deletion and the deletion of every edge
//! touching it, each with the `delete-node` op as its cause.
//!
//! The change record is compact JSON (top-level keys sorted): `seq`, `event_id`,
//! `event_type`, `projector` (`name@version`; `null` when ops were applied
//! outside a projector set, as in tests), `op` (the op as the projector
//! emitted it, in the wire form of `Op`), `ord`, and `node`, `node_diff` or
//! `edge`.
//!
//! # Node snapshots and diffs
//! Storing the whole node after every change doubled the store and cost
//! ~45 % of ingest (docs/BENCHMARKS.md). A node change is stored whole
//! (`node`: the record after it, `null` when deleted) when the node is
//! created, deleted or changes type, or when its previous change was in
//! another block of [`SNAPSHOT_BLOCK`] seqs; otherwise as `node_diff`
//! (`{"set": {changed properties}, "unset": [removed keys], "updated_at"}`),
//! applied to the record before it (its `updated_seq` becomes the change's
//! seq). Reading a node at a seq replays the diffs since its last snapshot:
//! at most the node's changes within one block. The rule depends only on the
//! seqs, so a rebuild writes the same records. Edges are always stored
//! whole (they rarely change). The history routes answer every change with
//! the whole node, as before.

use crate::graph::error::GraphError;
use crate::graph::keys;
use crate::graph::model::{Edge, Node, Op};
use crate::graph::store::GraphStore;
use crate::seq::Seq;
use fjall::{OwnedWriteBatch, Readable};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::sync::Arc;

const NODE_TAG: u8 = b'n';
const EDGE_TAG: u8 = b'e';
/// Cursor tag of a node history page.
const CURSOR_NODE: u8 = b'H';

/// What caused the changes being applied: the event and the projector.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Source {
    event_id: String,
    event_type: String,
    projector: Option<String>,
}

/// A node or edge as it stood after a change: its compact JSON, written
/// when the change is made (no copy of the record is kept; `None`: deleted).
type After = Option<Box<RawValue>>;

/// A node change as stored: the whole record after it, or its diff.
enum NodeAfter {
    Whole(After),
    Diff(Box<RawValue>),
}

enum Target {
    Node { id: String, after: NodeAfter },
    Edge { key: Vec<u8>, after: After },
}

/// Node changes are stored whole at least once per block of this many seqs
/// (see the module docs).
pub(crate) const SNAPSHOT_BLOCK: u64 = 256;

/// Whether a change at `seq` to a node last changed at `before_updated` is
/// stored whole rather than as a diff.
pub(crate) fn snapshot_due(before_updated: Seq, seq: Seq) -> bool {
    before_updated.0 / SNAPSHOT_BLOCK != seq.0 / SNAPSHOT_BLOCK
}

/// A node's diff as written: the properties set (changed or added), those
/// removed, and the new `updated_at`.
#[derive(Serialize)]
struct DiffOut<'a> {
    set: std::collections::BTreeMap<&'a str, &'a serde_json::Value>,
    unset: Vec<&'a str>,
    updated_at: &'a str,
}

/// A node's diff as read back.
#[derive(Debug, Deserialize)]
struct NodeDiff {
    set: crate::graph::model::Properties,
    unset: Vec<String>,
    updated_at: String,
}

/// The compact JSON of a node diff: `set` and `unset` relative to the node
/// before the change.
pub(crate) fn node_diff<'a>(
    set: impl Iterator<Item = (&'a String, &'a serde_json::Value)>,
    unset: impl Iterator<Item = &'a String>,
    updated_at: &str,
) -> Box<RawValue> {
    raw(&DiffOut {
        set: set.map(|(k, v)| (k.as_str(), v)).collect(),
        unset: unset.map(String::as_str).collect(),
        updated_at,
    })
}

struct Change {
    seq: Seq,
    source: Arc<Source>,
    /// The op's compact JSON, shared by every change it made.
    op: Option<Arc<RawValue>>,
    target: Target,
}

/// One change as stored and as the history routes answer it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeRecord {
    pub seq: Seq,
    /// Position among the changes of the same event.
    pub ord: u32,
    pub event_id: String,
    pub event_type: String,
    /// `name@version` of the projector whose op made the change.
    pub projector: Option<String>,
    /// The op that made the change.
    pub op: serde_json::Value,
    /// The node right after the change (`None`: deleted). Node changes only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Option<Node>>,
    /// The edge right after the change (`None`: deleted). Edge changes only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge: Option<Option<Edge>>,
}

/// A change record as read back: [`ChangeRecord`] plus the node diff, if
/// the change was stored as one.
#[derive(Debug, Deserialize)]
struct StoredChange {
    #[serde(flatten)]
    record: ChangeRecord,
    #[serde(default)]
    node_diff: Option<NodeDiff>,
}

/// A change record as written: [`ChangeRecord`]'s fields, borrowed, in
/// sorted key order.
#[derive(Serialize)]
struct RecordOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    edge: Option<Option<&'a RawValue>>,
    event_id: &'a str,
    event_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<Option<&'a RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node_diff: Option<&'a RawValue>,
    op: Option<&'a RawValue>,
    ord: u32,
    projector: Option<&'a str>,
    seq: Seq,
}

/// The pending history of one `Staging` (one write batch).
#[derive(Default)]
pub(crate) struct Pending {
    source: Arc<Source>,
    seq: Seq,
    op: Option<Arc<RawValue>>,
    changes: Vec<Change>,
}

impl Pending {
    /// Names the event and projector whose ops are applied next.
    pub(crate) fn set_source(&mut self, event_id: &str, event_type: &str, projector: Option<&str>) {
        let s = &*self.source;
        if s.event_id != event_id
            || s.event_type != event_type
            || s.projector.as_deref() != projector
        {
            self.source = Arc::new(Source {
                event_id: event_id.to_owned(),
                event_type: event_type.to_owned(),
                projector: projector.map(str::to_owned),
            });
        }
    }

    /// The op applied next, for the event at `seq` (its changes are
    /// recorded with it).
    pub(crate) fn set_op(&mut self, seq: Seq, op: &Op) {
        self.seq = seq;
        self.op = Some(Arc::from(raw(op)));
    }

    fn push(&mut self, target: Target) {
        self.changes.push(Change {
            seq: self.seq,
            source: self.source.clone(),
            op: self.op.clone(),
            target,
        });
    }

    /// A node change stored whole (`None`: deleted).
    pub(crate) fn node(&mut self, id: &str, after: Option<&Node>) {
        self.push(Target::Node {
            id: id.to_owned(),
            after: NodeAfter::Whole(after.map(raw)),
        });
    }

    /// A node change stored as its diff ([`node_diff`]).
    pub(crate) fn node_changed(&mut self, id: &str, diff: Box<RawValue>) {
        self.push(Target::Node {
            id: id.to_owned(),
            after: NodeAfter::Diff(diff),
        });
    }

    pub(crate) fn edge(&mut self, out_key: &[u8], after: Option<&Edge>) {
        self.push(Target::Edge {
            key: out_key.to_vec(),
            after: after.map(raw),
        });
    }

    /// Rollback mark: the number of changes.
    pub(crate) fn len(&self) -> usize {
        self.changes.len()
    }

    pub(crate) fn truncate(&mut self, len: usize) {
        self.changes.truncate(len);
    }

    /// Writes every change into `batch` (keyspace `graph_history`).
    pub(crate) fn write_into(
        &self,
        store: &GraphStore,
        batch: &mut OwnedWriteBatch,
    ) -> Result<(), GraphError> {
        let mut ord = 0u32;
        let mut last_seq = None;
        for c in &self.changes {
            if last_seq == Some(c.seq) {
                ord += 1;
            } else {
                ord = 0;
                last_seq = Some(c.seq);
            }
            let (key, node, node_diff, edge) = match &c.target {
                Target::Node {
                    id,
                    after: NodeAfter::Whole(after),
                } => (node_key(id, c.seq, ord), Some(after.as_deref()), None, None),
                Target::Node {
                    id,
                    after: NodeAfter::Diff(diff),
                } => (node_key(id, c.seq, ord), None, Some(&**diff), None),
                Target::Edge { key, after } => {
                    let (from, t, to) = keys::split3(key)?;
                    (
                        edge_key(from, t, to, c.seq, ord),
                        None,
                        None,
                        Some(after.as_deref()),
                    )
                }
            };
            // Serialized from borrows (no copy of the op or the record).
            let record = RecordOut {
                edge,
                event_id: &c.source.event_id,
                event_type: &c.source.event_type,
                node,
                node_diff,
                op: c.op.as_deref(),
                ord,
                projector: c.source.projector.as_deref(),
                seq: c.seq,
            };
            // `to_vec` starts at 128 bytes and grows by reallocation (a
            // measurable share of a rebuild); most records fit this.
            let mut value = Vec::with_capacity(super::store::RECORD_BUFFER);
            serde_json::to_writer(&mut value, &record)?;
            batch.insert(&store.history, key, value);
        }
        Ok(())
    }
}

/// The compact JSON of a graph record or op (the bytes `serde_json::to_vec`
/// gives): these types hold only strings, finite numbers and string-keyed
/// maps, so serializing them cannot fail.
fn raw<T: Serialize>(value: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).expect("a graph record or op always serializes")
}

fn node_prefix(id: &str) -> Vec<u8> {
    let mut k = vec![NODE_TAG];
    k.extend_from_slice(&keys::lp(id));
    k
}

fn node_key(id: &str, seq: Seq, ord: u32) -> Vec<u8> {
    let mut k = node_prefix(id);
    k.extend_from_slice(&seq.to_key());
    k.extend_from_slice(&ord.to_be_bytes());
    k
}

fn edge_prefix(from: &str, edge_type: &str) -> Vec<u8> {
    let mut k = vec![EDGE_TAG];
    k.extend_from_slice(&keys::lp2(from, edge_type));
    k
}

fn edge_key(from: &str, edge_type: &str, to: &str, seq: Seq, ord: u32) -> Vec<u8> {
    let mut k = edge_prefix(from, edge_type);
    k.extend_from_slice(&keys::lp(to));
    k.extend_from_slice(&seq.to_key());
    k.extend_from_slice(&ord.to_be_bytes());
    k
}

fn decode(bytes: &[u8]) -> Result<StoredChange, GraphError> {
    serde_json::from_slice(bytes).map_err(|_| GraphError::corrupt("history record", bytes))
}

/// `node` after the change `diff` made at `seq`.
fn apply_diff(node: &mut Node, seq: Seq, diff: NodeDiff) {
    for (k, v) in diff.set {
        node.properties.insert(k, v);
    }
    for k in &diff.unset {
        node.properties.remove(k);
    }
    node.updated_seq = seq;
    node.updated_at = diff.updated_at;
}

/// One page of a node's history, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPage {
    pub changes: Vec<ChangeRecord>,
    pub next_cursor: Option<String>,
}

impl GraphStore {
    /// The changes of node `id`, oldest first, after `cursor`, at most
    /// `limit`, through one snapshot.
    pub fn node_history_at(
        &self,
        snap: &impl Readable,
        id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<HistoryPage, GraphError> {
        let prefix = node_prefix(id);
        let lower = match cursor {
            Some(c) => {
                let raw = hex::decode(c).map_err(|_| GraphError::BadCursor)?;
                match raw.split_first() {
                    Some((&CURSOR_NODE, key)) if key.starts_with(&prefix) => {
                        std::ops::Bound::Excluded(key.to_vec())
                    }
                    _ => return Err(GraphError::BadCursor),
                }
            }
            None => std::ops::Bound::Included(prefix.clone()),
        };
        let upper =
            keys::prefix_end(&prefix).map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        let mut changes = Vec::new();
        let mut last_key: Option<Vec<u8>> = None;
        // The node as it stood before the change being read (known once a
        // snapshot is read, or looked up before the page's first diff).
        let mut current: Option<Option<Node>> = None;
        for guard in snap.range(&self.history, (lower, upper)) {
            let (k, v) = guard.into_inner()?;
            if changes.len() == limit {
                let mut raw = vec![CURSOR_NODE];
                raw.extend_from_slice(last_key.as_deref().unwrap_or(&prefix));
                return Ok(HistoryPage {
                    changes,
                    next_cursor: Some(hex::encode(raw)),
                });
            }
            let StoredChange {
                mut record,
                node_diff,
            } = decode(&v)?;
            match node_diff {
                None => current = Some(record.node.clone().flatten()),
                Some(diff) => {
                    let before = match current.take() {
                        Some(n) => n,
                        None => self.node_before(snap, &prefix, &k)?,
                    };
                    let mut node = before.ok_or_else(|| {
                        GraphError::corrupt("history record (a diff of no node)", &k)
                    })?;
                    apply_diff(&mut node, record.seq, diff);
                    record.node = Some(Some(node.clone()));
                    current = Some(Some(node));
                }
            }
            changes.push(record);
            last_key = Some(k.to_vec());
        }
        Ok(HistoryPage {
            changes,
            next_cursor: None,
        })
    }

    /// Node `id` as it stood right after `seq` (`None`: it did not exist
    /// then), from the history index: the last change at or before `seq`.
    pub fn node_as_of(
        &self,
        snap: &impl Readable,
        id: &str,
        seq: Seq,
    ) -> Result<Option<Node>, GraphError> {
        let prefix = node_prefix(id);
        let mut upper = prefix.clone();
        upper.extend_from_slice(&Seq(seq.0.saturating_add(1)).to_key());
        self.node_before(snap, &prefix, &upper)
    }

    /// The node (under history `prefix`) as its changes before the key
    /// `upper` left it: the last snapshot before it, with the diffs after
    /// that snapshot applied in order.
    fn node_before(
        &self,
        snap: &impl Readable,
        prefix: &[u8],
        upper: &[u8],
    ) -> Result<Option<Node>, GraphError> {
        let mut diffs = Vec::new();
        let mut base = None;
        for guard in snap
            .range(&self.history, prefix.to_vec()..upper.to_vec())
            .rev()
        {
            let (k, v) = guard.into_inner()?;
            let StoredChange { record, node_diff } = decode(&v)?;
            match node_diff {
                Some(diff) => diffs.push((record.seq, diff, k)),
                None => {
                    base = Some(record.node.flatten());
                    break;
                }
            }
        }
        let mut node = match base {
            Some(n) => n,
            // No snapshot: the node never existed (no change at all) …
            None if diffs.is_empty() => return Ok(None),
            // … or the index is broken (a diff always follows a snapshot).
            None => {
                let (_, _, k) = diffs.pop().expect("not empty");
                return Err(GraphError::corrupt(
                    "history record (a diff of no node)",
                    &k,
                ));
            }
        };
        for (seq, diff, k) in diffs.into_iter().rev() {
            let n = node.as_mut().ok_or_else(|| {
                GraphError::corrupt("history record (a diff of a deleted node)", &k)
            })?;
            apply_diff(n, seq, diff);
        }
        Ok(node)
    }

    /// The live edges of type `edge_type` out of `from` right after `seq`, in
    /// the order of their `to` (bytewise, as `graph_edges_out` lists them),
    /// at most `limit`.
    pub fn out_edges_as_of(
        &self,
        snap: &impl Readable,
        from: &str,
        edge_type: &str,
        seq: Seq,
        limit: usize,
    ) -> Result<Vec<Edge>, GraphError> {
        let prefix = edge_prefix(from, edge_type);
        let mut out = Vec::new();
        // Entries are grouped by `to`, each group in seq order: keep each
        // group's last change at or before `seq`.
        let mut current: Option<(Vec<u8>, Option<Edge>)> = None;
        let flush = |cur: Option<(Vec<u8>, Option<Edge>)>, out: &mut Vec<Edge>| {
            if let Some((_, Some(e))) = cur {
                out.push(e);
            }
        };
        for guard in snap.prefix(&self.history, &prefix) {
            let (k, v) = guard.into_inner()?;
            let rest = &k[prefix.len()..];
            let to_len = rest
                .get(..4)
                .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize)
                .ok_or_else(|| GraphError::corrupt("history key", &k))?;
            let group = rest
                .get(..4 + to_len)
                .ok_or_else(|| GraphError::corrupt("history key", &k))?;
            let change_seq = rest
                .get(4 + to_len..12 + to_len)
                .and_then(Seq::from_key)
                .ok_or_else(|| GraphError::corrupt("history key", &k))?;
            if current.as_ref().map(|(g, _)| g.as_slice()) != Some(group) {
                flush(current.take(), &mut out);
                current = Some((group.to_vec(), None));
            }
            if change_seq <= seq {
                let edge = decode(&v)?.record.edge.flatten();
                current = Some((group.to_vec(), edge));
            }
        }
        flush(current, &mut out);
        out.sort_by(|a, b| a.to.as_str().cmp(b.to.as_str()));
        out.truncate(limit);
        Ok(out)
    }
}

/// Meta key (`graph_meta`) of the first seq the history covers, written when
/// a store that already had events is opened by a build that indexes history
/// (absent: the history covers every seq from 1).
const META_HISTORY_FROM: &[u8] = b"history_from";

/// Called by `GraphStore::open`: when `graph_history` did not exist before
/// (`existed` false) but the graph already holds events, the history starts
/// after them; `leviathan rebuild` indexes the whole log.
pub(crate) fn on_open(store: &GraphStore, existed: bool) -> Result<(), GraphError> {
    let (seq, _) = store.state()?;
    if !existed && seq > Seq::ZERO {
        store.meta.insert(META_HISTORY_FROM, seq.next().to_key())?;
        tracing::warn!(
            from = seq.next().0,
            "the graph has no history index before this seq: run `leviathan rebuild` to index it"
        );
    }
    Ok(())
}

/// Called by `GraphStore::clear`: a rebuild indexes every seq.
pub(crate) fn on_clear(store: &GraphStore) -> Result<(), GraphError> {
    Ok(store.meta.remove(META_HISTORY_FROM)?)
}

impl GraphStore {
    /// The first seq the history index covers (`Seq(1)` unless the store
    /// predates it and was not rebuilt since).
    pub fn history_from_at(&self, snap: &impl Readable) -> Result<Seq, GraphError> {
        match snap.get(&self.meta, META_HISTORY_FROM)? {
            None => Ok(Seq(1)),
            Some(v) => Seq::from_key(&v).ok_or_else(|| GraphError::corrupt("history_from", &v)),
        }
    }
}
