//! The read side: answers to the API's queries that combine the log's indexes
//! and the graph (failures, topology, attempts). Each view reads committed
//! state only and returns the wire model of its route (`crate::wire`); the
//! HTTP handlers parse the request, call a view and map its error.
//!
//! A view that filters what an index returns never stops silently: either it
//! reads the whole index range (topology), or it examines a bounded number of
//! entries per call and hands back a `next_cursor` to continue from
//! (failures, and the attempts list through `GraphStore::newest_nodes`).

pub mod attempts;
pub mod failures;
pub mod history;
pub mod topology;

use crate::graph::GraphError;
use crate::log::LogError;

/// Why a view could not answer.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// A cursor that this query did not hand out.
    #[error("invalid cursor: pass back the next_cursor of the same query unchanged")]
    BadCursor,
    /// What the caller asked for does not exist (the message names it).
    #[error("{0}")]
    NotFound(String),
    /// A query parameter out of range (the message says why).
    #[error("{0}")]
    BadQuery(String),
}
