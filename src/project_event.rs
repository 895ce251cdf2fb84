//! One event through a projector set into a staged graph: run every
//! projector that handles it, apply each one's ops with its ownership checked,
//! and apply each projector's error policy (`on_error`): a `reject` failure
//! refuses the event, a `record` failure drops that projector's ops and
//! records the error with the graph (folded into the state digest). The
//! writer (ingest) and `replay` (rebuild) both project through here, so a
//! rebuild records the same errors bit for bit; a background build of another
//! projector set can too (with [`Policy::RecordAll`]). It decides nothing
//! about bundles or batches, and never writes storage itself (the `Staging`
//! goes into the caller's batch).

use crate::graph::{Direction, Edge, ErrorRecord, GraphError, GraphView, Node, Op, Staging};
use crate::projection::{
    EventInput, Failure, Mode, Policy, Prepared, ProjectionError, ProjectorSet, Segment,
};

/// Why an event could not be projected.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// A projector whose failures are not recorded failed (or the host could
    /// not run it): the event is refused.
    #[error(transparent)]
    Projection(Box<ProjectionError>),
    /// The graph could not be read (or the event is out of order): not the
    /// event's fault.
    #[error(transparent)]
    Graph(GraphError),
}

/// Projects `event` (with `prepared`, its graph-independent runs done ahead,
/// or `Prepared::default()`) into `staging`, ending the event there (its
/// digest extended). Returns the errors recorded for it (empty unless a
/// `record` projector failed). On error the staging may hold part of the
/// event: roll it back.
pub fn project_event(
    set: &ProjectorSet,
    event: &EventInput<'_>,
    prepared: Prepared,
    staging: &mut Staging,
    policy: Policy,
) -> Result<Vec<ErrorRecord>, StepError> {
    project(set, event, prepared, staging, policy, false).map(|t| t.errors)
}

/// What [`project_event_traced`] did with one event.
#[derive(Debug)]
pub struct Traced {
    /// The errors recorded for it (see [`project_event`]).
    pub errors: Vec<ErrorRecord>,
    /// Every projector's ops, in set order (`applied` says which were applied).
    pub ops: Vec<Op>,
    /// The ops applied, per projector, in set order.
    pub applied: Vec<Segment>,
}

/// [`project_event`], also returning the ops applied per projector (for
/// `leviathan projector test`, which shows them).
pub fn project_event_traced(
    set: &ProjectorSet,
    event: &EventInput<'_>,
    prepared: Prepared,
    staging: &mut Staging,
    policy: Policy,
) -> Result<Traced, StepError> {
    project(set, event, prepared, staging, policy, true)
}

