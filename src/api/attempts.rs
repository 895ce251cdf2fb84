//! Attempts: the newest-first list, one attempt with its events and artifacts
//! (`crate::views::attempts`), and invalidation (`crate::invalidation`), which
//! appends an `attempt.invalidated` event through the writer.

use super::error::ApiError;
use super::ingest::{parse_json_body, read_json_body, BodyLimit};
use super::{blocking, AppState, Params};
use crate::seq::Seq;
use crate::views;
use crate::wire::{AttemptsPage, Invalidated, InvalidationPlan};
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

/// `GET /v1/attempts?target=&limit=10&cursor=`: newest first.
pub async fn list(
    State(app): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Json<AttemptsPage>, ApiError> {
    let p = Params::from_query(q.as_deref())?;
    let limit = p.int("limit", 10, 1, 1000)? as usize;
    let target = p.str("target").map(str::to_string);
    let cursor = p.str("cursor").map(str::to_string);
    let scans = target.is_some().then(|| app.scans.clone());
    let list = move || {
        Ok(Json(views::attempts::list(
            &app.live.graph(),
            target.as_deref(),
            cursor.as_deref(),
            limit,
            super::events::PAGE_MAX_BYTES,
        )?))
    };
    match scans {
        // Filtered: a walk of up to NEWEST_SCAN_BUDGET attempts.
        Some(scans) => super::blocking_scan(&scans, list).await,
        None => blocking(list).await,
    }
}

/// `GET /v1/attempts/{id}?as_of_seq=&events_before_seq=` → `{attempt_node,
/// events, artifacts, pull_requests}` (as it stood right after seq
/// `as_of_seq` when given), within about `PAGE_MAX_BYTES`: the newest events
/// first, and `events_truncated`, `next_events_before_seq` and
/// `produced_truncated` when the budget left something out.
pub async fn show(
    State(app): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<views::attempts::DetailPage>, ApiError> {
    let p = Params::from_query(q.as_deref())?;
    let as_of = super::graph::as_of_seq(&p)?;
    let events_before = match p.str("events_before_seq") {
        None => None,
        Some(_) => Some(Seq(p.int("events_before_seq", 1, 1, i64::MAX as u64)?)),
    };
    blocking(move || {
        Ok(Json(views::attempts::detail(
            &app.log,
            &app.live.graph(),
            &id,
            as_of,
            events_before,
            super::events::PAGE_MAX_BYTES,
        )?))
    })
    .await
}

#[derive(Deserialize)]
struct InvalidateBody {
    reason: String,
    #[serde(default)]
    actor_id: Option<String>,
}

/// `POST /v1/attempts/{id}/invalidate?dry_run=` with `{"reason": "..."}`.
pub async fn invalidate(
    State(app): State<AppState>,
    axum::Extension(principal): axum::Extension<crate::tokens::Principal>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let dry_run = Params::from_query(q.as_deref())?.bool("dry_run")?;
    let bytes = read_json_body(&headers, body, BodyLimit::SMALL).await?;
    let req: InvalidateBody = parse_json_body(&bytes, "{\"reason\": \"<why>\"}")?;
    if req.reason.trim().is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "reason must not be empty: say why the attempt is invalidated",
        ));
    }
    let app2 = app.clone();
    let id2 = id.clone();
    let node = blocking(move || {
        views::attempts::attempt_node(&app2.live.graph(), &id2)?
            .ok_or_else(|| ApiError::not_found(format!("no attempt with id {id2:?}")))
    })
    .await?;
    let plan = crate::invalidation::plan(
        &node,
        &req.reason,
        // The actor is the name of the token that asked (docs/SECURITY.md); an
        // `actor_id` in the body is kept in the payload as `requested_by`.
        &principal.name,
        req.actor_id.as_deref(),
        chrono::Utc::now(),
        &app.limits,
    )?;
    if dry_run {
        return Ok(Json(InvalidationPlan {
            attempt_id: plan.attempt_id,
            current_status: plan.current_status,
            dry_run: true,
            event: plan.event,
            status: "would_invalidate".into(),
            target: plan.target,
        })
        .into_response());
    }
    let appended = app.writer.append(plan.bundle).await?;
    app.metrics.count_recorded_errors(&appended.recorded_errors);
    // The chain's head as of this event (its own hash), not the batch's: a
    // batch may hold other bundles after it, and `seq` is this event's.
    let log = app.log.clone();
    let event_id = plan.event.event_id.clone();
    let own = super::blocking(move || Ok(log.get_by_event_id(&event_id)?)).await?;
    Ok(Json(Invalidated {
        attempt_id: plan.attempt_id,
        event_id: plan.event.event_id,
        head_hash: own.map(|e| e.hash).or(appended.head.hash),
        seq: appended.first_seq,
        status: "invalidated".into(),
    })
    .into_response())
}
