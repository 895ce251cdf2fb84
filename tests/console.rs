//! The operator console in a real browser: a real server on loopback, and
//! `tests/console/run.mjs` driving headless Chromium (Debian's `chromium`)
//! through playwright-core: sign in, a live event in the feed within a second,
//! invalidating an attempt through its dialog, expanding a node in the graph
//! explorer, a wrong token refused with a clear message, phone width; and
//! (`tests/console/deep.mjs`) a generation's build with its errors on the
//! dashboard, a node's history and as-of view, an event's inclusion proof
//! verified in the browser. Each scenario saves a screenshot under
//! `target/console-screenshots/{basic,deep}/`.
//!
//! Needs `/usr/bin/chromium` (`apt-get install chromium chromium-driver`) and
//! `npm ci` in `tests/console/`. Without them the browser test says so and
//! passes, unless `LEVIATHAN_REQUIRE_BROWSER=1`, when it fails.
//!
//! The console's HTTP side (files, headers, the policy) is tested without a
//! browser too.
#![cfg_attr(test, allow(clippy::unwrap_used))]

use crate::common;

use common::wasm::{static_projector, Describe};
use common::{bundle, event, grow, mixed_log, sha256_hex, Server};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

fn script_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console")
}

/// Why the browser test cannot run here, if it cannot.
fn missing() -> Option<String> {
    if !chromium().is_file() {
        return Some(format!(
            "{} is absent (apt-get install -y chromium chromium-driver)",
            chromium().display()
        ));
    }
    if !script_dir().join("node_modules/playwright-core").is_dir() {
        return Some("tests/console/node_modules is absent (cd tests/console && npm ci)".into());
    }
    match Command::new("node").arg("--version").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("node is not on PATH".into()),
    }
}

#[test]
fn the_console_in_a_real_browser() {
    if !browser_or_skip("the_console_in_a_real_browser") {
        return;
    }
    let s = Server::start_with(&[("LEVIATHAN_SYNC", "none")]);
    for b in mixed_log(6) {
        assert_eq!(s.ingest(&b).0, 200);
    }
    // The artifacts' content, so that their download links work.
    for i in 0..6 {
        assert_eq!(s.put_artifact(format!("att-{i}").as_bytes()).0 / 100, 2);
    }
    let attempt = "att-2";
    let out = screenshots("basic");
    let run = Command::new("node")
        .arg(script_dir().join("run.mjs"))
        .current_dir(script_dir())
        .env("BASE_URL", &s.base)
        .env("TOKEN", common::TOKEN)
        .env("OUT_DIR", &out)
        .env("CHROMIUM", chromium())
        .env("ATTEMPT", attempt)
        .env("NODE_ID", "att-0")
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(
        run.status.success(),
        "a browser scenario failed:\n{stdout}\n{stderr}"
    );
    for name in [
        "wrong-token",
        "sign-in-dashboard",
        "live-feed",
        "invalidate-attempt",
        "invalidate-dialog",
        "graph-explorer",
        "phone-dashboard",
    ] {
        let png = out.join(format!("{name}.png"));
        let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        assert!(bytes.starts_with(b"\x89PNG"), "{name}.png is a PNG");
        assert!(
            stdout.contains(&format!("ok {name}")) || name == "invalidate-dialog",
            "{name}"
        );
    }
    // What the browser did, as the server sees it: the attempt is invalidated,
    // by an event that names the reason typed in the dialog.
    let (_, detail) = s.get(&format!("/v1/attempts/{attempt}"));
    assert_eq!(
        detail["attempt_node"]["properties"]["status"],
        "invalidated"
    );
    let inv = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_type"] == "attempt.invalidated")
        .expect("the invalidation event");
    assert_eq!(inv["payload"]["reason"], "flaky runner (browser test)");
}

