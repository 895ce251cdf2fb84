//! The verifiable log, end to end on a real server and a real store: every
//! proof is checked by an RFC 9162 verifier written here from the RFC's
//! algorithms (§2.1.3.2, §2.1.4.2), itself checked on the published RFC 6962
//! vectors, and every checkpoint by a C2SP signed-note verifier written here
//! from the spec; nothing below calls the server's proof or note code.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use crate::common;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::Path;

// ------------------------------------------------ an independent RFC 9162 verifier

type H = [u8; 32];

fn sha(parts: &[&[u8]]) -> H {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn leaf(entry: &[u8]) -> H {
    sha(&[&[0], entry])
}

fn node(l: &H, r: &H) -> H {
    sha(&[&[1], l, r])
}

/// MTH(D[n]) by the RFC's recursive definition (§2.1.1).
fn mth(leaves: &[H]) -> H {
    match leaves.len() {
        0 => sha(&[]),
        1 => leaves[0],
        n => {
            let mut k = 1;
            while k * 2 < n {
                k *= 2;
            }
            node(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

/// RFC 9162 §2.1.3.2, step by step.
fn rfc_verify_inclusion(leaf_index: u64, tree_size: u64, hash: H, path: &[H], root: H) -> bool {
    if leaf_index >= tree_size {
        return false;
    }
    let (mut f, mut s) = (leaf_index, tree_size - 1);
    let mut r = hash;
    for p in path {
        if s == 0 {
            return false;
        }
        if f % 2 == 1 || f == s {
            r = node(p, &r);
            if f % 2 == 0 {
                loop {
                    f >>= 1;
                    s >>= 1;
                    if f % 2 == 1 || f == 0 {
                        break;
                    }
                }
            }
        } else {
            r = node(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == root
}

/// RFC 9162 §2.1.4.2, step by step (precondition 0 < first < second).
fn rfc_verify_consistency(
    first: u64,
    second: u64,
    first_hash: H,
    second_hash: H,
    path: &[H],
) -> bool {
    if !(0 < first && first < second) || path.is_empty() {
        return false;
    }
    let mut path = path.to_vec();
    if first.is_power_of_two() {
        path.insert(0, first_hash);
    }
    let (mut f, mut s) = (first - 1, second - 1);
    while f % 2 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if s == 0 {
            return false;
        }
        if f % 2 == 1 || f == s {
            fr = node(c, &fr);
            sr = node(c, &sr);
            if f % 2 == 0 {
                loop {
                    f >>= 1;
                    s >>= 1;
                    if f % 2 == 1 || f == 0 {
                        break;
                    }
                }
            }
        } else {
            sr = node(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    fr == first_hash && sr == second_hash && s == 0
}

fn hx(s: &str) -> H {
    hex::decode(s).unwrap().try_into().unwrap()
}

fn hashes(v: &Value) -> Vec<H> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| hx(h.as_str().unwrap()))
        .collect()
}

#[test]
fn the_independent_verifier_accepts_the_published_vectors() {
    // RFC 6962 vectors as published by transparency-dev/merkle.
    let leaves: Vec<H> = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
    .iter()
    .map(|x| leaf(&hex::decode(x).unwrap()))
    .collect();
    assert_eq!(
        mth(&leaves),
        hx("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")
    );
    assert_eq!(
        mth(&leaves[..5]),
        hx("4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4")
    );
    let p = [
        hx("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        hx("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
        hx("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    ];
    assert!(rfc_verify_inclusion(5, 8, leaves[5], &p, mth(&leaves)));
    assert!(!rfc_verify_inclusion(4, 8, leaves[5], &p, mth(&leaves)));
    let c = [
        hx("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
        hx("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
        hx("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    ];
    assert!(rfc_verify_consistency(
        6,
        7,
        mth(&leaves[..6]),
        mth(&leaves[..7]),
        &c
    ));
    assert!(!rfc_verify_consistency(
        6,
        7,
        mth(&leaves[..5]),
        mth(&leaves[..7]),
        &c
    ));
}

// ------------------------------------------- an independent C2SP signed-note verifier

/// A checkpoint opened with a verifier key: (origin, size, root, extension lines).
#[derive(Debug, Clone)]
struct Opened {
    origin: String,
    size: u64,
    root: H,
    ext: Vec<String>,
}

/// c2sp.org/signed-note and c2sp.org/tlog-checkpoint, from the specs.
fn open_checkpoint(note: &str, vkey: &str) -> Result<Opened, String> {
    // Verifier key: name+hex(key ID)+base64(0x01 || pubkey).
    let mut parts = vkey.trim().splitn(3, '+');
    let (name, id_hex, key_b64) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let key = B64.decode(key_b64).unwrap();
    assert_eq!((key.len(), key[0]), (33, 1), "an Ed25519 verifier key");
    let id = sha(&[name.as_bytes(), b"\n", &key]);
    assert_eq!(
        hex::encode(&id[..4]),
        id_hex,
        "key ID = SHA-256(name || 0x0A || 0x01 || key)[:4]"
    );
    let pk = ed25519_dalek::VerifyingKey::from_bytes(&key[1..].try_into().unwrap()).unwrap();
    // Text: up to and including the newline before the last blank line.
    if note.chars().any(|c| c < ' ' && c != '\n') {
        return Err("control character".into());
    }
    let split = note.rfind("\n\n").ok_or("no blank line")?;
    let (text, sigs) = (&note[..split + 1], &note[split + 2..]);
    let mut verified = false;
    for line in sigs.lines() {
        let rest = line
            .strip_prefix("\u{2014} ")
            .ok_or("signature line without em dash")?;
        let (n, b) = rest.split_once(' ').ok_or("no signature")?;
        let blob = B64.decode(b).map_err(|_| "bad base64")?;
        if n != name || blob[..4] != id[..4] {
            continue; // unknown keys are ignored
        }
        let sig = ed25519_dalek::Signature::from_bytes(
            &blob[4..].try_into().map_err(|_| "signature length")?,
        );
        pk.verify_strict(text.as_bytes(), &sig)
            .map_err(|_| "bad signature".to_string())?;
        verified = true;
    }
    if !verified {
        return Err("no signature by the key".into());
    }
    let lines: Vec<&str> = text.trim_end_matches('\n').split('\n').collect();
    Ok(Opened {
        origin: lines[0].to_string(),
        size: lines[1].parse().map_err(|_| "bad size")?,
        root: B64
            .decode(lines[2])
            .map_err(|_| "bad root")?
            .try_into()
            .map_err(|_| "root length")?,
        ext: lines[3..].iter().map(|s| s.to_string()).collect(),
    })
}

// ------------------------------------------------------------------ helpers

fn text(s: &Server, path: &str) -> (u16, String) {
    let r = s.req(reqwest::Method::GET, path).send().unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

fn checkpoint(s: &Server, size: Option<u64>) -> String {
    let path = match size {
        Some(n) => format!("/v1/log/checkpoint?tree_size={n}"),
        None => "/v1/log/checkpoint".into(),
    };
    let (st, body) = text(s, &path);
    assert_eq!(st, 200, "{body}");
    body
}

/// The stored record of an event as served, re-encoded here with RFC 8785
/// (the record is the JCS of these eight members, docs/HASHING.md).
fn record_of(e: &Value) -> Vec<u8> {
    let mut m = serde_json::Map::new();
    for k in [
        "seq",
        "event_id",
        "event_type",
        "timestamp",
        "actor_id",
        "target",
        "payload",
        "prev_hash",
    ] {
        m.insert(k.into(), e[k].clone());
    }
    let bytes = serde_json_canonicalizer::to_vec(&Value::Object(m)).unwrap();
    assert_eq!(
        hex::encode(sha(&[&bytes])),
        e["hash"].as_str().unwrap(),
        "the record is what the chain hashes"
    );
    bytes
}

fn ingest_n(s: &Server, prefix: &str, n: usize) {
    let (st, body) = s.ingest(&bundle(prefix, events(prefix, n)));
    assert_eq!(st, 200, "{body}");
}

// ------------------------------------------------------------------- tests

#[test]
fn proofs_at_every_size_verify_independently() {
    let s = Server::start();
    // Sizes 1, 5, 8, 13, 21 by bundles of 1, 4, 3, 5, 8.
    let mut sizes = Vec::new();
    for (i, n) in [1usize, 4, 3, 5, 8].iter().enumerate() {
        ingest_n(&s, &format!("b{i}"), *n);
        sizes.push(sizes.last().copied().unwrap_or(0) + *n as u64);
    }
    let (st, vkey) = text(&s, "/v1/log/public-key");
    assert_eq!(st, 200);
    let events = s.all_events();
    let leaves: Vec<H> = events.iter().map(|e| leaf(&record_of(e))).collect();
    let mut roots = vec![];
    for &n in &sizes {
        let note = checkpoint(&s, Some(n));
        let c = open_checkpoint(&note, &vkey).unwrap();
        assert_eq!(c.size, n);
        assert_eq!(
            c.origin,
            vkey.split('+').next().unwrap(),
            "origin = key name"
        );
        assert_eq!(
            c.root,
            mth(&leaves[..n as usize]),
            "the root is RFC 9162's MTH of the records"
        );
        let head = &events[n as usize - 1];
        assert_eq!(
            c.ext[0],
            format!("chain-head {}", head["hash"].as_str().unwrap())
        );
        assert!(
            c.ext[1].starts_with("state-digest ") && c.ext[2].starts_with("projector-set "),
            "{:?}",
            c.ext
        );
        for (i, e) in events[..n as usize].iter().enumerate() {
            let id = e["event_id"].as_str().unwrap();
            let (st, p) = s.get(&format!("/v1/events/{id}/proof?tree_size={n}"));
            assert_eq!(st, 200, "{p}");
            assert_eq!(p["leaf_index"], i as u64);
            assert_eq!(p["tree_size"], n);
            assert!(
                rfc_verify_inclusion(i as u64, n, leaves[i], &hashes(&p["path"]), c.root),
                "inclusion of {id} in {n}: {p}"
            );
            assert!(
                !rfc_verify_inclusion(
                    i as u64,
                    n,
                    leaves[(i + 1) % n as usize],
                    &hashes(&p["path"]),
                    c.root
                ) || n == 1
            );
        }
        roots.push(c.root);
    }
    // Consistency between every pair of sizes.
    for (a, &m) in sizes.iter().enumerate() {
        for (b, &n) in sizes.iter().enumerate().skip(a + 1) {
            let (st, p) = s.get(&format!("/v1/log/consistency?from={m}&to={n}"));
            assert_eq!(st, 200, "{p}");
            assert!(
                rfc_verify_consistency(m, n, roots[a], roots[b], &hashes(&p["path"])),
                "{m} -> {n}: {p}"
            );
            assert!(!rfc_verify_consistency(
                m,
                n,
                roots[b],
                roots[a],
                &hashes(&p["path"])
            ));
        }
    }
    // The latest checkpoint is the whole tree.
    let latest = open_checkpoint(&checkpoint(&s, None), &vkey).unwrap();
    assert_eq!((latest.size, latest.root), (21, mth(&leaves)));
}

#[test]
fn bad_parameters_are_clear_errors() {
    let s = Server::start();
    ingest_n(&s, "p", 3);
    // With `details.parameter` when one parameter is at fault, whether
    // malformed or out of range.
    let bad = "invalid_parameter";
    for (path, status, code, parameter) in [
        (
            "/v1/log/checkpoint?tree_size=abc",
            400,
            bad,
            Some("tree_size"),
        ),
        ("/v1/log/checkpoint?tree_size=", 400, bad, Some("tree_size")),
        ("/v1/log/consistency?from=", 400, bad, Some("from")),
        ("/v1/log/consistency?from=1&to=", 400, bad, Some("to")),
        (
            "/v1/log/checkpoint?tree_size=-1",
            400,
            bad,
            Some("tree_size"),
        ),
        (
            "/v1/log/checkpoint?tree_size=4",
            400,
            bad,
            Some("tree_size"),
        ),
        (
            "/v1/events/p-2/proof?tree_size=2",
            400,
            bad,
            Some("tree_size"),
        ),
        (
            "/v1/events/p-0/proof?tree_size=99",
            400,
            bad,
            Some("tree_size"),
        ),
        ("/v1/events/nope/proof", 404, "not_found", None),
        ("/v1/events/nope/bundle", 404, "not_found", None),
        ("/v1/log/consistency", 400, bad, Some("from")),
        ("/v1/log/consistency?from=4", 400, bad, Some("from")),
        // Two parameters that disagree: neither alone is at fault.
        ("/v1/log/consistency?from=3&to=2", 400, bad, None),
        ("/v1/log/consistency?from=1&to=9", 400, bad, Some("to")),
    ] {
        let (st, body) = s.get(path);
        assert_eq!(st, status, "{path}: {body}");
        assert_eq!(body["error"]["code"], code, "{path}: {body}");
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
        assert_eq!(
            body["error"]["details"]["parameter"].as_str(),
            parameter,
            "{path}: {body}"
        );
    }
    // Trivial but valid: the empty tree, and a tree with itself.
    let (st, _) = text(&s, "/v1/log/checkpoint?tree_size=0");
    assert_eq!(st, 200);
    let (st, p) = s.get("/v1/log/consistency?from=3&to=3");
    assert_eq!((st, p["path"].as_array().unwrap().len()), (200, 0));
}

#[test]
fn a_rewritten_history_fails_the_consistency_proof() {
    let mut s = Server::start();
    ingest_n(&s, "old", 10);
    let (_, vkey) = text(&s, "/v1/log/public-key");
    let c1_note = checkpoint(&s, None);
    let c1 = open_checkpoint(&c1_note, &vkey).unwrap();
    ingest_n(&s, "new", 10);
    let c2 = open_checkpoint(&checkpoint(&s, None), &vkey).unwrap();
    let (_, p) = s.get("/v1/log/consistency?from=10&to=20");
    assert!(rfc_verify_consistency(
        10,
        20,
        c1.root,
        c2.root,
        &hashes(&p["path"])
    ));
    let dir = s.keep_dir();
    s.stop();

    // The attacker rewrites event 5 and recomputes the chain from there on,
    // the head, and throws the tree away (the server rebuilds it from the log).
    with_store(dir.path(), |db| {
        let events = keyspace(db, "log_events");
        let mut prev: Option<String> = None;
        for seq in 1..=20u64 {
            let v = events.get(seq.to_be_bytes()).unwrap().unwrap().to_vec();
            let mut rec: Value = serde_json::from_slice(&v[32..]).unwrap();
            if seq == 5 {
                rec["payload"]["task_id"] = json!("rewritten");
            }
            if seq >= 5 {
                rec["prev_hash"] = prev.clone().map_or(Value::Null, Value::String);
            }
            let bytes = serde_json_canonicalizer::to_vec(&rec).unwrap();
            let h = sha(&[&bytes]);
            if seq >= 5 {
                let mut value = h.to_vec();
                value.extend_from_slice(&bytes);
                events.insert(seq.to_be_bytes(), value).unwrap();
            }
            prev = Some(hex::encode(h));
            if seq == 20 {
                let mut head = 20u64.to_be_bytes().to_vec();
                head.extend_from_slice(&h);
                keyspace(db, "log_meta")
                    .insert("head".as_bytes(), head)
                    .unwrap();
            }
        }
        let tree = keyspace(db, "log_tree");
        let keys: Vec<_> = tree.iter().map(|kv| kv.key().unwrap().to_vec()).collect();
        assert!(!keys.is_empty());
        for k in keys {
            tree.remove(k).unwrap();
        }
    });
    let s = Server::start_in(dir.path(), &[]);
    // The chain alone cannot tell: it was recomputed.
    let (st, v) = s.get("/v1/log/verify");
    assert_eq!((st, v["ok"].as_bool()), (200, Some(true)), "{v}");
    let c3_note = checkpoint(&s, None);
    let c3 = open_checkpoint(&c3_note, &vkey).unwrap();
    assert_eq!(c3.size, 20);
    assert_ne!(c3.root, c2.root);
    // The auditor holding the old checkpoint is not fooled.
    let (_, p) = s.get("/v1/log/consistency?from=10&to=20");
    assert!(!rfc_verify_consistency(
        10,
        20,
        c1.root,
        c3.root,
        &hashes(&p["path"])
    ));
    // Nor is `leviathan audit check-consistency`.
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("old"), &c1_note).unwrap();
    std::fs::write(work.path().join("new"), &c3_note).unwrap();
    std::fs::write(work.path().join("proof.json"), p.to_string()).unwrap();
    let (code, out) = audit_cmd(
        &[
            "check-consistency",
            "--old",
            "old",
            "--new",
            "new",
            "--public-key",
            vkey.trim(),
            "--proof",
            "proof.json",
        ],
        work.path(),
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("\"ok\": false"), "{out}");
}

/// Runs `leviathan audit <args>` in `cwd`; (exit code, stdout).
/// `leviathan audit keygen --name example.com/leviathan --out DIR/FILE`:
/// the key file and its verifier key.
fn keygen(dir: &Path, file: &str) -> (std::path::PathBuf, String) {
    let (code, vkey) = audit_cmd(
        &["keygen", "--name", "example.com/leviathan", "--out", file],
        dir,
    );
    assert_eq!(code, 0, "{vkey}");
    (dir.join(file), vkey)
}

fn audit_cmd(args: &[&str], cwd: &Path) -> (i32, String) {
    let out = leviathan()
        .arg("audit")
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn the_offline_tools_check_proofs_and_bundles() {
    let mut s = Server::start();
    let data = b"the build log";
    let (st, body) = s.put_artifact(data);
    assert!(st == 200 || st == 201, "{st} {body}");
    let art = sha256_hex(data);
    let (st, b) = s.ingest(&bundle(
        "x",
        vec![
            event("x-1", "attempt.created", json!({"attempt_id": "a1", "task_id": "t1", "attempt_number": 1})),
            event("x-2", "artifact.created", json!({"artifact_id": "art-1", "attempt_id": "a1", "sha256": art, "artifact_type": "log"})),
            event("x-3", "attempt.created", json!({"attempt_id": "a2", "task_id": "t1", "attempt_number": 2})),
        ],
    ));
    assert_eq!(st, 200, "{b}");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (_, vkey) = text(&s, "/v1/log/public-key");
    std::fs::write(w.join("key"), &vkey).unwrap();
    std::fs::write(w.join("cp"), checkpoint(&s, None)).unwrap();
    let (_, p) = s.get("/v1/events/x-2/proof");
    std::fs::write(w.join("proof.json"), p.to_string()).unwrap();
    let (_, e) = s.get("/v1/events/x-2");
    std::fs::write(w.join("record"), record_of(&e)).unwrap();
    let inclusion = |proof: &str, record: &str| {
        audit_cmd(
            &[
                "check-inclusion",
                "--checkpoint",
                "cp",
                "--public-key",
                "key",
                "--proof",
                proof,
                "--record",
                record,
            ],
            w,
        )
    };
    let (code, out) = inclusion("proof.json", "record");
    assert_eq!(code, 0, "{out}");
    // Another record is not in the log at that place.
    let (_, e1) = s.get("/v1/events/x-1");
    std::fs::write(w.join("other"), record_of(&e1)).unwrap();
    let (code, out) = inclusion("proof.json", "other");
    assert_eq!(code, 1, "{out}");
    // The right record, but the proof names another event: the record is not
    // the event the proof is about, though its leaf is in the tree.
    let mut renamed = p.clone();
    renamed["event_id"] = json!("x-9");
    std::fs::write(w.join("renamed.json"), renamed.to_string()).unwrap();
    let (code, out) = inclusion("renamed.json", "record");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(r#"the record is event \"x-2\" at seq 2, the proof is for \"x-9\""#),
        "{out}"
    );

    // A bundle from the running server, verified with the artifact.
    let (st, bundle_json) = s.get("/v1/events/x-2/bundle");
    assert_eq!(st, 200, "{bundle_json}");
    assert_eq!(bundle_json["artifacts"][0]["sha256"], art.as_str());
    assert_eq!(bundle_json["artifacts"][0]["stored"], true);
    let c = open_checkpoint(bundle_json["checkpoint"].as_str().unwrap(), &vkey).unwrap();
    let rec = bundle_json["record"].as_str().unwrap().as_bytes();
    assert!(rfc_verify_inclusion(
        1,
        c.size,
        leaf(rec),
        &hashes(&bundle_json["proof"]["path"]),
        c.root
    ));
    std::fs::create_dir(w.join("arts")).unwrap();
    std::fs::write(w.join("arts").join(&art), data).unwrap();
    std::fs::write(w.join("b.json"), bundle_json.to_string()).unwrap();
    let (code, out) = audit_cmd(
        &[
            "verify-bundle",
            "b.json",
            "--public-key",
            "key",
            "--artifacts",
            "arts",
        ],
        w,
    );
    assert_eq!(code, 0, "{out}");
    // A changed record, a wrong artifact, another key: each fails.
    let mut forged = bundle_json.clone();
    forged["record"] = json!(bundle_json["record"]
        .as_str()
        .unwrap()
        .replace("art-1", "art-9"));
    std::fs::write(w.join("forged.json"), forged.to_string()).unwrap();
    let (code, out) = audit_cmd(&["verify-bundle", "forged.json", "--public-key", "key"], w);
    assert_eq!(code, 1, "{out}");
    std::fs::write(w.join("arts").join(&art), b"not the build log").unwrap();
    let (code, out) = audit_cmd(
        &[
            "verify-bundle",
            "b.json",
            "--public-key",
            "key",
            "--artifacts",
            "arts",
        ],
        w,
    );
    assert_eq!(code, 1, "{out}");
    let (code, other_key) = audit_cmd(
        &[
            "keygen",
            "--name",
            "example.com/other",
            "--out",
            "other.key",
        ],
        w,
    );
    assert_eq!(code, 0, "{other_key}");
    let (code, out) = audit_cmd(
        &["verify-bundle", "b.json", "--public-key", other_key.trim()],
        w,
    );
    assert_eq!(code, 1, "{out}");

    // `audit bundle` from the server's URL, and from the stopped server's data dir.
    let out = leviathan()
        .args(["audit", "bundle", "x-2", "--url", &s.base, "--out"])
        .arg(w.join("from-url.json"))
        .env("LEVIATHAN_CONTROL_PLANE_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = s.keep_dir();
    s.stop();
    let out = leviathan()
        .args(["audit", "bundle", "x-2", "--data-dir"])
        .arg(dir.path())
        .arg("--out")
        .arg(w.join("from-dir.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["from-url.json", "from-dir.json"] {
        let (code, out) = audit_cmd(
            &[
                "verify-bundle",
                f,
                "--public-key",
                "key",
                "--artifacts",
                "arts",
            ],
            w,
        );
        // The artifact file was replaced above: only that check fails.
        assert_eq!(code, 1, "{out}");
        let report: Value = serde_json::from_str(&out[..out.rfind('}').unwrap() + 1]).unwrap();
        let failed: Vec<&str> = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["ok"] == false)
            .map(|c| c["check"].as_str().unwrap())
            .collect();
        assert_eq!(failed, ["artifact"], "{out}");
    }
}

#[test]
fn a_tree_built_for_an_existing_store_equals_the_incremental_one() {
    let mut s = Server::start();
    for i in 0..5 {
        ingest_n(&s, &format!("t{i}"), 9);
    }
    let before = checkpoint(&s, None);
    let dir = s.keep_dir();
    s.stop();
    let dump = |dir: &Path| {
        with_store(dir, |db| {
            keyspace(db, "log_tree")
                .iter()
                .map(|kv| {
                    let (k, v) = kv.into_inner().unwrap();
                    (k.to_vec(), v.to_vec())
                })
                .collect::<Vec<_>>()
        })
    };
    let incremental = dump(dir.path());
    // Nodes of 16 and 32 leaves among 45, and the size.
    assert!(incremental.len() >= 4, "{incremental:?}");
    // As a store written before the tree existed: no tree at all.
    with_store(dir.path(), |db| {
        let tree = keyspace(db, "log_tree");
        for (k, _) in &incremental {
            tree.remove(k.clone()).unwrap();
        }
    });
    let mut s = Server::start_in(dir.path(), &[]);
    assert!(
        s.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("built the log's Merkle tree")),
        "the build is logged"
    );
    assert_eq!(
        checkpoint(&s, None),
        before,
        "same tree, same key, same checkpoint"
    );
    s.stop();
    assert_eq!(dump(dir.path()), incremental);
}

#[test]
fn the_signing_key_is_generated_once_or_taken_from_the_setting() {
    let mut s = Server::start();
    let (_, vkey) = text(&s, "/v1/log/public-key");
    let file = s.data_dir.join("log-signing.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    assert!(
        s.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(vkey.trim())),
        "the verifier key is logged"
    );
    let dir = s.keep_dir();
    s.stop();
    let s2 = Server::start_in(dir.path(), &[]);
    assert_eq!(
        text(&s2, "/v1/log/public-key").1,
        vkey,
        "the same key after a restart"
    );
    drop(s2);
    // An operator's key, with its own origin.
    let keys = tempfile::tempdir().unwrap();
    let (key_file, out) = keygen(keys.path(), "op.key");
    let s3 = Server::start_in(
        dir.path(),
        &[("LEVIATHAN_SIGNING_KEY_FILE", key_file.to_str().unwrap())],
    );
    assert_eq!(text(&s3, "/v1/log/public-key").1.trim(), out.trim());
    let c = open_checkpoint(&checkpoint(&s3, None), &out).unwrap();
    assert_eq!(c.origin, "example.com/leviathan");
    drop(s3);
    // A missing key file is refused at start, naming it.
    let mut cmd = serve_command(dir.path());
    cmd.env(
        "LEVIATHAN_SIGNING_KEY_FILE",
        keys.path().join("missing.key"),
    );
    let err = refused(cmd);
    assert!(err.contains("missing.key"), "{err}");
    // Before anything else: a new data dir is not even created (a long
    // start, a replay or a PostgreSQL catch-up, would come first otherwise).
    let fresh = keys.path().join("never-made");
    let mut cmd = serve_command(&fresh);
    cmd.env(
        "LEVIATHAN_SIGNING_KEY_FILE",
        keys.path().join("missing.key"),
    );
    let err = refused(cmd);
    assert!(err.contains("missing.key"), "{err}");
    assert!(
        !fresh.exists(),
        "the store was opened before the key was read"
    );
}

/// A store's checkpoints are signed by its recorded signer: another key (a
/// swapped or lost key file) is refused at start unless
/// LEVIATHAN_NEW_SIGNING_KEY=1, which records it from the current tree size
/// on; an auditor bridges the change with a consistency proof between a
/// checkpoint of each key.
#[test]
fn a_changed_signing_key_is_refused_unless_recorded_and_auditors_can_bridge_it() {
    let mut s = Server::start();
    for b in mixed_log(2) {
        assert_eq!(s.ingest(&b).0, 200);
    }
    let (_, old_vkey) = text(&s, "/v1/log/public-key");
    let old_cp = checkpoint(&s, None);
    let old_size = open_checkpoint(&old_cp, &old_vkey).unwrap().size;
    let dir = s.keep_dir();
    s.stop();
    let key_file = dir.path().join("log-signing.key");
    let old_key = std::fs::read(&key_file).unwrap();

    // The key file lost: no new key is generated (and none written).
    std::fs::remove_file(&key_file).unwrap();
    let err = refused(serve_command(dir.path()));
    assert!(err.contains("there is no key file"), "{err}");
    assert!(err.contains("LEVIATHAN_NEW_SIGNING_KEY=1"), "{err}");
    assert!(!key_file.exists(), "a refused start wrote a key");
    // Another key in its place: refused too, naming both.
    let keys = tempfile::tempdir().unwrap();
    let (new_file, new_vkey) = keygen(keys.path(), "new.key");
    let mut cmd = serve_command(dir.path());
    cmd.env("LEVIATHAN_SIGNING_KEY_FILE", &new_file);
    let err = refused(cmd);
    assert!(err.contains("example.com/leviathan+"), "{err}");
    assert!(err.contains("since tree size 0"), "{err}");

    // Told so, it signs with the new key, recorded from the current size.
    let s = Server::start_in(
        dir.path(),
        &[
            ("LEVIATHAN_SIGNING_KEY_FILE", new_file.to_str().unwrap()),
            ("LEVIATHAN_NEW_SIGNING_KEY", "1"),
        ],
    );
    assert_eq!(text(&s, "/v1/log/public-key").1.trim(), new_vkey.trim());
    let (st, signers) = s.get("/v1/log/signers");
    assert_eq!(st, 200, "{signers}");
    let list = signers["signers"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{signers}");
    assert_eq!(list[0]["verifier_key"], old_vkey.trim());
    assert_eq!(list[1]["verifier_key"], new_vkey.trim());
    assert_eq!(list[1]["from_tree_size"], old_size, "{signers}");
    assert_eq!(s.ingest(&bundle("after", events("after", 3))).0, 200);
    let new_cp = checkpoint(&s, None);
    let new_size = open_checkpoint(&new_cp, &new_vkey).unwrap().size;
    assert!(new_size > old_size);
    let (st, proof) = s.get(&format!(
        "/v1/log/consistency?from={old_size}&to={new_size}"
    ));
    assert_eq!(st, 200, "{proof}");
    drop(s);

    // The auditor: the old checkpoint with the old key, the new with the new.
    let w = tempfile::tempdir().unwrap();
    std::fs::write(w.path().join("old.cp"), &old_cp).unwrap();
    std::fs::write(w.path().join("new.cp"), &new_cp).unwrap();
    std::fs::write(w.path().join("p.json"), proof.to_string()).unwrap();
    let check = |extra: &[&str]| {
        let mut args = vec![
            "check-consistency",
            "--old",
            "old.cp",
            "--new",
            "new.cp",
            "--proof",
            "p.json",
            "--public-key",
            new_vkey.trim(),
        ];
        args.extend_from_slice(extra);
        audit_cmd(&args, w.path())
    };
    let (code, out) = check(&["--old-public-key", old_vkey.trim()]);
    assert_eq!(code, 0, "{out}");
    // One key alone cannot check both.
    let (code, out) = check(&[]);
    assert_eq!(code, 1, "{out}");

    // A restart with the new key needs nothing more; the flag left set is harmless.
    let s = Server::start_in(
        dir.path(),
        &[("LEVIATHAN_SIGNING_KEY_FILE", new_file.to_str().unwrap())],
    );
    assert_eq!(text(&s, "/v1/log/public-key").1.trim(), new_vkey.trim());
    drop(s);
    // The old key back now is a change again: refused.
    std::fs::write(&key_file, &old_key).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // The old key back now is a replaced key: it never signs again, not
    // even when told a new key is fine.
    let err = refused(serve_command(dir.path()));
    assert!(
        err.contains(&format!("was replaced at tree size {old_size}")),
        "{err}"
    );
    assert!(
        err.contains("move that key file away (a new key is then generated at this path)")
            && err.contains("then start once with LEVIATHAN_NEW_SIGNING_KEY=1"),
        "{err}"
    );
    // The same key where LEVIATHAN_SIGNING_KEY_FILE points: that file is
    // never generated, so the message does not say to move it away.
    let elsewhere = keys.path().join("old.key");
    std::fs::copy(&key_file, &elsewhere).unwrap();
    let mut cmd = serve_command(dir.path());
    cmd.env("LEVIATHAN_SIGNING_KEY_FILE", &elsewhere);
    let err = refused(cmd);
    assert!(err.contains("never signs again"), "{err}");
    assert!(!err.contains("move that key file away"), "{err}");
    assert!(
        err.contains("point LEVIATHAN_SIGNING_KEY_FILE at a new key made with")
            && err.contains("or unset it (a new key is then generated at ")
            && err.contains("then start once with LEVIATHAN_NEW_SIGNING_KEY=1"),
        "{err}"
    );
    let mut cmd = serve_command(dir.path());
    cmd.env("LEVIATHAN_NEW_SIGNING_KEY", "1");
    let err = refused(cmd);
    assert!(err.contains("never signs again"), "{err}");
    // Offline signing follows the record too: an export signed with the
    // replaced key is refused; with the signer's, it carries the signers.
    let export_with = |key: Option<&Path>, to: &Path| {
        let mut cmd = leviathan();
        cmd.args(["export", "--data-dir"])
            .arg(dir.path())
            .arg("--to")
            .arg(to);
        if let Some(k) = key {
            cmd.arg("--signing-key-file").arg(k);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = export_with(None, &w.path().join("bad-export"));
    assert_eq!(code, Some(1));
    assert!(err.contains("is not this log's signer"), "{err}");
    let export = w.path().join("export");
    let (code, err) = export_with(Some(&new_file), &export);
    assert_eq!(code, Some(0), "{err}");
    let m: Value =
        serde_json::from_slice(&std::fs::read(export.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["signers"].as_array().unwrap().len(), 2, "{m}");
    // An import of it refuses both keys of the source, and records the new
    // one after them.
    let imported = w.path().join("imported");
    let out = leviathan()
        .arg("import")
        .arg(&export)
        .arg("--data-dir")
        .arg(&imported)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for key in [&key_file, &new_file] {
        let mut cmd = serve_command(&imported);
        cmd.env("LEVIATHAN_SIGNING_KEY_FILE", key)
            .env("LEVIATHAN_NEW_SIGNING_KEY", "1");
        let err = refused(cmd);
        assert!(err.contains("made by `leviathan import`"), "{err}");
    }
    let s = Server::start_in(&imported, &[]);
    let (_, signers) = s.get("/v1/log/signers");
    let list = signers["signers"].as_array().unwrap();
    assert_eq!(list.len(), 3, "{signers}");
    assert_eq!(list[2]["verifier_key"], signers["current"]);
    assert!(
        list[2]["reason"]
            .as_str()
            .unwrap()
            .contains("leviathan import"),
        "{signers}"
    );
}

// ------------------------------------------------------------ tamper tests

/// `leviathan verify` on a data dir: (exit code, its report).
fn verify_store(dir: &Path) -> (i32, Value) {
    let out = leviathan()
        .args(["verify", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "verify printed no report: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), v["report"].clone())
}

/// A copy of a stopped server's data dir.
fn copy_data_dir(from: &Path) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    copy_tree(from, t.path());
    t
}

/// Each way of tampering with the stored log, on a copy of one real store
/// written by a server and edited here directly in fjall (the layout of
/// src/log: `log_events` seq (8 bytes BE) → SHA-256 (32) ‖ canonical
/// record): `leviathan verify` names the exact seq and says what is wrong.
#[test]
fn tampering_with_the_stored_log_is_named_by_seq() {
    let mut s = Server::start();
    ingest_n(&s, "t", 10);
    let dir = s.keep_dir();
    s.stop();
    let (code, r) = verify_store(dir.path());
    assert_eq!((code, &r["ok"]), (0, &json!(true)), "{r}");
    assert_eq!(r["verified_events"], 10);

    type Edit = Box<dyn Fn(&fjall::Database)>;
    let cases: Vec<(&str, Edit, u64, &str)> = vec![
        (
            "one changed byte in record 4",
            Box::new(|db| {
                let ks = keyspace(db, "log_events");
                let mut v = ks.get(4u64.to_be_bytes()).unwrap().unwrap().to_vec();
                let at = v.len() - 5; // inside the timestamp
                v[at] ^= 0x01;
                ks.insert(4u64.to_be_bytes(), v).unwrap();
            }),
            4,
            "hash mismatch",
        ),
        (
            "event 6 dropped",
            Box::new(|db| {
                keyspace(db, "log_events")
                    .remove(6u64.to_be_bytes())
                    .unwrap()
            }),
            6,
            "seq 6 is missing",
        ),
        (
            "events 3 and 7 swapped",
            Box::new(|db| {
                let ks = keyspace(db, "log_events");
                let a = ks.get(3u64.to_be_bytes()).unwrap().unwrap();
                let b = ks.get(7u64.to_be_bytes()).unwrap().unwrap();
                ks.insert(3u64.to_be_bytes(), b).unwrap();
                ks.insert(7u64.to_be_bytes(), a).unwrap();
            }),
            3,
            "record says seq 7 but is stored at seq 3",
        ),
        (
            "the log truncated after event 8",
            Box::new(|db| {
                let ks = keyspace(db, "log_events");
                ks.remove(9u64.to_be_bytes()).unwrap();
                ks.remove(10u64.to_be_bytes()).unwrap();
            }),
            9,
            "the log ends at seq 8",
        ),
        (
            "record 5's prev_hash pointed at record 3",
            Box::new(|db| {
                let ks = keyspace(db, "log_events");
                let h3 = ks.get(3u64.to_be_bytes()).unwrap().unwrap()[..32].to_vec();
                let h4 = ks.get(4u64.to_be_bytes()).unwrap().unwrap()[..32].to_vec();
                let v = ks.get(5u64.to_be_bytes()).unwrap().unwrap();
                let text = String::from_utf8(v[32..].to_vec())
                    .unwrap()
                    .replace(&hex::encode(&h4), &hex::encode(&h3));
                let mut value = sha(&[text.as_bytes()]).to_vec();
                value.extend_from_slice(text.as_bytes());
                ks.insert(5u64.to_be_bytes(), value).unwrap();
            }),
            5,
            "chain broken",
        ),
    ];
    for (what, edit, seq, why) in cases {
        let copy = copy_data_dir(dir.path());
        with_store(copy.path(), |db| edit(db));
        let (code, r) = verify_store(copy.path());
        assert_eq!(code, 1, "{what}: {r}");
        assert_eq!(r["ok"], false, "{what}: {r}");
        assert_eq!(r["first_broken_seq"], seq, "{what}: {r}");
        assert!(
            r["error"].as_str().unwrap().contains(why),
            "{what}: {why:?} not in {r}"
        );
    }
}

/// A history rewritten from seq 5 with the chain, the head and the tree
/// recomputed (the attacker knows the formats): the chain verifies — it
/// cannot tell — but the log no longer extends the checkpoint an auditor
/// saved before, and the consistency proof fails, by the independent
/// verifier and by `leviathan audit check-consistency`.
#[test]
fn tampering_by_rewriting_history_fails_the_consistency_proof() {
    let mut s = Server::start();
    ingest_n(&s, "r", 12);
    let (_, vkey) = text(&s, "/v1/log/public-key");
    let old_note = checkpoint(&s, None);
    let old = open_checkpoint(&old_note, &vkey).unwrap();
    let dir = s.keep_dir();
    s.stop();
    with_store(dir.path(), |db| {
        let events = keyspace(db, "log_events");
        let mut prev: Option<String> = None;
        let mut last = [0u8; 32];
        for seq in 1..=12u64 {
            let v = events.get(seq.to_be_bytes()).unwrap().unwrap().to_vec();
            let mut rec: Value = serde_json::from_slice(&v[32..]).unwrap();
            if seq == 5 {
                rec["actor_id"] = json!("someone-else");
            }
            rec["prev_hash"] = prev.clone().map_or(Value::Null, Value::String);
            let bytes = serde_json_canonicalizer::to_vec(&rec).unwrap();
            last = sha(&[&bytes]);
            let mut value = last.to_vec();
            value.extend_from_slice(&bytes);
            events.insert(seq.to_be_bytes(), value).unwrap();
            prev = Some(hex::encode(last));
        }
        let mut head = 12u64.to_be_bytes().to_vec();
        head.extend_from_slice(&last);
        keyspace(db, "log_meta").insert("head", head).unwrap();
        let tree = keyspace(db, "log_tree");
        let keys: Vec<_> = tree.iter().map(|kv| kv.key().unwrap().to_vec()).collect();
        for k in keys {
            tree.remove(k).unwrap();
        }
    });
    let (code, r) = verify_store(dir.path());
    assert_eq!(
        (code, &r["ok"]),
        (0, &json!(true)),
        "the chain alone cannot tell: {r}"
    );
    let s = Server::start_in(dir.path(), &[]);
    ingest_n(&s, "after", 3);
    let new_note = checkpoint(&s, None);
    let new = open_checkpoint(&new_note, &vkey).unwrap();
    let (st, p) = s.get("/v1/log/consistency?from=12&to=15");
    assert_eq!(st, 200);
    assert!(!rfc_verify_consistency(
        12,
        15,
        old.root,
        new.root,
        &hashes(&p["path"])
    ));
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("old"), &old_note).unwrap();
    std::fs::write(work.path().join("new"), &new_note).unwrap();
    std::fs::write(work.path().join("proof.json"), p.to_string()).unwrap();
    let (code, out) = audit_cmd(
        &[
            "check-consistency",
            "--old",
            "old",
            "--new",
            "new",
            "--public-key",
            vkey.trim(),
            "--proof",
            "proof.json",
        ],
        work.path(),
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("\"ok\": false"), "{out}");
}

// ------------------------------------------- async projectors: the combined line

/// Re-signs a checkpoint after `edit` changes its text, with the signer key
/// in `key_file` (`PRIVATE+KEY+<name>+<id>+<base64(0x01 ‖ seed)>`), signing
/// here from the C2SP spec: a forgery only the key holder could make, so
/// that only a check of the content can catch it.
fn resign(note: &str, key_file: &Path, edit: impl FnOnce(&str) -> String) -> String {
    use ed25519_dalek::Signer;
    let skey = std::fs::read_to_string(key_file).unwrap();
    let mut parts = skey
        .trim()
        .strip_prefix("PRIVATE+KEY+")
        .unwrap()
        .splitn(3, '+');
    let (name, id, seed) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let raw = B64.decode(seed).unwrap();
    let sk = ed25519_dalek::SigningKey::from_bytes(&raw[1..33].try_into().unwrap());
    let text = edit(&note[..note.rfind("\n\n").unwrap() + 1]);
    let mut blob = hex::decode(id).unwrap();
    blob.extend_from_slice(&sk.sign(text.as_bytes()).to_bytes());
    format!("{text}\n\u{2014} {name} {}\n", B64.encode(blob))
}

/// The value of a checkpoint's extension line `key`, if present.
fn ext<'a>(c: &'a Opened, key: &str) -> Option<&'a str> {
    c.ext
        .iter()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
}

#[test]
fn checkpoints_sign_the_combined_digest_of_async_projectors_and_replay_check_proves_it() {
    use common::wasm::{static_projector, Describe, StaticOp};
    // `tagger@0.1.0`, async: puts `tag-1` (type `Tag`) on every attempt.created.
    let files = tempfile::tempdir().unwrap();
    let wasm = static_projector(
        &Describe {
            name: "tagger",
            version: "0.1.0",
            handles: &["attempt.created"],
            node_types: &["Tag"],
            edge_types: &[],
        },
        |d| {
            d.ok_ops(&[StaticOp::PutNode {
                id: "tag-1",
                node_type: "Tag",
                properties: r#"{"by":"tagger"}"#,
            }])
        },
    );
    std::fs::write(files.path().join("tagger.wasm"), &wasm).unwrap();
    let manifest = files.path().join("projectors.toml");
    std::fs::write(
        &manifest,
        format!(
            "[[projector]]\nname = \"core\"\nbuiltin = \"core\"\n\n[[projector]]\nname = \
             \"tagger\"\npath = \"tagger.wasm\"\nsha256 = \"{}\"\nmode = \"async\"\n",
            sha256_hex(&wasm)
        ),
    )
    .unwrap();
    let m = manifest.to_str().unwrap();
    let mut s = Server::start_with(&[("LEVIATHAN_PROJECTORS_FILE", m)]);
    for i in 0..3 {
        ingest_n(&s, &format!("c{i}"), 4);
    }
    let (_, head) = s.get("/v1/log/head");
    let head = head["seq"].as_u64().unwrap();
    // The checkpoint of the head, waiting (bounded) until every projector
    // has applied it, as an auditor asks for it.
    let (st, cp) = text(
        &s,
        &format!("/v1/log/checkpoint?tree_size={head}&min_seq={head}&timeout_ms=30000"),
    );
    assert_eq!(st, 200, "{cp}");
    let p = s.get("/v1/projection").1;
    assert_eq!(p["async"]["applied_seq"], head, "{p}");
    let combined = p["async"]["combined_digest"].as_str().unwrap().to_string();
    let (_, vkey) = text(&s, "/v1/log/public-key");

    // It signs the combined digest, as a fourth extension line after the
    // three of an all-inline set; the signature verifies independently.
    assert_eq!(checkpoint(&s, Some(head)), cp);
    let opened = open_checkpoint(&cp, &vkey).unwrap();
    assert_eq!(opened.size, head);
    assert_eq!(opened.ext.len(), 4, "{cp}");
    assert!(opened.ext[0].starts_with("chain-head "), "{cp}");
    assert_eq!(
        ext(&opened, "state-digest"),
        p["state_digest"].as_str(),
        "{cp}"
    );
    assert_eq!(
        opened.ext[3],
        format!("combined-state-digest {combined}"),
        "{cp}"
    );
    // The latest one is the same note, and says where the async lane stood.
    let latest = s
        .req(reqwest::Method::GET, "/v1/log/checkpoint")
        .send()
        .unwrap();
    assert_eq!(
        latest.headers()["x-leviathan-async-applied-seq"],
        head.to_string().as_str()
    );
    assert_eq!(latest.text().unwrap(), cp);
    // An earlier size (the lane has applied it) signs that size's combined digest.
    let early = open_checkpoint(&checkpoint(&s, Some(4)), &vkey).unwrap();
    let early_combined = ext(&early, "combined-state-digest").unwrap().to_string();
    assert_ne!(early_combined, combined);

    // The backup records the async lane and its combined digest.
    let backups = tempfile::tempdir().unwrap();
    let to = backups.path().join("b");
    let (st, bm) = s.post("/v1/admin/backup", &json!({ "to": to }));
    assert_eq!(st, 200, "{bm}");
    assert_eq!(bm["async_seq"], head, "{bm}");
    assert_eq!(bm["combined_digest"], combined.as_str(), "{bm}");
    assert_eq!(bm["checkpoint"], cp.as_str(), "{bm}");
    let key_file = s.data_dir.join("log-signing.key");
    let forge_key = files.path().join("signing.key");
    std::fs::copy(&key_file, &forge_key).unwrap();
    let dir = s.keep_dir();
    s.stop();

    // Restored, the graph's lanes are verified against the manifest.
    let restored = backups.path().join("restored");
    let (code, out) = admin(&["restore", "--from", to.to_str().unwrap()], &restored);
    assert_eq!(code, 0, "{out}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["graph"], "verified", "{r}");
    assert_eq!(r["combined_digest"], combined.as_str(), "{r}");

    // An offline replay to the head, and to 4, gives the combined digests the
    // checkpoints signed, equal to the recorded ones.
    for (to, expected) in [(head, &combined), (4, &early_combined)] {
        let (code, out) = admin(
            &["replay", "--to", &to.to_string(), "--projectors-file", m],
            dir.path(),
        );
        assert_eq!(code, 0, "{out}");
        let rep: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(rep["combined_digest"], expected.as_str(), "{rep}");
        assert_eq!(rep["recorded_combined_digest"], expected.as_str(), "{rep}");
        assert_eq!(rep["matches"], true, "{rep}");
    }

    // A third party replays an export against the checkpoint: every check
    // passes, the combined line's included.
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let out = w.join("export");
    let (code, o) = admin(&["export", "--to", out.to_str().unwrap()], dir.path());
    assert_eq!(code, 0, "{o}");
    let em: Value = serde_json::from_str(&o).unwrap();
    assert_eq!(em["combined_digest"], combined.as_str(), "{em}");
    assert_eq!(em["checkpoint"], cp.as_str(), "{em}");
    std::fs::write(w.join("key"), &vkey).unwrap();
    // The export verifies (the manifest's combined digest is the one its
    // checkpoint signs), and imports into the same digests, the async
    // lane's included.
    let o = leviathan()
        .args([
            "verify",
            "--export",
            out.to_str().unwrap(),
            "--public-key",
            vkey.trim(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let imported = w.join("imported");
    let (code, o) = admin(
        &["import", out.to_str().unwrap(), "--projectors-file", m],
        &imported,
    );
    assert_eq!(code, 0, "{o}");
    let im: Value = serde_json::from_str(&o).unwrap();
    assert_eq!(im["combined_digest"], combined.as_str(), "{im}");
    assert_eq!(im["expected_combined_digest"], combined.as_str(), "{im}");
    assert_eq!(im["state_digest_matches"], true, "{im}");
    let replay_check = |cp: &str| -> (i32, Value) {
        std::fs::write(w.join("cp"), cp).unwrap();
        let o = leviathan()
            .args([
                "audit",
                "replay-check",
                "cp",
                "export",
                "--public-key",
                "key",
            ])
            .args(["--projectors-file", m, "--scratch-dir", w.to_str().unwrap()])
            .current_dir(w)
            .output()
            .unwrap();
        let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| {
            panic!(
                "not a report ({:?}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr)
            )
        });
        (o.status.code().unwrap(), v)
    };
    let failed = |r: &Value| -> Vec<String> {
        r["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["ok"] != true)
            .map(|c| c["check"].as_str().unwrap().to_string())
            .collect()
    };
    let (code, r) = replay_check(&cp);
    assert_eq!(code, 0, "{r}");
    let check = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "combined_state_digest")
        .unwrap_or_else(|| panic!("no combined check: {r}"));
    assert_eq!(check["ok"], true, "{r}");
    assert!(check["detail"].as_str().unwrap().contains(&combined), "{r}");

    // The combined line altered and re-signed with the key: the signature
    // verifies, and only the combined digest check fails, naming the line.
    let other = hex::encode(sha(&[b"another graph".as_slice()]));
    let forged = resign(&cp, &forge_key, |t| t.replace(&combined, &other));
    assert_ne!(forged, cp);
    let f = open_checkpoint(&forged, &vkey).unwrap();
    assert_eq!(ext(&f, "combined-state-digest"), Some(other.as_str()));
    let (code, r) = replay_check(&forged);
    assert_eq!(code, 1, "{r}");
    assert_eq!(failed(&r), vec!["combined_state_digest".to_string()], "{r}");
    assert!(r.to_string().contains("combined-state-digest line"), "{r}");

    // Without the line (a checkpoint signed while the lane was behind) the
    // inline part is still proved, and the report says the rest is not.
    let stripped = resign(&cp, &forge_key, |t| {
        t.replace(&format!("combined-state-digest {combined}\n"), "")
    });
    let (code, r) = replay_check(&stripped);
    assert_eq!(code, 0, "{r}");
    assert!(r.to_string().contains("not signed"), "{r}");
}
