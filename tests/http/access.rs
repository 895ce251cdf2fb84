//! Scoped tokens: every route × {no token, unknown token, ingest, read, admin,
//! control-plane}, over HTTP against a real server whose tokens file was
//! written with `leviathan token hash`; the token's name as the actor of
//! invalidations and in the request log; reloading the file on SIGHUP.

use crate::common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const INGEST: &str = "ingest-token-aaaaaaaaaaaaaaaa";
const READ: &str = "read-token-bbbbbbbbbbbbbbbbbbbb";
const ADMIN: &str = "admin-token-cccccccccccccccccccc";
const UNKNOWN: &str = "unknown-token-dddddddddddddddddd";

const SHA: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

/// (method, route template as in src/api/mod.rs, a concrete path, the role it needs).
const MATRIX: &[(&str, &str, &str, &str)] = &[
    ("POST", "/v1/events/ingest", "/v1/events/ingest", "ingest"),
    ("GET", "/v1/events/recent", "/v1/events/recent", "read"),
    ("GET", "/v1/events", "/v1/events?after_seq=0", "read"),
    // A bad filter: an authorized request is answered (422) instead of streaming.
    (
        "GET",
        "/v1/events/stream",
        "/v1/events/stream?type=a*",
        "read",
    ),
    ("GET", "/v1/events/{event_id}", "/v1/events/e1", "read"),
    ("GET", "/v1/log/head", "/v1/log/head", "read"),
    ("GET", "/v1/log/verify", "/v1/log/verify", "read"),
    ("GET", "/v1/log/checkpoint", "/v1/log/checkpoint", "read"),
    ("GET", "/v1/log/public-key", "/v1/log/public-key", "read"),
    ("GET", "/v1/log/signers", "/v1/log/signers", "read"),
    (
        "GET",
        "/v1/log/consistency",
        "/v1/log/consistency?from=0",
        "read",
    ),
    (
        "GET",
        "/v1/events/{event_id}/proof",
        "/v1/events/e1/proof",
        "read",
    ),
    (
        "GET",
        "/v1/events/{event_id}/bundle",
        "/v1/events/e1/bundle",
        "read",
    ),
    ("GET", "/v1/failures", "/v1/failures", "read"),
    ("GET", "/v1/graph/summary", "/v1/graph/summary", "read"),
    ("GET", "/v1/projection", "/v1/projection", "read"),
    ("GET", "/v1/cluster", "/v1/cluster", "read"),
    (
        "GET",
        "/v1/projection/errors",
        "/v1/projection/errors",
        "read",
    ),
    ("GET", "/v1/graph/nodes", "/v1/graph/nodes", "read"),
    ("GET", "/v1/graph/nodes/{id}", "/v1/graph/nodes/x", "read"),
    (
        "GET",
        "/v1/graph/nodes/{id}/edges",
        "/v1/graph/nodes/x/edges",
        "read",
    ),
    (
        "GET",
        "/v1/graph/nodes/{id}/history",
        "/v1/graph/nodes/x/history",
        "read",
    ),
    (
        "GET",
        "/v1/log/verification",
        "/v1/log/verification",
        "read",
    ),
    ("POST", "/v1/admin/backup", "/v1/admin/backup", "admin"),
    ("GET", "/v1/attempts", "/v1/attempts", "read"),
    ("GET", "/v1/attempts/{id}", "/v1/attempts/a1", "read"),
    (
        "POST",
        "/v1/attempts/{id}/invalidate",
        "/v1/attempts/a1/invalidate",
        "admin",
    ),
    (
        "GET",
        "/v1/topology/summary",
        "/v1/topology/summary?target=t",
        "read",
    ),
    (
        "GET",
        "/v1/topology/{kind}",
        "/v1/topology/areas?target=t",
        "read",
    ),
    ("GET", "/v1/autonomy/status", "/v1/autonomy/status", "read"),
    ("POST", "/v1/backlog/suggest", "/v1/backlog/suggest", "read"),
    ("POST", "/v1/artifacts", "/v1/artifacts", "ingest"),
    ("GET", "/v1/artifacts/{sha256}", "/v1/artifacts/SHA", "read"),
    (
        "HEAD",
        "/v1/artifacts/{sha256}",
        "/v1/artifacts/SHA",
        "read",
    ),
    (
        "PUT",
        "/v1/artifacts/{sha256}",
        "/v1/artifacts/SHA",
        "ingest",
    ),
];

/// `echo TOKEN | leviathan token hash --name NAME --roles ROLES`.
fn token_line(name: &str, roles: &str, token: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_leviathan"))
        .args(["token", "hash", "--name", name, "--roles", roles])
        .env("LEVIATHAN_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run leviathan token hash");
    std::io::Write::write_all(
        child.stdin.as_mut().expect("stdin"),
        format!("{token}\n").as_bytes(),
    )
    .expect("write the token");
    let out = child.wait_with_output().expect("token hash");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).expect("utf-8");
    assert!(!line.contains(token), "the token itself is printed: {line}");
    assert_eq!(
        line,
        format!("{name} {roles} {}\n", sha256_hex(token.as_bytes()))
    );
    line
}

