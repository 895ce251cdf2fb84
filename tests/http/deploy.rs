//! Projectors in production: the TOML manifest (same fingerprint as the
//! inline list, every start-up refusal naming the projector and the file),
//! type ownership (`not_owner`), and the `record` error policy (errors stored,
//! served, counted, and reproduced bit for bit by a rebuild). Real server
//! processes, real components built from WAT.

use crate::common::wasm::{static_projector, Data, Describe, StaticOp};
use crate::common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// A component: `name@0.1.0` handling `handles`, owning `nodes` / `edges`,
/// returning what `build` lays out.
fn component(
    name: &str,
    handles: &[&str],
    nodes: &[&str],
    edges: &[&str],
    build: impl FnOnce(&mut Data) -> u32,
) -> Vec<u8> {
    static_projector(
        &Describe {
            name,
            version: "0.1.0",
            handles,
            node_types: nodes,
            edge_types: edges,
        },
        build,
    )
}

/// Writes `bytes` as `dir/file`; (path, sha256 hex).
fn write(dir: &Path, file: &str, bytes: &[u8]) -> (PathBuf, String) {
    let p = dir.join(file);
    std::fs::write(&p, bytes).unwrap();
    (p, sha256_hex(bytes))
}

/// The team projector: `team.deploy` → a Deploy node and a DEPLOYED edge to a1.
fn team() -> Vec<u8> {
    component("team", &["team.deploy"], &["Deploy"], &["DEPLOYED"], |d| {
        d.ok_ops(&[
            StaticOp::PutNode {
                id: "dep-1",
                node_type: "Deploy",
                properties: r#"{"env":"prod"}"#,
            },
            StaticOp::PutEdge {
                edge_type: "DEPLOYED",
                from: "dep-1",
                to: "a1",
                properties: "{}",
            },
        ])
    })
}

/// A projector that puts node `a1` (the core projector's Attempt) as its own type.
fn squatter() -> Vec<u8> {
    component("squatter", &["squat.put"], &["Gadget"], &[], |d| {
        d.ok_ops(&[StaticOp::PutNode {
            id: "a1",
            node_type: "Gadget",
            properties: "{}",
        }])
    })
}

fn merger() -> Vec<u8> {
    component("merger", &["squat.merge"], &["Gizmo"], &[], |d| {
        d.ok_ops(&[StaticOp::MergeNode {
            id: "a1",
            node_type: "Gizmo",
            properties: r#"{"status":"mine"}"#,
            create_if_absent: false,
        }])
    })
}

fn deleter() -> Vec<u8> {
    component("deleter", &["squat.delete"], &["Doohickey"], &[], |d| {
        d.ok_ops(&[StaticOp::DeleteNode("a1")])
    })
}

/// Puts its own node and an edge of its own type to the core's `a1`: allowed.
fn linker() -> Vec<u8> {
    component("linker", &["squat.link"], &["Sprocket"], &["POKES"], |d| {
        d.ok_ops(&[
            StaticOp::PutNode {
                id: "s1",
                node_type: "Sprocket",
                properties: "{}",
            },
            StaticOp::PutEdge {
                edge_type: "POKES",
                from: "s1",
                to: "a1",
                properties: "{}",
            },
        ])
    })
}

fn refuser() -> Vec<u8> {
    component("refuser", &["squat.refuse"], &["Nope"], &[], |d| {
        d.err("no_way", "this projector refuses every squat.refuse")
    })
}

fn created(id: &str) -> Value {
    event(
        id,
        "attempt.created",
        json!({"attempt_id": "a1", "task_id": "t1"}),
    )
}

fn fingerprint(s: &Server) -> String {
    let (st, p) = s.get("/v1/projection");
    assert_eq!(st, 200, "{p}");
    p["fingerprint"].as_str().unwrap().to_owned()
}

