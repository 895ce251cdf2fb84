//! The host side of the projector world: the `bindgen!` bindings of
//! `wit/projector.wit`, the per-store state (`HostState`), the `graph` import
//! answered from the caller's `&dyn GraphView`, and the conversions between the
//! WIT types and the graph model (`graph::Op`). It must never let a guest write
//! the graph (the import is read-only) nor let a store outlive the `project`
//! call whose graph it borrows.

use super::sandbox::{Limiter, WasiState};
use crate::graph::{self, Direction, GraphView, NodeId};
use std::collections::HashSet;
use wasmtime_wasi::{WasiCtxView, WasiView};

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        world: "projector",
        path: "wit",
        // The `graph` import may end the run: a guest past its read budget
        // (`super::MAX_GRAPH_CALLS_PER_RUN`, `super::MAX_GRAPH_READ_BYTES_PER_RUN`).
        imports: { default: trappable },
    });
}

pub(crate) use bindings::leviathan::projector::types as wit;
pub(crate) use bindings::{Projector, ProjectorPre};

/// The `graph` import answers at most this many edges per call, whatever the
/// guest's `limit`: the host builds the whole list before copying it into the
/// guest, so an unbounded limit would let a guest make the host allocate the
/// whole neighbourhood of a hub node.
pub(crate) const MAX_EDGES_PER_CALL: usize = 10_000;

/// Most `graph` import calls (`get-node`, `edges`) one run may make. fuel
/// counts only the guest's instructions, not the host's work behind a call,
/// so without it a guest could keep the host reading for hours within its
/// fuel.
pub(crate) const MAX_GRAPH_CALLS_PER_RUN: u32 = 100_000;
/// Most bytes one run may pass to and receive from the `graph` import
/// (ids and types given, and the ids, types and property texts returned).
pub(crate) const MAX_GRAPH_READ_BYTES_PER_RUN: usize = 64 << 20;

/// What a run has used of its graph-read budget.
#[derive(Debug, Default)]
pub(crate) struct GraphReads {
    calls: u32,
    bytes: usize,
}

impl GraphReads {
    /// Counts one call passing `bytes`; an error (which ends the run, as a
    /// trap naming the budget) past either bound.
    fn call(&mut self, bytes: usize) -> wasmtime::Result<()> {
        self.calls += 1;
        self.returned(bytes)
    }

    /// Counts `bytes` returned by the current call.
    fn returned(&mut self, bytes: usize) -> wasmtime::Result<()> {
        self.bytes = self.bytes.saturating_add(bytes);
        if self.calls > MAX_GRAPH_CALLS_PER_RUN {
            return Err(wasmtime::Error::msg(format!(
                "graph reads over the limit of {MAX_GRAPH_CALLS_PER_RUN} calls per event"
            )));
        }
        if self.bytes > MAX_GRAPH_READ_BYTES_PER_RUN {
            return Err(wasmtime::Error::msg(format!(
                "graph reads over the limit of {MAX_GRAPH_READ_BYTES_PER_RUN} bytes per event \
                 (ids and types passed, nodes and edges returned)"
            )));
        }
        Ok(())
    }
}

