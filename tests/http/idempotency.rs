use crate::common::*;
use serde_json::json;

#[test]
fn a_retried_bundle_appends_nothing_and_returns_the_original_range() {
    let s = Server::start();
    let b = bundle("retry-me", events("r", 3));
    let (st, first) = s.ingest(&b);
    assert_eq!(st, 200);
    s.ingest(&bundle("other", events("o", 2)));
    let (st, again) = s.ingest(&b);
    assert_eq!(st, 200, "{again}");
    assert_eq!(again["status"], "duplicate");
    assert_eq!(again["ingested"], 0);
    assert_eq!(again["duplicates"], 3);
    assert_eq!(again["first_seq"], first["first_seq"]);
    assert_eq!(again["last_seq"], first["last_seq"]);
    assert_eq!(again["head_seq"], 5);
    assert_eq!(s.all_events().len(), 5);
}

/// A bundle an earlier version stored under looser checks (a leap second,
/// a repeated payload key) is refused on retry after an upgrade, where it
/// used to be a `duplicate`: the 422 says the bundle_id is stored, and
/// where. (Here the stored bundle is a valid one under the same id.)
#[test]
fn a_refused_bundle_whose_id_is_stored_says_so() {
    let s = Server::start();
    let (st, first) = s.ingest(&bundle("stored", events("s", 2)));
    assert_eq!(st, 200, "{first}");
    let mut bad = events("s", 2);
    bad[1]["timestamp"] = json!("2026-01-24T23:59:60Z");
    let (st, r) = s.ingest(&bundle("stored", bad.clone()));
    assert_eq!(st, 422, "{r}");
    assert_eq!(r["error"]["code"], "invalid_bundle", "{r}");
    assert_eq!(r["error"]["details"]["path"], "events[1].timestamp", "{r}");
    let stored = &r["error"]["details"]["stored_bundle"];
    assert_eq!(stored["bundle_id"], "stored", "{r}");
    assert_eq!(stored["first_seq"], first["first_seq"], "{r}");
    assert_eq!(stored["last_seq"], first["last_seq"], "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("stored already (seqs 1–2)"),
        "{r}"
    );
    // An id that is not stored gets the plain refusal.
    let (st, r) = s.ingest(&bundle("new-one", bad));
    assert_eq!(st, 422, "{r}");
    assert!(r["error"]["details"].get("stored_bundle").is_none(), "{r}");
    assert_eq!(s.all_events().len(), 2);
}

#[test]
fn a_reused_bundle_id_with_other_content_is_a_conflict() {
    let s = Server::start();
    s.ingest(&bundle("b", events("a", 2)));
    let (st, r) = s.ingest(&bundle("b", events("c", 2)));
    assert_eq!(st, 409, "{r}");
    assert_eq!(r["error"]["code"], "bundle_conflict");
    assert_eq!(r["error"]["details"]["bundle_id"], "b");
    assert_eq!(s.all_events().len(), 2);
}

