//! Byte layout of every key and value the graph store writes to fjall. This
//! module owns the encodings (and their decoders) and nothing else: it never
//! touches a keyspace, and no other module builds a graph key by hand.
//!
//! Components: every component except the last is length-prefixed (`u32`
//! big-endian length, then the bytes); the last one is the raw remainder. This
//! keeps keys unambiguous, makes every length-prefixed head a prefix-free
//! scan prefix (`lp("a")` is never a prefix of `lp("ab")`), and sorts the
//! final component bytewise. Seqs are `Seq::to_key` (8 bytes big-endian).

use crate::digest::Sha256;
use crate::graph::error::GraphError;
use crate::seq::Seq;

/// Counter key tag for node types.
pub const COUNT_NODE: u8 = b'n';
/// Counter key tag for edge types.
pub const COUNT_EDGE: u8 = b'e';

/// Meta key of the applied state (`seq ‖ digest`, 40 bytes).
pub const META_STATE: &[u8] = b"state";
/// Meta key of the async lane's applied state (`seq ‖ async digest`, 40
/// bytes): how far the `async` projectors of the set have applied the log
/// (`generations::follow`). Absent: nothing (seq 0, genesis).
pub const META_ASYNC_STATE: &[u8] = b"async_state";
/// Tag of the async lane's per-seq digests in `graph_digests`
/// (`b'a' ‖ seq`, 9 bytes: never a plain 8-byte seq key).
pub const DIGEST_ASYNC: u8 = b'a';
/// Tag of the combined per-seq digests in `graph_digests` (`b'c' ‖ seq`).
pub const DIGEST_COMBINED: u8 = b'c';

/// A tagged per-seq digest key (`tag ‖ seq`).
pub fn tagged_digest(tag: u8, seq: Seq) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(tag);
    k.extend_from_slice(&seq.to_key());
    k
}

/// Meta key of the layout version.
pub const META_FORMAT: &[u8] = b"format";
/// Current layout version (value of [`META_FORMAT`]).
pub const FORMAT_VERSION: &[u8] = b"1";

fn push_lp(out: &mut Vec<u8>, part: &str) {
    // Lengths are bounded by the op validation (far below u32::MAX).
    let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(part.as_bytes());
}

/// Length-prefixed component alone: the scan prefix of everything keyed by
/// `part` first (`lp(part)`).
pub fn lp(part: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + part.len());
    push_lp(&mut out, part);
    out
}

/// Length-prefixed `a` then length-prefixed `b`.
pub fn lp2(a: &str, b: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + a.len() + b.len());
    push_lp(&mut out, a);
    push_lp(&mut out, b);
    out
}

/// `graph_nodes_by_type`: `lp(type) ‖ id`.
pub fn node_by_type(node_type: &str, id: &str) -> Vec<u8> {
    let mut out = lp(node_type);
    out.extend_from_slice(id.as_bytes());
    out
}

/// `graph_nodes_by_created`: `lp(type) ‖ created_seq ‖ id`.
pub fn node_by_created(node_type: &str, created: Seq, id: &str) -> Vec<u8> {
    let mut out = lp(node_type);
    out.extend_from_slice(&created.to_key());
    out.extend_from_slice(id.as_bytes());
    out
}

/// `graph_edges_out`: `lp(from) ‖ lp(type) ‖ to`.
pub fn edge_out(from: &str, edge_type: &str, to: &str) -> Vec<u8> {
    let mut out = lp2(from, edge_type);
    out.extend_from_slice(to.as_bytes());
    out
}

/// `graph_edges_in`: `lp(to) ‖ lp(type) ‖ from`.
pub fn edge_in(to: &str, edge_type: &str, from: &str) -> Vec<u8> {
    edge_out(to, edge_type, from)
}

/// `graph_counts`: `tag ‖ type` (tag is [`COUNT_NODE`] or [`COUNT_EDGE`]).
pub fn count(tag: u8, type_name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + type_name.len());
    out.push(tag);
    out.extend_from_slice(type_name.as_bytes());
    out
}

fn take_lp(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let (len, rest) = bytes.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    if rest.len() < len {
        return None;
    }
    let (part, rest) = rest.split_at(len);
    Some((std::str::from_utf8(part).ok()?, rest))
}

/// Splits a three-part key `lp(a) ‖ lp(b) ‖ c` (edge out or edge in).
pub fn split3(key: &[u8]) -> Result<(&str, &str, &str), GraphError> {
    let parse = || {
        let (a, rest) = take_lp(key)?;
        let (b, rest) = take_lp(rest)?;
        Some((a, b, std::str::from_utf8(rest).ok()?))
    };
    parse().ok_or_else(|| GraphError::corrupt("edge key", key))
}

/// The id at the end of a `graph_nodes_by_type` / `graph_nodes_by_created`
/// key, given the length of the part before it.
pub fn trailing_id(key: &[u8], head_len: usize) -> Result<&str, GraphError> {
    key.get(head_len..)
        .and_then(|id| std::str::from_utf8(id).ok())
        .ok_or_else(|| GraphError::corrupt("node index key", key))
}

/// Counter value: `u64` big-endian.
pub fn decode_count(value: &[u8]) -> Result<u64, GraphError> {
    <[u8; 8]>::try_from(value)
        .map(u64::from_be_bytes)
        .map_err(|_| GraphError::corrupt("counter value", value))
}

/// Meta state value: `seq ‖ digest`.
pub fn encode_state(seq: Seq, digest: &Sha256) -> Vec<u8> {
    let mut out = Vec::with_capacity(40);
    out.extend_from_slice(&seq.to_key());
    out.extend_from_slice(digest.as_bytes());
    out
}

pub fn decode_state(value: &[u8]) -> Result<(Seq, Sha256), GraphError> {
    let parse = || {
        let (seq, digest) = value.split_at_checked(8)?;
        Some((Seq::from_key(seq)?, Sha256::from_slice(digest)?))
    };
    parse().ok_or_else(|| GraphError::corrupt("meta state", value))
}

pub fn decode_digest(value: &[u8]) -> Result<Sha256, GraphError> {
    Sha256::from_slice(value).ok_or_else(|| GraphError::corrupt("state digest", value))
}

/// Smallest key greater than every key starting with `prefix`, or `None` when
/// there is none (prefix empty or all `0xff`).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_keys_round_trip_and_prefixes_are_prefix_free() {
        let k = edge_out("a:b", "DEPENDS_ON", "c\u{0}d");
        assert_eq!(split3(&k).unwrap(), ("a:b", "DEPENDS_ON", "c\u{0}d"));
        assert!(k.starts_with(&lp("a:b")));
        assert!(!k.starts_with(&lp("a")));
        assert!(!edge_out("ab", "T", "x").starts_with(&lp("a")));
        assert!(split3(b"\0\0\0\x09ab").is_err());
    }

    #[test]
    fn prefix_end_bounds_the_prefix() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        let p = lp("T");
        let end = prefix_end(&p).unwrap();
        assert!(node_by_type("T", "\u{10ffff}").as_slice() < end.as_slice());
    }

    #[test]
    fn state_round_trip() {
        let d = Sha256::of(b"x");
        assert_eq!(
            decode_state(&encode_state(Seq(7), &d)).unwrap(),
            (Seq(7), d)
        );
        assert!(decode_state(b"short").is_err());
    }
}
