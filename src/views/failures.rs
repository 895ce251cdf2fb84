//! Failures: `attempt.failed`, `task.failed` and `tests.failed` events, newest
//! first, merged from the event-type index (never a log scan). Filtering by
//! target examines at most a budget of index entries per call; when it stops
//! there, the answer carries a cursor to continue from.

use super::ViewError;
use crate::log::record::StoredEvent;
use crate::log::Log;
use crate::seq::Seq;
use crate::wire::{Failure, Failures};
use serde_json::{Map, Value};

/// The event types that count as failures.
pub const FAILURE_TYPES: [&str; 3] = ["attempt.failed", "task.failed", "tests.failed"];
/// Most index entries one call examines.
pub const SCAN_BUDGET: usize = 100_000;

/// First non-empty value among `keys`.
fn first_of(p: &Map<String, Value>, keys: &[&str]) -> Option<Value> {
    keys.iter()
        .filter_map(|k| p.get(*k))
        .find(|v| !(v.is_null() || v.as_str() == Some("")))
        .cloned()
}

fn to_failure(e: StoredEvent) -> Failure {
    let p = e.payload_value();
    let target = first_of(&p, &["target", "target_id"]).or(Some(Value::String(e.target.clone())));
    Failure {
        attempt_id: p.get("attempt_id").cloned(),
        task_id: p.get("task_id").cloned(),
        target,
        // The original read `error`/`reason`; emitters write `error_summary`.
        error: first_of(&p, &["error", "reason", "error_summary"]),
        failure_type: p.get("failure_type").cloned(),
        timestamp: e.timestamp,
        event_type: e.event_type,
        event_id: e.event_id,
        seq: e.seq,
    }
}

/// A cursor is the seq to continue below, in decimal.
fn parse_cursor(cursor: &str) -> Result<Seq, ViewError> {
    match cursor.parse::<u64>() {
        Ok(s) if s > 0 => Ok(Seq(s)),
        _ => Err(ViewError::BadCursor),
    }
}

/// Failures older than `cursor` (all when `None`), newest first, at most
/// `limit`, stopping once they hold `max_bytes` of JSON (at least one
/// failure; their fields come from payloads of up to 1 MiB): the page then
/// carries a `next_cursor`.
pub fn failures(
    log: &Log,
    target: Option<&str>,
    cursor: Option<&str>,
    limit: usize,
    max_bytes: usize,
) -> Result<Failures, ViewError> {
    failures_bounded(log, target, cursor, limit, SCAN_BUDGET, max_bytes)
}

pub(crate) fn failures_bounded(
    log: &Log,
    target: Option<&str>,
    cursor: Option<&str>,
    limit: usize,
    budget: usize,
    max_bytes: usize,
) -> Result<Failures, ViewError> {
    let before = cursor.map(parse_cursor).transpose()?;
    let view = log.view();
    // Merge the per-type indexes newest first (by seq, i.e. append order).
    let mut seqs = Log::merge_seqs(
        FAILURE_TYPES
            .iter()
            .map(|t| log.seqs_by_type_desc_at(&view, t, before)),
        true,
    )
    .peekable();
    let mut out = Vec::new();
    let mut scanned = 0;
    let mut bytes = 0usize;
    let mut last_seq: Option<Seq> = None;
    loop {
        let seq = match seqs.peek() {
            Some(Ok(seq)) => *seq,
            Some(Err(_)) => {
                let e = seqs.next().and_then(Result::err).expect("the error peeked");
                return Err(e.into());
            }
            // Every index is exhausted: nothing older remains.
            None => return Ok(page(out, None)),
        };
        if out.len() == limit || bytes >= max_bytes || scanned == budget.max(1) {
            // More entries remain: continue below the last one examined.
            let next = last_seq.map(|s| s.0.to_string());
            return Ok(page(out, next));
        }
        crate::cancel::check()?;
        seqs.next();
        scanned += 1;
        last_seq = Some(seq);
        let Some(e) = log.get_at(&view, seq)? else {
            continue;
        };
        let f = to_failure(e);
        if let Some(t) = target {
            if f.target.as_ref().and_then(Value::as_str) != Some(t) {
                continue;
            }
        }
        bytes = bytes.saturating_add(crate::graph::query::json_len(&f));
        out.push(f);
    }
}

