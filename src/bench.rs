//! `leviathan bench`: a load generator that drives a running server over HTTP
//! on loopback and reports ingest throughput, bundle latency and read latency
//! (docs/BENCHMARKS.md). It owns the synthetic event stream (realistic executor
//! bundles covering every standard event type, ids unique per run) and the
//! measurement loop. It never talks to anything but the given server, refuses
//! non-loopback URLs unless explicitly allowed, and is bounded in requests and
//! time.
//!
//! Phases:
//! 1. ingest `events` events in bundles of `bundle` from `clients` concurrent
//!    clients (a setup bundle registering the target and first task goes first,
//!    outside the timing);
//! 2. read latency, one request at a time, for the summary, attempt detail,
//!    attempts list and node lookup routes (random attempts of this run);
//! 3. with `grow_factor` > 1: ingest until this run has put
//!    `events × grow_factor` events in the log, then the same reads again.

use anyhow::{bail, Context};
use serde::Serialize;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Events per attempt in the synthetic stream (see [`Generator::event`]).
pub const EVENTS_PER_ATTEMPT: u64 = 10;
/// Upper bounds, so that a typo cannot start an endless run.
const MAX_EVENTS: u64 = 100_000_000;
const MAX_CLIENTS: usize = 256;
const MAX_GROW: u64 = 100;
const MAX_READS: usize = 1_000_000;
const MAX_DURATION_SECS: f64 = 4.0 * 3600.0;
/// Requests answered with an error before the run gives up.
const MAX_ERRORS: u64 = 10;

/// `leviathan bench` options.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Base URL of a running server.
    #[arg(
        long,
        env = "LEVIATHAN_BENCH_URL",
        default_value = "http://127.0.0.1:8000"
    )]
    pub url: String,
    /// Bearer token (the server's LEVIATHAN_CONTROL_PLANE_TOKEN).
    #[arg(long, env = "LEVIATHAN_CONTROL_PLANE_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Events to ingest in the first phase.
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    /// Events per bundle.
    #[arg(long, default_value_t = 100)]
    pub bundle: usize,
    /// Concurrent ingest clients (one connection each).
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// After the first reads, grow this run's events to `events × grow_factor` and
    /// read again (0 or 1: no second phase).
    #[arg(long, default_value_t = 10)]
    pub grow_factor: u64,
    /// Requests per read route and phase.
    #[arg(long, default_value_t = 2_000)]
    pub reads: usize,
    /// Send the read phases to this server instead of `--url` (repeat it to
    /// spread reads over several, e.g. PostgreSQL replicas: reader `k` uses
    /// the `k mod n`-th). Each waits with `?min_seq` until it has applied the
    /// run before reads are timed. Ingest always goes to `--url`.
    #[arg(long = "read-url")]
    pub read_urls: Vec<String>,
    /// Concurrent readers per read route (1: one request at a time, the
    /// latency figures; more: the throughput figures).
    #[arg(long, default_value_t = 1)]
    pub read_clients: usize,
    /// Pace ingest at this many events per second across all clients (0: as
    /// fast as the server takes them), e.g. to measure something else under
    /// a steady load.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Stop starting new requests after this many seconds (the report says so).
    #[arg(long, default_value_t = 600.0)]
    pub duration_limit: f64,
    /// Run id: prefix of every id this run sends (default: random). Letters,
    /// digits, `-` and `_` only.
    #[arg(long)]
    pub run_id: Option<String>,
    /// The bundles' `target`.
    #[arg(long, default_value = "bench")]
    pub target: String,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Allow a URL whose host is not a loopback address.
    #[arg(long)]
    pub allow_non_loopback: bool,
    /// Report each ingest phase per segment of `--segment-events` events of the
    /// run: events/s, bundle latency, the bench's and the server's CPU.
    #[arg(long)]
    pub segments: bool,
    /// Events per segment of the `--segments` report.
    #[arg(long, default_value_t = 1_000_000)]
    pub segment_events: u64,
    /// With `--events 0`: no ingest, only the reads, against the first
    /// `--run-events` events an earlier run (`--run-id`) left in the log.
    #[arg(long, default_value_t = 0)]
    pub run_events: u64,
    /// Bearer token for `/metrics` (the server's LEVIATHAN_METRICS_TOKEN, when
    /// it has one); the server's CPU time and RSS are read from there.
    #[arg(long, env = "LEVIATHAN_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
}

/// The synthetic event stream of one run: a pure function of the event index,
/// so concurrent clients can each build their own bundles.
///
/// Every attempt is 10 events, shaped like what executors send (tests/common's
/// `mixed_log`): `attempt.created`, `attempt.started`, `job.submitted`,
/// `artifact.created`, `tests.passed`/`tests.failed`, `model.call_completed`,
/// `pr.created` + `attempt.succeeded` + `pr.merged` (two of three attempts) or
/// `attempt.failed` + `custom.note` + `attempt.invalidated` (one of three), and a
/// task event (`task.created` for the next task every 20 attempts,
/// `task.completed` at the end of a task, else `custom.note`). The setup bundle
/// has `target.registered` and the first `task.created`.
#[derive(Debug, Clone)]
pub struct Generator {
    pub run: String,
    pub target: String,
}

/// Attempts per task in the synthetic stream.
const ATTEMPTS_PER_TASK: u64 = 20;
/// 2026-01-24T10:00:00Z.
const BASE_EPOCH_SECS: i64 = 1_769_248_800;

impl Generator {
    pub fn new(run: &str, target: &str) -> Generator {
        Generator {
            run: run.to_owned(),
            target: target.to_owned(),
        }
    }

    /// The attempt id of attempt `i`.
    pub fn attempt_id(&self, i: u64) -> String {
        format!("{}-att-{i}", self.run)
    }

    /// The event id of event `j` of the stream.
    pub fn event_id(&self, j: u64) -> String {
        format!("{}-e{j}", self.run)
    }

    /// The setup bundle (target and first task); its ids are unique per run.
    pub fn setup_bundle(&self) -> String {
        let mut out = String::with_capacity(1024);
        self.open_bundle(&mut out, &format!("{}-setup", self.run));
        let r = &self.run;
        let t = &self.target;
        push_event(
            &mut out,
            &format!("{r}-target"),
            "target.registered",
            &timestamp(0),
            &format!(
                r#"{{"target_id":"{t}","name":"{t}","repo_url":"git@github.com:bench/{t}.git","default_branch":"main","contract_sha256":"{}","created_by":"bench"}}"#,
                hex64(r.len() as u64)
            ),
        );
        out.push(',');
        push_event(
            &mut out,
            &format!("{r}-task-0"),
            "task.created",
            &timestamp(0),
            &self.task_payload(0),
        );
        out.push_str("]}");
        out
    }

    fn task_payload(&self, task: u64) -> String {
        format!(
            r#"{{"task_id":"{r}-t{task}","target_id":"{t}","title":"Bump dependency #{task} and fix the fallout","scope":"deps","priority":"p1","estimated_size":"s","allowed_paths":["Cargo.toml","Cargo.lock","src/"],"acceptance_criteria":["cargo build","cargo test"],"status":"pending"}}"#,
            r = self.run,
            t = self.target
        )
    }

    fn open_bundle(&self, out: &mut String, bundle_id: &str) {
        let _ = write!(
            out,
            r#"{{"target":"{}","bundle_id":"{bundle_id}","events":["#,
            self.target
        );
    }

    /// The body of the bundle holding events `[first, first + count)`.
    pub fn bundle(&self, first: u64, count: u64) -> String {
        let mut out = String::with_capacity(count as usize * 700 + 128);
        self.open_bundle(&mut out, &format!("{}-b{first}", self.run));
        for j in first..first + count {
            if j > first {
                out.push(',');
            }
            self.push(&mut out, j);
        }
        out.push_str("]}");
        out
    }

