//! Online backup (`leviathan backup` → `POST /v1/admin/backup`) and restore
//! (`leviathan restore`), against a real server under concurrent ingest.

use crate::common::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// `leviathan backup --to <to> --url <server>` with the admin token.
fn backup_cli(s: &Server, to: &std::path::Path) -> (i32, String, String) {
    let out = leviathan()
        .args(["backup", "--url", &s.base, "--to"])
        .arg(to)
        .env("LEVIATHAN_CONTROL_PLANE_TOKEN", TOKEN)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn digest_at(dir: &std::path::Path, seq: u64) -> String {
    let store = leviathan::storage::open_store(dir).unwrap();
    store
        .graph
        .digest_at(leviathan::seq::Seq(seq))
        .unwrap()
        .unwrap()
        .to_hex()
}

#[test]
fn backup_under_ingest_restores_an_equal_store_that_takes_ingest() {
    if crate::common::pg::suite_on_postgres() {
        // A node's store restored into a new data dir is a new node; on the
        // PostgreSQL store the suite gives each data dir its own (empty)
        // database, and a server rightly refuses a local log ahead of its
        // PostgreSQL one. Restoring a PostgreSQL deployment is PostgreSQL's
        // own backup (docs/SCALING.md); nodes refill from it.
        eprintln!("SKIP on the PostgreSQL store: a restore into a new data dir is a new node");
        return;
    }
    let s = Server::start();
    for b in mixed_log(5) {
        assert_eq!(s.ingest(&b).0, 200);
    }
    let blob = b"artifact kept in the backup".to_vec();
    assert_eq!(s.put_artifact(&blob).0, 201);
    let s = Arc::new(s);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let ingest = {
        let (s, stop, acked) = (s.clone(), stop.clone(), acked.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let (st, r) = s.ingest(&bundle(&format!("c{i}"), events(&format!("c{i}"), 20)));
                assert_eq!(st, 200, "{r}");
                acked.fetch_add(1, Ordering::SeqCst);
                i += 1;
            }
        })
    };
    // The backup starts while bundles are being acknowledged...
    while acked.load(Ordering::SeqCst) < 2 {
        std::thread::yield_now();
    }
    let backups = tempfile::tempdir().unwrap();
    let to = backups.path().join("b1");
    let (code, out, err) = backup_cli(&s, &to);
    assert_eq!(code, 0, "{err}");
    let manifest: Value = serde_json::from_str(&out).unwrap();
    // ...and ingest goes on after it.
    let after = acked.load(Ordering::SeqCst);
    while acked.load(Ordering::SeqCst) < after + 2 {
        std::thread::yield_now();
    }
    stop.store(true, Ordering::SeqCst);
    ingest.join().unwrap();
    let seq = manifest["seq"].as_u64().unwrap();
    let (_, head) = s.get("/v1/log/head");
    assert!(
        seq > 40 && seq < head["seq"].as_u64().unwrap(),
        "{manifest} {head}"
    );
    assert_eq!(manifest["artifacts"], 1);
    assert!(to.join("manifest.json").is_file());
    // The manifest carries the log's signed checkpoint at the backup's head:
    // the one the server signs for that tree size (Ed25519 is deterministic).
    let note = manifest["checkpoint"].as_str().expect("a checkpoint");
    assert_eq!(
        note.lines().nth(1),
        Some(seq.to_string().as_str()),
        "{note}"
    );
    let signed = s
        .client
        .get(s.url(&format!("/v1/log/checkpoint?tree_size={seq}")))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(note, signed);
    let source_events: Vec<Value> = s
        .all_events()
        .into_iter()
        .filter(|e| e["seq"].as_u64().unwrap() <= seq)
        .collect();

    // Restore into a new data dir: verified, the backup's head and digest.
    let restored_dir = backups.path().join("restored");
    let (code, out, err) = admin_full(&["restore", "--from", to.to_str().unwrap()], &restored_dir);
    assert_eq!(code, 0, "{err}");
    // The old key may have signed beyond the backup: restore says the
    // restored log needs a new one.
    assert!(
        err.contains(&format!("must be signed by a NEW key from seq {seq}")),
        "{err}"
    );
    let restored: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(restored["seq"], seq);
    assert_eq!(restored["head_hash"], manifest["head_hash"]);
    assert_eq!(restored["graph"], "verified");
    assert_eq!(restored["state_digest"], manifest["state_digest"]);
    let (code, out) = admin(&["verify"], &restored_dir);
    assert_eq!(code, 0, "{out}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["report"]["head"]["seq"], seq);

    // The source at the backup's seq: same digest (read once it is stopped).
    let source_dir = s.data_dir.clone();
    let old_key = std::fs::read_to_string(source_dir.join("log-signing.key")).unwrap();
    let old_vkey = s
        .client
        .get(s.url("/v1/log/public-key"))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
        .text()
        .unwrap();
    let mut s = Arc::try_unwrap(s).ok().expect("the ingest thread is done");
    s.stop();
    assert_eq!(
        digest_at(&source_dir, seq),
        manifest["state_digest"].as_str().unwrap()
    );

    // The old key, copied back, is refused: it may have signed checkpoints
    // beyond the backup's head, which the restored log would contradict.
    let key_file = restored_dir.join("log-signing.key");
    std::fs::write(&key_file, &old_key).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let err = refused(serve_command(&restored_dir));
    assert!(
        err.contains(&format!(
            "made by `leviathan restore` from a log whose head was seq {seq}"
        )),
        "{err}"
    );
    // At the default path, a key is generated when the file is missing.
    assert!(
        err.contains("move that key file away (a new key is then generated at this path)"),
        "{err}"
    );
    // Where LEVIATHAN_SIGNING_KEY_FILE points, the file must exist: the way
    // out is another key there, or the default path.
    let elsewhere = backups.path().join("old.key");
    std::fs::copy(&key_file, &elsewhere).unwrap();
    let mut cmd = serve_command(&restored_dir);
    cmd.env("LEVIATHAN_SIGNING_KEY_FILE", &elsewhere);
    let err = refused(cmd);
    assert!(err.contains("made by `leviathan restore`"), "{err}");
    assert!(!err.contains("move that key file away"), "{err}");
    assert!(
        err.contains("point LEVIATHAN_SIGNING_KEY_FILE at a new key made with")
            && err.contains("or unset it (a new key is then generated at ")
            && err.contains("log-signing.key, if no key file is there)"),
        "{err}"
    );
    // Even when told a new key is fine: it is not new.
    let mut cmd = serve_command(&restored_dir);
    cmd.env("LEVIATHAN_NEW_SIGNING_KEY", "1");
    let err = refused(cmd);
    assert!(err.contains("made by `leviathan restore`"), "{err}");
    std::fs::remove_file(&key_file).unwrap();

    // The restored store serves the same events and artifact, and takes
    // ingest; without the old key it signs with a new one, recorded from the
    // backup's head on.
    let b = Server::start_in(&restored_dir, &[]);
    assert!(
        b.log.lock().unwrap().iter().any(|l| l.contains("WARN")
            && l.contains("a NEW checkpoint signing key signs this log from here on")),
        "no warning about the new key"
    );
    let (st, signers) = b.get("/v1/log/signers");
    assert_eq!(st, 200, "{signers}");
    let list = signers["signers"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{signers}");
    assert_eq!(list[0]["verifier_key"], old_vkey.trim(), "{signers}");
    assert_eq!(list[0]["from_tree_size"], 0, "{signers}");
    assert_eq!(list[1]["from_tree_size"], seq, "{signers}");
    assert_eq!(list[1]["verifier_key"], signers["current"], "{signers}");
    assert_ne!(signers["current"], old_vkey.trim());
    assert!(
        list[1]["reason"]
            .as_str()
            .unwrap()
            .contains("after `leviathan restore`"),
        "{signers}"
    );
    assert_eq!(b.all_events(), source_events);
    let resp = b.get_artifact(&sha256_hex(&blob));
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.bytes().unwrap().as_ref(), blob.as_slice());
    let (st, r) = b.ingest(&bundle("after-restore", events("ar", 3)));
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["first_seq"], seq + 1);
    let (_, v) = b.get("/v1/log/verify");
    assert_eq!(v["ok"], true, "{v}");
}

