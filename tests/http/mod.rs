//! HTTP v1 behaviour, driven over loopback against a real `leviathan serve`
//! process with a real fjall store in a temp dir. One module per behaviour.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod access;
mod artifacts;
mod async_projectors;
mod auth;
mod backup;
mod compat;
mod contract;
mod deploy;
mod event_types;
mod generations;
mod graph_api;
mod hardening;
mod hashing;
mod history;
mod idempotency;
mod ingest;
mod memory;
mod metrics;
mod ops;
mod panics;
mod projection_rules;
mod reads;
mod restart;
mod sandbox;
