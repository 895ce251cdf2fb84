//! A well-behaved projector: its description, its ops, which event types
//! reach it, and calls from several threads.

use crate::common::wasm::*;
use crate::projection::{expected_good_ops, good_projector, source};
use leviathan::projection::ProjectorSet;

#[test]
fn well_behaved_projector_returns_converted_ops_and_its_description() {
    let bytes = good_projector();
    let digest = leviathan::digest::Sha256::of(&bytes);
    let set = ProjectorSet::load(vec![source(bytes)], None).unwrap();

    let info = &set.projectors()[0];
    assert_eq!(info.name, "core");
    assert_eq!(info.version, "1.0.0");
    assert_eq!(info.digest, digest);
    assert_eq!(info.handles, ["attempt.created", "topo.*"]);
    assert_eq!(info.node_types, ["attempt", "run"]);
    assert_eq!(info.edge_types, ["part_of"]);

    let graph = MemGraph::default();
    let ops = set
        .project(&event(42, "evt-7", "attempt.created"), &graph)
        .unwrap();
    assert_eq!(ops, expected_good_ops());
    // Same event again: same ops (fresh instance each time).
    let again = set
        .project(&event(42, "evt-7", "attempt.created"), &graph)
        .unwrap();
    assert_eq!(again, ops);
}

#[test]
fn handles_exact_names_and_prefix_patterns_only() {
    let set = ProjectorSet::load(vec![source(good_projector())], None).unwrap();
    assert!(set.handles("attempt.created"));
    assert!(set.handles("topo.node"));
    assert!(set.handles("topo.node.added"));
    assert!(!set.handles("topo."));
    assert!(!set.handles("topo"));
    assert!(!set.handles("attempt.created.x"));
    assert!(!set.handles("run.started"));
    let ops = set
        .project(&event(1, "e1", "run.started"), &MemGraph::default())
        .unwrap();
    assert!(ops.is_empty(), "no projector handles it, no ops");
}

#[test]
fn set_is_send_and_sync_and_projects_from_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ProjectorSet>();
    let set = ProjectorSet::load(vec![source(good_projector())], None).unwrap();
    std::thread::scope(|s| {
        for t in 0..2 {
            let set = &set;
            s.spawn(move || {
                let graph = MemGraph::default();
                for i in 0..50 {
                    let ops = set
                        .project(&event(t * 100 + i, "e", "attempt.created"), &graph)
                        .unwrap();
                    assert_eq!(ops.len(), 5);
                }
            });
        }
    });
}
