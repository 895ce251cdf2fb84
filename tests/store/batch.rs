//! Group commit: bundles that arrive while the writer is busy share one batch
//! (one fjall write batch, one durable persist). A bundle refused inside a
//! batch rolls back to its mark without disturbing the others, seqs stay
//! dense, and what the batch commits is exactly what a replay of the log gives.
//!
//! The writer is started held (`Writer::start_held`), every bundle is queued,
//! and only then is it released, so the bundles land in one batch every time.
//! One batch is visible in the answers: each carries the head after its batch.

use leviathan::bundle::Bundle;
use leviathan::bundle::Limits;
use leviathan::server::load_projection;
use leviathan::storage::{open_store, Store, SyncMode};
use leviathan::writer::{AppendError, AppendStatus, Appended, Writer, WriterParts};
use serde_json::{json, Value};

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    fingerprint: leviathan::digest::Sha256,
    set: std::sync::Arc<leviathan::projection::ProjectorSet>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).unwrap();
    let specs = leviathan::projector_specs::parse("core").unwrap();
    let p = load_projection(&crate::common::shared_cache(), &specs).unwrap();
    Fixture {
        _dir: dir,
        store,
        fingerprint: p.fingerprint,
        set: p.set,
    }
}

fn parse(b: &Value) -> Bundle {
    leviathan::bundle::parse(&serde_json::to_vec(b).unwrap(), &Limits::default())
        .unwrap_or_else(|e| panic!("a valid bundle: {e}"))
}

/// Appends `bundles` so that the writer takes them all into one batch; the
/// answers in order.
fn one_batch(f: &Fixture, bundles: &[Value]) -> Vec<Result<Appended, AppendError>> {
    queued_in_batches_of(f, bundles, usize::MAX)
}

/// Queues every bundle of `bundles`, then lets the writer take them, at most
/// `per_batch` in a batch; the answers in order.
fn queued_in_batches_of(
    f: &Fixture,
    bundles: &[Value],
    per_batch: usize,
) -> Vec<Result<Appended, AppendError>> {
    let parts = WriterParts {
        db: f.store.db.clone(),
        log: f.store.log.clone(),
        live: leviathan::generations::LiveGraph::new(leviathan::generations::Live {
            graph: f.store.graph.clone(),
            projectors: f.set.clone(),
            fingerprint: f.fingerprint,
        }),
        head: f.store.log.check_head().unwrap(),
        sync: SyncMode::Always,
    };
    let (writer, hold) = if per_batch == usize::MAX {
        Writer::start_held(parts)
    } else {
        // Longer than staging one bundle takes, even in a debug build: the
        // next bundle is staged while this one is uncommitted.
        Writer::start_held_batches_of(parts, per_batch, std::time::Duration::from_millis(150))
    }
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tasks: Vec<_> = bundles
            .iter()
            .map(|b| {
                let w = writer.clone();
                let b = parse(b);
                tokio::spawn(async move { w.append(b).await })
            })
            .collect();
        // Every bundle waits in the queue before the writer takes any.
        while writer.queued() < bundles.len() {
            tokio::task::yield_now().await;
        }
        hold.release();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    })
}

fn ev(id: &str, event_type: &str, payload: Value) -> Value {
    crate::common::event(id, event_type, payload)
}

fn created(id: &str, attempt: &str) -> Value {
    ev(
        id,
        "attempt.created",
        json!({"attempt_id": attempt, "task_id": "t1", "attempt_number": 1}),
    )
}

fn seqs(a: &Appended) -> (u64, u64) {
    (a.first_seq.unwrap().0, a.last_seq.unwrap().0)
}

/// The log holds exactly `ids`, at seqs 1.., and its chain verifies.
fn assert_log(f: &Fixture, ids: &[&str]) {
    let events = f
        .store
        .log
        .after_at(&f.store.log.view(), leviathan::seq::Seq(0), 1000)
        .unwrap();
    let got: Vec<(u64, &str)> = events
        .iter()
        .map(|e| (e.seq.0, e.event_id.as_str()))
        .collect();
    let want: Vec<(u64, &str)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (i as u64 + 1, *id))
        .collect();
    assert_eq!(
        got, want,
        "dense seqs, in batch order, nothing of a refused bundle"
    );
    let report = f.store.log.verify().unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.verified_events, ids.len() as u64);
    assert_eq!(f.store.log.head().unwrap().seq.0, ids.len() as u64);
}

