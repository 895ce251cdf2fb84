//! The operator console at `/console`: a static single-page app embedded in the
//! binary (the files under `console/`, plain HTML, CSS and JavaScript modules:
//! no build step). The pages hold no data and need no token; the app asks for
//! one, keeps it in the browser's session storage, and reads everything through
//! the authenticated v1 API. Every answer carries a strict Content-Security-Policy:
//! nothing from other origins, no inline script or style, no framing.

use super::error::ApiError;
use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use sha2::Digest;
use std::sync::LazyLock;

/// The policy of every console answer: same-origin only, no inline code.
/// (`default-src 'self'` covers fonts, frames, media and workers; the
/// console loads no fonts. docs/CONSOLE.md quotes this string exactly.)
pub const CSP: &str =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";
/// The embedded files: (name under `/console/`, content type, bytes).
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../console/index.html"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../console/style.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/api.js"),
    ),
    (
        "ui.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/ui.js"),
    ),
    (
        "graph.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/graph.js"),
    ),
    (
        "proof.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/proof.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("../../console/favicon.svg"),
    ),
];

/// A strong validator per embedded file: the quoted hex SHA-256 of its bytes
/// (first 32 digits), computed once, in the order of [`ASSETS`].
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|(_, _, body)| {
            let digest = hex::encode(sha2::Sha256::digest(body.as_bytes()));
            HeaderValue::from_str(&format!("\"{}\"", &digest[..32])).expect("hex is a header value")
        })
        .collect()
});

/// `/console`, `/console/` and everything under `/console/` (no auth: static
/// files only). Every answer, the files, a 404 for any other path below
/// `/console/` and a 405 for a method other than GET and HEAD, carries the
/// security headers ([`secure`]).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/console",
            any(|m: Method, h: HeaderMap| async move { answer(&m, &h, "index.html") }),
        )
        .route(
            "/console/",
            any(|m: Method, h: HeaderMap| async move { answer(&m, &h, "index.html") }),
        )
        .route(
            "/console/{*file}",
            any(
                |m: Method, h: HeaderMap, Path(file): Path<String>| async move {
                    answer(&m, &h, &file)
                },
            ),
        )
}

/// GET or HEAD of a console file, with the security headers; anything else a
/// 405 (with `Allow`), with them too.
fn answer(method: &Method, headers: &HeaderMap, name: &str) -> Response {
    if method != Method::GET && method != Method::HEAD {
        let mut resp = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "the console's files are only read (GET or HEAD)",
        )
        .into_response();
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        secure(&mut resp);
        return resp;
    }
    asset(headers, name)
}

/// Whether an `If-None-Match` header names `etag` (weak comparison, as
/// RFC 9110 §13.1.2 asks for `If-None-Match`; `*` matches any).
fn matches(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let want = etag.as_bytes();
    headers.get_all(header::IF_NONE_MATCH).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .map(str::trim)
                .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t).as_bytes() == want)
        })
    })
}

fn asset(headers: &HeaderMap, name: &str) -> Response {
    let Some(i) = ASSETS.iter().position(|(n, _, _)| *n == name) else {
        let mut resp = ApiError::not_found(format!(
            "no console file {name:?}; the console is at /console"
        ))
        .into_response();
        secure(&mut resp);
        return resp;
    };
    let (_, content_type, body) = ASSETS[i];
    let etag = ETAGS[i].clone();
    let mut resp = if matches(headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
            body,
        )
            .into_response()
    };
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::ETAG, etag);
    secure(&mut resp);
    resp
}

fn secure(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_loads_nothing_from_elsewhere_and_has_no_inline_code() {
        for (name, _, body) in ASSETS {
            assert!(!body.is_empty(), "{name}");
            // The SVG namespace is a name, not a load.
            let rest = body.replace("http://www.w3.org/2000/svg", "");
            assert!(
                !rest.contains("http://") && !rest.contains("https://") && !rest.contains("//cdn"),
                "{name} names another origin"
            );
            assert!(!body.contains("<script>"), "{name}: inline script");
            assert!(!body.contains(" style="), "{name}: inline style");
            assert!(!body.contains("<style"), "{name}: inline style");
            assert!(
                !body.contains("innerHTML"),
                "{name}: innerHTML (build nodes instead)"
            );
        }
        let index = ASSETS[0].2;
        for src in ["/console/app.js", "/console/style.css"] {
            assert!(index.contains(src), "{src}");
        }
    }

    #[test]
    fn if_none_match_is_compared_weakly_and_lists_are_read() {
        let etag = HeaderValue::from_static("\"abc\"");
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::IF_NONE_MATCH, HeaderValue::from_static(v));
            h
        };
        assert!(matches(&with("\"abc\""), &etag));
        assert!(matches(&with("W/\"abc\""), &etag));
        assert!(matches(&with("\"x\", \"abc\""), &etag));
        assert!(matches(&with("*"), &etag));
        assert!(!matches(&with("\"abd\""), &etag));
        assert!(!matches(&HeaderMap::new(), &etag));
        // One validator per file, all different (the files differ).
        let mut all: Vec<_> = ETAGS.iter().collect();
        all.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        all.dedup();
        assert_eq!(all.len(), ASSETS.len());
    }
}
