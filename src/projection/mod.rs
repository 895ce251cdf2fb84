//! The host-side projection engine: loads projector components (pinned by
//! digest, compiled once, cached on disk), asks each to `describe` itself, and
//! runs every projector that handles an event on a fresh, limited, deterministic
//! instance, turning its output into checked `graph::Op`s. It owns the sandbox
//! and the contract of `wit/projector.wit` on the host side. It must never apply
//! ops to the graph (the caller does), never give a guest anything that differs
//! between two replays of the same log (time, entropy, files, network, state
//! left by an earlier event), and never let a guest failure take the host down.

// A `ProjectionError` (projector, seq, event id and the failure with its
// details) is returned only on the cold path of a failing event; boxing it
// would cost an allocation per failure for no gain on the hot path.
#![allow(clippy::result_large_err)]

mod cache;
mod host;
mod sandbox;

use crate::digest::Sha256;
use crate::graph::{GraphView, Op};
use crate::seq::Seq;
pub use cache::{prune as prune_compiled_cache, Pruned};
use cache::{CompiledCache, Origin};
use host::{wit, DeclaredTypes, GraphRef, HostState, OpError, Projector, ProjectorPre};
use sandbox::{Limiter, WasiState};
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Store, Trap};

/// Resource limits of one projector, applied to every run (one event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Fuel per run (roughly, wasm instructions executed).
    pub fuel: u64,
    /// Largest linear memory, in bytes.
    pub memory_bytes: usize,
    /// Largest table, in elements.
    pub table_elements: usize,
    /// Most core instances a run may create.
    pub instances: usize,
    /// Most bytes of guest stdout, and of stderr, kept per run (WASI guests).
    pub output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 50_000_000,
            memory_bytes: 64 << 20,
            table_elements: 20_000,
            instances: 32,
            output_bytes: 16 << 10,
        }
    }
}

/// What happens to an event one projector cannot project (it fails, or its
/// ops do not apply to the graph).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// The bundle that carried the event is refused (422) and nothing is stored.
    #[default]
    Reject,
    /// The event is stored; this projector's ops for it are dropped and its
    /// error is recorded with the graph (`GET /v1/projection/errors`); the
    /// other projectors' ops apply.
    Record,
}

impl OnError {
    pub fn as_str(self) -> &'static str {
        match self {
            OnError::Reject => "reject",
            OnError::Record => "record",
        }
    }
}

impl std::str::FromStr for OnError {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "reject" => Ok(OnError::Reject),
            "record" => Ok(OnError::Record),
            other => Err(format!(
                "on_error must be \"reject\" or \"record\", got {other:?}"
            )),
        }
    }
}

/// Where a projector runs: `inline` (in the writer's batch; it may refuse
/// a bundle) or `async` (by the follower behind the head, `generations::follow`;
/// it never refuses nor slows ingest, its errors are recorded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Inline,
    Async,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Inline => "inline",
            Mode::Async => "async",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "inline" => Ok(Mode::Inline),
            "async" => Ok(Mode::Async),
            other => Err(format!(
                "mode must be \"inline\" or \"async\", got {other:?}"
            )),
        }
    }
}

/// A projector to load: its component bytes, its limits, its error policy
/// and where it runs.
#[derive(Debug, Clone)]
pub struct ProjectorSource {
    /// A WebAssembly component targeting the `projector` world.
    pub bytes: Vec<u8>,
    pub limits: Limits,
    pub on_error: OnError,
    pub mode: Mode,
}

/// What a loaded projector said about itself, plus its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectorInfo {
    pub name: String,
    pub version: String,
    /// SHA-256 of the component bytes.
    pub digest: Sha256,
    /// Event types handled: exact names or `prefix.*` patterns.
    pub handles: Vec<String>,
    pub node_types: Vec<String>,
    pub edge_types: Vec<String>,
    /// The limits it runs under.
    pub limits: Limits,
    pub on_error: OnError,
    pub mode: Mode,
}

impl ProjectorInfo {
    /// `name@version`, as errors and logs name the projector.
    pub fn label(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

/// One event of the log, borrowed, as `project` takes it.
#[derive(Debug, Clone, Copy)]
pub struct EventInput<'a> {
    pub seq: Seq,
    pub event_id: &'a str,
    pub event_type: &'a str,
    /// RFC 3339 UTC (`Z`); a WASI guest's wall clock reads this instant.
    pub timestamp: &'a str,
    pub actor_id: Option<&'a str>,
    pub target: &'a str,
    /// JSON object, RFC 8785 canonical text.
    pub payload_json: &'a str,
    /// Seeds every WASI random source of the run.
    pub event_hash: Sha256,
}

/// Why a set of projectors could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("projection engine could not be configured: {0}")]
    Engine(String),
    #[error("projector source #{index}: invalid limits: {reason}")]
    Limits { index: usize, reason: String },
    #[error("projector source #{index} (component {digest}): {stage}: {reason}")]
    Component {
        index: usize,
        digest: Sha256,
        /// What was being done: `compiling`, `checking imports`, `linking`,
        /// `calling describe`, `checking describe output`.
        stage: &'static str,
        reason: String,
    },
    #[error("projector {label} is loaded twice (sources #{first} and #{second})")]
    Duplicate {
        label: String,
        first: usize,
        second: usize,
    },
}

/// A projector run that failed: which projector, on which event, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("projector {projector} failed on event {seq} ({event_id}): {failure}")]
pub struct ProjectionError {
    /// `name@version`.
    pub projector: String,
    pub seq: Seq,
    pub event_id: String,
    pub failure: Failure,
}

impl ProjectionError {
    /// Machine-readable cause: see [`Failure::code`].
    pub fn code(&self) -> &'static str {
        self.failure.code()
    }

    /// Whether the event (not the host) is at fault: the same event on the
    /// same graph will fail the same way on every replay.
    pub fn is_deterministic(&self) -> bool {
        !matches!(self.failure, Failure::Host { .. })
    }
}

