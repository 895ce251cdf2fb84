//! The read-only commands: `summary`, `attempts list|show`, `failures`,
//! `events recent`, `log head|verify`, `projectors list`. Each makes one GET and
//! prints either the server's JSON unchanged (`--json`) or tables read from the
//! route's typed wire model (`crate::wire`). `log verify` exits 1 when the
//! server reports a broken chain, in both modes.

use super::client::{Client, Json};
use super::error::CtlError;
use super::output::{bytes, cell, clean, shell_word, show, Out, Style, Table};
use super::Filter;
use crate::wire;
use serde_json::Value;

fn prop(p: &serde_json::Map<String, Value>, key: &str) -> String {
    cell(p.get(key).unwrap_or(&Value::Null))
}

fn query(pairs: &[(&'static str, Option<String>)]) -> Vec<(&'static str, String)> {
    pairs
        .iter()
        .filter_map(|(k, v)| v.clone().map(|v| (*k, v)))
        .collect()
}

/// Says how to get the next page when the server handed back a cursor: the
/// same command, with its argument (`id`, if any) and every option that shaped
/// the query (filters, limit: `options`, those given), and the cursor, each
/// word quoted for a shell when it needs it. Run as printed, it continues the
/// same listing.
pub(super) fn more(
    out: &mut Out,
    next_cursor: Option<&str>,
    command: &str,
    id: Option<&str>,
    options: &[(&str, Option<String>)],
) -> Result<(), CtlError> {
    let Some(next) = next_cursor else {
        return Ok(());
    };
    let mut words = vec!["leviathanctl".to_string(), command.to_string()];
    // The argument right after the command, unless it could be read as a
    // flag: then last, behind `--`.
    let id_last = id.filter(|id| id.starts_with('-'));
    if let Some(id) = id.filter(|id| !id.starts_with('-')) {
        words.push(shell_word(id));
    }
    let mut option = |flag: &str, value: &str| {
        // A value that starts with `-` would be read as a flag.
        if value.starts_with('-') {
            words.push(shell_word(&format!("{flag}={value}")));
        } else {
            words.push(flag.to_string());
            words.push(shell_word(value));
        }
    };
    for (flag, value) in options {
        if let Some(v) = value {
            option(flag, v);
        }
    }
    option("--cursor", next);
    if let Some(id) = id_last {
        words.push("--".into());
        words.push(shell_word(id));
    }
    let hint = format!("more: {}", words.join(" "));
    out.line(&format!("\n{}", out.paint(Style::Dim, &hint)))
}

/// The options of `attempts list` and `failures` that shape the query.
fn filter_options(f: &Filter) -> [(&'static str, Option<String>); 2] {
    [
        ("--target", f.target.clone()),
        ("--limit", f.limit.map(|l| l.to_string())),
    ]
}

/// `summary`: `GET /v1/graph/summary`.
pub fn summary(c: &Client, out: &mut Out, json: bool) -> Result<(), CtlError> {
    let r = c.get(&["v1", "graph", "summary"], &[])?;
    if json {
        return out.raw(&r.raw);
    }
    let s: wire::Summary = r.parse()?;
    let counts = |header: &'static str, m: &wire::OrderedCounts| {
        let mut t = Table::new(&[header, "COUNT"]).right(1);
        for (k, v) in &m.0 {
            t.row(vec![clean(k), v.to_string()]);
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
            show(&e.timestamp),
            show(&e.event_type),
            show(&e.event_id),
            cell(&e.attempt_id),
            cell(&e.target),
            show(&e.actor_id),
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
    let page: wire::AttemptsPage = r.parse()?;
    let mut t = Table::new(&["ATTEMPT", "STATUS", "TASK", "TARGET", "CREATED", "PR"]);
    for a in &page.attempts {
        let status = cell(&a.status);
        let style = Style::for_status(&status);
        t.styled_row(vec![
            (show(&a.attempt_id), Style::Plain),
            (status, style),
            (cell(&a.task_id), Style::Plain),
            (cell(&a.target), Style::Plain),
            (cell(&a.timestamp), Style::Plain),
            (cell(&a.pr_url), Style::Plain),
        ]);
    }
    if t.is_empty() && page.next_cursor.is_none() {
        return out.line("no attempts");
    }
    if t.is_empty() {
        out.line("no attempts in this part of the list")?;
    } else {
        out.table(&t)?;
    }
    more(
        out,
        page.next_cursor.as_deref(),
        "attempts list",
        None,
        &filter_options(f),
    )
}

/// `attempts show ID [--as-of SEQ]`: `GET /v1/attempts/{id}?as_of_seq=`.
pub fn attempt(
    c: &Client,
    out: &mut Out,
    json: bool,
    id: &str,
    as_of: Option<u64>,
) -> Result<(), CtlError> {
    let q = query(&[("as_of_seq", as_of.map(|n| n.to_string()))]);
    let r = c.get(&["v1", "attempts", id], &q)?;
    if json {
        return out.raw(&r.raw);
    }
    let d: wire::AttemptDetail = r.parse()?;
    let fields = match &d.attempt_node {
        Some(node) => {
            let props = &node.properties;
            let status = prop(props, "status");
            let mut fields = vec![
                ("attempt".to_string(), show(&node.node_id)),
                (
                    "status".to_string(),
                    out.paint(Style::for_status(&status), &status),
                ),
                ("task".to_string(), prop(props, "task_id")),
                ("target".to_string(), prop(props, "target_id")),
                (
                    "created".to_string(),
                    format!(
                        "{} (seq {})",
                        show(&node.created_at),
                        show(&node.created_seq)
                    ),
                ),
                (
                    "updated".to_string(),
                    format!(
                        "{} (seq {})",
                        show(&node.updated_at),
                        show(&node.updated_seq)
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
            for (k, val) in props {
                if !SHOWN.contains(&k.as_str()) && !val.is_null() {
                    fields.push((clean(k), cell(val)));
                }
            }
            fields
        }
        None => vec![
            ("attempt".to_string(), clean(id)),
            (
                "node".to_string(),
                "none: events name this attempt but no attempt.created made it".to_string(),
            ),
        ],
    };
    out.fields(&fields)?;

    let mut t = Table::new(&["SEQ", "TIMESTAMP", "EVENT TYPE", "EVENT ID", "ACTOR"]).right(0);
    for e in &d.events {
        t.row(vec![
            show(&e.seq),
            show(&e.timestamp),
            show(&e.event_type),
            show(&e.event_id),
            show(&e.actor_id),
        ]);
    }
    out.section("EVENTS (oldest first)", &t, "(none)")?;

    let mut t = Table::new(&["ARTIFACT", "TYPE", "SIZE", "SHA256"]);
    for a in &d.artifacts {
        let p = &a.properties;
        t.row(vec![
            show(&a.node_id),
            prop(p, "artifact_type"),
            p.get("size_bytes")
                .and_then(Value::as_u64)
                .map_or_else(|| prop(p, "size_bytes"), bytes),
            prop(p, "sha256"),
        ]);
    }
    out.section("ARTIFACTS", &t, "(none)")?;

    let mut t = Table::new(&["PR", "STATE", "URL"]);
    for pr in &d.pull_requests {
        let p = &pr.properties;
        let state = prop(p, "state");
        let style = Style::for_status(&state);
        t.styled_row(vec![
            (prop(p, "pr_number"), Style::Plain),
            (state, style),
            (prop(p, "pr_url"), Style::Plain),
        ]);
    }
    out.section("PULL REQUESTS", &t, "(none)")
}

/// `failures`: `GET /v1/failures`.
pub fn failures(
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
    let r = c.get(&["v1", "failures"], &q)?;
    if json {
        return out.raw(&r.raw);
    }
    let page: wire::Failures = r.parse()?;
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
    for x in &page.failures {
        t.styled_row(vec![
            (show(&x.seq), Style::Plain),
            (show(&x.timestamp), Style::Plain),
            (show(&x.event_type), Style::Red),
            (show(&x.attempt_id), Style::Plain),
            (show(&x.task_id), Style::Plain),
            (show(&x.target), Style::Plain),
            (show(&x.failure_type), Style::Plain),
            (show(&x.error), Style::Plain),
        ]);
    }
    if t.is_empty() && page.next_cursor.is_none() {
        return out.line("no failures");
    }
    if t.is_empty() {
        out.line("no failures in this part of the log")?;
    } else {
        out.table(&t)?;
    }
    more(
        out,
        page.next_cursor.as_deref(),
        "failures",
        None,
        &filter_options(f),
    )
}

/// One event as a table row: seq first.
pub fn event_row(e: &wire::Event) -> Vec<String> {
    let attempt = serde_json::from_str::<serde_json::Map<String, Value>>(e.payload.get())
        .ok()
        .map_or_else(|| "-".to_string(), |p| prop(&p, "attempt_id"));
    vec![
        show(&e.seq),
        show(&e.timestamp),
        show(&e.event_type),
        show(&e.event_id),
        show(&e.target),
        attempt,
        show(&e.actor_id),
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
    let list: Vec<wire::Event> = r.parse()?;
    let mut t = Table::new(&EVENT_HEADERS).right(0);
    for e in &list {
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
    let h: wire::Head = r.parse()?;
    out.fields(&[("seq".into(), show(&h.seq)), ("hash".into(), show(&h.hash))])
}

/// `log checkpoint`: `GET /v1/log/checkpoint[?tree_size=N]`, the signed note
/// as the server sent it (byte for byte: it is what a verifier checks), or
/// `{"checkpoint": <note>}` with `--json`.
pub fn checkpoint(
    c: &Client,
    out: &mut Out,
    json: bool,
    tree_size: Option<u64>,
) -> Result<(), CtlError> {
    let query: Vec<(&str, String)> = tree_size
        .map(|n| ("tree_size", n.to_string()))
        .into_iter()
        .collect();
    let url = c.endpoint(&["v1", "log", "checkpoint"], &query);
    let resp = c.send(c.request(reqwest::Method::GET, url, true))?;
    let note = resp.text().map_err(|e| c.transport(&e))?;
    if json {
        out.line(&serde_json::json!({ "checkpoint": note }).to_string())
    } else {
        out.text(&note)
    }
}

/// `log verify`: `GET /v1/log/verify`; a broken chain is exit 1.
pub fn verify(c: &Client, out: &mut Out, json: bool) -> Result<(), CtlError> {
    let r: Json = c.get(&["v1", "log", "verify"], &[])?;
    let v: wire::Verify = r.parse()?;
    if json {
        out.raw(&r.raw)?;
    } else {
        let verdict = if v.ok {
            out.paint(Style::Green, "ok: the chain verifies from genesis")
        } else {
            out.paint(Style::Red, "BROKEN")
        };
        let mut rows = vec![
            ("chain".to_string(), verdict),
            ("verified events".to_string(), show(&v.verified_events)),
            ("head seq".to_string(), show(&v.head.seq)),
            ("head hash".to_string(), show(&v.head.hash)),
        ];
        if !v.ok {
            rows.push(("first broken seq".into(), show(&v.first_broken_seq)));
            rows.push(("error".into(), show(&v.error)));
        }
        out.fields(&rows)?;
    }
    if v.ok {
        Ok(())
    } else {
        Err(CtlError::Failed(format!(
            "the chain is broken at seq {}: {} ({} events verified before it)",
            show(&v.first_broken_seq),
            show(&v.error),
            v.verified_events,
        )))
    }
}

/// `projectors list`: `GET /v1/projection`.
pub fn projectors(c: &Client, out: &mut Out, json: bool) -> Result<(), CtlError> {
    let r = c.get(&["v1", "projection"], &[])?;
    if json {
        return out.raw(&r.raw);
    }
    let v: wire::Projection = r.parse()?;
    let joined = |x: &[String]| x.iter().map(|s| clean(s)).collect::<Vec<_>>().join(",");
    let mut t = Table::new(&[
        "NAME",
        "VERSION",
        "HANDLES",
        "NODE TYPES",
        "EDGE TYPES",
        "DIGEST",
    ])
    .right(2);
    for p in &v.projectors {
        t.row(vec![
            show(&p.name),
            show(&p.version),
            plural(p.handles.len(), "type"),
            joined(&p.node_types),
            joined(&p.edge_types),
            show(&p.digest),
        ]);
    }
    out.table(&t)?;
    out.line("")?;
    out.fields(&[
        ("fingerprint".into(), show(&v.fingerprint)),
        ("applied seq".into(), show(&v.applied_seq)),
        ("log head seq".into(), show(&v.log_head_seq)),
        ("state digest".into(), show(&v.state_digest)),
    ])
}

/// `a, b, c`, each item cleaned for the terminal.
/// `1 type`, `2 types`.
fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn cleaned_list(items: &[String]) -> String {
    items
        .iter()
        .map(|p| clean(p))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Errors `projectors status` counts before it says "or more".
const STATUS_ERRORS_COUNTED: usize = 1000;

/// `projectors status`: `GET /v1/projection` and the first page of
/// `GET /v1/projection/errors`.
pub fn projectors_status(c: &Client, out: &mut Out, json: bool) -> Result<(), CtlError> {
    let r = c.get(&["v1", "projection"], &[])?;
    if json {
        return out.raw(&r.raw);
    }
    let v: wire::Projection = r.parse()?;
    let errors: wire::ProjectionErrorsPage = c
        .get(
            &["v1", "projection", "errors"],
            &[("limit", STATUS_ERRORS_COUNTED.to_string())],
        )?
        .parse()?;
    let mut t = Table::new(&[
        "NAME",
        "VERSION",
        "ON ERROR",
        "FUEL",
        "MEMORY MIB",
        "TABLES",
        "INSTANCES",
        "DIGEST",
    ])
    .right(3)
    .right(4)
    .right(5)
    .right(6);
    for p in &v.projectors {
        let (fuel, mem, tables, instances) = match &p.limits {
            Some(l) => (
                l.fuel.to_string(),
                l.memory_mib.to_string(),
                l.tables.to_string(),
                l.instances.to_string(),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        t.row(vec![
            show(&p.name),
            show(&p.version),
            show(&p.on_error),
            fuel,
            mem,
            tables,
            instances,
            show(&p.digest),
        ]);
    }
    out.table(&t)?;
    out.line("")?;
    let lag = v.log_head_seq.0.saturating_sub(v.applied_seq.0);
    let recorded = if errors.next_cursor.is_some() {
        format!("{} or more", errors.count)
    } else {
        errors.count.to_string()
    };
    out.fields(&[
        ("generation".into(), v.generation.to_string()),
        ("fingerprint".into(), show(&v.fingerprint)),
        ("applied seq".into(), show(&v.applied_seq)),
        ("log head seq".into(), show(&v.log_head_seq)),
        ("lag".into(), format!("{lag} events")),
        ("state digest".into(), show(&v.state_digest)),
        ("recorded errors".into(), recorded),
    ])?;
    if let Some(a) = &v.asynchronous {
        let names: Vec<String> = v
            .projectors
            .iter()
            .filter(|p| p.mode == "async")
            .map(|p| clean(&p.name))
            .collect();
        out.line("")?;
        out.line(&format!(
            "async projectors ({}), applied behind the head:",
            names.join(", ")
        ))?;
        let mut fields = vec![
            ("applied seq".into(), show(&a.applied_seq)),
            (
                "lag".into(),
                format!("{} events, {:.1} s", a.lag_events, a.lag_seconds),
            ),
            (
                "rate".into(),
                format!("{:.0} events/s", a.events_per_second),
            ),
            ("async digest".into(), show(&a.async_digest)),
            (
                "combined digest".into(),
                a.combined_digest.as_ref().map_or("-".into(), show),
            ),
            ("errors since start".into(), a.errors.to_string()),
        ];
        if let Some(m) = &a.message {
            fields.push(("last failure".into(), clean(m)));
        }
        out.fields(&fields)?;
    }
    if let Some(b) = &v.build {
        out.line("")?;
        out.line(&format!(
            "generation {} ({}): {}",
            b.generation,
            cleaned_list(&b.projectors),
            clean(&b.state)
        ))?;
        let mut fields = vec![
            ("fingerprint".into(), show(&b.fingerprint)),
            ("applied seq".into(), show(&b.applied_seq)),
            ("lag".into(), format!("{} events", b.lag_events)),
        ];
        // A build in progress has a rate and an ETA; a switched one the
        // average of its last run (since `resumed_from_seq`); a pending or
        // failed one neither (the server says 0: it no longer builds).
        match b.state.as_str() {
            "switched" => fields.push((
                "average rate".into(),
                format!(
                    "{:.0} events/s (from seq {} to the switch)",
                    b.events_per_second, b.resumed_from_seq
                ),
            )),
            "pending" | "failed" => {}
            _ => {
                fields.push((
                    "rate".into(),
                    format!("{:.0} events/s", b.events_per_second),
                ));
                fields.push((
                    "eta".into(),
                    b.eta_seconds.map_or("-".into(), |s| format!("{s:.0} s")),
                ));
            }
        }
        fields.push((
            "errors".into(),
            format!("{} (max_build_errors {})", b.errors, b.max_build_errors),
        ));
        out.fields(&fields)?;
        if let Some(m) = &b.message {
            out.line(&clean(m))?;
        }
    }
    for k in &v.kept {
        out.line("")?;
        out.line(&format!(
            "generation {} ({}): kept for a roll back, stopped at seq {}",
            k.generation,
            cleaned_list(&k.projectors),
            k.applied_seq
        ))?;
        out.fields(&[
            ("fingerprint".into(), show(&k.fingerprint)),
            (
                "kept since".into(),
                k.kept_at.as_deref().map_or("-".into(), clean),
            ),
        ])?;
    }
    if let Some(last) = errors.errors.last() {
        // The message often starts with its code already (`trap: …`): the
        // code is printed only when it does not (`trap: trap: …` before).
        let message = clean(&last.message);
        let code = clean(&last.code);
        let why = if message.starts_with(&format!("{code}:")) {
            message
        } else {
            format!("{code}: {message}")
        };
        out.line(&format!(
            "last recorded error: seq {} ({}) {}: {why}",
            last.seq,
            clean(&last.event_id),
            clean(&last.projector),
        ))?;
    }
    Ok(())
}
