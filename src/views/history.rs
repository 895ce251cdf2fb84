//! Node history and as-of reads (`GET /v1/graph/nodes/{id}/history`,
//! `?as_of_seq=N` on a node and an attempt), answered from the graph's
//! history index (`graph::history`) through one snapshot, without a replay.

use super::ViewError;
use crate::graph::{GraphStore, Node};
use crate::log::{Log, View};
use crate::seq::Seq;
use crate::wire::{NodeChange, NodeHistoryPage};

/// `as_of_seq` checked against the snapshot: a seq the history covers, at
/// most the graph's applied seq. `Seq(0)` (before the first event) is valid:
/// nothing existed then.
pub fn check_as_of(graph: &GraphStore, view: &View, as_of: u64) -> Result<Seq, ViewError> {
    let (head, _) = graph.state_at(view)?;
    if as_of > head.0 {
        return Err(ViewError::BadQuery(format!(
            "as_of_seq {as_of} is beyond the graph's head (seq {head})"
        )));
    }
    let from = graph.history_from_at(view)?;
    if as_of > 0 && as_of < from.0 {
        return Err(ViewError::BadQuery(format!(
            "the history index starts at seq {from} (the store predates it): run `leviathan \
             rebuild` to index seqs before it"
        )));
    }
    Ok(Seq(as_of))
}

/// The node `id` right after `as_of` (already checked).
pub fn node_as_of(
    graph: &GraphStore,
    view: &View,
    id: &str,
    as_of: Seq,
) -> Result<Node, ViewError> {
    graph
        .node_as_of(view, id, as_of)?
        .ok_or_else(|| ViewError::NotFound(format!("no node with id {id:?} at seq {as_of}")))
}

/// One page of the changes of node `id`, oldest first, at most `limit` and
/// stopping once the changes hold `max_bytes` (at least one; each change
/// carries the whole node, `next_cursor` continues). A node that never
/// existed has an empty history (not a 404: an id may be created later).
/// Each change names the event that caused it: the log's at its seq (read
/// through the same view), unless the record names it (records written
/// before session 28).
pub fn node_history(
    log: &Log,
    graph: &GraphStore,
    id: &str,
    cursor: Option<&str>,
    limit: usize,
    max_bytes: usize,
) -> Result<NodeHistoryPage, ViewError> {
    let view = log.view();
    let page = graph
        .node_history_bounded_at(&view, id, cursor, limit, max_bytes)
        .map_err(|e| match e {
            crate::graph::GraphError::BadCursor => ViewError::BadCursor,
            e => e.into(),
        })?;
    let mut changes: Vec<NodeChange> = Vec::with_capacity(page.changes.len());
    // The last event read from the log: an event's changes are adjacent.
    let mut read: Option<(Seq, String, String)> = None;
    for c in page.changes {
        let (event_id, event_type) = match (c.event_id, c.event_type) {
            (Some(id), Some(t)) => (id, t),
            _ => {
                if read.as_ref().is_none_or(|(seq, ..)| *seq != c.seq) {
                    let e = log.get_at(&view, c.seq)?.ok_or_else(|| {
                        crate::graph::GraphError::corrupt(
                            "history record (its seq is not in the log)",
                            &c.seq.to_key(),
                        )
                    })?;
                    read = Some((c.seq, e.event_id, e.event_type));
                }
                let (_, id, t) = read.as_ref().expect("read above");
                (id.clone(), t.clone())
            }
        };
        changes.push(NodeChange {
            seq: c.seq,
            ord: c.ord,
            event_id,
            event_type,
            projector: c.projector,
            op: c.op,
            node: c.node.flatten().map(Into::into),
        });
    }
    Ok(NodeHistoryPage {
        node_id: id.to_owned(),
        count: changes.len(),
        changes,
        next_cursor: page.next_cursor,
        history_from: graph.history_from_at(&view)?,
    })
}