#[test]
fn a_manifest_and_the_inline_list_give_the_same_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let (team_path, team_sha) = write(dir.path(), "team.wasm", &team());
    let manifest = |on_error: &str| {
        let m = dir.path().join(format!("projectors-{on_error}.toml"));
        std::fs::write(
            &m,
            format!(
                "[[projector]]\nname = \"core\"\nbuiltin = \"core\"\n\n\
                 [[projector]]\nname = \"team\"\npath = \"team.wasm\"\nsha256 = \"{team_sha}\"\n\
                 on_error = \"{on_error}\"\n[projector.limits]\nfuel = 20000000\n"
            ),
        )
        .unwrap();
        m.display().to_string()
    };
    let inline = format!(
        "core,{}#sha256={team_sha}#fuel=20000000",
        team_path.display()
    );

    let a = Server::start_with(&[("LEVIATHAN_PROJECTORS", &inline)]);
    let reject = manifest("reject");
    let b = Server::start_with(&[("LEVIATHAN_PROJECTORS_FILE", &reject)]);
    assert_eq!(fingerprint(&a), fingerprint(&b));
    let (_, p) = b.get("/v1/projection");
    let team_info = &p["projectors"][1];
    assert_eq!(team_info["name"], "team", "{p}");
    assert_eq!(team_info["on_error"], "reject");
    assert_eq!(team_info["limits"]["fuel"], 20_000_000);
    assert_eq!(team_info["limits"]["memory_mib"], 64);
    assert_eq!(p["projectors"][0]["on_error"], "reject");

    // `record` changes the graph a set builds, so it is in the fingerprint,
    // the same way in both syntaxes.
    let record = manifest("record");
    let c = Server::start_with(&[("LEVIATHAN_PROJECTORS_FILE", &record)]);
    let d = Server::start_with(&[("LEVIATHAN_PROJECTORS", &format!("{inline}#on_error=record"))]);
    assert_ne!(fingerprint(&c), fingerprint(&a));
    assert_eq!(fingerprint(&c), fingerprint(&d));
    assert_eq!(
        c.get("/v1/projection").1["projectors"][1]["on_error"],
        "record"
    );

    // A store built with the default set keeps its fingerprint under a
    // manifest naming `core` alone (the default policy adds nothing): it starts.
    let mut plain = Server::start();
    let (st, r) = plain.ingest(&bundle("b1", vec![created("e1")]));
    assert_eq!(st, 200, "{r}");
    let before = fingerprint(&plain);
    let data = plain.keep_dir();
    plain.stop();
    let core_only = dir.path().join("core.toml");
    std::fs::write(
        &core_only,
        "[[projector]]\nname = \"core\"\nbuiltin = \"core\"\n",
    )
    .unwrap();
    let again = Server::start_in(
        data.path(),
        &[(
            "LEVIATHAN_PROJECTORS_FILE",
            &core_only.display().to_string(),
        )],
    );
    assert_eq!(fingerprint(&again), before);
    assert_eq!(again.get("/v1/projection").1["applied_seq"], 1);
}

