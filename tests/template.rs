//! The projector template teams copy: built from source into a component with
//! its own build script, loaded into a real server next to the core projector,
//! and driven over HTTP (including its use of the `graph` import).
//! Needs the wasm32-unknown-unknown target (the build script installs it).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use crate::common;

use common::*;
use serde_json::json;

#[test]
fn the_template_builds_loads_and_projects() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(root.join("projectors/template/build.sh"))
        .output()
        .expect("run projectors/template/build.sh");
    assert!(
        out.status.success(),
        "template build failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wasm = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let digest = sha256_hex(&std::fs::read(&wasm).unwrap());

    let s = Server::start_with(&[(
        "LEVIATHAN_PROJECTORS",
        &format!("core,{wasm}#sha256={digest}"),
    )]);
    let (_, p) = s.get("/v1/projection");
    assert_eq!(p["projectors"][1]["name"], "topology");
    assert_eq!(p["projectors"][1]["digest"], digest.as_str());

    let evs = vec![
        event(
            "a1",
            "topo.area.discovered",
            json!({"target_id": "radix", "area_id": "backend", "path_prefixes": ["src/"], "file_count": 10}),
        ),
        event(
            "a2",
            "topo.area.discovered",
            json!({"target_id": "radix", "area_id": "web", "path_prefixes": ["web/"], "file_count": 4}),
        ),
        event(
            "s1",
            "topo.subsystem.discovered",
            json!({"target_id": "radix", "subsystem_id": "api", "area_id": "backend"}),
        ),
        event(
            "s2",
            "topo.subsystem.discovered",
            json!({"target_id": "radix", "subsystem_id": "ui", "area_id": "web"}),
        ),
        event(
            "d1",
            "topo.dependency.discovered",
            json!({"target_id": "radix", "from_subsystem_id": "ui", "to_subsystem_id": "api", "evidence": [{"kind": "import"}, {"kind": "import"}]}),
        ),
    ];
    let (st, r) = s.ingest(&bundle("topo", evs));
    assert_eq!(st, 200, "{r}");
    let (_, summary) = s.get("/v1/graph/summary");
    assert_eq!(summary["nodes_by_type"]["Area"], 2);
    assert_eq!(summary["nodes_by_type"]["Subsystem"], 2);
    assert_eq!(summary["edges_by_type"]["CONTAINS"], 2);
    let (_, e) =
        s.get("/v1/graph/nodes/subsystem:radix:ui/edges?direction=out&type=SUBSYSTEM_DEPENDS_ON");
    assert_eq!(e["edges"][0]["to_node"], "subsystem:radix:api");
    // Read through the graph import: the two subsystems sit in different areas.
    assert_eq!(e["edges"][0]["properties"]["cross_area"], true);
    assert_eq!(e["edges"][0]["properties"]["evidence_count"], 2);

    let (st, r) = s.ingest(&bundle(
        "bad",
        vec![event("bad1", "topo.area.discovered", json!({}))],
    ));
    assert_eq!(st, 422);
    assert_eq!(r["error"]["details"]["projector"], "topology@0.1.0");
    assert!(r["error"]["message"].as_str().unwrap().contains("area_id"));
}
