//! The chain as an auditor sees it: every served event's hash recomputes from
//! its fields with RFC 8785 + SHA-256 (docs/HASHING.md), and tampering with the
//! stored log is detected.

use crate::common::*;
use serde_json::{json, Value};

fn recompute(e: &Value) -> String {
    let record = json!({
        "actor_id": e["actor_id"], "event_id": e["event_id"], "event_type": e["event_type"],
        "payload": e["payload"], "prev_hash": e["prev_hash"], "seq": e["seq"],
        "target": e["target"], "timestamp": e["timestamp"],
    });
    sha256_hex(&serde_json_canonicalizer::to_vec(&record).unwrap())
}

#[test]
fn every_hash_recomputes_from_the_served_fields() {
    let s = Server::start();
    let evs = vec![
        event(
            "h1",
            "target.registered",
            json!({"target_id": "radix", "name": "radix", "extra": "x"}),
        ),
        json!({"event_id": "h2", "event_type": "custom.thing", "timestamp": "2026-01-24T10:00:09.5", "payload": {"k": "é\u{1F600}\n", "n": 1.0, "big": 1e300, "z": {"b": 1, "a": [2]}}}),
    ];
    let (st, _) = s.ingest(&bundle("h", evs));
    assert_eq!(st, 200);
    for e in s.all_events() {
        assert_eq!(recompute(&e), e["hash"].as_str().unwrap(), "{e}");
    }
    let (_, v) = s.get("/v1/log/verify");
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["verified_events"], 2);
}

#[test]
fn tampering_is_detected_by_verify() {
    let mut s = Server::start();
    s.ingest(&bundle("b", events("t", 5)));
    let dir = s.keep_dir();
    s.stop();
    crate::common::tamper_with_event(dir.path(), 3, "t-a2", "t-XX");
    let (code, out, err) = crate::common::admin_full(&["verify"], dir.path());
    assert_eq!(code, 1, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["report"]["ok"], false);
    assert_eq!(report["report"]["first_broken_seq"], 3);
    assert_eq!(report["report"]["verified_events"], 2);
    assert!(report["report"]["error"]
        .as_str()
        .unwrap()
        .contains("hash mismatch"));

    let s = Server::start_in(dir.path(), &[]);
    let (_, v) = s.get("/v1/log/verify");
    assert_eq!(v["ok"], false);
    assert_eq!(v["first_broken_seq"], 3);
}

/// `verify` checks records in chunks of 4096 on every core and walks the chain
/// in order: a log longer than a chunk verifies across the boundary, and a
/// record tampered with in the second chunk is the first broken seq.
#[test]
fn verify_walks_the_chain_across_chunks() {
    let mut s = Server::start();
    for b in 0..9 {
        let evs = events(&format!("c{b}"), 500);
        let (st, _) = s.ingest(&bundle(&format!("chunk-{b}"), evs));
        assert_eq!(st, 200);
    }
    let (_, v) = s.get("/v1/log/verify");
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["verified_events"], 4500);
    let dir = s.keep_dir();
    s.stop();
    // seq 4400 is the 400th event of bundle 8: id c8-399, attempt c8-a399.
    crate::common::tamper_with_event(dir.path(), 4400, "c8-a399", "c8-a39X");
    let s = Server::start_in(dir.path(), &[]);
    let (_, v) = s.get("/v1/log/verify");
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["first_broken_seq"], 4400, "{v}");
    assert_eq!(v["verified_events"], 4399, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("hash mismatch"),
        "{v}"
    );
}

/// The projector set's fingerprint is what docs/HASHING.md says, computed
/// from what `GET /v1/projection` shows: an auditor can recompute the
/// checkpoint's `projector-set` line without the server's code.
#[test]
fn the_projector_set_fingerprint_recomputes_from_the_documented_lines() {
    for projectors in [
        None,
        Some("core#fuel=7000000#memory_mib=32#on_error=record"),
        Some("core#mode=async#instances=4#tables=1000"),
    ] {
        let env: Vec<(&str, &str)> = projectors
            .map(|p| vec![("LEVIATHAN_PROJECTORS", p)])
            .unwrap_or_default();
        let s = Server::start_with(&env);
        let (_, p) = s.get("/v1/projection");
        let mut text = String::new();
        for pr in p["projectors"].as_array().unwrap() {
            let l = &pr["limits"];
            text.push_str(&format!(
                "{} fuel={} memory={} tables={} instances={}",
                pr["digest"].as_str().unwrap(),
                l["fuel"],
                l["memory_mib"].as_u64().unwrap() << 20,
                l["tables"],
                l["instances"]
            ));
            if pr["on_error"] != "reject" {
                text.push_str(&format!(" on_error={}", pr["on_error"].as_str().unwrap()));
            }
            if pr["mode"] != "inline" {
                text.push_str(&format!(" mode={}", pr["mode"].as_str().unwrap()));
            }
            text.push('\n');
        }
        assert_eq!(
            p["fingerprint"],
            sha256_hex(text.as_bytes()),
            "{projectors:?}: {p}"
        );
    }
}