/// A borrowed `&dyn GraphView` with its lifetime erased, so it can sit in a
/// `Store<HostState>` (wasmtime requires `T: 'static`).
///
/// Invariant, kept by `Loaded::run` in `projection/mod.rs` (the only place
/// that builds one from a caller's graph, for every path: `project`,
/// `prepare` and `finish`): the store holding it is created and dropped inside
/// that one call, on its thread, so the pointer is never read after the
/// borrow ends and never from another thread. `GraphRef::empty` points at a
/// static and needs no such care.
pub(crate) struct GraphRef(*const (dyn GraphView + 'static));

// SAFETY: see the invariant above: the store (and so this pointer) never
// leaves the thread that borrowed the graph; `Send` is only needed because
// wasmtime-wasi requires `WasiView: Send` for the store data. (The crate
// denies `unsafe_code`; `GraphRef` is one of its documented exceptions.)
#[allow(unsafe_code)]
unsafe impl Send for GraphRef {}

#[allow(unsafe_code)]
impl GraphRef {
    /// # Safety
    /// The returned value must be dropped before `graph`'s borrow ends, and
    /// must not be used from another thread.
    pub(crate) unsafe fn new(graph: &dyn GraphView) -> Self {
        let ptr: *const (dyn GraphView + '_) = graph;
        // SAFETY: only the trait object's lifetime bound changes; the caller
        // promises not to use the pointer beyond the borrow.
        GraphRef(unsafe {
            std::mem::transmute::<*const (dyn GraphView + '_), *const (dyn GraphView + 'static)>(
                ptr,
            )
        })
    }

    /// A graph with nothing in it (for `describe` at load time).
    pub(crate) fn empty() -> Self {
        static EMPTY: EmptyGraph = EmptyGraph;
        let ptr: *const (dyn GraphView + 'static) = &EMPTY;
        GraphRef(ptr)
    }

    fn get(&self) -> &dyn GraphView {
        // SAFETY: the pointer is valid for as long as `self` lives (see
        // `GraphRef::new`).
        unsafe { &*self.0 }
    }
}

/// A graph with nothing in it: what `describe` sees, and what a projector
/// that does not import `graph` is given (it cannot read it).
pub(crate) struct EmptyGraph;

impl GraphView for EmptyGraph {
    fn get_node(&self, _id: &str) -> Option<graph::Node> {
        None
    }
    fn edges(&self, _: &str, _: Direction, _: Option<&str>, _: usize) -> Vec<graph::Edge> {
        Vec::new()
    }
}

/// Everything one store (one projector run on one event) holds.
pub(crate) struct HostState {
    graph: GraphRef,
    reads: GraphReads,
    pub(crate) limiter: Limiter,
    /// Present only for components that import WASI.
    pub(crate) wasi: Option<WasiState>,
}

impl HostState {
    pub(crate) fn new(graph: GraphRef, limiter: Limiter, wasi: Option<WasiState>) -> Self {
        HostState {
            graph,
            reads: GraphReads::default(),
            limiter,
            wasi,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        // WASI is linked only into the linker used for components that import
        // it, and every store for such a component is built with a WasiState.
        let wasi = self
            .wasi
            .as_mut()
            .expect("WASI import called on a store built without a WasiState");
        WasiCtxView {
            ctx: &mut wasi.ctx,
            table: &mut wasi.table,
        }
    }
}

impl wit::Host for HostState {}

impl bindings::leviathan::projector::graph::Host for HostState {
    fn get_node(&mut self, id: String) -> wasmtime::Result<Option<wit::Node>> {
        self.reads.call(id.len())?;
        // No node has a longer id (ops are checked against it), and the store
        // must not be asked for a key it cannot hold.
        if id.len() > graph::MAX_ID_BYTES {
            return Ok(None);
        }
        let node = self.graph.get().get_node(&id).map(|n| wit::Node {
            properties: properties_text(&n.properties),
            id: n.id.into_string(),
            node_type: n.node_type,
            created_seq: n.created_seq.0,
            updated_seq: n.updated_seq.0,
        });
        if let Some(n) = &node {
            self.reads
                .returned(n.properties.len() + n.id.len() + n.node_type.len())?;
        }
        Ok(node)
    }

    fn edges(
        &mut self,
        id: String,
        dir: wit::Direction,
        edge_type: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Vec<wit::Edge>> {
        self.reads
            .call(id.len() + edge_type.as_ref().map_or(0, String::len))?;
        if id.len() > graph::MAX_ID_BYTES
            || edge_type
                .as_ref()
                .is_some_and(|t| t.len() > graph::MAX_TYPE_BYTES)
        {
            return Ok(Vec::new());
        }
        let dir = match dir {
            wit::Direction::Outgoing => Direction::Outgoing,
            wit::Direction::Incoming => Direction::Incoming,
            wit::Direction::Both => Direction::Both,
        };
        let limit = usize::try_from(limit)
            .unwrap_or(usize::MAX)
            .min(MAX_EDGES_PER_CALL);
        let mut edges = self
            .graph
            .get()
            .edges(&id, dir, edge_type.as_deref(), limit);
        edges.truncate(limit);
        let edges: Vec<wit::Edge> = edges
            .into_iter()
            .map(|e| wit::Edge {
                properties: properties_text(&e.properties),
                edge_type: e.edge_type,
                from: e.from.into_string(),
                to: e.to.into_string(),
                created_seq: e.created_seq.0,
            })
            .collect();
        let bytes = edges
            .iter()
            .map(|e| e.properties.len() + e.edge_type.len() + e.from.len() + e.to.len())
            .sum();
        self.reads.returned(bytes)?;
        Ok(edges)
    }
}

/// Properties as JSON object text (keys sorted: serde_json's map is ordered).
fn properties_text(p: &graph::Properties) -> String {
    serde_json::to_string(p).unwrap_or_else(|_| "{}".to_owned())
}

/// Why one op of a projector's output was refused.
#[derive(Debug)]
pub(crate) enum OpError {
    Undeclared {
        kind: &'static str,
        type_name: String,
    },
    Invalid(String),
}

/// The node and edge types a projector declared in `describe`.
pub(crate) struct DeclaredTypes {
    pub(crate) node_types: HashSet<String>,
    pub(crate) edge_types: HashSet<String>,
}

impl DeclaredTypes {
    fn node(&self, t: String) -> Result<String, OpError> {
        if self.node_types.contains(&t) {
            Ok(t)
        } else {
            Err(OpError::Undeclared {
                kind: "node",
                type_name: t,
            })
        }
    }

    fn edge(&self, t: String) -> Result<String, OpError> {
        if self.edge_types.contains(&t) {
            Ok(t)
        } else {
            Err(OpError::Undeclared {
                kind: "edge",
                type_name: t,
            })
        }
    }
}

/// A node id from the guest: never empty (its length is checked when the op
/// is applied, see `NodeId`).
fn node_id(what: &str, s: String) -> Result<NodeId, OpError> {
    NodeId::new(what, s).map_err(|e| OpError::Invalid(e.0))
}

fn parse_properties(text: &str) -> Result<graph::Properties, OpError> {
    serde_json::from_str::<graph::Properties>(text).map_err(|e| {
        let shown: String = text.chars().take(80).collect();
        OpError::Invalid(format!("properties are not a JSON object ({e}): {shown:?}"))
    })
}

/// One guest op as a checked `graph::Op`: ids non-empty, types declared,
/// properties a JSON object.
pub(crate) fn convert_op(op: wit::Op, declared: &DeclaredTypes) -> Result<graph::Op, OpError> {
    Ok(match op {
        wit::Op::PutNode(n) => graph::Op::PutNode {
            id: node_id("node id", n.id)?,
            node_type: declared.node(n.node_type)?,
            properties: parse_properties(&n.properties)?,
        },
        wit::Op::MergeNode(n) => graph::Op::MergeNode {
            id: node_id("node id", n.id)?,
            node_type: declared.node(n.node_type)?,
            properties: parse_properties(&n.properties)?,
            create_if_absent: n.create_if_absent,
        },
        wit::Op::DeleteNode(id) => graph::Op::DeleteNode {
            id: node_id("node id", id)?,
        },
        wit::Op::PutEdge(e) => graph::Op::PutEdge {
            edge_type: declared.edge(e.edge_type)?,
            from: node_id("edge from", e.from)?,
            to: node_id("edge to", e.to)?,
            properties: parse_properties(&e.properties)?,
        },
        wit::Op::DeleteEdge(k) => graph::Op::DeleteEdge {
            edge_type: declared.edge(k.edge_type)?,
            from: node_id("edge from", k.from)?,
            to: node_id("edge to", k.to)?,
        },
    })
}