#[test]
fn the_console_is_served_with_a_strict_policy() {
    let s = Server::start();
    for path in [
        "/console",
        "/console/",
        "/console/app.js",
        "/console/proof.js",
        "/console/style.css",
    ] {
        let r = s.client.get(s.url(path)).send().unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        let h = r.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        for d in [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(d), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
        assert_eq!(h["x-content-type-options"], "nosniff");
    }
    let r = s.client.get(s.url("/console")).send().unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = r.text().unwrap();
    assert!(html.contains(r#"<script type="module" src="/console/app.js"></script>"#));
    let r = s.client.get(s.url("/console/app.js")).send().unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    // An unknown file: the JSON error shape, with the policy too.
    let r = s.client.get(s.url("/console/nope.js")).send().unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert!(r.headers().contains_key("content-security-policy"));
    let (_, body) = common::parse(r);
    assert_eq!(body["error"]["code"], "not_found");

    // The policy is exactly the one docs/CONSOLE.md states, on every answer
    // under /console: files, 404s below it (deeper paths, empty segments,
    // encoded dots) and 405s (methods other than GET and HEAD).
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/CONSOLE.md"))
            .unwrap();
    let documented = doc
        .split('`')
        .find(|t| t.starts_with("default-src 'self'"))
        .expect("docs/CONSOLE.md states the policy");
    let secured = |r: &reqwest::blocking::Response, what: &str| {
        let h = r.headers();
        assert_eq!(
            h.get("content-security-policy")
                .map(|v| v.to_str().unwrap()),
            Some(documented),
            "{what}: the policy"
        );
        assert_eq!(
            h.get("x-content-type-options").map(|v| v.to_str().unwrap()),
            Some("nosniff"),
            "{what}"
        );
        assert_eq!(
            h.get("x-frame-options").map(|v| v.to_str().unwrap()),
            Some("DENY"),
            "{what}"
        );
        assert_eq!(
            h.get("referrer-policy").map(|v| v.to_str().unwrap()),
            Some("no-referrer"),
            "{what}"
        );
    };
    for path in [
        "/console",
        "/console/",
        "/console/app.js",
        "/console/favicon.svg",
    ] {
        let r = s.client.get(s.url(path)).send().unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        secured(&r, path);
    }
    // Sent as written (an HTTP client would normalize `%2e%2e` away).
    for path in [
        "/console/nope.js",
        "/console/app.js/x",
        "/console//app.js",
        "/console/%2e%2e/Cargo.toml",
        "/console/a/b/c",
    ] {
        let (status, headers) = raw_get(&s, path);
        assert_eq!(status, 404, "{path}");
        for (name, value) in [
            ("content-security-policy", documented),
            ("x-content-type-options", "nosniff"),
            ("x-frame-options", "DENY"),
            ("referrer-policy", "no-referrer"),
        ] {
            assert_eq!(
                headers.get(name).map(String::as_str),
                Some(value),
                "{path}: {name}"
            );
        }
    }
    for method in ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"] {
        for path in ["/console", "/console/app.js", "/console/nope.js"] {
            let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let r = s.client.request(m, s.url(path)).send().unwrap();
            assert_eq!(r.status().as_u16(), 405, "{method} {path}");
            secured(&r, &format!("{method} {path}"));
            assert_eq!(r.headers()["allow"], "GET, HEAD", "{method} {path}");
        }
    }
    let r = s.client.head(s.url("/console/app.js")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    secured(&r, "HEAD /console/app.js");

    // Revalidation: a strong ETag per file, the same on every answer; a
    // matching If-None-Match is a 304 without the body, still secured.
    let mut tags = std::collections::HashSet::new();
    for path in ["/console/app.js", "/console/style.css", "/console/"] {
        let r = s.client.get(s.url(path)).send().unwrap();
        let etag = r.headers()["etag"].to_str().unwrap().to_owned();
        assert!(
            etag.starts_with('"') && etag.ends_with('"') && etag.len() > 10,
            "{path}: strong ETag {etag}"
        );
        assert_eq!(r.headers()["cache-control"], "no-cache", "{path}");
        let again = s.client.get(s.url(path)).send().unwrap();
        assert_eq!(
            again.headers()["etag"].to_str().unwrap(),
            etag,
            "{path}: the same ETag"
        );
        let r = s
            .client
            .get(s.url(path))
            .header("If-None-Match", &etag)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 304, "{path}");
        assert_eq!(r.headers()["etag"].to_str().unwrap(), etag, "{path}");
        secured(&r, &format!("{path} (304)"));
        assert!(r.bytes().unwrap().is_empty(), "{path}: a 304 has no body");
        let r = s
            .client
            .get(s.url(path))
            .header("If-None-Match", "\"0000\", W/".to_owned() + &etag)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 304, "{path}: a list, a weak match");
        let r = s
            .client
            .get(s.url(path))
            .header("If-None-Match", "\"0000\"")
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}: another tag");
        assert!(!r.bytes().unwrap().is_empty());
        tags.insert(etag);
    }
    assert_eq!(tags.len(), 3, "the files differ: {tags:?}");
    // The pages hold no data: every data call needs the token.
    s.ingest(&bundle("x", vec![event("x1", "custom.note", json!({}))]));
    let r = s.client.get(s.url("/v1/events/recent")).send().unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

/// A GET of `path` exactly as written (no normalization), over HTTP/1.1:
/// the status and the headers (names lowercased).
fn raw_get(s: &Server, path: &str) -> (u16, std::collections::HashMap<String, String>) {
    use std::io::{Read, Write};
    let host = s.base.trim_start_matches("http://").trim_end_matches('/');
    let mut c = std::net::TcpStream::connect(host).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).unwrap();
    let head = text.split("\r\n\r\n").next().unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers)
}

