//! Operational metrics in the Prometheus/OpenMetrics text format. It owns the
//! registry and the metric names (docs/API.md lists them); it never
//! influences what is stored or answered.
//!
//! The writer's per-event path only increments counters it resolved once
//! ([`WriterMetrics`], [`ProjectorMetrics`]): no lock, no allocation and no
//! label lookup by hash beyond the first event of a type.

use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Most distinct `event_type` label values; later types count as `other`.
pub const MAX_EVENT_TYPE_LABELS: usize = 256;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// `ok`, `duplicate`, or the error code of a refusal (`invalid_bundle`,
    /// `projection_failed`, `event_conflict`, `too_large`, ...).
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventTypeLabel {
    pub event_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabel {
    version: String,
    revision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProjectorLabel {
    /// `name@version`.
    pub projector: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProjectorCause {
    pub projector: String,
    /// The failure's code: `rejected`, `out_of_fuel`, `memory_limit`, ...
    pub cause: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The route template (`/v1/attempts/{id}`), or `unmatched`.
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpRoute {
    pub route: String,
    pub method: String,
}

/// What a connection refused at the connection cap got.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Refusal {
    pub how: &'static str,
}

/// A histogram whose `observe` is lock-free (atomic adds): for the per-event
/// path. prometheus-client's `Histogram` takes a mutex per observation.
#[derive(Clone, Debug)]
pub struct AtomicHistogram(Arc<AtomicHistogramInner>);

#[derive(Debug)]
struct AtomicHistogramInner {
    /// Upper bounds, ascending; the last bucket (`+Inf`) is implicit.
    bounds: Box<[f64]>,
    /// One count per bound plus the `+Inf` bucket (not cumulative).
    counts: Box<[AtomicU64]>,
    /// The sum of observations in nanounits (seconds → nanoseconds).
    sum_nanos: AtomicU64,
}

impl AtomicHistogram {
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> AtomicHistogram {
        let bounds: Box<[f64]> = bounds.into_iter().filter(|b| b.is_finite()).collect();
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        AtomicHistogram(Arc::new(AtomicHistogramInner {
            bounds,
            counts,
            sum_nanos: AtomicU64::new(0),
        }))
    }

    pub fn observe(&self, v: f64) {
        let i = self.0.bounds.partition_point(|b| *b < v);
        self.0.counts[i].fetch_add(1, Ordering::Relaxed);
        self.0
            .sum_nanos
            .fetch_add((v.max(0.0) * 1e9) as u64, Ordering::Relaxed);
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut buckets = Vec::with_capacity(self.0.counts.len());
        let mut count = 0;
        for (i, c) in self.0.counts.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            count += n;
            buckets.push((self.0.bounds.get(i).copied().unwrap_or(f64::INFINITY), n));
        }
        let sum = self.0.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Seconds, 0.25 ms .. ~8 s.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_25, 2.0, 16)
}

/// A projector call: 1 µs .. ~0.5 s.
fn projector_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_001, 4.0, 10)
}

fn http_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

fn projector_histogram() -> AtomicHistogram {
    AtomicHistogram::new(projector_buckets())
}

/// The server's metrics. Cheap to clone (shared atomics).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub ingest_requests: Family<Outcome, Counter>,
    pub ingest_seconds: Histogram,
    pub events_appended: Family<EventTypeLabel, Counter>,
    pub events_duplicate: Counter,
    pub log_head_seq: Gauge,
    /// `LEVIATHAN_STORE=postgres`: this node's lag behind the PostgreSQL
    /// log (crate::pg::lag; 0 elsewhere).
    pub replica_lag_seconds: Gauge<f64, AtomicU64>,
    pub replica_lag_seqs: Gauge,
    pub graph_applied_seq: Gauge,
    pub batch_bundles: Histogram,
    pub batch_events: Histogram,
    pub commit_seconds: Histogram,
    pub writer_up: Gauge,
    pub projector_calls: Family<ProjectorLabel, Counter>,
    pub projector_seconds: Family<ProjectorLabel, AtomicHistogram, fn() -> AtomicHistogram>,
    pub projector_errors: Family<ProjectorCause, Counter>,
    pub projector_fuel: Family<ProjectorLabel, Counter>,
    /// Projection errors recorded instead of refusing the bundle
    /// (`on_error="record"`).
    pub projection_errors_recorded: Family<ProjectorLabel, Counter>,
    pub artifacts: Gauge,
    pub artifact_bytes: Gauge,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_seconds: Family<HttpRoute, Histogram, fn() -> Histogram>,
    /// Connections being served (within `LEVIATHAN_MAX_CONNECTIONS`).
    pub http_connections_open: Gauge,
    /// Connections refused at `LEVIATHAN_MAX_CONNECTIONS`, by what they got.
    pub http_connections_refused: Family<Refusal, Counter>,
    /// Idle connections closed at `LEVIATHAN_MAX_CONNECTIONS` to make room
    /// for a new one (`api::idle`).
    pub http_idle_connections_closed: Counter,
    /// Renders of `/metrics` (concurrent scrapes share one).
    pub metrics_renders: Counter,
    pub store_disk_bytes: Gauge,
    /// fjall's block cache: its capacity (`LEVIATHAN_CACHE_MB`) and what it holds.
    pub block_cache_capacity_bytes: Gauge,
    pub block_cache_bytes: Gauge,
    /// Bytes in the store's memtables (active and sealed, not yet flushed).
    pub memtable_bytes: Gauge,
    /// Index and filter blocks the store keeps in memory outside the cache.
    pub pinned_block_bytes: Gauge,
    /// Compaction's backlog: the most L0 runs of any keyspace.
    pub l0_runs_max: Gauge,
    /// What each keyspace's flushes and compactions read and wrote.
    pub keyspace_writes: KeyspaceWritesSlot,
    pub chain_verified_seq: Gauge,
    pub chain_verify_failures: Counter,
    /// See [`WriterMetrics::replica_rebuilds`].
    pub replica_rebuilds: Counter,
    pub chain_last_verify_timestamp: Gauge<f64, AtomicU64>,
    pub generation_build_applied_seq: Gauge,
    pub generation_build_lag_events: Gauge,
    pub generation_build_errors: Gauge,
    /// Per projector of the live set: the last seq it applied (an async
    /// projector lags the head; an inline one is at the graph's applied seq).
    pub projector_applied_seq: Family<ProjectorLabel, Gauge>,
    pub projector_lag_events: Family<ProjectorLabel, Gauge>,
    pub projector_lag_seconds: Family<ProjectorLabel, Gauge<f64, AtomicU64>>,
    /// Read requests waiting for `?min_seq=N` now.
    pub min_seq_waiting: Gauge,
    /// The scanning-reads bulkhead (`api::limits::Bulkhead`): its places,
    /// the reads in it and those waiting for a place.
    pub scanning_read_places: Gauge,
    pub scanning_reads_running: Gauge,
    pub scanning_reads_waiting: Gauge,
}

