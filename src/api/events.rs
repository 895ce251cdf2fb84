//! Log reads: recent events, paging in log order, one event by id, the head and
//! chain verification.

use super::error::ApiError;
use super::{blocking, AppState, Params};
use crate::seq::Seq;
use crate::wire::{Event, EventsPage, Head, Verify};
use axum::extract::{Path, RawQuery, State};
use axum::Json;

pub const RECENT_DEFAULT: u64 = 200;
pub const PAGE_MAX: u64 = 1000;
/// A page of events stops once its stored records reach this many bytes (at
/// least one event): payloads may be 1 MiB each, and a page is built whole
/// in memory before it is sent. `next_after_seq` continues where it stopped.
pub const PAGE_MAX_BYTES: usize = 8 << 20;

/// `GET /v1/events/recent?limit=`: a bare array, newest first (as the original).
pub async fn recent(
    State(app): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Json<Vec<Event>>, ApiError> {
    let limit =
        Params::from_query(q.as_deref())?.int("limit", RECENT_DEFAULT, 1, PAGE_MAX)? as usize;
    let events = blocking(move || Ok(app.log.recent(limit, PAGE_MAX_BYTES)?)).await?;
    Ok(Json(events.into_iter().map(Into::into).collect()))
}

/// `GET /v1/events?after_seq=&limit=`: events in log order, for tools that follow the log.
pub async fn after(
    State(app): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Json<EventsPage>, ApiError> {
    let p = Params::from_query(q.as_deref())?;
    let after = Seq(p.int("after_seq", 0, 0, u64::MAX >> 1)?);
    let limit = p.int("limit", 100, 1, PAGE_MAX)? as usize;
    blocking(move || {
        let view = app.log.view();
        let head_seq = app.log.head_at(&view)?.seq;
        let events = app.log.after_page(&view, after, limit, PAGE_MAX_BYTES)?;
        // Pass as `after_seq` to get the next page (the request's when empty).
        let next_after_seq = events.last().map_or(after, |e| e.seq);
        Ok(Json(EventsPage {
            events: events.into_iter().map(Into::into).collect(),
            next_after_seq,
            head_seq,
        }))
    })
    .await
}

/// `GET /v1/events/{event_id}`.
pub async fn by_id(
    State(app): State<AppState>,
    Path(event_id): Path<String>,
) -> Result<Json<Event>, ApiError> {
    blocking(move || match app.log.get_by_event_id(&event_id)? {
        Some(e) => Ok(Json(e.into())),
        None => Err(ApiError::not_found(format!(
            "no event with event_id {event_id:?}"
        ))),
    })
    .await
}

/// `GET /v1/log/head` → `{seq, hash}`.
pub async fn head(State(app): State<AppState>) -> Result<Json<Head>, ApiError> {
    Ok(Json(app.log.head()?.into()))
}

/// `GET /v1/log/verify`: re-verifies the chain from genesis.
pub async fn verify(State(app): State<AppState>) -> Result<Json<Verify>, ApiError> {
    // One walk at a time, shared by the requests that arrived before it
    // started (api/single_flight.rs): a flood of verifications costs one.
    let monitor = app.monitor.clone();
    let report = monitor
        .verify_walks
        .run(|| blocking(move || Ok(app.log.verify()?)))
        .await?;
    Ok(Json(report.into()))
}
