//! The read side: answers to the API's queries that combine the log's indexes
//! and the graph (failures, topology, attempts). Each view reads committed
//! state only and returns the wire model of its route (`crate::wire`); the
//! HTTP handlers parse the request, call a view and map its error.
//!
//! A view reads an index that holds only what it answers (failures, topology:
//! by target when filtered by one), or, where it filters what an index
//! returns, never stops silently: it examines a bounded number of entries per
//! call and hands back a `next_cursor` to continue from (the attempts list by
//! target, through `GraphStore::newest_items`; its handler runs it in the
//! scanning-reads bulkhead, `api::limits`).
//!
//! An answer is built whole in memory, and payloads (so events and the node
//! properties the core projector copies from them) may be 1 MiB each: every
//! view whose answer grows with the data takes a byte budget (`max_bytes`,
//! the routes' 8 MiB), measured on what it puts in the answer, and stops
//! there with at least one item, saying so: a `next_cursor` (pages), or an
//! explicit marker and how to read the rest (an attempt's detail, a
//! topology list).

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
    #[error(transparent)]
    Cancelled(#[from] crate::cancel::Cancelled),
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
