//! The `deploys` example projector in Rust: the twin of the Python
//! (`../python/app.py`) and JavaScript (`../js/projector.js`) examples. All
//! three project deployment events into `Deployment` and `Environment` nodes
//! with `DEPLOYED_TO` and `SHIPS` edges, and pass the same vectors
//! (`../vectors.ndjson`); projectors/examples/README.md states the rules.
//!
//! Built like the template (wasm32-unknown-unknown + wit-component), this
//! twin imports no WASI, so it has no clock: where its siblings read the wall
//! clock (which the host freezes at the event's timestamp), it computes the
//! same milliseconds from the event's timestamp text. The rules are plain
//! Rust over `serde_json`, tested natively with `cargo test`; the `wasm`
//! module at the bottom is the only part that knows the contract.

use serde_json::{json, Map, Value};

pub const NAME: &str = "deploys";
pub const VERSION: &str = "1.0.0";
pub const HANDLES: &[&str] = &["deploy.started", "deploy.finished"];
pub const NODE_TYPES: &[&str] = &["Deployment", "Environment"];
pub const EDGE_TYPES: &[&str] = &["DEPLOYED_TO", "SHIPS"];
const STATUSES: &[&str] = &["succeeded", "failed", "rolled_back"];

/// The event fields the rules use.
pub struct Event<'a> {
    pub seq: u64,
    pub event_type: &'a str,
    /// RFC 3339 UTC with `Z` (the log's normalized form).
    pub timestamp: &'a str,
    pub actor_id: Option<&'a str>,
    pub target: &'a str,
    pub payload: &'a str,
}

/// The ops the rules emit (a subset of the contract's).
#[derive(Debug, PartialEq)]
pub enum Op {
    PutNode {
        id: String,
        node_type: &'static str,
        properties: String,
    },
    MergeNode {
        id: String,
        node_type: &'static str,
        properties: String,
        create_if_absent: bool,
    },
    PutEdge {
        edge_type: &'static str,
        from: String,
        to: String,
        properties: String,
    },
}

#[derive(Debug, PartialEq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

/// Read access to the graph as it stands before this event.
pub trait Graph {
    /// The properties of node `id`, if it exists.
    fn node_properties(&self, id: &str) -> Option<Map<String, Value>>;
}

fn text<'a>(p: &'a Map<String, Value>, event_type: &str, key: &str) -> Result<&'a str, Refusal> {
    match p.get(key).and_then(Value::as_str) {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(Refusal {
            code: "missing_field",
            message: format!("{event_type}: payload.{key} is required (a non-empty string)"),
        }),
    }
}

fn optional_text(p: &Map<String, Value>, key: &str) -> Value {
    match p.get(key) {
        Some(Value::String(s)) => Value::String(s.clone()),
        _ => Value::Null,
    }
}

fn deploy_id(target: &str, deploy: &str) -> String {
    format!("deploy:{target}:{deploy}")
}

fn env_id(target: &str, environment: &str) -> String {
    format!("env:{target}:{environment}")
}

/// Milliseconds since the Unix epoch of an RFC 3339 UTC timestamp such as
/// `2026-01-24T10:00:00.123456Z`: what the other languages' wall clock reads
/// (the host freezes it at the event's timestamp), floored to the
/// millisecond.
pub fn timestamp_ms(ts: &str) -> Option<i64> {
    let b = ts.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> { ts.get(r)?.parse().ok() };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || *b.last()? != b'Z' {
        return None;
    }
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let frac = ts.get(19..ts.len() - 1)?;
    let millis = match frac.strip_prefix('.') {
        None if frac.is_empty() => 0,
        Some(digits) if !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit()) => {
            let mut three: String = digits.chars().take(3).collect();
            while three.len() < 3 {
                three.push('0');
            }
            three.parse().ok()?
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + hh) * 60 + mm) * 60_000 + ss * 1000 + millis)
}

fn clock_ms(ev: &Event<'_>) -> Result<i64, Refusal> {
    timestamp_ms(ev.timestamp).ok_or_else(|| Refusal {
        code: "invalid_event",
        message: format!("timestamp {:?} is not RFC 3339 UTC", ev.timestamp),
    })
}

