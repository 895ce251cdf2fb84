//! Projectors in other languages: the `deploys` example of
//! projectors/examples/ written in Python (componentize-py, from PyPI) and in
//! JavaScript (ComponentizeJS, from npm), built from source here with their
//! pinned toolchains, next to its Rust twin. Each runs in a real server after
//! the core projector, from a manifest that pins its digest and names the
//! shared test vectors (run when the server loads the set). Checked: the three
//! produce the same graph and the same state digest from the same events; two
//! runs and a `leviathan rebuild` give the same digest; and a Python guest
//! that probes its WASI sandbox finds the clock frozen at the event's time,
//! timers that return at once (a one-hour sleep), randomness that differs
//! from event to event and is the same on every replay, no environment and
//! no files.
//!
//! The toolchains are installed once into `target/tmp/polyglot-toolchain`
//! and reused. Where they cannot be installed (no access to PyPI or npm) the
//! test prints a SKIP line and passes, unless `LEVIATHAN_REQUIRE_POLYGLOT=1`
//! (set by .ci/run), which makes that a failure.
//!
//! componentize-py and ComponentizeJS do not build byte-identical components
//! (projectors/examples/README.md), so each fresh build is a new digest that
//! the server compiles anew (minutes for an 18 MB component in a debug
//! build). A component built here is therefore kept under `target/tmp`,
//! keyed by the SHA-256 of everything it is built from (sources, toolchain
//! pins, build script, WIT), and reused while none of that changes; a clean
//! target dir (CI) or `LEVIATHAN_POLYGLOT_REBUILD=1` builds from source.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn scratch() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("polyglot");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Where the Python venv and the npm packages are installed, across runs.
fn toolchain_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("polyglot-toolchain")
}

fn required() -> bool {
    std::env::var("LEVIATHAN_REQUIRE_POLYGLOT").as_deref() == Ok("1")
}

enum Built {
    Component(PathBuf),
    /// The build script's exit status 3: its toolchain could not be installed.
    NoToolchain(String),
}

/// SHA-256 (hex, first 16 characters) of `files`' contents, in order.
fn inputs_key(files: &[PathBuf]) -> String {
    let mut all = Vec::new();
    for f in files {
        let bytes = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        all.extend_from_slice(
            f.strip_prefix(root())
                .unwrap_or(f)
                .to_string_lossy()
                .as_bytes(),
        );
        all.push(0);
        all.extend_from_slice(sha256_hex(&bytes).as_bytes());
    }
    sha256_hex(&all)[..16].to_string()
}

/// A component built earlier from the same inputs, unless a rebuild is asked for.
fn cached(out: &Path) -> bool {
    std::env::var("LEVIATHAN_POLYGLOT_REBUILD").as_deref() != Ok("1") && out.is_file()
}

/// Runs `projectors/examples/<lang>/build.sh <out>` (unless a component
/// built from the same inputs is at hand).
fn build(lang: &str) -> Built {
    let dir = root().join("projectors/examples").join(lang);
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    inputs.extend(
        std::fs::read_dir(dir.join("src"))
            .into_iter()
            .flatten()
            .map(|e| e.unwrap().path()),
    );
    inputs.sort();
    inputs.push(root().join("wit/projector.wit"));
    let out = scratch().join(format!("deploys-{lang}-{}.wasm", inputs_key(&inputs)));
    if lang != "rust" && cached(&out) {
        eprintln!(
            "polyglot: the {lang} example's sources are unchanged: reusing {}",
            out.display()
        );
        return Built::Component(out);
    }
    let started = Instant::now();
    let o = Command::new(
        root()
            .join("projectors/examples")
            .join(lang)
            .join("build.sh"),
    )
    .arg(&out)
    .env("LEVIATHAN_TOOLCHAIN_DIR", toolchain_dir())
    .output()
    .expect("run the example's build.sh");
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    eprintln!(
        "polyglot: built the {lang} example in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    match o.status.code() {
        Some(0) => {
            let path = PathBuf::from(String::from_utf8(o.stdout).unwrap().trim());
            assert_eq!(path, out, "build.sh prints the component's path");
            Built::Component(path)
        }
        Some(3) => Built::NoToolchain(stderr),
        _ => panic!("the {lang} example did not build ({}):\n{stderr}", o.status),
    }
}

