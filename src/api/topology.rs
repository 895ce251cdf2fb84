//! Topology routes of the original control plane, answered from the log's
//! event-type index: the latest `topo.indexed` summary of a target and the
//! areas, subsystems and dependencies its indexer reported. Unlike the
//! original, the lists hold only the latest indexing run (its `commit_sha`),
//! not every run ever ingested.

use super::error::ApiError;
use super::{blocking, AppState, Params};
use crate::log::record::StoredEvent;
use crate::log::Log;
use axum::extract::{Path, RawQuery, State};
use axum::Json;
use serde_json::{json, Map, Value};

/// Most index entries one request examines.
const SCAN_BUDGET: usize = 100_000;

fn target_param(q: Option<&str>) -> Result<String, ApiError> {
    Params::from_query(q)?
        .str("target")
        .map(str::to_string)
        .ok_or_else(|| {
            ApiError::invalid_query("query parameter `target` is required (the target id)")
        })
}

/// An event with its parsed payload.
type WithPayload = (StoredEvent, Map<String, Value>);

/// Events of `event_type` whose `payload.target_id` is `target`, in log order.
fn events_for(log: &Log, event_type: &str, target: &str) -> Result<Vec<WithPayload>, ApiError> {
    let mut out = Vec::new();
    for seq in log.seqs_by_type_desc(event_type, None).take(SCAN_BUDGET) {
        let Some(e) = log.get(seq?)? else { continue };
        let p = e.payload_value();
        if p.get("target_id").and_then(Value::as_str) == Some(target) {
            out.push((e, p));
        }
    }
    out.reverse();
    Ok(out)
}

/// The latest `topo.indexed` of a target: greatest timestamp, the first in log order on a tie.
fn latest_index(log: &Log, target: &str) -> Result<Option<Map<String, Value>>, ApiError> {
    let mut best: Option<(String, Map<String, Value>)> = None;
    for (e, p) in events_for(log, "topo.indexed", target)? {
        if best.as_ref().is_none_or(|(ts, _)| e.timestamp > *ts) {
            best = Some((e.timestamp, p));
        }
    }
    Ok(best.map(|(_, p)| p))
}

/// `GET /v1/topology/summary?target=`
pub async fn summary(
    State(app): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let target = target_param(q.as_deref())?;
    blocking(move || {
        let Some(p) = latest_index(&app.log, &target)? else {
            return Err(ApiError::not_found(format!(
                "no topology data found for target {target}"
            )));
        };
        let count = |k: &str| {
            p.get(k)
                .cloned()
                .filter(|v| !v.is_null())
                .unwrap_or(json!(0))
        };
        Ok(Json(json!({
            "target_id": target,
            "commit_sha": p.get("commit_sha").cloned().unwrap_or(Value::Null),
            "areas_count": count("areas_count"),
            "subsystems_count": count("subsystems_count"),
            "dependencies_count": count("dependencies_count"),
            "flows_count": 0,
        })))
    })
    .await
}

/// `GET /v1/topology/{areas|subsystems|dependencies}?target=`
pub async fn list(
    State(app): State<AppState>,
    Path(kind): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let event_type = match kind.as_str() {
        "areas" => "topo.area.discovered",
        "subsystems" => "topo.subsystem.discovered",
        "dependencies" => "topo.dependency.discovered",
        _ => {
            return Err(ApiError::not_found(
                "no such route; topology lists are areas, subsystems and dependencies",
            ))
        }
    };
    let target = target_param(q.as_deref())?;
    blocking(move || {
        let latest_commit =
            latest_index(&app.log, &target)?.and_then(|p| p.get("commit_sha").cloned());
        let items: Vec<Value> = events_for(&app.log, event_type, &target)?
            .into_iter()
            .filter(|(_, p)| {
                latest_commit.is_none() || p.get("commit_sha") == latest_commit.as_ref()
            })
            .map(|(_, p)| Value::Object(p))
            .collect();
        Ok(Json(json!({ "target_id": target, kind: items })))
    })
    .await
}
