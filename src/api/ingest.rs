//! `POST /v1/events/ingest`: read the body within the limit, validate the bundle,
//! hand it to the writer, answer once it is durable.

use super::error::ApiError;
use super::{blocking, declared_length, AppState};
use crate::bundle;
use crate::digest::Sha256;
use crate::seq::Seq;
use crate::writer::AppendStatus;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use serde::Serialize;

#[derive(Serialize)]
pub struct IngestResponse {
    pub ingested: u64,
    pub bundle_id: String,
    pub status: AppendStatus,
    pub first_seq: Option<Seq>,
    pub last_seq: Option<Seq>,
    pub head_seq: Seq,
    pub head_hash: Option<Sha256>,
    pub duplicates: u64,
    pub missing_artifacts: Vec<Sha256>,
}

/// Reads a JSON request body, refusing other content types and bodies over `limit`.
pub async fn read_json_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<bytes::Bytes, ApiError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("");
        let mime = ct.split(';').next().unwrap_or("").trim();
        if !(mime.eq_ignore_ascii_case("application/json")
            || mime.to_ascii_lowercase().ends_with("+json"))
        {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("the body must be JSON (Content-Type: application/json), got {ct:?}"),
            ));
        }
    }
    if declared_length(headers).is_some_and(|len| len > limit as u64) {
        return Err(too_large(limit));
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let is_limit = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if is_limit {
            too_large(limit)
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_body",
                format!("could not read the request body: {e}"),
            )
        }
    })
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("the request body is larger than {limit} bytes (LEVIATHAN_MAX_BODY_BYTES); split the bundle"),
    )
    .with_details(serde_json::json!({"limit": limit, "setting": "LEVIATHAN_MAX_BODY_BYTES"}))
}

pub async fn ingest(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<IngestResponse>, ApiError> {
    let started = std::time::Instant::now();
    let result = ingest_bundle(&app, headers, body).await;
    let seconds = started.elapsed().as_secs_f64();
    match &result {
        Ok(r) => {
            let outcome = match r.status {
                AppendStatus::Ok => "ok",
                AppendStatus::Duplicate => "duplicate",
            };
            app.metrics
                .ingest(outcome, seconds, r.ingested, r.duplicates);
        }
        Err(e) => app.metrics.ingest(e.code, seconds, 0, 0),
    }
    result.map(Json)
}

async fn ingest_bundle(
    app: &AppState,
    headers: HeaderMap,
    body: Body,
) -> Result<IngestResponse, ApiError> {
    let bytes = read_json_body(&headers, body, app.limits.max_body_bytes).await?;
    let limits = app.limits;
    // Parsing and canonicalizing a large bundle is CPU work: keep it off the async workers.
    let bundle = if bytes.len() > 64 * 1024 {
        blocking(move || Ok(bundle::parse(&bytes, &limits)?)).await?
    } else {
        bundle::parse(&bytes, &limits)?
    };
    let missing_artifacts = app
        .cas
        .missing(bundle.artifacts.iter().map(|r| &r.sha256))?;
    let bundle_id = bundle.bundle_id.to_string();
    let a = app.writer.append(bundle).await?;
    Ok(IngestResponse {
        ingested: a.ingested,
        bundle_id,
        status: a.status,
        first_seq: a.first_seq,
        last_seq: a.last_seq,
        head_seq: a.head.seq,
        head_hash: a.head.hash,
        duplicates: a.duplicates,
        missing_artifacts,
    })
}
