//! Replaying the same log with the same projectors gives the identical graph:
//! the same state digest and byte-identical graph dumps, after an offline
//! rebuild (twice), after a restart, and in a second store fed the same bundles.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use crate::common;

use common::*;
use serde_json::Value;

#[test]
fn rebuilds_restarts_and_replicas_give_the_identical_graph() {
    let log = mixed_log(40);
    let mut s = Server::start();
    for b in &log {
        let (st, r) = s.ingest(b);
        assert_eq!(st, 200, "{r}");
    }
    let (_, p) = s.get("/v1/projection");
    let digest = p["state_digest"].as_str().unwrap().to_string();
    assert_eq!(p["applied_seq"], p["log_head_seq"]);
    let (_, summary) = s.get("/v1/graph/summary");
    assert_eq!(summary["nodes_by_type"]["Attempt"], 40);
    let dir = s.keep_dir();
    s.stop();

    let (code, dump_a) = admin(&["dump"], dir.path());
    assert_eq!(code, 0);
    assert!(dump_a.lines().count() > 400, "dump covers the whole graph");

    for _ in 0..2 {
        let (code, out) = admin(&["rebuild"], dir.path());
        assert_eq!(code, 0, "{out}");
        let report: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(report["identical"], true);
        assert_eq!(report["state_digest"], digest.as_str());
        assert_eq!(report["events"], p["log_head_seq"]);
        let (_, dump) = admin(&["dump"], dir.path());
        assert!(dump == dump_a, "a rebuild changed the graph dump");
    }

    let s = Server::start_in(dir.path(), &[]);
    assert_eq!(s.get("/v1/projection").1["state_digest"], digest.as_str());
    assert_eq!(
        s.get("/v1/graph/summary").1["nodes_by_type"],
        summary["nodes_by_type"]
    );
    drop(s);

    // Another store fed the same bundles reaches the same digest.
    let mut replica = Server::start();
    for b in &log {
        assert_eq!(replica.ingest(b).0, 200);
    }
    assert_eq!(
        replica.get("/v1/projection").1["state_digest"],
        digest.as_str()
    );
    let rdir = replica.keep_dir();
    replica.stop();
    assert!(
        admin(&["dump"], rdir.path()).1 == dump_a,
        "the replica's graph differs"
    );
}

#[test]
fn a_changed_projector_set_is_built_online_and_gives_the_offline_rebuilds_digest() {
    let mut s = Server::start();
    for b in mixed_log(3) {
        assert_eq!(s.ingest(&b).0, 200);
    }
    let before = s.get("/v1/projection").1;
    let dir = s.keep_dir();
    s.stop();
    // Same rules, other limits: another fingerprint, the same graph.
    let other = "core#fuel=40000000";
    let mut s = Server::start_in(dir.path(), &[("LEVIATHAN_PROJECTORS", other)]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let live = loop {
        let p = s.get("/v1/projection").1;
        if p["build"]["state"] == "switched" {
            break p;
        }
        assert!(std::time::Instant::now() < deadline, "no switch: {p}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_ne!(live["fingerprint"], before["fingerprint"]);
    assert_eq!(live["state_digest"], before["state_digest"], "{live}");
    assert_eq!(s.get("/v1/graph/summary").1["nodes_by_type"]["Attempt"], 3);
    s.stop();

    let (code, out) = admin(&["rebuild", "--projectors", other], dir.path());
    assert_eq!(code, 0, "same rules, so the same graph: {out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["identical"], true, "{report}");
    assert_eq!(report["state_digest"], before["state_digest"]);
}
