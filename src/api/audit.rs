//! The verifiable log's routes: signed checkpoints, the verifier key,
//! inclusion and consistency proofs, and audit bundles (docs/AUDIT.md).
//! Every proof is computed from one view of the store, so a proof and the
//! checkpoint it is checked against describe the same tree.

use super::error::ApiError;
use super::{blocking, AppState, Params};
use crate::tlog::{AuditBundle, AuditError, ConsistencyProof, InclusionProof};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

// The audit errors' HTTP form (kept beside the routes that raise them).
impl From<AuditError> for ApiError {
    fn from(e: AuditError) -> ApiError {
        match e {
            AuditError::NotFound(m) => ApiError::not_found(m),
            AuditError::BadRequest { message, parameter } => {
                let e = ApiError::new(StatusCode::BAD_REQUEST, "invalid_parameter", message);
                match parameter {
                    Some(p) => e.with_details(serde_json::json!({ "parameter": p })),
                    None => e,
                }
            }
            AuditError::Log(e) => e.into(),
            AuditError::Graph(e) => e.into(),
            AuditError::Cas(e) => e.into(),
            AuditError::Tree(crate::tlog::TreeError::Store(e)) => {
                ApiError::storage("reading the Merkle tree failed", e)
            }
            AuditError::Tree(e) => ApiError::internal("reading the Merkle tree failed", e),
            AuditError::AsyncBehind { tree_size, applied } => {
                let message = e.to_string();
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_caught_up", message)
                    .with_details(serde_json::json!({
                        "tree_size": tree_size,
                        "async_applied_seq": applied.0,
                    }))
            }
        }
    }
}

/// A tree size parameter: absent, or a decimal integer (400 otherwise). An
/// empty one (`?tree_size=`, a script's unset variable) is refused too: taken
/// as absent, it would get a checkpoint or proof of another size.
fn size_param(p: &Params, name: &str) -> Result<Option<u64>, ApiError> {
    match p.0.get(name).map(String::as_str) {
        None => Ok(None),
        Some(raw) => raw.parse::<u64>().map(Some).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_parameter",
                format!(
                    "query parameter `{name}` must be a tree size (an integer from 0), got {raw:?}"
                ),
            )
            .with_details(serde_json::json!({ "parameter": name }))
        }),
    }
}

fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// `GET /v1/log/checkpoint[?tree_size=N]`: the signed checkpoint (C2SP
/// tlog-checkpoint, a signed note), of the whole tree or of its first N leaves.
///
/// A set with `async` projectors: the checkpoint also signs the combined
/// digest once the async lane has applied its size. The latest checkpoint
/// (no `tree_size`) is always served, without that line while the lane is
/// behind the head; one asked for by size is refused (503 `not_caught_up`,
/// `Retry-After`) until the lane has applied it, so that it always comes
/// whole (`min_seq=N` waits for it). `X-Leviathan-Async-Applied-Seq` says
/// where the lane stood.
pub async fn checkpoint(
    State(app): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    use crate::tlog::Combined;
    let size = size_param(&Params::from_query(q.as_deref())?, "tree_size")?;
    let t = app.transparency.clone();
    let combined = if size.is_some() {
        Combined::Required
    } else {
        Combined::IfApplied
    };
    let served = blocking(move || match t.checkpoint(&t.log.view(), size, combined) {
        Ok(s) => Ok(Ok(s)),
        Err(e @ AuditError::AsyncBehind { .. }) => Ok(Err(ApiError::from(e))),
        Err(e) => Err(e.into()),
    })
    .await?;
    let served = match served {
        Ok(s) => s,
        Err(e) => {
            let mut resp = e.into_response();
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return Ok(resp);
        }
    };
    let mut resp = text(served.note);
    if let Some(applied) = served.async_applied {
        resp.headers_mut().insert(
            ASYNC_APPLIED_SEQ,
            HeaderValue::from_str(&applied.0.to_string()).expect("digits are a header value"),
        );
    }
    Ok(resp)
}

/// The checkpoint's header with the async lane's applied seq.
const ASYNC_APPLIED_SEQ: &str = "x-leviathan-async-applied-seq";

/// `GET /v1/log/public-key`: the checkpoints' verifier key, one line.
pub async fn public_key(State(app): State<AppState>) -> Response {
    text(format!("{}\n", app.transparency.signer.verifier_key()))
}

/// `GET /v1/log/signers`: every key that has signed this log's checkpoints,
/// oldest first, each from the tree size it took over at and why
/// (`tlog::signers`), and the current verifier key.
pub async fn signers(State(app): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let db = app.monitor.db.clone();
    let current = app.transparency.signer.verifier_key();
    blocking(move || {
        let history = crate::tlog::signers::Signers::open(&db)
            .and_then(|s| s.history())
            .map_err(|e| ApiError::internal("reading the log's signers", e))?;
        Ok(Json(serde_json::json!({
            "current": current,
            "signers": history,
        })))
    })
    .await
}

/// `GET /v1/events/{event_id}/proof[?tree_size=N]`: the event's inclusion proof.
pub async fn proof(
    State(app): State<AppState>,
    Path(event_id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<InclusionProof>, ApiError> {
    let size = size_param(&Params::from_query(q.as_deref())?, "tree_size")?;
    let t = app.transparency.clone();
    blocking(move || Ok(Json(t.inclusion(&t.log.view(), &event_id, size)?.0))).await
}

/// `GET /v1/log/consistency?from=M[&to=N]`: the consistency proof between two tree sizes.
pub async fn consistency(
    State(app): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Json<ConsistencyProof>, ApiError> {
    let p = Params::from_query(q.as_deref())?;
    let Some(from) = size_param(&p, "from")? else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "query parameter `from` (the older tree size) is required",
        )
        .with_details(serde_json::json!({ "parameter": "from" })));
    };
    let to = size_param(&p, "to")?;
    let t = app.transparency.clone();
    blocking(move || Ok(Json(t.consistency(&t.log.view(), from, to)?))).await
}

/// `GET /v1/events/{event_id}/bundle`: the audit bundle of one event.
pub async fn bundle(
    State(app): State<AppState>,
    Path(event_id): Path<String>,
) -> Result<Json<AuditBundle>, ApiError> {
    let t = app.transparency.clone();
    let cas = app.cas.clone();
    blocking(move || Ok(Json(t.bundle(&event_id, Some(&cas))?))).await
}
