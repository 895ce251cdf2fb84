//! The embedded store: opening it (the fjall database under the data dir and
//! the log and graph keyspaces in it), its durability mode, and the fjall
//! tuning shared by every keyspace (log, graph, artifacts): the memory and
//! start-up bounds of the store. See docs/BENCHMARKS.md for the measurements
//! behind each value.

use crate::graph::GraphStore;
use crate::log::Log;
use anyhow::Context;
use std::path::Path;

/// How hard the server pushes acknowledged data to disk (`LEVIATHAN_SYNC`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// fdatasync before acknowledging (the default): an acknowledged event
    /// survives a power loss.
    Always,
    /// Hand data to the OS before acknowledging: survives a process crash
    /// (`kill -9`), not a power loss. For throwaway and benchmark runs.
    None,
}

impl SyncMode {
    /// How a commit reaches the disk in this mode.
    pub fn persist_mode(self) -> fjall::PersistMode {
        match self {
            SyncMode::Always => fjall::PersistMode::SyncData,
            SyncMode::None => fjall::PersistMode::Buffer,
        }
    }
}

/// Why a string is not a [`SyncMode`].
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a sync mode: use `always` or `none`")]
pub struct ParseSyncModeError(String);

impl std::str::FromStr for SyncMode {
    type Err = ParseSyncModeError;
    /// `always` or `none`, in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("always") {
            Ok(SyncMode::Always)
        } else if s.eq_ignore_ascii_case("none") {
            Ok(SyncMode::None)
        } else {
            Err(ParseSyncModeError(s.to_string()))
        }
    }
}

/// The opened embedded store.
pub struct Store {
    pub db: fjall::Database,
    pub log: Log,
    pub graph: GraphStore,
}

/// Opens (or creates) the store under `data_dir` (`<data_dir>/store`).
pub fn open_store(data_dir: &Path) -> anyhow::Result<Store> {
    open_store_with_cache(data_dir, CACHE_BYTES)
}

/// [`open_store`] for the offline commands that read a store (`verify`,
/// `rebuild`, `dump`): a data dir without one is refused, never created (an
/// empty store would "verify" and hide a mistyped `--data-dir`).
pub fn open_existing_store(data_dir: &Path) -> anyhow::Result<Store> {
    crate::files::refuse_unfinished(data_dir)?;
    require_store(data_dir)?;
    open_store(data_dir)
}

/// Refuses a data dir that holds no store (what the offline commands read).
pub fn require_store(data_dir: &Path) -> anyhow::Result<()> {
    if !data_dir.join("store").is_dir() {
        anyhow::bail!(
            "{} holds no Leviathan store (no {}): check --data-dir / LEVIATHAN_DATA_DIR",
            data_dir.display(),
            data_dir.join("store").display()
        );
    }
    Ok(())
}

/// Whether a storage error says a file failed its checksum: damage (bit
/// rot, a bad disk) that a restart does not mend, unlike an I/O failure.
pub fn is_checksum_failure(error: &str) -> bool {
    error.to_ascii_lowercase().contains("checksum")
}

/// [`open_store`] with a block cache of `cache_bytes` (`LEVIATHAN_CACHE_MB`).
/// A data dir an import or restore did not finish is refused
/// ([`crate::files::refuse_unfinished`]).
pub fn open_store_with_cache(data_dir: &Path, cache_bytes: u64) -> anyhow::Result<Store> {
    crate::files::refuse_unfinished(data_dir)?;
    open_unchecked(data_dir, cache_bytes)
}

/// The store of a data dir that `restore` or `import` is filling (it holds
/// their unfinished mark until they are done).
pub(crate) fn open_store_filling(data_dir: &Path) -> anyhow::Result<Store> {
    open_unchecked(data_dir, CACHE_BYTES)
}

fn open_unchecked(data_dir: &Path, cache_bytes: u64) -> anyhow::Result<Store> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let db = open_database_with_cache(&data_dir.join("store"), cache_bytes).map_err(|e| {
        let why = if matches!(e, fjall::Error::Locked) {
            " (is another leviathan process using it?)"
        } else if is_checksum_failure(&e.to_string()) {
            " (its files are damaged: keep a copy of the data dir and restore the last \
             backup, docs/RUNBOOK.md \"Backup and restore\")"
        } else {
            ""
        };
        anyhow::Error::new(e).context(format!(
            "cannot open the store in {}{why}",
            data_dir.display()
        ))
    })?;
    let log = Log::open(&db).context("opening the event log")?;
    let graph = GraphStore::open(&db).context("opening the graph")?;
    Ok(Store { db, log, graph })
}

/// Most bytes of journal kept before fjall flushes the oldest memtables to
/// disk (fjall's default is 512 MiB). It bounds both the memory the memtables
/// may hold and what a start-up replays: with the default, a store after a
/// million events used ~770 MiB RSS and took ~3.3 s to open (docs/BENCHMARKS.md).
/// 64 MiB is fjall's minimum.
pub(crate) const MAX_JOURNAL_BYTES: u64 = 64 << 20;

