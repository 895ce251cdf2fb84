//! Signed notes (C2SP `signed-note`) with Ed25519 keys, and the log's
//! checkpoints (C2SP `tlog-checkpoint`) written as such notes.
//!
//! - A note is text ending in a newline, a blank line, then signature lines
//!   `— <key name> <base64(key ID (4 bytes, BE) ‖ signature)>`. The signature
//!   covers the text including its final newline.
//! - key ID = SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ 32-byte public key)[:4]
//! - verifier key: `<name>+<8 hex digits of the key ID>+<base64(0x01 ‖ public key)>`
//! - signer key (the file format, as Go's `golang.org/x/mod/sumdb/note`
//!   writes it): `PRIVATE+KEY+<name>+<key ID hex>+<base64(0x01 ‖ 32-byte seed)>`
//!
//! A checkpoint's text: the origin (the key name), the tree size in decimal,
//! the base64 root hash, then three extension lines:
//! `chain-head <hex|null>`, `state-digest <hex>`, `projector-set <hex>`, and,
//! for a projector set with `async` projectors whose async lane had applied
//! the tree size when it was signed, a fourth:
//! `combined-state-digest <hex>`. A checkpoint without it (every all-inline
//! set's, and every checkpoint written before the line existed) is the same
//! text, byte for byte, as before.

use crate::digest::Sha256;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey, Verifier as _, VerifyingKey};

/// Ed25519's signature type byte in key IDs and key encodings.
const ED25519: u8 = 0x01;
/// Start of a signature line: U+2014 EM DASH and a space.
const SIG_PREFIX: &str = "\u{2014} ";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("not a signer key (expected PRIVATE+KEY+<name>+<id>+<base64>): {0}")]
    BadSignerKey(String),
    #[error("not a verifier key (expected <name>+<8 hex>+<base64(0x01 ‖ 32-byte key)>): {0}")]
    BadVerifierKey(String),
    #[error("malformed note: {0}")]
    Malformed(String),
    #[error("the note has no signature by {name}+{id:08x}")]
    NotSigned { name: String, id: u32 },
    #[error("the signature by {0} does not verify: the note was altered or signed by another key")]
    BadSignature(String),
    #[error("malformed checkpoint: {0}")]
    BadCheckpoint(String),
}

/// A key name: non-empty, no Unicode space, no `+`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+')
}

fn key_id(name: &str, public: &[u8; 32]) -> u32 {
    let d = Sha256::of_parts(&[name.as_bytes(), b"\n", &[ED25519], public]);
    u32::from_be_bytes([d.0[0], d.0[1], d.0[2], d.0[3]])
}

/// An Ed25519 note signer: a key name and its private key.
pub struct NoteSigner {
    name: String,
    key: SigningKey,
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key.
        write!(f, "NoteSigner({})", self.verifier_key())
    }
}

