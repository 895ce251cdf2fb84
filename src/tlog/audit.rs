//! Offline checks an auditor runs on files (`leviathan audit …`): a saved
//! checkpoint and the log's verifier key against an inclusion proof, a
//! consistency proof or a whole audit bundle. Nothing here reads a store or
//! talks to a server: what is checked is only what the files and the key say.

use super::note::{Checkpoint, NoteVerifier};
use super::proof;
use super::{AuditBundle, ConsistencyProof, InclusionProof, BUNDLE_FORMAT};
use crate::digest::Sha256;
use serde::Serialize;
use std::path::Path;

/// One check and its outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub check: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// Every check run, in order; `ok` when all passed.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    pub ok: bool,
    pub checks: Vec<Check>,
}

impl Report {
    pub(crate) fn push(&mut self, check: &'static str, result: Result<String, String>) -> bool {
        let ok = result.is_ok();
        self.checks.push(Check {
            check,
            ok,
            detail: result.unwrap_or_else(|e| e),
        });
        ok
    }

    pub(crate) fn done(mut self) -> Report {
        self.ok = !self.checks.is_empty() && self.checks.iter().all(|c| c.ok);
        self
    }
}

/// Opens a signed checkpoint with the verifier key.
pub fn open_checkpoint(note: &str, key: &NoteVerifier) -> Result<Checkpoint, String> {
    let text = key.open(note).map_err(|e| e.to_string())?;
    let c = Checkpoint::parse(text).map_err(|e| e.to_string())?;
    if c.origin != key.name() {
        return Err(format!(
            "the checkpoint's origin {:?} is not the key's name {:?}",
            c.origin,
            key.name()
        ));
    }
    Ok(c)
}

fn signed(
    report: &mut Report,
    name: &'static str,
    note: &str,
    key: &NoteVerifier,
) -> Option<Checkpoint> {
    match open_checkpoint(note, key) {
        Ok(c) => {
            report.push(
                name,
                Ok(format!(
                    "signed by {}; tree size {}, root {}",
                    key.name(),
                    c.tree_size,
                    c.root
                )),
            );
            Some(c)
        }
        Err(e) => {
            report.push(name, Err(e));
            None
        }
    }
}

/// An inclusion proof against a saved checkpoint. With `record` (the stored
/// canonical record bytes) the leaf hash is recomputed from it; without,
/// the proof's own `leaf_hash` is what is proved to be in the log.
pub fn check_inclusion(
    checkpoint: &str,
    key: &NoteVerifier,
    p: &InclusionProof,
    record: Option<&[u8]>,
) -> Report {
    let mut r = Report::default();
    let Some(c) = signed(&mut r, "checkpoint_signature", checkpoint, key) else {
        return r.done();
    };
    if let Some(bytes) = record {
        r.push("record_fields", record_fields(bytes, p));
    }
    inclusion_steps(&mut r, &c, p, record);
    r.done()
}

/// Whether `record` is the event the proof names: its `event_id` and `seq`.
fn record_fields(record: &[u8], p: &InclusionProof) -> Result<String, String> {
    let fields = crate::log::record::chain_fields(record);
    let parsed: Option<serde_json::Value> = serde_json::from_slice(record).ok();
    let id = parsed
        .as_ref()
        .and_then(|v| v.get("event_id"))
        .and_then(|v| v.as_str());
    match (fields, id) {
        (Some((_, seq)), Some(id)) if seq == p.seq && id == p.event_id => {
            Ok(format!("the record is event {id:?} at seq {seq}"))
        }
        (Some((_, seq)), id) => Err(format!(
            "the record is event {} at seq {seq}, the proof is for {:?} at seq {}",
            id.map_or("(no event_id)".to_string(), |id| format!("{id:?}")),
            p.event_id,
            p.seq
        )),
        (None, _) => Err("the record is not a canonical event record".into()),
    }
}

fn inclusion_steps(r: &mut Report, c: &Checkpoint, p: &InclusionProof, record: Option<&[u8]>) {
    let leaf = match record {
        Some(bytes) => {
            let leaf = proof::leaf_hash(bytes);
            let ok = leaf == p.leaf_hash;
            r.push(
                "leaf_hash",
                if ok {
                    Ok(format!("SHA-256(0x00 ‖ record) = {leaf}"))
                } else {
                    Err(format!(
                        "SHA-256(0x00 ‖ record) = {leaf}, the proof says {}",
                        p.leaf_hash
                    ))
                },
            );
            leaf
        }
        None => p.leaf_hash,
    };
    r.push(
        "leaf_index",
        if p.leaf_index + 1 == p.seq.0 {
            Ok(format!("leaf {} is seq {}", p.leaf_index, p.seq))
        } else {
            Err(format!(
                "leaf index {} is not seq {} - 1",
                p.leaf_index, p.seq
            ))
        },
    );
    r.push(
        "tree_size",
        if p.tree_size == c.tree_size {
            Ok(format!(
                "the proof is for the checkpoint's tree size {}",
                c.tree_size
            ))
        } else {
            Err(format!(
                "the proof is for tree size {}, the checkpoint's is {}",
                p.tree_size, c.tree_size
            ))
        },
    );
    r.push(
        "inclusion",
        proof::verify_inclusion(p.leaf_index, c.tree_size, &leaf, &p.path, &c.root)
            .map(|_| {
                format!(
                    "leaf {} is in the tree of size {} (RFC 9162 §2.1.3.2)",
                    p.leaf_index, c.tree_size
                )
            })
            .map_err(|e| e.to_string()),
    );
}

