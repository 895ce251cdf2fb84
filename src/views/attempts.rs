//! Attempts: the newest-first list (from the graph's creation index, paged by
//! cursor) and one attempt's detail: its node, the events that name it (from
//! the log's attempt index) and the artifacts and pull requests it PRODUCED.

use super::ViewError;
use crate::graph::query::json_len;
use crate::graph::{Direction, GraphStore, Node};
use crate::log::{Log, View};
use crate::schema::{ARTIFACT, ATTEMPT, PRODUCED, PULL_REQUEST};
use crate::seq::Seq;
use crate::wire::{AttemptDetail, AttemptEvent, AttemptItem, AttemptsPage};
use serde::Serialize;
use serde_json::Value;

/// Most events and produced nodes one detail lists (the newest events, and
/// the nodes of the first PRODUCED edges; the answer says when it cut).
pub const DETAIL_MAX: usize = 10_000;

fn prop(n: &Node, key: &str) -> Value {
    n.properties.get(key).cloned().unwrap_or(Value::Null)
}

fn list_item(n: Node) -> AttemptItem {
    AttemptItem {
        task_id: prop(&n, "task_id"),
        target: prop(&n, "target_id"),
        status: prop(&n, "status"),
        timestamp: n
            .properties
            .get("created_at")
            .cloned()
            .unwrap_or_else(|| Value::from(n.created_at.clone())),
        pr_url: prop(&n, "pr_url"),
        pr_number: prop(&n, "pr_number"),
        created_seq: n.created_seq,
        updated_seq: n.updated_seq,
        attempt_id: n.id.into_string(),
    }
}

/// Attempts newest first, of `target` when given. A page may hold fewer than
/// `limit` attempts and still carry a `next_cursor` when the scan stopped at
/// its budget (`graph::NEWEST_SCAN_BUDGET`) or once its items hold
/// `max_bytes` of JSON (at least one item: their fields come from payloads
/// of up to 1 MiB).
pub fn list(
    graph: &GraphStore,
    target: Option<&str>,
    cursor: Option<&str>,
    limit: usize,
    max_bytes: usize,
) -> Result<AttemptsPage, ViewError> {
    let page = graph.newest_items(ATTEMPT, cursor, limit, max_bytes, |n| {
        let kept = match target {
            Some(t) => n.properties.get("target_id").and_then(Value::as_str) == Some(t),
            None => true,
        };
        kept.then(|| {
            let item = list_item(n);
            let size = json_len(&item);
            (item, size)
        })
    })?;
    let attempts: Vec<AttemptItem> = page.items;
    Ok(AttemptsPage {
        count: attempts.len(),
        attempts,
        next_cursor: page.next_cursor,
    })
}

/// The Attempt node `id`: `Ok(None)` when no node has that id, `NotFound`
/// when a node of another type has it.
pub fn attempt_node(graph: &GraphStore, id: &str) -> Result<Option<Node>, ViewError> {
    attempt_node_at(graph, &graph.view(), id, None)
}

/// The node `id` now (`as_of` `None`) or right after `as_of` (from the
/// history index).
fn node_at(
    graph: &GraphStore,
    v: &View,
    id: &str,
    as_of: Option<Seq>,
) -> Result<Option<Node>, ViewError> {
    Ok(match as_of {
        None => graph.get_node_at(v, id)?,
        Some(seq) => graph.node_as_of(v, id, seq)?,
    })
}

fn attempt_node_at(
    graph: &GraphStore,
    v: &View,
    id: &str,
    as_of: Option<Seq>,
) -> Result<Option<Node>, ViewError> {
    match node_at(graph, v, id, as_of)? {
        Some(n) if n.node_type == ATTEMPT => Ok(Some(n)),
        Some(n) => Err(ViewError::NotFound(format!(
            "{id:?} is a {} node, not an attempt",
            n.node_type
        ))),
        None => Ok(None),
    }
}

/// `GET /v1/attempts/{id}`: the detail, and what its byte budget (or its
/// cap of [`DETAIL_MAX`] events and produced nodes) left out. Each marker is
/// in the answer only when something was left out, so an attempt under the
/// budget answers exactly the detail.
#[derive(Debug, Clone, Serialize)]
pub struct DetailPage {
    #[serde(flatten)]
    pub detail: AttemptDetail,
    /// Older events were left out: `events` holds the newest ones (those
    /// that say how the attempt ended), oldest first.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub events_truncated: bool,
    /// With `events_truncated`: pass it back as `events_before_seq` for the
    /// events before the oldest one listed (the seq of that event).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_events_before_seq: Option<Seq>,
    /// Some PRODUCED nodes were not read: `artifacts` and `pull_requests`
    /// hold those of the first PRODUCED edges, in the order of the edges'
    /// `to` (`GET /v1/graph/nodes/{id}/edges?direction=out&type=PRODUCED`
    /// lists every one).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub produced_truncated: bool,
}

