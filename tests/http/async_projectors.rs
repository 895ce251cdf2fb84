//! Async projectors (`mode = "async"`): applied by the follower behind the
//! head, they lag while ingest runs at full speed and catch up after; their
//! failures are recorded, never refused; `?min_seq=N` waits (bounded) until
//! every projector applied N; and an offline `leviathan rebuild` reproduces
//! their digests, with the same graph whichever mode the projector runs in.
//! Real server processes, real components built from WAT (a slow one burns
//! fuel in a loop on every event, as a Python component's start-up would).

use crate::common::wasm::{component, projector_wat, static_projector, Data, Describe, StaticOp};
use crate::common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Loop iterations the slow projector spins per event (a few ms: far slower
/// than the writer's per-event cost).
const SPINS: u32 = 3_000_000;

/// `slow@0.1.0`: on every `team.tick`, spins [`SPINS`] times, then puts the
/// node `tick-1` (type `Tick`) and a `TICKED` edge from it to the core's `a1`.
fn slow() -> Vec<u8> {
    let desc = Describe {
        name: "slow",
        version: "0.1.0",
        handles: &["team.tick"],
        node_types: &["Tick"],
        edge_types: &["TICKED"],
    };
    let mut data = Data::default();
    let result = data.ok_ops(&[
        StaticOp::PutNode {
            id: "tick-1",
            node_type: "Tick",
            properties: r#"{"by":"slow"}"#,
        },
        StaticOp::PutEdge {
            edge_type: "TICKED",
            from: "tick-1",
            to: "a1",
            properties: "{}",
        },
    ]);
    component(&projector_wat(
        &desc,
        data,
        "",
        "",
        &format!(
            "(local $i i32)
             (local.set $i (i32.const {SPINS}))
             (loop $spin
               (local.set $i (i32.sub (local.get $i) (i32.const 1)))
               (br_if $spin (local.get $i)))
             (i32.const {result})"
        ),
    ))
}

/// `refuser@0.1.0`: refuses every `team.tick`.
fn refuser() -> Vec<u8> {
    static_projector(
        &Describe {
            name: "refuser",
            version: "0.1.0",
            handles: &["team.tick"],
            node_types: &["Refused"],
            edge_types: &[],
        },
        |d| d.err("no_way", "this projector refuses every team.tick"),
    )
}

/// A manifest: `core`, then `name` (its component written beside it) with
/// the extra `settings` lines (e.g. `mode = "async"`).
fn manifest(dir: &Path, file: &str, name: &str, bytes: &[u8], settings: &str) -> PathBuf {
    std::fs::write(dir.join(format!("{name}.wasm")), bytes).unwrap();
    let text = format!(
        "[[projector]]\nname = \"core\"\nbuiltin = \"core\"\n\n[[projector]]\nname = \
         \"{name}\"\npath = \"{name}.wasm\"\nsha256 = \"{}\"\n{settings}\n\
         [projector.limits]\nfuel = 100000000\n",
        sha256_hex(bytes)
    );
    let m = dir.join(file);
    std::fs::write(&m, text).unwrap();
    m
}

fn projection(s: &Server) -> Value {
    let (st, p) = s.get("/v1/projection");
    assert_eq!(st, 200, "{p}");
    p
}

fn projector<'a>(p: &'a Value, name: &str) -> &'a Value {
    p["projectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == name)
        .unwrap_or_else(|| panic!("no projector {name}: {p}"))
}

/// `n` `team.tick` events in bundles of `per`, after an `attempt.created`
/// for `a1`; returns the head seq and the seconds the ingest took.
fn ingest_ticks(s: &Server, prefix: &str, n: usize, per: usize) -> (u64, f64) {
    let (st, r) = s.ingest(&bundle(
        &format!("{prefix}-a1"),
        vec![event(
            &format!("{prefix}-a1-c"),
            "attempt.created",
            json!({"attempt_id": "a1", "task_id": "t1"}),
        )],
    ));
    assert_eq!(st, 200, "{r}");
    let started = Instant::now();
    let mut head = 0;
    for b in 0..n.div_ceil(per) {
        let evs: Vec<Value> = (0..per.min(n - b * per))
            .map(|i| {
                event(
                    &format!("{prefix}-{b}-{i}"),
                    "team.tick",
                    json!({"n": b * per + i}),
                )
            })
            .collect();
        let (st, r) = s.ingest(&bundle(&format!("{prefix}-{b}"), evs));
        assert_eq!(st, 200, "ingest refused or failed: {r}");
        head = r["head_seq"].as_u64().unwrap_or_else(|| panic!("{r}"));
    }
    (head, started.elapsed().as_secs_f64())
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
}

