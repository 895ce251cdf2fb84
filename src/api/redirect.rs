//! Event ingest sent to a replica (`LEVIATHAN_STORE=postgres`): 307 Temporary
//! Redirect to the leader's advertised URL (`LEVIATHAN_ADVERTISE_URL`, which
//! every node publishes in the members table), with the request's path and
//! query. A 307 keeps the method and the body, so a client that follows
//! redirects sends the same request to the writer; one Service over every
//! node can take ingest. When no leader (or no leader URL) is known the answer
//! is 503 `not_leader`, saying why. (Artifact uploads are not redirected:
//! any node commits them to PostgreSQL.) The replica never forwards the request
//! itself: it would hold the body and a connection for the writer's whole
//! round trip, and an acknowledgement would then depend on two hops.

use super::error::ApiError;
use super::AppState;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// The event ingest route's layer (after authentication: only a client allowed to
/// ingest learns where the writer is).
pub async fn to_leader(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(cluster) = state.cluster.as_ref().filter(|_| state.writer.is_replica()) else {
        return next.run(req).await;
    };
    let not_leader = |reason: String| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            crate::pg::NOT_LEADER,
            format!("this node is a replica and cannot take ingest: {reason}"),
        )
        .with_details(json!({"cause": crate::pg::NOT_LEADER, "reason": reason}))
        .into_response()
    };
    let leader = match cluster.node.status.leader() {
        None => {
            return not_leader(
                "no writer holds the PostgreSQL log's leadership now (a failover may be under \
                 way); retry shortly"
                    .into(),
            )
        }
        Some(l) if l.node_id == cluster.node_id => {
            return not_leader("this node is taking over as the writer; retry shortly".into())
        }
        Some(l) => l,
    };
    let Some(base) = leader.url else {
        return not_leader(format!(
            "the writer ({}) publishes no URL: set LEVIATHAN_ADVERTISE_URL on every node so \
             that replicas can redirect ingest to the writer",
            leader.node_id
        ));
    };
    let path = req
        .uri()
        .path_and_query()
        .map_or(req.uri().path(), |p| p.as_str());
    let location = format!("{base}{path}");
    let Ok(value) = HeaderValue::from_str(&location) else {
        return not_leader(format!(
            "the writer's advertised URL {base:?} does not make a valid Location"
        ));
    };
    let mut resp = (
        StatusCode::TEMPORARY_REDIRECT,
        Json(json!({
            "location": location,
            "leader": leader.node_id,
            "detail": "this node is a replica: ingest goes to the writer (307 keeps the method and body)",
        })),
    )
        .into_response();
    resp.headers_mut().insert(header::LOCATION, value);
    resp
}
