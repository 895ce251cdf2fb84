//! The verifiable log: an RFC 9162 Merkle tree over the stored records
//! ([`tree`], the algorithms in [`proof`]), checkpoints signed as C2SP signed
//! notes with the server's Ed25519 key ([`note`]), and what the audit routes
//! and commands serve and check ([`Transparency`], [`audit`]). docs/AUDIT.md
//! has the formats.

pub mod audit;
pub mod cli;
pub mod note;
pub mod proof;
pub mod signers;
pub mod tree;

use crate::cas::Cas;
use crate::digest::Sha256;
use crate::graph::GraphStore;
use crate::log::record::split_stored;
use crate::log::{Log, View};
use crate::seq::Seq;
use anyhow::Context;
use note::{Checkpoint, NoteSigner};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
pub use tree::{Tree, TreeError};

/// Where the signing key is kept when `LEVIATHAN_SIGNING_KEY_FILE` is unset.
pub const DEFAULT_KEY_FILE: &str = "log-signing.key";

/// The key file used for `data_dir` and the setting.
pub fn key_path(setting: Option<&Path>, data_dir: &Path) -> PathBuf {
    setting.map_or_else(|| data_dir.join(DEFAULT_KEY_FILE), Path::to_path_buf)
}

/// Loads the checkpoint signing key: from `LEVIATHAN_SIGNING_KEY_FILE` when
/// set (it must exist), else from the data dir, generated there on first
/// start (mode 0600) with its verifier key logged.
///
/// The key must be the store's recorded signer ([`signers`]): a different
/// one (a swapped or lost key file) is refused unless `new_key_allowed`
/// (`LEVIATHAN_NEW_SIGNING_KEY=1`), and after a restore the old key is
/// refused outright (it may have signed beyond the backup's head). A new
/// signer is recorded, durably, before anything is signed with it; a key
/// generated for a refused start is not written.
pub fn load_signer(
    setting: Option<&Path>,
    data_dir: &Path,
    db: &fjall::Database,
    tree_size: u64,
    new_key_allowed: bool,
    replica_copy: bool,
) -> anyhow::Result<NoteSigner> {
    let path = key_path(setting, data_dir);
    let default_file = key_path(None, data_dir);
    let (signer, generated) = if setting.is_none() && !path.exists() {
        (generate_default()?, true)
    } else {
        warn_if_others_can_read(&path);
        (read_key_file(&path)?, false)
    };
    let verifier_key = signer.verifier_key();
    let record = signers::Signers::open(db)?;
    let decision = signers::decide(
        &record.history()?,
        record.restored()?.as_ref(),
        &signers::Candidate {
            verifier_key: &verifier_key,
            generated,
            file: &path,
            from_setting: setting.is_some(),
            default_file: &default_file,
        },
        tree_size,
        new_key_allowed,
        replica_copy,
    );
    match decision {
        signers::Decision::Refuse(why) => anyhow::bail!("{why}"),
        signers::Decision::Keep => {
            if new_key_allowed {
                tracing::warn!(
                    "LEVIATHAN_NEW_SIGNING_KEY=1 has no effect: the key is already this log's \
                     signer (unset it)"
                );
            }
        }
        signers::Decision::Record { reason, warn } => {
            if generated {
                write_key(&path, &signer)?;
            }
            record.record(signers::new_record(
                &verifier_key,
                tree_size,
                reason.clone(),
            ))?;
            if warn {
                tracing::warn!(
                    file = %path.display(),
                    %verifier_key,
                    from_tree_size = tree_size,
                    "a NEW checkpoint signing key signs this log from here on: {reason}. \
                     Checkpoints signed before stay valid with the previous key; give auditors \
                     this verifier key (GET /v1/log/signers lists every signer)"
                );
            } else if generated {
                tracing::info!(
                    file = %path.display(),
                    %verifier_key,
                    "generated the log's checkpoint signing key; give auditors its verifier key \
                     (GET /v1/log/public-key) and back the key file up"
                );
            }
        }
    }
    Ok(signer)
}

/// The signing key in `path` (`LEVIATHAN_SIGNING_KEY_FILE`, or the data
/// dir's): an error naming the file when it cannot be read or used.
pub fn read_key_file(path: &Path) -> anyhow::Result<NoteSigner> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read the signing key file {} (LEVIATHAN_SIGNING_KEY_FILE)",
            path.display()
        )
    })?;
    NoteSigner::from_text(&text)
        .with_context(|| format!("the signing key file {} is not usable", path.display()))
}

