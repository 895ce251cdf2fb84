//! `LEVIATHAN_STORE=postgres`: the schema and its migrations, the append-only
//! triggers, fencing, and start-up catching a node's local store up from the
//! PostgreSQL log (after a kill -9, a crash between the two commits, a wiped
//! data dir). Each test runs its own throwaway cluster (tests/common/pg.rs)
//! and real server processes.
#![allow(clippy::unwrap_used)]

use crate::common;

use common::pg::Postgres;
use common::*;
use leviathan::pg::{EventRow, PgLog, PgSettings, Rows};
use serde_json::{json, Value};
use std::time::Duration;

/// A server on a fresh data dir whose log lives in `url`.
fn pg_server(url: &str, extra: &[(&str, &str)]) -> Server {
    let mut env = vec![
        ("LEVIATHAN_STORE", "postgres"),
        ("LEVIATHAN_POSTGRES_URL", url),
        ("LEVIATHAN_POSTGRES_LEASE_SECS", "2"),
    ];
    env.extend_from_slice(extra);
    Server::start_with(&env)
}

fn pg_server_in(dir: &std::path::Path, url: &str, extra: &[(&str, &str)]) -> Server {
    let mut env = vec![
        ("LEVIATHAN_STORE", "postgres"),
        ("LEVIATHAN_POSTGRES_URL", url),
        ("LEVIATHAN_POSTGRES_LEASE_SECS", "2"),
    ];
    env.extend_from_slice(extra);
    Server::start_in(dir, &env)
}

fn settings(url: &str, holder: &str, lease_secs: f64) -> PgSettings {
    PgSettings {
        url: url.to_string(),
        lease: Duration::from_secs_f64(lease_secs),
        holder: holder.to_string(),
        instance: format!("test-{holder}"),
        test_crash_after_commit: false,
    }
}

/// What a reader sees of a store: every event, the head, the graph's digest
/// and applied seq.
fn state(s: &Server) -> (Vec<Value>, Value, Value, Value) {
    let (st, p) = s.get("/v1/projection");
    assert_eq!(st, 200, "{p}");
    (
        s.all_events(),
        s.get("/v1/log/head").1,
        p["state_digest"].clone(),
        p["applied_seq"].clone(),
    )
}

/// The server's log line saying what start-up caught up from PostgreSQL.
fn caught_up(s: &Server) -> String {
    s.log
        .lock()
        .unwrap()
        .iter()
        .find(|l| l.contains("caught the local store up from PostgreSQL"))
        .cloned()
        .unwrap_or_default()
}

fn pg_count(pg: &mut postgres::Client, table: &str) -> i64 {
    pg.query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .unwrap()
        .get(0)
}

/// One event row chained after `prev` (enough for the fencing checks; the
/// record is a real one so that catch-up could read it).
fn row(seq: u64, prev: Option<leviathan::digest::Sha256>, id: &str) -> EventRow {
    let body = json!({"target": "radix", "bundle_id": format!("b-{id}"), "events": [
        event(id, "custom.thing", json!({"n": seq}))]});
    let b = leviathan::bundle::parse(body.to_string().as_bytes(), &Default::default()).unwrap();
    let record = b.events[0].encode(leviathan::seq::Seq(seq), prev.as_ref());
    EventRow {
        seq: leviathan::seq::Seq(seq),
        event_id: id.into(),
        bundle_id: format!("b-{id}"),
        event_type: "custom.thing".into(),
        target: "radix".into(),
        hash: leviathan::digest::Sha256::of(&record),
        record,
        prev_hash: prev,
    }
}

#[test]
fn the_schema_is_migrated_once_and_a_newer_one_is_refused() {
    let Some(pg) = Postgres::start("the_schema_is_migrated_once_and_a_newer_one_is_refused") else {
        return;
    };
    let url = pg.url();
    let log = PgLog::open(settings(&url, "a", 5.0)).unwrap();
    drop(log);
    // A second open finds the schema current and applies nothing again.
    let log = PgLog::open(settings(&url, "b", 5.0)).unwrap();
    drop(log);
    let mut c = pg.client();
    let latest = leviathan::pg::schema::latest();
    let versions: Vec<i32> = c
        .query("SELECT version FROM schema_version ORDER BY version", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, (1..=latest).collect::<Vec<_>>());

    // A newer binary migrated it: this one refuses, naming both versions.
    c.execute(
        "INSERT INTO schema_version (version, description) VALUES ($1, 'from the future')",
        &[&(latest + 1)],
    )
    .unwrap();
    let err = PgLog::open(settings(&url, "c", 5.0)).err().unwrap();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("version {}", latest + 1))
            && msg.contains(&format!("version {latest}")),
        "{msg}"
    );
    // And so does the server, before it serves.
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = serve_command(dir.path());
    cmd.env("LEVIATHAN_STORE", "postgres")
        .env("LEVIATHAN_POSTGRES_URL", &url);
    let out = refused(cmd);
    assert!(
        out.contains(&format!("version {}", latest + 1)) && out.contains("newer than this binary"),
        "{out}"
    );
}

