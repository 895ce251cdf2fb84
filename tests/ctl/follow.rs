//! `events follow`: prints new events as they arrive, seq first, stops at
//! `--max-events` / `--max-time`, resumes with `--after-seq`, and says where to
//! resume when the server goes away.

use crate::common::{bundle, events};
use crate::ctl::{ctl, loaded, run, std_ctl};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

#[test]
fn follows_the_log_and_resumes() {
    let mut s = loaded();
    let head = s.get("/v1/log/head").1["seq"].as_u64().unwrap();

    // From the start, bounded by a count: seq first on every line.
    let (code, out, err) = run(
        ctl(&s),
        &["events", "follow", "--after-seq", "0", "--max-events", "5"],
    );
    assert_eq!(code, 0, "{err}");
    let seqs: Vec<u64> = out
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    // Resume after the last printed seq, as JSON lines (the server's event objects).
    let (code, out, _) = run(
        ctl(&s),
        &[
            "--json",
            "events",
            "follow",
            "--after-seq",
            "5",
            "--max-events",
            "2",
        ],
    );
    assert_eq!(code, 0);
    let evs: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(evs.len(), 2);
    assert_eq!(evs[0], s.all_events()[5]);
    assert_eq!(evs[1]["seq"], 7);
    // Caught up and nothing new: --max-time stops it.
    let t = Instant::now();
    let (code, out, _) = run(
        ctl(&s),
        &["events", "follow", "--max-time", "0.5", "--interval", "0.1"],
    );
    assert_eq!((code, out.as_str()), (0, ""));
    assert!(t.elapsed() < Duration::from_secs(10));

    // Live: events ingested while it runs are printed as they come.
    let mut child = std_ctl(&s)
        .args(["events", "follow", "--interval", "0.1", "--max-events", "4"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // It says where it starts once it has read the head: only then is what
    // follows new to it.
    let started = stderr_line(&mut child, "following ");
    assert!(
        started.ends_with(&format!("after seq {head} (Ctrl-C to stop)")),
        "{started}"
    );
    s.ingest(&bundle("live-1", events("live1", 3)));
    let seq_of = |line: String| -> u64 { line.split_whitespace().next().unwrap().parse().unwrap() };
    let first = seq_of(lines.next().unwrap().unwrap());
    assert_eq!(first, head + 1, "starts at the head: only new events");
    s.ingest(&bundle("live-2", events("live2", 3)));
    let rest: Vec<u64> = lines.map(|l| seq_of(l.unwrap())).collect();
    assert_eq!(
        rest,
        [head + 2, head + 3, head + 4],
        "stops after --max-events"
    );
    assert!(child.wait().unwrap().success());

    // The server goes away: exit 3, with the seq to resume from.
    let mut follower = std_ctl(&s)
        .args([
            "events",
            "follow",
            "--after-seq",
            &head.to_string(),
            "--interval",
            "0.1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Killed once the follower has printed every event there is.
    let mut printed = BufReader::new(follower.stdout.take().unwrap()).lines();
    for _ in 0..6 {
        printed.next().unwrap().unwrap();
    }
    s.kill();
    let out = follower.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        printed.count(),
        0,
        "nothing printed after the server went away"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let last = head + 6;
    assert!(
        err.contains(&format!(
            "resume with: leviathanctl events follow --after-seq {last}"
        )),
        "{err}"
    );
}

/// Reads the child's stderr until a line contains `needle` (at most a
/// minute); returns that line. The rest of stderr is drained in the background.
fn stderr_line(child: &mut std::process::Child, needle: &str) -> String {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let needle = needle.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(&needle) {
                let _ = tx.send(line);
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the line on stderr within a minute")
}
