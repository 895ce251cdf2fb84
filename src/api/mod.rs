//! HTTP v1 (axum). Handlers are thin: parse the request, call the domain (log,
//! cas, writer), map the error. This module owns routing, auth and the JSON
//! shapes of responses; it holds no domain logic and never writes storage
//! except through the writer and the artifact store.

mod artifacts;
mod attempts;
mod audit;
mod auth;
mod autonomy;
mod cluster;
pub mod consistency;
pub mod console;
pub mod error;
mod events;
mod failures;
mod forward;
mod graph;
pub mod host;
pub mod idle;
mod ingest;
pub mod limits;
pub mod min_seq;
pub mod monitoring;
mod probes;
pub mod single_flight;
pub mod stream;
mod topology;
pub mod write_timeout;

use crate::bundle::Limits;
use crate::cas::Cas;
use crate::config::HttpSettings;
use crate::log::Log;
use crate::tokens::{Role, Tokens};
use crate::writer::Writer;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use axum::Router;
use error::ApiError;
use serde::Deserialize;
use std::collections::HashMap;

/// What every handler can reach: one shared [`Shared`], so that axum's
/// clone of the state for each layer of each request is one reference count,
/// not one per field (the metrics alone hold dozens of `Arc`s, whose counts
/// share cache lines with the counters other threads bump).
#[derive(Clone)]
pub struct AppState(std::sync::Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(std::sync::Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The state behind [`AppState`].
pub struct Shared {
    /// The live generation (graph, projector set, fingerprint), swapped
    /// whole when another generation goes live: take it once per request.
    pub live: crate::generations::LiveGraph,
    /// The generation being built, if any (`GET /v1/projection`).
    pub builds: crate::generations::Builds,
    /// The async projectors' follower: its status and applied seq.
    pub follow: crate::generations::Follow,
    pub catalog: crate::generations::Catalog,
    /// The known tokens (swapped whole on SIGHUP).
    pub tokens: Tokens,
    /// Limits of the HTTP layer.
    pub http: HttpSettings,
    pub limits: Limits,
    /// The autonomy YAML read by `/v1/autonomy/status`.
    pub autonomy_config: std::path::PathBuf,
    pub log: Log,
    pub cas: Cas,
    pub writer: Writer,
    pub metrics: crate::metrics::Metrics,
    /// `/metrics` and the chain verifier's status.
    pub monitor: std::sync::Arc<monitoring::Monitor>,
    /// The Merkle tree, checkpoints and the signing key (api/audit.rs).
    pub transparency: crate::tlog::Transparency,
    /// The open event streams (`GET /v1/events/stream`).
    pub streams: stream::Streams,
    /// `LEVIATHAN_STORE=postgres`: where `GET /v1/cluster` reads the members.
    pub cluster: Option<crate::pg::members::Cluster>,
    /// The reads that filter a long index walk share half the cores
    /// ([`blocking_scan`]).
    pub scans: limits::Bulkhead,
}

/// The whole HTTP surface. Every v1 route sits in exactly one role group
/// (docs/SECURITY.md has the table): a new route must be added to the group
/// whose role it needs.
pub fn router(state: AppState) -> Router {
    use axum::middleware::{from_fn, from_fn_with_state};
    let read = Router::new()
        .route("/v1/events/recent", get(events::recent))
        .route("/v1/events", get(events::after))
        .route("/v1/events/stream", get(stream::stream))
        .route("/v1/events/{event_id}", get(events::by_id))
        .route("/v1/log/head", get(events::head))
        .route("/v1/log/verify", get(events::verify))
        .route("/v1/log/verification", get(monitoring::verification))
        .route("/v1/log/checkpoint", get(audit::checkpoint))
        .route("/v1/log/public-key", get(audit::public_key))
        .route("/v1/log/signers", get(audit::signers))
        .route("/v1/log/consistency", get(audit::consistency))
        .route("/v1/events/{event_id}/proof", get(audit::proof))
        .route("/v1/events/{event_id}/bundle", get(audit::bundle))
        .route("/v1/failures", get(failures::failures))
        .route("/v1/graph/summary", get(graph::summary))
        .route("/v1/projection", get(graph::projection))
        .route("/v1/cluster", get(cluster::cluster))
        .route("/v1/projection/errors", get(graph::projection_errors))
        .route("/v1/graph/nodes", get(graph::nodes))
        .route("/v1/graph/nodes/{id}", get(graph::node))
        .route("/v1/graph/nodes/{id}/edges", get(graph::edges))
        .route("/v1/graph/nodes/{id}/history", get(graph::node_history))
        .route("/v1/attempts", get(attempts::list))
        .route("/v1/attempts/{id}", get(attempts::show))
        .route("/v1/topology/summary", get(topology::summary))
        .route("/v1/topology/{kind}", get(topology::list))
        .route("/v1/autonomy/status", get(autonomy::status))
        .route("/v1/backlog/suggest", post(autonomy::suggest))
        .route(
            "/v1/artifacts/{sha256}",
            get(artifacts::get).head(artifacts::head),
        );
    let read = if state.http.test_panic_route {
        read.route("/v1/_test/panic", get(limits::test_panic))
            .route("/v1/_test/slow", get(limits::test_slow))
    } else {
        read
    };
    // X-Leviathan-Seq on every read, and a replica that disagrees with the
    // writer refusing reads (api/consistency.rs); inside the min_seq wait, so
    // that the header is read after it.
    let read = read.route_layer(from_fn_with_state(state.clone(), consistency::read_at));
    // `?min_seq=N`: every read route can wait until N is applied.
    let read = read.route_layer(from_fn_with_state(state.clone(), min_seq::wait));
    let ingest = Router::new()
        .route("/v1/events/ingest", post(ingest::ingest))
        // A replica forwards event ingest to the writer
        // (api/forward.rs); artifact uploads, added after the layer, are
        // taken by any node (they commit to PostgreSQL, crate::pg::artifacts).
        .route_layer(from_fn_with_state(state.clone(), forward::to_leader))
        .route("/v1/artifacts", post(artifacts::post))
        .route("/v1/artifacts/{sha256}", put(artifacts::put));
    let admin = Router::new()
        .route("/v1/attempts/{id}/invalidate", post(attempts::invalidate))
        // An invalidation appends an event: a replica forwards it to the
        // writer, as ingest (a backup is taken by whichever node is asked).
        .route_layer(from_fn_with_state(state.clone(), forward::to_leader))
        .route("/v1/admin/backup", post(monitoring::backup));
    let with_role =
        |r: Router<AppState>, role: Role| r.route_layer(from_fn_with_state(role, auth::require));
    let request_limits = limits::RequestLimits::new(&state.http);
    let v1 = with_role(read, Role::Read)
        .merge(with_role(ingest, Role::Ingest))
        .merge(with_role(admin, Role::Admin))
        .route_layer(from_fn_with_state(state.tokens.clone(), auth::authenticate))
        .route_layer(from_fn_with_state(request_limits, limits::limit));
    Router::new()
        .route("/healthz", get(probes::live))
        .route("/livez", get(probes::live))
        .route("/readyz", get(probes::ready))
        .route("/metrics", get(monitoring::metrics))
        .merge(console::routes())
        .merge(v1)
        .route_layer(from_fn(limits::matched_route))
        .fallback(|| async { ApiError::not_found("no such route; see docs/API.md for the routes") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not accept that method; see docs/API.md",
            )
        })
        // Limits are enforced by the handlers themselves, with their own messages.
        .layer(DefaultBodyLimit::disable())
        .layer(from_fn_with_state(
            state.http.allowed_hosts.clone(),
            host::check,
        ))
        .layer(from_fn_with_state(state.metrics.clone(), limits::edge))
        .with_state(state)
}

/// Query parameters, parsed by hand so that every problem gets our error shape.
#[derive(Debug, Default, Deserialize)]
#[serde(transparent)]
pub struct Params(HashMap<String, String>);

impl Params {
    pub fn from_query(q: Option<&str>) -> Result<Params, ApiError> {
        match q {
            None => Ok(Params::default()),
            Some(q) => serde_urlencoded::from_str(q)
                .map(Params)
                .map_err(|e| ApiError::invalid_query(format!("malformed query string: {e}"))),
        }
    }

    pub fn str(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    /// An integer in `min..=max`, or `default` when absent.
    pub fn int(&self, name: &str, default: u64, min: u64, max: u64) -> Result<u64, ApiError> {
        let Some(raw) = self.0.get(name) else {
            return Ok(default);
        };
        match raw.trim().parse::<i128>() {
            Ok(v) if v >= min as i128 && v <= max as i128 => Ok(v as u64),
            _ => Err(ApiError::invalid_query(format!(
                "query parameter `{name}` must be an integer from {min} to {max}, got {raw:?}"
            ))
            .with_details(serde_json::json!({"parameter": name, "min": min, "max": max}))),
        }
    }

    pub fn bool(&self, name: &str) -> Result<bool, ApiError> {
        match self.str(name) {
            None => Ok(false),
            Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => Ok(false),
            Some(v) => Err(ApiError::invalid_query(format!(
                "query parameter `{name}` must be true or false, got {v:?}"
            ))),
        }
    }
}

/// The request's `Content-Length`, when it sends a valid one (a body over a
/// limit is refused before it is read).
pub fn declared_length(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers
        .get(axum::http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Runs blocking store work off the async workers.
/// [`blocking`] for a read that may walk far through an index and filter
/// what it finds (the attempts list by target: up to 100,000 nodes read per
/// request): it first waits for a place in `scans` (the request's timeout
/// counts the wait), which it holds until the work has ended, so that such
/// reads, however many clients send them, leave the writer and the other
/// reads their share of the cores.
pub async fn blocking_scan<T: Send + 'static>(
    scans: &limits::Bulkhead,
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let place = scans.enter().await;
    blocking(move || {
        let _place = place;
        f()
    })
    .await
}

pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    // The request's span (its id) follows the work onto the blocking thread,
    // and so do its in-flight slot and cancellation (api/limits.rs: a
    // dropped request stops its reads, and frees its slot once they have).
    let span = tracing::Span::current();
    let work = limits::REQUEST_WORK.try_with(Clone::clone).ok();
    tokio::task::spawn_blocking(move || match work {
        Some(w) => crate::cancel::run_with(&w.cancel, || span.in_scope(f)),
        None => span.in_scope(f),
    })
    .await
    .map_err(|e| ApiError::internal("a worker task failed", e))?
}
