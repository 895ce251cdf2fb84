//! Criterion micro benchmarks of the ingest hot path (docs/BENCHMARKS.md):
//! validation + canonical encoding, hashing, one core-projector call (fresh
//! Store + instance + call + ops), graph staging apply + write, one group-commit
//! batch on a temp fjall dir, and the whole writer path for one bundle.
//!
//! `cargo bench --bench hot_path` (add `-- <filter>` for one group). Events are
//! `leviathan bench`'s synthetic stream (every standard event type), so the
//! figures match what the load tool sends.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use leviathan::bench::Generator;
use leviathan::bundle::Limits;
use leviathan::bundle::{self, Bundle};
use leviathan::digest::Sha256;
use leviathan::graph::Op;
use leviathan::log::record::EventDraft;
use leviathan::log::Head;
use leviathan::projection::EventInput;
use leviathan::seq::Seq;
use leviathan::server::{load_projection, Projection};
use leviathan::storage::SyncMode;
use leviathan::storage::{open_store, Store};
use leviathan::writer::{Writer, WriterParts};
use std::time::{Duration, Instant};

/// The server's allocator (src/bin/leviathan.rs), so the figures match it.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const BUNDLE: u64 = 100;

fn quick(c: &mut Criterion) -> criterion::BenchmarkGroup<'_, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group("hot_path");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    g
}

fn parsed(g: &Generator, first: u64) -> Bundle {
    bundle::parse(g.bundle(first, BUNDLE).as_bytes(), &Limits::default()).expect("valid")
}

struct Env {
    _dir: tempfile::TempDir,
    store: Store,
    projection: Projection,
}

fn env() -> Env {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_store(&dir.path().join("data")).expect("store");
    let specs = leviathan::projector_specs::parse("core").expect("core");
    // Share the compiled component with the test suite's cache when it exists.
    let cache = std::env::var_os("LEVIATHAN_PROJECTOR_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("leviathan-bench-cache"));
    let projection = load_projection(&cache, &specs).expect("projectors");
    Env {
        _dir: dir,
        store,
        projection,
    }
}

fn input<'a>(d: &'a EventDraft, seq: Seq, hash: Sha256, target: &'a str) -> EventInput<'a> {
    EventInput {
        seq,
        event_id: &d.event_id,
        event_type: &d.event_type,
        timestamp: &d.timestamp,
        actor_id: d.actor_id.as_deref(),
        target,
        payload_json: d.payload_json(),
        event_hash: hash,
    }
}

fn validation(c: &mut Criterion) {
    let g = Generator::new("crit", "bench");
    let body = g.bundle(0, BUNDLE);
    let mut grp = quick(c);
    grp.throughput(Throughput::Elements(BUNDLE));
    grp.bench_function("validate_canonical/bundle_of_100", |b| {
        b.iter(|| bundle::parse(body.as_bytes(), &Limits::default()).expect("valid"))
    });
    grp.finish();
}

fn hashing(c: &mut Criterion) {
    let g = Generator::new("crit", "bench");
    let b = parsed(&g, 0);
    let prev = Sha256::of(b"prev");
    let mut grp = quick(c);
    grp.throughput(Throughput::Elements(BUNDLE));
    grp.bench_function("hash/encode_and_sha256_100_events", |bn| {
        bn.iter(|| {
            let mut h = prev;
            for (i, d) in b.events.iter().enumerate() {
                let bytes = d.encode(Seq(i as u64 + 1), Some(&h));
                h = Sha256::of(&bytes);
            }
            h
        })
    });
    let record = b.events[0].encode(Seq(1), Some(&prev));
    grp.throughput(Throughput::Bytes(record.len() as u64));
    grp.bench_function("hash/sha256_one_record", |bn| {
        bn.iter(|| Sha256::of(&record))
    });
    grp.finish();
}

fn projector(c: &mut Criterion) {
    let e = env();
    let g = Generator::new("crit", "bench");
    let b = parsed(&g, 0);
    let staging = e.store.graph.staging().expect("staging");
    let set = &e.projection.set;
    let mut grp = quick(c);
    // attempt.created: the event FACTS.md's 7 µs prototype figure is for.
    let created = &b.events[0];
    assert_eq!(created.event_type, "attempt.created");
    grp.throughput(Throughput::Elements(1));
    grp.bench_function("projector/core_attempt_created", |bn| {
        bn.iter(|| {
            set.project(
                &input(created, Seq(1), Sha256::default(), "bench"),
                &staging,
            )
            .expect("projects")
        })
    });
    // The stream's mix (every standard type), per event.
    grp.throughput(Throughput::Elements(BUNDLE));
    grp.bench_function("projector/core_mix_100_events", |bn| {
        bn.iter(|| {
            let mut n = 0;
            for (i, d) in b.events.iter().enumerate() {
                if set.handles(&d.event_type) {
                    n += set
                        .project(
                            &input(d, Seq(i as u64 + 1), Sha256::default(), "bench"),
                            &staging,
                        )
                        .expect("projects")
                        .len();
                }
            }
            n
        })
    });
    grp.finish();
}

/// The ops of each event of `b` (projected on an empty graph).
fn ops_of(e: &Env, b: &Bundle) -> Vec<Vec<Op>> {
    let staging = e.store.graph.staging().expect("staging");
    b.events
        .iter()
        .map(|d| {
            if e.projection.set.handles(&d.event_type) {
                e.projection
                    .set
                    .project(&input(d, Seq(1), Sha256::default(), "bench"), &staging)
                    .expect("projects")
            } else {
                Vec::new()
            }
        })
        .collect()
}

fn graph_staging(c: &mut Criterion) {
    let e = env();
    let g = Generator::new("crit", "bench");
    let b = parsed(&g, 0);
    let ops = ops_of(&e, &b);
    let mut grp = quick(c);
    grp.throughput(Throughput::Elements(BUNDLE));
    grp.bench_function("graph/apply_and_write_into_batch_100_events", |bn| {
        bn.iter_batched(
            || e.store.db.batch(),
            |mut batch| {
                let mut st = e.store.graph.staging().expect("staging");
                for (i, (d, o)) in b.events.iter().zip(&ops).enumerate() {
                    st.apply(Seq(i as u64 + 1), &d.timestamp, o)
                        .expect("applies");
                }
                st.write_into(&mut batch).expect("written");
                batch
            },
            BatchSize::SmallInput,
        )
    });
    grp.finish();
}

/// One group-commit batch as the writer builds it (log records, indexes,
/// bundle record, head, graph writes) and its commit, with and without fsync.
fn group_commit(c: &mut Criterion) {
    let e = env();
    let g = Generator::new("crit", "bench");
    let mut grp = quick(c);
    grp.throughput(Throughput::Elements(BUNDLE));
    // One log and graph across both variants: seqs continue.
    let mut next = 0u64;
    let mut head = Head {
        seq: Seq::ZERO,
        hash: None,
    };
    // With and without the Merkle tree's nodes (the audit issue's A/B: the
    // tree's share of the batch, back to back on one store).
    let tree = leviathan::tlog::Tree::open(&e.store.db, &e.store.log).expect("tree");
    let mut tw = tree.writer(&e.store.db).expect("tree writer");
    for (name, persist, with_tree) in [
        (
            "commit/batch_100_events_fsync",
            fjall::PersistMode::SyncData,
            true,
        ),
        (
            "commit/batch_100_events_fsync_no_tree",
            fjall::PersistMode::SyncData,
            false,
        ),
        (
            "commit/batch_100_events_nosync",
            fjall::PersistMode::Buffer,
            true,
        ),
        (
            "commit/batch_100_events_nosync_no_tree",
            fjall::PersistMode::Buffer,
            false,
        ),
    ] {
        grp.bench_function(name, |bn| {
            bn.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let b = parsed(&g, next);
                    next += BUNDLE;
                    // Graph ops are computed outside the timing (another bench).
                    let mut st = e.store.graph.staging().expect("staging");
                    let t = Instant::now();
                    let mut batch = e.store.db.batch().durability(Some(persist));
                    for d in &b.events {
                        let seq = head.seq.next();
                        let bytes = d.encode(seq, head.hash.as_ref());
                        let hash = Sha256::of(&bytes);
                        e.store.log.stage_event(&mut batch, seq, &hash, &bytes, d);
                        if with_tree {
                            tw.append(&mut batch, &bytes);
                        }
                        st.apply(seq, &d.timestamp, &[]).expect("applies");
                        head = Head {
                            seq,
                            hash: Some(hash),
                        };
                    }
                    e.store.log.stage_head(&mut batch, &head);
                    if with_tree {
                        tw.stage_size(&mut batch);
                    }
                    st.write_into(&mut batch).expect("written");
                    batch.commit().expect("committed");
                    total += t.elapsed();
                }
                total
            })
        });
    }
    grp.finish();
}

