//! The projected property graph: its model (nodes, edges, ops), its fjall
//! storage (`store`), the writer's per-batch overlay (`staging`) and the
//! read-side queries (`query`). The graph changes only by applying projector
//! ops through a `Staging` written into the writer's batch; nothing else
//! writes it (except `GraphStore::clear` for an offline rebuild).

pub(crate) mod canonical;
pub mod error;
pub mod errors;
pub mod history;
pub(crate) mod keys;
pub mod model;
pub mod query;
pub mod staging;
pub mod store;

#[cfg(test)]
mod tests;

pub use error::GraphError;
pub use errors::ErrorRecord;
pub use history::{ChangeRecord, HistoryPage};
pub use model::{edge_id, Direction, Edge, GraphView, Node, NodeId, Op, Properties};
pub use query::{Page, TypeCounts, TypeOrder, MAX_PAGE_LIMIT, NEWEST_SCAN_BUDGET};
pub use staging::{Mark, Overlay, Staging, MAX_ID_BYTES, MAX_TYPE_BYTES};
pub use store::{GraphStore, GENESIS_DIGEST};
