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
//! The keyspace is key-value separated (`storage::keyspace_options_for`):
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
//! The change record is compact JSON (top-level keys sorted): `projector`
//! (`name@version`; `null` when ops were applied outside a projector set,
//! as in tests), `op` (the op as the projector emitted it), and what the
//! change left: `node`, `node_diff` or `node_from_op`, or `edge` or
//! `edge_from_op` (below). `seq` and `ord` are the key's, and the event that
//! caused the change (its id and type) is the log's at `seq`: the history
//! view reads it from there (`views::history`). Records written before
//! these layouts also hold `seq`, `ord`, `event_id` and `event_type` in the
//! value; readers take the key's seq and ord either way, and the event from
//! the record when it names one. The `op` is stored as its canonical JSON
//! (RFC 8785), the bytes the state digest hashes, so each op is serialized
//! once; when JCS would not give back the same value (a float, or an
//! integer beyond ±2^53, which JCS writes as a double) it is stored in
//! serde's form instead. Readers parse the record, so both forms (and
//! records written before, in serde's member order) read the same.
//! A batch's records are written by hand from one buffer of JSON
//! ([`Pending`]'s `json`), not through a `Box<RawValue>` per part.
//!
//! # Node snapshots and diffs
//! Storing the whole node after every change doubled the store and cost
//! ~45 % of ingest (docs/BENCHMARKS.md). A node change is stored whole
//! (`node`: the record after it, `null` when deleted) when the node is
//! created, deleted or changes type, or when its previous change was in
//! another block of [`SNAPSHOT_BLOCK`] seqs; otherwise as `node_diff`
//! (`{"set": {changed properties}, "unset": [removed keys], "updated_at"}`),
//! applied to the record before it (its `updated_seq` becomes the change's
//! seq). Reading a node at a seq replays the diffs since its last snapshot.
//! The history routes answer every change with the whole node, as before.
//!
//! A big node (its whole record over 2 KiB, [`may_defer`]) is not stored
//! whole at every block crossing: small changes to it, one per block, stored
//! all of it each time, for good. At a crossing it is stored whole only when
//! the diffs since its last snapshot, each charged its bytes and at least
//! [`DIFF_CHARGE`], add up to half of it ([`whole_at_crossing`]); otherwise
//! the crossing's diff states that sum, its `debt`
//! (`{"debt": n, "unset": [...], "updated_at"}`), so that the next crossing
//! reads it back from the block of the node's last change (the records of
//! this batch, of the batch before while it commits, and of the store:
//! [`Debt`]) rather than the whole run. A read replays at most about half
//! the node's size of diffs beyond a block's. The rule depends only on the
//! log (the seqs, the node's and the ops' bytes), so a rebuild writes the
//! same records whatever its batches. Builds from before it read these
//! records as they read any diff.
//!
//! # Derived from the op
//! Most of what a change leaves is in its op already, and storing it twice
//! was ~40 % of the history's bytes (docs/BENCHMARKS.md, session 27). So:
//! - a node its op created (`put-node`, or `merge-node` with
//!   `create_if_absent`, of an absent node) is `"node_from_op": <timestamp>`:
//!   the op's id, type and properties, created and updated at this seq and
//!   timestamp; it is a snapshot like `node`;
//! - a diff carries no `set`: the op's properties are what it set (a
//!   `merge-node` or same-type `put-node`; setting an unchanged property
//!   again changes nothing), only `unset` and `updated_at`;
//! - an edge a `put-edge` wrote is `"edge_from_op": <created_seq>`: the op's
//!   type, endpoints and properties, created at that seq (an earlier one when
//!   the op replaced the edge).
//!
//! The event is the log's too: an `event_id` and `event_type` in every
//! record were ~80 bytes of it (docs/BENCHMARKS.md, session 28).
//!
//! Records written before these forms (whole nodes and edges, diffs with
//! `set`, the event named) read as they did. A build from before them reads
//! the new forms as corrupt (or a created node as absent): after going back
//! to one, run `leviathan rebuild`.