/// A key file anyone on the machine may read is logged (the key signs the
/// log's checkpoints: docs/AUDIT.md keeps it 0600; a Kubernetes Secret
/// mounted 0440 for the pod's group is fine).
fn warn_if_others_can_read(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o004 != 0 {
                tracing::warn!(
                    file = %path.display(),
                    mode = format!("{mode:04o}"),
                    "the checkpoint signing key file is readable by every user of this machine: \
                     chmod 0600 it (on Kubernetes, mount its Secret with defaultMode 0400 or 0440)"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// A new key named `leviathan/<first 8 hex digits of SHA-256(public key)>`.
fn generate_default() -> anyhow::Result<NoteSigner> {
    Ok(NoteSigner::generate_keyed_name("leviathan")?)
}

/// Writes a new key file with mode 0600; never overwrites one.
pub fn write_key(path: &Path, signer: &NoteSigner) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot create the key file {}", path.display()))?;
    f.write_all(format!("{}\n", signer.to_text()).as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// Why an audit request cannot be answered.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{0}")]
    NotFound(String),
    /// A request the log cannot answer as asked; `parameter` names the query
    /// parameter at fault when it is one.
    #[error("{message}")]
    BadRequest {
        message: String,
        parameter: Option<&'static str>,
    },
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error(transparent)]
    Log(#[from] crate::log::LogError),
    #[error(transparent)]
    Graph(#[from] crate::graph::GraphError),
    #[error("reading the artifact store: {0}")]
    Cas(#[from] crate::cas::CasError),
    /// A checkpoint of `tree_size` was asked for, and the live set's async
    /// projectors have applied only `applied`: its combined digest is not
    /// known yet.
    #[error(
        "the async projectors have applied seq {applied}, not {tree_size} yet: the checkpoint \
         of tree size {tree_size} cannot sign its combined-state-digest line; retry, add \
         min_seq={tree_size} to wait, or ask for a tree size of at most {applied}"
    )]
    AsyncBehind { tree_size: u64, applied: Seq },
}

/// An inclusion proof as served (`GET /v1/events/{event_id}/proof`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InclusionProof {
    pub event_id: String,
    pub seq: Seq,
    /// `seq - 1`.
    pub leaf_index: u64,
    pub tree_size: u64,
    /// SHA-256(0x00 ‖ record).
    pub leaf_hash: Sha256,
    /// RFC 9162 inclusion path, from the leaf up.
    pub path: Vec<Sha256>,
    /// The root the path leads to (for convenience: trust the checkpoint's).
    pub root: Sha256,
}

/// A consistency proof as served (`GET /v1/log/consistency`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsistencyProof {
    pub from: u64,
    pub to: u64,
    /// RFC 9162 consistency path.
    pub path: Vec<Sha256>,
    pub from_root: Sha256,
    pub to_root: Sha256,
}

/// A payload field that names an artifact by digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactDigest {
    /// JSON path of the field, e.g. `payload.output_sha256`.
    pub path: String,
    pub sha256: Sha256,
    /// Whether the server's artifact store holds it (when the bundle was made).
    pub stored: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// `leviathan-audit-bundle/v1`: one event with everything needed to check it offline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditBundle {
    pub format: String,
    /// The stored canonical record, byte for byte (the Merkle leaf's entry).
    pub record: String,
    /// SHA-256 of `record` (the chain hash).
    pub hash: Sha256,
    pub proof: InclusionProof,
    /// The signed checkpoint (C2SP signed note) the proof leads to.
    pub checkpoint: String,
    pub artifacts: Vec<ArtifactDigest>,
}

pub const BUNDLE_FORMAT: &str = "leviathan-audit-bundle/v1";

/// What the audit routes and `leviathan audit bundle` read: the tree, the
/// log, the graph's digests and the signing key.
#[derive(Clone)]
pub struct Transparency {
    pub tree: Tree,
    pub log: Log,
    /// The graph whose state digests checkpoints sign.
    pub graph: GraphSource,
    pub signer: Arc<NoteSigner>,
}