/// The whole writer path for one bundle of 100: idempotency lookups, seq and
/// hash, projection, staging, one batch, commit (what a request waits for,
/// minus HTTP and validation).
fn writer_append(c: &mut Criterion) {
    let mut grp = quick(c);
    grp.throughput(Throughput::Elements(BUNDLE));
    for (name, sync) in [
        ("writer/append_bundle_100_fsync", SyncMode::Always),
        ("writer/append_bundle_100_nosync", SyncMode::None),
    ] {
        let e = env();
        let head = e.store.log.check_head().expect("head");
        let writer = Writer::start(WriterParts {
            db: e.store.db.clone(),
            log: e.store.log.clone(),
            live: leviathan::generations::LiveGraph::new(leviathan::generations::Live {
                graph: e.store.graph.clone(),
                projectors: e.projection.set.clone(),
                fingerprint: e.projection.fingerprint,
            }),
            head,
            sync,
        })
        .expect("writer");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let g = Generator::new("crit", "bench");
        let mut next = 0u64;
        grp.bench_function(name, |bn| {
            bn.iter_custom(|iters| {
                let bundles: Vec<Bundle> = (0..iters)
                    .map(|_| {
                        let b = parsed(&g, next);
                        next += BUNDLE;
                        b
                    })
                    .collect();
                let t = Instant::now();
                rt.block_on(async {
                    for b in bundles {
                        writer.append(b).await.expect("appended");
                    }
                });
                t.elapsed()
            })
        });
        drop(writer);
    }
    grp.finish();
}

criterion_group!(
    benches,
    validation,
    hashing,
    projector,
    graph_staging,
    group_commit,
    writer_append
);
criterion_main!(benches);