fn write_tokens(path: &Path) {
    let text = format!(
        "# scoped tokens\n{}{}{}",
        token_line("executor", "ingest", INGEST),
        token_line("dashboard", "read", READ),
        token_line("ops-admin", "admin", ADMIN),
    );
    std::fs::write(path, text).expect("write the tokens file");
}

fn send(s: &Server, method: &str, path: &str, token: Option<&str>) -> (u16, Option<Value>) {
    let path = path.replace("SHA", SHA);
    let mut req = s
        .client
        .request(method.parse().expect("method"), s.url(&path))
        .header("Content-Type", "application/json")
        .body("{not json");
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().expect("send");
    let status = resp.status().as_u16();
    // The checkpoint and the public key answer text/plain.
    let plain = resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/plain"));
    let text = resp.text().expect("body");
    let body = (!text.is_empty() && !plain).then(|| {
        serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{method} {path}: non-JSON {status}: {text}"))
    });
    (status, body)
}

#[test]
fn the_matrix_covers_every_route_of_the_router() {
    let src = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/api/mod.rs"))
        .expect("read src/api/mod.rs");
    let mut routes: Vec<&str> = src
        .split('"')
        .filter(|s| s.starts_with("/v1/") && !s.starts_with("/v1/_test/"))
        .collect();
    routes.sort();
    routes.dedup();
    assert!(routes.len() >= 20, "{routes:?}");
    for r in routes {
        assert!(
            MATRIX.iter().any(|(_, t, _, _)| *t == r),
            "route {r} of src/api/mod.rs is missing from the role matrix in tests/http/access.rs"
        );
    }
}

#[test]
fn every_route_answers_by_role() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("tokens");
    write_tokens(&file);
    let s = Server::start_with(&[("LEVIATHAN_TOKENS_FILE", file.to_str().expect("utf-8"))]);
    let tokens: &[(&str, Option<&str>)] = &[
        ("none", None),
        ("unknown", Some(UNKNOWN)),
        ("ingest", Some(INGEST)),
        ("read", Some(READ)),
        ("admin", Some(ADMIN)),
        ("control-plane", Some(TOKEN)),
    ];
    for (method, _, path, role) in MATRIX {
        for (who, token) in tokens {
            let (status, body) = send(&s, method, path, *token);
            let ctx = format!("{method} {path} as {who}");
            match *who {
                "none" | "unknown" => {
                    assert_eq!(status, 401, "{ctx}");
                    if *method != "HEAD" {
                        let b = body.expect("a JSON body");
                        assert_eq!(b["error"]["code"], "unauthorized", "{ctx}: {b}");
                    }
                }
                w if w == *role || w == "control-plane" => {
                    assert!(status != 401 && status != 403, "{ctx}: {status} {body:?}");
                }
                w => {
                    assert_eq!(status, 403, "{ctx}: {body:?}");
                    if *method != "HEAD" {
                        let b = body.expect("a JSON body");
                        assert_eq!(b["error"]["code"], "forbidden", "{ctx}: {b}");
                        let msg = b["error"]["message"].as_str().expect("message");
                        assert!(msg.contains(&format!("`{role}` role")), "{ctx}: {msg}");
                        let name = match w {
                            "ingest" => "executor",
                            "read" => "dashboard",
                            _ => "ops-admin",
                        };
                        assert!(msg.contains(name), "{ctx}: {msg}");
                        assert_eq!(b["error"]["details"]["required_role"], *role, "{ctx}");
                    }
                }
            }
        }
    }
    // /healthz and /metrics need no token.
    assert_eq!(send(&s, "GET", "/healthz", None).0, 200);
    let metrics = s.client.get(s.url("/metrics")).send().expect("metrics");
    assert_eq!(metrics.status().as_u16(), 200);
}

#[test]
fn the_token_name_is_the_actor_of_an_invalidation_and_in_the_log_but_never_the_token() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("tokens");
    write_tokens(&file);
    let s = Server::start_with(&[("LEVIATHAN_TOKENS_FILE", file.to_str().expect("utf-8"))]);
    let resp = s
        .client
        .post(s.url("/v1/events/ingest"))
        .bearer_auth(INGEST)
        .json(&bundle(
            "b1",
            vec![event(
                "e1",
                "attempt.created",
                json!({"attempt_id": "a1", "task_id": "t1", "attempt_number": 1}),
            )],
        ))
        .send()
        .expect("ingest");
    assert_eq!(resp.status().as_u16(), 200);
    let (st, v) = parse(
        s.client
            .post(s.url("/v1/attempts/a1/invalidate"))
            .bearer_auth(ADMIN)
            .json(&json!({"reason": "flaky", "actor_id": "alice"}))
            .send()
            .expect("invalidate"),
    );
    assert_eq!(st, 200, "{v}");
    let event_id = v["event_id"].as_str().expect("event id").to_string();
    let (st, ev) = parse(
        s.client
            .get(s.url(&format!("/v1/events/{event_id}")))
            .bearer_auth(READ)
            .send()
            .expect("read"),
    );
    assert_eq!(st, 200, "{ev}");
    assert_eq!(ev["actor_id"], "ops-admin", "{ev}");
    assert_eq!(ev["payload"]["requested_by"], "alice", "{ev}");

    // The request line is logged as the response goes out: wait (bounded)
    // until the log reader has it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let log = loop {
        let log = s.log.lock().expect("log").join("\n");
        let all = ["executor", "ops-admin", "dashboard"]
            .iter()
            .all(|name| log.contains(&format!("token={name}")));
        if all || std::time::Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    for name in ["executor", "ops-admin", "dashboard"] {
        assert!(
            log.contains(&format!("token={name}")),
            "no request line with {name}:\n{log}"
        );
    }
    for secret in [INGEST, READ, ADMIN, TOKEN] {
        assert!(!log.contains(secret), "a token is in the log");
    }
}

