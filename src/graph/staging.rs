//! `Staging`: the writer's in-memory overlay of one write batch over the
//! committed graph. It owns op semantics and validation, the rolling state
//! digest, per-bundle checkpoints and the translation of pending changes into
//! fjall writes. It must never write to fjall itself: everything goes into the
//! caller's `OwnedWriteBatch`, committed atomically with the log.
//!
//! Reads (`GraphView`, and the lookups inside `apply`) see the committed state
//! as of `GraphStore::staging` (one fjall snapshot) plus the pending changes of
//! this batch. Only one `Staging` may be live per store, and it must be
//! written and committed (or dropped) before the next one is created; the
//! single writer guarantees that.
//!
//! The pipelined writer relaxes that by one batch: while batch k is being
//! committed, batch k+1 is staged by [`GraphStore::staging_over`] on k's
//! [`Overlay`] (what `write_into_keeping` wrote for k, every value absolute),
//! read before the snapshot. The snapshot must hold everything before k
//! (the writer waits for k-1's commit before it hands k over); whether it
//! also holds k does not matter, since the overlay's values are the ones k
//! committed.
//!
//! Rolling digest: `digest_n = SHA-256(digest_{n-1} ‖ JCS(ops_n))`, where
//! `JCS(ops_n)` is the RFC 8785 canonical JSON of the event's op list exactly as
//! applied (no-ops included), and `digest_0` is 32 zero bytes. When the event
//! has recorded projection errors (`on_error = "record"`), their canonical
//! list follows: `SHA-256(digest_{n-1} ‖ JCS(ops_n) ‖ JCS(errors_n))`
//! (`graph::errors`), so histories without errors keep their digests.
//!
//! Rollback: every change records in an undo log what it replaced (the
//! node, edge or counter before it; for a `merge-node` of a node the batch
//! already holds, made in place, only the properties it set and the old
//! `updated_*`). [`Staging::checkpoint`] / [`Staging::rollback`] undo back to
//! a mark (a failed segment, a refused bundle); [`Staging::settle`] drops
//! the log where no mark reaches back (the writer after each bundle, a
//! rebuild after each event), so it never holds a whole batch's nodes.
//!
//! Ownership: [`Staging::apply_segment`] applies one projector's ops with an
//! owner check: `put-node`, `merge-node` and `delete-node` on an existing node
//! whose type the projector does not own fail with `NotOwner` (edges are
//! checked against declared types where the ops enter the host).
//! `graph::canonical` writes that encoding (byte-identical to
//! `serde_json_canonicalizer`).

use crate::digest::Sha256;
use crate::graph::canonical;
use crate::graph::error::GraphError;
use crate::graph::errors::{self, ErrorRecord};
use crate::graph::history;
use crate::graph::keys;
use crate::graph::model::{Direction, Edge, GraphView, Node, NodeId, Op, Properties};
use crate::graph::query;
use crate::graph::store::{decode_edge, encode_edge, encode_node, GraphStore};
use crate::seq::Seq;
use fjall::{OwnedWriteBatch, Readable, Snapshot, UserValue};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// Longest node id or edge endpoint, in bytes (keys must stay far below
/// fjall's 64 KiB key limit).
pub const MAX_ID_BYTES: usize = 1024;
/// Longest node or edge type, in bytes.
pub const MAX_TYPE_BYTES: usize = 256;

/// Which rolling digest a `Staging` extends: the writer's (`Inline`: the
/// state digest in `graph_meta` `"state"` and `graph_digests` by seq, as
/// before modes existed) or the async lane's (`Async`: `"async_state"` and
/// `graph_digests` by `b'a' ‖ seq`, plus the combined digest of each seq,
/// `b'c' ‖ seq`: `SHA-256(inline digest ‖ async digest)`). The async lane
/// is applied by `generations::follow` behind the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chain {
    Inline,
    Async,
}

/// A point in a `Staging` to roll back to. Valid until a rollback to an
/// earlier mark or a [`Staging::settle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    undo: usize,
    digests: usize,
    errors: usize,
    history: history::Mark,
    canonical: usize,
}

/// One change to the pending maps, with what it replaced (`None`: the key was
/// not in the map, i.e. the committed value showed through).
enum Undo {
    Node {
        id: String,
        prev: Option<Option<Node>>,
    },
    /// A `merge-node` on a node already pending, made in place: the
    /// properties it set with the values they replaced (`None`: absent),
    /// and the node's `updated_seq` / `updated_at` before it.
    Merged {
        id: String,
        replaced: Vec<(String, Option<serde_json::Value>)>,
        updated_seq: Seq,
        updated_at: String,
    },
    EdgeOut {
        key: Vec<u8>,
        prev: Option<Option<Edge>>,
    },
    EdgeIn {
        key: Vec<u8>,
        prev: Option<bool>,
    },
    Count {
        key: Vec<u8>,
        delta: i64,
    },
}

/// One batch's graph changes as written into its fjall batch, every value
/// absolute (counters included): what the next batch reads before the
/// committed state until this one is committed (see the module doc).
pub struct Overlay {
    generation: u64,
    nodes: BTreeMap<String, Option<Node>>,
    edges_out: BTreeMap<Vec<u8>, Option<Edge>>,
    edges_in: BTreeMap<Vec<u8>, bool>,
    counts: HashMap<Vec<u8>, u64>,
    state: (Seq, Sha256),
    /// The batch's node changes, for the next batch's reckoning of a big
    /// node's history debt (`history::whole_at_crossing`).
    history: history::Tail,
}

impl Overlay {
    /// The state (last applied seq, digest) the batch leaves.
    pub fn state(&self) -> (Seq, Sha256) {
        self.state
    }
}

