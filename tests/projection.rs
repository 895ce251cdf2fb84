//! Projection engine tests against real wasmtime and real components (built
//! from WAT at test time, see `common`).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::wasm::*;
use leviathan::graph::Op;
use leviathan::projection::{Failure, Limits, LoadError, ProjectorSet, ProjectorSource};
use serde_json::json;

fn source(bytes: Vec<u8>) -> ProjectorSource {
    ProjectorSource {
        bytes,
        limits: Limits::default(),
    }
}

fn with_limits(bytes: Vec<u8>, limits: Limits) -> ProjectorSource {
    ProjectorSource { bytes, limits }
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
            id: "attempt:a1".into(),
            node_type: "attempt".into(),
            properties: obj(json!({"status": "running", "n": 1})),
        },
        Op::PutEdge {
            edge_type: "part_of".into(),
            from: "attempt:a1".into(),
            to: "run:r1".into(),
            properties: obj(json!({})),
        },
        Op::MergeNode {
            id: "run:r1".into(),
            node_type: "run".into(),
            properties: obj(json!({"last": "a1"})),
            create_if_absent: true,
        },
        Op::DeleteNode {
            id: "attempt:old".into(),
        },
        Op::DeleteEdge {
            edge_type: "part_of".into(),
            from: "attempt:old".into(),
            to: "run:r1".into(),
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

#[test]
fn well_behaved_projector_returns_converted_ops_and_its_description() {
    let bytes = good_projector();
    let digest = leviathan::digest::Sha256::of(&bytes);
    let set = ProjectorSet::load(vec![source(bytes)], None).unwrap();

    let info = &set.projectors()[0];
    assert_eq!(info.name, "core");
    assert_eq!(info.version, "1.0.0");
    assert_eq!(info.digest, digest);
    assert_eq!(info.handles, ["attempt.created", "topo.*"]);
    assert_eq!(info.node_types, ["attempt", "run"]);
    assert_eq!(info.edge_types, ["part_of"]);

    let graph = MemGraph::default();
    let ops = set
        .project(&event(42, "evt-7", "attempt.created"), &graph)
        .unwrap();
    assert_eq!(ops, expected_good_ops());
    // Same event again: same ops (fresh instance each time).
    let again = set
        .project(&event(42, "evt-7", "attempt.created"), &graph)
        .unwrap();
    assert_eq!(again, ops);
}

#[test]
fn handles_exact_names_and_prefix_patterns_only() {
    let set = ProjectorSet::load(vec![source(good_projector())], None).unwrap();
    assert!(set.handles("attempt.created"));
    assert!(set.handles("topo.node"));
    assert!(set.handles("topo.node.added"));
    assert!(!set.handles("topo."));
    assert!(!set.handles("topo"));
    assert!(!set.handles("attempt.created.x"));
    assert!(!set.handles("run.started"));
    let ops = set
        .project(&event(1, "e1", "run.started"), &MemGraph::default())
        .unwrap();
    assert!(ops.is_empty(), "no projector handles it, no ops");
}

/// One set holding a good projector and one failing projector per failure
/// kind (each handling its own event type), so every failure is followed by
/// a successful call on the same set.
#[test]
fn failures_are_classified_and_the_next_event_still_works() {
    let small = Limits {
        fuel: 2_000_000,
        memory_bytes: 4 << 20,
        ..Limits::default()
    };
    let sources = vec![
        source(good_projector()),
        with_limits(
            body_projector(
                &describe_failing("looper", "fail.loop"),
                "(loop $l (br $l))",
            ),
            small.clone(),
        ),
        with_limits(
            body_projector(
                &describe_failing("bomber", "fail.bomb"),
                "(loop $l (drop (memory.grow (i32.const 16))) (br $l))",
            ),
            small.clone(),
        ),
        source(body_projector(
            &describe_failing("trapper", "fail.trap"),
            "unreachable",
        )),
        source(static_projector(
            &describe_failing("rejecter", "fail.reject"),
            |d| d.err("missing_field", "payload has no attempt_id"),
        )),
        source(static_projector(
            &describe_failing("sneaky", "fail.undeclared"),
            |d| {
                d.ok_ops(&[
                    StaticOp::PutNode {
                        id: "x",
                        node_type: "attempt",
                        properties: "{}",
                    },
                    StaticOp::PutNode {
                        id: "y",
                        node_type: "secret",
                        properties: "{}",
                    },
                ])
            },
        )),
        source(static_projector(
            &describe_failing("badjson", "fail.json"),
            |d| {
                d.ok_ops(&[StaticOp::PutNode {
                    id: "x",
                    node_type: "attempt",
                    properties: "[1,2]",
                }])
            },
        )),
        source(static_projector(
            &describe_failing("notjson", "fail.notjson"),
            |d| {
                d.ok_ops(&[StaticOp::PutEdge {
                    edge_type: "part_of",
                    from: "a",
                    to: "b",
                    properties: "{not json",
                }])
            },
        )),
        source(static_projector(
            &describe_failing("noid", "fail.noid"),
            |d| {
                d.ok_ops(&[StaticOp::PutNode {
                    id: "",
                    node_type: "attempt",
                    properties: "{}",
                }])
            },
        )),
    ];
    let set = ProjectorSet::load(sources, None).unwrap();
    let graph = MemGraph::default();
    let good = |seq| {
        let ops = set
            .project(&event(seq, "evt-ok", "attempt.created"), &graph)
            .expect("good event after a failure");
        assert_eq!(ops, expected_good_ops());
    };

    let cases: &[(&str, &str, &str)] = &[
        ("fail.loop", "out_of_fuel", "projector looper@0.1.0 failed on event 42 (evt-7): out of fuel (limit 2000000)"),
        ("fail.bomb", "memory_limit", "projector bomber@0.1.0 failed on event 42 (evt-7): memory limit reached (limit 4194304 bytes)"),
        ("fail.trap", "trap", "projector trapper@0.1.0 failed on event 42 (evt-7): trap: wasm `unreachable` instruction executed"),
        ("fail.reject", "rejected", "projector rejecter@0.1.0 failed on event 42 (evt-7): rejected the event: missing_field: payload has no attempt_id"),
        ("fail.undeclared", "undeclared_type", "projector sneaky@0.1.0 failed on event 42 (evt-7): op 1: node type \"secret\" is not among the projector's declared node types"),
        ("fail.json", "invalid_output", ""),
        ("fail.notjson", "invalid_output", ""),
        ("fail.noid", "invalid_output", "projector noid@0.1.0 failed on event 42 (evt-7): op 0: node id is empty"),
    ];
    good(1);
    for (event_type, code, message) in cases {
        for _ in 0..2 {
            let err = set
                .project(&event(42, "evt-7", event_type), &graph)
                .expect_err(event_type);
            assert_eq!(err.code(), *code, "{event_type}: {err}");
            if !message.is_empty() {
                assert_eq!(err.to_string(), *message);
            }
            assert!(err.is_deterministic());
            assert_eq!(err.seq.0, 42);
            assert_eq!(err.event_id, "evt-7");
            good(43);
        }
    }

    let err = set
        .project(&event(42, "evt-7", "fail.reject"), &graph)
        .unwrap_err();
    assert_eq!(
        err.failure,
        Failure::Rejected {
            code: "missing_field".into(),
            message: "payload has no attempt_id".into()
        }
    );
}

#[test]
fn out_of_fuel_is_the_same_error_on_every_run_and_every_load() {
    let bytes = body_projector(
        &describe_failing("looper", "fail.loop"),
        "(loop $l (br $l))",
    );
    let limits = Limits {
        fuel: 1_000_000,
        ..Limits::default()
    };
    let mut seen = Vec::new();
    for _ in 0..2 {
        let set =
            ProjectorSet::load(vec![with_limits(bytes.clone(), limits.clone())], None).unwrap();
        for _ in 0..3 {
            seen.push(
                set.project(&event(5, "e5", "fail.loop"), &MemGraph::default())
                    .unwrap_err(),
            );
        }
    }
    assert!(seen.iter().all(|e| e == &seen[0]));
    assert_eq!(seen[0].failure, Failure::OutOfFuel { limit: 1_000_000 });
}

/// A guest that reads node `n1` and its outgoing `links` edges through the
/// `graph` import and echoes them back as ops.
fn graph_reading_projector() -> Vec<u8> {
    let desc = Describe {
        name: "reader",
        version: "1.0.0",
        handles: &["read.*"],
        node_types: &["run"],
        edge_types: &["links"],
    };
    let mut d = Data::default();
    let (n1p, n1l) = d.str("n1");
    let (lp, ll) = d.str("links");
    let retn = d.zeros(48, 8);
    let rete = d.zeros(8, 4);
    let no_node = d.err("no_node", "graph has no n1");
    let no_edge = d.err("no_edge", "n1 has no links edge");
    let ops = d.zeros(2 * 36, 4);
    let res = d.zeros(12, 4);
    let imports = r#"
  (import "leviathan:projector/graph@1.0.0" "get-node" (func $get_node (param i32 i32 i32)))
  (import "leviathan:projector/graph@1.0.0" "edges" (func $edges (param i32 i32 i32 i32 i32 i32 i32 i32)))"#;
    let copy = |dst: u32, src: &str| format!("(i32.store (i32.const {dst}) (i32.load {src}))");
    let body = format!(
        r#"(local $e i32)
    (call $get_node (i32.const {n1p}) (i32.const {n1l}) (i32.const {retn}))
    (if (i32.eqz (i32.load8_u (i32.const {retn}))) (then (return (i32.const {no_node}))))
    ;; op 0: put-node(node.id, node.node-type, node.properties)
    (i32.store8 (i32.const {ops}) (i32.const 0))
    {c1} {c2} {c3} {c4} {c5} {c6}
    ;; edges("n1", outgoing, some("links"), 10)
    (call $edges (i32.const {n1p}) (i32.const {n1l}) (i32.const 0) (i32.const 1) (i32.const {lp}) (i32.const {ll}) (i32.const 10) (i32.const {rete}))
    (if (i32.eqz (i32.load (i32.const {rete_len}))) (then (return (i32.const {no_edge}))))
    (local.set $e (i32.load (i32.const {rete})))
    ;; op 1: put-edge(edge.type, edge.from, edge.to, edge.properties)
    (i32.store8 (i32.const {op1}) (i32.const 3))
    {e1} {e2} {e3} {e4} {e5} {e6} {e7} {e8}
    (i32.store (i32.const {res}) (i32.const 0))
    (i32.store (i32.const {res4}) (i32.const {ops}))
    (i32.store (i32.const {res8}) (i32.const 2))
    (i32.const {res})"#,
        c1 = copy(ops + 4, &format!("(i32.const {})", retn + 8)),
        c2 = copy(ops + 8, &format!("(i32.const {})", retn + 12)),
        c3 = copy(ops + 12, &format!("(i32.const {})", retn + 16)),
        c4 = copy(ops + 16, &format!("(i32.const {})", retn + 20)),
        c5 = copy(ops + 20, &format!("(i32.const {})", retn + 24)),
        c6 = copy(ops + 24, &format!("(i32.const {})", retn + 28)),
        rete_len = rete + 4,
        op1 = ops + 36,
        e1 = copy(ops + 40, "(local.get $e)"),
        e2 = copy(ops + 44, "(i32.add (local.get $e) (i32.const 4))"),
        e3 = copy(ops + 48, "(i32.add (local.get $e) (i32.const 8))"),
        e4 = copy(ops + 52, "(i32.add (local.get $e) (i32.const 12))"),
        e5 = copy(ops + 56, "(i32.add (local.get $e) (i32.const 16))"),
        e6 = copy(ops + 60, "(i32.add (local.get $e) (i32.const 20))"),
        e7 = copy(ops + 64, "(i32.add (local.get $e) (i32.const 24))"),
        e8 = copy(ops + 68, "(i32.add (local.get $e) (i32.const 28))"),
        res4 = res + 4,
        res8 = res + 8,
    );
    component(&projector_wat(&desc, d, imports, "", &body))
}

#[test]
fn graph_import_answers_from_the_graph_view() {
    let set = ProjectorSet::load(vec![source(graph_reading_projector())], None).unwrap();
    let graph = MemGraph::default()
        .with_node(
            "n1",
            "run",
            json!({"state": "open", "tries": 3, "tags": ["a", "b"]}),
        )
        .with_edge("n1", "other", "n9", json!({}))
        .with_edge("n0", "links", "n1", json!({"incoming": true}))
        .with_edge("n1", "links", "n2", json!({"weight": 0.5}));
    let ops = set.project(&event(7, "e7", "read.it"), &graph).unwrap();
    let obj = |v: serde_json::Value| v.as_object().unwrap().clone();
    assert_eq!(
        ops,
        vec![
            Op::PutNode {
                id: "n1".into(),
                node_type: "run".into(),
                properties: obj(json!({"state": "open", "tries": 3, "tags": ["a", "b"]})),
            },
            Op::PutEdge {
                edge_type: "links".into(),
                from: "n1".into(),
                to: "n2".into(),
                properties: obj(json!({"weight": 0.5})),
            },
        ]
    );

    // Without the node, the guest rejects: the import really reads the view.
    let err = set
        .project(&event(8, "e8", "read.it"), &MemGraph::default())
        .unwrap_err();
    assert_eq!(err.code(), "rejected");
    assert!(err.to_string().contains("graph has no n1"), "{err}");
}

const WASI_CLOCKS: &str = r#"
package wasi:clocks@0.2.0;
interface wall-clock {
    record datetime { seconds: u64, nanoseconds: u32 }
    now: func() -> datetime;
    resolution: func() -> datetime;
}
"#;

const WASI_RANDOM: &str = r#"
package wasi:random@0.2.0;
interface random {
    get-random-bytes: func(len: u64) -> list<u8>;
    get-random-u64: func() -> u64;
}
"#;

const WASI_WORLD: &str = r#"
package leviathan:test-wasi;
world wasi-projector {
    include leviathan:projector/projector@1.0.0;
    import wasi:clocks/wall-clock@0.2.0;
    import wasi:random/random@0.2.0;
}
"#;

/// A guest importing `wasi:clocks/wall-clock` and `wasi:random/random`: it
/// returns two nodes whose ids are the decimal wall-clock seconds and a random
/// u64.
fn wasi_projector() -> Vec<u8> {
    let desc = Describe {
        name: "wasi-guest",
        version: "1.0.0",
        handles: &["clock.read"],
        node_types: &["clock", "dice"],
        edge_types: &[],
    };
    let mut d = Data::default();
    let clk = d.zeros(16, 8);
    let buf = d.zeros(64, 1);
    let result = d.ok_ops(&[
        StaticOp::PutNode {
            id: "placeholder",
            node_type: "clock",
            properties: "{}",
        },
        StaticOp::PutNode {
            id: "placeholder",
            node_type: "dice",
            properties: "{}",
        },
    ]);
    let imports = r#"
  (import "wasi:clocks/wall-clock@0.2.0" "now" (func $now (param i32)))
  (import "wasi:random/random@0.2.0" "get-random-u64" (func $rand (result i64)))"#;
    let body = format!(
        r#"(local $ops i32) (local $p i32)
    (local.set $ops (i32.load (i32.const {res4})))
    (call $now (i32.const {clk}))
    (local.set $p (call $utoa (i64.load (i32.const {clk})) (i32.const {end1})))
    (i32.store offset=4 (local.get $ops) (local.get $p))
    (i32.store offset=8 (local.get $ops) (i32.sub (i32.const {end1}) (local.get $p)))
    (local.set $p (call $utoa (call $rand) (i32.const {end2})))
    (i32.store offset=40 (local.get $ops) (local.get $p))
    (i32.store offset=44 (local.get $ops) (i32.sub (i32.const {end2}) (local.get $p)))
    (i32.const {result})"#,
        res4 = result + 4,
        end1 = buf + 32,
        end2 = buf + 64,
    );
    component_for_world(
        &projector_wat(&desc, d, imports, "", &body),
        &[WASI_CLOCKS, WASI_RANDOM],
        Some((WASI_WORLD, "wasi-projector")),
    )
}

fn node_ids(ops: &[Op]) -> Vec<String> {
    ops.iter()
        .map(|op| match op {
            Op::PutNode { id, .. } => id.clone(),
            other => panic!("unexpected op {other:?}"),
        })
        .collect()
}

#[test]
fn wasi_guest_sees_the_event_time_and_event_seeded_randomness() {
    let set = ProjectorSet::load(vec![source(wasi_projector())], None).unwrap();
    let graph = MemGraph::default();
    let mut ev = event(3, "e3", "clock.read");
    ev.timestamp = "2024-05-06T07:08:09.250Z";
    let expected_secs = chrono::DateTime::parse_from_rfc3339(ev.timestamp)
        .unwrap()
        .timestamp()
        .to_string();

    let first = node_ids(&set.project(&ev, &graph).unwrap());
    assert_eq!(
        first[0], expected_secs,
        "wall clock is the event's timestamp"
    );
    let again = node_ids(&set.project(&ev, &graph).unwrap());
    assert_eq!(first, again, "same event, same randomness");

    let mut other = ev;
    other.event_hash = leviathan::digest::Sha256::of(b"another event");
    let third = node_ids(&set.project(&other, &graph).unwrap());
    assert_eq!(third[0], expected_secs);
    assert_ne!(third[1], first[1], "randomness follows the event hash");

    // A new load (a restart) gives the same answer for the same event.
    let set2 = ProjectorSet::load(vec![source(wasi_projector())], None).unwrap();
    assert_eq!(node_ids(&set2.project(&ev, &graph).unwrap()), first);

    // A malformed timestamp is reported, not guessed.
    let mut bad = ev;
    bad.timestamp = "yesterday";
    assert_eq!(
        set.project(&bad, &graph).unwrap_err().code(),
        "invalid_event"
    );
}

#[test]
fn compiled_cache_is_written_then_reused() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let bytes = good_projector();
    let cwasm = |p: &std::path::Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(p)
            .map(|rd| {
                rd.map(|e| e.unwrap().path())
                    .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
                    .collect()
            })
            .unwrap_or_default()
    };

    let first = ProjectorSet::load(vec![source(bytes.clone())], Some(&cache)).unwrap();
    assert_eq!(first.cache_hits(), 0);
    let files = cwasm(&cache);
    assert_eq!(files.len(), 1, "one compiled file written");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with(&leviathan::digest::Sha256::of(&bytes).to_hex()));
    let mtime = std::fs::metadata(&files[0]).unwrap().modified().unwrap();

    let second = ProjectorSet::load(vec![source(bytes.clone())], Some(&cache)).unwrap();
    assert_eq!(second.cache_hits(), 1, "second load deserializes");
    assert_eq!(
        std::fs::metadata(&files[0]).unwrap().modified().unwrap(),
        mtime
    );
    assert_eq!(
        second
            .project(&event(1, "e1", "attempt.created"), &MemGraph::default())
            .unwrap(),
        expected_good_ops()
    );
    assert_eq!(second.projectors(), first.projectors());

    // A damaged cache file costs a recompile, not a failure.
    std::fs::write(&files[0], b"garbage").unwrap();
    let third = ProjectorSet::load(vec![source(bytes.clone())], Some(&cache)).unwrap();
    assert_eq!(third.cache_hits(), 0);
    assert_eq!(
        third
            .project(&event(1, "e1", "attempt.created"), &MemGraph::default())
            .unwrap(),
        expected_good_ops()
    );
    let fourth = ProjectorSet::load(vec![source(bytes)], Some(&cache)).unwrap();
    assert_eq!(fourth.cache_hits(), 1, "the rewritten file is used again");
}

