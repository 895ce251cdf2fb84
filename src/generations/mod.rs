//! Generations: the graph built by one projector set (its fingerprint). It
//! owns the catalog of generations (which one is live, each one's projector
//! set and status, and the component bytes needed to load a set again), the
//! shared handle on the live generation that readers and the writer use
//! ([`LiveGraph`]), and the background build of a new generation from the log
//! ([`build`]). A change of projector set no longer stops the server: the
//! live generation keeps serving while the new one is built behind it, then
//! the writer switches to it in one batch (`live` and the new generation's
//! last events commit together) and swaps the handle before it answers
//! anything else.
//!
//! It never writes a live graph (the writer does), and never decides
//! projection rules (`project_event` does, with [`Policy::RecordAll`] for
//! history: an event already in the log cannot be refused).
//!
//! [`Policy::RecordAll`]: crate::projection::Policy::RecordAll

pub mod build;
mod catalog;
pub mod follow;
mod live;
mod startup;

pub use build::{BuildStatus, Builds};
pub use catalog::{Catalog, GenerationRecord, ProjectorRecord, Status};
pub use follow::{Follow, FollowStatus};
pub use live::{Live, LiveGraph};
pub use startup::{prepare, Configured, Prepared, RebuildMode};
