//! The follower: applies the `async` projectors of the live generation
//! (`mode = "async"` in the manifest) behind the log's head, in log order, so
//! that a slow projector (a Python or JavaScript component costs about a
//! millisecond per fresh instance) never slows ingest and never refuses a
//! bundle.
//!
//! One thread (`leviathan-follower`) follows whichever generation is live:
//! each round it takes the live generation once, reads the next events after
//! the async lane's applied seq (never past what the writer has applied to
//! that generation), projects them with the set's async lane
//! ([`ProjectorSet::asynchronous`]; a fresh instance per event, as always,
//! every failure recorded: [`Policy::RecordAll`]) into an async
//! [`Staging`](crate::graph::Staging), and commits its own batch: the graph
//! changes, the async lane's digests and its applied state together, so a
//! crash resumes from what the batch says (like a generation build).
//!
//! Isolation from the writer: the two lanes write disjoint keys. Each node
//! and edge type has one owning projector (checked at load), so nodes,
//! edges, counters and the type indexes of one lane are never the other's;
//! a `delete-node` removes only the touching edges of its own lane's types
//! (`Staging::apply_segment_in_lane`); the digests and states have their own
//! keys; recorded errors are keyed by projector. A projector's `graph`
//! import sees only its own lane's types (`project_event`), so what it reads
//! is the state of its lane after the event before, whatever the other lane
//! is doing. The one thing ownership cannot separate is a node id: an inline
//! and an async projector that put nodes under the same id race (the second
//! to apply fails with `not_owner`), so the docs tell authors to keep their
//! ids apart (e.g. prefixed with the type).
//!
//! `leviathan rebuild` applies the async lane through [`catch_up`] after the
//! inline one, so a rebuild gives the same digests (inline, async and
//! combined) as a server whose follower applied them; a background
//! generation build brings the new set's async lane up to its inline lane
//! ([`catch_up_stoppable`]) before it asks the writer to switch.

use super::live::LiveGraph;
use crate::graph::GraphStore;
use crate::log::Log;
use crate::project_event::{project_event, StepError};
use crate::projection::{EventInput, Policy, Prepared, ProjectorSet};
use crate::seq::Seq;
use anyhow::Context;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most events read per round.
const CHUNK_EVENTS: usize = 1024;
/// A round commits what it has projected after this long, so that a slow
/// projector's progress (and `?min_seq=` waiters) move in small steps.
const ROUND_BUDGET: Duration = Duration::from_millis(200);
/// How long the follower waits after a failure that is not the event's
/// (storage, an exhausted instance pool) before it tries the round again.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Longest wait for the head to move before the follower looks again at
/// which generation is live.
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// How much nicer (lower CPU priority) than the process the follower thread
/// runs: when the cores are busy, the writer and the HTTP threads get them
/// first (Linux's CFS gives a thread 10 nice levels down about a tenth of a
/// contended core), so the async projectors lag rather than slow ingest.
const NICER_BY: i32 = 10;

/// Where the async lane of the live generation stands
/// (`GET /v1/projection`, `/metrics`).
#[derive(Debug, Clone, PartialEq)]
pub struct FollowStatus {
    pub generation: u64,
    /// The async projectors, by name, in set order.
    pub projectors: Vec<String>,
    /// The last seq every async projector has applied.
    pub applied_seq: Seq,
    /// The log's head (the writer's applied seq) when last looked at.
    pub head_seq: Seq,
    pub lag_events: u64,
    /// How long the lane has been behind the head (0 when caught up).
    pub lag_seconds: f64,
    /// Events projected per second over the last round.
    pub events_per_second: f64,
    /// Projection errors recorded by the async lane since the server started.
    pub errors: u64,
    /// The last failure that stopped a round (it is retried), if any.
    pub message: Option<String>,
}

#[derive(Default)]
struct Inner {
    status: Option<FollowStatus>,
    /// Since when the lane has been behind (`None`: caught up).
    behind_since: Option<Instant>,
}