fn load_err(sources: Vec<ProjectorSource>) -> LoadError {
    ProjectorSet::load(sources, None).expect_err("load must fail")
}

#[test]
fn bad_descriptions_and_components_are_refused_at_load() {
    let bad = |d: Describe<'_>| load_err(vec![source(static_projector(&d, |x| x.ok_ops(&[])))]);
    for (d, needle) in [
        (
            Describe {
                name: "",
                ..Describe::default()
            },
            "name is empty",
        ),
        (
            Describe {
                version: "",
                ..Describe::default()
            },
            "version is empty",
        ),
        (
            Describe {
                handles: &[],
                ..Describe::default()
            },
            "handles no event types",
        ),
        (
            Describe {
                handles: &["a*b"],
                ..Describe::default()
            },
            "neither an exact name",
        ),
        (
            Describe {
                handles: &["*"],
                ..Describe::default()
            },
            "neither an exact name",
        ),
        (
            Describe {
                handles: &[".*"],
                ..Describe::default()
            },
            "neither an exact name",
        ),
        (
            Describe {
                node_types: &[""],
                ..Describe::default()
            },
            "node type is empty",
        ),
    ] {
        let e = bad(d);
        assert!(e.to_string().contains(needle), "{e}");
        assert!(e.to_string().contains("checking describe output"), "{e}");
    }

    let e = load_err(vec![source(good_projector()), source(good_projector())]);
    assert!(
        matches!(
            e,
            LoadError::Duplicate {
                first: 0,
                second: 1,
                ..
            }
        ),
        "{e}"
    );

    let core_module = wat::parse_str("(module)").unwrap();
    let e = load_err(vec![source(core_module)]);
    assert!(e.to_string().contains("compiling"), "{e}");

    let foreign =
        wat::parse_str(r#"(component (import "example:other/thing" (instance)))"#).unwrap();
    let e = load_err(vec![source(foreign)]);
    assert!(e.to_string().contains("checking imports"), "{e}");
    assert!(e.to_string().contains("example:other/thing"), "{e}");
}

#[test]
fn describe_trap_is_a_load_error() {
    let mut d = Data::default();
    let r = d.ok_ops(&[]);
    let wat = projector_wat(&Describe::default(), d, "", "", &format!("(i32.const {r})")).replace(
        "(func (export \"describe\") (result i32)",
        "(func (export \"describe\") (result i32) unreachable",
    );
    let e = load_err(vec![source(component(&wat))]);
    assert!(e.to_string().contains("calling describe"), "{e}");
    assert!(e.to_string().contains("unreachable"), "{e}");
}

#[test]
fn set_is_send_and_sync_and_projects_from_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ProjectorSet>();
    let set = ProjectorSet::load(vec![source(good_projector())], None).unwrap();
    std::thread::scope(|s| {
        for t in 0..2 {
            let set = &set;
            s.spawn(move || {
                let graph = MemGraph::default();
                for i in 0..50 {
                    let ops = set
                        .project(&event(t * 100 + i, "e", "attempt.created"), &graph)
                        .unwrap();
                    assert_eq!(ops.len(), 5);
                }
            });
        }
    });
}

