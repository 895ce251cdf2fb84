//! Hostile input against a real server: a corpus of malformed, oversized,
//! mistyped and lying requests. Each must get the right 4xx with the JSON error
//! shape, nothing may be stored, a refused bundle's id stays free, and the
//! server keeps answering others (also while slow clients hold connections).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use crate::common;

use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Small limits so that "over every limit" stays cheap.
const LIMITS: [(&str, &str); 4] = [
    ("LEVIATHAN_MAX_BODY_BYTES", "65536"),
    ("LEVIATHAN_MAX_BUNDLE_EVENTS", "10"),
    ("LEVIATHAN_MAX_PAYLOAD_BYTES", "1024"),
    ("LEVIATHAN_MAX_ARTIFACT_BYTES", "4096"),
];

fn ev(id: &str) -> Value {
    event(
        id,
        "attempt.created",
        json!({"attempt_id": "a1", "task_id": "t1"}),
    )
}

/// A bundle with one field of its first event replaced.
fn with_event_field(field: &str, value: Value) -> Vec<u8> {
    let mut e = ev("e1");
    e[field] = value;
    serde_json::to_vec(&bundle("hostile", vec![e])).unwrap()
}

fn with_field(field: &str, value: Value) -> Vec<u8> {
    let mut b = bundle("hostile", vec![ev("e1")]);
    b[field] = value;
    serde_json::to_vec(&b).unwrap()
}

fn nested(depth: usize) -> Vec<u8> {
    let payload = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    format!(
        r#"{{"target":"radix","bundle_id":"hostile","events":[{{"event_id":"e1","event_type":"x.y","timestamp":"2026-01-24T10:00:00Z","payload":{{"deep":{payload}}}}}]}}"#
    )
    .into_bytes()
}

