//! Read-side graph queries for the HTTP API and tools, answered from the
//! committed state through one fjall snapshot per call. It owns paging
//! (opaque cursors), type counts in a caller-given order and the rebuild dump. It must
//! never write, and never scan more than an index range answers (the one
//! filtered scan, `newest_nodes`, is bounded by [`NEWEST_SCAN_BUDGET`]).
//! The pages the HTTP routes ask for (`list_nodes_bounded`, `newest_items`)
//! also stop at a byte budget (at least one item), with a cursor: a node's
//! properties may hold payload keys of up to 1 MiB each.
//!
//! Cursors are lowercase hex of `tag ‖ index key of the last item returned`
//! (`tag`: one byte naming the query and, for edges, the direction); a cursor
//! is only valid for the query (and node type / node id) that produced it.

use crate::digest::Sha256;
use crate::graph::error::GraphError;
use crate::graph::keys;
use crate::graph::model::{Direction, Edge, Node};
use crate::graph::store::{decode_edge, decode_node, GraphStore, GENESIS_DIGEST};
use crate::seq::Seq;
use fjall::Readable;
use std::io::Write;
use std::ops::Bound;

/// The order type counts are listed in: these names first, in this order,
/// then any other type by name. The graph engine knows no type names; the
/// caller's schema supplies them (`crate::schema::SUMMARY_ORDER`).
#[derive(Debug, Clone, Copy)]
pub struct TypeOrder<'a> {
    pub nodes: &'a [&'a str],
    pub edges: &'a [&'a str],
}

/// Largest page any query returns (a larger `limit` is clamped).
pub const MAX_PAGE_LIMIT: usize = 10_000;

/// Index entries `newest_nodes` examines per call before it stops and hands
/// back a cursor.
pub const NEWEST_SCAN_BUDGET: usize = 100_000;

/// The length of `value`'s compact JSON, counted without building it: what
/// the byte-bounded pages measure their items with (a node's properties may
/// hold payload keys of up to 1 MiB, and a page is built whole in memory).
pub fn json_len<T: serde::Serialize + ?Sized>(value: &T) -> usize {
    struct Count(usize);
    impl Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Writing to a counter fails only for a value JSON cannot hold (a map
    // with non-string keys), which no read model has.
    let _ = serde_json::to_writer(&mut c, value);
    c.0
}

const TAG_NODES: u8 = b'N';
const TAG_BY_TYPE: u8 = b'T';
const TAG_NEWEST: u8 = b'C';
const TAG_OUT: u8 = b'O';
const TAG_IN: u8 = b'I';

/// `(type name, count)` pairs, in summary order.
pub type TypeCounts = Vec<(String, u64)>;

/// One page of results; `next_cursor` is `Some` when more may follow.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    fn last(items: Vec<T>) -> Self {
        Page {
            items,
            next_cursor: None,
        }
    }
}

fn encode_cursor(tag: u8, key: &[u8]) -> String {
    let mut raw = Vec::with_capacity(1 + key.len());
    raw.push(tag);
    raw.extend_from_slice(key);
    hex::encode(raw)
}

/// The key in `cursor`, checked against the expected tag and key prefix.
fn decode_cursor(cursor: &str, tags: &[u8], prefix: &[u8]) -> Result<(u8, Vec<u8>), GraphError> {
    let raw = hex::decode(cursor).map_err(|_| GraphError::BadCursor)?;
    match raw.split_first() {
        Some((tag, key)) if tags.contains(tag) && key.starts_with(prefix) => {
            Ok((*tag, key.to_vec()))
        }
        _ => Err(GraphError::BadCursor),
    }
}

/// Keys starting with `prefix`, strictly after `after` when given.
fn range_after(prefix: &[u8], after: Option<Vec<u8>>) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let lower = match after {
        Some(k) => Bound::Excluded(k),
        None => Bound::Included(prefix.to_vec()),
    };
    let upper = keys::prefix_end(prefix).map_or(Bound::Unbounded, Bound::Excluded);
    (lower, upper)
}

fn type_rank(order: &[&str], name: &str) -> usize {
    order.iter().position(|t| *t == name).unwrap_or(order.len())
}

fn sort_types(v: &mut [(String, u64)], order: &[&str]) {
    v.sort_by(|a, b| (type_rank(order, &a.0), &a.0).cmp(&(type_rank(order, &b.0), &b.0)));
}

