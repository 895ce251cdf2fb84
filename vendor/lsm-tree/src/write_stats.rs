// LEVIATHAN PATCH (see LEVIATHAN-PATCH.md): what a tree's flushes and
// compactions read and write, for the server's per-keyspace metrics.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Bytes a tree's flushes and compactions have read and written since it was
/// opened (not persisted: a restart starts from zero). Sizes are the files'
/// sizes on disk (tables) and the blob files' compressed payload bytes.
#[derive(Debug, Default)]
pub struct WriteStats {
    flushed_table_bytes: AtomicU64,
    flushed_blob_bytes: AtomicU64,
    compaction_read_bytes: AtomicU64,
    compaction_table_bytes: AtomicU64,
    compaction_blob_bytes: AtomicU64,
}

/// A copy of [`WriteStats`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStatsSnapshot {
    /// Table bytes flushes wrote.
    pub flushed_table_bytes: u64,
    /// Blob file bytes flushes wrote (key-value separated trees).
    pub flushed_blob_bytes: u64,
    /// Bytes merges read: their input tables and the blob files they relocated.
    pub compaction_read_bytes: u64,
    /// Table bytes merges wrote.
    pub compaction_table_bytes: u64,
    /// Blob file bytes merges wrote (relocated values).
    pub compaction_blob_bytes: u64,
}

impl WriteStats {
    pub(crate) fn flushed(&self, table_bytes: u64, blob_bytes: u64) {
        self.flushed_table_bytes.fetch_add(table_bytes, Relaxed);
        self.flushed_blob_bytes.fetch_add(blob_bytes, Relaxed);
    }

    pub(crate) fn compaction_read(&self, bytes: u64) {
        self.compaction_read_bytes.fetch_add(bytes, Relaxed);
    }

    pub(crate) fn compacted(&self, table_bytes: u64, blob_bytes: u64) {
        self.compaction_table_bytes.fetch_add(table_bytes, Relaxed);
        self.compaction_blob_bytes.fetch_add(blob_bytes, Relaxed);
    }

    /// The counters now.
    #[must_use]
    pub fn snapshot(&self) -> WriteStatsSnapshot {
        WriteStatsSnapshot {
            flushed_table_bytes: self.flushed_table_bytes.load(Relaxed),
            flushed_blob_bytes: self.flushed_blob_bytes.load(Relaxed),
            compaction_read_bytes: self.compaction_read_bytes.load(Relaxed),
            compaction_table_bytes: self.compaction_table_bytes.load(Relaxed),
            compaction_blob_bytes: self.compaction_blob_bytes.load(Relaxed),
        }
    }
}
