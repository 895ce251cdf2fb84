//! Building a generation from the log: from its applied seq (0 for a new
//! one, where it stopped after a crash) to the head, in chunks committed in
//! their own batches (not durable one by one: a crash loses at most the last
//! chunks, and the build resumes from what its graph says it applied, the
//! state and the graph changes being in the same batch). In the background
//! (the default) it then follows the head like a replica until it lags by at
//! most [`SWITCH_LAG`] events (with `LEVIATHAN_BUILD_RATE`, one chunk: the
//! writer's catch-up is not paced), and asks the writer to switch; with
//! `LEVIATHAN_REBUILD=block` the server builds to the head before it serves.
//!
//! History cannot be refused, so every projector records its failures here
//! (`Policy::RecordAll`); a generation with more recorded errors than the
//! manifest's `max_build_errors` stays pending.

use super::catalog::{Catalog, GenerationRecord, Status};
use super::live::LiveGraph;
use crate::digest::Sha256;
use crate::graph::GraphStore;
use crate::log::Log;
use crate::project_event::project_event;
use crate::projection::{Policy, ProjectorSet};
use crate::replay::Chunk;
use crate::seq::Seq;
use crate::writer::{SwitchOutcome, SwitchRequest, Writer};
use anyhow::Context;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Events read, projected and committed per chunk.
const CHUNK_EVENTS: usize = 4096;

/// The build asks the writer to switch once it lags the head by at most this
/// many events: the writer projects them itself, pausing ingest for about
/// that long (well under a second).
pub const SWITCH_LAG: u64 = 2048;

/// A generation to build: its record, graph and loaded projector set.
pub struct Plan {
    pub record: GenerationRecord,
    pub graph: GraphStore,
    pub projectors: Arc<ProjectorSet>,
    pub fingerprint: Sha256,
    pub settings: crate::manifest::Settings,
    /// Most events per second the build projects (`LEVIATHAN_BUILD_RATE`);
    /// `None`: as fast as it can.
    pub max_rate: Option<u64>,
}

impl Plan {
    /// Events per chunk: with a rate cap, a tenth of a second's worth (so
    /// the pace is even, not a second's worth in one burst).
    fn chunk_events(&self) -> usize {
        paced_chunk(self.max_rate, CHUNK_EVENTS)
    }

    /// The lag at which the build asks the writer to switch: the writer
    /// projects those events itself, unpaced, so with a rate cap it is one
    /// chunk (a tenth of a second of the cap), not [`SWITCH_LAG`] (2,048
    /// events caught up at full speed were seconds of a low cap).
    fn switch_lag(&self) -> u64 {
        match self.max_rate {
            Some(_) => (self.chunk_events() as u64).min(SWITCH_LAG),
            None => SWITCH_LAG,
        }
    }
}

/// Where a build stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BuildState {
    Building,
    /// Caught up, waiting for the writer to switch.
    Switching,
    /// Live now (the build is over).
    Switched,
    /// Built with more errors than `max_build_errors`: not live.
    Pending,
    /// Stopped by a storage failure (the message says which).
    Failed,
}

/// A build's progress, as `GET /v1/projection` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct BuildStatus {
    pub generation: u64,
    pub fingerprint: Sha256,
    pub projectors: Vec<String>,
    pub state: BuildState,
    pub applied_seq: Seq,
    /// Where this run of the build started (above 0: it resumed a build
    /// that a restart or crash interrupted).
    pub resumed_from_seq: Seq,
    pub head_seq: Seq,
    pub lag_events: u64,
    pub events_per_second: f64,
    pub errors: u64,
    pub max_build_errors: u64,
    pub eta_seconds: Option<f64>,
    pub started_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When this run of the build started (the clock of
    /// `events_per_second`, with `resumed_from_seq`).
    #[serde(skip)]
    pub run_started: Instant,
}

impl BuildStatus {
    /// Events applied per second by this run of the build so far (since
    /// `resumed_from_seq`, over the time since the run started).
    fn run_rate(&self, applied: Seq) -> f64 {
        crate::progress::per_second(
            applied.0.saturating_sub(self.resumed_from_seq.0),
            self.run_started.elapsed().as_secs_f64(),
        )
    }

    /// The status as of the log's `head`: a pending or failed build no
    /// longer follows the log, so its lag is the log's growth since it
    /// stopped (not what it last saw), and it has no rate or ETA.
    pub fn at_head(mut self, head: Seq) -> BuildStatus {
        if matches!(self.state, BuildState::Pending | BuildState::Failed) {
            self.head_seq = head;
            self.lag_events = head.0.saturating_sub(self.applied_seq.0);
            self.events_per_second = 0.0;
            self.eta_seconds = None;
        }
        self
    }
}

