use crate::common::*;

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn metrics_count_ingest_outcomes_and_positions() {
    let s = Server::start();
    let b = bundle("m1", events("m", 4));
    assert_eq!(s.ingest(&b).0, 200);
    assert_eq!(s.ingest(&b).0, 200);
    let mut bad = events("x", 1);
    bad[0]["timestamp"] = "nope".into();
    assert_eq!(s.ingest(&bundle("m2", bad)).0, 422);

    let resp = s.client.get(s.url("/metrics")).send().unwrap();
    assert_eq!(resp.status().as_u16(), 200, "no auth needed");
    let text = resp.text().unwrap();
    assert_eq!(
        metric(&text, r#"leviathan_ingest_requests_total{outcome="ok"}"#),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            r#"leviathan_ingest_requests_total{outcome="duplicate"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            r#"leviathan_ingest_requests_total{outcome="invalid_bundle"}"#
        ),
        1.0
    );
    assert_eq!(metric(&text, "leviathan_events_appended_total"), 4.0);
    assert_eq!(metric(&text, "leviathan_events_duplicate_total"), 4.0);
    assert_eq!(metric(&text, "leviathan_log_head_seq"), 4.0);
    assert_eq!(metric(&text, "leviathan_graph_applied_seq"), 4.0);
    assert_eq!(
        metric(&text, "leviathan_ingest_duration_seconds_count"),
        3.0
    );
}
