//! Node history and as-of reads against a real server, checked against an
//! independent answer: `leviathan replay --to N --dump` (a re-projection of
//! the log into a scratch store) at many seqs, and the digests the live graph
//! recorded in `graph_digests`.

use crate::common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// `leviathan replay --to N --dump FILE --data-dir DIR` (extra env): the
/// report and the dump's nodes by id and edges.
fn replay(
    dir: &Path,
    to: u64,
    env: &[(&str, &str)],
) -> (i32, Value, BTreeMap<String, Value>, Vec<Value>) {
    let dump = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = leviathan();
    cmd.args(["replay", "--to", &to.to_string(), "--dump"])
        .arg(dump.path())
        .arg("--data-dir")
        .arg(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("replay --to {to} printed no report: {stderr}"));
    let text = std::fs::read_to_string(dump.path()).unwrap();
    let mut nodes = BTreeMap::new();
    let mut edges = Vec::new();
    let mut last_node: Option<String> = None;
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        match v["kind"].as_str() {
            Some("node") => {
                let id = v["id"].as_str().unwrap().to_string();
                assert!(last_node.as_ref().is_none_or(|l| *l < id), "nodes sorted");
                last_node = Some(id.clone());
                nodes.insert(id, v);
            }
            Some("edge") => edges.push(v),
            other => panic!("unknown kind {other:?} in {line}"),
        }
    }
    (out.status.code().unwrap(), report, nodes, edges)
}

/// The wire form of a node in a replay dump.
fn wire(n: &Value) -> Value {
    json!({
        "created_at": n["created_at"],
        "created_seq": n["created_seq"],
        "node_id": n["id"],
        "node_type": n["node_type"],
        "properties": n["properties"],
        "updated_at": n["updated_at"],
        "updated_seq": n["updated_seq"],
    })
}

fn history(s: &Server, id: &str, limit: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/v1/graph/nodes/{id}/history?limit={limit}&cursor={c}"),
            None => format!("/v1/graph/nodes/{id}/history?limit={limit}"),
        };
        let (st, v) = s.get(&q);
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["count"], v["changes"].as_array().unwrap().len());
        out.extend(v["changes"].as_array().unwrap().iter().cloned());
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
}

