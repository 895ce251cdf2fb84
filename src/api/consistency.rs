//! Read-your-writes across nodes: every read answers with `X-Leviathan-Seq`,
//! the log head this node had applied when it took the request (the answer
//! reflects at least that seq), and `?min_seq=N` on a read waits, at most
//! [`MIN_SEQ_WAIT`], until this node has applied seq N; past it the answer is
//! 503 `not_caught_up` (a replica that lags; retry, or read from the writer).
//! A client that wrote through the writer passes the `last_seq` it got back.

use super::error::ApiError;
use super::AppState;
use crate::seq::Seq;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Duration;

/// The answer's seq header.
pub const SEQ_HEADER: HeaderName = HeaderName::from_static("x-leviathan-seq");

/// Longest a read waits for `min_seq`.
pub const MIN_SEQ_WAIT: Duration = Duration::from_secs(10);

impl AppState {
    /// Waits until this node has applied `seq` (its writer committed it, or
    /// its replica loop applied it), at most `timeout`. `Ok(applied)` once it
    /// has, `Err(applied)` at the timeout.
    pub async fn wait_for_applied(&self, seq: Seq, timeout: Duration) -> Result<Seq, Seq> {
        let mut head = self.writer.head_watch();
        let reached = tokio::time::timeout(timeout, head.wait_for(|h| *h >= seq))
            .await
            .map(|r| r.map(|h| *h));
        match reached {
            Ok(Ok(applied)) => Ok(applied),
            // Timed out, or the writer is gone (nothing more will be applied).
            _ => Err(*head.borrow()),
        }
    }
}

/// The read routes' layer: `?min_seq`, then `X-Leviathan-Seq`.
pub async fn read_at(State(state): State<AppState>, req: Request, next: Next) -> Response {
    // A replica that found its graph is not the writer's serves no reads
    // (crate::pg::members); `GET /v1/cluster` still answers, to show why.
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
    // Only a query that names min_seq is parsed here (the route parses the rest).
    let query = req.uri().query().filter(|q| q.contains("min_seq"));
    let params = match super::Params::from_query(query) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let applied = if params.str("min_seq").is_some() {
        let min = match params.int("min_seq", 0, 0, i64::MAX as u64) {
            Ok(m) => Seq(m),
            Err(e) => return e.into_response(),
        };
        match state.wait_for_applied(min, MIN_SEQ_WAIT).await {
            Ok(applied) => applied,
            Err(applied) => {
                let mut resp = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_caught_up",
                    format!(
                        "this node has applied the log up to seq {} and did not reach min_seq {} \
                         within {} s; retry, or read from the writer",
                        applied.0,
                        min.0,
                        MIN_SEQ_WAIT.as_secs()
                    ),
                )
                .with_details(serde_json::json!({"applied_seq": applied.0, "min_seq": min.0}))
                .into_response();
                resp.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    HeaderValue::from_static("1"),
                );
                resp.headers_mut()
                    .insert(SEQ_HEADER, HeaderValue::from(applied.0));
                return resp;
            }
        }
    } else {
        *state.writer.head_watch().borrow()
    };
    let mut resp = next.run(req).await;
    resp.headers_mut()
        .insert(SEQ_HEADER, HeaderValue::from(applied.0));
    resp
}
