//! A team projector, as a template to copy: it turns the topology indexer's
//! events into `Area` and `Subsystem` nodes with `CONTAINS` and `SUBSYSTEM_DEPENDS_ON`
//! edges. The rules are plain Rust over `serde_json` (unit-tested natively
//! with `cargo test`); the `wasm` module at the bottom is the only part that
//! knows about the component contract (`wit/projector.wit`).
//!
//! Rules of the contract worth keeping when you copy this:
//! - be deterministic: no clocks, no randomness, no HashMap iteration order in
//!   the output; the same event and graph must give the same ops;
//! - read the past only through the `graph` import (a fresh instance runs
//!   every event, so nothing you keep in memory survives);
//! - refuse an event you cannot project with a clear error: the host refuses
//!   the whole bundle and shows your message to the sender;
//! - declare in `describe` every node and edge type you write.

use serde_json::{json, Map, Value};

pub const NAME: &str = "topology";
pub const VERSION: &str = "0.1.0";
pub const HANDLES: &[&str] = &[
    "topo.area.discovered",
    "topo.subsystem.discovered",
    "topo.dependency.discovered",
];
pub const NODE_TYPES: &[&str] = &["Area", "Subsystem"];
pub const EDGE_TYPES: &[&str] = &["CONTAINS", "SUBSYSTEM_DEPENDS_ON"];

/// The event fields a rule needs.
pub struct Event<'a> {
    pub event_type: &'a str,
    pub timestamp: &'a str,
    pub target: &'a str,
    pub payload: &'a str,
}

/// What a rule may emit (a subset of the contract's ops).
#[derive(Debug, PartialEq)]
pub enum Op {
    PutNode {
        id: String,
        node_type: &'static str,
        properties: String,
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

fn field<'a>(p: &'a Map<String, Value>, event_type: &str, key: &str) -> Result<&'a str, Refusal> {
    match p.get(key).and_then(Value::as_str) {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(Refusal {
            code: "missing_field",
            message: format!("{event_type}: payload.{key} is required (a non-empty string)"),
        }),
    }
}

fn area_id(target: &str, area: &str) -> String {
    format!("area:{target}:{area}")
}

fn subsystem_id(target: &str, subsystem: &str) -> String {
    format!("subsystem:{target}:{subsystem}")
}

/// Projects one event.
pub fn project(ev: &Event<'_>, graph: &dyn Graph) -> Result<Vec<Op>, Refusal> {
    let payload: Map<String, Value> = serde_json::from_str(ev.payload).map_err(|e| Refusal {
        code: "invalid_payload",
        message: format!("{}: payload is not a JSON object: {e}", ev.event_type),
    })?;
    // The topology indexer names the target in the payload; fall back to the bundle's.
    let target = payload
        .get("target_id")
        .and_then(Value::as_str)
        .unwrap_or(ev.target);
    let edge_props = json!({"created_at": ev.timestamp}).to_string();
    match ev.event_type {
        "topo.area.discovered" => {
            let area = field(&payload, ev.event_type, "area_id")?;
            let mut props = payload.clone();
            props.insert("target_id".into(), target.into());
            Ok(vec![Op::PutNode {
                id: area_id(target, area),
                node_type: "Area",
                properties: Value::Object(props).to_string(),
            }])
        }
        "topo.subsystem.discovered" => {
            let subsystem = field(&payload, ev.event_type, "subsystem_id")?;
            let id = subsystem_id(target, subsystem);
            let mut props = payload.clone();
            props.insert("target_id".into(), target.into());
            let mut ops = vec![Op::PutNode {
                id: id.clone(),
                node_type: "Subsystem",
                properties: Value::Object(props).to_string(),
            }];
            if let Some(area) = payload.get("area_id").and_then(Value::as_str) {
                ops.push(Op::PutEdge {
                    edge_type: "CONTAINS",
                    from: area_id(target, area),
                    to: id,
                    properties: edge_props,
                });
            }
            Ok(ops)
        }
        "topo.dependency.discovered" => {
            let from = subsystem_id(target, field(&payload, ev.event_type, "from_subsystem_id")?);
            let to = subsystem_id(target, field(&payload, ev.event_type, "to_subsystem_id")?);
            // Reading the graph: is this dependency between two areas?
            let area_of = |id: &str| {
                graph
                    .node_properties(id)
                    .and_then(|p| p.get("area_id").cloned())
            };
            let cross_area = match (area_of(&from), area_of(&to)) {
                (Some(a), Some(b)) => Value::Bool(a != b),
                _ => Value::Null,
            };
            let evidence = payload
                .get("evidence")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let props = json!({
                "created_at": ev.timestamp,
                "commit_sha": payload.get("commit_sha").cloned().unwrap_or(Value::Null),
                "evidence_count": evidence,
                "cross_area": cross_area,
            });
            Ok(vec![Op::PutEdge {
                edge_type: "SUBSYSTEM_DEPENDS_ON",
                from,
                to,
                properties: props.to_string(),
            }])
        }
        other => Err(Refusal {
            code: "unhandled",
            message: format!("{other} is not a topology event"),
        }),
    }
}

#[cfg(target_arch = "wasm32")]
mod wasm {
    wit_bindgen::generate!({ world: "projector", path: "../../wit" });

    use leviathan::projector::graph;
    use leviathan::projector::types::{PutEdge, PutNode};

    struct Topology;

    struct HostGraph;

    impl crate::Graph for HostGraph {
        fn node_properties(&self, id: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
            graph::get_node(id).and_then(|n| serde_json::from_str(&n.properties).ok())
        }
    }

    impl Guest for Topology {
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
                event_type: &event.event_type,
                timestamp: &event.timestamp,
                target: &event.target,
                payload: &event.payload,
            };
            crate::project(&ev, &HostGraph)
                .map(|ops| {
                    ops.into_iter()
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
                        .collect()
                })
                .map_err(|r| ProjectionError {
                    code: r.code.into(),
                    message: r.message,
                })
        }
    }

    export!(Topology);
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
            event_type,
            timestamp: "2026-01-24T10:00:00Z",
            target: "radix",
            payload,
        }
    }

    #[test]
    fn subsystem_in_an_area() {
        let ops = project(
            &ev(
                "topo.subsystem.discovered",
                r#"{"subsystem_id":"api","area_id":"backend","target_id":"radix"}"#,
            ),
            &NoGraph,
        )
        .unwrap();
        assert_eq!(ops.len(), 2);
        assert!(
            matches!(&ops[1], Op::PutEdge { edge_type: "CONTAINS", from, to, .. } if from == "area:radix:backend" && to == "subsystem:radix:api")
        );
    }

    #[test]
    fn missing_identity_is_refused() {
        let err = project(&ev("topo.area.discovered", "{}"), &NoGraph).unwrap_err();
        assert_eq!(err.code, "missing_field");
        assert!(err.message.contains("area_id"));
    }
}
