//! `GET /v1/events/stream`: the log as Server-Sent Events, as it is appended.
//!
//! Each SSE event has `id` = the event's seq and `data` = the event exactly as
//! `GET /v1/events` serves it (`wire::Event`). A stream starts after
//! `Last-Event-ID` (what a reconnecting client sends), else after `?after_seq=`,
//! else at the current head (only new events), and may be filtered by
//! `?type=` (exact, or `prefix.*`) and `?target=`.
//!
//! Nothing is held in memory for a client beyond its buffer: the writer
//! publishes the committed head seq after each commit (`Writer::head_watch`);
//! a stream wakes on it and reads the new events from the store by seq, at
//! most `LEVIATHAN_STREAM_BUFFER` events (and about 1 MiB) at a time, and only
//! when its client has taken the previous buffer. A client that leaves its
//! buffer untaken for `LEVIATHAN_STREAM_STALL_SECS` has fallen behind: its
//! next message is a final `lagged` event naming the seq to resume after, and
//! the stream ends. At most `LEVIATHAN_MAX_STREAMS` streams are open at once
//! (503 `too_many_streams` beyond). Idle streams get a heartbeat comment every
//! `LEVIATHAN_STREAM_HEARTBEAT_SECS`; at shutdown every stream ends, so that
//! graceful shutdown does not wait for them.

use super::error::ApiError;
use super::{blocking, AppState, Params};
use crate::config::StreamSettings;
use crate::log::record::StoredEvent;
use crate::log::Log;
use crate::seq::Seq;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

/// Bytes of events one buffer holds at most (a single larger event still goes alone).
const BUFFER_BYTES: usize = 1 << 20;
/// Records one store read looks at, matching or not (so that a filter that
/// matches rarely still lets heartbeats and shutdown through between reads).
const SCAN_MAX: usize = 4096;
/// Records decoded at a time.
const CHUNK: usize = 64;

/// The open streams: their cap, the head they wake on, and the shutdown switch.
#[derive(Clone)]
pub struct Streams {
    settings: StreamSettings,
    permits: Arc<Semaphore>,
    head: watch::Receiver<Seq>,
    closing: Arc<watch::Sender<bool>>,
}

impl Streams {
    /// `head` is the writer's published head (`Writer::head_watch`).
    pub fn new(settings: StreamSettings, head: watch::Receiver<Seq>) -> Streams {
        Streams {
            settings,
            permits: Arc::new(Semaphore::new(settings.max_streams)),
            head,
            closing: Arc::new(watch::channel(false).0),
        }
    }

    /// Ends every open stream and refuses new ones (at shutdown).
    pub fn close(&self) {
        self.closing.send_replace(true);
        self.permits.close();
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.settings.max_streams - self.permits.available_permits()
    }
}

/// Which events a stream carries.
#[derive(Debug, Clone)]
enum TypeFilter {
    Any,
    Exact(String),
    /// `prefix.*`: types starting with `prefix.` (the dot kept).
    Prefix(String),
}

impl TypeFilter {
    fn parse(raw: Option<&str>) -> Result<TypeFilter, ApiError> {
        let Some(t) = raw else {
            return Ok(TypeFilter::Any);
        };
        if t == "*" {
            return Ok(TypeFilter::Any);
        }
        let bad = |why: &str| {
            ApiError::invalid_query(format!(
                "query parameter `type` must be an event type (`attempt.created`) or a prefix \
                 ending in `.*` (`attempt.*`); {why}, got {t:?}"
            ))
        };
        if let Some(prefix) = t.strip_suffix(".*") {
            if prefix.is_empty() || prefix.contains('*') {
                return Err(bad("the prefix is empty or has another `*`"));
            }
            // The prefix's segments are those of an event type (a type of
            // one segment is no type, but a prefix of one is).
            if crate::bundle::check_event_type(&format!("{prefix}.x")).is_err() {
                return Err(bad(
                    "the prefix is not dotted lowercase segments (a-z, 0-9, _, each starting \
                     with a letter)",
                ));
            }
            return Ok(TypeFilter::Prefix(format!("{prefix}.")));
        }
        if t.contains('*') {
            return Err(bad("`*` may only end it, as `.*`"));
        }
        // A type no event can have would stream nothing, silently.
        crate::bundle::check_event_type(t).map_err(|why| bad(&why))?;
        Ok(TypeFilter::Exact(t.to_string()))
    }