use crate::graph::error::GraphError;
use crate::graph::keys;
use crate::graph::model::{Edge, Node, Op};
use crate::graph::store::GraphStore;
use crate::jcs;
use crate::seq::Seq;
use fjall::{OwnedWriteBatch, Readable};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

const NODE_TAG: u8 = b'n';
const EDGE_TAG: u8 = b'e';
/// Cursor tag of a node history page.
const CURSOR_NODE: u8 = b'H';

/// The projector (`name@version`) whose ops are applied next; `None` when
/// ops are applied outside a projector set, as in tests. The event that
/// caused a change is the log's at the change's seq.
type Source = Option<Arc<str>>;

/// Where a piece of JSON lies in [`Pending`]'s buffer.
pub(crate) type Span = std::ops::Range<usize>;

/// A node or edge as it stood after a change: its compact JSON, written
/// when the change is made (no copy of the record is kept; `None`: deleted).
type After = Option<Span>;

/// A node change as stored: the whole record after it, its diff, or (a
/// node its op created) nothing but the timestamp.
enum NodeAfter {
    Whole(After),
    /// `debt`: the charges ([`charge`]) of the diffs between the node's
    /// last snapshot and this one, written into the diff of a change at a
    /// block crossing (see [`whole_at_crossing`]); `None` for the others.
    Diff {
        span: Span,
        debt: Option<u64>,
    },
    /// Created by its op, at the change's seq; the span is the event's
    /// timestamp as a JSON string.
    FromOp(Span),
}

enum Target {
    Node {
        id: String,
        after: NodeAfter,
    },
    /// `created`: the seq the edge after the change was created at (it is
    /// its `put-edge` op's, the only op that leaves an edge); `None`:
    /// deleted.
    Edge {
        key: Vec<u8>,
        created: Option<Seq>,
    },
}

/// Node changes are stored whole at least once per block of this many seqs
/// (see the module docs).
pub(crate) const SNAPSHOT_BLOCK: u64 = 256;

/// Whether a change at `seq` to a node last changed at `before_updated`
/// crosses into another block: a snapshot is due, unless the node is big
/// and has not changed enough since its last one ([`whole_at_crossing`]).
pub(crate) fn snapshot_due(before_updated: Seq, seq: Seq) -> bool {
    before_updated.0 / SNAPSHOT_BLOCK != seq.0 / SNAPSHOT_BLOCK
}

/// The least history bytes a diff since a node's last snapshot is charged
/// (see [`whole_at_crossing`]).
pub(crate) const DIFF_CHARGE: u64 = 1024;

/// What a diff stored with its op counts towards its node's next snapshot:
/// its bytes (the op's JSON and the diff's), at least [`DIFF_CHARGE`].
fn charge(op_len: usize, diff_len: usize) -> u64 {
    ((op_len + diff_len) as u64).max(DIFF_CHARGE)
}

/// Whether a node whose whole record takes `whole_len` bytes may be stored
/// as a diff at a block crossing: only when its snapshot is more than two
/// least charges. A smaller node is stored whole there, as before, without
/// a look at its history.
pub(crate) fn may_defer(whole_len: usize) -> bool {
    whole_len as u64 > 2 * DIFF_CHARGE
}

/// Whether a change at a block crossing to a node whose whole record takes
/// `whole_len` bytes is stored whole, when the diffs stored since its last
/// snapshot were charged `debt` ([`charge`]; `None`: unknown). A snapshot
/// at every block crossing stored a big node whole for each small change:
/// one 150-byte event per block into a 6.5 MB node stored 6.5 MB of
/// history each time (363× what was sent, for good: history is never
/// compacted away). So the diffs before a snapshot pay for it: their
/// charges, and this change's least one, must add up to half of it.
/// Snapshots then take at most about twice the bytes of the diffs (at
/// least 1 KiB each) between them, and reading a node at a seq replays at
/// most about half the node's size of diffs beyond one block's.
pub(crate) fn whole_at_crossing(whole_len: usize, debt: Option<u64>) -> bool {
    match debt {
        None => true,
        Some(debt) => debt.saturating_add(DIFF_CHARGE).saturating_mul(2) >= whole_len as u64,
    }
}

