//! Attempts: the newest-first list (from the graph's creation index, paged by
//! cursor) and one attempt's detail: its node, the events that name it (from
//! the log's attempt index) and the artifacts and pull requests it PRODUCED.

use super::ViewError;
use crate::graph::{Direction, GraphStore, Node};
use crate::log::{Log, View};
use crate::schema::{ARTIFACT, ATTEMPT, PRODUCED, PULL_REQUEST};
use crate::seq::Seq;
use crate::wire::{AttemptDetail, AttemptItem, AttemptsPage};
use serde_json::Value;

/// Most events and produced nodes one detail lists.
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
/// its budget (`graph::NEWEST_SCAN_BUDGET`).
pub fn list(
    graph: &GraphStore,
    target: Option<&str>,
    cursor: Option<&str>,
    limit: usize,
) -> Result<AttemptsPage, ViewError> {
    let page = graph.newest_nodes(ATTEMPT, cursor, limit, |n| match target {
        Some(t) => n.properties.get("target_id").and_then(Value::as_str) == Some(t),
        None => true,
    })?;
    let attempts: Vec<AttemptItem> = page.items.into_iter().map(list_item).collect();
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

/// One attempt. As the original did, an id that events name but that has no
/// Attempt node (e.g. `attempt.started` without `attempt.created`) answers
/// with `attempt_node: null` and those events; an id nothing names is `NotFound`.
/// With `as_of_seq` (`GET /v1/attempts/{id}?as_of_seq=N`), the same answer as
/// it stood right after seq N: the node and the PRODUCED edges and nodes from
/// the graph's history index, the events up to N.
pub fn detail(
    log: &Log,
    graph: &GraphStore,
    id: &str,
    as_of_seq: Option<u64>,
) -> Result<AttemptDetail, ViewError> {
    // One view for the node, its events and what it produced.
    let view = log.view();
    let as_of = as_of_seq
        .map(|n| super::history::check_as_of(graph, &view, n))
        .transpose()?;
    let node = attempt_node_at(graph, &view, id, as_of)?;
    let mut events = log.by_attempt_at(&view, id, DETAIL_MAX)?;
    if let Some(n) = as_of {
        events.retain(|e| e.seq <= n);
    }
    if node.is_none() && events.is_empty() {
        return Err(ViewError::NotFound(format!("no attempt with id {id:?}")));
    }
    let mut artifacts = Vec::new();
    let mut pull_requests = Vec::new();
    // Edges may point from an id with no node yet (an artifact reported
    // before its attempt): they are listed either way.
    let produced = match as_of {
        None => {
            graph
                .edges_at(
                    &view,
                    id,
                    Direction::Outgoing,
                    Some(PRODUCED),
                    None,
                    DETAIL_MAX,
                )?
                .items
        }
        Some(n) => graph.out_edges_as_of(&view, id, PRODUCED, n, DETAIL_MAX)?,
    };
    for e in produced {
        if let Some(n) = node_at(graph, &view, &e.to, as_of)? {
            match n.node_type.as_str() {
                ARTIFACT => artifacts.push(n.into()),
                PULL_REQUEST => pull_requests.push(n.into()),
                _ => {}
            }
        }
    }
    Ok(AttemptDetail {
        attempt_node: node.map(Into::into),
        events: events.into_iter().map(Into::into).collect(),
        artifacts,
        pull_requests,
    })
}
