//! wit-bindgen glue: converts the contract's types to and from [`crate::rules`].

wit_bindgen::generate!({
    world: "projector",
    path: "../../wit",
});

use crate::rules;
use leviathan::projector::types::{MergeNode, PutEdge, PutNode};

struct Core;

impl Guest for Core {
    fn describe() -> Description {
        let list = |xs: &[&str]| xs.iter().map(|s| (*s).to_owned()).collect();
        Description {
            name: rules::NAME.to_owned(),
            version: rules::VERSION.to_owned(),
            handles: list(rules::HANDLES),
            node_types: list(rules::NODE_TYPES),
            edge_types: list(rules::EDGE_TYPES),
        }
    }

    fn project(event: Event) -> Result<Vec<Op>, ProjectionError> {
        let ev = rules::Event {
            seq: event.seq,
            event_id: &event.event_id,
            event_type: &event.event_type,
            timestamp: &event.timestamp,
            actor_id: event.actor_id.as_deref(),
            target: &event.target,
            payload: &event.payload,
        };
        match rules::project(&ev) {
            Ok(ops) => Ok(ops.into_iter().map(convert).collect()),
            Err(e) => Err(ProjectionError { code: e.code.to_owned(), message: e.message }),
        }
    }
}

fn convert(op: rules::Op) -> Op {
    match op {
        rules::Op::PutNode { id, node_type, properties } => {
            Op::PutNode(PutNode { id, node_type: node_type.to_owned(), properties })
        }
        rules::Op::MergeNode { id, node_type, properties, create_if_absent } => {
            Op::MergeNode(MergeNode { id, node_type: node_type.to_owned(), properties, create_if_absent })
        }
        rules::Op::PutEdge { edge_type, from, to, properties } => {
            Op::PutEdge(PutEdge { edge_type: edge_type.to_owned(), from, to, properties })
        }
    }
}

export!(Core);
