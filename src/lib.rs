//! Leviathan: a control plane that appends executor events to a hash-chained log,
//! stores artifacts by SHA-256 and projects every event into a property graph.
//! See docs/ARCHITECTURE.md for the module map and invariants.

pub mod api;
pub mod bench;
pub mod bundle;
pub mod cas;
pub mod config;
pub mod ctl;
pub mod digest;
pub mod graph;
pub mod invalidation;
pub mod jcs;
pub mod log;
pub mod metrics;
pub mod projection;
pub mod projectors;
pub mod replay;
pub mod schema;
pub mod seq;
pub mod server;
pub mod storage;
pub mod views;
pub mod wire;
pub mod writer;
