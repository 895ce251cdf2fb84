//! The core projector's graph schema as the rest of the server reads it: the
//! node and edge type names the read side looks for, and the order the graph
//! summary lists types in (the original control plane's order). The graph
//! engine (`graph/`) is generic and knows none of these names; the projector
//! itself (`projectors/core/`) declares the same types in its own crate.

use crate::graph::query::TypeOrder;

/// An attempt of a task: `attempt.created` and the events that follow it.
pub const ATTEMPT: &str = "Attempt";
/// A stored artifact an attempt produced.
pub const ARTIFACT: &str = "Artifact";
/// A pull request an attempt opened.
pub const PULL_REQUEST: &str = "PullRequest";
/// Attempt → Artifact and Attempt → PullRequest.
pub const PRODUCED: &str = "PRODUCED";

/// Node types in the summary's order.
pub const NODE_TYPE_ORDER: [&str; 12] = [
    "Target",
    "Task",
    ATTEMPT,
    "Workspace",
    ARTIFACT,
    "ModelCall",
    "TestRun",
    "Commit",
    PULL_REQUEST,
    "PolicySnapshot",
    "Actor",
    "Delegation",
];

/// Edge types in the summary's order.
pub const EDGE_TYPE_ORDER: [&str; 8] = [
    "DEPENDS_ON",
    PRODUCED,
    "RUNS_IN",
    "AUTHORIZED_BY",
    "DELEGATES",
    "INVALIDATES",
    "SUPPORTS",
    "CONTESTS",
];

/// The summary order: these types first in this order, others after them by name.
pub const SUMMARY_ORDER: TypeOrder<'static> = TypeOrder {
    nodes: &NODE_TYPE_ORDER,
    edges: &EDGE_TYPE_ORDER,
};
