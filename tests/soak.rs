//! The soak: sustained ingest with concurrent reads and log followers against
//! a real server, for a bounded time, sampling the server's RSS. Not part of
//! `cargo test` (it is `#[ignore]`d: minutes long); run it on demand:
//!
//! ```sh
//! LEVIATHAN_SOAK_SECS=300 cargo test --release --test soak -- --ignored --nocapture
//! ```
//!
//! It fails on any error answer or transport error, and when RSS keeps
//! growing after the warm-up (a least-squares slope over the samples of the
//! last two thirds of the run above `LEVIATHAN_SOAK_MAX_SLOPE_MIB_PER_MIN`,
//! default 4). It prints events/s, reads/s, the RSS samples and the slope.
//! Run it as a release build: the warm-up is the memtables filling to their
//! bound (`storage::MAX_MEMTABLE_BYTES` per keyspace), which a debug build at a
//! few hundred events/s does not reach in minutes.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Least-squares slope of (seconds, KiB) in MiB per minute.
fn slope_mib_per_min(samples: &[(f64, u64)]) -> f64 {
    let n = samples.len() as f64;
    let (sx, sy) = samples
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + *y as f64));
    let (mx, my) = (sx / n, sy / n);
    let (mut num, mut den) = (0.0, 0.0);
    for (x, y) in samples {
        num += (x - mx) * (*y as f64 - my);
        den += (x - mx) * (x - mx);
    }
    if den == 0.0 {
        0.0
    } else {
        num / den * 60.0 / 1024.0
    }
}

fn soak_bundle(id: &str) -> Value {
    let events = (0..100)
        .map(|i| {
            let a = format!("{id}-a{}", i / 4);
            let (t, p) = match i % 4 {
                0 => ("attempt.created", json!({"attempt_id": a, "task_id": "t1", "target_id": "radix", "attempt_number": 1})),
                1 => ("attempt.started", json!({"attempt_id": a, "status": "running"})),
                2 => ("tests.failed", json!({"test_run_id": format!("{a}-tr"), "attempt_id": a, "failure_count": 1})),
                _ => ("attempt.failed", json!({"attempt_id": a, "status": "failed", "error_summary": "x"})),
            };
            event(&format!("{id}-{i}"), t, p)
        })
        .collect();
    bundle(id, events)
}

#[test]
#[ignore = "minutes long: run on demand (see the module doc)"]
fn soak_sustained_ingest_with_readers_and_followers() {
    let secs = env_u64("LEVIATHAN_SOAK_SECS", 180);
    let max_slope = env_u64("LEVIATHAN_SOAK_MAX_SLOPE_MIB_PER_MIN", 4) as f64;
    let s = Server::start();
    let pid = s.pid();
    let stop = AtomicBool::new(false);
    let (events, reads, follows) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let errors = Mutex::new(Vec::<String>::new());
    let mut samples = Vec::new();
    let started = Instant::now();
    let client = || {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
    };
    let fail = |what: String| errors.lock().unwrap().push(what);
    std::thread::scope(|sc| {
        for w in 0..4 {
            let (stop, events, fail, base) = (&stop, &events, &fail, s.base.clone());
            sc.spawn(move || {
                let c = client();
                for n in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let id = format!("w{w}-{n}");
                    match c
                        .post(format!("{base}/v1/events/ingest"))
                        .bearer_auth(TOKEN)
                        .json(&soak_bundle(&id))
                        .send()
                    {
                        Ok(r) if r.status() == 200 => {
                            events.fetch_add(100, Ordering::Relaxed);
                        }
                        Ok(r) => fail(format!(
                            "ingest {id}: {} {}",
                            r.status(),
                            r.text().unwrap_or_default()
                        )),
                        Err(e) => fail(format!("ingest {id}: {e}")),
                    }
                }
            });
        }
        for r in 0..2 {
            let (stop, reads, fail, base) = (&stop, &reads, &fail, s.base.clone());
            sc.spawn(move || {
                let c = client();
                let routes = [
                    "/v1/attempts?target=radix&limit=50",
                    "/v1/graph/summary",
                    "/v1/failures?target=radix&limit=50",
                    "/v1/events/recent?limit=20",
                ];
                for n in 0usize.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let path = routes[(n + r) % routes.len()];
                    match c.get(format!("{base}{path}")).bearer_auth(TOKEN).send() {
                        Ok(resp) if resp.status() == 200 => {
                            reads.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(resp) => fail(format!(
                            "{path}: {} {}",
                            resp.status(),
                            resp.text().unwrap_or_default()
                        )),
                        Err(e) => fail(format!("{path}: {e}")),
                    }
                }
            });
        }
        // Followers: tail the log by seq, as `leviathanctl events follow` does.
        for _ in 0..2 {
            let (stop, follows, fail, base) = (&stop, &follows, &fail, s.base.clone());
            sc.spawn(move || {
                let c = client();
                let mut after = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    match c
                        .get(format!("{base}/v1/events?after_seq={after}&limit=1000"))
                        .bearer_auth(TOKEN)
                        .send()
                    {
                        Ok(resp) if resp.status() == 200 => {
                            let v: Value = resp.json().unwrap();
                            let got = v["events"].as_array().map_or(0, Vec::len) as u64;
                            follows.fetch_add(got, Ordering::Relaxed);
                            after = v["next_after_seq"].as_u64().unwrap_or(after);
                            if got == 0 {
                                std::thread::sleep(Duration::from_millis(50));
                            }
                        }
                        Ok(resp) => fail(format!("follow: {}", resp.status())),
                        Err(e) => fail(format!("follow: {e}")),
                    }
                }
            });
        }
        while started.elapsed() < Duration::from_secs(secs) {
            std::thread::sleep(Duration::from_secs(5));
            let t = started.elapsed().as_secs_f64();
            let rss = rss_kib(pid);
            eprintln!(
                "t={t:>6.0}s events={} reads={} followed={} rss={} MiB",
                events.load(Ordering::Relaxed),
                reads.load(Ordering::Relaxed),
                follows.load(Ordering::Relaxed),
                rss / 1024
            );
            samples.push((t, rss));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let elapsed = started.elapsed().as_secs_f64();
    let warm = samples.len() / 3;
    let slope = slope_mib_per_min(&samples[warm..]);
    eprintln!(
        "soak: {secs} s, {:.0} events/s, {:.0} reads/s, followers read {} events; RSS {} → {} MiB, slope after warm-up {slope:.2} MiB/min",
        events.load(Ordering::Relaxed) as f64 / elapsed,
        reads.load(Ordering::Relaxed) as f64 / elapsed,
        follows.load(Ordering::Relaxed),
        samples.first().map_or(0, |s| s.1 / 1024),
        samples.last().map_or(0, |s| s.1 / 1024),
    );
    let errors = errors.into_inner().unwrap();
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert!(
        slope < max_slope,
        "RSS grows {slope:.2} MiB/min after warm-up (limit {max_slope})"
    );
}
