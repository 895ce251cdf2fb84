//! Crash safety: a server under concurrent ingest is killed with SIGKILL; after a
//! restart every acknowledged event is there (at the seqs it was acknowledged
//! with), the chain verifies, and no bundle is partly stored.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const CLIENTS: usize = 4;
const EVENTS_PER_BUNDLE: usize = 20;

/// One round: ingest from CLIENTS threads until killed. Returns acknowledged
/// bundles: bundle_id → (first_seq, last_seq).
fn round(s: &mut Server, round: usize) -> HashMap<String, (u64, u64)> {
    let acked = Mutex::new(HashMap::new());
    let count = AtomicUsize::new(0);
    let base = s.base.clone();
    std::thread::scope(|sc| {
        for t in 0..CLIENTS {
            let (acked, count, base) = (&acked, &count, base.clone());
            sc.spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                for n in 0.. {
                    let id = format!("r{round}-c{t}-{n}");
                    let b = bundle(&id, events(&id, EVENTS_PER_BUNDLE));
                    let resp = client
                        .post(format!("{base}/v1/events/ingest"))
                        .bearer_auth(TOKEN)
                        .json(&b)
                        .send();
                    let Ok(resp) = resp else { return };
                    if resp.status() != 200 {
                        return;
                    }
                    let Ok(r) = resp.json::<Value>() else { return };
                    let range = (
                        r["first_seq"].as_u64().unwrap(),
                        r["last_seq"].as_u64().unwrap(),
                    );
                    acked.lock().unwrap().insert(id, range);
                    count.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        // Let some bundles be acknowledged, then kill in the middle of the stream.
        let start = Instant::now();
        while count.load(Ordering::SeqCst) < 40 && start.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(50));
        s.kill();
    });
    acked.into_inner().unwrap()
}

#[test]
fn sigkill_under_concurrent_ingest_loses_no_acknowledged_event() {
    let mut s = Server::start();
    let dir = s.keep_dir();
    let mut all_acked = HashMap::new();
    for r in 0..2 {
        let acked = round(&mut s, r);
        assert!(
            acked.len() >= 40,
            "only {} bundles acknowledged",
            acked.len()
        );
        all_acked.extend(acked);
        s = Server::start_in(dir.path(), &[]);

        let events = s.all_events();
        let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(
            seqs,
            (1..=events.len() as u64).collect::<Vec<_>>(),
            "seqs are dense"
        );
        let (_, v) = s.get("/v1/log/verify");
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["verified_events"], events.len());

        // Group stored events by bundle (event ids are `{bundle_id}-{i}`).
        let mut by_bundle: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for e in &events {
            let id = e["event_id"].as_str().unwrap();
            let bundle_id = id[..id.rfind('-').unwrap()].to_string();
            by_bundle
                .entry(bundle_id)
                .or_default()
                .push(e["seq"].as_u64().unwrap());
        }
        for (b, seqs) in &by_bundle {
            assert_eq!(seqs.len(), EVENTS_PER_BUNDLE, "bundle {b} is partly stored");
        }
        for (b, (first, last)) in &all_acked {
            let seqs = by_bundle
                .get(b)
                .unwrap_or_else(|| panic!("acknowledged bundle {b} is lost"));
            assert_eq!(
                (seqs[0], *seqs.last().unwrap()),
                (*first, *last),
                "bundle {b} moved"
            );
        }
    }
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