/// One more in a gauge for as long as it lives: counted down when dropped,
/// so that a future dropped before it finishes (a request timeout, a client
/// that leaves) is not left counted.
#[must_use = "the gauge is counted down when this is dropped"]
#[derive(Debug)]
pub struct GaugeHold(Gauge);

impl GaugeHold {
    pub fn new(gauge: &Gauge) -> GaugeHold {
        gauge.inc();
        GaugeHold(gauge.clone())
    }
}

impl Drop for GaugeHold {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut root = Registry::default();
        root.register_collector(Box::new(ProcessCollector));
        let keyspace_writes = KeyspaceWritesSlot::default();
        root.register_collector(Box::new(keyspace_writes.clone()));
        let r = root.sub_registry_with_prefix("leviathan");
        let build_info = Family::<BuildLabel, Gauge>::default();
        build_info
            .get_or_create(&BuildLabel {
                version: crate::build_info::VERSION.to_string(),
                revision: crate::build_info::REVISION.to_string(),
            })
            .set(1);
        r.register(
            "build_info",
            "The running binary's version and source revision (always 1)",
            build_info,
        );
        let ingest_requests = Family::<Outcome, Counter>::default();
        r.register(
            "ingest_requests",
            "Ingest requests (bundles) by outcome",
            ingest_requests.clone(),
        );
        let ingest_seconds = Histogram::new(latency_buckets());
        r.register(
            "ingest_duration_seconds",
            "Time from request to durable answer, per ingest request",
            ingest_seconds.clone(),
        );
        let events_appended = Family::<EventTypeLabel, Counter>::default();
        r.register(
            "events_appended",
            "Events appended to the log, by event type (past 256 types: \"other\")",
            events_appended.clone(),
        );
        let events_duplicate = Counter::default();
        r.register(
            "events_duplicate",
            "Events skipped because an identical event was already in the log",
            events_duplicate.clone(),
        );
        let log_head_seq = Gauge::default();
        r.register(
            "log_head_seq",
            "Seq of the last event in the log",
            log_head_seq.clone(),
        );
        let replica_lag_seconds = Gauge::<f64, AtomicU64>::default();
        r.register(
            "replica_lag_seconds",
            "LEVIATHAN_STORE=postgres: now minus the commit time of the oldest seq of the \
             PostgreSQL log this node has not applied (0: caught up, or not on PostgreSQL)",
            replica_lag_seconds.clone(),
        );
        let replica_lag_seqs = Gauge::default();
        r.register(
            "replica_lag_seqs",
            "LEVIATHAN_STORE=postgres: the PostgreSQL log's head minus the seq this node applied",
            replica_lag_seqs.clone(),
        );
        let graph_applied_seq = Gauge::default();
        r.register(
            "graph_applied_seq",
            "Seq of the last event projected into the graph",
            graph_applied_seq.clone(),
        );
        let batch_bundles = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        r.register(
            "batch_bundles",
            "Bundles per group commit",
            batch_bundles.clone(),
        );
        let batch_events = Histogram::new(exponential_buckets(1.0, 4.0, 9));
        r.register(
            "batch_events",
            "Events per group commit",
            batch_events.clone(),
        );
        let commit_seconds = Histogram::new(latency_buckets());
        r.register(
            "commit_duration_seconds",
            "Time to commit one group-commit batch, fsync included",
            commit_seconds.clone(),
        );
        // 1 only from the start-up server (api::monitoring::starting_metrics).
        let starting = Gauge::<i64>::default();
        r.register(
            "starting",
            "1 while the server starts: nothing but the probes and this is served yet",
            starting,
        );
        let writer_up = Gauge::default();
        r.register(
            "writer_up",
            "1 while the writer takes bundles, 0 once a storage failure stopped it",
            writer_up.clone(),
        );
        let projector_calls = Family::<ProjectorLabel, Counter>::default();
        r.register(
            "projector_calls",
            "Projector calls (one per event a projector handles)",
            projector_calls.clone(),
        );
        let projector_seconds =
            Family::<ProjectorLabel, AtomicHistogram, fn() -> AtomicHistogram>::new_with_constructor(
                projector_histogram,
            );
        r.register(
            "projector_duration_seconds",
            "Time of one projector call (fresh instance, call, output checks)",
            projector_seconds.clone(),
        );
        let projector_errors = Family::<ProjectorCause, Counter>::default();
        r.register(
            "projector_errors",
            "Projector calls that failed, by cause",
            projector_errors.clone(),
        );
        let projector_fuel = Family::<ProjectorLabel, Counter>::default();
        r.register(
            "projector_fuel_consumed",
            "Fuel (roughly, wasm instructions) the projector's calls consumed",
            projector_fuel.clone(),
        );
        let projection_errors_recorded = Family::<ProjectorLabel, Counter>::default();
        r.register(
            "projection_errors_recorded",
            "Projection errors recorded instead of refusing the bundle (on_error=\"record\")",
            projection_errors_recorded.clone(),
        );
        let artifacts = Gauge::default();
        r.register("artifacts", "Artifacts stored", artifacts.clone());
        let artifact_bytes = Gauge::default();
        r.register(
            "artifact_bytes",
            "Bytes of the artifacts stored (their content length)",
            artifact_bytes.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        r.register(
            "http_requests",
            "HTTP requests by route template, method and status",
            http_requests.clone(),
        );
        let http_seconds =
            Family::<HttpRoute, Histogram, fn() -> Histogram>::new_with_constructor(http_histogram);
        r.register(
            "http_request_duration_seconds",
            "Time from a request's headers to its response's headers",
            http_seconds.clone(),
        );
        let http_connections_open = Gauge::default();
        r.register(
            "http_connections_open",
            "Connections being served (at most LEVIATHAN_MAX_CONNECTIONS)",
            http_connections_open.clone(),
        );
        let http_connections_refused = Family::<Refusal, Counter>::default();
        r.register(
            "http_connections_refused",
            "Connections beyond LEVIATHAN_MAX_CONNECTIONS: answered 503 (the probes and /metrics \
             are served), or closed unanswered once too many of those are open",
            http_connections_refused.clone(),
        );
        let http_idle_connections_closed = Counter::default();
        r.register(
            "http_idle_connections_closed",
            "Idle connections closed at LEVIATHAN_MAX_CONNECTIONS to make room for a new one",
            http_idle_connections_closed.clone(),
        );
        let metrics_renders = Counter::default();
        r.register(
            "metrics_renders",
            "Renders of /metrics: scrapes that arrive while one renders share the next",
            metrics_renders.clone(),
        );
        let store_disk_bytes = Gauge::default();
        r.register(
            "store_disk_bytes",
            "Bytes the data directory takes on disk (refreshed at most every 10 s)",
            store_disk_bytes.clone(),
        );
        let block_cache_capacity_bytes = Gauge::default();
        r.register(
            "block_cache_capacity_bytes",
            "Capacity of the store's block cache (LEVIATHAN_CACHE_MB)",
            block_cache_capacity_bytes.clone(),
        );
        let block_cache_bytes = Gauge::default();
        r.register(
            "block_cache_bytes",
            "Bytes the store's block cache holds now (data and index blocks)",
            block_cache_bytes.clone(),
        );
        let memtable_bytes = Gauge::default();
        r.register(
            "store_memtable_bytes",
            "Bytes in the store's memtables (written, not yet flushed to disk tables)",
            memtable_bytes.clone(),
        );
        let pinned_block_bytes = Gauge::default();
        r.register(
            "store_pinned_block_bytes",
            "Bytes of index and filter blocks the store keeps in memory outside the block cache \
             (those of its newest tables)",
            pinned_block_bytes.clone(),
        );
        let l0_runs_max = Gauge::default();
        r.register(
            "store_l0_runs_max",
            "The most L0 runs (tables not yet compacted into the levels) of any keyspace: \
             compaction's backlog; the store halts writes to a keyspace while it has 30",
            l0_runs_max.clone(),
        );
        let chain_verified_seq = Gauge::default();
        r.register(
            "chain_verified_seq",
            "The last seq the background chain verifier verified",
            chain_verified_seq.clone(),
        );
        let chain_verify_failures = Counter::default();
        r.register(
            "chain_verify_failures",
            "Background chain verifications that found a broken chain (or could not read it)",
            chain_verify_failures.clone(),
        );
        let replica_rebuilds = Counter::default();
        r.register(
            "replica_rebuilds",
            "Rebuilds of this replica's graph from its log after its state digest disagreed with the writer's (LEVIATHAN_STORE=postgres)",
            replica_rebuilds.clone(),
        );
        let chain_last_verify_timestamp = Gauge::<f64, AtomicU64>::default();
        r.register(
            "chain_last_verify_timestamp_seconds",
            "Unix time the background chain verifier last finished a pass",
            chain_last_verify_timestamp.clone(),
        );
        let generation_build_applied_seq = Gauge::default();
        r.register(
            "generation_build_applied_seq",
            "Seq the generation being built has applied (0: no build running)",
            generation_build_applied_seq.clone(),
        );
        let generation_build_lag_events = Gauge::default();
        r.register(
            "generation_build_lag_events",
            "Events the generation being built lags the log's head by (0: no build running)",
            generation_build_lag_events.clone(),
        );
        let generation_build_errors = Gauge::default();
        r.register(
            "generation_build_errors",
            "Projection errors the generation being built has recorded (0: no build running)",
            generation_build_errors.clone(),
        );
        let projector_applied_seq = Family::<ProjectorLabel, Gauge>::default();
        r.register(
            "projector_applied_seq",
            "Last seq the projector has applied (async projectors are applied behind the head)",
            projector_applied_seq.clone(),
        );
        let projector_lag_events = Family::<ProjectorLabel, Gauge>::default();
        r.register(
            "projector_lag_events",
            "Events the projector lags the log's head by (0 for an inline projector)",
            projector_lag_events.clone(),
        );
        let projector_lag_seconds = Family::<ProjectorLabel, Gauge<f64, AtomicU64>>::default();
        r.register(
            "projector_lag_seconds",
            "How long the projector has been behind the log's head (0: caught up)",
            projector_lag_seconds.clone(),
        );
        let min_seq_waiting = Gauge::default();
        r.register(
            "min_seq_waiting",
            "Read requests waiting until every projector has applied their ?min_seq=",
            min_seq_waiting.clone(),
        );
        let scanning_read_places = Gauge::default();
        r.register(
            "scanning_read_places",
            "Reads that walk and filter a long index (the attempts list by target) that may run at once: half the cores",
            scanning_read_places.clone(),
        );
        let scanning_reads_running = Gauge::default();
        r.register(
            "scanning_reads_running",
            "Reads that walk and filter a long index running now",
            scanning_reads_running.clone(),
        );
        let scanning_reads_waiting = Gauge::default();
        r.register(
            "scanning_reads_waiting",
            "Reads that walk and filter a long index waiting for a place (all places taken)",
            scanning_reads_waiting.clone(),
        );
        Metrics {
            registry: Arc::new(root),
            ingest_requests,
            ingest_seconds,
            events_appended,
            events_duplicate,
            log_head_seq,
            replica_lag_seconds,
            replica_lag_seqs,
            graph_applied_seq,
            batch_bundles,
            batch_events,
            commit_seconds,
            writer_up,
            projector_calls,
            projector_seconds,
            projector_errors,
            projector_fuel,
            projection_errors_recorded,
            artifacts,
            artifact_bytes,
            http_requests,
            http_seconds,
            http_connections_open,
            http_connections_refused,
            http_idle_connections_closed,
            metrics_renders,
            store_disk_bytes,
            block_cache_capacity_bytes,
            block_cache_bytes,
            memtable_bytes,
            pinned_block_bytes,
            l0_runs_max,
            keyspace_writes,
            chain_verified_seq,
            chain_verify_failures,
            replica_rebuilds,
            chain_last_verify_timestamp,
            generation_build_applied_seq,
            generation_build_lag_events,
            generation_build_errors,
            projector_applied_seq,
            projector_lag_events,
            projector_lag_seconds,
            min_seq_waiting,
            scanning_read_places,
            scanning_reads_running,
            scanning_reads_waiting,
        }
    }
}

