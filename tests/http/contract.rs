//! The v1 contract old clients rely on: every error carries a top-level
//! `detail` (FastAPI's key) beside `error`; an attempt that events name but
//! no `attempt.created` made answers with `attempt_node: null`; the invalidate
//! route's body errors say what the docs say; scanning reads say when they page.

use crate::common::*;
use serde_json::{json, Value};

fn raw_post(s: &Server, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    parse(
        s.client
            .post(s.url(path))
            .bearer_auth(TOKEN)
            .header("content-type", content_type)
            .body(body)
            .send()
            .expect("request"),
    )
}

fn assert_error_shape(status: u16, v: &Value, code: &str) {
    assert_eq!(v["error"]["code"], code, "{status}: {v}");
    let message = v["error"]["message"].as_str().expect("a message");
    assert_eq!(v["detail"], message, "detail repeats the message: {v}");
}

#[test]
fn every_error_carries_detail_beside_error() {
    let s = Server::start();
    let (st, v) = s.get("/v1/events/nope");
    assert_eq!(st, 404);
    assert_error_shape(st, &v, "not_found");
    let (st, v) = s.get("/v1/events/recent?limit=0");
    assert_eq!(st, 422);
    assert_error_shape(st, &v, "invalid_query");
    let (st, v) = raw_post(
        &s,
        "/v1/events/ingest",
        "application/json",
        b"{nope".to_vec(),
    );
    assert_eq!(st, 400);
    assert_error_shape(st, &v, "invalid_json");
    let (st, v) =
        s.ingest(&json!({"target": "t", "bundle_id": "b", "events": [{"event_id": "e"}]}));
    assert_eq!(st, 422);
    assert_error_shape(st, &v, "invalid_bundle");
    assert!(v["error"]["details"]["path"].is_string(), "{v}");
    let (st, v) = parse(s.client.get(s.url("/v1/log/head")).send().expect("request"));
    assert_eq!(st, 401);
    assert_error_shape(st, &v, "unauthorized");
    let (st, v) = s.get("/v1/graph/nodes?cursor=zz");
    assert_eq!(st, 422);
    assert_error_shape(st, &v, "invalid_query");
    let (st, v) = s.get("/v1/failures?cursor=zz");
    assert_eq!(st, 422);
    assert_error_shape(st, &v, "invalid_query");
}

#[test]
fn an_attempt_named_only_by_events_answers_with_a_null_node() {
    let s = Server::start();
    let (st, r) = s.ingest(&bundle(
        "b1",
        vec![
            event(
                "e1",
                "attempt.started",
                json!({"attempt_id": "ghost", "status": "running"}),
            ),
            event(
                "e2",
                "attempt.failed",
                json!({"attempt_id": "ghost", "error_summary": "boom"}),
            ),
            event(
                "e3",
                "attempt.created",
                json!({"attempt_id": "real", "task_id": "t1"}),
            ),
        ],
    ));
    assert_eq!(st, 200, "{r}");
    let (st, d) = s.get("/v1/attempts/ghost");
    assert_eq!(st, 200, "{d}");
    assert_eq!(d["attempt_node"], Value::Null);
    let ids: Vec<&str> = d["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    assert_eq!(ids, ["e1", "e2"]);
    assert_eq!(d["artifacts"], json!([]));
    assert_eq!(d["pull_requests"], json!([]));
    // An id nothing mentions is still 404, and so is a node of another type.
    let (st, v) = s.get("/v1/attempts/nobody");
    assert_eq!(st, 404, "{v}");
    assert_error_shape(st, &v, "not_found");
    assert_eq!(s.get("/v1/attempts/real").0, 200);
    // Invalidation still needs an Attempt node.
    assert_eq!(
        s.post("/v1/attempts/ghost/invalidate", &json!({"reason": "x"}))
            .0,
        404
    );
}

#[test]
fn invalidate_body_errors_match_the_docs() {
    let s = Server::start();
    s.ingest(&bundle(
        "b1",
        vec![event(
            "e1",
            "attempt.created",
            json!({"attempt_id": "a1", "task_id": "t1"}),
        )],
    ));
    // Not JSON: 400 invalid_json.
    let (st, v) = raw_post(
        &s,
        "/v1/attempts/a1/invalidate",
        "application/json",
        b"reason=x".to_vec(),
    );
    assert_eq!(st, 400, "{v}");
    assert_error_shape(st, &v, "invalid_json");
    // JSON of another shape: 422 invalid_body.
    let (st, v) = s.post("/v1/attempts/a1/invalidate", &json!({"why": "x"}));
    assert_eq!(st, 422, "{v}");
    assert_error_shape(st, &v, "invalid_body");
    // The fields as an array (serde's other form of a struct) is not the
    // documented object: refused, nothing appended.
    let (st, v) = s.post("/v1/attempts/a1/invalidate", &json!(["x"]));
    assert_eq!(st, 422, "{v}");
    assert_error_shape(st, &v, "invalid_body");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("a JSON object"),
        "{v}"
    );
    // Over the route's fixed 64 KiB cap: 413 naming the cap, not a setting.
    let big = serde_json::to_vec(&json!({"reason": "x".repeat(70 * 1024)})).expect("json");
    let (st, v) = raw_post(&s, "/v1/attempts/a1/invalidate", "application/json", big);
    assert_eq!(st, 413, "{v}");
    assert_error_shape(st, &v, "too_large");
    assert_eq!(v["error"]["details"]["limit"], 65536);
    assert_eq!(v["error"]["details"]["setting"], Value::Null);
    let msg = v["error"]["message"].as_str().expect("message");
    assert!(
        !msg.contains("LEVIATHAN_MAX_BODY_BYTES") && msg.contains("65536"),
        "{msg}"
    );
    // The backlog placeholder reads its body the same way.
    let (st, v) = raw_post(&s, "/v1/backlog/suggest", "application/json", b"{".to_vec());
    assert_eq!(st, 400, "{v}");
    assert_error_shape(st, &v, "invalid_json");
    // Nothing was appended by any of these.
    assert_eq!(s.get("/v1/log/head").1["seq"], 1);
}

#[test]
fn failures_say_whether_more_remain() {
    let s = Server::start();
    let evs: Vec<Value> = (0..3)
        .map(|i| {
            event(
                &format!("f{i}"),
                "attempt.failed",
                json!({"attempt_id": format!("a{i}")}),
            )
        })
        .collect();
    assert_eq!(s.ingest(&bundle("b1", evs)).0, 200);
    let (_, v) = s.get("/v1/failures?limit=2");
    assert_eq!(v["count"], 2);
    let cursor = v["next_cursor"]
        .as_str()
        .expect("a cursor: one more failure remains");
    let (_, rest) = s.get(&format!("/v1/failures?limit=2&cursor={cursor}"));
    assert_eq!(rest["count"], 1);
    assert_eq!(rest["failures"][0]["event_id"], "f0");
    assert_eq!(rest["next_cursor"], Value::Null);
    let (_, all) = s.get("/v1/failures?limit=10");
    assert_eq!(all["count"], 3);
    assert_eq!(all["next_cursor"], Value::Null);
}
