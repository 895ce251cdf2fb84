//! Bearer-token authentication and role checks for every route but `/healthz`
//! and `/metrics`. `authenticate` finds the token's principal (401 when the
//! token is missing, malformed or unknown) and puts it in the request's
//! extensions; `require` (one per route group, see `router`) answers 403 when
//! the principal lacks the group's role. The presented token is hashed once per
//! request and compared with every known hash in constant time
//! (`crate::tokens::TokenSet::lookup`).

use super::error::ApiError;
use crate::digest::Sha256;
use crate::tokens::{Principal, Role, Tokens};
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

/// The credential of an `Authorization: Bearer <token>` header: the bytes after
/// the scheme and exactly one space, as sent. Anything else is refused with a
/// message that says what is wrong (never echoing the credential).
pub fn bearer_credential(headers: &HeaderMap) -> Result<&[u8], ApiError> {
    let mut all = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = all.next() else {
        return Err(ApiError::unauthorized(
            "missing `Authorization: Bearer <token>` header (a token from the server's tokens file, \
             or its LEVIATHAN_CONTROL_PLANE_TOKEN)",
        ));
    };
    if all.next().is_some() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_authorization",
            "the request has more than one Authorization header; send exactly one",
        ));
    }
    let bytes = value.as_bytes();
    let malformed = || {
        ApiError::unauthorized(
            "the Authorization header must be `Bearer <token>`: the scheme, one space, then the token \
             with no spaces, tabs or other characters around it",
        )
    };
    let (scheme, credential) = match bytes.iter().position(|b| *b == b' ') {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => return Err(malformed()),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer")
        || credential.is_empty()
        || credential.iter().any(|b| !b.is_ascii_graphic())
    {
        return Err(malformed());
    }
    Ok(credential)
}

/// Finds who is calling; 401 unless the request carries a known token.
pub async fn authenticate(
    State(tokens): State<Tokens>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let digest = Sha256::of(bearer_credential(req.headers())?);
    let Some(principal) = tokens.current().lookup(digest.as_bytes()) else {
        return Err(ApiError::unauthorized(
            "unknown token (it is not in the server's tokens file, nor its LEVIATHAN_CONTROL_PLANE_TOKEN)",
        ));
    };
    req.extensions_mut().insert(principal.clone());
    req.extensions_mut().insert(TokenDigest(digest));
    let mut resp = next.run(req).await;
    // For the request log (src/api/limits.rs): the name, never the token.
    resp.extensions_mut().insert(principal);
    Ok(resp)
}

/// The SHA-256 of the request's bearer token, for a long-lived request to
/// look its token up again after a reload (api/stream.rs).
#[derive(Debug, Clone, Copy)]
pub struct TokenDigest(pub Sha256);

/// 403 unless the authenticated principal has `role`.
pub async fn require(
    State(role): State<Role>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(p) = req.extensions().get::<Principal>() else {
        // `authenticate` runs first on every route that has a role.
        return Err(ApiError::unauthorized("this route needs a token"));
    };
    if !p.roles.contains(role) {
        let has = if p.roles == Default::default() {
            "no role".to_string()
        } else {
            format!("the roles {}", p.roles)
        };
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "this route needs a token with the `{}` role; token `{}` has {has}",
                role.as_str(),
                p.name
            ),
        )
        .with_details(
            serde_json::json!({"required_role": role.as_str(), "token_name": &*p.name}),
        ));
    }
    Ok(next.run(req).await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn parse(values: &[&[u8]]) -> Result<Vec<u8>, (u16, String)> {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                AUTHORIZATION,
                HeaderValue::from_bytes(v).expect("valid header bytes"),
            );
        }
        bearer_credential(&h)
            .map(<[u8]>::to_vec)
            .map_err(|e| (e.status.as_u16(), e.message))
    }

    #[test]
    fn the_credential_is_exactly_what_follows_one_space() {
        assert_eq!(parse(&[b"Bearer tok"]), Ok(b"tok".to_vec()));
        assert_eq!(parse(&[b"bEaReR tok"]), Ok(b"tok".to_vec()));
        for bad in [
            &b"Bearer  tok"[..],
            b"Bearer tok ",
            b"Bearer tok\t",
            b"Bearer\ttok",
            b"Bearer t ok",
            b"Bearer",
            b"Bearer ",
            b"Basic dGVzdDp0ZXN0",
            b"Bearertok",
            b"Bearer t\xc3\xa9",
        ] {
            let (status, msg) = parse(&[bad]).expect_err(&String::from_utf8_lossy(bad));
            assert_eq!(status, 401, "{bad:?}");
            assert!(msg.contains("Bearer <token>"), "{msg}");
        }
        let (status, msg) = parse(&[b"Bearer a", b"Bearer a"]).expect_err("two headers");
        assert_eq!(status, 400);
        assert!(msg.contains("more than one Authorization header"), "{msg}");
        assert_eq!(parse(&[]).expect_err("none").0, 401);
    }
}