#[test]
fn an_async_projector_lags_while_ingest_runs_at_full_speed_then_catches_up_like_a_rebuild() {
    let files = tempfile::tempdir().unwrap();
    let m_async = manifest(
        files.path(),
        "async.toml",
        "slow",
        &slow(),
        "mode = \"async\"",
    );
    let m_inline = manifest(files.path(), "inline.toml", "slow", &slow(), "");
    let m_s = m_async.display().to_string();
    let mut s = Server::start_with(&[("LEVIATHAN_PROJECTORS_FILE", m_s.as_str())]);
    let p = projection(&s);
    assert_eq!(projector(&p, "slow")["mode"], "async", "{p}");
    assert_eq!(projector(&p, "core")["mode"], "inline", "{p}");

    let n = 400;
    let (head, ingest_secs) = ingest_ticks(&s, "t", n, 50);
    assert_eq!(head, n as u64 + 1);

    // Right after ingest, the slow projector is behind: a read that needs
    // the head gives up after its bound with the seq applied so far.
    let asked = Instant::now();
    let (st, r) = s.get(&format!(
        "/v1/graph/nodes/tick-1?min_seq={head}&timeout_ms=200"
    ));
    assert_eq!(st, 503, "{r}");
    assert_eq!(r["error"]["code"], "not_caught_up", "{r}");
    assert!(asked.elapsed() >= Duration::from_millis(200));
    let applied = r["error"]["details"]["applied_seq"].as_u64().unwrap();
    assert!(applied < head, "{r}");
    assert_eq!(r["error"]["details"]["log_head_seq"], head, "{r}");
    // A checkpoint of the head cannot sign the combined digest yet: asked
    // for by size, it is refused until the lane has applied it…
    let resp = s
        .req(
            reqwest::Method::GET,
            &format!("/v1/log/checkpoint?tree_size={head}"),
        )
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    let (_, r) = parse(resp);
    assert_eq!(r["error"]["code"], "not_caught_up", "{r}");
    assert_eq!(r["error"]["details"]["tree_size"], head, "{r}");
    assert!(
        r["error"]["details"]["async_applied_seq"].as_u64().unwrap() < head,
        "{r}"
    );
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("combined-state-digest"),
        "{r}"
    );
    // …and the latest is served without the line, saying where the lane stood.
    let resp = s
        .req(reqwest::Method::GET, "/v1/log/checkpoint")
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let lane: u64 = resp.headers()["x-leviathan-async-applied-seq"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let note = resp.text().unwrap();
    assert_eq!(
        note.lines().nth(1),
        Some(head.to_string().as_str()),
        "{note}"
    );
    assert!(lane < head, "{lane} {note}");
    assert!(!note.contains("combined-state-digest"), "{note}");
    // A read says the seq its answer reflects: the lane's, not the head
    // (it said the writer's head, whose async nodes were not there yet).
    let resp = s
        .req(reqwest::Method::GET, "/v1/graph/summary")
        .send()
        .unwrap();
    let reflects: u64 = resp.headers()["x-leviathan-seq"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // ... while the writer is at the head already.
    let lagging = projection(&s);
    let lane_now = lagging["async"]["applied_seq"].as_u64().unwrap();
    assert!(reflects <= lane_now, "{reflects} > the lane's {lane_now}");
    if lane_now < head {
        assert!(reflects < head, "{reflects}");
    }
    assert_eq!(lagging["applied_seq"], head, "the writer is at the head");
    let slow_now = projector(&lagging, "slow");
    assert!(slow_now["lag_events"].as_u64().unwrap() > 0, "{lagging}");
    assert!(lagging["async"]["lag_events"].as_u64().unwrap() > 0);
    let metrics = s.metrics_text();
    let label = r#"{projector="slow@0.1.0"}"#;
    assert!(metric(&metrics, &format!("leviathan_projector_lag_events{label}")) > 0.0);
    let core_lag = metrics
        .lines()
        .find(|l| l.starts_with(r#"leviathan_projector_lag_events{projector="core@"#))
        .unwrap_or_else(|| panic!("no lag of the core projector in:\n{metrics}"));
    assert!(core_lag.ends_with(" 0"), "{core_lag}");

    // A read of a core node waits for the lane too (every projector must have
    // applied its seq), as long as it must: the lane's pace depends on the
    // machine (on two starved cores it applied 118 events in 5 s), so the
    // test asks for the longest wait rather than the 5 s default.
    let (st, a1) = s.get(&format!(
        "/v1/graph/nodes/a1?min_seq={}&timeout_ms=30000",
        head - 200
    ));
    assert_eq!(st, 200, "{a1}");
    assert_eq!(a1["node_type"], "Attempt", "{a1}");

    // A read that may wait long enough is answered once it has caught up.
    let (st, node) = s.get(&format!(
        "/v1/graph/nodes/tick-1?min_seq={head}&timeout_ms=30000"
    ));
    assert_eq!(st, 200, "{node}");
    assert_eq!(node["updated_seq"], head, "{node}");
    let caught_up_secs = asked.elapsed().as_secs_f64();
    let done = projection(&s);
    assert_eq!(done["async"]["applied_seq"], head, "{done}");
    assert_eq!(projector(&done, "slow")["lag_events"], 0);
    assert_eq!(done["async"]["errors"], 0);
    let combined = done["async"]["combined_digest"].clone();
    assert!(combined.is_string(), "{done}");
    // Now the checkpoint of the head signs it.
    let resp = s
        .req(
            reqwest::Method::GET,
            &format!("/v1/log/checkpoint?tree_size={head}"),
        )
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let note = resp.text().unwrap();
    assert!(
        note.contains(&format!(
            "\ncombined-state-digest {}\n",
            combined.as_str().unwrap()
        )),
        "{note}"
    );
    eprintln!("ingest of {n} events: {ingest_secs:.2} s; the async projector caught up {caught_up_secs:.2} s later");
    // Ingest was not held to the slow projector's pace: the follower took
    // far longer for the same events than ingest did.
    assert!(
        caught_up_secs > 2.0 * ingest_secs,
        "ingest {ingest_secs:.2} s, catching up {caught_up_secs:.2} s more"
    );
    let (_, summary) = s.get("/v1/graph/summary");

    // An offline rebuild with the same set reproduces every digest.
    s.stop();
    let dir = s.keep_dir();
    let report = offline_rebuild(dir.path(), &m_async);
    assert_eq!(report["identical"], true, "{report}");
    assert_eq!(report["state_digest"], done["state_digest"]);
    assert_eq!(report["async_digest"], done["async"]["async_digest"]);
    assert_eq!(report["combined_digest"], combined);

    // The same projector inline gives the same graph (a new fingerprint and
    // digest: the mode is part of the set).
    let report = offline_rebuild(dir.path(), &m_inline);
    assert_eq!(report["identical"], false, "{report}");
    assert_eq!(report.get("combined_digest"), None);
    let m_i = m_inline.display().to_string();
    let s = Server::start_in(dir.path(), &[("LEVIATHAN_PROJECTORS_FILE", m_i.as_str())]);
    let p = projection(&s);
    assert_eq!(p["build"], Value::Null, "the rebuilt set serves: {p}");
    assert_eq!(p.get("async"), None);
    let (_, inline_node) = s.get("/v1/graph/nodes/tick-1");
    assert_eq!(inline_node, node);
    let (_, inline_summary) = s.get("/v1/graph/summary");
    assert_eq!(inline_summary, summary);
}

#[test]
fn a_failing_async_projector_records_its_errors_and_never_refuses_a_bundle() {
    let files = tempfile::tempdir().unwrap();
    // on_error is not set (`reject`): inline, it would refuse every bundle.
    let m = manifest(
        files.path(),
        "m.toml",
        "refuser",
        &refuser(),
        "mode = \"async\"",
    );
    let m_s = m.display().to_string();
    let s = Server::start_with(&[("LEVIATHAN_PROJECTORS_FILE", m_s.as_str())]);
    let (head, _) = ingest_ticks(&s, "r", 12, 4);
    let (st, page) = s.get(&format!(
        "/v1/projection/errors?projector=refuser&min_seq={head}&timeout_ms=30000"
    ));
    assert_eq!(st, 200, "{page}");
    assert_eq!(page["count"], 12, "{page}");
    assert_eq!(page["errors"][0]["code"], "rejected");
    assert_eq!(page["errors"][0]["seq"], 2);
    let p = projection(&s);
    assert_eq!(p["async"]["errors"], 12, "{p}");
    // leviathanctl shows the async lane under the set.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_leviathanctl"))
        .args(["projectors", "status"])
        .env("LEVIATHAN_API_URL", &s.base)
        .env("LEVIATHAN_CONTROL_PLANE_TOKEN", TOKEN)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("async projectors (refuser), applied behind the head:"),
        "{text}"
    );
    assert!(text.contains("errors since start"), "{text}");
    // The follower thread runs nicer than the rest of the server.
    let nice = |stat: &str| -> i64 {
        // Fields after the `(comm)`: state is field 3, nice field 19.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        rest.split(' ').nth(16).unwrap().parse().unwrap()
    };
    let mut follower = None;
    let mut others = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{}/task", s.pid())).unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap();
        let n = nice(&std::fs::read_to_string(dir.join("stat")).unwrap());
        if comm.trim() == "leviathan-follo" {
            follower = Some(n);
        } else if comm.trim().starts_with("leviathan-") {
            others.push(n);
        }
    }
    let follower = follower.expect("a leviathan-follower thread");
    assert!(!others.is_empty());
    assert!(
        // 19 is the lowest priority there is (a suite run under `nice`
        // starts every thread above 0).
        others.iter().all(|&o| follower >= (o + 10).min(19)),
        "follower nice {follower}, others {others:?}"
    );
    assert_eq!(p["async"]["applied_seq"], head);
    let metrics = s.metrics_text();
    assert_eq!(
        metric(
            &metrics,
            r#"leviathan_projection_errors_recorded_total{projector="refuser"}"#
        ),
        12.0
    );
}

#[test]
fn min_seq_answers_at_once_when_applied_waits_for_a_commit_and_times_out_beyond_the_head() {
    let s = std::sync::Arc::new(Server::start());
    let (st, r) = s.ingest(&bundle("b1", events("e1", 3)));
    assert_eq!(st, 200, "{r}");
    let head = r["head_seq"].as_u64().unwrap();
    for route in ["/v1/graph/summary", "/v1/attempts", "/v1/projection"] {
        let (st, body) = s.get(&format!("{route}?min_seq={head}"));
        assert_eq!(st, 200, "{route}: {body}");
    }
    // Beyond the head: a 503 after the bound, with the applied seq.
    let asked = Instant::now();
    let (st, r) = s.get(&format!(
        "/v1/graph/summary?min_seq={}&timeout_ms=150",
        head + 1
    ));
    assert_eq!(st, 503, "{r}");
    assert!(asked.elapsed() >= Duration::from_millis(150));
    assert_eq!(r["error"]["details"]["applied_seq"], head, "{r}");
    assert_eq!(r["error"]["details"]["min_seq"], head + 1);
    // A waiting read is answered by the commit that reaches its seq.
    let waiter = {
        let s = s.clone();
        std::thread::spawn(move || {
            s.get(&format!(
                "/v1/attempts?min_seq={}&timeout_ms=30000",
                head + 1
            ))
        })
    };
    // The waiter is parked in the server before the event it waits for is
    // sent: the server counts it as waiting.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = s.metrics_text();
        if metric(&text, "leviathan_min_seq_waiting") == 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "the waiter never waited");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (st, r) = s.ingest(&bundle("b2", events("e2", 1)));
    assert_eq!(st, 200, "{r}");
    let (st, body) = waiter.join().unwrap();
    assert_eq!(st, 200, "{body}");
    let text = s.metrics_text();
    assert_eq!(metric(&text, "leviathan_min_seq_waiting"), 0.0);
    // Bad values are refused with the usual error shape.
    for q in ["min_seq=abc", "min_seq=-1", "min_seq=1&timeout_ms=30001"] {
        let (st, body) = s.get(&format!("/v1/graph/summary?{q}"));
        assert_eq!(st, 422, "{q}: {body}");
        assert_eq!(body["error"]["code"], "invalid_query", "{q}: {body}");
    }
}