/// A migration PostgreSQL refuses (here an object of the same name made by
/// someone else in the database first) stops the start with PostgreSQL's own
/// message and SQLSTATE, not the client's bare `db error`.
#[test]
fn a_failed_migration_is_refused_with_postgresqls_message() {
    let Some(pg) = Postgres::start("a_failed_migration") else {
        return;
    };
    let url = pg.create_db("taken");
    Postgres::connect(&url)
        .batch_execute("CREATE TABLE leader (note text)")
        .unwrap();
    let err = PgLog::open(settings(&url, "a", 5.0))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("migration 1 failed")
            && err.contains(r#"relation "leader" already exists"#)
            && err.contains("42P07"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = serve_command(dir.path());
    cmd.env("LEVIATHAN_STORE", "postgres")
        .env("LEVIATHAN_POSTGRES_URL", &url);
    let out = refused(cmd);
    assert!(
        out.contains("migration 1 failed") && out.contains(r#"relation "leader" already exists"#),
        "{out}"
    );
}

#[test]
fn postgres_without_a_url_and_the_old_backend_setting_are_refused_with_directions() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = serve_command(dir.path());
    cmd.env("LEVIATHAN_STORE", "postgres")
        .env_remove("LEVIATHAN_POSTGRES_URL");
    let out = refused(cmd);
    assert!(out.contains("LEVIATHAN_POSTGRES_URL"), "{out}");

    let mut cmd = serve_command(dir.path());
    cmd.env("LEVIATHAN_BACKEND", "postgres");
    let out = refused(cmd);
    assert!(
        out.contains("LEVIATHAN_STORE=postgres") && out.contains("LEVIATHAN_BACKEND"),
        "{out}"
    );

    // A PostgreSQL setting without LEVIATHAN_STORE=postgres (a forgotten
    // variable on one node) would make an independent writer with its own
    // log: refused, before any store is created.
    for (k, v) in [
        ("LEVIATHAN_ROLE", "replica"),
        ("LEVIATHAN_ROLE", "auto"),
        ("LEVIATHAN_POSTGRES_URL", "host=127.0.0.1 port=1 user=x"),
    ] {
        let mut cmd = serve_command(dir.path());
        cmd.env_remove("LEVIATHAN_STORE").env(k, v);
        let out = refused(cmd);
        assert!(
            out.contains(&format!("{k} applies only with LEVIATHAN_STORE=postgres")),
            "{k}={v}: {out}"
        );
    }
    assert!(!dir.path().join("store").exists());
}

/// A data dir written against another database (its head ahead of this
/// database's log) is refused, naming the cause, before the node takes the
/// writer's lease: holding it while refusing would delay a failover.
#[test]
fn a_data_dir_of_another_database_is_refused_without_taking_the_lease() {
    let Some(pg) = Postgres::start("a_data_dir_of_another_database") else {
        return;
    };
    let (a, b) = (pg.create_db("loga"), pg.create_db("logb"));
    let mut s = pg_server(&a, &[]);
    assert_eq!(s.ingest(&bundle("b1", events("e", 3))).0, 200);
    s.stop();
    let dir = s.keep_dir();
    let mut cmd = serve_command(dir.path());
    cmd.env("LEVIATHAN_STORE", "postgres")
        .env("LEVIATHAN_POSTGRES_URL", &b)
        .env("LEVIATHAN_POSTGRES_LEASE_SECS", "30");
    let err = refused(cmd);
    assert!(err.contains("ahead of the PostgreSQL log"), "{err}");
    let mut c = Postgres::connect(&b);
    let held: i64 = c
        .query_one("SELECT count(*) FROM leader WHERE expires_at > now()", &[])
        .unwrap()
        .get(0);
    assert_eq!(held, 0, "the refused node holds the lease");
}

/// A batch PostgreSQL refuses (here a constraint an operator added) is
/// refused with PostgreSQL's own message, not a bare `db error`; the writer
/// goes on once the cause is gone.
#[test]
fn a_batch_postgres_refuses_is_answered_with_its_message() {
    let Some(pg) = Postgres::start("a_batch_postgres_refuses") else {
        return;
    };
    let s = pg_server(&pg.url(), &[]);
    assert_eq!(s.ingest(&bundle("b1", events("e", 1))).0, 200);
    let mut c = pg.client();
    c.batch_execute("ALTER TABLE events ADD CONSTRAINT no_more CHECK (seq < 2) NOT VALID")
        .unwrap();
    let (st, r) = s.ingest(&bundle("b2", events("f", 1)));
    assert_eq!(st, 503, "{r}");
    let reason = r["error"]["details"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("violates check constraint \"no_more\"")
            && !reason.contains("db error: db error"),
        "{reason}"
    );
    c.batch_execute("ALTER TABLE events DROP CONSTRAINT no_more")
        .unwrap();
    let (st, r) = s.ingest(&bundle("b2", events("f", 1)));
    assert_eq!((st, &r["first_seq"]), (200, &json!(2)), "{r}");
}

#[test]
fn the_log_in_postgres_is_append_only() {
    let Some(pg) = Postgres::start("the_log_in_postgres_is_append_only") else {
        return;
    };
    let s = pg_server(&pg.url(), &[]);
    let (st, r) = s.ingest(&bundle("b1", events("e", 3)));
    assert_eq!(st, 200, "{r}");
    let mut c = pg.client();
    assert_eq!(pg_count(&mut c, "events"), 3);
    for sql in [
        "UPDATE events SET target = 'other' WHERE seq = 2",
        "DELETE FROM events WHERE seq = 3",
        "TRUNCATE events CASCADE",
        "UPDATE bundles SET ingested = 0",
        "DELETE FROM bundles",
    ] {
        let err = c
            .batch_execute(sql)
            .err()
            .unwrap_or_else(|| panic!("{sql} was allowed"));
        let msg = err
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_default();
        assert!(msg.contains("append-only"), "{sql}: {err}");
    }
    assert_eq!(pg_count(&mut c, "events"), 3);
    assert_eq!(pg_count(&mut c, "bundles"), 1);
    // The stored rows are the served records, byte for byte.
    let served = s.all_events();
    let rows = c
        .query(
            "SELECT seq, event_id, hash, prev_hash FROM events ORDER BY seq",
            &[],
        )
        .unwrap();
    for (r, e) in rows.iter().zip(&served) {
        assert_eq!(r.get::<_, i64>(0) as u64, e["seq"].as_u64().unwrap());
        assert_eq!(r.get::<_, String>(1), e["event_id"].as_str().unwrap());
        assert_eq!(
            hex::encode(r.get::<_, Vec<u8>>(2)),
            e["hash"].as_str().unwrap()
        );
        let prev: Option<Vec<u8>> = r.get(3);
        assert_eq!(
            prev.map(hex::encode),
            e["prev_hash"].as_str().map(String::from)
        );
    }
}

#[test]
fn a_fenced_writer_cannot_append() {
    let Some(pg) = Postgres::start("a_fenced_writer_cannot_append") else {
        return;
    };
    let url = pg.url();
    let mut a = PgLog::open(settings(&url, "node-a", 30.0)).unwrap();
    let mut b = PgLog::open(settings(&url, "node-b", 30.0)).unwrap();
    let epoch_a = a.try_lead().unwrap().expect("a free lease is taken");
    // The lease is a's and has not expired: b cannot take it.
    assert_eq!(b.try_lead().unwrap(), None);
    assert_eq!(b.lease_state().unwrap().holder, "node-a");
    let e1 = row(1, None, "x1");
    let h1 = e1.hash;
    let empty = a.head().unwrap();
    a.append(
        empty,
        &Rows {
            events: vec![e1],
            bundles: vec![],
        },
    )
    .unwrap();
    // A writer that does not lead cannot append either.
    let at = b.head().unwrap();
    let err = b
        .append(
            at,
            &Rows {
                events: vec![row(2, Some(h1), "y2")],
                bundles: vec![],
            },
        )
        .unwrap_err();
    assert!(err.is_fenced(), "{err}");
    // a pauses past its lease (here: the lease is made to expire); b takes over.
    pg.client()
        .execute(
            "UPDATE leader SET expires_at = now() - interval '1 second'",
            &[],
        )
        .unwrap();
    let epoch_b = b.try_lead().unwrap().expect("an expired lease is taken");
    assert!(epoch_b > epoch_a);
    // a resumes and tries to append: fenced, nothing written.
    let head = a.head().unwrap();
    let err = a
        .append(
            head,
            &Rows {
                events: vec![row(2, Some(h1), "a2")],
                bundles: vec![],
            },
        )
        .unwrap_err();
    assert!(err.is_fenced(), "{err}");
    assert!(err.to_string().contains("node-b"), "{err}");
    // b continues the chain; an append that does not follow the head is refused.
    b.append(
        head,
        &Rows {
            events: vec![row(2, Some(h1), "b2")],
            bundles: vec![],
        },
    )
    .unwrap();
    let stale = b
        .append(
            head,
            &Rows {
                events: vec![row(2, Some(h1), "b2-again")],
                bundles: vec![],
            },
        )
        .unwrap_err();
    assert!(
        matches!(stale, leviathan::pg::PgError::HeadMoved { .. }),
        "{stale}"
    );
    let mut c = pg.client();
    let ids: Vec<String> = c
        .query("SELECT event_id FROM events ORDER BY seq", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, ["x1", "b2"]);
}

#[test]
fn a_server_fenced_by_another_writer_answers_503_not_leader_and_appends_nothing() {
    let Some(pg) = Postgres::start("a_server_fenced_by_another_writer") else {
        return;
    };
    let s = pg_server(&pg.url(), &[]);
    let (st, r) = s.ingest(&bundle("b1", events("e", 2)));
    assert_eq!(st, 200, "{r}");
    // Another writer takes leadership (as after this one paused past its lease).
    let mut other = PgLog::open(settings(&pg.url(), "intruder", 30.0)).unwrap();
    pg.client()
        .execute(
            "UPDATE leader SET expires_at = now() - interval '1 second'",
            &[],
        )
        .unwrap();
    other
        .try_lead()
        .unwrap()
        .expect("the expired lease is taken");
    for i in 0..2 {
        let (st, r) = s.ingest(&bundle(&format!("b2-{i}"), events(&format!("f{i}"), 2)));
        assert_eq!(st, 503, "{r}");
        assert_eq!(r["error"]["code"], "not_leader", "{r}");
        assert!(
            r["error"]["message"].as_str().unwrap().contains("intruder")
                || r["error"]["message"].as_str().unwrap().contains("lease"),
            "{r}"
        );
    }
    let mut c = pg.client();
    assert_eq!(pg_count(&mut c, "events"), 2);
    // Reads still answer from the local store.
    assert_eq!(s.all_events().len(), 2);
}

#[test]
fn kill_9_then_restart_on_the_same_or_a_wiped_data_dir_loses_nothing() {
    let Some(pg) = Postgres::start("kill_9_then_restart") else {
        return;
    };
    let url = pg.url();
    let mut s = pg_server(&url, &[]);
    for b in mixed_log(6) {
        let (st, r) = s.ingest(&b);
        assert_eq!(st, 200, "{r}");
    }
    let blob = b"an artifact uploaded before the kill".to_vec();
    assert_eq!(s.put_artifact(&blob).0, 201);
    let before = state(&s);
    let dir = s.keep_dir();
    s.kill();

    // Same data dir: the node takes its own lease back at once.
    let mut s = pg_server_in(dir.path(), &url, &[]);
    assert_eq!(state(&s), before);
    let (_, r) = s.ingest(&mixed_log(6)[1]);
    assert_eq!(r["status"], "duplicate", "{r}");
    s.kill();

    // A wiped data dir (a new node): it waits for the lease to expire,
    // then fills its store from PostgreSQL.
    let s = pg_server(&url, &[]);
    assert_eq!(state(&s), before);
    let n = before.0.len();
    assert!(
        caught_up(&s).contains(&format!("events={n}")),
        "{}",
        caught_up(&s)
    );
    assert_eq!(s.get("/v1/log/verify").1["ok"], true);
    // Its artifacts come from PostgreSQL too.
    assert_eq!(artifact(&s, &sha256_hex(&blob)), (200, blob.clone()));
    let (_, r) = s.ingest(&mixed_log(6)[2]);
    assert_eq!(r["status"], "duplicate", "{r}");
    let (st, r) = s.ingest(&bundle("after", events("late", 2)));
    assert_eq!(st, 200, "{r}");
    assert_eq!(
        r["first_seq"].as_u64().unwrap(),
        before.1["seq"].as_u64().unwrap() + 1
    );
}

#[test]
fn a_crash_between_the_postgres_commit_and_the_local_commit_is_repaired_at_start() {
    let Some(pg) = Postgres::start("a_crash_between_the_two_commits") else {
        return;
    };
    let url = pg.url();
    let log = mixed_log(4);
    let (first, last) = log.split_at(log.len() - 1);
    let mut s = pg_server(&url, &[]);
    for b in first {
        assert_eq!(s.ingest(b).0, 200);
    }
    let dir = s.keep_dir();
    s.stop();
    // This run dies right after PostgreSQL committed the last bundle.
    let mut s = pg_server_in(
        dir.path(),
        &url,
        &[("LEVIATHAN_TEST_CRASH_AFTER_POSTGRES_COMMIT", "true")],
    );
    let sent = s
        .req(reqwest::Method::POST, "/v1/events/ingest")
        .json(&last[0])
        .send();
    assert!(
        sent.is_err(),
        "the server answered: {:?}",
        sent.map(|r| r.status())
    );
    s.kill();
    let mut c = pg.client();
    let in_pg = pg_count(&mut c, "events") as usize;
    let expected: usize = log
        .iter()
        .map(|b| b["events"].as_array().unwrap().len())
        .sum();
    assert_eq!(in_pg, expected, "the last bundle is in PostgreSQL");

    // The next start catches the local store up: everything is served, and the
    // graph is the one a plain fjall server builds from the same bundles.
    let s = pg_server_in(dir.path(), &url, &[]);
    let got = state(&s);
    assert_eq!(got.0.len(), expected);
    let last_len = last[0]["events"].as_array().unwrap().len();
    assert!(
        caught_up(&s).contains(&format!("events={last_len}")),
        "{}",
        caught_up(&s)
    );
    let (_, r) = s.ingest(&last[0]);
    assert_eq!(r["status"], "duplicate", "{r}");
    let plain = Server::start();
    for b in &log {
        assert_eq!(plain.ingest(b).0, 200);
    }
    assert_eq!(got, state(&plain));
}

#[test]
fn a_paused_writer_is_fenced_once_another_took_over_and_nothing_forks() {
    let Some(pg) = Postgres::start("a_paused_writer_is_fenced") else {
        return;
    };
    let url = pg.url();
    // A runs with LEVIATHAN_ROLE=auto: it starts as a replica and takes the
    // free lease at its first look.
    let a = pg_server(&url, &[("LEVIATHAN_ROLE", "auto")]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let log = mixed_log(3);
    while a.ingest(&log[0]).0 != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "A never led: {}",
            a.log.lock().unwrap().join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for b in &log[1..] {
        assert_eq!(a.ingest(b).0, 200);
    }
    // A pauses (a GC pause, a stalled VM) past its 2 s lease.
    a.signal("-STOP");
    // B, a new node, waits for the lease to run out, takes over, catches up.
    let started = std::time::Instant::now();
    let b = pg_server(&url, &[]);
    let took_over = started.elapsed();
    let (st, r) = b.ingest(&bundle("from-b", events("b", 3)));
    assert_eq!(st, 200, "{r}");
    // A bundle sent to A while it is paused is taken when it resumes.
    let a_base = a.base.clone();
    let in_flight = std::thread::spawn(move || {
        let c = reqwest::blocking::Client::new();
        parse(
            c.post(format!("{a_base}/v1/events/ingest"))
                .bearer_auth(TOKEN)
                .json(&bundle("from-a", events("a", 2)))
                .send()
                .unwrap(),
        )
    });
    a.signal("-CONT");
    let (st, r) = in_flight.join().unwrap();
    assert_eq!(st, 503, "{r}");
    assert_eq!(r["error"]["code"], "not_leader", "{r}");
    let (st, r) = a.ingest(&bundle("from-a-2", events("a2", 1)));
    assert_eq!(
        (st, r["error"]["code"].as_str()),
        (503, Some("not_leader")),
        "{r}"
    );

    // Nothing of A's after the pause is stored, and the chain is one chain.
    let mut c = pg.client();
    let from_a: i64 = c
        .query_one(
            "SELECT count(*) FROM events WHERE event_id IN ('a-0', 'a-1', 'a2-0')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(from_a, 0);
    let served = b.all_events();
    assert_eq!(served.len() as i64, pg_count(&mut c, "events"));
    assert_eq!(b.get("/v1/log/verify").1["ok"], true);

    // A stepped down and follows B as a replica: it serves B's log, with
    // B's state digest.
    let (st, r) = b.ingest(&bundle("from-b-2", events("b2", 2)));
    assert_eq!(st, 200, "{r}");
    let head = r["head_seq"].as_u64().unwrap();
    wait_applied(&a, head);
    assert_eq!(state(&a), state(&b));
    assert!(
        a.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("follows the log as a replica")),
        "A did not say it stepped down"
    );
    let (st, r) = a.ingest(&bundle("from-a-3", events("a3", 1)));
    assert_eq!(
        (st, r["error"]["code"].as_str()),
        (503, Some("not_leader")),
        "{r}"
    );
    eprintln!("B took over {took_over:?} after A paused (lease 2 s)");
}

#[test]
fn failover_under_load_after_kill_9_loses_nothing_acknowledged_and_appends_nothing_twice() {
    let Some(pg) = Postgres::start("failover_under_load") else {
        return;
    };
    let url = pg.url();
    let mut a = pg_server(&url, &[]);
    // The standby starts now and waits for the lease (its start returns once it leads).
    let standby = {
        let url = url.clone();
        std::thread::spawn(move || pg_server(&url, &[]))
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked: Acked = Default::default();
    let clients = ingest_load(&a.base, &stop, &acked);
    // Kill A once a good share has been acknowledged.
    while acked.lock().unwrap().len() < 40 {
        std::thread::sleep(Duration::from_millis(20));
    }
    a.kill();
    let killed = std::time::Instant::now();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let sent: Vec<Value> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    let b = standby.join().unwrap();
    let took_over = killed.elapsed();
    assert!(
        took_over < Duration::from_secs(2 + 30),
        "the standby took {took_over:?} to lead"
    );
    // Every acknowledged bundle is there, at the seqs it was acknowledged with.
    for (bundle, answer) in acked.lock().unwrap().iter() {
        let (st, r) = b.ingest(bundle);
        assert_eq!(st, 200, "{r}");
        assert_eq!(r["status"], "duplicate", "{r}");
        assert_eq!(r["first_seq"], answer["first_seq"]);
        assert_eq!(r["last_seq"], answer["last_seq"]);
    }
    // Every bundle sent can be retried on B: appended once, whatever A did.
    for bundle in &sent {
        let (st, r) = b.ingest(bundle);
        assert_eq!(st, 200, "{r}");
    }
    let total: usize = sent.len() * 5;
    let mut c = pg.client();
    assert_eq!(pg_count(&mut c, "events") as usize, total);
    assert_eq!(b.all_events().len(), total);
    assert_eq!(b.get("/v1/log/verify").1["ok"], true);
    eprintln!(
        "{} bundles acknowledged by A before kill -9; B led {took_over:?} after it",
        acked.lock().unwrap().len()
    );
}

/// Waits (bounded) until `s` has applied `seq`; panics past the deadline.
fn wait_applied(s: &Server, seq: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (st, p) = s.get("/v1/projection");
        if st == 200 && p["applied_seq"].as_u64() >= Some(seq) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} did not apply seq {seq} within 60 s: {p}",
            s.base
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn two_replicas_follow_the_writer_and_agree_on_the_state_digest_after_concurrent_ingest() {
    let Some(pg) = Postgres::start("two_replicas_follow_the_writer") else {
        return;
    };
    let url = pg.url();
    let writer = pg_server(&url, &[]);
    let early = pg_server(&url, &[("LEVIATHAN_ROLE", "replica")]);
    let log = mixed_log(8);
    assert_eq!(writer.ingest(&log[0]).0, 200);
    // Two clients at once.
    std::thread::scope(|scope| {
        for part in [&log[1..5], &log[5..]] {
            let w = &writer;
            scope.spawn(move || {
                for b in part {
                    let (st, r) = w.ingest(b);
                    assert_eq!(st, 200, "{r}");
                }
            });
        }
    });
    // A replica started after the ingest catches up at start.
    let late = pg_server(&url, &[("LEVIATHAN_ROLE", "replica")]);
    let head = writer.get("/v1/log/head").1["seq"].as_u64().unwrap();
    for r in [&early, &late] {
        wait_applied(r, head);
    }
    let expected = state(&writer);
    assert_eq!(state(&early), expected);
    assert_eq!(state(&late), expected);
    // Idempotency answers from a replica's copy are the writer's.
    let (st, r) = early.ingest(&log[3]);
    assert_eq!(st, 503, "{r}");
    assert_eq!(r["error"]["code"], "not_leader", "{r}");

    // A batch that appends no event (a new bundle id over known events), then
    // one that does: the replicas follow both.
    let (st, r) = writer
        .ingest(&json!({"target": "radix", "bundle_id": "again", "events": log[2]["events"]}));
    assert_eq!((st, r["ingested"].as_u64()), (200, Some(0)), "{r}");
    let (st, r) = writer.ingest(&bundle("last", events("last", 3)));
    assert_eq!(st, 200, "{r}");
    let head = r["last_seq"].as_u64().unwrap();
    for r in [&early, &late] {
        wait_applied(r, head);
        assert_eq!(state(r), state(&writer));
    }

    // GET /v1/cluster, from any member: all three, in agreement, one leader.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let view = loop {
        let (st, v) = late.get("/v1/cluster");
        assert_eq!(st, 200, "{v}");
        let members = v["members"].as_array().unwrap();
        if members.len() == 3
            && members
                .iter()
                .all(|m| m["applied_seq"].as_u64() == Some(head))
        {
            break v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "members never all at {head}: {v}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(view["head_seq"].as_u64(), Some(head), "{view}");
    let members = view["members"].as_array().unwrap();
    for m in members {
        assert_eq!(m["digest_agrees"], true, "{view}");
        assert_eq!(m["same_projector_set"], true, "{view}");
        assert_eq!(m["lag_seqs"], 0, "{view}");
        assert_eq!(m["state_digest"], state(&writer).2, "{view}");
    }
    let leaders: Vec<&Value> = members.iter().filter(|m| m["leader"] == true).collect();
    assert_eq!(leaders.len(), 1, "{view}");
    assert_eq!(leaders[0]["role"], "writer", "{view}");
    assert_eq!(
        members.iter().filter(|m| m["role"] == "replica").count(),
        2,
        "{view}"
    );
    // On the embedded store alone there is no cluster.
    let (st, r) = Server::start().get("/v1/cluster");
    assert_eq!(
        (st, r["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{r}"
    );
}

fn seq_header(resp: &reqwest::blocking::Response) -> u64 {
    resp.headers()
        .get("x-leviathan-seq")
        .expect("X-Leviathan-Seq on a read")
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_client_reads_its_own_writes_from_a_replica_with_min_seq() {
    let Some(pg) = Postgres::start("a_client_reads_its_own_writes") else {
        return;
    };
    let url = pg.url();
    let writer = pg_server(&url, &[]);
    let replica = pg_server(&url, &[("LEVIATHAN_ROLE", "replica")]);
    for round in 0..5 {
        let id = format!("mine-{round}");
        let (st, r) = writer.ingest(&bundle(&id, events(&id, 3)));
        assert_eq!(st, 200, "{r}");
        let last = r["last_seq"].as_u64().unwrap();
        // Right after the write, through the replica: min_seq makes it wait.
        let resp = replica
            .req(
                reqwest::Method::GET,
                &format!("/v1/events/{id}-2?min_seq={last}"),
            )
            .send()
            .unwrap();
        assert!(seq_header(&resp) >= last);
        let (st, e) = parse(resp);
        assert_eq!(st, 200, "{e}");
        assert_eq!(e["seq"].as_u64(), Some(last));
    }
    // The writer's reads carry the header too.
    let resp = writer
        .req(reqwest::Method::GET, "/v1/log/head")
        .send()
        .unwrap();
    let at = seq_header(&resp);
    assert_eq!(parse(resp).1["seq"].as_u64(), Some(at));
    // A seq no one has appended: a bounded wait, then 503 not_caught_up.
    let far = at + 1000;
    let started = std::time::Instant::now();
    let (st, r) = replica.get(&format!("/v1/log/head?min_seq={far}&timeout_ms=1000"));
    assert_eq!(
        (st, r["error"]["code"].as_str()),
        (503, Some("not_caught_up")),
        "{r}"
    );
    assert_eq!(
        r["error"]["details"]["applied_seq"].as_u64(),
        Some(at),
        "{r}"
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
    // A malformed min_seq is refused as any bad query parameter is, not waited on.
    let (st, r) = replica.get("/v1/log/head?min_seq=soon");
    assert_eq!(
        (st, r["error"]["code"].as_str()),
        (422, Some("invalid_query")),
        "{r}"
    );
}

#[test]
fn an_auto_replica_serves_reads_and_takes_over_when_the_writer_dies() {
    let Some(pg) = Postgres::start("an_auto_replica_takes_over") else {
        return;
    };
    let url = pg.url();
    let mut a = pg_server(&url, &[]);
    let b = pg_server(&url, &[("LEVIATHAN_ROLE", "auto")]);
    let log = mixed_log(4);
    for bundle in &log {
        assert_eq!(a.ingest(bundle).0, 200);
    }
    let head = a.get("/v1/log/head").1["seq"].as_u64().unwrap();
    wait_applied(&b, head);
    // While A leads, B refuses ingest.
    let (st, r) = b.ingest(&bundle("too-early", events("early", 1)));
    assert_eq!(
        (st, r["error"]["code"].as_str()),
        (503, Some("not_leader")),
        "{r}"
    );
    let blob = b"uploaded to the writer that dies".to_vec();
    assert_eq!(a.put_artifact(&blob).0, 201);
    let before = state(&a);
    a.kill();
    let killed = std::time::Instant::now();
    // B keeps serving reads, then takes over within the lease (2 s) and a poll.
    assert_eq!(state(&b), before);
    let deadline = killed + Duration::from_secs(30);
    let r = loop {
        let (st, r) = b.ingest(&bundle("after-failover", events("late", 2)));
        if st == 200 {
            break r;
        }
        assert_eq!(r["error"]["code"], "not_leader", "{r}");
        assert!(
            std::time::Instant::now() < deadline,
            "B never took over: {r}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let took = killed.elapsed();
    assert_eq!(r["first_seq"].as_u64(), Some(head + 1), "{r}");
    // The node that took over serves what was uploaded to the dead one.
    assert_eq!(artifact(&b, &sha256_hex(&blob)), (200, blob.clone()));
    for bundle in &log {
        let (st, r) = b.ingest(bundle);
        assert_eq!((st, r["status"].as_str()), (200, Some("duplicate")), "{r}");
    }
    assert_eq!(b.get("/v1/log/verify").1["ok"], true);
    let mut c = pg.client();
    assert_eq!(pg_count(&mut c, "events") as u64, head + 2);
    eprintln!("the auto replica appended {took:?} after the writer's kill -9 (lease 2 s)");
}

/// Waits (60 s at most) until `s` takes an ingest of `id`.
fn ingest_eventually(s: &Server, id: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (st, r) = s.ingest(&bundle(id, events(id, 1)));
        if st == 200 {
            return r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{id}: never taken: {r}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// PostgreSQL stopped and started again (a restart, a failover). A writer
/// whose append's outcome it could not learn stops, and gives its lease up,
/// so the `auto` standby takes over (it kept renewing it, and nothing took
/// ingest until a restart by hand). An `auto` leader that lost its lease in
/// the outage steps down and follows again once PostgreSQL is back (it
/// stopped for good). Nobody spins: the retries are paced and their
/// warnings rate-limited (a replica logged ~48k lines a second).
#[test]
fn a_postgres_outage_fails_over_to_the_standby_and_nothing_stops_for_good_or_spins() {
    let Some(mut pg) = Postgres::start("a_postgres_outage_fails_over") else {
        return;
    };
    let url = pg.url();
    let a = pg_server(&url, &[]);
    let b = pg_server(&url, &[("LEVIATHAN_ROLE", "auto")]);
    let first = ingest_eventually(&a, "before");
    wait_applied(&b, first["last_seq"].as_u64().unwrap());

    pg.stop();
    // The writer cannot learn its append's outcome: it stops, saying why.
    let (st, r) = a.ingest(&bundle("during", events("during", 1)));
    assert_eq!(st, 503, "{r}");
    // Back within the lease (2 s): the writer's renewals would succeed again.
    pg.restart();

    // The standby takes the lease the stopped writer no longer renews.
    let r = ingest_eventually(&b, "after");
    assert!(r["first_seq"].as_u64().unwrap() > first["last_seq"].as_u64().unwrap());
    let (st, ready) = a.get("/readyz");
    assert_eq!(st, 503, "{ready}");
    assert_eq!(
        ready["error"]["details"]["cause"], "postgres_unavailable",
        "{ready}"
    );
    let retries = |s: &Server| {
        s.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("retrying"))
            .count()
    };
    assert!(
        retries(&b) < 20,
        "the standby's retries flooded its log: {}",
        retries(&b)
    );

    // Now B leads alone (auto): an outage longer than its lease (2 s) makes
    // it step down; once PostgreSQL is back it follows, takes the free lease
    // again and takes ingest.
    drop(a);
    pg.stop();
    std::thread::sleep(Duration::from_secs(5));
    pg.restart();
    ingest_eventually(&b, "after-second-outage");
    assert_eq!(b.get("/readyz").0, 200);
    assert_eq!(b.get("/v1/log/verify").1["ok"], true);
    assert!(
        retries(&b) < 40,
        "the retries flooded the log: {}",
        retries(&b)
    );
}

#[test]
fn a_replica_with_another_projector_set_is_reported_and_refuses_reads() {
    let Some(pg) = Postgres::start("a_replica_with_another_projector_set") else {
        return;
    };
    let url = pg.url();
    let writer = pg_server(&url, &[]);
    for b in mixed_log(2) {
        assert_eq!(writer.ingest(&b).0, 200);
    }
    // Same rules, other limits: another projector set (fingerprint).
    let odd = pg_server(
        &url,
        &[
            ("LEVIATHAN_ROLE", "replica"),
            ("LEVIATHAN_PROJECTORS", "core#fuel=40000000"),
        ],
    );
    // It compares itself with the writer before it serves anything: its very
    // first read is refused (it served reads until its first publish round).
    let (st, refused) = odd.get("/v1/log/head");
    assert_eq!(
        st, 503,
        "the replica served a read before it compared: {refused}"
    );
    assert_eq!(refused["error"]["code"], "replica_disagrees", "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("projector set"),
        "{refused}"
    );
    // The writer's view of the cluster reports it.
    let (st, view) = writer.get("/v1/cluster");
    assert_eq!(st, 200, "{view}");
    let members = view["members"].as_array().unwrap();
    let odd_member = members
        .iter()
        .find(|m| m["role"] == "replica")
        .unwrap_or_else(|| panic!("{view}"));
    assert_eq!(odd_member["same_projector_set"], false, "{view}");
    // The writer itself keeps serving.
    assert_eq!(writer.get("/v1/log/head").0, 200);
    // And the replica's own /v1/cluster still answers, to say why.
    assert_eq!(odd.get("/v1/cluster").0, 200);

    // Restarted with the writer's set, it builds that set's generation
    // online and switches to it; it then agrees and serves reads again (it
    // used to refuse them until a second restart: the finding about the old
    // set stayed).
    let mut odd = odd;
    odd.stop();
    let dir = odd.keep_dir();
    let back = pg_server_in(dir.path(), &url, &[("LEVIATHAN_ROLE", "replica")]);
    // Reads, and readiness (both say replica_disagrees until the switch).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for path in ["/v1/log/head", "/readyz"] {
        loop {
            let (st, r) = back.get(path);
            if st == 200 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the replica on the writer's set never answered {path} again: {r}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// `GET /v1/artifacts/{sha}` on `s`: (status, body bytes).
fn artifact(s: &Server, sha: &str) -> (u16, Vec<u8>) {
    let resp = s.get_artifact(sha);
    let st = resp.status().as_u16();
    (st, resp.bytes().unwrap().to_vec())
}

/// `(rows in artifacts, rows in artifact_chunks)` for one digest.
fn artifact_rows(c: &mut postgres::Client, data: &[u8]) -> (i64, i64) {
    let key = leviathan::digest::Sha256::of(data).as_bytes().to_vec();
    let mut count = |table: &str| -> i64 {
        c.query_one(
            &format!("SELECT count(*) FROM {table} WHERE sha256 = $1"),
            &[&key],
        )
        .unwrap()
        .get(0)
    };
    (count("artifacts"), count("artifact_chunks"))
}

#[test]
fn artifacts_live_in_postgres_every_node_serves_them_and_a_corrupt_copy_is_never_served() {
    let Some(pg) = Postgres::start("artifacts_live_in_postgres") else {
        return;
    };
    let url = pg.url();
    let writer = pg_server(&url, &[]);
    let replica = pg_server(&url, &[("LEVIATHAN_ROLE", "replica")]);
    let mut c = pg.client();

    // A small artifact uploaded to the writer is served by the replica.
    let small = b"the build log of attempt 1".to_vec();
    let (st, r) = writer.put_artifact(&small);
    assert_eq!((st, r["created"].as_bool()), (201, Some(true)), "{r}");
    assert_eq!(artifact_rows(&mut c, &small), (1, 1));
    assert_eq!(
        artifact(&replica, &sha256_hex(&small)),
        (200, small.clone())
    );

    // A large one (three 1 MiB chunks, the last partial) uploaded to the
    // replica (any node takes uploads) round-trips through PostgreSQL.
    let large: Vec<u8> = (0..(2 * 1024 * 1024 + 4321))
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let (st, r) = replica.send(
        replica
            .req(reqwest::Method::POST, "/v1/artifacts")
            .body(large.clone()),
    );
    assert_eq!(st, 201, "{r}");
    assert_eq!(r["sha256"], sha256_hex(&large), "{r}");
    assert_eq!(artifact_rows(&mut c, &large), (1, 3));
    let (st, got) = artifact(&writer, &sha256_hex(&large));
    assert_eq!(st, 200);
    assert!(got == large, "the writer served other bytes");
    let (st, r) = writer.send(writer.req(
        reqwest::Method::HEAD,
        &format!("/v1/artifacts/{}", sha256_hex(&large)),
    ));
    assert_eq!(st, 200, "{r}");

    // The same content again is a no-op, on either node.
    let (st, r) = writer.put_artifact(&large);
    assert_eq!((st, r["created"].as_bool()), (200, Some(false)), "{r}");
    assert_eq!(artifact_rows(&mut c, &large), (1, 3));

    // The writer checks a bundle's references against PostgreSQL too.
    let absent = b"never uploaded".to_vec();
    let only_on_replica = b"uploaded to the replica only".to_vec();
    assert_eq!(replica.put_artifact(&only_on_replica).0, 201);
    let mut b = bundle("with-refs", events("w", 1));
    b["artifacts"] = json!([
        {"sha256": sha256_hex(&only_on_replica), "kind": "log", "uri": "file:///r", "size": 28},
        {"sha256": sha256_hex(&absent), "kind": "log", "uri": "file:///a", "size": 14},
    ]);
    let (st, r) = writer.ingest(&b);
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["missing_artifacts"], json!([sha256_hex(&absent)]), "{r}");
    assert_eq!(artifact(&writer, &sha256_hex(&absent)).0, 404);

    // The append-only triggers cover the artifact tables.
    let key = leviathan::digest::Sha256::of(&small).as_bytes().to_vec();
    let err = c
        .execute("DELETE FROM artifact_chunks WHERE sha256 = $1", &[&key])
        .unwrap_err();
    assert!(
        err.as_db_error().unwrap().message().contains("append-only"),
        "{err:?}"
    );
    let err = c
        .execute("UPDATE artifacts SET size = 1 WHERE sha256 = $1", &[&key])
        .unwrap_err();
    assert!(
        err.as_db_error().unwrap().message().contains("append-only"),
        "{err:?}"
    );

    // A corrupted chunk (written past the trigger by a superuser) is refused
    // with a clear error, never served, never cached: asked again, the
    // replica refuses again.
    let victim: Vec<u8> = (0..(1024 * 1024 + 10))
        .map(|i: u32| (i % 253) as u8)
        .collect();
    assert_eq!(writer.put_artifact(&victim).0, 201);
    let vkey = leviathan::digest::Sha256::of(&victim).as_bytes().to_vec();
    c.batch_execute("ALTER TABLE artifact_chunks DISABLE TRIGGER artifact_chunks_append_only")
        .unwrap();
    c.execute(
        "UPDATE artifact_chunks SET data = set_byte(data, 5, (get_byte(data, 5) + 1) % 256) \
         WHERE sha256 = $1 AND ord = 1",
        &[&vkey],
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    for _ in 0..2 {
        let (st, r) = replica.get(&format!("/v1/artifacts/{}", sha256_hex(&victim)));
        assert_eq!(st, 500, "{r}");
        assert_eq!(r["error"]["code"], "artifact_corrupt", "{r}");
        assert!(
            r["error"]["message"].as_str().unwrap().contains("corrupt"),
            "{r}"
        );
    }
    // A missing chunk too.
    c.execute(
        "DELETE FROM artifact_chunks WHERE sha256 = $1 AND ord = 0",
        &[&vkey],
    )
    .unwrap();
    let (st, r) = replica.get(&format!("/v1/artifacts/{}", sha256_hex(&victim)));
    assert_eq!(
        (st, r["error"]["code"].as_str()),
        (500, Some("artifact_corrupt")),
        "{r}"
    );
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("chunk 0 of 2 is missing"),
        "{r}"
    );
    // The writer kept its own good copy from the upload.
    assert_eq!(artifact(&writer, &sha256_hex(&victim)), (200, victim));
}

/// Two clients ingesting into `base` until `stop`: (every bundle sent, the
/// acknowledged ones with their answers).
type Acked = std::sync::Arc<std::sync::Mutex<Vec<(Value, Value)>>>;

fn ingest_load(
    base: &str,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
    acked: &Acked,
) -> Vec<std::thread::JoinHandle<Vec<Value>>> {
    (0..2)
        .map(|c| {
            let (base, stop, acked) = (base.to_string(), stop.clone(), acked.clone());
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap();
                let mut sent = Vec::new();
                for i in 0..2000 {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    let b = bundle(&format!("c{c}-{i}"), events(&format!("c{c}-{i}"), 5));
                    sent.push(b.clone());
                    let Ok(resp) = http
                        .post(format!("{base}/v1/events/ingest"))
                        .bearer_auth(TOKEN)
                        .json(&b)
                        .send()
                    else {
                        break;
                    };
                    let (st, r) = parse(resp);
                    if st == 200 {
                        acked.lock().unwrap().push((b, r));
                    }
                }
                sent
            })
        })
        .collect()
}

#[test]
fn a_postgres_writer_killed_under_ingest_restarts_with_everything_acknowledged_and_the_digest_of_a_node_filled_from_postgres(
) {
    // The local batch is not fsynced in postgres mode (PostgreSQL is the
    // durable copy): whatever the local store kept of the kill, the restart
    // catches it up, and the result is what a node built from PostgreSQL alone has.
    let Some(pg) = Postgres::start("a_postgres_writer_killed_under_ingest") else {
        return;
    };
    let url = pg.url();
    let mut a = pg_server(&url, &[]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked: Acked = Default::default();
    let clients = ingest_load(&a.base, &stop, &acked);
    while acked.lock().unwrap().len() < 30 {
        std::thread::sleep(Duration::from_millis(20));
    }
    a.kill();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let sent: Vec<Value> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    let dir = a.keep_dir();
    let a = pg_server_in(dir.path(), &url, &[]);
    for (bundle, answer) in acked.lock().unwrap().iter() {
        let (st, r) = a.ingest(bundle);
        assert_eq!((st, r["status"].as_str()), (200, Some("duplicate")), "{r}");
        assert_eq!(r["first_seq"], answer["first_seq"]);
        assert_eq!(r["last_seq"], answer["last_seq"]);
    }
    let mut c = pg.client();
    let in_pg = pg_count(&mut c, "events") as usize;
    assert!(in_pg >= acked.lock().unwrap().len() * 5);
    assert!(in_pg <= sent.len() * 5);
    let restarted = state(&a);
    assert_eq!(restarted.0.len(), in_pg);
    assert_eq!(a.get("/v1/log/verify").1["ok"], true);
    // A node that never saw the writer, filled from PostgreSQL alone.
    let fresh = pg_server(&url, &[("LEVIATHAN_ROLE", "replica")]);
    wait_applied(&fresh, in_pg as u64);
    assert_eq!(state(&fresh), restarted);
}

#[test]
fn a_copied_data_dir_is_refused_while_its_node_id_is_live_and_starts_once_it_is_gone() {
    let Some(pg) = Postgres::start("a_copied_data_dir_is_refused") else {
        return;
    };
    let url = pg.url();
    let mut a = pg_server(&url, &[]);
    assert_eq!(a.ingest(&bundle("one", events("one", 3))).0, 200);
    let before = state(&a);
    // A copy of A's data dir shares its node id.
    let copy = tempfile::tempdir().unwrap();
    let id = std::fs::read_to_string(a.data_dir.join("node-id")).unwrap();
    std::fs::write(copy.path().join("node-id"), &id).unwrap();
    let mut cmd = serve_command(copy.path());
    cmd.env("LEVIATHAN_STORE", "postgres")
        .env("LEVIATHAN_POSTGRES_URL", &url)
        .env("LEVIATHAN_POSTGRES_LEASE_SECS", "2")
        .env("LEVIATHAN_ROLE", "replica");
    let out = refused(cmd);
    let file = copy.path().join("node-id");
    assert!(
        out.contains("another running process uses this node's id")
            && out.contains(&format!("delete {}", file.display())),
        "{out}"
    );
    // A is untouched: still the writer.
    assert_eq!(a.ingest(&bundle("two", events("two", 1))).0, 200);
    let before_kill = state(&a);
    assert_ne!(before_kill, before);

    // Once A is gone (kill -9: its heartbeat stops), the id can be taken:
    // the copy starts and serves A's log from PostgreSQL.
    a.kill();
    let b = pg_server_in(copy.path(), &url, &[("LEVIATHAN_ROLE", "replica")]);
    wait_applied(&b, before_kill.1["seq"].as_u64().unwrap());
    assert_eq!(state(&b), before_kill);
    let (st, view) = b.get("/v1/cluster");
    assert_eq!(st, 200, "{view}");
    let members = view["members"].as_array().unwrap();
    assert_eq!(members.len(), 1, "{view}");
    assert_eq!(members[0]["node_id"], id.trim(), "{view}");
}

/// The instance token that holds `node`'s members row.
fn member_instance(c: &mut postgres::Client, node: &str) -> Option<String> {
    c.query_opt("SELECT instance FROM members WHERE node_id = $1", &[&node])
        .unwrap()
        .map(|r| r.get(0))
}

fn node_id_of(s: &Server) -> String {
    std::fs::read_to_string(s.data_dir.join("node-id"))
        .unwrap()
        .trim()
        .to_string()
}

/// A writer paused (SIGSTOP) long enough for a copy of its data dir to take
/// its node id and the lease, then resumed (SIGCONT), must not take the lease
/// back nor publish over the copy's members row: it finds its id taken over,
/// says so naming both processes' tokens, and exits non-zero. The copy keeps
/// the id, the lease (its epoch never moves again) and ingest.
#[test]
fn a_resumed_writer_whose_node_id_a_copy_took_over_exits_and_never_leads_again() {
    let Some(pg) = Postgres::start("a_resumed_writer_whose_node_id") else {
        return;
    };
    let url = pg.url();
    let mut a = pg_server(&url, &[]);
    assert_eq!(a.ingest(&bundle("one", events("one", 3))).0, 200);
    let id = node_id_of(&a);
    let mut c = pg.client();
    let a_instance = member_instance(&mut c, &id).unwrap();
    a.signal("-STOP");
    let copy = tempfile::tempdir().unwrap();
    copy_tree(&a.data_dir, copy.path());
    // The copy finds the id's heartbeat still (A is paused): it takes the
    // id, and the lease (the id's own) at once.
    let b = pg_server_in(copy.path(), &url, &[]);
    let (st, r) = b.ingest(&bundle("two", events("two", 2)));
    assert_eq!(st, 200, "{r}");
    let b_instance = member_instance(&mut c, &id).unwrap();
    assert_ne!(b_instance, a_instance);
    let lease = |c: &mut postgres::Client| -> (i64, String) {
        let r = c
            .query_one("SELECT epoch, holder FROM leader WHERE id = 1", &[])
            .unwrap();
        (r.get(0), r.get(1))
    };
    let b_lease = lease(&mut c);
    assert_eq!(b_lease.1, id);

    a.signal("-CONT");
    let status = a.wait_exit(Duration::from_secs(20));
    let a_log = a.log.lock().unwrap().join("\n");
    let status = status.unwrap_or_else(|| panic!("A still runs after its id was taken:\n{a_log}"));
    assert!(!status.success(), "A exited with {status}:\n{a_log}");
    assert!(
        a_log.contains("another process took this node's id")
            && a_log.contains(&a_instance)
            && a_log.contains(&b_instance),
        "{a_log}"
    );
    // The id's row is still B's, the lease B's epoch: A never led again.
    assert_eq!(member_instance(&mut c, &id), Some(b_instance.clone()));
    assert_eq!(lease(&mut c), b_lease);
    let (st, r) = b.ingest(&bundle("three", events("three", 1)));
    assert_eq!(st, 200, "{r}");
    let (st, view) = b.get("/v1/cluster");
    assert_eq!(st, 200, "{view}");
    assert_eq!(view["members"].as_array().unwrap().len(), 1, "{view}");
    assert_eq!(view["members"][0]["state"], "live", "{view}");
    assert_eq!(view["members"][0]["leader"], true, "{view}");
}

/// The members of `s`'s cluster view, by node id.
fn members_of(s: &Server) -> std::collections::BTreeMap<String, Value> {
    let (st, view) = s.get("/v1/cluster");
    assert_eq!(st, 200, "{view}");
    view["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["node_id"].as_str().unwrap().to_string(), m.clone()))
        .collect()
}

/// Waits (bounded) until `s`'s cluster view satisfies `ok`.
fn wait_members(
    s: &Server,
    what: &str,
    ok: impl Fn(&std::collections::BTreeMap<String, Value>) -> bool,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let members = members_of(s);
        if ok(&members) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {members:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A node refused at start (here a data dir of another database) leaves no
/// members row behind; the listing says which members are live, stopped
/// cleanly or gone (killed), and drops a member not heard from for longer
/// than members are kept.
#[test]
fn a_refused_start_leaves_no_member_and_the_listing_says_who_is_live_stopped_or_gone() {
    let Some(pg) = Postgres::start("a_refused_start_leaves_no_member") else {
        return;
    };
    let (a, b) = (pg.create_db("loga"), pg.create_db("logb"));
    let mut s = pg_server(&a, &[]);
    assert_eq!(s.ingest(&bundle("b1", events("e", 3))).0, 200);
    s.stop();
    let refused_id = node_id_of(&s);
    let dir = s.keep_dir();
    let mut cmd = serve_command(dir.path());
    cmd.env("LEVIATHAN_STORE", "postgres")
        .env("LEVIATHAN_POSTGRES_URL", &b)
        .env("LEVIATHAN_POSTGRES_LEASE_SECS", "2");
    let err = refused(cmd);
    assert!(err.contains("ahead of the PostgreSQL log"), "{err}");
    let mut c = Postgres::connect(&b);
    assert_eq!(member_instance(&mut c, &refused_id), None, "{err}");

    let w = pg_server(&b, &[]);
    let mut r = pg_server(&b, &[("LEVIATHAN_ROLE", "replica")]);
    let mut k = pg_server(&b, &[("LEVIATHAN_ROLE", "replica")]);
    let (w_id, r_id, k_id) = (node_id_of(&w), node_id_of(&r), node_id_of(&k));
    wait_members(&w, "every node live", |m| {
        m.len() == 3 && m.values().all(|m| m["state"] == "live")
    });
    assert!(!members_of(&w).contains_key(&refused_id));
    r.stop();
    k.kill();
    wait_members(&w, "r stopped, k gone, w live", |m| {
        m[&r_id]["state"] == "stopped" && m[&k_id]["state"] == "gone" && m[&w_id]["state"] == "live"
    });
    // Not heard from for longer than members are kept: removed.
    c.execute(
        "UPDATE members SET updated_at = now() - interval '8 days' WHERE node_id = $1",
        &[&k_id],
    )
    .unwrap();
    wait_members(&w, "k removed", |m| m.len() == 2 && !m.contains_key(&k_id));
}

/// Waits (bounded) until a line of `s`'s log contains `text`.
fn wait_log(s: &Server, text: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !s.log.lock().unwrap().iter().any(|l| l.contains(text)) {
        assert!(
            std::time::Instant::now() < deadline,
            "no log line says {text:?}:\n{}",
            s.log.lock().unwrap().join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_replica_whose_graph_disagrees_rebuilds_it_from_its_log_and_serves_again() {
    let Some(pg) = Postgres::start("a_replica_whose_graph_disagrees") else {
        return;
    };
    let url = pg.url();
    let writer = pg_server(&url, &[]);
    for b in mixed_log(3) {
        assert_eq!(writer.ingest(&b).0, 200);
    }
    let head = writer.get("/v1/log/head").1["seq"].as_u64().unwrap();
    let mut replica = pg_server(&url, &[("LEVIATHAN_ROLE", "replica")]);
    wait_applied(&replica, head);
    let dir = replica.keep_dir();
    replica.stop();
    // Damage its graph: every per-seq state digest it recorded.
    with_store(dir.path(), |db| {
        let digests = keyspace(db, "graph_digests");
        let entries: Vec<(Vec<u8>, Vec<u8>)> = digests
            .iter()
            .map(|kv| {
                let (k, v) = kv.into_inner().unwrap();
                (k.to_vec(), v.to_vec())
            })
            .collect();
        assert!(!entries.is_empty());
        for (k, mut v) in entries {
            let last = v.len() - 1;
            v[last] ^= 0xff;
            digests.insert(k, v).unwrap();
        }
    });
    let replica = pg_server_in(dir.path(), &url, &[("LEVIATHAN_ROLE", "replica")]);
    // It finds out, says so, rebuilds, and agrees again.
    wait_log(
        &replica,
        "this node stops serving reads until it agrees again",
    );
    wait_log(&replica, "rebuilt this replica's graph from its log");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while replica.get("/v1/log/head").0 != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "it never served again"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(state(&replica), state(&writer));
    let metrics = replica.metrics_text();
    assert!(
        metrics.contains("leviathan_replica_rebuilds_total 1"),
        "{metrics}"
    );
    // It keeps following, with the writer's digest.
    let (st, r) = writer.ingest(&bundle("after", events("after", 2)));
    assert_eq!(st, 200, "{r}");
    wait_applied(&replica, r["head_seq"].as_u64().unwrap());
    assert_eq!(state(&replica), state(&writer));
    let (_, view) = writer.get("/v1/cluster");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut view = view;
    while !view["members"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["digest_agrees"] == true && m["applied_seq"] == r["head_seq"])
    {
        assert!(std::time::Instant::now() < deadline, "{view}");
        std::thread::sleep(Duration::from_millis(100));
        view = writer.get("/v1/cluster").1;
    }
}

/// A self-signed certificate for 127.0.0.1 and localhost: (certificate PEM,
/// key PEM).
fn self_signed() -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

#[test]
fn tls_to_postgres_with_verify_full_and_require_and_a_wrong_ca_is_refused() {
    let (cert, key) = self_signed();
    let Some(pg) = Postgres::start_tls("tls_to_postgres", Some((&cert, &key))) else {
        return;
    };
    let certs = tempfile::tempdir().unwrap();
    let ca = certs.path().join("ca.pem");
    std::fs::write(&ca, &cert).unwrap();
    let url = format!(
        "{} sslmode=verify-full sslrootcert={}",
        pg.url(),
        ca.display()
    );

    // A server whose every connection is TLS, the certificate and name checked.
    let s = pg_server(&url, &[]);
    let (st, r) = s.ingest(&bundle("over-tls", events("tls", 3)));
    assert_eq!(st, 200, "{r}");
    let blob = b"an artifact over TLS".to_vec();
    assert_eq!(s.put_artifact(&blob).0, 201);
    assert_eq!(s.get("/v1/cluster").0, 200);
    let mut c = pg.client();
    let (tls, plain): (i64, i64) = {
        let row = c
            .query_one(
                "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
                   FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
                  WHERE a.application_name = 'leviathan'",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert!(tls >= 3, "{tls} TLS connections");
    assert_eq!(plain, 0, "a connection without TLS");

    // require: encrypted, the certificate not checked (a URI this time).
    let uri = format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=require",
        pg.port
    );
    let mut client = leviathan::pg::connect(&uri).unwrap();
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(ssl);

    // Another CA: the server refuses to start, saying why.
    let (other, _) = self_signed();
    let wrong = certs.path().join("other.pem");
    std::fs::write(&wrong, &other).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = serve_command(dir.path());
    cmd.env("LEVIATHAN_STORE", "postgres").env(
        "LEVIATHAN_POSTGRES_URL",
        format!(
            "{} sslmode=verify-full sslrootcert={}",
            pg.url(),
            wrong.display()
        ),
    );
    let out = refused(cmd);
    assert!(
        out.to_lowercase().contains("certificate"),
        "the refusal does not name the certificate: {out}"
    );
    // verify-full without a CA file is refused with directions.
    let err = leviathan::pg::connect(&format!("{} sslmode=verify-full", pg.url()))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("needs sslrootcert"), "{err}");
}

#[test]
fn a_replica_shows_each_bundle_whole_or_not_at_all() {
    // Found by a black-box session: a replica committed what it caught up
    // 2,048 events at a time, so a bundle larger than that, or one across
    // such a cut, was served half applied.
    let Some(pg) = Postgres::start("replica_bundles_whole") else {
        return;
    };
    let url = pg.url();
    let writer = pg_server(&url, &[]);
    let replica = pg_server(&url, &[("LEVIATHAN_ROLE", "replica")]);
    // Bundles of 3,001 tasks: none ends where a chunk of 2,048 would.
    let per = 3_001u64;
    let bundles = 4u64;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let seen = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let mut seen = std::collections::BTreeSet::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (st, v) = replica.get("/v1/graph/summary");
                assert_eq!(st, 200, "{v}");
                seen.insert(v["nodes_by_type"]["Task"].as_u64().unwrap_or(0));
            }
            seen
        });
        let mut head = 0;
        for b in 0..bundles {
            let evs = (0..per)
                .map(|i| {
                    let id = format!("t-{b}-{i}");
                    event(&id, "task.created", json!({"task_id": id, "title": "t"}))
                })
                .collect();
            let (st, r) = writer.ingest(&bundle(&format!("big-{b}"), evs));
            assert_eq!(st, 200, "{r}");
            head = r["last_seq"].as_u64().unwrap();
        }
        wait_applied(&replica, head);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        watcher.join().unwrap()
    });
    let (_, v) = replica.get("/v1/graph/summary");
    assert_eq!(v["nodes_by_type"]["Task"], per * bundles, "{v}");
    assert!(
        seen.len() >= 2,
        "the replica was read while it applied: {seen:?}"
    );
    let torn: Vec<_> = seen.iter().filter(|n| *n % per != 0).collect();
    assert!(
        torn.is_empty(),
        "task counts mid-bundle on the replica: {torn:?}"
    );
}

#[test]
fn a_writer_that_catches_up_longer_than_its_lease_leads_afterwards() {
    // Found by a black-box session: a writer on an empty data dir took the
    // lease, then caught up for a minute without renewing it; another node
    // took the lapsed lease meanwhile, and the first found itself fenced
    // when done (503 `not_leader` until restarted).
    let Some(pg) = Postgres::start("writer_catch_up_lease") else {
        return;
    };
    let url = pg.url();
    let mut first = pg_server(&url, &[]);
    for b in 0..4 {
        let (st, r) = first.ingest(&bundle(&format!("b{b}"), events(&format!("e{b}"), 2_000)));
        assert_eq!(st, 200, "{r}");
    }
    first.stop();
    // A rival that takes the lease once, as soon as it lapses after the
    // second node took it (and never renews it), while the second node
    // starts on an empty data dir with a lease shorter than catching up
    // 8,000 events takes.
    let started = std::sync::atomic::AtomicBool::new(false);
    let mut rival = PgLog::open(settings(&url, "rival", 2.0)).unwrap();
    let before = rival.lease_state().unwrap().epoch;
    let second = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !started.load(std::sync::atomic::Ordering::Relaxed) {
                if rival.lease_state().unwrap().epoch > before
                    && rival.try_lead().unwrap().is_some()
                {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let lease = [
            ("LEVIATHAN_ROLE", "writer"),
            ("LEVIATHAN_POSTGRES_LEASE_SECS", "2"),
        ];
        let second = pg_server(&url, &lease);
        started.store(true, std::sync::atomic::Ordering::Relaxed);
        second
    });
    assert!(
        caught_up(&second).contains("events=8000"),
        "{}",
        caught_up(&second)
    );
    let (st, r) = second.ingest(&bundle("after", events("after", 1)));
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["last_seq"], 8_001, "{r}");
    let (st, r) = second.get("/readyz");
    assert_eq!(st, 200, "{r}");
}

#[test]
fn a_postgres_nodes_data_dir_is_refused_on_the_embedded_store() {
    // Found by a black-box session: started without LEVIATHAN_STORE, a
    // PostgreSQL node's data dir opened as an embedded store and
    // acknowledged events the cluster never had; the next PostgreSQL-mode
    // start refused it as another log.
    let Some(pg) = Postgres::start("pg_dir_on_embedded") else {
        return;
    };
    let url = pg.url();
    let mut a = pg_server(&url, &[]);
    assert_eq!(a.ingest(&bundle("one", events("one", 3))).0, 200);
    let before = state(&a);
    a.stop();
    let dir = a.keep_dir();
    let file = dir.path().join("node-id");
    let out = refused(serve_command(dir.path()));
    assert!(
        out.contains("PostgreSQL cluster") && out.contains(&format!("delete {}", file.display())),
        "{out}"
    );
    // Nothing was appended: it starts again as the cluster's node, as it was.
    let b = pg_server_in(dir.path(), &url, &[]);
    assert_eq!(state(&b), before);
    assert_eq!(b.ingest(&bundle("two", events("two", 1))).0, 200);
}

#[test]
fn a_postgres_restart_during_a_nodes_start_up_catch_up_is_retried() {
    // Found by a black-box session: PostgreSQL restarted while a node on an
    // empty data dir caught up at start, and the node exited ("catching the
    // local store up from PostgreSQL: connection closed").
    let Some(mut pg) = Postgres::start("restart_during_catch_up") else {
        return;
    };
    let url = pg.url();
    let mut writer = pg_server(&url, &[]);
    for b in 0..4 {
        let (st, r) = writer.ingest(&bundle(&format!("b{b}"), events(&format!("e{b}"), 3_000)));
        assert_eq!(st, 200, "{r}");
    }
    let expected = state(&writer);
    writer.stop();
    let (tx, rx) = std::sync::mpsc::channel();
    let starting = {
        let url = url.clone();
        std::thread::spawn(move || {
            tx.send(()).unwrap();
            pg_server(&url, &[("LEVIATHAN_ROLE", "replica")])
        })
    };
    rx.recv().unwrap();
    // Well inside its catch-up of 12,000 events (seconds on a debug build).
    std::thread::sleep(Duration::from_millis(1500));
    pg.stop();
    std::thread::sleep(Duration::from_millis(500));
    pg.restart();
    let replica = starting.join().expect("the node started after the restart");
    wait_applied(&replica, 12_000);
    assert_eq!(state(&replica), expected);
    let line = caught_up(&replica);
    assert!(!line.is_empty(), "no catch-up logged");
}

/// Polls `/readyz` (30 s at most) until it answers `status` (and, for a 503,
/// `cause`); returns the answer.
fn wait_ready(s: &Server, status: u16, cause: Option<&str>) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (st, r) = s.get("/readyz");
        if st == status && cause.is_none_or(|c| r["error"]["details"]["cause"] == c) {
            return r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz never became {status} {cause:?}: {st} {r}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A writer cut off from PostgreSQL by a network that drops its packets
/// (no RST, no FIN: a renewal then waited forever, and the writer stayed
/// ready and took ingest it could not store while its lease ran out) stops
/// leading at its own lease deadline: `/readyz` 503 `not_leader` and ingest
/// refused at once with the reason. Once the network forwards again the
/// `auto` node follows the log and takes the free lease back.
#[test]
fn a_writer_cut_off_from_postgres_without_a_reset_stops_leading_at_its_lease_deadline() {
    let Some(pg) = Postgres::start("a_writer_cut_off_from_postgres") else {
        return;
    };
    let proxy = common::pg::Proxy::start(pg.port);
    let url = proxy.url_for("postgres");
    let s = pg_server(&url, &[("LEVIATHAN_ROLE", "auto")]);
    let first = ingest_eventually(&s, "before");
    assert_eq!(s.get("/readyz").0, 200);

    proxy.black_hole(true);
    let cut = std::time::Instant::now();
    let r = wait_ready(&s, 503, Some("not_leader"));
    let after = cut.elapsed();
    assert!(
        r["error"]["details"]["reason"]
            .as_str()
            .unwrap()
            .contains("ran out"),
        "{r}"
    );
    // The lease is 2 s: the writer must stop leading before another node
    // could take it over (it never did: nothing bounded the renewal).
    assert!(after < Duration::from_secs(10), "took {after:?}");
    let asked = std::time::Instant::now();
    let (st, r) = s.ingest(&bundle("during", events("during", 1)));
    let answered = asked.elapsed();
    assert_eq!(
        (st, r["error"]["code"].as_str()),
        (503, Some("not_leader")),
        "{r}"
    );
    assert!(
        answered < Duration::from_secs(10),
        "ingest took {answered:?}: {r}"
    );

    proxy.black_hole(false);
    let r = ingest_eventually(&s, "after");
    assert_eq!(
        r["first_seq"].as_u64(),
        Some(first["last_seq"].as_u64().unwrap() + 1),
        "{r}"
    );
    wait_ready(&s, 200, None);
    let mut c = pg.client();
    assert_eq!(pg_count(&mut c, "events"), 2);
}

/// A writer whose appends PostgreSQL refuses (here INSERT on the events
/// table revoked from its role) says so in `/readyz` (it stayed ready while
/// every append failed), with PostgreSQL's reason, and is ready again once
/// an append works.
#[test]
fn a_writer_whose_appends_postgres_refuses_is_not_ready_until_one_works() {
    let Some(pg) = Postgres::start("a_writer_whose_appends_postgres_refuses") else {
        return;
    };
    // A role of its own: privileges do not bind the superuser.
    let mut c = pg.client();
    c.batch_execute("CREATE ROLE lv LOGIN").unwrap();
    c.batch_execute("CREATE DATABASE lvdb OWNER lv").unwrap();
    let url = format!("host=127.0.0.1 port={} user=lv dbname=lvdb", pg.port);
    let s = pg_server(&url, &[]);
    assert_eq!(s.ingest(&bundle("b1", events("e", 1))).0, 200);
    assert_eq!(s.get("/readyz").0, 200);

    let mut admin = Postgres::connect(&pg.url_for("lvdb"));
    admin
        .batch_execute("REVOKE INSERT ON events FROM lv")
        .unwrap();
    let (st, r) = s.ingest(&bundle("b2", events("f", 1)));
    assert_eq!(st, 503, "{r}");
    let (st, r) = s.get("/readyz");
    assert_eq!(st, 503, "{r}");
    assert_eq!(
        r["error"]["details"]["cause"], "postgres_append_failing",
        "{r}"
    );
    assert!(
        r["error"]["details"]["reason"]
            .as_str()
            .unwrap()
            .contains("permission denied for table events"),
        "{r}"
    );

    admin.batch_execute("GRANT INSERT ON events TO lv").unwrap();
    let (st, r) = s.ingest(&bundle("b2", events("f", 1)));
    assert_eq!((st, &r["first_seq"]), (200, &json!(2)), "{r}");
    assert_eq!(s.get("/readyz").0, 200);
}

/// PostgreSQL restarted while the writer was idle: its connection is dead,
/// and the next append finds that before it sends anything and reconnects
/// (the first ingest after the restart was refused, and only a retry worked).
#[test]
fn the_first_append_after_an_idle_postgres_restart_is_taken() {
    let Some(mut pg) = Postgres::start("the_first_append_after_an_idle_postgres_restart") else {
        return;
    };
    // A lease that outlasts the restart.
    let s = pg_server(&pg.url(), &[("LEVIATHAN_POSTGRES_LEASE_SECS", "20")]);
    assert_eq!(s.ingest(&bundle("b1", events("e", 1))).0, 200);
    pg.stop();
    pg.restart();
    // Idle a moment: the old backend is gone, the writer's socket closed.
    std::thread::sleep(Duration::from_millis(500));
    let (st, r) = s.ingest(&bundle("b2", events("f", 1)));
    assert_eq!((st, &r["first_seq"]), (200, &json!(2)), "{r}");
    assert_eq!(s.get("/readyz").0, 200);
}