impl Metrics {
    /// Records one ingest request (events appended are counted by the writer).
    pub fn ingest(&self, outcome: &str, seconds: f64, duplicates: u64) {
        self.ingest_requests
            .get_or_create(&Outcome {
                outcome: outcome.to_string(),
            })
            .inc();
        self.ingest_seconds.observe(seconds);
        self.events_duplicate.inc_by(duplicates);
    }

    /// Records one HTTP request. The method label is one of RFC 9110's
    /// methods (and PATCH) or `other`: a client chooses the method token, and
    /// `/livez` answers without a token, so the label set must not grow with
    /// what clients invent.
    pub fn http(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let method = http_method_label(method);
        self.http_requests
            .get_or_create(&HttpLabels {
                route: route.to_string(),
                method: method.to_string(),
                status,
            })
            .inc();
        self.http_seconds
            .get_or_create(&HttpRoute {
                route: route.to_string(),
                method: method.to_string(),
            })
            .observe(seconds);
    }

    /// Counts a connection refused at the cap: `answered` (503, or a probe
    /// served) or closed unanswered.
    pub fn connection_refused(&self, answered: bool) {
        self.http_connections_refused
            .get_or_create(&Refusal {
                how: if answered { "answered" } else { "closed" },
            })
            .inc();
    }

