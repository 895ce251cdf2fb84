//! `GET /v1/failures?target=&limit=`: failed attempts, tasks and test runs,
//! newest first, read from the event-type index (never a log scan).

use super::error::ApiError;
use super::{blocking, AppState, Params};
use crate::log::record::StoredEvent;
use crate::log::Log;
use crate::seq::Seq;
use axum::extract::{RawQuery, State};
use axum::Json;
use serde::Serialize;
use serde_json::{Map, Value};

/// The event types that count as failures.
pub const FAILURE_TYPES: [&str; 3] = ["attempt.failed", "task.failed", "tests.failed"];
/// Most index entries one request looks at when filtering by target.
const SCAN_BUDGET: usize = 100_000;

#[derive(Serialize)]
pub struct Failure {
    pub attempt_id: Option<Value>,
    pub task_id: Option<Value>,
    pub target: Option<Value>,
    pub error: Option<Value>,
    pub failure_type: Option<Value>,
    pub timestamp: String,
    pub event_type: String,
    pub event_id: String,
    pub seq: Seq,
}

#[derive(Serialize)]
pub struct Failures {
    pub failures: Vec<Failure>,
    pub count: usize,
}

/// First non-empty value among `keys`.
fn first_of(p: &Map<String, Value>, keys: &[&str]) -> Option<Value> {
    keys.iter()
        .filter_map(|k| p.get(*k))
        .find(|v| !(v.is_null() || v.as_str() == Some("")))
        .cloned()
}

fn to_failure(e: StoredEvent) -> Failure {
    let p = e.payload_value();
    let target = first_of(&p, &["target", "target_id"]).or(Some(Value::String(e.target.clone())));
    Failure {
        attempt_id: p.get("attempt_id").cloned(),
        task_id: p.get("task_id").cloned(),
        target,
        // The original read `error`/`reason`; emitters write `error_summary`.
        error: first_of(&p, &["error", "reason", "error_summary"]),
        failure_type: p.get("failure_type").cloned(),
        timestamp: e.timestamp,
        event_type: e.event_type,
        event_id: e.event_id,
        seq: e.seq,
    }
}

fn collect(log: &Log, target: Option<&str>, limit: usize) -> Result<Vec<Failure>, ApiError> {
    // Merge the per-type indexes newest first (by seq, i.e. append order).
    let mut iters: Vec<_> = FAILURE_TYPES
        .iter()
        .map(|t| log.seqs_by_type_desc(t, None).peekable())
        .collect();
    let mut out = Vec::new();
    let mut scanned = 0;
    while out.len() < limit && scanned < SCAN_BUDGET {
        let mut best: Option<(usize, Seq)> = None;
        for (i, it) in iters.iter_mut().enumerate() {
            if let Some(r) = it.peek() {
                let s = match r {
                    Ok(s) => *s,
                    Err(_) => {
                        return Err(it
                            .next()
                            .expect("peeked")
                            .expect_err("peeked an error")
                            .into())
                    }
                };
                if best.is_none_or(|(_, b)| s > b) {
                    best = Some((i, s));
                }
            }
        }
        let Some((i, seq)) = best else { break };
        iters[i].next();
        scanned += 1;
        let Some(e) = log.get(seq)? else { continue };
        let f = to_failure(e);
        if let Some(t) = target {
            if f.target.as_ref().and_then(Value::as_str) != Some(t) {
                continue;
            }
        }
        out.push(f);
    }
    Ok(out)
}

pub async fn failures(
    State(app): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Json<Failures>, ApiError> {
    let p = Params::from_query(q.as_deref())?;
    let limit = p.int("limit", 10, 1, 1000)? as usize;
    let target = p.str("target").map(str::to_string);
    blocking(move || {
        let failures = collect(&app.log, target.as_deref(), limit)?;
        Ok(Json(Failures {
            count: failures.len(),
            failures,
        }))
    })
    .await
}
