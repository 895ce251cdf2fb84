//! Bearer-token authentication for every route but `/healthz`. The token is
//! compared in constant time (digests of equal length, compared with `subtle`).

use super::error::ApiError;
use super::AppState;
use crate::digest::Sha256;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

pub async fn require_bearer(
    State(app): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(header) = header else {
        return Err(ApiError::unauthorized(
            "missing `Authorization: Bearer <token>` header (the token is the server's LEVIATHAN_CONTROL_PLANE_TOKEN)",
        ));
    };
    let (scheme, credentials) = header.split_once(' ').unwrap_or((header, ""));
    let credentials = credentials.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || credentials.is_empty() {
        return Err(ApiError::unauthorized(
            "the Authorization header must be `Bearer <token>`",
        ));
    }
    let given = Sha256::of(credentials.as_bytes());
    let expected = Sha256::of(app.token.as_bytes());
    if !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        return Err(ApiError::unauthorized("invalid token"));
    }
    Ok(next.run(req).await)
}