    /// Event `j` of the stream.
    fn push(&self, out: &mut String, j: u64) {
        let i = j / EVENTS_PER_ATTEMPT;
        let slot = j % EVENTS_PER_ATTEMPT;
        let r = &self.run;
        let t = &self.target;
        let a = self.attempt_id(i);
        let task = i / ATTEMPTS_PER_TASK;
        let failed = i.is_multiple_of(3);
        let ts = timestamp(j);
        let id = self.event_id(j);
        let pr = 1000 + i;
        let (event_type, payload) = match slot {
            0 => (
                "attempt.created",
                format!(
                    r#"{{"attempt_id":"{a}","task_id":"{r}-t{task}","target_id":"{t}","attempt_number":{n},"status":"created","created_by":"worker-{w}","executor":{{"kind":"sandbox","image":"executor:2026.01","cpu":2,"memory_mb":4096}}}}"#,
                    n = i % ATTEMPTS_PER_TASK + 1,
                    w = i % 16
                ),
            ),
            1 => (
                "attempt.started",
                format!(
                    r#"{{"attempt_id":"{a}","status":"running","started_at":"{ts}","worker_id":"worker-{w}"}}"#,
                    w = i % 16
                ),
            ),
            2 => (
                "job.submitted",
                format!(r#"{{"attempt_id":"{a}","job_id":"{r}-job-{i}","queue":"default"}}"#),
            ),
            3 => (
                "artifact.created",
                format!(
                    r#"{{"artifact_id":"{r}-art-{i}","attempt_id":"{a}","sha256":"{h}","artifact_type":"log","size_bytes":{s},"storage_path":"cas://{h}","mime_type":"text/plain"}}"#,
                    h = hex64(j),
                    s = 4096 + i % 10_000
                ),
            ),
            4 => (
                if failed {
                    "tests.failed"
                } else {
                    "tests.passed"
                },
                format!(
                    r#"{{"test_run_id":"{r}-tr-{i}","attempt_id":"{a}","scope":"unit","test_count":412,"failure_count":{f},"output_sha256":"{h}"}}"#,
                    f = u8::from(failed),
                    h = hex64(j)
                ),
            ),
            5 => (
                "model.call_completed",
                format!(
                    r#"{{"call_id":"{r}-mc-{i}","attempt_id":"{a}","model":"model-large-2026","tokens_input":{ti},"tokens_output":{to},"cost_usd":{c:.4},"prompt_sha256":"{h}"}}"#,
                    ti = 12_000 + i % 5000,
                    to = 800 + i % 700,
                    c = 0.05 + (i % 100) as f64 / 1000.0,
                    h = hex64(j)
                ),
            ),
            6 if failed => (
                "attempt.failed",
                format!(
                    r#"{{"attempt_id":"{a}","status":"failed","failure_type":"execution_failed","error_summary":"unit tests failed: 1 of 412 (case {i})","exit_code":101,"completed_at":"{ts}"}}"#
                ),
            ),
            6 => (
                "pr.created",
                format!(
                    r#"{{"attempt_id":"{a}","pr_number":{pr},"pr_url":"https://github.com/bench/{t}/pull/{pr}","title":"Bump dependency for task {task}","state":"open"}}"#
                ),
            ),
            7 if failed => (
                "custom.note",
                format!(
                    r#"{{"attempt_id":"{a}","text":"retrying with a larger sandbox é\ud83d\ude00"}}"#
                ),
            ),
            7 => (
                "attempt.succeeded",
                format!(
                    r#"{{"attempt_id":"{a}","status":"succeeded","pr_number":{pr},"pr_url":"https://github.com/bench/{t}/pull/{pr}","exit_code":0,"completed_at":"{ts}"}}"#
                ),
            ),
            8 if failed => (
                "attempt.invalidated",
                format!(r#"{{"attempt_id":"{a}","reason":"flaky test environment"}}"#),
            ),
            8 => (
                "pr.merged",
                format!(r#"{{"attempt_id":"{a}","pr_number":{pr},"merged_at":"{ts}"}}"#),
            ),
            _ if i.is_multiple_of(ATTEMPTS_PER_TASK) => {
                ("task.created", self.task_payload(task + 1))
            }
            _ if i % ATTEMPTS_PER_TASK == ATTEMPTS_PER_TASK - 1 => (
                "task.completed",
                format!(r#"{{"task_id":"{r}-t{task}","target_id":"{t}","status":"completed"}}"#),
            ),
            _ => (
                "custom.note",
                format!(r#"{{"attempt_id":"{a}","text":"attempt {i} done"}}"#),
            ),
        };
        push_event(out, &id, event_type, &ts, &payload);
    }
}

fn push_event(out: &mut String, id: &str, event_type: &str, ts: &str, payload: &str) {
    let _ = write!(
        out,
        r#"{{"event_id":"{id}","event_type":"{event_type}","timestamp":"{ts}","actor_id":"bench-worker","payload":{payload}}}"#
    );
}

/// A deterministic 64-hex-digit string derived from `n`.
fn hex64(n: u64) -> String {
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut s = String::with_capacity(64);
    for _ in 0..4 {
        x ^= x >> 31;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        let _ = write!(s, "{x:016x}");
    }
    s
}

/// Event `j`'s timestamp: one millisecond apart, naive UTC with microseconds
/// (as Python's `isoformat()` writes it).
fn timestamp(j: u64) -> String {
    let t =
        chrono::DateTime::from_timestamp(BASE_EPOCH_SECS + (j / 1000) as i64, 0).expect("in range");
    format!("{}.{:06}", t.format("%Y-%m-%dT%H:%M:%S"), (j % 1000) * 1000)
}

/// Latency distribution of one kind of request, in milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Latency {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    /// Requests answered per second over the route's whole timed run (read
    /// phases only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<f64>,
}

impl Latency {
    fn of(mut samples: Vec<Duration>) -> Option<Latency> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let at = |q: f64| {
            let idx = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            ms(samples[idx])
        };
        let sum: f64 = samples.iter().map(|d| ms(*d)).sum();
        Some(Latency {
            count: samples.len(),
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: ms(*samples.last().expect("non-empty")),
            mean_ms: sum / samples.len() as f64,
            requests_per_second: None,
        })
    }
}

/// One ingest phase.
#[derive(Debug, Clone, Serialize)]
pub struct IngestReport {
    pub events: u64,
    pub bundles: u64,
    pub seconds: f64,
    pub events_per_second: f64,
    pub bundle_latency: Option<Latency>,
    /// Bytes of request bodies sent.
    pub body_bytes: u64,
    /// The duration limit stopped the phase before all its events were sent.
    pub truncated: bool,
    /// The bench's and the server's CPU over the whole phase.
    pub cpu: CpuUse,
    /// Per segment of `--segment-events` events (with `--segments`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<SegmentReport>,
}

/// CPU used between two marks, in cores (CPU seconds per wall second), and
/// which side was the bound.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CpuUse {
    /// Wall time between the marks.
    pub seconds: f64,
    /// The bench's own CPU (user + system) over `seconds`: at most ~1, its
    /// runtime is one thread.
    pub client_cores: Option<f64>,
    /// The server's `process_cpu_seconds_total` over `seconds` (None when
    /// `/metrics` could not be read).
    pub server_cores: Option<f64>,
    /// The server's `process_resident_memory_bytes` at the end mark.
    pub server_rss_bytes: Option<u64>,
    /// The server's writer thread (`leviathan-write`, which orders every
    /// append) over `seconds`, from `leviathan_thread_cpu_seconds_total`:
    /// near 1 with `writer_runqueue_cores`, the one serial thread was the
    /// bound, not the machine's cores.
    pub writer_cores: Option<f64>,
    /// How long the writer was runnable but waited for a core, over
    /// `seconds` (`leviathan_thread_runqueue_wait_seconds_total`): the share
    /// of its time other threads (store workers, HTTP) took from it.
    pub writer_runqueue_cores: Option<f64>,
    /// The machine's 1-minute load average at the end mark (Linux).
    pub load_average: Option<f64>,
    /// Cores the whole machine kept busy over `seconds` (`/proc/stat`: all
    /// but idle and iowait; steal counts as busy), bench and server included.
    pub machine_cores: Option<f64>,
    /// `"client"` when the bench's thread was ≥ 90 % busy (it could not send
    /// faster); `"machine"` when other processes kept half a core or more
    /// busy (`machine_cores` less the bench's and the server's; without
    /// `/proc/stat`, the 1-minute load average less them ≥ 1); else `"server"`.
    pub bound: &'static str,
}

/// One segment of an ingest phase: the bundles whose last event is the
/// run's event `first_event..end_event`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SegmentReport {
    /// Segment number: events `[index × size, (index + 1) × size)` of the run.
    pub index: u64,
    pub first_event: u64,
    pub end_event: u64,
    pub events: u64,
    /// From the previous segment's last answer (or the phase's start) to this
    /// segment's last answer.
    pub seconds: f64,
    pub events_per_second: f64,
    pub bundle_latency: Option<Latency>,
    pub cpu: Option<CpuUse>,
}

/// One answered bundle, for the segment report.
#[derive(Debug, Clone, Copy)]
pub struct Completion {
    /// When the answer came, since the phase's start.
    pub done_at: Duration,
    pub events: u64,
    pub latency: Duration,
}

/// The CPU counters at a segment boundary.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuMark {
    /// The boundary: the start of segment `boundary` (the phase's start and
    /// end marks are at the boundaries of the segments they fall in).
    pub boundary: u64,
    /// Since the phase's start.
    pub at: Duration,
    pub client_cpu: Option<f64>,
    pub server_cpu: Option<f64>,
    pub server_rss: Option<u64>,
    /// The writer thread's CPU and run-queue wait seconds since it started.
    pub writer_cpu: Option<f64>,
    pub writer_wait: Option<f64>,
    pub load_average: Option<f64>,
    /// The machine's busy CPU seconds since boot (`/proc/stat`).
    pub machine_busy: Option<f64>,
}