/// A read waiting for `?min_seq=` that the request timeout ends first is no
/// longer counted as waiting (the gauge stayed at 1 for good).
#[test]
fn a_min_seq_wait_ended_by_the_request_timeout_is_not_counted_as_waiting() {
    let s = Server::start_with(&[("LEVIATHAN_REQUEST_TIMEOUT_SECS", "1")]);
    let (st, r) = s.get("/v1/graph/summary?min_seq=999&timeout_ms=5000");
    assert_eq!(st, 503, "{r}");
    assert_eq!(r["error"]["code"], "timeout", "{r}");
    let text = s.metrics_text();
    assert_eq!(metric(&text, "leviathan_min_seq_waiting"), 0.0, "{text}");
}

/// `name@0.1.0`, owning node type `own`: on `team.peek`, reads node `read`
/// through the `graph` import; if it sees it, puts `{name}-saw` (type
/// `own`), else refuses (`no_node`).
fn peeker(name: &str, own: &str, read: &str) -> Vec<u8> {
    let desc = Describe {
        name,
        version: "0.1.0",
        handles: &["team.peek"],
        node_types: &[own],
        edge_types: &[],
    };
    let mut d = Data::default();
    let (rp, rl) = d.str(read);
    let retn = d.zeros(48, 8);
    let no_node = d.err("no_node", &format!("the graph import shows no {read}"));
    let saw = format!("{name}-saw");
    let ok = d.ok_ops(&[StaticOp::PutNode {
        id: &saw,
        node_type: own,
        properties: "{}",
    }]);
    let imports = r#"
  (import "leviathan:projector/graph@1.0.0" "get-node" (func $get_node (param i32 i32 i32)))"#;
    let body = format!(
        "(call $get_node (i32.const {rp}) (i32.const {rl}) (i32.const {retn}))
         (if (i32.eqz (i32.load8_u (i32.const {retn}))) (then (return (i32.const {no_node}))))
         (i32.const {ok})"
    );
    component(&projector_wat(&desc, d, imports, "", &body))
}

