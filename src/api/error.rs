//! The API's one error shape: `{"error": {"code", "message", "details"?}, "detail"}`
//! with the HTTP status that fits. `detail` repeats the message at the top level,
//! where the original (FastAPI) control plane put it, so old clients that read it
//! keep working. Domain errors are mapped to HTTP here, nowhere else.

use crate::bundle::BundleError;
use crate::cas::CasError;
use crate::graph::GraphError;
use crate::log::LogError;
use crate::views::ViewError;
use crate::writer::AppendError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> ApiError {
        self.details = Some(details);
        self
    }

    pub fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    pub fn invalid_query(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_query", message)
    }

    pub fn unauthorized(message: &str) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn internal(context: &str, e: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %e, "{context}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{context}: {e}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = crate::wire::ErrorBody {
            detail: self.message.clone(),
            error: crate::wire::ErrorInfo {
                code: self.code.to_owned(),
                details: self.details,
                message: self.message,
            },
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        resp.extensions_mut().insert(ErrorCode(self.code));
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body is not read: the connection cannot be reused.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// The `error.code` of an error answer, beside its body for the layers
/// that count answers (`limits::edge`).
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

impl From<BundleError> for ApiError {
    fn from(e: BundleError) -> ApiError {
        let message = e.to_string();
        match e {
            BundleError::Malformed { .. } => ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", message),
            BundleError::Invalid {
                path,
                message: reason,
                event_index,
                event_id,
            } => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_bundle", message).with_details(json!({
                "path": path, "reason": reason, "event_index": event_index, "event_id": event_id,
            })),
            BundleError::TooLarge {
                path,
                actual,
                limit,
                setting,
                ..
            } => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message).with_details(json!({
                "path": path, "actual": actual, "limit": limit, "setting": setting,
            })),
        }
    }
}

impl From<AppendError> for ApiError {
    fn from(e: AppendError) -> ApiError {
        let message = e.to_string();
        match e {
            AppendError::BundleConflict { bundle_id } => {
                ApiError::new(StatusCode::CONFLICT, "bundle_conflict", message)
                    .with_details(json!({ "bundle_id": bundle_id }))
            }
            AppendError::EventConflict {
                event_id,
                index,
                seq,
            }
            | AppendError::EventTargetConflict {
                event_id,
                index,
                seq,
            } => ApiError::new(StatusCode::CONFLICT, "event_conflict", message)
                .with_details(json!({ "event_id": event_id, "event_index": index, "seq": seq })),
            AppendError::Projection {
                index,
                event_id,
                error,
            } => {
                let hint = error.failure.hint();
                let details = json!({
                    "event_index": index, "event_id": event_id, "projector": error.projector,
                    "cause": error.code(),
                    "guest_code": match &error.failure {
                        crate::projection::Failure::Rejected { code, .. } => Some(code.clone()),
                        _ => None,
                    },
                });
                let message = match hint {
                    Some(hint) => format!("{message}. {hint}"),
                    None => message,
                };
                if error.is_deterministic() {
                    ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "projection_failed",
                        message,
                    )
                    .with_details(details)
                } else {
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "projection_unavailable",
                        message,
                    )
                    .with_details(details)
                }
            }
            AppendError::Storage(f) | AppendError::Unavailable(f) => {
                tracing::error!(cause = f.cause, "{message}");
                // LEVIATHAN_STORE=postgres: a writer fenced by another is
                // told apart from a failing store (crate::pg).
                let code = if f.cause == crate::pg::NOT_LEADER {
                    crate::pg::NOT_LEADER
                } else {
                    "storage_unavailable"
                };
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
                    .with_details(json!({"cause": f.cause, "reason": f.message}))
            }
        }
    }
}

