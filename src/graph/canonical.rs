//! The RFC 8785 (JCS) encoding of an event's op list for the rolling state
//! digest (`JCS(ops_n)` in `staging`), written straight into a byte buffer
//! with [`crate::jcs`]. It must produce exactly the bytes of
//! `serde_json_canonicalizer::to_vec(&ops)`: the digest is persisted and
//! documented (docs/HASHING.md). The tests in `crate::jcs` compare the two.

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

/// Appends `JCS(ops)` of the concatenation of `lists` (one array) to `out`:
/// the same bytes as [`write_ops`] of the concatenated list, without building it.
pub(crate) fn write_op_lists<'a>(lists: impl Iterator<Item = &'a [Op]>, out: &mut Vec<u8>) {
    out.push(b'[');
    let mut first = true;
    for op in lists.flatten() {
        if !first {
            out.push(b',');
        }
        first = false;
        write_op(op, out);
    }
    out.push(b']');
}

/// One op, members in sorted order. The patterns bind every field, so a new
/// field (or variant) fails to compile here rather than silently leaving it
/// out of the digest.
fn write_op(op: &Op, out: &mut Vec<u8>) {
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