    /// The writer's handles, resolved once.
    pub fn writer(&self) -> WriterMetrics {
        WriterMetrics {
            replica_rebuilds: self.replica_rebuilds.clone(),
            events: EventTypeCounters::new(self.events_appended.clone()),
            batch_bundles: self.batch_bundles.clone(),
            batch_events: self.batch_events.clone(),
            commit_seconds: self.commit_seconds.clone(),
        }
    }

    /// One projector's handles, resolved once (`label` is `name@version`).
    /// Its error series exist from here on, at 0, so that an alert on their
    /// `increase()` sees the first error (a series that first appears at 1
    /// increased by nothing).
    pub fn projector(&self, label: &str, name: &str) -> ProjectorMetrics {
        let l = ProjectorLabel {
            projector: label.to_string(),
        };
        for cause in crate::projection::Failure::CODES {
            let _ = self.projector_errors.get_or_create(&ProjectorCause {
                projector: label.to_string(),
                cause: cause.to_string(),
            });
        }
        let _ = self
            .projection_errors_recorded
            .get_or_create(&ProjectorLabel {
                projector: name.to_string(),
            });
        ProjectorMetrics {
            label: label.to_string(),
            calls: self.projector_calls.get_or_create(&l).clone(),
            seconds: self.projector_seconds.get_or_create(&l).clone(),
            fuel: self.projector_fuel.get_or_create(&l).clone(),
            errors: self.projector_errors.clone(),
        }
    }

