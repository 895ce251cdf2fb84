//! The edge of the HTTP service: request ids, the request log, panics turned
//! into JSON 500s, every error answer in the JSON shape, and the in-flight and
//! time limits of v1 requests (503 with `Retry-After` when saturated).

use super::error::ApiError;
use crate::tokens::Principal;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tracing::Instrument;

/// The header that carries a request's id, in both directions.
pub const REQUEST_ID: &str = "x-request-id";

/// The id of a request, in its extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

/// An incoming id is kept when it is 1 to 128 of `A-Z a-z 0-9 - _ . :`.
fn well_formed(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

const INGEST_ROUTE: &str = "/v1/events/ingest";

/// Where [`matched_route`] leaves the route template for [`edge`].
#[derive(Debug, Clone, Default)]
struct RouteSlot(Arc<OnceLock<axum::extract::MatchedPath>>);

/// A route layer of every route: notes the matched route template
/// (`/v1/attempts/{id}`) for the request's metrics. A request no route
/// matches never passes here and is counted as `unmatched`.
pub async fn matched_route(req: Request, next: Next) -> Response {
    if let (Some(slot), Some(path)) = (
        req.extensions().get::<RouteSlot>(),
        req.extensions().get::<axum::extract::MatchedPath>(),
    ) {
        let _ = slot.0.set(path.clone());
    }
    next.run(req).await
}

/// The outermost layer: gives the request an id (echoed in `x-request-id`)
/// and a span carrying it (so every log line written while handling the
/// request names it), turns a panic below into a JSON 500 that names the id,
/// rewrites error answers that are not JSON (axum's extractor rejections are
/// text) into the JSON shape, logs one line per request with the token's name
/// (never the token), and counts the request in the HTTP metrics by route
/// template.
pub async fn edge(
    State(metrics): State<crate::metrics::Metrics>,
    mut req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id: Arc<str> = match req.headers().get(REQUEST_ID) {
        Some(v) if well_formed(v.as_bytes()) => {
            String::from_utf8_lossy(v.as_bytes()).into_owned().into()
        }
        _ => uuid::Uuid::new_v4().simple().to_string().into(),
    };
    req.extensions_mut().insert(RequestId(id.clone()));
    let route = RouteSlot::default();
    req.extensions_mut().insert(route.clone());
    let span = tracing::info_span!("request", request_id = %id);
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let mut resp = match std::panic::AssertUnwindSafe(next.run(req).instrument(span.clone()))
        .catch_unwind()
        .await
    {
        Ok(resp) => resp,
        Err(panic) => {
            let what = crate::panics::message(panic.as_ref());
            span.in_scope(|| tracing::error!(request_id = %id, %method, %path, panic = %what, "a request handler panicked"));
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!(
                    "the server failed while handling this request (request id {id}); the request may \
                     not have taken effect, and the server is still running"
                ),
            )
            .with_details(serde_json::json!({"request_id": &*id}))
            .into_response()
        }
    };
    if resp.status().as_u16() >= 400 && method != Method::HEAD && !is_json(&resp) {
        resp = to_json_error(resp).await;
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    let token = resp.extensions().get::<Principal>().map(|p| p.name.clone());
    let seconds = started.elapsed().as_secs_f64();
    let status = resp.status().as_u16();
    let route = route
        .0
        .get()
        .map_or("unmatched", axum::extract::MatchedPath::as_str);
    metrics.http(route, method.as_str(), status, seconds);
    // Every ingest outcome is counted here: an accepted bundle by what its
    // handler left, a refusal by its error code, whichever layer made it
    // (overloaded, timeout, auth, the handler's own). A replica's forwarded
    // answer carries neither: the writer counted it.
    if route == INGEST_ROUTE {
        let ext = resp.extensions();
        if let Some(o) = ext.get::<super::ingest::IngestOutcome>() {
            metrics.ingest(o.outcome, seconds, o.duplicates);
        } else if let Some(code) = ext.get::<super::error::ErrorCode>() {
            metrics.ingest(code.0, seconds, 0);
        }
    }
    span.in_scope(|| {
        tracing::info!(
            target: "leviathan::request",
            request_id = %id,
            %method,
            %path,
            status,
            ms = seconds * 1000.0,
            token = %token.as_deref().unwrap_or("-"),
            "request"
        )
    });
    resp
}

fn is_json(resp: &Response) -> bool {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let mime = ct.split(';').next().unwrap_or("").trim();
            mime.eq_ignore_ascii_case("application/json")
        })
}