/// One attempt. As the original did, an id that events name but that has no
/// Attempt node (e.g. `attempt.started` without `attempt.created`) answers
/// with `attempt_node: null` and those events; an id nothing names is `NotFound`.
/// With `as_of_seq` (`GET /v1/attempts/{id}?as_of_seq=N`), the same answer as
/// it stood right after seq N: the node and the PRODUCED edges and nodes from
/// the graph's history index, the events up to N.
///
/// The answer is built whole in memory, and payloads (so events and node
/// properties) may be 1 MiB each: it stops once it holds about `max_bytes`
/// of JSON. The node comes first, then the events, newest first (at least
/// one), below `events_before` when given, at most [`DETAIL_MAX`] (listed
/// oldest first), then the produced nodes in edge order while the budget
/// lasts; [`DetailPage`] says what was left out.
pub fn detail(
    log: &Log,
    graph: &GraphStore,
    id: &str,
    as_of_seq: Option<u64>,
    events_before: Option<Seq>,
    max_bytes: usize,
) -> Result<DetailPage, ViewError> {
    // One view for the node, its events and what it produced.
    let view = log.view();
    let as_of = as_of_seq
        .map(|n| super::history::check_as_of(graph, &view, n))
        .transpose()?;
    let node = attempt_node_at(graph, &view, id, as_of)?;
    let attempt_node: Option<crate::wire::Node> = node.map(Into::into);
    let mut bytes = json_len(&attempt_node);
    // The events up to `as_of` (below the seq after it), and below
    // `events_before`.
    let through = as_of.map(|n| Seq(n.0.saturating_add(1)));
    let upper = match (through, events_before) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let mut events: Vec<AttemptEvent> = Vec::new();
    let mut next_events_before_seq = None;
    for seq in log.seqs_by_attempt_desc_at(&view, id, upper) {
        let seq = seq?;
        if events.len() == DETAIL_MAX || (bytes >= max_bytes && !events.is_empty()) {
            next_events_before_seq = events.last().map(|e| e.seq);
            break;
        }
        if let Some(e) = log.get_at(&view, seq)? {
            let e = AttemptEvent::from(e);
            bytes = bytes.saturating_add(json_len(&e));
            events.push(e);
        }
    }
    events.reverse();
    if attempt_node.is_none() && events.is_empty() {
        // Below `events_before` there may be none left, yet events name it.
        let named = events_before.is_some()
            && log
                .seqs_by_attempt_desc_at(&view, id, through)
                .next()
                .transpose()?
                .is_some();
        if !named {
            return Err(ViewError::NotFound(format!("no attempt with id {id:?}")));
        }
    }
    let mut artifacts = Vec::new();
    let mut pull_requests = Vec::new();
    // Edges may point from an id with no node yet (an artifact reported
    // before its attempt): they are listed either way.
    let (produced, mut produced_truncated) = match as_of {
        None => {
            let page = graph.edges_at(
                &view,
                id,
                Direction::Outgoing,
                Some(PRODUCED),
                None,
                DETAIL_MAX,
                usize::MAX,
            )?;
            (page.items, page.next_cursor.is_some())
        }
        Some(n) => {
            let mut edges = graph.out_edges_as_of(&view, id, PRODUCED, n, DETAIL_MAX + 1)?;
            let more = edges.len() > DETAIL_MAX;
            edges.truncate(DETAIL_MAX);
            (edges, more)
        }
    };
    for e in produced {
        if bytes >= max_bytes {
            produced_truncated = true;
            break;
        }
        if let Some(n) = node_at(graph, &view, &e.to, as_of)? {
            let list = match n.node_type.as_str() {
                ARTIFACT => &mut artifacts,
                PULL_REQUEST => &mut pull_requests,
                _ => continue,
            };
            let n = crate::wire::Node::from(n);
            bytes = bytes.saturating_add(json_len(&n));
            list.push(n);
        }
    }
    Ok(DetailPage {
        detail: AttemptDetail {
            attempt_node,
            events,
            artifacts,
            pull_requests,
        },
        events_truncated: next_events_before_seq.is_some(),
        next_events_before_seq,
        produced_truncated,
    })
}
