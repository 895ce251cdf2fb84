use crate::common::*;
use serde_json::json;

#[test]
fn a_bundle_is_appended_with_dense_seqs_and_a_chain() {
    let s = Server::start();
    let (st, r) = s.ingest(&bundle("b1", events("e", 3)));
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["status"], "ok");
    assert_eq!(r["ingested"], 3);
    assert_eq!(r["duplicates"], 0);
    assert_eq!(r["bundle_id"], "b1");
    assert_eq!(
        (r["first_seq"].as_u64(), r["last_seq"].as_u64()),
        (Some(1), Some(3))
    );
    assert_eq!(r["missing_artifacts"], json!([]));

    let (st, r2) = s.ingest(&bundle("b2", events("f", 2)));
    assert_eq!(st, 200);
    assert_eq!(
        (r2["first_seq"].as_u64(), r2["last_seq"].as_u64()),
        (Some(4), Some(5))
    );

    let all = s.all_events();
    assert_eq!(all.len(), 5);
    assert!(all[0]["prev_hash"].is_null(), "genesis has no prev_hash");
    for w in all.windows(2) {
        assert_eq!(w[1]["prev_hash"], w[0]["hash"]);
        assert_eq!(
            w[1]["seq"].as_u64().unwrap(),
            w[0]["seq"].as_u64().unwrap() + 1
        );
    }
    assert_eq!(r2["head_hash"], all[4]["hash"]);
    let (_, head) = s.get("/v1/log/head");
    assert_eq!(head, json!({"seq": 5, "hash": all[4]["hash"]}));
    // Stored fields: the bundle's target, a normalized UTC timestamp.
    assert_eq!(all[0]["target"], "radix");
    assert_eq!(all[0]["timestamp"], "2026-01-24T10:00:00.123456Z");
    assert_eq!(all[0]["actor_id"], "worker-1");
}

#[test]
fn an_empty_bundle_is_accepted() {
    let s = Server::start();
    let (st, r) = s.ingest(&bundle("empty", vec![]));
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["ingested"], 0);
    assert!(r["first_seq"].is_null());
    assert_eq!(r["status"], "ok");
    // It stored nothing, not even its id: the same id may carry events later,
    // and an empty retry of it is still just an empty bundle.
    assert_eq!(s.get("/v1/log/head").1["seq"], 0);
    let (st, r) = s.ingest(&bundle("empty", events("later", 2)));
    assert_eq!(
        (st, &r["status"], &r["ingested"]),
        (200, &json!("ok"), &json!(2)),
        "{r}"
    );
    let (st, r) = s.ingest(&bundle("empty", vec![]));
    assert_eq!((st, &r["ingested"]), (200, &json!(0)), "{r}");
    let (st, r) = s.ingest(&bundle("empty", events("later", 2)));
    assert_eq!((st, &r["status"]), (200, &json!("duplicate")), "{r}");
}

/// A bundle with one bad event is refused whole: the error names the event,
/// and nothing of it is stored.
#[test]
fn one_bad_event_rejects_the_whole_bundle() {
    let s = Server::start();
    s.ingest(&bundle("ok", events("x", 1)));
    let cases = vec![
        ("timestamp", json!("yesterday")),
        // Stored in UTC as `-0001-12-31T23:00:00Z`: no RFC 3339, unreadable.
        ("timestamp", json!("0000-01-01T00:00:00+01:00")),
        ("timestamp", json!("9999-12-31T23:59:59-23:59")),
        // A leap second (here one that never was): the original refused all.
        ("timestamp", json!("2016-12-31T23:59:60+01:00")),
        ("event_type", json!("Not A Type")),
        ("event_id", json!("")),
        ("payload", json!([1, 2])),
        ("event_id", json!(42)),
        // Of the wrong JSON type: refused as the body is read.
        ("actor_id", json!(5)),
        ("timestamp", json!(5)),
        ("payload", json!(null)),
    ];
    for (field, value) in cases {
        let mut evs = events("y", 3);
        evs[1][field] = value.clone();
        let (st, r) = s.ingest(&bundle("bad", evs));
        assert_eq!(st, 422, "{field}={value}: {r}");
        assert_eq!(r["error"]["code"], "invalid_bundle");
        assert_eq!(r["error"]["details"]["event_index"], 1, "{r}");
        let path = r["error"]["details"]["path"].as_str().unwrap();
        assert!(path.starts_with("events[1]"), "{path}");
        assert!(path.contains(field), "{path} should name {field}");
        assert!(!r["error"]["message"].as_str().unwrap().is_empty());
        // The event's id whenever it has a string one.
        let id = match field {
            "event_id" if value.is_string() => value.clone(),
            "event_id" => json!(null),
            _ => json!("y-1"),
        };
        assert_eq!(
            r["error"]["details"]["event_id"], id,
            "{field}={value}: {r}"
        );
    }
    for missing in ["timestamp", "payload", "event_id"] {
        let mut evs = events("z", 2);
        evs[1].as_object_mut().unwrap().remove(missing);
        let (st, r) = s.ingest(&bundle("bad2", evs));
        assert_eq!(st, 422, "{r}");
        assert!(
            r["error"]["message"].as_str().unwrap().contains(missing),
            "{r}"
        );
        assert_eq!(r["error"]["details"]["event_index"], 1, "{r}");
        let id = if missing == "event_id" {
            json!(null)
        } else {
            json!("z-1")
        };
        assert_eq!(r["error"]["details"]["event_id"], id, "{missing}: {r}");
    }

    // A bundle, an event or a ref written as an array of its fields (serde's
    // other form of a struct) is not the documented object.
    let ev = |id: &str| json!({"event_id": id, "event_type": "custom.thing", "timestamp": "2026-01-24T10:00:00Z", "payload": {}});
    let as_array = json!(["radix", "arr-1", [ev("arr-e1")], null]);
    let event_array = json!({"target": "radix", "bundle_id": "arr-2", "events": [["arr-e2", "custom.thing", "2026-01-24T10:00:00Z", null, {}]]});
    let ref_array = json!({"target": "radix", "bundle_id": "arr-3", "events": [ev("arr-e3")], "artifacts": [["a".repeat(64), "log", "u", 1]]});
    for (body, path) in [
        (as_array, "body"),
        (event_array, "events[0]"),
        (ref_array, "artifacts[0]"),
        (json!([]), "body"),
    ] {
        let (st, r) = s.ingest(&body);
        assert_eq!(st, 422, "{body}: {r}");
        assert_eq!(r["error"]["code"], "invalid_bundle", "{r}");
        assert_eq!(r["error"]["details"]["path"], path, "{r}");
        let msg = r["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("expected a JSON object") && !msg.contains("Raw"),
            "{msg}"
        );
    }

    // Nothing of any refused bundle is there.
    assert_eq!(s.all_events().len(), 1);
    let (st, _) = s.get("/v1/events/y-0");
    assert_eq!(st, 404);
}

