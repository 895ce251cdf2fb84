//! Operational metrics in the Prometheus/OpenMetrics text format: ingest
//! outcomes and latency, events appended, and the log and graph positions.
//! It owns the registry and the metric names; it never influences what is
//! stored or answered.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// `ok`, `duplicate`, or the error code of a refusal (`invalid_bundle`,
    /// `projection_failed`, `event_conflict`, `too_large`, ...).
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProjectorLabel {
    /// The projector's name.
    pub projector: String,
}

/// The server's metrics. Cheap to clone (shared atomics).
#[derive(Clone)]
pub struct Metrics {
    registry: std::sync::Arc<Registry>,
    pub ingest_requests: Family<Outcome, Counter>,
    pub ingest_seconds: Histogram,
    pub events_appended: Counter,
    pub events_duplicate: Counter,
    pub log_head_seq: Gauge,
    pub graph_applied_seq: Gauge,
    pub projection_errors: Family<ProjectorLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("leviathan");
        let ingest_requests = Family::<Outcome, Counter>::default();
        registry.register(
            "ingest_requests",
            "Ingest requests by outcome",
            ingest_requests.clone(),
        );
        // 0.25 ms .. ~8 s
        let ingest_seconds = Histogram::new(exponential_buckets(0.000_25, 2.0, 16));
        registry.register(
            "ingest_duration_seconds",
            "Time from request to durable answer, per ingest request",
            ingest_seconds.clone(),
        );
        let events_appended = Counter::default();
        registry.register(
            "events_appended",
            "Events appended to the log",
            events_appended.clone(),
        );
        let events_duplicate = Counter::default();
        registry.register(
            "events_duplicate",
            "Events skipped because an identical event was already in the log",
            events_duplicate.clone(),
        );
        let log_head_seq = Gauge::default();
        registry.register(
            "log_head_seq",
            "Seq of the last event in the log",
            log_head_seq.clone(),
        );
        let graph_applied_seq = Gauge::default();
        registry.register(
            "graph_applied_seq",
            "Seq of the last event projected into the graph",
            graph_applied_seq.clone(),
        );
        let projection_errors = Family::<ProjectorLabel, Counter>::default();
        registry.register(
            "projection_errors_recorded",
            "Projection errors recorded by on_error = \"record\" projectors, by projector",
            projection_errors.clone(),
        );
        Metrics {
            projection_errors,
            registry: std::sync::Arc::new(registry),
            ingest_requests,
            ingest_seconds,
            events_appended,
            events_duplicate,
            log_head_seq,
            graph_applied_seq,
        }
    }
}

impl Metrics {
    /// Records one ingest request.
    pub fn ingest(&self, outcome: &str, seconds: f64, appended: u64, duplicates: u64) {
        self.ingest_requests
            .get_or_create(&Outcome {
                outcome: outcome.to_string(),
            })
            .inc();
        self.ingest_seconds.observe(seconds);
        self.events_appended.inc_by(appended);
        self.events_duplicate.inc_by(duplicates);
    }

    /// Counts recorded projection errors (one projector name per error).
    pub fn projection_errors_recorded(&self, projectors: &[String]) {
        for p in projectors {
            self.projection_errors
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