/// What a run of a node's changes leaves of its debt (the charges of the
/// diffs stored since its last snapshot): `Set(n)` when the run holds a
/// snapshot or a diff that states the debt (a crossing's), `Add(n)` when it
/// holds plain diffs only, charged `n` (the debt before it plus `n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Debt {
    Add(u64),
    Set(u64),
}

impl Debt {
    /// This run followed by `next`.
    pub(crate) fn then(self, next: Debt) -> Debt {
        match (self, next) {
            (_, Debt::Set(_)) => next,
            (Debt::Add(a), Debt::Add(b)) => Debt::Add(a.saturating_add(b)),
            (Debt::Set(a), Debt::Add(b)) => Debt::Set(a.saturating_add(b)),
        }
    }

    /// This run followed by one change: a snapshot (`None`), or a diff
    /// charged `charge` that states the debt before it
    /// (`Some((Some(debt), _))`) or not.
    fn and(self, change: Option<(Option<u64>, u64)>) -> Debt {
        match change {
            None => Debt::Set(0),
            Some((Some(debt), charge)) => Debt::Set(debt.saturating_add(charge)),
            Some((None, charge)) => self.then(Debt::Add(charge)),
        }
    }

    /// The debt, if the runs folded began with a snapshot or a stated debt.
    pub(crate) fn known(self) -> Option<u64> {
        match self {
            Debt::Set(n) => Some(n),
            Debt::Add(_) => None,
        }
    }
}

/// A node's diff as read back. Without `set`, the properties set are those
/// of the change's op (a `merge-node` or `put-node`): the changed ones, and
/// the unchanged ones set to what they were.
#[derive(Debug, Deserialize)]
struct NodeDiff {
    #[serde(default)]
    set: Option<crate::graph::model::Properties>,
    unset: Vec<String>,
    updated_at: String,
}

struct Change {
    seq: Seq,
    source: Source,
    /// The op's JSON, shared by every change it made.
    op: Option<Span>,
    target: Target,
}

/// One change as stored and as the history routes answer it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeRecord {
    /// (Stored in the key; records written before kept it in the value too.)
    #[serde(default)]
    pub seq: Seq,
    /// Position among the changes of the same event (stored as `seq`).
    #[serde(default)]
    pub ord: u32,
    /// The event that caused the change, when the record names it: records
    /// written before session 28's layout do; later ones leave it to the
    /// log (the event at `seq`), which the history view reads it from
    /// (`views::history`).
    #[serde(default)]
    pub event_id: Option<String>,
    /// (As `event_id`.)
    #[serde(default)]
    pub event_type: Option<String>,
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
/// the change was stored as one, and the derived forms (see the module docs).
#[derive(Debug, Deserialize)]
struct StoredChange {
    #[serde(flatten)]
    record: ChangeRecord,
    #[serde(default)]
    node_diff: Option<NodeDiff>,
    /// The node is its op's, created at this change, at this timestamp.
    #[serde(default)]
    node_from_op: Option<String>,
    /// The edge is its op's, created at this seq.
    #[serde(default)]
    edge_from_op: Option<Seq>,
}

/// A rollback point of [`Pending`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mark {
    changes: usize,
    json: usize,
}

/// The pending history of one `Staging` (one write batch).
#[derive(Default)]
pub(crate) struct Pending {
    source: Source,
    seq: Seq,
    op: Option<Span>,
    changes: Vec<Change>,
    /// The JSON of every op, node, edge and diff of the batch, back to
    /// back; the changes hold spans of it.
    json: Vec<u8>,
}

impl Pending {
    /// Names the projector whose ops are applied next.
    pub(crate) fn set_source(&mut self, projector: Option<&str>) {
        if self.source.as_deref() != projector {
            self.source = projector.map(Arc::from);
        }
    }

