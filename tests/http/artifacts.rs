use crate::common::*;
use serde_json::json;

#[test]
fn put_get_head_round_trip_with_etag() {
    let s = Server::start();
    let data = b"build log line 1\nline 2\n".to_vec();
    let sha = sha256_hex(&data);
    let (st, r) = s.put_artifact(&data);
    assert_eq!(st, 201, "{r}");
    assert_eq!(
        r,
        json!({"sha256": sha, "size": data.len(), "created": true})
    );
    // Same content again: stored once.
    let (st, r) = s.put_artifact(&data);
    assert_eq!((st, r["created"].clone()), (200, json!(false)));

    let resp = s.get_artifact(&sha);
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()["content-length"],
        data.len().to_string().as_str()
    );
    assert_eq!(resp.headers()["etag"], format!("\"{sha}\"").as_str());
    assert_eq!(resp.bytes().unwrap().to_vec(), data);

    let resp = s
        .req(
            reqwest::Method::HEAD,
            &format!("/v1/artifacts/{}", sha.to_uppercase()),
        )
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()["content-length"],
        data.len().to_string().as_str()
    );

    // Conditional GET and HEAD (RFC 9110 §13.1.2: If-None-Match compares
    // weakly): 304 with the ETag and no body for a tag that matches.
    let other = sha256_hex(b"another blob");
    for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
        for (tag, matches) in [
            (format!("\"{sha}\""), true),
            (format!("W/\"{sha}\""), true),
            (format!("\"{other}\", \"{sha}\""), true),
            ("*".to_string(), true),
            (sha.clone(), true),
            (format!("\"{other}\""), false),
        ] {
            let resp = s
                .req(method.clone(), &format!("/v1/artifacts/{sha}"))
                .header("If-None-Match", &tag)
                .send()
                .unwrap();
            let want = if matches { 304 } else { 200 };
            assert_eq!(resp.status().as_u16(), want, "{method} {tag}");
            assert_eq!(resp.headers()["etag"], format!("\"{sha}\"").as_str());
            let body = resp.bytes().unwrap();
            assert_eq!(
                body.len(),
                if matches || method == reqwest::Method::HEAD {
                    0
                } else {
                    data.len()
                },
                "{method} {tag}"
            );
        }
    }
}

#[test]
fn a_digest_mismatch_stores_nothing() {
    let s = Server::start();
    let claimed = sha256_hex(b"what I said");
    let (st, r) = s.send(
        s.req(reqwest::Method::PUT, &format!("/v1/artifacts/{claimed}"))
            .body("what I sent"),
    );
    assert_eq!(st, 400, "{r}");
    assert_eq!(r["error"]["code"], "digest_mismatch");
    assert_eq!(r["error"]["details"]["actual"], sha256_hex(b"what I sent"));
    assert_eq!(s.get(&format!("/v1/artifacts/{claimed}")).0, 404);
    assert_eq!(
        s.get(&format!("/v1/artifacts/{}", sha256_hex(b"what I sent")))
            .0,
        404
    );
    let (st, r) = s.get("/v1/artifacts/not-a-digest");
    assert_eq!(st, 400);
    assert_eq!(r["error"]["code"], "invalid_digest");
}

#[test]
fn post_stores_and_returns_the_digest_of_a_large_artifact() {
    let s = Server::start();
    // 5 MiB + change: several storage chunks, streamed both ways.
    let data: Vec<u8> = (0..(5 * 1024 * 1024 + 4321))
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let (st, r) = s.send(
        s.req(reqwest::Method::POST, "/v1/artifacts")
            .body(data.clone()),
    );
    assert_eq!(st, 201, "{r}");
    let sha = sha256_hex(&data);
    assert_eq!(r["sha256"], sha);
    let got = s.get_artifact(&sha).bytes().unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got.as_ref() == data.as_slice());
}

#[test]
fn the_size_limit_is_enforced() {
    let s = Server::start_with(&[("LEVIATHAN_MAX_ARTIFACT_BYTES", "1000")]);
    let data = vec![7u8; 1001];
    let (st, r) = s.send(
        s.req(reqwest::Method::POST, "/v1/artifacts")
            .body(data.clone()),
    );
    assert_eq!(st, 413, "{r}");
    assert_eq!(
        s.get(&format!("/v1/artifacts/{}", sha256_hex(&data))).0,
        404
    );
    // Without a Content-Length (chunked), the stream is cut at the limit too.
    let body = reqwest::blocking::Body::new(std::io::Cursor::new(data.clone()));
    let (st, _) = s.send(s.req(reqwest::Method::POST, "/v1/artifacts").body(body));
    assert_eq!(st, 413);
}

#[test]
fn bundles_report_artifacts_not_yet_stored() {
    let s = Server::start();
    let present = b"present".to_vec();
    let absent = b"absent".to_vec();
    s.put_artifact(&present);
    let mut b = bundle("with-refs", events("w", 1));
    b["artifacts"] = json!([
        {"sha256": sha256_hex(&present), "kind": "log", "uri": "file:///p", "size": 7, "name": "extra keys are fine"},
        {"sha256": sha256_hex(&absent), "kind": "log", "uri": "file:///a", "size": 6},
    ]);
    let (st, r) = s.ingest(&b);
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["missing_artifacts"], json!([sha256_hex(&absent)]));
}