impl NoteSigner {
    /// A new key under `name` from 32 random bytes of the OS.
    pub fn generate(name: &str) -> Result<NoteSigner, NoteError> {
        if !valid_name(name) {
            return Err(NoteError::BadSignerKey(format!(
                "invalid key name {name:?} (non-empty, no spaces, no '+')"
            )));
        }
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)
            .map_err(|e| NoteError::BadSignerKey(format!("no randomness from the OS: {e}")))?;
        Ok(NoteSigner {
            name: name.to_string(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// A new key named `<prefix>/<first 8 hex digits of SHA-256(public key)>`.
    pub fn generate_keyed_name(prefix: &str) -> Result<NoteSigner, NoteError> {
        let mut s = Self::generate(prefix)?;
        let d = Sha256::of(s.key.verifying_key().as_bytes());
        s.name = format!("{prefix}/{}", &d.to_hex()[..8]);
        Ok(s)
    }

    /// Parses `PRIVATE+KEY+<name>+<id>+<base64(0x01 ‖ seed)>` (surrounding
    /// whitespace ignored).
    pub fn from_text(text: &str) -> Result<NoteSigner, NoteError> {
        let bad = |why: &str| NoteError::BadSignerKey(why.to_string());
        let rest = text
            .trim()
            .strip_prefix("PRIVATE+KEY+")
            .ok_or_else(|| bad("it does not start with PRIVATE+KEY+"))?;
        let mut parts = rest.splitn(3, '+');
        let (name, id, key) = match (parts.next(), parts.next(), parts.next()) {
            (Some(n), Some(i), Some(k)) => (n, i, k),
            _ => return Err(bad("expected three '+'-separated fields after PRIVATE+KEY")),
        };
        if !valid_name(name) {
            return Err(bad("invalid key name"));
        }
        let raw = B64.decode(key).map_err(|_| bad("the key is not base64"))?;
        if raw.len() != 33 || raw[0] != ED25519 {
            return Err(bad(
                "the key is not 0x01 followed by a 32-byte Ed25519 seed",
            ));
        }
        let seed: [u8; 32] = raw[1..].try_into().expect("32 bytes");
        let signer = NoteSigner {
            name: name.to_string(),
            key: SigningKey::from_bytes(&seed),
        };
        if id.len() != 8 || u32::from_str_radix(id, 16).ok() != Some(signer.key_id()) {
            return Err(bad("the key ID does not match the name and key"));
        }
        Ok(signer)
    }

    /// The signer key text (secret: file mode 0600).
    pub fn to_text(&self) -> String {
        let mut raw = vec![ED25519];
        raw.extend_from_slice(&self.key.to_bytes());
        format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.key_id(),
            B64.encode(raw)
        )
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        key_id(&self.name, self.key.verifying_key().as_bytes())
    }

    /// The verifier key string that auditors configure.
    pub fn verifier_key(&self) -> String {
        let mut raw = vec![ED25519];
        raw.extend_from_slice(self.key.verifying_key().as_bytes());
        format!("{}+{:08x}+{}", self.name, self.key_id(), B64.encode(raw))
    }

    /// Signs `text` (which must end in a newline): the whole signed note.
    pub fn sign(&self, text: &str) -> String {
        debug_assert!(text.ends_with('\n'));
        let sig = self.key.sign(text.as_bytes());
        let mut blob = self.key_id().to_be_bytes().to_vec();
        blob.extend_from_slice(&sig.to_bytes());
        format!("{text}\n{SIG_PREFIX}{} {}\n", self.name, B64.encode(blob))
    }
}

/// A verifier key: what an auditor trusts.
#[derive(Debug, Clone)]
pub struct NoteVerifier {
    name: String,
    id: u32,
    key: VerifyingKey,
}

impl NoteVerifier {
    /// Parses `<name>+<8 hex>+<base64(0x01 ‖ 32-byte key)>`.
    pub fn from_text(text: &str) -> Result<NoteVerifier, NoteError> {
        let t = text.trim();
        if t.contains("PRIVATE+KEY+") {
            // Never echo a signer key (into a terminal, a CI log…).
            return Err(NoteError::BadVerifierKey(
                "this is the signer's private key, not its verifier key: give the public one \
                 (GET /v1/log/public-key, or the verifier_key the server logs when it creates \
                 the key)"
                    .into(),
            ));
        }
        let bad = |why: &str| NoteError::BadVerifierKey(format!("{why}: {t:?}"));
        let mut parts = t.splitn(3, '+');
        let (name, id, key) = match (parts.next(), parts.next(), parts.next()) {
            (Some(n), Some(i), Some(k)) => (n, i, k),
            _ => return Err(bad("expected three '+'-separated fields")),
        };
        if !valid_name(name) || id.len() != 8 {
            return Err(bad("bad name or key ID"));
        }
        let id = u32::from_str_radix(id, 16).map_err(|_| bad("the key ID is not hex"))?;
        let raw = B64.decode(key).map_err(|_| bad("the key is not base64"))?;
        if raw.len() != 33 || raw[0] != ED25519 {
            return Err(bad("not an Ed25519 key (0x01 ‖ 32 bytes)"));
        }
        let public: [u8; 32] = raw[1..].try_into().expect("32 bytes");
        if key_id(name, &public) != id {
            return Err(bad("the key ID does not match the name and key"));
        }
        let key =
            VerifyingKey::from_bytes(&public).map_err(|_| bad("not a valid Ed25519 point"))?;
        Ok(NoteVerifier {
            name: name.to_string(),
            id,
            key,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks a signed note and returns its text. Signatures by other keys
    /// are ignored; the note must carry one by this key, and every one by
    /// this key must verify.
    pub fn open<'a>(&self, note: &'a str) -> Result<&'a str, NoteError> {
        let malformed = |why: &str| NoteError::Malformed(why.to_string());
        if note.chars().any(|c| c < ' ' && c != '\n') {
            return Err(malformed("control characters other than newline"));
        }
        if !note.ends_with('\n') {
            return Err(malformed("it does not end with a newline"));
        }
        // The text ends at the last blank line.
        let split = note
            .rfind("\n\n")
            .ok_or_else(|| malformed("no blank line before the signatures"))?;
        let text = &note[..split + 1];
        let sigs = &note[split + 2..];
        let mut found = false;
        for line in sigs.lines() {
            let rest = line
                .strip_prefix(SIG_PREFIX)
                .ok_or_else(|| malformed("a signature line does not start with an em dash"))?;
            let (name, b64) = rest
                .split_once(' ')
                .ok_or_else(|| malformed("a signature line has no signature"))?;
            let blob = B64
                .decode(b64)
                .map_err(|_| malformed("a signature is not base64"))?;
            if blob.len() < 4 {
                return Err(malformed("a signature is shorter than its key ID"));
            }
            let id = u32::from_be_bytes([blob[0], blob[1], blob[2], blob[3]]);
            if name != self.name || id != self.id {
                continue;
            }
            let sig = <[u8; 64]>::try_from(&blob[4..])
                .map(|b| ed25519_dalek::Signature::from_bytes(&b))
                .map_err(|_| NoteError::BadSignature(self.name.clone()))?;
            self.key
                .verify(text.as_bytes(), &sig)
                .map_err(|_| NoteError::BadSignature(self.name.clone()))?;
            found = true;
        }
        if !found {
            return Err(NoteError::NotSigned {
                name: self.name.clone(),
                id: self.id,
            });
        }
        Ok(text)
    }
}

/// A checkpoint's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub tree_size: u64,
    pub root: Sha256,
    /// The hash of the record at seq `tree_size` (`None` for the empty log).
    pub chain_head: Option<Sha256>,
    /// The live graph's state digest after seq `tree_size`.
    pub state_digest: Sha256,
    /// The fingerprint of the projector set that built that graph.
    pub projector_set: Sha256,
    /// A set with `async` projectors: the combined digest after seq
    /// `tree_size`, `SHA-256(state digest ‖ async lane's digest)`, covering
    /// every projector's ops (`None`: an all-inline set, or the async lane
    /// had not applied `tree_size` when the checkpoint was signed).
    pub combined_state_digest: Option<Sha256>,
}

/// The extension line of the combined digest.
pub const COMBINED_LINE: &str = "combined-state-digest";

impl Checkpoint {
    /// The note text (unsigned).
    pub fn text(&self) -> String {
        let mut t = format!(
            "{}\n{}\n{}\nchain-head {}\nstate-digest {}\nprojector-set {}\n",
            self.origin,
            self.tree_size,
            B64.encode(self.root.0),
            self.chain_head.map_or("null".into(), |h| h.to_hex()),
            self.state_digest,
            self.projector_set
        );
        if let Some(c) = &self.combined_state_digest {
            t.push_str(&format!("{COMBINED_LINE} {c}\n"));
        }
        t
    }

    /// Parses a checkpoint's text (as returned by [`NoteVerifier::open`]).
    pub fn parse(text: &str) -> Result<Checkpoint, NoteError> {
        let bad = |why: String| NoteError::BadCheckpoint(why);
        let lines: Vec<&str> = text
            .strip_suffix('\n')
            .ok_or_else(|| bad("no final newline".into()))?
            .split('\n')
            .collect();
        if lines.len() < 3 || lines.iter().any(|l| l.is_empty()) {
            return Err(bad("expected at least three non-empty lines".into()));
        }
        // Decimal digits only, no leading zero (C2SP tlog-checkpoint): one
        // text for each size, so `+3002` is not `3002`.
        let tree_size: u64 = Some(lines[1])
            .filter(|t| t.bytes().all(|b| b.is_ascii_digit()))
            .filter(|t| *t == "0" || !t.starts_with('0'))
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| bad(format!("bad tree size {:?}", lines[1])))?;
        let root = B64
            .decode(lines[2])
            .ok()
            .and_then(|b| Sha256::from_slice(&b))
            .ok_or_else(|| bad(format!("bad root hash {:?}", lines[2])))?;
        // An extension line by its key: absent, or exactly once.
        let find = |key: &str| -> Result<Option<&str>, NoteError> {
            let mut found = lines[3..]
                .iter()
                .filter_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')));
            let first = found.next();
            if found.next().is_some() {
                return Err(bad(format!("more than one {key} extension line")));
            }
            Ok(first)
        };
        let ext = |key: &str| -> Result<&str, NoteError> {
            find(key)?.ok_or_else(|| bad(format!("no {key} extension line")))
        };
        let hex = |key: &str| -> Result<Sha256, NoteError> {
            ext(key)?
                .parse()
                .map_err(|_| bad(format!("bad {key} extension line")))
        };
        let chain_head = match ext("chain-head")? {
            "null" => None,
            h => Some(
                h.parse::<Sha256>()
                    .map_err(|_| bad("bad chain-head".into()))?,
            ),
        };
        // The empty log, and only it, has no chain head and the root of the
        // empty tree (RFC 9162 §2.1.1: SHA-256 of the empty string).
        if (tree_size == 0) != chain_head.is_none() {
            return Err(bad(format!(
                "chain-head {} with tree size {tree_size}: only the empty log has a null one",
                chain_head.map_or("null".to_string(), |h: Sha256| h.to_hex())
            )));
        }
        if tree_size == 0 && root != crate::tlog::proof::EMPTY_ROOT {
            return Err(bad(format!(
                "the empty tree's root is {}, not {root}",
                crate::tlog::proof::EMPTY_ROOT
            )));
        }
        Ok(Checkpoint {
            origin: lines[0].to_string(),
            tree_size,
            root,
            chain_head,
            state_digest: hex("state-digest")?,
            projector_set: hex("projector-set")?,
            combined_state_digest: find(COMBINED_LINE)?
                .map(|h| {
                    h.parse()
                        .map_err(|_| bad(format!("bad {COMBINED_LINE} extension line")))
                })
                .transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example of golang.org/x/mod/sumdb/note: Ed25519 is deterministic,
    // so signing it must give the published note byte for byte.
    const SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const TEXT: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
    const NOTE: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    #[test]
    fn signs_and_opens_the_published_example() {
        let s = NoteSigner::from_text(SKEY).unwrap();
        assert_eq!(s.verifier_key(), VKEY);
        assert_eq!(s.to_text(), SKEY);
        assert_eq!(s.sign(TEXT), NOTE);
        let v = NoteVerifier::from_text(VKEY).unwrap();
        assert_eq!(v.open(NOTE).unwrap(), TEXT);
        let altered = NOTE.replace("cryptography", "cryptographY");
        assert!(matches!(v.open(&altered), Err(NoteError::BadSignature(_))));
        let other = NoteSigner::generate("PeterNeumann").unwrap();
        let v2 = NoteVerifier::from_text(&other.verifier_key()).unwrap();
        assert!(matches!(v2.open(NOTE), Err(NoteError::NotSigned { .. })));
    }

    #[test]
    fn a_signer_key_given_as_the_verifier_key_is_refused_without_echoing_it() {
        for text in [SKEY.to_string(), format!("  {SKEY}\n")] {
            let e = NoteVerifier::from_text(&text).unwrap_err().to_string();
            assert!(e.contains("signer's private key"), "{e}");
            assert!(
                !e.contains("AYEKFALV") && !e.contains("PeterNeumann"),
                "{e}"
            );
        }
    }

    #[test]
    fn checkpoint_round_trip() {
        let c = Checkpoint {
            origin: "example.com/log".into(),
            tree_size: 12,
            root: Sha256::of(b"r"),
            chain_head: Some(Sha256::of(b"h")),
            state_digest: Sha256::of(b"s"),
            projector_set: Sha256::of(b"p"),
            combined_state_digest: None,
        };
        assert_eq!(Checkpoint::parse(&c.text()).unwrap(), c);
        let empty = Checkpoint {
            tree_size: 0,
            chain_head: None,
            root: crate::tlog::proof::EMPTY_ROOT,
            ..c.clone()
        };
        assert_eq!(Checkpoint::parse(&empty.text()).unwrap(), empty);
        assert!(Checkpoint::parse("o\n012\nAA==\n").is_err());
        // One text per size; a null chain head and the empty tree's root only
        // for size 0.
        for size in ["+12", "012", " 12", "12 ", "1_2", "-0"] {
            let text = c.text().replacen("\n12\n", &format!("\n{size}\n"), 1);
            let e = Checkpoint::parse(&text).unwrap_err().to_string();
            assert!(e.contains("bad tree size"), "{size:?}: {e}");
        }
        let headless = Checkpoint {
            chain_head: None,
            ..c.clone()
        };
        let e = Checkpoint::parse(&headless.text()).unwrap_err().to_string();
        assert!(e.contains("only the empty log has a null one"), "{e}");
        let headed = Checkpoint {
            chain_head: Some(Sha256::of(b"h")),
            ..empty.clone()
        };
        assert!(Checkpoint::parse(&headed.text()).is_err());
        let rooted = Checkpoint {
            root: Sha256([0; 32]),
            ..empty
        };
        let e = Checkpoint::parse(&rooted.text()).unwrap_err().to_string();
        assert!(e.contains("the empty tree's root is"), "{e}");
    }

    #[test]
    fn the_combined_line_is_a_fourth_extension_line_only_when_known() {
        let inline = Checkpoint {
            origin: "example.com/log".into(),
            tree_size: 3,
            root: Sha256::of(b"r"),
            chain_head: Some(Sha256::of(b"h")),
            state_digest: Sha256::of(b"s"),
            projector_set: Sha256::of(b"p"),
            combined_state_digest: None,
        };
        // Without it, the text is the three-extension-line form, unchanged.
        let old = format!(
            "example.com/log\n3\n{}\nchain-head {}\nstate-digest {}\nprojector-set {}\n",
            B64.encode(Sha256::of(b"r").0),
            Sha256::of(b"h"),
            Sha256::of(b"s"),
            Sha256::of(b"p")
        );
        assert_eq!(inline.text(), old);
        assert_eq!(Checkpoint::parse(&old).unwrap(), inline);
        let with = Checkpoint {
            combined_state_digest: Some(Sha256::of(b"c")),
            ..inline.clone()
        };
        let text = with.text();
        assert_eq!(
            text,
            format!("{old}combined-state-digest {}\n", Sha256::of(b"c"))
        );
        assert_eq!(Checkpoint::parse(&text).unwrap(), with);
        // Signed, it verifies; a changed combined digest does not.
        let s = NoteSigner::generate("example.com/log").unwrap();
        let v = NoteVerifier::from_text(&s.verifier_key()).unwrap();
        let note = s.sign(&text);
        assert_eq!(Checkpoint::parse(v.open(&note).unwrap()).unwrap(), with);
        let forged = note.replace(&Sha256::of(b"c").to_hex(), &Sha256::of(b"d").to_hex());
        assert!(matches!(v.open(&forged), Err(NoteError::BadSignature(_))));
        // Malformed or repeated, it is refused.
        assert!(Checkpoint::parse(&format!("{old}combined-state-digest zz\n")).is_err());
        assert!(Checkpoint::parse(&format!(
            "{text}combined-state-digest {}\n",
            Sha256::of(b"c")
        ))
        .is_err());
        assert!(Checkpoint::parse(&format!("{old}state-digest {}\n", Sha256::of(b"x"))).is_err());
    }
}
