//! `leviathan projector …`, the projector author's tools, driven as an author
//! drives them: a crate made by `new` from the embedded template, built by
//! `build` into a real component (once, shared by the tests: it compiles a
//! wasm crate), inspected, tested against its vectors and against a file of
//! events (alone and after the core projector, with and without `--expect`),
//! benchmarked; and each command on broken input (not a component, a
//! component of another world, failing vectors, a refused event, a changed
//! expectation) exiting 1 with a message that says what is wrong.
//! Needs the wasm32-unknown-unknown target and the template's dependencies
//! in the cargo home (as tests/template.rs).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use crate::common;

use common::wasm::component_for_world;
use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

/// The crate `new` made and the component `build` made of it.
struct Built {
    krate: PathBuf,
    wasm: PathBuf,
    build_stdout: String,
}

fn run(args: &[&str]) -> Output {
    let out = leviathan().arg("projector").args(args).output().unwrap();
    if std::env::var_os("PCLI_TEST_VERBOSE").is_some() {
        eprintln!(
            "$ leviathan projector {}\n{}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "`leviathan projector {}` failed ({}):\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail with exit status 1; its stderr.
fn fails(args: &[&str]) -> String {
    let out = run(args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "`leviathan projector {}` must exit 1:\n{}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stderr).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `new deploys` then `build`, once for all tests.
fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        // A fixed place (made afresh): the crate's path is in the build's
        // flags (remapped), so the same path lets runs share compiled
        // dependencies in the target directory below.
        let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("projector-cli");
        let krate = base.join("deploys");
        if krate.exists() {
            std::fs::remove_dir_all(&krate).unwrap();
        }
        std::fs::create_dir_all(&base).unwrap();
        let printed = ok(&["new", "deploys", s(&krate)]);
        assert_eq!(printed.trim(), s(&krate));
        for f in [
            "Cargo.toml",
            "Cargo.lock",
            "src/lib.rs",
            "wit/projector.wit",
            "vectors.ndjson",
            "README.md",
            "build.sh",
        ] {
            assert!(krate.join(f).is_file(), "new did not write {f}");
        }
        // Built as an author builds it: the crate's own build.sh (which runs
        // `leviathan projector build` with the template's stack size). The
        // bytes do not depend on where the target directory is. Cargo's
        // CARGO_TARGET_DIR says where (as it does for `cargo build`).
        let target = base.join("target");
        let wasm = target.join("deploys.wasm");
        if wasm.exists() {
            std::fs::remove_file(&wasm).unwrap();
        }
        let out = std::process::Command::new("bash")
            .arg(krate.join("build.sh"))
            .env("CARGO_TARGET_DIR", &target)
            .env("LEVIATHAN", env!("CARGO_BIN_EXE_leviathan"))
            .env_remove("STACK_SIZE")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "build.sh failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let build_stdout = String::from_utf8(out.stdout).unwrap();
        assert!(wasm.is_file(), "no component at {}", wasm.display());
        Built {
            krate,
            wasm,
            build_stdout,
        }
    })
}

/// The template's build.sh links a 64 KiB stack, not Rust's 1 MiB: the host
/// resets all of an instance's memory after every event, so a 17-page guest
/// (1 MiB of stack, then its data) paid for 17 pages on every event.
#[test]
fn the_template_build_links_a_small_stack() {
    let b = built();
    let engine = wasmtime::Engine::default();
    let component = wasmtime::component::Component::from_file(&engine, &b.wasm).unwrap();
    let needs = component.resources_required().unwrap();
    // 64 KiB of stack and ~33 KB of data: two pages.
    assert_eq!(needs.max_initial_memory_size, Some(2), "pages of 64 KiB");
}

#[test]
fn build_prints_the_digest_and_a_manifest_entry_that_loads() {
    let b = built();
    let digest = sha256_hex(&std::fs::read(&b.wasm).unwrap());
    let out = &b.build_stdout;
    assert!(out.contains(&format!("# sha256 {digest}")), "{out}");
    // The entry is valid manifest TOML: a server started with it (and the
    // core) loads the component, runs its vectors and projects with it.
    let entry = out
        .lines()
        .skip_while(|l| !l.starts_with("[[projector]]"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(entry.contains("name = \"deploys\""), "{out}");
    assert!(entry.contains(&format!("sha256 = \"{digest}\"")), "{out}");
    assert!(
        entry.contains(&format!(
            "test_vectors = \"{}\"",
            s(&b.krate.join("vectors.ndjson"))
        )),
        "{out}"
    );
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("projectors.toml");
    std::fs::write(
        &manifest,
        format!("[[projector]]\nname = \"core\"\nbuiltin = \"core\"\n\n{entry}\n"),
    )
    .unwrap();
    let srv = Server::start_with(&[("LEVIATHAN_PROJECTORS_FILE", s(&manifest))]);
    let (_, p) = srv.get("/v1/projection");
    assert_eq!(p["projectors"][1]["name"], "deploys", "{p}");
    assert_eq!(p["projectors"][1]["digest"], digest.as_str());
    let (st, r) = srv.ingest(&bundle(
        "b1",
        vec![event(
            "e1",
            "topo.area.discovered",
            json!({"target_id": "radix", "area_id": "backend"}),
        )],
    ));
    assert_eq!(st, 200, "{r}");
    let (_, summary) = srv.get("/v1/graph/summary");
    assert_eq!(summary["nodes_by_type"]["Area"], 1, "{summary}");
}

#[test]
fn the_new_crate_passes_its_native_tests() {
    let b = built();
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("projector-cli-native");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["test", "--locked", "--manifest-path"])
        .arg(b.krate.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k == "RUSTFLAGS" || k == "CARGO_ENCODED_RUSTFLAGS" || k.starts_with("CARGO_PROFILE_") {
            cmd.env_remove(&*k);
        }
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("test result: ok. 2 passed"), "{stdout}");
}

#[test]
fn inspect_shows_what_the_component_declares() {
    let b = built();
    let digest = sha256_hex(&std::fs::read(&b.wasm).unwrap());
    let v: Value = serde_json::from_str(&ok(&["inspect", s(&b.wasm), "--json"])).unwrap();
    assert_eq!(v["world"]["ok"], true);
    assert_eq!(v["world"]["contract_version"], "1.0.0");
    assert_eq!(v["name"], "deploys");
    assert_eq!(v["version"], "0.1.0");
    assert_eq!(
        v["handles"],
        json!([
            "topo.area.discovered",
            "topo.subsystem.discovered",
            "topo.dependency.discovered"
        ])
    );
    assert_eq!(v["node_types"], json!(["Area", "Subsystem"]));
    assert_eq!(v["edge_types"], json!(["CONTAINS", "SUBSYSTEM_DEPENDS_ON"]));
    assert_eq!(v["wasi"], false);
    assert_eq!(v["reads_graph"], true);
    assert!(
        v["imports"]
            .as_array()
            .unwrap()
            .contains(&json!("leviathan:projector/graph@1.0.0")),
        "{v}"
    );
    assert_eq!(v["sha256"], digest.as_str());
    assert_eq!(v["size"], std::fs::metadata(&b.wasm).unwrap().len(), "{v}");
    let text = ok(&["inspect", s(&b.wasm)]);
    assert!(text.contains("name         deploys"), "{text}");
    assert!(text.contains("wasi         none"), "{text}");
    assert!(text.contains(&digest), "{text}");
    // The embedded core projector, through its pinned file.
    let core = Path::new(env!("CARGO_MANIFEST_DIR")).join("projectors/dist/core.wasm");
    let v: Value = serde_json::from_str(&ok(&["inspect", s(&core), "--json"])).unwrap();
    assert_eq!(v["name"], "core");
    assert_eq!(v["reads_graph"], false);
    assert_eq!(v["imports"], json!(["leviathan:projector/types@1.0.0"]));
}

#[test]
fn test_runs_the_vectors_and_fails_on_a_wrong_one() {
    let b = built();
    let vectors = b.krate.join("vectors.ndjson");
    let v: Value =
        serde_json::from_str(&ok(&["test", s(&b.wasm), "--events", s(&vectors)])).unwrap();
    assert_eq!(v["vectors"], 6, "{v}");
    assert_eq!(v["passed"], 6, "{v}");

    // One expected property changed: exit 1, naming the vector, expected and actual.
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong.ndjson");
    let text = std::fs::read_to_string(&vectors).unwrap();
    let changed = text.replacen("\"file_count\":10", "\"file_count\":11", 1);
    assert_ne!(changed, text);
    std::fs::write(&wrong, changed).unwrap();
    let err = fails(&["test", s(&b.wasm), "--events", s(&wrong)]);
    assert!(
        err.contains("line 1")
            && err.contains("an area becomes an Area node")
            && err.contains("\"file_count\":11")
            && err.contains("\"file_count\":10"),
        "{err}"
    );
}

fn events_file(dir: &Path, lines: &[Value]) -> PathBuf {
    let path = dir.join("events.ndjson");
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn test_projects_events_into_a_scratch_graph_and_compares_with_expect() {
    let b = built();
    let dir = tempfile::tempdir().unwrap();
    let events = events_file(
        dir.path(),
        &[
            json!({"event_type": "topo.area.discovered", "event_id": "a1", "target": "radix",
                   "payload": {"area_id": "backend"}}),
            json!({"event_type": "topo.area.discovered", "event_id": "a2", "target": "radix",
                   "payload": {"area_id": "web"}}),
            json!({"event_type": "topo.subsystem.discovered", "event_id": "s1", "target": "radix",
                   "payload": {"subsystem_id": "api", "area_id": "backend"}}),
            json!({"event_type": "topo.subsystem.discovered", "event_id": "s2", "target": "radix",
                   "payload": {"subsystem_id": "ui", "area_id": "web"}}),
            // Reads the graph the events before it made.
            json!({"event_type": "topo.dependency.discovered", "event_id": "d1", "target": "radix",
                   "timestamp": "2026-02-01T12:00:00+01:00",
                   "payload": {"from_subsystem_id": "ui", "to_subsystem_id": "api"}}),
            json!({"event_type": "other.thing", "payload": {}}),
        ],
    );
    let out = ok(&["test", s(&b.wasm), "--events", s(&events)]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let evs = v["events"].as_array().unwrap();
    assert_eq!(evs.len(), 6);
    assert_eq!(evs[0]["seq"], 1);
    assert_eq!(evs[0]["projectors"][0]["projector"], "deploys@0.1.0");
    assert_eq!(
        evs[0]["projectors"][0]["ops"][0],
        json!({"op": "put_node", "id": "area:radix:backend", "node_type": "Area",
               "properties": {"area_id": "backend", "target_id": "radix"}})
    );
    let dep = &evs[4]["projectors"][0]["ops"][0];
    assert_eq!(dep["properties"]["cross_area"], true, "{dep}");
    // The log's normalized time.
    assert_eq!(dep["properties"]["created_at"], "2026-02-01T11:00:00Z");
    assert_eq!(evs[5]["projectors"], json!([]), "unhandled: no ops");
    let nodes = v["nodes"].as_array().unwrap();
    // Nodes and edges as the HTTP API gives them (`node_id`, not `id`).
    assert!(nodes.iter().all(|n| n.get("id").is_none()), "{v}");
    let ids: Vec<&str> = nodes
        .iter()
        .map(|n| n["node_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "area:radix:backend",
            "area:radix:web",
            "subsystem:radix:api",
            "subsystem:radix:ui"
        ]
    );
    let edges: Vec<(&str, &str, &str)> = v["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["from_node"].as_str().unwrap(),
                e["edge_type"].as_str().unwrap(),
                e["to_node"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        edges,
        [
            ("area:radix:backend", "CONTAINS", "subsystem:radix:api"),
            ("area:radix:web", "CONTAINS", "subsystem:radix:ui"),
            (
                "subsystem:radix:ui",
                "SUBSYSTEM_DEPENDS_ON",
                "subsystem:radix:api"
            ),
        ]
    );
    assert_eq!(v["state"]["seq"], 6);
    assert_eq!(v["state"]["digest"].as_str().unwrap().len(), 64);

    // Its own output as the expectation: passes.
    let expect = dir.path().join("expected.json");
    std::fs::write(&expect, &out).unwrap();
    ok(&[
        "test",
        s(&b.wasm),
        "--events",
        s(&events),
        "--expect",
        s(&expect),
    ]);
    // Only some keys, one value changed: exit 1, naming the event and the path.
    let mut changed = json!({"events": v["events"].clone(), "edges": v["edges"].clone()});
    changed["events"][2]["projectors"][0]["ops"][1]["to"] = json!("subsystem:radix:nope");
    std::fs::write(&expect, changed.to_string()).unwrap();
    let err = fails(&[
        "test",
        s(&b.wasm),
        "--events",
        s(&events),
        "--expect",
        s(&expect),
    ]);
    assert!(
        err.contains("event at line 3 (s1, topo.subsystem.discovered)")
            && err.contains("events[2].projectors[0].ops[1].to")
            && err.contains("expected \"subsystem:radix:nope\", actual \"subsystem:radix:api\""),
        "{err}"
    );
}

#[test]
fn test_after_core_composes_and_a_refused_event_fails_the_run() {
    let b = built();
    let dir = tempfile::tempdir().unwrap();
    let events = events_file(
        dir.path(),
        &[
            json!({"event_type": "target.registered", "event_id": "t1", "target": "radix",
                   "payload": {"target_id": "radix", "name": "Radix"}}),
            json!({"event_type": "topo.area.discovered", "event_id": "a1", "target": "radix",
                   "payload": {"area_id": "backend"}}),
            // Refused by the projector: missing area_id.
            json!({"event_type": "topo.area.discovered", "event_id": "bad", "target": "radix",
                   "payload": {}}),
        ],
    );
    let out = run(&["test", s(&b.wasm), "--events", s(&events), "--after-core"]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["projectors"][0]["name"], "core");
    assert_eq!(v["projectors"][1]["name"], "deploys");
    let evs = v["events"].as_array().unwrap();
    assert_eq!(evs[0]["projectors"][0]["projector"], "core@1.1.1");
    assert_eq!(evs[0]["projectors"][0]["ops"][0]["node_type"], "Target");
    assert_eq!(evs[1]["projectors"][0]["projector"], "deploys@0.1.0");
    assert!(evs[2]["error"].as_str().unwrap().contains("area_id"), "{v}");
    // The refused event took no seq: the scratch log holds two events.
    assert_eq!(v["state"]["seq"], 2);
    let ids: Vec<&str> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["area:radix:backend", "radix"]);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("event line 3 (bad, topo.area.discovered)")
            && err.contains("deploys@0.1.0")
            && err.contains("missing_field"),
        "{err}"
    );
}

#[test]
fn bench_reports_per_event_costs() {
    let b = built();
    let vectors = b.krate.join("vectors.ndjson");
    let v: Value = serde_json::from_str(&ok(&[
        "bench",
        s(&b.wasm),
        "--events",
        s(&vectors),
        "--runs",
        "40",
        "--warmup",
        "5",
        "--json",
    ]))
    .unwrap();
    assert_eq!(v["runs"], 40, "{v}");
    // The vector that expects a refusal is left out.
    assert_eq!(v["events_in_file"], 5, "{v}");
    assert_eq!(v["events_handled"], 5, "{v}");
    let (p50, p99, min, max) = (
        v["p50_us"].as_f64().unwrap(),
        v["p99_us"].as_f64().unwrap(),
        v["min_us"].as_f64().unwrap(),
        v["max_us"].as_f64().unwrap(),
    );
    assert!(min > 0.0 && min <= p50 && p50 <= p99 && p99 <= max, "{v}");
    assert!(v["events_per_second"].as_f64().unwrap() > 0.0, "{v}");
    // The template's 64 KiB stack and its data: two pages.
    assert_eq!(v["initial_memory_pages"], 2, "{v}");
    let text = ok(&["bench", s(&b.wasm), "--events", s(&vectors), "--runs", "5"]);
    assert!(text.contains("memory 2 pages (128 KiB)"), "{text}");
}

/// A component of another world: exports `run`, not `describe`/`project`.
fn other_world_component() -> Vec<u8> {
    component_for_world(
        r#"(module (func (export "run") (result i32) (i32.const 7)))"#,
        &[],
        Some((
            "package leviathan:other;\nworld other {\n  export run: func() -> u32;\n}\n",
            "other",
        )),
    )
}

#[test]
fn broken_components_are_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let events = events_file(
        dir.path(),
        &[json!({"event_type": "topo.area.discovered", "payload": {"area_id": "x"}})],
    );
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not wasm at all").unwrap();
    let module = dir.path().join("module.wasm");
    std::fs::write(&module, wat::parse_str("(module)").unwrap()).unwrap();
    let other = dir.path().join("other.wasm");
    std::fs::write(&other, other_world_component()).unwrap();

    for cmd in ["inspect", "test", "bench"] {
        let with_events = |f: &Path| -> Vec<String> {
            let mut a = vec![cmd.to_string(), s(f).to_string()];
            if cmd != "inspect" {
                a.extend(["--events".into(), s(&events).to_string()]);
            }
            a
        };
        let args = with_events(&text);
        let err = fails(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(
            err.contains("is not a WebAssembly component"),
            "{cmd}: {err}"
        );
        let args = with_events(&module);
        let err = fails(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(
            err.contains("is a core WebAssembly module, not a component"),
            "{cmd}: {err}"
        );
        let args = with_events(&other);
        let err = fails(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(
            err.contains("is not a loadable projector") && err.contains("linking"),
            "{cmd}: {err}"
        );
    }
    let missing = dir.path().join("missing.wasm");
    let err = fails(&["inspect", s(&missing)]);
    assert!(err.contains("missing.wasm"), "{err}");
}

#[test]
fn new_and_build_refuse_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let err = fails(&["new", "Bad Name", s(&dir.path().join("x"))]);
    assert!(err.contains("lowercase letters"), "{err}");
    std::fs::write(dir.path().join("file"), "x").unwrap();
    let err = fails(&["new", "deploys", s(dir.path())]);
    assert!(err.contains("is not empty"), "{err}");
    // A crate that is not a cdylib.
    let krate = dir.path().join("lib");
    std::fs::create_dir(&krate).unwrap();
    std::fs::write(
        krate.join("Cargo.toml"),
        "[package]\nname = \"x\"\nversion = \"0.1.0\"\n",
    )
    .unwrap();
    let err = fails(&["build", s(&krate)]);
    assert!(err.contains("cdylib"), "{err}");
}