fn head_as(s: &Server, token: &str) -> u16 {
    s.client
        .get(s.url("/v1/log/head"))
        .bearer_auth(token)
        .send()
        .expect("send")
        .status()
        .as_u16()
}

/// Polls `cond` (an observable state of the server) until it holds.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sighup_reloads_the_tokens_file_and_a_bad_file_keeps_the_old_tokens() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("tokens");
    std::fs::write(&file, token_line("dashboard", "read", READ)).expect("write");
    // Only the file: no LEVIATHAN_CONTROL_PLANE_TOKEN.
    let s = Server::start_with(&[
        ("LEVIATHAN_TOKENS_FILE", file.to_str().expect("utf-8")),
        ("LEVIATHAN_CONTROL_PLANE_TOKEN", ""),
    ]);
    assert_eq!(head_as(&s, READ), 200);
    assert_eq!(
        head_as(&s, TOKEN),
        401,
        "the control-plane token is not configured"
    );
    assert_eq!(head_as(&s, ADMIN), 401);

    // A new file, swapped in as a Kubernetes Secret update does (write + rename).
    let tmp = dir.path().join("tokens.new");
    std::fs::write(&tmp, token_line("ops", "read,admin", ADMIN)).expect("write");
    std::fs::rename(&tmp, &file).expect("rename");
    s.signal("-HUP");
    wait_for("the new token", || head_as(&s, ADMIN) == 200);
    assert_eq!(head_as(&s, READ), 401, "the removed token still works");

    // A broken file: the old set stays, the log says why.
    std::fs::write(&file, "ops admin,read not-a-hash\n").expect("write");
    s.signal("-HUP");
    wait_for("the reload error in the log", || {
        s.log
            .lock()
            .expect("log")
            .iter()
            .any(|l| l.contains("was not reloaded"))
    });
    let line = s
        .log
        .lock()
        .expect("log")
        .iter()
        .find(|l| l.contains("was not reloaded"))
        .cloned()
        .expect("line");
    assert!(line.contains("ERROR") && line.contains(":1:"), "{line}");
    assert_eq!(head_as(&s, ADMIN), 200, "a bad file dropped the old tokens");
    // An empty file (a Secret caught mid-update) is refused the same way.
    std::fs::write(&file, "").expect("write");
    s.signal("-HUP");
    wait_for("the second reload error", || {
        s.log
            .lock()
            .expect("log")
            .iter()
            .filter(|l| l.contains("was not reloaded"))
            .count()
            == 2
    });
    assert_eq!(head_as(&s, ADMIN), 200);
}

fn start_fails(env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().expect("tmp");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_leviathan"));
    cmd.args(["serve", "--host", "127.0.0.1", "--port", "0", "--data-dir"])
        .arg(dir.path())
        .env_remove("LEVIATHAN_CONTROL_PLANE_TOKEN")
        .env_remove("LEVIATHAN_TOKENS_FILE")
        .env("LEVIATHAN_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run");
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_server_refuses_to_start_without_a_usable_token() {
    let err = start_fails(&[]);
    assert!(
        err.contains("LEVIATHAN_TOKENS_FILE") && err.contains("LEVIATHAN_CONTROL_PLANE_TOKEN"),
        "{err}"
    );
    let dir = tempfile::tempdir().expect("tmp");
    let missing = dir.path().join("nope");
    let err = start_fails(&[("LEVIATHAN_TOKENS_FILE", missing.to_str().expect("utf-8"))]);
    assert!(err.contains("cannot read the tokens file"), "{err}");
    let bad = dir.path().join("bad");
    std::fs::write(&bad, format!("x read {READ}\n")).expect("write");
    let err = start_fails(&[
        ("LEVIATHAN_TOKENS_FILE", bad.to_str().expect("utf-8")),
        ("LEVIATHAN_CONTROL_PLANE_TOKEN", TOKEN),
    ]);
    assert!(
        err.contains(":1:") && err.contains("never put the token itself"),
        "{err}"
    );
    assert!(!err.contains(READ), "the error echoes the token: {err}");
}
