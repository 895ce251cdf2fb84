//! What a projector reads through the `graph` import, and the order in which
//! a set's projectors run (`project`, and `prepare` + `finish` as rebuild
//! does).

use crate::common::wasm::*;
use crate::projection::source;
use leviathan::graph::{GraphStore, Op};
use leviathan::projection::ProjectorSet;
use leviathan::seq::Seq;
use serde_json::json;

/// A guest that reads node `n1` and its outgoing `links` edges through the
/// `graph` import and echoes them back as ops.
pub(crate) fn graph_reading_projector() -> Vec<u8> {
    let desc = Describe {
        name: "reader",
        version: "1.0.0",
        handles: &["read.*"],
        node_types: &["run"],
        edge_types: &["links"],
    };
    let mut d = Data::default();
    let (n1p, n1l) = d.str("n1");
    let (lp, ll) = d.str("links");
    let retn = d.zeros(48, 8);
    let rete = d.zeros(8, 4);
    let no_node = d.err("no_node", "graph has no n1");
    let no_edge = d.err("no_edge", "n1 has no links edge");
    let ops = d.zeros(2 * 36, 4);
    let res = d.zeros(12, 4);
    let imports = r#"
  (import "leviathan:projector/graph@1.0.0" "get-node" (func $get_node (param i32 i32 i32)))
  (import "leviathan:projector/graph@1.0.0" "edges" (func $edges (param i32 i32 i32 i32 i32 i32 i32 i32)))"#;
    let copy = |dst: u32, src: &str| format!("(i32.store (i32.const {dst}) (i32.load {src}))");
    let body = format!(
        r#"(local $e i32)
    (call $get_node (i32.const {n1p}) (i32.const {n1l}) (i32.const {retn}))
    (if (i32.eqz (i32.load8_u (i32.const {retn}))) (then (return (i32.const {no_node}))))
    ;; op 0: put-node(node.id, node.node-type, node.properties)
    (i32.store8 (i32.const {ops}) (i32.const 0))
    {c1} {c2} {c3} {c4} {c5} {c6}
    ;; edges("n1", outgoing, some("links"), 10)
    (call $edges (i32.const {n1p}) (i32.const {n1l}) (i32.const 0) (i32.const 1) (i32.const {lp}) (i32.const {ll}) (i32.const 10) (i32.const {rete}))
    (if (i32.eqz (i32.load (i32.const {rete_len}))) (then (return (i32.const {no_edge}))))
    (local.set $e (i32.load (i32.const {rete})))
    ;; op 1: put-edge(edge.type, edge.from, edge.to, edge.properties)
    (i32.store8 (i32.const {op1}) (i32.const 3))
    {e1} {e2} {e3} {e4} {e5} {e6} {e7} {e8}
    (i32.store (i32.const {res}) (i32.const 0))
    (i32.store (i32.const {res4}) (i32.const {ops}))
    (i32.store (i32.const {res8}) (i32.const 2))
    (i32.const {res})"#,
        c1 = copy(ops + 4, &format!("(i32.const {})", retn + 8)),
        c2 = copy(ops + 8, &format!("(i32.const {})", retn + 12)),
        c3 = copy(ops + 12, &format!("(i32.const {})", retn + 16)),
        c4 = copy(ops + 16, &format!("(i32.const {})", retn + 20)),
        c5 = copy(ops + 20, &format!("(i32.const {})", retn + 24)),
        c6 = copy(ops + 24, &format!("(i32.const {})", retn + 28)),
        rete_len = rete + 4,
        op1 = ops + 36,
        e1 = copy(ops + 40, "(local.get $e)"),
        e2 = copy(ops + 44, "(i32.add (local.get $e) (i32.const 4))"),
        e3 = copy(ops + 48, "(i32.add (local.get $e) (i32.const 8))"),
        e4 = copy(ops + 52, "(i32.add (local.get $e) (i32.const 12))"),
        e5 = copy(ops + 56, "(i32.add (local.get $e) (i32.const 16))"),
        e6 = copy(ops + 60, "(i32.add (local.get $e) (i32.const 20))"),
        e7 = copy(ops + 64, "(i32.add (local.get $e) (i32.const 24))"),
        e8 = copy(ops + 68, "(i32.add (local.get $e) (i32.const 28))"),
        res4 = res + 4,
        res8 = res + 8,
    );
    component(&projector_wat(&desc, d, imports, "", &body))
}

