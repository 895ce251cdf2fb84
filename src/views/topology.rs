//! Topology, as the original control plane's indexer reported it: the latest
//! `topo.indexed` summary of a target, and the areas, subsystems and
//! dependencies of its latest indexing run (its `commit_sha`; the original
//! accumulated every run). Answered from the log's event-type index.
//!
//! These reads walk the whole index range of their event type (never a log
//! scan, and never cut off at a budget): their cost grows with the number of
//! topology events of that type, not with the log.

use super::ViewError;
use crate::log::record::StoredEvent;
use crate::log::{Log, View};
use crate::wire::{TopologyList, TopologySummary};
use serde_json::{json, Map, Value};

/// The list kinds and the event type each is read from.
pub const KINDS: [(&str, &str); 3] = [
    ("areas", "topo.area.discovered"),
    ("subsystems", "topo.subsystem.discovered"),
    ("dependencies", "topo.dependency.discovered"),
];

/// An event with its parsed payload.
type WithPayload = (StoredEvent, Map<String, Value>);

/// Events of `event_type` whose `payload.target_id` is `target`, in log order.
fn events_for(
    log: &Log,
    v: &View,
    event_type: &str,
    target: &str,
) -> Result<Vec<WithPayload>, ViewError> {
    let mut out = Vec::new();
    for seq in log.seqs_by_type_desc_at(v, event_type, None) {
        let Some(e) = log.get_at(v, seq?)? else {
            continue;
        };
        let p = e.payload_value();
        if p.get("target_id").and_then(Value::as_str) == Some(target) {
            out.push((e, p));
        }
    }
    out.reverse();
    Ok(out)
}

/// The latest `topo.indexed` of a target: greatest timestamp, the first in log order on a tie.
fn latest_index(
    log: &Log,
    v: &View,
    target: &str,
) -> Result<Option<Map<String, Value>>, ViewError> {
    let mut best: Option<(String, Map<String, Value>)> = None;
    for (e, p) in events_for(log, v, "topo.indexed", target)? {
        if best.as_ref().is_none_or(|(ts, _)| e.timestamp > *ts) {
            best = Some((e.timestamp, p));
        }
    }
    Ok(best.map(|(_, p)| p))
}

/// The latest indexing run's counts; `NotFound` if the target was never indexed.
pub fn summary(log: &Log, target: &str) -> Result<TopologySummary, ViewError> {
    let Some(p) = latest_index(log, &log.view(), target)? else {
        return Err(ViewError::NotFound(format!(
            "no topology data found for target {target}"
        )));
    };
    let count = |k: &str| {
        p.get(k)
            .cloned()
            .filter(|v| !v.is_null())
            .unwrap_or(json!(0))
    };
    Ok(TopologySummary {
        target_id: target.to_owned(),
        commit_sha: p.get("commit_sha").cloned().unwrap_or(Value::Null),
        areas_count: count("areas_count"),
        subsystems_count: count("subsystems_count"),
        dependencies_count: count("dependencies_count"),
        flows_count: 0,
    })
}

/// The payloads of one list kind (see [`KINDS`]) from the latest run, in log
/// order; `None` for an unknown kind.
pub fn list(log: &Log, kind: &str, target: &str) -> Result<Option<TopologyList>, ViewError> {
    let Some((_, event_type)) = KINDS.iter().find(|(k, _)| *k == kind) else {
        return Ok(None);
    };
    let view = log.view();
    let latest_commit =
        latest_index(log, &view, target)?.and_then(|p| p.get("commit_sha").cloned());
    let items: Vec<Value> = events_for(log, &view, event_type, target)?
        .into_iter()
        .filter(|(_, p)| latest_commit.is_none() || p.get("commit_sha") == latest_commit.as_ref())
        .map(|(_, p)| Value::Object(p))
        .collect();
    Ok(Some(TopologyList {
        kind: kind.to_owned(),
        items,
        target_id: target.to_owned(),
    }))
}