    fn matches(&self, event_type: &str) -> bool {
        match self {
            TypeFilter::Any => true,
            TypeFilter::Exact(t) => event_type == t,
            TypeFilter::Prefix(p) => event_type.starts_with(p.as_str()),
        }
    }
}

#[derive(Debug, Clone)]
struct Filter {
    event_type: TypeFilter,
    target: Option<String>,
}

impl Filter {
    fn matches(&self, e: &crate::log::record::StoredEvent) -> bool {
        self.event_type.matches(&e.event_type)
            && self.target.as_ref().is_none_or(|t| &e.target == t)
    }
}

/// `Last-Event-ID`, when sent: a seq (what this stream's ids are).
fn last_event_id(headers: &HeaderMap) -> Result<Option<Seq>, ApiError> {
    let Some(v) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let s = v.to_str().unwrap_or("").trim();
    if s.is_empty() {
        return Ok(None);
    }
    s.parse::<u64>()
        .ok()
        .filter(|n| *n <= u64::MAX >> 1)
        .map(|n| Some(Seq(n)))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_last_event_id",
                format!(
                    "the Last-Event-ID header must be the seq of the last event received (an integer), got {s:?}"
                ),
            )
        })
}

/// The JSON with U+0085, U+2028 and U+2029 written as `\u` escapes (the same
/// JSON value): SSE splits lines only at CR and LF, but common clients (Python's
/// `str.splitlines`, `requests.iter_lines`) also split at these, and cut an
/// event whose id or payload holds one. They can only occur inside JSON
/// strings, where the escape means the same character.
fn line_safe(json: String) -> String {
    if !json.contains(['\u{85}', '\u{2028}', '\u{2029}']) {
        return json;
    }
    json.replace('\u{85}', "\\u0085")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// How long a resume point beyond the head waits for the head to reach it
/// (a PostgreSQL replica behind the node whose events the client saw).
const BEYOND_HEAD_WAIT: Duration = Duration::from_secs(2);

/// The refusal of a resume point this log has not reached.
fn beyond_head(from_header: bool, after: Seq, head: Seq) -> ApiError {
    let (status, code, what) = if from_header {
        (
            StatusCode::BAD_REQUEST,
            "invalid_last_event_id",
            "Last-Event-ID",
        )
    } else {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_query",
            "after_seq",
        )
    };
    ApiError::new(
        status,
        code,
        format!(
            "{what} {after} is beyond this log's head (seq {head}): this server never sent that \
             event (a store restored from an older backup, or another server's log?), and \
             resuming there would skip every event up to it. Reconcile from \
             GET /v1/events?after_seq={head} (or earlier), then reconnect from a seq you hold"
        ),
    )
    .with_details(serde_json::json!({ "after_seq": after.0, "head_seq": head.0 }))
}

/// `GET /v1/events/stream?after_seq=&type=&target=`.
pub async fn stream(
    State(app): State<AppState>,
    axum::Extension(token): axum::Extension<super::auth::TokenDigest>,
    write_timeout: Option<axum::Extension<super::write_timeout::WriteTimeout>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::from_query(q.as_deref())?;
    let filter = Filter {
        event_type: TypeFilter::parse(p.str("type"))?,
        target: p.str("target").map(str::to_string),
    };
    let resume = last_event_id(&headers)?;
    let after_param = match p.str("after_seq") {
        Some(_) => Some(Seq(p.int("after_seq", 0, 0, u64::MAX >> 1)?)),
        None => None,
    };
    let streams = app.streams.clone();
    let settings = streams.settings;
    let Ok(permit) = streams.permits.clone().try_acquire_owned() else {
        let mut resp = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            format!(
                "{} event streams are open already (LEVIATHAN_MAX_STREAMS); retry shortly, or page \
                 GET /v1/events?after_seq= instead",
                settings.max_streams
            ),
        )
        .with_details(
            serde_json::json!({"setting": "LEVIATHAN_MAX_STREAMS", "limit": settings.max_streams}),
        )
        .into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return Ok(resp);
    };
    let mut head = streams.head.clone();
    let mut head_now = *head.borrow_and_update();
    // Last-Event-ID wins: a browser reconnecting sends it with the original URL.
    let after = resume.or(after_param).unwrap_or(head_now);
    if after > head_now {
        // A replica a moment behind the node that sent the id catches up;
        // past that, this log never had the seq (a store restored from an
        // older backup, another store): resuming there would skip, without
        // a word, every event this log appends up to it.
        let reached = tokio::time::timeout(BEYOND_HEAD_WAIT, head.wait_for(|h| *h >= after))
            .await
            .ok()
            .and_then(Result::ok)
            .map(|h| *h);
        match reached {
            Some(h) => head_now = h,
            None => return Err(beyond_head(resume.is_some(), after, *head.borrow())),
        }
    }
    let cursor = Cursor {
        log: app.log.clone(),
        filter: Arc::new(filter),
        after,
        last_sent: after,
        page: VecDeque::new(),
        page_at: Instant::now(),
        idle: true,
        settings,
        head,
        closing: streams.closing.subscribe(),
        token: (app.tokens.clone(), token.0),
        reloads: app.tokens.reloads(),
        recheck: false,
        opened: Some(head_now),
        done: false,
        _permit: permit,
        // The stall limit comes before the connection's write timeout.
        _write_timeout: write_timeout.map(|t| t.0.lengthen(settings.stall)),
    };
    let events = futures_util::stream::unfold(cursor, next);
    let mut resp = Sse::new(events)
        .keep_alive(
            KeepAlive::new()
                .interval(settings.heartbeat)
                .text("heartbeat"),
        )
        .into_response();
    // SSE is UTF-8 by definition, but clients that read the charset from the
    // header (Python's requests) would decode it as Latin-1 without it.
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    Ok(resp)
}