/// [`project_event_traced`]; its `ops` are what the projectors returned
/// only with `keep_ops` (applying them moves their properties into the
/// graph, so they are copied first), else what applying them left.
fn project(
    set: &ProjectorSet,
    event: &EventInput<'_>,
    prepared: Prepared,
    staging: &mut Staging,
    policy: Policy,
    keep_ops: bool,
) -> Result<Traced, StepError> {
    crate::panics::test_hook_on_event(event.event_id);
    let mut projected = match set.lane() {
        None => set.run_event(event, prepared, staging, policy),
        Some(lane) => set.run_event(
            event,
            prepared,
            &LaneView {
                inner: &*staging,
                set,
                lane,
            },
            policy,
        ),
    }
    .map_err(|e| StepError::Projection(Box::new(e)))?;
    staging.begin_event(event.seq).map_err(StepError::Graph)?;
    let mut failed: Vec<(usize, ErrorRecord)> = projected
        .failed
        .into_iter()
        .map(|(index, e)| (index, record(set, index, event, e.code(), &e.failure)))
        .collect();
    let mut applied = Vec::with_capacity(projected.segments.len());
    let shown = keep_ops.then(|| projected.ops.clone());
    for seg in &projected.segments {
        let index = seg.projector;
        let ops = &mut projected.ops[seg.start..seg.end];
        let owns = |t: &str| set.owns_node_type(index, t);
        staging.set_history_source(Some(set.label(index)));
        let applied_ops = match set.lane() {
            None => staging.apply_segment(event.seq, event.timestamp, ops, &owns),
            Some(lane) => {
                let cascade = |t: &str| set.edge_type_mode(t) == Some(lane);
                staging.apply_segment_in_lane(event.seq, event.timestamp, ops, &owns, &cascade)
            }
        };
        match applied_ops {
            Ok(()) => applied.push(*seg),
            Err(e) => {
                let failure = match e {
                    GraphError::NotOwner {
                        index: op_index,
                        op,
                        id,
                        node_type,
                    } => Failure::NotOwner {
                        index: op_index,
                        op,
                        id,
                        node_type,
                    },
                    GraphError::InvalidOp { .. } | GraphError::TypeMismatch { .. } => {
                        Failure::GraphOp {
                            reason: e.to_string(),
                        }
                    }
                    other => return Err(StepError::Graph(other)),
                };
                if !policy.records(set.on_error(index)) {
                    return Err(StepError::Projection(Box::new(ProjectionError {
                        projector: set.label(index).to_owned(),
                        seq: event.seq,
                        event_id: event.event_id.to_owned(),
                        failure,
                    })));
                }
                failed.push((index, record(set, index, event, failure.code(), &failure)));
            }
        }
    }
    failed.sort_by_key(|(index, _)| *index);
    let errors: Vec<ErrorRecord> = failed.into_iter().map(|(_, r)| r).collect();
    for e in &errors {
        // Under `RecordAll` (a build, a rebuild: the log's history cannot be
        // refused) a reject-policy projector's failure is recorded too.
        let why = if policy == Policy::RecordAll {
            "history is recorded, never refused"
        } else {
            "on_error = record"
        };
        tracing::warn!(
            projector = %e.projector,
            seq = e.seq.0,
            event_id = %e.event_id,
            code = %e.code,
            "projection error recorded ({why}): {}",
            e.message
        );
    }
    staging.end_event(event.seq, &errors);
    Ok(Traced {
        errors,
        ops: shown.unwrap_or(projected.ops),
        applied,
    })
}

/// What the projectors of one lane of a set with `async` projectors read
/// through the `graph` import: only the node and edge types that the lane's
/// projectors declare. The inline lane's state (applied by the writer, ahead)
/// and the async lane's (applied by the follower, behind) are each a function
/// of the log up to the event, but not of each other at any one instant, so
/// neither lane may see the other's types.
struct LaneView<'a> {
    inner: &'a Staging,
    set: &'a ProjectorSet,
    lane: Mode,
}

impl GraphView for LaneView<'_> {
    fn get_node(&self, id: &str) -> Option<Node> {
        self.inner
            .get_node(id)
            .filter(|n| self.set.node_type_mode(&n.node_type) == Some(self.lane))
    }

    fn edges(&self, id: &str, dir: Direction, edge_type: Option<&str>, limit: usize) -> Vec<Edge> {
        let mine = |t: &str| self.set.edge_type_mode(t) == Some(self.lane);
        match edge_type {
            Some(t) if !mine(t) => Vec::new(),
            Some(_) => self.inner.edges(id, dir, edge_type, limit),
            None => {
                let mut all = self.inner.edges(id, dir, None, usize::MAX);
                all.retain(|e| mine(&e.edge_type));
                all.truncate(limit);
                all
            }
        }
    }
}

fn record(
    set: &ProjectorSet,
    index: usize,
    event: &EventInput<'_>,
    code: &str,
    failure: &Failure,
) -> ErrorRecord {
    ErrorRecord {
        seq: event.seq,
        event_id: event.event_id.to_owned(),
        projector: set.projectors()[index].name.clone(),
        code: code.to_owned(),
        message: failure.to_string(),
    }
}