    /// Counts projection errors recorded instead of refused (`on_error =
    /// "record"`), one label per error.
    pub fn count_recorded_errors(&self, projectors: &[String]) {
        for p in projectors {
            self.projection_errors_recorded
                .get_or_create(&ProjectorLabel {
                    projector: p.clone(),
                })
                .inc();
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}

/// One projector's metrics, resolved when the projector set is loaded.
#[derive(Clone, Debug)]
pub struct ProjectorMetrics {
    label: String,
    calls: Counter,
    seconds: AtomicHistogram,
    fuel: Counter,
    errors: Family<ProjectorCause, Counter>,
}

impl ProjectorMetrics {
    /// One call: its time, the fuel it consumed, and its failure's code.
    pub fn record(&self, seconds: f64, fuel: u64, failure: Option<&str>) {
        self.calls.inc();
        self.seconds.observe(seconds);
        self.fuel.inc_by(fuel);
        if let Some(cause) = failure {
            // Failures are rare: the label lookup is fine here.
            self.errors
                .get_or_create(&ProjectorCause {
                    projector: self.label.clone(),
                    cause: cause.to_string(),
                })
                .inc();
        }
    }
}

/// `events_appended_total{event_type}` for the writer thread: each type's
/// counter is looked up in the family once, then kept here; counts wait in
/// `pending` until their batch is committed.
struct EventTypeCounters {
    family: Family<EventTypeLabel, Counter>,
    index: HashMap<Box<str>, usize>,
    counters: Vec<Counter>,
    pending: Vec<u64>,
    touched: Vec<usize>,
    other: Option<usize>,
}

impl EventTypeCounters {
    fn new(family: Family<EventTypeLabel, Counter>) -> Self {
        EventTypeCounters {
            family,
            index: HashMap::new(),
            counters: Vec::new(),
            pending: Vec::new(),
            touched: Vec::new(),
            other: None,
        }
    }

    fn slot(&mut self, event_type: &str) -> usize {
        if let Some(&i) = self.index.get(event_type) {
            return i;
        }
        let label = if self.index.len() < MAX_EVENT_TYPE_LABELS {
            event_type
        } else if let Some(i) = self.other {
            return i;
        } else {
            "other"
        };
        let counter = self
            .family
            .get_or_create(&EventTypeLabel {
                event_type: label.to_string(),
            })
            .clone();
        let i = self.counters.len();
        self.counters.push(counter);
        self.pending.push(0);
        if label == "other" && self.index.len() >= MAX_EVENT_TYPE_LABELS {
            self.other = Some(i);
        } else {
            self.index.insert(label.into(), i);
        }
        i
    }

    fn stage(&mut self, event_type: &str) {
        let i = self.slot(event_type);
        if self.pending[i] == 0 {
            self.touched.push(i);
        }
        self.pending[i] += 1;
    }

    fn discard(&mut self) {
        for i in self.touched.drain(..) {
            self.pending[i] = 0;
        }
    }

    /// The staged counts, taken out to be counted later (or dropped).
    fn seal(&mut self) -> Vec<(Counter, u64)> {
        let mut sealed = Vec::with_capacity(self.touched.len());
        for i in self.touched.drain(..) {
            sealed.push((self.counters[i].clone(), self.pending[i]));
            self.pending[i] = 0;
        }
        sealed
    }
}

/// The writer thread's metrics.
pub struct WriterMetrics {
    /// `LEVIATHAN_STORE=postgres`: a replica's rebuilds of its graph after
    /// its state digest disagreed with the writer's.
    pub replica_rebuilds: Counter,
    events: EventTypeCounters,
    batch_bundles: Histogram,
    batch_events: Histogram,
    commit_seconds: Histogram,
}

impl WriterMetrics {
    /// Handles on a registry nobody renders (a writer started without metrics).
    pub fn unregistered() -> WriterMetrics {
        Metrics::default().writer()
    }

    /// An event staged in the batch being built (counted once it commits).
    pub fn stage_event(&mut self, event_type: &str) {
        self.events.stage(event_type);
    }

    /// The batch committed: count its events, observe its size and commit time.
    pub fn committed(&mut self, bundles: usize, events: usize, commit_seconds: f64) {
        self.seal(bundles, events).committed(commit_seconds);
    }

    /// The batch staged so far, handed over to be committed elsewhere (the
    /// pipelined writer's commit thread): its counts go with it, and the
    /// next batch stages from zero. Dropping the result discards them.
    pub fn seal(&mut self, bundles: usize, events: usize) -> BatchCounts {
        BatchCounts {
            events: self.events.seal(),
            bundles,
            batch_events: events,
            batch_bundles_h: self.batch_bundles.clone(),
            batch_events_h: self.batch_events.clone(),
            commit_seconds_h: self.commit_seconds.clone(),
        }
    }

    /// The batch failed to commit: nothing of it was appended.
    pub fn discarded(&mut self) {
        self.events.discard();
    }
}

/// One batch's metrics, sealed when it is handed over to be committed
/// ([`WriterMetrics::seal`]); counted by [`BatchCounts::committed`], or
/// never if it is dropped (the batch did not commit).
pub struct BatchCounts {
    events: Vec<(Counter, u64)>,
    bundles: usize,
    batch_events: usize,
    batch_bundles_h: Histogram,
    batch_events_h: Histogram,
    commit_seconds_h: Histogram,
}

impl BatchCounts {
    /// The batch committed: count its events, observe its size and commit time.
    pub fn committed(self, commit_seconds: f64) {
        for (counter, n) in &self.events {
            counter.inc_by(*n);
        }
        self.batch_bundles_h.observe(self.bundles as f64);
        self.batch_events_h.observe(self.batch_events as f64);
        self.commit_seconds_h.observe(commit_seconds);
    }
}

/// Each keyspace's flush and compaction byte counters since the store was
/// opened (`fjall::Database::keyspace_write_stats`, a `vendor/lsm-tree`
/// patch), by name: set before each render (the store is read where the
/// other store gauges are) and encoded as
/// `leviathan_store_{flush_written,compaction_read,compaction_written}_bytes`.
/// A keyspace's write amplification is `(flushed + compacted) / flushed`.
#[derive(Clone, Debug, Default)]
pub struct KeyspaceWritesSlot(Arc<Mutex<Vec<(String, fjall::WriteStatsSnapshot)>>>);

impl KeyspaceWritesSlot {
    pub fn set(&self, writes: Vec<(String, fjall::WriteStatsSnapshot)>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = writes;
    }
}

impl prometheus_client::collector::Collector for KeyspaceWritesSlot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let writes = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if writes.is_empty() {
            return Ok(());
        }
        // Per family: (label `file`, if the family has it; the counter).
        type Kinds = &'static [(Option<&'static str>, fn(&fjall::WriteStatsSnapshot) -> u64)];
        let families: [(&str, &str, Kinds); 3] = [
            (
                "leviathan_store_flush_written_bytes",
                "Bytes the store's memtable flushes wrote, by keyspace and file kind (table, or \
                 blob for values kept apart from their keys), since the server started",
                &[
                    (Some("table"), |w| w.flushed_table_bytes),
                    (Some("blob"), |w| w.flushed_blob_bytes),
                ],
            ),
            (
                "leviathan_store_compaction_read_bytes",
                "Bytes the store's compactions read (the tables and blob files they merged), by \
                 keyspace, since the server started",
                &[(None, |w| w.compaction_read_bytes)],
            ),
            (
                "leviathan_store_compaction_written_bytes",
                "Bytes the store's compactions wrote, by keyspace and file kind, since the server \
                 started; with the flushes' bytes, each keyspace's write amplification",
                &[
                    (Some("table"), |w| w.compaction_table_bytes),
                    (Some("blob"), |w| w.compaction_blob_bytes),
                ],
            ),
        ];
        for (name, help, kinds) in families {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (keyspace, w) in &writes {
                for (file, pick) in kinds {
                    let mut labels = vec![("keyspace", keyspace.as_str())];
                    labels.extend(file.map(|f| ("file", f)));
                    ConstCounter::new(pick(w)).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}

/// Standard process metrics from `/proc/self` (Linux), read at each scrape.
#[derive(Debug)]
struct ProcessCollector;

/// What `/proc/self` says now; `None` where it cannot be read.
#[derive(Debug, Default)]
pub struct ProcessStats {
    pub resident_bytes: Option<u64>,
    pub cpu_seconds: Option<f64>,
    pub open_fds: Option<u64>,
    pub start_time_seconds: Option<f64>,
    /// Bytes the process caused to be written to storage (`/proc/self/io`
    /// `write_bytes`: the store's journal, tables and blob files).
    pub written_bytes: Option<u64>,
}

impl ProcessStats {
    pub fn read() -> ProcessStats {
        let ticks = rustix::param::clock_ticks_per_second() as f64;
        let mut s = ProcessStats::default();
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            s.resident_bytes = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kb| kb * 1024);
        }
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            if let Some(f) = stat_fields(&stat) {
                s.cpu_seconds = cpu_ticks(&f).map(|t| t / ticks);
                let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|t| {
                    t.lines()
                        .find_map(|l| l.strip_prefix("btime "))
                        .and_then(|v| v.trim().parse::<f64>().ok())
                });
                // starttime, in ticks since boot.
                if let (Some(start), Some(boot)) = (stat_field(&f, 22), boot) {
                    s.start_time_seconds = Some(boot + start / ticks);
                }
            }
        }
        if let Ok(io) = std::fs::read_to_string("/proc/self/io") {
            s.written_bytes = io
                .lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))
                .and_then(|v| v.trim().parse::<u64>().ok());
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            // The directory handle itself is one of the entries.
            s.open_fds = Some((dir.count() as u64).saturating_sub(1));
        }
        s
    }
}

