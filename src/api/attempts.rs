//! Attempts: the newest-first list, one attempt with its events and artifacts,
//! and invalidation, which appends an `attempt.invalidated` event through the
//! normal ingest path so that the graph changes only by projection.

use super::error::ApiError;
use super::ingest::read_json_body;
use super::{blocking, AppState, Params};
use crate::bundle;
use crate::graph::{Direction, Node};
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

const ATTEMPT: &str = "Attempt";

fn prop(n: &Node, key: &str) -> Value {
    n.properties.get(key).cloned().unwrap_or(Value::Null)
}

fn list_item(n: &Node) -> Value {
    json!({
        "attempt_id": n.id,
        "task_id": prop(n, "task_id"),
        "target": prop(n, "target_id"),
        "status": prop(n, "status"),
        "timestamp": n.properties.get("created_at").cloned().unwrap_or_else(|| Value::from(n.created_at.clone())),
        "pr_url": prop(n, "pr_url"),
        "pr_number": prop(n, "pr_number"),
        "created_seq": n.created_seq,
        "updated_seq": n.updated_seq,
    })
}

/// `GET /v1/attempts?target=&limit=10&cursor=`: newest first.
pub async fn list(
    State(app): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let p = Params::from_query(q.as_deref())?;
    let limit = p.int("limit", 10, 1, 1000)? as usize;
    let target = p.str("target").map(str::to_string);
    let cursor = p.str("cursor").map(str::to_string);
    blocking(move || {
        let page =
            app.graph
                .newest_nodes(ATTEMPT, cursor.as_deref(), limit, |n| match &target {
                    Some(t) => {
                        n.properties.get("target_id").and_then(Value::as_str) == Some(t.as_str())
                    }
                    None => true,
                })?;
        let attempts: Vec<Value> = page.items.iter().map(list_item).collect();
        Ok(Json(
            json!({"attempts": attempts, "count": attempts.len(), "next_cursor": page.next_cursor}),
        ))
    })
    .await
}

fn attempt_node(app: &AppState, id: &str) -> Result<Node, ApiError> {
    match app.graph.get_node(id)? {
        Some(n) if n.node_type == ATTEMPT => Ok(n),
        Some(n) => Err(ApiError::not_found(format!(
            "{id:?} is a {} node, not an attempt",
            n.node_type
        ))),
        None => Err(ApiError::not_found(format!("no attempt with id {id:?}"))),
    }
}

/// `GET /v1/attempts/{id}` → `{attempt_node, events, artifacts, pull_requests}`.
pub async fn show(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let node = attempt_node(&app, &id)?;
        let events: Vec<Value> = app
            .log
            .by_attempt(&id, 10_000)?
            .into_iter()
            .map(|e| {
                json!({"event_id": e.event_id, "event_type": e.event_type, "timestamp": e.timestamp,
                       "actor_id": e.actor_id, "payload": e.payload, "seq": e.seq})
            })
            .collect();
        let mut artifacts = Vec::new();
        let mut pull_requests = Vec::new();
        let produced = app
            .graph
            .edges(&id, Direction::Outgoing, Some("PRODUCED"), None, 10_000)?;
        for e in produced.items {
            if let Some(n) = app.graph.get_node(&e.to)? {
                let v = serde_json::to_value(n.api_view()).expect("serializable");
                match n.node_type.as_str() {
                    "Artifact" => artifacts.push(v),
                    "PullRequest" => pull_requests.push(v),
                    _ => {}
                }
            }
        }
        Ok(Json(json!({
            "attempt_node": node.api_view(),
            "events": events,
            "artifacts": artifacts,
            "pull_requests": pull_requests,
        })))
    })
    .await
}

#[derive(Deserialize)]
struct InvalidateBody {
    reason: String,
    #[serde(default)]
    actor_id: Option<String>,
}

/// `POST /v1/attempts/{id}/invalidate?dry_run=` with `{"reason": "..."}`.
pub async fn invalidate(
    State(app): State<AppState>,
    axum::Extension(principal): axum::Extension<crate::tokens::Principal>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let dry_run = Params::from_query(q.as_deref())?.bool("dry_run")?;
    let bytes = read_json_body(&headers, body, 64 * 1024).await?;
    let req: InvalidateBody = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            format!("the body must be {{\"reason\": \"<why>\"}}: {e}"),
        )
    })?;
    if req.reason.trim().is_empty() {
        return Err(ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "reason must not be empty: say why the attempt is invalidated",
        ));
    }
    let app2 = app.clone();
    let id2 = id.clone();
    let node = blocking(move || attempt_node(&app2, &id2)).await?;
    let now = chrono::Utc::now();
    let event_id = format!(
        "invalidation-{id}-{}.{:06}",
        now.timestamp(),
        now.timestamp_subsec_micros()
    );
    let event = json!({
        "event_id": event_id,
        "event_type": "attempt.invalidated",
        "timestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        // The actor is the name of the token that asked (docs/SECURITY.md); an
        // `actor_id` in the body is kept in the payload as `requested_by`.
        "actor_id": &*principal.name,
        "payload": match req.actor_id {
            Some(by) => json!({"attempt_id": id, "reason": req.reason, "requested_by": by}),
            None => json!({"attempt_id": id, "reason": req.reason}),
        },
    });
    let target = node
        .properties
        .get("target_id")
        .and_then(Value::as_str)
        .unwrap_or("leviathan")
        .to_string();
    if dry_run {
        return Ok(Json(json!({
            "dry_run": true, "status": "would_invalidate", "attempt_id": id,
            "current_status": prop(&node, "status"), "target": target, "event": event,
        })));
    }
    let body =
        json!({"target": target, "bundle_id": format!("bundle-{event_id}"), "events": [event]});
    let bundle = bundle::parse(
        &serde_json::to_vec(&body).expect("serializable"),
        &app.limits,
    )?;
    let appended = app.writer.append(bundle).await?;
    Ok(Json(json!({
        "status": "invalidated", "attempt_id": id, "event_id": event_id,
        "seq": appended.first_seq, "head_hash": appended.head.hash,
    })))
}