/// Which graph a checkpoint's state digest and projector set come from.
#[derive(Clone)]
pub enum GraphSource {
    /// The server's live generation (it changes when another goes live).
    Live(crate::generations::LiveGraph),
    /// One graph, with the fingerprint of the set that built it (offline).
    Fixed {
        graph: GraphStore,
        fingerprint: Sha256,
    },
}

impl GraphSource {
    /// The graph, its set's fingerprint, and whether that set has `async`
    /// projectors (for a fixed graph: whether its async lane applied any seq).
    fn current(&self) -> Result<(GraphStore, Sha256, bool), AuditError> {
        Ok(match self {
            GraphSource::Live(live) => {
                let l = live.get();
                (
                    l.graph.clone(),
                    l.fingerprint,
                    l.projectors.asynchronous().is_some(),
                )
            }
            GraphSource::Fixed { graph, fingerprint } => {
                let asynchronous = graph.async_state()?.0 > Seq::ZERO;
                (graph.clone(), *fingerprint, asynchronous)
            }
        })
    }
}

/// A checkpoint as the route serves it.
#[derive(Debug, Clone)]
pub struct Served {
    /// The signed note.
    pub note: String,
    /// A set with `async` projectors: the seq its async lane had applied
    /// when the checkpoint was signed (`None` for an all-inline set).
    pub async_applied: Option<Seq>,
}

/// Whether a checkpoint of a set with `async` projectors may leave the
/// combined line out when the async lane is behind its tree size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combined {
    /// Signed with the line when the lane has applied the size, without it
    /// otherwise (the latest checkpoint, bundles, backups, exports).
    IfApplied,
    /// Refused with [`AuditError::AsyncBehind`] when the lane is behind (a
    /// checkpoint asked for by size: the caller wants that size, whole).
    Required,
}

impl Transparency {
    /// The tree size of a view, with a requested size checked against it.
    fn size(
        &self,
        v: &View,
        requested: Option<u64>,
        what: &'static str,
    ) -> Result<u64, AuditError> {
        let size = self.tree.size_at(v)?;
        match requested {
            None => Ok(size),
            Some(n) if n <= size => Ok(n),
            Some(n) => Err(AuditError::BadRequest {
                message: format!("{what} {n} is beyond the log: the tree has {size} leaves"),
                parameter: Some(what),
            }),
        }
    }

    /// The checkpoint of the tree of `size` leaves (the whole tree if `None`),
    /// signed; with the combined line when the async lane has applied `size`
    /// ([`Combined::IfApplied`]).
    pub fn checkpoint_at(&self, v: &View, size: Option<u64>) -> Result<String, AuditError> {
        Ok(self.checkpoint(v, size, Combined::IfApplied)?.note)
    }

    /// The checkpoint of the tree of `size` leaves (the whole tree if
    /// `None`), signed, and where the async lane stood.
    ///
    /// For a set with `async` projectors the checkpoint also signs the
    /// combined digest at `size` (`combined-state-digest`), once the async
    /// lane has applied `size` — never a value the lane has not computed.
    /// When it has not, `combined` says whether the checkpoint is signed
    /// without the line or refused.
    pub fn checkpoint(
        &self,
        v: &View,
        size: Option<u64>,
        combined: Combined,
    ) -> Result<Served, AuditError> {
        let size = self.size(v, size, "tree_size")?;
        let root = self.tree.root_at(v, size)?;
        let chain_head = if size == 0 {
            None
        } else {
            let rec = self.log.stored_range_at(v, Seq(size), 1)?;
            let (_, value) = rec
                .first()
                .filter(|(s, _)| s.0 == size)
                .ok_or_else(|| AuditError::NotFound(format!("no record at seq {size}")))?;
            split_stored(value).map(|(h, _)| h)
        };
        let (graph, fingerprint, asynchronous) = self.graph.current()?;
        let state_digest = graph.digest_at(Seq(size))?.ok_or_else(|| {
            AuditError::NotFound(format!("no state digest is recorded for seq {size}"))
        })?;
        // The combined digest of a seq is written by the async lane when it
        // commits that seq (from the inline digest above, same generation),
        // and never changes after: read it once, and sign it if it is there.
        // The empty log (size 0) has no events to cover: no line.
        let (combined_state_digest, async_applied) = if asynchronous {
            let applied = graph.async_state()?.0;
            let d = if size == 0 {
                None
            } else {
                graph.combined_digest_at(Seq(size))?
            };
            if d.is_none() && size > 0 && combined == Combined::Required {
                return Err(AuditError::AsyncBehind {
                    tree_size: size,
                    applied,
                });
            }
            (d, Some(applied))
        } else {
            (None, None)
        };
        let c = Checkpoint {
            origin: self.signer.name().to_string(),
            tree_size: size,
            root,
            chain_head,
            state_digest,
            projector_set: fingerprint,
            combined_state_digest,
        };
        Ok(Served {
            note: self.signer.sign(&c.text()),
            async_applied,
        })
    }

