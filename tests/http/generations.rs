//! Generations: a changed projector set is built in the background while the
//! live one serves, then switched to atomically; a kill -9 mid-build resumes;
//! a build with errors stays pending; `LEVIATHAN_REBUILD=block` builds before
//! serving; a store that does not hold the live set's components is told what
//! to do. Real server processes, real components built from WAT, and the final
//! digests compared with an offline `leviathan rebuild`.

use crate::common::wasm::{static_projector, Describe, StaticOp};
use crate::common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A team projector: every `attempt.started` puts the node `team-seen`
/// (type `TeamSeen`), so the new set's graph differs from the core's.
fn team() -> Vec<u8> {
    static_projector(
        &Describe {
            name: "team",
            version: "0.1.0",
            handles: &["attempt.started"],
            node_types: &["TeamSeen"],
            edge_types: &[],
        },
        |d| {
            d.ok_ops(&[StaticOp::PutNode {
                id: "team-seen",
                node_type: "TeamSeen",
                properties: r#"{"by":"team"}"#,
            }])
        },
    )
}

/// A projector that refuses every `attempt.started`.
fn refuser() -> Vec<u8> {
    static_projector(
        &Describe {
            name: "refuser",
            version: "0.1.0",
            handles: &["attempt.started"],
            node_types: &["Refused"],
            edge_types: &[],
        },
        |d| d.err("no_way", "this projector refuses every attempt.started"),
    )
}

/// A manifest `core` + `name` (its component written beside it), with `top`
/// lines at the top level.
fn manifest(dir: &Path, name: &str, bytes: &[u8], top: &str) -> PathBuf {
    std::fs::write(dir.join(format!("{name}.wasm")), bytes).unwrap();
    let text = format!(
        "{top}\n[[projector]]\nname = \"core\"\nbuiltin = \"core\"\n\n[[projector]]\nname = \
         \"{name}\"\npath = \"{name}.wasm\"\nsha256 = \"{}\"\n",
        sha256_hex(bytes)
    );
    let m = dir.join(format!("{name}.toml"));
    std::fs::write(&m, text).unwrap();
    m
}

/// `per` attempts `{prefix}-{i}`, each an attempt.created and an
/// attempt.started event.
fn started_attempts(prefix: &str, per: usize) -> Vec<Value> {
    let mut evs = Vec::with_capacity(per * 2);
    for i in 0..per {
        let a = format!("{prefix}-{i}");
        evs.push(event(
            &format!("{a}-c"),
            "attempt.created",
            json!({"attempt_id": a, "task_id": "t1", "attempt_number": 1}),
        ));
        evs.push(event(
            &format!("{a}-s"),
            "attempt.started",
            json!({"attempt_id": a, "status": "running"}),
        ));
    }
    evs
}

/// `bundles` bundles of `per` started attempts.
fn preload(s: &Server, prefix: &str, bundles: usize, per: usize) {
    for b in 0..bundles {
        let evs = started_attempts(&format!("{prefix}-{b}"), per);
        let (st, r) = s.ingest(&bundle(&format!("{prefix}-b{b}"), evs));
        assert_eq!(st, 200, "{r}");
    }
}

fn projection(s: &Server) -> Value {
    let (st, p) = s.get("/v1/projection");
    assert_eq!(st, 200, "{p}");
    p
}