/// The current (or last) build's status, shared with the API and metrics.
#[derive(Clone, Default)]
pub struct Builds(Arc<Mutex<Option<BuildStatus>>>);

impl Builds {
    pub fn get(&self) -> Option<BuildStatus> {
        match self.0.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn update(&self, f: impl FnOnce(&mut BuildStatus)) {
        let mut g = match self.0.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(s) = g.as_mut() {
            f(s);
        }
    }

    fn set(&self, status: BuildStatus) {
        match self.0.lock() {
            Ok(mut g) => *g = Some(status),
            Err(p) => *p.into_inner() = Some(status),
        }
    }
}

/// Publishes `plan`'s build as `building` at the seq its graph has applied;
/// returns the errors it has recorded so far and that seq. A later phase of
/// the same build (to the head after too many errors, or the first phase
/// after [`spawn`] announced it) keeps where and when the build started.
fn announce(log: &Log, plan: &Plan, builds: &Builds) -> anyhow::Result<(u64, Seq)> {
    let errors = plan
        .graph
        .error_count()?
        .saturating_sub(plan.record.accepted_errors);
    let (applied, _) = plan.graph.state()?;
    let earlier = builds.get().filter(|s| s.generation == plan.record.id);
    builds.set(BuildStatus {
        generation: plan.record.id,
        fingerprint: plan.fingerprint,
        projectors: plan.record.labels(),
        state: BuildState::Building,
        applied_seq: applied,
        resumed_from_seq: earlier.as_ref().map_or(applied, |s| s.resumed_from_seq),
        head_seq: log.head()?.seq,
        lag_events: 0,
        events_per_second: 0.0,
        errors,
        max_build_errors: plan.settings.max_build_errors,
        eta_seconds: None,
        run_started: earlier
            .as_ref()
            .map_or_else(Instant::now, |s| s.run_started),
        started_at: earlier.map_or_else(
            || chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            |s| s.started_at,
        ),
        message: None,
    });
    Ok((errors, applied))
}

/// Builds `plan`'s graph until `done(applied, head)` (or `stop`); returns the
/// errors it has recorded in all (this run and before), less those a kept
/// generation had accepted while live (`accepted_errors`).
///
/// Two stages, overlapped as in the offline rebuild: a reader thread reads
/// the next chunk of the log and runs the graph-independent projectors on it
/// (on the projection pool: every core but one), while this thread completes
/// the chunk before it in log order (graph-reading projectors, ops, graph
/// writes, commit).
pub fn build_until(
    db: &fjall::Database,
    log: &Log,
    plan: &Plan,
    builds: &Builds,
    stop: &AtomicBool,
    done: impl Fn(Seq, Seq) -> bool,
) -> anyhow::Result<u64> {
    let (mut errors, mut applied) = announce(log, plan, builds)?;
    let started = Instant::now();
    let first = applied;
    let chunk_events = plan.chunk_events();
    let reader_stop = AtomicBool::new(false);
    let (tx, rx) = std::sync::mpsc::sync_channel::<anyhow::Result<Chunk>>(1);
    std::thread::scope(|scope| -> anyhow::Result<u64> {
        // The reader is told to stop however this stage ends, a panic
        // included: at the head it polls without sending, so a dropped
        // receiver alone would not end it, and the scope would wait for it
        // forever (a block-mode start hung so in session 35).
        let _stop_reader = StopOnDrop(&reader_stop);
        // The inline lane (the whole set without `async` projectors); the
        // async lane is applied by the follower (generations::follow).
        let set = plan.projectors.inline();
        let (from, projectors, reader_stop) = (applied, set, &reader_stop);
        std::thread::Builder::new()
            .name("leviathan-build-read".into())
            .spawn_scoped(scope, move || {
                read_ahead(log, projectors, from, chunk_events, reader_stop, stop, tx)
            })
            .context("starting the build's reader thread")?;
        let result = (|| -> anyhow::Result<u64> {
            loop {
                let head = log.head()?.seq;
                let lag = head.0.saturating_sub(applied.0);
                builds.update(|s| {
                    // The rate of this run of the build (since
                    // `resumed_from_seq`), not of this phase: each phase
                    // (after the async lane's catch-up, to the head) has
                    // its own clock.
                    let rate = s.run_rate(applied);
                    s.applied_seq = applied;
                    s.head_seq = head;
                    s.lag_events = lag;
                    s.events_per_second = rate;
                    s.errors = errors;
                    s.eta_seconds = (rate > 0.0).then(|| lag as f64 / rate);
                });
                if done(applied, head) || stop.load(Ordering::Relaxed) {
                    return Ok(errors);
                }
                // Caught up but not done (a pending build following the
                // head): the timeout re-checks `done` and `stop`.
                let chunk = match rx.recv_timeout(Duration::from_millis(50)) {
                    Ok(chunk) => chunk?,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                        anyhow::bail!("the build's reader thread stopped")
                    }
                };
                let Chunk { events, prepared } = chunk;
                if let Some(rate) = plan.max_rate {
                    // Never ahead of the allowed rate: wait until this
                    // chunk's last event is due (its first once was, so a
                    // chunk went through early, and a short build ran at
                    // several times the cap).
                    pace(started, applied.0 - first.0 + events.len() as u64, rate);
                }
                let last = events.last().expect("the reader sends no empty chunk").seq;
                debug_assert!(events.first().is_some_and(|e| e.seq.0 == applied.0 + 1));
                let mut staging = plan.graph.staging()?;
                for (e, p) in events.iter().zip(prepared) {
                    let e = crate::replay::input(e);
                    let recorded = project_event(set, &e, p, &mut staging, Policy::RecordAll)
                        .with_context(|| {
                            format!("building generation {}: seq {}", plan.record.id, e.seq)
                        })?;
                    errors += recorded.len() as u64;
                    staging.settle();
                }
                let mut batch = crate::replay::chunk_batch(db, events.len());
                staging.write_into(&mut batch)?;
                plan.graph
                    .stage_projector_set(&mut batch, &plan.fingerprint);
                batch.commit().context("committing a build chunk")?;
                applied = last;
            }
        })();
        // Unblock and end the reader whatever happened (a `send` on a
        // dropped receiver fails at once).
        reader_stop.store(true, Ordering::Relaxed);
        drop(rx);
        result
    })
}

