use crate::common::*;
use serde_json::Value;

const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/events/ingest"),
    ("GET", "/v1/events/recent"),
    ("GET", "/v1/events?after_seq=0"),
    ("GET", "/v1/events/e1"),
    ("GET", "/v1/log/head"),
    ("GET", "/v1/log/verify"),
    ("GET", "/v1/failures"),
    ("GET", "/v1/graph/summary"),
    ("GET", "/v1/graph/nodes"),
    ("GET", "/v1/graph/nodes/x"),
    ("GET", "/v1/graph/nodes/x/edges"),
    ("GET", "/v1/projection"),
    ("GET", "/v1/attempts"),
    ("GET", "/v1/attempts/a1"),
    ("POST", "/v1/attempts/a1/invalidate"),
    ("GET", "/v1/topology/summary?target=t"),
    ("GET", "/v1/topology/areas?target=t"),
    ("GET", "/v1/autonomy/status"),
    ("POST", "/v1/backlog/suggest"),
    ("POST", "/v1/artifacts"),
    (
        "GET",
        "/v1/artifacts/2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
    ),
    (
        "HEAD",
        "/v1/artifacts/2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
    ),
    (
        "PUT",
        "/v1/artifacts/2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
    ),
];

#[test]
fn every_route_but_healthz_needs_the_token() {
    let s = Server::start();
    let (st, body) = parse(s.client.get(s.url("/healthz")).send().unwrap());
    assert_eq!((st, body), (200, serde_json::json!({"status": "ok"})));

    let bad_headers: &[Option<&str>] = &[
        None,
        Some("Bearer wrong-token"),
        Some("Basic dGVzdDp0ZXN0"),
        Some("Bearer"),
        Some("Bearer "),
        Some(TOKEN),
    ];
    for (method, path) in ROUTES {
        for h in bad_headers {
            let mut req = s.client.request(method.parse().unwrap(), s.url(path));
            if let Some(h) = h {
                req = req.header("Authorization", *h);
            }
            // A bad body must not matter: auth is checked first.
            let resp = req
                .header("Content-Type", "application/json")
                .body("{not json")
                .send()
                .unwrap();
            assert_eq!(resp.status().as_u16(), 401, "{method} {path} with {h:?}");
            assert_eq!(
                resp.headers()["www-authenticate"],
                "Bearer",
                "{method} {path}"
            );
            if *method != "HEAD" {
                let v: Value = resp.json().unwrap();
                assert_eq!(v["error"]["code"], "unauthorized", "{v}");
                assert!(v["error"]["message"].as_str().unwrap().len() > 5);
            }
        }
    }
}

#[test]
fn the_scheme_is_case_insensitive_and_the_credential_is_exact() {
    let s = Server::start();
    for (h, status) in [
        (format!("Bearer {TOKEN}"), 200),
        (format!("bearer {TOKEN}"), 200),
        (format!("BEARER {TOKEN}"), 200),
        // Before: extra spaces around the credential were trimmed and accepted.
        (format!("BEARER   {TOKEN}"), 401),
        (format!("Bearer  {TOKEN}"), 401),
        (format!("Bearer {TOKEN}x"), 401),
    ] {
        let resp = s
            .client
            .get(s.url("/v1/log/head"))
            .header("Authorization", h.as_str())
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "{h}");
    }
}

#[test]
fn unknown_routes_and_methods_get_json_errors() {
    let s = Server::start();
    let (st, v) = s.get("/v1/nope");
    assert_eq!(st, 404);
    assert_eq!(v["error"]["code"], "not_found");
    let (st, v) = parse(
        s.client
            .delete(s.url("/v1/log/head"))
            .bearer_auth(TOKEN)
            .send()
            .unwrap(),
    );
    assert_eq!(st, 405);
    assert_eq!(v["error"]["code"], "method_not_allowed");
}
