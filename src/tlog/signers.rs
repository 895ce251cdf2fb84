//! The log's signers: which verifier key has signed its checkpoints from
//! which tree size on (keyspace `log_signers`, key `history`), and the mark a
//! restore leaves (key `restored`). At start, [`decide`] says whether the key
//! at hand may sign this store's checkpoints; a new signer is recorded before
//! it signs anything. Owns no key material and never signs.
//!
//! Why: every checkpoint one key signs must be consistent with every other
//! (docs/AUDIT.md). Two ways broke that silently: a key file lost or swapped
//! (a new key for an old log, the auditors' trail cut without a word), and a
//! restore from a backup with the old key copied back: the old server may
//! have signed checkpoints beyond the backup's head, which the restored log,
//! re-extended with other events, contradicts under the same key (a fork).

use serde::{Deserialize, Serialize};

const KEYSPACE: &str = "log_signers";
const HISTORY: &[u8] = b"history";
const RESTORED: &[u8] = b"restored";

/// One signer of the log: from `from_tree_size` on, checkpoints are signed
/// by `verifier_key` (until the next record's size).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignerRecord {
    pub verifier_key: String,
    pub from_tree_size: u64,
    /// RFC 3339, UTC.
    pub recorded_at: String,
    /// Why this key became the signer, for the auditor.
    pub reason: String,
}

/// Left by `leviathan restore`: the store was restored from a backup whose
/// head is `tree_size`, whose checkpoint was signed by `signed_by`
/// (`<name>+<key id hex>`, from the manifest's checkpoint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoredMark {
    pub tree_size: u64,
    #[serde(default)]
    pub signed_by: Vec<String>,
    pub restored_at: String,
}

/// The `log_signers` keyspace.
#[derive(Clone)]
pub struct Signers {
    db: fjall::Database,
    ks: fjall::Keyspace,
}

impl Signers {
    pub fn open(db: &fjall::Database) -> anyhow::Result<Signers> {
        Ok(Signers {
            db: db.clone(),
            ks: crate::storage::open_keyspace(db, KEYSPACE)?,
        })
    }

    /// Every signer, oldest first (empty for a store that predates the
    /// record, a new store, or an import before its first start).
    pub fn history(&self) -> anyhow::Result<Vec<SignerRecord>> {
        match self.ks.get(HISTORY)? {
            None => Ok(Vec::new()),
            Some(v) => Ok(serde_json::from_slice(&v)
                .map_err(|e| anyhow::anyhow!("log_signers/history is not readable: {e}"))?),
        }
    }

    pub fn restored(&self) -> anyhow::Result<Option<RestoredMark>> {
        match self.ks.get(RESTORED)? {
            None => Ok(None),
            Some(v) => Ok(Some(serde_json::from_slice(&v).map_err(|e| {
                anyhow::anyhow!("log_signers/restored is not readable: {e}")
            })?)),
        }
    }

    /// Marks a restored store (`leviathan restore`), durably.
    pub fn mark_restored(&self, mark: &RestoredMark) -> anyhow::Result<()> {
        let mut batch = self.db.batch();
        batch.insert(&self.ks, RESTORED, serde_json::to_vec(mark)?);
        batch.commit()?;
        self.db.persist(fjall::PersistMode::SyncAll)?;
        Ok(())
    }

    /// Appends `record` and clears the restore mark, durably: done before
    /// the new signer signs anything.
    pub fn record(&self, record: SignerRecord) -> anyhow::Result<Vec<SignerRecord>> {
        let mut history = self.history()?;
        // A key replaced before anything was logged replaces its record.
        if record.from_tree_size == 0 {
            history.clear();
        }
        history.push(record);
        let mut batch = self.db.batch();
        batch.insert(&self.ks, HISTORY, serde_json::to_vec(&history)?);
        batch.remove(&self.ks, RESTORED);
        batch.commit()?;
        self.db.persist(fjall::PersistMode::SyncAll)?;
        Ok(history)
    }
}

/// The key at hand, as [`decide`] sees it.
pub struct Candidate<'a> {
    /// Its verifier key (`<name>+<id hex>+<base64>`).
    pub verifier_key: &'a str,
    /// Generated now because no key file was found (not yet written).
    pub generated: bool,
    /// Where its file is (or would be written), for messages.
    pub file: &'a std::path::Path,
}

