//! `GET /v1/failures?target=&limit=&cursor=`: failed attempts, tasks and test
//! runs, newest first (`crate::views::failures`), at most `limit` and about
//! `PAGE_MAX_BYTES` of them a page.

use super::error::ApiError;
use super::{blocking, AppState, Params};
use crate::views;
use crate::wire::Failures;
use axum::extract::{RawQuery, State};
use axum::Json;

pub async fn failures(
    State(app): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Json<Failures>, ApiError> {
    let p = Params::from_query(q.as_deref())?;
    let limit = p.int("limit", 10, 1, 1000)? as usize;
    let target = p.str("target").map(str::to_string);
    let cursor = p.str("cursor").map(str::to_string);
    blocking(move || {
        Ok(Json(views::failures::failures(
            &app.log,
            target.as_deref(),
            cursor.as_deref(),
            limit,
            super::events::PAGE_MAX_BYTES,
        )?))
    })
    .await
}