    /// The inclusion proof of an event in the tree of `tree_size` leaves.
    pub fn inclusion(
        &self,
        v: &View,
        event_id: &str,
        tree_size: Option<u64>,
    ) -> Result<(InclusionProof, String), AuditError> {
        let Some(seq) = self.log.seq_of_at(v, event_id)? else {
            return Err(AuditError::NotFound(format!(
                "no event with event_id {event_id:?}"
            )));
        };
        let size = self.size(v, tree_size, "tree_size")?;
        if seq.0 > size {
            return Err(AuditError::BadRequest {
                message: format!(
                    "event {event_id:?} is at seq {seq}, after the tree of size {size}: ask for \
                     tree_size {} or more",
                    seq.0
                ),
                parameter: Some("tree_size"),
            });
        }
        let rec = self.log.stored_range_at(v, seq, 1)?;
        let (_, value) = rec
            .first()
            .filter(|(s, _)| *s == seq)
            .ok_or_else(|| AuditError::NotFound(format!("no record at seq {seq}")))?;
        let (_, canonical) = split_stored(value)
            .ok_or_else(|| AuditError::NotFound(format!("record {seq} is truncated")))?;
        let record = String::from_utf8(canonical.to_vec())
            .map_err(|_| AuditError::NotFound(format!("record {seq} is not UTF-8")))?;
        let index = seq.0 - 1;
        Ok((
            InclusionProof {
                event_id: event_id.to_string(),
                seq,
                leaf_index: index,
                tree_size: size,
                leaf_hash: proof::leaf_hash(canonical),
                path: self.tree.inclusion_at(v, index, size)?,
                root: self.tree.root_at(v, size)?,
            },
            record,
        ))
    }

    /// The consistency proof from the tree of `from` leaves to the tree of
    /// `to` leaves (the whole tree if `None`).
    pub fn consistency(
        &self,
        v: &View,
        from: u64,
        to: Option<u64>,
    ) -> Result<ConsistencyProof, AuditError> {
        let to_given = to.is_some();
        let to = self.size(v, to, "to")?;
        if from > to {
            return Err(AuditError::BadRequest {
                message: if to_given {
                    format!("from ({from}) must not be greater than to ({to})")
                } else {
                    format!("from {from} is beyond the log: the tree has {to} leaves")
                },
                // Without `to` (the whole tree), `from` alone is at fault.
                parameter: (!to_given).then_some("from"),
            });
        }
        Ok(ConsistencyProof {
            from,
            to,
            path: self.tree.consistency_at(v, from, to)?,
            from_root: self.tree.root_at(v, from)?,
            to_root: self.tree.root_at(v, to)?,
        })
    }

    /// An audit bundle for one event, against the latest checkpoint.
    pub fn bundle(&self, event_id: &str, cas: Option<&Cas>) -> Result<AuditBundle, AuditError> {
        let v = self.log.view();
        let (proof, record) = self.inclusion(&v, event_id, None)?;
        let checkpoint = self.checkpoint_at(&v, Some(proof.tree_size))?;
        let mut artifacts = Vec::new();
        for (path, sha256) in audit::artifact_digests(&record) {
            // Stored here or, in postgres mode, in the shared store.
            let size = match cas {
                Some(c) => c.size_of(&sha256)?,
                None => None,
            };
            artifacts.push(ArtifactDigest {
                path,
                sha256,
                stored: size.is_some(),
                size,
            });
        }
        Ok(AuditBundle {
            format: BUNDLE_FORMAT.into(),
            hash: Sha256::of(record.as_bytes()),
            record,
            proof,
            checkpoint,
            artifacts,
        })
    }
}
