use crate::common::*;
use serde_json::json;

pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn metrics_count_ingest_outcomes_and_positions() {
    let s = Server::start();
    let b = bundle("m1", events("m", 4));
    assert_eq!(s.ingest(&b).0, 200);
    assert_eq!(s.ingest(&b).0, 200);
    let mut bad = events("x", 1);
    bad[0]["timestamp"] = "nope".into();
    assert_eq!(s.ingest(&bundle("m2", bad)).0, 422);

    let resp = s.client.get(s.url("/metrics")).send().unwrap();
    assert_eq!(resp.status().as_u16(), 200, "no auth needed");
    let text = resp.text().unwrap();
    assert_eq!(
        metric(&text, r#"leviathan_ingest_requests_total{outcome="ok"}"#),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            r#"leviathan_ingest_requests_total{outcome="duplicate"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            r#"leviathan_ingest_requests_total{outcome="invalid_bundle"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            r#"leviathan_events_appended_total{event_type="attempt.created"}"#
        ),
        4.0
    );
    assert_eq!(metric(&text, "leviathan_events_duplicate_total"), 4.0);
    assert_eq!(metric(&text, "leviathan_log_head_seq"), 4.0);
    assert_eq!(metric(&text, "leviathan_graph_applied_seq"), 4.0);
    assert_eq!(
        metric(&text, "leviathan_ingest_duration_seconds_count"),
        3.0
    );
}

/// The revision `--version` reports, after checking both binaries' lines.
pub fn build_revision() -> String {
    let mut revisions = Vec::new();
    for (name, exe) in [
        ("leviathan", env!("CARGO_BIN_EXE_leviathan")),
        ("leviathanctl", env!("CARGO_BIN_EXE_leviathanctl")),
    ] {
        let out = std::process::Command::new(exe)
            .arg("--version")
            .output()
            .unwrap();
        assert!(out.status.success());
        let line = String::from_utf8(out.stdout).unwrap();
        let rest = line
            .trim()
            .strip_prefix(&format!("{name} {} (revision ", env!("CARGO_PKG_VERSION")))
            .unwrap_or_else(|| panic!("{line}"));
        revisions.push(rest.strip_suffix(')').unwrap().to_string());
    }
    assert_eq!(revisions[0], revisions[1]);
    revisions.pop().unwrap()
}

#[test]
fn the_build_revision_is_in_version_and_in_metrics() {
    let revision = build_revision();
    // Built from a git checkout (the suite always is): a commit of this
    // repository, HEAD or (when a commit landed while the suite ran) one of
    // its ancestors, with `-modified` if tracked files differed from it when
    // the build script ran.
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
    };
    let in_checkout = git(&["rev-parse", "HEAD"]).is_some_and(|o| o.status.success());
    if in_checkout {
        let commit = revision.strip_suffix("-modified").unwrap_or(&revision);
        assert_eq!(commit.len(), 12, "{revision}");
        let ancestor = git(&["merge-base", "--is-ancestor", commit, "HEAD"]).unwrap();
        assert!(
            ancestor.status.success(),
            "{revision} is not HEAD nor one of its ancestors"
        );
    }
    let s = Server::start();
    let text = s.metrics_text();
    let series = format!(
        r#"leviathan_build_info{{version="{}",revision="{revision}"}}"#,
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(metric(&text, &series), 1.0);
}

