//! `GET /metrics` (Prometheus text format; open unless
//! `LEVIATHAN_METRICS_TOKEN` is set) and `GET /v1/log/verification` (the
//! background chain verifier's last result).

use super::error::ApiError;
use super::AppState;
use crate::digest::Sha256;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a measured size of the data dir is served before it is measured
/// again (walking a large store is not free).
const DISK_REFRESH: Duration = Duration::from_secs(10);

/// What the monitoring routes need beside the rest of the state.
pub struct Monitor {
    /// SHA-256 of `LEVIATHAN_METRICS_TOKEN`, when set.
    metrics_token: Option<Sha256>,
    data_dir: PathBuf,
    /// When the data dir was last measured, and its size.
    disk: Mutex<Option<(Instant, u64)>>,
    verifier: Option<Arc<crate::chain_verifier::Status>>,
    /// The store, for online backups; one backup at a time.
    pub(super) db: fjall::Database,
    pub(super) backup_running: Mutex<()>,
    /// `/metrics` renders one at a time, shared by concurrent scrapes.
    renders: super::single_flight::SingleFlight<bytes::Bytes>,
    /// `GET /v1/log/verify` walks the chain one at a time, shared by
    /// concurrent requests: a walk is linear in the log.
    pub(super) verify_walks: super::single_flight::SingleFlight<crate::log::VerifyReport>,
}

impl Monitor {
    pub fn new(
        metrics_token: Option<&crate::tokens::Secret>,
        data_dir: PathBuf,
        verifier: Option<Arc<crate::chain_verifier::Status>>,
        db: fjall::Database,
    ) -> Monitor {
        Monitor {
            metrics_token: metrics_token.map(|t| Sha256::of(t.0.as_bytes())),
            data_dir,
            disk: Mutex::new(None),
            verifier,
            db,
            backup_running: Mutex::new(()),
            renders: Default::default(),
            verify_walks: Default::default(),
        }
    }

    /// Bytes the data dir takes on disk, measured at most every
    /// [`DISK_REFRESH`]. Blocking: call it off the async workers.
    fn disk_bytes(&self) -> u64 {
        let mut cached = self.disk.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, bytes)) = *cached {
            if at.elapsed() < DISK_REFRESH {
                return bytes;
            }
        }
        let bytes = crate::files::disk_bytes_under(&self.data_dir);
        *cached = Some((Instant::now(), bytes));
        bytes
    }
}

/// `GET /metrics`: the Prometheus/OpenMetrics text of every metric. With
/// `LEVIATHAN_METRICS_TOKEN` set, only for `Authorization: Bearer <it>`.
/// Sets the per-projector applied seq and lag of the live set.
fn projector_lag(app: &AppState, m: &crate::metrics::Metrics) {
    use crate::metrics::ProjectorLabel;
    use crate::projection::Mode;
    let live = app.live.get();
    let view = app.log.view();
    let (Ok(head), Ok((inline, _))) = (app.log.head_at(&view), live.graph.state_at(&view)) else {
        return;
    };
    let asynchronous = live
        .graph
        .async_state_at(&view)
        .map_or(crate::seq::Seq::ZERO, |(s, _)| s);
    let lag_seconds = app
        .follow
        .status()
        .filter(|s| s.generation == live.graph.generation())
        .map_or(0.0, |s| s.lag_seconds);
    m.projector_applied_seq.clear();
    m.projector_lag_events.clear();
    m.projector_lag_seconds.clear();
    for p in live.projectors.projectors() {
        let label = ProjectorLabel {
            projector: p.label(),
        };
        let (applied, secs) = match p.mode {
            Mode::Inline => (inline, 0.0),
            Mode::Async => (asynchronous, lag_seconds),
        };
        m.projector_applied_seq
            .get_or_create(&label)
            .set(applied.0 as i64);
        m.projector_lag_events
            .get_or_create(&label)
            .set(head.seq.0.saturating_sub(applied.0) as i64);
        m.projector_lag_seconds.get_or_create(&label).set(secs);
    }
}