/// Client cores at or above this share of one core: the bench was the bound.
const CLIENT_BOUND_CORES: f64 = 0.9;
/// Cores other processes kept busy (the machine's busy cores less the
/// bench's and the server's) at or above this: the machine was shared.
const OTHERS_BOUND_CORES: f64 = 0.5;
/// Without `/proc/stat`: the load average less the bench's and the server's
/// cores at or above this. Coarser: the load counts runnable threads, so a
/// server with more busy threads than cores (writer, store workers, HTTP)
/// raises it by itself; the busy-CPU rule above does not have that flaw.
const OTHERS_BOUND_LOAD: f64 = 1.0;

/// Which side bounded a stretch of ingest: `"client"` (the bench's one
/// thread was busy), `"machine"` (other processes kept the CPU busy: the
/// figure is the machine's, not the server's), else `"server"`.
fn bound(
    client: Option<f64>,
    server: Option<f64>,
    machine: Option<f64>,
    load: Option<f64>,
) -> &'static str {
    let ours = client.unwrap_or(0.0) + server.unwrap_or(0.0);
    let shared = match machine {
        Some(busy) => busy - ours >= OTHERS_BOUND_CORES,
        None => load.is_some_and(|l| l - ours >= OTHERS_BOUND_LOAD),
    };
    if client.is_some_and(|c| c >= CLIENT_BOUND_CORES) {
        "client"
    } else if shared {
        "machine"
    } else {
        "server"
    }
}

/// The machine's busy CPU seconds since boot: the first line of `/proc/stat`
/// (`cpu user nice system idle iowait irq softirq steal ...`, in clock
/// ticks) less idle and iowait.
fn machine_busy_seconds(stat: &str) -> Option<f64> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let (idle, iowait) = (*ticks.get(3)?, *ticks.get(4)?);
    let busy = ticks.iter().sum::<u64>() - idle - iowait;
    Some(busy as f64 / rustix::param::clock_ticks_per_second() as f64)
}

impl CpuUse {
    /// The CPU used between marks `a` and `b`.
    pub fn between(a: &CpuMark, b: &CpuMark) -> CpuUse {
        let seconds = b.at.saturating_sub(a.at).as_secs_f64();
        let rate = |x: Option<f64>, y: Option<f64>| match (x, y) {
            (Some(x), Some(y)) if seconds > 0.0 => Some((y - x).max(0.0) / seconds),
            _ => None,
        };
        let client_cores = rate(a.client_cpu, b.client_cpu);
        let server_cores = rate(a.server_cpu, b.server_cpu);
        let machine_cores = rate(a.machine_busy, b.machine_busy);
        CpuUse {
            seconds,
            client_cores,
            server_cores,
            server_rss_bytes: b.server_rss,
            writer_cores: rate(a.writer_cpu, b.writer_cpu),
            writer_runqueue_cores: rate(a.writer_wait, b.writer_wait),
            load_average: b.load_average,
            machine_cores,
            bound: bound(client_cores, server_cores, machine_cores, b.load_average),
        }
    }
}

/// Splits a phase's answered bundles into segments of `size` events of the
/// run. `from` is the run's event count at the phase's start; a bundle belongs
/// to the segment of its last event, counting bundles in the order their
/// answers came. `marks` (any order) give each segment its CPU figures: the
/// segment `k` runs from the mark at boundary `k` (or the phase's start mark)
/// to the mark at boundary `k + 1`.
pub fn segments(
    from: u64,
    size: u64,
    mut completions: Vec<Completion>,
    marks: &[CpuMark],
) -> Vec<SegmentReport> {
    let size = size.max(1);
    completions.sort_by_key(|c| c.done_at);
    let mut out: Vec<SegmentReport> = Vec::new();
    let mut lat: Vec<Duration> = Vec::new();
    let mut count = from;
    let mut seg_start = Duration::ZERO;
    let mut last = Duration::ZERO;
    let mut current: Option<(u64, u64, u64)> = None; // (index, first event, events)
    let finish = |out: &mut Vec<SegmentReport>,
                  (index, first_event, events): (u64, u64, u64),
                  start: Duration,
                  end: Duration,
                  lat: Vec<Duration>| {
        let seconds = end.saturating_sub(start).as_secs_f64();
        let start_mark = marks
            .iter()
            .filter(|m| m.boundary <= index)
            .max_by_key(|m| (m.boundary, std::cmp::Reverse(m.at)));
        let end_mark = marks
            .iter()
            .filter(|m| m.boundary > index)
            .min_by_key(|m| (m.boundary, m.at));
        out.push(SegmentReport {
            index,
            first_event,
            end_event: first_event + events,
            events,
            seconds,
            events_per_second: crate::progress::per_second(events, seconds),
            bundle_latency: Latency::of(lat),
            cpu: match (start_mark, end_mark) {
                (Some(a), Some(b)) => Some(CpuUse::between(a, b)),
                _ => None,
            },
        });
    };
    for c in completions {
        let index = (count + c.events.max(1) - 1) / size;
        match current {
            Some((i, first, events)) if i == index => current = Some((i, first, events + c.events)),
            _ => {
                if let Some(cur) = current.take() {
                    finish(&mut out, cur, seg_start, last, std::mem::take(&mut lat));
                    seg_start = last;
                }
                current = Some((index, count, c.events));
            }
        }
        lat.push(c.latency);
        count += c.events;
        last = c.done_at;
    }
    if let Some(cur) = current {
        finish(&mut out, cur, seg_start, last, lat);
    }
    out
}

/// Read latency per route, one request at a time.
#[derive(Debug, Clone, Serialize)]
pub struct ReadReport {
    /// Events of this run in the log when the reads ran.
    pub run_events: u64,
    /// The server's log head when the reads ran.
    pub head_seq: u64,
    /// Where the reads went (`--read-url`, else `--url`).
    pub read_urls: Vec<String>,
    /// Concurrent readers per route.
    pub read_clients: usize,
    pub summary: Option<Latency>,
    pub attempt_detail: Option<Latency>,
    pub attempts_list: Option<Latency>,
    pub node_lookup: Option<Latency>,
    /// `GET /v1/graph/nodes/{attempt}/history`.
    pub node_history: Option<Latency>,
    /// `GET /v1/events/{event_id}/proof` (against the latest tree size).
    pub inclusion_proof: Option<Latency>,
    pub truncated: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub run_id: String,
    pub url: String,
    pub bundle: usize,
    pub clients: usize,
    pub grow_factor: u64,
    pub ingest: IngestReport,
    pub reads: ReadReport,
    pub grow_ingest: Option<IngestReport>,
    pub grown_reads: Option<ReadReport>,
    /// The store at the end of the run, from the server's `/metrics`
    /// (`None` when it could not be read).
    pub store: Option<StoreReport>,
    pub seconds: f64,
}

