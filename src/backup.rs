//! Online backup and restore. A backup copies every keyspace of the store
//! (log, indexes, graph, artifacts) as of one fjall snapshot — one seq — into
//! a new store under `<DIR>/store`, verifies the copy (chain, head, state
//! digest, entry counts) and only then writes `<DIR>/manifest.json`, so a
//! directory with a manifest is a whole, verified backup. Ingest goes on
//! meanwhile: the snapshot does not block the writer. A restore copies a
//! backup into a new data dir, verifies the chain and the head against the
//! manifest, and checks the graph's state digest at that seq (or rebuilds the
//! graph from the log when it does not match). For a projector set with
//! `async` projectors the manifest also holds where the async lane stood in
//! the snapshot (its applied seq, its digest and the combined digest there),
//! checked in the copy and at restore the same way.

use crate::digest::Sha256;
use crate::graph::GraphStore;
use crate::log::Log;
use crate::seq::Seq;
use crate::tlog::note::{Checkpoint, NoteVerifier};
use anyhow::{bail, Context};
use fjall::{Database, Readable};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// `manifest.json` of a backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The layout of this file and of `store/` (1).
    pub format: u32,
    /// The log's head at the snapshot: the backup holds seqs 1..=seq.
    pub seq: Seq,
    pub head_hash: Option<Sha256>,
    /// The graph's rolling state digest after `seq`.
    pub state_digest: Sha256,
    /// The projector set that built the graph.
    pub projector_set: Option<Sha256>,
    /// Artifacts in the backup and their bytes.
    pub artifacts: u64,
    pub artifact_bytes: u64,
    /// Entries copied per keyspace (checked again in the copy).
    pub keyspaces: std::collections::BTreeMap<String, u64>,
    /// When the snapshot was taken (RFC 3339, UTC).
    pub created_at: String,
    pub leviathan_version: String,
    /// The log's signed checkpoint at `seq` (a C2SP signed note, docs/AUDIT.md):
    /// what an auditor holds to prove that the restored log is the one the
    /// server signed, and that later logs extend it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    /// A set with `async` projectors: the seq its async lane had applied in
    /// the snapshot (at most `seq`: the lane follows the head).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub async_seq: Option<Seq>,
    /// The async lane's rolling digest after `async_seq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub async_digest: Option<Sha256>,
    /// The combined digest after `async_seq`, `SHA-256(inline ‖ async)`:
    /// the digest that covers every projector's ops (docs/ARCHITECTURE.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub combined_digest: Option<Sha256>,
}

/// Where a graph's async lane stands: its applied seq, its digest there and
/// the combined digest recorded there (`None` when the lane has applied
/// nothing: an all-inline set).
fn async_lane(
    graph: &GraphStore,
    snap: &impl Readable,
) -> anyhow::Result<Option<(Seq, Sha256, Option<Sha256>)>> {
    let (seq, digest) = graph.async_state_at(snap)?;
    if seq == Seq::ZERO {
        return Ok(None);
    }
    let combined = snap
        .get(
            &graph.digests,
            crate::graph::keys::tagged_digest(crate::graph::keys::DIGEST_COMBINED, seq),
        )?
        .map(|v| crate::graph::keys::decode_digest(&v))
        .transpose()?;
    Ok(Some((seq, digest, combined)))
}

/// Checks `graph`'s async lane against the manifest's; `Err` says how it differs.
fn check_async_lane(graph: &GraphStore, manifest: &Manifest) -> anyhow::Result<Result<(), String>> {
    let found = async_lane(graph, &graph.view())?;
    let expected = manifest
        .async_seq
        .map(|s| (s, manifest.async_digest, manifest.combined_digest));
    Ok(match (found, expected) {
        (None, None) => Ok(()),
        (Some((s, d, c)), Some((es, ed, ec))) if s == es && Some(d) == ed && c == ec => Ok(()),
        (found, _) => Err(format!(
            "the graph's async lane is at {}, the manifest says seq {} digest {} combined {}",
            found.map_or("seq 0".into(), |(s, d, c)| format!(
                "seq {s} digest {d} combined {}",
                c.map_or("none".into(), |c| c.to_hex())
            )),
            manifest.async_seq.unwrap_or_default(),
            manifest.async_digest.map_or("none".into(), |d| d.to_hex()),
            manifest
                .combined_digest
                .map_or("none".into(), |d| d.to_hex()),
        )),
    })
}

/// The manifest's format.
const FORMAT: u32 = 1;
/// Bytes of entries per write batch of the copy.
const COPY_BATCH_BYTES: usize = 8 << 20;
const MANIFEST: &str = "manifest.json";

