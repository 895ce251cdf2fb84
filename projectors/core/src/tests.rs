//! Native tests of the rule logic, event type by event type.

use crate::json;
use crate::rules::{self, Event, Op, ProjectionError};
use serde_json::{json, Value};

const TS: &str = "2026-01-24T10:00:00Z";

fn ev<'a>(event_type: &'a str, payload: &'a str) -> Event<'a> {
    Event {
        seq: 7,
        event_id: "evt-0123456789abcdef",
        event_type,
        timestamp: TS,
        actor_id: Some("worker-a1"),
        target: "radix",
        payload,
    }
}

fn run(event_type: &str, payload: Value) -> Result<Vec<Op>, ProjectionError> {
    let text = payload.to_string();
    rules::project(&ev(event_type, &text))
}

fn ok(event_type: &str, payload: Value) -> Vec<Op> {
    run(event_type, payload).unwrap_or_else(|e| panic!("{event_type}: unexpected error {e:?}"))
}

/// For a type the original stored without projecting: the event gives no ops
/// (it is stored, not refused); returns what the rule itself found wrong.
fn lenient(event_type: &str, payload: Value) -> ProjectionError {
    let ops = ok(event_type, payload.clone());
    assert_eq!(ops, vec![], "{event_type}: no ops for a payload the rule cannot project");
    let text = payload.to_string();
    match rules::project_rule_strict(&ev(event_type, &text)) {
        Ok(ops) => panic!("{event_type}: expected the rule to find a problem, got {ops:?}"),
        Err(e) => e,
    }
}

fn err(event_type: &str, payload: Value) -> ProjectionError {
    match run(event_type, payload) {
        Ok(ops) => panic!("{event_type}: expected an error, got {ops:?}"),
        Err(e) => e,
    }
}

fn props(s: &str) -> Value {
    let v: Value = serde_json::from_str(s).expect("properties are JSON");
    assert!(v.is_object(), "properties are a JSON object: {s}");
    v
}

/// (kind, id, node_type, properties, create_if_absent) of a node op.
fn node(op: &Op) -> (&'static str, &str, &str, Value, Option<bool>) {
    match op {
        Op::PutNode { id, node_type, properties } => ("put", id, node_type, props(properties), None),
        Op::MergeNode { id, node_type, properties, create_if_absent } => {
            ("merge", id, node_type, props(properties), Some(*create_if_absent))
        }
        other => panic!("expected a node op, got {other:?}"),
    }
}

fn edge(op: &Op) -> (&str, &str, &str, Value) {
    match op {
        Op::PutEdge { edge_type, from, to, properties } => (edge_type, from, to, props(properties)),
        other => panic!("expected put-edge, got {other:?}"),
    }
}

fn assert_edge(op: &Op, ty: &str, from: &str, to: &str) {
    let (t, f, x, p) = edge(op);
    assert_eq!((t, f, x), (ty, from, to));
    assert_eq!(p, json!({ "created_at": TS }));
}

// ---------------------------------------------------------------- describe

#[test]
fn description_lists_types() {
    assert_eq!(rules::NAME, "core");
    assert_eq!(rules::VERSION, "1.1.1");
    assert_eq!(rules::NODE_TYPES, ["Target", "Task", "Attempt", "Artifact", "PullRequest", "TestRun", "ModelCall"]);
    assert_eq!(rules::EDGE_TYPES, ["DEPENDS_ON", "PRODUCED"]);
    for t in ["target.registered", "task.completed", "attempt.invalidated", "artifact.created", "pr.merged", "tests.*", "model.*", "job.*"] {
        assert!(rules::HANDLES.contains(&t), "{t}");
    }
}

/// Every exact event type in HANDLES has a rule, and every rule's event type is
/// covered by HANDLES (exactly or by a prefix pattern).
#[test]
fn handles_match_rules() {
    let handled = |t: &str| {
        rules::HANDLES.iter().any(|h| match h.strip_suffix('*') {
            Some(prefix) => t.starts_with(prefix),
            None => *h == t,
        })
    };
    let with_rules = [
        "target.registered", "target.updated", "task.created", "task.updated", "task.completed", "task.blocked",
        "attempt.created", "attempt.started", "attempt.succeeded", "attempt.failed", "attempt.invalidated",
        "job.submitted", "job.started", "job.completed", "job.failed", "artifact.created", "pr.created",
        "pr.merged", "pr.closed", "tests.started", "tests.passed", "tests.failed", "model.call_started",
        "model.call_completed",
    ];
    for t in with_rules {
        assert!(handled(t), "{t} not in HANDLES");
    }
    for h in rules::HANDLES.iter().filter(|h| !h.ends_with('*')) {
        assert!(with_rules.contains(h), "{h} has no rule");
    }
}

