//! Event ingest sent to a replica (`LEVIATHAN_STORE=postgres`) is forwarded
//! to the writer: the replica sends the request (its body, read within
//! `LEVIATHAN_MAX_BODY_BYTES`, with its `Authorization` and `Content-Type`)
//! to the leader's advertised URL (`LEVIATHAN_ADVERTISE_URL`, which every node
//! publishes in the members table) and passes the writer's answer through.
//! A forward rather than a 307: HTTP clients (curl, Python requests, reqwest)
//! drop `Authorization` when they follow a redirect to another host, so an
//! authenticated executor following a 307 would get 401 from the writer.
//!
//! A leader that advertises an `https://` URL is answered with a 307 to it
//! instead (this server holds no TLS client settings for its peers); the
//! client re-sends its token itself. When no leader (or no leader URL) is
//! known, or the writer does not answer, the answer is 503 `not_leader`,
//! saying why. A forwarded request carries `X-Leviathan-Forwarded-By`, and a
//! node that is not the writer does not forward it again (a failover under
//! way: 503, retry). Artifact uploads are not forwarded: any node commits
//! them to PostgreSQL.

use super::error::ApiError;
use super::AppState;
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::time::Duration;

/// Marks a request a replica forwarded (its value: that node's id).
pub const FORWARDED_BY: &str = "x-leviathan-forwarded-by";
/// On a forwarded answer: the writer's node id.
pub const FORWARDED_TO: &str = "x-leviathan-forwarded-to";
/// How long a replica waits for the writer's answer (an append waits for a
/// PostgreSQL commit; a writer that stops answering is not waited on longer).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(60);

/// The client every forward uses (its connections to the writer are kept).
fn forwarder() -> Option<&'static reqwest::Client> {
    static CLIENT: std::sync::OnceLock<Option<reqwest::Client>> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .timeout(FORWARD_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .inspect_err(|e| tracing::error!(error = %e, "no HTTP client to forward ingest"))
                .ok()
        })
        .as_ref()
}

/// The event ingest route's layer (after authentication: only a client
/// allowed to ingest is forwarded).
pub async fn to_leader(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(cluster) = state.cluster.as_ref().filter(|_| state.writer.is_replica()) else {
        return next.run(req).await;
    };
    let not_leader = |reason: String| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            crate::pg::NOT_LEADER,
            format!("this node is a replica and cannot append (ingest, invalidations): {reason}"),
        )
        .with_details(json!({"cause": crate::pg::NOT_LEADER, "reason": reason}))
        .into_response()
    };
    if let Some(by) = req.headers().get(FORWARDED_BY) {
        return not_leader(format!(
            "{} forwarded this request here as the writer, but this node is not (a failover \
             may be under way); retry shortly",
            by.to_str().unwrap_or("another node")
        ));
    }
    let leader = match cluster.node.status.leader() {
        None => {
            return not_leader(
                "no writer holds the PostgreSQL log's leadership now (a failover may be under \
                 way); retry shortly"
                    .into(),
            )
        }
        Some(l) if l.node_id == cluster.node_id => {
            return not_leader("this node is taking over as the writer; retry shortly".into())
        }
        Some(l) => l,
    };
    let Some(base) = leader.url else {
        return not_leader(format!(
            "the writer ({}) publishes no URL: set LEVIATHAN_ADVERTISE_URL on every node so \
             that replicas can forward ingest to the writer",
            leader.node_id
        ));
    };
    let path = req
        .uri()
        .path_and_query()
        .map_or(req.uri().path(), |p| p.as_str());
    let location = format!("{base}{path}");
    if base.starts_with("https://") {
        return redirect(&location, &leader.node_id).unwrap_or_else(|| {
            not_leader(format!(
                "the writer's advertised URL {base:?} does not make a valid Location"
            ))
        });
    }
    let Some(client) = forwarder() else {
        return not_leader("this node cannot make HTTP requests to the writer".into());
    };
    let (parts, body) = req.into_parts();
    let limit = super::ingest::BodyLimit {
        bytes: state.limits.max_body_bytes,
        setting: Some("LEVIATHAN_MAX_BODY_BYTES"),
    };
    let bytes = match super::ingest::read_json_body(&parts.headers, body, limit).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let mut forward = client
        .post(&location)
        .header(FORWARDED_BY, cluster.node_id.as_str())
        .body(bytes);
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT] {
        if let Some(v) = parts.headers.get(&name) {
            forward = forward.header(name, v);
        }
    }
    // The same request id on both nodes (the client's, or the one this node
    // gave it): one request is traced across the hop in both logs.
    if let Some(id) = parts.extensions.get::<super::limits::RequestId>() {
        forward = forward.header(super::limits::REQUEST_ID, &*id.0);
    }
    let failed = |e: reqwest::Error| {
        tracing::warn!(writer = %leader.node_id, url = %location, error = %e, "forwarding ingest to the writer failed");
        not_leader(format!(
            "forwarding to the writer ({}, {base}) failed: {e}; the bundle may or may not have \
             been appended: retry it (a retry of the same bundle is answered as a duplicate)",
            leader.node_id
        ))
    };
    let answer = match forward.send().await {
        Ok(a) => a,
        Err(e) => return failed(e),
    };
    let status = answer.status();
    let headers = answer.headers().clone();
    let body = match answer.bytes().await {
        Ok(b) => b,
        Err(e) => return failed(e),
    };
    let mut resp = (status, body).into_response();
    for (name, value) in &headers {
        if name == header::CONTENT_TYPE || name.as_str().starts_with("x-leviathan-") {
            resp.headers_mut().insert(name.clone(), value.clone());
        }
    }
    if let Ok(v) = HeaderValue::from_str(&leader.node_id) {
        resp.headers_mut()
            .insert(HeaderName::from_static(FORWARDED_TO), v);
    }
    resp
}

/// 307 to `location` (an `https://` writer), or `None` if it is not a valid
/// header value.
fn redirect(location: &str, leader: &str) -> Option<Response> {
    let value = HeaderValue::from_str(location).ok()?;
    let mut resp = (
        StatusCode::TEMPORARY_REDIRECT,
        Json(json!({
            "location": location,
            "leader": leader,
            "detail": "this node is a replica and the writer is reached over https: send ingest \
                       to the writer (307 keeps the method and body; re-send your token)",
        })),
    )
        .into_response();
    resp.headers_mut().insert(header::LOCATION, value);
    Some(resp)
}