impl GraphStore {
    /// Last applied seq and its digest (`(Seq(0), GENESIS_DIGEST)` if none).
    pub fn state(&self) -> Result<(Seq, Sha256), GraphError> {
        self.read_state(&self.db.snapshot())
    }

    /// A consistent read view of the store (see `Log::view`).
    pub fn view(&self) -> crate::log::View {
        self.db.snapshot()
    }

    /// [`GraphStore::state`] through a given view.
    pub fn state_at(&self, snap: &impl Readable) -> Result<(Seq, Sha256), GraphError> {
        self.read_state(snap)
    }

    /// The async lane's applied seq and digest (a set with `async`
    /// projectors; `(Seq(0), GENESIS_DIGEST)` before it applied anything).
    pub fn async_state(&self) -> Result<(Seq, Sha256), GraphError> {
        self.read_async_state(&self.db.snapshot())
    }

    /// [`GraphStore::async_state`] through a given view.
    pub fn async_state_at(&self, snap: &impl Readable) -> Result<(Seq, Sha256), GraphError> {
        self.read_async_state(snap)
    }

    /// The async lane's digest after `seq` (a set with `async` projectors).
    pub fn async_digest_at(&self, seq: Seq) -> Result<Option<Sha256>, GraphError> {
        if seq == Seq::ZERO {
            return Ok(Some(GENESIS_DIGEST));
        }
        self.db
            .snapshot()
            .get(&self.digests, keys::tagged_digest(keys::DIGEST_ASYNC, seq))?
            .map(|v| keys::decode_digest(&v))
            .transpose()
    }

    /// The combined digest after `seq` (a set with `async` projectors, once
    /// every projector applied `seq`): `SHA-256(inline ‖ async)`.
    pub fn combined_digest_at(&self, seq: Seq) -> Result<Option<Sha256>, GraphError> {
        if seq == Seq::ZERO {
            return Ok(Some(crate::graph::staging::combined_digest(
                &GENESIS_DIGEST,
                &GENESIS_DIGEST,
            )));
        }
        self.db
            .snapshot()
            .get(
                &self.digests,
                keys::tagged_digest(keys::DIGEST_COMBINED, seq),
            )?
            .map(|v| keys::decode_digest(&v))
            .transpose()
    }

    /// Rolling state digest after `seq`; `Seq(0)` is the genesis digest.
    pub fn digest_at(&self, seq: Seq) -> Result<Option<Sha256>, GraphError> {
        if seq == Seq::ZERO {
            return Ok(Some(GENESIS_DIGEST));
        }
        self.db
            .snapshot()
            .get(&self.digests, seq.to_key())?
            .map(|v| keys::decode_digest(&v))
            .transpose()
    }

    pub fn get_node(&self, id: &str) -> Result<Option<Node>, GraphError> {
        self.read_node(&self.db.snapshot(), id)
    }

    /// [`GraphStore::get_node`] through a given view.
    pub fn get_node_at(&self, snap: &impl Readable, id: &str) -> Result<Option<Node>, GraphError> {
        self.read_node(snap, id)
    }

    /// `(nodes_by_type, edges_by_type)`, counts above 0 only, in `order`.
    pub fn counts(&self, order: &TypeOrder<'_>) -> Result<(TypeCounts, TypeCounts), GraphError> {
        let (mut nodes, mut edges) = (Vec::new(), Vec::new());
        for guard in self.db.snapshot().iter(&self.counts) {
            let (key, value) = guard.into_inner()?;
            let n = keys::decode_count(&value)?;
            let (tag, name) = key
                .split_first()
                .ok_or_else(|| GraphError::corrupt("counter key", &key))?;
            let name = std::str::from_utf8(name)
                .map_err(|_| GraphError::corrupt("counter key", &key))?
                .to_owned();
            match *tag {
                _ if n == 0 => {}
                keys::COUNT_NODE => nodes.push((name, n)),
                keys::COUNT_EDGE => edges.push((name, n)),
                _ => return Err(GraphError::corrupt("counter key", &key)),
            }
        }
        sort_types(&mut nodes, order.nodes);
        sort_types(&mut edges, order.edges);
        Ok((nodes, edges))
    }