#[test]
fn graph_import_answers_from_the_graph_view() {
    let set = ProjectorSet::load(vec![source(graph_reading_projector())], None).unwrap();
    let graph = MemGraph::default()
        .with_node(
            "n1",
            "run",
            json!({"state": "open", "tries": 3, "tags": ["a", "b"]}),
        )
        .with_edge("n1", "other", "n9", json!({}))
        .with_edge("n0", "links", "n1", json!({"incoming": true}))
        .with_edge("n1", "links", "n2", json!({"weight": 0.5}));
    let ops = set.project(&event(7, "e7", "read.it"), &graph).unwrap();
    let obj = |v: serde_json::Value| v.as_object().unwrap().clone();
    assert_eq!(
        ops,
        vec![
            Op::PutNode {
                id: nid("n1"),
                node_type: "run".into(),
                properties: obj(json!({"state": "open", "tries": 3, "tags": ["a", "b"]})),
            },
            Op::PutEdge {
                edge_type: "links".into(),
                from: nid("n1"),
                to: nid("n2"),
                properties: obj(json!({"weight": 0.5})),
            },
        ]
    );

    // Without the node, the guest rejects: the import really reads the view.
    let err = set
        .project(&event(8, "e8", "read.it"), &MemGraph::default())
        .unwrap_err();
    assert_eq!(err.code(), "rejected");
    assert!(err.to_string().contains("graph has no n1"), "{err}");
}

/// A graph-independent projector named `name` handling `read.*` that returns
/// one `put-node` of `id`, or (with `reject`) refuses every event.
fn pure_projector(name: &'static str, id: &'static str, reject: bool) -> Vec<u8> {
    let desc = Describe {
        name,
        version: "1.0.0",
        handles: &["read.*"],
        node_types: &["attempt"],
        edge_types: &[],
    };
    static_projector(&desc, |d| {
        if reject {
            d.err("nope", "refused by a graph-independent projector")
        } else {
            d.ok_ops(&[StaticOp::PutNode {
                id,
                node_type: "attempt",
                properties: "{}",
            }])
        }
    })
}

/// `prepare` (done ahead, in parallel, by rebuild) followed by `finish` must
/// give exactly what `project` gives: every projector's ops in set order, and
/// on failure the first failing projector in set order, whether it reads the
/// graph or not.
#[test]
fn prepared_then_finished_equals_projected_in_set_order() {
    let graph = MemGraph::default()
        .with_node("n1", "run", json!({"state": "open"}))
        .with_edge("n1", "links", "n2", json!({}));
    let empty = MemGraph::default();
    let cases = [
        // pure, reader, pure: all succeed on `graph`, the reader fails on `empty`.
        vec![
            pure_projector("first", "a:1", false),
            graph_reading_projector(),
            pure_projector("last", "a:2", false),
        ],
        // the reader fails (on `empty`) before a later pure projector rejects.
        vec![
            graph_reading_projector(),
            pure_projector("last", "a:2", true),
        ],
        // a pure projector rejects before the reader runs.
        vec![
            pure_projector("first", "a:1", true),
            graph_reading_projector(),
        ],
    ];
    for (case, sources) in cases.into_iter().enumerate() {
        let set = ProjectorSet::load(sources.into_iter().map(source).collect(), None).unwrap();
        assert!(set.has_graph_independent());
        let events: Vec<_> = (1..=40)
            .map(|seq| {
                event(
                    seq,
                    "e",
                    if seq % 5 == 0 {
                        "other.type"
                    } else {
                        "read.it"
                    },
                )
            })
            .collect();
        for g in [&graph, &empty] {
            let prepared = set.prepare_all(&events);
            assert_eq!(prepared.len(), events.len());
            for (ev, prep) in events.iter().zip(prepared) {
                let want = set.project(ev, g);
                let got = set.finish(ev, prep, g);
                assert_eq!(got, want, "case {case}, seq {}", ev.seq);
            }
        }
    }
    // The first case on the full graph: ops of all three, in set order.
    let set = ProjectorSet::load(
        vec![
            source(pure_projector("first", "a:1", false)),
            source(graph_reading_projector()),
            source(pure_projector("last", "a:2", false)),
        ],
        None,
    )
    .unwrap();
    let ev = event(3, "e3", "read.it");
    let ops = set.finish(&ev, set.prepare(&ev), &graph).unwrap();
    let kinds: Vec<String> = ops
        .iter()
        .map(|op| match op {
            Op::PutNode { id, .. } => format!("node {id}"),
            Op::PutEdge { from, to, .. } => format!("edge {from}->{to}"),
            other => panic!("unexpected op {other:?}"),
        })
        .collect();
    assert_eq!(kinds, ["node a:1", "node n1", "edge n1->n2", "node a:2"]);
    let err = set.finish(&ev, set.prepare(&ev), &empty).unwrap_err();
    assert_eq!(err.projector, "reader@1.0.0");
}