/// Projects one event.
pub fn project(ev: &Event<'_>, graph: &dyn Graph) -> Result<Vec<Op>, Refusal> {
    // The host hands over a JSON object (RFC 8785 text).
    let payload: Map<String, Value> = serde_json::from_str(ev.payload).map_err(|e| Refusal {
        code: "invalid_payload",
        message: format!("{}: payload is not a JSON object: {e}", ev.event_type),
    })?;
    match ev.event_type {
        "deploy.started" => started(ev, &payload),
        "deploy.finished" => finished(ev, &payload, graph),
        other => Err(Refusal {
            code: "unhandled",
            message: format!("{other} is not a deploy event"),
        }),
    }
}

fn started(ev: &Event<'_>, payload: &Map<String, Value>) -> Result<Vec<Op>, Refusal> {
    let deploy = text(payload, ev.event_type, "deploy_id")?;
    let service = text(payload, ev.event_type, "service")?;
    let environment = text(payload, ev.event_type, "environment")?;
    let labels = match payload.get("labels") {
        Some(Value::Object(o)) => Value::Object(o.clone()),
        _ => json!({}),
    };
    let node = deploy_id(ev.target, deploy);
    let env = env_id(ev.target, environment);
    let mut ops = vec![
        Op::PutNode {
            id: node.clone(),
            node_type: "Deployment",
            properties: json!({
                "deploy_id": deploy,
                "service": service,
                "environment": environment,
                "version": optional_text(payload, "version"),
                "status": "started",
                "started_at": ev.timestamp,
                "started_ms": clock_ms(ev)?,
                "labels": labels,
                "actor": ev.actor_id,
            })
            .to_string(),
        },
        Op::MergeNode {
            id: env.clone(),
            node_type: "Environment",
            properties: json!({
                "name": environment,
                "target": ev.target,
                "last_deploy": deploy,
                "last_service": service,
            })
            .to_string(),
            create_if_absent: true,
        },
        Op::PutEdge {
            edge_type: "DEPLOYED_TO",
            from: node.clone(),
            to: env,
            properties: json!({"at": ev.timestamp}).to_string(),
        },
    ];
    if let Some(Value::String(attempt)) = payload.get("attempt_id") {
        if !attempt.is_empty() {
            ops.push(Op::PutEdge {
                edge_type: "SHIPS",
                from: node,
                to: attempt.clone(),
                properties: json!({"seq": ev.seq}).to_string(),
            });
        }
    }
    Ok(ops)
}

fn finished(
    ev: &Event<'_>,
    payload: &Map<String, Value>,
    graph: &dyn Graph,
) -> Result<Vec<Op>, Refusal> {
    let deploy = text(payload, ev.event_type, "deploy_id")?;
    let status = text(payload, ev.event_type, "status")?;
    if !STATUSES.contains(&status) {
        return Err(Refusal {
            code: "invalid_field",
            message: format!(
                "{}: payload.status must be one of {} (got '{status}')",
                ev.event_type,
                STATUSES.join(", ")
            ),
        });
    }
    let node = deploy_id(ev.target, deploy);
    let now = clock_ms(ev)?;
    // The past, read through the graph import: when did this deploy start?
    let before = graph.node_properties(&node).unwrap_or_default();
    let duration = match before.get("started_ms").and_then(Value::as_i64) {
        Some(started) => json!(now - started),
        None => Value::Null,
    };
    let mut patch = json!({
        "status": status,
        "finished_at": ev.timestamp,
        "finished_ms": now,
        "duration_ms": duration,
    });
    if let (Some(Value::String(error)), true) = (payload.get("error"), status != "succeeded") {
        patch["error"] = Value::String(error.clone());
    }
    let mut ops = vec![Op::MergeNode {
        id: node,
        node_type: "Deployment",
        properties: patch.to_string(),
        create_if_absent: false,
    }];
    if let (Some(Value::String(environment)), "succeeded") = (before.get("environment"), status) {
        ops.push(Op::MergeNode {
            id: env_id(ev.target, environment),
            node_type: "Environment",
            properties: json!({
                "current_deploy": deploy,
                "current_version": before.get("version").cloned().unwrap_or(Value::Null),
            })
            .to_string(),
            create_if_absent: false,
        });
    }
    Ok(ops)
}

