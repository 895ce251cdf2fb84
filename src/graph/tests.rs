//! Tests of the graph store against a real fjall database in a temp dir:
//! staging semantics, rollback, the rolling digest, persistence and paging.
//! They own no production behaviour and must stay fast (a few seconds).

use super::*;
use crate::digest::Sha256;
use crate::seq::Seq;
use fjall::Database;
use serde_json::{json, Value};
use std::collections::BTreeSet;

fn nid(s: &str) -> NodeId {
    NodeId::new("node id", s).expect("test ids are not empty")
}

struct Env {
    _dir: tempfile::TempDir,
    db: Database,
    store: GraphStore,
}

/// A temp dir, on tmpfs when there is one: fjall fsyncs on every keyspace
/// creation, which costs ~70 ms each on a busy disk.
fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap()
}

fn env() -> Env {
    let dir = tempdir();
    let db = Database::builder(dir.path()).open().unwrap();
    let store = GraphStore::open(&db).unwrap();
    Env {
        _dir: dir,
        db,
        store,
    }
}

fn props(v: Value) -> Properties {
    match v {
        Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}

fn ts(seq: Seq) -> String {
    format!("2026-01-01T00:00:{:02}Z", seq.0)
}

fn put(id: &str, t: &str, p: Value) -> Op {
    Op::PutNode {
        id: nid(id),
        node_type: t.into(),
        properties: props(p),
    }
}

fn merge(id: &str, t: &str, p: Value, create: bool) -> Op {
    Op::MergeNode {
        id: nid(id),
        node_type: t.into(),
        properties: props(p),
        create_if_absent: create,
    }
}

fn del(id: &str) -> Op {
    Op::DeleteNode { id: nid(id) }
}

fn edge(from: &str, t: &str, to: &str) -> Op {
    Op::PutEdge {
        edge_type: t.into(),
        from: nid(from),
        to: nid(to),
        properties: props(json!({"w": 1})),
    }
}

fn del_edge(from: &str, t: &str, to: &str) -> Op {
    Op::DeleteEdge {
        edge_type: t.into(),
        from: nid(from),
        to: nid(to),
    }
}

impl Env {
    /// Applies each op list as the next event, commits one batch.
    fn commit(&self, events: &[Vec<Op>]) -> (Seq, Sha256) {
        let mut st = self.store.staging().unwrap();
        for ops in events {
            let seq = st.state().0.next();
            st.apply(seq, &ts(seq), ops).unwrap();
        }
        self.write(st)
    }

    fn write(&self, st: Staging) -> (Seq, Sha256) {
        let mut batch = self.db.batch();
        let state = st.write_into(&mut batch).unwrap();
        batch.commit().unwrap();
        state
    }

    fn dump(&self) -> String {
        let mut out = Vec::new();
        self.store.dump(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn node(&self, id: &str) -> Option<Node> {
        self.store.get_node(id).unwrap()
    }

    fn edge_ids(&self, id: &str, dir: Direction, t: Option<&str>) -> Vec<String> {
        let page = self.store.edges(id, dir, t, None, 1000).unwrap();
        assert!(page.next_cursor.is_none());
        page.items
            .iter()
            .map(|e| edge_id(&e.from, &e.edge_type, &e.to))
            .collect()
    }

    fn counts(&self) -> (TypeCounts, TypeCounts) {
        self.store.counts(&crate::schema::SUMMARY_ORDER).unwrap()
    }
}

fn c(pairs: &[(&str, u64)]) -> Vec<(String, u64)> {
    pairs.iter().map(|(t, n)| ((*t).to_owned(), *n)).collect()
}

fn view_edge_ids(v: &impl GraphView, id: &str, dir: Direction) -> Vec<String> {
    v.edges(id, dir, None, 100)
        .iter()
        .map(|e| edge_id(&e.from, &e.edge_type, &e.to))
        .collect()
}

#[test]
fn put_replace_keeps_created_and_replaces_whole() {
    let env = env();
    env.commit(&[vec![put("a", "Task", json!({"x": 1, "y": 2}))]]);
    env.commit(&[vec![], vec![put("a", "Task", json!({"x": 3}))]]);
    let n = env.node("a").unwrap();
    assert_eq!(n.created_seq, Seq(1));
    assert_eq!(n.updated_seq, Seq(3));
    assert_eq!(n.created_at, ts(Seq(1)));
    assert_eq!(n.updated_at, ts(Seq(3)));
    assert_eq!(n.properties, props(json!({"x": 3})));
    assert_eq!(env.counts().0, c(&[("Task", 1)]));

    // Replacing with another type moves counters and the type index.
    env.commit(&[vec![put("a", "Attempt", json!({}))]]);
    assert_eq!(env.counts().0, c(&[("Attempt", 1)]));
    assert!(env
        .store
        .list_nodes(Some("Task"), None, 10)
        .unwrap()
        .items
        .is_empty());
    let newest = env
        .store
        .newest_nodes("Attempt", None, 10, |_| true)
        .unwrap();
    assert_eq!(newest.items.len(), 1);
    assert_eq!(newest.items[0].created_seq, Seq(1));
}

/// Several changes to one committed node or edge in one batch, read through
/// the view in between: the batch writes what a batch per event would have
/// written (`write_into` compares against the committed value, which the
/// staging reads once and must not confuse with a pending one).
#[test]
fn many_changes_in_one_batch_write_what_one_batch_per_event_writes() {
    let base = vec![
        put("a", "Task", json!({"v": 0})),
        put("b", "Task", json!({})),
        edge("a", "E", "b"),
    ];
    let events = vec![
        vec![merge("a", "Task", json!({"v": 1}), false)],
        vec![put("a", "Attempt", json!({"v": 2}))],
        vec![edge("a", "E", "b"), put("a", "Target", json!({}))],
        vec![del_edge("a", "E", "b"), del("b")],
        vec![put("b", "Attempt", json!({"w": 1})), edge("b", "F", "a")],
    ];

    let reference = env();
    reference.commit(std::slice::from_ref(&base));
    for e in &events {
        reference.commit(std::slice::from_ref(e));
    }

    let env = env();
    env.commit(&[base]);
    let mut st = env.store.staging().unwrap();
    // The committed values are read (and kept) before any change.
    assert_eq!(st.get_node("a").unwrap().node_type, "Task");
    assert_eq!(view_edge_ids(&st, "a", Direction::Outgoing), ["a:E:b"]);
    for e in &events {
        let seq = st.state().0.next();
        st.apply(seq, &ts(seq), e).unwrap();
        assert!(st.get_node("a").is_some());
    }
    assert_eq!(st.get_node("a").unwrap().node_type, "Target");
    let state = env.write(st);

    assert_eq!(state, reference.store.state().unwrap());
    assert_eq!(env.dump(), reference.dump());
    assert_eq!(env.counts().0, c(&[("Target", 1), ("Attempt", 1)]));
    for (t, ids) in [
        ("Task", vec![]),
        ("Attempt", vec!["b"]),
        ("Target", vec!["a"]),
    ] {
        let listed: Vec<String> = env
            .store
            .list_nodes(Some(t), None, 10)
            .unwrap()
            .items
            .iter()
            .map(|n| n.id.to_string())
            .collect();
        assert_eq!(listed, ids, "type index of {t}");
    }
}

/// Merges add up: a node whose properties would pass
/// `MAX_NODE_PROPERTIES_BYTES` refuses the merge, and the event leaves no
/// trace, whether the node is in the batch or only in the store.
#[test]
fn a_merge_that_would_grow_a_node_past_the_limit_is_refused() {
    let env = env();
    let third = "x".repeat(staging::MAX_NODE_PROPERTIES_BYTES / 3);
    // Two thirds, stored.
    env.commit(&[
        vec![merge("big", "Attempt", json!({"k0": third}), true)],
        vec![merge("big", "Attempt", json!({"k1": third}), false)],
    ]);
    let stored = env.node("big").unwrap();
    let dump = env.dump();
    for in_batch in [false, true] {
        let mut st = env.store.staging().unwrap();
        let before = st.state();
        let mut seq = before.0.next();
        if in_batch {
            // The node is in the batch already (merged in place).
            st.apply(
                seq,
                &ts(seq),
                &[merge("big", "Attempt", json!({"k4": "short"}), false)],
            )
            .unwrap();
            seq = seq.next();
        }
        // A replaced key is not an addition: this one fits…
        st.apply(
            seq,
            &ts(seq),
            &[merge("big", "Attempt", json!({"k0": third}), false)],
        )
        .unwrap();
        seq = seq.next();
        // …a third key of a third does not.
        let err = st
            .apply(
                seq,
                &ts(seq),
                &[
                    put("other", "Task", json!({})),
                    merge("big", "Attempt", json!({"k2": third, "k3": "y"}), false),
                ],
            )
            .unwrap_err();
        assert!(
            matches!(&err, GraphError::InvalidOp { index: 1, reason } if reason.contains("over the limit")),
            "{err}"
        );
        assert_ne!(st.state(), before);
        assert!(st.get_node("other").is_none());
        let node = st.get_node("big").unwrap();
        assert!(!node.properties.contains_key("k2"), "the merge was kept");
        assert_eq!(node.properties.len(), if in_batch { 3 } else { 2 });
        drop(st);
        assert_eq!(env.dump(), dump);
    }
    assert_eq!(env.node("big").unwrap(), stored);
}

/// Merges into a node of many keys are measured from what each changed
/// (`Staging::sizes`; a debug build checks every one against the whole
/// node), through replaced and added keys, escapes and a rollback, and
/// still refuse the merge that passes the limit.
#[test]
fn merges_into_a_node_of_many_keys_keep_its_size_and_its_limit() {
    let env = env();
    let many: serde_json::Map<String, Value> = (0..staging::SMALL_NODE_KEYS + 10)
        .map(|i| (format!("k{i}"), json!(i)))
        .collect();
    env.commit(&[vec![merge("big", "Attempt", Value::Object(many), true)]]);
    let mut st = env.store.staging().unwrap();
    let mut seq = st.state().0.next();
    let half = "x".repeat(staging::MAX_NODE_PROPERTIES_BYTES / 2);
    let changes = [
        json!({"k0": "now a string", "k1": null, "new\"key\u{1}é": [1, {"a": "\n"}]}),
        json!({"k0": 0, "added": half.clone()}),
        json!({"added": "short again", "k2": {"nested": true}}),
        json!({"added": half.clone()}),
    ];
    for (i, p) in changes.into_iter().enumerate() {
        st.apply(seq, &ts(seq), &[merge("big", "Attempt", p, false)])
            .unwrap();
        seq = seq.next();
        if i == 1 {
            // A failed event rolls its merge back; the next merges go on.
            st.apply(
                seq,
                &ts(seq),
                &[
                    merge("big", "Attempt", json!({"k3": "gone"}), false),
                    merge("big", "Task", json!({}), false),
                ],
            )
            .unwrap_err();
        }
    }
    // Another half does not fit beside the one stored.
    let err = st
        .apply(
            seq,
            &ts(seq),
            &[merge("big", "Attempt", json!({"more": half}), false)],
        )
        .unwrap_err();
    assert!(
        matches!(&err, GraphError::InvalidOp { index: 0, reason } if reason.contains("over the limit")),
        "{err}"
    );
    let node = st.get_node("big").unwrap();
    assert!(!node.properties.contains_key("more"));
    assert_eq!(
        node.properties["k3"],
        json!(3),
        "the failed event's merge was undone"
    );
    assert!(query::json_len(&node.properties) <= staging::MAX_NODE_PROPERTIES_BYTES);
}

#[test]
fn merge_semantics() {
    let env = env();
    env.commit(&[
        vec![merge("absent", "Attempt", json!({"s": 1}), false)],
        vec![merge("m", "Attempt", json!({"a": 1, "b": 1}), true)],
        vec![merge("m", "Attempt", json!({"b": 2, "c": null}), false)],
    ]);
    assert!(env.node("absent").is_none());
    let m = env.node("m").unwrap();
    assert_eq!(m.properties, props(json!({"a": 1, "b": 2, "c": null})));
    assert_eq!((m.created_seq, m.updated_seq), (Seq(2), Seq(3)));
    assert_eq!(env.counts().0, c(&[("Attempt", 1)]));
    assert_eq!(env.store.state().unwrap().0, Seq(3));

    // Type mismatch fails the event and leaves no trace, even of its earlier ops.
    let mut st = env.store.staging().unwrap();
    let before = st.state();
    let err = st
        .apply(
            Seq(4),
            "t",
            &[
                put("other", "Task", json!({})),
                merge("m", "Task", json!({}), true),
            ],
        )
        .unwrap_err();
    assert!(
        matches!(err, GraphError::TypeMismatch { index: 1, .. }),
        "{err}"
    );
    assert_eq!(st.state(), before);
    assert!(st.get_node("other").is_none());
    let dump = env.dump();
    env.write(st);
    assert_eq!(env.dump(), dump);
}

#[test]
fn invalid_ops_and_seq_order_are_rejected() {
    let env = env();
    let mut st = env.store.staging().unwrap();
    let err = st.apply(Seq(2), "t", &[]).unwrap_err();
    assert!(matches!(
        err,
        GraphError::SeqOutOfOrder {
            expected: Seq(1),
            got: Seq(2)
        }
    ));
    // An op cannot carry an empty node id (the host refuses it as
    // `invalid_output` when it builds the `NodeId`); an empty type is refused here.
    assert_eq!(
        NodeId::new("node id", "").unwrap_err().to_string(),
        "node id is empty"
    );
    let err = st
        .apply(Seq(1), "t", &[put("a", "", json!({}))])
        .unwrap_err();
    assert!(
        matches!(err, GraphError::InvalidOp { index: 0, .. }),
        "{err}"
    );
    // An overlong id is the graph store's limit, refused when applied.
    let long = "x".repeat(MAX_ID_BYTES + 1);
    let err = st
        .apply(
            Seq(1),
            "t",
            &[put("a", "T", json!({})), edge("a", "E", &long)],
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "op 1: node id is {} bytes, more than {MAX_ID_BYTES}",
            MAX_ID_BYTES + 1
        )
    );
    assert!(st.is_empty());
}

#[test]
fn delete_node_removes_its_edges_and_fixes_counters() {
    let env = env();
    env.commit(&[vec![
        put("a", "Task", json!({})),
        put("b", "Task", json!({})),
        put("c", "Target", json!({})),
        edge("a", "DEPENDS_ON", "b"),
        edge("c", "PRODUCED", "a"),
        edge("a", "DEPENDS_ON", "a"),
        edge("b", "DEPENDS_ON", "c"),
        edge("x", "PRODUCED", "a"), // dangling: x does not exist
    ]]);
    assert_eq!(env.counts().0, c(&[("Target", 1), ("Task", 2)]));
    assert_eq!(env.counts().1, c(&[("DEPENDS_ON", 3), ("PRODUCED", 2)]));
    assert_eq!(
        env.edge_ids("a", Direction::Both, None),
        [
            "a:DEPENDS_ON:a",
            "a:DEPENDS_ON:b",
            "c:PRODUCED:a",
            "x:PRODUCED:a"
        ]
    );

    // Delete in one batch, with a pending edge added earlier in the same batch.
    env.commit(&[
        vec![edge("a", "PRODUCED", "c")],
        vec![del("a"), del("nope")],
    ]);
    assert!(env.node("a").is_none());
    assert_eq!(env.counts().0, c(&[("Target", 1), ("Task", 1)]));
    assert_eq!(env.counts().1, c(&[("DEPENDS_ON", 1)]));
    assert!(env.edge_ids("a", Direction::Both, None).is_empty());
    assert!(env.edge_ids("b", Direction::Incoming, None).is_empty());
    assert!(env.edge_ids("c", Direction::Outgoing, None).is_empty());
    assert_eq!(
        env.edge_ids("c", Direction::Incoming, None),
        ["b:DEPENDS_ON:c"]
    );

    // Deleting the last of each kind removes the counter entirely.
    env.commit(&[vec![del("b"), del("c")]]);
    assert_eq!(env.counts(), (vec![], vec![]));
    let dump = env.dump();
    for ks in [
        "graph_nodes\t",
        "graph_edges_out\t",
        "graph_edges_in\t",
        "graph_counts\t",
    ] {
        assert!(!dump.contains(ks), "{ks} not empty:\n{dump}");
    }
}

#[test]
fn edge_reverse_index_and_replace_keeps_created_seq() {
    let env = env();
    env.commit(&[vec![
        edge("t1", "DEPENDS_ON", "g"),
        edge("t2", "DEPENDS_ON", "g"),
        edge("a1", "PRODUCED", "g"),
    ]]);
    env.commit(&[vec![Op::PutEdge {
        edge_type: "DEPENDS_ON".into(),
        from: nid("t1"),
        to: nid("g"),
        properties: props(json!({"v": 2})),
    }]]);
    assert_eq!(
        env.edge_ids("g", Direction::Incoming, None),
        ["a1:PRODUCED:g", "t1:DEPENDS_ON:g", "t2:DEPENDS_ON:g"]
    );
    assert_eq!(
        env.edge_ids("g", Direction::Incoming, Some("DEPENDS_ON")),
        ["t1:DEPENDS_ON:g", "t2:DEPENDS_ON:g"]
    );
    let e = &env
        .store
        .edges("t1", Direction::Outgoing, None, None, 10)
        .unwrap()
        .items[0];
    assert_eq!(e.created_seq, Seq(1));
    assert_eq!(e.properties, props(json!({"v": 2})));
    assert_eq!(env.counts().1, c(&[("DEPENDS_ON", 2), ("PRODUCED", 1)]));

    env.commit(&[vec![
        del_edge("t1", "DEPENDS_ON", "g"),
        del_edge("t1", "DEPENDS_ON", "zz"),
    ]]);
    assert_eq!(
        env.edge_ids("g", Direction::Incoming, None),
        ["a1:PRODUCED:g", "t2:DEPENDS_ON:g"]
    );
    assert_eq!(env.counts().1, c(&[("DEPENDS_ON", 1), ("PRODUCED", 1)]));
}

#[test]
fn staging_reads_see_pending_ops_over_committed_state() {
    let env = env();
    env.commit(&[vec![
        put("a", "Task", json!({"v": 0})),
        put("gone", "Task", json!({})),
        edge("a", "E", "b"),
        edge("a", "E", "d"),
        edge("z", "E", "a"),
    ]]);
    let mut st = env.store.staging().unwrap();
    st.apply(
        Seq(2),
        "t",
        &[
            put("new", "Task", json!({})),
            merge("a", "Task", json!({"v": 1}), false),
            edge("a", "E", "c"),
            del_edge("a", "E", "b"),
            del("gone"),
            edge("y", "E", "a"),
        ],
    )
    .unwrap();
    assert!(st.get_node("new").is_some());
    assert!(st.get_node("gone").is_none());
    assert_eq!(st.get_node("a").unwrap().properties, props(json!({"v": 1})));
    assert_eq!(
        view_edge_ids(&st, "a", Direction::Outgoing),
        ["a:E:c", "a:E:d"]
    );
    assert_eq!(
        view_edge_ids(&st, "a", Direction::Incoming),
        ["y:E:a", "z:E:a"]
    );
    assert_eq!(
        view_edge_ids(&st, "a", Direction::Both),
        ["a:E:c", "a:E:d", "y:E:a", "z:E:a"]
    );
    assert_eq!(st.edges("a", Direction::Both, None, 3).len(), 3);
    assert_eq!(st.edges("a", Direction::Outgoing, Some("F"), 3).len(), 0);
    // The committed store does not see pending changes.
    assert!(env.node("new").is_none());
    env.write(st);
    assert_eq!(
        env.edge_ids("a", Direction::Both, None),
        ["a:E:c", "a:E:d", "y:E:a", "z:E:a"]
    );
    assert!(env.node("gone").is_none());
}

#[test]
fn rollback_to_mark_leaves_no_trace() {
    let base = vec![
        put("a", "Task", json!({})),
        put("b", "Task", json!({})),
        edge("a", "E", "b"),
    ];
    let kept = vec![put("k", "Target", json!({})), edge("k", "F", "a")];

    // Reference: the kept bundle alone.
    let reference = env();
    reference.commit(std::slice::from_ref(&base));
    reference.commit(std::slice::from_ref(&kept));

    let env = env();
    env.commit(&[base]);
    let mut st = env.store.staging().unwrap();
    let mark = st.checkpoint();
    st.apply(Seq(2), "t", &[put("c", "Attempt", json!({})), del("a")])
        .unwrap();
    st.apply(
        Seq(3),
        "t",
        &[
            merge("b", "Task", json!({"x": 1}), false),
            edge("b", "E", "c"),
        ],
    )
    .unwrap();
    // A later event of the bundle fails projection: roll the bundle back.
    st.rollback(mark);
    assert_eq!(st.state(), env.store.state().unwrap());
    assert!(st.get_node("a").is_some());
    assert!(st.get_node("c").is_none());
    assert_eq!(view_edge_ids(&st, "a", Direction::Both), ["a:E:b"]);
    let seq = st.state().0.next();
    st.apply(seq, &ts(seq), &kept).unwrap();
    // A second bundle rolled back after a kept one.
    let mark2 = st.checkpoint();
    st.apply(Seq(3), "t", &[del("k")]).unwrap();
    st.rollback(mark2);
    let state = env.write(st);

    assert_eq!(state, reference.store.state().unwrap());
    assert_eq!(env.dump(), reference.dump());
}

#[test]
fn rolling_digest_is_deterministic_and_sensitive() {
    let events = vec![
        vec![put(
            "a",
            "Task",
            json!({"n": 1.5, "s": "é", "z": [1, {"b": 2, "a": 1}]}),
        )],
        vec![],
        vec![
            edge("a", "E", "b"),
            merge("a", "Task", json!({"n": 2}), false),
        ],
    ];
    let one = env();
    let two = env();
    let s1 = one.commit(&events[..1]);
    one.commit(&events[1..]);
    two.commit(&events);
    assert_eq!(one.store.state().unwrap(), two.store.state().unwrap());
    assert_eq!(one.dump(), two.dump());

    // The formula, for seq 1.
    let canonical = serde_json_canonicalizer::to_vec(&events[0]).unwrap();
    assert_eq!(s1.1, Sha256::of_parts(&[&[0u8; 32], &canonical]));
    // An empty event still advances the digest.
    assert_ne!(
        one.store.digest_at(Seq(2)).unwrap(),
        one.store.digest_at(Seq(1)).unwrap()
    );

    let three = env();
    let mut changed = events.clone();
    changed[2][0] = edge("a", "E", "c");
    three.commit(&changed);
    assert_eq!(
        three.store.digest_at(Seq(2)).unwrap(),
        one.store.digest_at(Seq(2)).unwrap()
    );
    assert_ne!(three.store.state().unwrap().1, one.store.state().unwrap().1);
}

#[test]
fn digests_are_persisted_per_seq_and_survive_reopen() {
    let dir = tempdir();
    let mut seen = vec![(Seq(0), GENESIS_DIGEST)];
    {
        let db = Database::builder(dir.path()).open().unwrap();
        let store = GraphStore::open(&db).unwrap();
        let mut st = store.staging().unwrap();
        for i in 1..=5u64 {
            st.apply(
                Seq(i),
                &ts(Seq(i)),
                &[put(&format!("n{i}"), "Task", json!({"i": i}))],
            )
            .unwrap();
            seen.push(st.state());
        }
        let mut batch = db.batch();
        st.write_into(&mut batch).unwrap();
        batch.commit().unwrap();
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    let db = Database::builder(dir.path()).open().unwrap();
    let store = GraphStore::open(&db).unwrap();
    for (seq, digest) in &seen {
        assert_eq!(store.digest_at(*seq).unwrap(), Some(*digest));
    }
    assert_eq!(store.digest_at(Seq(6)).unwrap(), None);
    assert_eq!(store.state().unwrap(), seen[5]);
    assert_eq!(
        store.get_node("n3").unwrap().unwrap().properties,
        props(json!({"i": 3}))
    );
    assert_eq!(
        store.counts(&crate::schema::SUMMARY_ORDER).unwrap().0,
        c(&[("Task", 5)])
    );
    // And the writer continues from there.
    let mut st = store.staging().unwrap();
    assert!(st.apply(Seq(6), "t", &[]).is_ok());
}

#[test]
fn paging_returns_every_item_exactly_once() {
    let env = env();
    let mut events = Vec::new();
    for i in 0..23 {
        let target = if i % 3 == 0 { "g1" } else { "g2" };
        events.push(vec![
            put(
                &format!("att-{i:02}"),
                "Attempt",
                json!({"target_id": target}),
            ),
            edge("hub", "E", &format!("att-{i:02}")),
            edge(&format!("att-{i:02}"), "F", "hub"),
        ]);
    }
    events.push(vec![
        put("t1", "Task", json!({})),
        put("t2", "Task", json!({})),
    ]);
    env.commit(&events);

    // By type, and all nodes.
    for (ty, expect) in [(Some("Attempt"), 23), (Some("Task"), 2), (None, 25)] {
        for limit in [1, 4, 23, 100] {
            let mut ids = Vec::new();
            let mut cursor = None;
            loop {
                let page = env.store.list_nodes(ty, cursor.as_deref(), limit).unwrap();
                assert!(page.items.len() <= limit);
                ids.extend(page.items.into_iter().map(|n| n.id));
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            let mut sorted = ids.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!((ids.len(), &ids), (expect, &sorted), "{ty:?} limit {limit}");
        }
    }

    // Newest first, filtered, across pages.
    let mut got = Vec::new();
    let mut cursor = None;
    loop {
        let page = env
            .store
            .newest_nodes("Attempt", cursor.as_deref(), 3, |n| {
                n.properties["target_id"] == "g1"
            })
            .unwrap();
        got.extend(page.items.into_iter().map(|n| n.id.into_string()));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let expect: Vec<String> = (0..23)
        .rev()
        .filter(|i| i % 3 == 0)
        .map(|i| format!("att-{i:02}"))
        .collect();
    assert_eq!(got, expect);

    // A tiny scan budget stops early but still reaches everything.
    let mut got = Vec::new();
    let mut cursor = None;
    let mut calls = 0;
    loop {
        calls += 1;
        let page = env
            .store
            .newest_nodes_bounded("Attempt", cursor.as_deref(), 100, 5, |n| {
                n.properties["target_id"] == "g1"
            })
            .unwrap();
        got.extend(page.items.into_iter().map(|n| n.id.into_string()));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(got, expect);
    assert_eq!(calls, 5);

    // Edges in both directions across the phase boundary.
    for limit in [1, 5, 23, 46, 50] {
        let mut ids = BTreeSet::new();
        let mut n = 0;
        let mut cursor = None;
        loop {
            let page = env
                .store
                .edges("hub", Direction::Both, None, cursor.as_deref(), limit)
                .unwrap();
            n += page.items.len();
            ids.extend(
                page.items
                    .iter()
                    .map(|e| edge_id(&e.from, &e.edge_type, &e.to)),
            );
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!((n, ids.len()), (46, 46), "limit {limit}");
    }

    // Cursors are checked.
    let page = env.store.list_nodes(Some("Attempt"), None, 2).unwrap();
    let cursor = page.next_cursor.unwrap();
    assert!(matches!(
        env.store.list_nodes(Some("Task"), Some(&cursor), 2),
        Err(GraphError::BadCursor)
    ));
    assert!(matches!(
        env.store.newest_nodes("Attempt", Some("zz"), 2, |_| true),
        Err(GraphError::BadCursor)
    ));
}

#[test]
fn counts_follow_the_original_type_order() {
    let env = env();
    env.commit(&[vec![
        put("1", "Zeta", json!({})),
        put("2", "Attempt", json!({})),
        put("3", "Alpha", json!({})),
        put("4", "Target", json!({})),
        put("5", "Attempt", json!({})),
        edge("1", "SUPPORTS", "2"),
        edge("1", "AAA", "2"),
        edge("1", "DEPENDS_ON", "2"),
    ]]);
    let (nodes, edges) = env.counts();
    assert_eq!(
        nodes,
        c(&[("Target", 1), ("Attempt", 2), ("Alpha", 1), ("Zeta", 1)])
    );
    assert_eq!(edges, c(&[("DEPENDS_ON", 1), ("SUPPORTS", 1), ("AAA", 1)]));
    // By key, for the types present (and some absent ones), the same answer.
    assert_eq!(
        env.store
            .counts_of(
                ["Zeta", "Attempt", "Alpha", "Target", "Task", "Attempt"],
                ["SUPPORTS", "AAA", "DEPENDS_ON", "PRODUCED"],
                &crate::schema::SUMMARY_ORDER,
            )
            .unwrap(),
        (nodes.clone(), edges.clone())
    );
}

#[test]
fn clear_empties_the_graph() {
    let env = env();
    env.commit(&[vec![put("a", "Task", json!({})), edge("a", "E", "b")]]);
    env.store.clear().unwrap();
    assert_eq!(env.store.state().unwrap(), (Seq(0), GENESIS_DIGEST));
    assert!(env.node("a").is_none());
    assert_eq!(env.counts(), (vec![], vec![]));
    let fresh = self::env();
    assert_eq!(env.dump(), fresh.dump());
    env.commit(&[vec![]]);
    assert_eq!(env.store.state().unwrap().0, Seq(1));
}

#[test]
fn staging_and_store_can_cross_threads() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<Staging>();
    send_sync::<GraphStore>();
    let _: &dyn GraphView = &env().store.staging().unwrap();
}

#[test]
fn a_segment_touches_only_nodes_of_types_it_owns() {
    let env = env();
    env.commit(&[vec![put("a", "Attempt", json!({"k": 1}))]]);
    let mut st = env.store.staging().unwrap();
    let seq = Seq(2);
    st.begin_event(seq).unwrap();
    let owns_gadget = |t: &str| t == "Gadget";
    for (op, name) in [
        (put("a", "Gadget", json!({})), "put-node"),
        (merge("a", "Gadget", json!({}), false), "merge-node"),
        (del("a"), "delete-node"),
    ] {
        let e = st
            .apply_segment(
                seq,
                &ts(seq),
                &mut [edge("g", "POKES", "a"), op],
                &owns_gadget,
            )
            .unwrap_err();
        match e {
            GraphError::NotOwner {
                index,
                op,
                id,
                node_type,
            } => assert_eq!(
                (index, op, id.as_str(), node_type.as_str()),
                (1, name, "a", "Attempt")
            ),
            other => panic!("{other}"),
        }
    }
    // Its own node, and an edge of its own type to any node: fine. The
    // failed segments left nothing (their edge was rolled back).
    let ok = [put("g", "Gadget", json!({})), edge("g", "POKES", "a")];
    st.apply_segment(seq, &ts(seq), &mut ok.clone(), &owns_gadget)
        .unwrap();
    st.end_event(seq, &[]);
    env.write(st);
    assert_eq!(
        env.store.get_node("a").unwrap().unwrap().node_type,
        "Attempt"
    );
    let edges = env
        .store
        .edges("a", Direction::Incoming, None, None, 10)
        .unwrap();
    assert_eq!(edges.items.len(), 1);
    // Nor are they in the digest: it is that of the kept ops alone.
    let reference = self::env();
    reference.commit(&[vec![put("a", "Attempt", json!({"k": 1}))], ok.to_vec()]);
    assert_eq!(env.store.state().unwrap(), reference.store.state().unwrap());
}

#[test]
fn recorded_errors_extend_the_digest_only_when_there_are_some() {
    let a = env();
    let b = env();
    let ops = vec![put("a", "Attempt", json!({}))];
    // Without errors, the segment API gives exactly `apply`'s digest.
    let (_, plain) = a.commit(std::slice::from_ref(&ops));
    let mut st = b.store.staging().unwrap();
    st.begin_event(Seq(1)).unwrap();
    st.apply_segment(Seq(1), &ts(Seq(1)), &mut ops.clone(), &|_| true)
        .unwrap();
    st.end_event(Seq(1), &[]);
    assert_eq!(st.state().1, plain);

    // With one, the digest differs, the record is stored, and a rollback
    // forgets it.
    let err = ErrorRecord {
        seq: Seq(2),
        event_id: "e2".into(),
        projector: "team".into(),
        code: "rejected".into(),
        message: "no".into(),
    };
    let mark = st.checkpoint();
    st.begin_event(Seq(2)).unwrap();
    st.end_event(Seq(2), std::slice::from_ref(&err));
    let with_error = st.state().1;
    st.rollback(mark);
    st.begin_event(Seq(2)).unwrap();
    st.end_event(Seq(2), &[]);
    assert_ne!(st.state().1, with_error);
    st.rollback(mark);
    st.begin_event(Seq(2)).unwrap();
    st.end_event(Seq(2), std::slice::from_ref(&err));
    assert_eq!(st.state().1, with_error);
    b.write(st);
    let page = b.store.projection_errors(None, None, 10, false).unwrap();
    assert_eq!(page.items, vec![err.clone()]);
    assert_eq!(
        b.store
            .projection_errors(Some("team"), None, 10, false)
            .unwrap()
            .items,
        vec![err]
    );
    assert!(b
        .store
        .projection_errors(Some("other"), None, 10, false)
        .unwrap()
        .items
        .is_empty());
}

#[test]
fn projection_errors_page_oldest_or_newest_first() {
    let e = env();
    let mut st = e.store.staging().unwrap();
    let mut all = Vec::new();
    for seq in 1..=7u64 {
        st.begin_event(Seq(seq)).unwrap();
        let errs: Vec<ErrorRecord> = ["a", "b"]
            .iter()
            .filter(|p| seq % 2 == 1 || **p == "a")
            .map(|p| ErrorRecord {
                seq: Seq(seq),
                event_id: format!("e{seq}"),
                projector: (*p).into(),
                code: "rejected".into(),
                message: "no".into(),
            })
            .collect();
        st.end_event(Seq(seq), &errs);
        all.extend(errs);
    }
    e.write(st);
    let pages = |projector: Option<&str>, newest: bool| {
        let mut got = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let p = e
                .store
                .projection_errors(projector, cursor.as_deref(), 3, newest)
                .unwrap();
            got.extend(p.items);
            match p.next_cursor {
                Some(c) => cursor = Some(c),
                None => return (got, cursor),
            }
        }
    };
    let (oldest, _) = pages(None, false);
    assert_eq!(oldest, all);
    let (newest, _) = pages(None, true);
    let mut reversed = all.clone();
    reversed.reverse();
    assert_eq!(newest, reversed);
    let (b_newest, _) = pages(Some("b"), true);
    let seqs: Vec<u64> = b_newest.iter().map(|r| r.seq.0).collect();
    assert_eq!(seqs, [7, 5, 3, 1]);
    // A cursor of one order is refused by the other.
    let first = e.store.projection_errors(None, None, 2, true).unwrap();
    let c = first.next_cursor.unwrap();
    assert!(matches!(
        e.store.projection_errors(None, Some(&c), 2, false),
        Err(GraphError::BadCursor)
    ));
}

// ---- history index (graph::history) ----------------------------------------

/// `out_edges_as_of` answers the first `limit` edges by `to` (history keys
/// order them by the id's length first), as of the seq, whatever the count.
#[test]
fn edges_as_of_are_the_first_by_to_as_of_the_seq() {
    let e = env();
    let targets = ["zz", "b", "aaa", "c", "ab", "a", "bb", "zzzz", "d", "ca"];
    let mut st = e.store.staging().unwrap();
    let mut events: Vec<Vec<Op>> = vec![vec![put("n", "T", json!({}))]];
    for t in targets {
        events.push(vec![put(t, "T", json!({})), edge("n", "E", t)]);
    }
    // Removed at the last seq: present as of the one before.
    events.push(vec![del_edge("n", "E", "a")]);
    apply_batch(&mut st, &events);
    e.write(st);
    let last = Seq(events.len() as u64);
    let snap = e.db.snapshot();
    let tos = |seq: Seq, limit: usize| -> Vec<String> {
        e.store
            .out_edges_as_of(&snap, "n", "E", seq, limit)
            .unwrap()
            .into_iter()
            .map(|x| x.to.as_str().to_string())
            .collect()
    };
    let mut all: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
    all.sort();
    assert_eq!(tos(Seq(last.0 - 1), 100), all);
    assert_eq!(tos(Seq(last.0 - 1), 4), &all[..4]);
    let without_a: Vec<String> = all.iter().filter(|t| *t != "a").cloned().collect();
    assert_eq!(tos(last, 3), &without_a[..3]);
    // As of seq 4: the edges to the first three targets listed.
    let mut early: Vec<String> = targets[..3].iter().map(|t| t.to_string()).collect();
    early.sort();
    assert_eq!(tos(Seq(4), 2), &early[..2]);
    assert!(tos(last, 0).is_empty());
}

#[test]
fn history_records_every_change_and_answers_as_of() {
    let e = env();
    e.commit(&[
        vec![put("a", "T", json!({"v": 1}))], // 1
        vec![merge("a", "T", json!({"w": 2}), false), edge("a", "E", "b")], // 2
        vec![put("x", "T", json!({}))],       // 3
        vec![
            put("a", "T", json!({"v": 3})),
            merge("a", "T", json!({"z": 0}), false),
        ], // 4
        vec![del("a")],                       // 5
    ]);
    let snap = e.db.snapshot();
    let h = e.store.node_history_at(&snap, "a", None, 100).unwrap();
    let seqs: Vec<(u64, u32)> = h.changes.iter().map(|c| (c.seq.0, c.ord)).collect();
    // At 5 the edge a-E->b goes first (ord 0), then the node (ord 1).
    assert_eq!(seqs, [(1, 0), (2, 0), (4, 0), (4, 1), (5, 1)]);
    assert_eq!(h.changes[1].op["op"], "merge_node");
    assert!(h.changes[4].node.clone().flatten().is_none());
    assert!(h.changes[3].node.clone().flatten().is_some());
    assert_eq!(h.next_cursor, None);
    // Paging: two at a time gives the same changes.
    let mut paged = Vec::new();
    let mut cursor = None;
    loop {
        let p = e
            .store
            .node_history_at(&snap, "a", cursor.as_deref(), 2)
            .unwrap();
        paged.extend(p.changes);
        match p.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(paged, h.changes);
    assert!(e
        .store
        .node_history_at(&snap, "b", None, 10)
        .unwrap()
        .changes
        .is_empty());
    let bad = e.store.node_history_at(&snap, "x", cursor.as_deref(), 2);
    assert!(bad.is_ok() || matches!(bad, Err(GraphError::BadCursor)));
    let as_of = |seq: u64| e.store.node_as_of(&snap, "a", Seq(seq)).unwrap();
    assert_eq!(as_of(0), None);
    assert_eq!(as_of(1).unwrap().properties, props(json!({"v": 1})));
    assert_eq!(as_of(2).unwrap().properties, props(json!({"v": 1, "w": 2})));
    assert_eq!(as_of(3).unwrap().properties, props(json!({"v": 1, "w": 2})));
    assert_eq!(as_of(4).unwrap().properties, props(json!({"v": 3, "z": 0})));
    assert_eq!(as_of(5), None);
    // The edge a-E->b: there from 2, removed with a at 5.
    let edges = |seq: u64| {
        e.store
            .out_edges_as_of(&snap, "a", "E", Seq(seq), 10)
            .unwrap()
    };
    assert!(edges(1).is_empty());
    assert_eq!(edges(2).len(), 1);
    assert_eq!(edges(4)[0].to.as_str(), "b");
    assert!(edges(5).is_empty());
}

#[test]
fn history_serves_each_op_as_it_was_whatever_its_numbers_strings_and_keys() {
    let e = env();
    // Stored as its canonical bytes (those the digest hashes).
    let plain = put(
        "a",
        "T",
        json!({
            "s": "q\"\\\u{1}\u{7f}é\u{10000}/",
            "max": 9007199254740992u64,
            "min": -9007199254740992i64,
            "nested": [1, {"k": null, "t": true}],
        }),
    );
    // JCS would write these differently: stored in serde's form.
    let floats = merge("a", "T", json!({"f": 1.0, "g": 0.1, "e": 1e21}), false);
    let wide = merge("a", "T", json!({"u": u64::MAX, "i": i64::MIN}), false);
    // Keys whose JCS order (UTF-16) differs from serde's (UTF-8).
    let keys = merge("a", "T", json!({"\u{e000}": 1, "\u{10000}": 2}), false);
    let ops = vec![plain.clone(), floats.clone(), wide, keys, del("a")];
    e.commit(std::slice::from_ref(&ops));
    let snap = e.db.snapshot();
    let h = e.store.node_history_at(&snap, "a", None, 100).unwrap();
    assert_eq!(h.changes.len(), ops.len());
    for (change, op) in h.changes.iter().zip(&ops) {
        assert_eq!(change.op, serde_json::to_value(op).unwrap());
    }
    let canonical = |op: &Op| {
        let mut out = Vec::new();
        crate::graph::canonical::write_op(op, &mut out);
        out
    };
    use fjall::Readable;
    let stored: Vec<_> = snap
        .prefix(&e.store.history, b"n")
        .map(|g| g.into_inner().unwrap().1)
        .collect();
    let holds = |op: &Op| {
        let c = canonical(op);
        stored.iter().any(|v| v.windows(c.len()).any(|w| w == c))
    };
    assert!(holds(&plain));
    assert!(!holds(&floats));
}

#[test]
fn history_records_derived_from_their_op_give_back_what_the_graph_held() {
    // Each event its own batch, the graph read after each: every history
    // entry and every as-of answer must be what the graph held then, while
    // a node its op created, an edge its put-edge made and a diff against
    // the op's properties are stored without repeating the op's data.
    let e = env();
    let numbers = json!({"f": 1.0, "g": 0.1, "e": 1e21, "u": u64::MAX, "i": i64::MIN, "s": "q\"é"});
    let events: Vec<Vec<Op>> = vec![
        vec![put("a", "T", numbers.clone())], // 1: created by put
        vec![merge("a", "T", json!({"f": 1.0, "k": 2}), false)], // 2: diff, "f" unchanged
        vec![edge("a", "E", "b")],            // 3: edge created
        vec![Op::PutEdge {
            edge_type: "E".into(),
            from: nid("a"),
            to: nid("b"),
            properties: props(json!({"w": 2})),
        }], // 4: edge replaced, created_seq kept
        vec![put("a", "T", json!({"k": 2, "n": null}))], // 5: diff with unset keys
        vec![merge("c", "U", json!({"x": [1, {"y": true}]}), true)], // 6: created by merge
        vec![put("c", "V", json!({"x": 1}))], // 7: type changed: whole
        vec![del_edge("a", "E", "b")],        // 8
        vec![edge("a", "E", "b"), merge("a", "T", json!({"k": 3}), false)], // 9
    ];
    let mut nodes: Vec<(Option<Node>, Option<Node>)> = vec![(None, None)];
    let mut edges: Vec<Vec<Edge>> = vec![vec![]];
    for ops in &events {
        e.commit(std::slice::from_ref(ops));
        nodes.push((e.node("a"), e.node("c")));
        let page = e
            .store
            .edges("a", Direction::Outgoing, Some("E"), None, 10)
            .unwrap();
        edges.push(page.items);
    }
    let snap = e.db.snapshot();
    for seq in 0..=events.len() {
        let s = Seq(seq as u64);
        assert_eq!(
            e.store.node_as_of(&snap, "a", s).unwrap(),
            nodes[seq].0,
            "a as of {seq}"
        );
        assert_eq!(
            e.store.node_as_of(&snap, "c", s).unwrap(),
            nodes[seq].1,
            "c as of {seq}"
        );
        assert_eq!(
            e.store.out_edges_as_of(&snap, "a", "E", s, 10).unwrap(),
            edges[seq],
            "edges as of {seq}"
        );
    }
    for (id, pick) in [("a", 0), ("c", 1)] {
        let h = e.store.node_history_at(&snap, id, None, 100).unwrap();
        assert!(!h.changes.is_empty());
        for change in &h.changes {
            let held = &nodes[change.seq.0 as usize];
            let held = if pick == 0 { &held.0 } else { &held.1 };
            assert_eq!(
                change.node.clone().flatten().as_ref(),
                held.as_ref(),
                "{id} at {}",
                change.seq.0
            );
            let op = &events[change.seq.0 as usize - 1];
            assert!(op
                .iter()
                .any(|o| serde_json::to_value(o).unwrap() == change.op));
        }
    }
    // What is stored: no creation or put-edge repeats its op's properties.
    use fjall::Readable;
    let stored: Vec<String> = snap
        .prefix(&e.store.history, b"")
        .map(|g| String::from_utf8(g.into_inner().unwrap().1.to_vec()).unwrap())
        .collect();
    let with = |member: &str| stored.iter().filter(|v| v.contains(member)).count();
    assert_eq!(with("\"node_from_op\""), 2, "{stored:#?}");
    assert_eq!(with("\"edge_from_op\""), 3, "{stored:#?}");
    assert_eq!(with("\"node_diff\""), 3, "{stored:#?}");
    assert_eq!(with("\"set\""), 0, "{stored:#?}");
    assert_eq!(
        with("\"node\":{"),
        1,
        "only the change of type: {stored:#?}"
    );
    assert_eq!(with("\"seq\""), 0, "seq and ord are the key's");
    assert_eq!(with("\"event_id\""), 0, "the event is the log's");
    assert_eq!(with("\"event_type\""), 0, "the event is the log's");
}

#[test]
fn history_records_in_the_earlier_whole_form_still_read() {
    // Records as builds before the derived forms wrote them: seq and ord in
    // the value, every created node whole, every diff with its `set`, every
    // edge whole.
    let e = env();
    let node = |seq: u64, p: Value| {
        json!({"id": "a", "node_type": "T", "properties": p, "created_seq": 1,
               "updated_seq": seq, "created_at": "t1", "updated_at": format!("t{seq}")})
    };
    let records = [
        (
            history::node_key("a", Seq(1), 0),
            json!({"event_id": "e1", "event_type": "x",
            "node": node(1, json!({"v": 1})), "op": put("a", "T", json!({"v": 1})),
            "ord": 0, "projector": null, "seq": 1}),
        ),
        (
            history::node_key("a", Seq(2), 0),
            json!({"event_id": "e2", "event_type": "x",
            "node_diff": {"set": {"w": 2}, "unset": [], "updated_at": "t2"},
            "op": merge("a", "T", json!({"v": 1, "w": 2}), false),
            "ord": 0, "projector": "p@1", "seq": 2}),
        ),
        (
            history::edge_key("a", "E", "b", Seq(2), 1),
            json!({"edge": {"edge_type": "E",
            "from": "a", "to": "b", "properties": {"w": 1}, "created_seq": 2},
            "event_id": "e2", "event_type": "x", "op": edge("a", "E", "b"),
            "ord": 1, "projector": "p@1", "seq": 2}),
        ),
    ];
    for (k, v) in &records {
        e.store
            .history
            .insert(k, serde_json::to_vec(v).unwrap())
            .unwrap();
    }
    let snap = e.db.snapshot();
    let h = e.store.node_history_at(&snap, "a", None, 10).unwrap();
    assert_eq!(h.changes.len(), 2);
    assert_eq!(h.changes[1].projector.as_deref(), Some("p@1"));
    assert_eq!(h.changes[1].event_id.as_deref(), Some("e2"));
    assert_eq!(h.changes[1].event_type.as_deref(), Some("x"));
    let want: Node = serde_json::from_value(node(2, json!({"v": 1, "w": 2}))).unwrap();
    assert_eq!(h.changes[1].node, Some(Some(want.clone())));
    assert_eq!(e.store.node_as_of(&snap, "a", Seq(2)).unwrap(), Some(want));
    let edges = e
        .store
        .out_edges_as_of(&snap, "a", "E", Seq(2), 10)
        .unwrap();
    assert_eq!(edges.len(), 1);
    assert_eq!(edges[0].created_seq, Seq(2));
}

#[test]
fn history_follows_rollback_and_is_not_in_the_digest() {
    let with = env();
    let mut st = with.store.staging().unwrap();
    st.apply(Seq(1), "t", &[put("a", "T", json!({}))]).unwrap();
    let mark = st.checkpoint();
    st.apply(Seq(2), "t", &[put("b", "T", json!({}))]).unwrap();
    st.rollback(mark);
    let mut batch = with.db.batch();
    let state = st.write_into(&mut batch).unwrap();
    batch.commit().unwrap();
    let snap = with.db.snapshot();
    assert!(with
        .store
        .node_history_at(&snap, "b", None, 10)
        .unwrap()
        .changes
        .is_empty());
    assert_eq!(
        with.store
            .node_history_at(&snap, "a", None, 10)
            .unwrap()
            .changes
            .len(),
        1
    );
    // The same op with its history dropped has the same digest.
    let without = env();
    let (_, digest) = without.commit(&[vec![put("a", "T", json!({}))]]);
    assert_eq!(state.1, digest);
}

#[test]
fn the_async_lane_has_its_own_state_and_digests_and_a_combined_one_per_seq() {
    let lanes = env();
    let link = edge("a", "LINK", "b");
    let (_, inline2) = lanes.commit(&[vec![put("a", "Attempt", json!({})), link.clone()], vec![]]);
    let inline1 = lanes.store.digest_at(Seq(1)).unwrap().unwrap();

    // The async lane starts at genesis whatever the inline lane applied.
    let mut st = lanes.store.staging_async().unwrap();
    assert_eq!(st.state(), (Seq(0), GENESIS_DIGEST));
    let ops = [put("x", "Tick", json!({})), edge("x", "TICKED", "a")];
    st.begin_event(Seq(1)).unwrap();
    st.apply_segment_in_lane(
        Seq(1),
        &ts(Seq(1)),
        &mut ops.clone(),
        &|t| t == "Tick",
        &|t| t == "TICKED",
    )
    .unwrap();
    st.end_event(Seq(1), &[]);
    let (_, async1) = lanes.write(st);

    // Same rule as the inline digest (a fresh graph applying the same ops).
    let fresh = env();
    assert_eq!(fresh.commit(&[ops.to_vec()]).1, async1);
    assert_eq!(lanes.store.async_state().unwrap(), (Seq(1), async1));
    assert_eq!(lanes.store.async_digest_at(Seq(1)).unwrap(), Some(async1));
    assert_eq!(
        lanes.store.combined_digest_at(Seq(1)).unwrap(),
        Some(Sha256::of_parts(&[inline1.as_bytes(), async1.as_bytes()]))
    );
    assert_eq!(lanes.store.combined_digest_at(Seq(2)).unwrap(), None);
    // The writer's state and digests are untouched.
    assert_eq!(lanes.store.state().unwrap(), (Seq(2), inline2));
    assert_eq!(lanes.store.digest_at(Seq(1)).unwrap(), Some(inline1));

    // A delete-node in the inline lane removes only the inline lane's edges.
    let mut st = lanes.store.staging().unwrap();
    st.begin_event(Seq(3)).unwrap();
    st.apply_segment_in_lane(
        Seq(3),
        &ts(Seq(3)),
        &mut [del("a")],
        &|t| t == "Attempt",
        &|t| t == "LINK",
    )
    .unwrap();
    st.end_event(Seq(3), &[]);
    lanes.write(st);
    assert!(lanes.node("a").is_none());
    assert!(lanes.edge_ids("a", Direction::Outgoing, None).is_empty());
    assert_eq!(
        lanes.edge_ids("a", Direction::Incoming, None),
        vec![edge_id("x", "TICKED", "a")]
    );
    // An offline rebuild's clear forgets the async lane too.
    lanes.store.clear().unwrap();
    assert_eq!(lanes.store.async_state().unwrap(), (Seq(0), GENESIS_DIGEST));
}

#[test]
fn history_diffs_and_snapshots_give_every_state_back() {
    // One node changed at every seq across several snapshot blocks: merges
    // (diffs), whole replacements that drop keys (diffs with `unset`), a
    // delete and a re-creation (snapshots); every as-of and every history
    // entry must equal the state a plain model gives.
    let e = env();
    let n = 3 * history::SNAPSHOT_BLOCK + 17;
    let mut model: Vec<Option<serde_json::Value>> = vec![None]; // state after seq i
    let mut batches = Vec::new();
    let mut state: Option<serde_json::Value> = None;
    for seq in 1..=n {
        let op = if seq == 1 || seq == 2 * history::SNAPSHOT_BLOCK + 3 {
            state = Some(json!({"seq": seq}));
            put("h", "T", json!({"seq": seq}))
        } else if seq == 2 * history::SNAPSHOT_BLOCK {
            state = None;
            del("h")
        } else if seq % 10 == 0 {
            // Replace whole: every other key dropped.
            state = Some(json!({"replaced": seq}));
            put("h", "T", json!({"replaced": seq}))
        } else {
            let key = format!("k{}", seq % 7);
            let s = state.get_or_insert_with(|| json!({}));
            s[key.as_str()] = json!(seq);
            merge("h", "T", json!({ key: seq }), false)
        };
        // A merge of an absent node (after the delete) changes nothing.
        if matches!(&op, Op::MergeNode { .. }) && model.last().unwrap().is_none() && seq > 1 {
            state = None;
        }
        batches.push(vec![op]);
        model.push(state.clone());
    }
    e.commit(&batches);
    let snap = e.db.snapshot();
    for seq in 0..=n {
        let got = e
            .store
            .node_as_of(&snap, "h", Seq(seq))
            .unwrap()
            .map(|node| serde_json::Value::Object(node.properties));
        assert_eq!(got, model[seq as usize], "as of seq {seq}");
    }
    // Every history entry carries the whole node, paged at an odd size so
    // that pages start on diffs.
    let mut cursor = None;
    let mut seen = 0u64;
    loop {
        let p = e
            .store
            .node_history_at(&snap, "h", cursor.as_deref(), 7)
            .unwrap();
        for c in &p.changes {
            let node = c.node.clone().flatten();
            assert_eq!(
                node.as_ref()
                    .map(|n| serde_json::Value::Object(n.properties.clone())),
                model[c.seq.0 as usize],
                "history entry at seq {}",
                c.seq
            );
            if let Some(node) = node {
                assert_eq!(node.updated_seq, c.seq);
            }
            seen += 1;
        }
        match p.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert!(seen > n - 200, "{seen} changes for {n} seqs");
    // Most changes are diffs: far fewer bytes than a whole node per change.
    use fjall::Readable;
    let diffs = snap
        .prefix(&e.store.history, b"n")
        .map(|g| g.into_inner().unwrap().1)
        .filter(|v| std::str::from_utf8(v).unwrap().contains("\"node_diff\""))
        .count();
    assert!(diffs as u64 > seen / 2, "{diffs} diffs of {seen} changes");
}

#[test]
fn history_and_node_values_live_in_blob_files_and_read_back_after_reopen() {
    let events: Vec<Vec<Op>> = (0..50u64)
        .map(|i| {
            vec![
                merge("a", "T", json!({ format!("k{}", i % 7): i }), true),
                edge("a", "E", &format!("b{i}")),
            ]
        })
        .collect();
    let env = env();
    env.commit(&events);
    // Values go to blob files when the memtable is flushed: the history's
    // records and the nodes (session 21); the graph's indexes and edges
    // stay plain trees.
    env.store.history.rotate_memtable_and_wait().unwrap();
    env.store.nodes.rotate_memtable_and_wait().unwrap();
    assert!(env.store.history.is_kv_separated());
    assert!(env.store.history.blob_file_count() >= 1);
    assert!(env.store.nodes.is_kv_separated());
    assert!(env.store.nodes.blob_file_count() >= 1);
    assert!(!env.store.edges_out.is_kv_separated());
    assert!(!env.store.nodes_by_type.is_kv_separated());
    let snap = env.db.snapshot();
    let node_a = env.store.read_node(&snap, "a").unwrap().unwrap();
    assert_eq!(node_a.updated_seq, Seq(50));
    let changes = env
        .store
        .node_history_at(&snap, "a", None, 1000)
        .unwrap()
        .changes;
    assert_eq!(changes.len(), 50);
    let at_37 = env.store.node_as_of(&snap, "a", Seq(37)).unwrap();
    assert_eq!(at_37.as_ref().unwrap().updated_seq, Seq(37));
    env.db.persist(fjall::PersistMode::SyncAll).unwrap();
    drop(snap);
    let Env {
        _dir: dir,
        db,
        store,
    } = env;
    drop((store, db));
    // Reopened, the keyspace keeps its layout and answers the same.
    let db = Database::builder(dir.path()).open().unwrap();
    let store = GraphStore::open(&db).unwrap();
    assert!(store.history.is_kv_separated());
    let snap = db.snapshot();
    assert_eq!(
        store
            .node_history_at(&snap, "a", None, 1000)
            .unwrap()
            .changes,
        changes
    );
    assert_eq!(store.node_as_of(&snap, "a", Seq(37)).unwrap(), at_37);
    // The node read back from its blob file after the reopen.
    assert_eq!(store.read_node(&snap, "a").unwrap().unwrap(), node_a);
    // A new generation's history and nodes are separated too.
    let next = GraphStore::open_generation(&db, 1).unwrap();
    assert!(next.history.is_kv_separated());
    assert!(next.nodes.is_kv_separated());
}

/// Three batches whose every event reads what the batch before changed:
/// nodes merged and replaced, edges scanned both ways (a cascade and a
/// `GraphView` listing), counters moved, an edge deleted and put again.
fn chained_batches() -> Vec<Vec<Vec<Op>>> {
    vec![
        vec![
            vec![
                put("a", "Task", json!({"v": 0})),
                put("b", "Task", json!({"keep": true})),
                put("c", "Target", json!({})),
            ],
            vec![
                edge("a", "dep", "b"),
                edge("c", "has", "a"),
                edge("z", "E", "a"),
                merge("a", "Task", json!({"x": 1}), false),
            ],
        ],
        vec![
            vec![
                merge("a", "Task", json!({"y": 2}), false),
                put("b", "Task", json!({"new": 1})),
                del("c"),
            ],
            vec![
                edge("b", "dep", "a"),
                del_edge("z", "E", "a"),
                put("d", "Attempt", json!({})),
            ],
        ],
        vec![
            vec![
                del("a"),
                put("c", "Task", json!({"again": true})),
                put("b", "Target", json!({})),
            ],
            vec![
                edge("z", "E", "b"),
                merge("d", "Attempt", json!({"n": 3}), true),
            ],
        ],
    ]
}

/// What a `Staging` sees of the nodes and edges `chained_batches` touches.
fn chained_view(st: &Staging) -> Vec<String> {
    let mut seen = Vec::new();
    for id in ["a", "b", "c", "d", "z"] {
        seen.push(format!("{id}: {:?}", st.get_node(id).map(|n| n.properties)));
        seen.push(format!(
            "{id}: {:?}",
            view_edge_ids(st, id, Direction::Both)
        ));
    }
    seen
}

/// Applies one batch's events into `st`, after what it has applied.
fn apply_batch(st: &mut Staging, events: &[Vec<Op>]) {
    for ops in events {
        let seq = st.state().0.next();
        st.apply(seq, &ts(seq), ops).unwrap();
    }
}

#[test]
fn a_batch_staged_over_an_uncommitted_one_ends_where_one_after_the_other_does() {
    let batches = chained_batches();
    // One after the other: each batch committed before the next is staged.
    let seq_env = env();
    let mut seq_views = Vec::new();
    let mut seq_state = (Seq::ZERO, GENESIS_DIGEST);
    for events in &batches {
        let mut st = seq_env.store.staging().unwrap();
        seq_views.push(chained_view(&st));
        apply_batch(&mut st, events);
        seq_state = seq_env.write(st);
    }
    // Pipelined: batch k+1 staged over batch k's overlay while k is not
    // committed yet (`committed_first`: k committed before k+1's snapshot).
    for committed_first in [false, true] {
        let env = env();
        let mut views = Vec::new();
        let mut parent = None;
        let mut in_flight: Option<fjall::OwnedWriteBatch> = None;
        for events in &batches {
            if committed_first {
                if let Some(b) = in_flight.take() {
                    b.commit().unwrap();
                }
            }
            let mut st = env.store.staging_over(parent.take()).unwrap();
            views.push(chained_view(&st));
            apply_batch(&mut st, events);
            let mut batch = env.db.batch();
            let overlay = st.write_into_keeping(&mut batch).unwrap();
            if let Some(b) = in_flight.take() {
                // Batch k commits only now, after k+1 was staged and written.
                b.commit().unwrap();
            }
            in_flight = Some(batch);
            parent = Some(std::sync::Arc::new(overlay));
        }
        let last = parent.unwrap().state();
        in_flight.unwrap().commit().unwrap();
        assert_eq!(views, seq_views, "committed_first={committed_first}");
        assert_eq!(last, seq_state, "committed_first={committed_first}");
        assert_eq!(env.store.state().unwrap(), seq_state);
        assert_eq!(
            env.dump(),
            seq_env.dump(),
            "committed_first={committed_first}"
        );
        assert_eq!(env.counts(), seq_env.counts());
        for id in ["a", "b", "c", "d", "z"] {
            assert_eq!(
                env.edge_ids(id, Direction::Both, None),
                seq_env.edge_ids(id, Direction::Both, None)
            );
        }
    }
    // What the batches did, so that the comparison above is about something.
    assert_eq!(seq_env.node("a"), None);
    assert_eq!(seq_env.node("b").unwrap().node_type, "Target");
    assert_eq!(
        seq_env.edge_ids("b", Direction::Both, None),
        ["z:E:b"],
        "b's edges to and from the deleted a went with it"
    );
    assert_eq!(
        seq_views[1][0],
        format!("a: {:?}", Some(props(json!({"v": 0, "x": 1}))))
    );
}

#[test]
fn an_overlay_of_another_generation_is_refused() {
    let env = env();
    let mut st = env.store.staging().unwrap();
    apply_batch(&mut st, &chained_batches()[0]);
    let overlay = st.write_into_keeping(&mut env.db.batch()).unwrap();
    let other = GraphStore::open_generation(&env.db, env.store.generation() + 1).unwrap();
    assert!(matches!(
        other.staging_over(Some(std::sync::Arc::new(overlay))),
        Err(GraphError::Corrupt { .. })
    ));
}

#[test]
fn a_rollback_after_settle_undoes_only_what_followed_its_mark() {
    // One staging, as the writer uses it: events settled one by one, then a
    // bundle that fails and is rolled back to the mark taken after them.
    let e = env();
    let mut st = e.store.staging().unwrap();
    st.apply(Seq(1), &ts(Seq(1)), &[put("a", "T", json!({"v": 1}))])
        .unwrap();
    st.settle();
    st.apply(
        Seq(2),
        &ts(Seq(2)),
        &[merge("a", "T", json!({"v": 2}), false)],
    )
    .unwrap();
    st.settle();
    let mark = st.checkpoint();
    let kept = st.state();
    st.apply(
        Seq(3),
        &ts(Seq(3)),
        &[merge("a", "T", json!({"v": 3}), false), edge("a", "E", "b")],
    )
    .unwrap();
    st.apply(Seq(4), &ts(Seq(4)), &[del("a")]).unwrap();
    st.rollback(mark);
    assert_eq!(st.state(), kept);
    assert_eq!(e.write(st), kept);
    // What the settled events did stands; nothing after the mark does.
    let a = e.node("a").unwrap();
    assert_eq!(a.properties["v"], 2);
    assert_eq!(a.updated_seq, Seq(2));
    assert!(e.edge_ids("a", Direction::Outgoing, None).is_empty());
    assert_eq!(e.counts().0, c(&[("T", 1)]));
    // The same two events without settling give the same graph.
    let plain = env();
    assert_eq!(
        plain.commit(&[
            vec![put("a", "T", json!({"v": 1}))],
            vec![merge("a", "T", json!({"v": 2}), false)],
        ]),
        kept
    );
    assert_eq!(plain.dump(), e.dump());
}

#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "a rollback to a mark taken before Staging::settle")]
fn a_rollback_to_a_mark_from_before_settle_is_refused() {
    let e = env();
    let mut st = e.store.staging().unwrap();
    let mark = st.checkpoint();
    st.apply(Seq(1), &ts(Seq(1)), &[put("a", "T", json!({}))])
        .unwrap();
    st.settle();
    st.rollback(mark);
}

#[test]
fn merges_of_a_pending_node_roll_back_to_the_node_before_them() {
    // Merges of a node the batch already holds are made in place; rolling
    // them back (a failed segment, a refused bundle) gives the node back
    // exactly, and the graph equals one where they never happened.
    let e = env();
    let mut st = e.store.staging().unwrap();
    st.apply(
        Seq(1),
        &ts(Seq(1)),
        &[put("a", "T", json!({"v": 1, "keep": "x"}))],
    )
    .unwrap();
    let mark = st.checkpoint();
    let kept = st.state();
    st.apply(
        Seq(2),
        &ts(Seq(2)),
        &[
            merge("a", "T", json!({"v": 2, "new": [1]}), false),
            merge("a", "T", json!({"v": 3, "keep": "y"}), false),
        ],
    )
    .unwrap();
    assert_eq!(
        st.get_node("a").unwrap().properties,
        props(json!({"v": 3, "keep": "y", "new": [1]}))
    );
    // A segment whose last op fails leaves no trace of its merges.
    st.begin_event(Seq(3)).unwrap();
    let err = st
        .apply_segment(
            Seq(3),
            &ts(Seq(3)),
            &mut [
                merge("a", "T", json!({"v": 4}), false),
                merge("a", "Other", json!({}), false),
            ],
            &|_| true,
        )
        .unwrap_err();
    assert!(matches!(err, GraphError::TypeMismatch { .. }), "{err}");
    assert_eq!(st.get_node("a").unwrap().properties["v"], 3);
    assert_eq!(st.get_node("a").unwrap().updated_seq, Seq(2));
    st.end_event(Seq(3), &[]);
    st.rollback(mark);
    assert_eq!(st.state(), kept);
    let a = st.get_node("a").unwrap();
    assert_eq!(a.properties, props(json!({"v": 1, "keep": "x"})));
    assert_eq!(
        (a.updated_seq, a.updated_at.as_str()),
        (Seq(1), &*ts(Seq(1)))
    );
    e.write(st);
    let plain = env();
    plain.commit(&[vec![put("a", "T", json!({"v": 1, "keep": "x"}))]]);
    assert_eq!(plain.dump(), e.dump());
    let snap = e.db.snapshot();
    assert_eq!(
        e.store
            .node_history_at(&snap, "a", None, 10)
            .unwrap()
            .changes
            .len(),
        1
    );
}

/// The ops of `small_changes_to_a_big_node_are_stored_as_diffs_until_they_pay_for_a_snapshot`,
/// one event each, and the big node's properties after each seq (index 0:
/// before the first).
fn big_node_events(blocks: u64) -> (Vec<Vec<Op>>, Vec<Option<Value>>) {
    let big = "x".repeat(64 << 10);
    let mut events = Vec::new();
    let mut model = vec![None];
    let mut state = json!({"big": big});
    for seq in 1..=blocks * history::SNAPSHOT_BLOCK {
        let (block, at) = (seq / history::SNAPSHOT_BLOCK, seq % history::SNAPSHOT_BLOCK);
        let op = if seq == 1 {
            put("big", "T", state.clone())
        } else if at == 5 && block % 40 == 7 {
            // A same-type replacement at a crossing that drops a key (its
            // op, as big as the node, pays for the next snapshot).
            state = json!({"big": big, "replaced": seq});
            put("big", "T", state.clone())
        } else if at == 5 || (at == 100 && block % 3 == 0) || (at == 101 && block % 3 == 0) {
            // A small change (at a block crossing, or two within a block).
            state[format!("k{}", seq % 5)] = json!(seq);
            merge("big", "T", json!({ format!("k{}", seq % 5): seq }), false)
        } else {
            merge("filler", "F", json!({"seq": seq}), true)
        };
        events.push(vec![op]);
        model.push(Some(state.clone()));
    }
    (events, model)
}

/// Every record of `graph_history`, in key order.
fn history_records(e: &Env) -> Vec<(Vec<u8>, Vec<u8>)> {
    use fjall::Readable;
    e.db.snapshot()
        .iter(&e.store.history)
        .map(|g| {
            let (k, v) = g.into_inner().unwrap();
            (k.to_vec(), v.to_vec())
        })
        .collect()
}

#[test]
fn small_changes_to_a_big_node_are_stored_as_diffs_until_they_pay_for_a_snapshot() {
    // A 64 KiB node changed a little at every block crossing (and twice
    // within every third block), between events that change another node.
    let blocks = 60;
    let (events, model) = big_node_events(blocks);
    let e = env();
    for chunk in events.chunks(1000) {
        e.commit(chunk);
    }
    let snap = e.db.snapshot();
    // Every state of the big node reads back as of every seq it changed at
    // (and the seq before).
    for (seq, ops) in events.iter().enumerate() {
        let seq = seq as u64 + 1;
        if !matches!(&ops[0], Op::PutNode { id, .. } | Op::MergeNode { id, .. } if id.as_str() == "big")
        {
            continue;
        }
        for s in [seq - 1, seq] {
            let got = e
                .store
                .node_as_of(&snap, "big", Seq(s))
                .unwrap()
                .map(|n| Value::Object(n.properties));
            assert_eq!(got, model[s as usize], "as of seq {s}");
        }
    }
    // What its history takes: snapshots only once the diffs since the last
    // pay for half of one (~32 diffs of 1 KiB, or the replacement's one),
    // not at every crossing: the creation, the crossing after each
    // replacement, and about one per 32 crossings.
    let mut prefix = vec![b'n'];
    prefix.extend_from_slice(&keys::lp("big"));
    let (mut whole, mut diffs, mut bytes, mut run, mut longest_run) = (0, 0, 0, 0, 0);
    for (k, v) in history_records(&e) {
        if !k.starts_with(&prefix) {
            continue;
        }
        bytes += v.len();
        if String::from_utf8_lossy(&v).contains("\"node_diff\":") {
            diffs += 1;
            run += 1;
            longest_run = longest_run.max(run);
        } else {
            whole += 1;
            run = 0;
        }
    }
    let changes = whole + diffs;
    assert_eq!(changes, 1 + blocks + 2 * (blocks / 3));
    // Before: one 64 KiB snapshot per block, ~3.9 MB.
    assert!(
        (3..=5).contains(&whole),
        "{whole} whole records of {changes} changes"
    );
    assert!(bytes < 8 * (64 << 10), "{bytes} bytes of history");
    // A read replays at most ~32 diffs plus a block's.
    assert!(longest_run <= 40, "{longest_run} diffs in a row");
}

#[test]
fn a_big_nodes_history_is_the_same_whatever_the_batches() {
    // The debt a crossing reads comes from this batch, the one before it
    // (committing or committed) and the store: the records must not depend
    // on where the batches end.
    let (events, _) = big_node_events(24);
    let one_batch = env();
    one_batch.commit(&events);
    let expected = history_records(&one_batch);
    assert_eq!(expected.len(), events.len(), "one change per event");
    // Batches of varied sizes, pipelined (each staged over the one before,
    // which commits before or after the next one's snapshot).
    for committed_first in [false, true] {
        let env = env();
        let (mut parent, mut in_flight) = (None, None::<fjall::OwnedWriteBatch>);
        let (mut at, mut rng) = (0usize, 7u64);
        while at < events.len() {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = ((rng >> 33) % 700 + 1) as usize;
            let end = (at + len).min(events.len());
            if committed_first {
                if let Some(b) = in_flight.take() {
                    b.commit().unwrap();
                }
            }
            let mut st = env.store.staging_over(parent.take()).unwrap();
            apply_batch(&mut st, &events[at..end]);
            let mut batch = env.db.batch();
            let overlay = st.write_into_keeping(&mut batch).unwrap();
            if let Some(b) = in_flight.take() {
                b.commit().unwrap();
            }
            in_flight = Some(batch);
            parent = Some(std::sync::Arc::new(overlay));
            at = end;
        }
        in_flight.unwrap().commit().unwrap();
        assert!(
            history_records(&env) == expected,
            "committed_first={committed_first}: the history differs from one batch's"
        );
    }
    // One event per batch, each committed before the next.
    let each = env();
    for ev in &events {
        each.commit(std::slice::from_ref(ev));
    }
    assert!(history_records(&each) == expected);
}