/// Polls `/v1/projection` until `done` (at most 120 s).
fn wait_projection(s: &Server, what: &str, mut done: impl FnMut(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let p = projection(s);
        if done(&p) {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {p}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The build has switched; the same answer then serves the new generation
/// (the projection route once answered "switched" beside the old one's digest).
fn switched(p: &Value) -> bool {
    let done = p["build"]["state"] == "switched";
    if done {
        assert_eq!(p["generation"], p["build"]["generation"], "{p}");
    }
    done
}

#[test]
fn a_set_change_is_built_behind_the_live_set_and_switched_atomically_under_load() {
    let files = tempfile::tempdir().unwrap();
    let m = manifest(files.path(), "team", &team(), "");
    let m_s = m.display().to_string();
    let mut s = Server::start();
    preload(&s, "pre", 20, 100);
    let before = projection(&s);
    assert_eq!(before["generation"], 0);
    s.stop();
    let dir = s.keep_dir();

    // Slow the build down so that ingest and reads overlap it for seconds.
    let s = Arc::new(Server::start_in(
        dir.path(),
        &[
            ("LEVIATHAN_PROJECTORS_FILE", m_s.as_str()),
            ("LEVIATHAN_BUILD_RATE", "4000"),
        ],
    ));
    let p = projection(&s);
    assert_eq!(p["generation"], 0, "the old set serves while building: {p}");
    assert_eq!(p["fingerprint"], before["fingerprint"]);
    // The planned build shows from the server's first answer on (it is
    // announced before the server listens, not when its thread first runs).
    let new_fp = p["build"]["fingerprint"].clone();
    assert!(new_fp.is_string(), "no build in the first answer: {p}");
    assert_ne!(new_fp, before["fingerprint"]);

    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    // Paced (under 1,000 events/s) so that the build (4,000/s) catches up.
    for w in 0..1 {
        let (s, stop) = (s.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
                let evs = started_attempts(&format!("live-{w}-{n}"), 5);
                let (st, r) = s.ingest(&bundle(&format!("live-{w}-{n}"), evs));
                assert_eq!(st, 200, "ingest during the build failed: {r}");
                n += 1;
            }
            n
        }));
    }
    // A reader: every answer is 200, and once the new set's node type shows,
    // it never goes away again (no answer from the old graph after one from
    // the new, none from a mix of both: counts and the node agree).
    let reader_saw_new = Arc::new(AtomicBool::new(false));
    let reader = {
        let (s, stop, saw) = (s.clone(), stop.clone(), reader_saw_new.clone());
        std::thread::spawn(move || {
            let mut seen_new = false;
            let mut reads = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let (st, summary) = s.get("/v1/graph/summary");
                assert_eq!(st, 200, "{summary}");
                let has = summary["nodes_by_type"].get("TeamSeen").is_some();
                assert!(!seen_new || has, "the old graph answered after the new one");
                seen_new |= has;
                saw.store(seen_new, Ordering::Relaxed);
                let (st, node) = s.get("/v1/graph/nodes/team-seen");
                assert!(st == 200 || st == 404, "{node}");
                reads += 1;
            }
            (seen_new, reads)
        })
    };
    let mut saw_building = false;
    let done = wait_projection(&s, "the switch", |p| {
        if p["build"]["state"] == "building" && p["generation"] == 0 {
            saw_building = true;
        }
        switched(p)
    });
    assert!(saw_building, "the build was never seen in progress");
    // A little more ingest on the new generation, until the reader has read
    // the new graph too (on starved cores one read can take longer than the
    // 300 ms this once slept), then stop the load.
    std::thread::sleep(Duration::from_millis(300));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !reader_saw_new.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let bundles: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let (seen_new, reads) = reader.join().unwrap();
    assert!(bundles > 0 && reads > 0);
    assert!(seen_new, "the reader never saw the new graph");
    assert_eq!(done["generation"], done["build"]["generation"]);
    assert_eq!(done["fingerprint"], new_fp);
    let after = projection(&s);
    assert_eq!(after["applied_seq"], after["log_head_seq"]);
    let (_, node) = s.get("/v1/graph/nodes/team-seen");
    assert_eq!(node["node_type"], "TeamSeen", "{node}");

    // The live graph equals an offline rebuild of the whole log with the new
    // set, bit for bit.
    let mut s = Arc::try_unwrap(s).ok().expect("no other handle");
    s.stop();
    let report = offline_rebuild(dir.path(), &m);
    assert_eq!(report["identical"], true, "{report}");
    assert_eq!(report["state_digest"], after["state_digest"]);
    // The old generation's keyspaces were deleted.
    with_store(dir.path(), |db| {
        let names: Vec<String> = db
            .list_keyspace_names()
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert!(
            !names.iter().any(|n| n.starts_with("graph_")),
            "generation 0 was not deleted: {names:?}"
        );
    });
    // A restart with the same set serves the new generation, no build.
    let s = Server::start_in(dir.path(), &[("LEVIATHAN_PROJECTORS_FILE", m_s.as_str())]);
    let p = projection(&s);
    assert_eq!(p["generation"], done["generation"]);
    assert_eq!(p["build"], Value::Null);
    assert_eq!(p["state_digest"], after["state_digest"]);
}

#[test]
fn a_build_killed_midway_resumes_where_it_stopped_and_equals_an_offline_rebuild() {
    let files = tempfile::tempdir().unwrap();
    let m = manifest(files.path(), "team", &team(), "");
    let m_s = m.display().to_string();
    let mut s = Server::start();
    preload(&s, "pre", 20, 100);
    s.stop();
    let dir = s.keep_dir();

    let mut s = Server::start_in(
        dir.path(),
        &[
            ("LEVIATHAN_PROJECTORS_FILE", m_s.as_str()),
            ("LEVIATHAN_BUILD_RATE", "1000"),
        ],
    );
    let p = wait_projection(&s, "a build half-way", |p| {
        p["build"]["applied_seq"].as_u64().unwrap_or(0) >= 1000
    });
    assert_eq!(p["generation"], 0);
    s.kill();

    // The old generation is untouched and live; the build resumes.
    let s = Server::start_in(dir.path(), &[("LEVIATHAN_PROJECTORS_FILE", m_s.as_str())]);
    let p = projection(&s);
    assert_eq!(p["generation"], 0, "{p}");
    let done = wait_projection(&s, "the switch", switched);
    let resumed = done["build"]["resumed_from_seq"].as_u64().unwrap();
    assert!(resumed >= 1000, "the build started over: {done}");
    let mut s = s;
    s.stop();
    let report = offline_rebuild(dir.path(), &m);
    assert_eq!(report["identical"], true, "{report}");
    // Failed once (session 9, a whole-suite run with --test-threads 3): the
    // offline rebuild equalled the stored graph but not the digest served at
    // the switch. Both sides in full, to tell which seq each digest is at.
    assert_eq!(
        report["state_digest"], done["state_digest"],
        "offline rebuild: {report}\nserved at the switch: {done}"
    );
}

