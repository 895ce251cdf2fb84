//! The server's background chain verifier: a thread that re-verifies the log
//! from seq 1 once the server is up (without delaying readiness), then every
//! `LEVIATHAN_VERIFY_INTERVAL_SECS` verifies the records appended since, up to
//! the head it read when the pass began ([`Log::verify_from`], the code of
//! `leviathan verify`: a fresh view per chunk of records, so a pass holds no
//! snapshot across the log while the writer runs), on one thread at half a
//! core's pace so requests keep the cores. It publishes its result as metrics and on
//! `GET /v1/log/verification`; a broken chain is logged at error level with
//! the seq. It only reads.

use crate::digest::Sha256;
use crate::log::{Log, Pace};
use crate::metrics::Metrics;
use crate::seq::Seq;
use crate::wire::ChainVerification;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The verifier's share of the machine: one thread, resting as long as it
/// worked (half a core), a short chunk at a time. On every core, its first
/// pass after a start-up at 10M events (~20 s) took read p99s from ~1 to
/// 3–5 ms; paced, reads stay at 0.5–1.6 ms and the pass takes ~46 s
/// (docs/BENCHMARKS.md, session 15).
const PACE: Pace = Pace::Background { rest: 1 };

/// The verifier's last result, shared with the HTTP route.
#[derive(Debug)]
pub struct Status {
    inner: Mutex<ChainVerification>,
}

impl Status {
    fn new(interval: Duration) -> Status {
        Status {
            inner: Mutex::new(ChainVerification {
                status: "pending".into(),
                verified_seq: Seq::ZERO,
                verified_hash: None,
                last_verified_at: None,
                last_duration_ms: None,
                last_checked_events: None,
                passes: 0,
                failures: 0,
                first_broken_seq: None,
                error: None,
                interval_secs: interval.as_secs(),
            }),
        }
    }

    /// The last result.
    pub fn get(&self) -> ChainVerification {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut ChainVerification)) {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// The running verifier; dropping it stops the thread after its current pass.
pub struct Verifier {
    status: Arc<Status>,
    _stop: std::sync::mpsc::Sender<()>,
}

impl Verifier {
    /// Starts the thread: a full pass now, then one every `interval`.
    pub fn start(log: Log, metrics: Metrics, interval: Duration) -> std::io::Result<Verifier> {
        let status = Arc::new(Status::new(interval));
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let shared = status.clone();
        std::thread::Builder::new()
            .name("leviathan-verifier".into())
            .spawn(move || {
                let mut at = (Seq::ZERO, None);
                loop {
                    at = pass(&log, &metrics, &shared, at);
                    match stopped.recv_timeout(interval) {
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                }
            })?;
        Ok(Verifier {
            status,
            _stop: stop,
        })
    }

    /// The verifier's last result.
    pub fn status(&self) -> Arc<Status> {
        self.status.clone()
    }
}

/// One pass from `(seq, hash)`, verified before, to the head of a fresh
/// snapshot. Returns where the chain is verified up to afterwards (unchanged
/// when the pass fails, so the next pass checks the same records again).
fn pass(
    log: &Log,
    metrics: &Metrics,
    status: &Status,
    (after, prev): (Seq, Option<Sha256>),
) -> (Seq, Option<Sha256>) {
    let started = Instant::now();
    let result = log.verify_from(after, prev, PACE);
    let ms = started.elapsed().as_secs_f64() * 1e3;
    let now = chrono::Utc::now();
    metrics
        .chain_last_verify_timestamp
        .set(now.timestamp_millis() as f64 / 1e3);
    let finished = |c: &mut ChainVerification, checked: u64| {
        c.passes += 1;
        c.last_verified_at = Some(now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        c.last_duration_ms = Some(ms);
        c.last_checked_events = Some(checked);
    };
    match result {
        Ok(r) if r.ok => {
            metrics.chain_verified_seq.set(r.head.seq.0 as i64);
            tracing::debug!(
                from_seq = after.next().0,
                to_seq = r.head.seq.0,
                ms,
                "chain verified"
            );
            status.update(|c| {
                finished(c, r.head.seq.0 - after.0);
                c.status = "ok".into();
                c.verified_seq = r.head.seq;
                c.verified_hash = r.head.hash;
                c.first_broken_seq = None;
                c.error = None;
            });
            (r.head.seq, r.head.hash)
        }
        Ok(r) => {
            metrics.chain_verify_failures.inc();
            let seq = r.first_broken_seq.unwrap_or_default();
            let error = r.error.clone().unwrap_or_default();
            tracing::error!(
                seq = seq.0,
                verified_up_to = r.verified_events,
                "the hash chain is broken at seq {seq}: {error}; see docs/RUNBOOK.md (chain verification failure)"
            );
            status.update(|c| {
                finished(c, r.verified_events.saturating_sub(after.0));
                c.failures += 1;
                c.status = "failed".into();
                c.verified_seq = after;
                c.verified_hash = prev;
                c.first_broken_seq = Some(seq);
                c.error = Some(error);
            });
            (after, prev)
        }
        Err(e) => {
            metrics.chain_verify_failures.inc();
            tracing::error!(seq = after.next().0, "the chain could not be verified: {e}");
            status.update(|c| {
                finished(c, 0);
                c.failures += 1;
                c.status = "error".into();
                c.first_broken_seq = None;
                c.error = Some(e.to_string());
            });
            (after, prev)
        }
    }
}
