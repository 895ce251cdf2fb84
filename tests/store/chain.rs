//! Every branch of chain verification, against a store forged the way an
//! attacker with disk access (or a disk fault) would: records rewritten with a
//! recomputed hash, so only the chain can tell, records removed, and a head
//! record that no longer matches the log. Both `leviathan verify` and the
//! server's start-up check are run on the forged store.

use crate::common::*;
use serde_json::Value;
use std::path::Path;

/// A stopped server's data dir holding one bundle of five events (seqs 1..=5).
fn five_events() -> tempfile::TempDir {
    let mut s = Server::start();
    let (st, r) = s.ingest(&bundle("b", events("c", 5)));
    assert_eq!(st, 200, "{r}");
    let dir = s.keep_dir();
    s.stop();
    let (code, out) = admin(&["verify"], dir.path());
    assert_eq!(code, 0, "the untouched store verifies: {out}");
    dir
}

/// `leviathan verify`: the report, after checking it exits 1.
fn verify_fails(dir: &Path) -> Value {
    let (code, out, err) = admin_full(&["verify"], dir);
    assert_eq!(code, 1, "{out}\n{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["report"]["ok"], false, "{v}");
    v["report"].clone()
}

fn assert_broken(report: &Value, seq: u64, verified: u64, words: &str) {
    assert_eq!(report["first_broken_seq"], seq, "{report}");
    assert_eq!(report["verified_events"], verified, "{report}");
    let error = report["error"].as_str().unwrap();
    assert!(error.contains(words), "{error:?} does not say {words:?}");
}

/// The hex of the `prev_hash` field of a canonical record.
fn prev_hash_of(record: &str) -> String {
    let at = record.find(",\"prev_hash\":\"").expect("a prev_hash") + 14;
    record[at..at + 64].to_string()
}

#[test]
fn a_broken_prev_hash_link_is_found_though_the_record_hashes() {
    let dir = five_events();
    // seq 3 relinked to seq 1, as if seq 2 had been cut out and the rest kept.
    let to_seq1 = prev_hash_of(&stored_record(dir.path(), 2));
    let to_seq2 = prev_hash_of(&stored_record(dir.path(), 3));
    forge_event(dir.path(), 3, |r| r.replace(&to_seq2, &to_seq1));
    let report = verify_fails(dir.path());
    assert_broken(&report, 3, 2, "chain broken: prev_hash is");
    assert!(
        report["error"].as_str().unwrap().contains(&to_seq2),
        "names the hash it should link to: {report}"
    );

    // The server still starts (its head is intact) and reports the same.
    let s = Server::start_in(dir.path(), &[]);
    let (_, v) = s.get("/v1/log/verify");
    assert_broken(&v, 3, 2, "chain broken");
}

#[test]
fn a_missing_seq_is_a_gap() {
    let dir = five_events();
    with_store(dir.path(), |db| {
        keyspace(db, "log_events")
            .remove(3u64.to_be_bytes())
            .unwrap();
    });
    let report = verify_fails(dir.path());
    assert_broken(&report, 3, 2, "seq 3 is missing (next stored is 4)");
}

#[test]
fn a_record_whose_seq_disagrees_with_its_key_is_found() {
    let dir = five_events();
    forge_event(dir.path(), 3, |r| {
        assert!(r.contains(",\"seq\":3,"), "{r}");
        r.replace(",\"seq\":3,", ",\"seq\":7,")
    });
    let report = verify_fails(dir.path());
    assert_broken(&report, 3, 2, "record says seq 7 but is stored at seq 3");
}

#[test]
fn a_head_that_does_not_match_the_last_event_is_refused_at_start_up() {
    // The last event is gone, the head record still names it.
    let dir = five_events();
    with_store(dir.path(), |db| {
        keyspace(db, "log_events")
            .remove(5u64.to_be_bytes())
            .unwrap();
    });
    let report = verify_fails(dir.path());
    assert_broken(&report, 5, 4, "head record says seq 5");
    assert!(report["error"]
        .as_str()
        .unwrap()
        .contains("the log ends at seq 4"));
    let err = refused(serve_command(dir.path()));
    assert!(
        err.contains("checking the log head")
            && err.contains("does not match the last stored event"),
        "{err}"
    );

    // The head record lost its last update: it names seq 4 while seq 5 is stored.
    let dir = five_events();
    with_store(dir.path(), |db| {
        let meta = keyspace(db, "log_meta");
        let head = meta.get("head").unwrap().unwrap().to_vec();
        assert_eq!(head.len(), 40);
        assert_eq!(head[..8], 5u64.to_be_bytes());
        let record5 = stored_record_in(db, 5);
        let hash4 = hex::decode(prev_hash_of(&record5)).unwrap();
        let mut forged = 4u64.to_be_bytes().to_vec();
        forged.extend_from_slice(&hash4);
        meta.insert("head", forged).unwrap();
    });
    let report = verify_fails(dir.path());
    assert_broken(&report, 6, 5, "head record says seq 4");
    let err = refused(serve_command(dir.path()));
    assert!(
        err.contains("does not match the last stored event"),
        "{err}"
    );
}

fn stored_record_in(db: &fjall::Database, seq: u64) -> String {
    let v = keyspace(db, "log_events")
        .get(seq.to_be_bytes())
        .unwrap()
        .unwrap();
    String::from_utf8(v[32..].to_vec()).unwrap()
}