#[test]
fn known_event_ids_are_skipped_if_identical_and_refused_if_not() {
    let s = Server::start();
    s.ingest(&bundle("b1", events("e", 2)));
    // e-1 again (identical) plus a new one: the new one is appended, e-1 counted.
    let mut evs = events("e", 2);
    evs.remove(0);
    evs.push(event("new-1", "custom.thing", json!({})));
    let (st, r) = s.ingest(&bundle("b2", evs));
    assert_eq!(st, 200, "{r}");
    assert_eq!(
        (r["ingested"].as_u64(), r["duplicates"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        (r["first_seq"].as_u64(), r["last_seq"].as_u64()),
        (Some(3), Some(3))
    );

    // e-0 with a different payload: 409 naming the id, nothing of the bundle stored.
    let evs = vec![
        event("fresh-1", "custom.thing", json!({})),
        event("e-0", "attempt.created", json!({"attempt_id": "changed"})),
    ];
    let (st, r) = s.ingest(&bundle("b3", evs));
    assert_eq!(st, 409, "{r}");
    assert_eq!(r["error"]["code"], "event_conflict");
    assert_eq!(r["error"]["details"]["event_id"], "e-0");
    assert_eq!(r["error"]["details"]["seq"], 1);
    assert!(r["error"]["message"].as_str().unwrap().contains("e-0"));
    assert_eq!(s.get("/v1/events/fresh-1").0, 404);
    assert_eq!(s.all_events().len(), 3);
}

/// The content digest leaves the target out (stores keep it), so an event id
/// resent with the same content for another target is checked against the
/// stored record's target: a 409, not a silent duplicate.
#[test]
fn a_known_event_id_sent_for_another_target_is_a_conflict() {
    let s = Server::start();
    let e = event("moved", "custom.thing", json!({"k": 1}));
    let (st, r) = s.ingest(&bundle("first", vec![e.clone()]));
    assert_eq!(st, 200, "{r}");
    let elsewhere = json!({"target": "elsewhere", "bundle_id": "second", "events": [
        event("fresh-2", "custom.thing", json!({})), e.clone()]});
    let (st, r) = s.ingest(&elsewhere);
    assert_eq!(st, 409, "{r}");
    assert_eq!(r["error"]["code"], "event_conflict", "{r}");
    assert_eq!(r["error"]["details"]["event_id"], "moved", "{r}");
    assert_eq!(r["error"]["details"]["event_index"], 1, "{r}");
    assert_eq!(r["error"]["details"]["seq"], 1, "{r}");
    let message = r["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("moved") && message.contains("another target"),
        "{r}"
    );
    assert_eq!(s.get("/v1/events/fresh-2").0, 404);
    // The same event for its own target is still an identical repeat.
    let (st, r) = s.ingest(&bundle("third", vec![e]));
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["duplicates"], 1, "{r}");
    assert_eq!(s.all_events().len(), 1);
}

#[test]
fn repeats_inside_one_bundle() {
    let s = Server::start();
    let e = event("same", "custom.thing", json!({"k": 1}));
    let (st, r) = s.ingest(&bundle("rep", vec![e.clone(), e.clone()]));
    assert_eq!(st, 200, "{r}");
    assert_eq!(
        (r["ingested"].as_u64(), r["duplicates"].as_u64()),
        (Some(1), Some(1))
    );
    let mut other = e.clone();
    other["payload"]["k"] = json!(2);
    let (st, r) = s.ingest(&bundle(
        "rep2",
        vec![event("z", "custom.thing", json!({})), e, other],
    ));
    assert_eq!(st, 422, "{r}");
    assert_eq!(r["error"]["details"]["event_index"], 2);
}

/// Many clients retrying the same bundle at once: it is appended exactly once.
#[test]
fn concurrent_retries_append_once() {
    let s = Server::start();
    let b = bundle("racy", events("race", 10));
    let results: Vec<_> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..8).map(|_| sc.spawn(|| s.ingest(&b))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = results
        .iter()
        .filter(|(st, r)| *st == 200 && r["status"] == "ok")
        .count();
    let dup = results
        .iter()
        .filter(|(st, r)| *st == 200 && r["status"] == "duplicate")
        .count();
    assert_eq!((ok, dup), (1, 7), "{results:?}");
    assert_eq!(s.all_events().len(), 10);
}

/// Idempotency covers the whole bundle: the same bundle_id with the same
/// events but another `target`, or other artifact refs (added, removed or
/// changed in any field), is a conflict and stores nothing; only exactly the
/// same bundle is a duplicate.
#[test]
fn a_bundle_id_is_bound_to_its_target_and_artifact_refs() {
    let s = Server::start();
    let art = |size: u64, kind: &str| json!({"sha256": sha256_hex(b"log bytes"), "kind": kind, "uri": "file:///log", "size": size});
    let with = |target: &str, artifacts: Vec<serde_json::Value>| json!({"target": target, "bundle_id": "whole", "events": events("w", 2), "artifacts": artifacts});
    let original = with("radix", vec![art(9, "log")]);
    let (st, first) = s.ingest(&original);
    assert_eq!(st, 200, "{first}");
    for (what, changed) in [
        ("another target", with("other-target", vec![art(9, "log")])),
        ("no artifact refs", with("radix", vec![])),
        ("another size", with("radix", vec![art(10, "log")])),
        ("another kind", with("radix", vec![art(9, "trace")])),
        (
            "one more ref",
            with("radix", vec![art(9, "log"), art(9, "trace")]),
        ),
    ] {
        let (st, r) = s.ingest(&changed);
        assert_eq!(st, 409, "{what}: {r}");
        assert_eq!(r["error"]["code"], "bundle_conflict", "{what}");
        assert_eq!(r["error"]["details"]["bundle_id"], "whole", "{what}");
    }
    let (st, again) = s.ingest(&original);
    assert_eq!(st, 200, "{again}");
    assert_eq!(again["status"], "duplicate");
    assert_eq!(again["first_seq"], first["first_seq"]);
    let stored = s.all_events();
    assert_eq!(stored.len(), 2);
    assert!(stored.iter().all(|e| e["target"] == "radix"), "{stored:?}");
}
