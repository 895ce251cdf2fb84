//! Every way a projector can fail is classified, reported with the event it
//! failed on, deterministic, and leaves the set working for the next event.

use crate::common::wasm::*;
use crate::projection::{describe_failing, expected_good_ops, good_projector, source, with_limits};
use leviathan::projection::{Failure, Limits, ProjectorSet};

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
