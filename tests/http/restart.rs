use crate::common::*;
use serde_json::json;

#[test]
fn a_restart_keeps_everything_and_the_chain_continues() {
    let mut s = Server::start();
    s.ingest(&bundle("b1", events("a", 4)));
    let data = b"artifact bytes".to_vec();
    let sha = sha256_hex(&data);
    s.put_artifact(&data);
    let before = s.all_events();
    let (_, head) = s.get("/v1/log/head");
    let dir = s.keep_dir();
    s.stop();

    let s = Server::start_in(dir.path(), &[]);
    assert_eq!(s.all_events(), before);
    assert_eq!(s.get("/v1/log/head").1, head);
    let got = s.get_artifact(&sha).bytes().unwrap();
    assert_eq!(got.to_vec(), data);
    // Idempotency survives the restart too.
    let (_, r) = s.ingest(&bundle("b1", events("a", 4)));
    assert_eq!(r["status"], "duplicate");
    let (st, r) = s.ingest(&bundle(
        "b2",
        vec![event("after", "custom.thing", json!({}))],
    ));
    assert_eq!(st, 200);
    assert_eq!(r["first_seq"], 5);
    let (_, e) = s.get("/v1/events/after");
    assert_eq!(e["prev_hash"], head["hash"]);
    assert_eq!(s.get("/v1/log/verify").1["ok"], true);
}

#[test]
fn a_legacy_backend_setting_is_refused_with_an_explanation() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = serve_command(dir.path());
    cmd.env("LEVIATHAN_BACKEND", "postgres");
    let err = refused(cmd);
    assert!(
        err.contains("fjall") && err.contains("LEVIATHAN_BACKEND"),
        "{err}"
    );

    let mut cmd = serve_command(dir.path());
    cmd.env_remove("LEVIATHAN_CONTROL_PLANE_TOKEN");
    assert!(refused(cmd).contains("LEVIATHAN_CONTROL_PLANE_TOKEN"));
}
