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
    // Answers are what their Content-Type says (never sniffed into HTML),
    // and a v1 answer (an authenticated view of the log) is not kept by
    // caches between the client and the server.
    let headers = resp.headers_mut();
    headers
        .entry(header::X_CONTENT_TYPE_OPTIONS)
        .or_insert(HeaderValue::from_static("nosniff"));
    if path.starts_with("/v1/") {
        headers
            .entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-store"));
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

/// The in-flight, time and answer-buffer limits of v1 requests.
#[derive(Debug, Clone)]
pub struct RequestLimits {
    pub inflight: Arc<Semaphore>,
    pub max_inflight: usize,
    pub timeout: Duration,
    /// KiB of large JSON answers not yet taken by their clients.
    answers: Arc<Semaphore>,
    max_answer_kib: usize,
}

/// A JSON answer this large or larger counts against
/// `LEVIATHAN_MAX_ANSWER_BUFFER_MB` until its client has taken it.
const LARGE_ANSWER: u64 = 256 * 1024;

/// The frames a large answer is handed to the connection in: hyper asks for
/// the next only once it has written most of the last, so the answer's
/// permit is released about when its bytes are gone.
const ANSWER_FRAME: usize = 64 * 1024;

impl RequestLimits {
    pub fn new(http: &crate::config::HttpSettings) -> RequestLimits {
        let max_answer_kib = http.max_answer_buffer_mb.saturating_mul(1024).max(1);
        RequestLimits {
            inflight: Arc::new(Semaphore::new(http.max_inflight_requests)),
            max_inflight: http.max_inflight_requests,
            timeout: http.request_timeout,
            answers: Arc::new(Semaphore::new(max_answer_kib.min(Semaphore::MAX_PERMITS))),
            max_answer_kib,
        }
    }

    /// `resp`, holding its share of the answer buffer until it has been
    /// sent, or a 503 when the buffer is full: clients that do not read their
    /// answers (or read them slowly) cannot pin more than
    /// `LEVIATHAN_MAX_ANSWER_BUFFER_MB` between them.
    fn buffered(&self, resp: Response) -> Response {
        let size = hyper::body::Body::size_hint(resp.body()).exact();
        let Some(size) = size.filter(|&n| n >= LARGE_ANSWER && is_json(&resp)) else {
            return resp;
        };
        let kib = usize::try_from(size.div_ceil(1024))
            .unwrap_or(usize::MAX)
            .min(self.max_answer_kib)
            .min(u32::MAX as usize) as u32;
        let Ok(permit) = self.answers.clone().try_acquire_many_owned(kib) else {
            let mb = self.max_answer_kib / 1024;
            return retry_later(
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    format!(
                        "the server holds {mb} MiB of answers that clients have not read yet \
                         (LEVIATHAN_MAX_ANSWER_BUFFER_MB); retry shortly"
                    ),
                )
                .with_details(
                    serde_json::json!({"setting": "LEVIATHAN_MAX_ANSWER_BUFFER_MB", "limit": mb}),
                ),
            );
        };
        let (parts, body) = resp.into_parts();
        Response::from_parts(
            parts,
            Body::new(HeldAnswer {
                body,
                rest: bytes::Bytes::new(),
                _permit: permit,
            }),
        )
    }
}