#[test]
fn unknown_types_give_no_ops() {
    for t in ["custom.thing", "tests.skipped", "job.cancelled", "model.other", "bootstrap.started", "nodot"] {
        assert_eq!(ok(t, json!({"anything": 1})), vec![], "{t}");
    }
    // Not even the payload is looked at.
    assert_eq!(rules::project(&ev("custom.thing", "not json")).unwrap(), vec![]);
}

#[test]
fn payload_must_be_an_object() {
    for p in ["[1]", "\"x\"", "null", "{", "{\"a\":1} x"] {
        let e = rules::project(&ev("target.registered", p)).unwrap_err();
        assert_eq!(e.code, "invalid_payload", "{p}");
        assert!(e.message.starts_with("target.registered: payload must be a JSON object"), "{}", e.message);
    }
}

// ---------------------------------------------------------------- target

#[test]
fn target_registered() {
    let ops = ok(
        "target.registered",
        json!({"target_id":"radix","name":"radix","repo_url":"u","default_branch":"main","extra":"x",
               "node_id":"bogus","node_type":"Task"}),
    );
    assert_eq!(ops.len(), 1);
    let (kind, id, ty, p, _) = node(&ops[0]);
    assert_eq!((kind, id, ty), ("put", "radix", "Target"));
    assert_eq!(
        p,
        json!({"node_id":"radix","node_type":"Target","created_at":TS,"created_by":null,
               "target_id":"radix","name":"radix","repo_url":"u","default_branch":"main",
               "contract_sha256":null,"policy_sha256":null,"extra":"x"})
    );
}

#[test]
fn target_updated_merges_without_create() {
    let ops = ok("target.updated", json!({"target_id":"radix","default_branch":"trunk"}));
    let (kind, id, ty, p, create) = node(&ops[0]);
    assert_eq!((kind, id, ty, create), ("merge", "radix", "Target", Some(false)));
    assert_eq!(p, json!({"node_id":"radix","node_type":"Target","target_id":"radix","default_branch":"trunk"}));
}

#[test]
fn target_requires_target_id() {
    let e = err("target.registered", json!({"name":"radix"}));
    assert_eq!(e.code, "missing_field");
    assert_eq!(e.message, "target.registered: payload.target_id is required (a non-empty string)");
    let e = lenient("target.updated", json!({"target_id": 5}));
    assert_eq!(e.code, "invalid_field");
    assert_eq!(e.message, "target.updated: payload.target_id must be a non-empty string, got a number");
}

// ---------------------------------------------------------------- task

fn task_payload() -> Value {
    json!({"task_id":"task-001","target_id":"radix","title":"T","scope":"s","priority":"high",
           "estimated_size":"small","allowed_paths":["src/"],"acceptance_criteria":["a","b"],
           "status":"pending","node_id":"other","node_type":"Task","created_at":"2026-01-20T09:00:00Z"})
}

#[test]
fn task_created() {
    let ops = ok("task.created", task_payload());
    assert_eq!(ops.len(), 2);
    let (kind, id, ty, p, _) = node(&ops[0]);
    assert_eq!((kind, id, ty), ("put", "task-001", "Task"));
    assert_eq!(
        p,
        json!({"node_id":"task-001","node_type":"Task","created_at":"2026-01-20T09:00:00Z","created_by":null,
               "task_id":"task-001","target_id":"radix","title":"T","scope":"s","priority":"high",
               "estimated_size":"small","allowed_paths":["src/"],"acceptance_criteria":["a","b"],"status":"pending"})
    );
    assert_edge(&ops[1], "DEPENDS_ON", "task-001", "radix");
}

#[test]
fn task_created_defaults_and_optional_fields() {
    let ops = ok("task.created", json!({"task_id":"t1"}));
    assert_eq!(ops.len(), 1, "no target_id, no edge");
    let (_, _, _, p, _) = node(&ops[0]);
    assert_eq!(p["status"], "pending");
    assert_eq!(p["created_at"], TS, "event timestamp when the payload has none");
    for f in ["title", "scope", "priority", "estimated_size", "allowed_paths", "acceptance_criteria", "target_id"] {
        assert_eq!(p[f], Value::Null, "{f}");
        assert!(p.as_object().unwrap().contains_key(f), "{f} present as null");
    }
    // Null status gets the default too; null target_id means no edge.
    let ops = ok("task.created", json!({"task_id":"t1","status":null,"target_id":null}));
    assert_eq!(ops.len(), 1);
    assert_eq!(node(&ops[0]).3["status"], "pending");
}

