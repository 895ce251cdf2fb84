//! Misbehaving projectors loaded into a real server: each failure refuses its
//! bundle with a precise error, stores nothing, and the server keeps working.

use crate::common::wasm::{body_projector, static_projector, Describe, StaticOp};
use crate::common::*;
use serde_json::json;

/// `name@0.1.0` owning the types `Thing-NAME` and `LINKS-NAME` (a set's
/// projectors may not share a type).
fn describe<'a>(name: &'a str, handles: &'a [&'a str]) -> Describe<'a> {
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    Describe {
        name,
        version: "0.1.0",
        handles,
        node_types: Box::leak(vec![leak(format!("Thing-{name}"))].into_boxed_slice()),
        edge_types: Box::leak(vec![leak(format!("LINKS-{name}"))].into_boxed_slice()),
    }
}

#[test]
fn abusive_projectors_fail_cleanly_and_the_next_bundle_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: Vec<u8>| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p.display().to_string()
    };
    let looper = write(
        "loop.wasm",
        body_projector(&describe("looper", &["abuse.loop"]), "(loop $l (br $l))"),
    );
    let bomber = write(
        "bomb.wasm",
        body_projector(
            &describe("bomber", &["abuse.bomb"]),
            "(loop $l (drop (memory.grow (i32.const 16))) (br $l))",
        ),
    );
    let trapper = write(
        "trap.wasm",
        body_projector(&describe("trapper", &["abuse.trap"]), "unreachable"),
    );
    let sneaky = write(
        "sneaky.wasm",
        static_projector(&describe("sneaky", &["abuse.undeclared"]), |d| {
            d.ok_ops(&[StaticOp::PutNode {
                id: "x",
                node_type: "Secret",
                properties: "{}",
            }])
        }),
    );
    let projectors = format!("core,{looper}#fuel=2000000,{bomber}#memory_mib=2,{trapper},{sneaky}");
    let data = tempfile::tempdir().unwrap();
    let s = Server::start_in(data.path(), &[("LEVIATHAN_PROJECTORS", &projectors)]);
    let (_, p) = s.get("/v1/projection");
    assert_eq!(p["projectors"].as_array().unwrap().len(), 5, "{p}");

    for (etype, cause, projector, words) in [
        ("abuse.loop", "out_of_fuel", "looper@0.1.0", "out of fuel"),
        ("abuse.bomb", "memory_limit", "bomber@0.1.0", "memory limit"),
        ("abuse.trap", "trap", "trapper@0.1.0", "trap"),
        (
            "abuse.undeclared",
            "undeclared_type",
            "sneaky@0.1.0",
            "Secret",
        ),
    ] {
        let evs = vec![
            event(
                "good-1",
                "attempt.created",
                json!({"attempt_id": "a1", "task_id": "t"}),
            ),
            event(&format!("bad-{etype}"), etype, json!({})),
        ];
        let (st, r) = s.ingest(&bundle(&format!("b-{etype}"), evs));
        assert_eq!(st, 422, "{etype}: {r}");
        assert_eq!(r["error"]["code"], "projection_failed");
        assert_eq!(r["error"]["details"]["cause"], cause, "{r}");
        assert_eq!(r["error"]["details"]["projector"], projector);
        assert_eq!(r["error"]["details"]["event_index"], 1);
        let msg = r["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(words) && msg.contains(projector) && msg.contains(&format!("bad-{etype}")),
            "{msg}"
        );
        // What to do about it, for the two an author meets first: the
        // limit and the setting that raises it; what a trap usually is.
        match cause {
            "memory_limit" => assert!(
                msg.contains("its limit of 2 MiB: raise `memory_mib`"),
                "{msg}"
            ),
            "trap" => assert!(
                msg.contains("The guest trapped") && msg.contains("{ code, message }"),
                "{msg}"
            ),
            _ => {}
        }
        // Nothing stored: not the good event before it, not its graph node.
        assert_eq!(s.get("/v1/log/head").1["seq"], 0);
        assert_eq!(s.get("/v1/graph/nodes/a1").0, 404);
    }
    // The server keeps working, the same bundle content minus the bad event goes in.
    let (st, r) = s.ingest(&bundle(
        "fine",
        vec![event(
            "good-1",
            "attempt.created",
            json!({"attempt_id": "a1", "task_id": "t"}),
        )],
    ));
    assert_eq!(st, 200, "{r}");
    assert_eq!(s.get("/v1/graph/nodes/a1").0, 200);
    assert_eq!(s.get("/v1/projection").1["applied_seq"], 1);
}

#[test]
fn a_projector_that_does_not_match_its_pin_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.wasm");
    std::fs::write(&p, body_projector(&describe("x", &["x.y"]), "nop")).unwrap();
    let mut cmd = serve_command(&dir.path().join("data"));
    cmd.env(
        "LEVIATHAN_PROJECTORS",
        format!("core,{}#sha256={}", p.display(), "0".repeat(64)),
    );
    let err = refused(cmd);
    assert!(
        err.contains("pin") && err.contains(&sha256_hex(&std::fs::read(&p).unwrap())),
        "{err}"
    );
}