const WASI_IO: &str = r#"
package wasi:io@0.2.0;
interface error {
    resource error;
}
interface streams {
    use error.{error};
    variant stream-error {
        last-operation-failed(error),
        closed,
    }
    resource output-stream {
        blocking-write-and-flush: func(contents: list<u8>) -> result<_, stream-error>;
    }
}
"#;

const WASI_CLI: &str = r#"
package wasi:cli@0.2.0;
interface stdout {
    use wasi:io/streams@0.2.0.{output-stream};
    get-stdout: func() -> output-stream;
}
interface stderr {
    use wasi:io/streams@0.2.0.{output-stream};
    get-stderr: func() -> output-stream;
}
"#;

const WASI_STDIO_WORLD: &str = r#"
package leviathan:test-stdio;
world stdio-projector {
    include leviathan:projector/projector@1.0.0;
    import wasi:cli/stdout@0.2.0;
    import wasi:cli/stderr@0.2.0;
}
"#;

/// A guest that writes `line` `times` times to stdout, then either returns no
/// ops or (if `panic_message` is set) writes it to stderr and traps, the way a
/// Rust guest panics.
fn stdio_projector(line: &str, times: u32, panic_message: Option<&str>) -> Vec<u8> {
    let desc = Describe {
        name: "chatty",
        version: "1.0.0",
        handles: &["say.*"],
        node_types: &[],
        edge_types: &[],
    };
    let mut d = Data::default();
    let (lp, ll) = d.str(line);
    let (pp, pl) = d.str(panic_message.unwrap_or(""));
    let ret = d.zeros(12, 4);
    let result = d.ok_ops(&[]);
    let imports = r#"
  (import "wasi:cli/stdout@0.2.0" "get-stdout" (func $get_stdout (result i32)))
  (import "wasi:cli/stderr@0.2.0" "get-stderr" (func $get_stderr (result i32)))
  (import "wasi:io/streams@0.2.0" "[method]output-stream.blocking-write-and-flush" (func $write (param i32 i32 i32 i32)))
  (import "wasi:io/streams@0.2.0" "[resource-drop]output-stream" (func $drop_stream (param i32)))"#;
    let panic = if panic_message.is_some() {
        format!(
            "(local.set $s (call $get_stderr))
    (call $write (local.get $s) (i32.const {pp}) (i32.const {pl}) (i32.const {ret}))
    unreachable"
        )
    } else {
        String::new()
    };
    let body = format!(
        r#"(local $s i32) (local $i i32)
    (local.set $s (call $get_stdout))
    (block $done
      (loop $again
        (br_if $done (i32.ge_u (local.get $i) (i32.const {times})))
        (call $write (local.get $s) (i32.const {lp}) (i32.const {ll}) (i32.const {ret}))
        (if (i32.load8_u (i32.const {ret})) (then unreachable))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $again)))
    (call $drop_stream (local.get $s))
    {panic}
    (i32.const {result})"#
    );
    component_for_world(
        &projector_wat(&desc, d, imports, "", &body),
        &[WASI_IO, WASI_CLI],
        Some((WASI_STDIO_WORLD, "stdio-projector")),
    )
}