    /// The op applied next, for the event at `seq` (its changes are
    /// recorded with it), given as its JSON: `json` must be one valid JSON
    /// value (the caller's canonical bytes of the op).
    pub(crate) fn set_op_json(&mut self, seq: Seq, json: &[u8]) {
        debug_assert!(serde_json::from_slice::<serde::de::IgnoredAny>(json).is_ok());
        self.seq = seq;
        let start = self.json.len();
        self.json.extend_from_slice(json);
        self.op = Some(start..self.json.len());
    }

    /// [`Pending::set_op_json`] with the op serialized here (serde's form).
    pub(crate) fn set_op(&mut self, seq: Seq, op: &Op) {
        self.seq = seq;
        self.op = Some(self.write(op));
    }

    /// Appends the compact JSON of `value` to the buffer. These types hold
    /// only strings, finite numbers and string-keyed maps, so serializing
    /// them cannot fail.
    fn write<T: Serialize>(&mut self, value: &T) -> Span {
        let start = self.json.len();
        serde_json::to_writer(&mut self.json, value)
            .expect("a graph record or op always serializes");
        start..self.json.len()
    }

    /// Writes a node's diff for [`Pending::node_changed`]: the keys its op
    /// (a `merge-node` or same-type `put-node`, stored beside it, whose
    /// properties are what it set) removed, and the new `updated_at`.
    pub(crate) fn node_diff<'a>(
        &mut self,
        unset: impl Iterator<Item = &'a String>,
        updated_at: &str,
    ) -> Span {
        self.node_diff_owing(unset, updated_at, None)
    }

    /// [`Pending::node_diff`] stating the node's debt before it (`Some`: a
    /// change at a block crossing, see [`whole_at_crossing`]).
    pub(crate) fn node_diff_owing<'a>(
        &mut self,
        unset: impl Iterator<Item = &'a String>,
        updated_at: &str,
        debt: Option<u64>,
    ) -> Span {
        let start = self.json.len();
        let out = &mut self.json;
        out.push(b'{');
        if let Some(debt) = debt {
            out.extend_from_slice(b"\"debt\":");
            jcs::write_digits(debt, out);
            out.push(b',');
        }
        out.extend_from_slice(b"\"unset\":[");
        for (i, k) in unset.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            jcs::write_str(k, out);
        }
        out.extend_from_slice(b"],\"updated_at\":");
        jcs::write_str(updated_at, out);
        out.push(b'}');
        debug_assert!(serde_json::from_slice::<NodeDiff>(&out[start..]).is_ok());
        start..out.len()
    }

    fn push(&mut self, target: Target) {
        // Every change is made by an op, named first (`Staging::apply_ops`):
        // the derived forms read their data from it.
        debug_assert!(self.op.is_some(), "a change without its op");
        self.changes.push(Change {
            seq: self.seq,
            source: self.source.clone(),
            op: self.op.clone(),
            target,
        });
    }

    /// A node change stored whole (`None`: deleted).
    pub(crate) fn node(&mut self, id: &str, after: Option<&Node>) {
        let after = after.map(|n| self.write(n));
        self.node_written(id, after);
    }

    /// Writes `node` whole, for a change not recorded yet: either
    /// [`Pending::node_written`] with it, or [`Pending::forget_from`] its
    /// start before anything else is written.
    pub(crate) fn write_node(&mut self, node: &Node) -> Span {
        self.write(node)
    }

    /// A node change stored whole, written at `after` (`None`: deleted).
    pub(crate) fn node_written(&mut self, id: &str, after: After) {
        self.push(Target::Node {
            id: id.to_owned(),
            after: NodeAfter::Whole(after),
        });
    }

    /// Forgets the JSON written from `at` on ([`Pending::write_node`]'s,
    /// not recorded by any change).
    pub(crate) fn forget_from(&mut self, at: usize) {
        debug_assert!(
            self.changes.iter().all(|c| match &c.target {
                Target::Node {
                    after:
                        NodeAfter::Whole(Some(s))
                        | NodeAfter::Diff { span: s, .. }
                        | NodeAfter::FromOp(s),
                    ..
                } => s.end <= at,
                _ => true,
            })
        );
        debug_assert!(self.op.as_ref().is_none_or(|op| op.end <= at));
        self.json.truncate(at);
    }

    /// What this batch's changes to node `id` leave of its debt (see
    /// [`Debt`]): `Add(0)` when it has none.
    pub(crate) fn debt_of(&self, id: &str) -> Debt {
        debt_of_changes(&self.changes, id)
    }

    /// The node changes of this batch, without their JSON: what the next
    /// batch needs of them while this one commits ([`Tail`]).
    pub(crate) fn into_tail(mut self) -> Tail {
        self.changes
            .retain(|c| matches!(c.target, Target::Node { .. }));
        Tail {
            changes: self.changes,
        }
    }

    /// A node the op being applied (a `put-node` or `merge-node`) created:
    /// its id, type and properties are the op's, its seqs the change's and
    /// both its timestamps `ts`.
    pub(crate) fn node_created(&mut self, id: &str, node: &Node) {
        debug_assert!(node.created_seq == self.seq && node.updated_seq == self.seq);
        debug_assert_eq!(node.created_at, node.updated_at);
        let start = self.json.len();
        jcs::write_str(&node.created_at, &mut self.json);
        let ts = start..self.json.len();
        self.push(Target::Node {
            id: id.to_owned(),
            after: NodeAfter::FromOp(ts),
        });
    }

    /// A node change stored as its diff ([`Pending::node_diff`]), stating
    /// `debt` when it is a crossing's ([`Pending::node_diff_owing`]).
    pub(crate) fn node_changed(&mut self, id: &str, diff: Span, debt: Option<u64>) {
        self.push(Target::Node {
            id: id.to_owned(),
            after: NodeAfter::Diff { span: diff, debt },
        });
    }

    /// An edge change: `after` the edge after it (`None`: deleted), which
    /// is its `put-edge` op's (type, endpoints, properties) and is stored as
    /// its `created_seq` alone.
    pub(crate) fn edge(&mut self, out_key: &[u8], after: Option<&Edge>) {
        self.push(Target::Edge {
            key: out_key.to_vec(),
            created: after.map(|e| e.created_seq),
        });
    }

    /// Rollback mark: the number of changes and the length of their JSON.
    pub(crate) fn mark(&self) -> Mark {
        Mark {
            changes: self.changes.len(),
            json: self.json.len(),
        }
    }

    /// Forgets every change recorded after `mark` (and its JSON).
    pub(crate) fn truncate(&mut self, mark: Mark) {
        self.changes.truncate(mark.changes);
        self.json.truncate(mark.json);
        self.op = None;
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
            let mut value = Vec::with_capacity(super::store::RECORD_BUFFER);
            value.push(b'{');
            // Members in sorted order: edge or edge_from_op, node or
            // node_diff or node_from_op, op, projector (seq and ord are the
            // key's; the event is the log's at seq).
            let key = match &c.target {
                Target::Node { id, .. } => node_key(id, c.seq, ord),
                Target::Edge { key, created } => {
                    match created {
                        None => value.extend_from_slice(b"\"edge\":null"),
                        Some(created) => {
                            value.extend_from_slice(b"\"edge_from_op\":");
                            jcs::write_digits(created.0, &mut value);
                        }
                    }
                    let (from, t, to) = keys::split3(key)?;
                    edge_key(from, t, to, c.seq, ord)
                }
            };
            match &c.target {
                Target::Node { after, .. } => {
                    let (member, span) = match after {
                        NodeAfter::Whole(after) => (&b"\"node\":"[..], after.as_ref()),
                        NodeAfter::Diff { span, .. } => (&b"\"node_diff\":"[..], Some(span)),
                        NodeAfter::FromOp(ts) => (&b"\"node_from_op\":"[..], Some(ts)),
                    };
                    value.extend_from_slice(member);
                    self.put(span, &mut value);
                }
                Target::Edge { .. } => {}
            }
            value.extend_from_slice(b",\"op\":");
            self.put(c.op.as_ref(), &mut value);
            value.extend_from_slice(b",\"projector\":");
            match &c.source {
                Some(p) => jcs::write_str(p, &mut value),
                None => value.extend_from_slice(b"null"),
            }
            value.push(b'}');
            debug_assert!(decode(&key, &value).is_ok());
            batch.insert(&store.history, key, value);
        }
        Ok(())
    }

    /// Appends the JSON at `span` (`None`: `null`).
    fn put(&self, span: Option<&Span>, out: &mut Vec<u8>) {
        match span {
            Some(span) => out.extend_from_slice(&self.json[span.clone()]),
            None => out.extend_from_slice(b"null"),
        }
    }
}