fn check_absolute(dir: &Path) -> anyhow::Result<()> {
    if !dir.is_absolute() {
        bail!("{} is not an absolute path", dir.display());
    }
    Ok(())
}

/// Backs the store up into `to` (new or empty) as of one snapshot taken now,
/// while the server keeps running. Returns the manifest written.
pub fn backup(
    db: &Database,
    log: &Log,
    graph: &GraphStore,
    projector_set: Option<Sha256>,
    to: &Path,
    sign: Option<&dyn Fn(Seq) -> anyhow::Result<String>>,
) -> anyhow::Result<Manifest> {
    check_absolute(to)?;
    // A failed backup (a full volume) leaves nothing behind: a retry into
    // the same directory works, and the space is given back.
    crate::files::fill_new_dir(to, "a backup", || {
        backup_into(db, log, graph, projector_set, to, sign)
    })
}

fn backup_into(
    db: &Database,
    log: &Log,
    graph: &GraphStore,
    projector_set: Option<Sha256>,
    to: &Path,
    sign: Option<&dyn Fn(Seq) -> anyhow::Result<String>>,
) -> anyhow::Result<Manifest> {
    let snap = db.snapshot();
    let created_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let head = log.head_at(&snap)?;
    let (graph_seq, state_digest) = graph.state_at(&snap)?;
    if graph_seq != head.seq {
        bail!(
            "the graph (seq {graph_seq}) is not at the log's head (seq {}) in the snapshot",
            head.seq
        );
    }
    let lane = async_lane(graph, &snap)?;
    let dest = crate::storage::open_database(&to.join("store"))
        .with_context(|| format!("cannot create a store in {}", to.display()))?;
    let mut counts = std::collections::BTreeMap::new();
    let mut names = db.list_keyspace_names();
    names.sort();
    for name in names {
        let name: String = name.to_string();
        let src = crate::storage::open_keyspace(db, &name)?;
        let dst = crate::storage::open_keyspace(&dest, &name)?;
        let mut n = 0u64;
        let mut batch = dest.batch();
        let mut bytes = 0;
        for kv in snap.iter(&src) {
            let (k, v) = kv.into_inner()?;
            bytes += k.len() + v.len();
            batch.insert(&dst, k, v);
            n += 1;
            if bytes >= COPY_BATCH_BYTES {
                batch.commit()?;
                batch = dest.batch();
                bytes = 0;
            }
        }
        batch.commit()?;
        counts.insert(name, n);
    }
    drop(snap);
    crate::storage::flush_memtables(&dest)?;
    let cas_totals = artifact_totals(&dest)?;
    let checkpoint = sign
        .map(|sign| sign(head.seq).context("signing the checkpoint at the backup's head"))
        .transpose()?;
    let manifest = Manifest {
        format: FORMAT,
        seq: head.seq,
        head_hash: head.hash,
        state_digest,
        projector_set,
        artifacts: cas_totals.0,
        artifact_bytes: cas_totals.1,
        keyspaces: counts,
        created_at,
        leviathan_version: env!("CARGO_PKG_VERSION").to_string(),
        checkpoint,
        async_seq: lane.map(|l| l.0),
        async_digest: lane.map(|l| l.1),
        combined_digest: lane.and_then(|l| l.2),
    };
    verify_store(&dest, &manifest).context("the copy does not verify")?;
    drop(dest);
    let text = serde_json::to_vec_pretty(&manifest)?;
    crate::files::write_synced(&to.join(MANIFEST), &text)?;
    Ok(manifest)
}

/// Artifacts and their bytes in a store (read from `cas_blobs`).
fn artifact_totals(db: &Database) -> anyhow::Result<(u64, u64)> {
    let mut n = 0;
    let mut bytes = 0;
    if db.list_keyspace_names().iter().any(|k| &**k == "cas_blobs") {
        let blobs = crate::storage::open_keyspace(db, "cas_blobs")?;
        for kv in blobs.iter() {
            let v = kv.value()?;
            n += 1;
            bytes += v
                .get(16..24)
                .map_or(0, |b| u64::from_be_bytes(b.try_into().expect("8 bytes")));
        }
    }
    Ok((n, bytes))
}

