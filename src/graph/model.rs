//! The graph's data model as every other module sees it: nodes, edges, the ops a
//! projector emits, and the read-only `GraphView` a projector may query. Pure
//! data; no storage, no Wasm.

pub use crate::ids::NodeId;
use crate::seq::Seq;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// JSON object of node or edge properties.
pub type Properties = Map<String, Value>;

/// A node as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub id: NodeId,
    pub node_type: String,
    pub properties: Properties,
    /// Seq of the event that created the node.
    pub created_seq: Seq,
    /// Seq of the event that last changed the node.
    pub updated_seq: Seq,
    /// Timestamp (RFC 3339 UTC) of the event that created the node: never the
    /// wall clock, so replays are bit-identical.
    pub created_at: String,
    /// Timestamp of the event that last changed the node.
    pub updated_at: String,
}

/// An edge as stored. Its id is `from:TYPE:to` (see [`edge_id`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Edge {
    pub edge_type: String,
    pub from: NodeId,
    pub to: NodeId,
    pub properties: Properties,
    pub created_seq: Seq,
}

/// `from:TYPE:to`, as the original control plane named edges.
pub fn edge_id(from: &str, edge_type: &str, to: &str) -> String {
    format!("{from}:{edge_type}:{to}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Outgoing,
    Incoming,
    Both,
}

/// One graph operation, as a projector emits it (mirrors `op` in wit/projector.wit).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Create the node or replace it whole.
    PutNode {
        id: NodeId,
        node_type: String,
        properties: Properties,
    },
    /// Shallow-merge into an existing node of `node_type`; create it only if
    /// `create_if_absent`. A node of another type fails the event.
    MergeNode {
        id: NodeId,
        node_type: String,
        properties: Properties,
        create_if_absent: bool,
    },
    /// Delete the node and every edge touching it; no-op if absent.
    DeleteNode { id: NodeId },
    /// Create or replace the edge `from:TYPE:to`.
    PutEdge {
        edge_type: String,
        from: NodeId,
        to: NodeId,
        properties: Properties,
    },
    /// Delete the edge; no-op if absent.
    DeleteEdge {
        edge_type: String,
        from: NodeId,
        to: NodeId,
    },
}

/// Read-only view of the graph a projector sees: the projection as it stands
/// before the event being projected, including earlier events of the same batch.
pub trait GraphView {
    fn get_node(&self, id: &str) -> Option<Node>;
    /// Edges touching `id` (in the given direction, optionally of one type),
    /// in key order, at most `limit`.
    fn edges(&self, id: &str, dir: Direction, edge_type: Option<&str>, limit: usize) -> Vec<Edge>;
}