/// The node changes of a batch that is committing, for the next batch's
/// [`Debt`] reckoning (`Staging`'s parent).
#[derive(Default)]
pub(crate) struct Tail {
    changes: Vec<Change>,
}

impl Tail {
    /// As [`Pending::debt_of`].
    pub(crate) fn debt_of(&self, id: &str) -> Debt {
        debt_of_changes(&self.changes, id)
    }

    /// The first seq the batch changed a node at, if it changed one.
    pub(crate) fn first_seq(&self) -> Option<Seq> {
        self.changes.first().map(|c| c.seq)
    }
}

fn debt_of_changes(changes: &[Change], id: &str) -> Debt {
    let mut debt = Debt::Add(0);
    for c in changes {
        if let Target::Node { id: of, after } = &c.target {
            if of == id {
                debt = debt.and(match after {
                    NodeAfter::Diff { span, debt } => {
                        let op = c.op.as_ref().map_or(0, |op| op.len());
                        Some((*debt, charge(op, span.len())))
                    }
                    NodeAfter::Whole(_) | NodeAfter::FromOp(_) => None,
                });
            }
        }
    }
    debt
}

fn node_prefix(id: &str) -> Vec<u8> {
    let mut k = vec![NODE_TAG];
    k.extend_from_slice(&keys::lp(id));
    k
}

