use crate::common::*;
use serde_json::json;

#[test]
fn a_restart_keeps_everything_and_the_chain_continues() {
    let mut s = Server::start();
    s.ingest(&bundle("b1", events("a", 4)));
    let data = b"artifact bytes".to_vec();
    let sha = sha256_hex(&data);
    s.put_artifact(&data);
    let before = s.all_events();
    let (_, head) = s.get("/v1/log/head");
    let dir = s.keep_dir();
    s.stop();

    let s = Server::start_in(dir.path(), &[]);
    assert_eq!(s.all_events(), before);
    assert_eq!(s.get("/v1/log/head").1, head);
    let got = s.get_artifact(&sha).bytes().unwrap();
    assert_eq!(got.to_vec(), data);
    // Idempotency survives the restart too.
    let (_, r) = s.ingest(&bundle("b1", events("a", 4)));
    assert_eq!(r["status"], "duplicate");
    let (st, r) = s.ingest(&bundle(
        "b2",
        vec![event("after", "custom.thing", json!({}))],
    ));
    assert_eq!(st, 200);
    assert_eq!(r["first_seq"], 5);
    let (_, e) = s.get("/v1/events/after");
    assert_eq!(e["prev_hash"], head["hash"]);
    assert_eq!(s.get("/v1/log/verify").1["ok"], true);
}

#[test]
fn a_legacy_backend_setting_is_refused_with_an_explanation() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = serve_command(dir.path());
    cmd.env("LEVIATHAN_BACKEND", "postgres");
    let err = refused(cmd);
    assert!(
        err.contains("fjall") && err.contains("LEVIATHAN_BACKEND"),
        "{err}"
    );
    // The way to what the value asked for, and only that.
    assert!(err.contains("LEVIATHAN_STORE=postgres"), "{err}");
    assert!(!err.contains("NDJSON"), "{err}");
    let mut cmd = serve_command(dir.path());
    cmd.env("LEVIATHAN_BACKEND", "ndjson");
    let err = refused(cmd);
    assert!(err.contains("There is no NDJSON backend"), "{err}");
    assert!(err.contains("leviathan import --legacy"), "{err}");
    assert!(!err.contains("LEVIATHAN_STORE=postgres"), "{err}");

    let mut cmd = serve_command(dir.path());
    cmd.env_remove("LEVIATHAN_CONTROL_PLANE_TOKEN");
    assert!(refused(cmd).contains("LEVIATHAN_CONTROL_PLANE_TOKEN"));
}

/// A store written before the index by target existed (or appended to by
/// an older build after it) is indexed at the next start, and the topology
/// and failure routes answer from it as before; the index is kept from then
/// on, so later starts have nothing to index.
#[test]
fn reads_by_target_survive_an_upgrade_from_a_store_without_their_index() {
    let topo = |id: &str, ty: &str, payload: serde_json::Value| {
        let mut e = event(id, ty, payload);
        // Later runs are later: the latest run is the greatest timestamp.
        e["timestamp"] = format!("2026-01-24T10:00:0{}Z", &id[2..]).into();
        e
    };
    let mut s = Server::start();
    let mut evs = Vec::new();
    for (i, target) in ["radix", "other", "radix"].iter().enumerate() {
        let commit = format!("c{i}");
        evs.push(topo(
            &format!("ix{i}"),
            "topo.indexed",
            json!({"target_id": target, "commit_sha": commit, "areas_count": i + 1,
                   "subsystems_count": 0, "dependencies_count": 0}),
        ));
        evs.push(topo(
            &format!("ar{i}"),
            "topo.area.discovered",
            json!({"target_id": target, "commit_sha": commit, "area_id": format!("area{i}")}),
        ));
    }
    evs.push(topo(
        "fa7",
        "attempt.failed",
        json!({"attempt_id": "a1", "target_id": "radix", "error_summary": "boom"}),
    ));
    evs.push(topo("fb8", "tests.failed", json!({"attempt_id": "a2"})));
    assert_eq!(s.ingest(&bundle("topo", evs)).0, 200);
    let failures = s.get("/v1/failures?target=radix");
    assert_eq!(failures.1["count"], 2, "{failures:?}");
    let summary = s.get("/v1/topology/summary?target=radix");
    let areas = s.get("/v1/topology/areas?target=radix");
    assert_eq!(summary.1["commit_sha"], "c2", "{summary:?}");
    assert_eq!(areas.1["areas"][0]["area_id"], "area2", "{areas:?}");
    let dir = s.keep_dir();
    s.stop();

    // As a build without the index leaves the store: no index, no mark.
    with_store(dir.path(), |db| {
        let index = keyspace(db, "log_by_target");
        db.delete_keyspace(index).unwrap();
        keyspace(db, "log_meta").remove("by_target_upto").unwrap();
    });
    let mut s = Server::start_in(dir.path(), &[]);
    assert_eq!(s.get("/v1/topology/summary?target=radix"), summary);
    assert_eq!(s.get("/v1/topology/areas?target=radix"), areas);
    assert_eq!(s.get("/v1/failures?target=radix"), failures);
    assert_eq!(
        s.get("/v1/topology/summary?target=other").1["areas_count"],
        2
    );
    let indexed = s
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("indexed topology and failure events by target"))
        .cloned()
        .collect::<Vec<_>>();
    assert!(
        indexed.len() == 1 && indexed[0].contains("events=8"),
        "{indexed:?}"
    );
    let newer = topo(
        "ix9",
        "topo.indexed",
        json!({"target_id": "radix", "commit_sha": "c9", "areas_count": 0}),
    );
    assert_eq!(s.ingest(&bundle("newer", vec![newer])).0, 200);
    s.stop();

    let s = Server::start_in(dir.path(), &[]);
    assert_eq!(
        s.get("/v1/topology/summary?target=radix").1["commit_sha"],
        "c9"
    );
    assert!(
        !s.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("indexed topology and failure events by target")),
        "nothing to index after a clean stop"
    );
}
