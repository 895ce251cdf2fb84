//! Topology, as the original control plane's indexer reported it: the latest
//! `topo.indexed` summary of a target, and the areas, subsystems and
//! dependencies of its latest indexing run (its `commit_sha`; the original
//! accumulated every run). Answered from the log's index of topology events
//! by type and target (`log_by_target`).
//!
//! These reads walk the requested target's events of their type (never a
//! log scan, and never cut off at a scan budget), one event at a time: their
//! cost grows with that target's topology events of that type, not with the
//! log or other targets'. A list's answer stops at a byte budget, saying so
//! (`truncated`, with a `next_cursor`).

use super::ViewError;
use crate::graph::query::json_len;
use crate::log::record::StoredEvent;
use crate::log::{Log, View};
use crate::seq::Seq;
use crate::wire::{TopologyList, TopologySummary};
use serde::Serialize;
use serde_json::{json, Map, Value};

/// The list kinds and the event type each is read from.
pub const KINDS: [(&str, &str); 3] = [
    ("areas", "topo.area.discovered"),
    ("subsystems", "topo.subsystem.discovered"),
    ("dependencies", "topo.dependency.discovered"),
];

/// The events of `event_type` whose `payload.target_id` is `target`, newest
/// first, each with its parsed payload, read one at a time (payloads may be
/// 1 MiB each: the caller keeps what it needs).
fn events_for<'a>(
    log: &'a Log,
    v: &'a View,
    event_type: &str,
    target: &'a str,
) -> impl Iterator<Item = Result<(StoredEvent, Map<String, Value>), ViewError>> + 'a {
    log.seqs_by_target_desc_at(v, event_type, target, None)
        .filter_map(move |seq| {
            if let Err(c) = crate::cancel::check() {
                return Some(Err(c.into()));
            }
            let e = match seq.and_then(|seq| log.get_at(v, seq)) {
                Ok(Some(e)) => e,
                Ok(None) => return None,
                Err(e) => return Some(Err(e.into())),
            };
            let p = e.payload_value();
            (p.get("target_id").and_then(Value::as_str) == Some(target)).then_some(Ok((e, p)))
        })
}

/// The latest `topo.indexed` of a target: greatest timestamp, the first in log order on a tie.
fn latest_index(
    log: &Log,
    v: &View,
    target: &str,
) -> Result<Option<Map<String, Value>>, ViewError> {
    let mut best: Option<(String, Map<String, Value>)> = None;
    // Newest first: on a tie the one read later is the earlier in log order.
    for found in events_for(log, v, "topo.indexed", target) {
        let (e, p) = found?;
        if best.as_ref().is_none_or(|(ts, _)| e.timestamp >= *ts) {
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

/// `GET /v1/topology/{kind}`: the list, and where it stopped when it
/// reached its byte budget (both markers only then, so a list under the
/// budget answers exactly the list).
#[derive(Debug, Clone, Serialize)]
pub struct ListPage {
    #[serde(flatten)]
    pub list: TopologyList,
    /// The list stopped at its byte budget: more items follow.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// With `truncated`: pass it back as `cursor` for the items after the
    /// last one listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A cursor is the seq of the last item listed, in decimal.
fn parse_cursor(cursor: &str) -> Result<Seq, ViewError> {
    match cursor.parse::<u64>() {
        Ok(s) if s > 0 => Ok(Seq(s)),
        _ => Err(ViewError::BadCursor),
    }
}

/// The payloads of one list kind (see [`KINDS`]) from the latest run, in log
/// order, after `cursor` when given; `None` for an unknown kind. The answer
/// is built whole in memory and payloads may be 1 MiB each: it stops once
/// its items hold `max_bytes` of JSON (at least one item), `truncated`, with
/// a `next_cursor` to continue from. The matching events are found first
/// (holding only their seqs), then the listed ones read again.
pub fn list(
    log: &Log,
    kind: &str,
    target: &str,
    cursor: Option<&str>,
    max_bytes: usize,
) -> Result<Option<ListPage>, ViewError> {
    let Some((_, event_type)) = KINDS.iter().find(|(k, _)| *k == kind) else {
        return Ok(None);
    };
    let after = cursor.map(parse_cursor).transpose()?;
    let view = log.view();
    let latest_commit =
        latest_index(log, &view, target)?.and_then(|p| p.get("commit_sha").cloned());
    let in_run = |p: &Map<String, Value>| {
        latest_commit.is_none() || p.get("commit_sha") == latest_commit.as_ref()
    };
    let mut seqs = Vec::new();
    for found in events_for(log, &view, event_type, target) {
        let (e, p) = found?;
        if after.is_some_and(|a| e.seq <= a) {
            break;
        }
        if in_run(&p) {
            seqs.push(e.seq);
        }
    }
    let mut items = Vec::new();
    let mut bytes = 0usize;
    let mut next_cursor = None;
    let mut last = None;
    // Oldest first.
    for seq in seqs.into_iter().rev() {
        if bytes >= max_bytes && !items.is_empty() {
            next_cursor = last.map(|s: Seq| s.0.to_string());
            break;
        }
        let Some(e) = log.get_at(&view, seq)? else {
            continue;
        };
        let item = Value::Object(e.payload_value());
        bytes = bytes.saturating_add(json_len(&item));
        items.push(item);
        last = Some(seq);
    }
    Ok(Some(ListPage {
        list: TopologyList {
            kind: kind.to_owned(),
            items,
            target_id: target.to_owned(),
        },
        truncated: next_cursor.is_some(),
        next_cursor,
    }))
}
