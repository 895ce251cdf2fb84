//! Offline rebuild: re-project the whole log from genesis with a projector set
//! and compare the resulting state digest with the one the graph had. It owns
//! the replay loop; it runs only while no server uses the data dir (the store's
//! lock file guarantees it) and never touches the log. Its graph writes skip
//! fjall's journal ([`rebuild`]), so it must never leave a partial graph
//! without the marker that makes every reader refuse it.

use crate::digest::Sha256;
use crate::graph::store::RebuildStart;
use crate::graph::GraphStore;
use crate::log::record::StoredEvent;
use crate::log::Log;
use crate::project_event::project_event;
use crate::projection::{EventInput, Policy, Prepared, ProjectorSet};
use crate::seq::Seq;
use anyhow::Context;
use serde::Serialize;
use std::sync::mpsc::SyncSender;

/// Events projected per committed batch.
const BATCH_EVENTS: usize = 8192;

#[derive(Debug, Serialize)]
pub struct RebuildReport {
    pub events: u64,
    pub seconds: f64,
    pub events_per_second: f64,
    pub state_digest: Sha256,
    /// The digest the graph had before the rebuild, at the same seq.
    pub previous_digest: Option<Sha256>,
    pub previous_fingerprint: Option<Sha256>,
    pub fingerprint: Sha256,
    /// True when the rebuilt graph has exactly the previous digest.
    pub identical: bool,
    /// Projection errors recorded (projectors with `on_error = "record"`,
    /// and every failure of an `async` projector).
    pub projection_errors: u64,
    /// A set with `async` projectors: the async lane's digest at the head
    /// (`state_digest` is the inline lane's, as the writer keeps it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub async_digest: Option<Sha256>,
    /// A set with `async` projectors: `SHA-256(state_digest ‖ async_digest)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub combined_digest: Option<Sha256>,
}

/// The fingerprint of the set that built the graph (the one before an
/// interrupted rebuild, if one was): what `leviathan rebuild` compares with
/// the configured set before it clears anything.
pub fn previous_fingerprint(graph: &GraphStore) -> anyhow::Result<Option<Sha256>> {
    Ok(match graph.rebuild_started()? {
        Some(start) => start.fingerprint,
        None => graph.projector_set()?,
    })
}

/// Clears the graph and projects every event of the log again.
///
/// The chunks' batches go to the memtables without the journal (a third of
/// the committing thread's time, and the log's size again in bytes written,
/// for data the final flush makes durable anyway): a marker in `graph_meta`,
/// synced before the graph is cleared and removed only once every memtable
/// is flushed, tells an interrupted rebuild (a partial graph) apart, and the
/// server and the graph's readers refuse it (`GraphStore::ensure_complete`).
/// A rebuild that stops on an error still flushes what it committed and
/// removes the marker: the graph is then whole up to its last chunk, as
/// before, and the server says it is behind the log.
pub fn rebuild(
    db: &fjall::Database,
    log: &Log,
    graph: &GraphStore,
    set: &ProjectorSet,
    fingerprint: Sha256,
) -> anyhow::Result<RebuildReport> {
    let started = std::time::Instant::now();
    let head = log.head()?;
    // What the graph was before: recorded by an interrupted rebuild, or read.
    let before = match graph.rebuild_started()? {
        Some(start) => {
            tracing::warn!(
                "an earlier rebuild of this graph was interrupted; starting again from the first \
                 event (the report compares with the graph before that rebuild)"
            );
            start
        }
        None => RebuildStart {
            seq: head.seq.0,
            digest: graph.digest_at(head.seq)?,
            fingerprint: graph.projector_set()?,
            // How far the previous graph's async lane had got (a server
            // stopped while its follower lagged): compared at that seq.
            async_state: match set.asynchronous() {
                Some(_) => {
                    let (seq, digest) = graph.async_state()?;
                    Some((seq.0, digest))
                }
                None => None,
            },
        },
    };
    // The log does not change offline; a marker from another head (an
    // import into the store since?) compares with nothing.
    let (previous_digest, previous_fingerprint) = if before.seq == head.seq.0 {
        (before.digest, before.fingerprint)
    } else {
        (None, None)
    };
    let previous_async = set.asynchronous().map(|_| before.async_state);
    // Nothing is cleared unless the whole log can be read: a damaged log
    // would otherwise leave no graph at all behind a log no rebuild reads.
    let read_from = std::time::Instant::now();
    log.check_readable().context(
        "the log cannot be read whole, so the rebuild stopped before touching the graph (it \
         still serves as before); `leviathan verify` names the damage: restore the last backup \
         (docs/RUNBOOK.md)",
    )?;
    tracing::info!(
        events = head.seq.0,
        seconds = read_from.elapsed().as_secs_f64(),
        "the log reads whole; rebuilding the graph"
    );
    graph
        .begin_rebuild(&before)
        .context("marking the graph as being rebuilt")?;
    let projected = project_all(db, log, graph, set, fingerprint);
    // Whatever happened, every batch committed so far is whole: make them
    // durable (the flush also deletes the journal holding the clear the
    // rebuild began with), then the graph on disk is the log's projection up
    // to its last chunk; only then drop the marker.
    let finished = crate::storage::flush_memtables(db)
        .context("flushing the rebuilt graph")
        .and_then(|()| graph.end_rebuild().context("removing the rebuild's marker"));
    // The rebuild's own error first (a failed flush then leaves the marker,
    // which the next start reports).
    let (events, projection_errors) = projected?;
    finished?;
    let (_, state_digest) = graph.state()?;
    let (async_digest, combined_digest, async_identical) = match previous_async {
        None => (None, None, true),
        Some(previous) => (
            graph.async_digest_at(head.seq)?,
            graph.combined_digest_at(head.seq)?,
            match previous {
                Some((seq, d)) => graph.async_digest_at(Seq(seq))? == Some(d),
                None => false,
            },
        ),
    };
    let seconds = started.elapsed().as_secs_f64();
    Ok(RebuildReport {
        events,
        seconds,
        events_per_second: crate::progress::per_second(events, seconds),
        state_digest,
        identical: previous_digest == Some(state_digest) && async_identical,
        previous_digest,
        previous_fingerprint,
        fingerprint,
        projection_errors,
        async_digest,
        combined_digest,
    })
}