    /// The counters of the given types only, read by key: what `counts`
    /// returns when every counter belongs to one of these types, which holds
    /// for the graph of a projector set and that set's declared types (ops of
    /// undeclared types are refused before they reach the graph, and another
    /// set needs a rebuild, which clears the graph). Unlike `counts`, its cost
    /// does not grow with the log: the counters are rewritten by every batch,
    /// and a scan walks every superseded version still in the memtable (1.9 ms
    /// p50 after a million events, against tens of microseconds by key).
    pub fn counts_of<'a>(
        &self,
        node_types: impl IntoIterator<Item = &'a str>,
        edge_types: impl IntoIterator<Item = &'a str>,
        order: &TypeOrder<'_>,
    ) -> Result<(TypeCounts, TypeCounts), GraphError> {
        self.counts_of_at(&self.db.snapshot(), node_types, edge_types, order)
    }

    /// [`GraphStore::counts_of`] through a given view.
    pub fn counts_of_at<'a>(
        &self,
        snap: &impl Readable,
        node_types: impl IntoIterator<Item = &'a str>,
        edge_types: impl IntoIterator<Item = &'a str>,
        order: &TypeOrder<'_>,
    ) -> Result<(TypeCounts, TypeCounts), GraphError> {
        let read = |tag: u8, types: std::collections::BTreeSet<&str>| {
            let mut out = Vec::new();
            for t in types {
                if let Some(v) = snap.get(&self.counts, keys::count(tag, t))? {
                    let n = keys::decode_count(&v)?;
                    if n > 0 {
                        out.push((t.to_owned(), n));
                    }
                }
            }
            Ok::<_, GraphError>(out)
        };
        let mut nodes = read(keys::COUNT_NODE, node_types.into_iter().collect())?;
        let mut edges = read(keys::COUNT_EDGE, edge_types.into_iter().collect())?;
        sort_types(&mut nodes, order.nodes);
        sort_types(&mut edges, order.edges);
        Ok((nodes, edges))
    }

    /// Nodes in id order, all or of one type, `limit` at a time.
    pub fn list_nodes(
        &self,
        node_type: Option<&str>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<Node>, GraphError> {
        self.list_nodes_bounded(node_type, cursor, limit, usize::MAX)
    }

    /// [`GraphStore::list_nodes`] for a page a client asked for: it also
    /// stops once the nodes read hold `max_bytes` of stored records (at least
    /// one node), with a `next_cursor` to continue from.
    pub fn list_nodes_bounded(
        &self,
        node_type: Option<&str>,
        cursor: Option<&str>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Page<Node>, GraphError> {
        let limit = limit.min(MAX_PAGE_LIMIT);
        if limit == 0 {
            return Ok(Page::last(Vec::new()));
        }
        let snap = self.db.snapshot();
        let mut items = Vec::new();
        let mut bytes = 0usize;
        match node_type {
            None => {
                let after = cursor
                    .map(|c| decode_cursor(c, &[TAG_NODES], b"").map(|(_, k)| k))
                    .transpose()?;
                for guard in snap.range(&self.nodes, range_after(b"", after)) {
                    if items.len() == limit || bytes >= max_bytes {
                        return Ok(next_page(items, TAG_NODES, |n: &Node| n.id.as_bytes()));
                    }
                    let (key, value) = guard.into_inner()?;
                    let node = decode_node(&value)?;
                    if node.id.as_bytes() != key.as_ref() {
                        return Err(GraphError::corrupt(
                            "node record (id differs from key)",
                            &key,
                        ));
                    }
                    bytes = bytes.saturating_add(value.len());
                    items.push(node);
                }
            }
            Some(t) => {
                let prefix = keys::lp(t);
                let after = cursor
                    .map(|c| decode_cursor(c, &[TAG_BY_TYPE], &prefix).map(|(_, k)| k))
                    .transpose()?;
                let mut last_key = Vec::new();
                for guard in snap.range(&self.nodes_by_type, range_after(&prefix, after)) {
                    let key = guard.key()?;
                    if items.len() == limit || bytes >= max_bytes {
                        return Ok(Page {
                            items,
                            next_cursor: Some(encode_cursor(TAG_BY_TYPE, &last_key)),
                        });
                    }
                    let id = keys::trailing_id(&key, prefix.len())?;
                    let (node, size) = self.indexed_node_sized(&snap, id, &key)?;
                    bytes = bytes.saturating_add(size);
                    items.push(node);
                    last_key = key.to_vec();
                }
            }
        }
        Ok(Page::last(items))
    }

    /// Nodes of `node_type`, newest created first (by `created_seq`, then id
    /// descending), keeping those `filter` accepts. Examines at most
    /// [`NEWEST_SCAN_BUDGET`] index entries per call; when it stops early the
    /// page may hold fewer than `limit` items but carries a cursor.
    pub fn newest_nodes(
        &self,
        node_type: &str,
        before: Option<&str>,
        limit: usize,
        filter: impl Fn(&Node) -> bool,
    ) -> Result<Page<Node>, GraphError> {
        self.newest_nodes_bounded(node_type, before, limit, NEWEST_SCAN_BUDGET, filter)
    }

    pub(crate) fn newest_nodes_bounded(
        &self,
        node_type: &str,
        before: Option<&str>,
        limit: usize,
        budget: usize,
        filter: impl Fn(&Node) -> bool,
    ) -> Result<Page<Node>, GraphError> {
        self.newest_nodes_scan(node_type, before, limit, budget, usize::MAX, |n| {
            filter(&n).then_some((n, 0))
        })
    }

    /// [`GraphStore::newest_nodes`] for a page a client asked for, each node
    /// kept turned into an item at once by `keep` (`None`: not kept), which
    /// also says the item's size in bytes: the page also stops once its
    /// items hold `max_bytes` (at least one item), with a cursor to continue
    /// from. Only the items are held, never a page of whole nodes.
    pub fn newest_items<T>(
        &self,
        node_type: &str,
        before: Option<&str>,
        limit: usize,
        max_bytes: usize,
        keep: impl FnMut(Node) -> Option<(T, usize)>,
    ) -> Result<Page<T>, GraphError> {
        self.newest_nodes_scan(
            node_type,
            before,
            limit,
            NEWEST_SCAN_BUDGET,
            max_bytes,
            keep,
        )
    }

    fn newest_nodes_scan<T>(
        &self,
        node_type: &str,
        before: Option<&str>,
        limit: usize,
        budget: usize,
        max_bytes: usize,
        mut keep: impl FnMut(Node) -> Option<(T, usize)>,
    ) -> Result<Page<T>, GraphError> {
        let limit = limit.min(MAX_PAGE_LIMIT);
        if limit == 0 {
            return Ok(Page::last(Vec::new()));
        }
        let snap = self.db.snapshot();
        let prefix = keys::lp(node_type);
        let upper = match before {
            Some(c) => Bound::Excluded(decode_cursor(c, &[TAG_NEWEST], &prefix)?.1),
            None => keys::prefix_end(&prefix).map_or(Bound::Unbounded, Bound::Excluded),
        };
        let range = (Bound::Included(prefix.clone()), upper);
        let mut items = Vec::new();
        let mut bytes = 0usize;
        let mut last_key: Vec<u8> = Vec::new();
        let entries = snap.range(&self.nodes_by_created, range).rev();
        for (scanned, guard) in entries.enumerate() {
            crate::cancel::check()?;
            let key = guard.key()?;
            if items.len() == limit || bytes >= max_bytes || scanned == budget.max(1) {
                return Ok(Page {
                    items,
                    next_cursor: Some(encode_cursor(TAG_NEWEST, &last_key)),
                });
            }
            let id = keys::trailing_id(&key, prefix.len() + 8)?;
            let node = self.indexed_node(&snap, id, &key)?;
            if let Some((item, size)) = keep(node) {
                bytes = bytes.saturating_add(size);
                items.push(item);
            }
            last_key = key.to_vec();
        }
        Ok(Page::last(items))
    }

    /// Edges touching `id`, optionally of one type, in key order: outgoing
    /// (by type, then `to`), then for `Incoming`/`Both` incoming (by type, then
    /// `from`). With `Both` a self-loop is listed once, as outgoing.
    pub fn edges(
        &self,
        id: &str,
        dir: Direction,
        edge_type: Option<&str>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<Edge>, GraphError> {
        self.edges_bounded(id, dir, edge_type, cursor, limit, usize::MAX)
    }

    /// [`GraphStore::edges`] for an answer: the page also stops once its
    /// edges hold `max_bytes` of JSON (at least one edge; a projector may
    /// give edges properties of any size), `next_cursor` continuing.
    pub fn edges_bounded(
        &self,
        id: &str,
        dir: Direction,
        edge_type: Option<&str>,
        cursor: Option<&str>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Page<Edge>, GraphError> {
        let snap = self.db.snapshot();
        self.edges_at(&snap, id, dir, edge_type, cursor, limit, max_bytes)
    }

    /// [`GraphStore::edges`] through a given view, stopping also once the
    /// edges hold `max_bytes` of answer JSON (`usize::MAX`: no such bound).
    #[allow(clippy::too_many_arguments)]
    pub fn edges_at(
        &self,
        snap: &impl Readable,
        id: &str,
        dir: Direction,
        edge_type: Option<&str>,
        cursor: Option<&str>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Page<Edge>, GraphError> {
        let limit = limit.min(MAX_PAGE_LIMIT);
        if limit == 0 {
            return Ok(Page::last(Vec::new()));
        }
        let prefix = match edge_type {
            Some(t) => keys::lp2(id, t),
            None => keys::lp(id),
        };
        let phases: &[u8] = match dir {
            Direction::Outgoing => &[TAG_OUT],
            Direction::Incoming => &[TAG_IN],
            Direction::Both => &[TAG_OUT, TAG_IN],
        };
        let (start, mut after) = match cursor {
            Some(c) => {
                let (tag, key) = decode_cursor(c, phases, &prefix)?;
                (tag, Some(key))
            }
            None => (phases[0], None),
        };
        let mut items = Vec::new();
        let mut bytes = 0usize;
        let mut last: Option<(u8, Vec<u8>)> = None;
        for &phase in phases.iter().skip_while(|p| **p != start) {
            let ks = if phase == TAG_OUT {
                &self.edges_out
            } else {
                &self.edges_in
            };
            for guard in snap.range(ks, range_after(&prefix, after.take())) {
                let (key, value) = guard.into_inner()?;
                if items.len() == limit || bytes >= max_bytes {
                    return Ok(Page {
                        items,
                        next_cursor: last.map(|(tag, k)| encode_cursor(tag, &k)),
                    });
                }
                let edge = if phase == TAG_OUT {
                    decode_edge(&value)?
                } else {
                    let (to, t, from) = keys::split3(&key)?;
                    if dir == Direction::Both && from == to {
                        continue;
                    }
                    self.read_edge(snap, &keys::edge_out(from, t, to))?
                        .ok_or_else(|| GraphError::corrupt("edge in-index entry", &key))?
                };
                if max_bytes != usize::MAX {
                    // Its answer's form also carries the id `from:TYPE:to`.
                    let id = edge.from.len() + edge.edge_type.len() + edge.to.len() + 2;
                    bytes = bytes.saturating_add(json_len(&edge) + id);
                }
                items.push(edge);
                last = Some((phase, key.to_vec()));
            }
        }
        Ok(Page::last(items))
    }

    /// Writes every entry of every graph keyspace, in a fixed keyspace order
    /// and key order, one line each: `keyspace \t hex(key) \t hex(value)`. Two
    /// stores built from the same log dump identical bytes.
    pub fn dump(&self, w: &mut impl Write) -> Result<(), GraphError> {
        let snap = self.db.snapshot();
        for (name, ks) in self.keyspaces() {
            for guard in snap.iter(ks) {
                let (key, value) = guard.into_inner()?;
                writeln!(w, "{name}\t{}\t{}", hex::encode(key), hex::encode(value))?;
            }
        }
        Ok(())
    }

    /// The node an index entry points at; a missing node is corruption.
    fn indexed_node(
        &self,
        snap: &impl Readable,
        id: &str,
        index_key: &[u8],
    ) -> Result<Node, GraphError> {
        self.read_node(snap, id)?
            .ok_or_else(|| GraphError::corrupt("node index entry (no node)", index_key))
    }

    /// [`GraphStore::indexed_node`] and the size of its stored record.
    fn indexed_node_sized(
        &self,
        snap: &impl Readable,
        id: &str,
        index_key: &[u8],
    ) -> Result<(Node, usize), GraphError> {
        let value = snap
            .get(&self.nodes, id)?
            .ok_or_else(|| GraphError::corrupt("node index entry (no node)", index_key))?;
        Ok((decode_node(&value)?, value.len()))
    }
}

fn next_page<T>(items: Vec<T>, tag: u8, key_of: impl Fn(&T) -> &[u8]) -> Page<T> {
    let next_cursor = items.last().map(|it| encode_cursor(tag, key_of(it)));
    Page { items, next_cursor }
}
