//! `invalidate`: the dry run shows the server's event and writes nothing; the
//! prompt on a terminal (yes, no); no terminal refuses unless `--yes`.

use crate::common::Server;
use crate::ctl::pty::Pty;
use crate::ctl::{ctl, json, loaded, run, std_ctl};
use serde_json::Value;

fn head(s: &Server) -> Value {
    s.get("/v1/log/head").1
}

fn status(s: &Server, id: &str) -> Value {
    s.get(&format!("/v1/attempts/{id}")).1["attempt_node"]["properties"]["status"].clone()
}

fn on_terminal(s: &Server, args: &[&str]) -> Pty {
    let mut c = std_ctl(s);
    c.args(args);
    Pty::spawn(c)
}

#[test]
fn dry_run_and_no_terminal_write_nothing() {
    let s = loaded();
    let before = head(&s);

    let (code, out, err) = run(
        ctl(&s),
        &[
            "invalidate",
            "att-0",
            "--reason",
            "flaky runner",
            "--dry-run",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("would invalidate") && out.contains("\"attempt.invalidated\""),
        "{out}"
    );
    assert!(
        out.contains("flaky runner") && out.contains("nothing was changed"),
        "{out}"
    );
    let v = json(
        &s,
        &[
            "invalidate",
            "att-0",
            "--reason",
            "flaky runner",
            "--dry-run",
            "--actor",
            "ops-1",
        ],
    );
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["status"], "would_invalidate");
    assert_eq!(v["current_status"], "failed");
    assert_eq!(v["event"]["payload"]["reason"], "flaky runner");
    // The actor is the token's name; the requested actor is kept in the payload.
    assert_eq!(v["event"]["actor_id"], "control-plane");
    assert_eq!(v["event"]["payload"]["requested_by"], "ops-1");
    // A dry run still checks: unknown attempt is a 404.
    let (code, _, _) = run(
        ctl(&s),
        &["invalidate", "nope", "--reason", "x", "--dry-run"],
    );
    assert_eq!(code, 1);

    // Without a terminal and without --yes: refused, before anything is sent.
    let (code, _, err) = run(ctl(&s), &["invalidate", "att-0", "--reason", "flaky"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("stdin is not a terminal") && err.contains("--yes"),
        "{err}"
    );

    assert_eq!(head(&s), before, "nothing was appended");
    assert_eq!(status(&s, "att-0"), "failed");

    // With --yes it goes through.
    let v = json(&s, &["invalidate", "att-0", "--reason", "flaky", "--yes"]);
    assert_eq!(v["status"], "invalidated");
    assert_eq!(v["seq"], before["seq"].as_u64().unwrap() + 1);
    assert_eq!(status(&s, "att-0"), "invalidated");
    // An empty reason is the server's 422, shown.
    let (code, _, err) = run(ctl(&s), &["invalidate", "att-2", "--reason", " ", "--yes"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("422 invalid_body") && err.contains("reason must not be empty"),
        "{err}"
    );
}

#[test]
fn the_prompt_on_a_terminal() {
    let s = loaded();
    let before = head(&s);

    // "n": nothing happens, exit 1.
    let mut t = on_terminal(&s, &["invalidate", "att-2", "--reason", "bad base image"]);
    t.expect("[y/N]");
    let shown = t.text();
    assert!(
        shown.contains("would invalidate") && shown.contains("bad base image"),
        "{shown}"
    );
    assert!(shown.contains("current status: "), "{shown}");
    t.send("n\n");
    let (code, text) = t.finish();
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("not confirmed: nothing was changed"),
        "{text}"
    );
    assert_eq!(head(&s), before);
    assert_eq!(status(&s, "att-2"), "succeeded");

    // End of input (Ctrl-D) is also a no.
    let mut t = on_terminal(&s, &["invalidate", "att-2", "--reason", "bad base image"]);
    t.expect("[y/N]");
    t.send("\x04");
    let (code, text) = t.finish();
    assert_eq!(code, 1, "{text}");
    assert_eq!(head(&s), before);

    // An unknown attempt fails before asking.
    let t = on_terminal(&s, &["invalidate", "nope", "--reason", "x"]);
    let (code, text) = t.finish();
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("no attempt with id \"nope\"") && !text.contains("[y/N]"),
        "{text}"
    );

    // "y": invalidated.
    let mut t = on_terminal(&s, &["invalidate", "att-2", "--reason", "bad base image"]);
    t.expect("[y/N]");
    t.send("y\n");
    let (code, text) = t.finish();
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("attempt att-2: event invalidation-att-2-"),
        "{text}"
    );
    assert_eq!(head(&s)["seq"], before["seq"].as_u64().unwrap() + 1);
    assert_eq!(status(&s, "att-2"), "invalidated");
    let node = s.get("/v1/attempts/att-2").1["attempt_node"]["properties"].clone();
    assert_eq!(node["invalidation_reason"], "bad base image");

    // --yes on a terminal does not ask.
    let t = on_terminal(&s, &["invalidate", "att-0", "--reason", "r", "--yes"]);
    let (code, text) = t.finish();
    assert_eq!(code, 0, "{text}");
    assert!(!text.contains("[y/N]"), "{text}");
}