/// The graph the batch committed is the one a replay of the log gives.
fn assert_graph_is_the_replay(f: &Fixture) {
    let (seq, digest) = f.store.graph.state().unwrap();
    assert_eq!(seq, f.store.log.head().unwrap().seq);
    let mut before = Vec::new();
    f.store.graph.dump(&mut before).unwrap();
    let report = leviathan::replay::rebuild(
        &f.store.db,
        &f.store.log,
        &f.store.graph,
        &f.set,
        f.fingerprint,
    )
    .unwrap();
    assert!(report.identical, "{report:?}");
    assert_eq!(report.state_digest, digest);
    let mut after = Vec::new();
    f.store.graph.dump(&mut after).unwrap();
    assert!(
        before == after,
        "the rebuilt graph differs from the committed one"
    );
}

/// `answer` is an event conflict on `event_id` (at `index` in its bundle)
/// with the event the log or a batch gave `seq`.
fn assert_event_conflict(
    answer: &Result<Appended, AppendError>,
    event_id: &str,
    index: usize,
    seq: u64,
) {
    match answer {
        Err(AppendError::EventConflict {
            event_id: id,
            index: i,
            seq: s,
        }) => assert_eq!((id.as_str(), *i, s.0), (event_id, index, seq)),
        other => panic!("expected an event conflict, got {other:?}"),
    }
}

/// `answer` is a conflict on `bundle_id` (seen before with other content).
fn assert_bundle_conflict(answer: &Result<Appended, AppendError>, bundle_id: &str) {
    match answer {
        Err(AppendError::BundleConflict { bundle_id: id }) => assert_eq!(id, bundle_id),
        other => panic!("expected a bundle conflict, got {other:?}"),
    }
}

#[test]
fn a_refused_bundle_in_a_batch_rolls_back_alone() {
    let f = fixture();
    let answers = one_batch(
        &f,
        &[
            crate::common::bundle("a", vec![created("a1", "att-a"), created("a2", "att-b")]),
            // Its first event is accepted and projected (it changes att-a,
            // staged by the bundle before it), its second cannot be projected
            // (no attempt_id): the whole bundle is refused.
            crate::common::bundle(
                "refused",
                vec![
                    ev("r1", "attempt.started", json!({"attempt_id": "att-a"})),
                    created("r2-new", "att-r"),
                    ev("r3", "attempt.created", json!({"task_id": "t1"})),
                ],
            ),
            crate::common::bundle("c", vec![created("c1", "att-c"), created("c2", "att-d")]),
        ],
    );
    let a = answers[0].as_ref().unwrap();
    let c = answers[2].as_ref().unwrap();
    assert_eq!(a.status, AppendStatus::Ok);
    assert_eq!(seqs(a), (1, 2));
    assert_eq!(seqs(c), (3, 4), "the refused bundle's seqs are reused");
    // One batch: both answers carry the head after it.
    assert_eq!(a.head, c.head);
    assert_eq!(a.head.seq.0, 4);
    match &answers[1] {
        Err(AppendError::Projection {
            index, event_id, ..
        }) => assert_eq!((*index, event_id.as_str()), (2, "r3")),
        other => panic!("expected a projection refusal, got {other:?}"),
    }

    assert_log(&f, &["a1", "a2", "c1", "c2"]);
    for id in ["r1", "r2-new", "r3"] {
        assert!(f.store.log.get_by_event_id(id).unwrap().is_none(), "{id}");
    }
    assert!(f
        .store
        .log
        .bundle(&leviathan::ids::BundleId::new("refused").unwrap())
        .unwrap()
        .is_none());
    // The refused bundle's graph changes are gone, the others' are kept.
    let att_a = f.store.graph.get_node("att-a").unwrap().unwrap();
    assert_eq!(att_a.properties["status"], "created");
    assert!(f.store.graph.get_node("att-r").unwrap().is_none());
    assert!(f.store.graph.get_node("att-d").unwrap().is_some());
    assert_graph_is_the_replay(&f);

    // The refused bundle can be sent again, fixed, as a new batch.
    let again = one_batch(
        &f,
        &[crate::common::bundle(
            "refused",
            vec![ev("r1", "attempt.started", json!({"attempt_id": "att-a"}))],
        )],
    );
    assert_eq!(seqs(again[0].as_ref().unwrap()), (5, 5));
    assert_log(&f, &["a1", "a2", "c1", "c2", "r1"]);
    assert_graph_is_the_replay(&f);
}