#[test]
fn task_type_checks() {
    let e = err("task.created", json!({"task_id":"t1","allowed_paths":"src/"}));
    assert_eq!(e.code, "invalid_field");
    assert_eq!(e.message, "task.created: payload.allowed_paths must be a list of strings, got the string \"src/\"");
    let e = err("task.created", json!({"task_id":"t1","acceptance_criteria":["a", 1]}));
    assert!(e.message.contains("payload.acceptance_criteria must be a list of strings"), "{}", e.message);
    let e = err("task.created", json!({"task_id":"t1","title":3}));
    assert_eq!(e.message, "task.created: payload.title must be a string, got a number");
    let e = err("task.created", json!({"task_id":"t1","target_id":""}));
    assert_eq!(e.code, "invalid_field");
    assert!(e.message.contains("payload.target_id must be a non-empty string"), "{}", e.message);
    let e = lenient("task.completed", json!({"target_id":"radix"}));
    assert_eq!((e.code, e.message.as_str()), ("missing_field", "task.completed: payload.task_id is required (a non-empty string)"));
}

#[test]
fn task_updates() {
    let ops = ok("task.updated", json!({"task_id":"t1","priority":"low"}));
    assert_eq!(ops.len(), 1);
    let (kind, id, ty, p, create) = node(&ops[0]);
    assert_eq!((kind, id, ty, create), ("merge", "t1", "Task", Some(false)));
    assert_eq!(p, json!({"node_id":"t1","node_type":"Task","task_id":"t1","priority":"low"}));

    let ops = ok("task.completed", json!({"task_id":"t1","completed_at":"2026-01-24T11:00:00Z"}));
    let p = node(&ops[0]).3;
    assert_eq!(p["status"], "completed");
    assert_eq!(p["completed_at"], "2026-01-24T11:00:00Z", "extra key kept");

    let ops = ok("task.completed", json!({"task_id":"t1","status":"failed","reason":"boom","target_id":"radix"}));
    let p = node(&ops[0]).3;
    assert_eq!((p["status"].as_str(), p["reason"].as_str()), (Some("failed"), Some("boom")));
    assert_edge(&ops[1], "DEPENDS_ON", "t1", "radix");

    let ops = ok("task.blocked", json!({"task_id":"t1","status":"whatever"}));
    assert_eq!(node(&ops[0]).3["status"], "blocked");
}

// ---------------------------------------------------------------- attempt

#[test]
fn attempt_created() {
    let ops = ok(
        "attempt.created",
        json!({"attempt_id":"a1","task_id":"task-001","target_id":"radix","attempt_number":1,"status":"created",
               "node_id":"n-1","node_type":"Attempt"}),
    );
    assert_eq!(ops.len(), 2);
    let (kind, id, ty, p, _) = node(&ops[0]);
    assert_eq!((kind, id, ty), ("put", "a1", "Attempt"));
    assert_eq!(
        p,
        json!({"node_id":"a1","node_type":"Attempt","created_at":TS,"created_by":null,"attempt_id":"a1",
               "task_id":"task-001","target_id":"radix","attempt_number":1,"status":"created","started_at":null,
               "completed_at":null,"exit_code":null,"failure_reason":null,"invalidation_reason":null,
               "invalidated_at":null})
    );
    assert_edge(&ops[1], "DEPENDS_ON", "a1", "task-001");
}

#[test]
fn attempt_created_falls_back_to_event_target() {
    let ops = ok("attempt.created", json!({"attempt_id":"a1"}));
    assert_eq!(ops.len(), 1);
    let p = node(&ops[0]).3;
    assert_eq!(p["target_id"], "radix");
    assert_eq!(p["status"], "created");
    let ops = ok("attempt.created", json!({"attempt_id":"a1","target_id":null}));
    assert_eq!(node(&ops[0]).3["target_id"], "radix");
}

#[test]
fn attempt_identity_errors() {
    let e = err("attempt.created", json!({"task_id":"t"}));
    assert_eq!(e.code, "missing_field");
    assert_eq!(e.message, "attempt.created: payload.attempt_id is required (a non-empty string)");
    let e = err("attempt.created", json!({"attempt_id":null}));
    assert_eq!(e.code, "missing_field");
    assert!(e.message.starts_with("attempt.created: payload.attempt_id is required (a non-empty string)"));
    let e = err("attempt.started", json!({"attempt_id":""}));
    assert_eq!(e.code, "invalid_field");
    assert_eq!(e.message, "attempt.started: payload.attempt_id must be a non-empty string, got an empty string");
    let e = err("attempt.failed", json!({"attempt_id":["a"]}));
    assert_eq!(e.message, "attempt.failed: payload.attempt_id must be a non-empty string, got an array");
}