/// Pending graph changes of one write batch (see the module doc).
pub struct Staging {
    chain: Chain,
    store: GraphStore,
    snap: Snapshot,
    /// The previous batch's changes, maybe not committed yet
    /// ([`GraphStore::staging_over`]): read before `snap`.
    parent: Option<Arc<Overlay>>,
    base: (Seq, Sha256),
    /// id → new node, or `None` for deleted.
    nodes: BTreeMap<String, Option<Node>>,
    /// out key → new edge, or `None` for deleted.
    edges_out: BTreeMap<Vec<u8>, Option<Edge>>,
    /// in key → present (mirror of `edges_out`, for incoming reads).
    edges_in: BTreeMap<Vec<u8>, bool>,
    /// counter key → change against the committed counter.
    counts: BTreeMap<Vec<u8>, i64>,
    digests: Vec<(Seq, Sha256)>,
    /// Recorded projection errors of this batch, in log order.
    errors: Vec<ErrorRecord>,
    undo: Vec<Undo>,
    /// Undo entries forgotten by [`Staging::settle`] (a mark's `undo` counts
    /// them too, so a mark taken before a settle is recognized).
    settled: usize,
    /// `JCS(ops_n)` of the event being applied, built as its ops are
    /// applied: `[` and the canonical JSON of each op applied so far
    /// (comma-separated; a rolled-back segment's are cut off again);
    /// [`Staging::end_event`] closes and hashes it. Reused across events.
    canonical: Vec<u8>,
    /// Every node and edge change of the batch, for `graph_history`.
    history: history::Pending,
    /// First read failure seen through `GraphView` since the last apply.
    view_error: Mutex<Option<String>>,
    /// The size of a staged node's properties as JSON, once a merge had to
    /// measure it ([`node_size_due`]), kept by the later merges into it
    /// from what each replaced ([`merged_size`]): measuring a node of many
    /// keys at every merge made a bundle of merges into it quadratic (500k
    /// keys: 12 ms a merge, 2 minutes of the writer for 10,000 merges).
    /// Dropped by any other change to the node, and by a rollback.
    sizes: HashMap<String, usize>,
    /// Committed nodes and edges as read through `snap`, each read and decoded
    /// once per batch: the projectors' views, the ops' checks and
    /// `write_into` (which compares against the committed value) all ask for
    /// the same ones. The snapshot never changes, so an entry never goes stale.
    committed: Mutex<Committed>,
}

#[derive(Default)]
struct Committed {
    nodes: HashMap<String, Option<Node>>,
    edges: HashMap<Vec<u8>, Option<Edge>>,
}

impl GraphStore {
    /// Starts the overlay for one write batch. Owns a clone of the store's
    /// handles, so it is `'static` (it can live inside a wasmtime `Store`).
    pub fn staging(&self) -> Result<Staging, GraphError> {
        self.staging_for(Chain::Inline, None)
    }

    /// [`GraphStore::staging`] for the async lane (see [`Chain`]): it
    /// starts at the async lane's applied state, and writes that state and
    /// its digests (never the writer's).
    pub fn staging_async(&self) -> Result<Staging, GraphError> {
        self.staging_for(Chain::Async, None)
    }

    /// [`GraphStore::staging`] on top of the previous batch's `parent`
    /// (the writer's), which may still be committing: everything committed
    /// before it must be visible now. With no parent, plain `staging`.
    pub fn staging_over(&self, parent: Option<Arc<Overlay>>) -> Result<Staging, GraphError> {
        if let Some(p) = &parent {
            if p.generation != self.generation() {
                // The writer drains its pipeline before a switch.
                return Err(GraphError::Corrupt {
                    what: "staging overlay",
                    detail: format!(
                        "written for generation {}, staged on generation {}",
                        p.generation,
                        self.generation()
                    ),
                });
            }
        }
        self.staging_for(Chain::Inline, parent)
    }

    fn staging_for(
        &self,
        chain: Chain,
        parent: Option<Arc<Overlay>>,
    ) -> Result<Staging, GraphError> {
        let snap = self.db.snapshot();
        let base = match (&parent, chain) {
            (Some(p), _) => p.state,
            (None, Chain::Inline) => self.read_state(&snap)?,
            (None, Chain::Async) => self.read_async_state(&snap)?,
        };
        Ok(Staging {
            chain,
            store: self.clone(),
            snap,
            parent,
            base,
            nodes: BTreeMap::new(),
            edges_out: BTreeMap::new(),
            edges_in: BTreeMap::new(),
            counts: BTreeMap::new(),
            digests: Vec::new(),
            errors: Vec::new(),
            undo: Vec::new(),
            settled: 0,
            canonical: b"[".to_vec(),
            history: Default::default(),
            view_error: Mutex::new(None),
            sizes: HashMap::new(),
            committed: Mutex::default(),
        })
    }
}

/// The most a node's properties may take as JSON
/// ([`query::json_len`]): what one op may carry
/// (`projection::MAX_PROPERTIES_BYTES`). Merges add to a node, and nothing
/// else bounds what they add up to: an executor that sends a new key per
/// event grew one node past 60 MB in 70 events (every merge then reads and
/// writes all of it, and every read of it answers all of it).
pub const MAX_NODE_PROPERTIES_BYTES: usize = crate::projection::MAX_PROPERTIES_BYTES;

/// A merge whose op (as canonical JSON) is at most this many bytes, into a
/// node of at most [`SMALL_NODE_KEYS`] properties, is not measured: it adds
/// at most this much, and every larger value came with a measured merge, so
/// such merges leave a node within the limit plus `SMALL_NODE_KEYS` of
/// these. The benchmark's merges are all small: measuring every one cost
/// ~6–13 % of the graph's apply.
pub const SMALL_MERGE_BYTES: usize = 4096;
/// See [`SMALL_MERGE_BYTES`].
pub const SMALL_NODE_KEYS: usize = 256;

/// The size of a merged node's properties when this merge must be measured
/// ([`SMALL_MERGE_BYTES`]), else 0.
fn node_size_due(op_bytes: usize, properties: &Properties) -> usize {
    if op_bytes <= SMALL_MERGE_BYTES && properties.len() <= SMALL_NODE_KEYS {
        return 0;
    }
    query::json_len(properties)
}

/// The size of `properties` as JSON after a merge that replaced `replaced`
/// (each key with the value it had, `None` for a key it added), given their
/// size `before` it: what [`query::json_len`] would say, from the changed
/// members only (`{`, `}`, and a comma between members).
fn merged_size(
    before: usize,
    replaced: &[(String, Option<serde_json::Value>)],
    properties: &Properties,
) -> usize {
    let mut keys = properties.len() - replaced.iter().filter(|(_, old)| old.is_none()).count();
    let mut size = before;
    for (k, old) in replaced {
        let new = properties.get(k).map_or(0, query::json_len);
        match old {
            Some(old) => size = size - query::json_len(old) + new,
            None => {
                size += query::json_len(k.as_str()) + 1 + new + usize::from(keys > 0);
                keys += 1;
            }
        }
    }
    size
}

/// Refuses a merge that made `id`'s properties `size` bytes, over
/// [`MAX_NODE_PROPERTIES_BYTES`]: a failure of the event's projection, as
/// any op the graph refuses.
fn check_node_size(index: usize, id: &str, size: usize) -> Result<(), GraphError> {
    if size <= MAX_NODE_PROPERTIES_BYTES {
        return Ok(());
    }
    Err(GraphError::InvalidOp {
        index,
        reason: format!(
            "merge-node would make node {id:?}'s properties {size} bytes of JSON, over the \
             limit of {MAX_NODE_PROPERTIES_BYTES} per node (merges add up: keep one key per \
             kind of value rather than a new key per event)"
        ),
    })
}