#[test]
fn a_backup_whose_graph_is_lost_is_restored_by_rebuilding_it_from_the_log() {
    if crate::common::pg::suite_on_postgres() {
        // A node's store restored into a new data dir is a new node; on the
        // PostgreSQL store the suite gives each data dir its own (empty)
        // database, and a server rightly refuses a local log ahead of its
        // PostgreSQL one. Restoring a PostgreSQL deployment is PostgreSQL's
        // own backup (docs/SCALING.md); nodes refill from it.
        eprintln!("SKIP on the PostgreSQL store: a restore into a new data dir is a new node");
        return;
    }
    let s = Server::start();
    for b in mixed_log(3) {
        assert_eq!(s.ingest(&b).0, 200);
    }
    let backups = tempfile::tempdir().unwrap();
    let to = backups.path().join("b");
    let (code, out, err) = backup_cli(&s, &to);
    assert_eq!(code, 0, "{err}");
    let manifest: Value = serde_json::from_str(&out).unwrap();
    // Disaster: every graph keyspace of the copy is emptied; the log is left.
    with_store(&to, |db| {
        for name in db.list_keyspace_names() {
            if name.starts_with("graph_") {
                keyspace(db, &name).clear().unwrap();
            }
        }
    });
    let restored_dir = backups.path().join("restored");
    let (code, out, err) = admin_full(&["restore", "--from", to.to_str().unwrap()], &restored_dir);
    assert_eq!(code, 0, "{err}");
    let restored: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(restored["graph"], "rebuilt");
    assert_eq!(restored["state_digest"], manifest["state_digest"]);
    assert_eq!(restored["state_digest_matches"], true);
    let b = Server::start_in(&restored_dir, &[]);
    let (_, a) = b.get("/v1/attempts/att-0");
    assert_eq!(a["artifacts"].as_array().map(Vec::len), Some(1), "{a}");
}

