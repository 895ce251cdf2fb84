//! Answers whose size grows with the data are bounded in bytes: payloads may
//! be 1 MiB each and the core projector copies payload keys into node
//! properties, so a page of a thousand items, a node's history (each change
//! repeats the whole node) or an attempt's events could be hundreds of MB
//! built whole in memory for one read request. Each route stops at about
//! 8 MiB (at least one item) and says how to get the rest; `GET
//! /v1/log/verify` walks the log in chunks bounded in bytes too.

use crate::common::{bundle, event, Server};
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// About 900 KiB: a payload value near the 1 MiB limit.
const BIG: usize = 900 * 1024;
/// An answer must stay under this (the budget is 8 MiB, plus at most one item).
const MAX_ANSWER: usize = 10 << 20;

fn blob(i: usize) -> String {
    format!("{i:04}-{}", "x".repeat(BIG))
}

/// Ingests `events` in bundles of 8 (about 7 MiB a body).
fn ingest_all(s: &Server, tag: &str, events: Vec<Value>) {
    for (i, chunk) in events.chunks(8).enumerate() {
        let (st, body) = s.ingest(&bundle(&format!("{tag}-{i}"), chunk.to_vec()));
        assert_eq!(st, 200, "{body}");
    }
}

/// GET `path`: 200, the body's size in bytes, and the body.
fn get_sized(s: &Server, path: &str) -> (usize, Value) {
    let resp = s
        .req(reqwest::Method::GET, path)
        .send()
        .expect("request reaches the server");
    let status = resp.status().as_u16();
    let bytes = resp.bytes().expect("the body");
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&bytes));
    (bytes.len(), serde_json::from_slice(&bytes).expect("JSON"))
}

/// Follows `next_cursor` from `first_path` (`&cursor=` appended), checking
/// every page is bounded; the items of every page, in order, and how many
/// pages there were.
fn walk(s: &Server, first_path: &str, items: &str) -> (Vec<Value>, usize) {
    let mut out = Vec::new();
    let mut path = first_path.to_owned();
    for pages in 1..=100 {
        let (size, page) = get_sized(s, &path);
        assert!(size <= MAX_ANSWER, "{path}: {size} bytes");
        let got = page[items].as_array().expect("items").clone();
        assert!(
            !got.is_empty(),
            "{path}: every page holds at least one item"
        );
        out.extend(got);
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("{first_path}&cursor={c}"),
            None => return (out, pages),
        }
    }
    panic!("{first_path}: the cursor never ended");
}

fn strs(items: &[Value], key: &str) -> Vec<String> {
    items
        .iter()
        .map(|v| v[key].as_str().expect(key).to_owned())
        .collect()
}

/// Each change of a node's history carries the whole node: 30 small changes
/// of a node with a 900 KiB property were one 28 MB answer.
#[test]
fn a_node_history_stops_at_the_byte_budget_and_the_cursor_continues() {
    let s = Server::start();
    let mut evs = vec![event(
        "h-created",
        "attempt.created",
        json!({"attempt_id": "h1", "log": blob(0)}),
    )];
    for i in 0..30 {
        evs.push(event(
            &format!("h-job-{i}"),
            "job.started",
            json!({"attempt_id": "h1", "n": i}),
        ));
    }
    ingest_all(&s, "h", evs);
    let (changes, pages) = walk(&s, "/v1/graph/nodes/h1/history?limit=10000", "changes");
    assert!(pages > 1, "31 changes of ~900 KiB are more than one page");
    let keys: Vec<(u64, u64)> = changes
        .iter()
        .map(|c| (c["seq"].as_u64().unwrap(), c["ord"].as_u64().unwrap()))
        .collect();
    let unique: BTreeSet<_> = keys.iter().copied().collect();
    assert_eq!(keys.len(), 31, "every change");
    assert_eq!(unique.len(), 31, "each once");
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "oldest first");
    assert!(changes
        .iter()
        .all(|c| c["node"]["properties"]["log"].as_str().map(str::len) == Some(BIG + 5)));
}