/// The rebuild proper: clears the graph and projects the log into it;
/// returns the events projected and the projection errors recorded.
fn project_all(
    db: &fjall::Database,
    log: &Log,
    graph: &GraphStore,
    set: &ProjectorSet,
    fingerprint: Sha256,
) -> anyhow::Result<(u64, u64)> {
    // Memtables the open recovered from the journal are flushed in the
    // background: finish that first, so that no flush of the old graph lands
    // after the clear.
    crate::storage::flush_memtables(db).context("flushing the store before the rebuild")?;
    graph.clear().context("clearing the graph")?;
    // The writer's lane first (the whole set when it has no async
    // projectors), then the async lane, as the server's follower applies it.
    let whole = set;
    let set = set.inline();
    let mut batch = db.batch();
    graph.stage_projector_set(&mut batch, &fingerprint);
    batch.commit()?;
    let abort_after = test_abort_after();
    // Two stages, overlapped: a reader thread reads the next chunk of the log
    // and runs the graph-independent projectors on it (on the projection
    // pool: every core but one), while this thread completes the chunk before
    // it in log order (graph-reading projectors, ops, graph writes, commit).
    let (tx, rx) = std::sync::mpsc::sync_channel::<anyhow::Result<Chunk>>(1);
    let mut events = 0u64;
    let mut projection_errors = 0u64;
    std::thread::scope(|scope| -> anyhow::Result<()> {
        std::thread::Builder::new()
            .name("leviathan-rebuild-read".into())
            .spawn_scoped(scope, || read_ahead(log, set, tx))
            .context("starting the rebuild's reader thread")?;
        for chunk in rx {
            let Chunk {
                events: chunk,
                prepared,
            } = chunk?;
            let mut staging = graph.staging()?;
            for (e, prepared) in chunk.iter().zip(prepared) {
                // Every failure is recorded, whatever a projector's policy,
                // as the generation build records them: a stored event was
                // either projected when it was appended, or is history the
                // set met when it was built (allowed by max_build_errors),
                // or recorded under `record`. A reject-policy projector
                // failing here on an event appended under it would be a
                // non-deterministic projector: the digest then differs
                // (`identical: false`), the graph is still whole.
                let recorded =
                    project_event(set, &input(e), prepared, &mut staging, Policy::RecordAll)
                        .with_context(|| {
                            format!(
                                "event seq {} ({}) does not project with this projector set; the \
                                 graph is left behind the log and the server will not start \
                                 until a rebuild succeeds",
                                e.seq, e.event_id
                            )
                        })?;
                projection_errors += recorded.len() as u64;
                // Nothing rolls back across events here.
                staging.settle();
            }
            let mut batch = chunk_batch(db, chunk.len()).without_journal();
            staging.write_into(&mut batch)?;
            batch.commit()?;
            events += chunk.len() as u64;
            if abort_after.is_some_and(|n| events >= n) {
                tracing::error!(events, "LEVIATHAN_TEST_ABORT_REBUILD_AFTER: aborting");
                std::process::abort();
            }
        }
        Ok(())
    })?;
    if whole.asynchronous().is_some() {
        projection_errors += crate::generations::follow::catch_up(db, log, graph, whole)
            .context("applying the async projectors")?;
    }
    Ok((events, projection_errors))
}

