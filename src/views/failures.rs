//! Failures: `attempt.failed`, `task.failed` and `tests.failed` events, newest
//! first, merged from the event-type index, or from the index by target when
//! filtered by one (never a log scan, and never an entry that does not match).

use super::ViewError;
use crate::log::record::StoredEvent;
use crate::log::{failure_target, Log, LogError, FAILURE_TYPES};
use crate::seq::Seq;
use crate::wire::{Failure, Failures};
use serde_json::{Map, Value};

/// First non-empty value among `keys`.
fn first_of(p: &Map<String, Value>, keys: &[&str]) -> Option<Value> {
    keys.iter()
        .filter_map(|k| p.get(*k))
        .find(|v| !(v.is_null() || v.as_str() == Some("")))
        .cloned()
}

fn to_failure(e: StoredEvent) -> Failure {
    let p = e.payload_value();
    let target = Some(
        failure_target(&p)
            .cloned()
            .unwrap_or_else(|| Value::String(e.target.clone())),
    );
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
    let before = cursor.map(parse_cursor).transpose()?;
    let view = log.view();
    // Merge the per-type indexes newest first (by seq, i.e. append order).
    type Walk = Box<dyn Iterator<Item = Result<Seq, LogError>>>;
    let walks = FAILURE_TYPES.iter().map(|t| -> Walk {
        match target {
            Some(target) => Box::new(log.seqs_by_target_desc_at(&view, t, target, before)),
            None => Box::new(log.seqs_by_type_desc_at(&view, t, before)),
        }
    });
    let mut seqs = Log::merge_seqs(walks, true).peekable();
    let mut out = Vec::new();
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
        if out.len() == limit || bytes >= max_bytes {
            // More entries remain: continue below the last one listed.
            let next = last_seq.map(|s| s.0.to_string());
            return Ok(page(out, next));
        }
        crate::cancel::check()?;
        seqs.next();
        last_seq = Some(seq);
        let Some(e) = log.get_at(&view, seq)? else {
            continue;
        };
        let f = to_failure(e);
        debug_assert!(
            target.is_none() || f.target.as_ref().and_then(Value::as_str) == target,
            "the index by target listed another target's failure"
        );
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
        let events: Vec<_> = events
            .iter()
            .enumerate()
            .map(|(i, (t, target))| {
                (
                    *t,
                    json!({"attempt_id": format!("a{i}"), "target_id": target}),
                )
            })
            .collect();
        log_of(&events)
    }

    /// A log of `attempt.failed` events with these payloads.
    fn log_payloads(payloads: &[Value]) -> (tempfile::TempDir, Log) {
        let events: Vec<_> = payloads
            .iter()
            .map(|p| ("attempt.failed", p.clone()))
            .collect();
        log_of(&events)
    }

    fn log_of(events: &[(&str, Value)]) -> (tempfile::TempDir, Log) {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = fjall::Database::builder(dir.path()).open().expect("db");
        let log = Log::open(&db).expect("log");
        let evs: Vec<_> = events
            .iter()
            .enumerate()
            .map(|(i, (t, payload))| {
                json!({"event_id": format!("e{i}"), "event_type": t, "timestamp": "2026-01-24T10:00:00Z",
                       "payload": payload})
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

    /// A target's failures come from the index by target: every one, newest
    /// first, paged by the cursor, none of another target's.
    #[test]
    fn a_targets_failures_are_read_from_its_index_and_paged() {
        // Only e0 and e6 are radix's, with four others' failures between.
        let (_dir, log) = log_with(&[
            ("attempt.failed", "radix"),
            ("tests.failed", "other"),
            ("attempt.started", "radix"),
            ("task.failed", "other"),
            ("attempt.failed", "other"),
            ("tests.failed", "other"),
            ("attempt.failed", "radix"),
        ]);
        let whole = failures(&log, Some("radix"), None, 10, usize::MAX).expect("page");
        assert_eq!(ids(&whole), ["e6", "e0"]);
        assert_eq!(whole.next_cursor, None);
        let first = failures(&log, Some("radix"), None, 1, usize::MAX).expect("page");
        assert_eq!(ids(&first), ["e6"]);
        let rest = failures(
            &log,
            Some("radix"),
            first.next_cursor.as_deref(),
            1,
            usize::MAX,
        )
        .expect("page");
        assert_eq!(ids(&rest), ["e0"]);
        assert_eq!(rest.next_cursor, None);
        let other = failures(&log, Some("other"), None, 10, usize::MAX).expect("page");
        assert_eq!(ids(&other), ["e5", "e4", "e3", "e1"]);
        assert!(failures(&log, Some("nobody"), None, 10, usize::MAX)
            .expect("page")
            .failures
            .is_empty());
    }

    /// A failure is listed under `payload.target`, else `payload.target_id`
    /// (null and `""` skipped), else the bundle's target; a target that is
    /// not a string matches none.
    #[test]
    fn a_failure_is_filed_under_the_target_it_reports() {
        let (_dir, log) = log_payloads(&[
            json!({"target": "t1", "target_id": "t2"}),
            json!({"target": "", "target_id": "t2"}),
            json!({"target": null}),
            json!({"target_id": 7}),
            json!({"target": ["t1"], "target_id": "t1"}),
        ]);
        let of = |t: &str| ids(&failures(&log, Some(t), None, 10, usize::MAX).expect("page"));
        assert_eq!(of("t1"), ["e0"]);
        assert_eq!(of("t2"), ["e1"]);
        assert_eq!(of("bundle"), ["e2"]);
        assert!(of("7").is_empty());
        assert_eq!(
            ids(&failures(&log, None, None, 10, usize::MAX).expect("page")).len(),
            5
        );
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
