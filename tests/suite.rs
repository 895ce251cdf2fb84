//! The integration suite: every integration test but the fuzz targets, as one
//! test binary whose modules are the former binaries (`http::`, `crash::`,
//! `pg::`…; select with a filter: `cargo test --test suite http::`).
//!
//! One binary rather than twenty: each integration test binary compiles
//! `common` again and links the whole server (wasmtime, fjall, PostgreSQL
//! client) again, which cost CI's two cores about two minutes of CPU; and one
//! libtest run interleaves the tests that wait (on servers, PostgreSQL, a
//! browser) with those that compute, where twenty binaries ran one after the
//! other. Tests therefore share one process: nothing here may set process-wide
//! state that another module's tests would see (environment variables, the
//! current directory), beyond what `common` sets up once for all of them.
//!
//! Two stay binaries of their own: `tests/fuzz.rs`, which cargo-bolero builds
//! as a libFuzzer target, and `tests/polyglot.rs`, which compiles 12-18 MB
//! components on both cores for two minutes: run beside the others it took
//! 280 s instead of 120 and the whole suite 455 s instead of 406 (270 + 136).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

mod audit;
mod console;
mod crash;
mod ctl;
mod determinism;
mod export;
mod hostile;
mod http;
mod ops;
mod pg;
mod pg_ops;
mod projection;
mod projector_cli;
mod projector_crates;
mod settings;
mod soak;
mod storage_faults;
mod store;
mod store_pinning;
mod store_snapshot;
mod stream;
mod template;
