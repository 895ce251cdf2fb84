//! Crash safety. The crash loop: concurrent ingest and reads, SIGKILL at a
//! random moment, restart, for a bounded number of rounds. Readers run from
//! the first moment of every start (right after a kill -9 is when fjall
//! replays its journal and flushes most) and must never see a 5xx. After every
//! round:
//! - every acknowledged event is present exactly once, at the seq it was
//!   acknowledged with, and no bundle is partly present;
//! - the chain verifies;
//! - the graph equals a from-scratch replay (`leviathan rebuild` finds the same
//!   state digest and exits 0).
//!
//! The kill moments come from a seed printed at the start; set
//! `LEVIATHAN_CRASH_SEED` to replay a failing run. And the sharpest case: a
//! bundle killed right after its answer, with the server idle; and SIGTERM
//! with bundles in flight (exit 0, every answered bundle stored, none torn).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use crate::common;

use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const ROUNDS: usize = 4;
const WRITERS: usize = 4;
const READERS: usize = 2;
const EVENTS_PER_BUNDLE: usize = 25;

/// xorshift64*: enough randomness for kill moments, reproducible from a seed.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// A bundle that builds graph nodes and the indexes the list routes read:
/// attempts of target `radix`, half of them failing.
fn crash_bundle(id: &str) -> Value {
    let events = (0..EVENTS_PER_BUNDLE)
        .map(|i| {
            let attempt = format!("{id}-a{}", i / 2);
            if i % 2 == 0 {
                event(
                    &format!("{id}-{i}"),
                    "attempt.created",
                    json!({"attempt_id": attempt, "task_id": "t1", "target_id": "radix", "attempt_number": 1}),
                )
            } else {
                event(
                    &format!("{id}-{i}"),
                    "attempt.failed",
                    json!({"attempt_id": attempt, "status": "failed", "error_summary": "boom"}),
                )
            }
        })
        .collect();
    bundle(id, events)
}

const READ_ROUTES: [&str; 7] = [
    "/v1/attempts?target=radix",
    "/v1/attempts?target=radix&limit=20",
    "/v1/failures?target=radix",
    "/v1/graph/summary",
    "/v1/events/recent?limit=50",
    "/v1/graph/nodes?type=Attempt&limit=50",
    "/v1/log/head",
];

/// Readers: every read route in turn until `stop`; returns the number of
/// answers and every 5xx seen (route, status, body). Connection errors are
/// the kill, not a failure.
fn read_until(base: &str, stop: &AtomicBool, reads: &AtomicUsize, errors: &Mutex<Vec<String>>) {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut after_seq = 0u64;
    for n in 0usize.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let path = if n % 8 == 7 {
            format!("/v1/events?after_seq={after_seq}&limit=200")
        } else {
            READ_ROUTES[n % READ_ROUTES.len()].to_string()
        };
        let Ok(resp) = client
            .get(format!("{base}{path}"))
            .bearer_auth(TOKEN)
            .send()
        else {
            continue;
        };
        let status = resp.status().as_u16();
        let body = resp.text().unwrap_or_default();
        reads.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            errors
                .lock()
                .unwrap()
                .push(format!("{path} → {status} {body}"));
        } else if path.starts_with("/v1/events?") && status == 200 {
            let v: Value = serde_json::from_str(&body).unwrap();
            after_seq = v["next_after_seq"].as_u64().unwrap_or(after_seq);
        }
    }
}

/// How a round ends the server.
#[derive(Clone, Copy)]
enum End {
    /// SIGKILL.
    Kill,
    /// SIGTERM, with requests in flight: the server must exit 0 within its
    /// shutdown timeout (25 s by default; 30 s here for a loaded machine).
    Term,
}