/// Every table and blob file of a backup's store damaged in turn (one byte
/// flipped in its middle): a restore either refuses it, naming what is damaged and leaving
/// no data dir behind, or gives a store that reads back whole with the
/// backup's head and state digest: a damaged graph is rebuilt from the log,
/// never reported `verified`.
#[test]
fn a_damaged_backup_is_refused_or_its_graph_rebuilt_never_restored_as_is() {
    if crate::common::pg::suite_on_postgres() {
        eprintln!("SKIP on the PostgreSQL store: a restore into a new data dir is a new node");
        return;
    }
    let s = Server::start();
    for b in mixed_log(12) {
        assert_eq!(s.ingest(&b).0, 200);
    }
    assert_eq!(s.put_artifact(b"an artifact in the backup").0, 201);
    let backups = tempfile::tempdir().unwrap();
    let good = backups.path().join("good");
    let (code, out, err) = backup_cli(&s, &good);
    assert_eq!(code, 0, "{err}");
    let manifest: Value = serde_json::from_str(&out).unwrap();
    drop(s);

    let mut files = Vec::new();
    let mut dirs = vec![good.join("store").join("keyspaces")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if std::fs::metadata(&p).unwrap().len() > 0
                && p.parent().unwrap().ends_with("tables") | p.parent().unwrap().ends_with("blobs")
            {
                files.push(p.strip_prefix(&good).unwrap().to_path_buf());
            }
        }
    }
    files.sort();
    assert!(files.len() >= 10, "{files:?}");
    let (mut refused, mut rebuilt) = (0, 0);
    for (i, file) in files.iter().enumerate() {
        let copy = backups.path().join(format!("copy-{i}"));
        copy_tree(&good, &copy);
        let path = copy.join(file);
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let target = backups.path().join(format!("restored-{i}"));
        let (code, out, err) = admin_full(&["restore", "--from", copy.to_str().unwrap()], &target);
        if code != 0 {
            assert_eq!(code, 1, "{}: {err}", file.display());
            let last = err.lines().last().unwrap_or_default();
            assert!(
                last.contains("damaged")
                    || last.contains("cannot be read")
                    || last.contains("chain is broken")
                    || last.contains("hecksum"),
                "{}: {err}",
                file.display()
            );
            assert!(
                !target.exists(),
                "{}: a failed restore left files: {err}",
                file.display()
            );
            refused += 1;
        } else {
            let r: Value = serde_json::from_str(&out).unwrap();
            assert_eq!(r["seq"], manifest["seq"], "{}", file.display());
            assert_eq!(
                r["state_digest"],
                manifest["state_digest"],
                "{}: {r}",
                file.display()
            );
            assert_eq!(r["state_digest_matches"], true, "{}: {r}", file.display());
            if r["graph"] == "rebuilt" {
                rebuilt += 1;
            }
            for cmd in ["verify", "dump"] {
                let (code, _, err) = admin_full(&[cmd], &target);
                assert_eq!(code, 0, "{}: {cmd} after restore: {err}", file.display());
            }
        }
        std::fs::remove_dir_all(&copy).unwrap();
        let _ = std::fs::remove_dir_all(&target);
    }
    eprintln!(
        "{} files damaged in turn: {refused} refused, {rebuilt} rebuilt",
        files.len()
    );
    assert!(
        refused > 0 && rebuilt > 0,
        "refused {refused}, rebuilt {rebuilt} of {}",
        files.len()
    );
}