impl ApiError {
    /// A read that failed in the storage itself (I/O, disk full, a stopped
    /// store): 503 `storage_unavailable`, naming the cause. Damaged files (a
    /// block whose checksum fails) are corruption, which stays a 500: a
    /// restart does not mend them.
    pub fn storage(context: &str, e: impl std::fmt::Display) -> ApiError {
        ApiError::storage_failure(crate::writer::StorageFailure::new(context, e))
    }

    /// [`ApiError::storage`] of a failure already classified (e.g. by
    /// `StorageFailure::on_volume`).
    pub fn storage_failure(f: crate::writer::StorageFailure) -> ApiError {
        if crate::storage::is_checksum_failure(&f.message) {
            tracing::error!(cause = "corrupt", "{}", f.message);
            return ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!(
                    "{}: the store's files are damaged (a checksum failed): run `leviathan \
                     verify` and restore the last backup (docs/RUNBOOK.md, \"Backup and \
                     restore\")",
                    f.message
                ),
            )
            .with_details(json!({"cause": "corrupt", "reason": f.message}));
        }
        tracing::error!(cause = f.cause, "{}", f.message);
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            format!(
                "the store failed ({}: {}): {}",
                f.cause,
                f.message,
                f.advice()
            ),
        )
        .with_details(json!({"cause": f.cause, "reason": f.message}))
    }
}

impl From<LogError> for ApiError {
    fn from(e: LogError) -> ApiError {
        match e {
            LogError::Store(e) => ApiError::storage("reading the event log failed", e),
            LogError::Cancelled(c) => c.into(),
            corrupt => ApiError::internal("reading the event log failed", corrupt),
        }
    }
}

impl From<CasError> for ApiError {
    fn from(e: CasError) -> ApiError {
        let message = e.to_string();
        match e {
            CasError::DigestMismatch { expected, actual } => {
                ApiError::new(StatusCode::BAD_REQUEST, "digest_mismatch", message)
                    .with_details(json!({ "expected": expected, "actual": actual }))
            }
            CasError::TooLarge { limit } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message).with_details(
                    json!({ "limit": limit, "setting": "LEVIATHAN_MAX_ARTIFACT_BYTES" }),
                )
            }
            CasError::Store(e) => ApiError::storage("the artifact store failed", e),
            CasError::Remote(e) => {
                tracing::error!(error = %e, "the artifact store in PostgreSQL failed");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    message,
                )
                .with_details(json!({"cause": "postgres_unavailable", "reason": e}))
            }
            CasError::RemoteCorrupt { sha256, reason } => {
                tracing::error!(%sha256, %reason, "an artifact in PostgreSQL is corrupt");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "artifact_corrupt",
                    message,
                )
                .with_details(json!({"sha256": sha256, "reason": reason, "store": "postgres"}))
            }
            other => ApiError::internal("artifact store failed", other),
        }
    }
}

impl From<GraphError> for ApiError {
    fn from(e: GraphError) -> ApiError {
        match e {
            GraphError::BadCursor => ApiError::invalid_query(
                "invalid cursor: pass back the next_cursor of the same query unchanged",
            ),
            GraphError::Storage(e) => ApiError::storage("reading the graph failed", e),
            GraphError::Cancelled(c) => c.into(),
            other => ApiError::internal("reading the graph failed", other),
        }
    }
}

impl From<ViewError> for ApiError {
    fn from(e: ViewError) -> ApiError {
        match e {
            ViewError::Log(e) => e.into(),
            ViewError::Graph(e) => e.into(),
            ViewError::BadCursor => ApiError::invalid_query(e.to_string()),
            ViewError::NotFound(what) => ApiError::not_found(what),
            ViewError::BadQuery(why) => ApiError::invalid_query(why),
            ViewError::Cancelled(c) => c.into(),
        }
    }
}

/// A read stopped because its request was cancelled. Its client has gone
/// (or has had the 503 `timeout` already), so this answer is rarely seen.
impl From<crate::cancel::Cancelled> for ApiError {
    fn from(c: crate::cancel::Cancelled) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "timeout", c.to_string())
    }
}