/// The store at the end of a run: its size per event and what the server
/// wrote to reach it (counters since the server started, so a run on a
/// freshly started server over a fresh store accounts for every byte).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StoreReport {
    /// The log's head seq (events in the log).
    pub events: u64,
    /// `leviathan_store_disk_bytes` (measured at most 10 s before).
    pub disk_bytes: u64,
    pub disk_bytes_per_event: f64,
    /// Everything the server wrote to storage (`leviathan_process_written_bytes_total`;
    /// `None` where it does not count the store's writes, as on tmpfs).
    pub written_bytes: Option<u64>,
    /// What the journal took: `written_bytes` less the flushes' and
    /// compactions' files (the artifact store's bytes included).
    pub journal_bytes: Option<u64>,
    pub flushed_bytes: u64,
    pub compaction_read_bytes: u64,
    pub compaction_written_bytes: u64,
    /// `(flushed + compaction written) / flushed` over every keyspace.
    pub write_amplification: f64,
    /// Per keyspace that wrote anything, most bytes first.
    pub keyspaces: Vec<KeyspaceWriteReport>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KeyspaceWriteReport {
    pub keyspace: String,
    /// Tables and blob files its flushes wrote.
    pub flushed_bytes: u64,
    pub compaction_read_bytes: u64,
    pub compaction_written_bytes: u64,
    /// `(flushed + compaction written) / flushed`.
    pub write_amplification: f64,
}

/// The [`StoreReport`] in a `/metrics` text exposition, `None` without the
/// store's counters (a server before them, or a PostgreSQL store).
fn store_report(text: &str) -> Option<StoreReport> {
    let mut by_keyspace: std::collections::BTreeMap<String, [u64; 3]> = Default::default();
    let value = |name: &str| exposition_value(text, name);
    let events = value("leviathan_log_head_seq")? as u64;
    let disk_bytes = value("leviathan_store_disk_bytes")? as u64;
    let process_written = value("leviathan_process_written_bytes_total").map(|v| v as u64);
    for line in text.lines() {
        let Some((series, v)) = line.split_once(' ') else {
            continue;
        };
        let slot = if series.starts_with("leviathan_store_flush_written_bytes_total{") {
            0
        } else if series.starts_with("leviathan_store_compaction_read_bytes_total{") {
            1
        } else if series.starts_with("leviathan_store_compaction_written_bytes_total{") {
            2
        } else {
            continue;
        };
        let Some(keyspace) = series
            .split_once("keyspace=\"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(k, _)| k.to_owned())
        else {
            continue;
        };
        let Ok(v) = v.trim().parse::<f64>() else {
            continue;
        };
        by_keyspace.entry(keyspace).or_default()[slot] += v as u64;
    }
    if by_keyspace.is_empty() {
        return None;
    }
    let amplification = |flushed: u64, written: u64| {
        if flushed == 0 {
            0.0
        } else {
            (flushed + written) as f64 / flushed as f64
        }
    };
    let mut keyspaces: Vec<KeyspaceWriteReport> = by_keyspace
        .into_iter()
        .filter(|(_, [f, r, w])| f + r + w > 0)
        .map(|(keyspace, [f, r, w])| KeyspaceWriteReport {
            keyspace,
            flushed_bytes: f,
            compaction_read_bytes: r,
            compaction_written_bytes: w,
            write_amplification: amplification(f, w),
        })
        .collect();
    keyspaces.sort_by(|a, b| {
        let total = |k: &KeyspaceWriteReport| k.flushed_bytes + k.compaction_written_bytes;
        total(b)
            .cmp(&total(a))
            .then_with(|| a.keyspace.cmp(&b.keyspace))
    });
    let sum = |f: fn(&KeyspaceWriteReport) -> u64| keyspaces.iter().map(f).sum::<u64>();
    let flushed_bytes = sum(|k| k.flushed_bytes);
    let compaction_read_bytes = sum(|k| k.compaction_read_bytes);
    let compaction_written_bytes = sum(|k| k.compaction_written_bytes);
    // Below the files' bytes, the process's counter does not see the store's
    // writes (a data dir on tmpfs, which no block device writes back).
    let written_bytes = process_written.filter(|&w| w >= flushed_bytes + compaction_written_bytes);
    Some(StoreReport {
        events,
        disk_bytes,
        disk_bytes_per_event: if events == 0 {
            0.0
        } else {
            disk_bytes as f64 / events as f64
        },
        written_bytes,
        journal_bytes: written_bytes
            .map(|w| w.saturating_sub(flushed_bytes + compaction_written_bytes)),
        flushed_bytes,
        compaction_read_bytes,
        compaction_written_bytes,
        write_amplification: amplification(flushed_bytes, compaction_written_bytes),
        keyspaces,
    })
}

/// Refuses a URL whose host is not loopback, unless allowed.
pub fn check_url(url: &str, allow_non_loopback: bool) -> anyhow::Result<reqwest::Url> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("invalid --url {url:?}"))?;
    if parsed.scheme() != "http" {
        bail!("--url must be http:// (got {url:?})");
    }
    let host = parsed.host_str().unwrap_or("");
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback && !allow_non_loopback {
        bail!(
            "--url {url:?} is not a loopback address; the benchmark only drives a local server \
             (pass --allow-non-loopback to override)"
        );
    }
    Ok(parsed)
}

fn check_args(a: &BenchArgs) -> anyhow::Result<()> {
    if a.events > MAX_EVENTS {
        bail!("--events must be at most {MAX_EVENTS}");
    }
    if a.events == 0 && (a.run_id.is_none() || a.run_events == 0) {
        bail!(
            "--events 0 (reads only) needs --run-id and --run-events: the run whose events \
             the reads pick from"
        );
    }
    if a.run_events > 0 && a.events > 0 {
        bail!("--run-events only goes with --events 0 (reads only)");
    }
    if a.segments && a.segment_events == 0 {
        bail!("--segment-events must be at least 1");
    }
    if a.bundle == 0 || a.bundle > 10_000 {
        bail!("--bundle must be between 1 and 10000");
    }
    if a.clients == 0 || a.clients > MAX_CLIENTS {
        bail!("--clients must be between 1 and {MAX_CLIENTS}");
    }
    if a.grow_factor > MAX_GROW || a.events.saturating_mul(a.grow_factor.max(1)) > MAX_EVENTS {
        bail!("--grow-factor must be at most {MAX_GROW}, and events × grow factor at most {MAX_EVENTS}");
    }
    if a.reads > MAX_READS {
        bail!("--reads must be at most {MAX_READS}");
    }
    if a.read_clients == 0 || a.read_clients > MAX_CLIENTS {
        bail!("--read-clients must be between 1 and {MAX_CLIENTS}");
    }
    if !(a.duration_limit > 0.0 && a.duration_limit <= MAX_DURATION_SECS) {
        bail!("--duration-limit must be positive and at most {MAX_DURATION_SECS} seconds");
    }
    if a.target.is_empty() || !a.target.chars().all(id_char) {
        bail!("--target may only contain letters, digits, '-' and '_'");
    }
    if let Some(r) = &a.run_id {
        if r.is_empty() || r.len() > 64 || !r.chars().all(id_char) {
            bail!("--run-id: 1 to 64 letters, digits, '-' or '_'");
        }
    }
    Ok(())
}