#[test]
fn every_manifest_refusal_names_the_projector_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (_, team_sha) = write(dir.path(), "team.wasm", &team());
    let (_, copy_sha) = write(
        dir.path(),
        "copycat.wasm",
        &component("copycat", &["copy.x"], &["Deploy"], &[], |d| d.ok_ops(&[])),
    );
    let (_, produced_sha) = write(
        dir.path(),
        "producer.wasm",
        &component("producer", &["prod.x"], &["Made"], &["PRODUCED"], |d| {
            d.ok_ops(&[])
        }),
    );
    // A core wasm module, not a component of the projector world.
    let (_, module_sha) = write(
        dir.path(),
        "module.wasm",
        &wat::parse_str("(module (func (export \"project\")))").unwrap(),
    );
    let vectors = dir.path().join("team.vectors.ndjson");
    std::fs::write(
        &vectors,
        concat!(
            r#"{"name":"deploys","event":{"event_type":"team.deploy","payload":{}},"ops":[{"op":"put_node","id":"dep-1","node_type":"Deploy","properties":{"env":"prod"}},{"op":"put_edge","edge_type":"DEPLOYED","from":"dep-1","to":"a1","properties":{}}]}"#,
            "\n",
            r#"{"name":"staging too","event":{"event_type":"team.deploy","payload":{}},"ops":[{"op":"put_node","id":"dep-1","node_type":"Deploy","properties":{"env":"staging"}}]}"#,
            "\n"
        ),
    )
    .unwrap();
    let core = "[[projector]]\nname = \"core\"\nbuiltin = \"core\"\n";
    let entry = |name: &str, file: &str, sha: &str, extra: &str| {
        format!("[[projector]]\nname = \"{name}\"\npath = \"{file}\"\nsha256 = \"{sha}\"\n{extra}")
    };
    let zeros = "0".repeat(64);
    let cases: Vec<(&str, String, Vec<String>)> = vec![
        (
            "pin mismatch",
            format!("{core}{}", entry("team", "team.wasm", &zeros, "")),
            vec![
                "projector \"team\"".into(),
                "team.wasm".into(),
                format!("expects SHA-256 {zeros}"),
                format!("actual SHA-256 is {team_sha}"),
            ],
        ),
        (
            "missing file",
            format!("{core}{}", entry("gone", "gone.wasm", &zeros, "")),
            vec!["projector \"gone\"".into(), "gone.wasm".into(), "cannot read".into()],
        ),
        (
            "name differs from describe",
            format!("{core}{}", entry("teams", "team.wasm", &team_sha, "")),
            vec![
                "projector \"teams\"".into(),
                "team.wasm".into(),
                "describe() reports the name \"team\"".into(),
            ],
        ),
        (
            "shared node type",
            format!(
                "{core}{}{}",
                entry("team", "team.wasm", &team_sha, ""),
                entry("copycat", "copycat.wasm", &copy_sha, "")
            ),
            vec![
                "node type \"Deploy\"".into(),
                "projector \"team\"".into(),
                "projector \"copycat\"".into(),
                "copycat.wasm".into(),
            ],
        ),
        (
            "shared edge type",
            format!("{core}{}", entry("producer", "producer.wasm", &produced_sha, "")),
            vec![
                "edge type \"PRODUCED\"".into(),
                "projector \"core\"".into(),
                "projector \"producer\"".into(),
                "producer.wasm".into(),
            ],
        ),
        (
            "not a projector component",
            format!("{core}{}", entry("module", "module.wasm", &module_sha, "")),
            vec![
                "projector \"module\"".into(),
                "module.wasm".into(),
                "compiling".into(),
            ],
        ),
        (
            "failing test vector",
            format!(
                "{core}{}",
                entry(
                    "team",
                    "team.wasm",
                    &team_sha,
                    "test_vectors = \"team.vectors.ndjson\"\n"
                )
            ),
            vec![
                "projector \"team\"".into(),
                "team.vectors.ndjson".into(),
                "line 2 (\"staging too\")".into(),
                r#"expected ops [{"id":"dep-1","node_type":"Deploy","op":"put_node","properties":{"env":"staging"}}]"#.into(),
                r#"actual ops [{"id":"dep-1","node_type":"Deploy","op":"put_node","properties":{"env":"prod"}}"#.into(),
            ],
        ),
        (
            "unknown key",
            format!("{core}colour = \"red\"\n"),
            vec!["colour".into(), "projectors.toml".into()],
        ),
    ];
    let manifest = dir.path().join("projectors.toml");
    for (case, text, needles) in cases {
        std::fs::write(&manifest, &text).unwrap();
        let mut cmd = serve_command(&dir.path().join("data"));
        cmd.env("LEVIATHAN_PROJECTORS_FILE", &manifest);
        let err = refused(cmd);
        for n in &needles {
            assert!(err.contains(n.as_str()), "{case}: {n:?} not in:\n{err}");
        }
    }
    // The manifest itself missing, and both settings at once.
    let mut cmd = serve_command(&dir.path().join("data"));
    cmd.env("LEVIATHAN_PROJECTORS_FILE", dir.path().join("nope.toml"));
    let err = refused(cmd);
    assert!(
        err.contains("cannot read the projector manifest") && err.contains("nope.toml"),
        "{err}"
    );
    std::fs::write(&manifest, core).unwrap();
    let mut cmd = serve_command(&dir.path().join("data"));
    cmd.env("LEVIATHAN_PROJECTORS_FILE", &manifest)
        .env("LEVIATHAN_PROJECTORS", "core");
    let err = refused(cmd);
    assert!(
        err.contains("both LEVIATHAN_PROJECTORS and LEVIATHAN_PROJECTORS_FILE"),
        "{err}"
    );
}