/// Verifies `log`'s chain from seq 1 and that it ends at the manifest's head,
/// which it returns (`what` names the store in the errors: "the copied",
/// "the restored").
fn check_chain(log: &Log, manifest: &Manifest, what: &str) -> anyhow::Result<crate::log::Head> {
    let report = log.verify()?;
    if !report.ok {
        bail!(
            "{what} chain is broken at seq {}: {}",
            report.first_broken_seq.unwrap_or_default(),
            report.error.unwrap_or_default()
        );
    }
    if report.head.seq != manifest.seq || report.head.hash != manifest.head_hash {
        let hex = |h: Option<Sha256>| h.map_or("null".to_string(), |h| h.to_string());
        bail!(
            "{what} log ends at seq {} with hash {}, but the manifest says seq {} hash {}: the \
             manifest is not this store's",
            report.head.seq,
            hex(report.head.hash),
            manifest.seq,
            hex(manifest.head_hash)
        );
    }
    Ok(report.head)
}

/// Checks a store against a manifest: the chain verifies from seq 1 and ends
/// at the manifest's head, the graph's state is the manifest's, and every
/// keyspace holds the number of entries copied.
fn verify_store(db: &Database, manifest: &Manifest) -> anyhow::Result<()> {
    let log = Log::open(db)?;
    check_chain(&log, manifest, "the copied")?;
    let graph = GraphStore::open(db)?;
    let (seq, digest) = graph.state()?;
    if seq != manifest.seq || digest != manifest.state_digest {
        bail!(
            "the graph's state is seq {seq} digest {digest}, the manifest says seq {} digest {}",
            manifest.seq,
            manifest.state_digest
        );
    }
    if let Err(e) = check_async_lane(&graph, manifest)? {
        bail!("{e}");
    }
    if let Some((name, why)) = read_back(db, &manifest.keyspaces)?.into_iter().next() {
        bail!("keyspace {name} {why}");
    }
    Ok(())
}

/// Reads every entry, key and value, of each keyspace in `expected` and
/// compares its count: a table or blob file damaged in a copy fails here
/// rather than at the first read that reaches it after a start. Returns each
/// keyspace that did not read back whole, with why.
fn read_back(
    db: &Database,
    expected: &std::collections::BTreeMap<String, u64>,
) -> anyhow::Result<Vec<(String, String)>> {
    let snap = db.snapshot();
    let mut damaged = Vec::new();
    for (name, expected) in expected {
        let ks = crate::storage::open_keyspace(db, name)?;
        let mut n = 0u64;
        let mut why = None;
        for kv in snap.iter(&ks) {
            match kv.into_inner() {
                Ok(_) => n += 1,
                Err(e) => {
                    why = Some(format!("cannot be read after {n} entries: {e}"));
                    break;
                }
            }
        }
        if let Some(why) = why.or_else(|| {
            (n != *expected).then(|| format!("holds {n} entries, the manifest says {expected}"))
        }) {
            damaged.push((name.clone(), why));
        }
    }
    Ok(damaged)
}