/// The follower's shared status and its applied-seq watch. Cheap to clone.
#[derive(Clone)]
pub struct Follow {
    inner: Arc<Mutex<Inner>>,
    /// `(generation, async applied seq)`, sent after every commit.
    applied: Arc<tokio::sync::watch::Sender<(u64, Seq)>>,
}

impl Default for Follow {
    fn default() -> Self {
        Follow {
            inner: Arc::default(),
            applied: Arc::new(tokio::sync::watch::Sender::new((u64::MAX, Seq::ZERO))),
        }
    }
}

impl Follow {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The async lane's status (`None`: the live set has no async projectors).
    pub fn status(&self) -> Option<FollowStatus> {
        let g = self.lock();
        let mut s = g.status.clone()?;
        s.lag_seconds = g.behind_since.map_or(0.0, |t| t.elapsed().as_secs_f64());
        Some(s)
    }

    /// Wakes on every commit of the follower (`(generation, applied seq)`).
    pub fn watch(&self) -> tokio::sync::watch::Receiver<(u64, Seq)> {
        self.applied.subscribe()
    }

    /// The seq every projector of `live` has applied, given the writer's
    /// `head`: the head when the set has no async projectors, else the
    /// lower of the head and the async lane's applied seq (0 until the
    /// follower has reported on this generation).
    pub fn applied(&self, live: &super::Live, head: Seq) -> Seq {
        if live.projectors.asynchronous().is_none() {
            return head;
        }
        let (generation, seq) = *self.applied.borrow();
        if generation == live.graph.generation() {
            seq.min(head)
        } else {
            Seq::ZERO
        }
    }

    fn publish(&self, status: FollowStatus) {
        let (generation, applied) = (status.generation, status.applied_seq);
        {
            let mut g = self.lock();
            if applied >= status.head_seq {
                g.behind_since = None;
            } else if g.behind_since.is_none() {
                g.behind_since = Some(Instant::now());
            }
            g.status = Some(status);
        }
        self.applied.send_if_modified(|v| {
            let new = (generation, applied);
            let changed = *v != new;
            *v = new;
            changed
        });
    }

    fn idle(&self) {
        let mut g = self.lock();
        g.status = None;
        g.behind_since = None;
    }

    fn update(&self, f: impl FnOnce(&mut FollowStatus)) {
        if let Some(s) = self.lock().status.as_mut() {
            f(s);
        }
    }
}

/// What one round did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Round {
    /// The async lane's applied seq after the round.
    pub applied: Seq,
    /// The writer's applied seq of the same generation (the bound).
    pub inline_applied: Seq,
    /// Events projected in the round.
    pub events: u64,
    /// Projection errors recorded in the round.
    pub errors: u64,
    /// The projector of each error recorded in the round.
    pub recorded: Vec<String>,
}