#[test]
fn a_generation_with_errors_stays_pending_until_the_manifest_allows_them() {
    let files = tempfile::tempdir().unwrap();
    let strict = manifest(files.path(), "refuser", &refuser(), "");
    let strict_s = strict.display().to_string();
    let mut s = Server::start();
    preload(&s, "pre", 2, 10);
    let before = projection(&s);
    s.stop();
    let dir = s.keep_dir();

    let mut s = Server::start_in(
        dir.path(),
        &[("LEVIATHAN_PROJECTORS_FILE", strict_s.as_str())],
    );
    let p = wait_projection(&s, "a pending build", |p| p["build"]["state"] == "pending");
    assert_eq!(p["build"]["errors"], 20, "{p}");
    assert_eq!(p["generation"], 0, "a pending generation went live: {p}");
    assert_eq!(p["fingerprint"], before["fingerprint"]);
    let pending = p["build"]["generation"].as_u64().unwrap();
    let (st, errors) = s.get(&format!(
        "/v1/projection/errors?generation={pending}&limit=5"
    ));
    assert_eq!(st, 200, "{errors}");
    assert_eq!(errors["count"], 5);
    assert_eq!(errors["errors"][0]["projector"], "refuser");
    assert_eq!(errors["errors"][0]["code"], "rejected");
    let (st, _) = s.get("/v1/projection/errors?generation=999");
    assert_eq!(st, 404);
    // leviathanctl shows the pending build beside the live set.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_leviathanctl"))
        .args(["projectors", "status"])
        .env("LEVIATHAN_API_URL", &s.base)
        .env("LEVIATHAN_CONTROL_PLANE_TOKEN", TOKEN)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("generation {pending} (core@")) && text.contains(": pending"),
        "{text}"
    );
    assert!(text.contains("20 (max_build_errors 0)"), "{text}");
    // ...and /metrics, for the LeviathanGenerationBuildErrors alert.
    let metrics = s.metrics_text();
    assert!(
        metrics.contains("\nleviathan_generation_build_errors 20\n"),
        "{metrics}"
    );
    // The live (old) set keeps taking what the new one would refuse; the
    // pending build does not follow, and its lag says so.
    preload(&s, "more", 1, 5);
    let p = projection(&s);
    assert_eq!(p["build"]["state"], "pending", "{p}");
    assert_eq!(p["build"]["head_seq"], p["log_head_seq"], "{p}");
    assert_eq!(p["build"]["lag_events"], 10, "{p}");
    assert!(
        s.metrics_text()
            .contains("\nleviathan_generation_build_lag_events 10\n"),
        "the lag metric"
    );
    s.stop();

    // Allowing the errors lets it go live; from then on the new set's policy
    // applies to ingest (the refuser rejects).
    let lenient = manifest(
        files.path(),
        "refuser",
        &refuser(),
        "max_build_errors = 1000",
    );
    let lenient_s = lenient.display().to_string();
    let mut s = Server::start_in(
        dir.path(),
        &[("LEVIATHAN_PROJECTORS_FILE", lenient_s.as_str())],
    );
    let done = wait_projection(&s, "the switch", switched);
    assert_eq!(done["build"]["errors"], 25, "{done}");
    assert_eq!(done["generation"].as_u64(), Some(pending));
    let (st, r) = s.ingest(&bundle(
        "refused",
        vec![event(
            "x-s",
            "attempt.started",
            json!({"attempt_id": "x", "status": "running"}),
        )],
    ));
    assert_eq!(st, 422, "{r}");
    let live = projection(&s);
    s.stop();

    // The offline audit with the live set (a plain rebuild, no
    // --expect-change) records the same history errors as the build did,
    // whatever the refuser's policy, and reproduces the graph bit for bit;
    // so does `replay --to`; the server starts on it.
    let (code, out, err) = admin_full(&["rebuild", "--projectors-file", &lenient_s], dir.path());
    assert_eq!(code, 0, "{out}\n{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["identical"], true, "{report}");
    assert_eq!(report["projection_errors"], 25, "{report}");
    assert_eq!(report["state_digest"], live["state_digest"], "{report}");
    let head = live["applied_seq"].as_u64().unwrap();
    let (code, out, err) = admin_full(
        &[
            "replay",
            "--to",
            &head.to_string(),
            "--projectors-file",
            &lenient_s,
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains(live["state_digest"].as_str().unwrap()),
        "{out}"
    );
    let s = Server::start_in(
        dir.path(),
        &[("LEVIATHAN_PROJECTORS_FILE", lenient_s.as_str())],
    );
    assert_eq!(projection(&s)["state_digest"], live["state_digest"]);
}

#[test]
fn block_mode_builds_before_serving_and_an_old_store_is_told_to_use_it() {
    let files = tempfile::tempdir().unwrap();
    let m = manifest(files.path(), "team", &team(), "");
    let m_s = m.display().to_string();
    let mut s = Server::start();
    preload(&s, "pre", 3, 50);
    s.stop();
    let dir = s.keep_dir();

    // A store written before generations has no catalog and kept no
    // components: the live set cannot run beside the build, and the message
    // says what to do.
    with_store(dir.path(), |db| {
        for name in ["projector_components", "generations"] {
            let ks = keyspace(db, name);
            let keys: Vec<Vec<u8>> = ks.iter().map(|kv| kv.key().unwrap().to_vec()).collect();
            for k in keys {
                ks.remove(k).unwrap();
            }
        }
    });
    let mut cmd = serve_command(dir.path());
    cmd.env("LEVIATHAN_PROJECTORS_FILE", &m_s);
    let err = refused(cmd);
    assert!(err.contains("LEVIATHAN_REBUILD=block"), "{err}");

    // While it builds (slowed down here), the server answers probes: /livez
    // 200, /readyz 503 with what it is doing; then it is ready.
    let (mut child, rx) = spawn_block_start(dir.path(), &m_s, "100");
    let addr = addr_after(&wait_line(&rx, "probes answer on "), "probes answer on ");
    let client = reqwest::blocking::Client::new();
    let mut saw_building = false;
    let mut saw_starting_metrics = false;
    let ready = loop {
        let r = client.get(format!("http://{addr}/readyz")).send().unwrap();
        if r.status() == 200 {
            break r.json::<Value>().unwrap();
        }
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "1");
        // Start-up answers close their connection (none is kept alive
        // into the handover to the real server).
        assert_eq!(r.headers()["connection"], "close");
        let body: Value = r.json().unwrap();
        assert_eq!(body["error"]["code"], "not_ready", "{body}");
        let reason = body["error"]["details"]["reason"]
            .as_str()
            .unwrap()
            .to_string();
        if reason.contains("LEVIATHAN_REBUILD=block") && reason.contains("generation 1, seq ") {
            saw_building = true;
            let live = client.get(format!("http://{addr}/livez")).send().unwrap();
            assert_eq!(live.status(), 200);
            // /metrics is scraped through the start (a planned long build
            // is no scrape failure), and says it is starting; or, raced by
            // the handover, the served server answers with `starting 0`.
            let m = client.get(format!("http://{addr}/metrics")).send().unwrap();
            assert_eq!(m.status(), 200);
            let text = m.text().unwrap();
            // The build is named in both (the same series).
            let build = format!(
                r#"leviathan_build_info{{version="{}",revision="{}"}} 1"#,
                env!("CARGO_PKG_VERSION"),
                crate::http::metrics::build_revision()
            );
            assert!(text.lines().any(|l| l == build), "{text}");
            if text.contains("leviathan_starting 1") {
                saw_starting_metrics = true;
                assert!(
                    text.contains("leviathan_generation_build_applied_seq "),
                    "{text}"
                );
            } else {
                assert!(text.contains("leviathan_starting 0"), "{text}");
            }
            let other = client
                .get(format!("http://{addr}/v1/projection"))
                .bearer_auth(TOKEN)
                .send()
                .unwrap();
            // 503 while the build runs; the build may have finished since
            // the readyz above, and then only a ready server may answer.
            if other.status() != 503 {
                assert_eq!(other.status(), 200);
                let now = client.get(format!("http://{addr}/readyz")).send().unwrap();
                assert_eq!(
                    now.status(),
                    200,
                    "a route answered before the server was ready"
                );
            }
        }
        // Often, so some request races the start-up server's handover to
        // the real one: it must get an answer (503 or 200), never a reset.
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(ready["status"], "ready");
    assert!(saw_building, "readyz never said the build was running");
    assert!(saw_starting_metrics, "/metrics never said it was starting");
    wait_line(&rx, "listening on ");
    let s = Server::adopt(child.0.take().unwrap(), &addr, dir.path());
    let p = projection(&s);
    assert_eq!(p["generation"], 1, "{p}");
    assert_eq!(p["build"], Value::Null);
    assert_eq!(p["applied_seq"], p["log_head_seq"]);
    let (_, node) = s.get("/v1/graph/nodes/team-seen");
    assert_eq!(node["node_type"], "TeamSeen", "{node}");
}

#[test]
fn a_kept_generation_rolls_back_by_catching_up_from_where_it_stopped() {
    let files = tempfile::tempdir().unwrap();
    // A: the core alone; B: core + team. Both keep the generation they replace.
    let a = files.path().join("a.toml");
    std::fs::write(
        &a,
        "keep_previous = true\n[[projector]]\nname = \"core\"\nbuiltin = \"core\"\n",
    )
    .unwrap();
    let b = manifest(files.path(), "team", &team(), "keep_previous = true");
    let (a_s, b_s) = (a.display().to_string(), b.display().to_string());
    let mut s = Server::start_with(&[("LEVIATHAN_PROJECTORS_FILE", a_s.as_str())]);
    preload(&s, "pre", 10, 100);
    let (_, head_a) = s.get("/v1/log/head");
    s.stop();
    let dir = s.keep_dir();

    // Roll out B: generation 1 goes live, generation 0 (A's) is kept, and
    // says so.
    let mut s = Server::start_in(dir.path(), &[("LEVIATHAN_PROJECTORS_FILE", b_s.as_str())]);
    let p = wait_projection(&s, "the switch to B", switched);
    assert_eq!(p["generation"], 1, "{p}");
    assert_eq!(kept_ids(&p), [0], "{p}");
    assert_eq!(p["kept"][0]["applied_seq"], head_a["seq"], "{p}");
    let labels = p["kept"][0]["projectors"].as_array().unwrap();
    assert!(
        labels.len() == 1 && labels[0].as_str().unwrap().starts_with("core@"),
        "{p}"
    );
    assert!(p["kept"][0]["kept_at"].is_string(), "{p}");
    // leviathanctl shows it too.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_leviathanctl"))
        .args(["projectors", "status"])
        .env("LEVIATHAN_API_URL", &s.base)
        .env("LEVIATHAN_CONTROL_PLANE_TOKEN", TOKEN)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "generation 0 (core@{}): kept for a roll back, stopped at seq {}",
            labels[0].as_str().unwrap().trim_start_matches("core@"),
            head_a["seq"]
        )),
        "{text}"
    );
    preload(&s, "mid", 5, 100);
    let (_, head_b) = s.get("/v1/log/head");
    s.stop();

    // Roll back to A: its kept generation catches up from where it stopped
    // (not from seq 1) and goes live again.
    let mut s = Server::start_in(dir.path(), &[("LEVIATHAN_PROJECTORS_FILE", a_s.as_str())]);
    let p = wait_projection(&s, "the roll back to A", switched);
    assert_eq!(
        p["generation"], 0,
        "the kept generation was not reused: {p}"
    );
    let resumed = p["build"]["resumed_from_seq"].as_u64().unwrap();
    assert_eq!(
        resumed,
        head_a["seq"].as_u64().unwrap(),
        "the kept generation did not resume where B replaced it: {p}"
    );
    // It serves what A projects: no TeamSeen node, the later attempts present.
    let (st, _) = s.get("/v1/graph/nodes/team-seen");
    assert_eq!(st, 404);
    let (st, n) = s.get("/v1/graph/nodes/mid-4-99");
    assert_eq!(st, 200, "{n}");
    // B's generation is the kept one now, stopped where A took over again.
    assert_eq!(kept_ids(&p), [1], "{p}");
    assert_eq!(p["kept"][0]["applied_seq"], head_b["seq"], "{p}");
    s.stop();
    let report = offline_rebuild(dir.path(), &a);
    assert_eq!(report["state_digest"], p["state_digest"], "{report}");

    // C (the core with other limits, also keeping): a switch keeps only the
    // generation it leaves (A's), and drops B's, which the server then no
    // longer knows.
    let c = files.path().join("c.toml");
    let c_text = |keep: bool| {
        format!(
            "keep_previous = {keep}\n[[projector]]\nname = \"core\"\nbuiltin = \"core\"\n\
             [projector.limits]\nfuel = 12345678\n"
        )
    };
    std::fs::write(&c, c_text(true)).unwrap();
    let c_s = c.display().to_string();
    let mut s = Server::start_in(dir.path(), &[("LEVIATHAN_PROJECTORS_FILE", c_s.as_str())]);
    let p = wait_projection(&s, "the switch to C", switched);
    assert_eq!(p["generation"], 2, "{p}");
    assert_eq!(kept_ids(&p), [0], "{p}");
    let (st, body) = s.get("/v1/projection/errors?generation=1");
    assert_eq!(st, 404, "B's generation was not dropped: {body}");
    let (st, _) = s.get("/v1/projection/errors?generation=0");
    assert_eq!(st, 200);
    s.stop();

    // The same set without keep_previous: the start drops the kept one.
    std::fs::write(&c, c_text(false)).unwrap();
    let s = Server::start_in(dir.path(), &[("LEVIATHAN_PROJECTORS_FILE", c_s.as_str())]);
    let p = projection(&s);
    assert_eq!(p["generation"], 2, "{p}");
    assert_eq!(kept_ids(&p), Vec::<u64>::new(), "{p}");
    let (st, body) = s.get("/v1/projection/errors?generation=0");
    assert_eq!(st, 404, "A's kept generation was not dropped: {body}");
}