fn id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// Runs the whole benchmark (blocking; starts its own async runtime).
pub fn run(args: &BenchArgs) -> anyhow::Result<BenchReport> {
    check_args(args)?;
    let base = check_url(&args.url, args.allow_non_loopback)?;
    let read_bases = args
        .read_urls
        .iter()
        .map(|u| check_url(u, args.allow_non_loopback).map(|u| trim_base(&u)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run_async(args, base, read_bases))
}

fn trim_base(u: &reqwest::Url) -> String {
    u.as_str().trim_end_matches('/').to_owned()
}

struct Ctx {
    client: reqwest::Client,
    base: String,
    /// Where reads go (at least one).
    read_bases: Vec<String>,
    token: String,
    generator: Generator,
    deadline: Instant,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    metrics_token: String,
    /// `/metrics` failed once: not asked again (and said once).
    no_metrics: AtomicBool,
}

impl Ctx {
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn error(&self, msg: String) {
        let n = self.errors.fetch_add(1, Ordering::Relaxed) + 1;
        let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            *first = Some(msg);
        }
        drop(first);
        if n == 1 {
            tracing::warn!("a request failed; the run stops after {MAX_ERRORS} failures");
        }
    }

    fn check_errors(&self) -> anyhow::Result<()> {
        let n = self.errors.load(Ordering::Relaxed);
        if n >= MAX_ERRORS {
            let first = self
                .first_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .unwrap_or_default();
            bail!("{n} requests failed; the first: {first}");
        }
        Ok(())
    }

    /// The CPU counters now, for the boundary `boundary` of the phase that
    /// started at `started`.
    async fn mark(&self, boundary: u64, started: Instant, at: Instant) -> CpuMark {
        let client_cpu = crate::metrics::ProcessStats::read().cpu_seconds;
        let server = match self.server_process().await {
            Ok(v) => v,
            Err(e) => {
                if !self.no_metrics.swap(true, Ordering::Relaxed) {
                    tracing::warn!("no server CPU figures: {e:#}");
                }
                ServerCounters::default()
            }
        };
        CpuMark {
            boundary,
            at: at.saturating_duration_since(started),
            client_cpu,
            server_cpu: server.cpu_seconds,
            server_rss: server.rss_bytes,
            writer_cpu: server.writer_cpu_seconds,
            writer_wait: server.writer_wait_seconds,
            load_average: std::fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|l| l.split_whitespace().next()?.parse().ok()),
            machine_busy: std::fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|s| machine_busy_seconds(&s)),
        }
    }

    /// The server's process and writer-thread counters from `/metrics`.
    async fn server_process(&self) -> anyhow::Result<ServerCounters> {
        if self.no_metrics.load(Ordering::Relaxed) {
            return Ok(ServerCounters::default());
        }
        Ok(process_metrics(&self.metrics_text().await?))
    }

    /// The store's size and write counters at the end of the run, if
    /// `/metrics` answers and has them.
    async fn store(&self) -> Option<StoreReport> {
        if self.no_metrics.load(Ordering::Relaxed) {
            return None;
        }
        match self.metrics_text().await {
            Ok(text) => store_report(&text),
            Err(e) => {
                tracing::warn!("no store figures: {e:#}");
                None
            }
        }
    }

    async fn metrics_text(&self) -> anyhow::Result<String> {
        let resp = self
            .client
            .get(self.url("/metrics"))
            .bearer_auth(&self.metrics_token)
            .send()
            .await
            .context("GET /metrics")?;
        let status = resp.status();
        let text = resp.text().await.context("GET /metrics")?;
        if !status.is_success() {
            bail!("GET /metrics: {status}");
        }
        Ok(text)
    }

    async fn get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        self.get_from(&self.base, path).await
    }

    async fn get_from(&self, base: &str, path: &str) -> anyhow::Result<serde_json::Value> {
        let resp = self
            .client
            .get(format!("{base}{path}"))
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = resp.status();
        let body = resp.bytes().await.with_context(|| format!("GET {path}"))?;
        if !status.is_success() {
            bail!(
                "GET {path}: {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(500)])
            );
        }
        serde_json::from_slice(&body).with_context(|| format!("GET {path}: not JSON"))
    }

    async fn post_bundle(&self, body: String, expect: u64) -> anyhow::Result<()> {
        let resp = self
            .client
            .post(self.url("/v1/events/ingest"))
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .context("POST /v1/events/ingest")?;
        let status = resp.status();
        let bytes = resp.bytes().await.context("POST /v1/events/ingest")?;
        if !status.is_success() {
            bail!(
                "POST /v1/events/ingest: {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(500)])
            );
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            ingested: u64,
        }
        let a: Answer = serde_json::from_slice(&bytes).context("ingest answer")?;
        if a.ingested != expect {
            bail!(
                "POST /v1/events/ingest: ingested {} events, {expect} sent (was this run id used before?)",
                a.ingested
            );
        }
        Ok(())
    }
}

async fn run_async(
    args: &BenchArgs,
    base: reqwest::Url,
    read_bases: Vec<String>,
) -> anyhow::Result<BenchReport> {
    let started = Instant::now();
    let run_id = args.run_id.clone().unwrap_or_else(|| {
        let u = uuid::Uuid::new_v4().simple().to_string();
        format!("r{}", &u[..10])
    });
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients.max(args.read_clients) + 1)
        .timeout(Duration::from_secs(120))
        .connect_timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .context("building the HTTP client")?;
    let ctx = Arc::new(Ctx {
        client,
        read_bases: if read_bases.is_empty() {
            vec![trim_base(&base)]
        } else {
            read_bases
        },
        base: trim_base(&base),
        token: args.token.clone(),
        generator: Generator::new(&run_id, &args.target),
        deadline: started + Duration::from_secs_f64(args.duration_limit),
        errors: AtomicU64::new(0),
        first_error: Mutex::new(None),
        metrics_token: args
            .metrics_token
            .clone()
            .unwrap_or_else(|| args.token.clone()),
        no_metrics: AtomicBool::new(false),
    });
    // The server must be up, and the token right, before anything is timed.
    ctx.get("/v1/log/head")
        .await
        .context("the server does not answer GET /v1/log/head")?;
    if args.events == 0 {
        // Reads only, against an earlier run's events.
        let reads = reads_phase(&ctx, args.reads, args.read_clients, args.run_events).await?;
        let now = ctx.mark(0, started, Instant::now()).await;
        return Ok(BenchReport {
            run_id,
            url: ctx.base.clone(),
            bundle: args.bundle,
            clients: args.clients,
            grow_factor: args.grow_factor,
            ingest: IngestReport {
                events: 0,
                bundles: 0,
                seconds: 0.0,
                events_per_second: 0.0,
                bundle_latency: None,
                body_bytes: 0,
                truncated: false,
                cpu: CpuUse::between(&now, &now),
                segments: Vec::new(),
            },
            reads,
            grow_ingest: None,
            grown_reads: None,
            store: ctx.store().await,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    ctx.post_bundle(ctx.generator.setup_bundle(), 2)
        .await
        .context("sending the setup bundle")?;
    tracing::info!(run_id = %run_id, "setup done; ingest phase");

    let ingest = ingest_phase(&ctx, args, 0, args.events).await?;
    let mut done = ingest.events;
    let reads = reads_phase(&ctx, args.reads, args.read_clients, done).await?;
    let (mut grow_ingest, mut grown_reads) = (None, None);
    if args.grow_factor > 1 && !ingest.truncated {
        let total = args.events * args.grow_factor;
        tracing::info!(total, "grow phase");
        let g = ingest_phase(&ctx, args, done, total).await?;
        done += g.events;
        let truncated = g.truncated;
        grow_ingest = Some(g);
        if !truncated {
            grown_reads = Some(reads_phase(&ctx, args.reads, args.read_clients, done).await?);
        }
    }
    Ok(BenchReport {
        run_id,
        url: ctx.base.clone(),
        bundle: args.bundle,
        clients: args.clients,
        grow_factor: args.grow_factor,
        ingest,
        reads,
        grow_ingest,
        grown_reads,
        store: ctx.store().await,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Ingests events `[from, to)` of the stream in bundles, from `clients` tasks
/// taking the next bundle from a shared counter.
async fn ingest_phase(
    ctx: &Arc<Ctx>,
    args: &BenchArgs,
    from: u64,
    to: u64,
) -> anyhow::Result<IngestReport> {
    let next = Arc::new(AtomicU64::new(from));
    let answered = Arc::new(AtomicU64::new(from));
    let stop = Arc::new(AtomicBool::new(false));
    let bundle = args.bundle as u64;
    let seg = if args.segments {
        args.segment_events.max(1)
    } else {
        u64::MAX
    };
    let started = Instant::now();
    let rate = args.rate;
    // Boundary crossings go to a monitor task, which reads the CPU counters.
    let (marks_tx, mut marks_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let first_mark = ctx.mark(from / seg, started, started).await;
    let monitor = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let mut marks = vec![first_mark];
            while let Some(boundary) = marks_rx.recv().await {
                marks.push(ctx.mark(boundary, started, Instant::now()).await);
            }
            marks
        })
    };
    let mut tasks = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        let (ctx, next, stop, answered) =
            (ctx.clone(), next.clone(), stop.clone(), answered.clone());
        let marks_tx = marks_tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = Vec::new();
            let (mut events, mut bytes) = (0u64, 0u64);
            loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if Instant::now() >= ctx.deadline {
                    stop.store(true, Ordering::Relaxed);
                    break;
                }
                let first = next.fetch_add(bundle, Ordering::Relaxed);
                if first >= to {
                    break;
                }
                let count = bundle.min(to - first);
                if rate > 0 {
                    // The bundle starting at event `first` is due at first/rate s.
                    let due =
                        started + Duration::from_secs_f64((first - from) as f64 / rate as f64);
                    tokio::time::sleep_until(due.into()).await;
                }
                let body = ctx.generator.bundle(first, count);
                let len = body.len() as u64;
                let t = Instant::now();
                match ctx.post_bundle(body, count).await {
                    Ok(()) => {
                        let now = Instant::now();
                        done.push(Completion {
                            done_at: now - started,
                            events: count,
                            latency: now - t,
                        });
                        events += count;
                        bytes += len;
                        let total = answered.fetch_add(count, Ordering::Relaxed) + count;
                        if total / seg > (total - count) / seg && total < to {
                            let _ = marks_tx.send(total / seg);
                        }
                    }
                    Err(e) => {
                        ctx.error(format!("{e:#}"));
                        if ctx.errors.load(Ordering::Relaxed) >= MAX_ERRORS {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                }
            }
            (done, events, bytes)
        }));
    }
    drop(marks_tx);
    let mut done = Vec::new();
    let (mut events, mut bytes) = (0, 0);
    for t in tasks {
        let (d, e, b) = t.await.context("an ingest client panicked")?;
        done.extend(d);
        events += e;
        bytes += b;
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut marks = monitor.await.context("the CPU monitor panicked")?;
    let end = from + events;
    let last_mark = ctx
        .mark(end.saturating_sub(1) / seg + 1, started, Instant::now())
        .await;
    marks.push(last_mark);
    ctx.check_errors()?;
    let cpu = CpuUse::between(&first_mark, &last_mark);
    let segments = if args.segments {
        segments(from, seg, done.clone(), &marks)
    } else {
        Vec::new()
    };
    Ok(IngestReport {
        events,
        bundles: done.len() as u64,
        seconds,
        events_per_second: events as f64 / seconds,
        bundle_latency: Latency::of(done.iter().map(|c| c.latency).collect()),
        body_bytes: bytes,
        truncated: events < to - from,
        cpu,
        segments,
    })
}

/// `process_cpu_seconds_total` and `process_resident_memory_bytes` from a
/// Prometheus text exposition.
/// The counters of the server's `/metrics` a CPU mark needs.
#[derive(Debug, Default, PartialEq)]
struct ServerCounters {
    cpu_seconds: Option<f64>,
    rss_bytes: Option<u64>,
    writer_cpu_seconds: Option<f64>,
    writer_wait_seconds: Option<f64>,
}

/// The writer thread's name as the kernel keeps it and `/metrics` labels it:
/// `leviathan-writer` cut to the 15 bytes of a Linux thread name.
const WRITER_THREAD: &str = "leviathan-write";

/// The value of the unlabelled series `name` (or `name{labels}` written out
/// whole) in a Prometheus text exposition.
fn exposition_value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name).then(|| v.trim().parse::<f64>().ok()).flatten()
    })
}

