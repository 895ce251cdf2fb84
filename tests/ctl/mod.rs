//! `leviathanctl` end to end: the real binary against a real `leviathan serve`
//! (loopback, temp data dir), one module per area. Interactive prompts and
//! colour are exercised under a real pseudo-terminal (`pty.rs`).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use crate::common;
mod pty;

mod artifacts;
mod errors;
mod follow;
mod history;
mod invalidate;
mod reads;

use common::{Server, TOKEN};
use serde_json::Value;
use std::process::Command;

pub const BIN: &str = env!("CARGO_BIN_EXE_leviathanctl");

/// `leviathanctl` with a clean environment pointed at `s` (URL and token from
/// the variables, as an operator would set them).
pub fn ctl(s: &Server) -> assert_cmd::Command {
    let mut c = bare();
    c.env("LEVIATHAN_API_URL", &s.base)
        .env("LEVIATHAN_CONTROL_PLANE_TOKEN", TOKEN);
    c
}

/// `leviathanctl` with nothing set (no URL, no token, no proxy, no NO_COLOR).
pub fn bare() -> assert_cmd::Command {
    let mut c = assert_cmd::Command::new(BIN);
    c.env_clear().timeout(std::time::Duration::from_secs(60));
    c
}

/// The same for a `std::process::Command` (background and pty runs).
pub fn std_ctl(s: &Server) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear()
        .env("LEVIATHAN_API_URL", &s.base)
        .env("LEVIATHAN_CONTROL_PLANE_TOKEN", TOKEN);
    c
}

/// Runs and returns (exit code, stdout, stderr).
pub fn run(mut c: assert_cmd::Command, args: &[&str]) -> (i32, String, String) {
    let out = c.args(args).output().expect("run leviathanctl");
    (
        out.status.code().expect("exited, not killed"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `--json <args>`, expects exit 0 and returns the parsed stdout.
pub fn json(s: &Server, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (code, out, err) = run(ctl(s), &all);
    assert_eq!(code, 0, "{args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
}

/// A server with the fixture fleet's log (3 attempts).
pub fn loaded() -> Server {
    let s = Server::start_with(&[("LEVIATHAN_SYNC", "none")]);
    for b in common::mixed_log(3) {
        let (st, v) = s.ingest(&b);
        assert_eq!(st, 200, "{v}");
    }
    s
}

/// Runs the `more: leviathanctl …` hint that `out` ends with, exactly as
/// printed, through `sh` (so its quoting is what a shell reads), against `s`;
/// returns the hint and (exit code, stdout, stderr).
pub fn run_hint(s: &Server, out: &str) -> (String, (i32, String, String)) {
    let hint = out
        .lines()
        .find_map(|l| l.strip_prefix("more: "))
        .unwrap_or_else(|| panic!("no `more:` hint: {out}"))
        .to_string();
    assert!(hint.starts_with("leviathanctl "), "{hint}");
    let dir = std::path::Path::new(BIN).parent().unwrap();
    let out = Command::new("sh")
        .args(["-c", &hint])
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", dir.display()))
        .env("LEVIATHAN_API_URL", &s.base)
        .env("LEVIATHAN_CONTROL_PLANE_TOKEN", TOKEN)
        .output()
        .expect("run sh");
    let res = (
        out.status.code().expect("exited, not killed"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    (hint, res)
}
