//! fjall tuning shared by every keyspace of the store (log, graph, artifacts).
//! It owns the memory and start-up bounds of the embedded store and nothing
//! else; see docs/BENCHMARKS.md for the measurements behind each value.

/// Most bytes of journal kept before fjall flushes the oldest memtables to
/// disk (fjall's default is 512 MiB). It bounds both the memory the memtables
/// may hold and what a start-up replays: with the default, a store after a
/// million events used ~770 MiB RSS and took ~3.3 s to open (docs/BENCHMARKS.md).
/// 64 MiB is fjall's minimum.
pub const MAX_JOURNAL_BYTES: u64 = 64 << 20;

/// fjall background threads (memtable flushes and compactions). fjall's
/// default is one per core (up to 4), but in fjall 3.1 with more than one,
/// worker 0 hands every compaction message back to the queue and takes the
/// next one, so it spins at 100 % of a core whenever another worker is
/// compacting (`worker_pool.rs`, `WorkerMessage::Compact`). On two cores that
/// spin took a quarter of the server's CPU during ingest (docs/BENCHMARKS.md).
/// One worker does flushes and compactions in turn, without spinning.
pub const WORKER_THREADS: usize = 1;

/// Largest memtable of each keyspace created from now on (fjall's default is
/// 64 MiB; the setting is recorded when a keyspace is created). With ~20
/// keyspaces the default alone allows over a GiB of memtables. Memtables are
/// most of the server's memory under load: growing a store to 1M events, peak
/// RSS was 325 MiB with 8 MiB memtables and a 32 MiB block cache, 247 MiB with
/// 6 MiB and 16 MiB, for ~2 % less ingest throughput (docs/BENCHMARKS.md).
pub const MAX_MEMTABLE_BYTES: u64 = 6 << 20;

/// fjall's block cache, shared by all keyspaces (fjall's default: 32 MiB).
/// Reads stay fast with less: the hot point reads (nodes, counters, event
/// ids) hit the memtables or the pinned index and filter blocks first.
pub const CACHE_BYTES: u64 = 16 << 20;

/// Options for every keyspace Leviathan creates.
pub fn keyspace_options() -> fjall::KeyspaceCreateOptions {
    fjall::KeyspaceCreateOptions::default().max_memtable_size(MAX_MEMTABLE_BYTES)
}
