//! Per-event cost of real projector components as the server runs them: a
//! fresh Store + instance + `project` call per event (`ProjectorSet::run_one`,
//! the path of ingest and of test vectors), on a `deploy.started` event of
//! the `deploys` example (projectors/examples). For each component file given
//! (and the embedded core projector on an `attempt.created`, for reference):
//! compile time, p50 / p99 / mean µs per event, and minor page faults per
//! event (the memory the instance touches: a fresh copy-on-write image of
//! the guest's linear memory each time). With `LEVIATHAN_PROJECTOR_CACHE`
//! set, compiled components are read from (and written to) that directory,
//! as the server does.
//!
//! ```sh
//! projectors/examples/python/build.sh; projectors/examples/js/build.sh; projectors/examples/rust/build.sh
//! cargo run --release --example polyglot_bench -- \
//!     projectors/examples/rust/target/deploys.wasm \
//!     projectors/examples/python/target/deploys.wasm \
//!     projectors/examples/js/target/deploys.wasm
//! ```
//!
//! A measurement aid only: it asserts nothing about time.

// Measurement code: a failed unwrap is a failed run.
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/wasm.rs"]
#[allow(dead_code)]
mod common;

use common::MemGraph;
use leviathan::digest::Sha256;
use leviathan::projection::{EventInput, Limits, ProjectorSet, ProjectorSource};
use leviathan::seq::Seq;
use std::time::{Duration, Instant};

/// Minor page faults of this thread so far. (The crate denies `unsafe_code`;
/// this measurement aid's `getrusage` call is an exception.)
#[allow(unsafe_code)]
fn minor_faults() -> i64 {
    // SAFETY: getrusage only writes the zeroed struct it is given.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut u);
        u.ru_minflt
    }
}

struct Row {
    name: String,
    bytes: usize,
    compile: Duration,
    p50: f64,
    p99: f64,
    mean: f64,
    faults: f64,
    events: usize,
}

fn measure(name: &str, bytes: Vec<u8>, event_type: &str, payload: &str) -> Row {
    let size = bytes.len();
    let cache = std::env::var_os("LEVIATHAN_PROJECTOR_CACHE").map(std::path::PathBuf::from);
    let t = Instant::now();
    let set = ProjectorSet::load(
        vec![ProjectorSource {
            bytes,
            limits: Limits::default(),
            on_error: Default::default(),
            mode: Default::default(),
        }],
        cache.as_deref(),
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    let compile = t.elapsed();
    let graph = MemGraph::default();
    let ev = |seq: u64| EventInput {
        seq: Seq(seq),
        event_id: "bench-1",
        event_type,
        timestamp: "2026-01-24T10:00:00.123456Z",
        actor_id: Some("ci-bot"),
        target: "radix",
        payload_json: payload,
        event_hash: Sha256::of(b"bench-1"),
    };
    // Warm up, then size the run to about 3 s.
    let t = Instant::now();
    for i in 0..20 {
        set.run_one(0, &ev(i), &graph).unwrap();
    }
    let per = t.elapsed().as_secs_f64() / 20.0;
    let events = ((3.0 / per) as usize).clamp(100, 20_000);
    let mut samples = Vec::with_capacity(events);
    let faults_before = minor_faults();
    let all = Instant::now();
    for i in 0..events {
        let t = Instant::now();
        let ops = set.run_one(0, &ev(i as u64 + 1), &graph).unwrap();
        samples.push(t.elapsed().as_secs_f64() * 1e6);
        std::hint::black_box(ops);
    }
    let mean = all.elapsed().as_secs_f64() * 1e6 / events as f64;
    let faults = (minor_faults() - faults_before) as f64 / events as f64;
    samples.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p) as usize];
    Row {
        name: name.to_owned(),
        bytes: size,
        compile,
        p50: pct(0.5),
        p99: pct(0.99),
        mean,
        faults,
        events,
    }
}

fn main() {
    let deploy = r#"{"attempt_id":"a1","deploy_id":"d1","environment":"prod","labels":{"canary":true,"region":"eu","weight":12.5},"service":"api","version":"1.4.2"}"#;
    let attempt = r#"{"attempt_id":"a1","attempt_number":1,"status":"created","target_id":"radix","task_id":"t1"}"#;
    let mut rows = vec![measure(
        "core (embedded)",
        leviathan::projector_specs::CORE_WASM.to_vec(),
        "attempt.created",
        attempt,
    )];
    for path in std::env::args().skip(1) {
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        rows.push(measure(&path, bytes, "deploy.started", deploy));
    }
    println!(
        "| component | size | compile | p50 µs | p99 µs | mean µs | minor faults/event | events |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in rows {
        println!(
            "| {} | {:.1} MB | {:.1} s | {:.1} | {:.1} | {:.1} | {:.0} | {} |",
            r.name,
            r.bytes as f64 / 1e6,
            r.compile.as_secs_f64(),
            r.p50,
            r.p99,
            r.mean,
            r.faults,
            r.events
        );
    }
}