/// fjall background threads (memtable flushes and compactions). With more
/// than one, fjall keeps worker 0 for flushes: it hands every compaction back
/// to the queue. Stock fjall 3.1 spun at 100 % of a core doing so while
/// another worker compacted, which is why this was 1 until the patch in
/// `vendor/fjall` (LEVIATHAN-PATCH.md). With one worker, a flush waited for
/// the compaction in progress, sealed memtables queued up behind it (fjall
/// halts writes at 4 per keyspace) and they were most of the server's memory
/// under load. With 2, growing a store to 2M events: peak RSS 201-243 MiB
/// against 324-340, the same throughput and p99, ~13 % more bytes written.
/// With 3 (two compacting): a tiered keyspace's merge of whole runs into the
/// next level takes one compacting worker for tens of seconds as the store
/// grows (`graph_history`'s ~380 MB merge near 10M events); with only one,
/// every other keyspace's L0 piled up behind it meanwhile (past fjall's write
/// stall at 20 runs), memtables with it: growing to 10M, peak RSS 255-286 MiB
/// and attempt-detail p99 ~5 ms right after, against 234 and 1.4 ms with 3
/// (docs/BENCHMARKS.md, sessions 10 and 29).
pub(crate) const WORKER_THREADS: usize = 3;

/// Largest memtable of each keyspace created from now on (fjall's default is
/// 64 MiB; the setting is recorded when a keyspace is created). With ~20
/// keyspaces the default alone allows over a GiB of memtables. Memtables are
/// most of the server's memory under load: growing a store to 1M events, peak
/// RSS was 325 MiB with 8 MiB memtables and a 32 MiB block cache, 247 MiB with
/// 6 MiB and 16 MiB, for ~2 % less ingest throughput (docs/BENCHMARKS.md).
pub(crate) const MAX_MEMTABLE_BYTES: u64 = 6 << 20;

/// fjall's block cache, shared by all keyspaces (fjall's default: 32 MiB),
/// unless `LEVIATHAN_CACHE_MB` says otherwise. Reads stay fast with less on
/// stores of a few million events: the hot point reads (nodes, counters,
/// event ids) hit the memtables or the pinned index and filter blocks first.
pub const CACHE_BYTES: u64 = 16 << 20;

/// Size of the disk tables leveled compaction writes (fjall's default:
/// 64 MiB; recorded when a keyspace is created). fjall sizes L1 as
/// `TABLE_TARGET_BYTES * L0_THRESHOLD` and each level below ten times the
/// one above. The graph's keyspaces take random keys (node ids, edge keys,
/// history keys by node), so every L0 → L1 compaction rewrites the whole of
/// L1: what it costs per byte flushed is L1's size over the L0 tables merged
/// into it. With 16 MiB tables and fjall's threshold of 4 (L1 64 MiB),
/// growing a store to 4M events read 16.8 GB of compaction input; with
/// 4 MiB tables and a threshold of 8 (L1 32 MiB, merged in batches of 8
/// flushes) 9.0 GB, server CPU per event 101 → 83 µs, peak RSS 242 → 148 MiB
/// (smaller compactions hold fewer buffers). 2 MiB tables read 7.0 GB at
/// the same CPU, with twice the tables to open (docs/BENCHMARKS.md,
/// session 14). Until session 14 this was 16 MiB (64 MiB held flushes up
/// behind one worker's compactions: p99 ~40 ms, RSS spikes to 331 MiB).
/// With [`L0_THRESHOLD`] at 16 since session 18, L1 is 64 MiB of 4 MiB
/// tables, merged in batches of 16 flushes.
pub(crate) const TABLE_TARGET_BYTES: u64 = 4 << 20;

/// L0 tables (flushed memtables) that trigger their merge into L1 (fjall's
/// default: 4; recorded when a keyspace is created). A larger threshold
/// merges more flushes into L1 at once and makes L1 larger, so the graph's
/// random-key keyspaces rewrite each byte fewer times; a point read checks up
/// to this many overlapping L0 tables, each behind a pinned bloom filter.
/// fjall slows writes only from 20 L0 tables on. Growing a store to 10M
/// events, 16 against 8 read 23 % fewer bytes of compaction input
/// (20.2 against 26.2 GB), cost 11-14 % less server CPU and ingested
/// 10-15 % faster, for ~35 MiB more peak RSS (larger merges) and ~4.5 % more
/// disk (docs/BENCHMARKS.md, session 18). Sessions 14-17 ran with 8.
/// `graph_edges_out` keeps 8 ([`EDGES_OUT_L0_THRESHOLD`]): most of that disk
/// was its.
pub(crate) const L0_THRESHOLD: u8 = 16;

/// Opens (or creates) the fjall database at `path` with the settings above.
pub fn open_database(path: &std::path::Path) -> fjall::Result<fjall::Database> {
    open_database_with_cache(path, CACHE_BYTES)
}

/// [`open_database`] with a block cache of `cache_bytes`.
pub fn open_database_with_cache(
    path: &std::path::Path,
    cache_bytes: u64,
) -> fjall::Result<fjall::Database> {
    fjall::Database::builder(path)
        .max_journaling_size(MAX_JOURNAL_BYTES)
        .worker_threads(WORKER_THREADS)
        .cache_size(cache_bytes)
        .open()
}

/// Options for every keyspace Leviathan creates.
fn keyspace_options() -> fjall::KeyspaceCreateOptions {
    keyspace_options_with_l0(L0_THRESHOLD)
}

/// [`keyspace_options`] with an L0 threshold of `l0_threshold`.
fn keyspace_options_with_l0(l0_threshold: u8) -> fjall::KeyspaceCreateOptions {
    bounded_memtable_options().compaction_strategy(std::sync::Arc::new(
        fjall::compaction::Leveled::default()
            .with_table_target_size(TABLE_TARGET_BYTES)
            .with_l0_threshold(l0_threshold),
    ))
}

/// What every keyspace shares, whatever its compaction: memtables of at most
/// [`MAX_MEMTABLE_BYTES`].
fn bounded_memtable_options() -> fjall::KeyspaceCreateOptions {
    fjall::KeyspaceCreateOptions::default().max_memtable_size(MAX_MEMTABLE_BYTES)
}

