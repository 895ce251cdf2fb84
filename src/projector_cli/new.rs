//! `leviathan projector new NAME [DIR]`: a projector crate from the template
//! (`projectors/template`), embedded in the binary so that an installed
//! `leviathan` needs no checkout. The template's files are copied with its
//! crate and projector names replaced; the crate gets its own copy of the WIT
//! contract (`wit/projector.wit`, which its `wit-bindgen` call reads) and a
//! `build.sh` that runs `leviathan projector build` on it.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const CARGO_TOML: &str = include_str!("../../projectors/template/Cargo.toml");
const CARGO_LOCK: &str = include_str!("../../projectors/template/Cargo.lock");
const LIB_RS: &str = include_str!("../../projectors/template/src/lib.rs");
const README: &str = include_str!("../../projectors/template/README.md");
const VECTORS: &str = include_str!("../../projectors/template/vectors.ndjson");
const WIT: &str = include_str!("../../wit/projector.wit");

/// The template's names, replaced in the copy.
const TEMPLATE_CRATE: &str = "leviathan-topology-projector";
const TEMPLATE_NAME: &str = "topology";

const BUILD_SH: &str = r#"#!/usr/bin/env bash
# Builds this projector into a component (target/<name>.wasm, or under
# $CARGO_TARGET_DIR when it is set), reproducibly, and
# prints its SHA-256 and a [[projector]] manifest entry. Set LEVIATHAN to the
# leviathan binary if it is not on PATH.
#
# STACK_SIZE: the guest's stack in bytes (default 65536; Rust's own is 1 MiB).
# The server resets all of an instance's memory after every event, so a smaller
# memory is faster: this template's projector measured 25.8 us per event with
# 64 KiB and 36 us with 1 MiB (`leviathan projector bench`). A guest that needs
# more stack (deep recursion, large local arrays) traps with an out-of-bounds
# memory access: raise it then.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
exec "${LEVIATHAN:-leviathan}" projector build --stack-size "${STACK_SIZE:-65536}" "$HERE" "$@"
"#;

const GITIGNORE: &str = "target/\n";

/// The files of a new crate for projector `name`: (relative path, contents).
pub(crate) fn files(name: &str) -> anyhow::Result<Vec<(&'static str, String)>> {
    let krate = format!("leviathan-{name}-projector");
    let cargo_toml = replace_once(
        CARGO_TOML,
        &format!("name = \"{TEMPLATE_CRATE}\""),
        &format!("name = \"{krate}\""),
    )?;
    let cargo_toml = replace_once(
        &cargo_toml,
        "description = \"Template for team projectors: projects topology events into Area and Subsystem nodes\"",
        &format!("description = \"The {name} projector for Leviathan (from the projector template)\""),
    )?;
    let cargo_lock = replace_once(
        CARGO_LOCK,
        &format!("name = \"{TEMPLATE_CRATE}\""),
        &format!("name = \"{krate}\""),
    )?;
    let lib_rs = replace_once(
        LIB_RS,
        &format!("pub const NAME: &str = \"{TEMPLATE_NAME}\";"),
        &format!("pub const NAME: &str = \"{name}\";"),
    )?;
    let lib_rs = replace_once(&lib_rs, r#"path: "../../wit""#, r#"path: "wit""#)?;
    let readme = replace_once(
        README,
        "; the template in the Leviathan repository reads `../../wit`, a crate made by \
         `leviathan projector new` carries its own copy",
        "",
    )?;
    let readme = readme.replace(TEMPLATE_NAME, name);
    Ok(vec![
        ("Cargo.toml", cargo_toml),
        ("Cargo.lock", cargo_lock),
        ("src/lib.rs", lib_rs),
        ("wit/projector.wit", WIT.to_owned()),
        ("vectors.ndjson", VECTORS.to_owned()),
        ("README.md", readme),
        ("build.sh", BUILD_SH.to_owned()),
        (".gitignore", GITIGNORE.to_owned()),
    ])
}

/// `text` with the one occurrence of `from` replaced; an error if the
/// embedded template no longer has it exactly once.
fn replace_once(text: &str, from: &str, to: &str) -> anyhow::Result<String> {
    match text.matches(from).count() {
        1 => Ok(text.replacen(from, to, 1)),
        n => bail!(
            "the embedded projector template has {n} occurrences of {from:?} (expected one): \
             this leviathan binary was built from an inconsistent template"
        ),
    }
}

/// Checks a projector name: it becomes the crate name, a Rust string and
/// the manifest's `name`, so it is kept to `[a-z][a-z0-9-]*`.
pub(crate) fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !ok {
        bail!(
            "projector name {name:?}: use 1 to 64 lowercase letters, digits and `-`, \
             starting with a letter and not ending with `-` (e.g. `deploys`, `team-ci`)"
        );
    }
    if name == "core" {
        bail!("projector name \"core\" is the embedded core projector's: choose another");
    }
    Ok(())
}

pub(crate) fn run(name: &str, dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    check_name(name)?;
    let dir: PathBuf = dir.map_or_else(|| PathBuf::from(name), Path::to_path_buf);
    if dir.exists() {
        let empty = std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_none();
        if !empty {
            bail!(
                "{} exists and is not empty: give a new directory",
                dir.display()
            );
        }
    }
    let files = files(name)?;
    for (rel, text) in &files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let script = dir.join("build.sh");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {} executable", script.display()))?;
    }
    eprintln!(
        "created the {name} projector in {dir}; next:\n  \
         (cd {dir} && cargo test)\n  \
         leviathan projector build --stack-size 65536 {dir}   # as its ./build.sh does\n  \
         leviathan projector test {dir}/target/{name}.wasm --events {dir}/vectors.ndjson\n\
         (README.md has the whole loop)",
        dir = dir.display()
    );
    super::print(&dir.display().to_string())?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_copy_renames_everything_it_must() {
        let files = files("deploys").unwrap();
        let get = |p: &str| &files.iter().find(|(r, _)| *r == p).unwrap().1;
        assert!(get("Cargo.toml").contains("name = \"leviathan-deploys-projector\""));
        assert!(get("Cargo.lock").contains("name = \"leviathan-deploys-projector\""));
        assert!(get("src/lib.rs").contains("pub const NAME: &str = \"deploys\";"));
        assert!(get("src/lib.rs").contains(r#"path: "wit""#));
        assert!(get("README.md").contains("target/deploys.wasm"));
        assert!(!get("README.md").contains("../../wit"));
        // The rules (src/lib.rs) stay the template's until the author edits them.
        for (path, text) in files.iter().filter(|(p, _)| *p != "src/lib.rs") {
            assert!(
                !text.contains("topology"),
                "{path} still names the template"
            );
        }
        assert!(get("wit/projector.wit").contains("world projector"));
    }

    #[test]
    fn names_are_checked() {
        for ok in ["deploys", "team-ci", "a1"] {
            check_name(ok).unwrap();
        }
        for bad in [
            "",
            "Deploys",
            "1x",
            "a b",
            "x-",
            "core",
            "a_b",
            &"x".repeat(65),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