/// A graph keyspace of any generation (`graph_*`, `gen<N>_graph_*`): a
/// function of the log, rebuilt from it rather than trusted when damaged.
fn is_graph_keyspace(name: &str) -> bool {
    name.starts_with("graph_")
        || name
            .strip_prefix("gen")
            .and_then(|rest| rest.split_once("_graph_"))
            .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn listed(damaged: &[(String, String)]) -> String {
    damaged
        .iter()
        .map(|(name, why)| format!("keyspace {name} {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Reads a backup's manifest.
pub fn read_manifest(from: &Path) -> anyhow::Result<Manifest> {
    let path = from.join(MANIFEST);
    let text = std::fs::read(&path).with_context(|| {
        format!(
            "cannot read {}: not a finished backup (the manifest is written last)",
            path.display()
        )
    })?;
    let m: Manifest = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a backup manifest", path.display()))?;
    if m.format != FORMAT {
        bail!(
            "{} has format {}, this leviathan reads format {FORMAT}",
            path.display(),
            m.format
        );
    }
    Ok(m)
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct Restored {
    pub seq: Seq,
    pub head_hash: Option<Sha256>,
    pub state_digest: Sha256,
    /// A set with `async` projectors: the restored graph's async lane's
    /// applied seq and the combined digest there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub async_seq: Option<Seq>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub combined_digest: Option<Sha256>,
    /// `verified` (the graph came with the backup, read back whole, and its
    /// digests match) or `rebuilt` (re-projected from the log).
    pub graph: &'static str,
    /// Whether `state_digest` is the manifest's. Only a rebuild with another
    /// projector set than the backup's may give another one (a rebuild with
    /// the backup's own set that does not is a failed restore).
    pub state_digest_matches: bool,
    pub data_dir: std::path::PathBuf,
}

/// A rebuild's result: the state digest and the fingerprint of the projector
/// set it used.
pub struct Rebuilt {
    pub state_digest: Sha256,
    pub projector_set: Sha256,
}

/// Restores the backup in `from` into `data_dir` (new or empty): copies its
/// store, verifies the chain and the head against the manifest, reads every
/// keyspace back whole, and checks the graph's digest at that seq; `rebuild`
/// re-projects the graph when that check fails (e.g. a backup whose graph
/// keyspaces were lost or damaged). A failed restore leaves `data_dir` as it
/// found it (new or empty).
///
/// The manifest's other claims are checked against the copy too: the
/// projector set that built the graph is the one the store's catalog names,
/// and its checkpoint (when it has one) is of this log at this head, with
/// this tree root, state digest and projector set; with `key`, its
/// signature is checked as well (without one, a checkpoint is only text).
pub fn restore(
    from: &Path,
    data_dir: &Path,
    key: Option<&NoteVerifier>,
    rebuild: impl FnOnce(&crate::storage::Store) -> anyhow::Result<Rebuilt>,
) -> anyhow::Result<Restored> {
    let manifest = read_manifest(from)?;
    check_absolute(data_dir)?;
    if let Some(key) = key {
        let Some(note) = &manifest.checkpoint else {
            bail!(
                "the backup's manifest has no checkpoint, so --public-key has nothing to check \
                 (a backup of a server that signed nothing, or a manifest that lost it)"
            );
        };
        crate::tlog::audit::open_checkpoint(note, key).map_err(|e| {
            anyhow::anyhow!("the backup's checkpoint is not signed by the key given: {e}")
        })?;
    }
    // The store is closed when `restore_into` returns.
    crate::files::fill_new_dir(data_dir, "restore", || {
        restore_into(from, data_dir, &manifest, rebuild)
    })
}

/// The manifest's checkpoint and projector set against the restored store:
/// a manifest that names another set, or a checkpoint of another log, head,
/// root, digest or set, is not this backup's (altered, or mixed up).
fn check_claims(store: &crate::storage::Store, manifest: &Manifest) -> anyhow::Result<()> {
    let catalog = crate::generations::Catalog::open(&store.db)?;
    let built_by = catalog.get(catalog.live_id()?)?.map(|r| r.fingerprint);
    if let (Some(claimed), Some(built_by)) = (manifest.projector_set, built_by) {
        if claimed != built_by {
            bail!(
                "the manifest says projector set {claimed} built the graph, but the backed-up \
                 store's catalog says {built_by}: the manifest is not this store's (altered, or \
                 another backup's); nothing was restored"
            );
        }
    }
    let Some(note) = &manifest.checkpoint else {
        return Ok(());
    };
    let text = note
        .rfind("\n\n")
        .map(|at| &note[..at + 1])
        .context("the manifest's checkpoint is not a signed note (no blank line)")?;
    let c = Checkpoint::parse(text).context("the manifest's checkpoint")?;
    let root = crate::tlog::Tree::open(&store.db, &store.log)?
        .root_at(&store.log.view(), manifest.seq.0)?;
    let hex = |h: Option<Sha256>| h.map_or("null".to_string(), |h| h.to_string());
    let mut wrong = Vec::new();
    if c.tree_size != manifest.seq.0 {
        wrong.push(format!(
            "tree size {} (the backup's head is seq {})",
            c.tree_size, manifest.seq
        ));
    }
    if c.tree_size == manifest.seq.0 && c.root != root {
        wrong.push(format!("root {} (the restored log's is {root})", c.root));
    }
    if c.chain_head != manifest.head_hash {
        wrong.push(format!(
            "chain head {} (the backup's is {})",
            hex(c.chain_head),
            hex(manifest.head_hash)
        ));
    }
    if c.state_digest != manifest.state_digest {
        wrong.push(format!(
            "state digest {} (the backup's is {})",
            c.state_digest, manifest.state_digest
        ));
    }
    if manifest.projector_set.is_some_and(|p| p != c.projector_set) {
        wrong.push(format!(
            "projector set {} (the manifest's is {})",
            c.projector_set,
            hex(manifest.projector_set)
        ));
    }
    if !wrong.is_empty() {
        bail!(
            "the manifest's checkpoint does not describe this backup: {}; nothing was restored \
             (the manifest was altered, or is another backup's)",
            wrong.join("; ")
        );
    }
    Ok(())
}

fn restore_into(
    from: &Path,
    data_dir: &Path,
    manifest: &Manifest,
    rebuild: impl FnOnce(&crate::storage::Store) -> anyhow::Result<Rebuilt>,
) -> anyhow::Result<Restored> {
    copy_dir(&from.join("store"), &data_dir.join("store"))?;
    let store = crate::storage::open_store_filling(data_dir)?;
    let head = check_chain(&store.log, manifest, "the restored")?;
    check_claims(&store, manifest)?;
    let (graph_damage, damage): (Vec<_>, Vec<_>) = read_back(&store.db, &manifest.keyspaces)?
        .into_iter()
        .partition(|(name, _)| is_graph_keyspace(name));
    if !damage.is_empty() {
        bail!(
            "the backup is damaged, and this part of it cannot be rebuilt from the log: {}. \
             Restore another backup (or another copy of this one)",
            listed(&damage)
        );
    }
    let (seq, digest) = store.graph.state()?;
    let lane = check_async_lane(&store.graph, manifest)?;
    let graph = if graph_damage.is_empty()
        && seq == manifest.seq
        && digest == manifest.state_digest
        && lane.is_ok()
    {
        "verified"
    } else {
        tracing::warn!(
            graph_seq = seq.0,
            %digest,
            async_lane = %lane.err().unwrap_or_default(),
            damaged = %listed(&graph_damage),
            "the restored graph is not the backup's: rebuilding it from the log"
        );
        let rebuilt = rebuild(&store)?;
        let still: Vec<_> = read_back(
            &store.db,
            &graph_damage
                .iter()
                .map(|(name, _)| (name.clone(), 0))
                .collect(),
        )?
        .into_iter()
        .filter(|(_, why)| why.starts_with("cannot be read"))
        .collect();
        if !still.is_empty() {
            bail!(
                "the graph was rebuilt, but these keyspaces still cannot be read: {}",
                listed(&still)
            );
        }
        if rebuilt.state_digest != manifest.state_digest {
            if manifest.projector_set == Some(rebuilt.projector_set) {
                bail!(
                    "the graph rebuilt from the restored log with the backup's own projector \
                     set ({}) has state digest {}, the backup's is {}: the restore is refused \
                     (the log verified, so this is a projector that is not deterministic or a \
                     damaged store; keep the backup and report it)",
                    rebuilt.projector_set,
                    rebuilt.state_digest,
                    manifest.state_digest
                );
            }
            tracing::warn!(
                rebuilt = %rebuilt.state_digest,
                expected = %manifest.state_digest,
                projector_set = %rebuilt.projector_set,
                backup_projector_set = ?manifest.projector_set,
                "the graph was rebuilt with another projector set than the backup's, so its digest differs"
            );
        }
        // The rebuild applied the async lane up to the head: its combined
        // digest at the backup's async seq must be the backup's.
        if let (Some(s), Some(expected)) = (manifest.async_seq, manifest.combined_digest) {
            let got = store.graph.combined_digest_at(s)?;
            if got != Some(expected) {
                tracing::warn!(
                    async_seq = s.0,
                    rebuilt = ?got,
                    %expected,
                    "the rebuilt graph's combined digest differs from the backup's (another \
                     projector set?)"
                );
            }
        }
        "rebuilt"
    };
    let (_, state_digest) = store.graph.state()?;
    let lane = async_lane(&store.graph, &store.graph.view())?;
    // The key that signed the backed-up log may have signed beyond its head:
    // the restored log is signed by a new key from here on (tlog::signers).
    crate::tlog::signers::Signers::open(&store.db)?.mark_restored(
        &crate::tlog::signers::RestoredMark {
            tree_size: head.seq.0,
            signed_by: manifest
                .checkpoint
                .as_deref()
                .map(crate::tlog::signers::note_signers)
                .unwrap_or_default(),
            restored_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            from: "restore".into(),
        },
        None,
    )?;
    crate::storage::flush_memtables(&store.db)?;
    Ok(Restored {
        seq: head.seq,
        head_hash: head.hash,
        state_digest_matches: state_digest == manifest.state_digest,
        state_digest,
        async_seq: lane.map(|l| l.0),
        combined_digest: lane.and_then(|l| l.2),
        graph,
        data_dir: data_dir.to_path_buf(),
    })
}

/// Copies a directory tree (regular files and directories only), syncing
/// each file.
fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))? {
        let e = e?;
        let kind = e.file_type()?;
        let dst = to.join(e.file_name());
        if kind.is_dir() {
            copy_dir(&e.path(), &dst)?;
        } else if kind.is_file() {
            std::fs::copy(e.path(), &dst)
                .with_context(|| format!("cannot copy {}", e.path().display()))?;
            std::fs::File::open(&dst)?.sync_all()?;
        }
    }
    std::fs::File::open(to)?.sync_all()?;
    Ok(())
}
