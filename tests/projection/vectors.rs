//! Test vectors (`leviathan::vectors`): the core projector's shipped vectors
//! pass when the set is loaded, and a vector that does not hold is reported
//! with its line, its name, and the expected and actual ops.

use leviathan::projector_specs::{self, Origin, Source, Spec};
use leviathan::vectors::{self, VectorError};
use std::path::PathBuf;

fn core_vectors() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("projectors/core/vectors.ndjson")
}

fn core_spec(vectors: Option<PathBuf>) -> Spec {
    Spec {
        source: Source::Core,
        pin: None,
        limits: Default::default(),
        on_error: Default::default(),
        mode: Default::default(),
        name: Some("core".into()),
        test_vectors: vectors,
        origin: Origin::Manifest {
            file: "projectors.toml".into(),
        },
    }
}

#[test]
fn the_core_projectors_vectors_pass_at_load() {
    let set = projector_specs::load(
        &[core_spec(Some(core_vectors()))],
        None,
        projector_specs::DEFAULT_MAX_COMPONENT_BYTES,
    )
    .unwrap();
    let text = std::fs::read_to_string(core_vectors()).unwrap();
    let n = vectors::run(&set, 0, &text).unwrap();
    assert_eq!(n, text.lines().filter(|l| !l.trim().is_empty()).count());
    assert!(n >= 7, "{n} vectors");
}

#[test]
fn a_failing_vector_names_its_line_and_both_op_lists() {
    let set = projector_specs::load(
        &[core_spec(None)],
        None,
        projector_specs::DEFAULT_MAX_COMPONENT_BYTES,
    )
    .unwrap();
    let good = std::fs::read_to_string(core_vectors()).unwrap();
    let first = good.lines().next().unwrap();
    // The same event, but the wrong name expected for the target.
    let wrong = first.replace(r#""name":"Radix","node_id""#, r#""name":"Other","node_id""#);
    assert_ne!(wrong, first, "the first vector sets the target's name");
    let e = vectors::run(&set, 0, &format!("{first}\n\n{wrong}\n")).unwrap_err();
    let VectorError::OpsDiffer {
        line,
        expected,
        actual,
        ..
    } = &e
    else {
        panic!("{e}")
    };
    assert_eq!(*line, 3);
    assert!(expected.contains(r#""name":"Other""#), "{expected}");
    assert!(actual.contains(r#""name":"Radix""#), "{actual}");
    let msg = e.to_string();
    assert!(
        msg.starts_with("line 3 (\"target.registered puts a Target\"): expected ops ["),
        "{msg}"
    );

    // An expected failure that does not come, and a malformed line.
    let e = vectors::run(
        &set,
        0,
        r#"{"event":{"event_type":"target.registered","payload":{"target_id":"x"}},"error":{"code":"rejected"}}"#,
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("expected the failure rejected, but the projector returned ops"),
        "{e}"
    );
    let e = vectors::run(&set, 0, r#"{"event":{"event_type":"x"},"ops":[]}"#).unwrap_err();
    assert!(matches!(e, VectorError::Syntax { line: 1, .. }), "{e}");

    // A misspelt op, key or cause is named as such (it only showed as a long
    // difference of op lists).
    for (edit, needle) in [
        (
            ("\"op\":\"put_node\"", "\"op\":\"put-node\""),
            "unknown op \"put-node\"",
        ),
        (
            (
                "\"node_type\":\"Target\",\"properties",
                "\"nodeType\":\"Target\",\"properties",
            ),
            "unknown key \"nodeType\"",
        ),
    ] {
        let bad = first.replacen(edit.0, edit.1, 1);
        assert_ne!(bad, first);
        let e = vectors::run(&set, 0, &bad).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains(needle), "{e}");
    }
    let e = vectors::run(
        &set,
        0,
        r#"{"event":{"event_type":"target.registered","payload":{}},"error":{"code":"refused"}}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("not a failure cause"), "{e}");
    // A number is compared as the digest sees it: the core's `test_count`
    // 12 matches an expected `12.0` (in the ops, not the event).
    let tests = good
        .lines()
        .find(|l| l.matches("\"test_count\":12").count() >= 2)
        .expect("a vector with test_count in its event and its ops");
    let at = tests.rfind("\"test_count\":12").unwrap();
    let spelled = format!(
        "{}\"test_count\":12.0{}",
        &tests[..at],
        &tests[at + "\"test_count\":12".len()..]
    );
    assert_eq!(vectors::run(&set, 0, &spelled).unwrap(), 1);
    assert!(matches!(
        vectors::run(&set, 0, "\n"),
        Err(VectorError::Empty)
    ));
}

#[test]
fn a_vector_reads_its_starting_graph() {
    // The graph-reading test guest copies node n1 and its `links` edge into
    // its ops, and refuses (`no_node`) when there is no n1.
    let set = leviathan::projection::ProjectorSet::load(
        vec![crate::projection::source(
            crate::projection::graph_view::graph_reading_projector(),
        )],
        None,
    )
    .unwrap();
    let text = concat!(
        r#"{"name":"reads n1","graph":{"nodes":[{"id":"n1","node_type":"run","properties":{"k":1}}],"edges":[{"edge_type":"links","from":"n1","to":"x","properties":{"w":2}}]},"event":{"event_type":"read.it","payload":{}},"ops":[{"op":"put_node","id":"n1","node_type":"run","properties":{"k":1}},{"op":"put_edge","edge_type":"links","from":"n1","to":"x","properties":{"w":2}}]}"#,
        "\n",
        r#"{"name":"empty graph","event":{"event_type":"read.it","payload":{}},"error":{"code":"rejected","guest_code":"no_node"}}"#,
        "\n"
    );
    assert_eq!(vectors::run(&set, 0, text).unwrap(), 2);
}