/// Values at least this long are kept in blob files, out of the index tree,
/// in a keyspace opened with [`separated`].
pub(crate) const SEPARATION_THRESHOLD_BYTES: u32 = 64;

/// `options` with values of [`SEPARATION_THRESHOLD_BYTES`] or more in blob
/// files, for a keyspace whose values compaction would otherwise rewrite
/// again and again: the keys stay in the LSM tree, each value goes once into
/// an append-only blob file (key-value separation), so compaction rewrites
/// keys and small blob handles instead of whole records. `graph_history`
/// (records written once, read rarely; docs/BENCHMARKS.md, session 12) and
/// `graph_nodes` (random node-id keys, a node rewritten at each of its
/// events: 5-12 % less server CPU and 15 % fewer bytes written growing a
/// store to 10M events). The cost is disk: fjall relocates a blob file's
/// live values only when no table outside the compaction still points into
/// it, which random keys almost never allow, so overwritten nodes stay in
/// their blob files (+1.2 GB at 10M, with 1 MiB blob files as well). With
/// `log_events` compressed ([`log_keyspace_options`]), which costs about
/// the CPU this saves, the store is 11 % smaller than with neither, at the
/// same ingest (docs/BENCHMARKS.md, session 21). fjall records the choice when it
/// creates the keyspace: a store made before keeps its layout.
fn separated(options: fjall::KeyspaceCreateOptions) -> fjall::KeyspaceCreateOptions {
    options.with_kv_separation(Some(
        fjall::KvSeparationOptions::default().separation_threshold(SEPARATION_THRESHOLD_BYTES),
    ))
}

/// Runs a level below L0 of a [`scan_only_keyspace_options`] keyspace collects
/// before they are merged into one run of the next level.
pub(crate) const TIERED_RUN_LIMIT: u8 = 4;

/// Options for a keyspace written with random keys and read only by scans
/// ([`SCAN_ONLY_KEYSPACES`]): no bloom filters, and tiered compaction
/// (`vendor/lsm-tree`), where [`L0_THRESHOLD`] flushes merge into a new run
/// of L1 and every [`TIERED_RUN_LIMIT`] runs of a level into one run of the
/// next, so a key
/// is rewritten once per level instead of about ten times per level as
/// leveled compaction merges random keys into the whole of the next level
/// (`graph_history`'s keys: 12 times what was flushed at 10M events,
/// docs/BENCHMARKS.md, session 18). A scan reads every run: up to
/// `TIERED_RUN_LIMIT - 1` in each level below L0, where leveled has one. These
/// keyspaces are mostly inserted, so runs hold few stale versions. Growing
/// a store to 10M events: 11 % faster over the growth, 14 % less server CPU,
/// 12 % fewer bytes written, 2 % less disk; `graph_nodes` tiered as well
/// (point reads, overwritten at every event) gained nothing more
/// (docs/BENCHMARKS.md, session 25). fjall records the strategy when it
/// creates the keyspace: a store made before keeps leveled compaction.
fn scan_only_keyspace_options() -> fjall::KeyspaceCreateOptions {
    bounded_memtable_options()
        .compaction_strategy(std::sync::Arc::new(
            fjall::compaction::Tiered::default()
                .with_table_target_size(TABLE_TARGET_BYTES)
                .with_l0_threshold(L0_THRESHOLD)
                .with_run_limit(TIERED_RUN_LIMIT),
        ))
        .filter_policy(fjall::config::FilterPolicy::disabled())
}

/// Data block size of `log_events`' tables (fjall's default: 4 KiB).
const LOG_BLOCK_BYTES: u32 = 16 << 10;

/// Options for `log_events`: written in seq order, flushed once and only
/// moved down the levels, so fjall's default policy (no compression in L0
/// and L1) would keep this third of the store uncompressed forever. LZ4 from
/// the flush on, over [`LOG_BLOCK_BYTES`] blocks, keeps ~44 % of the bytes
/// (over 4 KiB blocks ~56 %; docs/BENCHMARKS.md, sessions 19 and 21).
fn log_keyspace_options() -> fjall::KeyspaceCreateOptions {
    keyspace_options()
        .data_block_compression_policy(fjall::config::CompressionPolicy::all(
            fjall::CompressionType::Lz4,
        ))
        .data_block_size_policy(fjall::config::BlockSizePolicy::all(LOG_BLOCK_BYTES))
}

/// The options Leviathan creates the keyspace `name` with: the one place
/// that says which keyspace has which layout, for the modules that open
/// them and for a restore, which must recreate each one the same way.
fn keyspace_options_for(name: &str) -> fjall::KeyspaceCreateOptions {
    let base = graph_base_name(name);
    match base {
        "cas_chunks" => {
            keyspace_options().with_kv_separation(Some(fjall::KvSeparationOptions::default()))
        }
        "graph_history" => separated(scan_only_keyspace_options()),
        "graph_nodes" => separated(keyspace_options()),
        "log_events" => log_keyspace_options(),
        "graph_edges_out" => keyspace_options_with_l0(EDGES_OUT_L0_THRESHOLD),
        _ if SCAN_ONLY_KEYSPACES.contains(&base) => scan_only_keyspace_options(),
        _ => keyspace_options(),
    }
}

/// `name` without the `gen<N>_` prefix of a later generation's graph
/// keyspace (`gen3_graph_nodes` → `graph_nodes`): each generation's graph
/// has the layout of generation 0's.
fn graph_base_name(name: &str) -> &str {
    name.strip_prefix("gen")
        .and_then(|rest| {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            let base = rest.get(digits..)?.strip_prefix('_')?;
            (digits > 0 && base.starts_with("graph_")).then_some(base)
        })
        .unwrap_or(name)
}

