//! `leviathan rebuild` as an audit: it re-projects the log and says whether
//! the graph it finds is the one the log gives (exit 1 when not, unless a
//! change is expected), names the event a projector set cannot project, and
//! the server refuses to serve a graph that is behind the log.

use crate::common::wasm::{static_projector, Describe, StaticOp};
use crate::common::*;
use serde_json::Value;
use std::path::Path;

/// A stopped server's data dir holding `mixed_log(3)`, and its state digest.
fn projected_store() -> (tempfile::TempDir, String, u64) {
    let mut s = Server::start();
    for b in mixed_log(3) {
        let (st, r) = s.ingest(&b);
        assert_eq!(st, 200, "{r}");
    }
    let (_, p) = s.get("/v1/projection");
    let digest = p["state_digest"].as_str().unwrap().to_string();
    let head = p["log_head_seq"].as_u64().unwrap();
    let dir = s.keep_dir();
    s.stop();
    (dir, digest, head)
}

fn rebuild(dir: &Path, extra: &[&str]) -> (i32, Value, String) {
    let mut args = vec!["rebuild"];
    args.extend_from_slice(extra);
    let (code, out, err) = admin_full(&args, dir);
    let report = serde_json::from_str(&out).unwrap_or(Value::Null);
    (code, report, err)
}

/// Writes a component next to the store; its projector spec.
fn projector_file(dir: &Path, name: &str, bytes: Vec<u8>) -> String {
    let path = dir.join(name);
    std::fs::write(&path, &bytes).unwrap();
    format!("{}#sha256={}", path.display(), sha256_hex(&bytes))
}

fn describe<'a>(name: &'a str, handles: &'a [&'a str]) -> Describe<'a> {
    Describe {
        name,
        version: "1.0.0",
        handles,
        node_types: &["Extra"],
        edge_types: &[],
    }
}

#[test]
fn a_graph_that_is_not_the_logs_projection_fails_the_audit() {
    let (dir, digest, head) = projected_store();
    // The graph's recorded digest at the head no longer matches the log.
    with_store(dir.path(), |db| {
        keyspace(db, "graph_digests")
            .insert(head.to_be_bytes(), [0xab; 32])
            .unwrap();
    });
    let (code, report, err) = rebuild(dir.path(), &[]);
    assert_eq!(code, 1, "{report}\n{err}");
    assert_eq!(report["identical"], false);
    assert_eq!(report["previous_digest"], "ab".repeat(32));
    assert_eq!(report["state_digest"], digest.as_str());
    assert_eq!(report["events"], head);

    // Rebuilt, the graph is the log's projection again.
    let (code, report, _) = rebuild(dir.path(), &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["identical"], true);
    assert_eq!(report["state_digest"], digest.as_str());
}

#[test]
fn a_projector_upgrade_needs_expect_change() {
    let (dir, digest, _) = projected_store();
    let extra = projector_file(
        dir.path(),
        "extra.wasm",
        static_projector(&describe("extra", &["attempt.created"]), |d| {
            d.ok_ops(&[StaticOp::PutNode {
                id: "extra-node",
                node_type: "Extra",
                properties: "{}",
            }])
        }),
    );
    let upgraded = format!("core,{extra}");

    // An upgrade that changes the graph, expected: exit 0, and the report says so.
    let (code, report, err) = rebuild(dir.path(), &["--projectors", &upgraded, "--expect-change"]);
    assert_eq!(code, 0, "{report}\n{err}");
    assert_eq!(report["identical"], false);
    assert_eq!(report["previous_digest"], digest.as_str());
    assert_ne!(report["state_digest"], digest.as_str());
    assert_ne!(report["fingerprint"], report["previous_fingerprint"]);
    let upgraded_digest = report["state_digest"].clone();
    let s = Server::start_in(dir.path(), &[("LEVIATHAN_PROJECTORS", &upgraded)]);
    assert_eq!(s.get("/v1/projection").1["state_digest"], upgraded_digest);
    assert_eq!(s.get("/v1/graph/summary").1["nodes_by_type"]["Extra"], 1);
    drop(s);

    // Back to the core projector alone, not expected (a shell without the
    // service's projector settings): refused before anything is touched.
    let (code, report, err) = rebuild(dir.path(), &[]);
    assert_eq!(code, 1, "{report}\n{err}");
    assert_eq!(report, Value::Null, "no report: nothing was rebuilt");
    assert!(
        err.contains("another projector set") && err.contains("--expect-change"),
        "{err}"
    );
    let s = Server::start_in(dir.path(), &[("LEVIATHAN_PROJECTORS", &upgraded)]);
    assert_eq!(s.get("/v1/projection").1["state_digest"], upgraded_digest);
    drop(s);
    // Expected: the graph it had before, bit for bit.
    let (code, report, err) = rebuild(dir.path(), &["--expect-change"]);
    assert_eq!(code, 0, "{report}\n{err}");
    assert_eq!(report["identical"], false);
    assert_eq!(report["previous_digest"], upgraded_digest);
    assert_eq!(report["state_digest"], digest.as_str());
    let s = Server::start_in(dir.path(), &[]);
    assert_eq!(s.get("/v1/projection").1["state_digest"], digest.as_str());
}

