//! Loading records into a new store (`leviathan import`), and the third-party
//! replay check of a signed checkpoint against an export
//! (`leviathan audit replay-check`). It owns the loader that writes records
//! straight into the log's keyspaces (records, indexes, head) in batches —
//! offline, into an empty store only — and leaves the Merkle tree and the
//! graph to be built from the log afterwards, as `leviathan rebuild` does.

use crate::digest::Sha256;
use crate::export::{self, Manifest};
use crate::log::record::EventDraft;
use crate::log::Head;
use crate::seq::Seq;
use crate::storage::Store;
use crate::tlog::audit::Report;
use crate::tlog::note::NoteVerifier;
use anyhow::{bail, Context};
use serde::Serialize;
use std::collections::HashSet;
use std::path::Path;

/// Records per committed batch.
const LOAD_BATCH: usize = 8192;

/// Appends records to an empty log in batches; each batch carries the head,
/// so a load cut short leaves a shorter, consistent log.
pub(crate) struct Loader<'a> {
    store: &'a Store,
    batch: fjall::OwnedWriteBatch,
    pending: usize,
    head: Head,
    /// The event ids of the batch not committed yet (the committed ones are
    /// looked up in the store: keeping every id of the log here cost ~30 MB
    /// a million events).
    ids: HashSet<Sha256>,
}