/// Captures everything logged through `tracing` while `f` runs.
fn logs_of<R>(f: impl FnOnce() -> R) -> (R, String) {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let r = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    (r, text)
}

#[test]
fn guest_stdout_goes_to_tracing_capped_and_a_panic_message_reaches_the_error() {
    let limits = Limits {
        output_bytes: 100,
        ..Limits::default()
    };
    let set = ProjectorSet::load(
        vec![with_limits(
            stdio_projector("hello from guest\n", 1, None),
            limits.clone(),
        )],
        None,
    )
    .unwrap();
    let (ops, logs) = logs_of(|| set.project(&event(1, "e1", "say.hi"), &MemGraph::default()));
    assert_eq!(ops.unwrap(), vec![]);
    assert!(logs.contains("hello from guest"), "{logs}");
    assert!(logs.contains("stdout"), "{logs}");

    // 50 lines of 17 bytes, 100 kept: the guest never sees an error.
    let set = ProjectorSet::load(
        vec![with_limits(
            stdio_projector("0123456789abcdef\n", 50, None),
            limits.clone(),
        )],
        None,
    )
    .unwrap();
    let (ops, logs) = logs_of(|| set.project(&event(1, "e1", "say.lots"), &MemGraph::default()));
    assert_eq!(ops.unwrap(), vec![]);
    assert!(logs.contains("dropped_bytes=750"), "{logs}");

    let set = ProjectorSet::load(
        vec![with_limits(
            stdio_projector(
                "about to fail\n",
                1,
                Some("panicked at src/lib.rs:3:5: boom\n"),
            ),
            limits,
        )],
        None,
    )
    .unwrap();
    let err = set
        .project(&event(9, "e9", "say.boom"), &MemGraph::default())
        .unwrap_err();
    assert_eq!(err.code(), "trap");
    assert_eq!(
        err.to_string(),
        "projector chatty@1.0.0 failed on event 9 (e9): trap: wasm `unreachable` instruction executed \
         (guest stderr: panicked at src/lib.rs:3:5: boom)"
    );
}