impl Staging {
    /// Last applied seq and digest, pending events included.
    pub fn state(&self) -> (Seq, Sha256) {
        self.digests.last().copied().unwrap_or(self.base)
    }

    /// True when nothing has been applied (or everything was rolled back).
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Names the projector (`name@version`) whose ops are applied next,
    /// for the history index (`graph::history`; the event is the log's at
    /// the change's seq).
    pub fn set_history_source(&mut self, projector: Option<&str>) {
        self.history.set_source(projector);
    }

    pub fn checkpoint(&self) -> Mark {
        Mark {
            undo: self.settled + self.undo.len(),
            digests: self.digests.len(),
            errors: self.errors.len(),
            history: self.history.mark(),
            canonical: self.canonical.len(),
        }
    }

    /// Gives up rolling back what was applied so far: the undo log, which
    /// holds every value the changes replaced (whole nodes), is dropped.
    /// A caller that takes no mark older than this (the writer after each
    /// bundle, a rebuild after each event) keeps the log to one bundle's
    /// or event's changes instead of the whole batch's. Marks taken before
    /// are no longer valid.
    pub fn settle(&mut self) {
        self.settled += self.undo.len();
        self.undo.clear();
    }

    /// Undoes every change (graph, counters, digests, the event's canonical
    /// op list) made after `mark` (taken after the last
    /// [`Staging::settle`]), and forgets `GraphView` read failures (they
    /// belonged to the undone work).
    pub fn rollback(&mut self, mark: Mark) {
        debug_assert!(
            mark.undo >= self.settled,
            "a rollback to a mark taken before Staging::settle"
        );
        // Sizes are kept forward only: a rolled-back node is measured again.
        self.sizes.clear();
        while self.settled + self.undo.len() > mark.undo {
            match self.undo.pop() {
                Some(Undo::Node { id, prev }) => restore(&mut self.nodes, id, prev),
                Some(Undo::Merged {
                    id,
                    replaced,
                    updated_seq,
                    updated_at,
                }) => {
                    // Undone in reverse order, so the node is as the merge
                    // left it.
                    let Some(Some(n)) = self.nodes.get_mut(&id) else {
                        debug_assert!(false, "an in-place merge of {id:?} without its node");
                        continue;
                    };
                    for (k, old) in replaced.into_iter().rev() {
                        match old {
                            Some(v) => n.properties.insert(k, v),
                            None => n.properties.remove(&k),
                        };
                    }
                    n.updated_seq = updated_seq;
                    n.updated_at = updated_at;
                }
                Some(Undo::EdgeOut { key, prev }) => restore(&mut self.edges_out, key, prev),
                Some(Undo::EdgeIn { key, prev }) => restore(&mut self.edges_in, key, prev),
                Some(Undo::Count { key, delta }) => {
                    let left = self.counts.get(&key).copied().unwrap_or(0) - delta;
                    if left == 0 {
                        self.counts.remove(&key);
                    } else {
                        self.counts.insert(key, left);
                    }
                }
                None => break,
            }
        }
        self.digests.truncate(mark.digests);
        self.errors.truncate(mark.errors);
        self.history.truncate(mark.history);
        // Within an event this cuts its undone ops off its canonical list;
        // across events the next `begin_event` starts the list afresh.
        self.canonical.truncate(mark.canonical);
        self.take_view_error();
    }

    /// Applies the ops of the event at `seq` (which must follow `state().0`),
    /// in order, then advances the rolling digest. All or nothing: on error the
    /// event leaves no trace. `timestamp` is the event's time, stored as the
    /// nodes' `created_at` / `updated_at`. No owner check (see
    /// [`Staging::apply_segment`]).
    pub fn apply(&mut self, seq: Seq, timestamp: &str, ops: &[Op]) -> Result<(), GraphError> {
        self.begin_event(seq)?;
        self.apply_ops(timestamp, seq, &mut ops.to_vec(), None, None)?;
        self.end_event(seq, &[]);
        Ok(())
    }

    /// Starts the event at `seq`: checks that it follows the last applied
    /// one and that no `GraphView` read failed while its projectors ran.
    /// Then [`Staging::apply_segment`] for each projector's ops, and
    /// [`Staging::end_event`].
    pub fn begin_event(&mut self, seq: Seq) -> Result<(), GraphError> {
        if let Some(msg) = self.take_view_error() {
            return Err(GraphError::ViewRead(msg));
        }
        let (last, _) = self.state();
        if seq != last.next() {
            return Err(GraphError::SeqOutOfOrder {
                expected: last.next(),
                got: seq,
            });
        }
        self.reset_canonical();
        Ok(())
    }

    /// Applies one projector's ops for the event at `seq` (after
    /// [`Staging::begin_event`]), all or nothing: on error they leave no
    /// trace and the event's other ops stand. `owns` says whether the
    /// projector owns a node type: an op on an existing node of a type it does
    /// not own fails with [`GraphError::NotOwner`].
    ///
    /// The ops' properties are moved into the graph (an applied op is left
    /// with empty properties, and so may be a failed segment's): the caller
    /// is done with them once they are applied, and a copy of every
    /// property map was ~3 % of the writer thread.
    pub fn apply_segment(
        &mut self,
        seq: Seq,
        timestamp: &str,
        ops: &mut [Op],
        owns: &dyn Fn(&str) -> bool,
    ) -> Result<(), GraphError> {
        self.apply_ops(timestamp, seq, ops, Some(owns), None)
    }

    /// [`Staging::apply_segment`] in one lane of a set with `async`
    /// projectors: a `delete-node` removes only the touching edges whose
    /// type `cascade` accepts (the lane's own edge types), so that neither
    /// lane ever writes what the other one owns.
    pub fn apply_segment_in_lane(
        &mut self,
        seq: Seq,
        timestamp: &str,
        ops: &mut [Op],
        owns: &dyn Fn(&str) -> bool,
        cascade: &dyn Fn(&str) -> bool,
    ) -> Result<(), GraphError> {
        self.apply_ops(timestamp, seq, ops, Some(owns), Some(cascade))
    }

