//! The single writer: the one place that appends to the log and changes the
//! graph. A dedicated thread takes every bundle waiting in its queue, checks
//! each against the log (idempotent retries, duplicate event ids), gives
//! accepted events their seq, `prev_hash` and `hash`, runs the projectors on
//! each event and applies their ops to a staged graph, then writes the log, its
//! indexes and the graph changes into one fjall batch, commits it with one
//! durable persist (group commit), and only then answers each caller.
//!
//! The commit is pipelined one batch deep: a second thread ([`Committer`])
//! commits batch k and answers its callers while the writer stages batch k+1
//! on top of k's changes (the graph's `Overlay`, the log's [`Pending`]),
//! which are read before the store until k is committed. The writer hands
//! k+1 over only once k is committed, so batches commit in order and the
//! store always holds everything before the batch in flight. In postgres
//! mode (and around a switch, a catch-up or a step-down) the writer waits for
//! each commit before it goes on.
//!
//! Invariants: seqs are dense and chained; the graph's applied seq equals the
//! log's head after every commit; a bundle is appended and projected whole or
//! not at all (a projection failure rolls the staged graph back to the bundle's
//! start and refuses the bundle); nothing is acknowledged before its batch is
//! durable; a failed commit stops the writer (every later append answers
//! 503 `storage_unavailable` with the classified cause, see [`Health`]) rather
//! than letting memory and disk disagree, and fails the batch staged behind
//! it, which is never committed.

use crate::bundle::Bundle;
use crate::digest::Sha256;
use crate::graph::Staging;
use crate::ids::{BundleId, EventId, Target};
use crate::log::record::EventDraft;
use crate::log::{BundleRecord, Head, Log, LogError};
use crate::project_event::{project_event, StepError};
use crate::projection::{EventInput, Policy, Prepared, ProjectionError};
use crate::seq::Seq;
use crate::storage::SyncMode;
use fjall::{Database, PersistMode};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Most bundles taken into one batch.
const MAX_BATCH_BUNDLES: usize = 512;
/// Most events taken into one batch (a larger bundle still goes alone).
const MAX_BATCH_EVENTS: usize = 50_000;

/// The most write-batch items a batch reserves up front, whatever the
/// batches before held per event (a projector set writing hundreds of keys
/// per event must not reserve gigabytes for a large batch): a few MiB. A
/// batch that needs more grows.
const MAX_RESERVED_BATCH_ITEMS: usize = 1 << 16;

/// Whether a bundle was appended now or had been before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AppendStatus {
    Ok,
    /// The same bundle_id with the same content was appended before; nothing was
    /// appended now and the original seq range is returned.
    Duplicate,
}

/// The writer's answer for one bundle, sent once its batch is durable.
#[derive(Debug, Clone, PartialEq)]
pub struct Appended {
    pub status: AppendStatus,
    /// Events appended by this request.
    pub ingested: u64,
    /// Events skipped because an identical event (same event_id, same content)
    /// is already in the log.
    pub duplicates: u64,
    pub first_seq: Option<Seq>,
    pub last_seq: Option<Seq>,
    pub head: Head,
    /// The projector (name) of each projection error recorded for this
    /// bundle's events (`on_error = "record"`), for the metrics.
    pub recorded_errors: Vec<String>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    #[error(
        "bundle_id {bundle_id:?} was already used for a bundle with different content; \
         a retry must resend exactly the same bundle, new content needs a new bundle_id"
    )]
    BundleConflict { bundle_id: BundleId },
    #[error(
        "event_id {event_id:?} (events[{index}]) is already in the log at seq {seq} with different \
         content; event ids are permanent, send new content under a new event_id"
    )]
    EventConflict {
        event_id: EventId,
        index: usize,
        seq: Seq,
    },
    /// The same content under the same event id, sent for another target
    /// (the content digest leaves the target out, so it is compared apart).
    #[error(
        "event_id {event_id:?} (events[{index}]) is already in the log at seq {seq} with the same \
         content but another target; event ids are permanent, send this event under a new event_id"
    )]
    EventTargetConflict {
        event_id: EventId,
        index: usize,
        seq: Seq,
    },
    // Not the error's own text: the seq it names was only tentative (the
    // refused bundle took none; the next accepted event gets it).
    #[error(
        "events[{index}] ({event_id:?}) cannot be projected, so the bundle was refused: \
         projector {} failed: {}",
        .error.projector,
        .error.failure
    )]
    Projection {
        index: usize,
        event_id: EventId,
        error: Box<ProjectionError>,
    },
    #[error("{0}")]
    Storage(StorageFailure),
    #[error("{0}")]
    Unavailable(StorageFailure),
}

/// Why the writer stopped: the storage failure that stopped it, classified so
/// that an operator knows what to fix. Once set it never changes; the writer
/// takes no bundle after it (a restart is needed, docs/RUNBOOK.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageFailure {
    /// `disk_full`, `io_error`, `permission_denied`, `store_error` or
    /// `writer_panicked`.
    pub cause: &'static str,
    pub message: String,
}

impl StorageFailure {
    pub fn new(context: &str, error: impl std::fmt::Display) -> StorageFailure {
        let message = error.to_string();
        let lower = message.to_ascii_lowercase();
        let cause = if lower.contains("no space left") || lower.contains("quota exceeded") {
            "disk_full"
        } else if lower.contains("permission denied") || lower.contains("operation not permitted") {
            "permission_denied"
        } else if lower.contains("i/o error")
            || lower.contains("input/output error")
            || lower.contains("io error")
            || lower.contains("poisoned")
            || lower.contains("read-only file system")
        {
            "io_error"
        } else {
            "store_error"
        };
        StorageFailure {
            cause,
            message: format!("{context}: {message}"),
        }
    }

    /// Classifies as `disk_full` when the store's volume has (almost) no space
    /// left, whatever the error says: fjall reports a journal write that
    /// failed for lack of space later only as "Poisoned".
    ///
    /// Likewise `permission_denied` when a file cannot be created in the
    /// store's directory for lack of permission: fjall reports a flush that
    /// failed so (a data dir chowned or made read-only under the server) as
    /// "Poisoned" too.
    pub fn on_volume(mut self, store_path: &std::path::Path) -> StorageFailure {
        if matches!(self.cause, "disk_full" | "permission_denied") {
            return self;
        }
        if let Ok(st) = rustix::fs::statvfs(store_path) {
            let free = st.f_bavail.saturating_mul(st.f_frsize);
            if free < LOW_SPACE_BYTES {
                self.cause = "disk_full";
                self.message = format!("{} (the volume has {free} bytes free)", self.message);
                return self;
            }
        }
        let probe = store_path.join(".leviathan-write-probe");
        let created = std::fs::File::create(&probe);
        if created.is_ok() {
            let _ = std::fs::remove_file(&probe);
        }
        self.after_probe(store_path, created.err())
    }

    /// [`StorageFailure::on_volume`]'s reading of its probe: a file that
    /// could not be created for lack of permission makes it
    /// `permission_denied`.
    fn after_probe(
        mut self,
        dir: &std::path::Path,
        probe: Option<std::io::Error>,
    ) -> StorageFailure {
        if let Some(e) = probe.filter(|e| e.kind() == std::io::ErrorKind::PermissionDenied) {
            self.cause = "permission_denied";
            self.message = format!(
                "{} (a file cannot be created in {}: {e})",
                self.message,
                dir.display()
            );
        }
        self
    }

    /// What the operator reads: the cause, and what to do.
    pub fn advice(&self) -> &'static str {
        match self.cause {
            "disk_full" => {
                "the disk is full: free space (or grow the volume), then restart the server"
            }
            "io_error" => {
                "the disk reported an I/O error: check the volume, then restart the server"
            }
            "permission_denied" => {
                "the store's files or directories are not writable by the server's user \
                 (their ownership or mode changed, or the volume was remounted): give them back \
                 to that user (chown -R), then restart the server"
            }
            "not_leader" => {
                "this node does not hold the PostgreSQL log's leadership: send ingest to the \
                 writer (replicas forward it when every node sets LEVIATHAN_ADVERTISE_URL). A \
                 `writer`-role node that was fenced appends nothing more until it is restarted; \
                 an `auto` one follows the log and takes the leadership again when it is free"
            }
            "writer_panicked" => {
                "a bug stopped the writer (the panic is in the log, with the bundle it was \
                 writing): report it, then restart the server; nothing acknowledged is lost"
            }
            "postgres_unavailable" => {
                "PostgreSQL did not take the batch: check the database and retry the request"
            }
            "postgres_append_failing" => {
                "PostgreSQL refuses this writer's appends (the reason is PostgreSQL's: a revoked \
                 privilege, a constraint, a read-only or full database): fix that; this node is \
                 ready again once an append works, or 10 s after the last failure"
            }
            _ => "the store failed: see the server log, then restart the server",
        }
    }
}

