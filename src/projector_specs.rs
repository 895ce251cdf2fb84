//! Which projectors a server runs: the embedded, pinned core projector and any
//! component files an operator adds, each optionally pinned by SHA-256, with
//! per-projector limits; and the set's fingerprint, stored with the graph so
//! that a server never serves a graph built by other projectors. It owns the
//! `LEVIATHAN_PROJECTORS` syntax and loading; it never projects anything.
//!
//! Syntax: a comma-separated list of entries, in projection order. An entry is
//! `core` (the embedded core projector) or a path to a component file, followed
//! by optional `#key=value` settings: `sha256=<hex>` (refuse to start unless the
//! file has that digest), `fuel=<n>`, `memory_mib=<n>`, `tables=<n>` (table
//! elements), `instances=<n>`. Example:
//! `core,/etc/leviathan/team.wasm#sha256=ab12…#fuel=20000000`.

use crate::digest::Sha256;
use crate::projection::{Limits, ProjectorSet, ProjectorSource};
use std::path::{Path, PathBuf};

/// The pinned core projector component (built by `projectors/build.sh`).
pub const CORE_WASM: &[u8] = include_bytes!("../projectors/dist/core.wasm");
/// Its SHA-256, as pinned next to it.
pub const CORE_SHA256: &str = include_str!("../projectors/dist/core.wasm.sha256");

#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Core,
    File(PathBuf),
}

/// One entry of `LEVIATHAN_PROJECTORS`.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub source: Source,
    pub pin: Option<Sha256>,
    pub limits: Limits,
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("LEVIATHAN_PROJECTORS entry {entry:?}: {reason}")]
    Syntax { entry: String, reason: String },
    #[error("LEVIATHAN_PROJECTORS is empty: name at least `core`")]
    Empty,
    #[error("cannot read projector {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "projector {path} is not a regular file ({kind}): a component must be a file \
         (a symlink to one is fine)"
    )]
    NotAFile { path: PathBuf, kind: &'static str },
    #[error(
        "projector {path} is {size} bytes, over the cap of {cap} bytes \
         (LEVIATHAN_MAX_PROJECTOR_BYTES): refusing to load it"
    )]
    TooLarge { path: PathBuf, size: u64, cap: u64 },
    #[error("projector {path} has SHA-256 {actual}, but its pin says {pinned}: refusing to run an unpinned projector")]
    PinMismatch {
        path: String,
        pinned: Sha256,
        actual: Sha256,
    },
    #[error("loading projectors")]
    Load(#[from] crate::projection::LoadError),
}

/// Parses a `LEVIATHAN_PROJECTORS` value.
pub fn parse(value: &str) -> Result<Vec<Spec>, SpecError> {
    let mut out = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let syntax = |reason: String| SpecError::Syntax {
            entry: entry.to_string(),
            reason,
        };
        let mut parts = entry.split('#');
        let head = parts.next().unwrap_or_default();
        let source = if head == "core" {
            Source::Core
        } else {
            Source::File(PathBuf::from(head))
        };
        let mut spec = Spec {
            source,
            pin: None,
            limits: Limits::default(),
        };
        for setting in parts {
            let (k, v) = setting
                .split_once('=')
                .ok_or_else(|| syntax(format!("setting {setting:?} is not key=value")))?;
            let number = || {
                v.parse::<u64>()
                    .map_err(|_| syntax(format!("{k} must be a whole number, got {v:?}")))
            };
            match k {
                "sha256" => {
                    spec.pin = Some(
                        v.parse()
                            .map_err(|e: crate::digest::ParseSha256Error| syntax(e.to_string()))?,
                    )
                }
                "fuel" => spec.limits.fuel = number()?,
                "memory_mib" => spec.limits.memory_bytes = (number()? as usize) << 20,
                "tables" => spec.limits.table_elements = number()? as usize,
                "instances" => spec.limits.instances = number()? as usize,
                other => {
                    return Err(syntax(format!(
                        "unknown setting {other:?} (known: sha256, fuel, memory_mib, tables, instances)"
                    )))
                }
            }
        }
        out.push(spec);
    }
    if out.is_empty() {
        return Err(SpecError::Empty);
    }
    Ok(out)
}

/// Largest projector component read by default: a componentize-py component
/// is about 18 MB, a ComponentizeJS one 12 MB, the core one 0.1 MB.
pub const DEFAULT_MAX_COMPONENT_BYTES: u64 = 128 << 20;

/// Reads a component file: a regular file (after symlinks) of at most `cap`
/// bytes, so that `/dev/zero` or a huge file is refused before it is read.
fn read_component(path: &Path, cap: u64) -> Result<Vec<u8>, SpecError> {
    use std::io::Read;
    let read_err = |source| SpecError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        let kind = if meta.is_dir() {
            "a directory"
        } else {
            "a device, pipe or socket"
        };
        return Err(SpecError::NotAFile {
            path: path.to_path_buf(),
            kind,
        });
    }
    if meta.len() > cap {
        return Err(SpecError::TooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
            cap,
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // `take` also bounds a file that grows while it is read.
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > cap {
        return Err(SpecError::TooLarge {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
            cap,
        });
    }
    Ok(bytes)
}

/// Reads, checks pins and loads a projector set (compiled forms cached in
/// `cache_dir`); component files over `max_bytes` are refused.
pub fn load(
    specs: &[Spec],
    cache_dir: Option<&Path>,
    max_bytes: u64,
) -> Result<ProjectorSet, SpecError> {
    let mut sources = Vec::with_capacity(specs.len());
    for spec in specs {
        let (bytes, name) = match &spec.source {
            Source::Core => (CORE_WASM.to_vec(), "core (embedded)".to_string()),
            Source::File(p) => (read_component(p, max_bytes)?, p.display().to_string()),
        };
        let pinned = match (&spec.source, spec.pin) {
            (_, Some(pin)) => Some(pin),
            (Source::Core, None) => CORE_SHA256.trim().parse().ok(),
            _ => None,
        };
        if let Some(pinned) = pinned {
            let actual = Sha256::of(&bytes);
            if actual != pinned {
                return Err(SpecError::PinMismatch {
                    path: name,
                    pinned,
                    actual,
                });
            }
        }
        sources.push(ProjectorSource {
            bytes,
            limits: spec.limits.clone(),
        });
    }
    Ok(ProjectorSet::load(sources, cache_dir)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entries_and_settings() {
        let specs = parse(&format!(
            "core, /x/team.wasm#sha256={}#fuel=10#memory_mib=2#tables=100#instances=4",
            "ab".repeat(32)
        ))
        .unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].source, Source::Core);
        assert_eq!(specs[1].source, Source::File("/x/team.wasm".into()));
        assert_eq!(specs[1].limits.fuel, 10);
        assert_eq!(specs[1].limits.memory_bytes, 2 << 20);
        assert_eq!(
            (specs[1].limits.table_elements, specs[1].limits.instances),
            (100, 4)
        );
        assert!(specs[1].pin.is_some());
        assert!(parse("").is_err());
        assert!(parse("core#fuel=lots").is_err());
        assert!(parse("core#colour=red").is_err());
        assert!(parse("x.wasm#sha256=zz").is_err());
    }

    #[test]
    fn the_embedded_core_matches_its_pin() {
        assert_eq!(Sha256::of(CORE_WASM).to_hex(), CORE_SHA256.trim());
    }
}
