//! `nodes show [--as-of]`, `nodes history` and `attempts show --as-of`.

use super::*;

#[test]
fn nodes_history_and_as_of() {
    let s = loaded();
    let h = json(&s, &["nodes", "history", "att-1"]);
    assert_eq!(h, s.get("/v1/graph/nodes/att-1/history").1);
    let created = h["changes"][0]["seq"].as_u64().unwrap();
    let (code, out, err) = run(ctl(&s), &["nodes", "history", "att-1", "--limit", "2"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("attempt.created"), "{out}");
    // The hint repeats the limit; run as printed, it goes on with the same
    // page size.
    let (hint, (code, next, err)) = run_hint(&s, &out);
    assert!(
        hint.starts_with("leviathanctl nodes history att-1 --limit 2 --cursor "),
        "{hint}"
    );
    assert_eq!(code, 0, "{hint}: {err}");
    let changes = next
        .lines()
        .skip(1)
        .take_while(|l| !l.is_empty() && !l.starts_with("the history starts"))
        .count();
    assert!((1..=2).contains(&changes), "{hint}: {next}");
    assert!(!next.contains("attempt.created"), "the next page: {next}");
    let at = json(
        &s,
        &["nodes", "show", "att-1", "--as-of", &created.to_string()],
    );
    assert_eq!(at["properties"]["status"], "created", "{at}");
    let (code, out, _) = run(
        ctl(&s),
        &["nodes", "show", "att-1", "--as-of", &created.to_string()],
    );
    assert_eq!(code, 0);
    assert!(out.contains("as of seq"), "{out}");
    // Before it existed: the server's 404.
    let (code, _, err) = run(
        ctl(&s),
        &[
            "nodes",
            "show",
            "att-1",
            "--as-of",
            &(created - 1).to_string(),
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("no node"), "{err}");
    let d = json(
        &s,
        &["attempts", "show", "att-1", "--as-of", &created.to_string()],
    );
    assert_eq!(d["attempt_node"]["properties"]["status"], "created");
    assert_eq!(d["events"].as_array().unwrap().len(), 1, "{d}");
}
