//! The RFC 8785 (JCS) encoding of an event's ops for the rolling state
//! digest (`JCS(ops_n)` in `staging`, which writes the list around them),
//! written straight into a byte buffer with [`crate::jcs`]. The list must be
//! exactly the bytes of `serde_json_canonicalizer::to_vec(&ops)`: the digest
//! is persisted and documented (docs/HASHING.md). The tests in `crate::jcs`
//! compare the two.

use crate::graph::model::Op;
#[cfg(test)]
use crate::jcs::write_array;
use crate::jcs::{write_object, write_str};

/// Appends `JCS(ops)` to `out`. Infallible: a `serde_json::Value` holds only
/// finite numbers and string keys, so nothing the crate could reject reaches
/// it.
#[cfg(test)]
pub(crate) fn write_ops(ops: &[Op], out: &mut Vec<u8>) {
    write_array(ops, out, write_op);
}

/// Whether `JCS(op)` parses back (serde_json) to the op's own value, so
/// that its canonical bytes can stand for it where it is stored as JSON (the
/// history): true unless a property holds a float or an integer beyond
/// ±2^53, which JCS writes in a double's form (`1.0` → `1`, `2^60 + 1`
/// rounded).
pub(crate) fn reads_back_equal(op: &Op) -> bool {
    match op {
        Op::PutNode { properties, .. }
        | Op::MergeNode { properties, .. }
        | Op::PutEdge { properties, .. } => properties.values().all(crate::jcs::reads_back_equal),
        Op::DeleteNode { .. } | Op::DeleteEdge { .. } => true,
    }
}

/// One op, members in sorted order. The patterns bind every field, so a new
/// field (or variant) fails to compile here rather than silently leaving it
/// out of the digest.
pub(crate) fn write_op(op: &Op, out: &mut Vec<u8>) {
    match op {
        Op::PutNode {
            id,
            node_type,
            properties,
        } => {
            out.extend_from_slice(b"{\"id\":");
            write_str(id, out);
            out.extend_from_slice(b",\"node_type\":");
            write_str(node_type, out);
            out.extend_from_slice(b",\"op\":\"put_node\",\"properties\":");
            write_object(properties, out);
        }
        Op::MergeNode {
            id,
            node_type,
            properties,
            create_if_absent,
        } => {
            out.extend_from_slice(b"{\"create_if_absent\":");
            out.extend_from_slice(if *create_if_absent { b"true" } else { b"false" });
            out.extend_from_slice(b",\"id\":");
            write_str(id, out);
            out.extend_from_slice(b",\"node_type\":");
            write_str(node_type, out);
            out.extend_from_slice(b",\"op\":\"merge_node\",\"properties\":");
            write_object(properties, out);
        }
        Op::DeleteNode { id } => {
            out.extend_from_slice(b"{\"id\":");
            write_str(id, out);
            out.extend_from_slice(b",\"op\":\"delete_node\"");
        }
        Op::PutEdge {
            edge_type,
            from,
            to,
            properties,
        } => {
            out.extend_from_slice(b"{\"edge_type\":");
            write_str(edge_type, out);
            out.extend_from_slice(b",\"from\":");
            write_str(from, out);
            out.extend_from_slice(b",\"op\":\"put_edge\",\"properties\":");
            write_object(properties, out);
            out.extend_from_slice(b",\"to\":");
            write_str(to, out);
        }
        Op::DeleteEdge {
            edge_type,
            from,
            to,
        } => {
            out.extend_from_slice(b"{\"edge_type\":");
            write_str(edge_type, out);
            out.extend_from_slice(b",\"from\":");
            write_str(from, out);
            out.extend_from_slice(b",\"op\":\"delete_edge\",\"to\":");
            write_str(to, out);
        }
    }
    out.push(b'}');
}