#[test]
fn attempt_int_fields_are_lax_and_emitted_as_integers() {
    for (given, want) in [(json!(2), 2), (json!(2.0), 2), (json!("2"), 2), (json!("-3"), -3), (json!(1e2), 100)] {
        let ops = ok("attempt.created", json!({"attempt_id":"a1","attempt_number":given}));
        let p = node(&ops[0]).3;
        assert_eq!(p["attempt_number"], json!(want), "{given}");
        assert!(p["attempt_number"].is_i64(), "{given} emitted as an integer");
    }
    for bad in [json!(2.5), json!("2.5"), json!("two"), json!(""), json!(true), json!([1]), json!(1e30)] {
        let e = err("attempt.created", json!({"attempt_id":"a1","attempt_number":bad}));
        assert_eq!(e.code, "invalid_field", "{bad}");
        assert!(e.message.starts_with("attempt.created: payload.attempt_number must be an integer, got "), "{}", e.message);
    }
    let e = err("attempt.succeeded", json!({"attempt_id":"a1","exit_code":"x"}));
    assert_eq!(e.message, "attempt.succeeded: payload.exit_code must be an integer, got the string \"x\"");
}

#[test]
fn attempt_datetime_fields() {
    let ops = ok("attempt.started", json!({"attempt_id":"a1","started_at":"2026-01-24T10:00:00.123456Z"}));
    assert_eq!(node(&ops[0]).3["started_at"], "2026-01-24T10:00:00.123456Z");
    // Offsets are converted to UTC; naive times (the original workers') are read as UTC.
    let ops = ok("attempt.started", json!({"attempt_id":"a1","started_at":"2026-01-01T01:30:00+02:00"}));
    assert_eq!(node(&ops[0]).3["started_at"], "2025-12-31T23:30:00Z");
    let ops = ok("attempt.started", json!({"attempt_id":"a1","started_at":"2026-01-24T10:00:09.5"}));
    assert_eq!(node(&ops[0]).3["started_at"], "2026-01-24T10:00:09.5Z");
    for bad in [json!("yesterday"), json!("2026-02-30T00:00:00Z"), json!("2026-01-24"), json!(1706090400), json!("2026-01-24T25:00:00Z")] {
        let e = err("attempt.started", json!({"attempt_id":"a1","started_at":bad}));
        assert_eq!(e.code, "invalid_field", "{bad}");
        assert!(e.message.starts_with("attempt.started: payload.started_at must be an RFC 3339 date-time string, got "), "{}", e.message);
    }
    let e = err("attempt.created", json!({"attempt_id":"a1","created_at":"not a date"}));
    assert_eq!(e.message, "attempt.created: payload.created_at must be an RFC 3339 date-time string, got the string \"not a date\"");
}

#[test]
fn attempt_lifecycle_merges_keep_every_key() {
    let cases = [("attempt.started", "running"), ("attempt.succeeded", "succeeded"), ("attempt.failed", "failed")];
    for (t, status) in cases {
        let ops = ok(
            t,
            json!({"attempt_id":"a1","target_id":"radix","pr_url":"https://x/pull/1","pr_number":1,
                   "error_summary":"e","failure_type":"worker_error","node_id":"zzz"}),
        );
        assert_eq!(ops.len(), 1, "{t}: no edges");
        let (kind, id, ty, p, create) = node(&ops[0]);
        assert_eq!((kind, id, ty, create), ("merge", "a1", "Attempt", Some(false)), "{t}");
        assert_eq!(
            p,
            json!({"node_id":"a1","node_type":"Attempt","attempt_id":"a1","target_id":"radix",
                   "pr_url":"https://x/pull/1","pr_number":1,"error_summary":"e","failure_type":"worker_error",
                   "status":status}),
            "{t}"
        );
    }
    // The payload's status wins.
    let ops = ok("attempt.failed", json!({"attempt_id":"a1","status":"failed-hard"}));
    assert_eq!(node(&ops[0]).3["status"], "failed-hard");
}

#[test]
fn attempt_invalidated() {
    let ops = ok("attempt.invalidated", json!({"attempt_id":"a1","reason":"flaky runner"}));
    let (kind, id, ty, p, create) = node(&ops[0]);
    assert_eq!((kind, id, ty, create), ("merge", "a1", "Attempt", Some(false)));
    assert_eq!(
        p,
        json!({"node_id":"a1","node_type":"Attempt","attempt_id":"a1","reason":"flaky runner",
               "status":"invalidated","invalidation_reason":"flaky runner","invalidated_at":TS})
    );
    let ops = ok("attempt.invalidated", json!({"attempt_id":"a1"}));
    assert_eq!(node(&ops[0]).3["invalidation_reason"], Value::Null);
    let e = lenient("attempt.invalidated", json!({"attempt_id":"a1","reason":7}));
    assert_eq!(e.message, "attempt.invalidated: payload.reason must be a string, got a number");
}

// ---------------------------------------------------------------- job

