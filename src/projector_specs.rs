//! Which projectors a server runs: the embedded, pinned core projector and any
//! component files an operator adds, each optionally pinned by SHA-256, with
//! per-projector limits and error policy; and the set's fingerprint, stored
//! with the graph so that a server never serves a graph built by other
//! projectors. It owns the `LEVIATHAN_PROJECTORS` syntax (the manifest's is in
//! `manifest`) and the deploy-time checks of a set (pins, names, type
//! ownership, test vectors); it never projects anything.
//!
//! Syntax: a comma-separated list of entries, in projection order. An entry is
//! `core` (the embedded core projector) or a path to a component file, followed
//! by optional `#key=value` settings: `sha256=<hex>` (refuse to start unless the
//! file has that digest), `fuel=<n>`, `memory_mib=<n>`, `tables=<n>` (table
//! elements), `instances=<n>`, `on_error=reject|record`, `mode=inline|async`. Example:
//! `core,/etc/leviathan/team.wasm#sha256=ab12…#fuel=20000000`.

use crate::digest::Sha256;
use crate::projection::{Limits, LoadError, Mode, OnError, ProjectorSet, ProjectorSource};
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

/// Where a [`Spec`] was written, for messages.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// Entry `index` (from 0) of `LEVIATHAN_PROJECTORS`.
    Inline { index: usize },
    /// A projector manifest.
    Manifest { file: PathBuf },
}

/// One projector to run: an entry of `LEVIATHAN_PROJECTORS` or of a manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub source: Source,
    pub pin: Option<Sha256>,
    pub limits: Limits,
    pub on_error: OnError,
    /// `inline` (in the writer's batch) or `async` (by the follower).
    pub mode: Mode,
    /// The name `describe` must report (manifest entries).
    pub name: Option<String>,
    /// Test vectors to run at load (manifest entries).
    pub test_vectors: Option<PathBuf>,
    pub origin: Origin,
}

impl Spec {
    /// The projector's name in a short list: the manifest's name, else its
    /// file's name (`core` for the builtin).
    pub fn short_name(&self) -> String {
        match (&self.name, &self.source) {
            (Some(name), _) => name.clone(),
            (None, Source::Core) => "core".to_string(),
            (None, Source::File(p)) => p.file_name().map_or_else(
                || p.display().to_string(),
                |f| f.to_string_lossy().into_owned(),
            ),
        }
    }

    /// How start-up messages name this projector: its name, its file and
    /// where it was configured.
    pub fn who(&self) -> String {
        let source = match &self.source {
            Source::Core => "builtin core".to_string(),
            Source::File(p) => format!("file {}", p.display()),
        };
        match (&self.name, &self.origin) {
            (Some(name), Origin::Manifest { file }) => {
                format!("projector {name:?} ({source}, manifest {})", file.display())
            }
            (_, Origin::Inline { index }) => {
                format!("projector {source} (LEVIATHAN_PROJECTORS entry #{index})")
            }
            (None, Origin::Manifest { file }) => {
                format!("projector {source} (manifest {})", file.display())
            }
        }
    }
}

/// The configured projectors: `LEVIATHAN_PROJECTORS` or a manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Configured {
    pub specs: Vec<Spec>,
    /// The manifest's top-level settings (defaults for an inline list).
    pub settings: crate::manifest::Settings,
    /// The manifest file, when one was used.
    pub manifest: Option<PathBuf>,
}