#[test]
fn a_roll_back_does_not_count_the_errors_its_set_recorded_while_live() {
    // R: the core and the refuser under `record`: every attempt.started is
    // recorded as an error while R is live, and accepted.
    let files = tempfile::tempdir().unwrap();
    let r = manifest(files.path(), "refuser", &refuser(), "keep_previous = true");
    let text = std::fs::read_to_string(&r).unwrap() + "on_error = \"record\"\n";
    std::fs::write(&r, text).unwrap();
    let a = files.path().join("a.toml");
    std::fs::write(
        &a,
        "keep_previous = true\n[[projector]]\nname = \"core\"\nbuiltin = \"core\"\n",
    )
    .unwrap();
    let (r_s, a_s) = (r.display().to_string(), a.display().to_string());
    let mut s = Server::start_with(&[("LEVIATHAN_PROJECTORS_FILE", r_s.as_str())]);
    preload(&s, "live", 2, 10);
    let (_, errors) = s.get("/v1/projection/errors");
    assert_eq!(errors["count"], 20, "{errors}");
    s.stop();
    let dir = s.keep_dir();

    // Away to A (R's generation kept); events R does not refuse meanwhile.
    let mut s = Server::start_in(dir.path(), &[("LEVIATHAN_PROJECTORS_FILE", a_s.as_str())]);
    wait_projection(&s, "the switch to A", switched);
    let created: Vec<Value> = (0..10)
        .map(|i| {
            event(
                &format!("later-{i}"),
                "attempt.created",
                json!({"attempt_id": format!("later-{i}"), "task_id": "t1", "attempt_number": 1}),
            )
        })
        .collect();
    let (st, body) = s.ingest(&bundle("later", created));
    assert_eq!(st, 200, "{body}");
    s.stop();

    // Back to R, max_build_errors 0: the 20 errors it recorded while live
    // were accepted then; it goes live again (it stayed pending).
    let s = Server::start_in(dir.path(), &[("LEVIATHAN_PROJECTORS_FILE", r_s.as_str())]);
    let p = wait_projection(&s, "the roll back to R", |p| {
        assert_ne!(p["build"]["state"], "pending", "{p}");
        switched(p)
    });
    assert_eq!(p["generation"], 0, "{p}");
    assert_eq!(p["build"]["errors"], 0, "{p}");
    let (_, errors) = s.get("/v1/projection/errors");
    assert_eq!(errors["count"], 20, "{errors}");
}