#[test]
fn history_lists_every_change_in_order_and_as_of_equals_a_replay() {
    let mut s = Server::start();
    for b in mixed_log(4) {
        let (st, v) = s.ingest(&b);
        assert_eq!(st, 200, "{v}");
    }
    let (_, p) = s.get("/v1/projection");
    let head = p["applied_seq"].as_u64().unwrap();
    assert!(head > 30, "{p}");
    let events = s.all_events();
    let by_id: BTreeMap<String, (u64, String)> = events
        .iter()
        .map(|e| {
            (
                e["event_id"].as_str().unwrap().to_string(),
                (
                    e["seq"].as_u64().unwrap(),
                    e["event_type"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect();

    // The history of an attempt: every change, in (seq, ord) order, each
    // naming the event that caused it; paging gives the same list.
    let changes = history(&s, "att-1", 1000);
    assert!(changes.len() >= 4, "{changes:?}");
    assert_eq!(history(&s, "att-1", 2), changes);
    let mut prev = (0, 0);
    for c in &changes {
        let key = (c["seq"].as_u64().unwrap(), c["ord"].as_u64().unwrap());
        assert!(key > prev, "changes out of order: {changes:?}");
        prev = key;
        let (seq, event_type) = &by_id[c["event_id"].as_str().unwrap()];
        assert_eq!(*seq, key.0);
        assert_eq!(c["event_type"], event_type.as_str());
        assert!(c["projector"].as_str().unwrap().starts_with("core@"), "{c}");
        assert!(c["op"]["op"].is_string(), "{c}");
    }
    let types: Vec<&str> = changes
        .iter()
        .map(|c| c["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types[0], "attempt.created");
    assert!(types.contains(&"attempt.succeeded"), "{types:?}");
    assert!(types.contains(&"attempt.invalidated"), "{types:?}");
    let (_, now) = s.get("/v1/graph/nodes/att-1");
    assert_eq!(changes.last().unwrap()["node"], now);
    let created = now["created_seq"].as_u64().unwrap();
    assert_eq!(changes[0]["seq"].as_u64().unwrap(), created);
    // A node that never existed has an empty history.
    let (st, v) = s.get("/v1/graph/nodes/nope/history");
    assert_eq!((st, v["count"].as_u64()), (200, Some(0)));

    // 404 before creation, the node right at creation, bad as_of → 422.
    let (st, _) = s.get(&format!("/v1/graph/nodes/att-1?as_of_seq={}", created - 1));
    assert_eq!(st, 404);
    let (st, v) = s.get(&format!("/v1/graph/nodes/att-1?as_of_seq={created}"));
    assert_eq!((st, &v["node_id"]), (200, &json!("att-1")));
    assert_eq!(
        s.get(&format!("/v1/graph/nodes/att-1?as_of_seq={head}")).1,
        now
    );
    for bad in [
        "abc",
        "-1",
        "1.5",
        &(head + 1).to_string(),
        "99999999999999999999",
    ] {
        let (st, v) = s.get(&format!("/v1/graph/nodes/att-1?as_of_seq={bad}"));
        assert_eq!(st, 422, "as_of_seq={bad}: {v}");
        assert_eq!(v["error"]["code"], "invalid_query", "{v}");
        let (st, _) = s.get(&format!("/v1/attempts/att-1?as_of_seq={bad}"));
        assert_eq!(st, 422, "attempt as_of_seq={bad}");
    }
    // The attempt detail as of the head is today's answer.
    assert_eq!(
        s.get(&format!("/v1/attempts/att-2?as_of_seq={head}")).1,
        s.get("/v1/attempts/att-2").1
    );

    // Answers at many seqs, collected while the server runs.
    let ids: Vec<String> = [
        "radix",
        "t1",
        "att-0",
        "att-1",
        "att-2",
        "att-3",
        "artifact-00000001",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain((0..4).map(|i| format!("pr-{}", 1000 + i)))
    .collect();
    let seqs: Vec<u64> = (0..=head).step_by(3).chain([head]).collect();
    let mut answers = BTreeMap::new();
    for &n in &seqs {
        for id in &ids {
            answers.insert(
                (n, id.clone()),
                s.get(&format!("/v1/graph/nodes/{id}?as_of_seq={n}")),
            );
        }
        answers.insert(
            (n, "attempt:att-1".into()),
            s.get(&format!("/v1/attempts/att-1?as_of_seq={n}")),
        );
    }

    // A replay while the server runs reads a backup the server makes.
    let mid = head - 5;
    let (_, at_mid) = s.get(&format!("/v1/graph/nodes/att-1?as_of_seq={mid}"));
    let (code, report, nodes, _) = replay(
        &s.data_dir,
        mid,
        &[
            ("LEVIATHAN_CONTROL_PLANE_TOKEN", TOKEN),
            ("LEVIATHAN_API_URL", &s.base),
        ],
    );
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["source"], "backup");
    assert_eq!(report["matches"], true, "{report}");
    assert_eq!(wire(&nodes["att-1"]), at_mid);
    // Without a token, a locked store is refused with a way out.
    let (code, _, stderr) = admin_full(&["replay", "--to", "1"], &s.data_dir);
    assert_eq!(code, 1);
    assert!(stderr.contains("in use by a running server"), "{stderr}");
    s.stop();

    // The digests the live graph recorded, read from the store itself.
    let recorded: BTreeMap<u64, String> = with_store(&s.data_dir, |db| {
        let ks = keyspace(db, "graph_digests");
        seqs.iter()
            .filter(|n| **n > 0)
            .map(|n| (*n, hex::encode(ks.get(n.to_be_bytes()).unwrap().unwrap())))
            .collect()
    });
    for &n in &seqs {
        let (code, report, nodes, edges) = replay(&s.data_dir, n, &[]);
        assert_eq!(code, 0, "{report}");
        assert_eq!(report["source"], "store");
        assert_eq!(report["to"], n);
        assert_eq!(report["matches"], true, "{report}");
        if n > 0 {
            assert_eq!(report["state_digest"], recorded[&n].as_str(), "seq {n}");
        }
        for id in &ids {
            let (st, v) = &answers[&(n, id.clone())];
            match nodes.get(id) {
                Some(node) => assert_eq!((*st, v), (200, &wire(node)), "{id} at {n}"),
                None => assert_eq!(*st, 404, "{id} at {n}: {v}"),
            }
        }
        // The attempt detail as of n: its node and the artifacts it had
        // PRODUCED, as the replay has them.
        let (st, detail) = &answers[&(n, "attempt:att-1".to_string())];
        let produced: Vec<Value> = edges
            .iter()
            .filter(|e| e["from"] == "att-1" && e["edge_type"] == "PRODUCED")
            .filter_map(|e| nodes.get(e["to"].as_str().unwrap()))
            .filter(|n| n["node_type"] == "Artifact")
            .map(wire)
            .collect();
        match nodes.get("att-1") {
            Some(node) => {
                assert_eq!(*st, 200);
                assert_eq!(detail["attempt_node"], wire(node), "att-1 at {n}");
                assert_eq!(detail["artifacts"], json!(produced), "att-1 at {n}");
                for e in detail["events"].as_array().unwrap() {
                    assert!(e["seq"].as_u64().unwrap() <= n);
                }
            }
            None if *st == 200 => assert!(detail["attempt_node"].is_null()),
            None => assert_eq!(*st, 404),
        }
    }
    // Beyond the head: refused.
    let (code, _, stderr) = admin_full(&["replay", "--to", &(head + 1).to_string()], &s.data_dir);
    assert_eq!(code, 1);
    assert!(stderr.contains("beyond the log's head"), "{stderr}");
}

#[test]
fn rebuild_rebuilds_the_history_index_and_dump_jsonl_matches_a_replay_to_the_head() {
    let mut s = Server::start();
    for b in mixed_log(2) {
        assert_eq!(s.ingest(&b).0, 200);
    }
    let head = s.get("/v1/projection").1["applied_seq"].as_u64().unwrap();
    s.stop();
    let history_lines = |dir: &Path| -> Vec<String> {
        let (code, out) = admin(&["dump"], dir);
        assert_eq!(code, 0);
        out.lines()
            .filter(|l| l.starts_with("graph_history\t"))
            .map(str::to_string)
            .collect()
    };
    let before = history_lines(&s.data_dir);
    assert!(before.len() > 10, "{}", before.len());
    let (code, out) = admin(&["rebuild"], &s.data_dir);
    assert_eq!(code, 0, "{out}");
    assert_eq!(history_lines(&s.data_dir), before);
    // The live graph's JSON Lines dump is the replay's at the head.
    let (code, live) = admin(&["dump", "--format", "jsonl"], &s.data_dir);
    assert_eq!(code, 0);
    let dump = tempfile::NamedTempFile::new().unwrap();
    let (code, report) = admin(
        &[
            "replay",
            "--to",
            &head.to_string(),
            "--dump",
            dump.path().to_str().unwrap(),
        ],
        &s.data_dir,
    );
    assert_eq!(code, 0, "{report}");
    assert_eq!(std::fs::read_to_string(dump.path()).unwrap(), live);
    assert!(live.lines().count() > 10);
}
