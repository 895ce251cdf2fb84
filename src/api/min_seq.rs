//! `?min_seq=N[&timeout_ms=T]` on every read route: the request waits
//! (bounded) until the writer and every async projector of the live
//! generation have applied seq N, then is answered as usual; after the bound
//! it gets 503 `not_caught_up` with the seq applied so far. The wait itself
//! is [`AppState::wait_for_applied`], the one place that knows what
//! "applied" means.

use super::error::ApiError;
use super::{AppState, Params};
use crate::seq::Seq;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Duration;

/// The wait when `timeout_ms` is not given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest wait a request may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30);

/// Why [`AppState::wait_for_applied`] gave up: the seq applied when it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotCaughtUp {
    /// The seq every projector had applied (writer and async projectors).
    pub applied: Seq,
    /// The log's head (the writer's applied seq).
    pub head: Seq,
}

impl AppState {
    /// Waits until the writer and every async projector of the live
    /// generation have applied `seq` (at most `timeout`). Wakes on the
    /// writer's commits and the follower's; the live generation is looked at
    /// again on every wake (a switch changes who must have applied it).
    pub async fn wait_for_applied(&self, seq: Seq, timeout: Duration) -> Result<(), NotCaughtUp> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut head_rx = self.writer.head_watch();
        let mut async_rx = self.follow.watch();
        loop {
            let head = *head_rx.borrow_and_update();
            async_rx.borrow_and_update();
            let applied = self.follow.applied(&self.live.get(), head);
            if applied >= seq {
                return Ok(());
            }
            tokio::select! {
                r = head_rx.changed() => if r.is_err() {
                    // The writer is gone (shutdown): nothing more will apply.
                    tokio::time::sleep_until(deadline).await;
                },
                _ = async_rx.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(NotCaughtUp { applied, head });
                }
            }
        }
    }
}

/// The middleware: without `min_seq`, nothing; with it, the wait.
pub async fn wait(State(app): State<AppState>, req: Request, next: Next) -> Response {
    // A query without it is left to the route (whatever it makes of it).
    if !req.uri().query().is_some_and(|q| q.contains("min_seq")) {
        return next.run(req).await;
    }
    let params = match Params::from_query(req.uri().query()) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if params.str("min_seq").is_none() {
        return next.run(req).await;
    }
    let parsed = params.int("min_seq", 0, 0, i64::MAX as u64).and_then(|n| {
        let ms = params.int(
            "timeout_ms",
            DEFAULT_TIMEOUT.as_millis() as u64,
            0,
            MAX_TIMEOUT.as_millis() as u64,
        )?;
        Ok((Seq(n), Duration::from_millis(ms)))
    });
    let (seq, timeout) = match parsed {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    // Counted down by a guard: the wait's future is dropped, not finished,
    // when the request timeout (LEVIATHAN_REQUEST_TIMEOUT_SECS) ends it first.
    let waiting = crate::metrics::GaugeHold::new(&app.metrics.min_seq_waiting);
    let waited = app.wait_for_applied(seq, timeout).await;
    drop(waiting);
    match waited {
        Ok(()) => next.run(req).await,
        Err(NotCaughtUp { applied, head }) => {
            let mut resp = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_caught_up",
                format!(
                    "seq {seq} is not applied by every projector yet (applied: {applied}, log \
                     head: {head}) after waiting {} ms; retry, or ask for a longer \
                     timeout_ms (at most {})",
                    timeout.as_millis(),
                    MAX_TIMEOUT.as_millis()
                ),
            )
            .with_details(serde_json::json!({
                "min_seq": seq.0,
                "applied_seq": applied.0,
                "log_head_seq": head.0,
                "timeout_ms": timeout.as_millis() as u64,
            }))
            .into_response();
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            resp
        }
    }
}