impl std::fmt::Display for StorageFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the event store is unavailable ({}: {}); nothing more is acknowledged until then: {}",
            self.cause,
            self.message,
            self.advice()
        )
    }
}

/// Below this much free space on the store's volume, a storage failure is
/// taken for a full disk: a group commit writes up to a few MiB of journal.
const LOW_SPACE_BYTES: u64 = 16 << 20;

/// The writer's health, shared with readiness checks and shutdown.
#[derive(Debug, Default)]
pub struct Health {
    failure: std::sync::OnceLock<StorageFailure>,
    /// Set once the writer thread has ended, after it recorded why.
    exited: std::sync::atomic::AtomicBool,
    /// Postgres mode: the lease of the leadership this node holds or is
    /// giving up (`None` on a replica that follows). Read here rather than
    /// asked of the writer thread, which may be waiting on a connection that
    /// stopped answering.
    lease: std::sync::Mutex<Option<Arc<crate::pg::LeaseClock>>>,
    /// Postgres mode: appends PostgreSQL refused since the last one it took.
    append_failures: std::sync::Mutex<Option<AppendFailures>>,
}

/// Appends refused in a row ([`Health::failing_appends`]).
#[derive(Debug, Clone)]
pub struct AppendFailures {
    /// How many, since the last append that worked.
    pub count: u64,
    /// The last one's failure.
    pub last: StorageFailure,
    /// When it failed.
    pub at: std::time::Instant,
}

/// How long after a failed append (with none working since) readiness
/// says so: no traffic reaches an unready writer through a load balancer,
/// so it cannot learn that appends work again otherwise.
pub const APPEND_FAILURES_UNREADY_FOR: std::time::Duration = std::time::Duration::from_secs(10);

/// The cause readiness gives while appends fail ([`Health::failing_appends`]).
pub const POSTGRES_APPEND_FAILING: &str = "postgres_append_failing";

impl Health {
    /// The failure that stopped the writer, if one did.
    pub fn failure(&self) -> Option<&StorageFailure> {
        self.failure.get()
    }

    /// Postgres mode: why this node no longer leads, while it is giving its
    /// leadership up (a lease that ran out or was taken over; the writer
    /// thread may not have acted on it yet).
    pub fn lease_lost(&self) -> Option<StorageFailure> {
        self.lease
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|c| c.failure())
    }

    fn set_lease(&self, clock: Option<Arc<crate::pg::LeaseClock>>) {
        *self.lease.lock().unwrap_or_else(|p| p.into_inner()) = clock;
    }

    /// Postgres mode: the appends PostgreSQL refused since the last one it
    /// took, if the last failed within [`APPEND_FAILURES_UNREADY_FOR`].
    pub fn failing_appends(&self) -> Option<AppendFailures> {
        self.append_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .filter(|f| f.at.elapsed() < APPEND_FAILURES_UNREADY_FOR)
    }

    fn append_failed(&self, failure: &StorageFailure) {
        let mut failures = self
            .append_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let count = failures.as_ref().map_or(0, |f| f.count) + 1;
        *failures = Some(AppendFailures {
            count,
            last: failure.clone(),
            at: std::time::Instant::now(),
        });
    }

    fn append_worked(&self) {
        let mut failures = self
            .append_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(f) = failures.take() {
            tracing::info!(
                failed = f.count,
                "an append to PostgreSQL worked again after failures"
            );
        }
    }

    /// Records the failure that stops the writer (the first one stays).
    fn fail(&self, failure: StorageFailure) -> StorageFailure {
        tracing::error!(
            cause = failure.cause,
            "{}; the writer stops",
            failure.message
        );
        self.failure.get_or_init(|| failure).clone()
    }

    /// [`Health::stopped`], once the writer thread has ended (or 2 s): a
    /// thread that panics drops its channel and the replies it held while
    /// it unwinds, before it records why it stopped.
    async fn stopped_when_exited(&self) -> StorageFailure {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while !self.has_exited() && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        self.stopped()
    }

    /// [`Health::stopped_when_exited`] for a thread that may block.
    fn stopped_when_exited_blocking(&self) -> StorageFailure {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while !self.has_exited() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        self.stopped()
    }

    fn has_exited(&self) -> bool {
        self.failure.get().is_some() || self.exited.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The failure to answer with once the writer has stopped.
    fn stopped(&self) -> StorageFailure {
        self.failure().cloned().unwrap_or_else(|| StorageFailure {
            cause: "store_error",
            message: "the writer thread has stopped".into(),
        })
    }
}

struct Job {
    bundle: Bundle,
    reply: Reply,
}

type Reply = oneshot::Sender<Result<Appended, AppendError>>;

/// Each bundle's caller with its answer, to send once the batch is done.
type Answers = Vec<(Reply, Result<Appended, AppendError>)>;

/// What the writer thread takes from its queue.
enum Msg {
    Append(Job),
    Switch(SwitchJob),
    /// From the lease thread (postgres mode): the writer's lease was lost.
    LeaseLost,
}

struct SwitchJob {
    request: SwitchRequest,
    reply: oneshot::Sender<Result<SwitchOutcome, AppendError>>,
}

/// A request to make another generation live (crate::generations::build):
/// the writer projects what the generation still lacks of the log (with
/// `Policy::RecordAll`: history cannot be refused), and commits those
/// events' graph changes with `stage_catalog`'s writes in one batch; then it
/// projects every later event with the new set, and swaps the live handle
/// before it answers anything else.
pub struct SwitchRequest {
    /// The generation to make live.
    pub next: crate::generations::Live,
    /// Most recorded errors the generation may have and still go live.
    pub max_errors: u64,
    /// Errors it has recorded so far.
    pub errors_so_far: u64,
    /// The catalog's writes for the switch (the new live id, the records).
    pub stage_catalog: Box<dyn FnOnce(&mut fjall::OwnedWriteBatch) + Send>,
}

/// How a [`SwitchRequest`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchOutcome {
    /// The generation is live from the head `seq` on; the writer projected
    /// its last `caught_up` events itself; it has recorded `errors` in all.
    Switched {
        seq: Seq,
        caught_up: u64,
        errors: u64,
    },
    /// It recorded more errors than allowed; nothing was committed.
    TooManyErrors { errors: u64 },
    /// Projecting the catch-up with the new set failed (a failure of the
    /// host's, or a panic: a bug); nothing was committed, the live set
    /// goes on.
    Failed { message: String },
}

/// What the writer owns.
pub struct WriterParts {
    pub db: Database,
    pub log: Log,
    /// The live generation: its graph, projected by its projector set, whose
    /// fingerprint is recorded with the graph in every batch. A switch
    /// ([`Writer::switch_blocking`]) replaces it.
    pub live: crate::generations::LiveGraph,
    pub head: Head,
    pub sync: SyncMode,
}

/// Handle used by request handlers to submit bundles. Cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Msg>,
    health: Arc<Health>,
    /// The committed head seq, published after every commit (event streams wake on it).
    head: tokio::sync::watch::Receiver<Seq>,
    /// A replica's (until it is promoted): appends are refused at once.
    replica: Arc<std::sync::atomic::AtomicBool>,
}

impl Writer {
    /// Starts the writer thread. `parts.head` must be the log's committed head
    /// and the graph must be projected up to it by `parts.projectors` (both
    /// checked at startup).
    pub fn start(parts: WriterParts) -> std::io::Result<Writer> {
        Self::spawn(
            parts,
            None,
            crate::metrics::WriterMetrics::unregistered(),
            None,
        )
    }

    /// [`Writer::start`], counting into `metrics` (events by type, batch
    /// sizes, commit time).
    pub fn start_with_metrics(
        parts: WriterParts,
        metrics: crate::metrics::WriterMetrics,
    ) -> std::io::Result<Writer> {
        Self::spawn(parts, None, metrics, None)
    }

    /// [`Writer::start_with_metrics`] with the log's authority in PostgreSQL
    /// (`LEVIATHAN_STORE=postgres`): every batch is first appended to
    /// PostgreSQL, fenced by `leader`'s epoch, and committed locally only
    /// after that commit. The local store must have been caught up
    /// (`crate::pg::catch_up`) after leadership was taken.
    pub fn start_leader(
        parts: WriterParts,
        metrics: crate::metrics::WriterMetrics,
        leader: crate::pg::Leader,
    ) -> std::io::Result<Writer> {
        Self::spawn(parts, None, metrics, Some(crate::pg::Role::Leader(leader)))
    }

