use crate::common::*;
use serde_json::json;

#[test]
fn recent_is_newest_first_and_bounded() {
    let s = Server::start();
    s.ingest(&bundle("b", events("e", 5)));
    let (st, v) = s.get("/v1/events/recent?limit=3");
    assert_eq!(st, 200);
    let seqs: Vec<u64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [5, 4, 3]);
    let e = &v[0];
    for k in [
        "seq",
        "event_id",
        "event_type",
        "timestamp",
        "actor_id",
        "target",
        "payload",
        "prev_hash",
        "hash",
    ] {
        assert!(e.get(k).is_some(), "missing {k} in {e}");
    }
    let (_, all) = s.get("/v1/events/recent");
    assert_eq!(all.as_array().unwrap().len(), 5);
    for bad in ["0", "-1", "1001", "abc"] {
        let (st, r) = s.get(&format!("/v1/events/recent?limit={bad}"));
        assert_eq!(st, 422, "limit={bad}");
        assert_eq!(r["error"]["code"], "invalid_query");
    }
}

#[test]
fn paging_after_seq_visits_every_event_once() {
    let s = Server::start();
    for i in 0..5 {
        s.ingest(&bundle(&format!("b{i}"), events(&format!("p{i}"), 7)));
    }
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let (st, page) = s.get(&format!("/v1/events?after_seq={after}&limit=4"));
        assert_eq!(st, 200);
        assert_eq!(page["head_seq"], 35);
        let evs = page["events"].as_array().unwrap();
        if evs.is_empty() {
            assert_eq!(page["next_after_seq"], after);
            break;
        }
        seen.extend(evs.iter().map(|e| e["seq"].as_u64().unwrap()));
        after = page["next_after_seq"].as_u64().unwrap();
    }
    assert_eq!(seen, (1..=35).collect::<Vec<_>>());
}

/// Pages of large events stop at a byte budget (8 MiB of records, at least
/// one event) instead of building a thousand 1 MiB payloads in memory; the
/// walk still visits every event once.
#[test]
fn pages_of_large_events_stop_at_a_byte_budget_and_the_walk_misses_nothing() {
    let s = Server::start();
    let big = "x".repeat(900 << 10);
    for b in 0..4 {
        let evs: Vec<_> = (0..5)
            .map(|i| {
                event(
                    &format!("big-{b}-{i}"),
                    "note.large",
                    json!({"blob": big.clone()}),
                )
            })
            .collect();
        let (st, r) = s.ingest(&bundle(&format!("big-{b}"), evs));
        assert_eq!(st, 200, "{r}");
    }
    let (st, page) = s.get("/v1/events?after_seq=0&limit=1000");
    assert_eq!(st, 200);
    let n = page["events"].as_array().unwrap().len();
    assert!((8..=10).contains(&n), "{n} events of ~900 KiB in one page");
    assert_eq!(page["next_after_seq"], n as u64);
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let (_, page) = s.get(&format!("/v1/events?after_seq={after}&limit=1000"));
        let events = page["events"].as_array().unwrap();
        if events.is_empty() {
            break;
        }
        seen.extend(events.iter().map(|e| e["seq"].as_u64().unwrap()));
        after = page["next_after_seq"].as_u64().unwrap();
    }
    assert_eq!(seen, (1..=20).collect::<Vec<_>>());
    let (_, recent) = s.get("/v1/events/recent?limit=1000");
    let recent = recent.as_array().unwrap();
    assert!((8..=10).contains(&recent.len()), "{}", recent.len());
    assert_eq!(recent[0]["seq"], 20, "newest first");
    let (_, summary) = s.get("/v1/graph/summary");
    let listed = summary["recent_events"].as_array().unwrap().len();
    assert!((8..=10).contains(&listed), "{listed}");
}

#[test]
fn one_event_by_id() {
    let s = Server::start();
    s.ingest(&bundle(
        "b",
        vec![event(
            "evt/with spaces",
            "custom.thing",
            json!({"k": [1, {"z": null}]}),
        )],
    ));
    let (st, e) = s.get("/v1/events/evt%2Fwith%20spaces");
    assert_eq!(st, 200, "{e}");
    assert_eq!(e["payload"], json!({"k": [1, {"z": null}]}));
    let (st, r) = s.get("/v1/events/nope");
    assert_eq!(st, 404);
    assert!(r["error"]["message"].as_str().unwrap().contains("nope"));
}

#[test]
fn failures_newest_first_filtered_by_target() {
    let s = Server::start();
    let evs = vec![
        event(
            "f1",
            "attempt.failed",
            json!({"attempt_id": "a1", "task_id": "t1", "target_id": "radix", "error_summary": "tests failed", "failure_type": "execution_failed"}),
        ),
        event("ok1", "attempt.succeeded", json!({"attempt_id": "a2"})),
        event(
            "f2",
            "task.failed",
            json!({"task_id": "t2", "target": "other", "reason": "blocked"}),
        ),
        event(
            "f3",
            "tests.failed",
            json!({"test_run_id": "tr1", "attempt_id": "a3", "target_id": "radix", "error": "3 failures"}),
        ),
    ];
    let (st, r) = s.ingest(&bundle("b", evs));
    assert_eq!(st, 200, "{r}");
    let (st, v) = s.get("/v1/failures");
    assert_eq!(st, 200);
    assert_eq!(v["count"], 3);
    let ids: Vec<_> = v["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["f3", "f2", "f1"]);
    let f1 = &v["failures"][2];
    assert_eq!(f1["attempt_id"], "a1");
    assert_eq!(f1["task_id"], "t1");
    assert_eq!(f1["target"], "radix");
    assert_eq!(f1["error"], "tests failed");
    assert_eq!(f1["failure_type"], "execution_failed");
    assert_eq!(f1["timestamp"], "2026-01-24T10:00:00.123456Z");
    assert_eq!(v["failures"][1]["error"], "blocked");

    let (_, v) = s.get("/v1/failures?target=radix&limit=1");
    assert_eq!(v["count"], 1);
    assert_eq!(v["failures"][0]["event_id"], "f3");
    let (_, v) = s.get("/v1/failures?target=other");
    assert_eq!(v["count"], 1);
    assert_eq!(s.get("/v1/failures?limit=x").0, 422);
}