/// Builds tests/polyglot/wasi_probe.py with the componentize-py that the
/// Python example's build installed.
fn build_probe() -> PathBuf {
    let stage = scratch().join("probe-stage");
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(&stage).unwrap();
    std::fs::copy(
        root().join("tests/polyglot/wasi_probe.py"),
        stage.join("wasi_probe.py"),
    )
    .unwrap();
    let venv = toolchain_dir().join("python/venv");
    let inputs = [
        root().join("tests/polyglot/wasi_probe.py"),
        root().join("projectors/examples/python/requirements.txt"),
        root().join("wit/projector.wit"),
    ];
    let out = scratch().join(format!("wasi-probe-{}.wasm", inputs_key(&inputs)));
    if cached(&out) {
        eprintln!(
            "polyglot: the WASI probe is unchanged: reusing {}",
            out.display()
        );
        return out;
    }
    let started = Instant::now();
    let tmp = out.with_extension("tmp");
    let o = Command::new(venv.join("bin/componentize-py"))
        .current_dir(&stage)
        .env("VIRTUAL_ENV", &venv)
        .arg("--quiet")
        .arg("-d")
        .arg(root().join("wit"))
        .args(["-w", "projector", "componentize", "wasi_probe", "-p"])
        .arg(&stage)
        .arg("-o")
        .arg(&tmp)
        .output()
        .expect("run componentize-py");
    assert!(
        o.status.success(),
        "the WASI probe did not build: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::rename(&tmp, &out).unwrap();
    eprintln!(
        "polyglot: built the WASI probe in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    out
}

/// A manifest: the core projector, then each `(name, component, vectors)`,
/// pinned by digest.
fn manifest(dir: &Path, entries: &[(&str, &Path, Option<&Path>)]) -> PathBuf {
    let q = |p: &Path| serde_json::to_string(&p.display().to_string()).unwrap();
    let mut text = String::from("[[projector]]\nname = \"core\"\nbuiltin = \"core\"\n");
    for (name, wasm, vectors) in entries {
        let digest = sha256_hex(&std::fs::read(wasm).unwrap());
        text.push_str(&format!(
            "\n[[projector]]\nname = \"{name}\"\npath = {}\nsha256 = \"{digest}\"\n",
            q(wasm)
        ));
        if let Some(v) = vectors {
            text.push_str(&format!("test_vectors = {}\n", q(v)));
        }
    }
    let path = dir.join("projectors.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// An event at its own time.
fn at(id: &str, event_type: &str, timestamp: &str, payload: Value) -> Value {
    let mut e = event(id, event_type, payload);
    e["timestamp"] = json!(timestamp);
    e
}

/// The events every language projects: attempts for the core projector,
/// then deployments (starts, a success, a failure, a rollback, a finish for a
/// deploy never started).
fn deploy_bundles() -> Vec<Value> {
    vec![
        bundle(
            "setup",
            vec![
                at(
                    "a1-created",
                    "attempt.created",
                    "2026-01-24T09:00:00Z",
                    json!({"attempt_id": "a1", "task_id": "t1", "attempt_number": 1}),
                ),
                at(
                    "a2-created",
                    "attempt.created",
                    "2026-01-24T09:01:00Z",
                    json!({"attempt_id": "a2", "task_id": "t1", "attempt_number": 2}),
                ),
            ],
        ),
        bundle(
            "starts",
            vec![
                at(
                    "d1-started",
                    "deploy.started",
                    "2026-01-24T10:00:00.123456Z",
                    json!({"deploy_id": "d1", "service": "api", "environment": "prod", "version": "1.4.2", "attempt_id": "a1", "labels": {"region": "eu", "canary": true, "weight": 12.5}}),
                ),
                at(
                    "d2-started",
                    "deploy.started",
                    "2026-01-24T10:00:05Z",
                    json!({"deploy_id": "d2", "service": "web", "environment": "staging", "attempt_id": "a2"}),
                ),
            ],
        ),
        bundle(
            "finishes",
            vec![
                at(
                    "d1-finished",
                    "deploy.finished",
                    "2026-01-24T10:02:03.5Z",
                    json!({"deploy_id": "d1", "status": "succeeded"}),
                ),
                at(
                    "d2-finished",
                    "deploy.finished",
                    "2026-01-24T10:00:35.25Z",
                    json!({"deploy_id": "d2", "status": "failed", "error": "health check timed out"}),
                ),
                at(
                    "d3-started",
                    "deploy.started",
                    "2026-01-24T11:00:00Z",
                    json!({"deploy_id": "d3", "service": "api", "environment": "prod", "version": "1.5.0", "labels": {"ticket": "OPS-1 é😀"}}),
                ),
                at(
                    "d3-finished",
                    "deploy.finished",
                    "2026-01-24T11:00:09.999Z",
                    json!({"deploy_id": "d3", "status": "rolled_back", "error": "p99 regression"}),
                ),
                at(
                    "ghost-finished",
                    "deploy.finished",
                    "2026-01-24T11:30:00Z",
                    json!({"deploy_id": "ghost", "status": "succeeded"}),
                ),
            ],
        ),
    ]
}

const PROBE_EVENTS: [(&str, &str); 2] = [
    ("probe-1", "2026-02-03T04:05:06.789012Z"),
    ("probe-2", "2026-02-03T04:05:07Z"),
];

fn probe_bundle() -> Value {
    bundle(
        "probes",
        PROBE_EVENTS
            .iter()
            .map(|(id, ts)| at(id, "probe.wasi", ts, json!({"probe_id": id})))
            .collect(),
    )
}

/// What one server made of the events.
#[derive(Debug, PartialEq)]
struct Run {
    /// `/v1/projection`'s state digest after the deploy events.
    deploys_digest: Value,
    /// The `deploys` projector's nodes and edges, as the API serves them.
    graph: Value,
    /// The 422 the refused bundle got.
    refusal: Value,
    /// With the probe: its nodes, and the chain hashes of its events.
    probe: Option<(Value, Vec<String>)>,
    final_digest: Value,
}

/// Every node of the `deploys` projector's types and every edge out of a
/// `Deployment`.
fn deploys_graph(s: &Server) -> Value {
    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    for t in ["Deployment", "Environment"] {
        let (st, page) = s.get(&format!("/v1/graph/nodes?type={t}&limit=1000"));
        assert_eq!(st, 200, "{page}");
        assert!(page["next_cursor"].is_null(), "{page}");
        for n in page["nodes"].as_array().unwrap() {
            if t == "Deployment" {
                let id = n["node_id"].as_str().unwrap();
                let (st, e) = s.get(&format!("/v1/graph/nodes/{id}/edges?direction=out"));
                assert_eq!(st, 200, "{e}");
                edges.extend(e["edges"].as_array().unwrap().iter().cloned());
            }
            nodes.push(n.clone());
        }
    }
    json!({"nodes": nodes, "edges": edges})
}

/// Starts a server on a fresh data dir with `manifest`, ingests the events,
/// and stops it; returns what it saw and the data dir (for a rebuild).
fn run(manifest: &Path, with_probe: bool) -> (Run, tempfile::TempDir) {
    let m = manifest.display().to_string();
    let mut s = Server::start_with(&[("LEVIATHAN_PROJECTORS_FILE", m.as_str())]);
    let (_, p) = s.get("/v1/projection");
    assert_eq!(p["projectors"][1]["name"], "deploys", "{p}");
    assert!(
        s.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("test vectors passed") && l.contains("vectors=9")),
        "the vectors ran at load"
    );
    for b in deploy_bundles() {
        let (st, r) = s.ingest(&b);
        assert_eq!(st, 200, "{r}");
    }
    let deploys_digest = s.get("/v1/projection").1["state_digest"].clone();
    // A start without its deploy id: the bundle is refused, nothing stored.
    let (st, refusal) = s.ingest(&bundle(
        "bad",
        vec![at(
            "bad-1",
            "deploy.started",
            "2026-01-24T12:00:00Z",
            json!({"service": "api", "environment": "prod"}),
        )],
    ));
    assert_eq!(st, 422, "{refusal}");
    assert_eq!(s.get("/v1/projection").1["state_digest"], deploys_digest);
    let graph = deploys_graph(&s);
    let probe = with_probe.then(|| {
        let (st, r) = s.ingest(&probe_bundle());
        assert_eq!(st, 200, "{r}");
        let (_, nodes) = s.get("/v1/graph/nodes?type=Probe&limit=10");
        let hashes = PROBE_EVENTS
            .iter()
            .map(|(id, _)| {
                let (st, e) = s.get(&format!("/v1/events/{id}"));
                assert_eq!(st, 200, "{e}");
                e["hash"].as_str().unwrap().to_string()
            })
            .collect();
        (nodes["nodes"].clone(), hashes)
    });
    let final_digest = s.get("/v1/projection").1["state_digest"].clone();
    let dir = s.keep_dir();
    s.stop();
    (
        Run {
            deploys_digest,
            graph,
            refusal,
            probe,
            final_digest,
        },
        dir,
    )
}

/// Compiles the set's components into the shared projector cache with
/// `leviathan rebuild` on an empty store: an 18 MB component takes longer to
/// compile in a debug build than a test server is given to start.
fn compile_into_cache(manifest: &Path) {
    let empty = tempfile::tempdir().unwrap();
    // An empty store (rebuild refuses a data dir that holds none).
    drop(leviathan::storage::open_store(empty.path()).unwrap());
    let m = manifest.display().to_string();
    let started = Instant::now();
    let (code, out, err) = admin_full(&["rebuild", "--projectors-file", &m], empty.path());
    assert_eq!(code, 0, "{out}\n{err}");
    eprintln!(
        "polyglot: loaded {} (compiled or from the cache) in {:.1} s",
        manifest.display(),
        started.elapsed().as_secs_f64()
    );
}

/// `leviathan rebuild` of a stopped server's data dir: its state digest.
fn rebuild(manifest: &Path, dir: &Path) -> Value {
    let m = manifest.display().to_string();
    let (code, out, err) = admin_full(&["rebuild", "--projectors-file", &m], dir);
    assert_eq!(code, 0, "{out}\n{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["identical"], true, "{report}");
    report["state_digest"].clone()
}

/// Milliseconds since the epoch of an RFC 3339 `Z` timestamp.
fn epoch_ms(ts: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(ts)
        .unwrap()
        .timestamp_millis()
}

#[test]
fn python_and_javascript_projectors_match_their_rust_twin_and_replay_identically() {
    let rust = match build("rust") {
        Built::Component(p) => p,
        Built::NoToolchain(e) => panic!("the Rust twin needs no download: {e}"),
    };
    let mut others = Vec::new();
    for lang in ["python", "js"] {
        match build(lang) {
            Built::Component(p) => others.push((lang, p)),
            Built::NoToolchain(why) => {
                assert!(
                    !required(),
                    "LEVIATHAN_REQUIRE_POLYGLOT=1 but the {lang} toolchain could not be installed:\n{why}"
                );
                eprintln!(
                    "SKIP polyglot: the {lang} toolchain could not be installed (set \
                     LEVIATHAN_REQUIRE_POLYGLOT=1 to fail instead):\n{why}"
                );
                return;
            }
        }
    }
    let probe = build_probe();
    let vectors = root().join("projectors/examples/vectors.ndjson");
    let files = tempfile::tempdir().unwrap();

    let mut runs: Vec<(&str, Run)> = Vec::new();
    for (lang, wasm) in std::iter::once(("rust", rust)).chain(others) {
        let dir = files.path().join(lang);
        std::fs::create_dir_all(&dir).unwrap();
        let with_probe = lang == "python";
        let mut entries = vec![("deploys", wasm.as_path(), Some(vectors.as_path()))];
        if with_probe {
            entries.push(("wasi-probe", probe.as_path(), None));
        }
        let m = manifest(&dir, &entries);
        compile_into_cache(&m);
        let started = Instant::now();
        let (first, data) = run(&m, with_probe);
        let (second, _) = run(&m, with_probe);
        assert_eq!(first, second, "{lang}: two runs of the same events differ");
        assert_eq!(
            rebuild(&m, data.path()),
            first.final_digest,
            "{lang}: a rebuild gives another digest"
        );
        eprintln!(
            "polyglot: {lang}: two runs and a rebuild in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        runs.push((lang, first));
    }

    // The same graph, op for op, whatever the language.
    let (_, reference) = &runs[0];
    for (lang, r) in &runs[1..] {
        assert_eq!(
            r.deploys_digest, reference.deploys_digest,
            "{lang} vs rust: state digest"
        );
        assert_eq!(r.graph, reference.graph, "{lang} vs rust: graph");
        assert_eq!(r.refusal, reference.refusal, "{lang} vs rust: refusal");
    }
    assert_eq!(
        reference.refusal["error"]["details"]["projector"],
        "deploys@1.0.0"
    );
    assert_eq!(
        reference.refusal["error"]["details"]["guest_code"],
        "missing_field"
    );
    // The graph is what the rules say: the Python and JavaScript guests read
    // the wall clock, frozen at each event's timestamp.
    let nodes = reference.graph["nodes"].as_array().unwrap();
    let node = |id: &str| nodes.iter().find(|n| n["node_id"] == id).unwrap()["properties"].clone();
    let d1 = node("deploy:radix:d1");
    assert_eq!(d1["started_ms"], epoch_ms("2026-01-24T10:00:00.123456Z"));
    assert_eq!(d1["finished_ms"], epoch_ms("2026-01-24T10:02:03.5Z"));
    assert_eq!(d1["duration_ms"], 123_377);
    assert_eq!(d1["status"], "succeeded");
    assert_eq!(node("env:radix:prod")["current_version"], "1.4.2");
    assert_eq!(node("deploy:radix:d3")["error"], "p99 regression");
    assert!(nodes.iter().all(|n| n["node_id"] != "deploy:radix:ghost"));
    let mut edges: Vec<&str> = reference.graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["edge_id"].as_str().unwrap())
        .collect();
    edges.sort_unstable();
    assert_eq!(
        edges,
        [
            "deploy:radix:d1:DEPLOYED_TO:env:radix:prod",
            "deploy:radix:d1:SHIPS:a1",
            "deploy:radix:d2:DEPLOYED_TO:env:radix:staging",
            "deploy:radix:d2:SHIPS:a2",
            "deploy:radix:d3:DEPLOYED_TO:env:radix:prod",
        ]
    );

    // What the WASI sandbox showed the Python probe.
    let (_, python) = runs.iter().find(|(l, _)| *l == "python").unwrap();
    let (probes, hashes) = python.probe.as_ref().unwrap();
    let probes = probes.as_array().unwrap();
    assert_eq!(probes.len(), 2, "{probes:?}");
    let mut urandoms = Vec::new();
    for (((id, ts), n), hash) in PROBE_EVENTS.iter().zip(probes).zip(hashes) {
        let p = &n["properties"];
        assert_eq!(n["node_id"], format!("probe:{id}"));
        let ns = chrono::DateTime::parse_from_rfc3339(ts)
            .unwrap()
            .timestamp_nanos_opt()
            .unwrap();
        assert_eq!(
            p["time_ns"],
            ns.to_string(),
            "{id}: the wall clock is the event's time"
        );
        assert_eq!(
            p["monotonic_before_ns"], "0",
            "{id}: the monotonic clock is stopped"
        );
        assert_eq!(
            p["monotonic_after_ns"], "0",
            "{id}: a sleep does not move it"
        );
        assert_eq!(p["environ"], 0, "{id}: no environment");
        assert!(
            p["listdir"].as_str().unwrap().starts_with("refused"),
            "{id}: {p}"
        );
        assert!(
            p["open"].as_str().unwrap().starts_with("refused"),
            "{id}: {p}"
        );
        eprintln!(
            "polyglot: {id} (event hash {hash}): os.urandom(16) = {}, random.getrandbits(64) = {}",
            p["urandom"], p["random"]
        );
        urandoms.push(p["urandom"].as_str().unwrap().to_string());
    }
    assert_ne!(
        urandoms[0], urandoms[1],
        "each event has its own randomness"
    );
}
