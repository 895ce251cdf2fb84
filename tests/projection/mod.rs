//! Projection engine tests against real wasmtime and real components (built
//! from WAT at test time, see `common::wasm`), one module per behaviour.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]
// ProjectionError is large (the cold path of a failing event; see src/projection).
#![allow(clippy::result_large_err)]

use crate::common;

mod abuse;
mod calls;
mod failures;
mod graph_view;
mod limits;
mod loading;
mod vectors;
mod wasi;

use common::wasm::*;
use leviathan::graph::Op;
use leviathan::projection::{Limits, ProjectorSource};
use serde_json::json;

fn source(bytes: Vec<u8>) -> ProjectorSource {
    ProjectorSource {
        bytes,
        limits: Limits::default(),
        on_error: Default::default(),
        mode: Default::default(),
    }
}

fn with_limits(bytes: Vec<u8>, limits: Limits) -> ProjectorSource {
    ProjectorSource {
        bytes,
        limits,
        on_error: Default::default(),
        mode: Default::default(),
    }
}

fn good_projector() -> Vec<u8> {
    static_projector(&Describe::default(), |d| {
        d.ok_ops(&[
            StaticOp::PutNode {
                id: "attempt:a1",
                node_type: "attempt",
                properties: r#"{"status":"running","n":1}"#,
            },
            StaticOp::PutEdge {
                edge_type: "part_of",
                from: "attempt:a1",
                to: "run:r1",
                properties: "{}",
            },
            StaticOp::MergeNode {
                id: "run:r1",
                node_type: "run",
                properties: r#"{"last":"a1"}"#,
                create_if_absent: true,
            },
            StaticOp::DeleteNode("attempt:old"),
            StaticOp::DeleteEdge {
                edge_type: "part_of",
                from: "attempt:old",
                to: "run:r1",
            },
        ])
    })
}

fn expected_good_ops() -> Vec<Op> {
    let obj = |v: serde_json::Value| v.as_object().unwrap().clone();
    vec![
        Op::PutNode {
            id: nid("attempt:a1"),
            node_type: "attempt".into(),
            properties: obj(json!({"status": "running", "n": 1})),
        },
        Op::PutEdge {
            edge_type: "part_of".into(),
            from: nid("attempt:a1"),
            to: nid("run:r1"),
            properties: obj(json!({})),
        },
        Op::MergeNode {
            id: nid("run:r1"),
            node_type: "run".into(),
            properties: obj(json!({"last": "a1"})),
            create_if_absent: true,
        },
        Op::DeleteNode {
            id: nid("attempt:old"),
        },
        Op::DeleteEdge {
            edge_type: "part_of".into(),
            from: nid("attempt:old"),
            to: nid("run:r1"),
        },
    ]
}

fn describe_failing(name: &str, event_type: &str) -> Describe<'static> {
    let name: &'static str = Box::leak(name.to_owned().into_boxed_str());
    let handles: &'static [&'static str] =
        Box::leak(vec![&*Box::leak(event_type.to_owned().into_boxed_str())].into_boxed_slice());
    Describe {
        name,
        version: "0.1.0",
        handles,
        node_types: &["attempt"],
        edge_types: &["part_of"],
    }
}
