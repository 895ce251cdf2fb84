//! Storage failures end to end, on a real full disk: the data dir is a small
//! tmpfs that ingest fills. Every failure answers 503 `storage_unavailable`
//! naming the cause (never a 500), nothing unacknowledged is claimed, `/readyz`
//! turns 503 with the same reason, reads keep working, SIGTERM exits within
//! the shutdown timeout (non-zero: the store could not be flushed), and once
//! space returns a restart finds every acknowledged bundle and takes ingest
//! again.
//!
//! Mounting needs root (or CAP_SYS_ADMIN); where it is not permitted the test
//! says so and checks nothing else.
//!
//! And damaged files: a store whose table files have a flipped byte is
//! reported by `leviathan verify` and `GET /v1/log/verify` as a broken chain
//! at the first seq it cannot read (what to restore), never as a bare I/O
//! error or a 503 that sends the operator to restart.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use crate::common;

use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A tmpfs mounted for the test's lifetime.
struct Tmpfs {
    dir: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("fs");
        std::fs::create_dir(&dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs here ({}); the disk-full test needs root",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(Tmpfs {
            dir,
            _parent: parent,
        })
    }

    fn resize(&self, size: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .status()
            .unwrap();
        assert!(st.success(), "remount failed");
    }

    fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

fn big_bundle(id: &str) -> Value {
    let events = (0..50)
        .map(|i| {
            event(
                &format!("{id}-{i}"),
                "attempt.created",
                json!({"attempt_id": format!("{id}-a{i}"), "task_id": "t1", "note": "n".repeat(4000)}),
            )
        })
        .collect();
    bundle(id, events)
}

#[test]
fn a_full_disk_answers_503_with_the_cause_and_nothing_acknowledged_is_lost() {
    let Some(fs) = Tmpfs::mount("48m") else {
        return;
    };
    let env = [("LEVIATHAN_SHUTDOWN_TIMEOUT", "5")];
    let mut s = Server::start_in(fs.path(), &env);

    let mut acked: Vec<(String, u64, u64)> = Vec::new();
    let mut refusals: Vec<(u16, Value)> = Vec::new();
    let started = Instant::now();
    for n in 0.. {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the disk never filled"
        );
        let id = format!("fill-{n}");
        let (st, r) = s.ingest(&big_bundle(&id));
        if st == 200 {
            acked.push((
                id,
                r["first_seq"].as_u64().unwrap(),
                r["last_seq"].as_u64().unwrap(),
            ));
            continue;
        }
        refusals.push((st, r));
        if refusals.len() == 3 {
            break;
        }
    }
    assert!(!acked.is_empty(), "nothing fit before the disk filled");
    for (st, r) in &refusals {
        assert_eq!(*st, 503, "a storage failure is a 503, never a 500: {r}");
        assert_eq!(r["error"]["code"], "storage_unavailable", "{r}");
        assert_eq!(r["error"]["details"]["cause"], "disk_full", "{r}");
        let message = r["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("free space"),
            "the message says what to do: {message}"
        );
    }
    // Ready no more, with the same reason; alive still; reads still answer.
    let (st, r) = s.get("/readyz");
    assert_eq!((st, &r["error"]["code"]), (503, &json!("not_ready")), "{r}");
    assert_eq!(r["error"]["details"]["cause"], "disk_full");
    assert_eq!(s.get("/livez").0, 200);
    let (st, head) = s.get("/v1/log/head");
    assert_eq!(st, 200, "{head}");
    assert_eq!(head["seq"], acked.last().unwrap().2);

    // SIGTERM ends the process within its bound, and says it could not flush.
    let t = Instant::now();
    let status = s.terminate(Duration::from_secs(30));
    assert!(
        !status.success(),
        "a shutdown that could not flush exits non-zero"
    );
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "shutdown took {:?}",
        t.elapsed()
    );

    // Space returns: a restart has every acknowledged bundle, whole, and
    // takes ingest again.
    fs.resize("512m");
    check_after_space_returns(&fs, &acked);
}

/// An artifact upload that fills the disk leaves a store that takes no more
/// writes (fjall after a failed journal write): the writer stops with the
/// cause, so `/readyz`, `leviathan_writer_up` and ingest say so at once, not
/// only after an event happens to fail. A restart with space back finds the
/// acknowledged events and takes uploads again.
#[test]
fn an_upload_that_fills_the_disk_stops_the_writer_and_readiness_says_so() {
    let Some(fs) = Tmpfs::mount("48m") else {
        return;
    };
    let env = [("LEVIATHAN_SHUTDOWN_TIMEOUT", "5")];
    let mut s = Server::start_in(fs.path(), &env);
    let (st, r) = s.ingest(&bundle("before", events("before", 3)));
    assert_eq!(st, 200, "{r}");
    // One blob larger than the volume, and not compressible.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let blob: Vec<u8> = (0..60u32 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let (st, r) = s.put_artifact(&blob);
    assert_eq!(st, 503, "{r}");
    assert_eq!(r["error"]["code"], "storage_unavailable", "{r}");
    assert_eq!(r["error"]["details"]["cause"], "disk_full", "{r}");
    let (st, r) = s.get("/readyz");
    assert_eq!((st, &r["error"]["code"]), (503, &json!("not_ready")), "{r}");
    assert_eq!(r["error"]["details"]["cause"], "disk_full", "{r}");
    let metrics = s.metrics_text();
    assert!(
        metrics.lines().any(|l| l == "leviathan_writer_up 0"),
        "{metrics}"
    );
    let (st, r) = s.ingest(&bundle("after", events("after", 1)));
    assert_eq!(st, 503, "{r}");
    assert_eq!(r["error"]["details"]["cause"], "disk_full", "{r}");
    let _ = s.terminate(Duration::from_secs(30));

    fs.resize("512m");
    let s = Server::start_in(fs.path(), &[]);
    assert_eq!(s.get("/readyz").0, 200);
    let (_, head) = s.get("/v1/log/head");
    assert_eq!(head["seq"], 3, "{head}");
    let (st, r) = s.put_artifact(b"space is back");
    assert_eq!(st, 201, "{r}");
}