/// Events per chunk (or round) of at most `max`: with a rate cap, a tenth of
/// a second's worth, so that [`pace`] spreads them evenly.
pub(crate) fn paced_chunk(max_rate: Option<u64>, max: usize) -> usize {
    max_rate.map_or(max, |r| ((r / 10) as usize).clamp(1, max))
}

/// Waits until `events` are due at `rate` events per second since `started`.
pub(crate) fn pace(started: Instant, events: u64, rate: u64) {
    let due = Duration::from_secs_f64(events as f64 / rate.max(1) as f64);
    if let Some(wait) = due.checked_sub(started.elapsed()) {
        std::thread::sleep(wait);
    }
}

/// Sets its flag when dropped (unwinding included).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The reader stage of [`build_until`]: reads the log after `after` in chunks
/// and prepares each; when it reaches the head it polls for more. Stops on an
/// error (sent on), when told to, or when the other stage hangs up.
fn read_ahead(
    log: &Log,
    projectors: &ProjectorSet,
    mut after: Seq,
    chunk_events: usize,
    reader_stop: &AtomicBool,
    stop: &AtomicBool,
    tx: std::sync::mpsc::SyncSender<anyhow::Result<Chunk>>,
) {
    while !reader_stop.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
        // A fresh view per chunk: the log grows while the build runs.
        let view = log.view();
        let events = match log.after_at(&view, after, chunk_events) {
            Ok(c) => c,
            Err(e) => {
                let _ = tx.send(Err(
                    anyhow::Error::new(e).context("reading the log for the build")
                ));
                return;
            }
        };
        drop(view);
        let Some(last) = events.last().map(|e| e.seq) else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        after = last;
        if tx.send(Ok(Chunk::prepare(projectors, events))).is_err() {
            return;
        }
    }
}

/// Everything a background build needs.
pub struct Background {
    pub db: fjall::Database,
    pub log: Log,
    pub catalog: Catalog,
    pub plan: Plan,
    pub writer: Writer,
    pub live: LiveGraph,
    pub builds: Builds,
    pub stop: Arc<AtomicBool>,
}

/// Starts the background build; the thread ends when the generation is live,
/// pending, or the build failed (its status says which).
pub fn spawn(bg: Background) -> std::io::Result<std::thread::JoinHandle<()>> {
    // Published before the thread starts, so that `GET /v1/projection` shows
    // the build from the server's first answer on (it once showed none until
    // the thread got a core, which a test under load saw).
    if let Err(e) = announce(&bg.log, &bg.plan, &bg.builds) {
        tracing::warn!("announcing the new generation's build failed: {e:#}");
    }
    std::thread::Builder::new()
        .name("leviathan-generation-build".into())
        .spawn(move || {
            let builds = bg.builds.clone();
            // A panic (a bug) fails the build like an error does, rather
            // than leaving it shown as `building` forever.
            if let Err(e) = crate::panics::caught("the build", || run(bg)) {
                tracing::error!("building the new generation failed: {e:#}");
                builds.update(|s| {
                    s.state = BuildState::Failed;
                    s.message = Some(format!("{e:#}"));
                });
            }
        })
}