/// Keyspaces read only by range and prefix scans, never by a point read
/// (`get`): they are created without bloom filters, which only a point read
/// consults (fjall's filters hash whole keys), so no flush or compaction
/// builds one and no filter block is pinned for them; and with tiered
/// compaction ([`scan_only_keyspace_options`]): they take random keys and are
/// mostly inserted, not overwritten.
const SCAN_ONLY_KEYSPACES: &[&str] = &[
    "graph_history",
    "graph_nodes_by_type",
    "graph_nodes_by_created",
    "graph_edges_in",
    "log_by_type",
    "log_by_attempt",
    "log_by_target",
];

/// The L0 threshold of `graph_edges_out` (other keyspaces: [`L0_THRESHOLD`]).
/// At 16 this keyspace took 335-350 MB (35 %) more at 10M events than at 8,
/// most of the disk that threshold cost; at 8 the store ingested as fast
/// (docs/BENCHMARKS.md, sessions 18 and 20).
const EDGES_OUT_L0_THRESHOLD: u8 = 8;

/// Opens the keyspace `name` of `db`, creating it with
/// [`keyspace_options_for`] if it does not exist.
pub(crate) fn open_keyspace(db: &fjall::Database, name: &str) -> fjall::Result<fjall::Keyspace> {
    db.keyspace(name, || keyspace_options_for(name))
}

