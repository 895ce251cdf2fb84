//! `GraphStore`: the projected graph's fjall keyspaces, their layout, and the
//! committed-state reads every other graph module builds on. It never writes
//! graph data outside a caller's write batch (see `staging`): the only direct
//! writes are the layout version at open, and [`GraphStore::clear`] and the
//! rebuild marker ([`GraphStore::begin_rebuild`]) for an offline rebuild.
//!
//! # Keyspaces and layout
//! `lp(s)` = `u32` big-endian byte length ‖ UTF-8 bytes; a key's last component
//! is raw; `seq` = `Seq::to_key` (8 bytes big-endian); see `keys`.
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `graph_nodes` | `id` | node record |
//! | `graph_nodes_by_type` | `lp(type) ‖ id` | empty |
//! | `graph_nodes_by_created` | `lp(type) ‖ created_seq ‖ id` | empty |
//! | `graph_edges_out` | `lp(from) ‖ lp(type) ‖ to` | edge record |
//! | `graph_edges_in` | `lp(to) ‖ lp(type) ‖ from` | empty (record is in `graph_edges_out`) |
//! | `graph_counts` | `b'n' ‖ node_type` or `b'e' ‖ edge_type` | `u64` big-endian, never 0 (a zero counter is removed) |
//! | `graph_digests` | `seq` | 32-byte rolling state digest after that seq |
//! | `graph_digests` | `b'a' ‖ seq`, `b'c' ‖ seq` | a set with `async` projectors: the async lane's digest, the combined digest |
//! | `graph_errors` | see `errors` | recorded projection errors (`on_error = "record"`) |
//! | `graph_meta` | `"state"` / `"format"` | `seq ‖ digest` of the last applied event / layout version `"1"` |
//! | `graph_meta` | `"async_state"` | `seq ‖ digest` of the async lane's last applied event |
//! | `graph_meta` | `"rebuilding"` | while an offline rebuild runs: JSON [`RebuildStart`] (what the graph was before it) |
//! | `graph_history` | see `history` | every node and edge change by (id, seq), not in the digest |
//!
//! Records are compact JSON (`serde_json::to_vec`) of [`Node`] / [`Edge`]:
//! properties are a `serde_json::Map` (a `BTreeMap`: keys sorted), so the bytes
//! depend only on the content, and two rebuilds from the same log are
//! byte-identical.

use crate::digest::Sha256;
use crate::graph::error::GraphError;
use crate::graph::keys;
use crate::graph::model::{Edge, Node};
use crate::seq::Seq;
use fjall::{Database, Keyspace, Readable};

/// Digest of the empty graph, before the first event (32 zero bytes).
pub const GENESIS_DIGEST: Sha256 = Sha256([0; 32]);

/// The graph's keyspaces. Cheap to clone (fjall handles are reference-counted).
#[derive(Clone)]
pub struct GraphStore {
    pub(crate) db: Database,
    /// Which generation (projector set's graph) these keyspaces hold.
    generation: u64,
    pub(crate) nodes: Keyspace,
    pub(crate) nodes_by_type: Keyspace,
    pub(crate) nodes_by_created: Keyspace,
    pub(crate) edges_out: Keyspace,
    pub(crate) edges_in: Keyspace,
    pub(crate) counts: Keyspace,
    pub(crate) digests: Keyspace,
    pub(crate) errors: Keyspace,
    pub(crate) meta: Keyspace,
    /// Node and edge changes by (id, seq): `graph::history`.
    pub(crate) history: Keyspace,
}

impl std::fmt::Debug for GraphStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphStore").finish_non_exhaustive()
    }
}

impl GraphStore {
    /// Opens (creating if needed) the keyspaces of the live generation's
    /// graph in `db` (the one the `generations` catalog names; generation 0,
    /// the unprefixed keyspaces, in a store that never changed its projector
    /// set online).
    pub fn open(db: &Database) -> Result<GraphStore, GraphError> {
        GraphStore::open_generation(db, live_generation(db)?)
    }

    /// Opens (creating if needed) the keyspaces of generation `generation`:
    /// `graph_*` for generation 0, `gen<N>_graph_*` for generation N.
    pub fn open_generation(db: &Database, generation: u64) -> Result<GraphStore, GraphError> {
        let ks = |name: &str| {
            let name = keyspace_name(generation, name);
            crate::storage::open_keyspace(db, &name)
        };
        let history_name = keyspace_name(generation, "graph_history");
        let history_existed = db.keyspace_exists(&history_name);
        let store = GraphStore {
            db: db.clone(),
            generation,
            nodes: ks("graph_nodes")?,
            nodes_by_type: ks("graph_nodes_by_type")?,
            nodes_by_created: ks("graph_nodes_by_created")?,
            edges_out: ks("graph_edges_out")?,
            edges_in: ks("graph_edges_in")?,
            counts: ks("graph_counts")?,
            digests: ks("graph_digests")?,
            errors: ks("graph_errors")?,
            meta: ks("graph_meta")?,
            history: crate::storage::open_keyspace(db, &history_name)?,
        };
        match store.meta.get(keys::META_FORMAT)? {
            Some(v) if v.as_ref() == keys::FORMAT_VERSION => {}
            Some(v) => {
                return Err(GraphError::Format {
                    found: String::from_utf8_lossy(&v).into_owned(),
                    expected: String::from_utf8_lossy(keys::FORMAT_VERSION).into_owned(),
                })
            }
            None => store.meta.insert(keys::META_FORMAT, keys::FORMAT_VERSION)?,
        }
        crate::graph::history::on_open(&store, history_existed)?;
        let (seq, digest) = store.state()?;
        tracing::debug!(generation, %seq, %digest, "graph store opened");
        Ok(store)
    }

