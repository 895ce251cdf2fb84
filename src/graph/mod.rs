//! The projected property graph: its model (nodes, edges, ops) and, later, its
//! store and queries. The graph changes only by applying projector ops inside
//! the writer's batch; nothing else writes it.

pub mod model;

pub use model::{edge_id, Direction, Edge, GraphView, Node, Op, Properties};
