//! The read commands: `--json` is the server's body unchanged, tables show the
//! data, filters reach the server, `log verify` fails on a tampered log, colour
//! appears only on a terminal without `NO_COLOR`, completions are generated.

use crate::common::Server;
use crate::ctl::pty::Pty;
use crate::ctl::{ctl, json, loaded, run, run_hint, std_ctl};

/// The server's body for `path`, as text.
fn raw(s: &Server, path: &str) -> String {
    s.req(reqwest::Method::GET, path)
        .send()
        .unwrap()
        .text()
        .unwrap()
}

#[test]
fn json_output_is_the_servers_body_unchanged() {
    let s = loaded();
    let cases: &[(&[&str], &str)] = &[
        (&["summary"], "/v1/graph/summary"),
        (&["attempts", "list"], "/v1/attempts"),
        (
            &["attempts", "list", "--target", "radix", "--limit", "2"],
            "/v1/attempts?target=radix&limit=2",
        ),
        (&["attempts", "show", "att-1"], "/v1/attempts/att-1"),
        (&["failures"], "/v1/failures"),
        (
            &["failures", "--target", "radix", "--limit", "1"],
            "/v1/failures?target=radix&limit=1",
        ),
        (&["events", "recent"], "/v1/events/recent"),
        (
            &["events", "recent", "--limit", "3"],
            "/v1/events/recent?limit=3",
        ),
        (&["log", "head"], "/v1/log/head"),
        (&["log", "verify"], "/v1/log/verify"),
        (&["projectors", "list"], "/v1/projection"),
        (&["projectors", "status"], "/v1/projection"),
    ];
    for (args, path) in cases {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let (code, out, err) = run(ctl(&s), &all);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert_eq!(out.trim_end(), raw(&s, path), "{args:?}");
        // And it parses, as a script would.
        let _: serde_json::Value = serde_json::from_str(&out).unwrap();
    }
    // Filters and paging reach the server.
    let page = json(&s, &["attempts", "list", "--limit", "1"]);
    assert_eq!(page["count"], 1);
    let cursor = page["next_cursor"]
        .as_str()
        .expect("more pages")
        .to_string();
    let next = json(
        &s,
        &["attempts", "list", "--limit", "1", "--cursor", &cursor],
    );
    assert_ne!(
        next["attempts"][0]["attempt_id"],
        page["attempts"][0]["attempt_id"]
    );
    let none = json(&s, &["attempts", "list", "--target", "nowhere"]);
    assert_eq!(none["count"], 0);
    assert_eq!(
        json(&s, &["events", "recent", "--limit", "3"])
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn tables_show_the_data() {
    let s = loaded();
    let table = |args: &[&str]| {
        let (code, out, err) = run(ctl(&s), args);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(!out.contains('\x1b'), "no colour when piped: {out}");
        out
    };
    let out = table(&["summary"]);
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().eq(["Attempt", "3"])),
        "{out}"
    );
    assert!(
        out.contains("PRODUCED") && out.contains("RECENT EVENTS"),
        "{out}"
    );
    assert!(out.contains("att-1-invalid"), "{out}");

    let out = table(&["attempts", "list"]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("ATTEMPT") && lines[0].contains("STATUS"),
        "{out}"
    );
    assert_eq!(lines.len(), 4, "a header and 3 attempts: {out}");
    assert!(lines[1].starts_with("att-2"), "newest first: {out}");
    // Columns are aligned: STATUS starts at the same offset on every line.
    let col = lines[0].find("STATUS").unwrap();
    for l in &lines[1..] {
        assert_ne!(&l[col..col + 1], " ", "{out}");
        assert_eq!(&l[col - 2..col], "  ", "{out}");
    }
    assert!(out.contains("invalidated") && out.contains("failed") && out.contains("succeeded"));
    assert!(table(&["attempts", "list", "--target", "nowhere"]).contains("no attempts"));

    let out = table(&["attempts", "show", "att-0"]);
    for want in [
        "att-0",
        "failed",
        "EVENTS",
        "attempt.created",
        "att-0-failed",
        "ARTIFACTS",
        "artifact-00000000",
        "PULL REQUESTS",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    let out = table(&["attempts", "show", "att-1"]);
    assert!(
        out.contains("https://github.com/o/radix/pull/1001"),
        "{out}"
    );

    let out = table(&["failures"]);
    assert!(
        out.contains("case 0 failed") && out.contains("tests.failed"),
        "{out}"
    );
    let out = table(&["failures", "--limit", "1"]);
    let rows: Vec<&str> = out.lines().take_while(|l| !l.is_empty()).collect();
    assert_eq!(rows.len(), 2, "{out}");
    // More remain: the page says how to continue, and the cursor works.
    let cursor = out
        .lines()
        .find_map(|l| l.strip_prefix("more: leviathanctl failures --limit 1 --cursor "))
        .unwrap_or_else(|| panic!("a hint with the cursor: {out}"))
        .trim()
        .to_string();
    let next = table(&["failures", "--limit", "1", "--cursor", &cursor]);
    assert!(next.contains("failed"), "{next}");
    assert_ne!(
        next.lines().nth(1),
        out.lines().nth(1),
        "the next page: {next}"
    );

    let head = s.get("/v1/log/head").1;
    let head_seq = head["seq"].to_string();
    let out = table(&["events", "recent", "--limit", "5"]);
    assert_eq!(out.lines().count(), 6, "{out}");
    let first = out
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert_eq!(first, head_seq, "seq first, newest first: {out}");

    let out = table(&["log", "head"]);
    assert!(
        out.contains(head["hash"].as_str().unwrap()) && out.contains(&head_seq),
        "{out}"
    );
    let out = table(&["log", "verify"]);
    assert!(out.contains("ok: the chain verifies"), "{out}");
    let out = table(&["projectors", "list"]);
    assert!(
        out.contains("core") && out.contains("Attempt") && out.contains("fingerprint"),
        "{out}"
    );
    let out = table(&["projectors", "status"]);
    let core_row = out.lines().nth(1).unwrap();
    assert!(
        core_row.contains("core") && core_row.contains("reject") && core_row.contains("50000000"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("applied seq") && l.trim_end().ends_with(&head_seq)),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("lag") && l.contains("0 events")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("recorded errors") && l.trim_end().ends_with('0')),
        "{out}"
    );
}