/// What start-up does with the key at hand.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// It is the store's signer: sign with it.
    Keep,
    /// Record it as the signer from this tree size on, then sign with it.
    Record { reason: String, warn: bool },
    /// Do not start: the message says why and what to do.
    Refuse(String),
}

/// `<name>+<id hex>` of a verifier key (`<name>+<id hex>+<base64>`; a name
/// has no `+`, the base64 may).
pub fn key_name_id(verifier_key: &str) -> &str {
    let mut plus = verifier_key.match_indices('+').map(|(i, _)| i);
    match (plus.next(), plus.next()) {
        (Some(_), Some(second)) => &verifier_key[..second],
        _ => verifier_key,
    }
}

/// Whether `key` may sign the checkpoints of a store whose tree holds
/// `tree_size` leaves, given its signers and a restore's mark.
/// `new_key_allowed`: `LEVIATHAN_NEW_SIGNING_KEY=1`.
pub fn decide(
    history: &[SignerRecord],
    restored: Option<&RestoredMark>,
    key: &Candidate<'_>,
    tree_size: u64,
    new_key_allowed: bool,
) -> Decision {
    let last = history.last();
    let same_as_last = last.is_some_and(|r| r.verifier_key == key.verifier_key);
    if tree_size == 0 {
        // Nothing logged, nothing a checkpoint could contradict.
        return if same_as_last && restored.is_none() {
            Decision::Keep
        } else {
            Decision::Record {
                reason: "the first key of this log".into(),
                warn: false,
            }
        };
    }
    if let Some(mark) = restored {
        let name_id = key_name_id(key.verifier_key);
        if same_as_last || mark.signed_by.iter().any(|s| s == name_id) {
            return Decision::Refuse(format!(
                "this store was restored from a backup whose head is seq {}, and the key in {} \
                 ({name_id}) is the one that signed the backed-up log. The server it came from \
                 may have signed checkpoints beyond seq {} (any it served after the backup); \
                 the restored log, extended with other events, would contradict them under the \
                 same key, which auditors must treat as a forked log. Sign from here on with a \
                 new key: move that key file away (a new key is then generated at this path) or \
                 point LEVIATHAN_SIGNING_KEY_FILE at a key made with `leviathan audit keygen`, \
                 and give auditors the new verifier key; the change is recorded at tree size {} \
                 (GET /v1/log/signers; docs/AUDIT.md, \"When the signing key changes\")",
                mark.tree_size,
                key.file.display(),
                mark.tree_size,
                tree_size,
            ));
        }
        return Decision::Record {
            reason: format!(
                "a new key after a restore from a backup whose head was seq {} (signed by {}): \
                 checkpoints of the previous key beyond that size are not of this log",
                mark.tree_size,
                if mark.signed_by.is_empty() {
                    last.map_or("an unrecorded key".to_string(), |r| {
                        key_name_id(&r.verifier_key).to_string()
                    })
                } else {
                    mark.signed_by.join(", ")
                }
            ),
            warn: true,
        };
    }
    match last {
        None => Decision::Record {
            reason: if key.generated {
                format!(
                    "generated at a start that found no key file, for a log of {tree_size} \
                     events whose earlier signer is not recorded"
                )
            } else {
                "recorded at start: this store's earlier signers are not recorded (it predates \
                 the record, or was imported)"
                    .into()
            },
            warn: key.generated,
        },
        Some(_) if same_as_last => Decision::Keep,
        Some(r) if new_key_allowed => Decision::Record {
            reason: format!(
                "a new key (LEVIATHAN_NEW_SIGNING_KEY=1) replacing {} at tree size {tree_size}",
                key_name_id(&r.verifier_key)
            ),
            warn: true,
        },
        Some(r) => Decision::Refuse(format!(
            "this store's checkpoints are signed by {} (since tree size {}), but {} {}. \
             Put that key's file back (at {}, or where LEVIATHAN_SIGNING_KEY_FILE points), or, \
             if it is lost for good, start once with LEVIATHAN_NEW_SIGNING_KEY=1: the new key is \
             recorded as the signer from tree size {tree_size} on (GET /v1/log/signers) and \
             auditors must be given its verifier key (docs/AUDIT.md, \"When the signing key \
             changes\")",
            key_name_id(&r.verifier_key),
            r.from_tree_size,
            if key.generated {
                "there is no key file".to_string()
            } else {
                format!("the key file holds {}", key_name_id(key.verifier_key))
            },
            if key.generated {
                "and a new key would be generated"
            } else {
                "instead"
            },
            key.file.display(),
        )),
    }
}