#[test]
fn job_events_merge_into_the_attempt() {
    for suffix in ["submitted", "started", "completed", "failed"] {
        let t = format!("job.{suffix}");
        let ops = ok(&t, json!({"attempt_id":"a1","job_id":"job-9","namespace":"ci"}));
        assert_eq!(ops.len(), 1);
        let (kind, id, ty, p, create) = node(&ops[0]);
        assert_eq!((kind, id, ty, create), ("merge", "a1", "Attempt", Some(false)), "{t}");
        assert_eq!(
            p,
            json!({"node_id":"a1","node_type":"Attempt","attempt_id":"a1","job_id":"job-9","namespace":"ci",
                   "job_status":suffix})
        );
    }
    let e = lenient("job.started", json!({"job_id":"job-9"}));
    assert_eq!(e.message, "job.started: payload.attempt_id is required (a non-empty string)");
}

// ---------------------------------------------------------------- artifact

#[test]
fn artifact_created() {
    let ops = ok(
        "artifact.created",
        json!({"artifact_id":"artifact-1a2b3c4d","attempt_id":"a1","sha256":"ab","artifact_type":"log",
               "size_bytes":"1024","storage_path":"file:///x","name":"log.txt","node_id":"uuid-other"}),
    );
    assert_eq!(ops.len(), 2);
    let (kind, id, ty, p, _) = node(&ops[0]);
    assert_eq!((kind, id, ty), ("put", "artifact-1a2b3c4d", "Artifact"));
    assert_eq!(
        p,
        json!({"node_id":"artifact-1a2b3c4d","node_type":"Artifact","created_at":TS,"created_by":null,
               "artifact_id":"artifact-1a2b3c4d","sha256":"ab","artifact_type":"log","storage_path":"file:///x",
               "size_bytes":1024,"mime_type":null,"attempt_id":"a1","name":"log.txt"})
    );
    assert_edge(&ops[1], "PRODUCED", "a1", "artifact-1a2b3c4d");

    let ops = ok("artifact.created", json!({"artifact_id":"x"}));
    assert_eq!(ops.len(), 1);
    let e = err("artifact.created", json!({"artifact_id":"x","attempt_id":3}));
    assert_eq!(e.message, "artifact.created: payload.attempt_id must be a non-empty string when present, got a number");
    let e = err("artifact.created", json!({"artifact_id":"x","size_bytes":1.5}));
    assert_eq!(e.message, "artifact.created: payload.size_bytes must be an integer, got a number");
}

// ---------------------------------------------------------------- pull request