/// The cause of a [`ProjectionError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The guest returned `projection-error`.
    #[error("rejected the event: {code}: {message}")]
    Rejected { code: String, message: String },
    #[error("out of fuel (limit {limit})")]
    OutOfFuel { limit: u64 },
    #[error("memory limit reached (limit {limit} bytes)")]
    MemoryLimit { limit: usize },
    /// The guest used up its wasm stack (unbounded recursion).
    #[error("call stack exhausted (wasm stack limit {limit} bytes)")]
    StackOverflow { limit: usize },
    /// The guest returned more ops than one run may (`MAX_OPS_PER_RUN`).
    #[error("returned {count} ops, over the limit of {limit} per event")]
    TooManyOps { count: usize, limit: usize },
    /// The guest's output is bigger than the host copies: a property
    /// document over `MAX_PROPERTIES_BYTES`, all the text of one run over
    /// `MAX_OUTPUT_BYTES`, or a result the host stopped copying at
    /// `MAX_COPY_BYTES`.
    #[error("output too large: {reason}")]
    OutputTooLarge { reason: String },
    /// Any other trap, a guest panic included (its message, if the guest
    /// printed one, is in `stderr`).
    #[error("trap: {message}{}", stderr.as_deref().map(|s| format!(" (guest stderr: {s})")).unwrap_or_default())]
    Trap {
        message: String,
        stderr: Option<String>,
    },
    #[error(
        "op {index}: {kind} type {type_name:?} is not among the projector's declared {kind} types"
    )]
    UndeclaredType {
        index: usize,
        kind: &'static str,
        type_name: String,
    },
    #[error("op {index}: {reason}")]
    InvalidOutput { index: usize, reason: String },
    /// An op names an existing node whose type the projector does not
    /// declare (set when the ops are applied, see `graph::Staging`).
    #[error(
        "op {index}: {op} on node {id:?}, a {node_type}: the projector does not own that node \
         type (only the projector that declares a node type may put, merge or delete its nodes)"
    )]
    NotOwner {
        index: usize,
        op: &'static str,
        id: String,
        node_type: String,
    },
    /// The ops do not apply to the graph (e.g. `merge-node` on a node of
    /// another type, an oversized id); set when the ops are applied.
    #[error("its ops do not apply to the graph: {reason}")]
    GraphOp { reason: String },
    /// The event itself is malformed for the host (e.g. its timestamp).
    #[error("invalid event: {reason}")]
    InvalidEvent { reason: String },
    /// The host could not run the projector (e.g. instance pool exhausted):
    /// not the event's fault; retrying may succeed.
    #[error("host failure: {message}")]
    Host { message: String },
}

impl Failure {
    /// `rejected`, `out_of_fuel`, `memory_limit`, `stack_overflow`,
    /// `too_many_ops`, `output_too_large`, `trap`, `undeclared_type`,
    /// `invalid_output`, `not_owner`, `invalid_op`, `invalid_event` or `host`.
    /// Every [`Failure::code`] (the metrics' `cause` labels, created at 0).
    pub const CODES: [&'static str; 13] = [
        "rejected",
        "out_of_fuel",
        "memory_limit",
        "stack_overflow",
        "too_many_ops",
        "output_too_large",
        "trap",
        "undeclared_type",
        "invalid_output",
        "not_owner",
        "invalid_op",
        "invalid_event",
        "host",
    ];

    /// What to do about this failure, for people: appended to an ingest
    /// refusal, a load error and `leviathan projector test`'s report. Never
    /// part of a recorded error: its message is in the state digest, so
    /// `Display` stays as it was.
    pub fn hint(&self) -> Option<String> {
        match self {
            Failure::MemoryLimit { limit } => Some(format!(
                "The projector needs more linear memory than its limit of {}: raise \
                 `memory_mib` in its [projector.limits] in the manifest (docs/PROJECTORS.md, \
                 \"Limits\")",
                mib(*limit)
            )),
            Failure::Trap { stderr, .. } => Some(
                if stderr
                    .as_deref()
                    .is_some_and(|s| s.contains(COMPONENTIZE_JS_THROWN))
                {
                    "The guest trapped: ComponentizeJS could not turn what the JavaScript \
                     projector threw into a projection-error. Refuse an event by throwing \
                     { code, message } (or an Error whose `payload` is that); any other thrown \
                     value (a string, a plain Error, a TypeError) traps (docs/PROJECTORS.md, \
                     \"Refusing an event\")"
                } else {
                    "The guest trapped (a panic, an abort, an uncaught exception: not a \
                     refusal); in a JavaScript projector this is usually a thrown value that \
                     is not a { code, message } projection-error (docs/PROJECTORS.md, \
                     \"Refusing an event\")"
                }
                .to_string(),
            ),
            _ => None,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Failure::Rejected { .. } => "rejected",
            Failure::OutOfFuel { .. } => "out_of_fuel",
            Failure::MemoryLimit { .. } => "memory_limit",
            Failure::StackOverflow { .. } => "stack_overflow",
            Failure::TooManyOps { .. } => "too_many_ops",
            Failure::OutputTooLarge { .. } => "output_too_large",
            Failure::Trap { .. } => "trap",
            Failure::UndeclaredType { .. } => "undeclared_type",
            Failure::InvalidOutput { .. } => "invalid_output",
            Failure::NotOwner { .. } => "not_owner",
            Failure::GraphOp { .. } => "invalid_op",
            Failure::InvalidEvent { .. } => "invalid_event",
            Failure::Host { .. } => "host",
        }
    }
}

/// What ComponentizeJS's bindings print on stderr before they trap, when a
/// JavaScript projector threw something other than a `projection-error`
/// (they read its `code` as a string and find `undefined`).
const COMPONENTIZE_JS_THROWN: &str = "expected a string, received";

/// `limit` bytes in MiB, as the manifest's `memory_mib` says it.
fn mib(limit: usize) -> String {
    if limit.is_multiple_of(1 << 20) {
        format!("{} MiB", limit >> 20)
    } else {
        format!("{:.2} MiB", limit as f64 / f64::from(1u32 << 20))
    }
}

/// Most ops one projector may return for one event. The core projector
/// returns a handful; a guest returning more is refused (`too_many_ops`)
/// before any of them is parsed.
pub const MAX_OPS_PER_RUN: usize = 10_000;
/// Largest property document (JSON text) of one op, in bytes: a bit more than
/// a payload can be at the largest body size, so a projector that copies a
/// whole payload into a node fits. Checked before the text is parsed
/// (`output_too_large`).
pub const MAX_PROPERTIES_BYTES: usize = 8 << 20;
/// Most text (ids, types and properties of every op, counted each time an op
/// names it) one projector may return for one event, in bytes
/// (`output_too_large`).
pub const MAX_OUTPUT_BYTES: usize = 32 << 20;
/// wasmtime's "hostcall fuel": the most bytes the host allocates while
/// copying one value out of a guest (the result of `project` or `describe`,
/// the arguments of one import call), counting each list element at its host
/// size and each string at its length, aliased strings included. It bounds
/// the copy before the checks above can run: a guest whose list points the
/// same huge string from a million ops is stopped here (`output_too_large`),
/// not after the host has allocated terabytes. Above `MAX_OUTPUT_BYTES` plus
/// `MAX_OPS_PER_RUN` ops, so the finer checks decide every result that fits.
pub const MAX_COPY_BYTES: usize = 64 << 20;
/// The text wasmtime 48 gives its hostcall-fuel error (its type is private).
const HOSTCALL_FUEL_MESSAGE: &str = "fuel allocated for hostcalls has been exhausted";

