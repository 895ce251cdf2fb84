//! Graph reads: the summary (from counters), node listing and lookup, a node's
//! edges, and the projection's state. Everything here reads committed state.

use super::error::ApiError;
use super::{blocking, AppState, Params};
use crate::graph::query::{Page, TypeCounts, MAX_PAGE_LIMIT};
use crate::graph::{Direction, GraphError};
use crate::log::record::StoredEvent;
use axum::extract::{Path, RawQuery, State};
use axum::Json;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::{json, Value};

impl From<GraphError> for ApiError {
    fn from(e: GraphError) -> ApiError {
        match e {
            GraphError::BadCursor => ApiError::invalid_query(
                "invalid cursor: pass back the next_cursor of the same query unchanged",
            ),
            GraphError::Storage(e) => ApiError::storage("reading the graph failed", e),
            other => ApiError::internal("reading the graph failed", other),
        }
    }
}

/// Type counts as a JSON object whose keys keep the summary order.
struct Ordered(TypeCounts);

impl Serialize for Ordered {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

#[derive(Serialize)]
struct RecentEvent {
    event_id: String,
    timestamp: String,
    event_type: String,
    actor_id: Option<String>,
    target: Value,
    attempt_id: Value,
}

impl From<StoredEvent> for RecentEvent {
    fn from(e: StoredEvent) -> RecentEvent {
        let p = e.payload_value();
        RecentEvent {
            target: p.get("target_id").cloned().unwrap_or(Value::Null),
            attempt_id: p.get("attempt_id").cloned().unwrap_or(Value::Null),
            event_id: e.event_id,
            timestamp: e.timestamp,
            event_type: e.event_type,
            actor_id: e.actor_id,
        }
    }
}

#[derive(Serialize)]
pub struct Summary {
    nodes_by_type: Ordered,
    edges_by_type: Ordered,
    recent_events: Vec<RecentEvent>,
}

/// `GET /v1/graph/summary`: counts from counters, the last 20 events newest first.
pub async fn summary(State(app): State<AppState>) -> Result<Json<Summary>, ApiError> {
    blocking(move || {
        // By key for the set's declared types: the only types the graph can
        // hold (GraphStore::counts_of), at a cost independent of the log's size.
        let infos = app.projectors.projectors();
        let (nodes, edges) = app.graph.counts_of(
            infos
                .iter()
                .flat_map(|p| p.node_types.iter().map(String::as_str)),
            infos
                .iter()
                .flat_map(|p| p.edge_types.iter().map(String::as_str)),
        )?;
        let recent = app.log.recent(20)?;
        Ok(Json(Summary {
            nodes_by_type: Ordered(nodes),
            edges_by_type: Ordered(edges),
            recent_events: recent.into_iter().map(RecentEvent::from).collect(),
        }))
    })
    .await
}

fn limit(p: &Params, default: u64) -> Result<usize, ApiError> {
    Ok(p.int("limit", default, 1, MAX_PAGE_LIMIT as u64)? as usize)
}

/// `GET /v1/graph/nodes?type=&limit=&cursor=`
pub async fn nodes(
    State(app): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let p = Params::from_query(q.as_deref())?;
    let limit = limit(&p, 100)?;
    let node_type = p.str("type").map(str::to_string);
    let cursor = p.str("cursor").map(str::to_string);
    blocking(move || {
        let page: Page<_> = app
            .graph
            .list_nodes(node_type.as_deref(), cursor.as_deref(), limit)?;
        let nodes: Vec<_> = page.items.iter().map(|n| n.api_view()).collect();
        Ok(Json(
            json!({"nodes": nodes, "count": nodes.len(), "next_cursor": page.next_cursor}),
        ))
    })
    .await
}

/// `GET /v1/graph/nodes/{id}`
pub async fn node(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    blocking(move || match app.graph.get_node(&id)? {
        Some(n) => Ok(Json(
            serde_json::to_value(n.api_view()).expect("serializable"),
        )),
        None => Err(ApiError::not_found(format!("no node with id {id:?}"))),
    })
    .await
}

/// `GET /v1/graph/nodes/{id}/edges?direction=out|in|both&type=&limit=&cursor=`
pub async fn edges(
    State(app): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let p = Params::from_query(q.as_deref())?;
    let limit = limit(&p, 100)?;
    let dir = match p.str("direction").unwrap_or("both") {
        "out" | "outgoing" => Direction::Outgoing,
        "in" | "incoming" => Direction::Incoming,
        "both" => Direction::Both,
        other => {
            return Err(ApiError::invalid_query(format!(
                "direction must be out, in or both, got {other:?}"
            )))
        }
    };
    let edge_type = p.str("type").map(str::to_string);
    let cursor = p.str("cursor").map(str::to_string);
    blocking(move || {
        let page = app.graph.edges(&id, dir, edge_type.as_deref(), cursor.as_deref(), limit)?;
        let edges: Vec<Value> = page
            .items
            .iter()
            .map(|e| {
                json!({
                    "edge_id": crate::graph::edge_id(&e.from, &e.edge_type, &e.to),
                    "edge_type": e.edge_type, "from_node": e.from, "to_node": e.to,
                    "properties": e.properties, "created_seq": e.created_seq,
                })
            })
            .collect();
        Ok(Json(json!({"node_id": id, "edges": edges, "count": edges.len(), "next_cursor": page.next_cursor})))
    })
    .await
}

/// `GET /v1/projection`: the projector set, the last applied seq and the state digest.
pub async fn projection(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let (seq, digest) = app.graph.state()?;
        let head = app.log.head()?;
        let projectors: Vec<Value> = app
            .projectors
            .projectors()
            .iter()
            .map(|p| {
                json!({"name": p.name, "version": p.version, "digest": p.digest, "handles": p.handles,
                       "node_types": p.node_types, "edge_types": p.edge_types})
            })
            .collect();
        Ok(Json(json!({
            "projectors": projectors, "fingerprint": app.fingerprint,
            "applied_seq": seq, "state_digest": digest, "log_head_seq": head.seq,
        })))
    })
    .await
}
