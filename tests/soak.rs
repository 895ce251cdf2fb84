//! The soak: sustained ingest with concurrent reads and log followers against
//! a real server, for a bounded time, sampling the server's RSS. Not part of
//! `cargo test` (it is `#[ignore]`d: minutes long); run it on demand:
//!
//! ```sh
//! LEVIATHAN_SOAK_SECS=300 cargo test --release --test suite soak:: -- --ignored --nocapture
//! ```
//!
//! Two phases. The preload ingests `LEVIATHAN_SOAK_PRELOAD` events (default
//! 500,000) at full speed: memory that grows with the stored data (fjall pins
//! the filter and index blocks of its tables; the block cache fills to its
//! bound) grows here. The steady phase then runs for `LEVIATHAN_SOAK_SECS`
//! (default 300): ingest paced at `LEVIATHAN_SOAK_RATE` events/s (default
//! 2,000, a busy deployment's sustained rate; the full-speed figures are the
//! benchmark's job), two readers cycling the read routes and two followers
//! tailing the log, all at once.
//!
//! It fails on any error answer or transport error, and when RSS keeps
//! growing in the steady phase. RSS there is a sawtooth (memtables fill, then
//! flush; jemalloc returns freed pages a second later) whose amplitude,
//! ~40 MiB, is larger than any trend over minutes, so a slope over the raw
//! samples depends on where the run cuts the sawtooth. The gate is on the
//! floor instead: the lowest sample of each `LEVIATHAN_SOAK_WINDOW_SECS`
//! window (default 60, longer than a flush cycle at the default rate), and the
//! least-squares slope of those minima, the first window left out (warm-up),
//! must stay under `LEVIATHAN_SOAK_MAX_SLOPE_MIB_PER_MIN` (default 1).
//! It prints events/s, reads/s, the RSS samples, the window minima and their
//! slope, the raw slope, and RSS per stored event. Run it as a release build: a debug build does not reach the preload
//! in minutes.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use crate::common;

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