/// `GET /v1/graph/nodes`, by type and all: a page of 20 nodes of 900 KiB
/// was 18 MB.
#[test]
fn node_pages_stop_at_the_byte_budget_and_the_cursor_continues() {
    let s = Server::start();
    let evs = (0..20)
        .map(|i| {
            event(
                &format!("n-{i}"),
                "task.created",
                json!({"task_id": format!("task-{i:02}"), "spec": blob(i)}),
            )
        })
        .collect();
    ingest_all(&s, "n", evs);
    let expect: Vec<String> = (0..20).map(|i| format!("task-{i:02}")).collect();
    for path in [
        "/v1/graph/nodes?type=Task&limit=10000",
        "/v1/graph/nodes?limit=10000",
    ] {
        let (nodes, pages) = walk(&s, path, "nodes");
        assert!(pages > 1, "{path}");
        assert_eq!(
            strs(&nodes, "node_id"),
            expect,
            "{path}: each node once, by id"
        );
    }
}

/// `GET /v1/failures`: the failures' `error` comes from the payload.
#[test]
fn failure_pages_stop_at_the_byte_budget_and_the_cursor_continues() {
    let s = Server::start();
    let evs = (0..20)
        .map(|i| {
            let (t, p) = if i % 2 == 0 {
                (
                    "task.failed",
                    json!({"task_id": format!("t{i}"), "error": blob(i)}),
                )
            } else {
                ("tests.failed", json!({"error": blob(i)}))
            };
            event(&format!("f-{i:02}"), t, p)
        })
        .collect();
    ingest_all(&s, "f", evs);
    let expect: Vec<String> = (0..20).rev().map(|i| format!("f-{i:02}")).collect();
    for path in [
        "/v1/failures?limit=1000",
        "/v1/failures?target=radix&limit=1000",
    ] {
        let (failures, pages) = walk(&s, path, "failures");
        assert!(pages > 1, "{path}");
        assert_eq!(
            strs(&failures, "event_id"),
            expect,
            "{path}: newest first, each once"
        );
    }
}

/// `GET /v1/attempts`: an attempt's `status` comes from its payload.
#[test]
fn attempt_pages_stop_at_the_byte_budget_and_the_cursor_continues() {
    let s = Server::start();
    let evs = (0..20)
        .map(|i| {
            event(
                &format!("a-{i}"),
                "attempt.created",
                json!({"attempt_id": format!("al-{i:02}"), "status": blob(i)}),
            )
        })
        .collect();
    ingest_all(&s, "a", evs);
    let expect: Vec<String> = (0..20).rev().map(|i| format!("al-{i:02}")).collect();
    for path in [
        "/v1/attempts?limit=1000",
        "/v1/attempts?target=radix&limit=1000",
    ] {
        let (attempts, pages) = walk(&s, path, "attempts");
        assert!(pages > 1, "{path}");
        assert_eq!(
            strs(&attempts, "attempt_id"),
            expect,
            "{path}: newest first, each once"
        );
    }
}