    /// A replica's writer (`LEVIATHAN_ROLE=replica`): it appends nothing
    /// (ingest answers 503 `not_leader` at once) and applies what the
    /// PostgreSQL log gains, woken by its notifications, through the same
    /// catch-up as at start (`crate::pg::catch_up`); readers wake on its head
    /// as on a writer's. It still performs generation switches.
    pub fn start_follower(
        parts: WriterParts,
        metrics: crate::metrics::WriterMetrics,
        follower: crate::pg::Follower,
    ) -> std::io::Result<Writer> {
        Self::spawn(
            parts,
            None,
            metrics,
            Some(crate::pg::Role::Follower(follower)),
        )
    }

    /// Test hook: like [`Writer::start`], but the writer thread takes nothing
    /// from its queue until the returned [`Hold`] is released, so bundles
    /// appended meanwhile are taken into one batch (up to the batch limits).
    /// Tests use it to exercise group commit deterministically.
    #[doc(hidden)]
    pub fn start_held(parts: WriterParts) -> std::io::Result<(Writer, Hold)> {
        Self::start_held_batches_of(parts, MAX_BATCH_BUNDLES, std::time::Duration::ZERO)
    }

    /// Test hook: [`Writer::start_held`] with at most `bundles` bundles per
    /// batch, each batch's commit started `commit_delay` after it is handed
    /// over: with 1 bundle and a delay longer than a batch takes to stage,
    /// each bundle queued is staged while the one before it is still
    /// uncommitted (the pipelined commit).
    #[doc(hidden)]
    pub fn start_held_batches_of(
        parts: WriterParts,
        bundles: usize,
        commit_delay: std::time::Duration,
    ) -> std::io::Result<(Writer, Hold)> {
        let (release, held) = std::sync::mpsc::channel();
        let metrics = crate::metrics::WriterMetrics::unregistered();
        Ok((
            Self::spawn(
                parts,
                Some(Held {
                    release: held,
                    bundles: bundles.max(1),
                    commit_delay,
                }),
                metrics,
                None,
            )?,
            Hold(release),
        ))
    }

    /// Bundles waiting in the queue, not yet taken by the writer thread.
    #[doc(hidden)]
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    fn spawn(
        parts: WriterParts,
        held: Option<Held>,
        metrics: crate::metrics::WriterMetrics,
        pg: Option<crate::pg::Role>,
    ) -> std::io::Result<Writer> {
        let (tx, rx) = mpsc::channel(4096);
        let (leader, mut follower) = match pg {
            Some(crate::pg::Role::Leader(l)) => (Some(l), None),
            Some(crate::pg::Role::Follower(f)) => (None, Some(f)),
            None => (None, None),
        };
        let replica = Arc::new(std::sync::atomic::AtomicBool::new(follower.is_some()));
        // The Merkle tree follows the log in every batch; a store written
        // before the tree existed gets it built here first.
        let tree = crate::tlog::Tree::open(&parts.db, &parts.log)
            .and_then(|t| {
                t.catch_up(&parts.db)?;
                t.writer(&parts.db)
            })
            .map_err(std::io::Error::other)?;
        let (head_tx, head) = tokio::sync::watch::channel(parts.head.seq);
        let head_tx = Arc::new(head_tx);
        let health = Arc::new(Health::default());
        health.set_lease(leader.as_ref().map(|l| l.clock()));
        let (held, max_batch_bundles, commit_delay) = match held {
            Some(h) => (Some(h.release), h.bundles, h.commit_delay),
            None => (None, MAX_BATCH_BUNDLES, std::time::Duration::ZERO),
        };
        let committer = Committer::start(
            health.clone(),
            head_tx.clone(),
            parts.log.store_path().to_path_buf(),
            commit_delay,
        )?;
        let state = State {
            max_batch_bundles,
            batch_items_per_event: crate::replay::BATCH_ITEMS_PER_EVENT,
            wake: tx.downgrade(),
            tree,
            head_tx,
            persist: parts.sync.persist_mode(),
            log_persist: if leader.is_some() || follower.is_some() {
                crate::pg::LOCAL_PERSIST
            } else {
                parts.sync.persist_mode()
            },
            db: parts.db,
            log: parts.log,
            current: parts.live.get(),
            head: parts.head,
            live: parts.live,
            health,
            committer,
            in_flight: None,
            metrics,
            steps_down: follower.as_ref().is_some_and(|f| f.promotes()),
            agreement: follower.as_mut().and_then(|f| f.take_agreement()),
            rebuilt_at: None,
            stepped_down: false,
            leader,
            follower,
            replica: replica.clone(),
        };
        let health = state.health.clone();
        let on_panic = state.health.clone();
        std::thread::Builder::new()
            .name("leviathan-writer".into())
            .spawn(move || {
                if let Some(held) = held {
                    // Released by `Hold::release` or by dropping the `Hold`.
                    let _ = held.recv();
                }
                // A panic (a bug) stops the writer like a storage failure
                // does: recorded, so that readiness, `leviathan_writer_up`
                // and every later ingest say so, rather than a thread gone
                // silently behind a ready server.
                let ran = crate::panics::caught("the writer thread", || {
                    state.run(rx);
                    Ok(())
                });
                if let Err(e) = ran {
                    on_panic.fail(StorageFailure {
                        cause: "writer_panicked",
                        message: e.to_string(),
                    });
                }
                on_panic
                    .exited
                    .store(true, std::sync::atomic::Ordering::Release);
            })?;
        Ok(Writer {
            tx,
            health,
            head,
            replica,
        })
    }

    /// The role this node holds now (postgres mode): what the members
    /// publisher shows in `GET /v1/cluster`.
    pub fn role(&self) -> crate::pg::CurrentRole {
        crate::pg::CurrentRole::of(self.replica.clone())
    }

    /// A replica's writer (until it is promoted): it appends nothing.
    pub fn is_replica(&self) -> bool {
        self.replica.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The committed head seq, updated after each commit that appended events:
    /// readers wake on it, then read the new events from the store.
    pub fn head_watch(&self) -> tokio::sync::watch::Receiver<Seq> {
        self.head.clone()
    }

    /// The writer's health: the storage failure that stopped it, if any.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// A handle on the writer's health that outlives the writer's queue.
    pub fn health_handle(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// A write beside the writer's (an artifact upload) found the store's
    /// volume full or failing: fjall takes no more writes after a failed
    /// journal write, so the writer stops as if its own batch had failed.
    /// Readiness and `leviathan_writer_up` then say so, and ingest is refused
    /// with the cause until a restart (as after any storage failure).
    pub fn stop_for(&self, failure: StorageFailure) {
        self.health.fail(failure);
    }

    /// Appends a validated bundle; resolves once it is durable (or refused).
    pub async fn append(&self, bundle: Bundle) -> Result<Appended, AppendError> {
        if self.replica.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(AppendError::Unavailable(StorageFailure {
                cause: crate::pg::NOT_LEADER,
                message: "this node is a replica (LEVIATHAN_ROLE=replica): it serves reads and \
                          appends nothing; send ingest to the writer"
                    .into(),
            }));
        }
        if let Some(lost) = self.health.lease_lost() {
            // At once: the writer thread may be stuck on a connection that
            // stopped answering, and would take the bundle only to refuse it.
            return Err(AppendError::Unavailable(lost));
        }
        let (reply, rx) = oneshot::channel();
        if self
            .tx
            .send(Msg::Append(Job { bundle, reply }))
            .await
            .is_err()
        {
            return Err(AppendError::Unavailable(
                self.health.stopped_when_exited().await,
            ));
        }
        match rx.await {
            Ok(answer) => answer,
            Err(_) => Err(AppendError::Unavailable(
                self.health.stopped_when_exited().await,
            )),
        }
    }
}

impl Writer {
    /// Asks the writer to make another generation live ([`SwitchRequest`]);
    /// blocks until it did or could not. For a thread that may block (the
    /// generation builder), never an async task.
    pub fn switch_blocking(&self, request: SwitchRequest) -> Result<SwitchOutcome, AppendError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .blocking_send(Msg::Switch(SwitchJob { request, reply }))
            .map_err(|_| AppendError::Unavailable(self.health.stopped_when_exited_blocking()))?;
        rx.blocking_recv()
            .map_err(|_| AppendError::Unavailable(self.health.stopped_when_exited_blocking()))?
    }
}

/// Keeps a writer started by [`Writer::start_held`] from taking bundles.
#[doc(hidden)]
pub struct Hold(std::sync::mpsc::Sender<()>);