/// Whether the browser tests can run; prints why not (and passes) unless
/// `LEVIATHAN_REQUIRE_BROWSER=1`.
fn browser_or_skip(test: &str) -> bool {
    if let Some(why) = missing() {
        if std::env::var("LEVIATHAN_REQUIRE_BROWSER").as_deref() == Ok("1") {
            panic!("LEVIATHAN_REQUIRE_BROWSER=1 but the browser test cannot run: {why}");
        }
        eprintln!("SKIPPED {test}: {why}");
        return false;
    }
    true
}

/// The screenshots' directory (`target/console-screenshots/<sub>`), emptied.
fn screenshots(sub: &str) -> PathBuf {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("console-screenshots")
        .join(sub);
    let _ = std::fs::remove_dir_all(&out);
    out
}

/// Runs `tests/console/<script>` against `s`; panics with its output if a
/// scenario failed, else answers its output. Each name in `shots` must have
/// passed and left a PNG in `out`.
fn run_script(
    script: &str,
    s: &Server,
    out: &Path,
    env: &[(&str, String)],
    shots: &[&str],
) -> String {
    let mut cmd = Command::new("node");
    cmd.arg(script_dir().join(script))
        .current_dir(script_dir())
        .env("BASE_URL", &s.base)
        .env("TOKEN", common::TOKEN)
        .env("OUT_DIR", out)
        .env("CHROMIUM", chromium());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let run = cmd.output().expect("node runs");
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&run.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(
        run.status.success(),
        "a browser scenario failed:\n{stdout}\n{stderr}"
    );
    for name in shots {
        let png = out.join(format!("{name}.png"));
        let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        assert!(bytes.starts_with(b"\x89PNG"), "{name}.png is a PNG");
        assert!(stdout.contains(&format!("ok {name} ")), "{name}");
    }
    stdout
}

/// A projector that refuses every `attempt.started`: a set with it builds a
/// generation that records errors and is held back (`pending`).
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