    /// The generation this graph belongs to.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Deletes this generation's keyspaces (their files go once the last
    /// handle on them is dropped, fjall's `delete_keyspace`). For a
    /// generation that is not live.
    pub(crate) fn delete(self) -> Result<(), GraphError> {
        let db = self.db.clone();
        for ks in [
            self.nodes,
            self.nodes_by_type,
            self.nodes_by_created,
            self.edges_out,
            self.edges_in,
            self.counts,
            self.digests,
            self.errors,
            self.meta,
            self.history,
        ] {
            db.delete_keyspace(ks)?;
        }
        Ok(())
    }

    /// Every graph keyspace with its name, in a fixed order (dump order).
    pub(crate) fn keyspaces(&self) -> [(&'static str, &Keyspace); 10] {
        [
            ("graph_nodes", &self.nodes),
            ("graph_nodes_by_type", &self.nodes_by_type),
            ("graph_nodes_by_created", &self.nodes_by_created),
            ("graph_edges_out", &self.edges_out),
            ("graph_edges_in", &self.edges_in),
            ("graph_counts", &self.counts),
            ("graph_digests", &self.digests),
            ("graph_errors", &self.errors),
            ("graph_meta", &self.meta),
            ("graph_history", &self.history),
        ]
    }

    /// Empties the graph for an offline rebuild: afterwards `state()` is
    /// `(Seq(0), GENESIS_DIGEST)` and the next event to apply is seq 1.
    ///
    /// Not atomic across keyspaces: the applied state is removed first, so a
    /// crash part-way leaves a graph claiming seq 0 with leftovers, which the
    /// rebuild must clear again (calling `clear` is idempotent). Only call it
    /// while no writer is running.
    pub(crate) fn clear(&self) -> Result<(), GraphError> {
        self.meta.remove(keys::META_STATE)?;
        self.meta.remove(keys::META_ASYNC_STATE)?;
        crate::graph::history::on_clear(self)?;
        for (name, ks) in self.keyspaces() {
            if name != "graph_meta" {
                ks.clear()?;
            }
        }
        tracing::info!("graph store cleared");
        Ok(())
    }
}

const META_PROJECTORS: &[u8] = b"projectors";

/// Meta key of the offline rebuild's marker ([`GraphStore::begin_rebuild`]).
const META_REBUILDING: &[u8] = b"rebuilding";

/// What the graph was when an offline rebuild began, kept (as the marker's
/// value) until the rebuilt graph is on disk, so that a rebuild run again
/// after an interrupted one still compares with the graph before both.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct RebuildStart {
    /// The log's head then.
    pub seq: u64,
    /// The graph's digest at that head (`None`: it had none).
    pub digest: Option<Sha256>,
    /// The projector set it was built by.
    pub fingerprint: Option<Sha256>,
    /// Its async lane's `(seq, digest)` (a set with `async` projectors).
    pub async_state: Option<(u64, Sha256)>,
}

impl GraphStore {
    /// Marks the graph as being rebuilt offline, durably (synced) before the
    /// rebuild clears anything: the rebuild writes its batches to the
    /// memtables without the journal (`replay`), so until
    /// [`GraphStore::end_rebuild`] a crash may leave any mix of them on disk.
    /// A marker already there (an interrupted rebuild) is kept as it is: it
    /// describes the graph before the first attempt.
    pub(crate) fn begin_rebuild(&self, start: &RebuildStart) -> Result<(), GraphError> {
        if self.rebuild_started()?.is_none() {
            self.meta
                .insert(META_REBUILDING, serde_json::to_vec(start)?)?;
        }
        self.db.persist(fjall::PersistMode::SyncAll)?;
        Ok(())
    }

    /// Removes the marker, synced: the caller has flushed every memtable.
    pub(crate) fn end_rebuild(&self) -> Result<(), GraphError> {
        self.meta.remove(META_REBUILDING)?;
        self.db.persist(fjall::PersistMode::SyncAll)?;
        Ok(())
    }

    /// The marker of an offline rebuild that has not finished.
    pub(crate) fn rebuild_started(&self) -> Result<Option<RebuildStart>, GraphError> {
        self.meta
            .get(META_REBUILDING)?
            .map(|v| {
                serde_json::from_slice(&v).map_err(|_| GraphError::corrupt("rebuild marker", &v))
            })
            .transpose()
    }