/// (name, body, the statuses that are right for it).
fn ingest_corpus() -> Vec<(&'static str, Vec<u8>, &'static [u16])> {
    const BAD: &[u16] = &[400];
    const INVALID: &[u16] = &[422];
    const TOO_LARGE: &[u16] = &[413];
    let big = "x".repeat(10_000);
    vec![
        ("empty body", b"".to_vec(), BAD),
        ("open brace", b"{".to_vec(), BAD),
        ("truncated", br#"{"target":"radix","bundle_id":"#.to_vec(), BAD),
        ("trailing garbage", br#"{"target":"radix","bundle_id":"b","events":[]} x"#.to_vec(), BAD),
        ("bare word", b"nul".to_vec(), BAD),
        ("byte order mark", b"\xEF\xBB\xBF{\"target\":\"radix\",\"bundle_id\":\"b\",\"events\":[]}".to_vec(), BAD),
        ("invalid UTF-8 in a string", b"{\"target\":\"\xFF\xFE\",\"events\":[]}".to_vec(), BAD),
        ("lone surrogate escape", br#"{"target":"\ud800","bundle_id":"b","events":[]}"#.to_vec(), BAD),
        ("number out of range", br#"{"target":"radix","bundle_id":"b","events":[{"event_id":"e","event_type":"x.y","timestamp":"2026-01-24T10:00:00Z","payload":{"n":1e400}}]}"#.to_vec(), BAD),
        ("nesting 10000 deep", nested(10_000), BAD),
        ("top level is an array", b"[]".to_vec(), INVALID),
        ("top level is a string", b"\"events\"".to_vec(), INVALID),
        ("target is a number", with_field("target", json!(1)), INVALID),
        ("bundle_id is an array", with_field("bundle_id", json!([])), INVALID),
        ("events is an object", with_field("events", json!({})), INVALID),
        ("events is a string", with_field("events", json!("e")), INVALID),
        ("events holds a number", with_field("events", json!([1])), INVALID),
        ("artifacts is a string", with_field("artifacts", json!("a")), INVALID),
        ("artifact sha256 is a number", with_field("artifacts", json!([{"sha256": 5, "kind": "log", "uri": "u", "size": 1}])), INVALID),
        ("artifact sha256 is not hex", with_field("artifacts", json!([{"sha256": "zz", "kind": "log", "uri": "u", "size": 1}])), INVALID),
        ("artifact size is negative", with_field("artifacts", json!([{"sha256": "a".repeat(64), "kind": "log", "uri": "u", "size": -1}])), INVALID),
        ("event_id is a number", with_event_field("event_id", json!(5)), INVALID),
        ("event_id is empty", with_event_field("event_id", json!("")), INVALID),
        ("event_id is 10 KB", with_event_field("event_id", json!(big)), INVALID),
        ("event_id has a control character", with_event_field("event_id", json!("a\u{1}b")), INVALID),
        ("event_id has a NUL", with_event_field("event_id", json!("a\u{0}b")), INVALID),
        ("event_type is null", with_event_field("event_type", Value::Null), INVALID),
        ("event_type has a newline", with_event_field("event_type", json!("attempt.\ncreated")), INVALID),
        ("event_type is one word", with_event_field("event_type", json!("attempt")), INVALID),
        ("event_type is 1000 bytes", with_event_field("event_type", json!(format!("a.{}", "b".repeat(1000)))), INVALID),
        ("timestamp is a number", with_event_field("timestamp", json!(1_700_000_000)), INVALID),
        ("timestamp is empty", with_event_field("timestamp", json!("")), INVALID),
        ("timestamp year 10000", with_event_field("timestamp", json!("10000-01-01T00:00:00Z")), INVALID),
        ("timestamp month 13", with_event_field("timestamp", json!("2026-13-01T00:00:00Z")), INVALID),
        ("timestamp all zeros", with_event_field("timestamp", json!("0000-00-00T00:00:00")), INVALID),
        ("timestamp negative year", with_event_field("timestamp", json!("-0001-01-01T00:00:00Z")), INVALID),
        ("timestamp offset +25:00", with_event_field("timestamp", json!("2026-01-24T10:00:00+25:00")), INVALID),
        ("actor_id is an object", with_event_field("actor_id", json!({})), INVALID),
        ("payload is a string", with_event_field("payload", json!("p")), INVALID),
        ("payload is an array", with_event_field("payload", json!([1])), INVALID),
        ("target is 10 KB", with_field("target", json!(big)), INVALID),
        ("target has a control character", with_field("target", json!("ra\u{7}dix")), INVALID),
        ("bundle_id is 10 KB", with_field("bundle_id", json!(big)), INVALID),
        ("payload over the payload limit", with_event_field("payload", json!({"p": "y".repeat(2000)})), TOO_LARGE),
        ("more events than the bundle limit", serde_json::to_vec(&bundle("hostile", (0..11).map(|i| ev(&format!("e{i}"))).collect())).unwrap(), TOO_LARGE),
        ("body over the body limit", serde_json::to_vec(&bundle("hostile", vec![event("e1", "x.y", json!({"p": "z".repeat(70_000)}))])).unwrap(), TOO_LARGE),
    ]
}

/// The JSON error shape, with a code and a message a person can act on.
#[track_caller]
fn assert_error_shape(what: &str, status: u16, content_type: &str, body: &str) {
    assert!(
        content_type.starts_with("application/json"),
        "{what}: {status} with content type {content_type:?}: {body:?}"
    );
    let v: Value =
        serde_json::from_str(body).unwrap_or_else(|_| panic!("{what}: not JSON: {body:?}"));
    let code = v["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no error.code: {v}"));
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(!code.is_empty() && message.len() > 10, "{what}: {v}");
}

#[test]
fn every_hostile_body_gets_its_4xx_and_nothing_is_stored() {
    let s = Server::start_with(&LIMITS);
    let mut wrong: Vec<String> = Vec::new();
    for (name, body, expected) in ingest_corpus() {
        let resp = s
            .client
            .post(s.url("/v1/events/ingest"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let text = resp.text().unwrap();
        if !expected.contains(&status) {
            wrong.push(format!(
                "{name}: expected {expected:?}, got {status}: {text}"
            ));
            continue;
        }
        assert_error_shape(name, status, &ct, &text);
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Wrong content types, with a body that would otherwise be fine.
    let good = serde_json::to_vec(&bundle("hostile", vec![ev("e1")])).unwrap();
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
    ] {
        let resp = s
            .client
            .post(s.url("/v1/events/ingest"))
            .bearer_auth(TOKEN)
            .header("content-type", ct)
            .body(good.clone())
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        let rct = resp.headers()["content-type"].to_str().unwrap().to_string();
        assert_eq!(status, 415, "content type {ct}");
        assert_error_shape(ct, status, &rct, &resp.text().unwrap());
    }
    // Hostile queries.
    for path in [
        "/v1/events?after_seq=99999999999999999999999",
        "/v1/events?after_seq=-1",
        "/v1/events/recent?limit=1e3",
        "/v1/events?after_seq=%zz",
        "/v1/graph/nodes?cursor=not-hex",
        "/v1/attempts?limit=0x10",
    ] {
        let resp = s.client.get(s.url(path)).bearer_auth(TOKEN).send().unwrap();
        let status = resp.status().as_u16();
        let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
        assert!((400..500).contains(&status), "{path}: {status}");
        assert_error_shape(path, status, &ct, &resp.text().unwrap());
    }
    // Artifacts over the limit and with a lying digest.
    let resp = s
        .client
        .put(s.url(&format!("/v1/artifacts/{}", sha256_hex(&[7u8; 5000]))))
        .bearer_auth(TOKEN)
        .body(vec![7u8; 5000])
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    let resp = s
        .client
        .put(s.url(&format!("/v1/artifacts/{}", sha256_hex(b"other"))))
        .bearer_auth(TOKEN)
        .body(b"this".to_vec())
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);

    // Nothing was stored, and the id every refused bundle used is still free.
    assert_eq!(s.get("/v1/log/head").1["seq"], 0);
    let (st, r) = s.ingest(&bundle("hostile", vec![ev("e1")]));
    assert_eq!((st, r["status"].as_str()), (200, Some("ok")), "{r}");
    assert_eq!(s.get("/v1/artifacts/".to_string().as_str()).0 / 100, 4);
}

/// Sends raw bytes and returns what the server answered before closing (or
/// timing out).
fn raw(s: &Server, request: &[u8], shutdown_write: bool) -> String {
    let addr = s.base.trim_start_matches("http://");
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(request).unwrap();
    if shutdown_write {
        c.shutdown(std::net::Shutdown::Write).unwrap();
    }
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn lying_content_lengths_store_nothing() {
    let s = Server::start_with(&LIMITS);
    let body = serde_json::to_string(&bundle("liar", vec![ev("e1")])).unwrap();
    // Shorter than declared, then the client stops sending.
    let req = format!(
        "POST /v1/events/ingest HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        body.len() + 500,
        body
    );
    let answer = raw(&s, req.as_bytes(), true);
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Longer than declared: the body is cut at the declared length, which is
    // not JSON, and the rest is not a request.
    let req = format!(
        "POST /v1/events/ingest HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        body.len() / 2,
        body
    );
    let answer = raw(&s, req.as_bytes(), true);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // Declared over the limit: refused before reading.
    let req = format!(
        "POST /v1/events/ingest HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n{{"
    );
    let answer = raw(&s, req.as_bytes(), true);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(s.get("/v1/log/head").1["seq"], 0);
    let (st, r) = s.ingest(&bundle("liar", vec![ev("e1")]));
    assert_eq!((st, r["status"].as_str()), (200, Some("ok")), "{r}");
}

#[test]
fn slow_clients_do_not_stop_others() {
    let s = Server::start();
    let addr = s.base.trim_start_matches("http://").to_string();
    // Fifty connections that send half a request line and stall.
    let stalled: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut c = TcpStream::connect(&addr).unwrap();
            c.write_all(b"POST /v1/events/ingest HTTP/1.1\r\nHost: localhost\r\nContent-Le")
                .unwrap();
            c
        })
        .collect();
    // A slow body: headers complete, the body trickles.
    let mut trickle = TcpStream::connect(&addr).unwrap();
    trickle
        .write_all(
            format!("POST /v1/events/ingest HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{").as_bytes(),
        )
        .unwrap();
    for i in 0..20 {
        let (st, r) = s.ingest(&bundle(&format!("ok-{i}"), vec![ev(&format!("ok-{i}"))]));
        assert_eq!(st, 200, "{r}");
        assert_eq!(s.get("/v1/graph/summary").0, 200);
    }
    drop(stalled);
    drop(trickle);
    assert_eq!(s.get("/v1/log/head").1["seq"], 20);
}

/// An id in a payload too long for an index key as itself (an
/// `attempt_id` of 65,530 bytes and more, or a failure's or a topology
/// event's target of 65,499 to 65,525, made fjall refuse the key and
/// stopped the writer until a restart) is stored, and ingest goes on; the
/// reads by target find those events.
#[test]
fn ids_too_long_for_an_index_key_are_stored_and_ingest_goes_on() {
    let s = Server::start();
    let mut stored = 0u64;
    let mut store = |event_type: &str, payload: Value| {
        stored += 1;
        let id = format!("long-{stored}");
        let (status, body) = s.ingest(&bundle(&id, vec![event(&id, event_type, payload)]));
        assert_eq!(status, 200, "{event_type} #{stored}: {body}");
        assert_eq!(body["last_seq"], stored, "{body}");
    };
    for n in [65_525usize, 65_530, 70_000, 300_000] {
        store("custom.note", json!({"attempt_id": "a".repeat(n)}));
    }
    for n in [4_097usize, 65_499, 65_514, 65_525, 70_000] {
        store("task.failed", json!({"target": "f".repeat(n)}));
        store(
            "topo.dependency.discovered",
            json!({"target_id": "t".repeat(n), "commit_sha": "c"}),
        );
    }
    let (status, body) = s.ingest(&bundle("after", vec![ev("after-1")]));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["last_seq"], stored + 1, "{body}");
    // Found by target (one keyed by its digest; a URI stays under 64 KiB).
    let (st, failures) = s.get(&format!("/v1/failures?target={}", "f".repeat(4_097)));
    assert_eq!(st, 200, "{failures}");
    assert_eq!(failures["count"], 1, "{failures}");
    let (status, ready) = s.get("/readyz");
    assert_eq!(status, 200, "{ready}");
}

#[test]
fn small_changes_to_a_big_node_do_not_store_it_whole_at_every_block() {
    // Found by a black-box session: the node history stored a node whole at
    // its first change in every 256-seq block, so one small event per block
    // into a big node stored all of it again each time, for good (a 6.5 MB
    // node: 363× the bytes sent).
    let mut s = Server::start();
    let description = "d".repeat(512 << 10);
    let registered = event(
        "reg",
        "target.registered",
        json!({"target_id": "big", "name": "big", "repo_url": "u", "description": description}),
    );
    let (status, body) = s.ingest(&bundle("reg", vec![registered]));
    assert_eq!(status, 200, "{body}");
    let rounds = 24;
    let mut updated_at = Vec::new();
    for round in 0..rounds {
        // 255 events the core does not project, then one small update: each
        // update is the node's first change in its block.
        let mut evs: Vec<Value> = (0..255)
            .map(|i| event(&format!("n-{round}-{i}"), "custom.note", json!({"i": i})))
            .collect();
        evs.push(event(
            &format!("u-{round}"),
            "target.updated",
            json!({"target_id": "big", "round": round}),
        ));
        let (status, body) = s.ingest(&bundle(&format!("b-{round}"), evs));
        assert_eq!(status, 200, "{body}");
        updated_at.push(body["last_seq"].as_u64().unwrap());
    }
    // The node reads back as of every update and just before it.
    for (round, seq) in updated_at.iter().enumerate() {
        for (at, expected) in [(*seq - 1, round.checked_sub(1)), (*seq, Some(round))] {
            let (status, node) = s.get(&format!("/v1/graph/nodes/big?as_of_seq={at}"));
            assert_eq!(status, 200, "as of {at}: {node}");
            let props = &node["properties"];
            assert_eq!(
                props["round"].as_u64(),
                expected.map(|r| r as u64),
                "as of {at}"
            );
            assert_eq!(props["description"].as_str().map(str::len), Some(512 << 10));
        }
    }
    s.stop();
    // What the node's history takes: its creation whole, then diffs until
    // they pay for half a snapshot (~256 of them here), not 24 more copies.
    let mut prefix = vec![b'n'];
    prefix.extend_from_slice(&3u32.to_be_bytes());
    prefix.extend_from_slice(b"big");
    let bytes: usize = with_store(&s.data_dir, |db| {
        keyspace(db, "graph_history")
            .prefix(&prefix)
            .map(|g| g.into_inner().unwrap().1.len())
            .sum()
    });
    assert!(bytes >= 512 << 10, "{bytes} bytes: the creation is stored");
    assert!(
        bytes < 2 * (512 << 10),
        "{bytes} bytes of history for 24 small changes to a 512 KiB node"
    );
}