/// CPU time and run-queue wait of the server's threads, summed by thread
/// name (`/proc/self/task/*`: `stat` utime + stime; `schedstat`'s second
/// field, the time a thread was runnable but waited for a core). The writer
/// (`leviathan-write`: Linux keeps 15 bytes of a thread's name) orders every
/// append: its CPU near one core, or its wait high, says ingest is bound by
/// it rather than by the machine. Names
/// are few (the server's own threads, the HTTP runtime's, fjall's workers),
/// so the label stays small. Empty where `/proc` cannot be read.
#[derive(Debug, Clone, PartialEq)]
pub struct ThreadStats {
    pub name: String,
    pub cpu_seconds: f64,
    /// `None` where the kernel keeps no scheduler statistics.
    pub runqueue_wait_seconds: Option<f64>,
}

impl ThreadStats {
    pub fn read() -> Vec<ThreadStats> {
        let ticks = rustix::param::clock_ticks_per_second() as f64;
        let mut by_name: std::collections::BTreeMap<String, (f64, Option<f64>)> =
            std::collections::BTreeMap::new();
        let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
            return Vec::new();
        };
        for task in dir.flatten() {
            let path = task.path();
            // A thread may exit between the listing and the reads: skip it.
            let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
                continue;
            };
            let Some(cpu) = std::fs::read_to_string(path.join("stat"))
                .ok()
                .and_then(|stat| stat_cpu_ticks(&stat))
            else {
                continue;
            };
            let wait = std::fs::read_to_string(path.join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
                .map(|ns| ns as f64 / 1e9);
            let entry = by_name
                .entry(comm.trim_end().to_owned())
                .or_insert((0.0, Some(0.0)));
            entry.0 += cpu;
            entry.1 = entry.1.zip(wait).map(|(a, b)| a + b);
        }
        by_name
            .into_iter()
            .map(|(name, (cpu_ticks, runqueue_wait_seconds))| ThreadStats {
                name,
                // Summed in ticks, divided once: 1.66, not 1.6600000000000002.
                cpu_seconds: cpu_ticks / ticks,
                runqueue_wait_seconds,
            })
            .collect()
    }
}

