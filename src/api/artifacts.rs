//! Artifact routes: `PUT /v1/artifacts/{sha256}` (verified upload), `POST
//! /v1/artifacts` (store, learn the digest), `GET`/`HEAD` (stream out). Bodies
//! are streamed chunk by chunk in both directions; memory stays bounded.

use super::error::ApiError;
use super::{declared_length, AppState};
use crate::cas::{BlobMeta, Cas, Upload};
use crate::digest::Sha256;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;

use crate::wire::Stored as StoredResponse;

fn parse_digest(raw: &str) -> Result<Sha256, ApiError> {
    raw.parse().map_err(|e: crate::digest::ParseSha256Error| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_digest", e.to_string())
    })
}

async fn receive(
    app: &AppState,
    headers: &HeaderMap,
    body: Body,
    expected: Option<Sha256>,
) -> Result<Response, ApiError> {
    let max = app.cas.max_bytes();
    if declared_length(headers).is_some_and(|len| len > max) {
        return Err(crate::cas::CasError::TooLarge { limit: max }.into());
    }
    let cas = app.cas.clone();
    let mut upload: Upload =
        tokio::task::block_in_place(|| cas.begin()).map_err(|e| store_failed(app, e))?;
    let mut stream = body.into_data_stream();
    while let Some(frame) = stream.next().await {
        let data = frame.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_body",
                format!("reading the upload failed: {e}"),
            )
        })?;
        tokio::task::block_in_place(|| upload.write(&data)).map_err(|e| store_failed(app, e))?;
    }
    let stored = tokio::task::block_in_place(|| upload.finish(expected))
        .map_err(|e| store_failed(app, e))?;
    let status = if stored.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(StoredResponse {
            sha256: stored.sha256,
            size: stored.size,
            created: stored.created,
        }),
    )
        .into_response())
}

/// An upload's error as an answer; a full or failing volume also stops the
/// writer (the store takes no more writes: `Writer::stop_for`).
fn store_failed(app: &AppState, e: crate::cas::CasError) -> ApiError {
    let crate::cas::CasError::Store(inner) = &e else {
        return e.into();
    };
    let failure = crate::writer::StorageFailure::new("an artifact upload failed", inner)
        .on_volume(app.log.store_path());
    if matches!(
        failure.cause,
        "disk_full" | "io_error" | "permission_denied"
    ) {
        app.writer.stop_for(failure.clone());
    }
    ApiError::storage_failure(failure)
}

pub async fn put(
    State(app): State<AppState>,
    Path(sha): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let expected = parse_digest(&sha)?;
    receive(&app, &headers, body, Some(expected)).await
}

pub async fn post(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    receive(&app, &headers, body, None).await
}

/// The blob's metadata; in postgres mode a blob this node lacks is fetched
/// from PostgreSQL into its local store first (`Cas::find`).
fn lookup(cas: &Cas, raw: &str) -> Result<(Sha256, BlobMeta), ApiError> {
    let sha = parse_digest(raw)?;
    match tokio::task::block_in_place(|| cas.find(&sha))? {
        Some(m) => Ok((sha, m)),
        None => Err(ApiError::not_found(format!(
            "no artifact with sha256 {sha}"
        ))),
    }
}

fn headers_for(sha: &Sha256, meta: &BlobMeta) -> [(header::HeaderName, HeaderValue); 3] {
    [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        ),
        (header::CONTENT_LENGTH, HeaderValue::from(meta.size)),
        (
            header::ETAG,
            HeaderValue::from_str(&format!("\"{sha}\"")).expect("hex is a valid header"),
        ),
    ]
}

/// `If-None-Match` names this artifact's entity tag, or is `*`. The
/// comparison is weak (RFC 9110 §13.1.2): `W/"<sha>"` matches too.
fn not_modified(headers: &HeaderMap, sha: &Sha256) -> bool {
    let hex = sha.to_hex();
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|t| {
            let t = t.strip_prefix("W/").unwrap_or(t);
            // A bare digest (no quotes) is taken too, as it always was.
            let tag = t
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .unwrap_or(t);
            t == "*" || tag == hex
        })
}

fn not_modified_response(sha: &Sha256) -> Response {
    (
        StatusCode::NOT_MODIFIED,
        [(header::ETAG, format!("\"{sha}\""))],
    )
        .into_response()
}

pub async fn head(
    State(app): State<AppState>,
    Path(sha): Path<String>,
    req_headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (sha, meta) = lookup(&app.cas, &sha)?;
    if not_modified(&req_headers, &sha) {
        return Ok(not_modified_response(&sha));
    }
    Ok((headers_for(&sha, &meta), Body::empty()).into_response())
}

pub async fn get(
    State(app): State<AppState>,
    Path(sha): Path<String>,
    req_headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (sha, meta) = lookup(&app.cas, &sha)?;
    if not_modified(&req_headers, &sha) {
        return Ok(not_modified_response(&sha));
    }
    let cas = app.cas.clone();
    let chunks = Cas::chunk_count(&meta);
    let stream = futures_util::stream::iter(0..chunks).then(move |i| {
        let cas = cas.clone();
        async move {
            tokio::task::spawn_blocking(move || cas.chunk(&meta, i))
                .await
                .map_err(std::io::Error::other)?
                .map_err(std::io::Error::other)?
                .ok_or_else(|| std::io::Error::other("chunk vanished"))
        }
    });
    Ok((headers_for(&sha, &meta), Body::from_stream(stream)).into_response())
}
