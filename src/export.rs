//! Export of a stopped store to plain files an auditor can read with standard
//! tools, and the offline check of such an export (`leviathan export`,
//! `leviathan verify --export`). It owns the export format (docs/AUDIT.md):
//!
//! - `log.ndjson`: one line per event, in seq order:
//!   `{"seq":N,"prev_hash":…,"hash":…,"record":"<the stored canonical record>"}`;
//!   `record` is the exact byte string the chain hashes, as a JSON string, so
//!   `jq -j .record | sha256sum` gives `hash`;
//! - `artifacts/<sha256 hex>`: every artifact blob, named by its digest;
//! - `bundles.ndjson`: the idempotency records of the bundles (not hashed);
//! - `manifest.json` (written last): the head, the Merkle tree's size and
//!   root, the graph's state digest and projector set, the latest signed
//!   checkpoint and its verifier key.
//!
//! It reads a store only when no server holds it (the store's lock), and
//! writes only into a new or empty directory.

use crate::digest::Sha256;
use crate::log::record::chain_fields;
use crate::seq::Seq;
use crate::tlog::audit::Report;
use crate::tlog::note::NoteVerifier;
use crate::tlog::proof;
use crate::tlog::tree::Frontier;
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;

/// The format name in `manifest.json`.
pub const FORMAT: &str = "leviathan-export/v1";
pub const MANIFEST: &str = "manifest.json";
pub const LOG: &str = "log.ndjson";
pub const BUNDLES: &str = "bundles.ndjson";
pub const ARTIFACTS: &str = "artifacts";
/// Lines parsed and hashed per parallel chunk.
const CHUNK_LINES: usize = 4096;

/// `manifest.json` of an export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    /// The log's head: the export holds seqs 1..=head_seq.
    pub head_seq: Seq,
    pub head_hash: Option<Sha256>,
    /// RFC 9162 tree over the records (its size is `head_seq`).
    pub tree_size: u64,
    pub tree_root: Sha256,
    /// The graph's rolling state digest after `head_seq`, and the projector
    /// set that built it (absent for a store without a graph).
    pub state_digest: Option<Sha256>,
    pub projector_set: Option<Sha256>,
    /// A set with `async` projectors whose lane had applied `head_seq`: the
    /// combined digest after `head_seq` (`SHA-256(state ‖ async digest)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub combined_digest: Option<Sha256>,
    /// The signed checkpoint of the whole tree (absent when the store has
    /// no signing key), and the verifier key of its signer: check it
    /// against a key obtained out of band, not against this file.
    pub checkpoint: Option<String>,
    pub verifier_key: Option<String>,
    /// The keys that have signed the log's checkpoints and from which tree
    /// size (`GET /v1/log/signers`); an import keeps them, and refuses them
    /// as the imported store's signer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signers: Vec<crate::tlog::signers::SignerRecord>,
    pub artifacts: u64,
    pub artifact_bytes: u64,
    pub bundles: u64,
    /// When the export was made (RFC 3339, UTC).
    pub created_at: String,
    pub leviathan_version: String,
}

/// One line of `log.ndjson`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogLine {
    pub seq: Seq,
    pub prev_hash: Option<Sha256>,
    pub hash: Sha256,
    pub record: String,
}

/// One line of `bundles.ndjson`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundleLine {
    pub bundle_id: String,
    #[serde(flatten)]
    pub record: crate::log::BundleRecord,
}

/// Each line of `bundles.ndjson` in `dir` as a valid bundle id and its
/// record, or why line N is not one; `None` when the file is absent. What
/// `verify --export` checks and `import` loads.
pub(crate) fn bundle_lines(
    dir: &Path,
) -> std::io::Result<
    Option<impl Iterator<Item = Result<(crate::ids::BundleId, crate::log::BundleRecord), String>>>,
