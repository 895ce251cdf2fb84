//! The graph's data model as every other module sees it: nodes, edges, the ops a
//! projector emits, and the read-only `GraphView` a projector may query. Pure
//! data; no storage, no Wasm.

use crate::seq::Seq;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// JSON object of node or edge properties.
pub type Properties = Map<String, Value>;

/// A node as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub id: String,
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

impl Node {
    /// The node as the HTTP API shows it (the node JSON of the original Python
    /// control plane, plus the seqs), fields in the original's order.
    pub fn api_view(&self) -> NodeApi<'_> {
        NodeApi {
            node_id: &self.id,
            node_type: &self.node_type,
            properties: &self.properties,
            created_at: &self.created_at,
            updated_at: &self.updated_at,
            created_seq: self.created_seq,
            updated_seq: self.updated_seq,
        }
    }

    /// `{"node_id","node_type","properties","created_at","updated_at",
    /// "created_seq","updated_seq"}` as a `Value` (object keys then print
    /// sorted; serialize [`Node::api_view`] to keep the original's order).
    pub fn to_api_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("node_id".into(), Value::from(self.id.as_str()));
        m.insert("node_type".into(), Value::from(self.node_type.as_str()));
        m.insert("properties".into(), Value::Object(self.properties.clone()));
        m.insert("created_at".into(), Value::from(self.created_at.as_str()));
        m.insert("updated_at".into(), Value::from(self.updated_at.as_str()));
        m.insert("created_seq".into(), Value::from(self.created_seq.0));
        m.insert("updated_seq".into(), Value::from(self.updated_seq.0));
        Value::Object(m)
    }
}

/// Borrowed API form of a [`Node`] (see [`Node::api_view`]). Added to the model
/// because the HTTP layer and the tests both need the one node JSON shape.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct NodeApi<'a> {
    pub node_id: &'a str,
    pub node_type: &'a str,
    pub properties: &'a Properties,
    pub created_at: &'a str,
    pub updated_at: &'a str,
    pub created_seq: Seq,
    pub updated_seq: Seq,
}

/// An edge as stored. Its id is `from:TYPE:to` (see [`edge_id`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Edge {
    pub edge_type: String,
    pub from: String,
    pub to: String,
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
        id: String,
        node_type: String,
        properties: Properties,
    },
    /// Shallow-merge into an existing node of `node_type`; create it only if
    /// `create_if_absent`. A node of another type fails the event.
    MergeNode {
        id: String,
        node_type: String,
        properties: Properties,
        create_if_absent: bool,
    },
    /// Delete the node and every edge touching it; no-op if absent.
    DeleteNode { id: String },
    /// Create or replace the edge `from:TYPE:to`.
    PutEdge {
        edge_type: String,
        from: String,
        to: String,
        properties: Properties,
    },
    /// Delete the edge; no-op if absent.
    DeleteEdge {
        edge_type: String,
        from: String,
        to: String,
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
