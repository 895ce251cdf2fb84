//! The core projection rules, as plain Rust: (event fields, payload JSON text)
//! in, graph ops out. No Wasm, no I/O, no clocks, no randomness, no hash-map
//! iteration: the same event always gives the same ops.
//!
//! Reproduces the original Python control plane's projection rules with its
//! known defects fixed: identity fields are required and typed, payload keys
//! outside the schema are kept, payload `node_id`/`node_type` never override
//! the derived identity, `created_at` comes from the payload or the event
//! timestamp (never a wall clock), `pr_number: null` is treated as absent,
//! `title`/`state` are not required on pull requests, and
//! `attempt.invalidated` is projected.

use crate::json::{self, Entries, JVal, Obj};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use std::borrow::Cow;

pub const NAME: &str = "core";
pub const VERSION: &str = "1.1.1";

/// Event types handled: exact names and `prefix.*` patterns.
pub const HANDLES: &[&str] = &[
    "target.registered",
    "target.updated",
    "task.created",
    "task.updated",
    "task.completed",
    "task.blocked",
    "attempt.created",
    "attempt.started",
    "attempt.succeeded",
    "attempt.failed",
    "attempt.invalidated",
    "job.*",
    "artifact.created",
    "pr.created",
    "pr.merged",
    "pr.closed",
    "tests.*",
    "model.*",
];

pub const NODE_TYPES: &[&str] = &["Target", "Task", "Attempt", "Artifact", "PullRequest", "TestRun", "ModelCall"];
pub const EDGE_TYPES: &[&str] = &["DEPENDS_ON", "PRODUCED"];

/// One log event, borrowed from the host's record.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    pub seq: u64,
    pub event_id: &'a str,
    pub event_type: &'a str,
    /// RFC 3339 UTC, `Z` suffix.
    pub timestamp: &'a str,
    pub actor_id: Option<&'a str>,
    /// The bundle's target.
    pub target: &'a str,
    /// A JSON object, as text.
    pub payload: &'a str,
}

/// A graph op (mirrors the contract's `op`; this projector only emits these three).
/// `properties` is JSON object text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    PutNode { id: String, node_type: &'static str, properties: String },
    MergeNode { id: String, node_type: &'static str, properties: String, create_if_absent: bool },
    PutEdge { edge_type: &'static str, from: String, to: String, properties: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionError {
    /// `missing_field`, `invalid_field` or `invalid_payload`.
    pub code: &'static str,
    pub message: String,
}

/// Type of a schema field, as checked when present (the original's graph
/// schema, in its lax mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// JSON string.
    Str,
    /// Integer, integral float or numeric string; emitted as a JSON integer.
    Int,
    /// Number or numeric string; emitted as a JSON number.
    Float,
    /// `true` / `false`.
    Bool,
    /// RFC 3339 string; emitted in UTC with a `Z` suffix.
    DateTime,
    /// Array of strings.
    StrList,
}

pub struct Schema {
    pub node_type: &'static str,
    /// Fields in the order they appear in properties (after the common ones).
    pub fields: &'static [(&'static str, Kind)],
}

use Kind::*;

/// Fields every node has (besides `node_id` and `node_type`).
pub const COMMON: &[(&str, Kind)] = &[("created_at", DateTime), ("created_by", Str)];

pub const TARGET: Schema = Schema {
    node_type: "Target",
    fields: &[
        ("target_id", Str),
        ("name", Str),
        ("repo_url", Str),
        ("default_branch", Str),
        ("contract_sha256", Str),
        ("policy_sha256", Str),
    ],
};

pub const TASK: Schema = Schema {
    node_type: "Task",
    fields: &[
        ("task_id", Str),
        ("target_id", Str),
        ("title", Str),
        ("scope", Str),
        ("priority", Str),
        ("estimated_size", Str),
        ("allowed_paths", StrList),
        ("acceptance_criteria", StrList),
        ("status", Str),
    ],
};