impl<'a> Loader<'a> {
    /// A loader over `store`, whose log must be empty.
    pub(crate) fn new(store: &'a Store) -> anyhow::Result<Loader<'a>> {
        let head = store.log.head()?;
        if head.seq != Seq::ZERO {
            bail!(
                "the store already holds {} events: import loads into an empty store only",
                head.seq
            );
        }
        Ok(Loader {
            store,
            batch: store.db.batch(),
            pending: 0,
            head,
            ids: HashSet::new(),
        })
    }

    /// Appends `draft` as the next record (its seq and prev_hash assigned
    /// here); returns the record's bytes and hash.
    pub(crate) fn append(&mut self, draft: &EventDraft) -> anyhow::Result<(Vec<u8>, Sha256)> {
        let seq = self.head.seq.next();
        let canonical = draft.encode(seq, self.head.hash.as_ref());
        let hash = Sha256::of(&canonical);
        self.stage(seq, &hash, &canonical, draft)?;
        Ok((canonical, hash))
    }

    /// Appends a record given whole (from an export): it must be the record
    /// `draft` encodes at the next seq after the head.
    pub(crate) fn append_record(
        &mut self,
        seq: Seq,
        hash: &Sha256,
        canonical: &[u8],
    ) -> anyhow::Result<()> {
        let draft = EventDraft::from_record(canonical)
            .map_err(|e| anyhow::anyhow!("the record at seq {seq} cannot be read: {e}"))?;
        if seq != self.head.seq.next() || draft.encode(seq, self.head.hash.as_ref()) != canonical {
            bail!(
                "the record at seq {seq} is not in the form this version of Leviathan writes \
                 (re-encoding its fields gives other bytes)"
            );
        }
        self.stage(seq, hash, canonical, &draft)
    }

    fn stage(
        &mut self,
        seq: Seq,
        hash: &Sha256,
        canonical: &[u8],
        draft: &EventDraft,
    ) -> anyhow::Result<()> {
        if !self.ids.insert(Sha256::of(draft.event_id.as_bytes()))
            || self.store.log.has_event_id(draft.event_id.as_str())?
        {
            bail!(
                "event_id {:?} appears twice (again at seq {seq}): a log holds each event_id once",
                draft.event_id.as_str()
            );
        }
        self.store
            .log
            .stage_event(&mut self.batch, seq, hash, canonical, draft);
        self.head = Head {
            seq,
            hash: Some(*hash),
        };
        self.pending += 1;
        if self.pending >= LOAD_BATCH {
            self.commit()?;
        }
        Ok(())
    }

    fn commit(&mut self) -> anyhow::Result<()> {
        let mut batch = std::mem::replace(&mut self.batch, self.store.db.batch());
        self.store.log.stage_head(&mut batch, &self.head);
        batch.commit().context("writing the log")?;
        self.pending = 0;
        self.ids.clear();
        Ok(())
    }

    /// Commits what is left, builds the Merkle tree from the records and
    /// returns the head and the tree's root.
    pub(crate) fn finish(mut self) -> anyhow::Result<(Head, Sha256)> {
        self.commit()?;
        let tree = crate::tlog::Tree::open(&self.store.db, &self.store.log)?;
        tree.catch_up(&self.store.db)?;
        let root = tree.root_at(&self.store.log.view(), self.head.seq.0)?;
        Ok((self.head, root))
    }
}

/// What `leviathan import` did.
#[derive(Debug, Clone, Serialize)]
pub struct Imported {
    pub data_dir: std::path::PathBuf,
    pub events: u64,
    pub head_seq: Seq,
    pub head_hash: Option<Sha256>,
    pub tree_size: u64,
    pub tree_root: Sha256,
    /// The tree root equals the export manifest's.
    pub tree_root_matches: bool,
    pub state_digest: Sha256,
    /// The export's state digest (absent when it had none).
    pub expected_state_digest: Option<Sha256>,
    /// True when the state digest (and, when the export has one, the
    /// combined digest) equals the export's.
    pub state_digest_matches: bool,
    /// A set with `async` projectors: the rebuilt graph's combined digest
    /// at the head, and the export's (absent when it had none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub combined_digest: Option<Sha256>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_combined_digest: Option<Sha256>,
    pub projector_set: Sha256,
    pub expected_projector_set: Option<Sha256>,
    pub artifacts: u64,
    pub bundles: u64,
    pub projection_errors: u64,
    /// What vouches for the export beyond its own consistency: `verified`
    /// (its checkpoint is signed by the `--public-key` given), `not_checked`
    /// (it has a checkpoint, no key was given) or `unsigned` (no checkpoint,
    /// no key): without a key, anyone could have written it.
    pub signature: &'static str,
}

/// The graph rebuilt with the configured projectors: (report, fingerprint).
pub type Rebuild<'a> = dyn FnOnce(&Store) -> anyhow::Result<crate::replay::RebuildReport> + 'a;

/// Imports the export in `from` into `data_dir` (new or empty): verifies the
/// whole export first (nothing is written if it does not verify), loads the
/// records, bundles and artifacts, builds the tree, and rebuilds the graph
/// with `rebuild`.
pub fn import(
    from: &Path,
    data_dir: &Path,
    key: Option<&NoteVerifier>,
    rebuild: Box<Rebuild<'_>>,
) -> anyhow::Result<Imported> {
    let manifest = export::read_manifest(from)?;
    let report = export::verify_export(from, key)?;
    if !report.ok {
        bail!(
            "the export does not verify, nothing was imported:\n{}",
            serde_json::to_string_pretty(&report)?
        );
    }
    let signature = match (key, &manifest.checkpoint) {
        // verify_export refused an export whose checkpoint the key does not sign.
        (Some(_), _) => "verified",
        (None, Some(_)) => "not_checked",
        (None, None) => "unsigned",
    };
    let mut done = crate::files::fill_new_dir(data_dir, "import", || {
        load_and_rebuild(from, data_dir, &manifest, rebuild)
    })?;
    done.signature = signature;
    Ok(done)
}

/// [`import`]'s writing part, into the new directory.
fn load_and_rebuild(
    from: &Path,
    data_dir: &Path,
    manifest: &Manifest,
    rebuild: Box<Rebuild<'_>>,
) -> anyhow::Result<Imported> {
    let store = crate::storage::open_store_filling(data_dir)?;
    let mut loader = Loader::new(&store)?;
    let bar = crate::progress::bar(manifest.head_seq.0, "importing");
    let walked = export::walk_log(from, None, &[], &bar, |seq, hash, record| {
        loader.append_record(seq, hash, record)
    })?;
    bar.finish_and_clear();
    if let Some(b) = walked.broken {
        bail!(
            "the export changed while it was imported: seq {}: {}",
            b.seq,
            b.error
        );
    }
    let (head, root) = loader.finish()?;
    // The source's signers may not sign this copy (tlog::signers): its
    // first start takes a new key.
    let mut signed_by: Vec<String> = manifest
        .checkpoint
        .as_deref()
        .map(crate::tlog::signers::note_signers)
        .unwrap_or_default();
    signed_by.extend(
        manifest
            .verifier_key
            .iter()
            .chain(manifest.signers.iter().map(|r| &r.verifier_key))
            .map(|k| crate::tlog::signers::key_name_id(k).to_string()),
    );
    signed_by.sort();
    signed_by.dedup();
    crate::tlog::signers::Signers::open(&store.db)?.mark_restored(
        &crate::tlog::signers::RestoredMark {
            tree_size: head.seq.0,
            signed_by,
            restored_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            from: "import".into(),
        },
        Some(&manifest.signers),
    )?;
    let bundles = load_bundles(from, &store)?;
    let artifacts = load_artifacts(from, &store)?;
    let rebuilt = rebuild(&store)?;
    crate::storage::flush_memtables(&store.db)?;
    Ok(imported(
        data_dir, manifest, head, root, &rebuilt, artifacts, bundles,
    ))
}

fn imported(
    data_dir: &Path,
    m: &Manifest,
    head: Head,
    root: Sha256,
    rebuilt: &crate::replay::RebuildReport,
    artifacts: u64,
    bundles: u64,
) -> Imported {
    Imported {
        data_dir: data_dir.to_path_buf(),
        events: head.seq.0,
        head_seq: head.seq,
        head_hash: head.hash,
        tree_size: head.seq.0,
        tree_root: root,
        tree_root_matches: root == m.tree_root,
        state_digest: rebuilt.state_digest,
        expected_state_digest: m.state_digest,
        state_digest_matches: (m.state_digest == Some(rebuilt.state_digest)
            || (m.state_digest.is_none() && head.seq == Seq::ZERO))
            && m.combined_digest
                .is_none_or(|c| rebuilt.combined_digest == Some(c)),
        combined_digest: rebuilt.combined_digest,
        expected_combined_digest: m.combined_digest,
        projector_set: rebuilt.fingerprint,
        expected_projector_set: m.projector_set,
        artifacts,
        bundles,
        projection_errors: rebuilt.projection_errors,
        signature: "not_checked",
    }
}

fn load_bundles(from: &Path, store: &Store) -> anyhow::Result<u64> {
    let Some(lines) = export::bundle_lines(from)? else {
        return Ok(0);
    };
    let mut batch = store.db.batch();
    let mut n = 0u64;
    for line in lines {
        let (id, record) = line.map_err(anyhow::Error::msg)?;
        store.log.stage_bundle(&mut batch, &id, &record);
        n += 1;
        if n.is_multiple_of(LOAD_BATCH as u64) {
            std::mem::replace(&mut batch, store.db.batch()).commit()?;
        }
    }
    batch.commit()?;
    Ok(n)
}

fn load_artifacts(from: &Path, store: &Store) -> anyhow::Result<u64> {
    let dir = from.join(export::ARTIFACTS);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(0);
    };
    let cas = crate::cas::Cas::open(&store.db, crate::storage::SyncMode::Always, u64::MAX)?;
    let mut n = 0;
    for e in entries {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let sha: Sha256 = name
            .parse()
            .map_err(|_| anyhow::anyhow!("artifacts/{name} is not named by a SHA-256"))?;
        let mut upload = cas.begin()?;
        let mut f = std::fs::File::open(e.path())?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let k = std::io::Read::read(&mut f, &mut buf)?;
            if k == 0 {
                break;
            }
            upload.write(&buf[..k])?;
        }
        upload
            .finish(Some(sha))
            .with_context(|| format!("artifacts/{name}"))?;
        n += 1;
    }
    Ok(n)
}