fn page(failures: Vec<Failure>, next_cursor: Option<String>) -> Failures {
    Failures {
        count: failures.len(),
        failures,
        next_cursor,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::Limits;
    use serde_json::json;

    /// A log holding `events` (type, target_id) in order, written the way the
    /// writer stages them.
    fn log_with(events: &[(&str, &str)]) -> (tempfile::TempDir, Log) {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = fjall::Database::builder(dir.path()).open().expect("db");
        let log = Log::open(&db).expect("log");
        let evs: Vec<_> = events
            .iter()
            .enumerate()
            .map(|(i, (t, target))| {
                json!({"event_id": format!("e{i}"), "event_type": t, "timestamp": "2026-01-24T10:00:00Z",
                       "payload": {"attempt_id": format!("a{i}"), "target_id": target}})
            })
            .collect();
        let body =
            serde_json::to_vec(&json!({"target": "bundle", "bundle_id": "b", "events": evs}))
                .expect("json");
        let bundle = crate::bundle::parse(&body, &Limits::default()).expect("valid bundle");
        let mut batch = db.batch();
        let mut prev = None;
        for (i, d) in bundle.events.iter().enumerate() {
            let seq = Seq(i as u64 + 1);
            let canonical = d.encode(seq, prev.as_ref());
            let hash = crate::digest::Sha256::of_parts(&[&canonical]);
            log.stage_event(&mut batch, seq, &hash, &canonical, d);
            prev = Some(hash);
        }
        batch.commit().expect("commit");
        (dir, log)
    }

    fn ids(f: &Failures) -> Vec<String> {
        f.failures.iter().map(|f| f.event_id.clone()).collect()
    }

    #[test]
    fn a_filtered_scan_that_hits_its_budget_says_so_and_continues() {
        // Six failures; only e0 and e5 are radix's, with four others between.
        let (_dir, log) = log_with(&[
            ("attempt.failed", "radix"),
            ("tests.failed", "other"),
            ("attempt.started", "radix"),
            ("task.failed", "other"),
            ("attempt.failed", "other"),
            ("tests.failed", "other"),
            ("attempt.failed", "radix"),
        ]);
        // e6 is radix's, then the budget (2 entries) runs out: a cursor, not an end.
        let first = failures_bounded(&log, Some("radix"), None, 10, 2, usize::MAX).expect("page");
        assert_eq!(ids(&first), ["e6"]);
        let mut cursor = first
            .next_cursor
            .clone()
            .expect("a cursor: the scan stopped early");
        let mut all = ids(&first);
        for _ in 0..10 {
            let next = failures_bounded(&log, Some("radix"), Some(&cursor), 10, 2, usize::MAX)
                .expect("page");
            all.extend(ids(&next));
            match next.next_cursor {
                Some(c) => cursor = c,
                None => break,
            }
        }
        assert_eq!(all, ["e6", "e0"], "every failure of radix, none lost");
        // Without a budget problem the same query answers in one page, no cursor.
        let whole = failures(&log, Some("radix"), None, 10, usize::MAX).expect("page");
        assert_eq!(ids(&whole), ["e6", "e0"]);
        assert_eq!(whole.next_cursor, None);
    }

    /// A page also stops once its failures hold its bytes (at least one),
    /// and the cursor walks the rest, each failure once.
    #[test]
    fn a_page_stops_at_its_byte_budget_and_the_cursor_continues() {
        let (_dir, log) = log_with(&[
            ("attempt.failed", "t"),
            ("tests.failed", "t"),
            ("task.failed", "t"),
        ]);
        let whole = failures(&log, None, None, 10, usize::MAX).expect("page");
        assert_eq!(ids(&whole), ["e2", "e1", "e0"]);
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10 {
            let p = failures(&log, None, cursor.as_deref(), 10, 1).expect("page");
            assert_eq!(p.count, 1, "one failure a page at a one-byte budget");
            all.extend(ids(&p));
            match p.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(all, ["e2", "e1", "e0"]);
    }

    #[test]
    fn a_full_page_carries_a_cursor_only_when_more_remain() {
        let (_dir, log) = log_with(&[("attempt.failed", "t"), ("attempt.failed", "t")]);
        let p = failures(&log, None, None, 1, usize::MAX).expect("page");
        assert_eq!(ids(&p), ["e1"]);
        let rest = failures(&log, None, p.next_cursor.as_deref(), 1, usize::MAX).expect("page");
        assert_eq!(ids(&rest), ["e0"]);
        assert_eq!(rest.next_cursor, None);
        assert!(matches!(
            failures(&log, None, Some("x"), 1, usize::MAX),
            Err(ViewError::BadCursor)
        ));
    }
}
