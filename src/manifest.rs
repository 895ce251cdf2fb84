//! The projector manifest (`LEVIATHAN_PROJECTORS_FILE` / `--projectors-file`):
//! a TOML file listing the projectors a deployment runs, in order, with their
//! source, pin, limits, error policy and test vectors (docs/PROJECTORS.md has
//! the format). It owns the file's syntax and turns it into the same
//! `projector_specs::Spec`s as the inline `LEVIATHAN_PROJECTORS` list, so the
//! same set gives the same fingerprint either way. It never loads a component.

use crate::projection::{Limits, Mode, OnError};
use crate::projector_specs::{Origin, Source, Spec, SpecError};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Largest manifest file read, in bytes.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// Settings of the manifest's top level (for generations, later work; they
/// are parsed, checked and kept).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// Most recorded errors a newly built generation may have and still go live.
    pub max_build_errors: u64,
    /// Keep the previous generation after a switch (for a fast roll back).
    pub keep_previous: bool,
}

/// A parsed manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub file: PathBuf,
    pub settings: Settings,
    pub specs: Vec<Spec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    max_build_errors: u64,
    #[serde(default)]
    keep_previous: bool,
    #[serde(default)]
    projector: Vec<EntryDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryDoc {
    name: String,
    builtin: Option<String>,
    path: Option<PathBuf>,
    sha256: Option<String>,
    #[serde(default)]
    on_error: OnError,
    #[serde(default)]
    mode: Mode,
    test_vectors: Option<PathBuf>,
    limits: Option<LimitsDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsDoc {
    fuel: Option<u64>,
    memory_mib: Option<u64>,
    tables: Option<u64>,
    instances: Option<u64>,
}

/// Reads and checks the manifest at `file`.
pub fn read(file: &Path) -> Result<Manifest, SpecError> {
    use std::io::Read;
    let read_err = |error| SpecError::ManifestRead {
        file: file.to_path_buf(),
        error,
    };
    let mut text = String::new();
    std::fs::File::open(file)
        .map_err(read_err)?
        .take(MAX_MANIFEST_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    if text.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(manifest_err(
            file,
            format!("the file is over {MAX_MANIFEST_BYTES} bytes"),
        ));
    }
    parse(file, &text)
}

fn manifest_err(file: &Path, reason: String) -> SpecError {
    SpecError::Manifest {
        file: file.to_path_buf(),
        reason,
    }
}

/// Parses manifest text; `file` names it in errors, and its directory is
/// where relative paths start.
pub fn parse(file: &Path, text: &str) -> Result<Manifest, SpecError> {
    let doc: FileDoc = toml::from_str(text)
        .map_err(|e| manifest_err(file, e.to_string().trim_end().replace('\n', " | ")))?;
    let base = file.parent().unwrap_or(Path::new("."));
    let resolve = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    if doc.projector.is_empty() {
        return Err(manifest_err(
            file,
            "no [[projector]] entries: list at least the core one \
             (`[[projector]]`, `name = \"core\"`, `builtin = \"core\"`)"
                .into(),
        ));
    }
    let mut specs = Vec::with_capacity(doc.projector.len());
    for (index, e) in doc.projector.into_iter().enumerate() {
        let entry_err = |reason: String| {
            manifest_err(file, format!("projector #{index} ({:?}): {reason}", e.name))
        };
        if e.name.trim().is_empty() {
            return Err(entry_err("`name` is empty".into()));
        }
        if specs
            .iter()
            .any(|s: &Spec| s.name.as_deref() == Some(e.name.as_str()))
        {
            return Err(entry_err("another entry has the same name".into()));
        }
        let source = match (&e.builtin, &e.path) {
            (Some(b), None) if b == "core" => Source::Core,
            (Some(b), None) => {
                return Err(entry_err(format!(
                    "builtin = {b:?}: the only builtin projector is \"core\""
                )))
            }
            (None, Some(p)) => Source::File(resolve(p)),
            _ => {
                return Err(entry_err(
                    "give exactly one of `builtin` (\"core\") and `path` (a component file)".into(),
                ))
            }
        };
        let pin =
            match &e.sha256 {
                Some(hex) => Some(hex.parse().map_err(
                    |err: crate::digest::ParseSha256Error| entry_err(format!("sha256: {err}")),
                )?),
                None if matches!(source, Source::File(_)) => {
                    return Err(entry_err(
                        "`sha256` is required for a component file (the server refuses to run \
                     an unpinned file from a manifest); `sha256sum FILE` prints it"
                            .into(),
                    ))
                }
                None => None,
            };
        let mut limits = Limits::default();
        if let Some(l) = &e.limits {
            let usize_of = |what: &str, v: u64| {
                usize::try_from(v).map_err(|_| entry_err(format!("limits.{what} is too large")))
            };
            if let Some(v) = l.fuel {
                limits.fuel = v;
            }
            if let Some(v) = l.memory_mib {
                limits.memory_bytes = usize_of("memory_mib", v)?
                    .checked_mul(1 << 20)
                    .ok_or_else(|| entry_err("limits.memory_mib is too large".into()))?;
            }
            if let Some(v) = l.tables {
                limits.table_elements = usize_of("tables", v)?;
            }
            if let Some(v) = l.instances {
                limits.instances = usize_of("instances", v)?;
            }
        }
        specs.push(Spec {
            source,
            pin,
            limits,
            on_error: e.on_error,
            mode: e.mode,
            name: Some(e.name.clone()),
            test_vectors: e.test_vectors.as_deref().map(resolve),
            origin: Origin::Manifest {
                file: file.to_path_buf(),
            },
        });
    }
    Ok(Manifest {
        file: file.to_path_buf(),
        settings: Settings {
            max_build_errors: doc.max_build_errors,
            keep_previous: doc.keep_previous,
        },
        specs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Manifest, SpecError> {
        parse(Path::new("/etc/lev/projectors.toml"), text)
    }

    #[test]
    fn parses_the_documented_example() {
        let m = p(&format!(
            r#"
max_build_errors = 3
keep_previous = true

[[projector]]
name = "core"
builtin = "core"

[[projector]]
name = "team-deploys"
path = "team-deploys.wasm"
sha256 = "{}"
on_error = "record"
mode = "async"
test_vectors = "team.vectors.ndjson"
[projector.limits]
fuel = 20000000
memory_mib = 64
tables = 10000
instances = 32
"#,
            "ab".repeat(32)
        ))
        .unwrap();
        assert_eq!(
            m.settings,
            Settings {
                max_build_errors: 3,
                keep_previous: true
            }
        );
        assert_eq!(m.specs.len(), 2);
        assert_eq!(m.specs[0].source, Source::Core);
        assert_eq!(m.specs[0].on_error, OnError::Reject);
        let team = &m.specs[1];
        assert_eq!(
            team.source,
            Source::File("/etc/lev/team-deploys.wasm".into())
        );
        assert_eq!(team.name.as_deref(), Some("team-deploys"));
        assert_eq!(team.on_error, OnError::Record);
        assert_eq!(team.mode, Mode::Async);
        assert_eq!(m.specs[0].mode, Mode::Inline);
        assert_eq!(
            team.test_vectors.as_deref(),
            Some(Path::new("/etc/lev/team.vectors.ndjson"))
        );
        assert_eq!(team.limits.fuel, 20_000_000);
        assert_eq!(team.limits.memory_bytes, 64 << 20);
        assert_eq!(
            (team.limits.table_elements, team.limits.instances),
            (10_000, 32)
        );
    }

    #[test]
    fn refusals_name_the_file_and_the_problem() {
        let pin = "ab".repeat(32);
        for (text, needle) in [
            ("colour = 1\n[[projector]]\nname='core'\nbuiltin='core'\n", "colour"),
            ("[[projector]]\nname='core'\nbuiltin='core'\nshade=2\n", "shade"),
            ("[[projector]]\nname='core'\nbuiltin='core'\n[projector.limits]\nfule=1\n", "fule"),
            ("", "no [[projector]]"),
            ("[[projector]]\nname='x'\npath='x.wasm'\n", "`sha256` is required"),
            (&format!("[[projector]]\nname='x'\nbuiltin='core'\npath='x.wasm'\nsha256='{pin}'\n"), "exactly one"),
            ("[[projector]]\nname='x'\nbuiltin='other'\n", "only builtin"),
            ("[[projector]]\nname='x'\nbuiltin='core'\non_error='ignore'\n", "ignore"),
            ("[[projector]]\nname='x'\nbuiltin='core'\nmode='later'\n", "later"),
            ("[[projector]]\nname='x'\npath='x.wasm'\nsha256='zz'\n", "sha256"),
            ("[[projector]]\nname='c'\nbuiltin='core'\n[[projector]]\nname='c'\nbuiltin='core'\n", "same name"),
        ] {
            let e = p(text).unwrap_err().to_string();
            assert!(e.contains("/etc/lev/projectors.toml"), "{e}");
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }
}