/// A directory removed when dropped (the replay check's scratch store).
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!("cannot remove the scratch store {}: {e}", self.0.display());
        }
    }
}

/// `leviathan audit replay-check`: checks a signed checkpoint's state digest
/// by replaying an export up to the checkpoint's tree size with a pinned
/// projector set in a scratch store. `rebuild` loads the projectors and
/// rebuilds the scratch store's graph.
pub fn replay_check(
    checkpoint: &str,
    key: &NoteVerifier,
    from: &Path,
    scratch_parent: Option<&Path>,
    rebuild: Box<Rebuild<'_>>,
) -> anyhow::Result<Report> {
    let mut r = Report::default();
    let c = match crate::tlog::audit::open_checkpoint(checkpoint, key) {
        Ok(c) => {
            r.push(
                "checkpoint_signature",
                Ok(format!(
                    "signed by {}; tree size {}, root {}",
                    key.name(),
                    c.tree_size,
                    c.root
                )),
            );
            c
        }
        Err(e) => {
            r.push("checkpoint_signature", Err(e));
            return Ok(r.done());
        }
    };
    let parent = scratch_parent.map_or_else(std::env::temp_dir, Path::to_path_buf);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let scratch = Scratch(parent.join(format!(
        "leviathan-replay-check-{}-{nanos}",
        std::process::id()
    )));
    crate::files::new_dir(&scratch.0, "a scratch store")?;
    let store = crate::storage::open_store(&scratch.0)?;
    let mut loader = Loader::new(&store)?;
    let bar = crate::progress::bar(c.tree_size, "replaying");
    let walked = export::walk_log(
        from,
        Some(c.tree_size),
        &[c.tree_size],
        &bar,
        |seq, hash, record| loader.append_record(seq, hash, record),
    )?;
    bar.finish_and_clear();
    let chain = match &walked.broken {
        Some(b) => Err(format!("seq {} (line {}): {}", b.seq, b.line, b.error)),
        None if walked.events < c.tree_size => Err(format!(
            "the export holds {} events, the checkpoint covers {}",
            walked.events, c.tree_size
        )),
        None => Ok(format!(
            "the export's first {} events verify (hashes and links)",
            c.tree_size
        )),
    };
    if !r.push("export_chain", chain) {
        return Ok(r.done());
    }
    let (root, head) = walked
        .at
        .get(&c.tree_size)
        .copied()
        .unwrap_or((walked.root, walked.head_hash));
    r.push(
        "tree_root",
        if root == c.root {
            Ok(format!(
                "the replayed records' tree has the checkpoint's root {root}"
            ))
        } else {
            Err(format!(
                "the replayed records' tree has root {root}, the checkpoint says {}",
                c.root
            ))
        },
    );
    r.push(
        "chain_head",
        if head == c.chain_head {
            Ok(format!(
                "the hash at seq {} is the checkpoint's chain head",
                c.tree_size
            ))
        } else {
            Err(format!(
                "the hash at seq {} is {}, the checkpoint says {}",
                c.tree_size,
                head.map_or("null".into(), |h| h.to_hex()),
                c.chain_head.map_or("null".into(), |h| h.to_hex())
            ))
        },
    );
    loader.finish()?;
    let rebuilt = rebuild(&store)?;
    r.push(
        "projector_set",
        if rebuilt.fingerprint == c.projector_set {
            Ok(format!(
                "the pinned projector set is the one the checkpoint names ({})",
                c.projector_set
            ))
        } else {
            Err(format!(
                "the projectors given have fingerprint {}, the checkpoint names {}: replay with \
                 that set",
                rebuilt.fingerprint, c.projector_set
            ))
        },
    );
    r.push(
        "state_digest",
        if rebuilt.state_digest == c.state_digest {
            Ok(format!(
                "replaying {} events gives the state digest the checkpoint signed ({})",
                c.tree_size, c.state_digest
            ))
        } else {
            Err(format!(
                "replaying {} events gives state digest {}, the checkpoint signed {}",
                c.tree_size, rebuilt.state_digest, c.state_digest
            ))
        },
    );
    // The async projectors' part: the replay above applied them too
    // (`rebuild` runs the async lane after the inline one).
    match (c.combined_state_digest, rebuilt.combined_digest) {
        (Some(signed), replayed) => {
            r.push(
                "combined_state_digest",
                match replayed {
                    Some(d) if d == signed => Ok(format!(
                        "replaying {} events with the async projectors too gives the combined \
                         state digest the checkpoint signed ({signed})",
                        c.tree_size
                    )),
                    Some(d) => Err(format!(
                        "replaying {} events gives combined state digest {d}, the checkpoint's \
                         combined-state-digest line says {signed}",
                        c.tree_size
                    )),
                    None => Err(format!(
                        "the checkpoint signs a combined-state-digest ({signed}), but the \
                         projectors given have no async projectors: replay with the set it names"
                    )),
                },
            );
        }
        (None, Some(_)) => {
            r.push(
                "combined_state_digest",
                Ok(
                    "not signed: the checkpoint has no combined-state-digest line (its async \
                    lane had not applied this tree size when it was signed), so only the inline \
                    projectors' part of the graph is proved; check a checkpoint of this size \
                    fetched later (GET /v1/log/checkpoint?tree_size=N)"
                        .into(),
                ),
            );
        }
        (None, None) => {}
    }
    drop(store);
    drop(scratch);
    Ok(r.done())
}

