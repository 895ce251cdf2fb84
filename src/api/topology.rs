//! Topology routes of the original control plane (`crate::views::topology`):
//! the latest `topo.indexed` summary of a target and the areas, subsystems and
//! dependencies of its latest indexing run.

use super::error::ApiError;
use super::{blocking, AppState, Params};
use crate::views;
use crate::wire::TopologySummary;
use axum::extract::{Path, RawQuery, State};
use axum::Json;

fn target_param(q: Option<&str>) -> Result<String, ApiError> {
    Params::from_query(q)?
        .str("target")
        .map(str::to_string)
        .ok_or_else(|| {
            ApiError::invalid_query("query parameter `target` is required (the target id)")
        })
}

/// `GET /v1/topology/summary?target=`
pub async fn summary(
    State(app): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Json<TopologySummary>, ApiError> {
    let target = target_param(q.as_deref())?;
    blocking(move || Ok(Json(views::topology::summary(&app.log, &target)?))).await
}

/// `GET /v1/topology/{areas|subsystems|dependencies}?target=&cursor=`: at
/// most about `PAGE_MAX_BYTES` of items, then `truncated` and `next_cursor`.
pub async fn list(
    State(app): State<AppState>,
    Path(kind): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<views::topology::ListPage>, ApiError> {
    if !views::topology::KINDS.iter().any(|(k, _)| *k == kind) {
        return Err(ApiError::not_found(
            "no such route; topology lists are areas, subsystems and dependencies",
        ));
    }
    let target = target_param(q.as_deref())?;
    let cursor = Params::from_query(q.as_deref())?
        .str("cursor")
        .map(str::to_string);
    blocking(move || {
        views::topology::list(
            &app.log,
            &kind,
            &target,
            cursor.as_deref(),
            super::events::PAGE_MAX_BYTES,
        )?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("no such topology list"))
    })
    .await
}
