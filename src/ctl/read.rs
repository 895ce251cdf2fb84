//! The read-only commands: `summary`, `attempts list|show`, `failures`,
//! `events recent`, `log head|verify`, `projectors list`. Each makes one GET and
//! prints either the server's JSON unchanged (`--json`) or tables. `log verify`
//! exits 1 when the server reports a broken chain, in both modes.

use super::client::{Client, Json};
use super::error::CtlError;
use super::output::{bytes, cell, clean, Out, Style, Table};
use super::Filter;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;
use std::fmt;

/// A JSON object's entries in the order the server sent them.
struct Ordered(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Ordered, A::Error> {
                let mut out = Vec::new();
                while let Some(e) = m.next_entry()? {
                    out.push(e);
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(V)
    }
}

fn bad(what: &str, e: impl fmt::Display) -> CtlError {
    CtlError::BadResponse {
        what: what.into(),
        detail: e.to_string(),
    }
}

fn str_of(v: &Value, key: &str) -> String {
    cell(v.get(key).unwrap_or(&Value::Null))
}

fn status_cell(v: &Value) -> (String, Style) {
    let s = str_of(v, "status");
    let style = Style::for_status(&s);
    (s, style)
}

fn query(pairs: &[(&'static str, Option<String>)]) -> Vec<(&'static str, String)> {
    pairs
        .iter()
        .filter_map(|(k, v)| v.clone().map(|v| (*k, v)))
        .collect()
}

/// `summary`: `GET /v1/graph/summary`.
pub fn summary(c: &Client, out: &mut Out, json: bool) -> Result<(), CtlError> {
    let r = c.get(&["v1", "graph", "summary"], &[])?;
    if json {
        return out.raw(&r.raw);
    }
    #[derive(Deserialize)]
    struct Summary {
        nodes_by_type: Ordered,
        edges_by_type: Ordered,
        recent_events: Vec<Value>,
    }
    let s: Summary = serde_json::from_str(&r.raw).map_err(|e| bad("the summary", e))?;
    let counts = |header: &'static str, m: &Ordered| {
        let mut t = Table::new(&[header, "COUNT"]).right(1);
        for (k, v) in &m.0 {
            t.row(vec![clean(k), cell(v)]);
        }
        t
    };
    let mut nodes = counts("NODE TYPE", &s.nodes_by_type);
    let mut edges = counts("EDGE TYPE", &s.edges_by_type);
    if nodes.is_empty() {
        nodes.row(vec!["(none)".into(), "0".into()]);
    }
    if edges.is_empty() {
        edges.row(vec!["(none)".into(), "0".into()]);
    }
    out.table(&nodes)?;
    out.line("")?;
    out.table(&edges)?;
    let mut t = Table::new(&[
        "TIMESTAMP",
        "EVENT TYPE",
        "EVENT ID",
        "ATTEMPT",
        "TARGET",
        "ACTOR",
    ]);
    for e in &s.recent_events {
        t.row(vec![
            str_of(e, "timestamp"),
            str_of(e, "event_type"),
            str_of(e, "event_id"),
            str_of(e, "attempt_id"),
            str_of(e, "target"),
            str_of(e, "actor_id"),
        ]);
    }
    out.section("RECENT EVENTS (newest first)", &t, "(the log is empty)")
}

/// `attempts list`: `GET /v1/attempts`.
pub fn attempts(
    c: &Client,
    out: &mut Out,
    json: bool,
    f: &Filter,
    cursor: Option<String>,
) -> Result<(), CtlError> {
    let q = query(&[
        ("target", f.target.clone()),
        ("limit", f.limit.map(|l| l.to_string())),
        ("cursor", cursor),
    ]);
    let r = c.get(&["v1", "attempts"], &q)?;
    if json {
        return out.raw(&r.raw);
    }
    let list = r.value["attempts"]
        .as_array()
        .ok_or_else(|| bad("the attempt list", "no `attempts` array"))?;
    let mut t = Table::new(&["ATTEMPT", "STATUS", "TASK", "TARGET", "CREATED", "PR"]);
    for a in list {
        t.styled_row(vec![
            (str_of(a, "attempt_id"), Style::Plain),
            status_cell(a),
            (str_of(a, "task_id"), Style::Plain),
            (str_of(a, "target"), Style::Plain),
            (str_of(a, "timestamp"), Style::Plain),
            (str_of(a, "pr_url"), Style::Plain),
        ]);
    }
    if t.is_empty() {
        return out.line("no attempts");
    }
    out.table(&t)?;
    if let Some(next) = r.value["next_cursor"].as_str() {
        let hint = format!("more: leviathanctl attempts list --cursor {}", clean(next));
        out.line(&format!("\n{}", out.paint(Style::Dim, &hint)))?;
    }
    Ok(())
}

/// `attempts show ID`: `GET /v1/attempts/{id}`.
pub fn attempt(c: &Client, out: &mut Out, json: bool, id: &str) -> Result<(), CtlError> {
    let r = c.get(&["v1", "attempts", id], &[])?;
    if json {
        return out.raw(&r.raw);
    }
    let v = &r.value;
    let node = &v["attempt_node"];
    let props = &node["properties"];
    let mut fields = vec![
        ("attempt".to_string(), str_of(node, "node_id")),
        (
            "status".to_string(),
            out.paint(
                Style::for_status(&str_of(props, "status")),
                &str_of(props, "status"),
            ),
        ),
        ("task".to_string(), str_of(props, "task_id")),
        ("target".to_string(), str_of(props, "target_id")),
        (
            "created".to_string(),
            format!(
                "{} (seq {})",
                str_of(node, "created_at"),
                str_of(node, "created_seq")
            ),
        ),
        (
            "updated".to_string(),
            format!(
                "{} (seq {})",
                str_of(node, "updated_at"),
                str_of(node, "updated_seq")
            ),
        ),
    ];
    // The rest of the properties, unless shown above or null.
    const SHOWN: [&str; 7] = [
        "status",
        "task_id",
        "target_id",
        "attempt_id",
        "node_id",
        "node_type",
        "created_at",
    ];
    if let Some(map) = props.as_object() {
        for (k, val) in map {
            if !SHOWN.contains(&k.as_str()) && !val.is_null() {
                fields.push((clean(k), cell(val)));
            }
        }
    }
    out.fields(&fields)?;

    let mut t = Table::new(&["SEQ", "TIMESTAMP", "EVENT TYPE", "EVENT ID", "ACTOR"]).right(0);
    for e in v["events"].as_array().into_iter().flatten() {
        t.row(vec![
            str_of(e, "seq"),
            str_of(e, "timestamp"),
            str_of(e, "event_type"),
            str_of(e, "event_id"),
            str_of(e, "actor_id"),
        ]);
    }
    out.section("EVENTS (oldest first)", &t, "(none)")?;

    let mut t = Table::new(&["ARTIFACT", "TYPE", "SIZE", "SHA256"]);
    for a in v["artifacts"].as_array().into_iter().flatten() {
        let p = &a["properties"];
        t.row(vec![
            str_of(a, "node_id"),
            str_of(p, "artifact_type"),
            p["size_bytes"]
                .as_u64()
                .map_or_else(|| str_of(p, "size_bytes"), bytes),
            str_of(p, "sha256"),
        ]);
    }
    out.section("ARTIFACTS", &t, "(none)")?;

    let mut t = Table::new(&["PR", "STATE", "URL"]);
    for pr in v["pull_requests"].as_array().into_iter().flatten() {
        let p = &pr["properties"];
        let state = str_of(p, "state");
        let style = Style::for_status(&state);
        t.styled_row(vec![
            (str_of(p, "pr_number"), Style::Plain),
            (state, style),
            (str_of(p, "pr_url"), Style::Plain),
        ]);
    }
    out.section("PULL REQUESTS", &t, "(none)")
}

/// `failures`: `GET /v1/failures`.
pub fn failures(c: &Client, out: &mut Out, json: bool, f: &Filter) -> Result<(), CtlError> {
    let q = query(&[
        ("target", f.target.clone()),
        ("limit", f.limit.map(|l| l.to_string())),
    ]);
    let r = c.get(&["v1", "failures"], &q)?;
    if json {
        return out.raw(&r.raw);
    }
    let list = r.value["failures"]
        .as_array()
        .ok_or_else(|| bad("the failure list", "no `failures` array"))?;
    let mut t = Table::new(&[
        "SEQ",
        "TIMESTAMP",
        "EVENT TYPE",
        "ATTEMPT",
        "TASK",
        "TARGET",
        "TYPE",
        "ERROR",
    ])
    .right(0);
    for x in list {
        t.styled_row(vec![
            (str_of(x, "seq"), Style::Plain),
            (str_of(x, "timestamp"), Style::Plain),
            (str_of(x, "event_type"), Style::Red),
            (str_of(x, "attempt_id"), Style::Plain),
            (str_of(x, "task_id"), Style::Plain),
            (str_of(x, "target"), Style::Plain),
            (str_of(x, "failure_type"), Style::Plain),
            (str_of(x, "error"), Style::Plain),
        ]);
    }
    if t.is_empty() {
        return out.line("no failures");
    }
    out.table(&t)
}

/// One event as a table row: seq first.
pub fn event_row(e: &Value) -> Vec<String> {
    let p = &e["payload"];
    vec![
        str_of(e, "seq"),
        str_of(e, "timestamp"),
        str_of(e, "event_type"),
        str_of(e, "event_id"),
        str_of(e, "target"),
        str_of(p, "attempt_id"),
        str_of(e, "actor_id"),
    ]
}

pub const EVENT_HEADERS: [&str; 7] = [
    "SEQ",
    "TIMESTAMP",
    "EVENT TYPE",
    "EVENT ID",
    "TARGET",
    "ATTEMPT",
    "ACTOR",
];

/// `events recent`: `GET /v1/events/recent` (a bare array, newest first).
pub fn recent(c: &Client, out: &mut Out, json: bool, limit: Option<u64>) -> Result<(), CtlError> {
    let q = query(&[("limit", limit.map(|l| l.to_string()))]);
    let r = c.get(&["v1", "events", "recent"], &q)?;
    if json {
        return out.raw(&r.raw);
    }
    let list = r
        .value
        .as_array()
        .ok_or_else(|| bad("the recent events", "not an array"))?;
    let mut t = Table::new(&EVENT_HEADERS).right(0);
    for e in list {
        t.row(event_row(e));
    }
    if t.is_empty() {
        return out.line("the log is empty");
    }
    out.table(&t)
}

/// `log head`: `GET /v1/log/head`.
pub fn head(c: &Client, out: &mut Out, json: bool) -> Result<(), CtlError> {
    let r = c.get(&["v1", "log", "head"], &[])?;
    if json {
        return out.raw(&r.raw);
    }
    out.fields(&[
        ("seq".into(), str_of(&r.value, "seq")),
        ("hash".into(), str_of(&r.value, "hash")),
    ])
}

/// `log verify`: `GET /v1/log/verify`; a broken chain is exit 1.
pub fn verify(c: &Client, out: &mut Out, json: bool) -> Result<(), CtlError> {
    let r: Json = c.get(&["v1", "log", "verify"], &[])?;
    let v = &r.value;
    let ok = v["ok"]
        .as_bool()
        .ok_or_else(|| bad("the verification report", "no boolean `ok`"))?;
    if json {
        out.raw(&r.raw)?;
    } else {
        let verdict = if ok {
            out.paint(Style::Green, "ok: the chain verifies from genesis")
        } else {
            out.paint(Style::Red, "BROKEN")
        };
        let mut rows = vec![
            ("chain".to_string(), verdict),
            ("verified events".to_string(), str_of(v, "verified_events")),
            ("head seq".to_string(), str_of(&v["head"], "seq")),
            ("head hash".to_string(), str_of(&v["head"], "hash")),
        ];
        if !ok {
            rows.push(("first broken seq".into(), str_of(v, "first_broken_seq")));
            rows.push(("error".into(), str_of(v, "error")));
        }
        out.fields(&rows)?;
    }
    if ok {
        Ok(())
    } else {
        Err(CtlError::Failed(format!(
            "the chain is broken at seq {}: {} ({} events verified before it)",
            str_of(v, "first_broken_seq"),
            str_of(v, "error"),
            str_of(v, "verified_events"),
        )))
    }
}

/// `projectors list`: `GET /v1/projection`.
pub fn projectors(c: &Client, out: &mut Out, json: bool) -> Result<(), CtlError> {
    let r = c.get(&["v1", "projection"], &[])?;
    if json {
        return out.raw(&r.raw);
    }
    let v = &r.value;
    let list = v["projectors"]
        .as_array()
        .ok_or_else(|| bad("the projection state", "no `projectors` array"))?;
    let joined = |x: &Value| {
        let items: Vec<String> = x.as_array().into_iter().flatten().map(cell).collect();
        items.join(",")
    };
    let mut t = Table::new(&[
        "NAME",
        "VERSION",
        "HANDLES",
        "NODE TYPES",
        "EDGE TYPES",
        "DIGEST",
    ])
    .right(2);
    for p in list {
        let handles = p["handles"].as_array().map_or(0, Vec::len);
        t.row(vec![
            str_of(p, "name"),
            str_of(p, "version"),
            format!("{handles} types"),
            joined(&p["node_types"]),
            joined(&p["edge_types"]),
            str_of(p, "digest"),
        ]);
    }
    out.table(&t)?;
    out.line("")?;
    out.fields(&[
        ("fingerprint".into(), str_of(v, "fingerprint")),
        ("applied seq".into(), str_of(v, "applied_seq")),
        ("log head seq".into(), str_of(v, "log_head_seq")),
        ("state digest".into(), str_of(v, "state_digest")),
    ])
}
