//! `leviathan projector bench FILE --events FILE.ndjson`: the per-event cost
//! of a projector as the server pays it: every run is a fresh wasmtime store
//! and instance, `project` called once, the output converted and checked
//! ([`crate::projection::ProjectorSet::run_one`], the path of every event),
//! timed from before the store is made to after the ops are checked.
//!
//! The events (an event file, or the events of a test-vectors file but for
//! those that expect a failure) are
//! projected once in order into a scratch graph, each timed against the graph
//! its predecessors made; more runs (`--runs`) cycle through them against the
//! final graph. Events the projector does not handle are skipped.

use super::events::{self, Scratch};
use crate::projection::{Policy, Prepared};
use anyhow::{bail, Context};
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// The component.
    pub file: PathBuf,
    /// NDJSON: events, or test vectors (their events are used).
    #[arg(long)]
    pub events: PathBuf,
    /// Timed runs in all (cycling through the handled events).
    #[arg(long, default_value_t = 2000)]
    pub runs: usize,
    /// Untimed runs first (page faults, lazy initialization).
    #[arg(long, default_value_t = 50)]
    pub warmup: usize,
    /// Build the scratch graph with the core projector first (as a server
    /// with `core` then this projector).
    #[arg(long)]
    pub after_core: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub load: super::LoadArgs,
}

#[derive(Debug, serde::Serialize)]
struct Report {
    projector: String,
    sha256: String,
    events_in_file: usize,
    events_handled: usize,
    runs: usize,
    p50_us: f64,
    p99_us: f64,
    mean_us: f64,
    min_us: f64,
    max_us: f64,
    events_per_second: f64,
    /// The guest's initial memory in 64 KiB pages (the host resets all of
    /// an instance's memory after every event, so each page costs per event).
    initial_memory_pages: Option<u64>,
    /// Whether this binary is a debug build (times are then far above a
    /// release build's).
    debug_build: bool,
}

/// The event objects of a vectors file, as an event file; the events of
/// vectors that expect a failure are left out (they are refused, not run).
fn vector_events(text: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            out.push('\n');
            continue;
        }
        let v: Value = serde_json::from_str(raw)
            .with_context(|| format!("line {}: not a test vector", i + 1))?;
        let event = v
            .get("event")
            .with_context(|| format!("line {}: a test vector without `event`", i + 1))?;
        if v.get("error").is_some() {
            out.push('\n');
            continue;
        }
        out.push_str(&event.to_string());
        out.push('\n');
    }
    Ok(out)
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

pub(crate) fn run(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let loaded = super::load(&args.file, args.after_core, &args.load)?;
    let (set, index) = (&loaded.set, loaded.index);
    let mut text = events::read_text(&args.events)?;
    if events::is_vectors(&text) {
        text = vector_events(&text)?;
    }
    let evs = events::parse(&args.events, &text)?;
    let handled: Vec<_> = evs
        .iter()
        .filter(|e| set.handles_at(index, &e.event_type))
        .collect();
    if handled.is_empty() {
        bail!(
            "{} handles none of the {} events of {}",
            set.label(index),
            evs.len(),
            args.events.display()
        );
    }

    let mut scratch = Scratch::new()?;
    let mut times = Vec::with_capacity(args.runs);
    let mut seqs = Vec::with_capacity(evs.len());
    // The first pass: each event against the graph of those before it.
    for ev in &evs {
        let seq = scratch.next_seq();
        let input = ev.input(seq);
        if set.handles_at(index, &ev.event_type) {
            let started = Instant::now();
            let r = set.run_one(index, &input, &scratch.staging);
            let took = started.elapsed();
            if let Err(f) = r {
                bail!("event {}: {} failed: {f}", ev.who(), set.label(index));
            }
            if times.len() < args.runs {
                times.push(took);
            }
            seqs.push(seq);
        }
        crate::project_event::project_event(
            set,
            &input,
            Prepared::default(),
            &mut scratch.staging,
            Policy::AsConfigured,
        )
        .with_context(|| format!("event {}", ev.who()))?;
    }
    // Warm-up, then the remaining runs against the final graph.
    let mut cycle = handled.iter().zip(seqs.iter().copied()).cycle();
    for _ in 0..args.warmup {
        let (ev, seq) = cycle.next().context("no handled events")?;
        set.run_one(index, &ev.input(seq), &scratch.staging)
            .map_err(|f| anyhow::anyhow!("event {}: {f}", ev.who()))?;
    }
    while times.len() < args.runs {
        let (ev, seq) = cycle.next().context("no handled events")?;
        let input = ev.input(seq);
        let started = Instant::now();
        let r = set.run_one(index, &input, &scratch.staging);
        times.push(started.elapsed());
        r.map_err(|f| anyhow::anyhow!("event {}: {f}", ev.who()))?;
    }

    times.sort_unstable();
    let n = times.len();
    let total: Duration = times.iter().sum();
    let mean = total / u32::try_from(n).unwrap_or(u32::MAX);
    let pct = |p: usize| times[((n * p).div_ceil(100)).clamp(1, n) - 1];
    let info = &set.projectors()[index];
    let report = Report {
        projector: info.label(),
        sha256: info.digest.to_hex(),
        events_in_file: evs.len(),
        events_handled: handled.len(),
        runs: n,
        p50_us: micros(pct(50)),
        p99_us: micros(pct(99)),
        mean_us: micros(mean),
        min_us: micros(times[0]),
        max_us: micros(times[n - 1]),
        events_per_second: if mean.is_zero() {
            0.0
        } else {
            1.0 / mean.as_secs_f64()
        },
        initial_memory_pages: set.initial_memory_pages(index),
        debug_build: cfg!(debug_assertions),
    };
    if args.json {
        super::print(&serde_json::to_string_pretty(&report)?)?;
    } else {
        super::print(&format!(
            "{} ({})\n\
             {} runs over {} handled events (of {}), a fresh instance per run\n\
             p50   {:>10.2} µs\n\
             p99   {:>10.2} µs\n\
             mean  {:>10.2} µs   ({:.0} events/s on one core)\n\
             min   {:>10.2} µs\n\
             max   {:>10.2} µs\n\
             memory {} at instantiation, reset after every event \
             (fewer is faster: docs/PROJECTORS.md){}\n",
            report.projector,
            report.sha256,
            report.runs,
            report.events_handled,
            report.events_in_file,
            report.p50_us,
            report.p99_us,
            report.mean_us,
            report.events_per_second,
            report.min_us,
            report.max_us,
            match report.initial_memory_pages {
                Some(1) => "1 page (64 KiB)".to_owned(),
                Some(n) => format!("{n} pages ({} KiB)", n * 64),
                None => "none".to_owned(),
            },
            if report.debug_build {
                "\n(a debug build of leviathan: a release build is several times faster)"
            } else {
                ""
            }
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}
