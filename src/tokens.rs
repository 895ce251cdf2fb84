//! Scoped bearer tokens: who may call what. A token is known only by the
//! SHA-256 of its bytes, with a name (the actor of server-made events, shown in
//! logs) and roles. The set comes from a tokens file (`LEVIATHAN_TOKENS_FILE`,
//! re-read on SIGHUP) and/or `LEVIATHAN_CONTROL_PLANE_TOKEN` (every role, named
//! `control-plane`). Raw tokens are never stored or logged.
//!
//! The file holds one token a line, `NAME ROLES SHA256HEX`, with `#` comments:
//!
//! ```text
//! # name        roles          sha256 of the token (leviathan token hash)
//! executor-1    ingest,read    9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//! ```

use crate::digest::Sha256;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use subtle::{ConditionallySelectable, ConstantTimeEq};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Ingest bundles and upload artifacts.
    Ingest,
    /// Every read route and the event stream.
    Read,
    /// Invalidation, backup, projector and checkpoint operations.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Ingest, Role::Read, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Role::Ingest => 1,
            Role::Read => 2,
            Role::Admin => 4,
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// A set of roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Roles(u8);

impl Roles {
    pub fn all() -> Roles {
        Roles(7)
    }

    pub fn contains(self, r: Role) -> bool {
        self.0 & r.bit() != 0
    }

    pub fn with(self, r: Role) -> Roles {
        Roles(self.0 | r.bit())
    }

    /// `ingest,read`, in a fixed order.
    pub fn parse(s: &str) -> Result<Roles, String> {
        let mut roles = Roles::default();
        for part in s.split(',') {
            let r = Role::parse(part).ok_or_else(|| {
                format!("unknown role {part:?} (the roles are ingest, read and admin, comma-separated, no spaces)")
            })?;
            roles = roles.with(r);
        }
        Ok(roles)
    }
}

impl std::fmt::Display for Roles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = Role::ALL
            .into_iter()
            .filter(|r| self.contains(*r))
            .map(Role::as_str)
            .collect();
        f.write_str(&names.join(","))
    }
}

/// Who made a request: the name and roles of the token it presented.
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: Arc<str>,
    pub roles: Roles,
}

#[derive(Debug, Clone)]
struct Entry {
    name: Arc<str>,
    roles: Roles,
    hash: [u8; 32],
}

/// The name of the token `LEVIATHAN_CONTROL_PLANE_TOKEN` defines.
pub const CONTROL_PLANE: &str = "control-plane";

/// A complete set of known tokens.
#[derive(Debug, Clone, Default)]
pub struct TokenSet {
    entries: Vec<Entry>,
}

/// A tokens file (or token) that cannot be used. The message names the file and line.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// `error` is not a `source`: the message shows it, once.
    #[error("cannot read the tokens file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error(
        "the tokens file {0} defines no token (a file being replaced can look empty: \
         write the new file beside it and rename it over the old one)"
    )]
    Empty(PathBuf),
    #[error("no token is configured: set LEVIATHAN_TOKENS_FILE (scoped tokens) and/or LEVIATHAN_CONTROL_PLANE_TOKEN (one admin token); see docs/SECURITY.md")]
    None,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

impl TokenSet {
    /// Parses a tokens file's text (`path` is only for messages).
    pub fn parse(path: &Path, text: &str) -> Result<TokenSet, TokensError> {
        let mut set = TokenSet::default();
        for (i, raw) in text.lines().enumerate() {
            let err = |message: String| TokensError::Line {
                path: path.to_path_buf(),
                line: i + 1,
                message,
            };
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split_ascii_whitespace().collect();
            let [name, roles, hash] = fields[..] else {
                return Err(err(format!(
                    "expected `NAME ROLES SHA256HEX` (3 fields), found {}; `leviathan token hash` prints a valid line",
                    fields.len()
                )));
            };
            if !valid_name(name) {
                return Err(err(format!(
                    "token name {name:?} must be 1 to 64 of A-Z a-z 0-9 - _ . @"
                )));
            }
            let roles = Roles::parse(roles).map_err(err)?;
            let hash = hash
                .to_ascii_lowercase()
                .parse::<Sha256>()
                .map_err(|_| {
                    err(format!(
                        "the third field must be the SHA-256 of the token, 64 hex digits (got {} characters); \
                         never put the token itself in this file",
                        fields[2].len()
                    ))
                })?
                .0;
            set.add(name, roles, hash).map_err(err)?;
        }
        if set.entries.is_empty() {
            return Err(TokensError::Empty(path.to_path_buf()));
        }
        Ok(set)
    }

