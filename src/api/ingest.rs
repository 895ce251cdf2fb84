//! `POST /v1/events/ingest`: read the body within the limit, validate the bundle,
//! hand it to the writer, answer once it is durable.

use super::error::ApiError;
use super::{blocking, declared_length, AppState};
use crate::bundle;
use crate::wire::{IngestResponse, IngestStatus};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;

/// The largest body a route reads, and the setting that changes it (`None`
/// for a route's fixed cap).
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit {
    pub bytes: usize,
    pub setting: Option<&'static str>,
}

impl BodyLimit {
    /// The fixed cap of the small operator routes (invalidate, backlog).
    pub const SMALL: BodyLimit = BodyLimit {
        bytes: 64 * 1024,
        setting: None,
    };
}

/// Reads a JSON request body, refusing other content types and bodies over the limit.
pub async fn read_json_body(
    headers: &HeaderMap,
    body: Body,
    limit: BodyLimit,
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
    if declared_length(headers).is_some_and(|len| len > limit.bytes as u64) {
        return Err(too_large(limit));
    }
    axum::body::to_bytes(body, limit.bytes).await.map_err(|e| {
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

fn too_large(limit: BodyLimit) -> ApiError {
    let bytes = limit.bytes;
    match limit.setting {
        Some(setting) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the request body is larger than {bytes} bytes ({setting}); split the bundle"),
        )
        .with_details(serde_json::json!({"limit": bytes, "setting": setting})),
        None => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the request body is larger than {bytes} bytes, this route's fixed limit"),
        )
        .with_details(serde_json::json!({"limit": bytes, "setting": null})),
    }
}

/// Parses a small JSON request body into `T`: 400 `invalid_json` when it is not
/// JSON at all, 422 `invalid_body` (with `expected`) when it is JSON of another shape.
pub fn parse_json_body<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    expected: &str,
) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("request body is not valid JSON: {e}"),
        )
    })?;
    if !value.is_object() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            format!("the body must be {expected}: a JSON object"),
        ));
    }
    serde_json::from_value(value).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            format!("the body must be {expected}: {e}"),
        )
    })
}

/// What an accepted ingest was, left on its answer for `limits::edge`, the
/// one place that counts ingest outcomes (a refusal is counted there by its
/// error code, whichever layer made it).
#[derive(Debug, Clone, Copy)]
pub struct IngestOutcome {
    pub outcome: &'static str,
    pub duplicates: u64,
}

pub async fn ingest(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<(axum::Extension<IngestOutcome>, Json<IngestResponse>), ApiError> {
    let r = ingest_bundle(&app, headers, body).await?;
    let outcome = IngestOutcome {
        outcome: match r.status {
            IngestStatus::Ok => "ok",
            IngestStatus::Duplicate => "duplicate",
        },
        duplicates: r.duplicates,
    };
    Ok((axum::Extension(outcome), Json(r)))
}

async fn ingest_bundle(
    app: &AppState,
    headers: HeaderMap,
    body: Body,
) -> Result<IngestResponse, ApiError> {
    let limit = BodyLimit {
        bytes: app.limits.max_body_bytes,
        setting: Some("LEVIATHAN_MAX_BODY_BYTES"),
    };
    let bytes = read_json_body(&headers, body, limit).await?;
    let limits = app.limits;
    // Parsing and canonicalizing a large bundle is CPU work: keep it off the async workers.
    let bundle = if bytes.len() > 64 * 1024 {
        blocking(move || Ok(bundle::parse(&bytes, &limits)?)).await?
    } else {
        bundle::parse(&bytes, &limits)?
    };
    // In postgres mode a digest this node lacks is looked up in PostgreSQL
    // (a blocking query: off the async workers).
    let missing_artifacts = if bundle.artifacts.is_empty() {
        Vec::new()
    } else {
        tokio::task::block_in_place(|| app.cas.missing(bundle.artifacts.iter().map(|r| &r.sha256)))?
    };
    let bundle_id = bundle.bundle_id.to_string();
    let a = app.writer.append(bundle).await?;
    app.metrics.count_recorded_errors(&a.recorded_errors);
    Ok(IngestResponse {
        ingested: a.ingested,
        bundle_id,
        status: a.status.into(),
        first_seq: a.first_seq,
        last_seq: a.last_seq,
        head_seq: a.head.seq,
        head_hash: a.head.hash,
        duplicates: a.duplicates,
        missing_artifacts,
    })
}
