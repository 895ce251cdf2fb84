//! `leviathan projector test FILE --events FILE.ndjson [--expect FILE]
//! [--after-core]`.
//!
//! A test-vectors file runs through [`crate::vectors::run`], exactly as the
//! server runs a projector's vectors at load (each vector on its own scratch
//! graph). A file of events is projected in order into one scratch graph
//! through [`crate::project_event`] (the writer's path: ownership checked,
//! rolling state digest), as a log of those events would be; the output is
//! each event's ops per projector, the resulting nodes and edges and the state
//! digest, as JSON. An event a projector refuses is left out of the scratch
//! log (as its bundle would be refused) and the run goes on; the exit status
//! is then 1. `--expect` compares the output with a saved one.

use super::events::{self, Scratch};
use crate::graph::Op;
use crate::projection::{Policy, Prepared};
use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::ExitCode;

/// Most differences listed.
const MAX_DIFFS: usize = 20;

#[derive(Debug, Clone, clap::Args)]
pub struct TestArgs {
    /// The component.
    pub file: PathBuf,
    /// NDJSON: test vectors, or events (one JSON event per line).
    #[arg(long)]
    pub events: PathBuf,
    /// A JSON document to compare the output with (any of its keys `events`,
    /// `nodes`, `edges`, `state`; e.g. the output of an earlier run, checked).
    #[arg(long)]
    pub expect: Option<PathBuf>,
    /// Run the embedded core projector first, as a server with `core` then
    /// this projector would (to test how they compose).
    #[arg(long)]
    pub after_core: bool,
    #[command(flatten)]
    pub load: super::LoadArgs,
}

pub(crate) fn run(args: &TestArgs) -> anyhow::Result<ExitCode> {
    let loaded = super::load(&args.file, args.after_core, &args.load)?;
    let text = events::read_text(&args.events)?;
    if events::is_vectors(&text) {
        if args.expect.is_some() {
            bail!(
                "{} is a test-vectors file (each vector carries its expected ops): --expect is \
                 for event files",
                args.events.display()
            );
        }
        let label = loaded.set.label(loaded.index).to_owned();
        return match crate::vectors::run(&loaded.set, loaded.index, &text) {
            Ok(passed) => {
                super::print(&serde_json::to_string_pretty(&json!({
                    "projector": label,
                    "vectors": passed,
                    "passed": passed,
                }))?)?;
                eprintln!(
                    "{label}: {passed} vectors of {} passed",
                    args.events.display()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{label}: test vectors {}: {e}", args.events.display());
                Ok(ExitCode::FAILURE)
            }
        };
    }

    let evs = events::parse(&args.events, &text)?;
    let set = &loaded.set;
    let mut scratch = Scratch::new()?;
    let mut out_events = Vec::with_capacity(evs.len());
    let mut failures = Vec::new();
    for ev in &evs {
        let seq = scratch.next_seq();
        let input = ev.input(seq);
        let mark = scratch.staging.checkpoint();
        match crate::project_event::project_event_traced(
            set,
            &input,
            Prepared::default(),
            &mut scratch.staging,
            Policy::AsConfigured,
        ) {
            Ok(traced) => {
                let mut per = Vec::new();
                for seg in &traced.applied {
                    let ops: &[Op] = &traced.ops[seg.start..seg.end];
                    scratch.touch(ops);
                    per.push(json!({
                        "projector": set.label(seg.projector),
                        "ops": ops,
                    }));
                }
                out_events.push(json!({
                    "line": ev.line,
                    "seq": seq,
                    "event_id": ev.event_id,
                    "event_type": ev.event_type,
                    "projectors": per,
                }));
            }
            Err(e) => {
                scratch.staging.rollback(mark);
                let mut message = e.to_string();
                if let Some(hint) = match &e {
                    crate::project_event::StepError::Projection(p) => p.failure.hint(),
                    crate::project_event::StepError::Graph(_) => None,
                } {
                    message = format!("{message}. {hint}");
                }
                failures.push(format!("event {}: {message}", ev.who()));
                out_events.push(json!({
                    "line": ev.line,
                    "event_id": ev.event_id,
                    "event_type": ev.event_type,
                    "error": message,
                }));
            }
        }
    }
    // Nodes and edges as the HTTP API gives them (`node_id`, `from_node`,
    // …): output compared with the API's, or read by the same tools.
    let (nodes, edges) = scratch.contents();
    let nodes: Vec<crate::wire::Node> = nodes.into_iter().map(Into::into).collect();
    let edges: Vec<crate::wire::Edge> = edges.into_iter().map(Into::into).collect();
    let (seq, digest) = scratch.staging.state();
    let output = json!({
        "projectors": set.projectors().iter().map(|p| json!({
            "name": p.name, "version": p.version, "sha256": p.digest.to_hex(),
        })).collect::<Vec<_>>(),
        "events": out_events,
        "nodes": nodes,
        "edges": edges,
        "state": {"seq": seq, "digest": digest.to_hex()},
    });
    super::print(&serde_json::to_string_pretty(&output)?)?;

    for f in &failures {
        eprintln!("projection error: {f}");
    }
    let mut differences = Vec::new();
    if let Some(expect_file) = &args.expect {
        let text = std::fs::read_to_string(expect_file)
            .with_context(|| format!("reading {}", expect_file.display()))?;
        let expected: Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: not JSON", expect_file.display()))?;
        let Value::Object(expected) = expected else {
            bail!(
                "{}: expected a JSON object (keys `events`, `nodes`, `edges`, `state`)",
                expect_file.display()
            );
        };
        for (key, want) in &expected {
            match output.get(key) {
                Some(got) => diff(key, want, got, &mut differences),
                None => bail!(
                    "{}: unknown key {key:?} (compare `events`, `nodes`, `edges`, `state`)",
                    expect_file.display()
                ),
            }
        }
        let total = differences.len();
        for d in differences.iter().take(MAX_DIFFS) {
            eprintln!("difference: {}", name_event(d, &output));
        }
        if total > MAX_DIFFS {
            eprintln!("… and {} more differences", total - MAX_DIFFS);
        }
    }
    if failures.is_empty() && differences.is_empty() {
        eprintln!(
            "{} events projected, {} nodes, {} edges{}",
            evs.len(),
            output["nodes"].as_array().map_or(0, Vec::len),
            output["edges"].as_array().map_or(0, Vec::len),
            if args.expect.is_some() {
                ", as expected"
            } else {
                ""
            }
        );
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "FAILED: {} projection errors, {} differences from the expected output",
            failures.len(),
            differences.len()
        );
        Ok(ExitCode::FAILURE)
    }
}

