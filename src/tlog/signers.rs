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
    /// `restore` or `import`: what made this store from another's log.
    #[serde(default = "restore_word")]
    pub from: String,
}

fn restore_word() -> String {
    "restore".into()
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

    /// Marks a store made from another's log (`leviathan restore` or
    /// `import`), durably; `history`: the source's signers, when the store
    /// does not hold them already (an import).
    pub fn mark_restored(
        &self,
        mark: &RestoredMark,
        history: Option<&[SignerRecord]>,
    ) -> anyhow::Result<()> {
        let mut batch = self.db.batch();
        batch.insert(&self.ks, RESTORED, serde_json::to_vec(mark)?);
        if let Some(h) = history {
            batch.insert(&self.ks, HISTORY, serde_json::to_vec(h)?);
        }
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
    /// Whether `file` is the one `LEVIATHAN_SIGNING_KEY_FILE` names (which
    /// must exist) rather than the data dir's, generated when missing.
    pub from_setting: bool,
    /// The data dir's key file (`log-signing.key`), where a key is generated
    /// when `LEVIATHAN_SIGNING_KEY_FILE` is unset and no file is there.
    pub default_file: &'a std::path::Path,
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
/// `tree_size` leaves, given its signers and a restore's (or import's) mark.
/// `new_key_allowed`: `LEVIATHAN_NEW_SIGNING_KEY=1`. `replica_copy`: the
/// local store of a PostgreSQL-mode node, filled from the cluster's log.
///
/// The rules, so that one key signs one linear history:
/// - an empty log takes any key;
/// - a key recorded before and since replaced never signs again (it may
///   sign another copy of the log: a restore's or an import's source);
/// - after a restore or an import, a key known to have signed the source
///   (recorded, or named by the source's checkpoint) is refused even with
///   `new_key_allowed`; a key generated now is new; a key file of unknown
///   origin is taken only with `new_key_allowed`, when nothing is known of
///   the source's signers;
/// - otherwise the recorded signer signs; another key, or none, only with
///   `new_key_allowed`. A store that predates the record takes the key it
///   has; a generated one only with `new_key_allowed` (every store with
///   events had a key), except a PostgreSQL node's local copy.
pub fn decide(
    history: &[SignerRecord],
    restored: Option<&RestoredMark>,
    key: &Candidate<'_>,
    tree_size: u64,
    new_key_allowed: bool,
    replica_copy: bool,
) -> Decision {
    // A PostgreSQL node's local store is a copy of the cluster's log, which
    // PostgreSQL holds: a node restored from a local backup refills from it
    // and forks nothing (a local log ahead of PostgreSQL is refused at start).
    let restored = restored.filter(|_| !replica_copy);
    let last = history.last();
    let same_as_last = last.is_some_and(|r| r.verifier_key == key.verifier_key);
    let name_id = key_name_id(key.verifier_key);
    let recorded = history
        .iter()
        .rposition(|r| r.verifier_key == key.verifier_key);
    // Recorded, and replaced since: the key's record and the size its
    // successor took over at.
    let replaced = recorded
        .filter(|&i| i + 1 < history.len())
        .map(|i| (&history[i], history[i + 1].from_tree_size));
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
    // A new key is generated only at the default path: with
    // LEVIATHAN_SIGNING_KEY_FILE set, its file must exist.
    let new_key = if key.from_setting {
        format!(
            "point LEVIATHAN_SIGNING_KEY_FILE at a new key made with `leviathan audit keygen`, \
             or unset it (a new key is then generated at {}, if no key file is there)",
            key.default_file.display()
        )
    } else {
        "move that key file away (a new key is then generated at this path) or set \
         LEVIATHAN_SIGNING_KEY_FILE to a key made with `leviathan audit keygen`"
            .to_string()
    };
    // `flag`: a new key needs LEVIATHAN_NEW_SIGNING_KEY=1 (it does after a
    // restore only when nothing is known of the source's signers).
    let fix = |flag: bool| {
        format!(
            "{new_key}{}; give auditors the new verifier key (GET /v1/log/signers; \
             docs/AUDIT.md, \"When the signing key changes\")",
            if flag {
                ", then start once with LEVIATHAN_NEW_SIGNING_KEY=1"
            } else {
                ""
            }
        )
    };
    if let Some(mark) = restored {
        let what = mark.from.as_str();
        let known = recorded.is_some() || mark.signed_by.iter().any(|s| s == name_id);
        if known {
            return Decision::Refuse(format!(
                "this store was made by `leviathan {what}` from a log whose head was seq {}, and \
                 the key in {} ({name_id}) signed that log. The source may have signed \
                 checkpoints beyond seq {} (any it served since), which this log, extended with \
                 other events, would contradict under the same key: auditors must treat that \
                 as a forked log. Sign from here on with a new key: {}; the change is recorded \
                 at tree size {tree_size}",
                mark.tree_size,
                key.file.display(),
                mark.tree_size,
                fix(false),
            ));
        }
        let nothing_known = history.is_empty() && mark.signed_by.is_empty();
        if nothing_known && !key.generated && !new_key_allowed {
            return Decision::Refuse(format!(
                "this store was made by `leviathan {what}` from a log whose signers are not \
                 known here (its manifest names no checkpoint), so the key in {} ({name_id}) \
                 may be the one that signed it, and would then sign a forked log. Start with a \
                 new key: {}; or, if this key is new, start with LEVIATHAN_NEW_SIGNING_KEY=1",
                key.file.display(),
                if key.from_setting {
                    format!(
                        "unset LEVIATHAN_SIGNING_KEY_FILE with no key file at {} (one is \
                         generated there)",
                        key.default_file.display()
                    )
                } else {
                    "move that key file away (one is generated at this path)".to_string()
                },
            ));
        }
        return Decision::Record {
            reason: format!(
                "a new key after `leviathan {what}` of a log whose head was seq {} (signed by \
                 {}): checkpoints of the earlier keys beyond that size are not of this log",
                mark.tree_size,
                if !mark.signed_by.is_empty() {
                    mark.signed_by.join(", ")
                } else if let Some(r) = last {
                    key_name_id(&r.verifier_key).to_string()
                } else {
                    "keys not known here".to_string()
                }
            ),
            warn: true,
        };
    }
    if let Some((r, next)) = replaced {
        return Decision::Refuse(format!(
            "the key in {} ({name_id}) signed this log from tree size {} and was replaced at \
             tree size {next}: a replaced key never signs again (a copy of this log, restored \
             or imported elsewhere, may use it). Put the current signer's key file back ({}), or \
             sign with a new key: {}",
            key.file.display(),
            r.from_tree_size,
            last.map_or("-", |l| key_name_id(&l.verifier_key)),
            fix(true),
        ));
    }
    match last {
        None if key.generated && !replica_copy && !new_key_allowed => Decision::Refuse(format!(
            "this store holds {tree_size} events but no key file was found at {}: the key that \
             signed its checkpoints is missing. Put it back; or, if it is lost for good, start \
             once with LEVIATHAN_NEW_SIGNING_KEY=1 (a new key is generated and recorded from \
             tree size {tree_size} on, GET /v1/log/signers) and give auditors its verifier key",
            key.file.display()
        )),
        None => Decision::Record {
            reason: if key.generated && replica_copy {
                "generated for this PostgreSQL node's local copy of the log: every node must \
                 sign with the cluster's shared key (LEVIATHAN_SIGNING_KEY_FILE, docs/SCALING.md)"
                    .into()
            } else if key.generated {
                format!(
                    "a new key (LEVIATHAN_NEW_SIGNING_KEY=1) generated at a start that found no \
                     key file, for a log of {tree_size} events whose earlier signer is not recorded"
                )
            } else if replica_copy {
                "the key this PostgreSQL node signs with, recorded at its first start".into()
            } else {
                "recorded at start: this store's earlier signers are not recorded (it predates \
                 the record)"
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
             changes\"){}",
            key_name_id(&r.verifier_key),
            r.from_tree_size,
            if key.generated {
                "there is no key file".to_string()
            } else {
                format!("the key file holds {name_id}")
            },
            if key.generated {
                "and a new key would be generated"
            } else {
                "instead"
            },
            key.file.display(),
            if replica_copy {
                ". A PostgreSQL node that got a wrong key by mistake: start it with the cluster's \
                 shared key on an empty data dir instead (it refills from PostgreSQL)"
            } else {
                ""
            },
        )),
    }
}

/// Whether an offline command (`export`, `audit bundle --data-dir`) may sign
/// this store's checkpoints with `verifier_key`: only the recorded signer
/// may, and nothing before a restored or imported store's first start has
/// chosen its new key. A store that predates the record takes any.
pub fn check_offline(db: &fjall::Database, verifier_key: &str) -> anyhow::Result<()> {
    let record = Signers::open(db)?;
    if let Some(mark) = record.restored()? {
        anyhow::bail!(
            "this store was made by `leviathan {}` and has not chosen its signing key yet (the \
             key that signed its source may not sign it): start the server on it once, then \
             sign with the key it records (GET /v1/log/signers)",
            mark.from
        );
    }
    if let Some(last) = record.history()?.last() {
        if last.verifier_key != verifier_key {
            anyhow::bail!(
                "the key given ({}) is not this log's signer ({}, since tree size {}): sign with \
                 that key's file (--signing-key-file), or none",
                key_name_id(verifier_key),
                key_name_id(&last.verifier_key),
                last.from_tree_size
            );
        }
    }
    Ok(())
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
    const C: &str = "leviathan/cccccccc+cccccccc+CCCC";

    fn rec(key: &str, from: u64) -> SignerRecord {
        new_record(key, from, "test".into())
    }

    fn cand(key: &str, generated: bool) -> Candidate<'_> {
        Candidate {
            verifier_key: key,
            generated,
            file: Path::new("/k"),
            from_setting: false,
            default_file: Path::new("/k"),
        }
    }

    fn mark(signed_by: &[&str]) -> RestoredMark {
        RestoredMark {
            tree_size: 7,
            signed_by: signed_by.iter().map(|s| s.to_string()).collect(),
            restored_at: "t".into(),
            from: "restore".into(),
        }
    }

    fn refused(d: Decision) -> String {
        match d {
            Decision::Refuse(m) => m,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn key_name_id_stops_before_the_base64() {
        assert_eq!(key_name_id(B), "leviathan/bbbbbbbb+bbbbbbbb");
    }

    #[test]
    fn the_recorded_key_signs_and_another_is_refused_unless_allowed() {
        let h = vec![rec(A, 0)];
        assert_eq!(
            decide(&h, None, &cand(A, false), 10, false, false),
            Decision::Keep
        );
        let m = refused(decide(&h, None, &cand(B, false), 10, false, false));
        assert!(
            m.contains("leviathan/aaaaaaaa+aaaaaaaa") && m.contains("LEVIATHAN_NEW_SIGNING_KEY=1")
        );
        let m = refused(decide(&h, None, &cand(B, true), 10, false, false));
        assert!(m.contains("there is no key file"), "{m}");
        assert!(matches!(
            decide(&h, None, &cand(B, false), 10, true, false),
            Decision::Record { warn: true, .. }
        ));
        // Nothing logged: any key, silently.
        assert!(matches!(
            decide(&h, None, &cand(B, false), 0, false, false),
            Decision::Record { warn: false, .. }
        ));
    }

    #[test]
    fn a_replaced_key_never_signs_again() {
        let h = vec![rec(A, 0), rec(B, 5)];
        for allowed in [false, true] {
            let m = refused(decide(&h, None, &cand(A, false), 9, allowed, false));
            assert!(m.contains("was replaced at tree size 5"), "{m}");
        }
        assert_eq!(
            decide(&h, None, &cand(B, false), 9, false, false),
            Decision::Keep
        );
    }

    #[test]
    fn after_a_restore_no_key_that_signed_the_source_signs() {
        let h = vec![rec(A, 0), rec(B, 5)];
        for key in [A, B] {
            for allowed in [false, true] {
                let m = refused(decide(
                    &h,
                    Some(&mark(&[])),
                    &cand(key, false),
                    7,
                    allowed,
                    false,
                ));
                assert!(m.contains("leviathan restore"), "{m}");
            }
        }
        // Named by the backup's checkpoint only (a store before the record).
        let m = refused(decide(
            &[],
            Some(&mark(&["leviathan/aaaaaaaa+aaaaaaaa"])),
            &cand(A, false),
            7,
            true,
            false,
        ));
        assert!(m.contains("signed that log"), "{m}");
        // A new key: generated, or a file with a key never seen.
        assert!(matches!(
            decide(&h, Some(&mark(&[])), &cand(C, true), 7, false, false),
            Decision::Record { warn: true, reason } if reason.contains("seq 7")
        ));
        assert!(matches!(
            decide(&h, Some(&mark(&[])), &cand(C, false), 7, false, false),
            Decision::Record { .. }
        ));
        // Nothing known of the source's signers: a key file needs the flag.
        let m = refused(decide(
            &[],
            Some(&mark(&[])),
            &cand(C, false),
            7,
            false,
            false,
        ));
        assert!(m.contains("not known here"), "{m}");
        assert!(matches!(
            decide(&[], Some(&mark(&[])), &cand(C, false), 7, true, false),
            Decision::Record { .. }
        ));
        assert!(matches!(
            decide(&[], Some(&mark(&[])), &cand(C, true), 7, false, false),
            Decision::Record { .. }
        ));
    }

    #[test]
    fn a_postgres_node_restored_from_a_local_backup_keeps_the_shared_key() {
        let h = vec![rec(A, 0)];
        assert_eq!(
            decide(
                &h,
                Some(&mark(&["leviathan/aaaaaaaa+aaaaaaaa"])),
                &cand(A, false),
                7,
                false,
                true
            ),
            Decision::Keep
        );
    }

    /// The way to a new key the refusals give depends on where the key is:
    /// only the default path gets a key generated when its file is missing;
    /// a file LEVIATHAN_SIGNING_KEY_FILE names must exist.
    #[test]
    fn the_refusals_say_how_to_get_a_new_key_where_the_key_file_is() {
        let h = vec![rec(A, 0), rec(B, 5)];
        let from_setting = Candidate {
            verifier_key: A,
            generated: false,
            file: Path::new("/secrets/log.key"),
            from_setting: true,
            default_file: Path::new("/data/log-signing.key"),
        };
        for (history, restored, tree_size) in [(&h, Some(mark(&[])), 7), (&h, None, 9)] {
            let m = refused(decide(
                history,
                restored.as_ref(),
                &cand(A, false),
                tree_size,
                false,
                false,
            ));
            assert!(
                m.contains("move that key file away (a new key is then generated at this path)"),
                "{m}"
            );
            let m = refused(decide(
                history,
                restored.as_ref(),
                &from_setting,
                tree_size,
                false,
                false,
            ));
            assert!(!m.contains("move that key file away"), "{m}");
            assert!(
                m.contains("point LEVIATHAN_SIGNING_KEY_FILE at a new key")
                    && m.contains(
                        "or unset it (a new key is then generated at /data/log-signing.key"
                    ),
                "{m}"
            );
            // A replaced key's successor needs the flag; after a restore, not.
            assert_eq!(
                m.contains("LEVIATHAN_NEW_SIGNING_KEY=1"),
                restored.is_none(),
                "{m}"
            );
        }
        // Nothing known of a restored log's signers.
        let m = refused(decide(
            &[],
            Some(&mark(&[])),
            &from_setting,
            7,
            false,
            false,
        ));
        assert!(
            m.contains(
                "unset LEVIATHAN_SIGNING_KEY_FILE with no key file at /data/log-signing.key"
            ),
            "{m}"
        );
        let m = refused(decide(
            &[],
            Some(&mark(&[])),
            &cand(C, false),
            7,
            false,
            false,
        ));
        assert!(m.contains("move that key file away"), "{m}");
    }

    #[test]
    fn a_store_without_a_record_keeps_its_key_but_a_lost_one_needs_the_flag() {
        assert!(matches!(
            decide(&[], None, &cand(A, false), 5, false, false),
            Decision::Record { warn: false, .. }
        ));
        let m = refused(decide(&[], None, &cand(A, true), 5, false, false));
        assert!(m.contains("no key file was found"), "{m}");
        assert!(matches!(
            decide(&[], None, &cand(A, true), 5, true, false),
            Decision::Record { warn: true, .. }
        ));
        // A PostgreSQL node's local copy: recorded, with a warning.
        assert!(matches!(
            decide(&[], None, &cand(A, true), 5, false, true),
            Decision::Record { warn: true, reason } if reason.contains("shared key")
        ));
    }

    #[test]
    fn note_signers_reads_name_and_key_id() {
        let note = "o\n1\nAAAA\n\n\u{2014} leviathan/x q83vAAAA\n";
        assert_eq!(note_signers(note), vec!["leviathan/x+abcdef00".to_string()]);
    }
}