/// One round of the async lane of `set` (a set with `async` projectors,
/// whole or its lane) over `graph`: projects the events after the lane's
/// applied seq, up to `max_events` and at most up to the inline lane's
/// applied seq, stopping early after `budget`, and commits them. `parallel`
/// lets graph-independent projectors run ahead on every core (offline only:
/// the server's follower stays on its one thread so it never competes with
/// ingest for more than one core).
pub fn round(
    db: &fjall::Database,
    log: &Log,
    graph: &GraphStore,
    set: &ProjectorSet,
    max_events: usize,
    budget: Option<Duration>,
    parallel: bool,
) -> anyhow::Result<Round> {
    let lane = match set.lane() {
        Some(_) => set,
        None => set
            .asynchronous()
            .context("the projector set has no async projectors")?,
    };
    let started = Instant::now();
    // The writer's applied seq bounds the round: the combined digest of a
    // seq needs the inline digest of that seq, in this generation.
    let (inline_applied, _) = graph.state()?;
    let mut staging = graph.staging_async()?;
    let (applied, _) = staging.state();
    let mut out = Round {
        applied,
        inline_applied,
        events: 0,
        errors: 0,
        recorded: Vec::new(),
    };
    if applied >= inline_applied {
        return Ok(out);
    }
    let want = usize::try_from(inline_applied.0 - applied.0)
        .unwrap_or(usize::MAX)
        .min(max_events);
    let chunk = log
        .after_at(&log.view(), applied, want)
        .context("reading the log for the async projectors")?;
    let inputs: Vec<EventInput<'_>> = chunk.iter().map(crate::replay::input).collect();
    let prepared = if parallel {
        lane.prepare_all(&inputs)
    } else {
        inputs.iter().map(|_| Prepared::default()).collect()
    };
    for (e, p) in inputs.iter().zip(prepared) {
        if e.seq > inline_applied {
            break;
        }
        if budget.is_some_and(|b| out.events > 0 && started.elapsed() >= b) {
            break;
        }
        let recorded = project_event(lane, e, p, &mut staging, Policy::RecordAll).map_err(
            |err| match err {
                StepError::Projection(pe) => anyhow::anyhow!(
                    "seq {}: {pe} (not the event's fault: the round is retried)",
                    e.seq
                ),
                other => anyhow::Error::new(other).context(format!("seq {}", e.seq)),
            },
        )?;
        staging.settle();
        out.errors += recorded.len() as u64;
        out.recorded
            .extend(recorded.into_iter().map(|r| r.projector));
        out.events += 1;
        out.applied = e.seq;
    }
    if out.events > 0 {
        let mut batch = db.batch();
        staging.write_into(&mut batch)?;
        batch
            .commit()
            .context("committing the async projectors' round")?;
    }
    Ok(out)
}

/// Applies the async lane of `set` to `graph` up to the inline lane's
/// applied seq (offline: `leviathan rebuild`, once the inline lane is
/// rebuilt). Returns the errors recorded.
pub fn catch_up(
    db: &fjall::Database,
    log: &Log,
    graph: &GraphStore,
    set: &ProjectorSet,
) -> anyhow::Result<u64> {
    let mut errors = 0;
    loop {
        let r = round(db, log, graph, set, 8192, None, true)?;
        errors += r.errors;
        if r.events == 0 || r.applied >= r.inline_applied {
            return Ok(errors);
        }
    }
}

/// A generation build's step (`build.rs`): when `set` has async
/// projectors, applies them to `graph` up to its inline lane on this one
/// thread (the server is serving), at most `max_rate` events per second
/// (`LEVIATHAN_BUILD_RATE`, as the inline lane), stopping early on `stop`;
/// returns whether the set has any.
pub fn catch_up_stoppable(
    db: &fjall::Database,
    log: &Log,
    graph: &GraphStore,
    set: &ProjectorSet,
    max_rate: Option<u64>,
    stop: &AtomicBool,
) -> anyhow::Result<bool> {
    let Some(lane) = set.asynchronous() else {
        return Ok(false);
    };
    let started = Instant::now();
    let mut events = 0u64;
    // A tenth of a second of the cap per round, as the inline lane's chunks.
    let per_round = super::build::paced_chunk(max_rate, CHUNK_EVENTS);
    while !stop.load(Ordering::Relaxed) {
        let r = round(db, log, graph, lane, per_round, Some(ROUND_BUDGET), false)?;
        if r.events == 0 || r.applied >= r.inline_applied {
            break;
        }
        events += r.events;
        if let Some(rate) = max_rate {
            super::build::pace(started, events, rate);
        }
    }
    Ok(true)
}

/// Everything the follower thread needs.
pub struct Follower {
    pub db: fjall::Database,
    pub log: Log,
    pub live: LiveGraph,
    pub follow: Follow,
    /// The writer's head (it wakes the follower when the log grows).
    pub head: tokio::sync::watch::Receiver<Seq>,
    pub runtime: tokio::runtime::Handle,
    pub metrics: crate::metrics::Metrics,
    /// Set to `true` to stop the thread (it wakes at once from any wait).
    pub stop: tokio::sync::watch::Receiver<bool>,
}

