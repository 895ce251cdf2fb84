//! Probes for orchestrators, without authentication: `/livez` (the process
//! answers; `/healthz` is its alias for old clients) and `/readyz` (the server
//! can do its work: the store is open, the projectors are loaded — both hold
//! once it listens — and the writer has not stopped on a storage failure).

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
    match app.writer.health().failure() {
        None => Json(crate::wire::Health {
            status: "ready".into(),
        })
        .into_response(),
        Some(f) => super::error::ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            format!("not ready: {f}"),
        )
        .with_details(json!({"cause": f.cause, "reason": f.message}))
        .into_response(),
    }
}
