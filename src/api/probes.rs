//! Probes for orchestrators, without authentication: `/livez` (the process
//! answers; `/healthz` is its alias for old clients) and `/readyz` (the server
//! can do its work: the store is open, the projectors are loaded — both hold
//! once it listens — and the writer has not stopped on a storage failure; a
//! PostgreSQL replica must also agree with the writer and not lag it by more
//! than `LEVIATHAN_MAX_REPLICA_LAG_SECS`, crate::pg::lag; a PostgreSQL writer
//! must still hold its lease by its own clock, crate::pg::LeaseClock, and
//! not have had its last append refused within the last 10 s).

use super::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// `GET /livez`, `GET /healthz`: no checks, so that a busy or degraded server
/// is not restarted for being slow.
pub async fn live() -> Json<crate::wire::Health> {
    Json(crate::wire::Health {
        status: "ok".into(),
    })
}

/// `GET /readyz`: 200 when ready, else 503 with the reason in the API's error
/// shape, so a load balancer stops sending ingest to a server that cannot
/// store it (reads keep working there; see docs/RUNBOOK.md).
pub async fn ready(State(app): State<AppState>) -> Response {
    if let Some(resp) = replica_unready(&app) {
        return resp;
    }
    let health = app.writer.health();
    if let Some(f) = health.failure().cloned().or_else(|| health.lease_lost()) {
        return unready(&f, json!({}));
    }
    if let Some(failing) = health.failing_appends() {
        let since = failing.at.elapsed().as_secs_f64();
        let f = crate::writer::StorageFailure {
            cause: crate::writer::POSTGRES_APPEND_FAILING,
            message: format!(
                "the last {} append(s) to PostgreSQL failed, the last {since:.1} s ago: {}",
                failing.count, failing.last.message
            ),
        };
        return unready(
            &f,
            json!({"failed_appends": failing.count, "last_failure_secs": since}),
        );
    }
    Json(crate::wire::Health {
        status: "ready".into(),
    })
    .into_response()
}

/// 503 `not_ready` with `f`'s cause and message (and `extra` details).
fn unready(f: &crate::writer::StorageFailure, extra: serde_json::Value) -> Response {
    let mut details = json!({"cause": f.cause, "reason": f.message});
    if let (Some(d), serde_json::Value::Object(more)) = (details.as_object_mut(), extra) {
        d.extend(more);
    }
    super::error::ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "not_ready",
        format!("not ready: {f}"),
    )
    .with_details(details)
    .into_response()
}

/// A replica that must leave the Service: it found its graph is not the
/// writer's, or it lags past `LEVIATHAN_MAX_REPLICA_LAG_SECS`.
fn replica_unready(app: &AppState) -> Option<Response> {
    let cluster = app.cluster.as_ref().filter(|_| app.writer.is_replica())?;
    let unready = |cause: &str, message: String, extra: serde_json::Value| {
        let mut details = json!({"cause": cause, "reason": message});
        if let (Some(d), serde_json::Value::Object(more)) = (details.as_object_mut(), extra) {
            d.extend(more);
        }
        super::error::ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            format!("not ready: {message}"),
        )
        .with_details(details)
        .into_response()
    };
    if let Some(reason) = cluster.disagreement.get() {
        return Some(unready("replica_disagrees", reason.to_string(), json!({})));
    }
    let (lag, max) = cluster.node.status.lagging()?;
    Some(unready(
        "replica_lagging",
        format!(
            "this replica lags the PostgreSQL log by {:.1} s ({} seqs), more than \
             LEVIATHAN_MAX_REPLICA_LAG_SECS={}",
            lag.seconds,
            lag.seqs,
            max.as_secs_f64()
        ),
        json!({"lag_secs": lag.seconds, "lag_seqs": lag.seqs, "max_lag_secs": max.as_secs_f64()}),
    ))
}