#[test]
fn a_projector_writes_only_the_node_types_it_owns() {
    let dir = tempfile::tempdir().unwrap();
    let mut set = String::from("core");
    for (file, bytes) in [
        ("squatter.wasm", squatter()),
        ("merger.wasm", merger()),
        ("deleter.wasm", deleter()),
        ("linker.wasm", linker()),
    ] {
        let (p, sha) = write(dir.path(), file, &bytes);
        set.push_str(&format!(",{}#sha256={sha}", p.display()));
    }
    let s = Server::start_with(&[("LEVIATHAN_PROJECTORS", &set)]);
    let (st, r) = s.ingest(&bundle("setup", vec![created("e1")]));
    assert_eq!(st, 200, "{r}");
    for (etype, projector, op) in [
        ("squat.put", "squatter@0.1.0", "put-node"),
        ("squat.merge", "merger@0.1.0", "merge-node"),
        ("squat.delete", "deleter@0.1.0", "delete-node"),
    ] {
        let (st, r) = s.ingest(&bundle(etype, vec![event(etype, etype, json!({}))]));
        assert_eq!(st, 422, "{etype}: {r}");
        assert_eq!(r["error"]["code"], "projection_failed");
        assert_eq!(r["error"]["details"]["cause"], "not_owner", "{r}");
        assert_eq!(r["error"]["details"]["projector"], projector);
        let msg = r["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(op) && msg.contains("\"a1\"") && msg.contains("Attempt"),
            "{msg}"
        );
        // Nothing stored; the core's node is untouched.
        assert_eq!(s.get("/v1/log/head").1["seq"], 1);
        let (_, node) = s.get("/v1/graph/nodes/a1");
        assert_eq!(node["node_type"], "Attempt", "{node}");
        assert_eq!(node["properties"]["status"], "created", "{node}");
    }
    // An edge of a declared type may point at any node.
    let (st, r) = s.ingest(&bundle(
        "link",
        vec![event("link", "squat.link", json!({}))],
    ));
    assert_eq!(st, 200, "{r}");
    let (_, edges) = s.get("/v1/graph/nodes/a1/edges?direction=in");
    assert_eq!(edges["edges"][0]["edge_type"], "POKES", "{edges}");
    assert_eq!(s.get("/v1/graph/nodes/s1").1["node_type"], "Sprocket");
}

#[test]
fn ops_that_do_not_apply_are_refused_naming_the_projector() {
    // An id over the 1 KiB limit, on a node type the projector owns.
    let long: &'static str = Box::leak("x".repeat(2000).into_boxed_str());
    let longid = component("longid", &["squat.long"], &["Widget"], &[], |d| {
        d.ok_ops(&[StaticOp::PutNode {
            id: long,
            node_type: "Widget",
            properties: "{}",
        }])
    });
    let dir = tempfile::tempdir().unwrap();
    let (p, sha) = write(dir.path(), "longid.wasm", &longid);
    let set = format!("core,{}#sha256={sha}", p.display());
    let s = Server::start_with(&[("LEVIATHAN_PROJECTORS", &set)]);
    let (st, r) = s.ingest(&bundle(
        "long",
        vec![event("long", "squat.long", json!({}))],
    ));
    assert_eq!(st, 422, "{r}");
    assert_eq!(r["error"]["code"], "projection_failed", "{r}");
    assert_eq!(r["error"]["details"]["cause"], "invalid_op", "{r}");
    assert_eq!(r["error"]["details"]["projector"], "longid@0.1.0", "{r}");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("longid@0.1.0") && msg.contains("1024"),
        "{msg}"
    );
    assert_eq!(s.get("/v1/log/head").1["seq"], 0);
}

/// The record manifest of [`record_policy_keeps_the_event_and_rebuild_reproduces_the_errors`].
fn record_manifest(dir: &Path) -> PathBuf {
    let mut text = String::from("[[projector]]\nname = \"core\"\nbuiltin = \"core\"\n");
    for (name, bytes) in [
        ("squatter", squatter()),
        ("deleter", deleter()),
        ("refuser", refuser()),
    ] {
        let (_, sha) = write(dir, &format!("{name}.wasm"), &bytes);
        text.push_str(&format!(
            "\n[[projector]]\nname = \"{name}\"\npath = \"{name}.wasm\"\nsha256 = \"{sha}\"\non_error = \"record\"\n"
        ));
    }
    let m = dir.join("projectors.toml");
    std::fs::write(&m, text).unwrap();
    m
}

