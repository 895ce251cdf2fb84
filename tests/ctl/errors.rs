//! Settings and failures: flags override variables, and each failure has its
//! exit code (1 refused, 2 usage, 3 unreachable) and a message that says what
//! to change.

use crate::common::{Server, TOKEN};
use crate::ctl::{bare, ctl, run};
use std::net::TcpListener;

/// A loopback port with nothing listening.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn flags_override_the_variables() {
    let s = Server::start();
    let dead = format!("http://127.0.0.1:{}", closed_port());
    // A wrong URL in the variable, the right one as a flag.
    let mut c = ctl(&s);
    c.env("LEVIATHAN_API_URL", &dead);
    let (code, _, err) = run(c, &["log", "head", "--url", &s.base]);
    assert_eq!(code, 0, "{err}");
    // A wrong token in the variable, the right one as a flag (global: any position).
    let mut c = ctl(&s);
    c.env("LEVIATHAN_CONTROL_PLANE_TOKEN", "wrong");
    let (code, _, err) = run(c, &["--token", TOKEN, "log", "head"]);
    assert_eq!(code, 0, "{err}");
    // Only flags, no variables.
    let (code, _, err) = run(bare(), &["log", "head", "--url", &s.base, "--token", TOKEN]);
    assert_eq!(code, 0, "{err}");
    // The default URL is http://127.0.0.1:8000.
    let (_, _, err) = run(bare(), &["--token", "x", "--timeout", "2", "log", "head"]);
    assert!(
        err.contains("http://127.0.0.1:8000 (the default; LEVIATHAN_API_URL is not set)"),
        "{err}"
    );
    // An empty variable counts as unset.
    let mut c = bare();
    c.env("LEVIATHAN_API_URL", "");
    let (_, _, err) = run(c, &["--token", "x", "--timeout", "2", "log", "head"]);
    assert!(
        err.contains("(the default; LEVIATHAN_API_URL is not set)"),
        "{err}"
    );
}

#[test]
fn exit_codes_and_messages() {
    let s = Server::start();

    // 1: the server said no. 404 names what was not found.
    let (code, _, err) = run(ctl(&s), &["attempts", "show", "no-such-attempt"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("not found") && err.contains("\"no-such-attempt\""),
        "{err}"
    );
    let zeros = "0".repeat(64);
    let (code, _, err) = run(ctl(&s), &["artifacts", "get", &zeros, "-o", "/dev/null"]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("no artifact with sha256 {zeros}")),
        "{err}"
    );
    // 401 says the token was rejected and where it was read from.
    let mut c = ctl(&s);
    c.env("LEVIATHAN_CONTROL_PLANE_TOKEN", "wrong");
    let (code, _, err) = run(c, &["summary"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("rejected the token")
            && err.contains("read from LEVIATHAN_CONTROL_PLANE_TOKEN"),
        "{err}"
    );
    let (code, _, err) = run(ctl(&s), &["summary", "--token", "wrong"]);
    assert_eq!(code, 1);
    assert!(err.contains("read from --token"), "{err}");
    // Other refusals show the server's error body.
    let (code, _, err) = run(ctl(&s), &["events", "recent", "--limit", "0"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("422 invalid_query") && err.contains("must be an integer from 1 to 1000"),
        "{err}"
    );
    assert!(
        err.contains(r#""parameter":"limit""#),
        "details shown: {err}"
    );

    // 2: usage.
    for args in [
        &["bogus"][..],
        &["attempts", "show"],
        &["invalidate", "a1"],
        &["artifacts", "get", "not-a-digest"],
        &["events", "follow", "--interval", "-1"],
        &["summary", "--url", "https://example.com"],
        &["summary", "--url", "not a url"],
    ] {
        let (code, _, err) = run(ctl(&s), args);
        assert_eq!(code, 2, "{args:?}: {err}");
    }
    let mut c = ctl(&s);
    c.env_remove("LEVIATHAN_CONTROL_PLANE_TOKEN");
    let (code, _, err) = run(c, &["summary"]);
    assert_eq!(code, 2);
    assert!(err.contains("set LEVIATHAN_CONTROL_PLANE_TOKEN"), "{err}");
    let (code, out, _) = run(ctl(&s), &["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("Exit codes"), "{out}");
    assert!(
        !out.contains(TOKEN),
        "the token's value is never shown: {out}"
    );

    // 3: cannot reach the server. The message names the URL and the variable.
    let dead = format!("http://127.0.0.1:{}", closed_port());
    let mut c = ctl(&s);
    c.env("LEVIATHAN_API_URL", &dead);
    let (code, _, err) = run(c, &["summary"]);
    assert_eq!(code, 3);
    assert!(
        err.contains(&format!("{dead} (from LEVIATHAN_API_URL)")),
        "{err}"
    );
    assert!(
        err.contains("Connection refused") && err.contains("Set LEVIATHAN_API_URL"),
        "{err}"
    );
    let (code, _, err) = run(
        ctl(&s),
        &["summary", "--url", "http://no-such-host.invalid:8000"],
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("(from --url)"), "{err}");
    // A listener that never answers: the timeout is also "cannot reach".
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let (code, _, err) = run(ctl(&s), &["summary", "--url", &url, "--timeout", "0.5"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("time limit"), "{err}");
}
