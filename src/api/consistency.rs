//! Which seq an answer reflects: every read answers with `X-Leviathan-Seq`,
//! the seq every projector of the live set had applied when this node took
//! the request (after any `?min_seq` wait, api/min_seq.rs): the log head, or
//! the async lane's applied seq when it is behind. The answer reflects at
//! least that seq. A
//! replica that found its graph is not the writer's (crate::pg::members)
//! answers every read but `GET /v1/cluster` 503 `replica_disagrees`.

use super::error::ApiError;
use super::AppState;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The answer's seq header.
pub const SEQ_HEADER: HeaderName = HeaderName::from_static("x-leviathan-seq");

/// The read routes' layer.
pub async fn read_at(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(reason) = state
        .cluster
        .as_ref()
        .and_then(|c| c.disagreement.get())
        .filter(|_| req.uri().path() != "/v1/cluster")
    {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "replica_disagrees",
            reason.to_string(),
        )
        .into_response();
    }
    // Not the writer's head alone: with async projectors the graph holds
    // their nodes only up to the lane's applied seq.
    let head = *state.writer.head_watch().borrow();
    let applied = state.follow.applied(&state.live.get(), head);
    let mut resp = next.run(req).await;
    resp.headers_mut()
        .insert(SEQ_HEADER, HeaderValue::from(applied.0));
    resp
}
