//! Recorded projection errors: the failures of `on_error = "record"`
//! projectors, stored with the graph they belong to (keyspace
//! `graph_errors`), written in the writer's batch by `Staging` and folded into
//! the rolling state digest, so a rebuild reproduces them. It owns their
//! record, key layout and paged reads; it never decides whether an error is
//! recorded (the projection step does).
//!
//! Keys (one keyspace, two families, `seq` = 8 bytes big-endian):
//! - `b's' ‖ seq ‖ projector` → the record (compact JSON): one per failing
//!   projector per event, in log order;
//! - `b'p' ‖ lp(projector) ‖ seq` → empty: the same, by projector.

use crate::graph::error::GraphError;
use crate::graph::keys;
use crate::graph::query::Page;
use crate::graph::store::GraphStore;
use crate::seq::Seq;
use fjall::Readable;
use serde::{Deserialize, Serialize};
use std::ops::Bound;

/// One recorded projection error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorRecord {
    pub seq: Seq,
    pub event_id: String,
    /// The projector's name (as `describe` reports it).
    pub projector: String,
    /// The failure's cause (`rejected`, `not_owner`, `out_of_fuel`, ...).
    pub code: String,
    pub message: String,
}

const TAG_SEQ: u8 = b's';
const TAG_PROJECTOR: u8 = b'p';
/// Cursor tags (first byte of a decoded cursor).
const CURSOR_ALL: u8 = b'E';
const CURSOR_PROJECTOR: u8 = b'F';
/// The same two, newest first (a cursor of one order is refused by the other).
const CURSOR_ALL_NEWEST: u8 = b'e';
const CURSOR_PROJECTOR_NEWEST: u8 = b'f';

pub(crate) fn key_by_seq(seq: Seq, projector: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + projector.len());
    k.push(TAG_SEQ);
    k.extend_from_slice(&seq.to_key());
    k.extend_from_slice(projector.as_bytes());
    k
}

fn prefix_by_projector(projector: &str) -> Vec<u8> {
    let mut k = vec![TAG_PROJECTOR];
    k.extend_from_slice(&keys::lp(projector));
    k
}

pub(crate) fn key_by_projector(projector: &str, seq: Seq) -> Vec<u8> {
    let mut k = prefix_by_projector(projector);
    k.extend_from_slice(&seq.to_key());
    k
}

pub(crate) fn encode(r: &ErrorRecord) -> Result<Vec<u8>, GraphError> {
    Ok(serde_json::to_vec(r)?)
}

fn decode(bytes: &[u8]) -> Result<ErrorRecord, GraphError> {
    serde_json::from_slice(bytes).map_err(|_| GraphError::corrupt("projection error record", bytes))
}

/// `JCS(errors)`, the part of an event's digest input that records its
/// projection errors (docs/HASHING.md): an array of objects with the members
/// `code`, `event_id`, `message`, `projector`, `seq`, in set order.
pub(crate) fn write_canonical(errors: &[ErrorRecord], out: &mut Vec<u8>) {
    crate::jcs::write_array(errors, out, |e, out| {
        out.extend_from_slice(b"{\"code\":");
        crate::jcs::write_str(&e.code, out);
        out.extend_from_slice(b",\"event_id\":");
        crate::jcs::write_str(&e.event_id, out);
        out.extend_from_slice(b",\"message\":");
        crate::jcs::write_str(&e.message, out);
        out.extend_from_slice(b",\"projector\":");
        crate::jcs::write_str(&e.projector, out);
        out.extend_from_slice(b",\"seq\":");
        out.extend_from_slice(e.seq.0.to_string().as_bytes());
        out.push(b'}');
    });
}

impl GraphStore {
    /// Recorded projection errors in log order (then projector name), or
    /// newest first (`newest_first`), all or one projector's, after `cursor`,
    /// at most `limit` (clamped to `MAX_PAGE_LIMIT`), through `snap`.
    pub fn projection_errors_at(
        &self,
        snap: &impl Readable,
        projector: Option<&str>,
        cursor: Option<&str>,
        limit: usize,
        newest_first: bool,
    ) -> Result<Page<ErrorRecord>, GraphError> {
        let limit = limit.clamp(1, crate::graph::MAX_PAGE_LIMIT);
        let (tag, prefix) = match (projector, newest_first) {
            (Some(p), false) => (CURSOR_PROJECTOR, prefix_by_projector(p)),
            (Some(p), true) => (CURSOR_PROJECTOR_NEWEST, prefix_by_projector(p)),
            (None, false) => (CURSOR_ALL, vec![TAG_SEQ]),
            (None, true) => (CURSOR_ALL_NEWEST, vec![TAG_SEQ]),
        };
        let after = match cursor {
            None => None,
            Some(c) => {
                let raw = hex::decode(c).map_err(|_| GraphError::BadCursor)?;
                match raw.split_first() {
                    Some((t, key)) if *t == tag && key.starts_with(&prefix) => Some(key.to_vec()),
                    _ => return Err(GraphError::BadCursor),
                }
            }
        };
        let (lower, upper) = if newest_first {
            // Going down from the cursor (exclusive) or the family's end.
            let upper = match after {
                Some(k) => Bound::Excluded(k),
                None => keys::prefix_end(&prefix).map_or(Bound::Unbounded, Bound::Excluded),
            };
            (Bound::Included(prefix.clone()), upper)
        } else {
            let lower = after.map_or(Bound::Included(prefix.clone()), Bound::Excluded);
            let upper = keys::prefix_end(&prefix).map_or(Bound::Unbounded, Bound::Excluded);
            (lower, upper)
        };
        let range = snap.range(&self.errors, (lower, upper));
        let ordered: Box<dyn Iterator<Item = _>> = if newest_first {
            Box::new(range.rev())
        } else {
            Box::new(range)
        };
        let mut items = Vec::new();
        let mut last_key = Vec::new();
        let mut more = false;
        for guard in ordered {
            let (key, value) = guard.into_inner()?;
            if items.len() == limit {
                more = true;
                break;
            }
            let record = match projector {
                None => decode(&value)?,
                Some(p) => {
                    let seq = key
                        .get(prefix.len()..)
                        .and_then(Seq::from_key)
                        .ok_or_else(|| GraphError::corrupt("projection error index key", &key))?;
                    let v = snap.get(&self.errors, key_by_seq(seq, p))?.ok_or_else(|| {
                        GraphError::corrupt("projection error index entry (no record)", &key)
                    })?;
                    decode(&v)?
                }
            };
            items.push(record);
            last_key = key.to_vec();
        }
        let next_cursor = more.then(|| {
            let mut raw = vec![tag];
            raw.extend_from_slice(&last_key);
            hex::encode(raw)
        });
        Ok(Page { items, next_cursor })
    }

    /// [`GraphStore::projection_errors_at`] through a fresh view.
    pub fn projection_errors(
        &self,
        projector: Option<&str>,
        cursor: Option<&str>,
        limit: usize,
        newest_first: bool,
    ) -> Result<Page<ErrorRecord>, GraphError> {
        self.projection_errors_at(&self.db.snapshot(), projector, cursor, limit, newest_first)
    }
}

impl GraphStore {
    /// How many projection errors this graph has recorded (one per failing
    /// projector per event). Reads the whole by-seq family: for status pages
    /// and a build's resume, not for a hot path.
    pub fn error_count(&self) -> Result<u64, GraphError> {
        let mut n = 0u64;
        for kv in self.errors.prefix([TAG_SEQ]) {
            kv.key()?;
            n += 1;
        }
        Ok(n)
    }
}