/// The projectors named by `LEVIATHAN_PROJECTORS` (`inline`, `None` when
/// unset: `core`) or `LEVIATHAN_PROJECTORS_FILE` (`file`); both is refused.
pub fn configured(inline: Option<&str>, file: Option<&Path>) -> Result<Configured, SpecError> {
    let inline = inline.filter(|v| !v.trim().is_empty());
    let file = file.filter(|f| !f.as_os_str().is_empty());
    match (inline, file) {
        (Some(_), Some(f)) => Err(SpecError::Both {
            file: f.to_path_buf(),
        }),
        (_, Some(f)) => {
            let m = crate::manifest::read(f)?;
            Ok(Configured {
                specs: m.specs,
                settings: m.settings,
                manifest: Some(m.file),
            })
        }
        (inline, None) => Ok(Configured {
            specs: parse(inline.unwrap_or("core"))?,
            settings: Default::default(),
            manifest: None,
        }),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("LEVIATHAN_PROJECTORS entry {entry:?}: {reason}")]
    Syntax { entry: String, reason: String },
    #[error("LEVIATHAN_PROJECTORS is empty: name at least `core`")]
    Empty,
    #[error(
        "both LEVIATHAN_PROJECTORS and LEVIATHAN_PROJECTORS_FILE ({}) are set: configure the \
         projectors in one place (the manifest can list `core` too)",
        .file.display()
    )]
    Both { file: PathBuf },
    #[error("cannot read the projector manifest {}: {error}", .file.display())]
    ManifestRead {
        file: PathBuf,
        error: std::io::Error,
    },
    #[error("projector manifest {}: {reason}", .file.display())]
    Manifest { file: PathBuf, reason: String },
    /// A problem with one projector: `who` names it (name, file, where it
    /// was configured), `source` says what.
    #[error("{who}")]
    At {
        who: String,
        #[source]
        source: Box<SpecError>,
    },
    #[error(
        "describe() reports the name {actual:?}, but the manifest calls it {expected:?}: \
         fix the manifest's `name` (or check that `path` is the right component)"
    )]
    NameMismatch { expected: String, actual: String },
    #[error(
        "{kind} type {type_name:?} is declared by both {first} and {second}: each node and edge \
         type has one owning projector, so that no projector clobbers another's data"
    )]
    SharedType {
        kind: &'static str,
        type_name: String,
        first: String,
        second: String,
    },
    #[error("test vectors {}", .file.display())]
    Vectors {
        file: PathBuf,
        #[source]
        source: crate::vectors::VectorError,
    },
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
    #[error("projector {path}: its pin expects SHA-256 {pinned}, the actual SHA-256 is {actual}: refusing to run a projector that is not the pinned one")]
    PinMismatch {
        path: String,
        pinned: Sha256,
        actual: Sha256,
    },
    #[error("loading projectors")]
    Load(#[from] LoadError),
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
            on_error: OnError::Reject,
            mode: Mode::Inline,
            name: None,
            test_vectors: None,
            origin: Origin::Inline { index: out.len() },
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
                "on_error" => spec.on_error = v.parse().map_err(syntax)?,
                "mode" => spec.mode = v.parse().map_err(syntax)?,
                other => {
                    return Err(syntax(format!(
                        "unknown setting {other:?} (known: sha256, fuel, memory_mib, tables, \
                         instances, on_error, mode)"
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
/// `cache_dir`); component files over `max_bytes` are refused. Then the
/// deploy-time checks: each manifest name equals what `describe` reports, no
/// node or edge type is declared by two projectors, and every projector's
/// test vectors pass. Each refusal names the projector and its file.
pub fn load(
    specs: &[Spec],
    cache_dir: Option<&Path>,
    max_bytes: u64,
) -> Result<ProjectorSet, SpecError> {
    load_with_sources(specs, cache_dir, max_bytes).map(|(set, _)| set)
}

/// [`load`], also returning the sources it loaded (component bytes, limits,
/// policies), which the generations catalog keeps.
pub fn load_with_sources(
    specs: &[Spec],
    cache_dir: Option<&Path>,
    max_bytes: u64,
) -> Result<(ProjectorSet, Vec<ProjectorSource>), SpecError> {
    let at = |spec: &Spec, e: SpecError| SpecError::At {
        who: spec.who(),
        source: Box::new(e),
    };
    let mut sources = Vec::with_capacity(specs.len());
    for spec in specs {
        let (bytes, name) = match &spec.source {
            Source::Core => (CORE_WASM.to_vec(), "core (embedded)".to_string()),
            Source::File(p) => (
                read_component(p, max_bytes).map_err(|e| at(spec, e))?,
                p.display().to_string(),
            ),
        };
        let pinned = match (&spec.source, spec.pin) {
            (_, Some(pin)) => Some(pin),
            (Source::Core, None) => CORE_SHA256.trim().parse().ok(),
            _ => None,
        };
        if let Some(pinned) = pinned {
            let actual = Sha256::of(&bytes);
            if actual != pinned {
                return Err(at(
                    spec,
                    SpecError::PinMismatch {
                        path: name,
                        pinned,
                        actual,
                    },
                ));
            }
        }
        sources.push(ProjectorSource {
            bytes,
            limits: spec.limits.clone(),
            on_error: spec.on_error,
            mode: spec.mode,
        });
    }
    let set = ProjectorSet::load(sources.clone(), cache_dir).map_err(|e| {
        let index = match &e {
            LoadError::Limits { index, .. } | LoadError::Component { index, .. } => Some(*index),
            LoadError::Duplicate { second, .. } => Some(*second),
            LoadError::Engine(_) => None,
        };
        match index.and_then(|i| specs.get(i)) {
            Some(spec) => at(spec, SpecError::Load(e)),
            None => SpecError::Load(e),
        }
    })?;
    let infos = set.projectors();
    for (spec, info) in specs.iter().zip(infos) {
        if let Some(expected) = &spec.name {
            if *expected != info.name {
                return Err(at(
                    spec,
                    SpecError::NameMismatch {
                        expected: expected.clone(),
                        actual: info.name.clone(),
                    },
                ));
            }
        }
    }
    for (i, info) in infos.iter().enumerate() {
        for (j, other) in infos.iter().enumerate().skip(i + 1) {
            for (kind, mine, theirs) in [
                ("node", &info.node_types, &other.node_types),
                ("edge", &info.edge_types, &other.edge_types),
            ] {
                if let Some(t) = mine.iter().find(|t| theirs.contains(t)) {
                    return Err(SpecError::SharedType {
                        kind,
                        type_name: t.clone(),
                        first: specs[i].who(),
                        second: specs[j].who(),
                    });
                }
            }
        }
    }
    for (index, spec) in specs.iter().enumerate() {
        if let Some(file) = &spec.test_vectors {
            let passed = crate::vectors::run_file(&set, index, file).map_err(|source| {
                at(
                    spec,
                    SpecError::Vectors {
                        file: file.clone(),
                        source,
                    },
                )
            })?;
            tracing::info!(projector = %set.label(index), vectors = passed, file = %file.display(), "test vectors passed");
        }
    }
    Ok((set, sources))
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
        let modes = parse("core, /x/team.wasm#mode=async#on_error=record").unwrap();
        assert_eq!((modes[0].mode, modes[1].mode), (Mode::Inline, Mode::Async));
        let e = parse("core#mode=later").unwrap_err().to_string();
        assert!(e.contains("inline") && e.contains("later"), "{e}");
    }

    #[test]
    fn the_embedded_core_matches_its_pin() {
        assert_eq!(Sha256::of(CORE_WASM).to_hex(), CORE_SHA256.trim());
    }

    /// The host resets all of an instance's memory after every event, so
    /// the core's size is a per-event cost: one 64 KiB page (a 16 KiB stack,
    /// projectors/build.sh) is half the reset of two. A rebuild with a
    /// bigger stack or more static data would silently double it.
    #[test]
    fn the_embedded_core_needs_one_page_of_memory() {
        let engine = wasmtime::Engine::default();
        let component = wasmtime::component::Component::new(&engine, CORE_WASM).unwrap();
        let needs = component.resources_required().unwrap();
        assert_eq!(needs.num_memories, 1);
        assert_eq!(needs.max_initial_memory_size, Some(1), "pages of 64 KiB");
    }
}