    /// Reads and parses a tokens file.
    pub fn load(path: &Path) -> Result<TokenSet, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|error| TokensError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        TokenSet::parse(path, &text)
    }

    fn add(&mut self, name: &str, roles: Roles, hash: [u8; 32]) -> Result<(), String> {
        if self.entries.iter().any(|e| &*e.name == name) {
            return Err(format!("the token name {name:?} is used twice"));
        }
        if self.entries.iter().any(|e| e.hash == hash) {
            return Err(format!(
                "token {name:?} has the same hash as another token: give each client its own token"
            ));
        }
        self.entries.push(Entry {
            name: name.into(),
            roles,
            hash,
        });
        Ok(())
    }

    /// Adds the `LEVIATHAN_CONTROL_PLANE_TOKEN` token (every role).
    pub fn with_control_plane(mut self, token: &[u8]) -> Result<TokenSet, String> {
        self.add(CONTROL_PLANE, Roles::all(), Sha256::of(token).0)?;
        Ok(self)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The token whose SHA-256 is `digest`. Every entry is compared, in constant
    /// time, whatever matches: the time taken says nothing about which entry (or
    /// how many bytes of one) matched.
    pub fn lookup(&self, digest: &[u8; 32]) -> Option<Principal> {
        let mut found: u32 = u32::MAX;
        for (i, e) in self.entries.iter().enumerate() {
            let hit = e.hash.ct_eq(digest);
            found = u32::conditional_select(&found, &(i as u32), hit);
        }
        let e = self.entries.get(found as usize)?;
        Some(Principal {
            name: e.name.clone(),
            roles: e.roles,
        })
    }
}

/// Where the token set comes from, and the live set (swapped whole on reload:
/// a request sees the old set or the new one, never a mix).
#[derive(Debug, Clone)]
pub struct Tokens {
    file: Option<PathBuf>,
    control_plane: Option<Sha256>,
    live: Arc<RwLock<Arc<TokenSet>>>,
    /// Counts reloads: long-lived requests (event streams) watch it to check
    /// their token again, so a revoked token stops being served at once.
    reloads: Arc<tokio::sync::watch::Sender<u64>>,
}

/// A bearer token given in the environment. Its `Debug` never shows the secret.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Tokens {
    /// Loads the tokens: from `file` and/or the control-plane token. Refuses
    /// neither, and a bad file.
    pub fn load(
        file: Option<PathBuf>,
        control_plane: Option<&Secret>,
    ) -> Result<Tokens, TokensError> {
        let control_plane = control_plane.map(|s| Sha256::of(s.0.as_bytes()));
        let set = build(file.as_deref(), control_plane.as_ref())?;
        Ok(Tokens {
            file,
            control_plane,
            live: Arc::new(RwLock::new(Arc::new(set))),
            reloads: Arc::new(tokio::sync::watch::Sender::new(0)),
        })
    }

    /// Changes at every reload of the set.
    pub fn reloads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reloads.subscribe()
    }

    /// The current set.
    pub fn current(&self) -> Arc<TokenSet> {
        match self.live.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Re-reads the tokens file. On any error the current set stays in force.
    /// Returns the number of tokens now known.
    pub fn reload(&self) -> Result<usize, TokensError> {
        let set = build(self.file.as_deref(), self.control_plane.as_ref())?;
        let n = set.len();
        let set = Arc::new(set);
        match self.live.write() {
            Ok(mut g) => *g = set,
            Err(poisoned) => *poisoned.into_inner() = set,
        }
        self.reloads.send_modify(|n| *n += 1);
        Ok(n)
    }
}

fn build(file: Option<&Path>, control_plane: Option<&Sha256>) -> Result<TokenSet, TokensError> {
    let mut set = match file {
        Some(path) => TokenSet::load(path)?,
        None => TokenSet::default(),
    };
    if let Some(h) = control_plane {
        set.add(CONTROL_PLANE, Roles::all(), h.0)
            .map_err(|message| TokensError::Line {
                path: file.map(Path::to_path_buf).unwrap_or_default(),
                // The file's line that names it (the file was just read).
                line: file
                    .and_then(|f| std::fs::read_to_string(f).ok())
                    .and_then(|text| {
                        text.lines().position(|l| {
                            l.split('#').next().unwrap_or("").split_whitespace().next()
                                == Some(CONTROL_PLANE)
                        })
                    })
                    .map_or(0, |i| i + 1),
                message: format!(
                    "{message} (the name {CONTROL_PLANE:?} is reserved for LEVIATHAN_CONTROL_PLANE_TOKEN)"
                ),
            })?;
    }
    if set.is_empty() {
        return Err(TokensError::None);
    }
    Ok(set)
}