/// One round on a running server: writers and readers until a random kill
/// (or SIGTERM). Returns the bundles acknowledged in it: bundle id →
/// (first_seq, last_seq).
fn round(
    s: &mut Server,
    r: usize,
    rng: &mut Rng,
    reads: &AtomicUsize,
    errors: &Mutex<Vec<String>>,
    end: End,
) -> HashMap<String, (u64, u64)> {
    let acked = Mutex::new(HashMap::new());
    let count = AtomicUsize::new(0);
    let stop_readers = AtomicBool::new(false);
    let base = s.base.clone();
    // Kill after 10..=40 acknowledged bundles and a further 0..300 ms.
    let kill_after = 10 + rng.below(31) as usize;
    let extra = Duration::from_millis(rng.below(300));
    std::thread::scope(|sc| {
        for _ in 0..READERS {
            let (base, stop) = (base.clone(), &stop_readers);
            sc.spawn(move || read_until(&base, stop, reads, errors));
        }
        for t in 0..WRITERS {
            let (acked, count, base) = (&acked, &count, base.clone());
            sc.spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                for n in 0.. {
                    let id = format!("r{r}-w{t}-{n}");
                    let Ok(resp) = client
                        .post(format!("{base}/v1/events/ingest"))
                        .bearer_auth(TOKEN)
                        .json(&crash_bundle(&id))
                        .send()
                    else {
                        return;
                    };
                    if resp.status() != 200 {
                        return;
                    }
                    let Ok(v) = resp.json::<Value>() else { return };
                    let range = (
                        v["first_seq"].as_u64().unwrap(),
                        v["last_seq"].as_u64().unwrap(),
                    );
                    acked.lock().unwrap().insert(id, range);
                    count.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        let start = Instant::now();
        while count.load(Ordering::SeqCst) < kill_after && start.elapsed() < Duration::from_secs(60)
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(extra);
        match end {
            End::Kill => s.kill(),
            End::Term => {
                let status = s.terminate(Duration::from_secs(30));
                assert!(
                    status.success(),
                    "round {r}: SIGTERM with requests in flight: the server exited with {status}"
                );
            }
        }
        stop_readers.store(true, Ordering::Relaxed);
    });
    let acked = acked.into_inner().unwrap();
    assert!(
        acked.len() >= kill_after,
        "round {r}: only {} bundles acknowledged",
        acked.len()
    );
    acked
}

/// Everything the round's checks promise, on a freshly restarted server.
fn check_store(s: &Server, all_acked: &HashMap<String, (u64, u64)>) {
    let events = s.all_events();
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=events.len() as u64).collect::<Vec<_>>(),
        "seqs are dense"
    );
    let mut by_bundle: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for e in &events {
        let id = e["event_id"].as_str().unwrap();
        by_bundle
            .entry(id[..id.rfind('-').unwrap()].to_string())
            .or_default()
            .push(e["seq"].as_u64().unwrap());
    }
    for (b, seqs) in &by_bundle {
        assert_eq!(
            seqs.len(),
            EVENTS_PER_BUNDLE,
            "bundle {b} is partly stored (or twice)"
        );
    }
    for (b, (first, last)) in all_acked {
        let seqs = by_bundle
            .get(b)
            .unwrap_or_else(|| panic!("acknowledged bundle {b} is lost"));
        assert_eq!(
            (seqs[0], *seqs.last().unwrap()),
            (*first, *last),
            "bundle {b} moved"
        );
    }
    let (st, v) = s.get("/v1/log/verify");
    assert_eq!((st, &v["ok"]), (200, &json!(true)), "{v}");
    assert_eq!(v["verified_events"], events.len());
}