/// The rebuild the commands run: the configured projectors (`--projectors`
/// or `--projectors-file`), compiled into `--projector-cache` (default:
/// `default_cache`), replayed over the store's whole log.
pub fn rebuild_with(
    projection: crate::config::ProjectionArgs,
    default_cache: std::path::PathBuf,
) -> Box<Rebuild<'static>> {
    Box::new(move |store: &Store| {
        let specs = crate::projector_specs::configured(
            projection.projectors.as_deref(),
            projection.projectors_file.as_deref(),
        )?
        .specs;
        let cache = projection.projector_cache.clone().unwrap_or(default_cache);
        let p =
            crate::server::load_projection_capped(&cache, &specs, projection.max_projector_bytes)?;
        let report =
            crate::replay::rebuild(&store.db, &store.log, &store.graph, &p.set, p.fingerprint)?;
        // As `leviathan rebuild` does: the rebuilt generation's set is recorded.
        crate::generations::Catalog::open(&store.db)?.record_rebuilt(
            store.graph.generation(),
            &p.set,
            p.fingerprint,
            &p.sources,
        )?;
        Ok(report)
    })
}

// ------------------------------------------------------------------ the CLI

/// `leviathan import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The export directory (not with --legacy).
    #[arg(required_unless_present = "legacy", conflicts_with = "legacy")]
    pub from: Option<std::path::PathBuf>,
    /// The original control plane's journal (events.ndjson).
    #[arg(long, value_name = "FILE")]
    pub legacy: Option<std::path::PathBuf>,
    /// The new (or empty) data directory.
    #[arg(long, env = "LEVIATHAN_DATA_DIR")]
    pub data_dir: std::path::PathBuf,
    #[command(flatten)]
    pub projection: crate::config::ProjectionArgs,
    /// With an export: the log's verifier key, to check its checkpoint with.
    #[arg(long, conflicts_with = "legacy")]
    pub public_key: Option<String>,
    /// With an export: a state digest other than the export's is expected
    /// (another projector set): exit 0 anyway.
    #[arg(long)]
    pub expect_change: bool,
    /// With --legacy: the target of events whose payload has no valid `target_id`.
    #[arg(long, default_value = "legacy", requires = "legacy")]
    pub target: String,
    /// With --legacy: import even when some links do not verify (each such
    /// record says why in its `legacy.unverified`).
    #[arg(long, requires = "legacy")]
    pub accept_unverified: bool,
}

