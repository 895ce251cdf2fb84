//! A panic (a bug) where events are projected, forced with the hidden hook
//! `LEVIATHAN_TEST_PANIC_ON_EVENT=<event id>`. The writer turns it into a
//! visible storage failure (ingest and readiness 503 `writer_panicked`,
//! `leviathan_writer_up` 0) and loses nothing acknowledged; a generation
//! build fails visibly in the background, and a `LEVIATHAN_REBUILD=block`
//! start exits with the panic, never hangs (it did, in session 35).

use crate::common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const HOOK: &str = "LEVIATHAN_TEST_PANIC_ON_EVENT";

fn one(id: &str) -> Vec<Value> {
    vec![event(
        id,
        "attempt.created",
        json!({"attempt_id": format!("{id}-a"), "task_id": "t1", "attempt_number": 1}),
    )]
}

#[test]
fn a_writer_panic_stops_ingest_visibly_and_loses_nothing_acknowledged() {
    let mut s = Server::start_with(&[(HOOK, "boom")]);
    let (st, r) = s.ingest(&bundle("before", events("ok", 10)));
    assert_eq!(st, 200, "{r}");

    let (st, r) = s.ingest(&bundle("boom-bundle", one("boom")));
    assert_eq!(st, 503, "the bundle whose projection panicked: {r}");
    assert_eq!(r["error"]["code"], "storage_unavailable", "{r}");
    assert_eq!(r["error"]["details"]["cause"], "writer_panicked", "{r}");
    // Every later ingest says why, and what to do.
    let (st, r) = s.ingest(&bundle("after", one("later")));
    assert_eq!(st, 503, "{r}");
    assert_eq!(r["error"]["details"]["cause"], "writer_panicked", "{r}");
    let message = r["error"]["message"].as_str().unwrap();
    assert!(message.contains("restart the server"), "{message}");
    // Not ready, with the cause; alive; reads still answer, without the
    // unacknowledged bundle.
    let (st, r) = s.get("/readyz");
    assert_eq!(st, 503, "{r}");
    assert_eq!(r["error"]["details"]["cause"], "writer_panicked", "{r}");
    assert_eq!(s.get("/livez").0, 200);
    assert!(
        s.metrics_text().contains("\nleviathan_writer_up 0\n"),
        "leviathan_writer_up is not 0"
    );
    let (st, head) = s.get("/v1/log/head");
    assert_eq!((st, head["seq"].as_u64()), (200, Some(10)), "{head}");

    // A restart without the hook: everything acknowledged is there, the
    // chain verifies, and the refused bundle is taken now.
    s.kill();
    let dir = s.keep_dir();
    let s = Server::start_in(dir.path(), &[]);
    let (_, head) = s.get("/v1/log/head");
    assert_eq!(head["seq"], 10, "{head}");
    let (st, v) = s.get("/v1/log/verify");
    assert_eq!((st, &v["ok"]), (200, &json!(true)), "{v}");
    let (st, r) = s.ingest(&bundle("boom-bundle", one("boom")));
    assert_eq!((st, &r["first_seq"]), (200, &json!(11)), "{r}");
}

/// A store with 300 events whose last is `last-event`, and a manifest of the
/// core with other limits (another set: a generation build).
fn store_and_new_set() -> (tempfile::TempDir, tempfile::TempDir, String) {
    let mut s = Server::start();
    for b in 0..3 {
        let (st, r) = s.ingest(&bundle(&format!("b{b}"), events(&format!("e{b}"), 100)));
        assert_eq!(st, 200, "{r}");
    }
    let (st, r) = s.ingest(&bundle("last", one("last-event")));
    assert_eq!(st, 200, "{r}");
    s.stop();
    let dir = s.keep_dir();
    let files = tempfile::tempdir().unwrap();
    let m = files.path().join("other.toml");
    std::fs::write(
        &m,
        "[[projector]]\nname = \"core\"\nbuiltin = \"core\"\n[projector.limits]\nfuel = 12345678\n",
    )
    .unwrap();
    let m = m.display().to_string();
    (dir, files, m)
}

#[test]
fn a_block_mode_build_that_panics_exits_with_the_panic() {
    // The panic on the log's last event: the build's reader is then idle at
    // the head, the case that hung.
    let (dir, _files, m) = store_and_new_set();
    let mut cmd = serve_command(dir.path());
    cmd.env("LEVIATHAN_PROJECTORS_FILE", &m)
        .env("LEVIATHAN_REBUILD", "block")
        .env(HOOK, "last-event");
    let err = refused(cmd);
    assert!(err.contains("panic"), "{err}");
    assert!(err.contains("last-event"), "{err}");
    // The live generation is untouched: a start with the old set serves.
    let s = Server::start_in(dir.path(), &[]);
    let (_, head) = s.get("/v1/log/head");
    assert_eq!(head["seq"], 301, "{head}");
    let (st, _) = s.get("/v1/graph/nodes/e1-a5");
    assert_eq!(st, 200);
}

#[test]
fn a_background_build_that_panics_fails_visibly_and_the_live_set_serves() {
    let (dir, _files, m) = store_and_new_set();
    let s = Server::start_in(
        dir.path(),
        &[
            ("LEVIATHAN_PROJECTORS_FILE", m.as_str()),
            (HOOK, "last-event"),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let p = loop {
        let (st, p) = s.get("/v1/projection");
        assert_eq!(st, 200, "{p}");
        if p["build"]["state"] == "failed" {
            break p;
        }
        assert!(Instant::now() < deadline, "the build never failed: {p}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let message = p["build"]["message"].as_str().unwrap();
    assert!(message.contains("panicked"), "{message}");
    assert_eq!(p["generation"], 0, "{p}");
    // The live generation still serves and takes ingest.
    assert_eq!(s.get("/readyz").0, 200);
    let (st, r) = s.ingest(&bundle("more", events("more", 5)));
    assert_eq!(st, 200, "{r}");
}