    /// Fails when an offline rebuild of this graph was interrupted (killed,
    /// out of disk ...): what is on disk is a partial graph, not to be served
    /// or read until `leviathan rebuild` has run to the end.
    pub fn ensure_complete(&self) -> Result<(), GraphError> {
        match self.rebuild_started()? {
            None => Ok(()),
            Some(_) => Err(GraphError::RebuildInterrupted),
        }
    }
}

/// The catalog of generations (crate::generations owns it; the graph reads
/// only which one is live, so that every opener of the store gets it).
pub(crate) const GENERATIONS_KEYSPACE: &str = "generations";
/// Key of the live generation's id (`u64` big-endian) in the catalog.
pub(crate) const LIVE_KEY: &[u8] = b"live";

/// The live generation's id: 0 unless the catalog names another.
pub(crate) fn live_generation(db: &Database) -> Result<u64, GraphError> {
    let catalog = crate::storage::open_keyspace(db, GENERATIONS_KEYSPACE)?;
    match catalog.get(LIVE_KEY)? {
        None => Ok(0),
        Some(v) => <[u8; 8]>::try_from(v.as_ref())
            .map(u64::from_be_bytes)
            .map_err(|_| GraphError::corrupt("live generation", &v)),
    }
}

/// The fjall keyspace name of graph keyspace `name` in `generation`.
pub(crate) fn keyspace_name(generation: u64, name: &str) -> String {
    if generation == 0 {
        name.to_owned()
    } else {
        format!("gen{generation}_{name}")
    }
}

impl GraphStore {
    /// Fingerprint of the projector set that built the committed graph
    /// (`None` before the first batch).
    pub(crate) fn projector_set(&self) -> Result<Option<Sha256>, GraphError> {
        self.meta
            .get(META_PROJECTORS)?
            .map(|v| Sha256::from_slice(&v).ok_or_else(|| GraphError::corrupt("projector set", &v)))
            .transpose()
    }

    /// Records the projector set's fingerprint in the caller's batch.
    pub(crate) fn stage_projector_set(
        &self,
        batch: &mut fjall::OwnedWriteBatch,
        fingerprint: &Sha256,
    ) {
        batch.insert(&self.meta, META_PROJECTORS, fingerprint.as_bytes().to_vec());
    }
}

// ---- records ---------------------------------------------------------------

/// First size of a record's buffer (nodes, edges, history changes): most
/// fit, where `to_vec`'s 128 bytes grow by reallocation twice or more.
pub(crate) const RECORD_BUFFER: usize = 512;

pub(crate) fn encode_node(node: &Node) -> Result<Vec<u8>, GraphError> {
    let mut out = Vec::with_capacity(RECORD_BUFFER);
    serde_json::to_writer(&mut out, node)?;
    Ok(out)
}

pub(crate) fn decode_node(bytes: &[u8]) -> Result<Node, GraphError> {
    serde_json::from_slice(bytes).map_err(|_| GraphError::corrupt("node record", bytes))
}

pub(crate) fn encode_edge(edge: &Edge) -> Result<Vec<u8>, GraphError> {
    let mut out = Vec::with_capacity(RECORD_BUFFER);
    serde_json::to_writer(&mut out, edge)?;
    Ok(out)
}

pub(crate) fn decode_edge(bytes: &[u8]) -> Result<Edge, GraphError> {
    serde_json::from_slice(bytes).map_err(|_| GraphError::corrupt("edge record", bytes))
}

// ---- committed reads through a snapshot ------------------------------------

impl GraphStore {
    pub(crate) fn read_node(
        &self,
        snap: &impl Readable,
        id: &str,
    ) -> Result<Option<Node>, GraphError> {
        snap.get(&self.nodes, id)?
            .map(|v| decode_node(&v))
            .transpose()
    }

    /// The edge record under an out key.
    pub(crate) fn read_edge(
        &self,
        snap: &impl Readable,
        out_key: &[u8],
    ) -> Result<Option<Edge>, GraphError> {
        snap.get(&self.edges_out, out_key)?
            .map(|v| decode_edge(&v))
            .transpose()
    }

    pub(crate) fn read_count(&self, snap: &impl Readable, key: &[u8]) -> Result<u64, GraphError> {
        snap.get(&self.counts, key)?
            .map_or(Ok(0), |v| keys::decode_count(&v))
    }

    /// The async lane's applied state (`(Seq(0), GENESIS_DIGEST)` if none).
    pub(crate) fn read_async_state(
        &self,
        snap: &impl Readable,
    ) -> Result<(Seq, Sha256), GraphError> {
        snap.get(&self.meta, keys::META_ASYNC_STATE)?
            .map_or(Ok((Seq::ZERO, GENESIS_DIGEST)), |v| keys::decode_state(&v))
    }

    pub(crate) fn read_state(&self, snap: &impl Readable) -> Result<(Seq, Sha256), GraphError> {
        snap.get(&self.meta, keys::META_STATE)?
            .map_or(Ok((Seq::ZERO, GENESIS_DIGEST)), |v| keys::decode_state(&v))
    }
}
