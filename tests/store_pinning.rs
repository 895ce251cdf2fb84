//! Pinned index and filter blocks of the embedded store stay bounded while the
//! server runs, checked on fjall itself.
//!
//! lsm-tree keeps the index and filter blocks of a table in memory ("pinned")
//! by the level the table is in: by default the index in L0 and L1, the
//! filter in L0 only, deeper tables read theirs through the bounded block
//! cache. A table flushed from a memtable is born in L0 and pinned. When
//! compaction *moves* it down a level without rewriting it (it overlaps
//! nothing there: every table of an append-only keyspace such as the event
//! log), stock lsm-tree 3.1.10 kept the same in-memory table, pins and all,
//! at every level it reached. A running server thus held the index and filter
//! of every table the log ever flushed: its heap grew with the store (about
//! 140 MiB more than a restarted server at 10M events, docs/BENCHMARKS.md).
//! `vendor/lsm-tree` (its `LEVIATHAN-PATCH.md`, third patch) reopens a moved
//! table with its new level's pinning.
//!
//! The check: sequential keys, small memtables and tables so compaction moves
//! tables down several levels; once compaction is idle, the pinned bytes of
//! the running tree are those the same tables have when the store is opened
//! afresh (where each table is pinned by its level).

use fjall::{AbstractTree, Database, KeyspaceCreateOptions};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TABLES: u64 = 120;
const KEYS_PER_TABLE: u64 = 2_000;

fn options() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default()
        .max_memtable_size(1 << 20)
        .compaction_strategy(Arc::new(
            fjall::compaction::Leveled::default().with_table_target_size(256 << 10),
        ))
}

/// Tables per level, L0 to L6.
fn levels(ks: &fjall::Keyspace) -> Vec<usize> {
    (0..7)
        .map(|l| ks.tree.level_table_count(l).unwrap_or(0))
        .collect()
}

/// (pinned filter bytes, pinned index bytes, tables per level).
fn pinned(ks: &fjall::Keyspace) -> (usize, usize, Vec<usize>) {
    (
        ks.tree.pinned_filter_size(),
        ks.tree.pinned_block_index_size(),
        levels(ks),
    )
}

/// Waits until the level layout has not changed for a second (compaction idle).
fn settle(ks: &fjall::Keyspace) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = levels(ks);
    let mut stable_since = Instant::now();
    while stable_since.elapsed() < Duration::from_secs(1) {
        assert!(Instant::now() < deadline, "compaction never settled");
        std::thread::sleep(Duration::from_millis(50));
        let now = levels(ks);
        if now != last {
            last = now;
            stable_since = Instant::now();
        }
    }
}

#[test]
fn tables_moved_down_by_compaction_are_pinned_as_their_level_says() {
    let dir = tempfile::tempdir().unwrap();
    let running = {
        let db = Database::builder(dir.path())
            .worker_threads(2)
            .open()
            .unwrap();
        let ks = db.keyspace("log", options).unwrap();
        for t in 0..TABLES {
            let mut batch = db.batch();
            for k in t * KEYS_PER_TABLE..(t + 1) * KEYS_PER_TABLE {
                batch.insert(&ks, k.to_be_bytes(), [b'e'; 64]);
            }
            batch.commit().unwrap();
            // One table per batch, as a 6 MiB memtable of the log holds.
            ks.rotate_memtable_and_wait().unwrap();
        }
        settle(&ks);
        let running = pinned(&ks);
        let deep: usize = running.2[2..].iter().sum();
        assert!(
            deep > TABLES as usize / 2,
            "the test needs most tables moved below L1, got levels {:?}",
            running.2
        );
        running
    };

    let db = Database::builder(dir.path())
        .worker_threads(2)
        .open()
        .unwrap();
    let ks = db.keyspace("log", options).unwrap();
    let fresh = pinned(&ks);
    assert_eq!(fresh.2, running.2, "the level layout changed across reopen");
    assert_eq!(
        (running.0, running.1),
        (fresh.0, fresh.1),
        "pinned (filter, index) bytes of the running tree against the same tables \
         opened afresh; levels {:?}",
        running.2
    );
}