#[test]
fn backup_refuses_what_it_cannot_do_safely() {
    let s = Server::start();
    assert_eq!(s.ingest(&bundle("x", events("x", 2))).0, 200);
    let scratch = tempfile::tempdir().unwrap();
    let forged = format!(
        "{}/x\n2026-12-07T00:00:00Z ERROR forged line",
        scratch.path().display()
    );
    let nul = format!("{}/x\u{0}y", scratch.path().display());
    for to in ["relative/dir", forged.as_str(), nul.as_str()] {
        let (st, r) = s.post("/v1/admin/backup", &json!({ "to": to }));
        assert_eq!(
            (st, r["error"]["code"].as_str()),
            (422, Some("invalid_body")),
            "{to:?}: {r}"
        );
    }
    assert_eq!(
        std::fs::read_dir(scratch.path()).unwrap().count(),
        0,
        "nothing created"
    );
    // Inside the live data dir (a backup under store/keyspaces made the next
    // start panic), however the path is spelled.
    let keyspaces = s.data_dir.join("store").join("keyspaces");
    let inside = [
        keyspaces.join("bk"),
        s.data_dir.clone(),
        s.data_dir.join("x").join("..").join("store").join("bk"),
    ];
    for to in &inside {
        let (st, r) = s.post("/v1/admin/backup", &json!({ "to": to }));
        assert_eq!(
            (st, r["error"]["code"].as_str()),
            (422, Some("invalid_body")),
            "{to:?}: {r}"
        );
        assert!(
            r["error"]["message"]
                .as_str()
                .unwrap()
                .contains("inside the server's data dir"),
            "{r}"
        );
    }
    assert!(!keyspaces.join("bk").exists());
    let full = tempfile::tempdir().unwrap();
    std::fs::write(full.path().join("something"), b"x").unwrap();
    let (st, r) = s.post("/v1/admin/backup", &json!({"to": full.path()}));
    assert_eq!(
        (st, r["error"]["code"].as_str()),
        (422, Some("backup_failed")),
        "{r}"
    );
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not empty"),
        "{r}"
    );
    // A restore needs a finished backup (its manifest).
    let empty = tempfile::tempdir().unwrap();
    let (code, _, err) = admin_full(
        &["restore", "--from", empty.path().to_str().unwrap()],
        &full.path().join("new"),
    );
    assert_eq!(code, 1);
    assert!(err.contains("not a finished backup"), "{err}");
}