/// Polls `path` until `done` holds (at most 60 s).
fn wait_for(s: &Server, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (st, v) = s.get(path);
        if st == 200 && done(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {v}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Ids and situations a black-box tester tried: the skip link, events whose
/// ids are other routes (`recent`, `stream`, `ingest`), malformed addresses,
/// ids of 250+ characters and ids with bidi or invisible characters, a node
/// with more than two pages of edges, a feed refused or busy or signed out,
/// a feed left before it started, sign-out, a projector-set switch, the
/// server unreachable, the audit page's stale checks, a malformed verifier
/// key, the last event's "next" link (`tests/console/edge.mjs`).
#[test]
fn the_console_handles_odd_ids_and_failures_in_a_real_browser() {
    if !browser_or_skip("the_console_handles_odd_ids_and_failures_in_a_real_browser") {
        return;
    }
    let s = Server::start_with(&[("LEVIATHAN_SYNC", "none")]);
    // A task with 85 attempts: more than two pages (40) of edges.
    let mut busy = vec![event(
        "busy-task",
        "task.created",
        json!({"task_id": "busy", "target_id": "radix", "title": "busy"}),
    )];
    busy.extend((0..85).map(|i| {
        event(
            &format!("busy-a{i}-created"),
            "attempt.created",
            json!({"attempt_id": format!("busy-attempt-{i:03}"), "task_id": "busy", "target_id": "radix", "attempt_number": i + 1}),
        )
    }));
    assert_eq!(s.ingest(&bundle("busy", busy)).0, 200);
    for b in mixed_log(6) {
        assert_eq!(s.ingest(&b).0, 200);
    }
    let long_event = format!("long-event-{}", "x".repeat(244));
    let long_attempt = format!("long-attempt-{}", "y".repeat(237));
    assert_eq!((long_event.len(), long_attempt.len()), (255, 250));
    let odd = vec![
        event("recent", "custom.note", json!({"n": 1})),
        event("stream", "custom.note", json!({"n": 2})),
        event("ingest", "custom.note", json!({"n": 3})),
        event(&long_event, "custom.note", json!({})),
        event("\u{202e}RTL-override-txt.exe", "custom.note", json!({})),
        event("a1\u{200b}", "custom.note", json!({})),
        event(
            "long-attempt-created",
            "attempt.created",
            json!({"attempt_id": long_attempt, "task_id": "t1", "target_id": "radix", "attempt_number": 9}),
        ),
    ];
    assert_eq!(s.ingest(&bundle("odd", odd)).0, 200);
    let out = screenshots("edge");
    run_script(
        "edge.mjs",
        &s,
        &out,
        &[
            ("LONG_EVENT", long_event),
            ("LONG_ATTEMPT", long_attempt),
            ("BUSY_NODE", "busy".into()),
        ],
        &[
            "skip-link",
            "malformed-address",
            "shadowed-event-ids",
            "last-event-has-no-next",
            "long-ids",
            "bidi-ids",
            "graph-layout",
            "feed-refused",
            "feed-busy-and-signed-out",
            "feed-left-early",
            "projector-set-switch",
            "server-unreachable",
            "audit-and-keys",
            "sign-out-clears",
        ],
    );
}

/// The audit and projection views: a build in progress on the dashboard,
/// then held back by its errors (and its errors, linked), a node's history and its state as of
/// an earlier seq, an event's inclusion proof verified in the browser against
/// the latest signed checkpoint (and refused when tampered with); WCAG AA
/// contrast of those pages.
#[test]
fn the_console_shows_generations_history_and_verified_proofs_in_a_real_browser() {
    if !browser_or_skip(
        "the_console_shows_generations_history_and_verified_proofs_in_a_real_browser",
    ) {
        return;
    }
    let mut s = Server::start_with(&[("LEVIATHAN_SYNC", "none")]);
    for b in mixed_log(6) {
        assert_eq!(s.ingest(&b).0, 200);
    }
    // More than SWITCH_LAG (2,048) events that no projector handles (cheap to
    // ingest and to build), so that the new generation is visibly built
    // before it stops; and a tree size that is not a power of two, so that
    // the proof's path has a promoted node.
    // att-5 gets more changes than a history page holds (20).
    let jobs: Vec<Value> = (0..22)
        .map(|k| {
            event(
                &format!("att-5-job-{k}"),
                "job.submitted",
                json!({"attempt_id": "att-5", "job_id": format!("job-5-{k}")}),
            )
        })
        .collect();
    assert_eq!(s.ingest(&bundle("jobs", jobs)).0, 200);
    // The content of att-0's artifact, for its download button.
    assert_eq!(s.put_artifact(b"att-0").0 / 100, 2);
    for b in 0..5 {
        let notes: Vec<Value> = (0..481)
            .map(|i| event(&format!("note-{b}-{i}"), "custom.note", json!({ "n": i })))
            .collect();
        assert_eq!(s.ingest(&bundle(&format!("notes-{b}"), notes)).0, 200);
    }
    s.stop();
    let dir = s.keep_dir();

    // Restart with core + a refusing projector: its generation is built
    // behind the live one and held back by its errors.
    let files = tempfile::tempdir().unwrap();
    let wasm = refuser();
    std::fs::write(files.path().join("refuser.wasm"), &wasm).unwrap();
    let manifest = files.path().join("projectors.toml");
    std::fs::write(
        &manifest,
        format!(
            "[[projector]]\nname = \"core\"\nbuiltin = \"core\"\n\n[[projector]]\nname = \
             \"refuser\"\npath = \"refuser.wasm\"\nsha256 = \"{}\"\n",
            sha256_hex(&wasm)
        ),
    )
    .unwrap();
    let m = manifest.display().to_string();
    // The build is slowed to 100 events/s, so that the browser sees it in
    // progress (about 25 s for the log's 2,484 events, time for Chromium to
    // start and sign in on a busy machine) before it ends pending.
    let s = Server::start_in(
        dir.path(),
        &[
            ("LEVIATHAN_SYNC", "none"),
            ("LEVIATHAN_PROJECTORS_FILE", m.as_str()),
            ("LEVIATHAN_BUILD_RATE", "100"),
        ],
    );
    let p = wait_for(&s, "/v1/projection", "the build", |p| !p["build"].is_null());
    assert_eq!(p["build"]["state"], "building", "{p}");
    assert_eq!(p["generation"], 0, "{p}");
    let errors = 6; // one per attempt.started
                    // The background verifier's first pass, so that the dashboard has a result.
    wait_for(
        &s,
        "/v1/log/verification",
        "the verifier's first pass",
        |v| v["status"] == "ok" && v["verified_seq"] == p["log_head_seq"],
    );

    let out = screenshots("deep");
    run_script(
        "deep.mjs",
        &s,
        &out,
        &[
            ("NODE_ID", "att-0".into()),
            ("LONG_HISTORY_NODE", "att-5".into()),
            ("EVENT_ID", "att-3-tests".into()),
            ("BUILD_GENERATION", p["build"]["generation"].to_string()),
            ("BUILD_ERRORS", errors.to_string()),
        ],
        &[
            "dashboard-generation",
            "projection-errors",
            "node-history",
            "event-proof",
            "audit-consistency",
        ],
    );
    // What the browser showed is what the server says: held back, 6 errors.
    let (_, p) = s.get("/v1/projection");
    assert_eq!(p["build"]["state"], "pending", "{p}");
    assert_eq!(p["build"]["errors"], errors, "{p}");
    assert_eq!(p["generation"], 0, "{p}");
}

/// Every view pages or streams: each view's requests and bytes, measured in
/// the browser (resource timing) at a log of 10,000 events and again at N, stay
/// the same (within a small slack: ids get longer, a proof's path grows by
/// log2), and stay small. On demand: `LEVIATHAN_CONSOLE_BIG=1` (N = 50,000;
/// or `=N`), since a debug server ingests a few hundred events a second. The
/// figures are printed and saved in `target/console-screenshots/scale/`
/// (docs/CONSOLE.md has a run's).
#[test]
fn the_console_views_stay_small_at_scale() {
    let n = match std::env::var("LEVIATHAN_CONSOLE_BIG").as_deref() {
        Err(_) | Ok("") | Ok("0") => {
            eprintln!("SKIPPED the_console_views_stay_small_at_scale: set LEVIATHAN_CONSOLE_BIG=1 (or =N events) to run it");
            return;
        }
        Ok("1") => 50_000,
        Ok(v) => v
            .parse::<usize>()
            .expect("LEVIATHAN_CONSOLE_BIG is 1 or a number of events"),
    };
    if !browser_or_skip("the_console_views_stay_small_at_scale") {
        return;
    }
    let s = Server::start_with(&[("LEVIATHAN_SYNC", "none")]);
    let out = screenshots("scale");
    let measure = |label: &str| -> Value {
        run_script("scale.mjs", &s, &out, &[("LABEL", label.into())], &[]);
        serde_json::from_slice(&std::fs::read(out.join(format!("{label}.json"))).unwrap()).unwrap()
    };
    // The small log is large enough that every paged view is already full
    // (the bench target has more than a page of tasks by then).
    let first = 10_000;
    assert!(
        n >= 2 * first,
        "LEVIATHAN_CONSOLE_BIG: at least {} events",
        2 * first
    );
    grow(&s, first);
    let small = measure("small");
    grow(&s, n - first);
    let big = measure("big");
    let head = big["head_seq"].as_u64().unwrap();
    assert!(head >= n as u64, "the log holds {head} events");
    let views = big["views"].as_object().unwrap();
    assert_eq!(views.len(), small["views"].as_object().unwrap().len());
    for (name, b) in views {
        let a = &small["views"][name];
        let (ra, rb) = (
            a["requests"].as_u64().unwrap(),
            b["requests"].as_u64().unwrap(),
        );
        let (ba, bb) = (a["bytes"].as_u64().unwrap(), b["bytes"].as_u64().unwrap());
        eprintln!("{name}: {ra} → {rb} requests, {ba} → {bb} bytes");
        assert!(
            rb <= ra + 2,
            "{name}: {ra} requests at {} events, {rb} at {head}",
            small["head_seq"]
        );
        assert!(
            bb <= ba + ba / 4 + 2048,
            "{name}: {ba} bytes at {} events, {bb} at {head}",
            small["head_seq"]
        );
        assert!(
            rb <= 60 && bb <= 256 * 1024,
            "{name}: {rb} requests, {bb} bytes"
        );
    }
}