/// utime + stime, in clock ticks, of a `/proc/.../stat` line.
fn stat_cpu_ticks(stat: &str) -> Option<f64> {
    cpu_ticks(&stat_fields(stat)?)
}

/// The fields of a `/proc/.../stat` line after the command name (which may
/// hold spaces and parentheses): the first is field 3.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    Some(stat.rsplit_once(')')?.1.split_whitespace().collect())
}

/// Field `n` (1-based, as in proc(5)) of [`stat_fields`]' `fields`, as a number.
fn stat_field(fields: &[&str], n: usize) -> Option<f64> {
    fields.get(n.checked_sub(3)?)?.parse().ok()
}

/// utime + stime (fields 14 and 15), in clock ticks.
fn cpu_ticks(fields: &[&str]) -> Option<f64> {
    Some(stat_field(fields, 14)? + stat_field(fields, 15)?)
}

/// jemalloc's statistics, when it is the allocator (the `jemalloc` feature,
/// the server's default): what the heap holds (`allocated`) against what
/// jemalloc keeps resident for it and has mapped but returned (`retained`),
/// so an RSS that grows tells live data from allocator retention. Empty when
/// jemalloc is linked but not the global allocator (it then allocated nothing).
#[cfg(feature = "jemalloc")]
fn heap_stats() -> Vec<(&'static str, &'static str, usize)> {
    use tikv_jemalloc_ctl::{epoch, stats};
    // The statistics are cached until the epoch advances.
    if epoch::advance().is_err() {
        return Vec::new();
    }
    let read = |r: tikv_jemalloc_ctl::Result<usize>| r.unwrap_or(0);
    let allocated = read(stats::allocated::read());
    if allocated == 0 {
        return Vec::new();
    }
    vec![
        (
            "leviathan_heap_allocated_bytes",
            "Bytes the server's live allocations hold (jemalloc stats.allocated)",
            allocated,
        ),
        (
            "leviathan_heap_active_bytes",
            "Bytes in the allocator's active pages (jemalloc stats.active)",
            read(stats::active::read()),
        ),
        (
            "leviathan_heap_resident_bytes",
            "Bytes of the allocator's pages resident in memory, metadata included (jemalloc stats.resident)",
            read(stats::resident::read()),
        ),
        (
            "leviathan_heap_retained_bytes",
            "Bytes the allocator has returned to the system but keeps mapped (jemalloc stats.retained)",
            read(stats::retained::read()),
        ),
    ]
}