> {
    use std::io::BufRead;
    let file = match std::fs::File::open(dir.join(BUNDLES)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(Some(std::io::BufReader::new(file).lines().enumerate().map(
        |(i, line)| {
            let at = |why: String| format!("{BUNDLES} line {}: {why}", i + 1);
            let line = line.map_err(|e| at(e.to_string()))?;
            let b: BundleLine =
                serde_json::from_str(&line).map_err(|e| at(format!("not a bundle line ({e})")))?;
            let id = crate::ids::BundleId::new(b.bundle_id).map_err(|e| at(e.0))?;
            Ok((id, b.record))
        },
    )))
}

/// Opens the store of a stopped server. A store a running server holds is
/// refused with what to do instead.
pub fn open_stopped(data_dir: &Path) -> anyhow::Result<crate::storage::Store> {
    crate::storage::require_store(data_dir)?;
    match crate::storage::open_database(&data_dir.join("store")) {
        Err(fjall::Error::Locked) => bail!(
            "the store in {} is in use by a running server (its lock is held); this command \
             reads a stopped store. Stop the server, or back it up online and export the backup: \
             `leviathan backup --to DIR`, then `leviathan export --data-dir DIR --to OUT \
             --signing-key-file <the server's signing key file>` (a backup directory is a data \
             directory without the key)",
            data_dir.display()
        ),
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context(format!("cannot open the store in {}", data_dir.display())))
        }
        Ok(db) => drop(db),
    }
    crate::storage::open_store(data_dir)
}

/// Exports the stopped store of `data_dir` into `to` (new or empty). The
/// chain is checked while it is written: a broken log is not exported.
///
/// `remote`: the shared artifact store of a node in postgres mode; the
/// artifacts it holds that the local store lacks are fetched into the local
/// store first (each checked against its digest, as [`crate::cas::Cas::find`]
/// does), so that an export taken on any node holds every artifact.
pub fn export(
    data_dir: &Path,
    signing_key: Option<&Path>,
    to: &Path,
    remote: Option<std::sync::Arc<dyn crate::cas::Remote>>,
) -> anyhow::Result<Manifest> {
    let store = open_stopped(data_dir)?;
    // A failed export leaves nothing behind: a retry into the same
    // directory works (it used to be refused as not empty).
    crate::files::fill_new_dir(to, "an export", || {
        export_into(&store, data_dir, signing_key, to, remote)
    })
}

