//! Leviathan: a control plane that appends executor events to a hash-chained log,
//! stores artifacts by SHA-256 and projects every event into a property graph.
//! See docs/ARCHITECTURE.md for the module map, the entry points and the
//! invariants.
//!
//! The core concepts:
//! - **Log** ([`log`]): the append-only sequence of stored events, with its
//!   indexes (by event id, type, attempt, bundle). Only the [`writer`] appends.
//! - **Record** ([`log::record`]): one stored event as RFC 8785 canonical JSON
//!   ([`jcs`]) of `{actor_id, event_id, event_type, payload, prev_hash, seq,
//!   target, timestamp}`; its SHA-256 is the event's hash, and each record
//!   names its predecessor's hash (`prev_hash`), which chains the log.
//! - **Seq** ([`seq::Seq`]): an event's position in the log, dense from 1.
//! - **Bundle** ([`bundle`]): what an executor POSTs, a target, a bundle id and
//!   events; validated whole, appended whole or not at all, and idempotent by
//!   bundle id (a retry must carry the same content digest).
//! - **Projector** ([`projection`], [`projector_specs`]): a sandboxed Wasm
//!   component that turns one event into graph ops, a pure function of the
//!   event and the graph so far, run on a fresh instance per event.
//! - **Graph** ([`graph`]): the property graph (nodes, edges) the ops build,
//!   stored beside the log and changed in the same batch as the events.
//! - **State digest** ([`graph::GraphStore::state`]): a rolling SHA-256 over
//!   every seq's ops, recorded after each seq; a rebuild from the log with the
//!   same projectors must reproduce it bit for bit.
//!
//! A record and its hash, as the writer computes them for the first event of a
//! log (no predecessor, so `prev_hash` is null):
//!
//! ```
//! use leviathan::bundle::{self, Limits};
//! use leviathan::digest::Sha256;
//! use leviathan::seq::Seq;
//!
//! let body = br#"{"target": "radix", "bundle_id": "b1", "events": [{
//!     "event_id": "e1", "event_type": "attempt.created",
//!     "timestamp": "2026-01-24T12:00:00+02:00", "actor_id": "w1",
//!     "payload": {"b": 1.0, "a": "x"}}]}"#;
//! let bundle = bundle::parse(body, &Limits::default()).expect("a valid bundle");
//! let record = bundle.events[0].encode(Seq(1), None);
//! // Keys sorted, no whitespace, numbers the ECMAScript way, time in UTC:
//! assert_eq!(
//!     std::str::from_utf8(&record).expect("UTF-8"),
//!     r#"{"actor_id":"w1","event_id":"e1","event_type":"attempt.created","payload":{"a":"x","b":1},"prev_hash":null,"seq":1,"target":"radix","timestamp":"2026-01-24T10:00:00Z"}"#
//! );
//! assert_eq!(
//!     Sha256::of(&record).to_hex(),
//!     "6591df8118359bc150f0c6b4befc9adddfd09f7c0a74637846b683dc35c8c287"
//! );
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod api;
pub mod backup;
pub mod bench;
pub mod build_info;
pub mod bundle;
pub mod cancel;
pub mod cas;
pub mod chain_verifier;
pub mod config;
pub mod ctl;
pub mod digest;
pub mod export;
mod files;
pub mod generations;
pub mod graph;
pub mod ids;
pub mod import;
pub mod invalidation;
pub mod jcs;
pub mod legacy;
pub mod log;
pub mod manifest;
pub mod metrics;
pub mod panics;
pub mod pg;
pub mod progress;
pub mod project_event;
pub mod projection;
pub mod projector_cli;
pub mod projector_specs;
pub mod replay;
pub mod replay_to;
pub mod schema;
pub mod seq;
pub mod server;
pub mod storage;
pub mod tlog;
pub mod tokens;
pub mod vectors;
pub mod views;
pub mod wire;
pub mod writer;