/// The hidden test hook `LEVIATHAN_TEST_ABORT_REBUILD_AFTER=N`: the rebuild
/// aborts the process (no destructor, no flush: as a `kill -9`) once it has
/// committed N events (tests/store/rebuild.rs).
fn test_abort_after() -> Option<u64> {
    std::env::var("LEVIATHAN_TEST_ABORT_REBUILD_AFTER")
        .ok()
        .and_then(|v| v.parse().ok())
}

/// Write-batch items reserved per event of a chunk (and the least the
/// writer reserves): the digest, the history changes (~1.4 per event in the
/// benchmark's stream), the records, indexes and counters they touch. A
/// batch that needs more grows as before.
pub(crate) const BATCH_ITEMS_PER_EVENT: usize = 8;

/// An empty write batch for a chunk of `events` events, its item vector
/// reserved up front (`Database::batch` starts empty and grows it by
/// reallocation, a copy of every item so far each time), with the durability
/// `Database::batch` gives a store without manual journal persistence
/// (written to the journal's buffer, not synced per batch; the writer sets
/// its own).
pub(crate) fn chunk_batch(db: &fjall::Database, events: usize) -> fjall::OwnedWriteBatch {
    fjall::OwnedWriteBatch::with_capacity(db.clone(), events * BATCH_ITEMS_PER_EVENT)
        .durability(Some(fjall::PersistMode::Buffer))
}

/// A chunk of the log with its graph-independent projector runs done (the
/// reader stage of a rebuild and of a generation build).
pub(crate) struct Chunk {
    pub(crate) events: Vec<StoredEvent>,
    pub(crate) prepared: Vec<Prepared>,
}

impl Chunk {
    /// Runs `set`'s graph-independent projectors on `events` (on the
    /// projection pool: every core but one).
    pub(crate) fn prepare(set: &ProjectorSet, events: Vec<StoredEvent>) -> Chunk {
        let inputs: Vec<EventInput<'_>> = events.iter().map(input).collect();
        let prepared = set.prepare_ahead(&inputs);
        drop(inputs);
        Chunk { events, prepared }
    }
}

/// The reader stage of [`rebuild`]: reads the log from genesis in chunks and
/// prepares each; stops at the end of the log, on an error (sent on), or when
/// the other stage hangs up.
fn read_ahead(log: &Log, set: &ProjectorSet, tx: SyncSender<anyhow::Result<Chunk>>) {
    let mut after = Seq::ZERO;
    loop {
        // A fresh view per chunk, though nothing writes the log meanwhile: a
        // view is a fjall snapshot, and while one is open fjall keeps every
        // memtable written after it alive (the graph's, flushed or not), so
        // one view for the whole rebuild grew its RSS by ~2.3 KB per event
        // (2.3 GiB at 1M events; docs/BENCHMARKS.md).
        let view = log.view();
        let chunk = match log.after_at(&view, after, BATCH_EVENTS) {
            Ok(c) if c.is_empty() => return,
            Ok(c) => c,
            Err(e) => {
                let _ = tx.send(Err(anyhow::Error::new(e).context("reading the log")));
                return;
            }
        };
        after = chunk.last().expect("non-empty").seq;
        if tx.send(Ok(Chunk::prepare(set, chunk))).is_err() {
            return;
        }
    }
}

pub(crate) fn input(e: &StoredEvent) -> EventInput<'_> {
    EventInput {
        seq: e.seq,
        event_id: &e.event_id,
        event_type: &e.event_type,
        timestamp: &e.timestamp,
        actor_id: e.actor_id.as_deref(),
        target: &e.target,
        payload_json: e.payload.get(),
        event_hash: e.hash,
    }
}