fn process_metrics(text: &str) -> ServerCounters {
    let value = |name: &str| exposition_value(text, name);
    let writer = |family: &str| value(&format!("{family}{{thread=\"{WRITER_THREAD}\"}}"));
    ServerCounters {
        cpu_seconds: value("process_cpu_seconds_total"),
        rss_bytes: value("process_resident_memory_bytes").map(|v| v as u64),
        writer_cpu_seconds: writer("leviathan_thread_cpu_seconds_total"),
        writer_wait_seconds: writer("leviathan_thread_runqueue_wait_seconds_total"),
    }
}

/// A small deterministic PRNG (splitmix64) for picking attempts to read.
struct Pick(u64);

impl Pick {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n.max(1)
    }
}

/// `n` requests per read route from `clients` concurrent readers (reader
/// `k` reads from the `k mod n`-th read URL), after a short warm-up.
async fn reads_phase(
    ctx: &Arc<Ctx>,
    n: usize,
    clients: usize,
    run_events: u64,
) -> anyhow::Result<ReadReport> {
    let head = ctx.get("/v1/log/head").await?;
    let head_seq = head["seq"].as_u64().unwrap_or(0);
    // Every read server has applied the run before anything is timed.
    // (Up to 20 waits of the server's longest, 30 s: a replica may still be
    // applying a large ingest phase.)
    for base in &ctx.read_bases {
        let path = format!("/v1/log/head?min_seq={head_seq}&timeout_ms=30000");
        let mut waits = 0;
        while let Err(e) = ctx.get_from(base, &path).await {
            waits += 1;
            if waits >= 20 {
                return Err(e.context(format!("{base} did not apply seq {head_seq}")));
            }
        }
    }
    // Only attempts whose `attempt.created` is in the log.
    let attempts = run_events.div_ceil(EVENTS_PER_ATTEMPT).max(1);
    let mut pick = Pick(attempts ^ 0x5EED);
    let g = &ctx.generator;
    let mut truncated = false;
    let mut measure = |route: &'static str| {
        let mut paths = Vec::with_capacity(n);
        for _ in 0..n {
            paths.push(match route {
                "summary" => "/v1/graph/summary".to_owned(),
                "attempt_detail" => format!("/v1/attempts/{}", g.attempt_id(pick.below(attempts))),
                "attempts_list" => "/v1/attempts?limit=10".to_owned(),
                "node_history" => format!(
                    "/v1/graph/nodes/{}/history",
                    g.attempt_id(pick.below(attempts))
                ),
                "inclusion_proof" => format!(
                    "/v1/events/{}/proof",
                    g.event_id(pick.below(run_events.max(1)))
                ),
                _ => format!("/v1/graph/nodes/{}", g.attempt_id(pick.below(attempts))),
            });
        }
        paths
    };
    let routes = [
        "summary",
        "attempt_detail",
        "attempts_list",
        "node_lookup",
        "node_history",
        "inclusion_proof",
    ];
    let mut out: Vec<Option<Latency>> = Vec::new();
    for route in routes {
        let paths = measure(route);
        // Warm-up: connection, caches of the hot top of the log.
        for base in &ctx.read_bases {
            for p in paths.iter().take(20) {
                if let Err(e) = ctx.get_from(base, p).await {
                    ctx.error(format!("{e:#}"));
                }
            }
        }
        let paths = Arc::new(paths);
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(clients);
        for k in 0..clients {
            let (ctx, paths) = (ctx.clone(), paths.clone());
            tasks.push(tokio::spawn(async move {
                let base = &ctx.read_bases[k % ctx.read_bases.len()];
                let mut samples = Vec::new();
                let mut truncated = false;
                for p in paths.iter().skip(k).step_by(clients) {
                    if Instant::now() >= ctx.deadline {
                        truncated = true;
                        break;
                    }
                    let t = Instant::now();
                    match ctx.get_from(base, p).await {
                        Ok(_) => samples.push(t.elapsed()),
                        Err(e) => ctx.error(format!("{e:#}")),
                    }
                }
                (samples, truncated)
            }));
        }
        let mut samples = Vec::with_capacity(n);
        for t in tasks {
            let (s, cut) = t.await.context("a reader panicked")?;
            samples.extend(s);
            truncated |= cut;
        }
        let wall = started.elapsed().as_secs_f64();
        ctx.check_errors()?;
        out.push(Latency::of(samples).map(|mut l| {
            l.requests_per_second = Some(l.count as f64 / wall.max(1e-9));
            l
        }));
    }
    let mut it = out.into_iter();
    Ok(ReadReport {
        run_events,
        head_seq,
        read_urls: ctx.read_bases.clone(),
        read_clients: clients,
        summary: it.next().flatten(),
        attempt_detail: it.next().flatten(),
        attempts_list: it.next().flatten(),
        node_lookup: it.next().flatten(),
        node_history: it.next().flatten(),
        inclusion_proof: it.next().flatten(),
        truncated,
    })
}