/// Runs `leviathan import`: prints what was imported (or, for a legacy
/// journal, the summary); exit 1 when something does not match or nothing
/// was imported.
pub fn run(args: ImportArgs) -> anyhow::Result<std::process::ExitCode> {
    use std::process::ExitCode;
    let data_dir = std::path::absolute(&args.data_dir).context("making --data-dir absolute")?;
    let rebuild = rebuild_with(
        args.projection,
        crate::config::default_projector_cache(&data_dir),
    );
    if let Some(journal) = &args.legacy {
        let s = crate::legacy::import_legacy(
            journal,
            &data_dir,
            &args.target,
            args.accept_unverified,
            rebuild,
        )?;
        export::print_json(&s)?;
        if !s.imported {
            eprintln!(
                "error: nothing was imported: {} line(s) cannot be stored, {} link(s) do not \
                 verify{}",
                s.refused,
                s.unverified,
                if s.refused == 0 {
                    " (see `findings`; --accept-unverified imports them, each saying why)"
                } else {
                    " (see `findings`)"
                }
            );
            return Ok(ExitCode::FAILURE);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let from = args
        .from
        .as_deref()
        .context("give the export directory, or --legacy FILE")?;
    let key = args
        .public_key
        .as_deref()
        .map(crate::tlog::cli::verifier)
        .transpose()?;
    let done = import(from, &data_dir, key.as_ref(), rebuild)?;
    export::print_json(&done)?;
    if done.signature != "verified" {
        tracing::warn!(
            signature = done.signature,
            "no --public-key: the export was checked for its own consistency only (chain, tree, \
             artifacts, digests), not that the log's key signed it; anyone could have written \
             it. Give the log's verifier key to check its checkpoint"
        );
    }
    if !done.tree_root_matches {
        tracing::error!("the imported log's tree root is not the export's");
        return Ok(ExitCode::FAILURE);
    }
    if !done.state_digest_matches && !args.expect_change {
        tracing::warn!(
            "the rebuilt graph's state digest (or combined digest) is not the export's \
             (another projector set? --expect-change accepts it)"
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::Limits;
    use serde_json::json;

    fn drafts(ids: &[String]) -> Vec<EventDraft> {
        let evs: Vec<_> = ids
            .iter()
            .map(|id| {
                json!({"event_id": id, "event_type": "custom.note",
                       "timestamp": "2026-01-24T10:00:00Z", "payload": {}})
            })
            .collect();
        let body = serde_json::to_vec(&json!({"target": "t", "bundle_id": "b", "events": evs}))
            .expect("json");
        let limits = Limits {
            max_bundle_events: usize::MAX,
            ..Limits::default()
        };
        crate::bundle::parse(&body, &limits)
            .expect("valid bundle")
            .events
    }

    /// An event id seen again is refused whether its first record is in the
    /// batch being loaded or in one committed before.
    #[test]
    fn an_event_id_loaded_twice_is_refused_within_and_across_batches() {
        let ids: Vec<String> = (0..LOAD_BATCH + 10).map(|i| format!("e{i}")).collect();
        for (again, at) in [("e5", 7), ("e5", LOAD_BATCH + 3), ("e8200", LOAD_BATCH + 9)] {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = crate::storage::open_store(dir.path()).expect("store");
            let mut loader = Loader::new(&store).expect("loader");
            let mut ids = ids.clone();
            ids.insert(at, again.to_string());
            let mut refused = None;
            for (i, d) in drafts(&ids).iter().enumerate() {
                if let Err(e) = loader.append(d) {
                    refused = Some((i, e.to_string()));
                    break;
                }
            }
            let (i, e) = refused.expect("the second record of the id is refused");
            let first = ids.iter().position(|id| id == again).expect("there");
            assert_eq!(i, at.max(first + 1), "{again} again at {at}: {e}");
            assert!(e.contains("appears twice"), "{e}");
        }
    }
}
