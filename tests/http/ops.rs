//! Operations: the background chain verifier, JSON logs with request ids, one
//! process per data dir, and the projectors' allocator on a small node.

use crate::common::*;
use crate::http::metrics::metric;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Polls `f` until it gives `Some`, for at most a minute.
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn verification(s: &Server) -> Value {
    let (st, v) = s.get("/v1/log/verification");
    assert_eq!(st, 200, "{v}");
    v
}

#[test]
fn the_background_verifier_covers_the_log_incrementally() {
    let s = Server::start_with(&[("LEVIATHAN_VERIFY_INTERVAL_SECS", "1")]);
    assert_eq!(s.ingest(&bundle("v1", events("v1", 5))).0, 200);
    let first = wait_for("a pass that covers seq 5", || {
        let v = verification(&s);
        (v["verified_seq"] == 5).then_some(v)
    });
    assert_eq!(first["status"], "ok", "{first}");
    assert_eq!(first["interval_secs"], 1);
    assert_eq!(first["failures"], 0);
    let (_, head) = s.get("/v1/log/head");
    assert_eq!(first["verified_hash"], head["hash"]);
    assert!(first["last_verified_at"].as_str().unwrap().ends_with('Z'));

    // The next pass checks only what was appended since.
    assert_eq!(s.ingest(&bundle("v2", events("v2", 3))).0, 200);
    let next = wait_for("a pass that covers seq 8", || {
        let v = verification(&s);
        (v["verified_seq"] == 8).then_some(v)
    });
    assert_eq!(next["status"], "ok");
    assert_eq!(next["last_checked_events"], 3, "{next}");
    let text = s.metrics_text();
    assert_eq!(metric(&text, "leviathan_chain_verified_seq"), 8.0);
    assert_eq!(metric(&text, "leviathan_chain_verify_failures_total"), 0.0);
    assert!(metric(&text, "leviathan_chain_last_verify_timestamp_seconds") > 1.7e9);
    // The route needs a token like every v1 route.
    let anonymous = s.client.get(s.url("/v1/log/verification")).send().unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
}

#[test]
fn a_broken_chain_is_reported_with_its_seq() {
    let mut s = Server::start();
    assert_eq!(s.ingest(&bundle("b1", events("b1", 4))).0, 200);
    let dir = s.keep_dir();
    s.stop();
    // Seq 2's content changes under its stored hash (the head still matches,
    // so the server starts).
    tamper_with_event(dir.path(), 2, "b1-a1", "b1-zz");
    let s = Server::start_in(dir.path(), &[]);
    let v = wait_for("the first pass", || {
        let v = verification(&s);
        (v["status"] != "pending").then_some(v)
    });
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(v["first_broken_seq"], 2);
    assert_eq!(v["verified_seq"], 0);
    assert!(
        v["error"].as_str().unwrap().contains("hash mismatch"),
        "{v}"
    );
    assert!(v["failures"].as_u64().unwrap() >= 1);
    let text = s.metrics_text();
    assert!(metric(&text, "leviathan_chain_verify_failures_total") >= 1.0);
    assert_eq!(metric(&text, "leviathan_chain_verified_seq"), 0.0);
    let logged = wait_for("the error line", || {
        s.log
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains("ERROR") && l.contains("broken at seq 2"))
            .cloned()
    });
    assert!(logged.contains("seq=2"), "{logged}");
    // Reads still work: the verifier reports, it does not stop the server.
    assert_eq!(s.get("/v1/log/head").0, 200);
}

#[test]
fn json_logs_carry_the_request_id_of_every_line_of_a_request() {
    let s = Server::start_with(&[
        ("LEVIATHAN_LOG_FORMAT", "json"),
        ("LEVIATHAN_TEST_PANIC_ROUTE", "true"),
    ]);
    let resp = s
        .req(reqwest::Method::GET, "/v1/_test/panic")
        .header("x-request-id", "json-req-1")
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 500);
    let resp = s
        .req(reqwest::Method::GET, "/v1/log/head")
        .header("x-request-id", "json-req-2")
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let lines = wait_for("the request line of json-req-2", || {
        let log = s.log.lock().unwrap().clone();
        log.iter()
            .any(|l| l.contains("json-req-2") && l.contains("\"status\":200"))
            .then_some(log)
    });
    let parsed: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let of = |id: &str| -> Vec<&Value> {
        parsed
            .iter()
            .filter(|v| v["span"]["request_id"] == id)
            .collect()
    };
    let first = of("json-req-1");
    // The panic (logged by the hook inside the handler), the edge's report
    // of it, and the request line.
    let messages: Vec<&str> = first
        .iter()
        .map(|v| v["fields"]["message"].as_str().unwrap_or(""))
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("panicked") && m.contains("on purpose")),
        "{messages:?}"
    );
    assert!(
        messages.contains(&"a request handler panicked"),
        "{messages:?}"
    );
    assert!(messages.contains(&"request"), "{messages:?}");
    assert!(first.iter().all(|v| v["level"].is_string()));
    let second = of("json-req-2");
    assert_eq!(second.len(), 1, "{second:?}");
    assert_eq!(second[0]["fields"]["token"], "control-plane");
    assert_eq!(second[0]["fields"]["path"], "/v1/log/head");
    // Never the token itself.
    assert!(lines.iter().all(|l| !l.contains(TOKEN)));
}

#[test]
fn an_unknown_log_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = serve_command(dir.path());
    cmd.env("LEVIATHAN_LOG_FORMAT", "xml");
    let text = refused(cmd);
    assert!(text.contains("LEVIATHAN_LOG_FORMAT=\"xml\""), "{text}");
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused() {
    let s = Server::start();
    assert_eq!(s.ingest(&bundle("l1", events("l1", 2))).0, 200);
    let text = refused(serve_command(&s.data_dir));
    let dir = s.data_dir.display().to_string();
    assert!(
        text.contains(&format!("cannot open the store in {dir}"))
            && text.contains("another leviathan process"),
        "{text}"
    );
    // The first one is unharmed.
    assert_eq!(s.ingest(&bundle("l2", events("l2", 2))).0, 200);
    assert_eq!(s.get("/v1/log/head").1["seq"], 4);
}

#[test]
fn the_projectors_fall_back_to_on_demand_allocation_without_address_space() {
    let dir = tempfile::tempdir().unwrap();
    let serve = serve_command(dir.path());
    // 64 GiB of address space: less than the pool reserves (32 slots of two
    // 4 GiB memories), more than one on-demand instance needs.
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -v 67108864 && exec \"$@\"")
        .arg("sh")
        .arg(serve.get_program())
        .args(serve.get_args());
    for (k, v) in serve.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let s = Server::spawn(cmd, dir.path());
    assert!(
        s.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("falling back to the on-demand allocator")),
        "{:?}",
        s.log.lock().unwrap()
    );
    let bundles = mixed_log(2);
    for b in &bundles {
        assert_eq!(s.ingest(b).0, 200);
    }
    // The projector ran: the attempt's artifact is in the graph.
    let (_, attempt) = s.get("/v1/attempts/att-0");
    assert_eq!(
        attempt["artifacts"].as_array().map(Vec::len),
        Some(1),
        "{attempt}"
    );
}