#[test]
fn bundles_in_one_batch_see_each_others_event_and_bundle_ids() {
    let f = fixture();
    let shared = created("shared", "att-1");
    let answers = one_batch(
        &f,
        &[
            crate::common::bundle("p", vec![shared.clone(), created("p2", "att-2")]),
            // The same event id with other content: a conflict with the seq
            // the batch gave it, though it is not in the log yet.
            crate::common::bundle(
                "q",
                vec![created("q1", "att-q"), created("shared", "att-other")],
            ),
            // The same event id with the same content: counted, not appended.
            crate::common::bundle("r", vec![shared.clone(), created("r2", "att-3")]),
            // The batch's own bundle id again, other content: a conflict.
            crate::common::bundle("p", vec![created("p-other", "att-9")]),
            // The batch's own bundle again: a duplicate with its seqs.
            crate::common::bundle("p", vec![shared, created("p2", "att-2")]),
        ],
    );
    let p = answers[0].as_ref().unwrap();
    assert_eq!(
        (p.status, seqs(p), p.ingested),
        (AppendStatus::Ok, (1, 2), 2)
    );
    assert_event_conflict(&answers[1], "shared", 1, 1);
    let r = answers[2].as_ref().unwrap();
    assert_eq!((r.ingested, r.duplicates, seqs(r)), (1, 1, (3, 3)));
    assert_bundle_conflict(&answers[3], "p");
    let dup = answers[4].as_ref().unwrap();
    assert_eq!(
        (dup.status, seqs(dup), dup.ingested),
        (AppendStatus::Duplicate, (1, 2), 0)
    );
    for a in answers.iter().flatten() {
        assert_eq!(a.head.seq.0, 3, "one batch: every answer has its head");
    }

    assert_log(&f, &["shared", "p2", "r2"]);
    let shared_node = f.store.graph.get_node("att-1").unwrap().unwrap();
    assert_eq!(shared_node.created_seq.0, 1);
    assert!(f.store.graph.get_node("att-q").unwrap().is_none());
    assert!(f.store.graph.get_node("att-other").unwrap().is_none());
    assert!(f.store.graph.get_node("att-9").unwrap().is_none());
    assert_graph_is_the_replay(&f);
}