/// The lowest sample of each `window`-second window of the run (from t = 0),
/// as (the window's middle, KiB); a window without samples is skipped.
fn window_minima(samples: &[(f64, u64)], window: f64) -> Vec<(f64, u64)> {
    let mut minima: Vec<(f64, u64)> = Vec::new();
    let mut current: Option<(u64, u64)> = None; // (window index, min)
    for &(t, kib) in samples {
        let w = (t / window).floor() as u64;
        current = match current {
            Some((cw, m)) if cw == w => Some((cw, m.min(kib))),
            Some((cw, m)) => {
                minima.push(((cw as f64 + 0.5) * window, m));
                Some((w, kib))
            }
            None => Some((w, kib)),
        };
    }
    if let Some((cw, m)) = current {
        minima.push(((cw as f64 + 0.5) * window, m));
    }
    minima
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

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn disk_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// How the ingest clients send.
#[derive(Clone, Copy)]
enum Pace {
    /// As fast as the server takes them, until this many events are stored.
    FullSpeedUntil(u64),
    /// Each client one bundle per this interval, until `stop`.
    Every(Duration),
}

/// Ingests 100-event bundles from 4 clients, paced by `pace`.
fn ingest_workers<'s>(
    sc: &'s std::thread::Scope<'s, '_>,
    base: &str,
    prefix: &'static str,
    pace: Pace,
    stop: &'s AtomicBool,
    events: &'s AtomicU64,
    fail: &'s (dyn Fn(String) + Sync),
) -> Vec<std::thread::ScopedJoinHandle<'s, ()>> {
    (0..4)
        .map(|w| {
            let base = base.to_string();
            sc.spawn(move || {
                let c = client();
                let started = Instant::now();
                for n in 0u32.. {
                    let until = match pace {
                        Pace::FullSpeedUntil(n) => n,
                        Pace::Every(_) => u64::MAX,
                    };
                    if stop.load(Ordering::Relaxed) || events.load(Ordering::Relaxed) >= until {
                        return;
                    }
                    if let Pace::Every(every) = pace {
                        let due = started + every * n;
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                    let id = format!("{prefix}{w}-{n}");
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
            })
        })
        .collect()
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[test]
#[ignore = "minutes long: run on demand (see the module doc)"]
fn soak_sustained_ingest_with_readers_and_followers() {
    let secs = env_u64("LEVIATHAN_SOAK_SECS", 300);
    let preload = env_u64("LEVIATHAN_SOAK_PRELOAD", 500_000);
    let rate = env_f64("LEVIATHAN_SOAK_RATE", 2_000.0);
    let max_slope = env_f64("LEVIATHAN_SOAK_MAX_SLOPE_MIB_PER_MIN", 1.0);
    let window = env_f64("LEVIATHAN_SOAK_WINDOW_SECS", 60.0);
    assert!(
        secs as f64 >= 4.0 * window,
        "LEVIATHAN_SOAK_SECS ({secs}) must cover at least 4 windows of {window} s: the gate \
         needs 3 minima after the warm-up window"
    );
    let s = Server::start();
    let pid = s.pid();
    let errors = Mutex::new(Vec::<String>::new());
    let fail = |what: String| errors.lock().unwrap().push(what);

    // Phase 1: the preload, at full speed.
    let loaded = AtomicU64::new(0);
    let never = AtomicBool::new(false);
    let t0 = Instant::now();
    std::thread::scope(|sc| {
        for h in ingest_workers(
            sc,
            &s.base,
            "p",
            Pace::FullSpeedUntil(preload),
            &never,
            &loaded,
            &fail,
        ) {
            h.join().unwrap();
        }
    });
    let preloaded = loaded.load(Ordering::Relaxed);
    let rss_after_preload = rss_kib(pid);
    eprintln!(
        "preload: {preloaded} events in {:.0} s ({:.0} events/s); rss={} MiB",
        t0.elapsed().as_secs_f64(),
        preloaded as f64 / t0.elapsed().as_secs_f64(),
        rss_after_preload / 1024
    );
    assert!(
        errors.lock().unwrap().is_empty(),
        "preload errors: {:?}",
        &errors.lock().unwrap()[..]
    );

    // Phase 2: steady load, measured.
    let stop = AtomicBool::new(false);
    let (events, reads, follows) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let mut samples = Vec::new();
    let started = Instant::now();
    // Each of the 4 clients sends one 100-event bundle per `pace`.
    let pace = Duration::from_secs_f64(400.0 / rate);
    std::thread::scope(|sc| {
        ingest_workers(sc, &s.base, "w", Pace::Every(pace), &stop, &events, &fail);
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
        // Followers: tail the log by seq from the start, as `leviathanctl
        // events follow` does, then keep up with the head.
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
    let raw_slope = slope_mib_per_min(&samples[warm..]);
    let minima = window_minima(&samples, window);
    let slope = slope_mib_per_min(&minima[1..]);
    eprintln!(
        "soak: RSS floor per {window:.0} s window (MiB): {}",
        minima
            .iter()
            .map(|(_, kib)| (kib / 1024).to_string())
            .collect::<Vec<_>>()
            .join(" → ")
    );
    let stored = preloaded + events.load(Ordering::Relaxed);
    let last_rss = samples.last().map_or(0, |s| s.1);
    eprintln!(
        "soak: steady {secs} s after a {preloaded}-event preload: {:.0} events/s, {:.0} reads/s, \
         followers read {} events; RSS {} MiB after the preload, {} → {} MiB in the steady phase, \
         slope of the window floors (first left out) {slope:.2} MiB/min (of the raw samples \
         over the last two thirds: {raw_slope:.2}); {stored} events stored, {:.0} bytes of \
         RSS and {:.0} bytes on disk per stored event",
        events.load(Ordering::Relaxed) as f64 / elapsed,
        reads.load(Ordering::Relaxed) as f64 / elapsed,
        follows.load(Ordering::Relaxed),
        rss_after_preload / 1024,
        samples.first().map_or(0, |s| s.1 / 1024),
        last_rss / 1024,
        last_rss as f64 * 1024.0 / stored as f64,
        disk_bytes(&s.data_dir) as f64 / stored as f64,
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
        "RSS floor grows {slope:.2} MiB/min in the steady phase (limit {max_slope})"
    );
}

#[test]
fn window_minima_take_the_floor_of_each_window() {
    let samples = [
        (5.0, 300),
        (10.0, 100),
        (15.0, 200),
        (65.0, 150),
        (70.0, 90),
        (125.0, 80),
    ];
    assert_eq!(
        window_minima(&samples, 60.0),
        vec![(30.0, 100), (90.0, 90), (150.0, 80)]
    );
    // A sawtooth whose floor is flat has a zero floor slope whatever its phase.
    let saw: Vec<(f64, u64)> = (0..120)
        .map(|i| (i as f64 * 5.0, 100_000 + (i % 7) * 6_000))
        .collect();
    assert!(slope_mib_per_min(&window_minima(&saw, 60.0)[1..]).abs() < 0.01);
    // A floor rising 2 MiB a minute is seen as such.
    let rising: Vec<(f64, u64)> = saw
        .iter()
        .map(|&(t, k)| (t, k + (t / 60.0 * 2048.0) as u64))
        .collect();
    let slope = slope_mib_per_min(&window_minima(&rising, 60.0)[1..]);
    assert!((slope - 2.0).abs() < 0.3, "{slope}");
}