#[test]
fn log_verify_exits_1_on_a_broken_chain() {
    let mut s = Server::start();
    s.ingest(&crate::common::bundle("b", crate::common::events("t", 4)));
    let dir = s.keep_dir();
    s.stop();
    crate::common::tamper_with_event(dir.path(), 2, "t-a1", "t-XX");
    let s = Server::start_in(dir.path(), &[]);
    let (code, out, err) = run(ctl(&s), &["log", "verify"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("BROKEN") && out.contains("first broken seq"),
        "{out}"
    );
    assert!(err.contains("the chain is broken at seq 2"), "{err}");
    let (code, out, _) = run(ctl(&s), &["--json", "log", "verify"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["ok"].as_bool(), v["first_broken_seq"].as_u64()),
        (Some(false), Some(2))
    );
}

#[test]
fn colour_only_on_a_terminal_without_no_color() {
    let s = loaded();
    let term = Pty::spawn({
        let mut c = std_ctl(&s);
        c.args(["attempts", "list"]);
        c
    });
    let (code, text) = term.finish();
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("\x1b[1mATTEMPT\x1b[0m"),
        "bold header: {text:?}"
    );
    assert!(
        text.contains("\x1b[31mfailed\x1b[0m"),
        "red failure: {text:?}"
    );

    let term = Pty::spawn({
        let mut c = std_ctl(&s);
        c.env("NO_COLOR", "1").args(["attempts", "list"]);
        c
    });
    let (code, text) = term.finish();
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("ATTEMPT") && !text.contains('\x1b'),
        "{text:?}"
    );
}