#[cfg(target_arch = "wasm32")]
mod wasm {
    wit_bindgen::generate!({ world: "projector", path: "../../../wit" });

    use leviathan::projector::graph;
    use leviathan::projector::types::{MergeNode, PutEdge, PutNode};

    struct Deploys;

    struct HostGraph;

    impl crate::Graph for HostGraph {
        fn node_properties(&self, id: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
            graph::get_node(id).and_then(|n| serde_json::from_str(&n.properties).ok())
        }
    }

    impl Guest for Deploys {
        fn describe() -> Description {
            let list = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect();
            Description {
                name: crate::NAME.into(),
                version: crate::VERSION.into(),
                handles: list(crate::HANDLES),
                node_types: list(crate::NODE_TYPES),
                edge_types: list(crate::EDGE_TYPES),
            }
        }

        fn project(event: Event) -> Result<Vec<Op>, ProjectionError> {
            let ev = crate::Event {
                seq: event.seq,
                event_type: &event.event_type,
                timestamp: &event.timestamp,
                actor_id: event.actor_id.as_deref(),
                target: &event.target,
                payload: &event.payload,
            };
            let ops = crate::project(&ev, &HostGraph).map_err(|r| ProjectionError {
                code: r.code.into(),
                message: r.message,
            })?;
            Ok(ops
                .into_iter()
                .map(|op| match op {
                    crate::Op::PutNode {
                        id,
                        node_type,
                        properties,
                    } => Op::PutNode(PutNode {
                        id,
                        node_type: node_type.into(),
                        properties,
                    }),
                    crate::Op::MergeNode {
                        id,
                        node_type,
                        properties,
                        create_if_absent,
                    } => Op::MergeNode(MergeNode {
                        id,
                        node_type: node_type.into(),
                        properties,
                        create_if_absent,
                    }),
                    crate::Op::PutEdge {
                        edge_type,
                        from,
                        to,
                        properties,
                    } => Op::PutEdge(PutEdge {
                        edge_type: edge_type.into(),
                        from,
                        to,
                        properties,
                    }),
                })
                .collect())
        }
    }

    export!(Deploys);
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoGraph;
    impl Graph for NoGraph {
        fn node_properties(&self, _: &str) -> Option<Map<String, Value>> {
            None
        }
    }

    fn ev<'a>(event_type: &'a str, payload: &'a str) -> Event<'a> {
        Event {
            seq: 7,
            event_type,
            timestamp: "2026-01-24T10:00:00.123456Z",
            actor_id: Some("worker-1"),
            target: "radix",
            payload,
        }
    }

    #[test]
    fn timestamps_become_epoch_milliseconds() {
        assert_eq!(timestamp_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            timestamp_ms("2026-01-24T10:00:00Z"),
            Some(1_769_248_800_000)
        );
        assert_eq!(
            timestamp_ms("2026-01-24T10:00:00.123456Z"),
            Some(1_769_248_800_123)
        );
        assert_eq!(
            timestamp_ms("2024-02-29T23:59:59.9Z"),
            Some(1_709_251_199_900)
        );
        assert_eq!(timestamp_ms("2026-01-24T10:00:00+01:00"), None);
        assert_eq!(timestamp_ms("2026-01-24T10:00:00.Z"), None);
    }

    #[test]
    fn a_start_with_an_attempt_gives_four_ops() {
        let ops = project(
            &ev(
                "deploy.started",
                r#"{"attempt_id":"a1","deploy_id":"d1","environment":"prod","service":"api"}"#,
            ),
            &NoGraph,
        )
        .unwrap();
        assert_eq!(ops.len(), 4);
        assert!(
            matches!(&ops[3], Op::PutEdge { edge_type: "SHIPS", from, to, .. } if from == "deploy:radix:d1" && to == "a1")
        );
    }

    #[test]
    fn a_bad_status_is_refused() {
        let err = project(
            &ev("deploy.finished", r#"{"deploy_id":"d1","status":"done"}"#),
            &NoGraph,
        )
        .unwrap_err();
        assert_eq!(err.code, "invalid_field");
        assert!(err.message.contains("status"), "{}", err.message);
    }
}