/// `ticker@0.1.0` (fast): on `team.tick`, puts `tick-1` (type `Tick`).
fn ticker() -> Vec<u8> {
    static_projector(
        &Describe {
            name: "ticker",
            version: "0.1.0",
            handles: &["team.tick"],
            node_types: &["Tick"],
            edge_types: &[],
        },
        |d| {
            d.ok_ops(&[StaticOp::PutNode {
                id: "tick-1",
                node_type: "Tick",
                properties: "{}",
            }])
        },
    )
}

/// A manifest of `core` then `entries` (name, component, extra settings).
fn manifest_of(dir: &Path, entries: &[(&str, Vec<u8>, &str)]) -> PathBuf {
    let mut text = String::from("[[projector]]\nname = \"core\"\nbuiltin = \"core\"\n");
    for (name, bytes, settings) in entries {
        std::fs::write(dir.join(format!("{name}.wasm")), bytes).unwrap();
        text.push_str(&format!(
            "\n[[projector]]\nname = \"{name}\"\npath = \"{name}.wasm\"\nsha256 = \"{}\"\n{settings}\n",
            sha256_hex(bytes)
        ));
    }
    let m = dir.join("m.toml");
    std::fs::write(&m, text).unwrap();
    m
}

#[test]
fn each_lanes_graph_import_sees_only_that_lanes_types() {
    let files = tempfile::tempdir().unwrap();
    let m = manifest_of(
        files.path(),
        &[
            ("ticker", ticker(), "mode = \"async\""),
            // Async, reading another async projector's node: sees it.
            (
                "peek-own",
                peeker("peek-own", "PeekOwn", "tick-1"),
                "mode = \"async\"",
            ),
            // Async, reading the core's (inline) Attempt: does not.
            (
                "peek-core",
                peeker("peek-core", "PeekCore", "a1"),
                "mode = \"async\"",
            ),
            // Inline, reading the async ticker's node: does not either.
            (
                "peek-inline",
                peeker("peek-inline", "PeekInline", "tick-1"),
                "on_error = \"record\"",
            ),
        ],
    );
    let m_s = m.display().to_string();
    let s = Server::start_with(&[("LEVIATHAN_PROJECTORS_FILE", m_s.as_str())]);
    let (st, r) = s.ingest(&bundle(
        "b1",
        vec![
            event(
                "a1-c",
                "attempt.created",
                json!({"attempt_id": "a1", "task_id": "t1"}),
            ),
            event("tick", "team.tick", json!({})),
        ],
    ));
    assert_eq!(st, 200, "{r}");
    // Both nodes exist before anyone peeks (the async one applied too).
    for id in ["a1", "tick-1"] {
        let (st, n) = s.get(&format!("/v1/graph/nodes/{id}?min_seq=2&timeout_ms=30000"));
        assert_eq!(st, 200, "{id}: {n}");
    }
    let (st, r) = s.ingest(&bundle("b2", vec![event("peek", "team.peek", json!({}))]));
    assert_eq!(st, 200, "{r}");
    let (st, saw) = s.get("/v1/graph/nodes/peek-own-saw?min_seq=3&timeout_ms=30000");
    assert_eq!(st, 200, "an async projector sees its lane's types: {saw}");
    for name in ["peek-core", "peek-inline"] {
        let (st, n) = s.get(&format!("/v1/graph/nodes/{name}-saw"));
        assert_eq!(st, 404, "{name} saw across lanes: {n}");
        let (_, page) = s.get(&format!("/v1/projection/errors?projector={name}"));
        assert_eq!(page["count"], 1, "{name}: {page}");
        assert_eq!(page["errors"][0]["code"], "rejected", "{page}");
        assert_eq!(page["errors"][0]["seq"], 3, "{page}");
    }
}