/// A record for `key` from `tree_size` on, made now.
pub fn new_record(verifier_key: &str, tree_size: u64, reason: String) -> SignerRecord {
    SignerRecord {
        verifier_key: verifier_key.to_string(),
        from_tree_size: tree_size,
        recorded_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        reason,
    }
}

/// `<name>+<key id hex>` of every signature line of a signed note.
pub fn note_signers(note: &str) -> Vec<String> {
    use base64::Engine as _;
    let Some(at) = note.rfind("\n\n") else {
        return Vec::new();
    };
    note[at + 2..]
        .lines()
        .filter_map(|l| {
            let (name, b64) = l.strip_prefix("\u{2014} ")?.split_once(' ')?;
            let blob = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
            let id = blob.get(..4)?;
            Some(format!("{name}+{}", hex_of(id)))
        })
        .collect()
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const A: &str = "leviathan/aaaaaaaa+aaaaaaaa+AAAA";
    const B: &str = "leviathan/bbbbbbbb+bbbbbbbb+BB+B";

    fn rec(key: &str, from: u64) -> SignerRecord {
        new_record(key, from, "test".into())
    }

    fn cand(key: &str, generated: bool) -> Candidate<'_> {
        Candidate {
            verifier_key: key,
            generated,
            file: Path::new("/k"),
        }
    }

    #[test]
    fn the_recorded_key_signs_and_another_is_refused_unless_allowed() {
        let h = vec![rec(A, 0)];
        assert_eq!(decide(&h, None, &cand(A, false), 10, false), Decision::Keep);
        assert!(matches!(
            decide(&h, None, &cand(B, false), 10, false),
            Decision::Refuse(m) if m.contains("leviathan/aaaaaaaa+aaaaaaaa") && m.contains("LEVIATHAN_NEW_SIGNING_KEY=1")
        ));
        assert!(matches!(
            decide(&h, None, &cand(B, true), 10, false),
            Decision::Refuse(m) if m.contains("there is no key file")
        ));
        assert!(matches!(
            decide(&h, None, &cand(B, false), 10, true),
            Decision::Record { warn: true, .. }
        ));
        // Nothing logged: any key, silently.
        assert!(matches!(
            decide(&h, None, &cand(B, false), 0, false),
            Decision::Record { warn: false, .. }
        ));
    }

    #[test]
    fn after_a_restore_only_a_new_key_signs() {
        let h = vec![rec(A, 0)];
        let mark = RestoredMark {
            tree_size: 7,
            signed_by: vec!["leviathan/aaaaaaaa+aaaaaaaa".into()],
            restored_at: "t".into(),
        };
        for allowed in [false, true] {
            assert!(matches!(
                decide(&h, Some(&mark), &cand(A, false), 7, allowed),
                Decision::Refuse(m) if m.contains("restored from a backup whose head is seq 7")
            ));
        }
        assert!(matches!(
            decide(&h, Some(&mark), &cand(B, true), 7, false),
            Decision::Record { warn: true, reason } if reason.contains("seq 7")
        ));
        // A backup of a store that predates the record: the manifest's
        // checkpoint names the old key.
        assert!(matches!(
            decide(&[], Some(&mark), &cand(A, false), 7, false),
            Decision::Refuse(_)
        ));
    }

    #[test]
    fn a_store_without_a_record_records_the_key_it_has() {
        assert!(matches!(
            decide(&[], None, &cand(A, false), 5, false),
            Decision::Record { warn: false, .. }
        ));
        assert!(matches!(
            decide(&[], None, &cand(A, true), 5, false),
            Decision::Record { warn: true, .. }
        ));
    }

    #[test]
    fn key_name_id_stops_before_the_base64() {
        assert_eq!(key_name_id(B), "leviathan/bbbbbbbb+bbbbbbbb");
    }

    #[test]
    fn note_signers_reads_name_and_key_id() {
        let note = "o\n1\nAAAA\n\n\u{2014} leviathan/x q83vAAAA\n";
        assert_eq!(note_signers(note), vec!["leviathan/x+abcdef00".to_string()]);
    }
}