impl prometheus_client::collector::Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = ProcessStats::read();
        if let Some(v) = s.resident_bytes {
            let m = encoder.encode_descriptor(
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(v as i64).encode(m)?;
        }
        if let Some(v) = s.cpu_seconds {
            let m = encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(v).encode(m)?;
        }
        #[cfg(feature = "jemalloc")]
        for (name, help, v) in heap_stats() {
            let m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)).encode(m)?;
        }
        let threads = ThreadStats::read();
        if !threads.is_empty() {
            let mut family = encoder.encode_descriptor(
                "leviathan_thread_cpu_seconds",
                "User and system CPU time of the server's threads, by thread name, in seconds",
                None,
                MetricType::Counter,
            )?;
            for t in &threads {
                let labels = [("thread", t.name.as_str())];
                ConstCounter::new(t.cpu_seconds).encode(family.encode_family(&labels)?)?;
            }
        }
        if threads.iter().any(|t| t.runqueue_wait_seconds.is_some()) {
            let mut family = encoder.encode_descriptor(
                "leviathan_thread_runqueue_wait_seconds",
                "Time the server's threads were runnable but waited for a core, by thread name, in seconds",
                None,
                MetricType::Counter,
            )?;
            for t in &threads {
                if let Some(wait) = t.runqueue_wait_seconds {
                    let labels = [("thread", t.name.as_str())];
                    ConstCounter::new(wait).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        if let Some(v) = s.written_bytes {
            let m = encoder.encode_descriptor(
                "leviathan_process_written_bytes",
                "Bytes the server caused to be written to storage (/proc/self/io write_bytes): \
                 the store's journal, tables and blob files",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(v).encode(m)?;
        }
        if let Some(v) = s.open_fds {
            let m = encoder.encode_descriptor(
                "process_open_fds",
                "Number of open file descriptors",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(v as i64).encode(m)?;
        }
        if let Some(v) = s.start_time_seconds {
            let m = encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::<f64>::new(v).encode(m)?;
        }
        Ok(())
    }
}

/// The `method` label of the HTTP metrics: a bounded set.
fn http_method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE",
    ];
    KNOWN.into_iter().find(|m| *m == method).unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_past_the_cap_count_as_other_and_wait_for_commit() {
        let m = Metrics::default();
        let mut w = m.writer();
        for i in 0..MAX_EVENT_TYPE_LABELS + 10 {
            w.stage_event(&format!("type.{i}"));
        }
        w.stage_event("type.0");
        assert!(!m.render().contains("event_type=\"type.0\"} 2"));
        w.committed(1, MAX_EVENT_TYPE_LABELS + 11, 0.001);
        let text = m.render();
        assert!(text.contains("leviathan_events_appended_total{event_type=\"type.0\"} 2"));
        assert!(text.contains("leviathan_events_appended_total{event_type=\"other\"} 10"));
        let labels = text
            .lines()
            .filter(|l| l.starts_with("leviathan_events_appended_total{"))
            .count();
        assert_eq!(labels, MAX_EVENT_TYPE_LABELS + 1);
        w.stage_event("type.1");
        w.discarded();
        w.committed(1, 0, 0.001);
        assert!(m
            .render()
            .contains("leviathan_events_appended_total{event_type=\"type.1\"} 1"));
        // Sealed counts are counted when their batch commits, not before,
        // and never if it is dropped; staging goes on from zero meanwhile.
        w.stage_event("type.1");
        let sealed = w.seal(1, 1);
        w.stage_event("type.1");
        w.stage_event("type.1");
        let dropped = w.seal(1, 2);
        assert!(m
            .render()
            .contains("leviathan_events_appended_total{event_type=\"type.1\"} 1"));
        sealed.committed(0.001);
        drop(dropped);
        w.committed(1, 0, 0.001);
        assert!(m
            .render()
            .contains("leviathan_events_appended_total{event_type=\"type.1\"} 2"));
    }

    #[test]
    fn threads_cpu_and_wait_are_reported_by_name() {
        // A thread that burns 100 ms of its own CPU (however busy the machine:
        // it checks its own counter), then stays alive until read.
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let (busy_tx, busy_rx) = std::sync::mpsc::channel::<()>();
        let spinner = std::thread::Builder::new()
            .name("lev-test-spin".into())
            .spawn(move || {
                let ticks = rustix::param::clock_ticks_per_second() as f64;
                let own = || {
                    std::fs::read_to_string("/proc/thread-self/stat")
                        .ok()
                        .and_then(|s| stat_cpu_ticks(&s))
                        .map_or(0.0, |t| t / ticks)
                };
                let start = std::time::Instant::now();
                let mut x = 0u64;
                while own() < 0.1 && start.elapsed() < std::time::Duration::from_secs(60) {
                    for _ in 0..100_000 {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                    }
                }
                busy_tx.send(()).unwrap();
                let _ = done_rx.recv();
                x
            })
            .unwrap();
        busy_rx.recv().unwrap();
        let threads = ThreadStats::read();
        let spin = threads
            .iter()
            .find(|t| t.name == "lev-test-spin")
            .unwrap_or_else(|| panic!("no lev-test-spin in {threads:?}"));
        assert!(spin.cpu_seconds >= 0.05, "{spin:?}");
        assert!(spin.cpu_seconds < 10.0, "{spin:?}");
        let text = Metrics::default().render();
        let line = text
            .lines()
            .find(|l| {
                l.starts_with("leviathan_thread_cpu_seconds_total{thread=\"lev-test-spin\"} ")
            })
            .unwrap_or_else(|| panic!("no thread CPU line in {text}"));
        let v: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(v >= 0.05, "{line}");
        if spin.runqueue_wait_seconds.is_some() {
            assert!(text.contains(
                "leviathan_thread_runqueue_wait_seconds_total{thread=\"lev-test-spin\"} "
            ));
        }
        done_tx.send(()).unwrap();
        spinner.join().unwrap();
    }

    #[test]
    fn stat_cpu_is_utime_plus_stime() {
        // A command name with spaces and parentheses, as `comm` may be.
        let stat =
            "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 1234 0 0";
        assert_eq!(stat_cpu_ticks(stat), Some(325.0));
        assert_eq!(stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn atomic_histogram_encodes_like_a_histogram() {
        let m = Metrics::default();
        let p = m.projector("core@1.0.0", "core");
        // Every error series exists at 0 before the first error.
        let text = m.render();
        assert!(text.contains(
            "leviathan_projector_errors_total{projector=\"core@1.0.0\",cause=\"out_of_fuel\"} 0"
        ), "{text}");
        assert!(
            text.contains("leviathan_projection_errors_recorded_total{projector=\"core\"} 0"),
            "{text}"
        );
        p.record(0.000_002, 100, None);
        p.record(0.2, 50, Some("out_of_fuel"));
        let text = m.render();
        assert!(
            text.contains("leviathan_projector_duration_seconds_count{projector=\"core@1.0.0\"} 2")
        );
        assert!(text.contains(
            "leviathan_projector_duration_seconds_bucket{le=\"+Inf\",projector=\"core@1.0.0\"} 2"
        ) || text.contains(
            "leviathan_projector_duration_seconds_bucket{projector=\"core@1.0.0\",le=\"+Inf\"} 2"
        ), "{text}");
        assert!(
            text.contains("leviathan_projector_fuel_consumed_total{projector=\"core@1.0.0\"} 150")
        );
        assert!(text.contains(
            "leviathan_projector_errors_total{projector=\"core@1.0.0\",cause=\"out_of_fuel\"} 1"
        ));
        assert!(text.contains("process_resident_memory_bytes "));
        assert!(text.contains("process_cpu_seconds_total "));
    }
}