/// Every refusal is a 503 `storage_unavailable` naming the full disk.
fn assert_disk_full(refusals: &[(u16, Value)]) {
    for (st, r) in refusals {
        assert_eq!(*st, 503, "a storage failure is a 503, never a 500: {r}");
        assert_eq!(r["error"]["code"], "storage_unavailable", "{r}");
        assert_eq!(r["error"]["details"]["cause"], "disk_full", "{r}");
    }
}

/// After the disk filled and space returned: a restart has every
/// acknowledged bundle (id, first seq, last seq), whole, no bundle in part,
/// a chain that verifies, a graph a replay from genesis agrees with, and it
/// takes ingest again.
fn check_after_space_returns(fs: &Tmpfs, acked: &[(String, u64, u64)]) {
    let mut s = Server::start_in(fs.path(), &[]);
    let events = s.all_events();
    for (id, first, last) in acked {
        let seqs: Vec<u64> = events
            .iter()
            .filter(|e| {
                e["event_id"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("{id}-"))
            })
            .map(|e| e["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(
            seqs.len(),
            50,
            "acknowledged bundle {id} is not whole after the restart"
        );
        assert_eq!((seqs[0], *seqs.last().unwrap()), (*first, *last));
    }
    // A refused bundle may be there whole (its batch reached the journal but
    // not its answer; a retry with its id is a duplicate), never in part.
    let mut per_bundle = std::collections::BTreeMap::<&str, usize>::new();
    for e in &events {
        let id = e["event_id"].as_str().unwrap();
        *per_bundle.entry(&id[..id.rfind('-').unwrap()]).or_default() += 1;
    }
    assert!(
        per_bundle.values().all(|n| *n == 50),
        "a bundle is partly stored: {per_bundle:?}"
    );
    let (st, v) = s.get("/v1/log/verify");
    assert_eq!((st, &v["ok"]), (200, &json!(true)), "{v}");
    assert_eq!(s.get("/readyz").0, 200);
    assert_eq!(
        s.get("/v1/graph/summary").1["nodes_by_type"]["Attempt"],
        events.len(),
        "one Attempt per stored event"
    );
    let (_, before) = s.get("/v1/projection");
    s.stop();
    let (code, out) = admin(&["rebuild"], fs.path());
    assert_eq!(code, 0, "a replay from genesis gives another graph: {out}");
    s = Server::start_in(fs.path(), &[]);
    assert_eq!(s.get("/v1/projection").1, before);
    let (st, r) = s.ingest(&bundle("after", events_of("after", 3)));
    assert_eq!(st, 200, "{r}");
    s.stop();
}

/// The same with four clients at once, so that a batch is staged behind the
/// one whose commit fails (the writer commits one batch while it stages the
/// next): that batch is answered 503 too and never stored in part.
#[test]
fn a_full_disk_under_concurrent_ingest_loses_nothing_acknowledged() {
    let Some(fs) = Tmpfs::mount("48m") else {
        return;
    };
    let env = [("LEVIATHAN_SHUTDOWN_TIMEOUT", "5")];
    let s = Server::start_in(fs.path(), &env);
    let acked = std::sync::Mutex::new(Vec::new());
    let refusals = std::sync::Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|scope| {
        for client in 0..4 {
            let (s, acked, refusals) = (&s, &acked, &refusals);
            scope.spawn(move || {
                let mut refused = 0;
                for n in 0.. {
                    assert!(
                        started.elapsed() < Duration::from_secs(120),
                        "the disk never filled"
                    );
                    let id = format!("c{client}-{n}");
                    let (st, r) = s.ingest(&big_bundle(&id));
                    if st == 200 {
                        let seqs = (r["first_seq"].as_u64(), r["last_seq"].as_u64());
                        acked
                            .lock()
                            .unwrap()
                            .push((id, seqs.0.unwrap(), seqs.1.unwrap()));
                        continue;
                    }
                    refusals.lock().unwrap().push((st, r));
                    refused += 1;
                    if refused == 2 {
                        return;
                    }
                }
            });
        }
    });
    let (acked, refusals) = (acked.into_inner().unwrap(), refusals.into_inner().unwrap());
    assert!(acked.len() >= 4, "too little fit before the disk filled");
    assert_disk_full(&refusals);
    let (_, head) = s.get("/v1/log/head");
    let last = acked.iter().map(|a| a.2).max().unwrap();
    assert_eq!(head["seq"], last, "the head is the last acknowledged event");
    drop(s);
    fs.resize("512m");
    check_after_space_returns(&fs, &acked);
}

