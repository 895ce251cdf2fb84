//! Export, import and the third-party replay check, end to end on real
//! stores written by a real server: `leviathan export` → `leviathan verify
//! --export` → `leviathan import` gives the identical chain, tree root and
//! state digest; a changed export is refused with the exact seq; a signed
//! checkpoint's state digest is reproduced by `leviathan audit replay-check`;
//! and the original Python control plane's journal, written here by a Python
//! script that follows the original's hashing rules, is imported with every
//! link checked and every legacy hash kept.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use crate::common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;

/// Runs `leviathan <args>`; (exit code, stdout, stderr).
fn run(args: &[&str]) -> (i32, String, String) {
    let out = leviathan().args(args).output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn run_json(args: &[&str]) -> (i32, Value, String) {
    let (code, out, err) = run(args);
    let v =
        serde_json::from_str(&out).unwrap_or_else(|_| panic!("not JSON ({code}): {out}\n{err}"));
    (code, v, err)
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn text(s: &Server, path: &str) -> String {
    let r = s.req(reqwest::Method::GET, path).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.text().unwrap()
}

/// The root line (base64) of a signed checkpoint.
fn root_line(note: &str) -> String {
    note.lines().nth(2).unwrap().to_string()
}

fn dump(dir: &Path) -> Vec<u8> {
    let out = leviathan()
        .args(["dump", "--data-dir", p(dir)])
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

/// A server with a mixed log and two artifacts, stopped; its temp dir, its
/// verifier key and the checkpoint of the whole log.
fn written_store() -> (tempfile::TempDir, String, String) {
    let mut s = Server::start();
    let (st, a) = s.put_artifact(b"build log\n");
    assert!(st == 200 || st == 201, "{a}");
    let (st, _) = s.put_artifact("ünïcode artifact".as_bytes());
    assert!(st == 200 || st == 201);
    for b in mixed_log(4) {
        let (st, body) = s.ingest(&b);
        assert_eq!(st, 200, "{body}");
    }
    let key = text(&s, "/v1/log/public-key");
    let cp = text(&s, "/v1/log/checkpoint");
    let dir = s.keep_dir();
    s.stop();
    (dir, key, cp)
}

#[test]
fn export_verify_import_gives_the_identical_chain_root_and_digest() {
    let (dir, key, cp) = written_store();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");

    // A running server holds the store: export says so and what to do.
    {
        let s = Server::start_in(dir.path(), &[]);
        let (code, _, err) = run(&["export", "--data-dir", p(dir.path()), "--to", p(&out)]);
        assert_eq!(code, 1);
        assert!(err.contains("in use by a running server"), "{err}");
        assert!(err.contains("leviathan backup"), "{err}");
        drop(s);
    }
    // Kill left the store unflushed; a clean start and stop settles it.
    let mut s = Server::start_in(dir.path(), &[]);
    s.stop();

    let (code, m, err) = run_json(&["export", "--data-dir", p(dir.path()), "--to", p(&out)]);
    assert_eq!(code, 0, "{err}");
    let events = m["head_seq"].as_u64().unwrap();
    assert!(events > 20);
    assert_eq!(m["tree_size"], events);
    assert_eq!(m["artifacts"], 2);
    assert_eq!(m["verifier_key"].as_str().unwrap(), key.trim());
    let m_cp = m["checkpoint"].as_str().unwrap();
    assert_eq!(
        root_line(m_cp),
        root_line(&cp),
        "the checkpoint of the same tree"
    );

    // The export by hand: each line's record hashes to its hash and links.
    let log = std::fs::read_to_string(out.join("log.ndjson")).unwrap();
    let mut prev = Value::Null;
    for (i, line) in log.lines().enumerate() {
        let l: Value = serde_json::from_str(line).unwrap();
        assert_eq!(l["seq"], i as u64 + 1);
        let record = l["record"].as_str().unwrap();
        assert_eq!(sha256_hex(record.as_bytes()), l["hash"].as_str().unwrap());
        let r: Value = serde_json::from_str(record).unwrap();
        assert_eq!(r["prev_hash"], prev);
        assert_eq!(l["prev_hash"], prev);
        prev = l["hash"].clone();
    }
    assert_eq!(prev, m["head_hash"]);
    for f in std::fs::read_dir(out.join("artifacts")).unwrap() {
        let f = f.unwrap();
        assert_eq!(
            sha256_hex(&std::fs::read(f.path()).unwrap()),
            f.file_name().to_str().unwrap()
        );
    }

    // verify --export, with the key obtained out of band.
    let (code, v, err) = run_json(&["verify", "--export", p(&out), "--public-key", key.trim()]);
    assert_eq!(code, 0, "{v} {err}");
    assert_eq!(v["report"]["ok"], true);
    assert_eq!(v["report"]["verified_events"], events);
    let names: Vec<&str> = v["report"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    for n in [
        "checkpoint_signature",
        "chain",
        "head",
        "tree_root",
        "checkpoint_tree",
        "checkpoint_state",
        "artifacts",
    ] {
        assert!(names.contains(&n), "{names:?}");
    }
    // A key that is not the log's fails the signature check.
    let (code, other, _) = run(&[
        "audit",
        "keygen",
        "--name",
        "other",
        "--out",
        p(&work.path().join("other.key")),
    ]);
    assert_eq!(code, 0);
    let (code, v, _) = run_json(&["verify", "--export", p(&out), "--public-key", other.trim()]);
    assert_eq!((code, &v["report"]["ok"]), (1, &json!(false)), "{v}");

    // Import into a new data dir.
    let imported = work.path().join("imported");
    let (code, r, err) = run_json(&["import", p(&out), "--data-dir", p(&imported)]);
    assert_eq!(code, 0, "{r} {err}");
    assert_eq!(r["tree_root_matches"], true);
    assert_eq!(r["state_digest_matches"], true);
    assert_eq!(r["head_hash"], m["head_hash"]);
    assert_eq!(r["state_digest"], m["state_digest"]);
    assert_eq!(r["artifacts"], 2);
    // Without the log's key, nothing says who wrote the export: the answer
    // and the log say so.
    assert_eq!(r["signature"], "not_checked", "{r}");
    assert!(err.contains("no --public-key"), "{err}");
    // The graph is the same, record for record.
    assert_eq!(dump(dir.path()), dump(&imported));
    // With the key, its checkpoint is checked.
    let keyed = work.path().join("imported-keyed");
    let (code, r, err) = run_json(&[
        "import",
        p(&out),
        "--data-dir",
        p(&keyed),
        "--public-key",
        key.trim(),
    ]);
    assert_eq!(code, 0, "{r} {err}");
    assert_eq!(r["signature"], "verified", "{r}");
    assert!(!err.contains("no --public-key"), "{err}");
    // A non-empty data dir is refused.
    let (code, _, err) = run(&["import", p(&out), "--data-dir", p(&imported)]);
    assert_eq!(code, 1);
    assert!(err.contains("not empty"), "{err}");

    // The imported store serves the same log: same head, same records,
    // same tree root (signed by its own new key), same artifacts, and the
    // old bundles are still recognized.
    let mut orig = Server::start_in(dir.path(), &[]);
    let orig_events = orig.all_events();
    let orig_projection = orig.get("/v1/projection").1;
    orig.stop();
    let s = Server::start_in(&imported, &[]);
    assert_eq!(s.all_events(), orig_events);
    assert_eq!(root_line(&text(&s, "/v1/log/checkpoint")), root_line(&cp));
    assert_eq!(
        s.get("/v1/projection").1["state_digest"],
        orig_projection["state_digest"]
    );
    assert_eq!(
        s.get_artifact(&sha256_hex(b"build log\n"))
            .bytes()
            .unwrap()
            .as_ref(),
        b"build log\n"
    );
    let (st, again) = s.ingest(&mixed_log(4)[1]);
    assert_eq!(
        (st, again["status"].as_str()),
        (200, Some("duplicate")),
        "{again}"
    );
}

/// An export that fails (here: the store's chain is broken at seq 5) leaves
/// no directory behind, so the same `--to` can be used again.
#[test]
fn a_failed_export_leaves_nothing_behind() {
    let (dir, _, _) = written_store();
    let record = stored_record(dir.path(), 5);
    let id = record
        .split("\"event_id\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    tamper_with_event(dir.path(), 5, &id, &format!("{id}X"));
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let (code, _, err) = run(&["export", "--data-dir", p(dir.path()), "--to", p(&out)]);
    assert_eq!(code, 1, "{err}");
    assert!(!out.exists(), "a failed export left {}", out.display());
    // An existing empty target is emptied again, not removed.
    std::fs::create_dir(&out).unwrap();
    let (code, _, _) = run(&["export", "--data-dir", p(dir.path()), "--to", p(&out)]);
    assert_eq!(code, 1);
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
}

#[test]
fn a_changed_export_is_refused_with_the_exact_seq() {
    let (dir, key, _) = written_store();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let (code, _, err) = run(&["export", "--data-dir", p(dir.path()), "--to", p(&out)]);
    assert_eq!(code, 0, "{err}");
    let log_path = out.join("log.ndjson");
    let original = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<&str> = original.lines().collect();

    let check = |edited: Vec<String>, seq: u64, why: &str| {
        std::fs::write(&log_path, edited.join("\n") + "\n").unwrap();
        let (code, v, _) = run_json(&["verify", "--export", p(&out), "--public-key", key.trim()]);
        assert_eq!(code, 1, "{v}");
        assert_eq!(v["report"]["first_broken_seq"], seq, "{v}");
        assert!(
            v["report"]["error"].as_str().unwrap().contains(why),
            "{why}: {v}"
        );
        // import refuses it and writes nothing.
        let target = work.path().join(format!("imp-{seq}"));
        let (code, _, err) = run(&["import", p(&out), "--data-dir", p(&target)]);
        assert_eq!(code, 1);
        assert!(err.contains("does not verify"), "{err}");
        assert!(!target.exists());
    };
    let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    // One changed byte inside record 3 (its hash kept).
    let mut e = owned(&lines);
    e[2] = e[2].replacen("worker-1", "worker-2", 1);
    check(e, 3, "hash mismatch");
    // Record 4 dropped.
    let mut e = owned(&lines);
    e.remove(3);
    check(e, 4, "seq 4 is missing");
    // Records 5 and 6 swapped.
    let mut e = owned(&lines);
    e.swap(4, 5);
    check(e, 5, "seq 5 is missing");
    // A record rewritten with its hash recomputed: the next link breaks.
    let mut e = owned(&lines);
    let mut l: Value = serde_json::from_str(&e[6]).unwrap();
    let rec = l["record"]
        .as_str()
        .unwrap()
        .replacen("worker-1", "worker-9", 1);
    l["hash"] = json!(sha256_hex(rec.as_bytes()));
    l["record"] = json!(rec);
    e[6] = l.to_string();
    check(e, 8, "chain broken");
    // Truncated: the manifest's head is not reached.
    std::fs::write(&log_path, lines[..10].join("\n") + "\n").unwrap();
    let (code, v, _) = run_json(&["verify", "--export", p(&out)]);
    assert_eq!(code, 1);
    let head = v["report"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "head")
        .unwrap()
        .clone();
    assert_eq!(head["ok"], false, "{v}");
    assert!(
        head["detail"].as_str().unwrap().contains("ends at seq 10"),
        "{head}"
    );
    // An artifact changed.
    std::fs::write(&log_path, &original).unwrap();
    let a = out.join("artifacts").join(sha256_hex(b"build log\n"));
    std::fs::write(&a, b"build log!\n").unwrap();
    let (code, v, _) = run_json(&["verify", "--export", p(&out)]);
    assert_eq!(code, 1);
    assert!(v.to_string().contains("hashes to"), "{v}");
    std::fs::write(&a, b"build log\n").unwrap();
    let (code, v, _) = run_json(&["verify", "--export", p(&out)]);
    assert_eq!(code, 0, "{v}");

    // The bundles' idempotency records: not hashed, but checked line by line
    // and counted against the manifest.
    let bundles_path = out.join("bundles.ndjson");
    let bundles = std::fs::read_to_string(&bundles_path).unwrap();
    let bundle_check = |why: &str| {
        let (code, v, _) = run_json(&["verify", "--export", p(&out)]);
        assert_eq!(code, 1, "{v}");
        let c = v["report"]["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == "bundles")
            .unwrap()
            .clone();
        assert_eq!(c["ok"], false, "{v}");
        assert!(c["detail"].as_str().unwrap().contains(why), "{why}: {c}");
        let target = work.path().join("imp-bundles");
        let (code, _, err) = run(&["import", p(&out), "--data-dir", p(&target)]);
        assert_eq!(code, 1, "{err}");
        assert!(!target.exists());
    };
    let mut lines: Vec<String> = bundles.lines().map(String::from).collect();
    assert!(lines.len() >= 3);
    lines[1] = "{\"bundle_id\": 7}".into();
    std::fs::write(&bundles_path, lines.join("\n") + "\n").unwrap();
    bundle_check("bundles.ndjson line 2: not a bundle line");
    let mut far: Value = serde_json::from_str(bundles.lines().nth(2).unwrap()).unwrap();
    far["last_seq"] = json!(1_000_000);
    lines[1] = bundles.lines().nth(1).unwrap().into();
    lines[2] = far.to_string();
    std::fs::write(&bundles_path, lines.join("\n") + "\n").unwrap();
    bundle_check("bundles.ndjson line 3: seqs");
    lines.remove(2);
    std::fs::write(&bundles_path, lines.join("\n") + "\n").unwrap();
    bundle_check("the manifest says");
    std::fs::remove_file(&bundles_path).unwrap();
    bundle_check("cannot read bundles.ndjson");
    std::fs::write(&bundles_path, &bundles).unwrap();

    // An import that fails after it began writing (here: a projector that
    // cannot be loaded for the rebuild) leaves no data dir behind, so it can
    // simply be run again.
    let target = work.path().join("imp-late");
    let out_import = leviathan()
        .args(["import", p(&out), "--data-dir", p(&target)])
        .env("LEVIATHAN_PROJECTORS", "core,/nonexistent/projector.wasm")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out_import.stderr);
    assert_eq!(out_import.status.code(), Some(1), "{err}");
    assert!(err.contains("/nonexistent/projector.wasm"), "{err}");
    assert!(!target.exists(), "{err}");
    let (code, _, err) = run(&["import", p(&out), "--data-dir", p(&target)]);
    assert_eq!(code, 0, "{err}");
}

/// With `--public-key`, an export must be signed by that key over its whole
/// log: an export whose checkpoint was removed, or replaced by an older
/// genuine one (which leaves the later records unsigned), is refused by
/// `verify --export` and `import`, not reported as verified.
#[test]
fn an_export_not_signed_over_its_whole_log_is_refused_with_a_key() {
    let mut s = Server::start();
    let bundles = mixed_log(4);
    let (first, rest) = bundles.split_at(2);
    for b in first {
        assert_eq!(s.ingest(b).0, 200);
    }
    let older = text(&s, "/v1/log/checkpoint");
    for b in rest {
        assert_eq!(s.ingest(b).0, 200);
    }
    let key = text(&s, "/v1/log/public-key");
    let dir = s.keep_dir();
    s.stop();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let (code, _, err) = run(&["export", "--data-dir", p(dir.path()), "--to", p(&out)]);
    assert_eq!(code, 0, "{err}");
    let manifest_path = out.join("manifest.json");
    let honest: Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    let (code, v, _) = run_json(&["verify", "--export", p(&out), "--public-key", key.trim()]);
    assert_eq!(code, 0, "the honest export verifies: {v}");

    let failed = |v: &Value, name: &str| -> String {
        let checks = v["report"]["checks"].as_array().unwrap();
        let c = checks
            .iter()
            .find(|c| c["check"] == name)
            .unwrap_or_else(|| panic!("no {name} check: {v}"));
        assert_eq!(c["ok"], false, "{v}");
        c["detail"].as_str().unwrap().to_string()
    };
    let refused = |m: &Value, check: &str, why: &str| {
        std::fs::write(&manifest_path, serde_json::to_string_pretty(m).unwrap()).unwrap();
        let (code, v, _) = run_json(&["verify", "--export", p(&out), "--public-key", key.trim()]);
        assert_eq!(code, 1, "{v}");
        let detail = failed(&v, check);
        assert!(detail.contains(why), "{why}: {detail}");
        let target = work.path().join("imported");
        let (code, _, err) = run(&[
            "import",
            p(&out),
            "--data-dir",
            p(&target),
            "--public-key",
            key.trim(),
        ]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("does not verify"), "{err}");
        assert!(!target.exists());
    };

    // The checkpoint removed.
    let mut m = honest.clone();
    m.as_object_mut().unwrap().remove("checkpoint");
    refused(&m, "checkpoint_signature", "nothing in it is signed");
    // Without a key that only says the export is self-consistent.
    let (code, v, _) = run_json(&["verify", "--export", p(&out)]);
    assert_eq!(code, 0, "{v}");

    // An older genuine checkpoint in its place.
    let mut m = honest.clone();
    m["checkpoint"] = json!(older);
    refused(&m, "checkpoint_state", "covered by no signature");
}

#[test]
fn replay_check_reproduces_the_signed_state_digest() {
    let mut s = Server::start();
    for b in mixed_log(3) {
        assert_eq!(s.ingest(&b).0, 200);
    }
    let key = text(&s, "/v1/log/public-key");
    // The checkpoint an auditor saved at this point…
    let (_, head) = s.get("/v1/log/head");
    let size = head["seq"].as_u64().unwrap();
    let cp_old = text(&s, &format!("/v1/log/checkpoint?tree_size={size}"));
    // …while the log went on growing.
    for b in mixed_log(6).into_iter().skip(4) {
        let (st, body) = s.ingest(&b);
        assert_eq!(st, 200, "{body}");
    }
    let cp_new = text(&s, "/v1/log/checkpoint");
    let dir = s.keep_dir();
    s.stop();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    assert_eq!(
        run(&["export", "--data-dir", p(dir.path()), "--to", p(&out)]).0,
        0
    );
    std::fs::write(work.path().join("key"), &key).unwrap();

    for (name, cp) in [("old", &cp_old), ("new", &cp_new)] {
        let f = work.path().join(name);
        std::fs::write(&f, cp).unwrap();
        let (code, r, err) = run_json(&[
            "audit",
            "replay-check",
            p(&f),
            p(&out),
            "--public-key",
            p(&work.path().join("key")),
            "--scratch-dir",
            p(work.path()),
        ]);
        assert_eq!(code, 0, "{name}: {r} {err}");
        let checks: Vec<(String, bool)> = r["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["check"].as_str().unwrap().into(),
                    c["ok"].as_bool().unwrap(),
                )
            })
            .collect();
        for c in [
            "checkpoint_signature",
            "export_chain",
            "tree_root",
            "chain_head",
            "projector_set",
            "state_digest",
        ] {
            assert!(checks.contains(&(c.to_string(), true)), "{c}: {r}");
        }
    }
    // The scratch stores are gone.
    let left: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("leviathan-replay-check"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // A history rewritten before the old checkpoint (chain recomputed) does
    // not replay to what it signed.
    let log_path = out.join("log.ndjson");
    let mut prev: Option<String> = None;
    let mut lines = Vec::new();
    for (i, line) in std::fs::read_to_string(&log_path)
        .unwrap()
        .lines()
        .enumerate()
    {
        let mut l: Value = serde_json::from_str(line).unwrap();
        let mut rec: Value = serde_json::from_str(l["record"].as_str().unwrap()).unwrap();
        if i == 2 {
            rec["payload"]["attempt_number"] = json!(99);
        }
        rec["prev_hash"] = prev.clone().map_or(Value::Null, Value::String);
        let bytes = serde_json_canonicalizer::to_vec(&rec).unwrap();
        let h = sha256_hex(&bytes);
        l["record"] = json!(String::from_utf8(bytes).unwrap());
        l["prev_hash"] = rec["prev_hash"].clone();
        l["hash"] = json!(h);
        prev = Some(h);
        lines.push(l.to_string());
    }
    std::fs::write(&log_path, lines.join("\n") + "\n").unwrap();
    let f = work.path().join("old");
    let (code, r, _) = run_json(&[
        "audit",
        "replay-check",
        p(&f),
        p(&out),
        "--public-key",
        key.trim(),
        "--scratch-dir",
        p(work.path()),
    ]);
    assert_eq!(code, 1, "{r}");
    let failed: Vec<&str> = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    assert!(failed.contains(&"tree_root"), "{r}");
    assert!(failed.contains(&"chain_head"), "{r}");
}

/// Equal as JSON values, numbers compared as doubles (what JCS keeps).
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_json(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

/// The journals of tests/legacy/make_journal.py: (good, damaged).
fn journals(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let good = dir.join("good.ndjson");
    let bad = dir.join("damaged.ndjson");
    let status = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/legacy/make_journal.py"
        ))
        .args([&good, &bad])
        .status()
        .expect("python3 runs the fixture script (it is on every machine of this project)");
    assert!(status.success());
    (good, bad)
}

#[test]
fn a_legacy_journal_is_imported_with_every_link_checked() {
    let work = tempfile::tempdir().unwrap();
    let (good, _) = journals(work.path());
    let data = work.path().join("data");
    let (code, s, err) = run_json(&["import", "--legacy", p(&good), "--data-dir", p(&data)]);
    assert_eq!(code, 0, "{s} {err}");
    assert_eq!(s["lines"], 8);
    assert_eq!(s["events"], 8);
    assert_eq!(s["verified"], 8, "{s}");
    assert_eq!(s["unverified"], 0);
    assert_eq!(s["verified_in_other_form"], 0);
    assert_eq!(s["imported"], true);
    assert_eq!(s["head_seq"], 8);
    assert_eq!(s["renamed_duplicates"].as_array().unwrap().len(), 1, "{s}");
    let journal = std::fs::read_to_string(&good).unwrap();
    let jl: Vec<Value> = journal
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(s["legacy_head_hash"], jl[7]["hash"]);

    // Our chain verifies, and each record keeps its legacy hash and the exact
    // text it covers.
    let (code, v, _) = run_json(&["verify", "--data-dir", p(&data)]);
    assert_eq!((code, &v["report"]["ok"]), (0, &json!(true)), "{v}");
    for seq in 1..=8u64 {
        let rec: Value = serde_json::from_str(&stored_record(&data, seq)).unwrap();
        let legacy = &rec["legacy"];
        let j = &jl[seq as usize - 1];
        assert_eq!(legacy["hash"], j["hash"]);
        assert_eq!(legacy["prev_hash"], j["prev_hash"]);
        let hashed = legacy["hashed"].as_str().unwrap();
        assert_eq!(sha256_hex(hashed.as_bytes()), j["hash"].as_str().unwrap());
        assert!(hashed.is_ascii(), "ensure_ascii: {hashed}");
        assert!(legacy.get("unverified").is_none());
        // Our payload is the journal's (as JSON values: JCS writes 2.0 as 2).
        assert!(
            same_json(&rec["payload"], &j["payload"]),
            "seq {seq}: {rec} {j}"
        );
    }
    // The original's published vectors.
    let r1: Value = serde_json::from_str(&stored_record(&data, 1)).unwrap();
    assert_eq!(
        r1["legacy"]["hash"],
        "c6465f43989011527c7dbd3036b03e01cdbe3813f782f9aa7a612dea209fb4f7"
    );
    let r2: Value = serde_json::from_str(&stored_record(&data, 2)).unwrap();
    assert_eq!(
        r2["legacy"]["hashed"],
        r#"{"actor_id":null,"event_id":"e2","event_type":"custom.thing","payload":{"k":"\u00e9","n":1.0,"z":{"a":[2],"b":1}},"prev_hash":"c6465f43989011527c7dbd3036b03e01cdbe3813f782f9aa7a612dea209fb4f7","timestamp":"2026-01-24T10:00:09.500000"}"#
    );
    let r8: Value = serde_json::from_str(&stored_record(&data, 8)).unwrap();
    assert_eq!(r8["event_id"], "topo-1@legacy-line-9");
    // The server starts on it and serves the graph the projectors built.
    let s = Server::start_in(&data, &[]);
    let (st, a) = s.get("/v1/attempts/att-1");
    assert_eq!(st, 200);
    assert_eq!(a["attempt_node"]["properties"]["status"], "failed", "{a}");
    let (_, e) = s.get("/v1/events/e2");
    assert_eq!(e["timestamp"], "2026-01-24T10:00:09.500Z");
}

#[test]
fn a_damaged_legacy_journal_is_reported_link_by_link() {
    let work = tempfile::tempdir().unwrap();
    let (_, bad) = journals(work.path());
    let data = work.path().join("data");
    let (code, s, err) = run_json(&["import", "--legacy", p(&bad), "--data-dir", p(&data)]);
    assert_eq!(code, 1, "{s}");
    assert!(err.contains("nothing was imported"), "{err}");
    assert_eq!(s["imported"], false);
    assert!(!data.exists(), "nothing is written");
    let findings = s["findings"].as_array().unwrap();
    let at = |line: u64| {
        findings
            .iter()
            .find(|f| f["line"] == line)
            .unwrap_or_else(|| panic!("no finding for line {line}: {s}"))
            .clone()
    };
    // Lines count the blank line after line 2.
    let edited = at(6);
    assert_eq!(edited["problem"], "hash_mismatch", "{edited}");
    assert!(
        edited["hints"].to_string().contains("non-ASCII"),
        "{edited}"
    );
    let other = at(7);
    assert_eq!(other["problem"], "other_form", "{other}");
    assert!(
        other["why"]
            .as_str()
            .unwrap()
            .contains("ensure_ascii=False"),
        "{other}"
    );
    let rewritten = at(8);
    assert_eq!(rewritten["problem"], "hash_mismatch", "{rewritten}");
    assert!(
        rewritten["hints"]
            .to_string()
            .contains("payload.score is the integer 1"),
        "{rewritten}"
    );
    assert_eq!(s["unverified"], 2);
    assert_eq!(s["verified_in_other_form"], 1);
    assert_eq!(s["chain_breaks"], 0, "the links themselves hold");

    // With --accept-unverified the events are imported, each saying why.
    let (code, s, err) = run_json(&[
        "import",
        "--legacy",
        p(&bad),
        "--data-dir",
        p(&data),
        "--accept-unverified",
    ]);
    assert_eq!(code, 0, "{s} {err}");
    assert_eq!(s["imported"], true);
    let r: Value = serde_json::from_str(&stored_record(&data, 5)).unwrap();
    assert!(
        r["legacy"]["unverified"]
            .as_str()
            .unwrap()
            .contains("hash mismatch"),
        "{r}"
    );
    let r: Value = serde_json::from_str(&stored_record(&data, 6)).unwrap();
    assert!(r["legacy"]["form"]
        .as_str()
        .unwrap()
        .contains("ensure_ascii=False"));
    assert_eq!(
        sha256_hex(r["legacy"]["hashed"].as_str().unwrap().as_bytes()),
        r["legacy"]["hash"].as_str().unwrap()
    );
}

/// `verify --export` and `verify` draw a progress bar on a terminal (run
/// here under `script`, which gives the command a pseudo-terminal) and
/// nothing when stderr is not one.
#[test]
fn verify_draws_a_progress_bar_only_on_a_terminal() {
    let (dir, _, _) = written_store();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    assert_eq!(
        run(&["export", "--data-dir", p(dir.path()), "--to", p(&out)]).0,
        0
    );
    let bin = env!("CARGO_BIN_EXE_leviathan");
    for args in [
        format!("{bin} verify --export {}", p(&out)),
        format!("{bin} verify --data-dir {}", p(dir.path())),
    ] {
        // Not a terminal: the report only.
        let (code, _, err) = run(&args.split(' ').skip(1).collect::<Vec<_>>());
        assert_eq!(code, 0);
        assert!(!err.contains("verifying"), "{err}");
        let Ok(tty) = std::process::Command::new("script")
            .args(["-qec", &args, "/dev/null"])
            .env("LEVIATHAN_LOG", "warn")
            .env("LEVIATHAN_PROJECTOR_CACHE", shared_cache())
            .output()
        else {
            println!("SKIP: util-linux `script` is not installed");
            return;
        };
        let text = String::from_utf8_lossy(&tty.stdout);
        assert!(tty.status.success(), "{text}");
        assert!(text.contains("verifying ["), "{text}");
        assert!(text.contains(" events, "), "{text}");
    }
}

/// An import or restore killed before it finished (here at the last moment,
/// its data all written: `LEVIATHAN_TEST_ABORT_BEFORE_FINISHING` aborts the
/// process as a kill would) leaves a data dir that every command refuses: it
/// would otherwise verify and serve a shorter log, or miss artifacts, as if
/// whole.
#[test]
fn a_killed_import_or_restore_leaves_a_data_dir_nothing_opens() {
    let (dir, _, _) = written_store();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("export");
    let (code, _, err) = run(&["export", "--data-dir", p(dir.path()), "--to", p(&out)]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !out.join("UNFINISHED").exists(),
        "a finished export keeps its mark"
    );
    // A backup to restore, from a server on the same store.
    let s = Server::start_in(dir.path(), &[]);
    let backup = work.path().join("backup");
    let (st, b) = s.post("/v1/admin/backup", &json!({ "to": backup }));
    assert_eq!(st, 200, "{b}");
    drop(s);

    let killed = |args: &[&str], target: &Path| {
        let o = leviathan()
            .args(args)
            .env("LEVIATHAN_TEST_ABORT_BEFORE_FINISHING", "1")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), None, "not killed: {o:?}");
        assert!(target.join("UNFINISHED").exists());
    };
    let imported = work.path().join("imported");
    killed(&["import", p(&out), "--data-dir", p(&imported)], &imported);
    let restored = work.path().join("restored");
    killed(
        &["restore", "--from", p(&backup), "--data-dir", p(&restored)],
        &restored,
    );
    for (what, data_dir) in [("import", &imported), ("restore", &restored)] {
        for cmd in [
            vec!["verify", "--data-dir", p(data_dir)],
            vec!["rebuild", "--data-dir", p(data_dir)],
            vec!["dump", "--data-dir", p(data_dir)],
            vec![
                "export",
                "--data-dir",
                p(data_dir),
                "--to",
                p(&work.path().join("x")),
            ],
        ] {
            let (code, _, err) = run(&cmd);
            assert_eq!(code, 1, "{what}: {cmd:?}: {err}");
            assert!(
                err.contains(&format!("holds an unfinished {what}")),
                "{what}: {cmd:?}: {err}"
            );
        }
        let err = refused(serve_command(data_dir));
        assert!(
            err.contains(&format!("holds an unfinished {what}")),
            "{err}"
        );
        assert!(err.contains("Remove the directory"), "{err}");
    }
    // Done again into a new dir, they finish and leave no mark.
    let again = work.path().join("again");
    let (code, _, err) = run(&["import", p(&out), "--data-dir", p(&again)]);
    assert_eq!(code, 0, "{err}");
    assert!(!again.join("UNFINISHED").exists());
    let (code, _, err) = run(&["verify", "--data-dir", p(&again)]);
    assert_eq!(code, 0, "{err}");
}