/// Longest guest-supplied text kept in an error (rejection code and message,
/// stderr tail), in characters.
const MAX_GUEST_CODE_CHARS: usize = 64;
const MAX_GUEST_MESSAGE_CHARS: usize = 2048;
const MAX_STDERR_IN_ERROR_CHARS: usize = 1024;

/// Event-type patterns of one projector.
struct Matcher {
    exact: HashSet<String>,
    /// `topo.*` is stored as `topo.`: it matches `topo.x`, `topo.x.y`, not `topo.`.
    prefixes: Vec<String>,
}

impl Matcher {
    fn matches(&self, event_type: &str) -> bool {
        self.exact.contains(event_type)
            || self
                .prefixes
                .iter()
                .any(|p| event_type.len() > p.len() && event_type.starts_with(p.as_str()))
    }
}

struct Loaded {
    label: String,
    limits: Limits,
    on_error: OnError,
    mode: Mode,
    pre: ProjectorPre<HostState>,
    uses_wasi: bool,
    /// Whether the component imports `graph`: only then may its output
    /// depend on anything but the event, so only then must it run after the
    /// events before it have been applied.
    reads_graph: bool,
    declared: DeclaredTypes,
    matcher: Matcher,
    /// The component's import names, as wasmtime reports them.
    imports: Vec<String>,
    /// Calls, time, fuel and failures, once the server attaches its metrics.
    metrics: std::sync::OnceLock<crate::metrics::ProjectorMetrics>,
}

/// A loaded, ordered set of projectors sharing one engine. `Send + Sync`: any
/// number of threads may call [`ProjectorSet::project`] at once (up to the
/// pool's slots; beyond, calls fail with a `host` failure).
pub struct ProjectorSet {
    projectors: std::sync::Arc<Vec<Loaded>>,
    infos: Vec<ProjectorInfo>,
    cache_hits: usize,
    /// Which projectors of the set this value runs (`None`: all of them).
    lane: Option<Mode>,
    /// The set's lanes, when it has `async` projectors (`lanes`).
    lanes: Option<Box<Lanes>>,
}

/// The two lanes of a set with `async` projectors: views of the same loaded
/// projectors that run only the `inline` ones or only the `async` ones.
struct Lanes {
    inline: ProjectorSet,
    asynchronous: ProjectorSet,
}

impl std::fmt::Debug for ProjectorSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectorSet")
            .field("projectors", &self.infos)
            .finish_non_exhaustive()
    }
}