/// "bench 0.12 cores, server 1.31 cores over 20.1 s (…): server-bound".
fn cpu_text(c: &CpuUse) -> String {
    let cores = |v: Option<f64>| v.map_or_else(|| "?".to_owned(), |v| format!("{v:.2}"));
    let mut out = format!(
        "bench {} cores, server {} cores over {:.1} s",
        cores(c.client_cores),
        cores(c.server_cores),
        c.seconds
    );
    if let Some(rss) = c.server_rss_bytes {
        let _ = write!(
            out,
            ", server RSS {:.0} MiB",
            rss as f64 / (1024.0 * 1024.0)
        );
    }
    if let Some(w) = c.writer_cores {
        let _ = write!(out, ", writer thread {w:.2} cores");
        if let Some(q) = c.writer_runqueue_cores {
            let _ = write!(out, " (+{q:.2} waiting for a core)");
        }
    }
    if let Some(m) = c.machine_cores {
        let _ = write!(out, ", machine {m:.2} cores busy");
    }
    if let Some(l) = c.load_average {
        let _ = write!(out, ", load {l:.1}");
    }
    let _ = write!(out, ": {}-bound", c.bound);
    out
}

/// The report as a human-readable table.
pub fn render(r: &BenchReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "run {} against {} — bundles of {}, {} clients, {:.1} s in all",
        r.run_id, r.url, r.bundle, r.clients, r.seconds
    );
    let ingest = |s: &mut String, name: &str, i: &IngestReport| {
        let _ = write!(
            s,
            "{name}: {} events in {} bundles, {:.2} s: {:.0} events/s",
            i.events, i.bundles, i.seconds, i.events_per_second
        );
        if let Some(l) = &i.bundle_latency {
            let _ = write!(
                s,
                "; bundle latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                l.p50_ms, l.p99_ms, l.max_ms
            );
        }
        let _ = writeln!(
            s,
            "{}",
            if i.truncated {
                " (TRUNCATED by the duration limit)"
            } else {
                ""
            }
        );
        if i.events > 0 {
            let _ = writeln!(s, "  CPU: {}", cpu_text(&i.cpu));
        }
        if !i.segments.is_empty() {
            let _ = writeln!(
                s,
                "  {:>4} {:>21} {:>9} {:>8} {:>8} {:>8} {:>6} {:>6} {:>6} {:>7} {:>5}  bound",
                "seg",
                "events",
                "events/s",
                "p50 ms",
                "p99 ms",
                "max ms",
                "bench",
                "server",
                "writer",
                "RSS MiB",
                "load"
            );
            for g in &i.segments {
                let (p50, p99, max) = g
                    .bundle_latency
                    .as_ref()
                    .map_or((f64::NAN, f64::NAN, f64::NAN), |l| {
                        (l.p50_ms, l.p99_ms, l.max_ms)
                    });
                let opt = |v: Option<f64>, prec: usize| {
                    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.prec$}"))
                };
                let cpu = g.cpu.as_ref();
                let _ = writeln!(
                    s,
                    "  {:>4} {:>21} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>6} {:>6} {:>6} {:>7} {:>5}  {}",
                    g.index,
                    format!("{}..{}", g.first_event, g.end_event),
                    g.events_per_second,
                    p50,
                    p99,
                    max,
                    opt(cpu.and_then(|c| c.client_cores), 2),
                    opt(cpu.and_then(|c| c.server_cores), 2),
                    opt(cpu.and_then(|c| c.writer_cores), 2),
                    opt(
                        cpu.and_then(|c| c.server_rss_bytes)
                            .map(|b| b as f64 / (1024.0 * 1024.0)),
                        0
                    ),
                    opt(cpu.and_then(|c| c.load_average), 1),
                    cpu.map_or("-", |c| c.bound),
                );
            }
        }
    };
    let reads = |s: &mut String, name: &str, rd: &ReadReport| {
        let _ = writeln!(
            s,
            "{name} (log head {}, {} events of this run; {} reader(s) over {}){}:",
            rd.head_seq,
            rd.run_events,
            rd.read_clients,
            rd.read_urls.join(", "),
            if rd.truncated { " (TRUNCATED)" } else { "" }
        );
        for (route, l) in [
            ("summary", &rd.summary),
            ("attempt detail", &rd.attempt_detail),
            ("attempts list", &rd.attempts_list),
            ("node lookup", &rd.node_lookup),
            ("node history", &rd.node_history),
            ("inclusion proof", &rd.inclusion_proof),
        ] {
            if let Some(l) = l {
                let _ = writeln!(
                    s,
                    "  {route:<15} p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms  ({} requests, {:.0}/s)",
                    l.p50_ms,
                    l.p99_ms,
                    l.max_ms,
                    l.count,
                    l.requests_per_second.unwrap_or(0.0)
                );
            }
        }
    };
    ingest(&mut s, "ingest", &r.ingest);
    reads(&mut s, "reads", &r.reads);
    if let Some(g) = &r.grow_ingest {
        ingest(&mut s, "grow ingest", g);
    }
    if let Some(g) = &r.grown_reads {
        reads(&mut s, "reads after growth", g);
    }
    if let Some(st) = &r.store {
        render_store(&mut s, st);
    }
    s
}