/// `GET /v1/attempts/{id}` has no cursor: it keeps the newest events (the
/// attempt's end), says it cut the older ones and where to continue, and
/// that it did not read every PRODUCED node.
#[test]
fn an_attempt_detail_keeps_its_newest_events_within_the_byte_budget() {
    let s = Server::start();
    let mut evs = vec![event(
        "d-created",
        "attempt.created",
        json!({"attempt_id": "d1"}),
    )];
    for i in 0..20 {
        evs.push(event(
            &format!("d-note-{i:02}"),
            "custom.note",
            json!({"attempt_id": "d1", "text": blob(i)}),
        ));
    }
    for i in 0..4 {
        evs.push(event(
            &format!("d-art-{i}"),
            "artifact.created",
            json!({"artifact_id": format!("art-{i}"), "attempt_id": "d1", "notes": blob(i)}),
        ));
    }
    evs.push(event(
        "d-succeeded",
        "attempt.succeeded",
        json!({"attempt_id": "d1"}),
    ));
    // A small attempt beside it.
    evs.push(event(
        "s-created",
        "attempt.created",
        json!({"attempt_id": "d2"}),
    ));
    evs.push(event(
        "s-started",
        "attempt.started",
        json!({"attempt_id": "d2"}),
    ));
    ingest_all(&s, "d", evs);

    let (size, first) = get_sized(&s, "/v1/attempts/d1");
    assert!(size <= MAX_ANSWER, "{size} bytes");
    assert_eq!(
        first["events_truncated"], true,
        "{}",
        first["next_events_before_seq"]
    );
    assert_eq!(first["produced_truncated"], true);
    assert_eq!(first["attempt_node"]["properties"]["status"], "succeeded");
    let events = first["events"].as_array().unwrap();
    assert_eq!(
        events.last().unwrap()["event_type"],
        "attempt.succeeded",
        "the newest events are kept"
    );
    assert_eq!(first["next_events_before_seq"], events[0]["seq"]);
    // The older events, page by page, each once.
    let mut ids: Vec<String> = strs(events, "event_id");
    let mut before = first["next_events_before_seq"].as_u64().unwrap();
    for _ in 0..20 {
        let (size, page) = get_sized(&s, &format!("/v1/attempts/d1?events_before_seq={before}"));
        assert!(size <= MAX_ANSWER, "{size} bytes");
        let older = page["events"].as_array().unwrap();
        assert!(older.iter().all(|e| e["seq"].as_u64().unwrap() < before));
        ids.splice(0..0, strs(older, "event_id"));
        match page["next_events_before_seq"].as_u64() {
            Some(b) => before = b,
            None => {
                assert!(page.get("events_truncated").is_none(), "{page}");
                break;
            }
        }
    }
    let mut expect = vec!["d-created".to_owned()];
    expect.extend((0..20).map(|i| format!("d-note-{i:02}")));
    expect.extend((0..4).map(|i| format!("d-art-{i}")));
    expect.push("d-succeeded".into());
    assert_eq!(ids, expect, "every event once, in log order");
    // The produced nodes are reachable through the edges.
    let (_, edges) = get_sized(&s, "/v1/graph/nodes/d1/edges?direction=out&type=PRODUCED");
    assert_eq!(edges["count"], 4);
    // As of a seq: the events up to it, still bounded and newest first.
    let before_end = events.last().unwrap()["seq"].as_u64().unwrap() - 1;
    let (size, past) = get_sized(&s, &format!("/v1/attempts/d1?as_of_seq={before_end}"));
    assert!(size <= MAX_ANSWER, "{size} bytes");
    assert_eq!(past["events_truncated"], true);
    let past_events = past["events"].as_array().unwrap();
    assert_eq!(past_events.last().unwrap()["event_id"], "d-art-3");
    // A small attempt answers exactly as before: no markers.
    let (_, small) = get_sized(&s, "/v1/attempts/d2");
    let keys: Vec<&str> = small
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["artifacts", "attempt_node", "events", "pull_requests"],
        "{small}"
    );
    assert_eq!(small["events"].as_array().unwrap().len(), 2);
    // A malformed events_before_seq is refused.
    let (st, _) = s.get("/v1/attempts/d1?events_before_seq=x");
    assert_eq!(st, 422);
}

/// `GET /v1/topology/areas` had no limit at all.
#[test]
fn a_topology_list_stops_at_the_byte_budget_and_says_so() {
    let s = Server::start();
    let mut evs = vec![
        event(
            "t-old-area",
            "topo.area.discovered",
            json!({"target_id": "radix", "commit_sha": "c1", "name": "old"}),
        ),
        event(
            "t-indexed",
            "topo.indexed",
            json!({"target_id": "radix", "commit_sha": "c2", "areas_count": 20}),
        ),
        event(
            "t-sub",
            "topo.subsystem.discovered",
            json!({"target_id": "radix", "commit_sha": "c2", "name": "core"}),
        ),
    ];
    for i in 0..20 {
        evs.push(event(
            &format!("t-area-{i:02}"),
            "topo.area.discovered",
            json!({"target_id": "radix", "commit_sha": "c2", "name": format!("area-{i:02}"), "doc": blob(i)}),
        ));
    }
    ingest_all(&s, "t", evs);
    let (size, first) = get_sized(&s, "/v1/topology/areas?target=radix");
    assert!(size <= MAX_ANSWER, "{size} bytes");
    assert_eq!(first["truncated"], true);
    let (areas, pages) = walk(&s, "/v1/topology/areas?target=radix", "areas");
    assert!(pages > 1);
    let expect: Vec<String> = (0..20).map(|i| format!("area-{i:02}")).collect();
    assert_eq!(
        strs(&areas, "name"),
        expect,
        "the latest run's, in log order, each once"
    );
    // A list under the budget answers exactly as before.
    let (_, small) = get_sized(&s, "/v1/topology/subsystems?target=radix");
    assert_eq!(
        small,
        json!({"subsystems": [{"target_id": "radix", "commit_sha": "c2", "name": "core"}], "target_id": "radix"})
    );
    let (st, _) = s.get("/v1/topology/areas?target=radix&cursor=nope");
    assert_eq!(st, 422);
}