    fn apply_ops(
        &mut self,
        timestamp: &str,
        seq: Seq,
        ops: &mut [Op],
        owns: Option<&dyn Fn(&str) -> bool>,
        cascade: Option<&dyn Fn(&str) -> bool>,
    ) -> Result<(), GraphError> {
        for (index, op) in ops.iter().enumerate() {
            validate(index, op)?;
        }
        let mark = self.checkpoint();
        for (index, op) in ops.iter_mut().enumerate() {
            // The op's canonical JSON, for the event's digest and (when it
            // reads back as the same value) its history.
            if self.canonical.len() > 1 {
                self.canonical.push(b',');
            }
            let start = self.canonical.len();
            canonical::write_op(&*op, &mut self.canonical);
            if canonical::reads_back_equal(op) {
                self.history.set_op_json(seq, &self.canonical[start..]);
            } else {
                self.history.set_op(seq, op);
            }
            let op_bytes = self.canonical.len() - start;
            if let Err(e) = self.apply_op(index, seq, timestamp, op, op_bytes, owns, cascade) {
                self.rollback(mark);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Ends the event at `seq`: extends the rolling digest with the ops
    /// applied since the event began (every segment that was not rolled
    /// back, in order) and the recorded `errors` (only when there are any),
    /// and keeps the errors to write with the batch.
    pub fn end_event(&mut self, seq: Seq, errors: &[ErrorRecord]) {
        let (_, prev) = self.state();
        self.canonical.push(b']');
        if !errors.is_empty() {
            errors::write_canonical(errors, &mut self.canonical);
            self.errors.extend_from_slice(errors);
        }
        let digest = Sha256::of_parts(&[prev.as_bytes(), &self.canonical]);
        self.digests.push((seq, digest));
        self.reset_canonical();
    }

    /// Empties the event's canonical op list (`[`, ops to come).
    fn reset_canonical(&mut self) {
        self.canonical.clear();
        self.canonical.push(b'[');
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_op(
        &mut self,
        index: usize,
        seq: Seq,
        ts: &str,
        op: &mut Op,
        op_bytes: usize,
        owns: Option<&dyn Fn(&str) -> bool>,
        cascade: Option<&dyn Fn(&str) -> bool>,
    ) -> Result<(), GraphError> {
        let check_owner = |name: &'static str, id: &str, n: &Node| match owns {
            Some(owns) if !owns(&n.node_type) => Err(GraphError::NotOwner {
                index,
                op: name,
                id: id.to_owned(),
                node_type: n.node_type.clone(),
            }),
            _ => Ok(()),
        };
        // A `merge-node` keeps the node's type.
        let check_type = |id: &str, n: &Node, requested: &str| {
            if n.node_type == requested {
                return Ok(());
            }
            Err(GraphError::TypeMismatch {
                index,
                id: id.to_owned(),
                existing: n.node_type.clone(),
                requested: requested.to_owned(),
            })
        };
        // The node under `id`, if any, once its type is checked.
        let owned =
            |this: &Self, name: &'static str, id: &str| -> Result<Option<Node>, GraphError> {
                let n = this.node(id)?;
                if let Some(n) = &n {
                    check_owner(name, id, n)?;
                }
                Ok(n)
            };
        match op {
            Op::PutNode {
                id,
                node_type,
                properties,
            } => {
                let existing = owned(&*self, "put-node", id.as_str())?;
                let properties = std::mem::take(properties);
                self.put_node(id, node_type, properties, existing, seq, ts)?;
            }
            Op::MergeNode {
                id,
                node_type,
                properties,
                create_if_absent,
            } => {
                // A node this batch already holds is merged in place, its
                // undo entry only what the merge replaces: no copy of the
                // node (the benchmark's attempts change several times in a
                // bundle).
                if let Some(Some(n)) = self.nodes.get_mut(id.as_str()) {
                    check_owner("merge-node", id, n)?;
                    check_type(id, n, node_type)?;
                    let diff = (!history::snapshot_due(n.updated_seq, seq))
                        .then(|| self.history.node_diff(std::iter::empty(), ts));
                    let mut replaced = Vec::with_capacity(properties.len());
                    for (k, v) in std::mem::take(properties) {
                        let old = n.properties.insert(k.clone(), v);
                        replaced.push((k, old));
                    }
                    let updated_seq = std::mem::replace(&mut n.updated_seq, seq);
                    let updated_at = std::mem::replace(&mut n.updated_at, ts.to_owned());
                    // At a block crossing, the node as it now stands, stored
                    // whole unless its debt allows a diff (below).
                    let whole = diff.is_none().then(|| self.history.write_node(n));
                    if let Some(diff) = diff {
                        self.history.node_changed(id, diff, None);
                    }
                    let size = match self.sizes.get_mut(id.as_str()) {
                        Some(size) => {
                            *size = merged_size(*size, &replaced, &n.properties);
                            debug_assert_eq!(*size, query::json_len(&n.properties), "{id}");
                            *size
                        }
                        None => {
                            let size = node_size_due(op_bytes, &n.properties);
                            if size > 0 {
                                self.sizes.insert(id.to_string(), size);
                            }
                            size
                        }
                    };
                    self.undo.push(Undo::Merged {
                        id: id.to_string(),
                        replaced,
                        updated_seq,
                        updated_at,
                    });
                    // Refused (or failed reading the debt) after the undo
                    // entry: the event's rollback restores the node.
                    if let Some(whole) = whole {
                        let form = self.crossing_form(id, whole, Vec::new(), ts)?;
                        self.record_node(id, None, form);
                    }
                    return check_node_size(index, id, size);
                }
                match owned(&*self, "merge-node", id.as_str())? {
                    Some(mut n) => {
                        check_type(id, &n, node_type)?;
                        // The history stores what changed, unless a snapshot is due.
                        let diff = (!history::snapshot_due(n.updated_seq, seq))
                            .then(|| self.history.node_diff(std::iter::empty(), ts));
                        for (k, v) in std::mem::take(properties) {
                            n.properties.insert(k, v);
                        }
                        let size = node_size_due(op_bytes, &n.properties);
                        check_node_size(index, id, size)?;
                        n.updated_seq = seq;
                        n.updated_at = ts.to_owned();
                        let form = match diff {
                            Some(diff) => NodeForm::Diff(diff, None),
                            None => {
                                let whole = self.history.write_node(&n);
                                self.crossing_form(id, whole, Vec::new(), ts)?
                            }
                        };
                        self.set_node(id, Some(n), form);
                        if size > 0 {
                            self.sizes.insert(id.to_string(), size);
                        }
                    }
                    None if *create_if_absent => {
                        let properties = std::mem::take(properties);
                        self.put_node(id, node_type, properties, None, seq, ts)?;
                    }
                    None => {}
                }
            }
            Op::DeleteNode { id } => {
                if let Some(n) = owned(&*self, "delete-node", id.as_str())? {
                    let mut touching = self.edges_of(id, Direction::Outgoing, None, usize::MAX)?;
                    touching.extend(self.edges_of(id, Direction::Incoming, None, usize::MAX)?);
                    for e in touching {
                        if cascade.is_some_and(|keep| !keep(&e.edge_type)) {
                            continue;
                        }
                        self.delete_edge(&e.from, &e.edge_type, &e.to)?;
                    }
                    self.bump(keys::COUNT_NODE, &n.node_type, -1);
                    self.set_node(id, None, NodeForm::Whole);
                }
            }
            Op::PutEdge {
                edge_type,
                from,
                to,
                properties,
            } => {
                let key = keys::edge_out(from, edge_type, to);
                let created_seq = match self.edge(&key)? {
                    Some(old) => old.created_seq,
                    None => {
                        self.bump(keys::COUNT_EDGE, edge_type, 1);
                        seq
                    }
                };
                let edge = Edge {
                    edge_type: edge_type.clone(),
                    from: from.clone(),
                    to: to.clone(),
                    properties: std::mem::take(properties),
                    created_seq,
                };
                self.set_edge(key, from, edge_type, to, Some(edge));
            }
            Op::DeleteEdge {
                edge_type,
                from,
                to,
            } => self.delete_edge(from, edge_type, to)?,
        }
        Ok(())
    }

    fn put_node(
        &mut self,
        id: &NodeId,
        node_type: &str,
        properties: Properties,
        existing: Option<Node>,
        seq: Seq,
        ts: &str,
    ) -> Result<(), GraphError> {
        // The history stores what changed when the node keeps its type and
        // no snapshot is due; at a block crossing, maybe (below).
        let form = match &existing {
            None => NodeForm::Created,
            Some(old) if old.node_type != node_type => NodeForm::Whole,
            Some(old) if history::snapshot_due(old.updated_seq, seq) => NodeForm::Crossing(
                old.properties
                    .keys()
                    .filter(|k| !properties.contains_key(k.as_str()))
                    .cloned()
                    .collect(),
            ),
            Some(old) => NodeForm::Diff(
                self.history.node_diff(
                    old.properties
                        .keys()
                        .filter(|k| !properties.contains_key(k.as_str())),
                    ts,
                ),
                None,
            ),
        };
        let (created_seq, created_at) = match existing {
            Some(old) => {
                if old.node_type != node_type {
                    self.bump(keys::COUNT_NODE, &old.node_type, -1);
                    self.bump(keys::COUNT_NODE, node_type, 1);
                }
                (old.created_seq, old.created_at)
            }
            None => {
                self.bump(keys::COUNT_NODE, node_type, 1);
                (seq, ts.to_owned())
            }
        };
        let node = Node {
            id: id.clone(),
            node_type: node_type.to_owned(),
            properties,
            created_seq,
            updated_seq: seq,
            created_at,
            updated_at: ts.to_owned(),
        };
        let form = match form {
            NodeForm::Crossing(unset) => {
                let whole = self.history.write_node(&node);
                self.crossing_form(id, whole, unset, ts)?
            }
            form => form,
        };
        self.set_node(id, Some(node), form);
        Ok(())
    }

    /// How a change at a block crossing to node `id` goes into the history,
    /// its node written whole at `whole`: so, unless the node is big and
    /// the diffs since its last snapshot do not pay for another
    /// (`history::whole_at_crossing`); then as its diff (the op's
    /// properties, and `unset`), stating the debt.
    fn crossing_form(
        &mut self,
        id: &str,
        whole: history::Span,
        unset: Vec<String>,
        ts: &str,
    ) -> Result<NodeForm, GraphError> {
        if !history::may_defer(whole.len()) {
            return Ok(NodeForm::Written(whole));
        }
        let debt = self.history_debt(id)?;
        if history::whole_at_crossing(whole.len(), debt) {
            return Ok(NodeForm::Written(whole));
        }
        self.history.forget_from(whole.start);
        let diff = self.history.node_diff_owing(unset.iter(), ts, debt);
        Ok(NodeForm::Diff(diff, debt))
    }

    /// The debt of node `id`'s history before the change being applied
    /// (`history::Debt`; `None`: unknown, which stores the node whole): its
    /// changes in this batch, else also the parent's, else also the
    /// committed ones from the block of its last committed change, which
    /// holds a snapshot or a stated debt.
    fn history_debt(&self, id: &str) -> Result<Option<u64>, GraphError> {
        let mut debt = self.history.debt_of(id);
        if let history::Debt::Set(debt) = debt {
            return Ok(Some(debt));
        }
        // The parent's changes, when it is committed, are in `snap` too:
        // read the committed ones before its first.
        let mut until = None;
        if let Some(parent) = &self.parent {
            debt = parent.history.debt_of(id).then(debt);
            if let history::Debt::Set(debt) = debt {
                return Ok(Some(debt));
            }
            until = parent.history.first_seq();
        }
        let Some(committed) = self.store.read_node(&self.snap, id)? else {
            return Ok(None);
        };
        let block = committed.updated_seq.0 / history::SNAPSHOT_BLOCK * history::SNAPSHOT_BLOCK;
        let before = self.store.debt_in(&self.snap, id, Seq(block), until)?;
        Ok(before.then(debt).known())
    }

    fn delete_edge(&mut self, from: &str, edge_type: &str, to: &str) -> Result<(), GraphError> {
        let key = keys::edge_out(from, edge_type, to);
        if self.edge(&key)?.is_some() {
            self.bump(keys::COUNT_EDGE, edge_type, -1);
            self.set_edge(key, from, edge_type, to, None);
        }
        Ok(())
    }

    // ---- pending-map mutations (each recorded for rollback) ----------------

    /// Stages `node` under `id` (`None`: deleted), its history change
    /// stored in `form`.
    fn set_node(&mut self, id: &str, node: Option<Node>, form: NodeForm) {
        self.record_node(id, node.as_ref(), form);
        self.sizes.remove(id);
        let prev = self.nodes.insert(id.to_owned(), node);
        self.undo.push(Undo::Node {
            id: id.to_owned(),
            prev,
        });
    }

    /// Records a change to node `id` in the history, `node` the node after
    /// it (read only by `NodeForm::Created` and `NodeForm::Whole`).
    fn record_node(&mut self, id: &str, node: Option<&Node>, form: NodeForm) {
        match (form, node) {
            (NodeForm::Diff(diff, debt), _) => self.history.node_changed(id, diff, debt),
            (NodeForm::Written(whole), _) => self.history.node_written(id, Some(whole)),
            (NodeForm::Created, Some(n)) => self.history.node_created(id, n),
            (NodeForm::Crossing(_), _) => unreachable!("a crossing is resolved before recording"),
            (_, node) => self.history.node(id, node),
        }
    }

    fn set_edge(&mut self, out_key: Vec<u8>, from: &str, t: &str, to: &str, e: Option<Edge>) {
        self.history.edge(&out_key, e.as_ref());
        let in_key = keys::edge_in(to, t, from);
        let prev = self.edges_in.insert(in_key.clone(), e.is_some());
        self.undo.push(Undo::EdgeIn { key: in_key, prev });
        let prev = self.edges_out.insert(out_key.clone(), e);
        self.undo.push(Undo::EdgeOut { key: out_key, prev });
    }

    fn bump(&mut self, tag: u8, type_name: &str, delta: i64) {
        let key = keys::count(tag, type_name);
        *self.counts.entry(key.clone()).or_insert(0) += delta;
        self.undo.push(Undo::Count { key, delta });
    }

    // ---- overlay reads -----------------------------------------------------

    fn node(&self, id: &str) -> Result<Option<Node>, GraphError> {
        self.node_keeping(id, true)
    }

    /// [`Staging::node`]; `keep_miss` as [`Staging::committed_node_keeping`].
    fn node_keeping(&self, id: &str, keep_miss: bool) -> Result<Option<Node>, GraphError> {
        match self.nodes.get(id) {
            Some(pending) => Ok(pending.clone()),
            None => self.committed_node_keeping(id, keep_miss),
        }
    }

    fn edge(&self, out_key: &[u8]) -> Result<Option<Edge>, GraphError> {
        match self.edges_out.get(out_key) {
            Some(pending) => Ok(pending.clone()),
            None => self.committed_edge(out_key),
        }
    }

    fn committed(&self) -> std::sync::MutexGuard<'_, Committed> {
        self.committed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The node under `id` before this batch: the parent's, else the
    /// committed one (through `snap`). `keep_miss`: whether an id with no node
    /// is remembered too. A projector's reads (`GraphView`) do not keep
    /// misses: a guest can ask for any number of ids that name nothing.
    fn committed_node_keeping(
        &self,
        id: &str,
        keep_miss: bool,
    ) -> Result<Option<Node>, GraphError> {
        if let Some(n) = self.parent.as_ref().and_then(|p| p.nodes.get(id)) {
            return Ok(n.clone());
        }
        read_once(&mut self.committed().nodes, id, keep_miss, || {
            self.store.read_node(&self.snap, id)
        })
    }

    /// The edge under `out_key` before this batch: the parent's, else the
    /// committed one (through `snap`).
    fn committed_edge(&self, out_key: &[u8]) -> Result<Option<Edge>, GraphError> {
        if let Some(e) = self.parent.as_ref().and_then(|p| p.edges_out.get(out_key)) {
            return Ok(e.clone());
        }
        read_once(&mut self.committed().edges, out_key, true, || {
            self.store.read_edge(&self.snap, out_key)
        })
    }

    /// The counter under `key` before this batch.
    fn committed_count(&self, key: &[u8]) -> Result<u64, GraphError> {
        match self.parent.as_ref().and_then(|p| p.counts.get(key)) {
            Some(n) => Ok(*n),
            None => self.store.read_count(&self.snap, key),
        }
    }

    /// Edges touching `id`, outgoing first then incoming, each in key order;
    /// with `Both`, a self-loop is listed once (as outgoing).
    fn edges_of(
        &self,
        id: &str,
        dir: Direction,
        edge_type: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Edge>, GraphError> {
        let prefix = match edge_type {
            Some(t) => keys::lp2(id, t),
            None => keys::lp(id),
        };
        let mut out = Vec::new();
        if matches!(dir, Direction::Outgoing | Direction::Both) {
            let committed = self.snap.prefix(&self.store.edges_out, &prefix);
            let own = pending_prefix(&self.edges_out, &prefix).map(|(k, v)| (k, v.as_ref()));
            let parent = self
                .parent
                .as_ref()
                .map(|p| pending_prefix(&p.edges_out, &prefix).map(|(k, v)| (k, v.as_ref())));
            let pending = Layered::new(own, parent.into_iter().flatten());
            for entry in merge_live(committed, pending).take(limit) {
                let (_, live) = entry?;
                out.push(match live {
                    Live::Committed(v) => decode_edge(&v)?,
                    Live::Pending(e) => e.clone(),
                });
            }
        }
        if matches!(dir, Direction::Incoming | Direction::Both) && out.len() < limit {
            let committed = self.snap.prefix(&self.store.edges_in, &prefix);
            let own =
                pending_prefix(&self.edges_in, &prefix).map(|(k, live)| (k, live.then_some(&())));
            let parent = self.parent.as_ref().map(|p| {
                pending_prefix(&p.edges_in, &prefix).map(|(k, live)| (k, live.then_some(&())))
            });
            let pending = Layered::new(own, parent.into_iter().flatten());
            let mut want = limit - out.len();
            for entry in merge_live(committed, pending) {
                if want == 0 {
                    break;
                }
                let (in_key, _) = entry?;
                let (to, t, from) = keys::split3(&in_key)?;
                if dir == Direction::Both && from == to {
                    continue;
                }
                let edge = self
                    .edge(&keys::edge_out(from, t, to))?
                    .ok_or_else(|| GraphError::corrupt("edge in-index entry", &in_key))?;
                out.push(edge);
                want -= 1;
            }
        }
        Ok(out)
    }

    fn record_view_error(&self, e: &GraphError) {
        tracing::error!(error = %e, "graph read failed during projection");
        let mut slot = self.view_error.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert_with(|| e.to_string());
    }

    fn take_view_error(&self) -> Option<String> {
        self.view_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    // ---- output ------------------------------------------------------------

    /// Writes every pending change (records, indexes, counters, per-seq
    /// digests, meta state) into `batch`; the caller commits it with the log.
    /// Each key is written at most once. Returns the state the batch leaves.
    /// On error the batch may hold part of the graph's writes: drop it.
    pub fn write_into(self, batch: &mut OwnedWriteBatch) -> Result<(Seq, Sha256), GraphError> {
        Ok(self.write_into_keeping(batch)?.state)
    }

    /// [`Staging::write_into`], keeping what was written as the [`Overlay`]
    /// the next batch stages on ([`GraphStore::staging_over`]).
    pub fn write_into_keeping(self, batch: &mut OwnedWriteBatch) -> Result<Overlay, GraphError> {
        if let Some(msg) = self.take_view_error() {
            return Err(GraphError::ViewRead(msg));
        }
        let st = &self.store;
        let parent = self.parent.as_deref();
        let mut committed = std::mem::take(&mut *self.committed());
        for (id, new) in &self.nodes {
            let old = value_before(
                parent.map(|p| &p.nodes),
                &mut committed.nodes,
                id.as_str(),
                || st.read_node(&self.snap, id),
            )?;
            let old = Option::as_ref(&old);
            let by_type = |n: &Node| keys::node_by_type(&n.node_type, id);
            let by_created = |n: &Node| keys::node_by_created(&n.node_type, n.created_seq, id);
            for (ks, old_key, new_key) in [
                (
                    &st.nodes_by_type,
                    old.map(by_type),
                    new.as_ref().map(by_type),
                ),
                (
                    &st.nodes_by_created,
                    old.map(by_created),
                    new.as_ref().map(by_created),
                ),
            ] {
                if old_key == new_key {
                    continue;
                }
                if let Some(k) = old_key {
                    batch.remove(ks, k);
                }
                if let Some(k) = new_key {
                    batch.insert(ks, k, UserValue::empty());
                }
            }
            match new {
                Some(n) if old != Some(n) => {
                    batch.insert(&st.nodes, id.as_str(), encode_node(n)?);
                }
                None if old.is_some() => batch.remove(&st.nodes, id.as_str()),
                _ => {}
            }
        }
        for (out_key, new) in &self.edges_out {
            let old = value_before(
                parent.map(|p| &p.edges_out),
                &mut committed.edges,
                out_key.as_slice(),
                || st.read_edge(&self.snap, out_key),
            )?;
            let old = Option::as_ref(&old);
            let (from, t, to) = keys::split3(out_key)?;
            let in_key = keys::edge_in(to, t, from);
            match new {
                Some(e) => {
                    if old != Some(e) {
                        batch.insert(&st.edges_out, out_key.as_slice(), encode_edge(e)?);
                    }
                    if old.is_none() {
                        batch.insert(&st.edges_in, in_key, UserValue::empty());
                    }
                }
                None if old.is_some() => {
                    batch.remove(&st.edges_out, out_key.as_slice());
                    batch.remove(&st.edges_in, in_key);
                }
                None => {}
            }
        }
        let mut counts = HashMap::with_capacity(self.counts.len());
        for (key, delta) in &self.counts {
            if *delta == 0 {
                continue;
            }
            let committed = self.committed_count(key)?;
            let total = i128::from(committed) + i128::from(*delta);
            match u64::try_from(total) {
                Ok(0) => batch.remove(&st.counts, key.as_slice()),
                Ok(n) => batch.insert(&st.counts, key.as_slice(), n.to_be_bytes()),
                Err(_) => return Err(GraphError::corrupt("counter (would go negative)", key)),
            }
            counts.insert(key.clone(), total as u64);
        }
        match self.chain {
            Chain::Inline => {
                for (seq, digest) in &self.digests {
                    batch.insert(&st.digests, seq.to_key(), digest.0);
                }
            }
            Chain::Async => {
                for (seq, digest) in &self.digests {
                    batch.insert(
                        &st.digests,
                        keys::tagged_digest(keys::DIGEST_ASYNC, *seq),
                        digest.0,
                    );
                    // The writer is ahead: its digest of `seq` is committed.
                    let inline = self
                        .snap
                        .get(&st.digests, seq.to_key())?
                        .map(|v| keys::decode_digest(&v))
                        .transpose()?
                        .ok_or_else(|| {
                            GraphError::corrupt("inline digest (async lane ahead)", &seq.to_key())
                        })?;
                    batch.insert(
                        &st.digests,
                        keys::tagged_digest(keys::DIGEST_COMBINED, *seq),
                        combined_digest(&inline, digest).0,
                    );
                }
            }
        }
        for e in &self.errors {
            batch.insert(
                &st.errors,
                errors::key_by_seq(e.seq, &e.projector),
                errors::encode(e)?,
            );
            batch.insert(
                &st.errors,
                errors::key_by_projector(&e.projector, e.seq),
                UserValue::empty(),
            );
        }
        self.history.write_into(st, batch)?;
        let state = self.state();
        if !self.digests.is_empty() {
            let key = match self.chain {
                Chain::Inline => keys::META_STATE,
                Chain::Async => keys::META_ASYNC_STATE,
            };
            batch.insert(&st.meta, key, keys::encode_state(state.0, &state.1));
        }
        Ok(Overlay {
            generation: st.generation(),
            nodes: self.nodes,
            edges_out: self.edges_out,
            edges_in: self.edges_in,
            counts,
            state,
            history: self.history.into_tail(),
        })
    }
}

impl GraphView for Staging {
    fn get_node(&self, id: &str) -> Option<Node> {
        self.node_keeping(id, false).unwrap_or_else(|e| {
            self.record_view_error(&e);
            None
        })
    }

    fn edges(&self, id: &str, dir: Direction, edge_type: Option<&str>, limit: usize) -> Vec<Edge> {
        self.edges_of(id, dir, edge_type, limit)
            .unwrap_or_else(|e| {
                self.record_view_error(&e);
                Vec::new()
            })
    }
}

/// The combined state digest of a seq in a set with `async` projectors:
/// `SHA-256(inline digest ‖ async digest)`, both after that seq.
pub fn combined_digest(inline: &Sha256, asynchronous: &Sha256) -> Sha256 {
    Sha256::of_parts(&[inline.as_bytes(), asynchronous.as_bytes()])
}

/// The value under `key` before this batch, for `write_into_keeping`: the
/// parent overlay's (borrowed), else the one read during the batch (taken
/// out of `cache`), else read now by `read`.
fn value_before<'p, K, Q, V>(
    parent: Option<&'p BTreeMap<K, Option<V>>>,
    cache: &mut HashMap<K, Option<V>>,
    key: &Q,
    read: impl FnOnce() -> Result<Option<V>, GraphError>,
) -> Result<std::borrow::Cow<'p, Option<V>>, GraphError>
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Ord,
    Q: std::hash::Hash + Ord + ?Sized,
    V: Clone,
{
    if let Some(v) = parent.and_then(|p| p.get(key)) {
        return Ok(std::borrow::Cow::Borrowed(v));
    }
    match cache.remove(key) {
        Some(v) => Ok(std::borrow::Cow::Owned(v)),
        None => read().map(std::borrow::Cow::Owned),
    }
}

/// Most values of one kind (nodes, edges) a batch keeps from its reads of
/// the committed graph. Past it, reads go to the snapshot each time (the
/// same answer): the cache saves reads, it must not hold memory without
/// bound when projectors read many distinct nodes.
const MAX_KEPT_READS: usize = 1 << 18;

/// `map[key]`, read by `read` and kept the first time it is asked for
/// (a miss only with `keep_miss`; nothing once the map holds
/// [`MAX_KEPT_READS`]).
fn read_once<K, Q, V>(
    map: &mut HashMap<K, Option<V>>,
    key: &Q,
    keep_miss: bool,
    read: impl FnOnce() -> Result<Option<V>, GraphError>,
) -> Result<Option<V>, GraphError>
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: ToOwned<Owned = K> + std::hash::Hash + Eq + ?Sized,
    V: Clone,
{
    if let Some(v) = map.get(key) {
        return Ok(v.clone());
    }
    let v = read()?;
    if (v.is_some() || keep_miss) && map.len() < MAX_KEPT_READS {
        map.insert(key.to_owned(), v.clone());
    }
    Ok(v)
}

fn restore<K: Ord, V>(map: &mut BTreeMap<K, V>, key: K, prev: Option<V>) {
    match prev {
        Some(v) => map.insert(key, v),
        None => map.remove(&key),
    };
}

fn check_str(index: usize, what: &str, s: &str, max: usize) -> Result<(), GraphError> {
    let reason = if s.is_empty() {
        format!("{what} is empty")
    } else if s.len() > max {
        format!("{what} is {} bytes, more than {max}", s.len())
    } else {
        return Ok(());
    };
    Err(GraphError::InvalidOp { index, reason })
}

fn validate(index: usize, op: &Op) -> Result<(), GraphError> {
    let id = |s: &str| check_str(index, "node id", s, MAX_ID_BYTES);
    let ty = |what, s| check_str(index, what, s, MAX_TYPE_BYTES);
    match op {
        Op::PutNode {
            id: i, node_type, ..
        }
        | Op::MergeNode {
            id: i, node_type, ..
        } => {
            id(i)?;
            ty("node type", node_type)
        }
        Op::DeleteNode { id: i } => id(i),
        Op::PutEdge {
            edge_type,
            from,
            to,
            ..
        }
        | Op::DeleteEdge {
            edge_type,
            from,
            to,
        } => {
            id(from)?;
            id(to)?;
            ty("edge type", edge_type)
        }
    }
}

/// Pending entries whose key starts with `prefix`, in key order.
fn pending_prefix<'a, V>(
    map: &'a BTreeMap<Vec<u8>, V>,
    prefix: &'a [u8],
) -> impl Iterator<Item = (&'a Vec<u8>, &'a V)> + 'a {
    map.range(prefix.to_vec()..)
        .take_while(move |(k, _)| k.starts_with(prefix))
}

/// Two layers of pending entries for one prefix, both in key order: `top`
/// (this batch's) shadows `under` (the parent overlay's) on equal keys.
struct Layered<'a, V: 'a, T, U>
where
    T: Iterator<Item = (&'a Vec<u8>, Option<&'a V>)>,
    U: Iterator<Item = (&'a Vec<u8>, Option<&'a V>)>,
{
    top: std::iter::Peekable<T>,
    under: std::iter::Peekable<U>,
}

impl<'a, V: 'a, T, U> Layered<'a, V, T, U>
where
    T: Iterator<Item = (&'a Vec<u8>, Option<&'a V>)>,
    U: Iterator<Item = (&'a Vec<u8>, Option<&'a V>)>,
{
    fn new(top: T, under: U) -> Self {
        Layered {
            top: top.peekable(),
            under: under.peekable(),
        }
    }
}

impl<'a, V: 'a, T, U> Iterator for Layered<'a, V, T, U>
where
    T: Iterator<Item = (&'a Vec<u8>, Option<&'a V>)>,
    U: Iterator<Item = (&'a Vec<u8>, Option<&'a V>)>,
{
    type Item = (&'a Vec<u8>, Option<&'a V>);

    fn next(&mut self) -> Option<Self::Item> {
        let order = match (self.top.peek(), self.under.peek()) {
            (None, _) => return self.under.next(),
            (Some(_), None) => return self.top.next(),
            (Some((t, _)), Some((u, _))) => t.cmp(u),
        };
        match order {
            std::cmp::Ordering::Less => self.top.next(),
            std::cmp::Ordering::Greater => self.under.next(),
            std::cmp::Ordering::Equal => {
                self.under.next();
                self.top.next()
            }
        }
    }
}

enum Live<'a, V> {
    Committed(UserValue),
    Pending(&'a V),
}

type LiveEntry<'a, V> = (Vec<u8>, Live<'a, V>);