/// The tokens-file line for `token` (what `leviathan token hash` prints).
pub fn file_line(name: &str, roles: Roles, token: &[u8]) -> Result<String, String> {
    if !valid_name(name) {
        return Err(format!(
            "token name {name:?} must be 1 to 64 of A-Z a-z 0-9 - _ . @"
        ));
    }
    if roles == Roles::default() {
        return Err("give the token at least one role (ingest, read, admin)".into());
    }
    Ok(format!("{name} {roles} {}", Sha256::of(token).to_hex()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("tokens")
    }

    #[test]
    fn parses_lines_comments_and_roles() {
        let a = Sha256::of(b"a").to_hex();
        let b = Sha256::of(b"b").to_hex().to_ascii_uppercase();
        let text = format!("# header\n\n exec-1  ingest,read {a}  # trailing\nops admin {b}\n");
        let set = TokenSet::parse(p(), &text).expect("valid file");
        assert_eq!(set.len(), 2);
        let e = set.lookup(&Sha256::of(b"a").0).expect("known");
        assert_eq!(&*e.name, "exec-1");
        assert!(e.roles.contains(Role::Ingest) && e.roles.contains(Role::Read));
        assert!(!e.roles.contains(Role::Admin));
        assert_eq!(e.roles.to_string(), "ingest,read");
        let o = set
            .lookup(&Sha256::of(b"b").0)
            .expect("uppercase hex accepted");
        assert_eq!(o.roles.to_string(), "admin");
        assert!(set.lookup(&Sha256::of(b"c").0).is_none());
    }

    #[test]
    fn the_reserved_name_in_the_file_is_refused_at_its_line_and_a_missing_file_said_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        let a = Sha256::of(b"a").to_hex();
        std::fs::write(
            &file,
            format!("# ops\nops read {a}\ncontrol-plane admin {a}\n"),
        )
        .unwrap();
        let cp = Sha256::of(b"cp");
        let e = build(Some(&file), Some(&cp)).unwrap_err().to_string();
        assert!(e.contains("tokens:3:"), "{e}");
        let missing = dir.path().join("nope");
        let e = TokenSet::load(&missing).unwrap_err();
        assert_eq!(std::error::Error::source(&e).map(|s| s.to_string()), None);
        assert_eq!(e.to_string().matches("os error 2").count(), 1, "{e}");
    }

    #[test]
    fn refuses_bad_lines_with_the_line_number() {
        let a = Sha256::of(b"a").to_hex();
        for (text, needle) in [
            ("x read\n".to_string(), "3 fields"),
            (format!("x write {a}\n"), "unknown role \"write\""),
            (format!("x read,,admin {a}\n"), "unknown role \"\""),
            (
                "x read secret-token\n".to_string(),
                "never put the token itself",
            ),
            (format!("bad/name read {a}\n"), "token name"),
            (
                format!("x read {a}\nx admin {}\n", Sha256::of(b"b").to_hex()),
                "used twice",
            ),
            (format!("x read {a}\ny admin {a}\n"), "same hash"),
        ] {
            let e = TokenSet::parse(p(), &text).expect_err(&text).to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
            assert!(e.starts_with("tokens:"), "{e}");
        }
        let e = TokenSet::parse(p(), "# nothing\n").expect_err("empty");
        assert!(matches!(e, TokensError::Empty(_)), "{e}");
    }

    #[test]
    fn control_plane_token_has_every_role_and_a_reserved_name() {
        let t = Tokens::load(None, Some(&Secret("s3cret".into()))).expect("env token alone");
        let pr = t.current().lookup(&Sha256::of(b"s3cret").0).expect("known");
        assert_eq!(&*pr.name, CONTROL_PLANE);
        assert_eq!(pr.roles, Roles::all());
        assert!(matches!(Tokens::load(None, None), Err(TokensError::None)));
    }

    #[test]
    fn a_bad_reload_keeps_the_old_set() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("tokens");
        std::fs::write(
            &f,
            file_line("a", Roles::parse("read").expect("r"), b"ta").expect("l"),
        )
        .expect("w");
        let t = Tokens::load(Some(f.clone()), None).expect("load");
        std::fs::write(&f, "a read nothex\n").expect("w");
        assert!(t.reload().is_err());
        assert!(t.current().lookup(&Sha256::of(b"ta").0).is_some());
        std::fs::write(&f, file_line("b", Roles::all(), b"tb").expect("l")).expect("w");
        assert_eq!(t.reload().expect("good file"), 1);
        assert!(t.current().lookup(&Sha256::of(b"ta").0).is_none());
        assert!(t.current().lookup(&Sha256::of(b"tb").0).is_some());
    }
}
