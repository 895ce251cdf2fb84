//! Records which source the binaries were built from, so that an operator can
//! tell two builds of the same version apart (`leviathan --version`, the
//! `leviathan_build_info` metric, the start-up log line).
//!
//! The revision is `LEVIATHAN_BUILD_REVISION` when the build sets it (the
//! container build passes its `REVISION` argument: its context has no `.git`),
//! else `git rev-parse --short=12 HEAD` with `-modified` when tracked files
//! differ from it, else `unknown` (a source tarball). It never fails the build.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=LEVIATHAN_BUILD_REVISION");
    let revision = std::env::var("LEVIATHAN_BUILD_REVISION")
        .ok()
        .map(|r| r.trim().to_string())
        .filter(|r| {
            !r.is_empty()
                && r.len() <= 64
                && r.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._+".contains(&b))
        })
        .or_else(git_revision)
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=LEVIATHAN_BUILD_REVISION={revision}");
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8(out.stdout).ok()?.trim().to_string())
}

fn git_revision() -> Option<String> {
    let git_dir = git(&["rev-parse", "--absolute-git-dir"])?;
    let git_dir = Path::new(&git_dir);
    // Run again when HEAD moves (a commit, a checkout) or the index changes
    // (which is when `-modified` can change along with a source file, and a
    // changed source file rebuilds the crate anyway). A watched path that does
    // not exist would run this script on every build, so only existing ones.
    let mut watch = vec![
        git_dir.join("HEAD"),
        git_dir.join("index"),
        git_dir.join("packed-refs"),
    ];
    if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch.push(git_dir.join(reference));
    }
    for path in watch.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    for dir in ["src", "wit", "projectors/dist", "Cargo.toml", "Cargo.lock"] {
        if Path::new(dir).exists() {
            println!("cargo:rerun-if-changed={dir}");
        }
    }
    let revision = git(&["rev-parse", "--short=12", "HEAD"])?;
    let modified =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if modified {
        format!("{revision}-modified")
    } else {
        revision
    })
}