fn events_of(prefix: &str, n: usize) -> Vec<Value> {
    events(prefix, n)
}

/// Every table file of a stopped store damaged in turn (one byte flipped in
/// its middle): `leviathan verify` passes (the damage is where the log's
/// walk does not read), reports the chain broken at a seq (for the log's
/// records: the first it cannot read, after verifying those before it), or
/// refuses to open the store saying its files are damaged. A server on a
/// store whose log records cannot be read answers `GET /v1/log/verify` the
/// same way (200, `ok: false`), not 503 `storage_unavailable`.
#[test]
fn a_damaged_table_is_reported_at_the_seq_it_breaks_not_as_an_io_error() {
    if crate::common::pg::suite_on_postgres() {
        eprintln!("SKIP on the PostgreSQL store: the local files are a copy");
        return;
    }
    let mut s = Server::start();
    for i in 0..30 {
        let (st, r) = s.ingest(&bundle(&format!("d{i}"), events_of(&format!("d{i}"), 100)));
        assert_eq!(st, 200, "{r}");
    }
    let dir = s.keep_dir();
    s.stop();
    let store = dir.path().join("store").join("keyspaces");
    let mut tables: Vec<PathBuf> = std::fs::read_dir(&store)
        .unwrap()
        .flat_map(|k| {
            std::fs::read_dir(k.unwrap().path().join("tables"))
                .into_iter()
                .flatten()
        })
        .map(|t| t.unwrap().path())
        .filter(|t| std::fs::metadata(t).unwrap().len() > 4096)
        .collect();
    tables.sort();
    let work = tempfile::tempdir().unwrap();
    let mut unreadable_at = None;
    for (i, table) in tables.iter().enumerate() {
        let copy = work.path().join(format!("c{i}"));
        copy_tree(dir.path(), &copy);
        let damaged = copy.join(table.strip_prefix(dir.path()).unwrap());
        let mut bytes = std::fs::read(&damaged).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&damaged, &bytes).unwrap();
        let (code, out, err) = admin_full(&["verify"], &copy);
        let name = table.display();
        match code {
            0 => {}
            1 if out.trim_start().starts_with('{') => {
                let v: Value = serde_json::from_str(&out).unwrap();
                let report = &v["report"];
                assert_eq!(report["ok"], false, "{name}: {v}");
                let seq = report["first_broken_seq"].as_u64().unwrap();
                let error = report["error"].as_str().unwrap();
                if error.contains("cannot read the records from seq") {
                    assert!(seq > 1 && seq <= 3000, "{name}: {v}");
                    assert_eq!(report["verified_events"], seq - 1, "{name}: {v}");
                    unreadable_at.get_or_insert((copy.clone(), seq));
                    continue;
                }
            }
            _ => assert!(
                err.contains("cannot open the store") && err.contains("damaged"),
                "{name}: exit {code}: {out} {err}"
            ),
        }
        std::fs::remove_dir_all(&copy).unwrap();
    }
    let (copy, seq) = unreadable_at.expect("some table held the log's records");
    let mut s = Server::start_in(&copy, &[]);
    let (st, v) = s.get("/v1/log/verify");
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["ok"].clone(), v["first_broken_seq"].as_u64()),
        (json!(false), Some(seq)),
        "{v}"
    );
    // A read that reaches the damaged block: corruption, a 500 saying what to
    // do, not 503 "restart the server" (a restart does not mend a file).
    let (st, v) = s.get(&format!("/v1/events?after_seq={}&limit=5", seq - 1));
    assert_eq!(st, 500, "{v}");
    assert_eq!(v["error"]["code"], "internal", "{v}");
    assert_eq!(v["error"]["details"]["cause"], "corrupt", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("restore the last backup"),
        "{v}"
    );
    // The writer is unharmed: ingest goes on.
    let (st, r) = s.ingest(&bundle("after", events_of("after", 2)));
    assert_eq!(st, 200, "{r}");
    s.stop();
    // A rebuild cannot read the log whole: it stops before it clears the
    // graph (it used to clear it first, and no rebuild could then bring it
    // back), and the server starts and serves on it as before.
    let (code, out, err) = admin_full(&["rebuild"], &copy);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("cannot be read whole") && err.contains(&format!("seq {seq}")),
        "{err}"
    );
    let s = Server::start_in(&copy, &[]);
    let (st, p) = s.get("/v1/projection");
    assert_eq!((st, &p["applied_seq"]), (200, &p["log_head_seq"]), "{p}");
    let (st, n) = s.get("/v1/graph/nodes/d0-a0");
    assert_eq!(st, 200, "{n}");
}
