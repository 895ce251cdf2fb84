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
    let parsed = if bytes.len() > 64 * 1024 {
        let body = bytes.clone();
        blocking(move || Ok(bundle::parse(&body, &limits))).await?
    } else {
        bundle::parse(&bytes, &limits)
    };
    let bundle = match parsed {
        Ok(b) => b,
        Err(e @ bundle::BundleError::Invalid { .. }) => {
            return Err(if_stored_already(app, &bytes, e.into()))
        }
        Err(e) => return Err(e.into()),
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

/// A 422 for a bundle whose `bundle_id` is stored already: an earlier
/// version accepted it under looser checks (a leap second, a repeated
/// payload key, a year out of range once in UTC), so a retry after an
/// upgrade is refused where it used to be a `duplicate`. The answer says
/// so (`details.stored_bundle`): the events are in the log as sent.
fn if_stored_already(app: &AppState, body: &[u8], mut refused: ApiError) -> ApiError {
    #[derive(serde::Deserialize)]
    struct Id<'a> {
        #[serde(borrow)]
        bundle_id: std::borrow::Cow<'a, str>,
    }
    let Ok(id) = serde_json::from_slice::<Id<'_>>(body) else {
        return refused;
    };
    let Ok(id) = crate::ids::BundleId::new(id.bundle_id) else {
        return refused;
    };
    let Ok(Some(stored)) = tokio::task::block_in_place(|| app.log.bundle(&id)) else {
        return refused;
    };
    let seqs = match (stored.first_seq, stored.last_seq) {
        (Some(first), Some(last)) => format!(" (seqs {}–{})", first.0, last.0),
        _ => String::new(),
    };
    refused.message = format!(
        "{}; a bundle with bundle_id {:?} is stored already{seqs}: if this is a retry of \
         one an earlier version accepted (its checks were looser), its events are in the log \
         as they were first sent",
        refused.message,
        id.as_str()
    );
    if let Some(serde_json::Value::Object(details)) = &mut refused.details {
        details.insert(
            "stored_bundle".into(),
            serde_json::json!({
                "bundle_id": id.as_str(),
                "first_seq": stored.first_seq.map(|s| s.0),
                "last_seq": stored.last_seq.map(|s| s.0),
            }),
        );
    }
    refused
}