/// An answer body that holds its share of the answer buffer until it ends
/// (or its connection is dropped), handed over in [`ANSWER_FRAME`]s.
struct HeldAnswer {
    body: Body,
    /// What is left of the last data frame read from `body`.
    rest: bytes::Bytes,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl hyper::body::Body for HeldAnswer {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, axum::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        if this.rest.is_empty() {
            match std::pin::Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => this.rest = data,
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                other => return other,
            }
        }
        let n = this.rest.len().min(ANSWER_FRAME);
        Poll::Ready(Some(Ok(hyper::body::Frame::data(this.rest.split_to(n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        let mut hint = self.body.size_hint();
        let rest = self.rest.len() as u64;
        hint.set_lower(hint.lower() + rest);
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + rest);
        }
        hint
    }
}

/// The scanning-reads bulkhead: at most as many such reads at a time as it
/// has places, the rest waiting their turn (`api::blocking_scan`), each
/// counted in its gauges (`leviathan_scanning_reads_*`).
#[derive(Debug, Clone)]
pub struct Bulkhead {
    places: Arc<Semaphore>,
    running: prometheus_client::metrics::gauge::Gauge,
    waiting: prometheus_client::metrics::gauge::Gauge,
}

/// A place in a [`Bulkhead`], given back (and no longer counted as
/// running) when dropped.
pub struct Place {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _running: crate::metrics::GaugeHold,
}

impl Bulkhead {
    /// `places` places (`LEVIATHAN_MAX_SCANNING_READS`), or with 0 half this
    /// machine's cores (at least one place): on 2 cores, one scanning read
    /// at a time. Eight clients listing a target's attempts on a 3M-event
    /// store took both cores and cut ingest from ~18k to 1.7-5.1k events/s
    /// (docs/BENCHMARKS.md, session 39).
    pub fn new(places: usize, metrics: &crate::metrics::Metrics) -> Bulkhead {
        let places = if places == 0 {
            let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
            (cores / 2).max(1)
        } else {
            places.min(Semaphore::MAX_PERMITS)
        };
        metrics.scanning_read_places.set(places as i64);
        Bulkhead {
            places: Arc::new(Semaphore::new(places)),
            running: metrics.scanning_reads_running.clone(),
            waiting: metrics.scanning_reads_waiting.clone(),
        }
    }

    /// Waits for a place (counted as waiting meanwhile, also when the
    /// request is dropped while it waits).
    pub async fn enter(&self) -> Place {
        let waiting = crate::metrics::GaugeHold::new(&self.waiting);
        let permit = self
            .places
            .clone()
            .acquire_owned()
            .await
            .expect("the bulkhead's semaphore is never closed");
        drop(waiting);
        Place {
            _permit: permit,
            _running: crate::metrics::GaugeHold::new(&self.running),
        }
    }
}

/// What a v1 request's work on a blocking thread (`api::blocking`) takes
/// with it: the request's in-flight slot, held until that work ends even if
/// the request's future is dropped first, and its cancellation token.
#[derive(Debug, Clone)]
pub struct RequestWork {
    pub slot: Arc<tokio::sync::OwnedSemaphorePermit>,
    pub cancel: crate::cancel::Token,
}

tokio::task_local! {
    /// The v1 request being handled by this task ([`limit`] sets it).
    pub static REQUEST_WORK: RequestWork;
}

/// Cancels a request's token when its future is dropped: answered, timed
/// out, or abandoned by its client.
struct CancelOnDrop(crate::cancel::Token);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// 503 `overloaded` with `Retry-After: 1` when `max_inflight` requests are
/// already being handled; 503 `timeout` when a request (its body included)
/// takes longer than the timeout to get its answer. A permit is held until the
/// response's head is ready (a streamed body does not hold one) and until the
/// request's work on a blocking thread has ended, which stops early once the
/// request is dropped (`crate::cancel`): a client that gives up, or a
/// timeout, frees the slot only when the work it started has stopped. A
/// large JSON answer then holds its share of the answer buffer until it is
/// sent ([`RequestLimits::buffered`]).
pub async fn limit(State(l): State<RequestLimits>, req: Request, next: Next) -> Response {
    let Ok(permit) = l.inflight.clone().try_acquire_owned() else {
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
    let work = RequestWork {
        slot: Arc::new(permit),
        cancel: crate::cancel::Token::new(),
    };
    let _cancel_on_drop = CancelOnDrop(work.cancel.clone());
    let run = REQUEST_WORK.scope(work, next.run(req));
    match tokio::time::timeout(l.timeout, run).await {
        Ok(resp) => l.buffered(resp),
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

/// The route label of requests answered 503 on a connection beyond
/// `LEVIATHAN_MAX_CONNECTIONS` (they never reach the router).
pub const BEYOND_CONNECTION_CAP: &str = "beyond_connection_cap";

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

/// `GET /v1/_test/slow`, served only with `LEVIATHAN_TEST_PANIC_ROUTE=1`: a
/// read on a blocking thread that runs for 60 s unless its request is
/// cancelled (`crate::cancel`), and logs which; with `?scan`, in the
/// scanning-reads bulkhead (`api::blocking_scan`).
pub async fn test_slow(
    axum::extract::State(app): axum::extract::State<super::AppState>,
    axum::extract::RawQuery(q): axum::extract::RawQuery,
) -> Result<Body, ApiError> {
    let slow = || {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if let Err(c) = crate::cancel::check() {
                tracing::info!(
                    ms = started.elapsed().as_millis() as u64,
                    "the slow test read stopped: cancelled"
                );
                return Err(c.into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        tracing::info!("the slow test read ran to its end");
        Ok(Body::empty())
    };
    if q.as_deref() == Some("scan") {
        super::blocking_scan(&app.scans, slow).await
    } else {
        super::blocking(slow).await
    }
}