fn kept_ids(p: &Value) -> Vec<u64> {
    p["kept"]
        .as_array()
        .unwrap_or_else(|| panic!("no kept list: {p}"))
        .iter()
        .map(|k| k["generation"].as_u64().unwrap())
        .collect()
}

/// A block-mode start (slowed), its stderr lines sent to `rx` as they come.
fn spawn_block_start(
    dir: &Path,
    manifest: &str,
    rate: &str,
) -> (KillOnDrop, std::sync::mpsc::Receiver<String>) {
    let mut cmd = serve_command(dir);
    cmd.env("LEVIATHAN_PROJECTORS_FILE", manifest)
        .env("LEVIATHAN_REBUILD", "block")
        .env("LEVIATHAN_BUILD_RATE", rate)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = KillOnDrop(Some(cmd.spawn().unwrap()));
    let stderr = child.0.as_mut().unwrap().stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// The address a log line gives after `marker` (`listening on 127.0.0.1:…`).
fn addr_after(lines: &[String], marker: &str) -> String {
    let line = lines.last().unwrap();
    let i = line.find(marker).unwrap() + marker.len();
    line[i..]
        .split(|c: char| c.is_whitespace() || c == '"')
        .next()
        .unwrap_or("")
        .to_string()
}

/// Waits (60 s at most) for a line containing `needle`; the lines up to it.
fn wait_line(rx: &std::sync::mpsc::Receiver<String>, needle: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no line with {needle:?} in: {seen:#?}"));
        let found = line.contains(needle);
        seen.push(line);
        if found {
            return seen;
        }
    }
}

#[test]
fn signals_during_a_block_start_stop_it_cleanly_or_wait_for_the_start() {
    let files = tempfile::tempdir().unwrap();
    let m = manifest(files.path(), "team", &team(), "");
    let m_s = m.display().to_string();
    let mut s = Server::start();
    preload(&s, "pre", 4, 50);
    s.stop();
    let dir = s.keep_dir();
    let pid = |c: &KillOnDrop| c.0.as_ref().unwrap().id().to_string();
    let kill = |sig: &str, pid: &str| {
        assert!(std::process::Command::new("kill")
            .args([sig, pid])
            .status()
            .unwrap()
            .success());
    };

    // SIGTERM while the build runs: the process says so and exits 0 (it
    // used to die of the signal with no line at all).
    let (mut child, rx) = spawn_block_start(dir.path(), &m_s, "200");
    wait_line(&rx, "building its graph before serving");
    kill("-TERM", &pid(&child));
    let status = child.0.take().unwrap().wait().unwrap();
    assert!(status.success(), "{status}");
    wait_line(&rx, "SIGTERM/SIGINT during start-up: stopping now");

    // SIGHUP while the build runs: the start goes on (the signal's default
    // action killed it), and the tokens are read again once it is ready.
    let (mut child, rx) = spawn_block_start(dir.path(), &m_s, "200");
    wait_line(&rx, "building its graph before serving");
    kill("-HUP", &pid(&child));
    wait_line(&rx, "SIGHUP during start-up");
    let lines = wait_line(&rx, "listening on ");
    assert!(
        child.0.as_mut().unwrap().try_wait().unwrap().is_none(),
        "{lines:#?}"
    );
    wait_line(&rx, "SIGHUP: no LEVIATHAN_TOKENS_FILE to reload");
}

/// A server process this file spawned itself: killed when dropped unless
/// taken (by `Server::adopt`), so a failed assertion leaks no process.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A store on set A (the core), then rolled forward to B (core + team,
/// keeping A's generation), back to A (B's generation deleted) and forward
/// to B again, each round switched and given more events: the manifests'
/// dir, the data dir, B's manifest and the live generation of each round.
fn forward_back_and_forward_again() -> (tempfile::TempDir, tempfile::TempDir, String, Vec<u64>) {
    let files = tempfile::tempdir().unwrap();
    let a = files.path().join("a.toml");
    std::fs::write(&a, "[[projector]]\nname = \"core\"\nbuiltin = \"core\"\n").unwrap();
    let b = manifest(files.path(), "team", &team(), "keep_previous = true");
    let (a_s, b_s) = (a.display().to_string(), b.display().to_string());
    let mut s = Server::start_with(&[("LEVIATHAN_PROJECTORS_FILE", a_s.as_str())]);
    preload(&s, "pre", 2, 50);
    s.stop();
    let dir = s.keep_dir();
    let mut generations = Vec::new();
    for (round, m) in [&b_s, &a_s, &b_s].into_iter().enumerate() {
        let mut s = Server::start_in(dir.path(), &[("LEVIATHAN_PROJECTORS_FILE", m.as_str())]);
        let p = wait_projection(&s, "the switch", switched);
        generations.push(p["generation"].as_u64().unwrap());
        preload(&s, &format!("r{round}"), 1, 20);
        s.stop();
    }
    (files, dir, b_s, generations)
}

#[test]
fn a_generation_id_is_never_handed_out_twice() {
    // Found by a black-box session: forward to B (keeping A's generation),
    // back to A (B's generation 1 deleted), forward to B again: the new
    // generation got id 1 again.
    let (_files, _dir, _, generations) = forward_back_and_forward_again();
    assert_eq!(generations, [1, 0, 2], "the ids of the live generations");
}

#[test]
fn after_forward_back_and_forward_again_a_restart_finds_the_graph_at_the_head() {
    // Found by a black-box session: after a clean stop the store refused to
    // start ("the graph is projected up to seq 0 but the log ends at seq
    // …") with every manifest. fjall had handed the deleted generation's
    // keyspace ids out again and the meta keyspace's tombstones of the old
    // names hid the new ones (vendor/fjall/LEVIATHAN-PATCH.md); timing
    // decides, so this failed in some runs only (3 of 12, four at once).
    let (_files, dir, b_s, _) = forward_back_and_forward_again();
    // Restarts with the same set find their graph where the log ends.
    for _ in 0..2 {
        let mut s = Server::start_in(dir.path(), &[("LEVIATHAN_PROJECTORS_FILE", b_s.as_str())]);
        let p = projection(&s);
        assert_eq!(p["generation"], 2, "{p}");
        let (_, head) = s.get("/v1/log/head");
        assert_eq!(p["applied_seq"], head["seq"], "{p}");
        let (st, n) = s.get("/v1/graph/nodes/team-seen");
        assert_eq!(st, 200, "{n}");
        s.stop();
    }
}

#[test]
fn a_resumed_build_keeps_to_the_build_rate_and_reports_this_runs_rate() {
    const RATE: u64 = 1000;
    let files = tempfile::tempdir().unwrap();
    let m = manifest(files.path(), "team", &team(), "");
    let m_s = m.display().to_string();
    let mut s = Server::start();
    preload(&s, "pre", 2, 100);
    // Mostly events no projector handles: the build (a debug build too) is
    // then many times faster than the cap, so that only the cap slows it.
    for b in 0..12 {
        let notes: Vec<Value> = (0..400)
            .map(|i| event(&format!("note-{b}-{i}"), "custom.note", json!({ "n": i })))
            .collect();
        assert_eq!(s.ingest(&bundle(&format!("notes-{b}"), notes)).0, 200);
    }
    s.stop();
    let dir = s.keep_dir();
    let rate = RATE.to_string();
    let env = [
        ("LEVIATHAN_PROJECTORS_FILE", m_s.as_str()),
        ("LEVIATHAN_BUILD_RATE", rate.as_str()),
    ];
    let mut s = Server::start_in(dir.path(), &env);
    wait_projection(&s, "a build under way", |p| {
        p["build"]["applied_seq"].as_u64().unwrap_or(0) >= RATE / 2
    });
    s.kill();

    // The resumed build, from the first answer that shows it to the switch,
    // is never ahead of the cap. Loose bounds (a loaded machine only slows
    // the build): the events it applied took at least 0.6 of their time at
    // the cap, and the rate it reports is never far above the cap. A resumed
    // build once ran several times faster than its cap (its first chunk, a
    // second's worth, went through at once, and the writer's switch caught
    // up 2,048 events unpaced), and reported ten times the cap right after
    // its first chunk.
    let s = Server::start_in(dir.path(), &env);
    let first = projection(&s);
    let t0 = Instant::now();
    let from = first["build"]["applied_seq"].as_u64().unwrap();
    assert!(
        first["build"]["resumed_from_seq"].as_u64().unwrap() >= RATE / 2,
        "the build started over: {first}"
    );
    let mut max_rate = 0f64;
    let done = wait_projection(&s, "the switch", |p| {
        if p["build"]["state"] == "building" {
            max_rate = max_rate.max(p["build"]["events_per_second"].as_f64().unwrap());
        }
        switched(p)
    });
    let secs = t0.elapsed().as_secs_f64();
    let to = done["build"]["applied_seq"].as_u64().unwrap();
    let events = to - from;
    assert!(events >= 3000, "too little left to build: {first}\n{done}");
    let at_cap = events as f64 / RATE as f64;
    assert!(
        secs >= 0.6 * at_cap,
        "{events} events built in {secs:.1} s at a cap of {RATE}/s (at least {:.1} s expected)",
        0.6 * at_cap
    );
    assert!(
        max_rate <= 1.5 * RATE as f64,
        "reported {max_rate:.0} events/s at a cap of {RATE}/s"
    );
    // Once switched, the rate shown is the run's average (not 0), and
    // leviathanctl says so (it showed `rate 0 events/s`).
    let avg = done["build"]["events_per_second"].as_f64().unwrap();
    assert!(avg > 0.0 && avg <= 1.5 * RATE as f64, "{done}");
    let text = ctl(&s, &["projectors", "status"]);
    assert!(
        text.lines().any(|l| l.starts_with("average rate")
            && l.contains(" events/s (from seq ")
            && !l.contains(" 0 events/s")),
        "{text}"
    );
    assert!(!text.lines().any(|l| l.starts_with("rate ")), "{text}");
}

fn ctl(s: &Server, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_leviathanctl"))
        .args(args)
        .env("LEVIATHAN_API_URL", &s.base)
        .env("LEVIATHAN_CONTROL_PLANE_TOKEN", TOKEN)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn leviathanctl_counts_handled_types_and_names_a_recorded_trap_once() {
    let files = tempfile::tempdir().unwrap();
    let trapper = crate::common::wasm::body_projector(
        &Describe {
            name: "trapper",
            version: "0.1.0",
            handles: &["attempt.started"],
            node_types: &["Trapped"],
            edge_types: &[],
        },
        "unreachable",
    );
    let m = manifest(files.path(), "trapper", &trapper, "");
    let text = std::fs::read_to_string(&m).unwrap() + "on_error = \"record\"\n";
    std::fs::write(&m, text).unwrap();
    let m_s = m.display().to_string();
    let s = Server::start_with(&[("LEVIATHAN_PROJECTORS_FILE", m_s.as_str())]);
    preload(&s, "t", 1, 1);
    let list = ctl(&s, &["projectors", "list"]);
    let row = list
        .lines()
        .find(|l| l.starts_with("trapper"))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(
        row.contains(" 1 type ") && !row.contains("1 types"),
        "{list}"
    );
    let status = ctl(&s, &["projectors", "status"]);
    let last = status
        .lines()
        .find(|l| l.starts_with("last recorded error:"))
        .unwrap_or_else(|| panic!("{status}"));
    assert!(
        last.contains("trapper: trap: ") && !last.contains("trap: trap:"),
        "{status}"
    );
}
