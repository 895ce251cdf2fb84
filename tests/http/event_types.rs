//! Every event type the original control plane knew, sent as its emitters
//! really send it (the payload keys they were seen sending) and with the bare
//! minimum an emitter could send: nothing the original accepted is refused.
//! Each event is stored and served; the graph changes where a rule can project
//! the event, and not at all where it cannot (no TestRun without
//! `test_run_id`, no Task from a `task.completed` without `task_id`).

use crate::common::*;
use serde_json::{json, Value};

/// What the graph should show after the event.
enum Effect {
    /// A node of this type with this id exists.
    Node(&'static str, &'static str),
    /// No node with this id exists.
    NoNode(&'static str),
    /// The graph summary's counts are unchanged.
    Unchanged,
}
use Effect::*;

/// Ingests one event alone in a bundle; asserts 200, that it is stored and
/// served as sent, and the graph effect.
fn check(s: &Server, id: &str, event_type: &str, payload: Value, effect: Effect) {
    let before = s.get("/v1/graph/summary").1;
    let (st, r) = s.ingest(&bundle(
        &format!("b-{id}"),
        vec![event(id, event_type, payload.clone())],
    ));
    assert_eq!(st, 200, "{event_type} {payload}: {r}");
    assert_eq!(r["ingested"], 1, "{event_type}: {r}");
    let (st, e) = s.get(&format!("/v1/events/{id}"));
    assert_eq!(st, 200, "{event_type}: {e}");
    assert_eq!(e["event_type"], event_type);
    assert_eq!(e["payload"], payload, "{event_type}: served as sent");
    match effect {
        Node(node_type, node_id) => {
            let (st, n) = s.get(&format!("/v1/graph/nodes/{node_id}"));
            assert_eq!(st, 200, "{event_type}: node {node_id}: {n}");
            assert_eq!(n["node_type"], node_type, "{event_type}: {n}");
        }
        NoNode(node_id) => {
            assert_eq!(
                s.get(&format!("/v1/graph/nodes/{node_id}")).0,
                404,
                "{event_type}"
            );
            let after = s.get("/v1/graph/summary").1;
            assert_eq!(
                after["nodes_by_type"], before["nodes_by_type"],
                "{event_type}"
            );
        }
        Unchanged => {
            let after = s.get("/v1/graph/summary").1;
            assert_eq!(
                after["nodes_by_type"], before["nodes_by_type"],
                "{event_type}"
            );
            assert_eq!(
                after["edges_by_type"], before["edges_by_type"],
                "{event_type}"
            );
        }
    }
}

#[test]
fn projected_types_accept_what_their_emitters_send_and_the_bare_minimum() {
    let s = Server::start();
    // target.registered: fields seen, then the bare minimum (its identity).
    check(
        &s,
        "tr-1",
        "target.registered",
        json!({"target_id": "radix", "name": "radix", "repo_url": "https://git/radix", "default_branch": "main",
               "node_id": "radix", "node_type": "Target", "created_at": "2026-01-24T09:00:00"}),
        Node("Target", "radix"),
    );
    check(
        &s,
        "tr-2",
        "target.registered",
        json!({"target_id": "bare"}),
        Node("Target", "bare"),
    );
    // task.created, as the scheduler's backlog load sends it.
    check(
        &s,
        "tc-1",
        "task.created",
        json!({"task_id": "t1", "target_id": "radix", "title": "Fix", "scope": "src", "priority": "high",
               "estimated_size": "s", "allowed_paths": ["src/"], "acceptance_criteria": ["tests pass"],
               "status": "pending", "node_id": "t1", "node_type": "Task", "created_at": "2026-01-24T09:00:00"}),
        Node("Task", "t1"),
    );
    check(
        &s,
        "tc-2",
        "task.created",
        json!({"task_id": "t-bare"}),
        Node("Task", "t-bare"),
    );
    // attempt.*, as every worker sends them.
    check(
        &s,
        "ac-1",
        "attempt.created",
        json!({"attempt_id": "a1", "task_id": "t1", "target_id": "radix", "attempt_number": 1, "status": "created",
               "created_at": "2026-01-24T10:00:00", "node_id": "a1", "node_type": "Attempt"}),
        Node("Attempt", "a1"),
    );
    check(
        &s,
        "ac-2",
        "attempt.created",
        json!({"attempt_id": "a-bare"}),
        Node("Attempt", "a-bare"),
    );
    check(
        &s,
        "as-1",
        "attempt.started",
        json!({"attempt_id": "a1", "status": "running", "task_id": "t1", "target_id": "radix",
               "started_at": "2026-01-24T10:00:01"}),
        Node("Attempt", "a1"),
    );
    check(
        &s,
        "as-2",
        "attempt.started",
        json!({"attempt_id": "never-created"}),
        NoNode("never-created"),
    );
    check(
        &s,
        "asu-1",
        "attempt.succeeded",
        json!({"attempt_id": "a1", "status": "succeeded", "task_id": "t1", "target_id": "radix",
               "completed_at": "2026-01-24T10:05:00", "pr_url": "https://git/radix/pull/7", "pr_number": 7,
               "branch_name": "fix", "commit_sha": "abc", "artifacts_count": 2, "note": "done"}),
        Node("Attempt", "a1"),
    );
    check(
        &s,
        "asu-2",
        "attempt.succeeded",
        json!({"attempt_id": "a-bare"}),
        Node("Attempt", "a-bare"),
    );
    check(
        &s,
        "af-1",
        "attempt.failed",
        json!({"attempt_id": "a-bare", "status": "failed", "task_id": "t1", "target_id": "radix",
               "completed_at": "2026-01-24T10:05:00", "failure_type": "execution_failed",
               "error_summary": "tests failed"}),
        Node("Attempt", "a-bare"),
    );
    check(
        &s,
        "af-2",
        "attempt.failed",
        json!({"attempt_id": "nobody"}),
        NoNode("nobody"),
    );
    // artifact.created, as the K8s worker and the scheduler send it.
    check(
        &s,
        "art-1",
        "artifact.created",
        json!({"artifact_id": "artifact-0a1b2c3d", "attempt_id": "a1", "sha256": "ab".repeat(32),
               "artifact_type": "log", "size_bytes": 1024, "storage_path": "/store/ab",
               "created_at": "2026-01-24T10:04:00", "name": "log.txt", "node_id": "x", "node_type": "Artifact"}),
        Node("Artifact", "artifact-0a1b2c3d"),
    );
    check(
        &s,
        "art-2",
        "artifact.created",
        json!({"artifact_id": "art-bare"}),
        Node("Artifact", "art-bare"),
    );
    // pr.created, both emitter shapes (with and without title/state), and bare.
    check(
        &s,
        "pr-1",
        "pr.created",
        json!({"attempt_id": "a1", "pr_url": "https://git/radix/pull/7", "pr_number": 7, "title": "Fix", "state": "open"}),
        Node("PullRequest", "pr-7"),
    );
    check(
        &s,
        "pr-2",
        "pr.created",
        json!({"attempt_id": "a1", "task_id": "t1", "target_id": "radix", "pr_number": 8,
               "pr_url": "https://git/radix/pull/8", "branch_name": "fix", "commit_sha": "abc"}),
        Node("PullRequest", "pr-8"),
    );
    check(
        &s,
        "pr-3",
        "pr.created",
        json!({}),
        Node("PullRequest", "pr-pr-3"),
    );
    // The detail of a1 lists what it PRODUCED.
    let (_, d) = s.get("/v1/attempts/a1");
    assert_eq!(d["artifacts"].as_array().map(Vec::len), Some(1), "{d}");
    assert_eq!(d["pull_requests"].as_array().map(Vec::len), Some(2), "{d}");
}

#[test]
fn types_the_original_only_stored_are_stored_whatever_their_payload() {
    let s = Server::start();
    let (st, _) = s.ingest(&bundle(
        "setup",
        vec![
            event("s1", "target.registered", json!({"target_id": "radix"})),
            event(
                "s2",
                "task.created",
                json!({"task_id": "t1", "target_id": "radix"}),
            ),
            event(
                "s3",
                "attempt.created",
                json!({"attempt_id": "a1", "task_id": "t1"}),
            ),
        ],
    ));
    assert_eq!(st, 200);
    // Nobody emitted these; the bare minimum is an empty payload.
    for (i, t) in [
        "target.updated",
        "task.updated",
        "task.blocked",
        "task.completed",
        "attempt.invalidated",
        "job.submitted",
        "job.started",
        "job.completed",
        "job.failed",
        "tests.started",
        "tests.passed",
        "tests.failed",
        "model.call_started",
        "model.call_completed",
        "task.failed",
        "retry.scheduled",
    ]
    .iter()
    .enumerate()
    {
        check(&s, &format!("bare-{i}"), t, json!({}), Unchanged);
    }
    // Wrong types in fields the original never checked for these types.
    check(
        &s,
        "w1",
        "tests.started",
        json!({"test_run_id": "tr9", "passed": "yes"}),
        NoNode("tr9"),
    );
    check(
        &s,
        "w2",
        "model.call_completed",
        json!({"call_id": "c1", "cost_usd": "cheap"}),
        NoNode("c1"),
    );
    check(
        &s,
        "w3",
        "attempt.invalidated",
        json!({"attempt_id": "a1", "reason": 7}),
        Unchanged,
    );
    // task.completed as the scheduler sends it projects onto the task.
    check(
        &s,
        "tcomp",
        "task.completed",
        json!({"task_id": "t1", "status": "failed", "completed_at": "2026-01-24T11:00:00", "reason": "boom"}),
        Node("Task", "t1"),
    );
    assert_eq!(
        s.get("/v1/graph/nodes/t1").1["properties"]["status"],
        "failed"
    );
    // What a rule can project still is.
    check(
        &s,
        "tr-ok",
        "tests.failed",
        json!({"test_run_id": "tr1", "attempt_id": "a1", "target_id": "radix", "error": "2 failures"}),
        Node("TestRun", "tr1"),
    );
    check(
        &s,
        "job-ok",
        "job.started",
        json!({"attempt_id": "a1"}),
        Node("Attempt", "a1"),
    );
    assert_eq!(
        s.get("/v1/graph/nodes/a1").1["properties"]["job_status"],
        "started"
    );
    check(
        &s,
        "pm",
        "pr.merged",
        json!({"pr_number": 42}),
        Node("PullRequest", "pr-42"),
    );
    check(
        &s,
        "pc",
        "pr.closed",
        json!({"pr_number": "not a number"}),
        Unchanged,
    );
    // A tests.failed without test_run_id still counts as a failure.
    let (_, f) = s.get("/v1/failures?limit=100");
    let ids: Vec<&str> = f["failures"]
        .as_array()
        .expect("failures")
        .iter()
        .filter_map(|x| x["event_id"].as_str())
        .collect();
    let bare_tests_failed = "bare-11";
    assert!(ids.contains(&bare_tests_failed), "{f}");
    assert!(ids.contains(&"tr-ok"), "{f}");
}

#[test]
fn bootstrap_and_topology_types_are_stored_and_never_projected() {
    let s = Server::start();
    let sha = "cd".repeat(32);
    for (i, (t, payload)) in [
        ("bootstrap.started", json!({"target_id": "radix", "repo_url": "https://git/radix", "commit_sha": "c1", "default_branch": "main"})),
        ("file.discovered", json!({"target_id": "radix", "file_path": "src/a.rs", "sha256": sha, "size_bytes": 10, "file_type": "source", "language": "rust"})),
        ("doc.discovered", json!({"target_id": "radix", "doc_path": "README.md", "doc_title": "Radix", "sha256": sha})),
        ("workflow.discovered", json!({"target_id": "radix", "workflow_name": "ci", "workflow_path": ".ci", "triggers": ["push"], "sha256": sha})),
        ("api.route.discovered", json!({"target_id": "radix", "method": "GET", "path": "/x", "source_file": "a.py", "function_name": "x"})),
        ("repo.indexed", json!({"target_id": "radix", "repo_url": "u", "commit_sha": "c1", "default_branch": "main", "files_count": 1, "docs_count": 1, "workflows_count": 1, "api_routes_count": 1})),
        ("bootstrap.completed", json!({"target_id": "radix", "status": "completed", "files_indexed": 1, "docs_indexed": 1, "workflows_indexed": 1, "api_routes_indexed": 1})),
        ("topo.started", json!({"target_id": "radix", "commit_sha": "c1", "rules_version": "1"})),
        ("topo.area.discovered", json!({"area_id": "core", "path_prefixes": ["src/"], "file_count": 1, "rules_version": "1", "target_id": "radix", "commit_sha": "c1"})),
        ("topo.subsystem.discovered", json!({"subsystem_id": "s1", "area_id": "core", "root_path": "src", "languages": ["rust"], "file_count": 1, "rules_version": "1", "target_id": "radix", "commit_sha": "c1"})),
        ("topo.dependency.discovered", json!({"target_id": "radix", "commit_sha": "c1", "rules_version": "1", "from_subsystem_id": "s1", "to_subsystem_id": "s2",
                                             "evidence": [{"kind": "import", "from_file": "a", "to_module": "b", "mapped_subsystem": "s2"}]})),
        ("topo.indexed", json!({"target_id": "radix", "commit_sha": "c1", "rules_version": "1", "areas_count": 1, "subsystems_count": 1, "dependencies_count": 1})),
        ("topo.completed", json!({"target_id": "radix", "commit_sha": "c1", "rules_version": "1", "status": "completed"})),
        ("retry.scheduled", json!({"task_id": "t1", "retry_number": 1, "backoff_seconds": 30, "scheduled_at": "2026-01-24T10:10:00"})),
    ]
    .into_iter()
    .enumerate()
    {
        check(&s, &format!("ix-{i}"), t, payload, Unchanged);
    }
    // The topology routes read them.
    let (st, v) = s.get("/v1/topology/summary?target=radix");
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["areas_count"], 1);
    assert_eq!(
        s.get("/v1/topology/dependencies?target=radix").1["dependencies"][0]["to_subsystem_id"],
        "s2"
    );
}