/// Starts the follower thread; it ends once `stop` says `true`.
pub fn spawn(f: Follower) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("leviathan-follower".into())
        .spawn(move || run(f))
}

/// Lowers the calling thread's CPU priority by [`NICER_BY`] (on Linux the
/// nice value of `setpriority(PRIO_PROCESS, 0)` is the calling thread's).
fn lower_priority() {
    use rustix::process::{getpriority_process, setpriority_process};
    let result = getpriority_process(None)
        .and_then(|now| setpriority_process(None, (now + NICER_BY).min(19)));
    if let Err(e) = result {
        tracing::warn!("could not lower the follower thread's CPU priority: {e}");
    }
}

fn run(mut f: Follower) {
    lower_priority();
    let mut errors = 0u64;
    let mut generation = None;
    // Stopped when told, or when the server dropped the sender.
    while !*f.stop.borrow() && f.stop.has_changed().is_ok() {
        // Looked at before the round: a commit after this wakes the wait.
        f.head.borrow_and_update();
        let live = f.live.get();
        let Some(lane) = live.projectors.asynchronous() else {
            drop(live);
            f.follow.idle();
            generation = None;
            wait(&mut f, IDLE_WAIT);
            continue;
        };
        let id = live.graph.generation();
        if generation != Some(id) {
            generation = Some(id);
            tracing::info!(
                generation = id,
                projectors = ?names(lane),
                "following the log with the async projectors"
            );
        }
        let started = Instant::now();
        // A panic (a bug) is a failed round like any other: shown in the
        // lane's `message` and retried, not a thread gone silently.
        let result = crate::panics::caught("the round", || {
            round(
                &f.db,
                &f.log,
                &live.graph,
                lane,
                CHUNK_EVENTS,
                Some(ROUND_BUDGET),
                false,
            )
        });
        match result {
            Ok(r) => {
                errors += r.errors;
                f.metrics.count_recorded_errors(&r.recorded);
                let secs = started.elapsed().as_secs_f64();
                f.follow.publish(FollowStatus {
                    generation: id,
                    projectors: names(lane),
                    applied_seq: r.applied,
                    head_seq: r.inline_applied,
                    lag_events: r.inline_applied.0.saturating_sub(r.applied.0),
                    lag_seconds: 0.0,
                    events_per_second: crate::progress::per_second(r.events, secs),
                    errors,
                    message: None,
                });
                drop(live);
                if r.applied >= r.inline_applied {
                    wait(&mut f, IDLE_WAIT);
                }
            }
            Err(e) => {
                drop(live);
                tracing::error!("the async projectors' round failed (retried): {e:#}");
                f.follow.update(|s| s.message = Some(format!("{e:#}")));
                pause(&mut f, RETRY_AFTER);
            }
        }
    }
}

/// Waits until the head moves, the thread is stopped, or `most` passed.
fn wait(f: &mut Follower, most: Duration) {
    let (head, stop) = (&mut f.head, &mut f.stop);
    f.runtime.block_on(async {
        tokio::select! {
            moved = head.changed() => if moved.is_err() {
                // The writer is gone (shutting down): nothing will move.
                let _ = tokio::time::timeout(most, stop.changed()).await;
            },
            _ = stop.changed() => {}
            _ = tokio::time::sleep(most) => {}
        }
    });
}

/// Waits `how_long`, or until the thread is stopped.
fn pause(f: &mut Follower, how_long: Duration) {
    let stop = &mut f.stop;
    f.runtime.block_on(async {
        let _ = tokio::time::timeout(how_long, stop.changed()).await;
    });
}

fn names(lane: &ProjectorSet) -> Vec<String> {
    let mut out = Vec::new();
    for (i, p) in lane.projectors().iter().enumerate() {
        if lane.runs_at(i) {
            out.push(p.name.clone());
        }
    }
    out
}