#[test]
fn record_policy_keeps_the_event_and_rebuild_reproduces_the_errors() {
    let files = tempfile::tempdir().unwrap();
    let manifest = record_manifest(files.path());
    let manifest_s = manifest.display().to_string();
    let env = [("LEVIATHAN_PROJECTORS_FILE", manifest_s.as_str())];
    let mut s = Server::start_with(&env);

    // A history without errors has the digest the core projector alone gives:
    // the policy adds nothing to an error-free digest.
    let (st, r) = s.ingest(&bundle("b1", vec![created("e1")]));
    assert_eq!(st, 200, "{r}");
    let plain = Server::start();
    assert_eq!(plain.ingest(&bundle("b1", vec![created("e1")])).0, 200);
    assert_eq!(
        s.get("/v1/projection").1["state_digest"],
        plain.get("/v1/projection").1["state_digest"]
    );
    drop(plain);

    let (st, r) = s.ingest(&bundle(
        "b2",
        vec![
            event("e2", "squat.put", json!({})),
            event("e3", "squat.delete", json!({})),
            event("e4", "squat.refuse", json!({})),
            event("e5", "attempt.started", json!({"attempt_id": "a1"})),
        ],
    ));
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["ingested"], 4);
    // The core projector's ops applied; the failing projectors' were dropped.
    let (_, node) = s.get("/v1/graph/nodes/a1");
    assert_eq!(node["node_type"], "Attempt", "{node}");
    assert_eq!(node["properties"]["status"], "running", "{node}");

    let (st, page) = s.get("/v1/projection/errors");
    assert_eq!(st, 200, "{page}");
    assert_eq!(page["count"], 3, "{page}");
    assert_eq!(page["next_cursor"], Value::Null);
    let errors = page["errors"].as_array().unwrap();
    let summary: Vec<(u64, &str, &str, &str)> = errors
        .iter()
        .map(|e| {
            (
                e["seq"].as_u64().unwrap(),
                e["event_id"].as_str().unwrap(),
                e["projector"].as_str().unwrap(),
                e["code"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (2, "e2", "squatter", "not_owner"),
            (3, "e3", "deleter", "not_owner"),
            (4, "e4", "refuser", "rejected"),
        ]
    );
    assert!(
        errors[2]["message"]
            .as_str()
            .unwrap()
            .contains("this projector refuses every squat.refuse"),
        "{page}"
    );

    // Filter and pages.
    let (_, only) = s.get("/v1/projection/errors?projector=deleter");
    assert_eq!(only["count"], 1, "{only}");
    assert_eq!(only["errors"][0]["event_id"], "e3");
    let mut seen = Vec::new();
    let mut path = "/v1/projection/errors?limit=1".to_string();
    loop {
        let (st, p) = s.get(&path);
        assert_eq!(st, 200, "{p}");
        seen.extend(
            p["errors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["seq"].clone()),
        );
        match p["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/projection/errors?limit=1&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, vec![json!(2), json!(3), json!(4)]);
    let (st, bad) = s.get("/v1/projection/errors?cursor=zz");
    assert_eq!(st, 422, "{bad}");
    // Newest first, paged the same way (what the console's dashboard shows).
    let (st, newest) = s.get("/v1/projection/errors?order=newest&limit=2");
    assert_eq!(st, 200, "{newest}");
    let seqs: Vec<Value> = newest["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].clone())
        .collect();
    assert_eq!(seqs, vec![json!(4), json!(3)]);
    let c = newest["next_cursor"].as_str().unwrap();
    let (_, rest) = s.get(&format!("/v1/projection/errors?order=newest&cursor={c}"));
    assert_eq!(rest["errors"][0]["seq"], 2, "{rest}");
    assert_eq!(rest["next_cursor"], Value::Null);
    let (st, bad) = s.get("/v1/projection/errors?order=sideways");
    assert_eq!(st, 422, "{bad}");
    assert_eq!(bad["error"]["code"], "invalid_query");

    // Counted in /metrics, by projector.
    let metrics = s.metrics_text();
    assert!(
        metrics.contains("leviathan_projection_errors_recorded_total{projector=\"squatter\"} 1"),
        "{metrics}"
    );

    // A rebuild with the same set reproduces the graph and its errors bit for bit.
    let (_, before) = s.get("/v1/projection");
    let data = s.keep_dir();
    s.stop();
    let (code, out, err) = admin_full(&["rebuild", "--projectors-file", &manifest_s], data.path());
    assert_eq!(code, 0, "{out}\n{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["identical"], true, "{report}");
    assert_eq!(report["projection_errors"], 3, "{report}");
    assert_eq!(report["state_digest"], before["state_digest"]);
    let s = Server::start_in(data.path(), &env);
    assert_eq!(
        s.get("/v1/projection").1["state_digest"],
        before["state_digest"]
    );
    assert_eq!(s.get("/v1/projection/errors").1, page);
}