/// The original's Attempt fields plus `target_id` (the attempts list filters
/// on it) and the invalidation fields (`invalidation_reason`, `invalidated_at`),
/// which the original's schema dropped, so an invalidation was never stored.
pub const ATTEMPT: Schema = Schema {
    node_type: "Attempt",
    fields: &[
        ("attempt_id", Str),
        ("task_id", Str),
        ("target_id", Str),
        ("attempt_number", Int),
        ("status", Str),
        ("started_at", DateTime),
        ("completed_at", DateTime),
        ("exit_code", Int),
        ("failure_reason", Str),
        ("invalidation_reason", Str),
        ("invalidated_at", DateTime),
    ],
};

pub const ARTIFACT: Schema = Schema {
    node_type: "Artifact",
    fields: &[
        ("artifact_id", Str),
        ("sha256", Str),
        ("artifact_type", Str),
        ("storage_path", Str),
        ("size_bytes", Int),
        ("mime_type", Str),
    ],
};

pub const PULL_REQUEST: Schema = Schema {
    node_type: "PullRequest",
    fields: &[("pr_url", Str), ("title", Str), ("state", Str), ("pr_number", Int), ("merged_at", DateTime)],
};

pub const TEST_RUN: Schema = Schema {
    node_type: "TestRun",
    fields: &[
        ("test_run_id", Str),
        ("scope", Str),
        ("output_sha256", Str),
        ("passed", Bool),
        ("test_count", Int),
        ("failure_count", Int),
    ],
};

pub const MODEL_CALL: Schema = Schema {
    node_type: "ModelCall",
    fields: &[
        ("call_id", Str),
        ("model", Str),
        ("prompt_sha256", Str),
        ("response_sha256", Str),
        ("tokens_input", Int),
        ("tokens_output", Int),
        ("cost_usd", Float),
    ],
};

pub const SCHEMAS: &[&Schema] = &[&TARGET, &TASK, &ATTEMPT, &ARTIFACT, &PULL_REQUEST, &TEST_RUN, &MODEL_CALL];

