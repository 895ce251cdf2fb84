//! The original's operator switches: `GET /v1/autonomy/status` reads the
//! autonomy YAML (a mounted ConfigMap) on every call; `POST /v1/backlog/suggest`
//! is the original's documented placeholder.

use super::error::ApiError;
use super::ingest::{parse_json_body, read_json_body, BodyLimit};
use super::AppState;
use crate::wire::{AutonomyStatus, BacklogSuggestion};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde_json::Value;

/// `GET /v1/autonomy/status` → `{autonomy_enabled, source}`, as the original.
pub async fn status(State(app): State<AppState>) -> Json<AutonomyStatus> {
    let path = app.autonomy_config.clone();
    let (enabled, source) = match tokio::fs::read_to_string(&path).await {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            (true, "default (config not mounted)".to_string())
        }
        Err(_) => (true, "default (error reading config)".to_string()),
        Ok(text) => match serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text) {
            Ok(serde_yaml_ng::Value::Mapping(m)) => match m.get("autonomy_enabled") {
                None => (true, format!("configmap:{}", path.display())),
                Some(v) => match v.as_bool() {
                    Some(enabled) => (enabled, format!("configmap:{}", path.display())),
                    // `flase`, `"no"`, 0: a typo must not read as a
                    // deliberate `true` (the answer is the original's for an
                    // unreadable config, and the log says what is wrong).
                    None => {
                        tracing::warn!(
                            path = %path.display(),
                            value = ?v,
                            "autonomy_enabled in the autonomy config is not true or false: \
                             answering the default (true, \"error reading config\")"
                        );
                        (true, "default (error reading config)".to_string())
                    }
                },
            },
            _ => {
                tracing::warn!(
                    path = %path.display(),
                    "the autonomy config is not a YAML mapping: answering the default (true)"
                );
                (true, "default (error reading config)".to_string())
            }
        },
    };
    Json(AutonomyStatus {
        autonomy_enabled: enabled,
        source,
    })
}

/// `POST /v1/backlog/suggest` with `{"target": "..."}`: not implemented, as in the original.
pub async fn suggest(headers: HeaderMap, body: Body) -> Result<Json<BacklogSuggestion>, ApiError> {
    let bytes = read_json_body(&headers, body, BodyLimit::SMALL).await?;
    let target = parse_json_body::<Value>(&bytes, "{\"target\": \"<target id>\"}")?
        .get("target")
        .and_then(Value::as_str)
        .map(str::to_string);
    if target.is_none() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "the body must be {\"target\": \"<target id>\"}",
        ));
    }
    Ok(Json(BacklogSuggestion {
        attempt_id: None,
        message: "Backlog synthesis endpoint is a placeholder. Full implementation requires scheduler integration.".into(),
        pr_url: None,
        status: "not_implemented".into(),
        tasks_proposed: None,
    }))
}