/// One bundle per batch, each commit delayed, so that each bundle is checked
/// and projected while the one before it is not yet in the store (the writer
/// stages batch k+1 over batch k's uncommitted changes): retries, conflicts
/// and graph reads see the batch in flight exactly as they see the same
/// batch or the log.
#[test]
fn a_bundle_staged_behind_one_being_committed_sees_its_ids_and_its_graph() {
    let f = fixture();
    let shared = created("shared", "att-1");
    let answers = queued_in_batches_of(
        &f,
        &[
            crate::common::bundle("p", vec![shared.clone(), created("p2", "att-2")]),
            crate::common::bundle(
                "q",
                vec![created("q1", "att-q"), created("shared", "att-other")],
            ),
            // Reads att-1 (created by p) to fail it, and repeats p's event.
            crate::common::bundle(
                "r",
                vec![
                    shared.clone(),
                    ev(
                        "r2",
                        "attempt.failed",
                        json!({"attempt_id": "att-1", "status": "failed", "error_summary": "boom"}),
                    ),
                ],
            ),
            crate::common::bundle("p", vec![created("p-other", "att-9")]),
            crate::common::bundle("p", vec![shared, created("p2", "att-2")]),
            crate::common::bundle("s", vec![created("s1", "att-4")]),
            // Retried while "s" is still uncommitted.
            crate::common::bundle("s", vec![created("s1", "att-4")]),
        ],
        1,
    );
    let p = answers[0].as_ref().unwrap();
    assert_eq!(
        (p.status, seqs(p), p.ingested, p.head.seq.0),
        (AppendStatus::Ok, (1, 2), 2, 2),
        "p's own batch: the head after it"
    );
    assert_event_conflict(&answers[1], "shared", 1, 1);
    let r = answers[2].as_ref().unwrap();
    assert_eq!(
        (r.ingested, r.duplicates, seqs(r), r.head.seq.0),
        (1, 1, (3, 3), 3)
    );
    assert_bundle_conflict(&answers[3], "p");
    let dup = answers[4].as_ref().unwrap();
    assert_eq!(
        (dup.status, seqs(dup), dup.ingested),
        (AppendStatus::Duplicate, (1, 2), 0)
    );
    let s = answers[5].as_ref().unwrap();
    assert_eq!((seqs(s), s.head.seq.0), ((4, 4), 4));
    let s_again = answers[6].as_ref().unwrap();
    assert_eq!(
        (s_again.status, seqs(s_again), s_again.ingested),
        (AppendStatus::Duplicate, (4, 4), 0),
        "a retry of the bundle in flight is its original outcome"
    );

    assert_log(&f, &["shared", "p2", "r2", "s1"]);
    let att_1 = f.store.graph.get_node("att-1").unwrap().unwrap();
    assert_eq!(
        (att_1.created_seq.0, att_1.updated_seq.0),
        (1, 3),
        "r's event found the node p created, not yet committed"
    );
    assert_eq!(att_1.properties["status"], "failed");
    assert!(f.store.graph.get_node("att-other").unwrap().is_none());
    assert!(f.store.graph.get_node("att-9").unwrap().is_none());
    assert_graph_is_the_replay(&f);
}

/// An event id sent again with the same content but for another target is
/// refused, not counted as a duplicate (the content digest leaves the target
/// out): whether the first send is in the same batch, in the batch being
/// committed, or in the log.
#[test]
fn a_known_event_id_for_another_target_is_a_conflict() {
    let f = fixture();
    let shared = created("shared", "att-1");
    let elsewhere = |bundle_id: &str, events: Vec<Value>| json!({"target": "elsewhere", "bundle_id": bundle_id, "events": events});
    let answers = one_batch(
        &f,
        &[
            crate::common::bundle("p", vec![shared.clone()]),
            elsewhere("q", vec![created("q1", "att-q"), shared.clone()]),
        ],
    );
    assert!(answers[0].is_ok(), "{:?}", answers[0]);
    assert_event_target_conflict(&answers[1], "shared", 1, 1);

    let answers = queued_in_batches_of(
        &f,
        &[
            crate::common::bundle("r", vec![created("r1", "att-r")]),
            elsewhere("s", vec![created("r1", "att-r")]),
        ],
        1,
    );
    assert!(answers[0].is_ok(), "{:?}", answers[0]);
    assert_event_target_conflict(&answers[1], "r1", 0, 2);

    // Both stored now: the record's own target is compared.
    let answers = one_batch(
        &f,
        &[
            elsewhere("t", vec![shared.clone()]),
            // The same target: an identical repeat, counted.
            crate::common::bundle("u", vec![shared, created("u1", "att-u")]),
        ],
    );
    assert_event_target_conflict(&answers[0], "shared", 0, 1);
    let u = answers[1].as_ref().unwrap();
    assert_eq!((u.ingested, u.duplicates, seqs(u)), (1, 1, (3, 3)));
    assert_log(&f, &["shared", "r1", "u1"]);
}

fn assert_event_target_conflict(
    answer: &Result<Appended, AppendError>,
    event_id: &str,
    index: usize,
    seq: u64,
) {
    match answer {
        Err(AppendError::EventTargetConflict {
            event_id: id,
            index: i,
            seq: s,
        }) => assert_eq!((id.as_str(), *i, s.0), (event_id, index, seq)),
        other => panic!("expected an event target conflict, got {other:?}"),
    }
}