/// What a handled event type does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    TargetRegistered,
    TargetUpdated,
    Task(TaskAction),
    AttemptCreated,
    AttemptChanged(&'static str),
    Job(&'static str),
    ArtifactCreated,
    Pr(PrAction),
    Tests(TestsAction),
    Model(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TaskAction {
    Created,
    Updated,
    Completed,
    Blocked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PrAction {
    Created,
    Merged,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TestsAction {
    Started,
    Passed,
    Failed,
}

fn rule_for(event_type: &str) -> Option<Rule> {
    Some(match event_type {
        "target.registered" => Rule::TargetRegistered,
        "target.updated" => Rule::TargetUpdated,
        "task.created" => Rule::Task(TaskAction::Created),
        "task.updated" => Rule::Task(TaskAction::Updated),
        "task.completed" => Rule::Task(TaskAction::Completed),
        "task.blocked" => Rule::Task(TaskAction::Blocked),
        "attempt.created" => Rule::AttemptCreated,
        "attempt.started" => Rule::AttemptChanged("running"),
        "attempt.succeeded" => Rule::AttemptChanged("succeeded"),
        "attempt.failed" => Rule::AttemptChanged("failed"),
        "attempt.invalidated" => Rule::AttemptChanged("invalidated"),
        "job.submitted" => Rule::Job("submitted"),
        "job.started" => Rule::Job("started"),
        "job.completed" => Rule::Job("completed"),
        "job.failed" => Rule::Job("failed"),
        "artifact.created" => Rule::ArtifactCreated,
        "pr.created" => Rule::Pr(PrAction::Created),
        "pr.merged" => Rule::Pr(PrAction::Merged),
        "pr.closed" => Rule::Pr(PrAction::Closed),
        "tests.started" => Rule::Tests(TestsAction::Started),
        "tests.passed" => Rule::Tests(TestsAction::Passed),
        "tests.failed" => Rule::Tests(TestsAction::Failed),
        "model.call_started" => Rule::Model(false),
        "model.call_completed" => Rule::Model(true),
        _ => return None,
    })
}

impl Rule {
    /// Whether the original control plane stored this type without projecting
    /// it (it had no rule for it): such an event is never refused, whatever its
    /// payload; what cannot be projected from it gives no ops.
    fn stored_only_by_the_original(self) -> bool {
        matches!(
            self,
            Rule::TargetUpdated
                | Rule::Task(TaskAction::Updated | TaskAction::Completed | TaskAction::Blocked)
                | Rule::AttemptChanged("invalidated")
                | Rule::Job(_)
                | Rule::Pr(PrAction::Merged | PrAction::Closed)
                | Rule::Tests(_)
                | Rule::Model(_)
        )
    }
}

/// Project one event. Event types without a rule (including unknown members
/// of the `job.*`, `tests.*`, `model.*` families) give no ops, and so does an
/// event of a type the original stored without projecting when its payload
/// lacks what the rule needs (e.g. `tests.failed` without `test_run_id`) or
/// carries a field of the wrong type: the original accepted those, so they
/// are stored, not refused.
pub fn project(ev: &Event<'_>) -> Result<Vec<Op>, ProjectionError> {
    let Some(rule) = rule_for(ev.event_type) else {
        return Ok(Vec::new());
    };
    match project_rule(ev, rule) {
        Err(_) if rule.stored_only_by_the_original() => Ok(Vec::new()),
        other => other,
    }
}

/// What `project` gives without the leniency for stored-only types (for tests).
#[cfg(test)]
pub(crate) fn project_rule_strict(ev: &Event<'_>) -> Result<Vec<Op>, ProjectionError> {
    match rule_for(ev.event_type) {
        Some(rule) => project_rule(ev, rule),
        None => Ok(Vec::new()),
    }
}

fn project_rule(ev: &Event<'_>, rule: Rule) -> Result<Vec<Op>, ProjectionError> {
    let payload = Entries::parse(ev.payload).map_err(|e| ProjectionError {
        code: "invalid_payload",
        message: format!("{}: payload must be a JSON object ({e})", ev.event_type),
    })?;
    let cx = Cx { ev, p: payload };
    let mut ops = Vec::with_capacity(2);
    match rule {
        Rule::TargetRegistered => {
            let id = cx.identity("target_id")?;
            let props = cx.node_props(&TARGET, &id)?;
            ops.push(put(&TARGET, id, props));
        }
        Rule::TargetUpdated => {
            let id = cx.identity("target_id")?;
            let props = cx.patch_props(&TARGET, &id)?;
            ops.push(merge(&TARGET, id, props, false));
        }
        Rule::Task(action) => {
            let id = cx.identity("task_id")?;
            let target = cx.edge_ref("target_id")?;
            let op = if action == TaskAction::Created {
                let mut props = cx.node_props(&TASK, &id)?;
                default(&mut props, "status", "pending");
                put(&TASK, id.clone(), props)
            } else {
                let mut props = cx.patch_props(&TASK, &id)?;
                match action {
                    TaskAction::Completed => default(&mut props, "status", "completed"),
                    TaskAction::Blocked => props.set("status", JVal::str("blocked")),
                    _ => {}
                }
                merge(&TASK, id.clone(), props, false)
            };
            ops.push(op);
            if let Some(target) = target {
                ops.push(cx.edge("DEPENDS_ON", id, target));
            }
        }
        Rule::AttemptCreated => {
            let id = cx.identity("attempt_id")?;
            let task = cx.edge_ref("task_id")?;
            let mut props = cx.node_props(&ATTEMPT, &id)?;
            default(&mut props, "status", "created");
            default(&mut props, "target_id", ev.target);
            ops.push(put(&ATTEMPT, id.clone(), props));
            if let Some(task) = task {
                ops.push(cx.edge("DEPENDS_ON", id, task));
            }
        }
        Rule::AttemptChanged(status) => {
            let id = cx.identity("attempt_id")?;
            let mut props = cx.patch_props(&ATTEMPT, &id)?;
            default(&mut props, "status", status);
            if status == "invalidated" {
                let reason = match cx.p.get("reason") {
                    Some(raw) => cx.check("reason", Str, raw)?,
                    None => JVal::NULL,
                };
                props.set("invalidation_reason", reason);
                props.set("invalidated_at", JVal::str(ev.timestamp));
            }
            ops.push(merge(&ATTEMPT, id, props, false));
        }
        Rule::Job(job_status) => {
            let id = cx.identity("attempt_id")?;
            let mut props = cx.patch_props(&ATTEMPT, &id)?;
            props.set("job_status", JVal::str(job_status));
            ops.push(merge(&ATTEMPT, id, props, false));
        }
        Rule::ArtifactCreated => {
            let id = cx.identity("artifact_id")?;
            let attempt = cx.edge_ref("attempt_id")?;
            let props = cx.node_props(&ARTIFACT, &id)?;
            ops.push(put(&ARTIFACT, id.clone(), props));
            if let Some(attempt) = attempt {
                ops.push(cx.edge("PRODUCED", attempt, id));
            }
        }
        Rule::Pr(action) => {
            let id = cx.pr_id()?;
            let attempt = cx.edge_ref("attempt_id")?;
            let op = match action {
                PrAction::Created => {
                    let mut props = cx.node_props(&PULL_REQUEST, &id)?;
                    default(&mut props, "state", "open");
                    put(&PULL_REQUEST, Cow::Owned(id.clone()), props)
                }
                PrAction::Merged => {
                    let mut props = cx.patch_props(&PULL_REQUEST, &id)?;
                    props.set("state", JVal::str("merged"));
                    default(&mut props, "merged_at", ev.timestamp);
                    merge(&PULL_REQUEST, Cow::Owned(id.clone()), props, true)
                }
                PrAction::Closed => {
                    let mut props = cx.patch_props(&PULL_REQUEST, &id)?;
                    props.set("state", JVal::str("closed"));
                    merge(&PULL_REQUEST, Cow::Owned(id.clone()), props, true)
                }
            };
            ops.push(op);
            if let Some(attempt) = attempt {
                ops.push(cx.edge("PRODUCED", attempt, Cow::Owned(id)));
            }
        }
        Rule::Tests(action) => {
            let id = cx.identity("test_run_id")?;
            let attempt = cx.edge_ref("attempt_id")?;
            let op = match action {
                TestsAction::Started => put(&TEST_RUN, id.clone(), cx.node_props(&TEST_RUN, &id)?),
                TestsAction::Passed | TestsAction::Failed => {
                    let mut props = cx.patch_props(&TEST_RUN, &id)?;
                    let passed = if action == TestsAction::Passed { "true" } else { "false" };
                    props.set("passed", JVal::Raw(Cow::Borrowed(passed)));
                    merge(&TEST_RUN, id.clone(), props, true)
                }
            };
            ops.push(op);
            if let Some(attempt) = attempt {
                ops.push(cx.edge("PRODUCED", attempt, id));
            }
        }
        Rule::Model(completed) => {
            let id = cx.identity("call_id")?;
            let attempt = cx.edge_ref("attempt_id")?;
            let op = if completed {
                merge(&MODEL_CALL, id.clone(), cx.patch_props(&MODEL_CALL, &id)?, true)
            } else {
                put(&MODEL_CALL, id.clone(), cx.node_props(&MODEL_CALL, &id)?)
            };
            ops.push(op);
            if let Some(attempt) = attempt {
                ops.push(cx.edge("PRODUCED", attempt, id));
            }
        }
    }
    Ok(ops)
}

fn put(schema: &Schema, id: Cow<'_, str>, props: Obj<'_>) -> Op {
    Op::PutNode { id: id.into_owned(), node_type: schema.node_type, properties: props.to_json() }
}

fn merge(schema: &Schema, id: Cow<'_, str>, props: Obj<'_>, create_if_absent: bool) -> Op {
    Op::MergeNode { id: id.into_owned(), node_type: schema.node_type, properties: props.to_json(), create_if_absent }
}

/// Set `key` to the string `val` if it is absent or null.
fn default<'a>(props: &mut Obj<'a>, key: &'a str, val: &'a str) {
    if props.is_unset(key) {
        props.set(key, JVal::str(val));
    }
}

struct Cx<'e, 'a> {
    ev: &'e Event<'a>,
    p: Entries<'a>,
}

impl<'e, 'a> Cx<'e, 'a> {
    fn error(&self, code: &'static str, field: &str, what: &str) -> ProjectionError {
        ProjectionError { code, message: format!("{}: payload.{field} {what}", self.ev.event_type) }
    }

    /// A required identity field: a non-empty string.
    fn identity(&self, field: &str) -> Result<Cow<'a, str>, ProjectionError> {
        match self.p.get(field) {
            None => Err(self.error("missing_field", field, "is required (a non-empty string)")),
            Some(raw) if json::is_null(raw) => {
                Err(self.error("missing_field", field, "is required (a non-empty string), got null"))
            }
            Some(raw) => match json::as_str(raw) {
                Some(s) if !s.is_empty() => Ok(s),
                Some(_) => Err(self.error("invalid_field", field, "must be a non-empty string, got an empty string")),
                None => Err(self.error(
                    "invalid_field",
                    field,
                    &format!("must be a non-empty string, got {}", json::kind_of(raw)),
                )),
            },
        }
    }

    /// An optional reference to another node (an edge endpoint): absent or
    /// null means no edge; otherwise it must be a non-empty string.
    fn edge_ref(&self, field: &str) -> Result<Option<Cow<'a, str>>, ProjectionError> {
        match self.p.get(field) {
            None => Ok(None),
            Some(raw) if json::is_null(raw) => Ok(None),
            Some(raw) => match json::as_str(raw) {
                Some(s) if !s.is_empty() => Ok(Some(s)),
                Some(_) => Err(self.error("invalid_field", field, "must be a non-empty string when present, got an empty string")),
                None => Err(self.error(
                    "invalid_field",
                    field,
                    &format!("must be a non-empty string when present, got {}", json::kind_of(raw)),
                )),
            },
        }
    }

    /// Type-check an optional field; returns the value to store (normalised).
    fn check(&self, field: &str, kind: Kind, raw: &'a RawValue) -> Result<JVal<'a>, ProjectionError> {
        if json::is_null(raw) {
            return Ok(JVal::NULL);
        }
        let bad = |expected: &str| {
            self.error("invalid_field", field, &format!("must be {expected}, got {}", describe_value(raw)))
        };
        match kind {
            Str => match raw.get().as_bytes().first() {
                Some(b'"') => Ok(JVal::raw(raw)),
                _ => Err(bad("a string")),
            },
            Int => json::as_int(raw).map(|i| JVal::Raw(Cow::Owned(i.to_string()))).ok_or_else(|| bad("an integer")),
            Float => json::as_float_json(raw).map(JVal::Raw).ok_or_else(|| bad("a number")),
            Bool => json::as_bool(raw).map(|_| JVal::raw(raw)).ok_or_else(|| bad("true or false")),
            StrList => {
                if json::is_str_list(raw) {
                    Ok(JVal::raw(raw))
                } else {
                    Err(bad("a list of strings"))
                }
            }
            DateTime => json::as_str(raw)
                .and_then(|s| json::normalize_datetime(&s))
                .map(|s| JVal::Str(Cow::Owned(s)))
                .ok_or_else(|| bad("an RFC 3339 date-time string")),
        }
    }

    /// Copy the payload into `obj`: schema fields type-checked and normalised,
    /// other keys kept as they are; `node_id` / `node_type` skipped (identity
    /// is derived, never taken from the payload); a null `created_at` skipped.
    fn payload_into(&self, schema: &Schema, obj: &mut Obj<'a>) -> Result<(), ProjectionError> {
        for (key, raw) in &self.p.0 {
            let key: &str = key;
            if key == "node_id" || key == "node_type" {
                continue;
            }
            let kind = COMMON.iter().chain(schema.fields).find(|(f, _)| *f == key).map(|(_, k)| *k);
            let val = match kind {
                Some(kind) => self.check(key, kind, raw)?,
                None => JVal::raw(raw),
            };
            if key == "created_at" && val == JVal::NULL {
                continue;
            }
            obj.set(Cow::Owned(key.to_owned()), val);
        }
        Ok(())
    }

    /// Full properties for a put-node: identity, common fields, every schema
    /// field (null when unset), then the payload's other keys in its order.
    fn node_props(&self, schema: &Schema, id: &str) -> Result<Obj<'a>, ProjectionError> {
        let mut obj = Obj::with_capacity(4 + schema.fields.len() + self.p.0.len());
        obj.set("node_id", JVal::Str(Cow::Owned(id.to_owned())));
        obj.set("node_type", JVal::str(schema.node_type));
        obj.set("created_at", JVal::str(self.ev.timestamp));
        obj.set("created_by", JVal::NULL);
        for (f, _) in schema.fields {
            obj.set(*f, JVal::NULL);
        }
        self.payload_into(schema, &mut obj)?;
        Ok(obj)
    }

    /// A merge patch: identity plus the payload's keys only (unset schema
    /// fields are not nulled, `created_at` is not touched unless the payload
    /// sets it).
    fn patch_props(&self, schema: &Schema, id: &str) -> Result<Obj<'a>, ProjectionError> {
        let mut obj = Obj::with_capacity(4 + self.p.0.len());
        obj.set("node_id", JVal::Str(Cow::Owned(id.to_owned())));
        obj.set("node_type", JVal::str(schema.node_type));
        self.payload_into(schema, &mut obj)?;
        Ok(obj)
    }

    fn edge(&self, edge_type: &'static str, from: Cow<'_, str>, to: Cow<'_, str>) -> Op {
        let mut props = Obj::with_capacity(1);
        props.set("created_at", JVal::str(self.ev.timestamp));
        Op::PutEdge { edge_type, from: from.into_owned(), to: to.into_owned(), properties: props.to_json() }
    }

    /// The PullRequest id (the original's rule, with `pr_number: null` read as
    /// absent): `pr-<pr_number>`, else `pr-<sha256(pr_url)[..12]>` for a
    /// non-empty `pr_url`, else `pr-<event_id[..12 chars]>`.
    fn pr_id(&self) -> Result<String, ProjectionError> {
        if let Some(raw) = self.p.get("pr_number").filter(|r| !json::is_null(r)) {
            let n = json::as_int(raw).ok_or_else(|| {
                self.error("invalid_field", "pr_number", &format!("must be an integer, got {}", describe_value(raw)))
            })?;
            return Ok(format!("pr-{n}"));
        }
        if let Some(raw) = self.p.get("pr_url").filter(|r| !json::is_null(r)) {
            let url = json::as_str(raw).ok_or_else(|| {
                self.error("invalid_field", "pr_url", &format!("must be a string, got {}", describe_value(raw)))
            })?;
            if !url.is_empty() {
                let digest = Sha256::digest(url.as_bytes());
                let mut id = String::with_capacity(15);
                id.push_str("pr-");
                for b in &digest[..6] {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    id.push(HEX[(b >> 4) as usize] as char);
                    id.push(HEX[(b & 15) as usize] as char);
                }
                return Ok(id);
            }
        }
        let prefix: String = self.ev.event_id.chars().take(12).collect();
        Ok(format!("pr-{prefix}"))
    }
}

/// The kind of a value, and a short quote of it for strings, for messages.
fn describe_value(raw: &RawValue) -> String {
    match json::as_str(raw) {
        Some(s) => {
            let mut q: String = s.chars().take(40).collect();
            if q.len() < s.len() {
                q.push('…');
            }
            format!("the string \"{q}\"")
        }
        None => json::kind_of(raw).to_owned(),
    }
}