/// A consistency proof between two saved checkpoints of the same log.
/// `old_key`: the key of the older checkpoint when the log's signer changed
/// between the two (GET /v1/log/signers); `None`: `key` signed both.
pub fn check_consistency(
    old: &str,
    new: &str,
    key: &NoteVerifier,
    old_key: Option<&NoteVerifier>,
    p: &ConsistencyProof,
) -> Report {
    let mut r = Report::default();
    let a = signed(
        &mut r,
        "old_checkpoint_signature",
        old,
        old_key.unwrap_or(key),
    );
    let b = signed(&mut r, "new_checkpoint_signature", new, key);
    let (Some(a), Some(b)) = (a, b) else {
        return r.done();
    };
    r.push(
        "sizes",
        if p.from == a.tree_size && p.to == b.tree_size {
            Ok(format!("from {} to {}", p.from, p.to))
        } else {
            Err(format!(
                "the proof is from {} to {}, the checkpoints are of sizes {} and {}",
                p.from, p.to, a.tree_size, b.tree_size
            ))
        },
    );
    r.push(
        "consistency",
        proof::verify_consistency(a.tree_size, b.tree_size, &a.root, &b.root, &p.path)
            .map(|_| {
                format!(
                    "the tree of size {} is a prefix of the tree of size {}: the log only grew \
                     (RFC 9162 §2.1.4.2)",
                    a.tree_size, b.tree_size
                )
            })
            .map_err(|e| e.to_string()),
    );
    r.done()
}

/// `path=sha256, …` (or `none`), for messages.
fn list_digests(items: &[(String, Sha256)]) -> String {
    if items.is_empty() {
        return "none".into();
    }
    items
        .iter()
        .map(|(path, sha)| format!("{path}={sha}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The payload fields that name artifacts by digest: every string value of a
/// key `sha256` or ending in `_sha256` that is a SHA-256 in hex, at any depth,
/// with its JSON path (`payload.output_sha256`, `payload.files[0].sha256`).
pub fn artifact_digests(record: &str) -> Vec<(String, Sha256)> {
    let mut out = Vec::new();
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(record) {
        if let Some(p) = v.get("payload") {
            walk(p, "payload".to_string(), None, &mut out);
        }
    }
    out
}

fn walk(v: &serde_json::Value, path: String, key: Option<&str>, out: &mut Vec<(String, Sha256)>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                walk(x, format!("{path}.{k}"), Some(k), out);
            }
        }
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                walk(x, format!("{path}[{i}]"), None, out);
            }
        }
        serde_json::Value::String(s)
            if key.is_some_and(|k| k == "sha256" || k.ends_with("_sha256")) =>
        {
            if let Ok(d) = s.parse::<Sha256>() {
                out.push((path, d));
            }
        }
        _ => {}
    }
}

/// Every check of an audit bundle: the record's hash and fields, its leaf,
/// the checkpoint's signature, the inclusion proof against it, and the
/// artifact digests (their list, and with `artifacts_dir` the files, each
/// named by its SHA-256 hex).
pub fn verify_bundle(b: &AuditBundle, key: &NoteVerifier, artifacts_dir: Option<&Path>) -> Report {
    let mut r = Report::default();
    r.push(
        "format",
        if b.format == BUNDLE_FORMAT {
            Ok(b.format.clone())
        } else {
            Err(format!(
                "unknown format {:?}, expected {BUNDLE_FORMAT}",
                b.format
            ))
        },
    );
    let record = b.record.as_bytes();
    let hash = Sha256::of(record);
    r.push(
        "record_hash",
        if hash == b.hash {
            Ok(format!("SHA-256(record) = {hash}, the event's chain hash"))
        } else {
            Err(format!(
                "SHA-256(record) = {hash}, the bundle says {}",
                b.hash
            ))
        },
    );
    r.push("record_fields", record_fields(record, &b.proof));
    if let Some(c) = signed(&mut r, "checkpoint_signature", &b.checkpoint, key) {
        inclusion_steps(&mut r, &c, &b.proof, Some(record));
    }
    let found = artifact_digests(&b.record);
    let listed: Vec<(String, Sha256)> = b
        .artifacts
        .iter()
        .map(|a| (a.path.clone(), a.sha256))
        .collect();
    r.push(
        "artifact_list",
        if found == listed {
            Ok(format!(
                "{} artifact digest(s) named by the payload",
                found.len()
            ))
        } else {
            Err(format!(
                "the payload names {}, the bundle lists {}",
                list_digests(&found),
                list_digests(&listed)
            ))
        },
    );
    if let Some(dir) = artifacts_dir {
        for (path, sha) in &found {
            let file = dir.join(sha.to_hex());
            let res = match std::fs::File::open(&file) {
                Err(e) => Err(format!("{path}: {}: {e}", file.display())),
                Ok(f) => match hash_reader(f) {
                    Ok(d) if d == *sha => {
                        Ok(format!("{path}: {} has SHA-256 {sha}", file.display()))
                    }
                    Ok(d) => Err(format!(
                        "{path}: {} has SHA-256 {d}, expected {sha}",
                        file.display()
                    )),
                    Err(e) => Err(format!("{path}: reading {}: {e}", file.display())),
                },
            };
            r.push("artifact", res);
        }
    }
    r.done()
}

fn hash_reader(mut f: impl std::io::Read) -> std::io::Result<Sha256> {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(Sha256(h.finalize().into()));
        }
        h.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_digest_fields_at_any_depth() {
        let a = Sha256::of(b"a");
        let b = Sha256::of(b"b");
        let rec = format!(
            r#"{{"actor_id":null,"payload":{{"files":[{{"sha256":"{a}"}}],"note":"{a}","output_sha256":"{b}","x_sha256":"nothex"}},"seq":1}}"#
        );
        assert_eq!(
            artifact_digests(&rec),
            vec![
                ("payload.files[0].sha256".to_string(), a),
                ("payload.output_sha256".to_string(), b)
            ]
        );
    }
}