/// One stream's position and buffer.
struct Cursor {
    log: Log,
    filter: Arc<Filter>,
    /// The last seq read from the store (matching or not).
    after: Seq,
    /// The last seq sent to the client (what it resumes after).
    last_sent: Seq,
    /// Events read but not yet taken by the client: (seq, JSON).
    page: VecDeque<(Seq, String)>,
    /// When this stream last handed an event to the HTTP layer.
    page_at: Instant,
    /// Whether the stream last waited for new events (so the gap since
    /// `page_at` is the log's silence, not a client that does not read).
    idle: bool,
    settings: StreamSettings,
    head: watch::Receiver<Seq>,
    closing: watch::Receiver<bool>,
    /// The token set and the digest of this stream's token: checked again at
    /// every reload (`reloads`), so a revoked token's stream ends at once.
    token: (crate::tokens::Tokens, crate::digest::Sha256),
    reloads: watch::Receiver<u64>,
    /// A reload was seen while waiting: check the token before anything else.
    recheck: bool,
    /// Set until the opening comment is sent: the head when the stream opened.
    opened: Option<Seq>,
    done: bool,
    _permit: OwnedSemaphorePermit,
    /// The connection's write timeout, lengthened by the stall limit while
    /// the stream runs (`api::write_timeout`).
    _write_timeout: Option<super::write_timeout::Lengthened>,
}

async fn next(mut c: Cursor) -> Option<(Result<Event, Infallible>, Cursor)> {
    if c.done {
        return None;
    }
    if let Some(head) = c.opened.take() {
        let hello = Event::default()
            .retry(std::time::Duration::from_secs(1))
            .comment(format!("stream open after_seq={} head_seq={head}", c.after));
        return Some((Ok(hello), c));
    }
    // The HTTP layer asks for the next event as soon as the connection can
    // take it: a long gap since the last event handed out, while this stream
    // was not waiting for new events, is a client that did not read.
    let stalled = !c.idle && c.page_at.elapsed() > c.settings.stall;
    loop {
        if *c.closing.borrow() {
            return None;
        }
        if std::mem::take(&mut c.recheck) || c.reloads.has_changed().unwrap_or(false) {
            c.reloads.borrow_and_update();
            let (tokens, digest) = &c.token;
            let still = tokens
                .current()
                .lookup(digest.as_bytes())
                .is_some_and(|p| p.roles.contains(crate::tokens::Role::Read));
            if !still {
                c.done = true;
                c.page.clear();
                let body = serde_json::json!({
                    "code": "unauthorized",
                    "message": "this stream's token was revoked or lost the read role (the \
                                tokens file was reloaded): the stream is closed",
                    "last_seq": c.last_sent,
                });
                return Some((
                    Ok(Event::default().event("error").data(body.to_string())),
                    c,
                ));
            }
        }
        if stalled && (!c.page.is_empty() || c.after < *c.head.borrow()) {
            // The client did not take its events in time: it has fallen behind.
            c.done = true;
            c.page.clear();
            let body = serde_json::json!({
                "code": "lagged",
                "message": format!(
                    "this client fell behind: it did not take its buffer of events within {} s \
                     (LEVIATHAN_STREAM_STALL_SECS), so the stream is closed; reconnect with \
                     Last-Event-ID: {} (or after_seq={}) to resume without loss",
                    c.settings.stall.as_secs_f64(), c.last_sent, c.last_sent
                ),
                "last_seq": c.last_sent,
                "head_seq": *c.head.borrow(),
            });
            return Some((
                Ok(Event::default().event("lagged").data(body.to_string())),
                c,
            ));
        }
        if let Some((seq, json)) = c.page.pop_front() {
            c.page_at = Instant::now();
            c.idle = false;
            c.last_sent = seq;
            return Some((Ok(Event::default().id(seq.0.to_string()).data(json)), c));
        }
        let head = *c.head.borrow_and_update();
        if c.after < head {
            let (log, filter, after) = (c.log.clone(), c.filter.clone(), c.after);
            let want = c.settings.buffer;
            let read = blocking(move || read_page(&log, &filter, after, head, want)).await;
            match read {
                Ok((page, scanned_to)) => {
                    c.after = scanned_to;
                    c.page = page;
                }
                Err(e) => {
                    tracing::error!(error = %e.message, "an event stream could not read the log; it ends");
                    c.done = true;
                    let body = serde_json::json!({"code": e.code, "message": e.message, "last_seq": c.last_sent});
                    return Some((
                        Ok(Event::default().event("error").data(body.to_string())),
                        c,
                    ));
                }
            }
            continue;
        }
        c.idle = true;
        tokio::select! {
            changed = c.head.changed() => {
                if changed.is_err() {
                    return None; // the writer is gone
                }
            }
            _ = c.closing.changed() => return None,
            // A reload (`changed` marks it seen): the loop checks the token again.
            _ = c.reloads.changed() => c.recheck = true,
        }
    }
}