/// `(VmRSS, VmHWM)` of a process, in bytes.
fn rss_and_peak(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} in {status}"))
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// `GET /v1/log/verify` held a whole log of large records in one chunk
/// (chunks were 4096 records): its peak memory grew with the log's bytes.
#[test]
fn verifying_a_log_of_large_records_does_not_hold_it_in_memory() {
    let s = Server::start();
    // About 200 MiB of payloads.
    let evs: Vec<Value> = (0..200)
        .map(|i| {
            event(
                &format!("v-{i:03}"),
                "custom.blob",
                json!({"data": format!("{i:04}-{}", "y".repeat(1_000_000))}),
            )
        })
        .collect();
    for (i, chunk) in evs.chunks(20).enumerate() {
        let (st, body) = s.ingest(&bundle(&format!("v-{i}"), chunk.to_vec()));
        assert_eq!(st, 200, "{body}");
    }
    let pid = s.pid();
    // Reset the peak to the current resident size (Linux: `clear_refs` 5).
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset VmHWM");
    let (rss, _) = rss_and_peak(pid);
    let (st, report) = s.get("/v1/log/verify");
    assert_eq!(st, 200, "{report}");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["verified_events"], 200);
    let (_, peak) = rss_and_peak(pid);
    // Measured: 1 MiB with chunks bounded in bytes, 150 MiB with the whole
    // log in one chunk (some of it taken from memory the ingest freed).
    let grown = peak.saturating_sub(rss);
    assert!(
        grown < 64 << 20,
        "verifying ~200 MiB of records grew the peak by {} MiB",
        grown >> 20
    );
}

/// A node as of a seq is its last snapshot with the diffs after it applied
/// one at a time: 200 merges of ~900 KiB values into one node within a
/// snapshot block (each diff carries its op's properties) are not all held
/// decoded at once.
#[test]
fn a_node_as_of_a_seq_does_not_hold_its_diffs_in_memory() {
    let s = Server::start();
    let mut evs = vec![event(
        "n-created",
        "attempt.created",
        json!({"attempt_id": "big", "task_id": "t1"}),
    )];
    evs.extend((0..200).map(|i| {
        event(
            &format!("n-{i:03}"),
            "attempt.started",
            json!({"attempt_id": "big", "note": blob(i)}),
        )
    }));
    ingest_all(&s, "n", evs);
    let (_, head) = s.get("/v1/log/head");
    let head = head["seq"].as_u64().expect("a head");
    assert!(head < 256, "one snapshot block: {head}");
    let pid = s.pid();
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset VmHWM");
    let (rss, _) = rss_and_peak(pid);
    let (st, node) = s.get(&format!("/v1/graph/nodes/big?as_of_seq={head}"));
    assert_eq!(st, 200, "{node}");
    assert!(
        node["properties"]["note"]
            .as_str()
            .expect("a note")
            .starts_with("0199-"),
        "the last merge's value"
    );
    let (_, peak) = rss_and_peak(pid);
    // Measured: 177 MiB with every diff held decoded, under 1 MiB one at a time.
    let grown = peak.saturating_sub(rss);
    assert!(
        grown < 64 << 20,
        "a node as of a seq grew the peak by {} MiB",
        grown >> 20
    );
}

/// Edges carry their ids (node ids may be 1 KiB), so 10,000 of them are tens
/// of MiB: an edge page stops at the byte budget too, and the cursor walks
/// every edge once.
#[test]
fn edge_pages_stop_at_the_byte_budget_and_the_cursor_continues() {
    let s = Server::start();
    let (st, r) = s.ingest(&bundle(
        "att",
        vec![event(
            "att-0",
            "attempt.created",
            json!({"attempt_id": "a1"}),
        )],
    ));
    assert_eq!(st, 200, "{r}");
    let n = 6000;
    let long = "y".repeat(1000);
    let events: Vec<Value> = (0..n)
        .map(|i| {
            event(
                &format!("art-{i}"),
                "artifact.created",
                json!({"attempt_id": "a1", "artifact_id": format!("{i:05}-{long}")}),
            )
        })
        .collect();
    let (st, r) = s.ingest(&bundle("arts", events));
    assert_eq!(st, 200, "{r}");
    let first = "/v1/graph/nodes/a1/edges?direction=out&type=PRODUCED&limit=10000";
    let (size, page) = get_sized(&s, first);
    assert!(size <= MAX_ANSWER, "{size} bytes");
    let count = page["edges"].as_array().unwrap().len();
    assert!(count < n, "{count} edges of ~2 KiB in one answer");
    assert!(page["next_cursor"].is_string(), "{}", page["next_cursor"]);
    let (edges, pages) = walk(&s, first, "edges");
    assert!(pages >= 2);
    let to = strs(&edges, "to_node");
    assert_eq!(to.len(), n);
    assert_eq!(
        to.iter().collect::<BTreeSet<_>>().len(),
        n,
        "each edge once"
    );
}