/// Flushes every keyspace's memtables to disk tables and waits for it, so the
/// next open has no memtable to rebuild from the journal (a clean shutdown and
/// the end of a rebuild call it; after a crash fjall replays the journal, up
/// to [`MAX_JOURNAL_BYTES`] and whatever flushes were still queued).
///
/// It waits for every sealed memtable, not only the one it seals: fjall's
/// `rotate_memtable_and_wait` returns at once when the active memtable is
/// empty, though a memtable sealed a moment earlier (by its size) may still be
/// queued for its flush. For journaled writes that only meant a longer start;
/// for the rebuild's unjournaled batches (`replay`) it lost them.
///
/// Then it seals the journal and deletes every journal the flushes made
/// redundant (`Database::rotate_journal`, a `vendor/fjall` patch): fjall
/// replays a journaled `clear` at every open until its journal is gone, and
/// a build without the `vendor/fjall` recovery patch (an older Leviathan)
/// would replay the rebuild's clear over the rebuilt tables.
pub(crate) fn flush_memtables(db: &fjall::Database) -> fjall::Result<()> {
    let keyspaces = db
        .list_keyspace_names()
        .into_iter()
        .map(|name| Ok((open_keyspace(db, &name)?, name)))
        .collect::<fjall::Result<Vec<_>>>()?;
    for (ks, _) in &keyspaces {
        ks.rotate_memtable()?;
    }
    let deadline = std::time::Instant::now() + FLUSH_WAIT;
    for (ks, name) in &keyspaces {
        while ks.sealed_memtable_count() > 0 {
            if std::time::Instant::now() > deadline {
                return Err(fjall::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "keyspace {name} still has {} memtables to flush after {} s",
                        ks.sealed_memtable_count(),
                        FLUSH_WAIT.as_secs()
                    ),
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    db.rotate_journal()?;
    db.persist(fjall::PersistMode::SyncAll)
}

/// How long [`flush_memtables`] waits for fjall's flushes (a failed flush
/// poisons the database and leaves its memtable sealed for ever).
const FLUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_generation_keyspace_has_the_layout_of_generation_0() {
        assert_eq!(graph_base_name("gen3_graph_nodes"), "graph_nodes");
        assert_eq!(graph_base_name("gen12_graph_history"), "graph_history");
        assert_eq!(graph_base_name("graph_edges_in"), "graph_edges_in");
        // Only a `gen<N>_graph_*` name is a generation's.
        assert_eq!(graph_base_name("gen_graph_nodes"), "gen_graph_nodes");
        assert_eq!(graph_base_name("gen3_log_events"), "gen3_log_events");
        assert_eq!(graph_base_name("generations"), "generations");
        for name in [
            "graph_history",
            "gen7_graph_history",
            "graph_nodes",
            "gen7_graph_nodes",
            "cas_chunks",
        ] {
            assert!(
                keyspace_options_for(name).kv_separation_opts.is_some(),
                "{name}"
            );
        }
        for name in [
            "graph_edges_out",
            "gen7_graph_edges_out",
            "log_events",
            "cas_pending",
        ] {
            assert!(
                keyspace_options_for(name).kv_separation_opts.is_none(),
                "{name}"
            );
        }
    }

    #[test]
    fn the_log_is_lz4_compressed_from_the_flush_on_and_the_graph_is_not() {
        let lz4 = fjall::config::CompressionPolicy::all(fjall::CompressionType::Lz4);
        assert_eq!(
            keyspace_options_for("log_events").data_block_compression_policy,
            lz4
        );
        // The other keyspaces keep fjall's default (none in L0 and L1): their
        // tables are rewritten by compaction, where LZ4 costs CPU each time.
        for name in [
            "graph_edges_out",
            "log_event_ids",
            "gen2_graph_nodes_by_type",
        ] {
            assert_ne!(
                keyspace_options_for(name).data_block_compression_policy,
                lz4,
                "{name}"
            );
        }
    }

    #[test]
    fn only_keyspaces_without_point_reads_go_without_bloom_filters() {
        let disabled = fjall::config::FilterPolicy::disabled();
        for name in [
            "graph_history",
            "gen2_graph_history",
            "gen2_graph_edges_in",
            "log_by_type",
            "log_by_attempt",
            "log_by_target",
        ] {
            assert_eq!(keyspace_options_for(name).filter_policy, disabled, "{name}");
        }
        // Point-read keyspaces: event ids (the duplicate check), nodes,
        // edges, digests and bundles keep fjall's filters.
        for name in [
            "log_event_ids",
            "log_events",
            "log_bundles",
            "graph_nodes",
            "gen2_graph_edges_out",
            "graph_digests",
        ] {
            assert_ne!(keyspace_options_for(name).filter_policy, disabled, "{name}");
        }
    }

    /// The `leviathan_store_l0_runs_max` gauge's source (a `vendor/fjall`
    /// accessor): the L0 runs of the keyspace with the most, each flush adding
    /// one until compaction merges them (from 16, [`L0_THRESHOLD`]).
    #[test]
    fn max_l0_run_count_is_the_busiest_keyspaces_unmerged_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_database(&dir.path().join("store")).unwrap();
        let nodes = open_keyspace(&db, "graph_nodes").unwrap();
        let meta = open_keyspace(&db, "graph_meta").unwrap();
        assert_eq!(db.max_l0_run_count(), 0);
        // A first table in each, compacted into the last level: later flushes
        // overlap it, so compaction cannot move them down without merging (a
        // lone table in an empty tree is moved down at once).
        for ks in [&nodes, &meta] {
            ks.insert("key", "0").unwrap();
            ks.rotate_memtable_and_wait().unwrap();
            ks.major_compact().unwrap();
        }
        assert_eq!(db.max_l0_run_count(), 0);
        for value in ["a", "b", "c"] {
            nodes.insert("key", value).unwrap();
            nodes.rotate_memtable_and_wait().unwrap();
        }
        meta.insert("key", "a").unwrap();
        meta.rotate_memtable_and_wait().unwrap();
        assert_eq!(db.max_l0_run_count(), 3);
        nodes.major_compact().unwrap();
        assert_eq!(db.max_l0_run_count(), 1, "graph_meta's one flush");
        assert_eq!(nodes.get("key").unwrap().as_deref(), Some(&b"c"[..]));
    }

    /// Bytes that do not compress (xorshift from `seed`), `n` at a time: the
    /// blob files' and tables' sizes are then not a matter of luck.
    fn noise(seed: u64) -> impl FnMut(usize) -> Vec<u8> {
        let mut x = seed;
        move |n| {
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        }
    }

    /// `Database::keyspace_write_stats` (the `leviathan_store_*_bytes`
    /// counters, a `vendor/lsm-tree` patch) counts
    /// every byte a flush or a merge wrote, tables and blob files, and what
    /// merges read: before any merge the flushed bytes are the keyspace's
    /// size; a major compaction reads all of it and writes its new size.
    #[test]
    fn keyspace_writes_count_what_flushes_and_merges_read_and_write() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_database(&dir.path().join("store")).unwrap();
        let meta = open_keyspace(&db, "graph_meta").unwrap();
        let history = open_keyspace(&db, "graph_history").unwrap();
        let writes = |name: &str| {
            db.keyspace_write_stats()
                .into_iter()
                .find(|(n, _)| n == name)
                .map(|(_, w)| w)
                .unwrap_or_else(|| panic!("no {name}"))
        };
        assert_eq!(writes("graph_meta"), Default::default());
        assert_eq!(writes("graph_history"), Default::default());
        // Values that do not compress, so that the blob files' size is
        // not a matter of luck; history keeps values of 64 bytes or more
        // apart from their keys.
        let mut noise = noise(0x9e37_79b9_7f4a_7c15);
        for round in 0..3 {
            for i in 0..200 {
                let key = format!("k{i:04}");
                meta.insert(&key, format!("{round}-{i}")).unwrap();
                history.insert(&key, noise(200)).unwrap();
            }
            meta.rotate_memtable_and_wait().unwrap();
            history.rotate_memtable_and_wait().unwrap();
        }
        let m = writes("graph_meta");
        assert!(m.flushed_table_bytes > 0);
        assert_eq!(m.flushed_table_bytes, meta.disk_space(), "{m:?}");
        assert_eq!(m.flushed_blob_bytes, 0, "{m:?}");
        assert_eq!(m.compaction_read_bytes, 0, "no merge yet: {m:?}");
        let h = writes("graph_history");
        assert!(
            h.flushed_blob_bytes >= 3 * 200 * 200,
            "the values went to blob files: {h:?}"
        );
        assert!(h.flushed_table_bytes > 0, "{h:?}");
        assert_eq!(
            h.flushed_table_bytes + h.flushed_blob_bytes,
            history.disk_space(),
            "{h:?}"
        );

        let before = meta.disk_space();
        meta.major_compact().unwrap();
        let after = meta.disk_space();
        assert!(after < before, "the overwritten versions are gone");
        let m2 = writes("graph_meta");
        assert_eq!(m2.compaction_read_bytes, before, "{m2:?}");
        assert_eq!(m2.compaction_table_bytes, after, "{m2:?}");
        assert_eq!(m2.flushed_table_bytes, m.flushed_table_bytes);
        history.major_compact().unwrap();
        let h2 = writes("graph_history");
        assert!(h2.compaction_read_bytes >= h.flushed_table_bytes, "{h2:?}");
        assert!(h2.compaction_table_bytes > 0, "{h2:?}");
    }

    /// Clearing a keyspace (what `leviathan rebuild` does to every graph
    /// keyspace) deletes its tables and blob files once nothing reads them,
    /// without waiting for the store to be reopened (`vendor/lsm-tree`'s
    /// sixth patch): before it, a rebuild kept the old graph's files beside
    /// the new one until the next start.
    #[test]
    fn a_cleared_keyspace_deletes_its_files_without_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_database(&dir.path().join("store")).unwrap();
        let mut noise = noise(0x2545_f491_4f6c_dd1d);
        // Key-value separated (tables and blob files), and tables only.
        for name in ["graph_history", "graph_edges_in"] {
            let ks = open_keyspace(&db, name).unwrap();
            for round in 0..3 {
                for i in 0..500 {
                    ks.insert(format!("r{round}k{i:04}"), noise(300)).unwrap();
                }
                ks.rotate_memtable_and_wait().unwrap();
            }
            let written = crate::files::disk_bytes_under(ks.path());
            assert!(written > 3 * 500 * 300, "{name}: {written} bytes");
            ks.clear().unwrap();
            assert_eq!(ks.iter().count(), 0, "{name}");
            // Writes and flushes after the clear: fjall lets go of the
            // versions before it once its GC watermark (moved at each
            // memtable rotation) has passed the clear, and with them of the
            // last handles on the cleared files.
            for i in 0..3 {
                ks.insert(format!("after{i}"), noise(300)).unwrap();
                ks.rotate_memtable_and_wait().unwrap();
            }
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                let left = crate::files::disk_bytes_under(ks.path());
                if left < written / 10 {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{name}: the cleared keyspace still takes {left} of its {written} bytes"
                );
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            assert_eq!(ks.iter().count(), 3, "{name}");
        }
    }

    /// The scan-only keyspaces compact by tiers (`vendor/lsm-tree`'s
    /// `Tiered`, recorded when the keyspace is created): every
    /// [`L0_THRESHOLD`] flushes become one run of L1, every
    /// [`TIERED_RUN_LIMIT`] runs of a level one run of the next, the last
    /// level stays one run; and through every merge, a reopen and a major
    /// compaction the keyspace reads as the newest write of each key, the
    /// deleted ones absent.
    #[test]
    fn tiered_keyspaces_merge_runs_level_by_level_and_read_the_newest_versions() {
        use std::collections::BTreeMap;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let names = ["graph_edges_in", "graph_history"];
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let check = |ks: &fjall::Keyspace, model: &BTreeMap<Vec<u8>, Vec<u8>>, when: &str| {
            let all = ks
                .iter()
                .map(|kv| {
                    let (k, v) = kv.into_inner().unwrap();
                    (k.to_vec(), v.to_vec())
                })
                .collect::<BTreeMap<_, _>>();
            assert!(
                all == *model,
                "{when}: the keyspace differs from what was written"
            );
            // A prefix scan (how these keyspaces are read) sees the same.
            let prefix = b"n07/";
            let scanned = ks
                .prefix(prefix)
                .map(|kv| kv.into_inner().unwrap().0.to_vec())
                .collect::<Vec<_>>();
            let expected = model
                .keys()
                .filter(|k| k.starts_with(prefix))
                .cloned()
                .collect::<Vec<_>>();
            assert_eq!(scanned, expected, "{when}: prefix scan");
        };
        let settled = |ks: &fjall::Keyspace| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            loop {
                let runs = ks.level_run_counts();
                let busy = runs[0] >= usize::from(L0_THRESHOLD)
                    || runs[1..runs.len() - 1]
                        .iter()
                        .any(|&r| r >= usize::from(TIERED_RUN_LIMIT));
                if !busy {
                    return runs;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "compaction stuck at {runs:?}"
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        };
        {
            let db = open_database(&path).unwrap();
            let nodes = open_keyspace(&db, "graph_nodes").unwrap();
            assert_eq!(
                nodes.config.compaction_strategy.get_name(),
                "LeveledCompaction"
            );
            for name in names {
                let ks = open_keyspace(&db, name).unwrap();
                assert_eq!(ks.config.compaction_strategy.get_name(), "TieredCompaction");
            }
            let ks = open_keyspace(&db, "graph_history").unwrap();
            let mut most_l1_runs = 0;
            for round in 0..128u32 {
                for i in 0..40u32 {
                    // Keys spread over the whole key space, as node ids are.
                    let h = (round * 40 + i).wrapping_mul(2_654_435_761) % 20_000;
                    let key = format!("n{:02}/{h:05}", h % 16).into_bytes();
                    let value = format!("{round}:{i}:{}", "v".repeat(70)).into_bytes();
                    ks.insert(&key, &value).unwrap();
                    model.insert(key, value);
                }
                // One key rewritten in every flush, one written then deleted.
                let value = format!("round {round}").into_bytes();
                ks.insert("n07/shared", &value).unwrap();
                model.insert(b"n07/shared".to_vec(), value);
                if round % 3 == 0 {
                    let victim = model.keys().nth(round as usize * 7).cloned().unwrap();
                    ks.remove(&victim).unwrap();
                    model.remove(&victim);
                }
                ks.rotate_memtable_and_wait().unwrap();
                let runs = ks.level_run_counts();
                most_l1_runs = most_l1_runs.max(runs[1]);
            }
            let runs = settled(&ks);
            // Leveled compaction keeps one run per level below L0.
            assert!(
                most_l1_runs >= 2,
                "L1 held runs side by side: {most_l1_runs}"
            );
            // 128 flushes make at least six runs of L1 (a merge takes every
            // table L0 has, 16 or a few more), so L1 filled and merged into L2.
            assert!(runs[2] >= 1, "L1's runs merged into L2: {runs:?}");
            assert!(
                runs[3..].iter().all(|&r| r == 0),
                "nothing deeper yet: {runs:?}"
            );
            check(&ks, &model, "after the merges");
        }
        let db = open_database(&path).unwrap();
        let ks = open_keyspace(&db, "graph_history").unwrap();
        assert_eq!(ks.config.compaction_strategy.get_name(), "TieredCompaction");
        check(&ks, &model, "after a reopen");
        ks.major_compact().unwrap();
        let runs = ks.level_run_counts();
        assert_eq!(
            runs.iter().sum::<usize>(),
            1,
            "one run in the last level: {runs:?}"
        );
        check(&ks, &model, "after a major compaction");
    }

    #[test]
    fn sync_modes_parse_in_any_case_and_nothing_else() {
        assert_eq!("always".parse::<SyncMode>().unwrap(), SyncMode::Always);
        assert_eq!("NONE".parse::<SyncMode>().unwrap(), SyncMode::None);
        let err = "fsync".parse::<SyncMode>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"fsync\" is not a sync mode: use `always` or `none`"
        );
        assert_eq!(
            SyncMode::Always.persist_mode(),
            fjall::PersistMode::SyncData
        );
    }

    /// The three fjall patches the offline rebuild stands on
    /// (vendor/fjall/LEVIATHAN-PATCH.md): a batch committed without the
    /// journal is on disk once its memtables are flushed; the journal's
    /// record of the `clear` before it, replayed at the next open, no longer
    /// deletes it (stock fjall replays the clear over the later tables); and
    /// [`flush_memtables`] leaves no journal holding that clear. Old data
    /// written before the clear stays cleared.
    #[test]
    fn unjournaled_writes_after_a_clear_survive_a_reopen_once_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let reopened = |extra: Option<&str>| {
            let db = open_database(&path).unwrap();
            let ks = open_keyspace(&db, "graph_nodes").unwrap();
            let meta = open_keyspace(&db, "graph_meta").unwrap();
            assert_eq!(ks.len().unwrap(), 2_000);
            assert!(ks.get("old").unwrap().is_none(), "the clear holds");
            assert_eq!(meta.get("state").unwrap().as_deref(), Some(&b"head"[..]));
            for key in ["after"].into_iter().chain(extra) {
                assert_eq!(
                    meta.get(key).unwrap().as_deref(),
                    Some(&b"journaled"[..]),
                    "{key}"
                );
            }
            (db, meta)
        };
        {
            let db = open_database(&path).unwrap();
            let ks = open_keyspace(&db, "graph_nodes").unwrap();
            let meta = open_keyspace(&db, "graph_meta").unwrap();
            ks.insert("old", "before the clear").unwrap();
            flush_memtables(&db).unwrap();
            ks.clear().unwrap();
            let mut batch = db.batch().without_journal();
            for i in 0..2_000u32 {
                batch.insert(&ks, format!("n{i:05}"), vec![b'x'; 100]);
            }
            batch.insert(&meta, "state", "head");
            batch.commit().unwrap();
            // Readers see it at once, as any batch.
            assert!(ks.get("n01999").unwrap().is_some());
            // A journaled write after it, in the same journal.
            meta.insert("after", "journaled").unwrap();
            // Flushed, but the journal holding the clear is still there.
            ks.rotate_memtable_and_wait().unwrap();
            meta.rotate_memtable_and_wait().unwrap();
        }
        // The open replays that journal: the clear is skipped, the rest kept.
        let (db, meta) = reopened(None);
        // The flush of every memtable deletes the journal that recorded the
        // clear: a build without the recovery patch finds nothing to replay.
        flush_memtables(&db).unwrap();
        let journals = std::fs::read_dir(&path)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".jnl"))
            .count();
        assert_eq!(journals, 1, "only the new active journal is left");
        meta.insert("last", "journaled").unwrap();
        drop((meta, db));
        reopened(Some("last"));
    }

    /// A keyspace created after another was deleted and the database
    /// reopened after a clean stop (its journals gone) gets an internal id
    /// of its own, and keeps its data. fjall handed the deleted keyspace's
    /// id out again (vendor/fjall's LEVIATHAN-PATCH.md, "Keyspace ids are
    /// never handed out twice").
    #[test]
    fn a_keyspace_made_after_a_deleted_one_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let open = || fjall::Database::builder(dir.path()).open().unwrap();
        // The internal ids of the keyspaces, by their folders.
        let ids = || keyspace_ids(dir.path());
        let deleted = {
            let db = open();
            open_keyspace(&db, "graph_meta")
                .unwrap()
                .insert("state", "kept")
                .unwrap();
            let old = open_keyspace(&db, "gen1_graph_meta").unwrap();
            old.insert("state", "old").unwrap();
            let deleted = ids().into_iter().max().unwrap();
            db.delete_keyspace(old).unwrap();
            // A clean stop: every memtable flushed, the journals gone.
            flush_memtables(&db).unwrap();
            deleted
        };
        let before = ids();
        {
            let db = open();
            let new = open_keyspace(&db, "gen2_graph_meta").unwrap();
            new.insert("state", "new").unwrap();
            flush_memtables(&db).unwrap();
        }
        let made: Vec<u64> = ids().into_iter().filter(|i| !before.contains(i)).collect();
        assert_eq!(made.len(), 1, "{made:?}");
        assert_ne!(
            made[0], deleted,
            "the deleted keyspace's id was handed out again"
        );
        for _ in 0..2 {
            let db = open();
            assert!(
                db.list_keyspace_names()
                    .iter()
                    .any(|n| n.as_ref() == "gen2_graph_meta"),
                "the new keyspace is gone"
            );
            let new = open_keyspace(&db, "gen2_graph_meta").unwrap();
            assert_eq!(
                new.get("state").unwrap().as_deref(),
                Some(&b"new"[..]),
                "the new keyspace lost its data"
            );
        }
    }

    /// The folder names of a database's keyspaces: their internal ids.
    fn keyspace_ids(dir: &std::path::Path) -> Vec<u64> {
        std::fs::read_dir(dir.join("keyspaces"))
            .unwrap()
            .map(|e| {
                e.unwrap()
                    .file_name()
                    .into_string()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect()
    }

    /// How a generation's graph was lost after rolling a projector set
    /// forward, back and forward again (vendor/fjall's LEVIATHAN-PATCH.md,
    /// "Keyspace ids are never handed out twice"), one step per open of the
    /// store. fjall's meta keyspace maps a keyspace's id to its name
    /// (`'n' + id`), written by ingestion at a seqno of the database's
    /// counter; deleting a keyspace writes tombstones for those keys. An
    /// open sets the counter above the seqnos of the keyspaces' data only,
    /// so a deletion after the last write leaves tombstones above it. The
    /// next open handed the deleted keyspace's id out again, the new name
    /// went in below the tombstone, and once the meta keyspace compacted
    /// the two the tombstone won: the open after that found the new
    /// keyspace's folder unnamed and deleted it.
    #[test]
    fn a_keyspace_made_after_a_deleted_one_keeps_its_name_once_the_meta_keyspace_compacts() {
        let dir = tempfile::tempdir().unwrap();
        let open = || fjall::Database::builder(dir.path()).open().unwrap();
        // Set A's graph, and set B's generation kept beside it.
        {
            let db = open();
            open_keyspace(&db, "graph_meta")
                .unwrap()
                .insert("state", "a")
                .unwrap();
            open_keyspace(&db, "gen1_graph_meta")
                .unwrap()
                .insert("state", "b")
                .unwrap();
            flush_memtables(&db).unwrap();
        }
        // Back to A: a last write, then B's generation deleted (its folder
        // goes with the last handle), then a clean stop.
        let deleted = {
            let db = open();
            open_keyspace(&db, "graph_meta")
                .unwrap()
                .insert("state", "a again")
                .unwrap();
            let old = open_keyspace(&db, "gen1_graph_meta").unwrap();
            let deleted = keyspace_ids(dir.path()).into_iter().max().unwrap();
            db.delete_keyspace(old).unwrap();
            assert!(!keyspace_ids(dir.path()).contains(&deleted));
            flush_memtables(&db).unwrap();
            deleted
        };
        // Forward to B again: a new generation, two keyspaces made one
        // after the other (the meta keyspace compacts its runs).
        {
            let db = open();
            let new = open_keyspace(&db, "gen2_graph_meta").unwrap();
            new.insert("state", "b again").unwrap();
            open_keyspace(&db, "gen2_graph_history")
                .unwrap()
                .insert("h", "1")
                .unwrap();
            flush_memtables(&db).unwrap();
        }
        let db = open();
        assert!(
            db.list_keyspace_names()
                .iter()
                .any(|n| n.as_ref() == "gen2_graph_meta"),
            "the new keyspace is gone (the deleted one's id was {deleted}, the ids now {:?})",
            keyspace_ids(dir.path())
        );
        assert_eq!(
            open_keyspace(&db, "gen2_graph_meta")
                .unwrap()
                .get("state")
                .unwrap()
                .as_deref(),
            Some(&b"b again"[..]),
            "the new keyspace lost its data"
        );
    }

    /// A keyspace deleted, then the process gone before its folder was
    /// (a crash: the copy of the directory taken while a handle was still
    /// open), stays deleted at the next open. The keyspace was made after
    /// the last write of an earlier run, so its name in fjall's meta
    /// keyspace had a seqno above the counter the next open set, the
    /// deletion's tombstone went in below it, and once the meta keyspace
    /// compacted the two the name was back: the deleted keyspace, its data
    /// with it, was open again (vendor/fjall's LEVIATHAN-PATCH.md, "An open
    /// sets the seqno counter above the meta keyspace's").
    #[test]
    fn a_deleted_keyspace_stays_deleted_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let crashed = tempfile::tempdir().unwrap();
        let open = |p: &std::path::Path| fjall::Database::builder(p).open().unwrap();
        {
            let db = open(dir.path());
            open_keyspace(&db, "log").unwrap().insert("e", "1").unwrap();
            // A generation's keyspaces, made after the last write.
            for name in [
                "nodes",
                "nodes_by_type",
                "nodes_by_created",
                "edges_out",
                "edges_in",
                "counts",
                "digests",
                "errors",
                "meta",
                "history",
            ] {
                open_keyspace(&db, &format!("gen1_graph_{name}")).unwrap();
            }
            flush_memtables(&db).unwrap();
        }
        {
            let db = open(dir.path());
            let doomed = open_keyspace(&db, "gen1_graph_history").unwrap();
            doomed.insert("h", "old").unwrap();
            doomed.rotate_memtable_and_wait().unwrap();
            let handle = doomed.clone();
            db.delete_keyspace(doomed).unwrap();
            // The next generation's first keyspace (the meta keyspace
            // compacts its runs).
            open_keyspace(&db, "gen2_graph_nodes").unwrap();
            // The crash: what is on disk while the handle is open.
            copy_dir(dir.path(), crashed.path());
            drop(handle);
        }
        let db = open(crashed.path());
        assert!(
            !db.list_keyspace_names()
                .iter()
                .any(|n| n.as_ref() == "gen1_graph_history"),
            "the deleted keyspace is back"
        );
    }

    fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let target = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy_dir(&e.path(), &target);
            } else {
                std::fs::copy(e.path(), &target).unwrap();
            }
        }
    }
}