/// Lazy merge of a committed scan with pending overrides (`None` = deleted),
/// both in key order: yields the live entries in key order, pending winning
/// on equal keys.
struct MergeLive<'a, V: 'a, P: Iterator<Item = (&'a Vec<u8>, Option<&'a V>)>> {
    committed: fjall::Iter,
    c_next: Option<(fjall::UserKey, UserValue)>,
    c_started: bool,
    pending: std::iter::Peekable<P>,
}

fn merge_live<'a, V: 'a, P>(committed: fjall::Iter, pending: P) -> MergeLive<'a, V, P>
where
    P: Iterator<Item = (&'a Vec<u8>, Option<&'a V>)>,
{
    MergeLive {
        committed,
        c_next: None,
        c_started: false,
        pending: pending.peekable(),
    }
}

impl<'a, V: 'a, P> MergeLive<'a, V, P>
where
    P: Iterator<Item = (&'a Vec<u8>, Option<&'a V>)>,
{
    fn advance_committed(&mut self) -> Result<(), GraphError> {
        self.c_next = self.committed.next().map(|g| g.into_inner()).transpose()?;
        Ok(())
    }

    fn step(&mut self) -> Result<Option<LiveEntry<'a, V>>, GraphError> {
        if !self.c_started {
            self.c_started = true;
            self.advance_committed()?;
        }
        loop {
            let take_pending = match (&self.c_next, self.pending.peek()) {
                (None, None) => return Ok(None),
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some((ck, _)), Some((pk, _))) => {
                    if pk.as_slice() == ck.as_ref() {
                        // The pending entry shadows the committed one.
                        self.advance_committed()?;
                        true
                    } else {
                        pk.as_slice() < ck.as_ref()
                    }
                }
            };
            if take_pending {
                match self.pending.next() {
                    Some((k, Some(v))) => return Ok(Some((k.clone(), Live::Pending(v)))),
                    _ => continue, // deleted in this batch
                }
            }
            if let Some((k, v)) = self.c_next.take() {
                self.advance_committed()?;
                return Ok(Some((k.to_vec(), Live::Committed(v))));
            }
        }
    }
}

impl<'a, V: 'a, P> Iterator for MergeLive<'a, V, P>
where
    P: Iterator<Item = (&'a Vec<u8>, Option<&'a V>)>,
{
    type Item = Result<LiveEntry<'a, V>, GraphError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.step().transpose()
    }
}

/// How a node change goes into the history (`history::Pending`).
enum NodeForm {
    /// The whole node after it.
    Whole,
    /// The whole node after it, already written there.
    Written(history::Span),
    /// Its diff against the node before (relative to the op's
    /// properties), with the debt it states if it is a crossing's.
    Diff(history::Span, Option<u64>),
    /// A same-type `put-node` at a block crossing, removing these keys:
    /// `Staging::crossing_form` tells `Written` or `Diff`.
    Crossing(Vec<String>),
    /// Created by the op being applied: derived from it.
    Created,
}