/// One difference: where (a path such as `events[2].projectors[0].ops[1].to`),
/// what was expected and what came out.
struct Difference {
    path: String,
    /// The index into `events` when the path is inside it.
    event: Option<usize>,
    expected: String,
    actual: String,
}

fn shown(v: Option<&Value>) -> String {
    let Some(v) = v else {
        return "nothing".into();
    };
    let text = v.to_string();
    match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

fn diff(path: &str, want: &Value, got: &Value, out: &mut Vec<Difference>) {
    let event = path
        .strip_prefix("events[")
        .and_then(|r| r.split(']').next())
        .and_then(|n| n.parse().ok());
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                match g.get(k) {
                    Some(gv) => diff(&format!("{path}.{k}"), wv, gv, out),
                    None => out.push(Difference {
                        path: format!("{path}.{k}"),
                        event,
                        expected: shown(Some(wv)),
                        actual: "nothing".into(),
                    }),
                }
            }
            for (k, gv) in g {
                if !w.contains_key(k) {
                    out.push(Difference {
                        path: format!("{path}.{k}"),
                        event,
                        expected: "nothing".into(),
                        actual: shown(Some(gv)),
                    });
                }
            }
        }
        (Value::Array(w), Value::Array(g)) => {
            for (i, wv) in w.iter().enumerate() {
                match g.get(i) {
                    Some(gv) => diff(&format!("{path}[{i}]"), wv, gv, out),
                    None => out.push(Difference {
                        path: format!("{path}[{i}]"),
                        event: event.or((path == "events").then_some(i)),
                        expected: shown(Some(wv)),
                        actual: "nothing".into(),
                    }),
                }
            }
            for (i, gv) in g.iter().enumerate().skip(w.len()) {
                out.push(Difference {
                    path: format!("{path}[{i}]"),
                    event: event.or((path == "events").then_some(i)),
                    expected: "nothing".into(),
                    actual: shown(Some(gv)),
                });
            }
        }
        _ if want == got => {}
        _ => out.push(Difference {
            path: path.to_owned(),
            event,
            expected: shown(Some(want)),
            actual: shown(Some(got)),
        }),
    }
}

/// A difference as a message, naming the event it belongs to.
fn name_event(d: &Difference, output: &Value) -> String {
    let event = d.event.and_then(|i| output["events"].get(i)).map(|e| {
        format!(
            "event at line {} ({}, {}): ",
            e["line"],
            e["event_id"].as_str().unwrap_or("?"),
            e["event_type"].as_str().unwrap_or("?")
        )
    });
    format!(
        "{}{}: expected {}, actual {}",
        event.unwrap_or_default(),
        d.path,
        d.expected,
        d.actual
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_their_path() {
        let mut out = Vec::new();
        diff(
            "events",
            &json!([{"line": 1, "ops": [{"id": "a"}]}, {"line": 2}]),
            &json!([{"line": 1, "ops": [{"id": "b"}], "extra": 1}]),
            &mut out,
        );
        let paths: Vec<(&str, Option<usize>)> =
            out.iter().map(|d| (d.path.as_str(), d.event)).collect();
        assert_eq!(
            paths,
            vec![
                ("events[0].ops[0].id", Some(0)),
                ("events[0].extra", Some(0)),
                ("events[1]", Some(1)),
            ]
        );
        assert_eq!(out[0].expected, "\"a\"");
        assert_eq!(out[0].actual, "\"b\"");
        let mut none = Vec::new();
        diff(
            "nodes",
            &json!([{"a": [1, 2]}]),
            &json!([{"a": [1, 2]}]),
            &mut none,
        );
        assert!(none.is_empty());
    }
}