/// A payload used to be read into a `serde_json::Value` tree, every payload
/// of the bundle at once, before it was canonicalized: dense JSON such as
/// `[0,0,…]` costs ~17 times its text that way, so one 30 MB bundle took
/// the server up by ~500 MiB (four at once past 2 GB). Payloads are now
/// canonicalized from their text, one at a time.
#[test]
fn a_bundle_of_dense_json_payloads_costs_about_its_size_to_ingest() {
    let s = Server::start();
    // 30 payloads of 500,000 zeros: ~1,000,000 canonical bytes each, under
    // the 1 MiB payload limit; a ~30 MB body, under the 32 MiB body limit.
    let dense = format!("[{}0]", "0,".repeat(499_999));
    let body = format!(
        r#"{{"target":"dense","bundle_id":"dense-1","events":[{}]}}"#,
        (0..30)
            .map(|i| {
                format!(
                    r#"{{"event_id":"d-{i:02}","event_type":"custom.dense","timestamp":"2026-01-24T10:00:00Z","payload":{{"i":{i},"d":{dense}}}}}"#
                )
            })
            .collect::<Vec<_>>()
            .join(",")
    );
    assert!(body.len() > 29_000_000, "{}", body.len());
    let pid = s.pid();
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset VmHWM");
    let (rss, _) = rss_and_peak(pid);
    let resp = s
        .req(reqwest::Method::POST, "/v1/events/ingest")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .expect("request reaches the server");
    let status = resp.status().as_u16();
    let text = resp.text().expect("the body");
    assert_eq!(status, 200, "{text}");
    let (_, peak) = rss_and_peak(pid);
    let grown = peak.saturating_sub(rss);
    eprintln!("dense ingest grew the peak by {} MiB", grown >> 20);
    assert!(
        grown < 200 << 20,
        "ingesting a 30 MB bundle of dense payloads grew the peak by {} MiB",
        grown >> 20
    );
    // Stored whole: the last event's payload reads back as sent.
    let (st, page) = s.get("/v1/events?after_seq=29&limit=1");
    assert_eq!(st, 200, "{page}");
    assert_eq!(page["head_seq"], 30, "{page}");
    let last = &page["events"][0];
    assert_eq!(last["event_id"], "d-29");
    assert_eq!(last["payload"]["i"], 29);
    assert_eq!(last["payload"]["d"].as_array().map(Vec::len), Some(500_000));
}

/// A node's properties are bounded like one op's: an executor that sends a
/// new key per event grew one Attempt past 60 MB in 70 events (each merge
/// then rewrote all of it: 16 ms an ingest at first, 360 ms at the 70th, and
/// every read answered all of it). The event that would pass the limit is
/// refused, as any op the graph refuses, and the node stays as it was.
#[test]
fn a_node_that_merges_would_grow_past_the_limit_refuses_the_event() {
    let s = Server::start();
    let (st, body) = s.ingest(&bundle(
        "g-0",
        vec![event(
            "g-created",
            "attempt.created",
            json!({"attempt_id": "g1"}),
        )],
    ));
    assert_eq!(st, 200, "{body}");
    // Nine keys of 900 KiB fit the 8 MiB; the tenth does not.
    for i in 0..10 {
        let (st, body) = s.ingest(&bundle(
            &format!("g-{}", i + 1),
            vec![event(
                &format!("g-step-{i}"),
                "attempt.started",
                json!({"attempt_id": "g1", format!("step_{i}"): blob(i)}),
            )],
        ));
        if i < 9 {
            assert_eq!(st, 200, "{i}: {body}");
            continue;
        }
        assert_eq!(st, 422, "{body}");
        assert_eq!(body["error"]["code"], "projection_failed", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("over the limit"), "{message}");
    }
    let (st, head) = s.get("/v1/log/head");
    assert_eq!(st, 200);
    assert_eq!(head["seq"], 10, "the refused event is not in the log");
    let (size, attempt) = get_sized(&s, "/v1/attempts/g1");
    assert!(size < MAX_ANSWER, "{size}");
    let node = if attempt["attempt"].is_object() {
        &attempt["attempt"]
    } else {
        &attempt
    };
    assert!(
        node.to_string().contains("step_8") && !node.to_string().contains("step_9"),
        "the node holds the nine accepted keys only"
    );
}
