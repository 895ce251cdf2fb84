//! `LEVIATHAN_STORE=postgres` for operators: a replica's lag in seqs and
//! seconds (`GET /v1/cluster`, `/metrics`), readiness tied to it
//! (`LEVIATHAN_MAX_REPLICA_LAG_SECS`), ingest sent to a replica forwarded to
//! the writer's advertised URL, the role each member holds after a failover,
//! and the artifacts of an export or backup of a replica. Each test runs its own
//! throwaway PostgreSQL cluster (tests/common/pg.rs) and real server
//! processes.
#![allow(clippy::unwrap_used)]

use crate::common;

use common::pg::{free_port, Postgres};
use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

fn pg_env<'a>(url: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("LEVIATHAN_STORE", "postgres"),
        ("LEVIATHAN_POSTGRES_URL", url),
        ("LEVIATHAN_POSTGRES_LEASE_SECS", "2"),
    ];
    env.extend_from_slice(extra);
    env
}

/// A server on `dir` listening on `port` (so that its advertised URL can be
/// given before it starts).
fn server_on_port(dir: &std::path::Path, port: u16, env: &[(&str, &str)]) -> Server {
    let mut cmd = leviathan();
    cmd.args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
        .arg("--data-dir")
        .arg(dir)
        .env("LEVIATHAN_CONTROL_PLANE_TOKEN", TOKEN)
        .env("LEVIATHAN_LOG", "info,fjall=warn,lsm_tree=warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Server::spawn(cmd, dir)
}

/// Polls `probe` every 50 ms until it returns `Some`, at most `secs`.
fn wait_for<T>(secs: u64, what: &str, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match probe() {
            Ok(v) => return v,
            Err(last) => assert!(
                Instant::now() < deadline,
                "{what} did not happen within {secs} s; last: {last}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn applied(s: &Server) -> u64 {
    s.get("/v1/projection").1["applied_seq"]
        .as_u64()
        .unwrap_or(0)
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

fn metrics(s: &Server) -> String {
    s.client
        .get(s.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap()
}

/// The member row of `GET /v1/cluster` (from `s`) whose role is `role`.
fn member(s: &Server, role: &str) -> Value {
    let (st, v) = s.get("/v1/cluster");
    assert_eq!(st, 200, "{v}");
    v["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == role)
        .cloned()
        .unwrap_or(Value::Null)
}

/// How the replica is made to lag, deterministically and without a test hook
/// in the server: it connects as its own PostgreSQL role. While that role may
/// read only the `seq` and `committed_at` columns of `events`, the replica's
/// follow loop (which reads whole events) fails and retries, so it applies
/// nothing, while its lag measurement (which reads only those two columns)
/// keeps working and the writer keeps appending. Granting the table back lets
/// it catch up.
#[test]
fn a_replica_lagging_past_the_threshold_is_not_ready_and_reports_its_lag_until_it_catches_up() {
    let Some(pg) = Postgres::start("a_replica_lagging_is_not_ready") else {
        return;
    };
    let url = pg.url();
    let writer = Server::start_with(&pg_env(&url, &[]));
    // The writer migrated the schema: a role for the replica.
    let mut admin = pg.client();
    admin
        .batch_execute(
            "CREATE ROLE lagging LOGIN;
             GRANT USAGE, CREATE ON SCHEMA public TO lagging;
             GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO lagging;",
        )
        .unwrap();
    let replica_url = format!(
        "host=127.0.0.1 port={} user=lagging dbname=postgres",
        pg.port
    );
    let replica = Server::start_with(&pg_env(
        &replica_url,
        &[
            ("LEVIATHAN_ROLE", "replica"),
            ("LEVIATHAN_MAX_REPLICA_LAG_SECS", "1"),
        ],
    ));
    let (st, r) = writer.ingest(&bundle("before", events("before", 3)));
    assert_eq!(st, 200, "{r}");
    let first = r["last_seq"].as_u64().unwrap();
    wait_for(60, "the replica applying the first bundle", || {
        (applied(&replica) >= first)
            .then_some(())
            .ok_or_else(|| applied(&replica).to_string())
    });
    let (st, r) = replica.get("/readyz");
    assert_eq!(st, 200, "a caught-up replica is ready: {r}");

    // From here the replica cannot read events: the writer appends 4 more.
    admin
        .batch_execute(
            // (Revoking the table's privilege revokes its column privileges
            // too: the two columns are granted again.)
            "REVOKE SELECT ON events FROM lagging;
             GRANT SELECT (seq, committed_at) ON events TO lagging;",
        )
        .unwrap();
    let (st, r) = writer.ingest(&bundle("during", events("during", 4)));
    assert_eq!(st, 200, "{r}");
    let head = r["last_seq"].as_u64().unwrap();
    assert_eq!(head, first + 4);

    // Past 1 s behind, the replica leaves the Service: 503, saying why.
    let body = wait_for(
        30,
        "the replica's /readyz answering replica_lagging",
        || {
            let (st, r) = replica.get("/readyz");
            (st == 503 && r["error"]["details"]["cause"] == "replica_lagging")
                .then_some(r.clone())
                .ok_or_else(|| format!("{st} {r}\n{}", replica.log.lock().unwrap().join("\n")))
        },
    );
    let details = &body["error"]["details"];
    assert_eq!(body["error"]["code"], "not_ready", "{body}");
    assert_eq!(details["lag_seqs"].as_u64(), Some(4), "{body}");
    assert!(details["lag_secs"].as_f64().unwrap() > 1.0, "{body}");
    assert_eq!(details["max_lag_secs"].as_f64(), Some(1.0), "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("LEVIATHAN_MAX_REPLICA_LAG_SECS"),
        "{body}"
    );
    // It still answers reads (at the seq it has), and applied nothing more.
    assert_eq!(applied(&replica), first);
    // The writer is not subject to lag.
    assert_eq!(writer.get("/readyz").0, 200);
    // Its own /metrics say so.
    let m = metrics(&replica);
    assert_eq!(metric(&m, "leviathan_replica_lag_seqs"), 4.0, "{m}");
    assert!(metric(&m, "leviathan_replica_lag_seconds") > 1.0, "{m}");
    // And every node's /v1/cluster shows it, in seqs and seconds.
    let row = wait_for(30, "the replica's member row showing its lag", || {
        let m = member(&writer, "replica");
        (m["lag_seqs"].as_u64() == Some(4) && m["lag_secs"].as_f64() > Some(1.0))
            .then_some(m.clone())
            .ok_or_else(|| m.to_string())
    });
    assert_eq!(row["applied_seq"].as_u64(), Some(first), "{row}");
    let w = member(&replica, "writer");
    assert_eq!(
        (w["lag_seqs"].as_u64(), w["lag_secs"].as_f64()),
        (Some(0), Some(0.0)),
        "{w}"
    );

    // Given the table back, it catches up and is ready again, lag 0.
    admin
        .batch_execute("GRANT SELECT ON events TO lagging")
        .unwrap();
    wait_for(60, "the replica ready again", || {
        let (st, r) = replica.get("/readyz");
        (st == 200).then_some(()).ok_or_else(|| format!("{st} {r}"))
    });
    assert_eq!(applied(&replica), head);
    let m = metrics(&replica);
    assert_eq!(metric(&m, "leviathan_replica_lag_seqs"), 0.0, "{m}");
    assert_eq!(metric(&m, "leviathan_replica_lag_seconds"), 0.0, "{m}");
}

#[test]
fn ingest_sent_to_a_replica_is_forwarded_to_the_writer_with_its_token() {
    let Some(pg) = Postgres::start("ingest_sent_to_a_replica_is_forwarded") else {
        return;
    };
    let url = pg.url();
    let writer_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let writer_url = format!("http://127.0.0.1:{port}");
    let mut writer = server_on_port(
        writer_dir.path(),
        port,
        &pg_env(
            &url,
            &[("LEVIATHAN_ADVERTISE_URL", &format!("{writer_url}/"))],
        ),
    );
    assert_eq!(writer.base, writer_url);
    let writer_id = writer.get("/v1/cluster").1["node_id"]
        .as_str()
        .unwrap()
        .to_string();
    let replica = Server::start_with(&pg_env(&url, &[("LEVIATHAN_ROLE", "replica")]));
    let no_redirects = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let b = bundle("via-replica", events("via-replica", 3));
    let post_to_replica = |b: &Value| {
        let resp = no_redirects
            .post(replica.url("/v1/events/ingest"))
            .bearer_auth(TOKEN)
            .json(b)
            .send()
            .unwrap();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .map(|l| l.to_str().unwrap().to_string())
        };
        let (to, location) = (header("x-leviathan-forwarded-to"), header("location"));
        let (st, body) = parse(resp);
        (st, to, location, body)
    };
    // The replica learns the writer's URL from the members table, then
    // forwards the request with its token; the writer's answer comes back.
    let r = wait_for(30, "a forwarded 200", || match post_to_replica(&b) {
        (200, Some(to), None, body) => Ok((to, body)),
        other => Err(format!("{other:?}")),
    });
    assert_eq!(r.0, writer_id);
    let r = r.1;
    assert_eq!(r["ingested"].as_u64(), Some(3), "{r}");
    let last = r["last_seq"].as_u64().unwrap();
    assert_eq!(writer.get("/v1/log/head").1["seq"].as_u64(), Some(last));
    let (st, e) = replica.get(&format!("/v1/events/via-replica-2?min_seq={last}"));
    assert_eq!((st, e["seq"].as_u64()), (200, Some(last)), "{e}");
    // The writer's refusals come back as they are (a retry: duplicate; a
    // conflicting bundle: 409).
    let (st, _, _, r) = post_to_replica(&b);
    assert_eq!((st, r["status"].as_str()), (200, Some("duplicate")), "{r}");
    let (st, _, _, r) = post_to_replica(&bundle("via-replica", events("other", 1)));
    assert_eq!(st, 409, "{r}");
    // The client's request id reaches the writer: one request, traced in
    // both nodes' logs.
    let resp = no_redirects
        .post(replica.url("/v1/events/ingest"))
        .bearer_auth(TOKEN)
        .header("x-request-id", "trace-abc-123")
        .json(&b)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    // (The writer's stderr is read by another thread: wait for the line.)
    wait_for(10, "the forwarded request id in the writer's log", || {
        let found = writer
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("trace-abc-123") && l.contains("/v1/events/ingest"));
        if found {
            Ok(())
        } else {
            Err("no line yet".to_string())
        }
    });
    // An invalidation appends an event too: forwarded the same way.
    let (st, r) = replica.post(
        "/v1/attempts/via-replica-a0/invalidate",
        &serde_json::json!({"reason": "sent to a replica"}),
    );
    assert_eq!(st, 200, "{r}");
    let (_, head) = writer.get("/v1/log/head");
    assert_eq!(head["seq"].as_u64(), Some(last + 1), "{head}");
    // Artifact uploads are not forwarded: any node commits them to PostgreSQL.
    let resp = no_redirects
        .put(replica.url(&format!("/v1/artifacts/{}", sha256_hex(b"blob"))))
        .bearer_auth(TOKEN)
        .body("blob")
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    // Without a valid token nothing is forwarded: 401 first.
    let resp = no_redirects
        .post(replica.url("/v1/events/ingest"))
        .json(&b)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    // A request another node forwarded is not forwarded again.
    let resp = no_redirects
        .post(replica.url("/v1/events/ingest"))
        .bearer_auth(TOKEN)
        .header("x-leviathan-forwarded-by", "node-x")
        .json(&b)
        .send()
        .unwrap();
    let (st, body) = parse(resp);
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (503, Some("not_leader")),
        "{body}"
    );
    // Reads on the replica are served by it.
    assert_eq!(replica.get("/v1/log/head").0, 200);

    // No writer (killed): while its lease runs, the forward fails (503
    // not_leader, saying the bundle may have been appended: retry); once it
    // ran out, 503 not_leader saying no writer holds it.
    writer.kill();
    let (st, _, _, body) = post_to_replica(&b);
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (503, Some("not_leader")),
        "{body}"
    );
    wait_for(
        30,
        "503 not_leader without a writer",
        || match post_to_replica(&b) {
            (503, None, None, body)
                if body["error"]["code"] == "not_leader"
                    && body["detail"]
                        .as_str()
                        .is_some_and(|d| d.contains("no writer holds")) =>
            {
                Ok(body)
            }
            other => Err(format!("{other:?}")),
        },
    );
    // A writer that advertises no URL: 503 not_leader naming the setting.
    let mut second = Server::start_in(writer_dir.path(), &pg_env(&url, &[]));
    let body = wait_for(
        30,
        "503 naming LEVIATHAN_ADVERTISE_URL",
        || match post_to_replica(&b) {
            (503, None, None, body)
                if body["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("LEVIATHAN_ADVERTISE_URL")) =>
            {
                Ok(body)
            }
            other => Err(format!("{other:?}")),
        },
    );
    assert_eq!(body["error"]["code"], "not_leader", "{body}");
    assert_eq!(body["error"]["details"]["cause"], "not_leader", "{body}");
    // A writer reached over https (this server has no TLS client settings
    // for its peers): a 307 to it, the path and query kept.
    second.stop();
    let https = format!("https://127.0.0.1:{port}");
    let _third = server_on_port(
        writer_dir.path(),
        port,
        &pg_env(&url, &[("LEVIATHAN_ADVERTISE_URL", &https)]),
    );
    let location = wait_for(30, "a 307 to the https writer", || {
        let resp = no_redirects
            .post(replica.url("/v1/events/ingest?x=1"))
            .bearer_auth(TOKEN)
            .json(&b)
            .send()
            .unwrap();
        match (resp.status().as_u16(), resp.headers().get("location")) {
            (307, Some(l)) => Ok(l.to_str().unwrap().to_string()),
            (st, _) => Err(format!("{st}")),
        }
    });
    assert_eq!(location, format!("{https}/v1/events/ingest?x=1"));
}

#[test]
fn a_bad_advertise_url_or_lag_threshold_is_refused_at_start_with_directions() {
    let dir = tempfile::tempdir().unwrap();
    for (name, value, says) in [
        (
            "LEVIATHAN_ADVERTISE_URL",
            "leviathan-0:8000",
            "LEVIATHAN_ADVERTISE_URL",
        ),
        ("LEVIATHAN_ADVERTISE_URL", "ftp://10.0.0.1/", "http://"),
        (
            "LEVIATHAN_ADVERTISE_URL",
            "http://10.0.0.1:8000/?x=1",
            "without a query",
        ),
        (
            "LEVIATHAN_MAX_REPLICA_LAG_SECS",
            "-1",
            "LEVIATHAN_MAX_REPLICA_LAG_SECS",
        ),
        ("LEVIATHAN_MAX_REPLICA_LAG_SECS", "NaN", "0 (off)"),
    ] {
        let mut cmd = serve_command(dir.path());
        cmd.env("LEVIATHAN_STORE", "postgres")
            // Never reached: the settings are checked first.
            .env(
                "LEVIATHAN_POSTGRES_URL",
                "host=127.0.0.1 port=1 user=nobody",
            )
            .env(name, value);
        let out = refused(cmd);
        assert!(out.contains(says), "{name}={value}: {out}");
    }
}

/// `(role, leader)` of the member `node_id` in `GET /v1/cluster` from `s`.
fn role_of(s: &Server, node_id: &str) -> Result<(String, bool), String> {
    let (st, v) = s.get("/v1/cluster");
    if st != 200 {
        return Err(format!("{st}: {v}"));
    }
    let m = v["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["node_id"] == node_id))
        .ok_or_else(|| format!("no member {node_id}: {v}"))?;
    Ok((
        m["role"].as_str().unwrap_or_default().to_string(),
        m["leader"].as_bool().unwrap_or(false),
    ))
}

/// Waits until `observer`'s cluster view shows each `(node id, role, leader)`.
fn wait_for_roles(observer: &Server, what: &str, expected: [(&str, &str, bool); 2]) {
    wait_for(30, what, || {
        let seen = expected
            .iter()
            .map(|(id, _, _)| role_of(observer, id))
            .collect::<Result<Vec<_>, _>>()?;
        let want: Vec<_> = expected
            .iter()
            .map(|(_, role, leader)| (role.to_string(), *leader))
            .collect();
        if seen == want {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    });
}

#[test]
fn the_cluster_view_shows_the_role_a_node_holds_after_a_promotion_and_a_step_down() {
    let Some(pg) = Postgres::start("the_cluster_view_shows_the_role") else {
        return;
    };
    let url = pg.url();
    let auto = pg_env(&url, &[("LEVIATHAN_ROLE", "auto")]);
    // A starts as a replica (`auto`) and takes the free lease; B, `auto`
    // too, stays a replica while A leads.
    let a = Server::start_with(&auto);
    wait_for(30, "A leading", || {
        match a.ingest(&bundle("a-0", events("a-0", 2))) {
            (200, _) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let b = Server::start_with(&auto);
    let a_id = a.get("/v1/cluster").1["node_id"]
        .as_str()
        .unwrap()
        .to_string();
    let b_id = b.get("/v1/cluster").1["node_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(a_id, b_id);
    wait_for_roles(
        &b,
        "A a writer and B a replica",
        [(&a_id, "writer", true), (&b_id, "replica", false)],
    );
    // A pauses past its 2 s lease; B takes it over.
    a.signal("-STOP");
    wait_for(60, "B taking over", || {
        match b.ingest(&bundle("b-0", events("b-0", 2))) {
            (200, _) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    // A resumes, finds its lease gone and steps down to follow B. Each
    // node's row shows the role it holds now, not the one it started with.
    a.signal("-CONT");
    wait_for_roles(
        &b,
        "B a writer and A a replica",
        [(&a_id, "replica", false), (&b_id, "writer", true)],
    );
    assert_eq!(
        role_of(&a, &b_id).unwrap(),
        ("writer".to_string(), true),
        "A's view agrees"
    );
    let (st, r) = a.ingest(&bundle("a-1", events("a-1", 1)));
    assert_eq!(
        (st, r["error"]["code"].as_str()),
        (503, Some("not_leader")),
        "{r}"
    );
}

#[test]
fn an_export_or_a_backup_taken_on_a_replica_holds_the_artifacts_uploaded_to_the_writer() {
    let Some(pg) = Postgres::start("an_export_or_a_backup_taken_on_a_replica") else {
        return;
    };
    let url = pg.url();
    let writer = Server::start_with(&pg_env(&url, &[]));
    let mut replica = Server::start_with(&pg_env(&url, &[("LEVIATHAN_ROLE", "replica")]));
    let blob = b"uploaded to the writer, never read on the replica".to_vec();
    let sha = sha256_hex(&blob);
    assert_eq!(writer.put_artifact(&blob).0, 201);
    let (st, r) = writer.ingest(&bundle("with-artifact", events("e", 2)));
    assert_eq!(st, 200, "{r}");
    let head = r["head_seq"].as_u64().unwrap();
    wait_for(30, "the replica applying the head", || {
        (applied(&replica) >= head)
            .then_some(())
            .ok_or_else(|| applied(&replica).to_string())
    });
    let dir = replica.keep_dir();
    replica.stop();
    let work = tempfile::tempdir().unwrap();
    let export = |name: &str, pg_url: Option<&str>| {
        let to = work.path().join(name);
        let mut cmd = leviathan();
        cmd.args(["export", "--to", to.to_str().unwrap(), "--data-dir"])
            .arg(dir.path())
            .env_remove("LEVIATHAN_POSTGRES_URL");
        if let Some(u) = pg_url {
            cmd.env("LEVIATHAN_POSTGRES_URL", u);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let m: Value = serde_json::from_slice(&out.stdout).unwrap();
        (to, m)
    };
    // The replica's own store does not hold the artifact (it never served it).
    let (_, m) = export("local-only", None);
    assert_eq!(m["artifacts"], 0, "{m}");
    // On a node in postgres mode the export fetches it from PostgreSQL.
    let (to, m) = export("complete", Some(&url));
    assert_eq!(m["head_seq"], head, "{m}");
    assert_eq!(
        (m["artifacts"].as_u64(), m["artifact_bytes"].as_u64()),
        (Some(1), Some(blob.len() as u64)),
        "{m}"
    );
    assert_eq!(
        std::fs::read(to.join("artifacts").join(&sha)).unwrap(),
        blob
    );
    let (code, out) = admin(&["verify", "--export", to.to_str().unwrap()], dir.path());
    assert_eq!(code, 0, "{out}");

    // An online backup of the replica holds it too.
    let replica = Server::start_in(dir.path(), &pg_env(&url, &[("LEVIATHAN_ROLE", "replica")]));
    let backup = work.path().join("backup");
    let (st, bm) = replica.post("/v1/admin/backup", &serde_json::json!({ "to": backup }));
    assert_eq!(st, 200, "{bm}");
    assert_eq!(
        (bm["artifacts"].as_u64(), bm["artifact_bytes"].as_u64()),
        (Some(1), Some(blob.len() as u64)),
        "{bm}"
    );
}