/// A rebuild with a set that fails on logged events records each failure
/// as an error of the graph, whatever the projector's policy, as a
/// generation build does (history cannot be refused): the graph is whole,
/// the server serves it, the errors name the events.
#[test]
fn a_rebuild_records_the_events_a_set_fails_on_and_the_graph_stays_whole() {
    let (dir, digest, head) = projected_store();
    let refuser = projector_file(
        dir.path(),
        "refuser.wasm",
        static_projector(&describe("refuser", &["custom.note"]), |d| {
            d.err("no_notes", "this projector refuses every note")
        }),
    );
    let set = format!("core,{refuser}");
    let (code, report, err) = rebuild(dir.path(), &["--projectors", &set, "--expect-change"]);
    assert_eq!(code, 0, "{report}\n{err}");
    assert_eq!(report["identical"], false, "{report}");
    let recorded = report["projection_errors"].as_u64().unwrap();
    assert!(recorded > 0, "{report}");

    // The graph is at the log's head: the server serves it with that set,
    // and the errors say which events and why.
    let s = Server::start_in(dir.path(), &[("LEVIATHAN_PROJECTORS", &set)]);
    let (_, p) = s.get("/v1/projection");
    assert_eq!(p["applied_seq"], head, "{p}");
    assert_eq!(p["state_digest"], report["state_digest"], "{p}");
    let (st, errors) = s.get("/v1/projection/errors?limit=1");
    assert_eq!(st, 200, "{errors}");
    // The first custom.note of mixed_log: after the setup bundle (2 events)
    // and the first attempt's 7 other events.
    let first = &errors["errors"][0];
    assert_eq!(
        (first["seq"].as_u64(), first["event_id"].as_str()),
        (Some(10), Some("att-0-note")),
        "{errors}"
    );
    assert_eq!(first["projector"], "refuser");
    assert!(
        first["message"]
            .as_str()
            .unwrap()
            .contains("this projector refuses every note"),
        "{errors}"
    );
    drop(s);

    // A rebuild with the core projector alone gives the graph back, to the
    // same digest.
    let (code, report, err) = rebuild(dir.path(), &["--expect-change"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(report["state_digest"], digest.as_str());
    let s = Server::start_in(dir.path(), &[]);
    assert_eq!(s.get("/v1/projection").1["state_digest"], digest.as_str());
}

/// The rebuild writes its chunks to the memtables without fjall's journal: a
/// rebuild killed part-way (here aborted by the hidden hook right after its
/// first chunk of 8,192 events, no destructor, no flush, as a `kill -9`)
/// leaves whatever fjall had flushed of it. The server and `dump` refuse that
/// graph and say what to do; the rebuild run again starts from the first
/// event, compares with the graph before the interrupted one, and gives it
/// back exactly.
#[test]
fn an_interrupted_rebuild_is_refused_until_a_rebuild_finishes_and_then_equals_the_graph_before() {
    let mut s = Server::start();
    grow(&s, 10_000);
    let (_, p) = s.get("/v1/projection");
    let digest = p["state_digest"].as_str().unwrap().to_string();
    let head = p["log_head_seq"].as_u64().unwrap();
    assert!(head > 8192, "{p}");
    let (_, summary) = s.get("/v1/graph/summary");
    let dir = s.keep_dir();
    s.stop();
    let (code, dump_before, err) = admin_full(&["dump"], dir.path());
    assert_eq!(code, 0, "{err}");

    let out = leviathan()
        .args(["rebuild", "--data-dir"])
        .arg(dir.path())
        .env("LEVIATHAN_TEST_ABORT_REBUILD_AFTER", "8192")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        None,
        "the rebuild was to be aborted: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let err = refused(serve_command(dir.path()));
    assert!(
        err.contains("an offline rebuild of this graph was interrupted")
            && err.contains("run `leviathan rebuild`"),
        "{err}"
    );
    let (code, _, err) = admin_full(&["dump"], dir.path());
    assert_ne!(code, 0);
    assert!(err.contains("was interrupted"), "{err}");
    // The log exports whole; the partial graph gives it no digest to sign
    // (refused for its marker, and here its applied state was lost as well).
    let out = tempfile::tempdir().unwrap();
    let (code, m, err) = admin_full(
        &["export", "--to", out.path().to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    let m: Value = serde_json::from_str(&m).unwrap();
    assert_eq!(m["head_seq"], head, "{m}");
    assert!(m["state_digest"].is_null(), "{m}");
    assert!(m["checkpoint"].is_null(), "{m}");

    let (code, report, err) = rebuild(dir.path(), &[]);
    assert_eq!(code, 0, "{report}\n{err}");
    assert!(
        err.contains("was interrupted"),
        "the rebuild says so: {err}"
    );
    assert_eq!(report["identical"], true, "{report}");
    assert_eq!(report["previous_digest"], digest.as_str());
    assert_eq!(report["state_digest"], digest.as_str());
    assert_eq!(report["events"], head);
    let (code, dump_after, err) = admin_full(&["dump"], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(
        dump_before == dump_after,
        "the rebuilt graph dumps otherwise"
    );

    let s = Server::start_in(dir.path(), &[]);
    assert_eq!(s.get("/v1/projection").1["state_digest"], digest.as_str());
    assert_eq!(s.get("/v1/graph/summary").1, summary);
}
