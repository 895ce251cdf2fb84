//! The rest of the original's v1 routes: topology (from the log), autonomy
//! status (a mounted YAML), the backlog placeholder.

use crate::common::*;
use serde_json::json;

fn topo(id: &str, etype: &str, ts: &str, payload: serde_json::Value) -> serde_json::Value {
    json!({"event_id": id, "event_type": etype, "timestamp": ts, "payload": payload})
}

#[test]
fn topology_summary_and_lists_follow_the_latest_indexing_run() {
    let s = Server::start();
    let run = |commit: &str, ts: &str, areas: &[&str]| {
        let mut evs: Vec<_> = areas
            .iter()
            .map(|a| {
                topo(
                    &format!("{commit}-{a}"),
                    "topo.area.discovered",
                    ts,
                    json!({"target_id": "radix", "commit_sha": commit, "area_id": a}),
                )
            })
            .collect();
        evs.push(topo(&format!("{commit}-idx"), "topo.indexed", ts, json!({"target_id": "radix", "commit_sha": commit, "areas_count": areas.len(), "subsystems_count": 0})));
        s.ingest(&bundle(&format!("topo-{commit}"), evs))
    };
    assert_eq!(run("c1", "2026-01-24T10:00:00Z", &["a", "b"]).0, 200);
    assert_eq!(run("c2", "2026-01-25T10:00:00Z", &["a"]).0, 200);

    let (st, v) = s.get("/v1/topology/summary?target=radix");
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v,
        json!({"target_id": "radix", "commit_sha": "c2", "areas_count": 1, "subsystems_count": 0, "dependencies_count": 0, "flows_count": 0})
    );
    let (st, v) = s.get("/v1/topology/areas?target=radix");
    assert_eq!(st, 200);
    assert_eq!(
        v["areas"].as_array().unwrap().len(),
        1,
        "only the latest run: {v}"
    );
    assert_eq!(v["areas"][0]["commit_sha"], "c2");
    assert_eq!(
        s.get("/v1/topology/subsystems?target=radix").1["subsystems"],
        json!([])
    );
    assert_eq!(s.get("/v1/topology/summary?target=other").0, 404);
    assert_eq!(s.get("/v1/topology/summary").0, 422);
    assert_eq!(s.get("/v1/topology/areas").0, 422);
}

#[test]
fn autonomy_status_reads_the_mounted_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("autonomy.yaml");
    let s = Server::start_with(&[("LEVIATHAN_AUTONOMY_CONFIG_PATH", path.to_str().unwrap())]);
    assert_eq!(
        s.get("/v1/autonomy/status").1,
        json!({"autonomy_enabled": true, "source": "default (config not mounted)"})
    );
    std::fs::write(&path, "autonomy_enabled: false\n").unwrap();
    assert_eq!(
        s.get("/v1/autonomy/status").1,
        json!({"autonomy_enabled": false, "source": format!("configmap:{}", path.display())})
    );
    std::fs::write(&path, "autonomy_enabled: [unclosed\n").unwrap();
    assert_eq!(
        s.get("/v1/autonomy/status").1["source"],
        "default (error reading config)"
    );
    // A typo is not a deliberate `true`: the answer says the config is in
    // error, and the log says why.
    std::fs::write(&path, "autonomy_enabled: flase\n").unwrap();
    assert_eq!(
        s.get("/v1/autonomy/status").1,
        json!({"autonomy_enabled": true, "source": "default (error reading config)"})
    );
    // The server's stderr is read by another thread: wait for the line.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !s
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("autonomy_enabled in the autonomy config is not true or false"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no warning about the config in the log"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn backlog_suggest_is_a_placeholder() {
    let s = Server::start();
    let (st, v) = s.post("/v1/backlog/suggest", &json!({"target": "radix"}));
    assert_eq!(st, 200);
    assert_eq!(v["status"], "not_implemented");
    assert_eq!(s.post("/v1/backlog/suggest", &json!({})).0, 422);
}