#[test]
fn envelope_errors_have_the_right_status() {
    let s = Server::start();
    let post_raw = |body: &str, ct: &str| {
        s.send(
            s.req(reqwest::Method::POST, "/v1/events/ingest")
                .header("Content-Type", ct)
                .body(body.to_string()),
        )
    };
    let (st, r) = post_raw("{\"target\": ", "application/json");
    assert_eq!(st, 400);
    assert_eq!(r["error"]["code"], "invalid_json");
    let (st, r) = post_raw("{}", "text/plain");
    assert_eq!(st, 415, "{r}");
    for body in [
        json!({"bundle_id": "b", "events": []}),
        json!({"target": "t", "events": []}),
        json!({"target": "t", "bundle_id": "b"}),
        json!({"target": "t", "bundle_id": "b", "events": [1]}),
        json!({"target": "t", "bundle_id": "b", "events": [], "artifacts": [{"sha256": "abc", "kind": "log", "uri": "u", "size": 1}]}),
        json!({"target": "t", "bundle_id": "b", "events": [], "artifacts": [{"kind": "log"}]}),
        json!([]),
    ] {
        let (st, r) = s.ingest(&body);
        assert_eq!(st, 422, "{body}: {r}");
        assert!(r["error"]["message"].as_str().is_some());
    }
    assert_eq!(s.all_events().len(), 0);
}

#[test]
fn limits_are_enforced_with_413() {
    let s = Server::start_with(&[
        ("LEVIATHAN_MAX_BODY_BYTES", "20000"),
        ("LEVIATHAN_MAX_BUNDLE_EVENTS", "5"),
        ("LEVIATHAN_MAX_PAYLOAD_BYTES", "1000"),
    ]);
    let (st, r) = s.ingest(&bundle("many", events("m", 6)));
    assert_eq!(st, 413, "{r}");
    assert_eq!(
        r["error"]["details"]["setting"],
        "LEVIATHAN_MAX_BUNDLE_EVENTS"
    );
    let big = "x".repeat(2000);
    let (st, r) = s.ingest(&bundle(
        "fat",
        vec![event("f1", "custom.thing", json!({"blob": big}))],
    ));
    assert_eq!(st, 413, "{r}");
    assert_eq!(r["error"]["details"]["path"], "events[0].payload");
    let huge = "x".repeat(30000);
    let (st, r) = s.ingest(&bundle(
        "huge",
        vec![event("h1", "custom.thing", json!({"blob": huge}))],
    ));
    assert_eq!(st, 413, "{r}");
    assert_eq!(r["error"]["details"]["setting"], "LEVIATHAN_MAX_BODY_BYTES");
    assert_eq!(s.all_events().len(), 0);
    let (st, _) = s.ingest(&bundle("fine", events("ok", 5)));
    assert_eq!(st, 200);
}

#[test]
fn timestamps_are_stored_in_one_utc_form() {
    let s = Server::start();
    let evs = vec![
        json!({"event_id": "t1", "event_type": "custom.thing", "timestamp": "2026-01-24T10:00:00Z", "payload": {}}),
        json!({"event_id": "t2", "event_type": "custom.thing", "timestamp": "2026-01-24T12:30:00+02:30", "payload": {}}),
        json!({"event_id": "t3", "event_type": "custom.thing", "timestamp": "2026-01-24 10:00:09.5", "payload": {}}),
    ];
    let (st, r) = s.ingest(&bundle("ts", evs));
    assert_eq!(st, 200, "{r}");
    let all = s.all_events();
    let ts: Vec<_> = all
        .iter()
        .map(|e| e["timestamp"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ts,
        [
            "2026-01-24T10:00:00Z",
            "2026-01-24T10:00:00Z",
            "2026-01-24T10:00:09.500Z"
        ]
    );
    assert!(all[0]["actor_id"].is_null());
}