/// Up to `want` matching events after `after` (and about `BUFFER_BYTES`),
/// looking at no more than `SCAN_MAX` records, none past `head`; with the last
/// seq looked at.
fn read_page(
    log: &Log,
    filter: &Filter,
    after: Seq,
    head: Seq,
    want: usize,
) -> Result<(VecDeque<(Seq, String)>, Seq), ApiError> {
    let view = log.view();
    let mut out = VecDeque::new();
    let mut bytes = 0usize;
    let mut last = after;
    let mut scanned = 0usize;
    let push = |out: &mut VecDeque<(Seq, String)>, bytes: &mut usize, e: StoredEvent| {
        let seq = e.seq;
        let json = line_safe(
            serde_json::to_string(&crate::wire::Event::from(e))
                .map_err(|e| ApiError::internal("serializing an event", e))?,
        );
        *bytes += json.len();
        out.push_back((seq, json));
        Ok::<_, ApiError>(())
    };
    // A type filter reads the log's type index: the events of its types
    // only, not every record after `after` (a stream of a rare type from
    // seq 0 walked the whole log).
    let types = match &filter.event_type {
        TypeFilter::Any => None,
        TypeFilter::Exact(t) => Some(vec![t.clone()]),
        TypeFilter::Prefix(p) => Some(log.event_types_with_prefix_at(&view, p)?),
    };
    if let Some(types) = types {
        let mut seqs = Log::merge_seqs(
            types
                .iter()
                .map(|t| log.seqs_by_type_asc_at(&view, t, after, head)),
            false,
        );
        loop {
            if out.len() >= want || bytes >= BUFFER_BYTES || scanned >= SCAN_MAX {
                return Ok((out, last));
            }
            // Every index is exhausted up to `head`: all of it was looked at.
            let Some(seq) = seqs.next().transpose()? else {
                return Ok((out, head));
            };
            scanned += 1;
            last = seq;
            if let Some(e) = log.get_at(&view, seq)? {
                if filter.matches(&e) {
                    push(&mut out, &mut bytes, e)?;
                }
            }
        }
    }
    // Small chunks: an event may be up to LEVIATHAN_MAX_PAYLOAD_BYTES.
    while last < head && scanned < SCAN_MAX && out.len() < want && bytes < BUFFER_BYTES {
        let chunk = (head.0 - last.0).min(CHUNK as u64) as usize;
        // Read no more than the buffer has room for: a chunk of large
        // events read whole cost tens of MiB per stream.
        let events = log.after_page(&view, last, chunk, BUFFER_BYTES - bytes)?;
        if events.is_empty() {
            break;
        }
        for e in events {
            if e.seq > head || out.len() >= want || bytes >= BUFFER_BYTES {
                break;
            }
            last = e.seq;
            scanned += 1;
            if filter.matches(&e) {
                push(&mut out, &mut bytes, e)?;
            }
        }
    }
    Ok((out, last))
}