#[test]
fn a_kill_9_while_the_async_projector_lags_resumes_and_equals_a_rebuild() {
    let files = tempfile::tempdir().unwrap();
    let m = manifest(
        files.path(),
        "async.toml",
        "slow",
        &slow(),
        "mode = \"async\"",
    );
    let m_s = m.display().to_string();
    let env = [("LEVIATHAN_PROJECTORS_FILE", m_s.as_str())];
    let mut s = Server::start_with(&env);
    let (head, _) = ingest_ticks(&s, "k", 300, 50);
    // Killed once the follower has committed something, but not all.
    let deadline = Instant::now() + Duration::from_secs(60);
    let applied = loop {
        let p = projection(&s);
        let applied = p["async"]["applied_seq"].as_u64().unwrap();
        if applied > 1 {
            break applied;
        }
        assert!(
            Instant::now() < deadline,
            "the follower never committed: {p}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(applied < head, "it should still lag: {applied} of {head}");
    s.kill();
    let dir = s.keep_dir();
    let mut s = Server::start_in(dir.path(), &env);
    let p = projection(&s);
    assert!(
        p["async"]["applied_seq"].as_u64().unwrap() >= applied,
        "a restart resumes from the last committed round: {p}"
    );
    let (st, node) = s.get(&format!(
        "/v1/graph/nodes/tick-1?min_seq={head}&timeout_ms=30000"
    ));
    assert_eq!(st, 200, "{node}");
    let done = projection(&s);
    s.stop();
    let report = offline_rebuild(dir.path(), &m);
    assert_eq!(report["identical"], true, "{report}");
    assert_eq!(report["combined_digest"], done["async"]["combined_digest"]);
}

#[test]
fn a_set_change_to_a_set_with_an_async_projector_is_built_online_and_equals_a_rebuild() {
    let files = tempfile::tempdir().unwrap();
    let m = manifest_of(files.path(), &[("ticker", ticker(), "mode = \"async\"")]);
    let m_s = m.display().to_string();
    let mut s = Server::start();
    let (head, _) = ingest_ticks(&s, "g", 300, 100);
    let before = projection(&s);
    s.stop();
    let dir = s.keep_dir();

    // The core-only generation serves while the new set is built (its
    // async lane included), then the switch.
    let mut s = Server::start_in(dir.path(), &[("LEVIATHAN_PROJECTORS_FILE", m_s.as_str())]);
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = loop {
        let p = projection(&s);
        if p["build"]["state"] == "switched" {
            break p;
        }
        assert!(Instant::now() < deadline, "no switch: {p}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_ne!(done["generation"], before["generation"]);
    assert_eq!(projector(&done, "ticker")["mode"], "async", "{done}");
    let (st, node) = s.get(&format!(
        "/v1/graph/nodes/tick-1?min_seq={head}&timeout_ms=30000"
    ));
    assert_eq!(st, 200, "{node}");
    assert_eq!(node["updated_seq"], head);
    let p = projection(&s);
    assert_eq!(p["async"]["applied_seq"], head, "{p}");
    s.stop();
    let report = offline_rebuild(dir.path(), &m);
    assert_eq!(report["identical"], true, "{report}");
    assert_eq!(report["state_digest"], p["state_digest"]);
    assert_eq!(report["combined_digest"], p["async"]["combined_digest"]);
}
