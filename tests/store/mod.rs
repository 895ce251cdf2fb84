//! The store's promises checked directly: group commit in the writer (through
//! the library), the hash chain's verification branches against a forged
//! store, `leviathan rebuild` as an audit, and the server's start-up checks.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod batch;
mod chain;
mod rebuild;
mod startup;
