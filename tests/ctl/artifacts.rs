//! `artifacts put` / `get`: digest computed locally, body streamed, download
//! verified; a dry run uploads nothing; a download that does not verify leaves
//! no file behind.

use crate::common::{sha256_hex, Server};
use crate::ctl::{ctl, json, run};

fn stored(s: &Server, sha: &str) -> bool {
    let st = s
        .req(reqwest::Method::HEAD, &format!("/v1/artifacts/{sha}"))
        .send()
        .unwrap()
        .status();
    st.is_success()
}

/// Every file in `dir` (to spot leftovers).
fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn put_and_get_round_trip() {
    let s = Server::start_with(&[("LEVIATHAN_SYNC", "none")]);
    let dir = tempfile::tempdir().unwrap();
    // Over two server chunks (1 MiB), not a multiple of anything.
    let data: Vec<u8> = (0..(2 * 1024 * 1024 + 4321))
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let sha = sha256_hex(&data);
    let file = dir.path().join("build.log");
    std::fs::write(&file, &data).unwrap();
    let f = file.to_str().unwrap();

    // Dry run: the digest and size, nothing uploaded.
    let (code, out, err) = run(ctl(&s), &["artifacts", "put", f, "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&sha) && out.contains(&data.len().to_string()),
        "{out}"
    );
    assert!(
        out.contains("does not have it yet") && out.contains("nothing was uploaded"),
        "{out}"
    );
    let v = json(&s, &["artifacts", "put", f, "--dry-run"]);
    assert_eq!(v["sha256"], sha.as_str());
    assert_eq!(v["size"], data.len());
    assert_eq!(v["stored"], false);
    assert!(!stored(&s, &sha), "a dry run uploads nothing");

    // Upload: the server's answer.
    let v = json(&s, &["artifacts", "put", f]);
    assert_eq!(v["sha256"], sha.as_str());
    assert_eq!(v["size"], data.len());
    assert_eq!(v["created"], true);
    assert!(stored(&s, &sha));
    let (code, out, _) = run(ctl(&s), &["artifacts", "put", f]);
    assert_eq!(code, 0);
    assert!(out.contains("already stored"), "{out}");
    assert_eq!(
        json(&s, &["artifacts", "put", f, "--dry-run"])["stored"],
        true
    );

    // Download to a file.
    let got = dir.path().join("got.log");
    let g = got.to_str().unwrap();
    let (code, out, err) = run(ctl(&s), &["artifacts", "get", &sha, "-o", g]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("sha256 verified"), "{out}");
    assert_eq!(std::fs::read(&got).unwrap(), data);
    let v = json(&s, &["artifacts", "get", &sha, "-o", g]);
    assert_eq!(
        (v["sha256"].as_str(), v["verified"].as_bool()),
        (Some(sha.as_str()), Some(true))
    );
    // To stdout.
    let out = ctl(&s).args(["artifacts", "get", &sha]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, data);

    // Not there: 404, and no file is created.
    let missing = sha256_hex(b"never uploaded");
    let (code, _, err) = run(
        ctl(&s),
        &[
            "artifacts",
            "get",
            &missing,
            "-o",
            dir.path().join("m").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("not found"), "{err}");
    assert_eq!(listing(dir.path()), ["build.log", "got.log"]);
    // A missing local file is reported with its name.
    let (code, _, err) = run(ctl(&s), &["artifacts", "put", "/nonexistent/x.bin"]);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/x.bin"), "{err}");
}

#[test]
fn a_download_that_does_not_verify_is_refused_and_deleted() {
    let mut s = Server::start();
    let data = b"the original artifact content".to_vec();
    let sha = sha256_hex(&data);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.txt");
    std::fs::write(&file, &data).unwrap();
    let (code, _, err) = run(ctl(&s), &["artifacts", "put", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let store = s.keep_dir();
    s.stop();
    {
        // Corrupt the stored chunk in place (same length).
        let db = fjall::Database::builder(store.path().join("store"))
            .open()
            .unwrap();
        let ks = db
            .keyspace("cas_chunks", || {
                fjall::KeyspaceCreateOptions::default()
                    .with_kv_separation(Some(fjall::KvSeparationOptions::default()))
            })
            .unwrap();
        let (k, v) = ks.iter().next().unwrap().into_inner().unwrap();
        assert_eq!(&*v, &data[..]);
        let mut forged = v.to_vec();
        forged[4] ^= 0x20;
        ks.insert(k, forged).unwrap();
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    let s = Server::start_in(store.path(), &[]);
    let target = dir.path().join("out.txt");
    std::fs::write(&target, b"previous content").unwrap();
    let (code, _, err) = run(
        ctl(&s),
        &["artifacts", "get", &sha, "-o", target.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("does not verify") && err.contains("was not written"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&target).unwrap(),
        b"previous content",
        "the old file is untouched"
    );
    assert_eq!(
        listing(dir.path()),
        ["a.txt", "out.txt"],
        "no temporary file is left"
    );
    let (code, _, err) = run(ctl(&s), &["artifacts", "get", &sha]);
    assert_eq!(code, 1);
    assert!(err.contains("discard what was written to stdout"), "{err}");
}

#[test]
fn a_dry_run_with_an_ingest_only_token_says_what_it_cannot_know() {
    // An executor's token: it may upload, not read.
    const INGEST: &str = "ingest-only-token-for-ctl";
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        format!("executor ingest {}\n", sha256_hex(INGEST.as_bytes())),
    )
    .unwrap();
    let s = Server::start_with(&[("LEVIATHAN_TOKENS_FILE", tokens.to_str().unwrap())]);
    let data = b"the build log\n";
    let sha = sha256_hex(data);
    let file = dir.path().join("build.log");
    std::fs::write(&file, data).unwrap();
    let f = file.to_str().unwrap();
    let with = |token: &str| {
        let mut c = ctl(&s);
        c.env("LEVIATHAN_CONTROL_PLANE_TOKEN", token);
        c
    };

    // What it would upload, and that whether the server has it is unknown
    // for want of the `read` role: exit 0.
    let (code, out, err) = run(with(INGEST), &["artifacts", "put", f, "--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&sha) && out.contains("would upload") && out.contains("nothing was uploaded"),
        "{out}"
    );
    assert!(
        out.contains("unknown") && out.contains("`read` role"),
        "{out}"
    );
    let (code, out, err) = run(
        with(INGEST),
        &["--json", "artifacts", "put", f, "--dry-run"],
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["sha256"], sha.as_str());
    assert_eq!(v["size"], data.len());
    assert!(v["stored"].is_null(), "{v}");
    assert!(
        v["stored_unknown"]
            .as_str()
            .unwrap()
            .contains("`read` role"),
        "{v}"
    );
    assert!(!stored(&s, &sha), "a dry run uploads nothing");
    // The upload itself works with that token.
    let (code, out, err) = run(with(INGEST), &["artifacts", "put", f]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("stored"), "{out}");

    // An unknown token: the HEAD's 401 has no body; the message still says
    // what is wrong and where the token came from.
    let (code, _, err) = run(
        with("nobody-knows-me"),
        &["artifacts", "put", f, "--dry-run"],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("401")
            && err.contains("unknown")
            && err.contains("LEVIATHAN_CONTROL_PLANE_TOKEN"),
        "{err}"
    );
}