/// A graph-independent projector named `name` handling `read.*` that returns
/// one `put-node` of `id`, or (with `reject`) refuses every event.
fn pure_projector(name: &'static str, id: &'static str, reject: bool) -> Vec<u8> {
    let desc = Describe {
        name,
        version: "1.0.0",
        handles: &["read.*"],
        node_types: &["attempt"],
        edge_types: &[],
    };
    static_projector(&desc, |d| {
        if reject {
            d.err("nope", "refused by a graph-independent projector")
        } else {
            d.ok_ops(&[StaticOp::PutNode {
                id,
                node_type: "attempt",
                properties: "{}",
            }])
        }
    })
}

/// `prepare` (done ahead, in parallel, by rebuild) followed by `finish` must
/// give exactly what `project` gives: every projector's ops in set order, and
/// on failure the first failing projector in set order, whether it reads the
/// graph or not.
#[test]
fn prepared_then_finished_equals_projected_in_set_order() {
    let graph = MemGraph::default()
        .with_node("n1", "run", json!({"state": "open"}))
        .with_edge("n1", "links", "n2", json!({}));
    let empty = MemGraph::default();
    let cases = [
        // pure, reader, pure: all succeed on `graph`, the reader fails on `empty`.
        vec![
            pure_projector("first", "a:1", false),
            graph_reading_projector(),
            pure_projector("last", "a:2", false),
        ],
        // the reader fails (on `empty`) before a later pure projector rejects.
        vec![
            graph_reading_projector(),
            pure_projector("last", "a:2", true),
        ],
        // a pure projector rejects before the reader runs.
        vec![
            pure_projector("first", "a:1", true),
            graph_reading_projector(),
        ],
    ];
    for (case, sources) in cases.into_iter().enumerate() {
        let set = ProjectorSet::load(sources.into_iter().map(source).collect(), None).unwrap();
        assert!(set.has_graph_independent());
        let events: Vec<_> = (1..=40)
            .map(|seq| {
                event(
                    seq,
                    "e",
                    if seq % 5 == 0 {
                        "other.type"
                    } else {
                        "read.it"
                    },
                )
            })
            .collect();
        for g in [&graph, &empty] {
            let prepared = set.prepare_all(&events);
            assert_eq!(prepared.len(), events.len());
            for (ev, prep) in events.iter().zip(prepared) {
                let want = set.project(ev, g);
                let got = set.finish(ev, prep, g);
                assert_eq!(got, want, "case {case}, seq {}", ev.seq);
            }
        }
    }
    // The first case on the full graph: ops of all three, in set order.
    let set = ProjectorSet::load(
        vec![
            source(pure_projector("first", "a:1", false)),
            source(graph_reading_projector()),
            source(pure_projector("last", "a:2", false)),
        ],
        None,
    )
    .unwrap();
    let ev = event(3, "e3", "read.it");
    let ops = set.finish(&ev, set.prepare(&ev), &graph).unwrap();
    let kinds: Vec<String> = ops
        .iter()
        .map(|op| match op {
            Op::PutNode { id, .. } => format!("node {id}"),
            Op::PutEdge { from, to, .. } => format!("edge {from}->{to}"),
            other => panic!("unexpected op {other:?}"),
        })
        .collect();
    assert_eq!(kinds, ["node a:1", "node n1", "edge n1->n2", "node a:2"]);
    let err = set.finish(&ev, set.prepare(&ev), &empty).unwrap_err();
    assert_eq!(err.projector, "reader@1.0.0");
}
