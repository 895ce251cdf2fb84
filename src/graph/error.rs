//! `GraphError`: everything that can go wrong in the graph store, staging and
//! queries. It owns the error vocabulary only; it never decides what the
//! writer or the HTTP layer does about an error.

use crate::seq::Seq;

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// fjall failed (I/O, poisoned database ...).
    #[error("graph storage: {0}")]
    Storage(#[from] fjall::Error),

    /// A read's request was cancelled (`crate::cancel`).
    #[error(transparent)]
    Cancelled(#[from] crate::cancel::Cancelled),

    /// A stored record does not decode: the store is damaged or was written by
    /// another layout version.
    #[error("graph store corrupt: bad {what} ({detail})")]
    Corrupt { what: &'static str, detail: String },

    /// The database holds a graph layout this build does not understand.
    #[error("graph store has layout version {found:?}, this build writes {expected:?}")]
    Format { found: String, expected: String },

    /// An op is malformed (an oversized id, an empty or oversized type). `index` is the op's
    /// position in the event's op list.
    #[error("op {index}: {reason}")]
    InvalidOp { index: usize, reason: String },

    /// `MergeNode` on a node that exists with another type.
    #[error("op {index}: node {id:?} is a {existing}, not a {requested}")]
    TypeMismatch {
        index: usize,
        id: String,
        existing: String,
        requested: String,
    },

    /// `put-node`, `merge-node` or `delete-node` on an existing node whose
    /// type the applying projector does not own.
    #[error("op {index}: {op} on node {id:?}, a {node_type}, which the projector does not own")]
    NotOwner {
        index: usize,
        op: &'static str,
        id: String,
        node_type: String,
    },

    /// `apply` was called with a seq that does not follow the last applied one.
    #[error("graph expected seq {expected}, got {got}")]
    SeqOutOfOrder { expected: Seq, got: Seq },

    /// A read made through `GraphView` failed; the view answered "nothing" and
    /// the ops computed from it cannot be trusted.
    #[error("graph read during projection failed: {0}")]
    ViewRead(String),

    /// An offline rebuild of this graph started and did not finish.
    #[error(
        "an offline rebuild of this graph was interrupted before it finished, so the graph on \
         disk is partial; run `leviathan rebuild` on this data dir (it starts again from the \
         first event) before starting the server or reading the graph"
    )]
    RebuildInterrupted,

    /// A paging cursor that this store did not hand out (or for another query).
    #[error("invalid cursor")]
    BadCursor,

    /// Writing a dump failed.
    #[error("writing graph dump: {0}")]
    Io(#[from] std::io::Error),

    /// Serializing a record or the ops for the digest failed.
    #[error("graph encoding: {0}")]
    Encode(#[from] serde_json::Error),
}

impl GraphError {
    pub(crate) fn corrupt(what: &'static str, bytes: &[u8]) -> Self {
        let shown: String = String::from_utf8_lossy(bytes).chars().take(80).collect();
        GraphError::Corrupt {
            what,
            detail: format!("{shown:?}"),
        }
    }
}