#[test]
fn crash_loop_loses_nothing_tears_nothing_and_replays_to_the_same_graph() {
    let seed = std::env::var("LEVIATHAN_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash loop seed: LEVIATHAN_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let (reads, errors) = (AtomicUsize::new(0), Mutex::new(Vec::new()));

    let mut s = Server::start();
    let dir = s.keep_dir();
    let mut all_acked = HashMap::new();
    for r in 0..ROUNDS {
        all_acked.extend(round(&mut s, r, &mut rng, &reads, &errors, End::Kill));
        // Restart after the kill; the next round's readers start at once, but
        // first the store is checked, then replayed from scratch.
        s = Server::start_in(dir.path(), &[]);
        check_store(&s, &all_acked);
        let (_, before) = s.get("/v1/projection");
        s.stop();
        let (code, out) = admin(&["rebuild"], dir.path());
        assert_eq!(
            code, 0,
            "round {r}: a replay from genesis gives another graph: {out}"
        );
        s = Server::start_in(dir.path(), &[]);
        let (_, after) = s.get("/v1/projection");
        assert_eq!(
            before, after,
            "round {r}: the projection state changed across a rebuild"
        );
        // And straight back to the state the next round starts from: a
        // process that was killed, not stopped.
        s.kill();
        s = Server::start_in(dir.path(), &[]);
    }
    let errors = errors.into_inner().unwrap();
    assert!(
        errors.is_empty(),
        "{} reads failed with a 5xx: {errors:#?}",
        errors.len()
    );
    assert!(
        reads.load(Ordering::Relaxed) > 200,
        "too few reads to mean anything"
    );
}

/// The sharpest case for durability: the server is idle after acknowledging a
/// bundle, so nothing later would push it out of an in-process buffer.
#[test]
fn a_bundle_killed_right_after_its_ack_is_there() {
    let mut s = Server::start();
    let dir = s.keep_dir();
    for i in 0..3 {
        let id = format!("quiet-{i}");
        let (st, r) = s.ingest(&bundle(&id, events(&id, 3)));
        assert_eq!(st, 200, "{r}");
        s.kill();
        s = Server::start_in(dir.path(), &[]);
        for j in 0..3 {
            let (st, e) = s.get(&format!("/v1/events/{id}-{j}"));
            assert_eq!(st, 200, "acknowledged event {id}-{j} lost: {e}");
        }
        assert_eq!(s.get("/v1/log/head").1["seq"], (i + 1) * 3);
    }
}

/// SIGTERM while writers have bundles in flight (the operations issue):
/// the server stops taking requests, finishes those in flight and exits 0;
/// every bundle it answered 200 is in the store after a restart, at its
/// seqs, and no bundle is partly stored — whatever the clients saw of the
/// rest (a refused connection, a 503, a cut answer) was never acknowledged.
#[test]
fn sigterm_with_bundles_in_flight_acknowledges_only_what_is_stored() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("sigterm rounds seed: {seed}");
    let mut rng = Rng(seed);
    let (reads, errors) = (AtomicUsize::new(0), Mutex::new(Vec::new()));
    let mut s = Server::start();
    let dir = s.keep_dir();
    let mut all_acked = HashMap::new();
    for r in 0..2 {
        all_acked.extend(round(&mut s, r, &mut rng, &reads, &errors, End::Term));
        s = Server::start_in(dir.path(), &[]);
        check_store(&s, &all_acked);
    }
    let errors = errors.into_inner().unwrap();
    assert!(
        errors.is_empty(),
        "{} reads failed with a 5xx before the SIGTERM: {errors:#?}",
        errors.len()
    );
}

/// A client that stalls mid-upload does not turn a clean stop into an
/// unflushed one: requests in flight get the shutdown timeout less the
/// flush's reserve (a fifth), then are dropped, and the store is flushed
/// (exit 0) within the timeout; what was acknowledged is there after a
/// restart.
#[test]
fn a_stalled_upload_at_sigterm_still_leaves_a_flushed_store() {
    use std::io::Write;
    let mut s = Server::start_with(&[("LEVIATHAN_SHUTDOWN_TIMEOUT", "5")]);
    let dir = s.keep_dir();
    let (st, r) = s.ingest(&bundle("before", events("before", 20)));
    assert_eq!(st, 200, "{r}");
    // An artifact upload that declares 10 MB and sends 1 KB, then stalls.
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut stalled = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        stalled,
        "PUT /v1/artifacts/{} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Length: 10000000\r\n\r\n",
        "a".repeat(64)
    )
    .unwrap();
    stalled.write_all(&[b'x'; 1024]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let status = s.terminate(Duration::from_secs(15));
    let took = started.elapsed();
    let log = s.log.lock().unwrap().join("\n");
    assert!(status.success(), "exit {status} after {took:?}: {log}");
    assert!(took < Duration::from_secs(6), "{took:?}");
    assert!(log.contains("requests still in flight"), "{log}");
    assert!(
        log.contains("shut down") && log.contains("flush_ms"),
        "{log}"
    );
    drop(stalled);
    let s = Server::start_in(dir.path(), &[]);
    assert_eq!(s.get("/v1/log/head").1["seq"], 20);
}