fn run(bg: Background) -> anyhow::Result<()> {
    let Background {
        db,
        log,
        catalog,
        plan,
        writer,
        live,
        builds,
        stop,
    } = bg;
    let id = plan.record.id;
    tracing::info!(
        generation = id,
        fingerprint = %plan.fingerprint,
        "building a new generation in the background; the live one keeps serving"
    );
    let switch_lag = plan.switch_lag();
    let errors = build_until(&db, &log, &plan, &builds, &stop, |applied, head| {
        head.0.saturating_sub(applied.0) <= switch_lag
    })?;
    if stop.load(Ordering::Relaxed) {
        return Ok(());
    }
    // A set with async projectors: their lane is brought up to the inline
    // lane before the switch (the follower goes on from there once the
    // generation is live), then the inline lane closes the gap again.
    let errors = if super::follow::catch_up_stoppable(
        &db,
        &log,
        &plan.graph,
        &plan.projectors,
        plan.max_rate,
        &stop,
    )? {
        build_until(&db, &log, &plan, &builds, &stop, |applied, head| {
            head.0.saturating_sub(applied.0) <= switch_lag
        })?
    } else {
        errors
    };
    if stop.load(Ordering::Relaxed) {
        return Ok(());
    }
    let to_head = |applied: Seq, head: Seq| applied >= head;
    if errors > plan.settings.max_build_errors {
        // Too many already: build to the head (every error recorded and
        // served), then stay pending.
        let errors = build_until(&db, &log, &plan, &builds, &stop, to_head)?;
        return pend(&catalog, &plan, &builds, errors);
    }
    builds.update(|s| s.state = BuildState::Switching);
    let old = live.get();
    let keep = plan.settings.keep_previous;
    let old_record = catalog.get(old.graph.generation())?;
    let mut new_record = plan.record.clone();
    new_record.status = Status::Live;
    let old_id = old.graph.generation();
    let dropped = catalog.dropped_by_switch(old_id, new_record.id)?;
    let stage_catalog = {
        let catalog = catalog.clone();
        let dropped = dropped.clone();
        Box::new(move |batch: &mut fjall::OwnedWriteBatch| {
            catalog.stage_switch(batch, (old_id, old_record), &new_record, keep, &dropped);
        })
    };
    let outcome = writer
        .switch_blocking(SwitchRequest {
            next: super::Live {
                graph: plan.graph.clone(),
                projectors: plan.projectors.clone(),
                fingerprint: plan.fingerprint,
            },
            max_errors: plan.settings.max_build_errors,
            errors_so_far: errors,
            stage_catalog,
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    match outcome {
        SwitchOutcome::TooManyErrors { .. } => {
            // The writer's catch-up was not committed: record it here.
            let errors = build_until(&db, &log, &plan, &builds, &stop, to_head)?;
            pend(&catalog, &plan, &builds, errors)
        }
        SwitchOutcome::Failed { message } => anyhow::bail!("{message}"),
        SwitchOutcome::Switched { seq, errors, .. } => {
            // The writer has replaced the live set already: a reader that
            // reads this status before the live set (`GET /v1/projection`)
            // never sees "switched" beside the old generation.
            builds.update(|s| {
                s.state = BuildState::Switched;
                // The run's average, the writer's catch-up included (0
                // once showed after a switch: a build that started within
                // the switch lag applies nothing itself).
                s.events_per_second = s.run_rate(seq);
                s.errors = errors;
                s.applied_seq = seq;
                s.head_seq = seq;
                s.lag_events = 0;
                s.eta_seconds = None;
            });
            catalog.delete_graphs(&dropped);
            if !keep {
                retire(old);
            }
            Ok(())
        }
    }
}

/// Marks the generation pending: it does not go live, its errors are served.
fn pend(catalog: &Catalog, plan: &Plan, builds: &Builds, errors: u64) -> anyhow::Result<()> {
    let mut record = plan.record.clone();
    record.status = Status::Pending;
    catalog.put(&record)?;
    builds.update(|s| {
        s.state = BuildState::Pending;
        s.errors = errors;
        s.message = Some(format!(
            "{errors} projection errors recorded, more than max_build_errors = {}: the generation \
             stays pending and the live one keeps serving (GET /v1/projection/errors?generation={})",
            plan.settings.max_build_errors, record.id
        ));
    });
    tracing::warn!(
        generation = record.id,
        errors,
        max_build_errors = plan.settings.max_build_errors,
        "the new generation recorded too many projection errors: it stays pending"
    );
    Ok(())
}

/// Deletes a generation that is no longer live, once no request reads it
/// any more (or after a minute: fjall keeps a deleted keyspace's files
/// while handles on it remain).
pub(crate) fn retire(old: Arc<super::Live>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let generation = old.graph.generation();
    let graph = old.graph.clone();
    drop(old);
    match graph.delete() {
        Ok(()) => tracing::info!(generation, "the previous generation was deleted"),
        Err(e) => tracing::warn!(generation, "deleting the previous generation failed: {e}"),
    }
}