#[test]
fn completions_for_each_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let (code, out, err) = run(crate::ctl::bare(), &["completions", shell]);
        assert_eq!(code, 0, "{shell}: {err}");
        assert!(
            out.contains("leviathanctl") && out.contains("invalidate"),
            "{shell}"
        );
    }
    let (code, _, err) = run(crate::ctl::bare(), &["completions", "tcsh"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn an_attempt_without_a_node_shows_its_events() {
    let s = Server::start();
    let (st, r) = s.ingest(&crate::common::bundle(
        "ghost",
        vec![crate::common::event(
            "g1",
            "attempt.started",
            serde_json::json!({"attempt_id": "ghost-1", "status": "running"}),
        )],
    ));
    assert_eq!(st, 200, "{r}");
    let (code, out, err) = run(ctl(&s), &["attempts", "show", "ghost-1"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("no attempt.created made it"), "{out}");
    assert!(
        out.contains("attempt.started") && out.contains("g1"),
        "{out}"
    );
    let (code, _, err) = run(ctl(&s), &["attempts", "show", "nobody"]);
    assert_eq!(code, 1, "404 is a refusal: {err}");
}

/// `log checkpoint` prints the signed note byte for byte as the server signs
/// it (what `leviathan audit` checks), of the whole tree or of its first N
/// leaves; `--json` wraps it; a size beyond the log is the server's refusal.
#[test]
fn log_checkpoint_prints_the_signed_note_as_signed() {
    let s = loaded();
    let (code, out, err) = run(ctl(&s), &["log", "checkpoint"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, raw(&s, "/v1/log/checkpoint"));
    let head = s.get("/v1/log/head").1["seq"].as_u64().unwrap();
    assert_eq!(out.lines().nth(1), Some(head.to_string().as_str()), "{out}");
    assert!(out.contains("\n\u{2014} "), "a signature line: {out}");

    let (code, out, err) = run(ctl(&s), &["log", "checkpoint", "--tree-size", "2"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, raw(&s, "/v1/log/checkpoint?tree_size=2"));
    assert_eq!(out.lines().nth(1), Some("2"));

    let v = json(&s, &["log", "checkpoint"]);
    assert_eq!(v["checkpoint"], raw(&s, "/v1/log/checkpoint"));

    let beyond = (head + 1).to_string();
    let (code, _, err) = run(ctl(&s), &["log", "checkpoint", "--tree-size", &beyond]);
    assert_ne!(code, 0);
    assert!(err.contains("tree_size") || err.contains("422"), "{err}");
}

/// The data rows of a table (the lines between the header and the first
/// empty line).
fn rows(out: &str) -> Vec<&str> {
    out.lines().skip(1).take_while(|l| !l.is_empty()).collect()
}

#[test]
fn the_more_hint_continues_the_same_listing() {
    let s = loaded();
    // A second target (with a space: the hint must quote it), with more
    // attempts and failures than the fixture's `radix`.
    let target = "bench two";
    let mut events = Vec::new();
    for i in 0..4 {
        let a = format!("bench-{i}");
        events.push(crate::common::event(
            &format!("{a}-created"),
            "attempt.created",
            serde_json::json!({"attempt_id": a, "task_id": "tb", "target_id": target, "attempt_number": 1, "status": "created"}),
        ));
        events.push(crate::common::event(
            &format!("{a}-failed"),
            "attempt.failed",
            serde_json::json!({"attempt_id": a, "status": "failed", "failure_type": "execution_failed", "error_summary": "boom"}),
        ));
    }
    let b = serde_json::json!({"target": target, "bundle_id": "bench", "events": events});
    let (st, v) = s.ingest(&b);
    assert_eq!(st, 200, "{v}");

    for command in [&["failures"][..], &["attempts", "list"][..]] {
        let mut args = command.to_vec();
        args.extend(["--target", target, "--limit", "1"]);
        let (code, out, err) = run(ctl(&s), &args);
        assert_eq!(code, 0, "{args:?}: {err}");
        let first = rows(&out);
        assert_eq!(first.len(), 1, "{out}");
        // The hint repeats the filter and the limit, the target quoted.
        let (hint, (code, next, err)) = run_hint(&s, &out);
        let want = format!(
            "leviathanctl {} --target 'bench two' --limit 1 --cursor ",
            command.join(" ")
        );
        assert!(hint.starts_with(&want), "{hint}");
        // Run as printed, it gives the next page of the same listing: one
        // row, of that target, not the first one again.
        assert_eq!(code, 0, "{hint}: {err}");
        let header = next.lines().next().unwrap();
        let col = header.find("TARGET").unwrap();
        let page = rows(&next);
        assert_eq!(page.len(), 1, "{hint}: {next}");
        assert!(page[0][col..].starts_with(target), "{hint}: {next}");
        assert_ne!(page[0], first[0], "{hint}: {next}");
        // And that page says how to go on, the same way.
        let (hint2, (code, _, err)) = run_hint(&s, &next);
        assert!(hint2.starts_with(&want), "{hint2}");
        assert_eq!(code, 0, "{hint2}: {err}");
    }
}