/// With `LEVIATHAN_METRICS_TOKEN` (its SHA-256 `expected`): the 401 for a
/// request without that bearer token (400 `invalid_authorization` for more
/// than one `Authorization` header, as on `/v1`).
pub fn metrics_unauthorized(expected: Option<Sha256>, headers: &HeaderMap) -> Option<Response> {
    let expected = expected?;
    // Read as every other route reads it: exactly one header, one space.
    let given = match super::auth::bearer_credential(headers) {
        Ok(credential) => Some(Sha256::of(credential)),
        Err(e) if e.status == StatusCode::BAD_REQUEST => return Some(e.into_response()),
        Err(_) => None,
    };
    let ok = given.is_some_and(|g| {
        use subtle::ConstantTimeEq;
        bool::from(g.as_bytes().ct_eq(expected.as_bytes()))
    });
    if ok {
        return None;
    }
    let mut resp = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "/metrics needs `Authorization: Bearer <token>` with the token in \
         LEVIATHAN_METRICS_TOKEN",
    )
    .into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    Some(resp)
}

/// `/metrics` while the server starts (the store opening, a journal replay, a
/// `LEVIATHAN_REBUILD=block` build): `leviathan_starting 1`, how long, and a
/// block build's progress, so that a planned long start is not a scrape
/// failure (`up == 0`), and a start that never ends is seen
/// (`LeviathanStartingTooLong`). The served server says `leviathan_starting 0`.
pub fn starting_metrics(seconds: f64, build: Option<(u64, u64)>) -> Response {
    let mut text = String::from(
        "# HELP leviathan_starting 1 while the server starts: nothing but the probes and this is served yet\n\
         # TYPE leviathan_starting gauge\nleviathan_starting 1\n\
         # HELP leviathan_starting_seconds Seconds since the process started\n\
         # TYPE leviathan_starting_seconds gauge\n",
    );
    text.push_str(&format!("leviathan_starting_seconds {seconds:.3}\n"));
    text.push_str(&crate::build_info::metric_text());
    if let Some((applied, head)) = build {
        text.push_str(&format!(
            "# HELP leviathan_generation_build_applied_seq Seq the generation being built has applied\n\
             # TYPE leviathan_generation_build_applied_seq gauge\n\
             leviathan_generation_build_applied_seq {applied}\n\
             # HELP leviathan_generation_build_lag_events Events the generation being built is behind the log\n\
             # TYPE leviathan_generation_build_lag_events gauge\n\
             leviathan_generation_build_lag_events {}\n",
            head.saturating_sub(applied)
        ));
    }
    (
        [(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

pub async fn metrics(State(app): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(refused) = metrics_unauthorized(app.monitor.metrics_token, &headers) {
        return refused;
    }
    let monitor = app.monitor.clone();
    let text = monitor.renders.run(|| render(app)).await;
    match text {
        Ok(text) => metrics_text(text),
        Err(e) => ApiError::internal("rendering the metrics failed", e).into_response(),
    }
}

/// One render of `/metrics`: the gauges read now, then the text.
async fn render(app: AppState) -> Result<bytes::Bytes, tokio::task::JoinError> {
    let m = app.metrics.clone();
    let monitor = app.monitor.clone();
    let text = tokio::task::spawn_blocking(move || {
        if let Ok(h) = app.log.head() {
            m.log_head_seq.set(h.seq.0 as i64);
        }
        if let Ok((seq, _)) = app.live.graph().state() {
            m.graph_applied_seq.set(seq.0 as i64);
        }
        // fjall 3.1 has these as doc-hidden accessors (no other public ones).
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        m.block_cache_capacity_bytes
            .set(gauge(monitor.db.cache_capacity()));
        m.block_cache_bytes.set(gauge(monitor.db.cache_size()));
        m.memtable_bytes.set(gauge(monitor.db.write_buffer_size()));
        // lsm-tree pins them by level (the index of L0 and L1 tables, the
        // filter of L0 tables): bounded as the store grows, with the third
        // patch in vendor/lsm-tree/LEVIATHAN-PATCH.md.
        m.pinned_block_bytes
            .set(gauge(monitor.db.pinned_block_bytes()));
        // Compaction's backlog: fjall halts a keyspace's writes at 30 L0 runs.
        m.l0_runs_max
            .set(gauge(monitor.db.max_l0_run_count() as u64));
        m.keyspace_writes.set(monitor.db.keyspace_write_stats());
        projector_lag(&app, &m);
        if let Some(c) = &app.cluster {
            c.node.status.export_lag();
        }
        match app.builds.get() {
            Some(b) if b.state != crate::generations::build::BuildState::Switched => {
                let b = match app.log.head() {
                    Ok(h) => b.at_head(h.seq),
                    Err(_) => b,
                };
                m.generation_build_applied_seq.set(b.applied_seq.0 as i64);
                m.generation_build_lag_events.set(b.lag_events as i64);
                m.generation_build_errors.set(b.errors as i64);
            }
            _ => {
                m.generation_build_applied_seq.set(0);
                m.generation_build_lag_events.set(0);
                m.generation_build_errors.set(0);
            }
        }
        m.writer_up
            .set(i64::from(app.writer.health().failure().is_none()));
        let (blobs, bytes) = app.cas.totals();
        m.artifacts.set(blobs as i64);
        m.artifact_bytes.set(bytes as i64);
        m.store_disk_bytes.set(monitor.disk_bytes() as i64);
        m.metrics_renders.inc();
        m.render()
    })
    .await?;
    Ok(bytes::Bytes::from(text))
}

fn metrics_text(text: bytes::Bytes) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// `GET /v1/log/verification`: the background chain verifier's last result.
pub async fn verification(
    State(app): State<AppState>,
) -> Result<Json<crate::wire::ChainVerification>, ApiError> {
    match &app.monitor.verifier {
        Some(v) => Ok(Json(v.get())),
        None => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the background chain verifier is not running",
        )),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupRequest {
    /// An absolute directory on the server's filesystem, new or empty.
    to: std::path::PathBuf,
}

/// `POST /v1/admin/backup` `{"to": "/abs/dir"}` (admin): a consistent online
/// backup of the store as of one snapshot, verified, with its manifest.
pub async fn backup(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<crate::backup::Manifest>, ApiError> {
    let bytes =
        super::ingest::read_json_body(&headers, body, super::ingest::BodyLimit::SMALL).await?;
    let req: BackupRequest =
        super::ingest::parse_json_body(&bytes, "{\"to\": \"<absolute directory>\"}")?;
    // Control characters (a newline, NUL) in a path are never meant, and
    // would forge lines where the path is logged.
    let controls = req
        .to
        .to_str()
        .is_none_or(|p| p.chars().any(char::is_control));
    if !req.to.is_absolute() || controls {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            format!(
                "`to` must be an absolute directory on the server's filesystem, without \
                 control characters, got {:?}",
                req.to
            ),
        ));
    }
    super::blocking(move || {
        crate::files::outside_data_dir(&req.to, &app.monitor.data_dir, "a backup").map_err(
            |e| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_body",
                    format!("{e:#}"),
                )
            },
        )?;
        let Ok(_one) = app.monitor.backup_running.try_lock() else {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "backup_running",
                "another backup is running; retry when it has finished",
            ));
        };
        let started = Instant::now();
        // Postgres mode: this node's artifact store is a cache of the shared
        // one; what it lacks is fetched first (checked), so the backup holds
        // every artifact whichever node takes it.
        let fetched = app.cas.fetch_missing().map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "backup_failed",
                format!("the backup could not fetch the shared artifacts: {e}"),
            )
        })?;
        if fetched > 0 {
            tracing::info!(
                fetched,
                "fetched the artifacts this node lacked for the backup"
            );
        }
        let live = app.live.get();
        let transparency = app.transparency.clone();
        let log = app.log.clone();
        let sign = move |seq: crate::seq::Seq| -> anyhow::Result<String> {
            Ok(transparency.checkpoint_at(&log.view(), Some(seq.0))?)
        };
        // A backup runs to its end (its checks included) even if the
        // admin's client goes away: it is not cancelled with its request.
        let m = crate::cancel::uncancellable(|| {
            crate::backup::backup(
                &app.monitor.db,
                &app.log,
                &live.graph,
                Some(live.fingerprint),
                &req.to,
                Some(&sign),
            )
        })
        .map_err(|e| {
            tracing::error!(to = ?req.to, "backup failed: {e:#}");
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "backup_failed",
                format!("the backup to {} failed: {e:#}", req.to.display()),
            )
        })?;
        tracing::info!(
            to = ?req.to,
            seq = m.seq.0,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "backup written and verified"
        );
        Ok(Json(m))
    })
    .await
}