pub(super) fn node_key(id: &str, seq: Seq, ord: u32) -> Vec<u8> {
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

pub(super) fn edge_key(from: &str, edge_type: &str, to: &str, seq: Seq, ord: u32) -> Vec<u8> {
    let mut k = edge_prefix(from, edge_type);
    k.extend_from_slice(&keys::lp(to));
    k.extend_from_slice(&seq.to_key());
    k.extend_from_slice(&ord.to_be_bytes());
    k
}

/// A node's diff, its `set` resolved.
struct Diff {
    set: crate::graph::model::Properties,
    unset: Vec<String>,
    updated_at: String,
}

/// What a derived record takes from its op (see the module docs).
#[derive(Deserialize)]
struct OpParts {
    #[serde(default)]
    id: Option<crate::graph::model::NodeId>,
    #[serde(default)]
    node_type: Option<String>,
    #[serde(default)]
    edge_type: Option<String>,
    #[serde(default)]
    from: Option<crate::graph::model::NodeId>,
    #[serde(default)]
    to: Option<crate::graph::model::NodeId>,
    properties: crate::graph::model::Properties,
}

/// The change stored under `key` as `bytes`: its record, with seq and ord
/// from the key and the node or edge a derived record leaves to its op
/// filled in (not after a diff, which needs the node before it), and the
/// diff if the change is one.
fn decode(key: &[u8], bytes: &[u8]) -> Result<(ChangeRecord, Option<Diff>), GraphError> {
    let corrupt = || GraphError::corrupt("history record", bytes);
    let StoredChange {
        mut record,
        node_diff,
        node_from_op,
        edge_from_op,
    } = serde_json::from_slice(bytes).map_err(|_| corrupt())?;
    let (seq, ord) = key
        .len()
        .checked_sub(12)
        .and_then(|at| {
            let seq = Seq::from_key(&key[at..at + 8])?;
            let ord = u32::from_be_bytes(key[at + 8..].try_into().ok()?);
            Some((seq, ord))
        })
        .ok_or_else(|| GraphError::corrupt("history key", key))?;
    record.seq = seq;
    record.ord = ord;
    // A record derives at most one thing from its op: its node, its edge
    // or its diff's `set`.
    let op = |record: &ChangeRecord| OpParts::deserialize(&record.op).map_err(|_| corrupt());
    if let Some(ts) = node_from_op {
        let OpParts {
            id: Some(id),
            node_type: Some(node_type),
            properties,
            ..
        } = op(&record)?
        else {
            return Err(corrupt());
        };
        record.node = Some(Some(Node {
            id,
            node_type,
            properties,
            created_seq: seq,
            updated_seq: seq,
            created_at: ts.clone(),
            updated_at: ts,
        }));
    }
    if let Some(created_seq) = edge_from_op {
        let OpParts {
            edge_type: Some(edge_type),
            from: Some(from),
            to: Some(to),
            properties,
            ..
        } = op(&record)?
        else {
            return Err(corrupt());
        };
        record.edge = Some(Some(Edge {
            edge_type,
            from,
            to,
            properties,
            created_seq,
        }));
    }
    let diff = match node_diff {
        None => None,
        Some(NodeDiff {
            set,
            unset,
            updated_at,
        }) => Some(Diff {
            set: match set {
                Some(set) => set,
                None => op(&record)?.properties,
            },
            unset,
            updated_at,
        }),
    };
    Ok((record, diff))
}

/// `node` after the change `diff` made at `seq`.
fn apply_diff(node: &mut Node, seq: Seq, diff: Diff) {
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

/// What [`GraphStore::debt_in`] reads of a change record.
#[derive(Deserialize)]
struct DebtView<'a> {
    #[serde(borrow, default)]
    node_diff: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    op: &'a serde_json::value::RawValue,
}

/// What [`GraphStore::debt_in`] reads of a diff.
#[derive(Deserialize)]
struct StatedDebt {
    #[serde(default)]
    debt: Option<u64>,
}

impl GraphStore {
    /// What the committed changes of node `id` at seqs from `from` up to
    /// (not including) `until` leave of its debt ([`Debt`]). The records
    /// are read (up to a block's changes of the node): the writer asks
    /// only at a block crossing of a node big enough to defer its snapshot
    /// ([`may_defer`]), from the block of its previous change, which holds
    /// the last snapshot or stated debt.
    pub(crate) fn debt_in(
        &self,
        snap: &impl Readable,
        id: &str,
        from: Seq,
        until: Option<Seq>,
    ) -> Result<Debt, GraphError> {
        let lower = node_key(id, from, 0);
        let upper = match until {
            Some(until) => node_key(id, until, 0),
            None => keys::prefix_end(&node_prefix(id)).expect("a node prefix ends"),
        };
        let mut debt = Debt::Add(0);
        for guard in snap.range(&self.history, lower..upper) {
            let (k, v) = guard.into_inner()?;
            let corrupt = || GraphError::corrupt("history record", &k);
            let view: DebtView<'_> = serde_json::from_slice(&v).map_err(|_| corrupt())?;
            debt = debt.and(match view.node_diff {
                None => None,
                Some(diff) => {
                    let stated: StatedDebt =
                        serde_json::from_str(diff.get()).map_err(|_| corrupt())?;
                    Some((stated.debt, charge(view.op.get().len(), diff.get().len())))
                }
            });
        }
        Ok(debt)
    }

    /// The changes of node `id`, oldest first, after `cursor`, at most
    /// `limit`, through one snapshot.
    pub fn node_history_at(
        &self,
        snap: &impl Readable,
        id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<HistoryPage, GraphError> {
        self.node_history_bounded_at(snap, id, cursor, limit, usize::MAX)
    }

    /// [`GraphStore::node_history_at`] for a page a client asked for: it
    /// also stops once its changes hold `max_bytes` (at least one change),
    /// with a cursor to continue from. Every change carries the whole node
    /// after it, so a node with a large property and many small changes
    /// repeats that property in each.
    pub fn node_history_bounded_at(
        &self,
        snap: &impl Readable,
        id: &str,
        cursor: Option<&str>,
        limit: usize,
        max_bytes: usize,
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
        let mut bytes = 0usize;
        for guard in snap.range(&self.history, (lower, upper)) {
            let (k, v) = guard.into_inner()?;
            if changes.len() == limit || bytes >= max_bytes {
                let mut raw = vec![CURSOR_NODE];
                raw.extend_from_slice(last_key.as_deref().unwrap_or(&prefix));
                return Ok(HistoryPage {
                    changes,
                    next_cursor: Some(hex::encode(raw)),
                });
            }
            let (mut record, node_diff) = decode(&k, &v)?;
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
            if max_bytes != usize::MAX {
                bytes = bytes.saturating_add(
                    crate::graph::query::json_len(&record.op)
                        + crate::graph::query::json_len(&record.node),
                );
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
    /// that snapshot applied in order. The diffs are read twice (back to
    /// the snapshot, then forward from it), one at a time: a diff carries
    /// its op's properties (up to a payload each), and holding a block's
    /// 256 of them decoded at once could take gigabytes for one read.
    fn node_before(
        &self,
        snap: &impl Readable,
        prefix: &[u8],
        upper: &[u8],
    ) -> Result<Option<Node>, GraphError> {
        let mut base = None;
        let mut first_diff: Option<fjall::UserKey> = None;
        for guard in snap
            .range(&self.history, prefix.to_vec()..upper.to_vec())
            .rev()
        {
            let (k, v) = guard.into_inner()?;
            let (record, node_diff) = decode(&k, &v)?;
            match node_diff {
                Some(_) => first_diff = Some(k),
                None => {
                    base = Some((record.node.flatten(), k));
                    break;
                }
            }
        }
        let (mut node, from) = match (base, first_diff) {
            (Some(base), _) => base,
            // No snapshot: the node never existed (no change at all) …
            (None, None) => return Ok(None),
            // … or the index is broken (a diff always follows a snapshot).
            (None, Some(k)) => {
                return Err(GraphError::corrupt(
                    "history record (a diff of no node)",
                    &k,
                ))
            }
        };
        let after = (
            std::ops::Bound::Excluded(from.to_vec()),
            std::ops::Bound::Excluded(upper.to_vec()),
        );
        for guard in snap.range(&self.history, after) {
            let (k, v) = guard.into_inner()?;
            let (record, Some(diff)) = decode(&k, &v)? else {
                return Err(GraphError::corrupt(
                    "history record (a snapshot after the last one)",
                    &k,
                ));
            };
            let n = node.as_mut().ok_or_else(|| {
                GraphError::corrupt("history record (a diff of a deleted node)", &k)
            })?;
            apply_diff(n, record.seq, diff);
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
        // The `limit` edges first by `to`: a max-heap of them, so that a node
        // with millions of such edges holds `limit` of them, not all.
        let mut out = std::collections::BinaryHeap::<ByTo>::new();
        // Entries are grouped by `to` (its length first, so not in `to`
        // order), each group in seq order: keep each group's last change at
        // or before `seq`.
        let mut current: Option<(Vec<u8>, Option<Edge>)> = None;
        let flush = |cur: Option<(Vec<u8>, Option<Edge>)>,
                     out: &mut std::collections::BinaryHeap<ByTo>| {
            if let Some((_, Some(e))) = cur {
                out.push(ByTo(e));
                if out.len() > limit {
                    out.pop();
                }
            }
        };
        for guard in snap.prefix(&self.history, &prefix) {
            crate::cancel::check()?;
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
                let edge = decode(&k, &v)?.0.edge.flatten();
                current = Some((group.to_vec(), edge));
            }
        }
        flush(current, &mut out);
        Ok(out.into_sorted_vec().into_iter().map(|e| e.0).collect())
    }
}

/// An edge ordered by its `to` (unique among one node's edges of one type).
struct ByTo(Edge);

impl PartialEq for ByTo {
    fn eq(&self, other: &Self) -> bool {
        self.0.to == other.0.to
    }
}

impl Eq for ByTo {}

impl PartialOrd for ByTo {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ByTo {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.to.as_str().cmp(other.0.to.as_str())
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