impl Hold {
    /// Lets the writer thread start taking bundles.
    pub fn release(self) {
        let _ = self.0.send(());
    }
}

/// The test hooks of [`Writer::start_held_batches_of`].
struct Held {
    /// The writer takes nothing from its queue until this is signalled.
    release: std::sync::mpsc::Receiver<()>,
    /// Most bundles in one batch.
    bundles: usize,
    /// How long the commit thread waits before committing each batch.
    commit_delay: std::time::Duration,
}

struct State {
    /// Most bundles taken into one batch ([`MAX_BATCH_BUNDLES`]; fewer in
    /// tests).
    max_batch_bundles: usize,
    /// Write-batch items per event the last batch held, plus one: what the
    /// next one reserves (~9 held in the benchmark's stream, where a fixed 8
    /// made every batch copy its items once).
    batch_items_per_event: usize,
    /// The log's Merkle tree, extended in every batch (crate::tlog::tree).
    tree: crate::tlog::tree::TreeWriter,
    db: Database,
    log: Log,
    /// The live generation, as `live` holds it (taken once; replaced only
    /// by a switch, which also replaces it in `live`).
    current: Arc<crate::generations::Live>,
    head: Head,
    live: crate::generations::LiveGraph,
    persist: PersistMode,
    /// How a batch of the log (an append, a catch-up) is committed locally:
    /// `persist`, except in postgres mode, where PostgreSQL is the durable
    /// copy and the local batch is not fsynced (`crate::pg::LOCAL_PERSIST`).
    log_persist: PersistMode,
    health: Arc<Health>,
    /// Commits the batches this thread stages, in order ([`Committer`]).
    committer: Committer,
    /// The batch handed to the committer last, until it is seen committed:
    /// what the next batch reads before the store.
    in_flight: Option<InFlight>,
    metrics: crate::metrics::WriterMetrics,
    head_tx: Arc<tokio::sync::watch::Sender<Seq>>,
    /// `LEVIATHAN_STORE=postgres`: the authority each batch is appended to
    /// before the local commit (crate::pg).
    leader: Option<crate::pg::Leader>,
    /// `LEVIATHAN_ROLE=replica`: the log this node follows instead of appending.
    follower: Option<crate::pg::Follower>,
    /// Cleared when a replica is promoted (`LEVIATHAN_ROLE=auto`), set again
    /// when it steps down.
    replica: Arc<std::sync::atomic::AtomicBool>,
    /// `LEVIATHAN_ROLE=auto`: a writer that loses its leadership follows
    /// the log as a replica instead of stopping.
    steps_down: bool,
    /// Set once the lease is found lost: the run loop steps down.
    stepped_down: bool,
    /// A replica's comparison with the writer, to repair a disagreement.
    agreement: Option<crate::pg::Agreement>,
    /// The head at which this replica last rebuilt its graph.
    rebuilt_at: Option<Seq>,
    /// The writer's own queue, for the lease thread to wake it
    /// ([`Msg::LeaseLost`]); weak, so that the writer still stops once
    /// every [`Writer`] is gone.
    wake: mpsc::WeakSender<Msg>,
}

/// One accepted event, staged in memory until its bundle is known to be whole.
struct Staged {
    seq: Seq,
    hash: Sha256,
    canonical: Vec<u8>,
    index: usize,
    prev_hash: Option<Sha256>,
}

/// A bundle's new events, placed and projected but not yet staged.
struct Placed {
    staged: Vec<Staged>,
    /// Events skipped as identical repeats.
    duplicates: u64,
    /// The head after the last placed event.
    head: Head,
    /// Projectors of the projection errors recorded for the placed events.
    recorded_errors: Vec<String>,
}

/// An event id the batch, the batch in flight or the log already has.
struct Known {
    seq: Seq,
    /// Its content digest (without the target).
    digest: Sha256,
    /// Its bundle's target when it is not in the log yet (`None`: read it
    /// from the stored record).
    target: Option<Arc<Target>>,
}

/// What a batch has accepted so far that the log does not yet show.
#[derive(Default)]
struct Pending {
    /// Each new event's seq, content digest and bundle target.
    /// (One target per bundle, shared by its events.)
    event_ids: HashMap<EventId, (Seq, Sha256, Arc<Target>)>,
    bundles: HashMap<BundleId, BundleRecord>,
    /// The rows the batch appends to PostgreSQL (with a leader only).
    rows: crate::pg::Rows,
}

/// Answers every bundle of a batch that was not committed with `failure`
/// (a bundle refused on its own keeps its refusal).
fn fail_answers(results: Answers, failure: &StorageFailure) {
    for (reply, r) in results {
        let _ = reply.send(r.and(Err(AppendError::Storage(failure.clone()))));
    }
}

/// A batch handed to the committer and maybe not committed yet.
struct InFlight {
    graph: Arc<crate::graph::Overlay>,
    log: Pending,
}

/// A staged batch, handed to the [`Committer`].
struct Commit {
    batch: fjall::OwnedWriteBatch,
    /// Each bundle's answer, sent once the batch is durable (a refused
    /// bundle's too: its refusal may rest on a bundle of this batch).
    results: Answers,
    /// The head after the batch.
    head: Head,
    /// Whether the batch appended events (readers are woken).
    moved: bool,
    counts: crate::metrics::BatchCounts,
    /// Time spent on the writer thread writing the batch out.
    prepare_seconds: f64,
}