fn render_store(s: &mut String, st: &StoreReport) {
    let gb = |b: u64| b as f64 / 1e9;
    let _ = writeln!(
        s,
        "store: {} events, {:.2} GB on disk ({:.0} bytes/event)",
        st.events,
        gb(st.disk_bytes),
        st.disk_bytes_per_event
    );
    if let (Some(w), Some(j)) = (st.written_bytes, st.journal_bytes) {
        let _ = writeln!(
            s,
            "  the server wrote {:.2} GB since it started ({:.1}× the store): journal {:.2} GB, \
             flushes {:.2} GB, compactions {:.2} GB",
            gb(w),
            w as f64 / st.disk_bytes.max(1) as f64,
            gb(j),
            gb(st.flushed_bytes),
            gb(st.compaction_written_bytes)
        );
    }
    let _ = writeln!(
        s,
        "  {:<26} {:>11} {:>11} {:>11} {:>6}",
        "keyspace", "flushed GB", "comp. read", "comp. wrote", "amp."
    );
    // Keyspaces that wrote under 1 MB are left out of this table (the JSON
    // and the totals keep them).
    for k in st
        .keyspaces
        .iter()
        .filter(|k| k.flushed_bytes + k.compaction_written_bytes >= 1_000_000)
    {
        let _ = writeln!(
            s,
            "  {:<26} {:>11.3} {:>11.3} {:>11.3} {:>6.1}",
            k.keyspace,
            gb(k.flushed_bytes),
            gb(k.compaction_read_bytes),
            gb(k.compaction_written_bytes),
            k.write_amplification
        );
    }
    let _ = writeln!(
        s,
        "  {:<26} {:>11.3} {:>11.3} {:>11.3} {:>6.1}",
        "all",
        gb(st.flushed_bytes),
        gb(st.compaction_read_bytes),
        gb(st.compaction_written_bytes),
        st.write_amplification
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_are_valid_and_cover_every_standard_type() {
        let g = Generator::new("r1", "bench");
        let setup = crate::bundle::parse(g.setup_bundle().as_bytes(), &Default::default()).unwrap();
        assert_eq!(setup.events.len(), 2);
        let b = g.bundle(0, 400);
        let parsed = crate::bundle::parse(b.as_bytes(), &Default::default()).unwrap();
        assert_eq!(parsed.events.len(), 400);
        let types: std::collections::BTreeSet<_> = parsed
            .events
            .iter()
            .map(|e| e.event_type.as_str())
            .collect();
        for t in [
            "attempt.created",
            "attempt.started",
            "attempt.succeeded",
            "attempt.failed",
            "attempt.invalidated",
            "job.submitted",
            "artifact.created",
            "tests.passed",
            "tests.failed",
            "model.call_completed",
            "pr.created",
            "pr.merged",
            "task.created",
            "task.completed",
            "custom.note",
        ] {
            assert!(types.contains(t), "{t} missing");
        }
        // Ids are unique per run and the two halves of a split agree.
        let ids: std::collections::HashSet<_> =
            parsed.events.iter().map(|e| e.event_id.clone()).collect();
        assert_eq!(ids.len(), 400);
        let a = crate::bundle::parse(g.bundle(0, 150).as_bytes(), &Default::default()).unwrap();
        let b = crate::bundle::parse(g.bundle(150, 250).as_bytes(), &Default::default()).unwrap();
        let joined: Vec<_> = a
            .events
            .iter()
            .chain(&b.events)
            .map(|e| e.content_digest)
            .collect();
        let whole: Vec<_> = parsed.events.iter().map(|e| e.content_digest).collect();
        assert_eq!(joined, whole);
        let other = Generator::new("r2", "bench").bundle(0, 1);
        assert!(!other.contains("\"r1-"));
    }

    #[test]
    fn only_loopback_urls_unless_allowed() {
        for ok in [
            "http://127.0.0.1:8000",
            "http://localhost:1/",
            "http://[::1]:8000",
            "http://127.1.2.3",
        ] {
            assert!(check_url(ok, false).is_ok(), "{ok}");
        }
        for bad in [
            "http://10.0.0.1:8000",
            "http://example.com",
            "https://127.0.0.1",
        ] {
            assert!(check_url(bad, false).is_err(), "{bad}");
        }
        assert!(check_url("http://10.0.0.1:8000", true).is_ok());
    }

    fn done(at_ms: u64, events: u64, latency_ms: u64) -> Completion {
        Completion {
            done_at: Duration::from_millis(at_ms),
            events,
            latency: Duration::from_millis(latency_ms),
        }
    }

    fn mark(boundary: u64, at_ms: u64, client: f64, server: f64) -> CpuMark {
        CpuMark {
            boundary,
            at: Duration::from_millis(at_ms),
            client_cpu: Some(client),
            server_cpu: Some(server),
            server_rss: Some(boundary << 20),
            writer_cpu: Some(server / 2.0),
            writer_wait: Some(server / 4.0),
            load_average: None,
            machine_busy: None,
        }
    }

    #[test]
    fn segment_arithmetic() {
        // A phase from event 1,000 of the run, segments of 1,000, bundles of
        // 250 answered out of order: the answers' order decides.
        let completions = vec![
            done(2_000, 250, 40), // 1,250..1,500 (second answer)
            done(1_000, 250, 10), // 1,000..1,250
            done(3_000, 250, 20),
            done(4_000, 250, 30), // ends segment 1 at 4 s
            done(4_500, 250, 50), // segment 2 starts after 4 s
            done(5_000, 250, 60),
            done(6_000, 100, 70), // a short last bundle: segment 2 is partial
        ];
        let marks = [
            mark(1, 0, 10.0, 100.0),
            mark(2, 4_000, 11.0, 104.0),
            mark(3, 6_000, 12.9, 106.0),
        ];
        let segs = segments(1_000, 1_000, completions, &marks);
        assert_eq!(segs.len(), 2);
        let (a, b) = (&segs[0], &segs[1]);
        assert_eq!(
            (a.index, a.first_event, a.end_event, a.events),
            (1, 1_000, 2_000, 1_000)
        );
        assert_eq!(a.seconds, 4.0);
        assert_eq!(a.events_per_second, 250.0);
        let la = a.bundle_latency.as_ref().unwrap();
        assert_eq!((la.count, la.p50_ms, la.p99_ms), (4, 20.0, 40.0));
        let ca = a.cpu.as_ref().unwrap();
        assert_eq!(ca.seconds, 4.0);
        assert_eq!(ca.client_cores, Some(0.25));
        assert_eq!(ca.server_cores, Some(1.0));
        assert_eq!(ca.server_rss_bytes, Some(2 << 20));
        assert_eq!(ca.writer_cores, Some(0.5));
        assert_eq!(ca.writer_runqueue_cores, Some(0.25));
        assert_eq!(ca.bound, "server");
        assert_eq!(
            (b.index, b.first_event, b.end_event, b.events),
            (2, 2_000, 2_600, 600)
        );
        assert_eq!(b.seconds, 2.0);
        assert_eq!(b.events_per_second, 300.0);
        let lb = b.bundle_latency.as_ref().unwrap();
        assert_eq!((lb.count, lb.p50_ms, lb.max_ms), (3, 60.0, 70.0));
        let cb = b.cpu.as_ref().unwrap();
        assert!((cb.client_cores.unwrap() - 0.95).abs() < 1e-9);
        assert_eq!(cb.bound, "client");

        // A bundle straddling a boundary counts in the segment of its last
        // event; no completions, no segments; no marks, no CPU.
        let segs = segments(0, 1_000, vec![done(1, 900, 1), done(2, 200, 1)], &[]);
        assert_eq!(segs.len(), 2);
        assert_eq!((segs[0].index, segs[0].events), (0, 900));
        assert_eq!(
            (segs[1].index, segs[1].first_event, segs[1].events),
            (1, 900, 200)
        );
        assert!(segs[1].cpu.is_none());
        assert!(segments(0, 1_000, Vec::new(), &[]).is_empty());
    }

    #[test]
    fn which_side_was_the_bound() {
        assert_eq!(bound(Some(0.95), Some(1.0), None, Some(9.0)), "client");
        assert_eq!(bound(Some(0.1), Some(1.8), None, Some(2.5)), "server");
        assert_eq!(bound(Some(0.1), Some(0.4), None, Some(9.0)), "machine");
        assert_eq!(bound(None, None, None, None), "server");
        // The server alone on two cores with more busy threads than cores:
        // load 3.1, but the machine's busy CPU is all the bench's and the
        // server's (session 10's 10M run, which the load rule called
        // "machine").
        assert_eq!(
            bound(Some(0.03), Some(1.65), Some(1.9), Some(3.1)),
            "server"
        );
        // Another process took most of a core.
        assert_eq!(
            bound(Some(0.03), Some(1.1), Some(1.95), Some(3.1)),
            "machine"
        );
    }

    #[test]
    fn the_machines_busy_cpu_comes_from_proc_stat() {
        let hz = rustix::param::clock_ticks_per_second() as f64;
        // user nice system idle iowait irq softirq steal guest guest_nice
        let stat = "cpu  100 5 50 1000 20 3 2 10 0 0\ncpu0 50 2 25 500 10 1 1 5 0 0\n";
        assert_eq!(machine_busy_seconds(stat), Some(170.0 / hz));
        assert_eq!(machine_busy_seconds("intr 1 2 3\n"), None);
        assert_eq!(machine_busy_seconds("cpu  1 2 x\n"), None);
        let live = std::fs::read_to_string("/proc/stat").unwrap();
        assert!(machine_busy_seconds(&live).is_some_and(|b| b > 0.0));
    }

    #[test]
    fn process_metrics_from_the_exposition() {
        let text = "# HELP process_cpu_seconds Total user and system CPU time spent in seconds\n\
                    # TYPE process_cpu_seconds counter\n\
                    process_cpu_seconds_total 12.5\n\
                    process_resident_memory_bytes 1048576\n\
                    process_cpu_seconds_totalx 1\n\
                    leviathan_thread_cpu_seconds_total{thread=\"leviathan-http\"} 3.5\n\
                    leviathan_thread_cpu_seconds_total{thread=\"leviathan-write\"} 7.25\n\
                    leviathan_thread_runqueue_wait_seconds_total{thread=\"leviathan-write\"} 1.5\n";
        assert_eq!(
            process_metrics(text),
            ServerCounters {
                cpu_seconds: Some(12.5),
                rss_bytes: Some(1_048_576),
                writer_cpu_seconds: Some(7.25),
                writer_wait_seconds: Some(1.5),
            }
        );
        assert_eq!(process_metrics("nothing 1\n"), ServerCounters::default());
    }

    #[test]
    fn latency_quantiles() {
        let l = Latency::of((1..=100).map(Duration::from_millis).collect()).unwrap();
        assert_eq!(l.p50_ms, 50.0);
        assert_eq!(l.p99_ms, 99.0);
        assert_eq!(l.max_ms, 100.0);
        assert!(Latency::of(Vec::new()).is_none());
    }
}