#[test]
fn pr_id_rule() {
    let id = |payload: Value| match &ok("pr.created", payload)[0] {
        Op::PutNode { id, .. } => id.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(id(json!({"pr_number":123,"pr_url":"https://github.com/org/repo/pull/123"})), "pr-123");
    assert_eq!(id(json!({"pr_number":"123"})), "pr-123");
    assert_eq!(id(json!({"pr_number":123.0})), "pr-123");
    assert_eq!(id(json!({"pr_url":"https://github.com/org/repo/pull/placeholder"})), "pr-6a04a6c21035");
    // pr_number: null is absent (the original made `pr-None`).
    assert_eq!(id(json!({"pr_number":null,"pr_url":"https://github.com/org/repo/pull/placeholder"})), "pr-6a04a6c21035");
    // Neither: the first 12 characters of the event id.
    assert_eq!(id(json!({"pr_number":null,"pr_url":""})), "pr-evt-01234567");
    assert_eq!(id(json!({})), "pr-evt-01234567");
    let e = err("pr.created", json!({"pr_number":"abc"}));
    assert_eq!((e.code, e.message.as_str()), ("invalid_field", "pr.created: payload.pr_number must be an integer, got the string \"abc\""));
    let e = err("pr.created", json!({"pr_url":42}));
    assert_eq!(e.message, "pr.created: payload.pr_url must be a string, got a number");
}

#[test]
fn pr_id_uses_characters_of_event_id() {
    let e = Event { event_id: "ééééééééééééééé", ..ev("pr.created", "{}") };
    match &rules::project(&e).unwrap()[0] {
        Op::PutNode { id, .. } => assert_eq!(id, "pr-éééééééééééé"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn pr_created_without_title_or_state() {
    // The task / backlog-propose / pr-proof workers' payload (original defect 5).
    let ops = ok(
        "pr.created",
        json!({"attempt_id":"a1","task_id":"t1","target_id":"radix","pr_number":42,
               "pr_url":"https://github.com/org/repo/pull/42","branch_name":"b","commit_sha":"c"}),
    );
    assert_eq!(ops.len(), 2);
    let (kind, id, ty, p, _) = node(&ops[0]);
    assert_eq!((kind, id, ty), ("put", "pr-42", "PullRequest"));
    assert_eq!(
        p,
        json!({"node_id":"pr-42","node_type":"PullRequest","created_at":TS,"created_by":null,
               "pr_url":"https://github.com/org/repo/pull/42","title":null,"state":"open","pr_number":42,
               "merged_at":null,"attempt_id":"a1","task_id":"t1","target_id":"radix","branch_name":"b",
               "commit_sha":"c"})
    );
    assert_edge(&ops[1], "PRODUCED", "a1", "pr-42");
    let ops = ok("pr.created", json!({"pr_number":"7","state":"draft","title":"Fix"}));
    let p = node(&ops[0]).3;
    assert_eq!((p["state"].as_str(), p["title"].as_str(), p["pr_number"].as_i64()), (Some("draft"), Some("Fix"), Some(7)));
}

#[test]
fn pr_merged_and_closed() {
    let ops = ok("pr.merged", json!({"pr_number":42,"attempt_id":"a1"}));
    assert_eq!(ops.len(), 2);
    let (kind, id, ty, p, create) = node(&ops[0]);
    assert_eq!((kind, id, ty, create), ("merge", "pr-42", "PullRequest", Some(true)));
    assert_eq!(
        p,
        json!({"node_id":"pr-42","node_type":"PullRequest","pr_number":42,"attempt_id":"a1","state":"merged","merged_at":TS})
    );
    assert_edge(&ops[1], "PRODUCED", "a1", "pr-42");
    let ops = ok("pr.merged", json!({"pr_number":42,"merged_at":"2026-01-23T08:00:00Z","state":"open"}));
    let p = node(&ops[0]).3;
    assert_eq!((p["state"].as_str(), p["merged_at"].as_str()), (Some("merged"), Some("2026-01-23T08:00:00Z")));

    let ops = ok("pr.closed", json!({"pr_url":"https://github.com/org/repo/pull/placeholder"}));
    assert_eq!(ops.len(), 1);
    let (kind, id, _, p, create) = node(&ops[0]);
    assert_eq!((kind, id, create), ("merge", "pr-6a04a6c21035", Some(true)));
    assert_eq!(p["state"], "closed");
}

// ---------------------------------------------------------------- tests.*

#[test]
fn test_runs() {
    let ops = ok("tests.started", json!({"test_run_id":"tr1","attempt_id":"a1","scope":"unit"}));
    assert_eq!(ops.len(), 2);
    let (kind, id, ty, p, _) = node(&ops[0]);
    assert_eq!((kind, id, ty), ("put", "tr1", "TestRun"));
    assert_eq!(
        p,
        json!({"node_id":"tr1","node_type":"TestRun","created_at":TS,"created_by":null,"test_run_id":"tr1",
               "scope":"unit","output_sha256":null,"passed":null,"test_count":null,"failure_count":null,
               "attempt_id":"a1"})
    );
    assert_edge(&ops[1], "PRODUCED", "a1", "tr1");

    let ops = ok("tests.passed", json!({"test_run_id":"tr1","test_count":"12","failure_count":0}));
    assert_eq!(ops.len(), 1);
    let (kind, _, _, p, create) = node(&ops[0]);
    assert_eq!((kind, create), ("merge", Some(true)));
    assert_eq!(
        p,
        json!({"node_id":"tr1","node_type":"TestRun","test_run_id":"tr1","test_count":12,"failure_count":0,"passed":true})
    );
    let ops = ok("tests.failed", json!({"test_run_id":"tr1","passed":true}));
    assert_eq!(node(&ops[0]).3["passed"], false);
    let e = lenient("tests.started", json!({"test_run_id":"tr1","passed":"yes"}));
    assert_eq!(e.message, "tests.started: payload.passed must be true or false, got the string \"yes\"");
    let e = lenient("tests.passed", json!({}));
    assert_eq!(e.message, "tests.passed: payload.test_run_id is required (a non-empty string)");
}

// ---------------------------------------------------------------- model.*

#[test]
fn model_calls() {
    let ops = ok(
        "model.call_started",
        json!({"call_id":"c1","attempt_id":"a1","model":"m","prompt_sha256":"p","tokens_input":"100","cost_usd":"0.25"}),
    );
    assert_eq!(ops.len(), 2);
    let (kind, id, ty, p, _) = node(&ops[0]);
    assert_eq!((kind, id, ty), ("put", "c1", "ModelCall"));
    assert_eq!(
        p,
        json!({"node_id":"c1","node_type":"ModelCall","created_at":TS,"created_by":null,"call_id":"c1",
               "model":"m","prompt_sha256":"p","response_sha256":null,"tokens_input":100,"tokens_output":null,
               "cost_usd":0.25,"attempt_id":"a1"})
    );
    assert_edge(&ops[1], "PRODUCED", "a1", "c1");
    let ops = ok("model.call_completed", json!({"call_id":"c1","response_sha256":"r","tokens_output":7,"cost_usd":1.5}));
    let (kind, _, _, p, create) = node(&ops[0]);
    assert_eq!((kind, create), ("merge", Some(true)));
    assert_eq!(
        p,
        json!({"node_id":"c1","node_type":"ModelCall","call_id":"c1","response_sha256":"r","tokens_output":7,"cost_usd":1.5})
    );
    let e = lenient("model.call_completed", json!({"call_id":"c1","cost_usd":"cheap"}));
    assert_eq!(e.message, "model.call_completed: payload.cost_usd must be a number, got the string \"cheap\"");
    let e = lenient("model.call_started", json!({"call_id":""}));
    assert_eq!(e.code, "invalid_field");
}

// ---------------------------------------------------------------- common

#[test]
fn created_by_and_created_at() {
    let ops = ok("artifact.created", json!({"artifact_id":"x","created_by":"alice","created_at":"2026-01-01T00:00:00+01:00"}));
    let p = node(&ops[0]).3;
    assert_eq!(p["created_by"], "alice");
    assert_eq!(p["created_at"], "2025-12-31T23:00:00Z");
    // A null created_at falls back to the event timestamp.
    let ops = ok("artifact.created", json!({"artifact_id":"x","created_at":null}));
    assert_eq!(node(&ops[0]).3["created_at"], TS);
    let e = err("artifact.created", json!({"artifact_id":"x","created_by":1}));
    assert_eq!(e.message, "artifact.created: payload.created_by must be a string, got a number");
}

#[test]
fn escaped_strings_round_trip() {
    // Canonical JSON escapes quotes, backslashes and control characters.
    let payload = r#"{"attempt_id":"a\"1\\x","note":"line\nnext\u0001","tab\tkey":"é😀"}"#;
    let ops = rules::project(&ev("attempt.created", payload)).unwrap();
    let (_, id, _, p, _) = node(&ops[0]);
    assert_eq!(id, "a\"1\\x");
    assert_eq!(p["node_id"], "a\"1\\x");
    assert_eq!(p["attempt_id"], "a\"1\\x");
    assert_eq!(p["note"], "line\nnext\u{1}");
    assert_eq!(p["tab\tkey"], "é😀");
}

#[test]
fn duplicate_keys_last_wins() {
    let ops = rules::project(&ev("attempt.created", r#"{"attempt_id":"a1","x":1,"x":2}"#)).unwrap();
    let Op::PutNode { properties, .. } = &ops[0] else { panic!() };
    assert_eq!(properties.matches("\"x\"").count(), 1);
    assert_eq!(props(properties)["x"], 2);
}

#[test]
fn nested_values_pass_through() {
    let ops = ok("target.registered", json!({"target_id":"t","meta":{"b":[1,2.5,{"c":null}],"a":true},"big":12345678901234567890u64}));
    let p = node(&ops[0]).3;
    assert_eq!(p["meta"], json!({"b":[1,2.5,{"c":null}],"a":true}));
    assert_eq!(p["big"], json!(12345678901234567890u64));
}

#[test]
fn deterministic() {
    // Written out (json! would sort the keys): nested values pass through untouched.
    let payload = r#"{"attempt_id":"a1","task_id":"t1","attempt_number":"3","a":{"y":2,"x":1},"z":1,"started_at":"2026-01-24T12:00:00+05:30"}"#;
    let first = rules::project(&ev("attempt.created", payload)).unwrap();
    for _ in 0..50 {
        assert_eq!(rules::project(&ev("attempt.created", payload)).unwrap(), first);
    }
    // Byte-exact expectation, so any change in output order is noticed.
    let Op::PutNode { properties, .. } = &first[0] else { panic!() };
    assert_eq!(
        properties,
        r#"{"node_id":"a1","node_type":"Attempt","created_at":"2026-01-24T10:00:00Z","created_by":null,"attempt_id":"a1","task_id":"t1","target_id":"radix","attempt_number":3,"status":"created","started_at":"2026-01-24T06:30:00Z","completed_at":null,"exit_code":null,"failure_reason":null,"invalidation_reason":null,"invalidated_at":null,"a":{"y":2,"x":1},"z":1}"#
    );
}

// ---------------------------------------------------------------- json helpers

#[test]
fn datetime_normalisation() {
    let n = json::normalize_datetime;
    assert_eq!(n("2026-01-24T10:00:00Z").as_deref(), Some("2026-01-24T10:00:00Z"));
    assert_eq!(n("2026-01-24t10:00:00z").as_deref(), Some("2026-01-24T10:00:00Z"));
    assert_eq!(n("2026-01-24 10:00:00+00:00").as_deref(), Some("2026-01-24T10:00:00Z"));
    assert_eq!(n("2024-02-29T23:59:59.999-00:30").as_deref(), Some("2024-03-01T00:29:59.999Z"));
    assert_eq!(n("2026-01-01T00:00:00-23:59").as_deref(), Some("2026-01-01T23:59:00Z"));
    assert_eq!(n("2000-03-01T00:10:00+00:20").as_deref(), Some("2000-02-29T23:50:00Z"));
    for bad in ["", "2026-01-24", "2026-13-01T00:00:00Z", "2023-02-29T00:00:00Z", "2026-01-24T10:00:00.Z",
                "2026-01-24T10:00:00+0100", "2026-01-24T10:00:00 Z", "0001-01-01T00:00:00+01:00", "2026-01-24T10:60:00Z"] {
        assert_eq!(n(bad), None, "{bad}");
    }
}

#[test]
fn json_string_escaping() {
    let mut s = String::new();
    json::write_str(&mut s, "a\"b\\c\n\r\t\u{8}\u{c}\u{1f}\u{7f}é/");
    assert_eq!(s, "\"a\\\"b\\\\c\\n\\r\\t\\b\\f\\u001f\u{7f}é/\"");
    let back: String = serde_json::from_str(&s).unwrap();
    assert_eq!(back, "a\"b\\c\n\r\t\u{8}\u{c}\u{1f}\u{7f}é/");
}

#[test]
fn exact_integer_parsing() {
    let int = |t: &str| json::as_int(&serde_json::value::RawValue::from_string(t.to_owned()).unwrap());
    for (t, want) in [
        ("0", Some(0)), ("-0", Some(0)), ("-0.0", Some(0)), ("0e999999999", Some(0)), ("1e2", Some(100)),
        ("1.5e1", Some(15)), ("1500e-2", Some(15)), ("1.25e1", None), ("2.5", None), ("1E+2", Some(100)),
        ("9223372036854775807", Some(i64::MAX)), ("9223372036854775808", None),
        ("-9223372036854775808", Some(i64::MIN)), ("-9223372036854775809", None),
        ("9007199254740993.0", Some(9007199254740993)), ("1e19", None), ("1e-999999999", None),
        ("\"+4\"", Some(4)), ("\"007\"", Some(7)), ("\"-12\"", Some(-12)), ("\"1e2\"", None), ("\"2.0\"", None),
        ("\" 2\"", None), ("\"\"", None), ("\"-\"", None), ("true", None), ("null", None),
    ] {
        assert_eq!(int(t), want, "{t}");
    }
}

#[test]
fn float_strings() {
    let float = |t: &str| {
        json::as_float_json(&serde_json::value::RawValue::from_string(t.to_owned()).unwrap()).map(|c| c.into_owned())
    };
    for (t, want) in [
        ("1.5", Some("1.5")), ("-2e-3", Some("-2e-3")), ("\"0.25\"", Some("0.25")), ("\"007.50\"", Some("7.50")),
        ("\"+1e3\"", Some("1000")), ("\"-0.5E+2\"", Some("-50")), ("\"1e-400\"", Some("1e-400")), ("\"1.5e307\"", Some("1.5e307")),
        ("\"1e400\"", None), ("\".5\"", None), ("\"5.\"", None), ("\"NaN\"", None), ("\"inf\"", None), ("\"1_000\"", None),
        ("true", None),
    ] {
        assert_eq!(float(t).as_deref(), want, "{t}");
    }
}

/// Every type the original stored without projecting, with the bare minimum
/// an emitter could send (an empty payload) and with fields of the wrong type:
/// no ops, never an error.
#[test]
fn types_the_original_only_stored_are_never_refused() {
    for t in [
        "target.updated", "task.updated", "task.completed", "task.blocked", "attempt.invalidated",
        "job.submitted", "job.started", "job.completed", "job.failed", "pr.merged", "pr.closed",
        "tests.started", "tests.passed", "tests.failed", "model.call_started", "model.call_completed",
    ] {
        for payload in [json!({}), json!({"attempt_id": 5, "task_id": [], "test_run_id": null, "call_id": "",
                                          "target_id": {}, "pr_number": "x", "reason": 1})] {
            let ops = run(t, payload.clone()).unwrap_or_else(|e| panic!("{t} {payload}: refused: {e:?}"));
            assert!(ops.is_empty() || t.starts_with("pr."), "{t} {payload}: {ops:?}");
        }
    }
    // What can be projected still is: a test run with its id, a merged PR by number.
    assert_eq!(ok("tests.failed", json!({"test_run_id": "tr1"})).len(), 1);
    assert_eq!(ok("pr.merged", json!({"pr_number": 4})).len(), 1);
}