/// The value of the one series whose line starts with `prefix` (labels and
/// all up to the point given), e.g. a projector's whose version is not fixed.
fn metric_starting(text: &str, prefix: &str) -> f64 {
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(prefix)).collect();
    assert_eq!(lines.len(), 1, "{prefix}: {lines:?}");
    lines[0].rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn metrics_cover_the_writer_projectors_http_artifacts_store_and_process() {
    let s = Server::start();
    let bundles = mixed_log(3);
    let mut sent = 0;
    for b in &bundles {
        sent += b["events"].as_array().unwrap().len();
        assert_eq!(s.ingest(b).0, 200, "{b}");
    }
    // A bundle the core projector refuses (no attempt_id): counted as its error.
    let bad = bundle(
        "refused",
        vec![event("bad-1", "attempt.created", json!({"task_id": "t1"}))],
    );
    assert_eq!(s.ingest(&bad).0, 422);
    let blob = b"some build log".repeat(100);
    assert_eq!(s.put_artifact(&blob).0, 201);
    assert_eq!(s.put_artifact(&blob).0, 200, "the same blob is stored once");
    assert_eq!(s.get("/v1/attempts/att-0").0, 200);
    assert_eq!(s.get("/v1/attempts/att-1").0, 200);
    assert_eq!(s.get("/v1/no/such/route").0, 404);
    // Methods a client invents (on /livez, which needs no token) share one
    // label: the series do not grow with what clients send.
    for i in 0..5 {
        let method = reqwest::Method::from_bytes(format!("BREW{i}").as_bytes()).unwrap();
        let r = s.client.request(method, s.url("/livez")).send().unwrap();
        assert!(r.status().is_client_error(), "{}", r.status());
    }

    let text = s.metrics_text();
    assert!(!text.contains("BREW"), "invented methods are not labels");
    assert_eq!(
        metric_starting(
            &text,
            r#"leviathan_http_requests_total{route="unmatched",method="other""#
        ),
        5.0,
        "{text}"
    );
    let m = |name: &str| metric(&text, name);
    // Events by type, counted by the writer once committed.
    assert_eq!(
        m(r#"leviathan_events_appended_total{event_type="attempt.created"}"#),
        3.0
    );
    assert_eq!(
        m(r#"leviathan_events_appended_total{event_type="custom.note"}"#),
        3.0
    );
    assert_eq!(
        m(r#"leviathan_events_appended_total{event_type="task.created"}"#),
        1.0
    );
    // Every bundle went in its own batch (one client, one at a time); the
    // refused one still made a batch (that committed nothing of it).
    let batches = bundles.len() as f64 + 1.0;
    assert_eq!(m("leviathan_batch_bundles_count"), batches);
    assert_eq!(m("leviathan_batch_bundles_sum"), batches);
    assert_eq!(m("leviathan_batch_events_sum"), sent as f64 + 1.0);
    assert_eq!(m("leviathan_commit_duration_seconds_count"), batches);
    assert!(m("leviathan_commit_duration_seconds_sum") > 0.0);
    assert_eq!(m("leviathan_writer_up"), 1.0);
    // A fresh store that has flushed no memtable has no L0 tables.
    assert_eq!(m("leviathan_store_l0_runs_max"), 0.0);
    // Flushes' and compactions' bytes by keyspace (storage's unit tests
    // check the counting): every keyspace is listed, each file kind.
    for ks in ["log_events", "graph_nodes", "graph_history"] {
        for file in ["table", "blob"] {
            let flushed = m(&format!(
                r#"leviathan_store_flush_written_bytes_total{{keyspace="{ks}",file="{file}"}}"#
            ));
            let compacted = m(&format!(
                r#"leviathan_store_compaction_written_bytes_total{{keyspace="{ks}",file="{file}"}}"#
            ));
            assert!(flushed >= 0.0 && compacted >= 0.0);
        }
        assert!(
            m(&format!(
                r#"leviathan_store_compaction_read_bytes_total{{keyspace="{ks}"}}"#
            )) >= 0.0
        );
    }
    // Everything the process wrote to storage (0 on a tmpfs data dir).
    assert!(m("leviathan_process_written_bytes_total") >= 0.0);
    // The core projector: a call per event it handles, fuel, the refusal.
    let core = r#"{projector="core@"#;
    let calls = metric_starting(&text, &format!("leviathan_projector_calls_total{core}"));
    // At most one per event sent (the refused one included); the core
    // projector handles most of the mixed log's types.
    assert!(
        calls >= (sent / 2) as f64 && calls <= sent as f64 + 1.0,
        "{calls} of {sent}"
    );
    assert_eq!(
        metric_starting(
            &text,
            &format!("leviathan_projector_duration_seconds_count{core}")
        ),
        calls
    );
    assert!(
        metric_starting(
            &text,
            &format!("leviathan_projector_fuel_consumed_total{core}")
        ) > calls
    );
    // One error, the refusal; every other cause's series is there at 0
    // (an alert's increase() sees a first error only on a series that
    // existed before it).
    let errors: Vec<(&str, f64)> = text
        .lines()
        .filter(|l| l.starts_with(r#"leviathan_projector_errors_total{projector="core@"#))
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series, value.parse::<f64>().unwrap())
        })
        .collect();
    assert_eq!(errors.len(), 13, "{errors:?}");
    let nonzero: Vec<_> = errors.iter().filter(|(_, v)| *v != 0.0).collect();
    assert_eq!(nonzero.len(), 1, "{errors:?}");
    assert!(
        nonzero[0].0.ends_with(r#"cause="rejected"}"#) && nonzero[0].1 == 1.0,
        "{errors:?}"
    );
    assert_eq!(
        metric(
            &text,
            r#"leviathan_projection_errors_recorded_total{projector="core"}"#
        ),
        0.0
    );
    // Artifacts: one blob, its bytes.
    assert_eq!(m("leviathan_artifacts"), 1.0);
    assert_eq!(m("leviathan_artifact_bytes"), blob.len() as f64);
    // HTTP by route template; an unknown path is `unmatched`.
    assert_eq!(
        m(r#"leviathan_http_requests_total{route="/v1/attempts/{id}",method="GET",status="200"}"#),
        2.0
    );
    assert_eq!(
        m(r#"leviathan_http_requests_total{route="unmatched",method="GET",status="404"}"#),
        1.0
    );
    assert_eq!(
        m(r#"leviathan_http_requests_total{route="/v1/events/ingest",method="POST",status="422"}"#),
        1.0
    );
    assert_eq!(
        m(
            r#"leviathan_http_request_duration_seconds_count{route="/v1/attempts/{id}",method="GET"}"#
        ),
        2.0
    );
    // The store on disk, and the process.
    assert!(m("leviathan_store_disk_bytes") > 0.0);
    assert!(m("process_resident_memory_bytes") > 1e6);
    assert!(m("process_open_fds") > 3.0);
    assert!(m("process_cpu_seconds_total") > 0.0);
    // Per thread, by name: the writer (its name cut to Linux's 15 bytes) and
    // the HTTP runtime's threads, each with its CPU and run-queue wait.
    for thread in ["leviathan-write", "leviathan-http"] {
        let cpu = m(&format!(
            r#"leviathan_thread_cpu_seconds_total{{thread="{thread}"}}"#
        ));
        let wait = m(&format!(
            r#"leviathan_thread_runqueue_wait_seconds_total{{thread="{thread}"}}"#
        ));
        assert!(
            cpu >= 0.0 && cpu <= m("process_cpu_seconds_total"),
            "{thread}: {cpu}"
        );
        assert!(wait >= 0.0, "{thread}: {wait}");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = m("process_start_time_seconds");
    assert!(
        started <= now + 1.0 && started > now - 600.0,
        "{started} vs {now}"
    );
}

#[test]
fn artifact_totals_survive_a_restart() {
    let mut s = Server::start();
    assert_eq!(s.put_artifact(b"one").0, 201);
    assert_eq!(s.put_artifact(b"three").0, 201);
    let dir = s.keep_dir();
    s.stop();
    let s = Server::start_in(dir.path(), &[]);
    let text = s.metrics_text();
    assert_eq!(metric(&text, "leviathan_artifacts"), 2.0);
    assert_eq!(metric(&text, "leviathan_artifact_bytes"), 8.0);
}

#[test]
fn the_memtables_gauge_counts_what_is_written_and_not_yet_flushed() {
    let mut s = Server::start();
    let before = metric(&s.metrics_text(), "leviathan_store_memtable_bytes");
    for b in mixed_log(2) {
        assert_eq!(s.ingest(&b).0, 200);
    }
    let held = metric(&s.metrics_text(), "leviathan_store_memtable_bytes");
    // Far below one 6 MiB memtable: nothing was flushed yet, so the events
    // (canonical records, indexes, graph) are all still there.
    assert!(held > before + 20_000.0, "{before} -> {held}");
    // A clean stop flushes every memtable: the next start holds only what
    // it writes itself at start.
    let dir = s.keep_dir();
    s.stop();
    let s = Server::start_in(dir.path(), &[]);
    let after = metric(&s.metrics_text(), "leviathan_store_memtable_bytes");
    assert!(
        after < held / 2.0,
        "{held} -> {after} after a clean restart"
    );
}

#[test]
fn the_block_cache_is_the_size_leviathan_cache_mb_says_and_a_bad_size_is_refused() {
    let mib = 1024.0 * 1024.0;
    let s = Server::start();
    for b in mixed_log(2) {
        assert_eq!(s.ingest(&b).0, 200);
    }
    let text = s.metrics_text();
    assert_eq!(
        metric(&text, "leviathan_block_cache_capacity_bytes"),
        16.0 * mib
    );
    let held = metric(&text, "leviathan_block_cache_bytes");
    assert!((0.0..=16.0 * mib).contains(&held), "{held}");
    let big = Server::start_with(&[("LEVIATHAN_CACHE_MB", "48")]);
    let text = big.metrics_text();
    assert_eq!(
        metric(&text, "leviathan_block_cache_capacity_bytes"),
        48.0 * mib
    );
    for bad in ["0", "65537", "lots"] {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_leviathan"))
            .args(["serve", "--host", "127.0.0.1", "--port", "0", "--data-dir"])
            .arg(dir.path())
            .env("LEVIATHAN_CONTROL_PLANE_TOKEN", TOKEN)
            .env("LEVIATHAN_CACHE_MB", bad)
            .env("LEVIATHAN_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "LEVIATHAN_CACHE_MB={bad} was accepted"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("LEVIATHAN_CACHE_MB") || err.contains("cache-mb"),
            "{err}"
        );
    }
}

#[test]
fn metrics_token_guards_metrics_only() {
    let s = Server::start_with(&[("LEVIATHAN_METRICS_TOKEN", "scrape-secret")]);
    for auth in [None, Some("wrong"), Some(TOKEN)] {
        let mut req = s.client.get(s.url("/metrics"));
        if let Some(t) = auth {
            req = req.bearer_auth(t);
        }
        let (st, body) = parse(req.send().unwrap());
        assert_eq!(st, 401, "{auth:?}");
        assert_eq!(body["error"]["code"], "unauthorized", "{body}");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("LEVIATHAN_METRICS_TOKEN"));
    }
    let resp = s
        .client
        .get(s.url("/metrics"))
        .bearer_auth("scrape-secret")
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.text().unwrap().contains("leviathan_writer_up 1"));
    // The header is read as /v1 reads it: one space, nothing around the
    // token (these were accepted; the HTTP layer itself trims whitespace at
    // the value's ends), and one header: several are 400
    // `invalid_authorization`, on /metrics as on /v1.
    let with_headers = |path: &str, values: &[&str]| {
        let mut req = s.client.get(s.url(path));
        for v in values {
            req = req.header("authorization", *v);
        }
        parse(req.send().unwrap())
    };
    for values in [&["Bearer  scrape-secret"][..], &["Bearer \t scrape-secret"]] {
        let (st, body) = with_headers("/metrics", values);
        assert_eq!(st, 401, "{values:?}");
        assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    }
    let two = ["Bearer scrape-secret", "Bearer scrape-secret"];
    let (st, metrics) = with_headers("/metrics", &two);
    assert_eq!(st, 400, "{metrics}");
    let two_v1 = [format!("Bearer {TOKEN}"), format!("Bearer {TOKEN}")];
    let two_v1: Vec<&str> = two_v1.iter().map(String::as_str).collect();
    let (st, v1) = with_headers("/v1/log/head", &two_v1);
    assert_eq!(st, 400, "{v1}");
    assert_eq!(metrics["error"], v1["error"], "the same answer");
    assert_eq!(metrics["error"]["code"], "invalid_authorization");
    // The probes stay open.
    assert_eq!(
        s.client
            .get(s.url("/livez"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        200
    );
}

/// Scrapes that arrive while `/metrics` renders share the next render (a
/// flood of pipelined scrapes used to take a blocking thread each: 526
/// threads, and the real scrape waited 8–20 s), and each is answered with
/// a render that started after it arrived.
#[test]
fn concurrent_scrapes_share_renders() {
    let s = Server::start();
    let renders = |text: &str| metric_starting(text, "leviathan_metrics_renders_total ");
    let before = renders(&s.metrics_text());
    let n = 48;
    let barrier = std::sync::Barrier::new(n);
    let texts: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    s.metrics_text()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for t in &texts {
        assert!(t.contains("leviathan_writer_up 1"), "{t}");
        // Each answer's render started after the request arrived: it counts
        // the scrape before all of these at least.
        assert!(renders(t) > before, "{t}");
    }
    let after = renders(&s.metrics_text());
    assert!(
        after - before < n as f64,
        "{n} concurrent scrapes rendered {} times",
        after - before
    );
    // Sequential scrapes each see their own render.
    let one = renders(&s.metrics_text());
    let two = renders(&s.metrics_text());
    assert_eq!(two, one + 1.0);
}

/// `leviathan bench` ends its report with the store: its size per event and
/// what the server wrote to reach it, per keyspace, from the counters of
/// `/metrics` (a run long enough for the log's and the history's memtables,
/// 6 MiB each, to be flushed).
#[test]
fn bench_reports_the_stores_bytes_per_keyspace() {
    let s = Server::start();
    let out = grow_with(&s, 20_000, &["--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let store = &report["store"];
    // The bench's setup bundle, then its 20,000 events.
    assert_eq!(store["events"], 20_002, "{store}");
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or_else(|| panic!("{v} in {store}"));
    assert!(n(&store["disk_bytes"]) > 0);
    let keyspaces = store["keyspaces"].as_array().unwrap();
    let of = |name: &str| {
        keyspaces
            .iter()
            .find(|k| k["keyspace"] == name)
            .unwrap_or_else(|| panic!("no {name} in {store}"))
    };
    for name in ["log_events", "graph_history"] {
        let k = of(name);
        assert!(n(&k["flushed_bytes"]) > 1_000_000, "{k}");
        assert!(k["write_amplification"].as_f64().unwrap() >= 1.0, "{k}");
    }
    // The totals are the keyspaces' sums, and everything the server wrote
    // covers them (the rest is the journal).
    let flushed: u64 = keyspaces.iter().map(|k| n(&k["flushed_bytes"])).sum();
    let compacted: u64 = keyspaces
        .iter()
        .map(|k| n(&k["compaction_written_bytes"]))
        .sum();
    assert_eq!(n(&store["flushed_bytes"]), flushed);
    assert_eq!(n(&store["compaction_written_bytes"]), compacted);
    // Where the data dir is on a block device (not tmpfs), what the process
    // wrote covers the files, and the rest is the journal.
    if let Some(written) = store["written_bytes"].as_u64() {
        assert!(written >= flushed + compacted, "{store}");
        assert_eq!(n(&store["journal_bytes"]), written - flushed - compacted);
    } else {
        assert!(store["journal_bytes"].is_null(), "{store}");
    }
    // Most bytes first.
    let totals: Vec<u64> = keyspaces
        .iter()
        .map(|k| n(&k["flushed_bytes"]) + n(&k["compaction_written_bytes"]))
        .collect();
    assert!(totals.windows(2).all(|w| w[0] >= w[1]), "{totals:?}");
}
