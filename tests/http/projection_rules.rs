//! The core projector's rules, event type by event type, through the HTTP API.

use crate::common::*;
use serde_json::{json, Value};

fn node(s: &Server, id: &str) -> Value {
    let (st, n) = s.get(&format!("/v1/graph/nodes/{id}"));
    assert_eq!(st, 200, "node {id}: {n}");
    n
}

fn edges(s: &Server, id: &str, dir: &str) -> Vec<String> {
    let (st, v) = s.get(&format!("/v1/graph/nodes/{id}/edges?direction={dir}"));
    assert_eq!(st, 200, "{v}");
    v["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["edge_id"].as_str().unwrap().to_string())
        .collect()
}

fn ok(s: &Server, id: &str, evs: Vec<Value>) {
    let (st, r) = s.ingest(&bundle(id, evs));
    assert_eq!(st, 200, "{r}");
}

#[test]
fn targets_tasks_and_attempts() {
    let s = Server::start();
    ok(
        &s,
        "b1",
        vec![
            event(
                "e1",
                "target.registered",
                json!({"target_id": "radix", "name": "radix", "repo_url": "git@x:radix.git", "default_branch": "main", "node_id": "ignored"}),
            ),
            event(
                "e2",
                "task.created",
                json!({"task_id": "t1", "target_id": "radix", "title": "bump deps", "allowed_paths": ["a/"], "priority": "high"}),
            ),
            event(
                "e3",
                "attempt.created",
                json!({"attempt_id": "a1", "task_id": "t1", "attempt_number": "2", "custom": {"k": 1}}),
            ),
            event(
                "e4",
                "attempt.started",
                json!({"attempt_id": "a1", "started_at": "2026-01-24T10:01:00Z"}),
            ),
            event(
                "e5",
                "attempt.started",
                json!({"attempt_id": "unknown-attempt"}),
            ),
            event(
                "e6",
                "target.updated",
                json!({"target_id": "radix", "default_branch": "trunk"}),
            ),
            event("e7", "task.blocked", json!({"task_id": "t1"})),
        ],
    );
    let t = node(&s, "radix");
    assert_eq!(t["node_type"], "Target");
    assert_eq!(
        t["properties"]["node_id"], "radix",
        "payload node_id never overrides identity"
    );
    assert_eq!(t["properties"]["default_branch"], "trunk");
    assert_eq!(
        (t["created_seq"].as_u64(), t["updated_seq"].as_u64()),
        (Some(1), Some(6))
    );

    let task = node(&s, "t1");
    assert_eq!(task["node_type"], "Task");
    assert_eq!(task["properties"]["status"], "blocked");
    assert_eq!(task["properties"]["priority"], "high");
    assert_eq!(edges(&s, "t1", "out"), ["t1:DEPENDS_ON:radix"]);

    let a = node(&s, "a1");
    assert_eq!(a["node_type"], "Attempt");
    assert_eq!(a["properties"]["status"], "running");
    assert_eq!(
        a["properties"]["attempt_number"], 2,
        "numeric strings become integers"
    );
    assert_eq!(
        a["properties"]["target_id"], "radix",
        "falls back to the bundle's target"
    );
    assert_eq!(
        a["properties"]["custom"],
        json!({"k": 1}),
        "unknown keys are kept"
    );
    assert_eq!(
        a["created_at"], "2026-01-24T10:00:00.123456Z",
        "times come from events, not the clock"
    );
    assert_eq!(edges(&s, "a1", "out"), ["a1:DEPENDS_ON:t1"]);
    // An update to an unknown attempt is a no-op, as in the original.
    assert_eq!(s.get("/v1/graph/nodes/unknown-attempt").0, 404);

    let (_, summary) = s.get("/v1/graph/summary");
    assert_eq!(
        summary["nodes_by_type"],
        json!({"Target": 1, "Task": 1, "Attempt": 1})
    );
    assert_eq!(summary["edges_by_type"], json!({"DEPENDS_ON": 2}));
    let keys: Vec<_> = summary["nodes_by_type"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(keys.len(), 3);
    assert_eq!(summary["recent_events"].as_array().unwrap().len(), 7);
    assert_eq!(summary["recent_events"][0]["event_id"], "e7");
}

#[test]
fn artifacts_pull_requests_tests_models_jobs() {
    let s = Server::start();
    ok(
        &s,
        "b1",
        vec![
            event(
                "e1",
                "attempt.created",
                json!({"attempt_id": "a1", "task_id": "t1", "attempt_number": 1}),
            ),
            event(
                "e2",
                "artifact.created",
                json!({"artifact_id": "art-1", "attempt_id": "a1", "sha256": "ab", "artifact_type": "log", "size_bytes": 12, "storage_path": "file:///x"}),
            ),
            event(
                "e3",
                "pr.created",
                json!({"attempt_id": "a1", "pr_number": 42, "pr_url": "https://github.com/o/r/pull/42"}),
            ),
            event(
                "e4",
                "pr.created",
                json!({"attempt_id": "a1", "pr_number": null, "pr_url": "https://github.com/org/repo/pull/placeholder"}),
            ),
            event("e5-abcdefghijklmnop", "pr.created", json!({"pr_url": ""})),
            event("e6", "pr.merged", json!({"pr_number": 42})),
            event(
                "e7",
                "tests.passed",
                json!({"test_run_id": "tr1", "attempt_id": "a1", "test_count": 10, "failure_count": 0}),
            ),
            event(
                "e8",
                "model.call_completed",
                json!({"call_id": "mc1", "attempt_id": "a1", "model": "m", "tokens_input": 5}),
            ),
            event(
                "e9",
                "job.submitted",
                json!({"attempt_id": "a1", "job_id": "j1"}),
            ),
            event(
                "e10",
                "attempt.succeeded",
                json!({"attempt_id": "a1", "pr_url": "https://github.com/o/r/pull/42", "pr_number": 42}),
            ),
        ],
    );
    let art = node(&s, "art-1");
    assert_eq!(art["node_type"], "Artifact");
    assert_eq!(art["properties"]["size_bytes"], 12);
    let pr = node(&s, "pr-42");
    assert_eq!(pr["properties"]["state"], "merged");
    assert_eq!(
        node(&s, "pr-6a04a6c21035")["node_type"],
        "PullRequest",
        "null pr_number falls back to the URL digest"
    );
    assert_eq!(
        node(&s, "pr-e5-abcdefghi")["node_type"],
        "PullRequest",
        "then to the event id"
    );
    assert_eq!(s.get("/v1/graph/nodes/pr-None").0, 404);
    assert_eq!(node(&s, "tr1")["properties"]["passed"], true);
    assert_eq!(node(&s, "mc1")["node_type"], "ModelCall");
    let a = node(&s, "a1");
    assert_eq!(a["properties"]["job_id"], "j1");
    assert_eq!(a["properties"]["status"], "succeeded");
    let mut produced = edges(&s, "a1", "out");
    produced.sort();
    assert_eq!(
        produced,
        [
            "a1:DEPENDS_ON:t1",
            "a1:PRODUCED:art-1",
            "a1:PRODUCED:mc1",
            "a1:PRODUCED:pr-42",
            "a1:PRODUCED:pr-6a04a6c21035",
            "a1:PRODUCED:tr1",
        ]
    );
    assert_eq!(edges(&s, "art-1", "in"), ["a1:PRODUCED:art-1"]);

    // Attempt detail: events from the attempt index, artifacts only Artifact nodes.
    let (st, d) = s.get("/v1/attempts/a1");
    assert_eq!(st, 200);
    assert_eq!(d["attempt_node"]["node_id"], "a1");
    let evs: Vec<_> = d["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(evs, ["e1", "e2", "e3", "e4", "e7", "e8", "e9", "e10"]);
    let arts: Vec<_> = d["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node_id"].as_str().unwrap())
        .collect();
    assert_eq!(arts, ["art-1"]);
    assert_eq!(d["pull_requests"].as_array().unwrap().len(), 2);
}

#[test]
fn missing_identity_refuses_the_bundle_and_names_the_field() {
    let s = Server::start();
    ok(
        &s,
        "first",
        vec![event(
            "ok",
            "target.registered",
            json!({"target_id": "radix"}),
        )],
    );
    for (etype, payload, field) in [
        ("attempt.created", json!({"task_id": "t1"}), "attempt_id"),
        ("task.created", json!({"task_id": ""}), "task_id"),
        (
            "artifact.created",
            json!({"attempt_id": "a1"}),
            "artifact_id",
        ),
        (
            "attempt.created",
            json!({"attempt_id": "a9", "attempt_number": "many"}),
            "attempt_number",
        ),
    ] {
        let evs = vec![
            event("fine-1", "custom.thing", json!({})),
            event("bad-1", etype, payload),
        ];
        let (st, r) = s.ingest(&bundle("bad", evs));
        assert_eq!(st, 422, "{etype}: {r}");
        assert_eq!(r["error"]["code"], "projection_failed");
        assert_eq!(r["error"]["details"]["event_index"], 1);
        assert_eq!(r["error"]["details"]["projector"], "core@1.1.1");
        let msg = r["error"]["message"].as_str().unwrap();
        assert!(msg.contains(field) && msg.contains("bad-1"), "{msg}");
        // No seq: the one the event would have had goes to the next event
        // the log takes, and naming it would point at that one.
        assert!(r["error"]["details"].get("seq").is_none(), "{r}");
        assert!(!msg.contains("on event 3"), "{msg}");
        // Nothing of the bundle is in the log or the graph.
        assert_eq!(s.get("/v1/log/head").1["seq"], 1);
        assert_eq!(s.get("/v1/events/fine-1").0, 404);
    }
    let (_, p) = s.get("/v1/projection");
    assert_eq!(p["applied_seq"], 1);
    assert_eq!(p["log_head_seq"], 1);
}
