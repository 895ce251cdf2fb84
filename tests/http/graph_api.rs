//! Graph and attempt routes: listing with cursors, lookups, 404s, invalidation.

use crate::common::*;
use serde_json::json;

fn attempts(n: usize, target: &str) -> Vec<serde_json::Value> {
    (0..n)
        .map(|i| event(&format!("{target}-e{i}"), "attempt.created", json!({"attempt_id": format!("{target}-a{i}"), "task_id": "t", "attempt_number": 1, "target_id": target})))
        .collect()
}

#[test]
fn attempts_newest_first_filtered_and_paged() {
    let s = Server::start();
    s.ingest(&bundle("b1", attempts(3, "radix")));
    s.ingest(&bundle("b2", attempts(2, "other")));
    let (st, v) = s.get("/v1/attempts");
    assert_eq!(st, 200);
    let ids: Vec<_> = v["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["attempt_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["other-a1", "other-a0", "radix-a2", "radix-a1", "radix-a0"]
    );
    assert_eq!(v["count"], 5);
    let (_, v) = s.get("/v1/attempts?target=radix&limit=2");
    let ids: Vec<_> = v["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["attempt_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["radix-a2", "radix-a1"]);
    assert_eq!(v["attempts"][0]["target"], "radix");
    assert_eq!(v["attempts"][0]["status"], "created");
    assert_eq!(s.get("/v1/attempts?limit=0").0, 422);
}

#[test]
fn node_listing_pages_with_cursors() {
    let s = Server::start();
    s.ingest(&bundle("b1", attempts(7, "radix")));
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/v1/graph/nodes?type=Attempt&limit=3&cursor={c}"),
            None => "/v1/graph/nodes?type=Attempt&limit=3".into(),
        };
        let (st, v) = s.get(&q);
        assert_eq!(st, 200, "{v}");
        seen.extend(
            v["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["node_id"].as_str().unwrap().to_string()),
        );
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let mut want: Vec<_> = (0..7).map(|i| format!("radix-a{i}")).collect();
    want.sort();
    assert_eq!(seen, want);
    assert_eq!(s.get("/v1/graph/nodes?cursor=bogus").0, 422);
    assert_eq!(s.get("/v1/graph/nodes/nope").0, 404);
    assert_eq!(
        s.get("/v1/graph/nodes/radix-a0/edges?direction=sideways").0,
        422
    );
}

#[test]
fn attempt_detail_and_invalidate_answer_404_for_non_attempts() {
    let s = Server::start();
    s.ingest(&bundle(
        "b1",
        vec![event("e1", "task.created", json!({"task_id": "t1"}))],
    ));
    for path in ["/v1/attempts/nope", "/v1/attempts/t1"] {
        let (st, r) = s.get(path);
        assert_eq!(st, 404, "{path}: {r}");
    }
    let (st, _) = s.post("/v1/attempts/t1/invalidate", &json!({"reason": "x"}));
    assert_eq!(st, 404);
    let (st, _) = s.post("/v1/attempts/nope/invalidate", &json!({"reason": "x"}));
    assert_eq!(st, 404);
}

#[test]
fn invalidate_goes_through_the_log_and_dry_run_writes_nothing() {
    let s = Server::start();
    s.ingest(&bundle("b1", attempts(1, "radix")));
    let (st, r) = s.post("/v1/attempts/radix-a0/invalidate", &json!({}));
    assert_eq!(st, 422, "reason is required: {r}");

    let (st, dry) = s.post(
        "/v1/attempts/radix-a0/invalidate?dry_run=true",
        &json!({"reason": "flaky runner"}),
    );
    assert_eq!(st, 200, "{dry}");
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["event"]["event_type"], "attempt.invalidated");
    assert_eq!(
        dry["event"]["payload"],
        json!({"attempt_id": "radix-a0", "reason": "flaky runner"})
    );
    assert_eq!(
        s.get("/v1/log/head").1["seq"],
        1,
        "dry run appended nothing"
    );
    assert_eq!(
        s.get("/v1/graph/nodes/radix-a0").1["properties"]["status"],
        "created"
    );

    let (st, r) = s.post(
        "/v1/attempts/radix-a0/invalidate",
        &json!({"reason": "flaky runner"}),
    );
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["status"], "invalidated");
    assert_eq!(r["seq"], 2);
    let n = s.get("/v1/graph/nodes/radix-a0").1;
    assert_eq!(n["properties"]["status"], "invalidated");
    assert_eq!(n["properties"]["invalidation_reason"], "flaky runner");
    let (_, e) = s.get(&format!("/v1/events/{}", r["event_id"].as_str().unwrap()));
    assert_eq!(e["seq"], 2);
    // The actor is the name of the token that asked (LEVIATHAN_CONTROL_PLANE_TOKEN's).
    assert_eq!(e["actor_id"], "control-plane");
    let (_, d) = s.get("/v1/attempts/radix-a0");
    assert_eq!(d["events"].as_array().unwrap().len(), 2);
    assert_eq!(
        r["head_hash"], e["hash"],
        "head_hash is the event's own: {r}"
    );

    // Concurrent invalidations (and ingest) share batches: each answer's
    // head_hash is still its own event's, the chain's head as of its seq.
    let s = std::sync::Arc::new(s);
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || {
                let (st, r) = s.post(
                    "/v1/attempts/radix-a0/invalidate",
                    &json!({"reason": format!("again {i}")}),
                );
                assert_eq!(st, 200, "{r}");
                s.ingest(&bundle(
                    &format!("also-{i}"),
                    events(&format!("also-{i}"), 3),
                ));
                r
            })
        })
        .collect();
    for w in workers {
        let r = w.join().unwrap();
        let (_, e) = s.get(&format!("/v1/events/{}", r["event_id"].as_str().unwrap()));
        assert_eq!(r["seq"], e["seq"], "{r}");
        assert_eq!(r["head_hash"], e["hash"], "{r}");
    }
}

/// Node ids may be 1024 bytes, event ids 256: an attempt whose id is too
/// long for `invalidation-<id>-<time>` is still invalidated, its event named
/// by the id's SHA-256; so is one whose id holds a control character, which
/// node ids may and event ids may not.
#[test]
fn an_attempt_with_a_long_id_can_be_invalidated() {
    let s = Server::start();
    for (n, id) in ["L".repeat(1000), "a\u{0}b\nc".to_string()]
        .iter()
        .enumerate()
    {
        invalidated_by_digest(&s, n, id);
    }
}

fn invalidated_by_digest(s: &Server, n: usize, id: &str) {
    let (st, r) = s.ingest(&bundle(
        &format!("long-{n}"),
        vec![event(
            &format!("long-{n}"),
            "attempt.created",
            json!({"attempt_id": id, "task_id": "t1"}),
        )],
    ));
    assert_eq!(st, 200, "{r}");
    // Every byte but letters and digits percent-encoded, as a path segment.
    let path = |p: &str| -> String {
        p.bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    let (st, r) = s.post(
        &format!("/v1/attempts/{}/invalidate", path(id)),
        &json!({"reason": "flaky runner"}),
    );
    assert_eq!(st, 200, "{r}");
    let event_id = r["event_id"].as_str().unwrap();
    assert!(
        event_id.starts_with(&format!(
            "invalidation-sha256:{}-",
            sha256_hex(id.as_bytes())
        )),
        "{event_id}"
    );
    assert_eq!(
        s.get(&format!("/v1/graph/nodes/{}", path(id))).1["properties"]["status"],
        "invalidated"
    );
}