fn export_into(
    store: &crate::storage::Store,
    data_dir: &Path,
    signing_key: Option<&Path>,
    to: &Path,
    remote: Option<std::sync::Arc<dyn crate::cas::Remote>>,
) -> anyhow::Result<Manifest> {
    let created_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let tree = crate::tlog::Tree::open(&store.db, &store.log)?;
    tree.catch_up(&store.db)?;
    let view = store.log.view();
    let head = store.log.head_at(&view)?;

    // The log, checked as it is written.
    let bar = crate::progress::bar(head.seq.0, "exporting");
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(to.join(LOG)).context("cannot create log.ndjson")?,
    );
    let mut frontier = Frontier::default();
    let mut prev: Option<Sha256> = None;
    let mut after = Seq::ZERO;
    loop {
        let chunk = store.log.stored_range_at(&view, after.next(), 8192)?;
        if chunk.is_empty() {
            break;
        }
        for (seq, value) in chunk {
            let (hash, canonical) = crate::log::record::split_stored(&value)
                .with_context(|| format!("seq {seq} is truncated: run `leviathan verify`"))?;
            if seq != after.next() || Sha256::of(canonical) != hash {
                bail!(
                    "the log does not verify at seq {}: run `leviathan verify`",
                    after.next()
                );
            }
            match chain_fields(canonical) {
                Some((p, s)) if s == seq && p == prev => {}
                _ => bail!("the chain is broken at seq {seq}: run `leviathan verify`"),
            }
            let record = std::str::from_utf8(canonical)
                .with_context(|| format!("the record at seq {seq} is not UTF-8"))?;
            serde_json::to_writer(
                &mut out,
                &LogLine {
                    seq,
                    prev_hash: prev,
                    hash,
                    record: record.to_string(),
                },
            )?;
            out.write_all(b"\n")?;
            frontier.append(proof::leaf_hash(canonical), |_, _, _| {});
            prev = Some(hash);
            after = seq;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    if after != head.seq || prev != head.hash {
        bail!(
            "the log ends at seq {after} but its head record says seq {}: run `leviathan verify`",
            head.seq
        );
    }
    out.into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()
        .context("writing log.ndjson")?;
    let stored_root = tree.root_at(&view, head.seq.0)?;
    if stored_root != frontier.root() {
        bail!(
            "the stored Merkle tree's root {stored_root} is not the root of the records {}",
            frontier.root()
        );
    }

    // Bundles.
    let mut bundles = 0u64;
    let mut out = std::io::BufWriter::new(std::fs::File::create(to.join(BUNDLES))?);
    store.log.for_each_bundle_at(&view, |id, record| {
        serde_json::to_writer(
            &mut out,
            &BundleLine {
                bundle_id: id.to_string(),
                record,
            },
        )?;
        out.write_all(b"\n")?;
        bundles += 1;
        Ok(())
    })?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;

    // Artifacts, each checked against its digest as it is copied.
    let dir = to.join(ARTIFACTS);
    std::fs::create_dir_all(&dir)?;
    let mut cas = crate::cas::Cas::open(&store.db, crate::storage::SyncMode::Always, u64::MAX)?;
    if let Some(remote) = remote {
        // What the node's store lacks is fetched into it first (each checked
        // against its digest, as a backup or a read does), then exported.
        cas = cas.with_remote(remote);
        let fetched = cas
            .fetch_missing()
            .context("fetching the artifacts this node lacks from the shared store")?;
        tracing::info!(
            fetched,
            "fetched the shared store's artifacts this node lacked"
        );
    }
    let (mut artifacts, mut artifact_bytes) = (0u64, 0u64);
    for sha in cas.digests()? {
        let meta = cas
            .meta(&sha)?
            .with_context(|| format!("artifact {sha} vanished"))?;
        let path = dir.join(sha.to_hex());
        let mut f = std::fs::File::create(&path)?;
        let mut h = sha2::Sha256::new();
        for i in 0..crate::cas::Cas::chunk_count(&meta) {
            let chunk = cas
                .chunk(&meta, i)?
                .with_context(|| format!("artifact {sha} lacks chunk {i}"))?;
            sha2::Digest::update(&mut h, &chunk);
            f.write_all(&chunk)?;
        }
        let actual = Sha256(sha2::Digest::finalize(h).into());
        if actual != sha {
            bail!("the stored artifact {sha} hashes to {actual}: the artifact store is corrupt");
        }
        f.sync_all()?;
        artifacts += 1;
        artifact_bytes += meta.size;
    }

    // The graph's state and the checkpoint.
    let (graph_seq, digest) = store.graph.state_at(&view)?;
    // A graph an interrupted rebuild left partial has no digest to vouch for.
    let complete = store.graph.rebuild_started()?.is_none();
    let state_digest = (complete && graph_seq == head.seq && head.seq.0 > 0).then_some(digest);
    let projector_set = store.graph.projector_set()?;
    // The combined digest at the head, when the async lane had applied it.
    let combined_digest = match (state_digest, store.graph.async_state_at(&view)?.0) {
        (Some(_), applied) if applied == head.seq => store.graph.combined_digest_at(head.seq)?,
        _ => None,
    };
    let key_path = crate::tlog::key_path(signing_key, data_dir);
    let (checkpoint, verifier_key) = match (std::fs::read_to_string(&key_path), projector_set) {
        (Ok(text), Some(fingerprint)) if state_digest.is_some() || head.seq.0 == 0 => {
            let signer = crate::tlog::note::NoteSigner::from_text(&text).with_context(|| {
                format!("the signing key file {} is not usable", key_path.display())
            })?;
            let verifier_key = signer.verifier_key();
            crate::tlog::signers::check_offline(&store.db, &verifier_key)
                .context("the export's checkpoint cannot be signed")?;
            let t = crate::tlog::Transparency {
                tree,
                log: store.log.clone(),
                graph: crate::tlog::GraphSource::Fixed {
                    graph: store.graph.clone(),
                    fingerprint,
                },
                signer: std::sync::Arc::new(signer),
            };
            (Some(t.checkpoint_at(&view, None)?), Some(verifier_key))
        }
        (Err(e), _) => {
            tracing::warn!(
                "no checkpoint in the export: cannot read the signing key {}: {e}",
                key_path.display()
            );
            (None, None)
        }
        _ => {
            tracing::warn!("no checkpoint in the export: the graph is not at the log's head");
            (None, None)
        }
    };
    let manifest = Manifest {
        format: FORMAT.into(),
        head_seq: head.seq,
        head_hash: head.hash,
        tree_size: head.seq.0,
        tree_root: frontier.root(),
        state_digest,
        projector_set,
        combined_digest,
        checkpoint,
        verifier_key,
        signers: crate::tlog::signers::Signers::open(&store.db)?.history()?,
        artifacts,
        artifact_bytes,
        bundles,
        created_at,
        leviathan_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    crate::files::write_synced(&to.join(MANIFEST), &serde_json::to_vec_pretty(&manifest)?)?;
    Ok(manifest)
}

use sha2::Digest as _;

/// Reads an export's manifest.
pub fn read_manifest(dir: &Path) -> anyhow::Result<Manifest> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read(&path).with_context(|| {
        format!(
            "cannot read {}: not a finished export (the manifest is written last)",
            path.display()
        )
    })?;
    let m: Manifest = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not an export manifest", path.display()))?;
    if m.format != FORMAT {
        bail!(
            "{} has format {:?}, this leviathan reads {FORMAT:?}",
            path.display(),
            m.format
        );
    }
    Ok(m)
}

/// Where the walk of `log.ndjson` found the chain broken.
#[derive(Debug, Clone, Serialize)]
pub struct Broken {
    pub seq: Seq,
    /// Line of `log.ndjson` (from 1).
    pub line: u64,
    pub error: String,
}

/// What a walk of `log.ndjson` saw.
#[derive(Debug, Clone)]
pub struct Walked {
    /// Events that verified (all of them when `broken` is `None`).
    pub events: u64,
    pub head_hash: Option<Sha256>,
    pub root: Sha256,
    /// The roots and head hashes at the sizes asked for, once reached.
    pub at: BTreeMap<u64, (Sha256, Option<Sha256>)>,
    pub broken: Option<Broken>,
}

/// One line, parsed and hashed (independently of the others: in parallel).
struct Parsed {
    line: Result<LogLine, String>,
    actual: Sha256,
    leaf: Sha256,
    chain: Option<(Option<Sha256>, Seq)>,
}

fn parse_line(text: &str) -> Parsed {
    match serde_json::from_str::<LogLine>(text) {
        Ok(l) => {
            let bytes = l.record.as_bytes();
            Parsed {
                actual: Sha256::of(bytes),
                leaf: proof::leaf_hash(bytes),
                chain: chain_fields(bytes),
                line: Ok(l),
            }
        }
        Err(e) => Parsed {
            line: Err(e.to_string()),
            actual: Sha256::default(),
            leaf: Sha256::default(),
            chain: None,
        },
    }
}

/// Walks `log.ndjson` of an export from seq 1, checking every line: its seq
/// follows the one before, its record hashes to its `hash`, the record's own
/// `seq` and `prev_hash` are the line's, and `prev_hash` is the previous
/// event's hash. Stops at the first broken line, or after `stop_at` events.
/// `each` gets every verified event (seq, hash, record bytes) in order.
pub fn walk_log(
    dir: &Path,
    stop_at: Option<u64>,
    sizes: &[u64],
    bar: &indicatif::ProgressBar,
    mut each: impl FnMut(Seq, &Sha256, &[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<Walked> {
    let path = dir.join(LOG);
    let file =
        std::fs::File::open(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut w = Walked {
        events: 0,
        head_hash: None,
        root: proof::EMPTY_ROOT,
        at: BTreeMap::new(),
        broken: None,
    };
    let mut frontier = Frontier::default();
    if sizes.contains(&0) {
        w.at.insert(0, (proof::EMPTY_ROOT, None));
    }
    let mut line_no = 0u64;
    'chunks: loop {
        let mut lines = Vec::with_capacity(CHUNK_LINES);
        for _ in 0..CHUNK_LINES {
            if stop_at.is_some_and(|n| w.events + lines.len() as u64 >= n) {
                break;
            }
            let mut s = String::new();
            if reader.read_line(&mut s)? == 0 {
                break;
            }
            lines.push(s);
        }
        if lines.is_empty() {
            break;
        }
        let parsed: Vec<Parsed> = {
            use rayon::prelude::*;
            lines
                .par_iter()
                .map(|s| parse_line(s.trim_end_matches('\n')))
                .collect()
        };
        for p in parsed {
            line_no += 1;
            let expected = Seq(w.events + 1);
            if let Err(msg) = check_line(&p, expected, w.head_hash) {
                w.broken = Some(Broken {
                    seq: expected,
                    line: line_no,
                    error: msg,
                });
                break 'chunks;
            }
            let l = p.line.as_ref().expect("checked");
            each(l.seq, &l.hash, l.record.as_bytes())?;
            frontier.append(p.leaf, |_, _, _| {});
            w.events += 1;
            w.head_hash = Some(l.hash);
            if sizes.contains(&w.events) {
                w.at.insert(w.events, (frontier.root(), w.head_hash));
            }
            bar.inc(1);
        }
    }
    w.root = frontier.root();
    Ok(w)
}

fn hex_or_null(h: Option<Sha256>) -> String {
    h.map_or("null".into(), |h| h.to_hex())
}

/// The checks of one line, given the seq it must have and the previous hash.
fn check_line(p: &Parsed, expected: Seq, prev: Option<Sha256>) -> Result<(), String> {
    let l = p
        .line
        .as_ref()
        .map_err(|e| format!("the line is not a log line ({e})"))?;
    if l.seq != expected {
        return Err(format!(
            "seq {expected} is missing (the line holds seq {})",
            l.seq
        ));
    }
    if p.actual != l.hash {
        return Err(format!(
            "hash mismatch: the line says {}, the record hashes to {}",
            l.hash, p.actual
        ));
    }
    let Some((rec_prev, rec_seq)) = p.chain else {
        return Err("the record is not in canonical form".into());
    };
    if rec_seq != l.seq {
        return Err(format!(
            "the record says seq {rec_seq} but is on the line of seq {}",
            l.seq
        ));
    }
    if rec_prev != l.prev_hash {
        return Err(format!(
            "the line's prev_hash {} is not the record's {}",
            hex_or_null(l.prev_hash),
            hex_or_null(rec_prev)
        ));
    }
    if rec_prev != prev {
        return Err(format!(
            "chain broken: prev_hash is {} but the previous event's hash is {}",
            hex_or_null(rec_prev),
            prev.map_or("null (genesis)".into(), |h| h.to_hex())
        ));
    }
    Ok(())
}

/// The outcome of `leviathan verify --export`.
#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    pub ok: bool,
    pub verified_events: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_broken_seq: Option<Seq>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub checks: Vec<crate::tlog::audit::Check>,
    /// Artifacts the records name (payload `sha256`/`*_sha256` fields) that
    /// the export does not hold. Not a failure: the server accepts events
    /// before their artifacts.
    pub referenced_artifacts_absent: Vec<Sha256>,
}

/// Verifies an export without a store: every line of the log (links, hashes,
/// seqs), the head and tree in the manifest against the recomputed ones, the
/// checkpoint (signature with `key`, else with the manifest's own key, which
/// only shows the export is self-consistent; root, size and chain head
/// against the recomputed tree), and every artifact file against its name.
pub fn verify_export(dir: &Path, key: Option<&NoteVerifier>) -> anyhow::Result<ExportReport> {
    let m = read_manifest(dir)?;
    let mut r = Report::default();
    let opened = match (&m.checkpoint, key) {
        (None, None) => {
            r.push(
                "checkpoint_signature",
                Ok("the export has no checkpoint (the store had no signing key)".into()),
            );
            None
        }
        // A key was given to check the export against, and nothing in it is
        // signed: removing the checkpoint must not be an easier forgery than
        // replacing it.
        (None, Some(k)) => {
            r.push(
                "checkpoint_signature",
                Err(format!(
                    "the export has no checkpoint, so nothing in it is signed by {}: an export \
                     of a store with a signing key always has one (without --public-key this \
                     only shows the export is self-consistent)",
                    k.name()
                )),
            );
            None
        }
        (Some(note), key) => {
            let given = key.is_some();
            let own;
            let key = match key {
                Some(k) => Ok(k),
                None => match m.verifier_key.as_deref().map(NoteVerifier::from_text) {
                    Some(Ok(k)) => {
                        own = k;
                        Ok(&own)
                    }
                    _ => Err("no verifier key: give --public-key".to_string()),
                },
            };
            match key.and_then(|k| crate::tlog::audit::open_checkpoint(note, k).map(|c| (c, k))) {
                Ok((c, k)) => {
                    r.push(
                        "checkpoint_signature",
                        Ok(format!(
                            "signed by {}{}; tree size {}",
                            k.name(),
                            if given {
                                ""
                            } else {
                                " (with the manifest's own key: give --public-key, obtained out \
                                 of band, to check that it is the log's)"
                            },
                            c.tree_size
                        )),
                    );
                    Some(c)
                }
                Err(e) => {
                    r.push("checkpoint_signature", Err(e));
                    None
                }
            }
        }
    };
    let mut sizes = vec![m.tree_size];
    if let Some(c) = &opened {
        sizes.push(c.tree_size);
    }
    let bar = crate::progress::bar(m.head_seq.0, "verifying");
    let mut referenced = std::collections::BTreeSet::new();
    let walked = walk_log(dir, None, &sizes, &bar, |_, _, record| {
        if let Ok(text) = std::str::from_utf8(record) {
            for (_, sha) in crate::tlog::audit::artifact_digests(text) {
                referenced.insert(sha);
            }
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    r.push(
        "chain",
        match &walked.broken {
            None => Ok(format!(
                "{} events: every seq, hash and prev_hash link verifies",
                walked.events
            )),
            Some(b) => Err(format!("seq {} (line {}): {}", b.seq, b.line, b.error)),
        },
    );
    if walked.broken.is_none() {
        r.push(
            "head",
            if walked.events == m.head_seq.0 && walked.head_hash == m.head_hash {
                Ok(format!(
                    "seq {} hash {}",
                    m.head_seq,
                    hex_or_null(m.head_hash)
                ))
            } else {
                Err(format!(
                    "the log ends at seq {} hash {}, the manifest says seq {} hash {}",
                    walked.events,
                    hex_or_null(walked.head_hash),
                    m.head_seq,
                    hex_or_null(m.head_hash)
                ))
            },
        );
        r.push(
            "tree_root",
            match walked.at.get(&m.tree_size) {
                Some((root, _)) if *root == m.tree_root => {
                    Ok(format!("size {}, root {root}", m.tree_size))
                }
                Some((root, _)) => Err(format!(
                    "the records' tree of size {} has root {root}, the manifest says {}",
                    m.tree_size, m.tree_root
                )),
                None => Err(format!(
                    "the manifest's tree size {} is beyond the log's {} events",
                    m.tree_size, walked.events
                )),
            },
        );
        if let Some(c) = &opened {
            r.push(
                "checkpoint_tree",
                match walked.at.get(&c.tree_size) {
                    Some((root, head)) if *root == c.root && *head == c.chain_head => Ok(format!(
                        "the recomputed tree of size {} has the checkpoint's root and chain head",
                        c.tree_size
                    )),
                    Some((root, head)) => Err(format!(
                        "the records' tree of size {} has root {root} and head {}, the checkpoint \
                         says root {} and head {}",
                        c.tree_size,
                        hex_or_null(*head),
                        c.root,
                        hex_or_null(c.chain_head)
                    )),
                    None => Err(format!(
                        "the checkpoint's tree size {} is beyond the log's {} events",
                        c.tree_size, walked.events
                    )),
                },
            );
            if c.tree_size < m.head_seq.0 {
                // An export's checkpoint signs its whole tree; an older one
                // (genuine or not) leaves the records after it unsigned.
                r.push(
                    "checkpoint_state",
                    Err(format!(
                        "the checkpoint signs a tree of {} records, the export holds {}: \
                         records {}..={} are covered by no signature (an export's checkpoint \
                         is of its whole log)",
                        c.tree_size,
                        m.head_seq,
                        c.tree_size + 1,
                        m.head_seq
                    )),
                );
            } else if c.tree_size == m.head_seq.0 {
                r.push(
                    "checkpoint_state",
                    if Some(c.state_digest) == m.state_digest
                        && Some(c.projector_set) == m.projector_set
                        && c.combined_state_digest == m.combined_digest
                    {
                        Ok(
                            "the manifest's state digest and projector set (and combined \
                             digest, if any) are the checkpoint's"
                                .into(),
                        )
                    } else {
                        Err(format!(
                            "the checkpoint signs state digest {}, projector set {} and \
                             combined digest {}, the manifest says {}, {} and {}",
                            c.state_digest,
                            c.projector_set,
                            hex_or_null(c.combined_state_digest),
                            hex_or_null(m.state_digest),
                            hex_or_null(m.projector_set),
                            hex_or_null(m.combined_digest)
                        ))
                    },
                );
            }
        }
    }
    r.push("bundles", check_bundles(dir, &m));
    let (present, artifact_check) = check_artifacts(dir, &m);
    r.push("artifacts", artifact_check);
    let r = r.done();
    Ok(ExportReport {
        ok: r.ok,
        verified_events: walked.events,
        first_broken_seq: walked.broken.as_ref().map(|b| b.seq),
        error: walked.broken.map(|b| b.error),
        checks: r.checks,
        referenced_artifacts_absent: referenced.difference(&present).copied().collect(),
    })
}

/// Every file of `artifacts/` hashes to its name, and their number and bytes
/// are the manifest's; the digests present.
/// `bundles.ndjson`: every line a bundle line with a valid id and seqs
/// within the log, as many as the manifest says. (The bundles are not
/// hashed: they are the idempotency records, not events.)
fn check_bundles(dir: &Path, m: &Manifest) -> Result<String, String> {
    let lines = match bundle_lines(dir) {
        Ok(Some(lines)) => lines,
        Ok(None) if m.bundles == 0 => return Ok("no bundles".into()),
        Ok(None) => {
            return Err(format!(
                "cannot read {BUNDLES} (it is missing), the manifest says {} bundles",
                m.bundles
            ))
        }
        Err(e) => {
            return Err(format!(
                "cannot read {BUNDLES} ({e}), the manifest says {} bundles",
                m.bundles
            ))
        }
    };
    let mut n = 0u64;
    for (i, line) in lines.enumerate() {
        let (_, record) = line?;
        let seqs = [record.first_seq, record.last_seq];
        let within = seqs.iter().flatten().all(|s| s.0 >= 1 && *s <= m.head_seq);
        let ordered = match (record.first_seq, record.last_seq) {
            (Some(f), Some(l)) => f <= l,
            (None, None) => true,
            _ => false,
        };
        if !within || !ordered {
            return Err(format!(
                "{BUNDLES} line {}: seqs {:?}..{:?} are not a range within the log's 1..={}",
                i + 1,
                record.first_seq.map(|s| s.0),
                record.last_seq.map(|s| s.0),
                m.head_seq
            ));
        }
        n += 1;
    }
    if n == m.bundles {
        Ok(format!("{n} bundle records"))
    } else {
        Err(format!(
            "{BUNDLES} holds {n} bundles, the manifest says {}",
            m.bundles
        ))
    }
}

fn check_artifacts(
    dir: &Path,
    m: &Manifest,
) -> (std::collections::BTreeSet<Sha256>, Result<String, String>) {
    let mut present = std::collections::BTreeSet::new();
    let result = (|| -> Result<String, String> {
        let adir = dir.join(ARTIFACTS);
        let entries = match std::fs::read_dir(&adir) {
            Ok(e) => e,
            Err(_) if m.artifacts == 0 => return Ok("none".into()),
            Err(e) => return Err(format!("cannot read {}: {e}", adir.display())),
        };
        let mut bytes = 0u64;
        for e in entries {
            let e = e.map_err(|e| e.to_string())?;
            let name = e.file_name().to_string_lossy().into_owned();
            let expected: Sha256 = name
                .parse()
                .map_err(|_| format!("artifacts/{name} is not named by a SHA-256"))?;
            let mut f = std::fs::File::open(e.path()).map_err(|e| e.to_string())?;
            let mut h = sha2::Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let k = std::io::Read::read(&mut f, &mut buf).map_err(|e| e.to_string())?;
                if k == 0 {
                    break;
                }
                h.update(&buf[..k]);
                bytes += k as u64;
            }
            let actual = Sha256(h.finalize().into());
            if actual != expected {
                return Err(format!("artifacts/{name} hashes to {actual}"));
            }
            present.insert(expected);
        }
        if present.len() as u64 != m.artifacts || bytes != m.artifact_bytes {
            return Err(format!(
                "{} files of {bytes} bytes, the manifest says {} of {}",
                present.len(),
                m.artifacts,
                m.artifact_bytes
            ));
        }
        Ok(format!(
            "{} files of {bytes} bytes, each hashes to its name",
            present.len()
        ))
    })();
    (present, result)
}

// ------------------------------------------------------------------ the CLI

/// `leviathan export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    #[arg(long, env = "LEVIATHAN_DATA_DIR")]
    pub data_dir: Option<std::path::PathBuf>,
    /// A new (or empty) directory.
    #[arg(long)]
    pub to: std::path::PathBuf,
    /// The key that signs the checkpoint (default: the data dir's).
    #[arg(long, env = "LEVIATHAN_SIGNING_KEY_FILE")]
    pub signing_key_file: Option<std::path::PathBuf>,
    /// A node in postgres mode: the shared artifact store, whose artifacts
    /// the node's local store lacks are exported from it.
    #[arg(long, env = "LEVIATHAN_POSTGRES_URL")]
    pub postgres_url: Option<String>,
}

/// Prints a command's JSON result on stdout.
pub(crate) fn print_json(v: &impl Serialize) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(format!("{}\n", serde_json::to_string_pretty(v)?).as_bytes())?;
    Ok(())
}

/// Runs `leviathan export`: prints the manifest.
pub fn run(args: ExportArgs) -> anyhow::Result<std::process::ExitCode> {
    let dir = args
        .data_dir
        .or_else(crate::config::default_data_dir)
        .context("no data directory: set LEVIATHAN_DATA_DIR or --data-dir")?;
    let remote = match args.postgres_url.as_deref() {
        Some(url) => Some(std::sync::Arc::new(
            crate::pg::artifacts::PgArtifacts::new(url)
                .context("the shared artifact store in PostgreSQL")?,
        ) as std::sync::Arc<dyn crate::cas::Remote>),
        None => None,
    };
    let manifest = export(&dir, args.signing_key_file.as_deref(), &args.to, remote)?;
    print_json(&manifest)?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// Runs `leviathan verify --export DIR`: prints the report, exit 1 unless ok.
pub fn run_verify(dir: &Path, public_key: Option<&str>) -> anyhow::Result<std::process::ExitCode> {
    let key = public_key.map(crate::tlog::cli::verifier).transpose()?;
    let started = std::time::Instant::now();
    let report = verify_export(dir, key.as_ref())?;
    let secs = started.elapsed().as_secs_f64();
    print_json(&serde_json::json!({
        "report": report,
        "seconds": secs,
        "events_per_second": crate::progress::per_second(report.verified_events, secs),
    }))?;
    Ok(if report.ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}
