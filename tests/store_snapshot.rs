//! Snapshot isolation of the embedded store, checked on fjall itself.
//!
//! Every read route answers from one `Database::snapshot()`, and the writer
//! commits each group of bundles as one cross-keyspace batch: a snapshot must
//! see a batch whole or not at all. Stock fjall 3.1.13 / lsm-tree 3.1.10 broke
//! that: a memtable flush or a compaction installs its new table version with
//! a sequence number taken from the shared counter and then raises the
//! *visible* sequence number past it, while a batch that took a lower
//! sequence number may still be inserting its items (it publishes only after
//! its last insert). A snapshot opened in that window saw the batch's first
//! items and not its last ones: the server answered `bad node index entry (no
//! node)` under concurrent ingest. `vendor/lsm-tree` carries the fix (see its
//! `LEVIATHAN-PATCH.md`); this test fails within seconds without it.
//!
//! The shape mirrors the graph: each batch writes index entries to one
//! keyspace and then the records they point at to another; readers take a
//! snapshot, find the newest index entry and read its record. Small memtables
//! make flushes (and with them compactions) happen every few batches.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use fjall::{Database, KeyspaceCreateOptions, PersistMode, Readable};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEYS_PER_BATCH: u64 = 200;
const RUN_FOR: Duration = Duration::from_secs(8);

#[test]
fn a_snapshot_sees_a_batch_whole_or_not_at_all_while_memtables_flush() {
    let dir = tempfile::tempdir().unwrap();
    // Three workers, as the server (`storage::WORKER_THREADS`): flushes and
    // compactions install versions concurrently.
    let db = Database::builder(dir.path())
        .worker_threads(3)
        .open()
        .unwrap();
    let opts = || KeyspaceCreateOptions::default().max_memtable_size(64 << 10);
    let index = db.keyspace("index", opts).unwrap();
    let records = db.keyspace("records", opts).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let writer = {
        let (db, index, records) = (db.clone(), index.clone(), records.clone());
        let (stop, committed) = (stop.clone(), committed.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut next = 0u64;
            while started.elapsed() < RUN_FOR && !stop.load(Ordering::Relaxed) {
                let mut batch = db.batch().durability(Some(PersistMode::SyncData));
                for k in next..next + KEYS_PER_BATCH {
                    batch.insert(&index, k.to_be_bytes(), []);
                }
                for k in next..next + KEYS_PER_BATCH {
                    batch.insert(&records, k.to_be_bytes(), vec![b'r'; 256]);
                }
                batch.commit().unwrap();
                next += KEYS_PER_BATCH;
                committed.store(next, Ordering::Release);
            }
        })
    };

    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (db, index, records) = (db.clone(), index.clone(), records.clone());
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut reads, mut torn) = (0u64, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    let snap = db.snapshot();
                    let Some(newest) = snap.last_key_value(&index) else {
                        continue;
                    };
                    let key = newest.key().unwrap();
                    reads += 1;
                    if snap.get(&records, &key).unwrap().is_none() {
                        torn.push(u64::from_be_bytes(key.as_ref().try_into().unwrap()));
                        if torn.len() >= 3 {
                            break;
                        }
                    }
                }
                (reads, torn)
            })
        })
        .collect();

    writer.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let mut total_reads = 0;
    for r in readers {
        let (reads, torn) = r.join().unwrap();
        total_reads += reads;
        assert!(
            torn.is_empty(),
            "a snapshot saw index entries without their records (keys {torn:?}): a batch was \
             visible in part"
        );
    }
    let written = committed.load(Ordering::Acquire);
    assert!(
        written >= 50 * KEYS_PER_BATCH,
        "too few batches to exercise flushes"
    );
    assert!(total_reads > 1000, "too few snapshot reads: {total_reads}");
    // Flushes did happen (the point of the small memtables).
    assert!(index.table_count() > 0 && records.table_count() > 0);
}