/// The commit thread: commits the batches the writer hands it, in order,
/// and only then answers their callers. Once a commit fails it commits
/// nothing more (the writer has stopped) and fails every batch after it.
struct Committer {
    tx: Option<std::sync::mpsc::SyncSender<Commit>>,
    /// One message per batch handed over, once it is done.
    done: std::sync::mpsc::Receiver<()>,
    /// A batch was handed over and is not known to be done.
    busy: bool,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Committer {
    fn start(
        health: Arc<Health>,
        head_tx: Arc<tokio::sync::watch::Sender<Seq>>,
        store_path: std::path::PathBuf,
        delay: std::time::Duration,
    ) -> std::io::Result<Committer> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Commit>(1);
        let (done_tx, done) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("leviathan-commit".into())
            .spawn(move || {
                let mut failed: Option<StorageFailure> = None;
                for c in rx {
                    let Commit {
                        batch,
                        results,
                        head,
                        moved,
                        counts,
                        prepare_seconds,
                    } = c;
                    let outcome = match &failed {
                        Some(f) => Err(f.clone()),
                        None => {
                            if !delay.is_zero() {
                                std::thread::sleep(delay);
                            }
                            let started = std::time::Instant::now();
                            match batch.commit() {
                                Ok(()) => {
                                    counts.committed(
                                        prepare_seconds + started.elapsed().as_secs_f64(),
                                    );
                                    Ok(())
                                }
                                Err(e) => {
                                    let f = health.fail(
                                        StorageFailure::new("committing a batch failed", e)
                                            .on_volume(&store_path),
                                    );
                                    failed = Some(f.clone());
                                    Err(f)
                                }
                            }
                        }
                    };
                    match outcome {
                        Ok(()) => {
                            if moved {
                                head_tx.send_replace(head.seq);
                            }
                            for (reply, r) in results {
                                let _ = reply.send(r.map(|mut a| {
                                    a.head = head;
                                    a
                                }));
                            }
                        }
                        Err(failure) => fail_answers(results, &failure),
                    }
                    if done_tx.send(()).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Committer {
            tx: Some(tx),
            done,
            busy: false,
            thread: Some(thread),
        })
    }

    /// Whether the last batch handed over is done, without waiting.
    fn idle(&mut self) -> bool {
        if self.busy {
            match self.done.try_recv() {
                Ok(()) | Err(std::sync::mpsc::TryRecvError::Disconnected) => self.busy = false,
                Err(std::sync::mpsc::TryRecvError::Empty) => {}
            }
        }
        !self.busy
    }

    /// Waits until the last batch handed over is done.
    fn wait(&mut self) {
        if self.busy {
            // An error: the thread is gone, and with it the batch.
            let _ = self.done.recv();
            self.busy = false;
        }
    }

    /// Hands `commit` over once the batch before it is done; gives its
    /// callers back, unanswered, if the commit thread is gone.
    fn hand(&mut self, commit: Commit) -> Result<(), Answers> {
        self.wait();
        let Some(tx) = &self.tx else {
            return Err(commit.results);
        };
        tx.send(commit).map_err(|e| e.0.results)?;
        self.busy = true;
        Ok(())
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        // The thread commits what it holds, answers, and ends.
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl State {
    /// Waits for the batch in flight to be committed: the store holds
    /// everything staged so far (before a switch, a catch-up, a step-down,
    /// a batch in postgres mode, and at the end).
    fn settle(&mut self) {
        self.committer.wait();
        self.in_flight = None;
    }

    fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        self.watch_lease();
        let mut next = None;
        loop {
            // A writer that stopped (any storage failure, an append whose
            // outcome it could not learn) gives its PostgreSQL lease up, or
            // lets it run out if PostgreSQL is unreachable, so that a
            // standby takes over within the lease.
            if self.health.failure().is_some() && self.leader.is_some() {
                self.leader = None;
                self.health.set_lease(None);
            }
            if let Some(follower) = self.follower.take() {
                self.settle();
                if !self.follow(follower, &mut rx) {
                    return;
                }
                // Promoted: lead from here on.
            }
            if self.stepped_down {
                self.stepped_down = false;
                self.settle();
                match self.step_down() {
                    Ok(follower) => {
                        // A switch taken after the last batch is not left waiting.
                        match next.take() {
                            Some(Msg::Switch(s)) => {
                                let outcome = self.switch(s.request);
                                let _ = s.reply.send(outcome);
                            }
                            Some(Msg::LeaseLost) | None => {}
                            Some(Msg::Append(job)) => {
                                let _ =
                                    job.reply.send(Err(AppendError::Unavailable(StorageFailure {
                                        cause: crate::pg::NOT_LEADER,
                                        message: "this node stepped down: it is a replica now"
                                            .into(),
                                    })));
                            }
                        }
                        self.follower = Some(follower);
                        continue;
                    }
                    Err(e) => {
                        self.health.fail(StorageFailure {
                            cause: crate::pg::NOT_LEADER,
                            message: format!(
                                "this writer lost its leadership and could not follow the log as a replica: {e}"
                            ),
                        });
                    }
                }
            }
            let first = match next.take() {
                Some(m) => m,
                None => match rx.blocking_recv() {
                    Some(m) => m,
                    None => break,
                },
            };
            let first = match first {
                Msg::Append(job) => job,
                Msg::Switch(s) => {
                    self.settle();
                    let outcome = self.switch(s.request);
                    let _ = s.reply.send(outcome);
                    continue;
                }
                Msg::LeaseLost => {
                    self.check_lease();
                    continue;
                }
            };
            let mut events = first.bundle.events.len();
            let mut jobs = vec![first];
            while jobs.len() < self.max_batch_bundles && events < MAX_BATCH_EVENTS {
                match rx.try_recv() {
                    Ok(Msg::Append(j)) => {
                        events += j.bundle.events.len();
                        jobs.push(j);
                    }
                    Ok(other) => {
                        // After this batch, in queue order.
                        next = Some(other);
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.process(jobs);
        }
        self.settle();
        tracing::info!("writer stopped: no more senders");
    }

    /// Asks the lease thread to wake this thread ([`Msg::LeaseLost`]) once
    /// the lease is lost (a writer, from its start or its promotion).
    fn watch_lease(&self) {
        if let Some(leader) = &self.leader {
            let wake = self.wake.clone();
            leader.on_lost(Box::new(move || {
                // A full queue is work: the next batch finds the lease lost.
                if let Some(tx) = wake.upgrade() {
                    let _ = tx.try_send(Msg::LeaseLost);
                }
            }));
        }
    }

    /// Acts on a lost lease (woken by the lease thread, or before a batch):
    /// an `auto` writer steps down (returned: why, for the jobs at hand), any
    /// other stops appending (its health says why). Nothing while the lease
    /// holds (a wake-up about an earlier leadership, after a promotion).
    fn check_lease(&mut self) -> Option<StorageFailure> {
        let lost = self.leader.as_ref().and_then(|l| l.lost())?;
        if self.steps_down {
            self.stepped_down = true;
            Some(lost)
        } else {
            self.health.fail(lost);
            None
        }
    }

    /// A writer that lost its leadership, with `LEVIATHAN_ROLE=auto`: it
    /// appends nothing more (ingest answers 503 `not_leader` at once) and
    /// follows the log as a replica on a new connection. Its local store
    /// holds nothing PostgreSQL lacks (a batch is committed locally only after
    /// PostgreSQL committed it), so the follower's catch-up continues from
    /// its head.
    fn step_down(&mut self) -> Result<crate::pg::Follower, crate::pg::PgError> {
        self.replica
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let Some(leader) = self.leader.take() else {
            return Err(crate::pg::PgError::Corrupt {
                seq: self.head.seq.0,
                reason: "stepping down without leading".into(),
            });
        };
        let settings = leader.settings().clone();
        let epoch = leader.epoch();
        drop(leader);
        // PostgreSQL may be down (the reason of many a step-down): retry,
        // paced, rather than stop (ingest is refused as on a replica
        // meanwhile: `replica` is set).
        let mut backoff = crate::pg::Backoff::default();
        let follower = loop {
            match crate::pg::PgLog::open(settings.clone())
                .and_then(|log| crate::pg::Follower::new(log, true))
            {
                Ok(f) => break f,
                Err(e) if self.wake.strong_count() > 0 => backoff.failed(
                    "stepping down: connecting to follow the PostgreSQL log failed",
                    &e,
                ),
                Err(e) => return Err(e),
            }
        };
        backoff.succeeded("connected to follow the PostgreSQL log");
        // Readiness is a replica's from here on (it said `not_leader` while
        // this node was giving its leadership up).
        self.health.set_lease(None);
        tracing::warn!(
            epoch,
            head = self.head.seq.0,
            "this writer lost its leadership (its lease ran out, or another node took over): it \
             stepped down and follows the log as a replica, and takes the lease again if it is free"
        );
        Ok(follower)
    }

    /// A replica's loop: switches as they come; otherwise wait for the
    /// PostgreSQL log to move and apply what it gained. Returns true once it
    /// was promoted (it leads now), false when it stops.
    fn follow(&mut self, mut follower: crate::pg::Follower, rx: &mut mpsc::Receiver<Msg>) -> bool {
        let mut backoff = crate::pg::Backoff::default();
        loop {
            loop {
                match rx.try_recv() {
                    Ok(Msg::Switch(s)) => {
                        let outcome = self.switch(s.request);
                        let _ = s.reply.send(outcome);
                    }
                    Ok(Msg::LeaseLost) => {
                        // About a leadership this node no longer holds.
                    }
                    Ok(Msg::Append(job)) => {
                        // `Writer::append` refuses on a replica; nothing gets here.
                        let _ = job.reply.send(Err(AppendError::Unavailable(StorageFailure {
                            cause: crate::pg::NOT_LEADER,
                            message: "this node is a replica".into(),
                        })));
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        tracing::info!("replica stopped: no more senders");
                        return false;
                    }
                }
            }
            if let Err(e) = follower.wait() {
                backoff.failed("waiting for the PostgreSQL log failed", &e);
                continue;
            }
            if follower.promotes() {
                match follower.log().try_lead() {
                    Ok(Some(_)) => match self.promote(follower) {
                        Ok(()) => return true,
                        Err(e) => {
                            self.health
                                .fail(StorageFailure::new("taking over as the writer failed", e));
                            return false;
                        }
                    },
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "checking the leader lease failed"),
                }
            }
            self.repair(&mut follower);
            let caught = crate::pg::catch_up::catch_up(
                &self.db,
                &self.log,
                &self.current,
                self.log_persist,
                follower.log(),
            );
            if caught.is_ok() {
                backoff.succeeded("following the PostgreSQL log");
            }
            match caught {
                Ok(c) if c.events > 0 || c.bundles > 0 => {
                    if let Err(e) = self.adopt_caught_up(c.head) {
                        self.health
                            .fail(StorageFailure::new("reopening the Merkle tree failed", e));
                    }
                }
                Ok(_) => {}
                Err(crate::pg::catch_up::CatchUpError::Pg(e)) => {
                    backoff.failed("following the PostgreSQL log failed", &e);
                }
                Err(e) => {
                    // The log does not apply here: stop following, say why.
                    self.health.fail(StorageFailure::new(
                        "following the PostgreSQL log failed",
                        e,
                    ));
                    return false;
                }
            }
        }
    }

    /// A replica whose state digest disagrees with the writer's at a common
    /// seq (the publisher's comparison, `crate::pg::members`) rebuilds its
    /// graph from its own log, if that log is PostgreSQL's (its head's hash
    /// is the one stored at that seq: the log is a hash chain, and the
    /// background verifier checks the local chain), then serves reads again.
    /// It does not rebuild twice for one seq: a graph rebuilt from the right
    /// log that still disagrees points at the writer's, which is reported.
    fn repair(&mut self, follower: &mut crate::pg::Follower) {
        use crate::pg::members::Found;
        let Some(agreement) = self.agreement.clone() else {
            return;
        };
        let Some(found) = agreement.disagreement.found() else {
            return;
        };
        if !found.rebuilds {
            return;
        }
        let refuse = |reason: String| {
            agreement.disagreement.clear();
            agreement.disagreement.set(Found {
                reason,
                rebuilds: false,
                ..found.clone()
            });
        };
        if found.generation != self.current.graph.generation() {
            // About the graph a rebuild replaced: compared again within a second.
            agreement.disagreement.clear();
            return;
        }
        if self.rebuilt_at.is_some_and(|at| found.seq <= at.0) {
            return refuse(format!(
                "{}; the graph was rebuilt from this node's log (which is PostgreSQL's) and \
                 still disagrees, so the writer's graph may be the wrong one: compare with \
                 another replica (GET /v1/cluster)",
                found.reason
            ));
        }
        match follower.log().hash_at(self.head.seq) {
            Ok(theirs) if theirs == self.head.hash || self.head.seq == Seq::ZERO => {}
            Ok(theirs) => {
                return refuse(format!(
                    "{}; and this node's log differs from PostgreSQL's at seq {} (local hash {}, \
                     PostgreSQL {}): restart it on an empty data dir to fill it from PostgreSQL",
                    found.reason,
                    self.head.seq.0,
                    self.head.hash.map_or("none".into(), |h| h.to_hex()),
                    theirs.map_or("absent".into(), |h| h.to_hex())
                ))
            }
            Err(e) => {
                tracing::warn!(error = %e, "checking the log before a rebuild failed; retrying");
                return;
            }
        }
        tracing::warn!(
            reason = %found.reason,
            head = self.head.seq.0,
            "rebuilding this replica's graph from its log"
        );
        let started = std::time::Instant::now();
        let old = self.current.clone();
        match self.rebuild_graph(&agreement.catalog) {
            Ok(()) => {
                self.metrics.replica_rebuilds.inc();
                self.rebuilt_at = Some(self.head.seq);
                agreement.disagreement.clear();
                tracing::info!(
                    head = self.head.seq.0,
                    generation = self.current.graph.generation(),
                    seconds = started.elapsed().as_secs_f64(),
                    "rebuilt this replica's graph from its log: it serves reads again once its digest agrees"
                );
                let spawned = std::thread::Builder::new()
                    .name("leviathan-retire".into())
                    .spawn(move || crate::generations::build::retire(old));
                if let Err(e) = spawned {
                    tracing::warn!(error = %e, "the replaced graph is deleted at the next start");
                }
            }
            Err(e) => {
                self.health.fail(StorageFailure::new(
                    "rebuilding the replica's graph failed",
                    e,
                ));
            }
        }
    }

    /// Projects the local log into a new generation of the live projector
    /// set, chunk by chunk, and makes it live (the switch records it in the
    /// catalog and retires the old one there).
    fn rebuild_graph(&mut self, catalog: &crate::generations::Catalog) -> Result<(), String> {
        use crate::generations::{GenerationRecord, Status};
        let text = |e: &dyn std::fmt::Display| e.to_string();
        let id = catalog.next_id().map_err(|e| text(&e))?;
        let mut record = GenerationRecord::for_set(
            id,
            &self.current.projectors,
            self.current.fingerprint,
            Status::Building,
        );
        catalog.put(&record).map_err(|e| text(&e))?;
        let graph =
            crate::graph::GraphStore::open_generation(&self.db, id).map_err(|e| text(&e))?;
        // The generation build's pipeline (a reader thread prepares the next
        // chunk while this thread applies one), to this node's head.
        let plan = crate::generations::build::Plan {
            record: record.clone(),
            graph: graph.clone(),
            projectors: self.current.projectors.clone(),
            fingerprint: self.current.fingerprint,
            settings: crate::manifest::Settings::default(),
            max_rate: None,
        };
        let head = self.head.seq;
        crate::generations::build::build_until(
            &self.db,
            &self.log,
            &plan,
            &crate::generations::build::Builds::default(),
            &std::sync::atomic::AtomicBool::new(false),
            |applied, _| applied >= head,
        )
        .map_err(|e| format!("{e:#}"))?;
        record.status = Status::Live;
        let old_id = self.current.graph.generation();
        let stage_catalog = {
            let catalog = catalog.clone();
            Box::new(move |batch: &mut fjall::OwnedWriteBatch| {
                catalog.stage_live(batch, id);
                catalog.stage_record(batch, &record);
                catalog.stage_remove(batch, old_id);
            })
        };
        let next = crate::generations::Live {
            graph,
            projectors: self.current.projectors.clone(),
            fingerprint: self.current.fingerprint,
        };
        match self.switch(SwitchRequest {
            next,
            max_errors: u64::MAX,
            errors_so_far: 0,
            stage_catalog,
        }) {
            Ok(SwitchOutcome::Switched { .. }) => Ok(()),
            Ok(other) => Err(format!("the rebuilt graph did not go live: {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Takes the head a catch-up from PostgreSQL committed: the Merkle tree's
    /// right edge is read again (the catch-up extended it in its own
    /// batches), and readers are woken.
    fn adopt_caught_up(&mut self, head: Head) -> Result<(), crate::tlog::TreeError> {
        self.head = head;
        let tree = crate::tlog::Tree::open(&self.db, &self.log).and_then(|t| t.writer(&self.db));
        self.head_tx.send_replace(self.head.seq);
        self.tree = tree?;
        Ok(())
    }

    /// A replica that took the lease (`LEVIATHAN_ROLE=auto`): catch up with
    /// everything the old writer committed (nobody else can append now),
    /// its lease renewed meanwhile, then append from here on as the writer.
    fn promote(&mut self, follower: crate::pg::Follower) -> Result<(), String> {
        let log = follower.into_log().map_err(|e| e.to_string())?;
        let epoch = log.epoch();
        let mut leader = crate::pg::Leader::new(log).map_err(|e| e.to_string())?;
        let caught = crate::pg::catch_up::catch_up(
            &self.db,
            &self.log,
            &self.current,
            self.log_persist,
            leader.log_mut(),
        )
        .map_err(|e| e.to_string())?;
        self.adopt_caught_up(caught.head)
            .map_err(|e| e.to_string())?;
        self.health.set_lease(Some(leader.clock()));
        self.leader = Some(leader);
        self.watch_lease();
        self.replica
            .store(false, std::sync::atomic::Ordering::SeqCst);
        tracing::info!(
            epoch,
            head = self.head.seq.0,
            "promoted: this replica took the writer's leadership and appends from here on"
        );
        Ok(())
    }

    /// Makes the requested generation live (see [`SwitchRequest`]).
    fn switch(&mut self, request: SwitchRequest) -> Result<SwitchOutcome, AppendError> {
        if let Some(failure) = self.health.failure() {
            return Err(AppendError::Unavailable(failure.clone()));
        }
        let fail = |this: &Self, what: &str, e: &dyn std::fmt::Display| {
            AppendError::Storage(
                this.health
                    .fail(StorageFailure::new(what, e).on_volume(this.log.store_path())),
            )
        };
        let graph_error = |e: crate::graph::GraphError| {
            AppendError::Storage(StorageFailure::new("reading the new generation failed", e))
        };
        let next = request.next;
        let (mut applied, _) = next.graph.state().map_err(graph_error)?;
        let mut staging = next.graph.staging().map_err(graph_error)?;
        let mut errors = request.errors_so_far;
        let mut caught_up = 0u64;
        while applied < self.head.seq {
            let chunk = self
                .log
                .after_at(&self.log.view(), applied, 4096)
                .map_err(|e| fail(self, "reading the log failed", &e))?;
            let Some(last) = chunk.last() else { break };
            let last = last.seq;
            for e in &chunk {
                // Only the new generation's staging is touched here: a
                // failure, or a panic, fails the switch, not the writer.
                let projected = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    project_event(
                        next.projectors.inline(),
                        &crate::replay::input(e),
                        Prepared::default(),
                        &mut staging,
                        Policy::RecordAll,
                    )
                }));
                let failed = |why: String| {
                    tracing::error!(seq = e.seq.0, "the switch's catch-up failed: {why}");
                    Ok(SwitchOutcome::Failed {
                        message: format!(
                            "projecting seq {} ({}) into the new generation failed: {why}; \
                             nothing was switched, the live generation goes on",
                            e.seq, e.event_id
                        ),
                    })
                };
                let recorded = match projected {
                    Ok(Ok(recorded)) => recorded,
                    Ok(Err(step)) => return failed(step.to_string()),
                    Err(panic) => {
                        return failed(format!(
                            "the projector set panicked: {}",
                            crate::panics::message(panic.as_ref())
                        ))
                    }
                };
                errors += recorded.len() as u64;
                staging.settle();
            }
            caught_up += chunk.len() as u64;
            applied = last;
        }
        if errors > request.max_errors {
            return Ok(SwitchOutcome::TooManyErrors { errors });
        }
        let mut batch = self.db.batch().durability(Some(self.persist));
        staging
            .write_into(&mut batch)
            .map_err(|e| fail(self, "staging the new generation failed", &e))?;
        next.graph
            .stage_projector_set(&mut batch, &next.fingerprint);
        (request.stage_catalog)(&mut batch);
        batch
            .commit()
            .map_err(|e| fail(self, "committing the switch failed", &e))?;
        self.current = Arc::new(next);
        let previous = self.live.replace(self.current.clone());
        tracing::info!(
            previous = previous.graph.generation(),
            generation = self.current.graph.generation(),
            fingerprint = %self.current.fingerprint,
            seq = self.head.seq.0,
            caught_up,
            errors,
            "generation switched: the new projector set is live"
        );
        Ok(SwitchOutcome::Switched {
            seq: self.head.seq,
            caught_up,
            errors,
        })
    }

    fn process(&mut self, jobs: Vec<Job>) {
        if self.leader.is_some() {
            // PostgreSQL takes batches in order, each after the one before
            // committed locally: no batch is staged behind another.
            self.settle();
        }
        if let Some(lost) = self.check_lease() {
            for j in jobs {
                let _ = j.reply.send(Err(AppendError::Unavailable(lost.clone())));
            }
            return;
        }
        if let Some(failure) = self.health.failure() {
            for j in jobs {
                let _ = j.reply.send(Err(AppendError::Unavailable(failure.clone())));
            }
            return;
        }
        if self.committer.idle() {
            // The batch before is committed: the store shows it.
            self.in_flight = None;
        }
        let start_head = self.head;
        let start_tree = self.tree.mark();
        let parent = self.in_flight.as_ref().map(|f| f.graph.clone());
        let mut staging = match self.current.graph.staging_over(parent) {
            Ok(s) => s,
            Err(e) => {
                let failure = self.health.fail(
                    StorageFailure::new("reading the graph state failed", e)
                        .on_volume(self.log.store_path()),
                );
                for j in jobs {
                    let _ = j.reply.send(Err(AppendError::Storage(failure.clone())));
                }
                return;
            }
        };
        let batch_bundles = jobs.len();
        let batch_events: usize = jobs.iter().map(|j| j.bundle.events.len()).sum();
        // Its item vector reserved up front, as many items per event as the
        // batch before held (the log's records and indexes, the tree, the
        // graph): growing it copies every item so far.
        let reserve = (batch_events * self.batch_items_per_event).min(MAX_RESERVED_BATCH_ITEMS);
        let mut batch = fjall::OwnedWriteBatch::with_capacity(self.db.clone(), reserve)
            .durability(Some(self.log_persist));
        let mut pending = Pending::default();
        let mut results = Vec::with_capacity(jobs.len());
        for job in jobs {
            let mark = staging.checkpoint();
            let r = self.stage(&job.bundle, &mut batch, &mut pending, &mut staging);
            if r.is_err() {
                staging.rollback(mark);
            }
            // Bundles are all or nothing each: no rollback reaches back
            // past this one.
            staging.settle();
            results.push((job.reply, r));
        }
        let moved = self.head != start_head;
        if moved {
            self.log.stage_head(&mut batch, &self.head);
            self.current
                .graph
                .stage_projector_set(&mut batch, &self.current.fingerprint);
            self.tree.stage_size(&mut batch);
        }
        let prepare_started = std::time::Instant::now();
        if let Some(leader) = self.leader.as_mut() {
            // The authority first: nothing is committed locally (or
            // acknowledged) that PostgreSQL does not hold.
            if let Err(failure) = leader.append(start_head, &pending.rows) {
                self.metrics.discarded();
                let fenced = failure.failure.cause == crate::pg::NOT_LEADER;
                let failure = if (fenced || failure.stops_writer) && self.steps_down {
                    // `auto`: step down and follow the log; the follower's
                    // catch-up learns the outcome this writer could not
                    // (PostgreSQL has the batch, or not), and the lease goes
                    // to whichever node can take it.
                    self.stepped_down = true;
                    failure.failure
                } else if failure.stops_writer {
                    // (Its lease is given up at the top of the run loop.)
                    self.health.fail(failure.failure)
                } else {
                    tracing::warn!(cause = failure.failure.cause, "{}", failure.failure.message);
                    self.health.append_failed(&failure.failure);
                    failure.failure
                };
                self.head = start_head;
                self.tree.restore(start_tree);
                fail_answers(results, &failure);
                return;
            }
            if !pending.rows.is_empty() {
                self.health.append_worked();
            }
        }
        let overlay = match staging.write_into_keeping(&mut batch) {
            Ok(overlay) => overlay,
            Err(e) => {
                self.metrics.discarded();
                let failure = self.health.fail(
                    StorageFailure::new("committing a batch failed", e)
                        .on_volume(self.log.store_path()),
                );
                self.head = start_head;
                self.tree.restore(start_tree);
                fail_answers(results, &failure);
                return;
            }
        };
        if batch_events > 0 {
            // One more than it took, so that a slightly fuller batch fits.
            self.batch_items_per_event =
                (batch.len().div_ceil(batch_events) + 1).max(crate::replay::BATCH_ITEMS_PER_EVENT);
        }
        let commit = Commit {
            batch,
            results,
            head: self.head,
            moved,
            counts: self.metrics.seal(batch_bundles, batch_events),
            prepare_seconds: prepare_started.elapsed().as_secs_f64(),
        };
        if let Err(results) = self.committer.hand(commit) {
            let failure = self.health.fail(StorageFailure {
                cause: "store_error",
                message: "the commit thread has stopped".into(),
            });
            fail_answers(results, &failure);
            return;
        }
        self.in_flight = Some(InFlight {
            graph: Arc::new(overlay),
            log: pending,
        });
    }

    /// What this batch, the batch in flight or the log knows of `event_id`.
    fn lookup_event(
        &self,
        pending: &Pending,
        event_id: &EventId,
    ) -> Result<Option<Known>, LogError> {
        let unstored = |(seq, digest, target): &(Seq, Sha256, Arc<Target>)| Known {
            seq: *seq,
            digest: *digest,
            target: Some(Arc::clone(target)),
        };
        if let Some(e) = pending.event_ids.get(event_id) {
            return Ok(Some(unstored(e)));
        }
        if let Some(e) = self
            .in_flight
            .as_ref()
            .and_then(|f| f.log.event_ids.get(event_id))
        {
            return Ok(Some(unstored(e)));
        }
        Ok(self
            .log
            .event_id_entry(event_id)?
            .map(|(seq, digest)| Known {
                seq,
                digest,
                target: None,
            }))
    }

    /// Whether the known event `known` was sent to `target` (the content
    /// digest leaves the target out: a stored event's is read from its
    /// record, only for an id that repeats).
    fn same_target(&self, known: &Known, target: &Target) -> Result<bool, LogError> {
        Ok(match &known.target {
            Some(t) => **t == *target,
            None => self.log.target_of(known.seq)? == target.as_str(),
        })
    }

    /// Runs the projectors on one event and applies their ops to the staged
    /// graph (`project_event`: ownership, error policies); returns the
    /// projection errors recorded for it.
    fn project(
        &self,
        index: usize,
        draft: &EventDraft,
        seq: Seq,
        hash: Sha256,
        target: &str,
        staging: &mut Staging,
    ) -> Result<Vec<crate::graph::ErrorRecord>, AppendError> {
        // Types no projector handles give no ops (nothing is instantiated), but
        // are still applied: every seq extends the state digest.
        let input = EventInput {
            seq,
            event_id: &draft.event_id,
            event_type: &draft.event_type,
            timestamp: &draft.timestamp,
            actor_id: draft.actor_id.as_deref(),
            target,
            payload_json: draft.payload_json(),
            event_hash: hash,
        };
        // Only the inline projectors: `async` ones are applied behind the
        // head by the follower (generations::follow), never in this batch.
        project_event(
            self.current.projectors.inline(),
            &input,
            Prepared::default(),
            staging,
            Policy::AsConfigured,
        )
        .map_err(|e| match e {
            StepError::Projection(error) => AppendError::Projection {
                index,
                event_id: draft.event_id.clone(),
                error,
            },
            StepError::Graph(other) => {
                AppendError::Storage(StorageFailure::new("reading the graph failed", other))
            }
        })
    }

    /// Checks one bundle and, if it is whole, stages it into `batch` (the
    /// caller rolls `staging` back when this fails): a retry is answered from
    /// what the log remembers; otherwise every new event gets its place and is
    /// projected, and only then is the bundle staged.
    fn stage(
        &mut self,
        bundle: &Bundle,
        batch: &mut fjall::OwnedWriteBatch,
        pending: &mut Pending,
        staging: &mut Staging,
    ) -> Result<Appended, AppendError> {
        if bundle.events.is_empty() {
            // Accepted, as the original did, but nothing is stored, not even
            // the bundle id: the same id may still carry events later.
            return Ok(Appended {
                status: AppendStatus::Ok,
                ingested: 0,
                duplicates: 0,
                first_seq: None,
                last_seq: None,
                head: self.head,
                recorded_errors: Vec::new(),
            });
        }
        if let Some(answer) = self.retried(bundle, pending)? {
            return Ok(answer);
        }
        let placed = self.place_and_project(bundle, pending, staging)?;
        Ok(self.stage_placed(bundle, placed, batch, pending))
    }

    /// The answer to a bundle whose id the batch or the log has seen: the
    /// original outcome if the content is the same, else a conflict. `None`
    /// for a new bundle id.
    fn retried(&self, bundle: &Bundle, pending: &Pending) -> Result<Option<Appended>, AppendError> {
        let in_flight = self.in_flight.as_ref().map(|f| &f.log.bundles);
        let known = match pending
            .bundles
            .get(&bundle.bundle_id)
            .or_else(|| in_flight.and_then(|b| b.get(&bundle.bundle_id)))
        {
            Some(r) => Some(r.clone()),
            None => self.log.bundle(&bundle.bundle_id).map_err(storage)?,
        };
        let Some(rec) = known else {
            return Ok(None);
        };
        if rec.digest != bundle.digest {
            return Err(AppendError::BundleConflict {
                bundle_id: bundle.bundle_id.clone(),
            });
        }
        Ok(Some(Appended {
            status: AppendStatus::Duplicate,
            ingested: 0,
            duplicates: bundle.events.len() as u64,
            first_seq: rec.first_seq,
            last_seq: rec.last_seq,
            head: self.head,
            recorded_errors: Vec::new(),
        }))
    }

    /// Gives each event that is new to the log its seq, `prev_hash` and hash
    /// and projects it into `staging`; skips identical repeats (in the bundle
    /// or already stored) and refuses a known event id with other content.
    /// Nothing is written to the batch yet.
    fn place_and_project(
        &self,
        bundle: &Bundle,
        pending: &Pending,
        staging: &mut Staging,
    ) -> Result<Placed, AppendError> {
        let mut placed = Placed {
            staged: Vec::with_capacity(bundle.events.len()),
            duplicates: 0,
            head: self.head,
            recorded_errors: Vec::new(),
        };
        let mut in_bundle: HashSet<&str> = HashSet::new();
        for (index, draft) in bundle.events.iter().enumerate() {
            if in_bundle.contains(draft.event_id.as_str()) {
                // Identical repeat inside the bundle (validation refused a different one).
                placed.duplicates += 1;
                continue;
            }
            if let Some(known) = self
                .lookup_event(pending, &draft.event_id)
                .map_err(storage)?
            {
                if known.digest != draft.content_digest {
                    return Err(AppendError::EventConflict {
                        event_id: draft.event_id.clone(),
                        index,
                        seq: known.seq,
                    });
                }
                if !self.same_target(&known, &bundle.target).map_err(storage)? {
                    return Err(AppendError::EventTargetConflict {
                        event_id: draft.event_id.clone(),
                        index,
                        seq: known.seq,
                    });
                }
                placed.duplicates += 1;
                continue;
            }
            in_bundle.insert(&draft.event_id);
            let seq = placed.head.seq.next();
            let canonical = draft.encode(seq, placed.head.hash.as_ref());
            let hash = Sha256::of(&canonical);
            let recorded = self.project(index, draft, seq, hash, &bundle.target, staging)?;
            placed
                .recorded_errors
                .extend(recorded.into_iter().map(|e| e.projector));
            placed.staged.push(Staged {
                seq,
                hash,
                canonical,
                index,
                prev_hash: placed.head.hash,
            });
            placed.head = Head {
                seq,
                hash: Some(hash),
            };
        }
        Ok(placed)
    }

    /// Stages a bundle known to be whole: its events and their indexes, its
    /// bundle record; the batch's view (`pending`) and the head move on.
    fn stage_placed(
        &mut self,
        bundle: &Bundle,
        placed: Placed,
        batch: &mut fjall::OwnedWriteBatch,
        pending: &mut Pending,
    ) -> Appended {
        let target = Arc::new(bundle.target.clone());
        for s in &placed.staged {
            let draft = &bundle.events[s.index];
            self.log
                .stage_event(batch, s.seq, &s.hash, &s.canonical, draft);
            self.metrics.stage_event(&draft.event_type);
            self.tree.append(batch, &s.canonical);
            pending.event_ids.insert(
                draft.event_id.clone(),
                (s.seq, draft.content_digest, target.clone()),
            );
            if self.leader.is_some() {
                pending.rows.events.push(crate::pg::EventRow {
                    seq: s.seq,
                    event_id: draft.event_id.to_string(),
                    bundle_id: bundle.bundle_id.to_string(),
                    event_type: draft.event_type.clone(),
                    target: bundle.target.to_string(),
                    record: s.canonical.clone(),
                    prev_hash: s.prev_hash,
                    hash: s.hash,
                });
            }
        }
        let rec = BundleRecord {
            digest: bundle.digest,
            first_seq: placed.staged.first().map(|s| s.seq),
            last_seq: placed.staged.last().map(|s| s.seq),
            ingested: placed.staged.len() as u64,
            duplicates: placed.duplicates,
        };
        self.log.stage_bundle(batch, &bundle.bundle_id, &rec);
        if self.leader.is_some() {
            pending.rows.bundles.push(crate::pg::BundleRow {
                bundle_id: bundle.bundle_id.to_string(),
                record: rec.clone(),
                head_seq: placed.head.seq,
                artifacts: bundle.artifacts.clone(),
            });
        }
        pending
            .bundles
            .insert(bundle.bundle_id.clone(), rec.clone());
        self.head = placed.head;
        Appended {
            status: AppendStatus::Ok,
            ingested: rec.ingested,
            duplicates: placed.duplicates,
            first_seq: rec.first_seq,
            last_seq: rec.last_seq,
            head: placed.head,
            recorded_errors: placed.recorded_errors,
        }
    }
}

/// A storage failure while checking a bundle.
fn storage(e: LogError) -> AppendError {
    AppendError::Storage(StorageFailure::new("reading the log failed", e))
}

#[cfg(test)]
mod tests {
    use super::StorageFailure;

    /// The operating system's own messages, as fjall passes them on.
    #[test]
    fn storage_failures_are_classified_by_the_os_error() {
        let cause = |errno: i32| {
            StorageFailure::new("writing", std::io::Error::from_raw_os_error(errno)).cause
        };
        assert_eq!(cause(28), "disk_full"); // ENOSPC
        assert_eq!(cause(122), "disk_full"); // EDQUOT
        assert_eq!(cause(5), "io_error"); // EIO
        assert_eq!(cause(30), "io_error"); // EROFS
        assert_eq!(cause(13), "permission_denied"); // EACCES
        assert_eq!(cause(1), "permission_denied"); // EPERM
        assert_eq!(StorageFailure::new("writing", "Poisoned").cause, "io_error");
        assert_eq!(
            StorageFailure::new("writing", "something else").cause,
            "store_error"
        );
        // fjall says only "Poisoned" after a flush that failed for lack of
        // permission: the probe of the store's directory tells.
        let dir = std::path::Path::new("/d");
        let poisoned = || StorageFailure::new("writing", "Poisoned");
        let denied = poisoned().after_probe(dir, Some(std::io::Error::from_raw_os_error(13)));
        assert_eq!(denied.cause, "permission_denied");
        assert!(denied.message.contains("/d"), "{}", denied.message);
        assert_eq!(poisoned().after_probe(dir, None).cause, "io_error");
        let other = poisoned().after_probe(dir, Some(std::io::Error::from_raw_os_error(5)));
        assert_eq!(other.cause, "io_error");
        for errno in [28, 5, 13] {
            let f = StorageFailure::new("writing", std::io::Error::from_raw_os_error(errno));
            assert!(
                !f.advice().starts_with("the store failed: see"),
                "{}",
                f.cause
            );
        }
    }
}
