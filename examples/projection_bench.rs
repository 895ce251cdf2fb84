//! Rough per-event cost of `ProjectorSet::project` (fresh store + instance per
//! event) for trivial WAT-built projectors. Run with
//! `cargo run --release --example projection_bench`; results go to the log.
//! A measurement aid only: it asserts nothing about time.

// Measurement code shared with the tests: a failed unwrap is a failed run.
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/wasm.rs"]
#[allow(dead_code)]
mod common;

use common::*;
use leviathan::projection::{Limits, ProjectorSet, ProjectorSource};
use std::time::Instant;

fn measure(label: &str, set: &ProjectorSet, event_type: &str, iterations: usize) {
    let graph = MemGraph::default();
    let payload = format!(r#"{{"attempt_id":"a1","notes":"{}"}}"#, "x".repeat(560));
    let mut ev = event(1, "evt-1", event_type);
    ev.payload_json = &payload;
    for _ in 0..iterations / 10 {
        set.project(&ev, &graph).expect("warm-up");
    }
    let mut samples = Vec::with_capacity(iterations);
    let all = Instant::now();
    for i in 0..iterations {
        ev.seq = leviathan::seq::Seq(i as u64 + 1);
        let t = Instant::now();
        let ops = set.project(&ev, &graph).expect("project");
        samples.push(t.elapsed().as_nanos() as f64 / 1e3);
        std::hint::black_box(ops);
    }
    let mean = all.elapsed().as_secs_f64() * 1e6 / iterations as f64;
    samples.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p) as usize];
    tracing::info!(
        "{label}: mean {mean:.2} µs/event, p50 {:.2}, p99 {:.2} ({iterations} events, payload {} B)",
        pct(0.5),
        pct(0.99),
        payload.len()
    );
}

fn main() {
    tracing_subscriber::fmt().with_target(false).init();
    let five_ops = static_projector(&Describe::default(), |d| {
        d.ok_ops(&[
            StaticOp::PutNode {
                id: "attempt:a1",
                node_type: "attempt",
                properties: r#"{"status":"running"}"#,
            },
            StaticOp::PutNode {
                id: "run:r1",
                node_type: "run",
                properties: r#"{"n":1}"#,
            },
            StaticOp::PutNode {
                id: "attempt:a0",
                node_type: "attempt",
                properties: "{}",
            },
            StaticOp::PutEdge {
                edge_type: "part_of",
                from: "attempt:a1",
                to: "run:r1",
                properties: "{}",
            },
            StaticOp::PutEdge {
                edge_type: "part_of",
                from: "attempt:a0",
                to: "run:r1",
                properties: "{}",
            },
        ])
    });
    let empty = static_projector(
        &Describe {
            name: "empty",
            handles: &["noop.event"],
            ..Describe::default()
        },
        |d| d.ok_ops(&[]),
    );
    let sources = vec![
        ProjectorSource {
            bytes: five_ops,
            limits: Limits::default(),
            on_error: Default::default(),
            mode: Default::default(),
        },
        ProjectorSource {
            bytes: empty,
            limits: Limits::default(),
            on_error: Default::default(),
            mode: Default::default(),
        },
    ];
    let t = Instant::now();
    let set = ProjectorSet::load(sources, None).expect("load");
    tracing::info!(
        "load (compile 2 tiny components): {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    for _ in 0..2 {
        measure("empty projector (0 ops)", &set, "noop.event", 20_000);
        measure(
            "static projector (5 ops: 3 nodes, 2 edges)",
            &set,
            "attempt.created",
            20_000,
        );
    }
}