/// A real graph store (fjall, in a temp dir) and the staging view the writer
/// hands projectors while it builds a batch.
fn real_store() -> (tempfile::TempDir, fjall::Database, GraphStore) {
    let dir = tempfile::tempdir().unwrap();
    let db = leviathan::storage::open_database(&dir.path().join("store")).unwrap();
    let graph = GraphStore::open(&db).unwrap();
    (dir, db, graph)
}

const TS: &str = "2026-01-24T10:00:00Z";

fn obj(v: serde_json::Value) -> leviathan::graph::Properties {
    v.as_object().unwrap().clone()
}

fn put_node(id: &str, props: serde_json::Value) -> Op {
    Op::PutNode {
        id: nid(id),
        node_type: "run".into(),
        properties: obj(props),
    }
}

fn put_edge(from: &str, to: &str, props: serde_json::Value) -> Op {
    Op::PutEdge {
        edge_type: "links".into(),
        from: nid(from),
        to: nid(to),
        properties: obj(props),
    }
}

/// The edge target the graph-reading guest saw (its second op).
fn linked_to(ops: &[Op]) -> &str {
    match &ops[1] {
        Op::PutEdge { to, .. } => to,
        other => panic!("unexpected op {other:?}"),
    }
}

/// Through the writer's staging view, a projector sees what earlier events of
/// the same batch changed before it is committed, stops seeing what a refused
/// bundle of the batch changed once it is rolled back to its mark, and the
/// next batch reads the committed graph the same way.
#[test]
fn the_graph_import_reads_the_batch_being_built() {
    let set = ProjectorSet::load(vec![source(graph_reading_projector())], None).unwrap();
    let (_dir, db, graph) = real_store();
    let mut staging = graph.staging().unwrap();
    let err = set
        .project(&event(1, "e1", "read.it"), &staging)
        .unwrap_err();
    assert!(err.to_string().contains("graph has no n1"), "{err}");

    // An earlier event of the batch, not committed.
    staging
        .apply(
            Seq(1),
            TS,
            &[
                put_node("n1", json!({"state": "open"})),
                put_edge("n0", "n1", json!({"incoming": true})),
                put_edge("n1", "n2", json!({"weight": 1})),
            ],
        )
        .unwrap();
    let ops = set.project(&event(2, "e2", "read.it"), &staging).unwrap();
    assert_eq!(ops[0], put_node("n1", json!({"state": "open"})));
    assert_eq!(ops[1], put_edge("n1", "n2", json!({"weight": 1})));

    // A bundle of the same batch changes n1, then is refused and rolled back.
    let mark = staging.checkpoint();
    staging
        .apply(
            Seq(2),
            TS,
            &[
                put_node("n1", json!({"state": "closed"})),
                Op::DeleteEdge {
                    edge_type: "links".into(),
                    from: nid("n1"),
                    to: nid("n2"),
                },
                put_edge("n1", "n3", json!({})),
            ],
        )
        .unwrap();
    let during = set.project(&event(3, "e3", "read.it"), &staging).unwrap();
    assert_eq!(during[0], put_node("n1", json!({"state": "closed"})));
    assert_eq!(linked_to(&during), "n3", "the deleted edge is not seen");
    staging.rollback(mark);
    assert_eq!(
        set.project(&event(2, "e2", "read.it"), &staging).unwrap(),
        ops
    );

    // Committed: the next batch's view reads the same graph from the store.
    let mut batch = db.batch();
    staging.write_into(&mut batch).unwrap();
    batch.commit().unwrap();
    let next = graph.staging().unwrap();
    assert_eq!(set.project(&event(2, "e2", "read.it"), &next).unwrap(), ops);
}

/// Each projector sees the graph as it stood before the event, not the ops
/// an earlier projector of the set returned for the same event; the next
/// event sees them once applied.
#[test]
fn projectors_of_one_event_see_the_graph_before_it() {
    let set = ProjectorSet::load(
        vec![
            source(pure_projector("first", "n1", false)),
            source(graph_reading_projector()),
        ],
        None,
    )
    .unwrap();
    let (_dir, _db, graph) = real_store();
    let mut staging = graph.staging().unwrap();
    let err = set
        .project(&event(1, "e1", "read.it"), &staging)
        .unwrap_err();
    assert_eq!(err.projector, "reader@1.0.0");
    assert!(err.to_string().contains("graph has no n1"), "{err}");

    // Once an event has put n1 (and an edge), the next event's reader sees it.
    staging
        .apply(
            Seq(1),
            TS,
            &[put_node("n1", json!({})), put_edge("n1", "n2", json!({}))],
        )
        .unwrap();
    let ops = set.project(&event(2, "e2", "read.it"), &staging).unwrap();
    assert_eq!(ops.len(), 3, "{ops:?}");
    assert_eq!(linked_to(&ops[1..]), "n2");
}