/// The stable code for an error status whose body we did not write.
fn code_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        413 => "too_large",
        414 => "uri_too_long",
        415 => "unsupported_media_type",
        422 => "unprocessable",
        431 => "headers_too_large",
        503 => "unavailable",
        s if s >= 500 => "internal",
        _ => "error",
    }
}

/// Wraps a non-JSON error answer (e.g. axum's `400 text/plain` for a path
/// segment that is not UTF-8) in `{"error": {"code", "message"}}`, keeping its
/// status and its text as the message.
async fn to_json_error(resp: Response) -> Response {
    let (parts, body) = resp.into_parts();
    let text = match axum::body::to_bytes(body, 16 * 1024).await {
        Ok(b) if !b.is_empty() => String::from_utf8_lossy(&b).into_owned(),
        _ => parts
            .status
            .canonical_reason()
            .unwrap_or("error")
            .to_string(),
    };
    let mut out = ApiError::new(parts.status, code_for(parts.status), text).into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    *out.extensions_mut() = parts.extensions;
    out
}

/// The in-flight and time limits of v1 requests.
#[derive(Debug, Clone)]
pub struct RequestLimits {
    pub inflight: Arc<Semaphore>,
    pub max_inflight: usize,
    pub timeout: Duration,
}

impl RequestLimits {
    pub fn new(max_inflight: usize, timeout: Duration) -> RequestLimits {
        RequestLimits {
            inflight: Arc::new(Semaphore::new(max_inflight)),
            max_inflight,
            timeout,
        }
    }
}

/// 503 `overloaded` with `Retry-After: 1` when `max_inflight` requests are
/// already being handled; 503 `timeout` when a request (its body included)
/// takes longer than the timeout to get its answer. A permit is held until the
/// response's head is ready (a streamed body does not hold one).
pub async fn limit(State(l): State<RequestLimits>, req: Request, next: Next) -> Response {
    let Ok(_permit) = l.inflight.clone().try_acquire_owned() else {
        return retry_later(
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                format!(
                    "the server is handling {} requests already (LEVIATHAN_MAX_INFLIGHT_REQUESTS); retry shortly",
                    l.max_inflight
                ),
            )
            .with_details(serde_json::json!({"setting": "LEVIATHAN_MAX_INFLIGHT_REQUESTS", "limit": l.max_inflight})),
        );
    };
    match tokio::time::timeout(l.timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => retry_later(
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!(
                    "the request did not complete within {} s (LEVIATHAN_REQUEST_TIMEOUT_SECS). An ingest \
                     may or may not have been stored: retry it with the same bundle_id (ingest is idempotent)",
                    l.timeout.as_secs()
                ),
            )
            .with_details(serde_json::json!({"setting": "LEVIATHAN_REQUEST_TIMEOUT_SECS", "limit_secs": l.timeout.as_secs()})),
        ),
    }
}

/// Whether a request on a connection beyond `LEVIATHAN_MAX_CONNECTIONS` is
/// still served: the probes and `/metrics` (no token, cheap), so that a
/// connection flood neither gets a live server restarted nor blinds its
/// monitoring.
pub fn served_beyond_connection_cap(path: &str) -> bool {
    matches!(path, "/livez" | "/healthz" | "/readyz" | "/metrics")
}

/// The answer to any other request on a connection beyond
/// `LEVIATHAN_MAX_CONNECTIONS`.
pub fn too_many_connections(max: usize) -> Response {
    let mut resp = retry_later(
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            format!("the server has {max} connections open already (LEVIATHAN_MAX_CONNECTIONS); retry shortly"),
        )
        .with_details(serde_json::json!({"setting": "LEVIATHAN_MAX_CONNECTIONS", "limit": max})),
    );
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

fn retry_later(e: ApiError) -> Response {
    let mut resp = e.into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// `GET /v1/_test/panic`, served only with `LEVIATHAN_TEST_PANIC_ROUTE=1`.
pub async fn test_panic() -> Body {
    panic!("the test route panicked on purpose (LEVIATHAN_TEST_PANIC_ROUTE)")
}