impl ProjectorSet {
    /// Compiles (or reads from `cache_dir`) every component, links it, calls
    /// its `describe` once and checks the answer. Set order is `sources` order.
    pub fn load(
        sources: Vec<ProjectorSource>,
        cache_dir: Option<&Path>,
    ) -> Result<Self, LoadError> {
        for (index, s) in sources.iter().enumerate() {
            check_limits(&s.limits).map_err(|reason| LoadError::Limits { index, reason })?;
        }
        let max_memory = sources
            .iter()
            .map(|s| s.limits.memory_bytes)
            .max()
            .unwrap_or(Limits::default().memory_bytes);
        let max_table = sources
            .iter()
            .map(|s| s.limits.table_elements)
            .max()
            .unwrap_or(Limits::default().table_elements);
        let engine = sandbox::engine(max_memory, max_table)
            .map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        let cache = cache_dir.and_then(|d| CompiledCache::open(d, &engine));

        let linker_err = |e: wasmtime::Error| LoadError::Engine(format!("{e:#}"));
        let mut plain: Linker<HostState> = Linker::new(&engine);
        Projector::add_to_linker::<HostState, HasSelf<HostState>>(&mut plain, |s| s)
            .map_err(linker_err)?;
        let mut with_wasi: Linker<HostState> = Linker::new(&engine);
        Projector::add_to_linker::<HostState, HasSelf<HostState>>(&mut with_wasi, |s| s)
            .map_err(linker_err)?;
        sandbox::add_wasi_to_linker(&mut with_wasi).map_err(linker_err)?;

        let mut projectors: Vec<Loaded> = Vec::with_capacity(sources.len());
        let mut infos: Vec<ProjectorInfo> = Vec::with_capacity(sources.len());
        let mut cache_hits = 0;
        for (index, source) in sources.into_iter().enumerate() {
            let digest = Sha256::of(&source.bytes);
            let fail = |stage: &'static str, reason: String| LoadError::Component {
                index,
                digest,
                stage,
                reason,
            };
            let started = std::time::Instant::now();
            let (component, origin) = match &cache {
                Some(c) => c.load_or_compile(&engine, &source.bytes, &digest),
                None => Component::new(&engine, &source.bytes).map(|c| (c, Origin::Compiled)),
            }
            .map_err(|e| fail("compiling", format!("{e:#}")))?;
            if origin == Origin::Cache {
                cache_hits += 1;
            }
            let Imports {
                wasi: uses_wasi,
                graph: reads_graph,
                names: import_names,
            } = imports(&engine, &component).map_err(|r| fail("checking imports", r))?;
            let linker = if uses_wasi { &with_wasi } else { &plain };
            let pre = linker
                .instantiate_pre(&component)
                .and_then(ProjectorPre::new)
                .map_err(|e| fail("linking", format!("{e:#}")))?;
            let description = describe(&pre, &source.limits, uses_wasi)
                .map_err(|r| fail("calling describe", r))?;
            let info = check_description(description, digest, &source)
                .map_err(|r| fail("checking describe output", r))?;
            let label = info.label();
            if let Some(first) = infos.iter().position(|p| p.name == info.name) {
                return Err(LoadError::Duplicate {
                    label,
                    first,
                    second: index,
                });
            }
            tracing::info!(
                projector = %label,
                %digest,
                wasi = uses_wasi,
                reads_graph,
                from_cache = origin == Origin::Cache,
                elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                "projector loaded"
            );
            projectors.push(Loaded {
                declared: DeclaredTypes {
                    node_types: info.node_types.iter().cloned().collect(),
                    edge_types: info.edge_types.iter().cloned().collect(),
                },
                matcher: matcher(&info.handles),
                imports: import_names,
                label,
                limits: source.limits,
                on_error: source.on_error,
                mode: source.mode,
                pre,
                uses_wasi,
                reads_graph,
                metrics: std::sync::OnceLock::new(),
            });
            infos.push(info);
        }
        let projectors = std::sync::Arc::new(projectors);
        let lane = |mode| ProjectorSet {
            projectors: projectors.clone(),
            infos: infos.clone(),
            cache_hits,
            lane: Some(mode),
            lanes: None,
        };
        let lanes = projectors.iter().any(|p| p.mode == Mode::Async).then(|| {
            Box::new(Lanes {
                inline: lane(Mode::Inline),
                asynchronous: lane(Mode::Async),
            })
        });
        Ok(ProjectorSet {
            projectors,
            infos,
            cache_hits,
            lane: None,
            lanes,
        })
    }

    /// The projectors the writer runs in its batch: the `inline` lane of a
    /// set with `async` projectors, else the whole set (itself: a set
    /// without `async` projectors projects exactly as before modes existed).
    pub fn inline(&self) -> &ProjectorSet {
        match &self.lanes {
            Some(l) => &l.inline,
            None => self,
        }
    }

    /// The `async` lane (what the follower runs), if the set has any.
    pub fn asynchronous(&self) -> Option<&ProjectorSet> {
        self.lanes.as_deref().map(|l| &l.asynchronous)
    }

    /// Which lane this value runs (`None`: the whole set, no lanes).
    pub fn lane(&self) -> Option<Mode> {
        self.lane
    }

    /// Whether this value runs `p` (always, unless it is a lane).
    fn runs(&self, p: &Loaded) -> bool {
        self.lane.is_none_or(|m| m == p.mode)
    }

    /// Whether this value runs the projector at `index` (set order).
    pub fn runs_at(&self, index: usize) -> bool {
        self.runs(&self.projectors[index])
    }

    /// The mode of the projector that declares node type `t`, if any.
    pub fn node_type_mode(&self, t: &str) -> Option<Mode> {
        self.projectors
            .iter()
            .find(|p| p.declared.node_types.contains(t))
            .map(|p| p.mode)
    }

    /// The mode of the projector that declares edge type `t`, if any.
    pub fn edge_type_mode(&self, t: &str) -> Option<Mode> {
        self.projectors
            .iter()
            .find(|p| p.declared.edge_types.contains(t))
            .map(|p| p.mode)
    }

    /// The loaded projectors, in set order.
    pub fn projectors(&self) -> &[ProjectorInfo] {
        &self.infos
    }

    /// The set's fingerprint: SHA-256 over, in order, each projector's
    /// component digest, limits and (only when it is not the default
    /// `reject`, so that sets written before error policies existed keep
    /// their fingerprint) error policy and (only when it is `async`) mode.
    /// A lane has its set's fingerprint. A graph is only valid for the
    /// fingerprint that built it.
    pub fn fingerprint(&self) -> Sha256 {
        let mut text = String::new();
        for (info, p) in self.infos.iter().zip(self.projectors.iter()) {
            text.push_str(&format!(
                "{} fuel={} memory={} tables={} instances={}",
                info.digest,
                p.limits.fuel,
                p.limits.memory_bytes,
                p.limits.table_elements,
                p.limits.instances
            ));
            if p.on_error != OnError::Reject {
                text.push_str(&format!(" on_error={}", p.on_error.as_str()));
            }
            if p.mode != Mode::Inline {
                text.push_str(&format!(" mode={}", p.mode.as_str()));
            }
            text.push('\n');
        }
        Sha256::of(text.as_bytes())
    }

    /// Counts every later call of each projector into `metrics` (calls,
    /// time, fuel consumed, failures by cause). Once per set; later calls
    /// change nothing.
    pub fn attach_metrics(&self, metrics: &crate::metrics::Metrics) {
        debug_assert_eq!(self.projectors.len(), self.infos.len());
        for (p, info) in self.projectors.iter().zip(&self.infos) {
            let _ = p.metrics.set(metrics.projector(&p.label, &info.name));
        }
    }

    /// The error policy of the projector at `index` (set order).
    pub fn on_error(&self, index: usize) -> OnError {
        self.projectors[index].on_error
    }

    /// Whether the projector at `index` declares `node_type`: the node types
    /// it owns (`put-node`, `merge-node` and `delete-node` on an existing node
    /// of another type fail with `not_owner`).
    pub fn owns_node_type(&self, index: usize, node_type: &str) -> bool {
        self.projectors[index]
            .declared
            .node_types
            .contains(node_type)
    }

    /// The import names of the projector at `index` (`leviathan:projector/…`
    /// and `wasi:…` interfaces, with their versions), in component order.
    pub fn imports(&self, index: usize) -> &[String] {
        &self.projectors[index].imports
    }

    /// Whether the projector at `index` handles `event_type` (its `handles`).
    pub fn handles_at(&self, index: usize, event_type: &str) -> bool {
        self.projectors[index].matcher.matches(event_type)
    }

    /// The initial size of the largest memory of the projector at `index`,
    /// in 64 KiB wasm pages: what the host puts back after every event, at
    /// least (a guest may grow it). `None` for a component without memory.
    pub fn initial_memory_pages(&self, index: usize) -> Option<u64> {
        let pre = self.projectors[index].pre.instance_pre();
        pre.component()
            .resources_required()?
            .max_initial_memory_size
    }

    /// `name@version` of the projector at `index`.
    pub fn label(&self, index: usize) -> &str {
        &self.projectors[index].label
    }

    /// Runs only the projector at `index` on `event` (test vectors): its ops,
    /// or its failure.
    pub fn run_one(
        &self,
        index: usize,
        event: &EventInput<'_>,
        graph: &dyn GraphView,
    ) -> Result<Vec<Op>, Failure> {
        let mut ops = Vec::new();
        self.projectors[index].run(&to_wit_event(event), event, graph, &mut ops)?;
        Ok(ops)
    }

    /// How many projectors of this set were read from the compiled cache
    /// instead of being compiled.
    pub fn cache_hits(&self) -> usize {
        self.cache_hits
    }

    /// Whether any projector handles `event_type`.
    pub fn handles(&self, event_type: &str) -> bool {
        self.projectors
            .iter()
            .any(|p| self.runs(p) && p.matcher.matches(event_type))
    }

    /// Whether some projector of the set does not read the graph, so that
    /// [`ProjectorSet::prepare`] can do part of the work ahead of order.
    pub fn has_graph_independent(&self) -> bool {
        self.projectors
            .iter()
            .any(|p| self.runs(p) && !p.reads_graph)
    }

    /// Runs every projector that handles the event type, in set order, each on
    /// a fresh instance, and returns all their ops in order. The first failure
    /// stops the event.
    ///
    /// Synchronous and CPU-bound: call it from a thread that may block (the
    /// writer thread, a rayon worker, or `spawn_blocking`), never from an
    /// async task. A WASI guest's host calls may enter wasmtime-wasi's own
    /// tokio handling, which does not work on a current-thread runtime.
    pub fn project(
        &self,
        event: &EventInput<'_>,
        graph: &dyn GraphView,
    ) -> Result<Vec<Op>, ProjectionError> {
        self.finish(event, Prepared::default(), graph)
    }

    /// [`ProjectorSet::prepare`] of every event, on every core (rayon's
    /// global pool), for a caller that waits for them; results in the order
    /// of `events`.
    pub fn prepare_all(&self, events: &[EventInput<'_>]) -> Vec<Prepared> {
        self.prepare_on(events, None)
    }

    /// [`ProjectorSet::prepare_all`] for a stage that runs ahead of another
    /// applying earlier events in order meanwhile (a rebuild's and a
    /// generation build's reader): on the projection pool ([`prepare_pool`]),
    /// every core but one, the one the applying stage keeps busy.
    pub fn prepare_ahead(&self, events: &[EventInput<'_>]) -> Vec<Prepared> {
        self.prepare_on(events, prepare_pool())
    }

    fn prepare_on(
        &self,
        events: &[EventInput<'_>],
        pool: Option<&rayon::ThreadPool>,
    ) -> Vec<Prepared> {
        use rayon::prelude::*;
        if !self.has_graph_independent() {
            return events.iter().map(|_| Prepared::default()).collect();
        }
        let all = || events.par_iter().map(|e| self.prepare(e)).collect();
        match pool {
            Some(pool) => pool.install(all),
            None => all(),
        }
    }

    /// The graph-independent part of [`ProjectorSet::project`]: runs the
    /// handling projectors that do not import `graph` (their output is a pure
    /// function of the event), so that many events can be prepared in
    /// parallel. Only valid for exactly this `event` (its seq and hash
    /// included); [`ProjectorSet::finish`] completes it in order.
    pub fn prepare(&self, event: &EventInput<'_>) -> Prepared {
        let mut runs = Vec::new();
        let mut wit_event: Option<wit::Event> = None;
        for (index, p) in self.projectors.iter().enumerate() {
            if p.reads_graph || !self.runs(p) || !p.matcher.matches(event.event_type) {
                continue;
            }
            let ev = wit_event.get_or_insert_with(|| to_wit_event(event));
            let mut ops = Vec::new();
            let r = p.run(ev, event, &host::EmptyGraph, &mut ops).map(|()| ops);
            let stops = r.is_err() && p.on_error == OnError::Reject;
            runs.push((index, r));
            if stops {
                // Later projectors would not run in `project` either.
                break;
            }
        }
        Prepared { runs }
    }

    /// Completes `prepared` (from [`ProjectorSet::prepare`] of the same event,
    /// or `Prepared::default()`) into exactly what [`ProjectorSet::project`]
    /// returns: projectors run in set order, those already run contribute
    /// their prepared result, the others (graph readers) run now against
    /// `graph`, and the first failure in set order stops the event (whatever
    /// the projectors' error policies: see [`ProjectorSet::run_event`]).
    pub fn finish(
        &self,
        event: &EventInput<'_>,
        prepared: Prepared,
        graph: &dyn GraphView,
    ) -> Result<Vec<Op>, ProjectionError> {
        self.complete(event, prepared, graph, None).map(|p| p.ops)
    }

    /// Like [`ProjectorSet::finish`], but honouring each projector's error
    /// policy: the failure of an `on_error = "record"` projector drops its ops
    /// and is returned in [`Projected::failed`] while the others go on; a
    /// `reject` projector's failure, or a host failure (not the event's fault),
    /// stops the event with an error. Ops are returned per projector
    /// ([`Projected::segments`]) so that the caller can apply (and drop) them
    /// projector by projector.
    pub fn run_event(
        &self,
        event: &EventInput<'_>,
        prepared: Prepared,
        graph: &dyn GraphView,
        policy: Policy,
    ) -> Result<Projected, ProjectionError> {
        self.complete(event, prepared, graph, Some(policy))
    }

    fn complete(
        &self,
        event: &EventInput<'_>,
        prepared: Prepared,
        graph: &dyn GraphView,
        policy: Option<Policy>,
    ) -> Result<Projected, ProjectionError> {
        let mut out = Projected::default();
        let mut wit_event: Option<wit::Event> = None;
        let mut prepared = prepared.runs.into_iter().peekable();
        for (index, p) in self.projectors.iter().enumerate() {
            if !self.runs(p) || !p.matcher.matches(event.event_type) {
                continue;
            }
            let start = out.ops.len();
            let result = match prepared.next_if(|(i, _)| *i == index) {
                Some((_, Ok(mut done))) => {
                    if out.ops.is_empty() {
                        out.ops = done;
                    } else {
                        out.ops.append(&mut done);
                    }
                    Ok(())
                }
                Some((_, Err(failure))) => Err(failure),
                None => {
                    let ev = wit_event.get_or_insert_with(|| to_wit_event(event));
                    p.run(ev, event, graph, &mut out.ops)
                }
            };
            match result {
                Ok(()) => out.segments.push(Segment {
                    projector: index,
                    start,
                    end: out.ops.len(),
                }),
                Err(failure) => {
                    // A failed run may have converted part of its ops.
                    out.ops.truncate(start);
                    let e = ProjectionError {
                        projector: p.label.clone(),
                        seq: event.seq,
                        event_id: event.event_id.to_owned(),
                        failure,
                    };
                    tracing::debug!(code = e.code(), error = %e, "projection failed");
                    let record = policy.is_some_and(|pol| pol.records(p.on_error));
                    if record && e.is_deterministic() {
                        out.failed.push((index, e));
                    } else {
                        return Err(e);
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Which error policy [`ProjectorSet::run_event`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Each projector's own `on_error` (ingest, rebuild).
    AsConfigured,
    /// Every projector records (a build of a new projector set from a log
    /// that cannot be refused any more).
    RecordAll,
}

impl Policy {
    /// Whether the failure of the projector with policy `on_error` is recorded.
    pub fn records(self, on_error: OnError) -> bool {
        self == Policy::RecordAll || on_error == OnError::Record
    }
}

/// What the projectors of a set made of one event ([`ProjectorSet::run_event`]).
#[derive(Debug, Default)]
pub struct Projected {
    /// Every successful projector's ops, in set order.
    pub ops: Vec<Op>,
    /// Which ops came from which projector, in set order.
    pub segments: Vec<Segment>,
    /// The failures of `on_error = "record"` projectors (index in the set,
    /// error), in set order; they contributed no ops.
    pub failed: Vec<(usize, ProjectionError)>,
}

/// The ops `ops[start..end]` of [`Projected`] came from the projector at
/// index `projector` of the set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub projector: usize,
    pub start: usize,
    pub end: usize,
}

/// The graph-independent projector runs of one event, done ahead of order by
/// [`ProjectorSet::prepare`]; `Default` is "nothing done yet".
#[derive(Debug, Default)]
pub struct Prepared {
    /// (index in the set, result), in set order.
    runs: Vec<(usize, Result<Vec<Op>, Failure>)>,
}

/// How many threads [`ProjectorSet::prepare_ahead`] runs projectors on, of
/// `cores`: one per core but one (at least one), named
/// `leviathan-project-N`. Its callers (a rebuild, a generation build) apply
/// earlier events in order on a thread of their own meanwhile, which keeps a
/// core busy; with a pool thread on every core as well (rayon's global pool)
/// the two took turns on the cores, and a rebuild of a 300k store on two
/// cores was ~12 % slower, on ~6 % more CPU (docs/BENCHMARKS.md, session
/// 33).
fn prepare_threads(cores: usize) -> usize {
    cores.saturating_sub(1).max(1)
}

/// The projection pool, started on first use with [`prepare_threads`]
/// threads. `None` if the threads cannot be started: the caller then uses
/// rayon's global pool.
fn prepare_pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(prepare_threads(sandbox::cores()))
            .thread_name(|i| format!("leviathan-project-{i}"))
            .build()
            .map_err(|e| {
                tracing::warn!(error = %e, "projection pool not started; using rayon's global pool")
            })
            .ok()
    })
    .as_ref()
}

impl Loaded {
    /// One run: fresh store, fresh instance, `project`, checked output appended
    /// to `ops`. The store (and the graph borrow inside it) is dropped before
    /// this returns.
    fn run(
        &self,
        ev: &wit::Event,
        event: &EventInput<'_>,
        graph: &dyn GraphView,
        ops: &mut Vec<Op>,
    ) -> Result<(), Failure> {
        let Some(metrics) = self.metrics.get() else {
            return self.run_once(ev, event, graph, ops, &mut 0);
        };
        let started = std::time::Instant::now();
        let mut fuel = 0;
        let r = self.run_once(ev, event, graph, ops, &mut fuel);
        let failure = r.as_ref().err().map(Failure::code);
        metrics.record(started.elapsed().as_secs_f64(), fuel, failure);
        r
    }

    /// [`Loaded::run`] without metrics; `fuel_used` is set to the fuel the
    /// call consumed.
    fn run_once(
        &self,
        ev: &wit::Event,
        event: &EventInput<'_>,
        graph: &dyn GraphView,
        ops: &mut Vec<Op>,
        fuel_used: &mut u64,
    ) -> Result<(), Failure> {
        let wasi = if self.uses_wasi {
            let time = event_time(event.timestamp)?;
            Some(WasiState::new(
                time,
                &event.event_hash,
                self.limits.output_bytes,
            ))
        } else {
            None
        };
        // SAFETY: `store` is a local of this function and is dropped before it
        // returns; nothing in it is sent to another thread. (The crate denies
        // `unsafe_code`; this is one of its documented exceptions.)
        #[allow(unsafe_code)]
        let graph_ref = unsafe { GraphRef::new(graph) };
        let mut store = Store::new(
            self.pre.engine(),
            HostState::new(graph_ref, Limiter::new(&self.limits), wasi),
        );
        store.limiter(|s| &mut s.limiter);
        store.set_fuel(self.limits.fuel).map_err(host_failure)?;
        store.set_hostcall_fuel(MAX_COPY_BYTES);

        let result = self
            .pre
            .instantiate(&mut store)
            .and_then(|instance| instance.call_project(&mut store, ev));
        *fuel_used = self
            .limits
            .fuel
            .saturating_sub(store.get_fuel().unwrap_or(0));
        let stderr_tail = forward_output(&mut store, &self.label, event);
        let list = match result {
            Ok(Ok(list)) => list,
            Ok(Err(rejection)) => {
                return Err(Failure::Rejected {
                    code: truncate_chars(rejection.code, MAX_GUEST_CODE_CHARS),
                    message: truncate_chars(rejection.message, MAX_GUEST_MESSAGE_CHARS),
                })
            }
            Err(e) => {
                return Err(classify(
                    &e,
                    store.data().limiter.memory_refused,
                    &self.limits,
                    stderr_tail,
                ))
            }
        };
        if tracing::enabled!(tracing::Level::TRACE) {
            let left = store.get_fuel().unwrap_or(0);
            tracing::trace!(
                projector = %self.label,
                seq = event.seq.0,
                fuel = self.limits.fuel - left,
                ops = list.len(),
                "projector ran"
            );
        }
        drop(store);
        check_output_size(&list)?;
        ops.reserve(list.len());
        for (index, op) in list.into_iter().enumerate() {
            match host::convert_op(op, &self.declared) {
                Ok(op) => ops.push(op),
                Err(OpError::Undeclared { kind, type_name }) => {
                    return Err(Failure::UndeclaredType {
                        index,
                        kind,
                        type_name,
                    })
                }
                Err(OpError::Invalid(reason)) => {
                    return Err(Failure::InvalidOutput { index, reason })
                }
            }
        }
        Ok(())
    }
}

/// Sends what a WASI guest printed to `tracing` (target `leviathan::guest`),
/// and returns the tail of its stderr for an error message.
fn forward_output(
    store: &mut Store<HostState>,
    label: &str,
    event: &EventInput<'_>,
) -> Option<String> {
    let wasi = store.data().wasi.as_ref()?;
    let mut stderr_tail = None;
    for (stream, out) in [("stdout", &wasi.stdout), ("stderr", &wasi.stderr)] {
        let captured = out.take();
        if captured.bytes.is_empty() {
            continue;
        }
        let text = String::from_utf8_lossy(&captured.bytes);
        tracing::info!(
            target: "leviathan::guest",
            projector = label,
            seq = event.seq.0,
            event_id = event.event_id,
            stream,
            dropped_bytes = captured.dropped,
            "{}",
            text.trim_end()
        );
        if stream == "stderr" {
            let trimmed = text.trim_end();
            let skip = trimmed
                .chars()
                .count()
                .saturating_sub(MAX_STDERR_IN_ERROR_CHARS);
            stderr_tail = Some(trimmed.chars().skip(skip).collect());
        }
    }
    stderr_tail
}

/// Turns a wasmtime error from instantiate/call into a failure.
fn classify(
    e: &wasmtime::Error,
    memory_refused: bool,
    limits: &Limits,
    stderr: Option<String>,
) -> Failure {
    if memory_refused {
        return Failure::MemoryLimit {
            limit: limits.memory_bytes,
        };
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => Failure::OutOfFuel { limit: limits.fuel },
        Some(Trap::StackOverflow) => Failure::StackOverflow {
            limit: sandbox::MAX_WASM_STACK,
        },
        Some(trap) => {
            tracing::debug!(error = %format!("{e:?}"), "projector trapped");
            let message = trap.to_string();
            Failure::Trap {
                message: message
                    .strip_prefix("wasm trap: ")
                    .unwrap_or(&message)
                    .to_owned(),
                stderr,
            }
        }
        None if e
            .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
            .is_some() =>
        {
            host_failure(e)
        }
        None if format!("{e:#}").contains(HOSTCALL_FUEL_MESSAGE) => Failure::OutputTooLarge {
            reason: format!(
                "the host stopped copying the guest's data at {MAX_COPY_BYTES} bytes \
                 (list elements at their host size plus every string)"
            ),
        },
        // Other errors raised while running guest code (a host import
        // refusing, a resource limit other than memory) are the guest's doing
        // and deterministic: report them as traps with the full message.
        None => Failure::Trap {
            message: without_backtrace(e),
            stderr,
        },
    }
}

/// An error's chain of messages without wasmtime's wasm backtrace (frame
/// offsets and names, formatted as the runtime's version does): a recorded
/// error's message is part of the state digest, so it must not change with
/// the runtime.
fn without_backtrace(e: &wasmtime::Error) -> String {
    // WasmBacktrace is a context, not an error type: told by its text.
    e.chain()
        .map(|c| c.to_string())
        .filter(|t| !t.contains("wasm backtrace:"))
        .collect::<Vec<_>>()
        .join(": ")
}

/// Checks a run's output against `MAX_OPS_PER_RUN`, `MAX_PROPERTIES_BYTES`
/// and `MAX_OUTPUT_BYTES` before any of it is parsed.
fn check_output_size(list: &[wit::Op]) -> Result<(), Failure> {
    if list.len() > MAX_OPS_PER_RUN {
        return Err(Failure::TooManyOps {
            count: list.len(),
            limit: MAX_OPS_PER_RUN,
        });
    }
    let mut total = 0usize;
    for (index, op) in list.iter().enumerate() {
        let (texts, properties): (&[&str], Option<&str>) = match op {
            wit::Op::PutNode(n) => (&[&n.id, &n.node_type], Some(&n.properties)),
            wit::Op::MergeNode(n) => (&[&n.id, &n.node_type], Some(&n.properties)),
            wit::Op::DeleteNode(id) => (&[id], None),
            wit::Op::PutEdge(e) => (&[&e.edge_type, &e.from, &e.to], Some(&e.properties)),
            wit::Op::DeleteEdge(k) => (&[&k.edge_type, &k.from, &k.to], None),
        };
        if let Some(p) = properties.filter(|p| p.len() > MAX_PROPERTIES_BYTES) {
            return Err(Failure::OutputTooLarge {
                reason: format!(
                    "op {index}: the property document is {} bytes, over the limit of \
                     {MAX_PROPERTIES_BYTES}",
                    p.len()
                ),
            });
        }
        total += texts.iter().map(|t| t.len()).sum::<usize>() + properties.map_or(0, str::len);
        if total > MAX_OUTPUT_BYTES {
            return Err(Failure::OutputTooLarge {
                reason: format!(
                    "the text of ops 0..={index} is {total} bytes, over the limit of \
                     {MAX_OUTPUT_BYTES} per event"
                ),
            });
        }
    }
    Ok(())
}

fn host_failure(e: impl std::fmt::Display) -> Failure {
    Failure::Host {
        message: format!("{e:#}"),
    }
}

/// The event's timestamp as time since the Unix epoch (for the frozen wall clock).
fn event_time(timestamp: &str) -> Result<Duration, Failure> {
    let t = chrono::DateTime::parse_from_rfc3339(timestamp).map_err(|e| Failure::InvalidEvent {
        reason: format!("timestamp {timestamp:?} is not RFC 3339: {e}"),
    })?;
    let secs = u64::try_from(t.timestamp()).map_err(|_| Failure::InvalidEvent {
        reason: format!("timestamp {timestamp:?} is before 1970"),
    })?;
    Ok(Duration::new(secs, t.timestamp_subsec_nanos()))
}

fn to_wit_event(e: &EventInput<'_>) -> wit::Event {
    wit::Event {
        seq: e.seq.0,
        event_id: e.event_id.to_owned(),
        event_type: e.event_type.to_owned(),
        timestamp: e.timestamp.to_owned(),
        actor_id: e.actor_id.map(str::to_owned),
        target: e.target.to_owned(),
        payload: e.payload_json.to_owned(),
    }
}

fn truncate_chars(s: String, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s,
    }
}

fn check_limits(l: &Limits) -> Result<(), String> {
    if l.fuel == 0 {
        return Err("fuel must be positive".into());
    }
    if l.memory_bytes < 64 << 10 {
        return Err(format!(
            "memory_bytes {} is below one wasm page (65536)",
            l.memory_bytes
        ));
    }
    if l.memory_bytes > 4 << 30 {
        return Err(format!("memory_bytes {} is above 4 GiB", l.memory_bytes));
    }
    if l.instances == 0 {
        return Err("instances must be positive".into());
    }
    Ok(())
}

/// Which host interfaces a component imports.
struct Imports {
    wasi: bool,
    graph: bool,
    names: Vec<String>,
}

/// What the component imports; an error for any import the host does not
/// provide at all.
fn imports(engine: &Engine, component: &Component) -> Result<Imports, String> {
    let mut found = Imports {
        wasi: false,
        graph: false,
        names: Vec::new(),
    };
    for (name, _) in component.component_type().imports(engine) {
        found.names.push(name.to_owned());
        if name.starts_with("wasi:") {
            found.wasi = true;
        } else if name.starts_with("leviathan:projector/graph@") {
            found.graph = true;
        } else if !name.starts_with("leviathan:projector/types@") {
            return Err(format!(
                "imports {name:?}; a projector may import only leviathan:projector/{{types,graph}} and wasi:* interfaces"
            ));
        }
    }
    Ok(found)
}

/// Calls `describe` on a fresh instance (empty graph, the projector's limits).
fn describe(
    pre: &ProjectorPre<HostState>,
    limits: &Limits,
    uses_wasi: bool,
) -> Result<wit::Description, String> {
    let new_store = || -> Result<Store<HostState>, String> {
        let wasi = uses_wasi
            .then(|| WasiState::new(Duration::ZERO, &Sha256::default(), limits.output_bytes));
        let mut store = Store::new(
            pre.engine(),
            HostState::new(GraphRef::empty(), Limiter::new(limits), wasi),
        );
        store.limiter(|s| &mut s.limiter);
        store.set_fuel(limits.fuel).map_err(|e| format!("{e:#}"))?;
        store.set_hostcall_fuel(MAX_COPY_BYTES);
        Ok(store)
    };
    // The first instantiation of a component also builds its memory images
    // (a sealed memfd per memory), and the kernel refuses to seal a memfd
    // whose fresh pages are still referenced for a moment (`cannot add
    // seals to the memfd`: EBUSY, seen once under heavy load): a host
    // failure, gone on the next try. A failed instantiation is tried again,
    // in a fresh store, after a short pause: the guest's code has not run,
    // and wasmtime keeps no failed image. A guest that cannot be
    // instantiated fails every time, with the same error.
    let mut tries = 1;
    let (mut store, instance) = loop {
        let mut store = new_store()?;
        match pre.instantiate(&mut store) {
            Ok(instance) => break (store, Ok(instance)),
            // Over its memory limit: the same on every try.
            Err(e) if tries < FIRST_INSTANTIATION_TRIES && !store.data().limiter.memory_refused => {
                tracing::warn!(
                    tries,
                    "instantiating a projector failed ({e:#}); trying again"
                );
                tries += 1;
                std::thread::sleep(Duration::from_millis(50 * u64::from(tries)));
            }
            Err(e) => break (store, Err(e)),
        }
    };
    let result = instance.and_then(|i| i.call_describe(&mut store));
    match result {
        Ok(d) => Ok(d),
        Err(e) => {
            let stderr = store.data().wasi.as_ref().map(|w| w.stderr.take());
            let stderr = stderr
                .filter(|s| !s.bytes.is_empty())
                .map(|s| String::from_utf8_lossy(&s.bytes).trim_end().to_owned());
            let failure = classify(
                &e,
                store.data().limiter.memory_refused,
                limits,
                stderr.clone(),
            );
            let mut reason = failure.to_string();
            // A trap's text has the guest's stderr already.
            if let (false, Some(s)) = (matches!(failure, Failure::Trap { .. }), stderr) {
                reason.push_str(&format!(" (guest stderr: {s})"));
            }
            if let Some(hint) = failure.hint() {
                reason.push_str(&format!(". {hint}"));
            }
            Err(reason)
        }
    }
}

/// How often `describe` tries a projector's first instantiation.
const FIRST_INSTANTIATION_TRIES: u32 = 3;

/// Checks `describe`'s answer: non-empty name and version without blanks,
/// at least one handled pattern, each exact or `prefix.*`, type names non-empty.
/// Longest name, version or event type pattern a projector may describe
/// itself with, in bytes (types have the graph's `MAX_TYPE_BYTES`).
const MAX_DESCRIPTION_TOKEN_BYTES: usize = 256;
/// Most event type patterns, node types or edge types one projector may
/// declare.
const MAX_DESCRIPTION_ITEMS: usize = 1024;

fn check_description(
    d: wit::Description,
    digest: Sha256,
    source: &ProjectorSource,
) -> Result<ProjectorInfo, String> {
    // Names, versions and patterns become parts of keys (recorded errors,
    // metrics labels) and types are checked against the graph's limit: a
    // description past these is nonsense, refused at load rather than at
    // the first error it records.
    let token = |what: &str, s: &str| -> Result<(), String> {
        let max = if what.ends_with("type") {
            crate::graph::MAX_TYPE_BYTES
        } else {
            MAX_DESCRIPTION_TOKEN_BYTES
        };
        if s.is_empty() {
            Err(format!("{what} is empty"))
        } else if s.len() > max {
            Err(format!(
                "{what} is {} bytes long, over the limit of {max}",
                s.len()
            ))
        } else if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Err(format!(
                "{what} {s:?} contains whitespace or control characters"
            ))
        } else {
            Ok(())
        }
    };
    token("name", &d.name)?;
    token("version", &d.version)?;
    if d.handles.is_empty() {
        return Err("handles no event types".into());
    }
    for (what, n) in [
        ("event type patterns", d.handles.len()),
        ("node types", d.node_types.len()),
        ("edge types", d.edge_types.len()),
    ] {
        if n > MAX_DESCRIPTION_ITEMS {
            return Err(format!(
                "declares {n} {what}, over the limit of {MAX_DESCRIPTION_ITEMS}"
            ));
        }
    }
    for h in &d.handles {
        token("event type pattern", h)?;
        let stem = h.strip_suffix(".*").unwrap_or(h);
        if stem.is_empty() || stem.contains('*') {
            return Err(format!(
                "event type pattern {h:?} is neither an exact name nor `prefix.*`"
            ));
        }
        // A pattern no event type can match (ingest takes dotted lowercase
        // names only) would leave the projector silently idle.
        let as_type = if h.ends_with(".*") {
            format!("{stem}.x")
        } else {
            h.clone()
        };
        if crate::bundle::check_event_type(&as_type).is_err() {
            return Err(format!(
                "event type pattern {h:?} can never match: event types are dotted lowercase names \
                 (segments of a-z, 0-9 and _, each starting with a letter, e.g. \"deploy.finished\" \
                 or \"deploy.*\")"
            ));
        }
    }
    for t in &d.node_types {
        token("node type", t)?;
    }
    for t in &d.edge_types {
        token("edge type", t)?;
    }
    Ok(ProjectorInfo {
        name: d.name,
        version: d.version,
        digest,
        handles: d.handles,
        node_types: d.node_types,
        edge_types: d.edge_types,
        limits: source.limits.clone(),
        on_error: source.on_error,
        mode: source.mode,
    })
}

fn matcher(handles: &[String]) -> Matcher {
    let mut m = Matcher {
        exact: HashSet::new(),
        prefixes: Vec::new(),
    };
    for h in handles {
        match h.strip_suffix('*') {
            Some(prefix) => m.prefixes.push(prefix.to_owned()),
            None => {
                m.exact.insert(h.clone());
            }
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_projection_pool_leaves_a_core_to_the_caller() {
        assert_eq!(prepare_threads(1), 1);
        assert_eq!(prepare_threads(2), 1);
        assert_eq!(prepare_threads(8), 7);
        let pool = prepare_pool().expect("the pool starts");
        assert_eq!(
            pool.current_num_threads(),
            prepare_threads(sandbox::cores())
        );
        let name = pool.install(|| std::thread::current().name().map(str::to_owned));
        assert!(
            name.as_deref()
                .is_some_and(|n| n.starts_with("leviathan-project-")),
            "{name:?}"
        );
    }
}