/// A manifest whose projector set or checkpoint is not the backed-up store's
/// (altered, or another backup's) is refused and nothing is restored; with
/// `--public-key` the checkpoint's signature is checked too.
#[test]
fn restore_checks_the_manifests_projector_set_and_checkpoint() {
    if crate::common::pg::suite_on_postgres() {
        eprintln!("SKIP on the PostgreSQL store: a restore into a new data dir is a new node");
        return;
    }
    let s = Server::start();
    for b in mixed_log(3) {
        assert_eq!(s.ingest(&b).0, 200);
    }
    let key = s
        .client
        .get(s.url("/v1/log/public-key"))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
        .text()
        .unwrap();
    let backups = tempfile::tempdir().unwrap();
    let good = backups.path().join("good");
    let (code, _, err) = backup_cli(&s, &good);
    assert_eq!(code, 0, "{err}");
    drop(s);
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(good.join("manifest.json")).unwrap()).unwrap();
    let note = manifest["checkpoint"].as_str().unwrap().to_string();

    let restore = |from: &std::path::Path, name: &str, extra: &[&str]| {
        let target = backups.path().join(name);
        let mut args = vec!["restore", "--from", from.to_str().unwrap()];
        args.extend_from_slice(extra);
        let (code, out, err) = admin_full(&args, &target);
        (code, out, err, target)
    };
    // The backup as written restores, with its checkpoint's signature checked.
    let (code, out, err, _) = restore(&good, "ok", &["--public-key", key.trim()]);
    assert_eq!(code, 0, "{out} {err}");

    let altered = |name: &str, change: &dyn Fn(&mut Value)| {
        let copy = backups.path().join(name);
        copy_tree(&good, &copy);
        let mut m = manifest.clone();
        change(&mut m);
        std::fs::write(copy.join("manifest.json"), m.to_string()).unwrap();
        copy
    };
    let lines = |f: &dyn Fn(&mut Vec<String>)| {
        let mut l: Vec<String> = note.split('\n').map(str::to_string).collect();
        f(&mut l);
        l.join("\n")
    };
    let cases: Vec<(&str, std::path::PathBuf, &str)> = vec![
        (
            "another projector set",
            altered("set", &|m| m["projector_set"] = json!("11".repeat(32))),
            "the backed-up store's catalog says",
        ),
        (
            "a checkpoint of another size",
            altered("size", &|m| {
                m["checkpoint"] = json!(lines(&|l| l[1] = "1".into()))
            }),
            "tree size 1",
        ),
        (
            "a checkpoint of another state digest",
            altered("digest", &|m| {
                m["checkpoint"] = json!(lines(&|l| {
                    let i = l
                        .iter()
                        .position(|x| x.starts_with("state-digest "))
                        .unwrap();
                    l[i] = format!("state-digest {}", "22".repeat(32));
                }))
            }),
            "state digest 2222",
        ),
    ];
    for (what, copy, says) in cases {
        let (code, out, err, target) = restore(&copy, &format!("r-{what}"), &[]);
        assert_eq!(code, 1, "{what}: {out} {err}");
        assert!(err.contains(says), "{what}: {err}");
        assert!(!target.exists(), "{what}: a refused restore left files");
    }
    // With the key, an unsigned change is found even where the text agrees:
    // the size case again, now by its signature.
    let copy = backups.path().join("size");
    let (code, _, err, target) = restore(&copy, "r-signed", &["--public-key", key.trim()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not signed by the key given"), "{err}");
    assert!(!target.exists());
}
