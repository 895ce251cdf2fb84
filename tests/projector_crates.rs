//! The projector crates' own native tests (`projectors/core`: the core rules,
//! `projectors/template`: the template teams copy), run from the root so that
//! `cargo test` runs the whole suite.
//!
//! They are not workspace members on purpose: each is its own workspace with
//! its own `Cargo.lock` and release profile (lto, `panic = "abort"`, …), and
//! `projectors/build.sh` builds the pinned core component from exactly those
//! with `--locked`. As members, their profiles would be ignored and their
//! dependencies resolved by the root lock file, so the component would no
//! longer build from what it pins. Instead each crate's tests run with the
//! cargo that runs this test, natively (no wasm target needed), in a target
//! directory of their own, `<target dir>/projector-crates`.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

fn cargo_test(crate_dir: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = root.join(crate_dir).join("Cargo.toml");
    // `<target dir>/projector-crates`, where .ci/run lints them too.
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR is <target dir>/tmp")
        .join("projector-crates");
    // The cargo running this test (set by cargo for test processes).
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["test", "--locked", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir);
    // Settings meant for the root build must not leak into the nested one.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k == "RUSTFLAGS"
            || k == "CARGO_ENCODED_RUSTFLAGS"
            || k == "CARGO_BUILD_TARGET"
            || k == "CARGO_TARGET_DIR"
            || k.starts_with("CARGO_PROFILE_")
        {
            cmd.env_remove(&*k);
        }
    }
    let out = cmd.output().expect("run cargo test on a projector crate");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "`cargo test` in {crate_dir} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    stdout
}

/// Sum of "N passed" over every "test result:" line.
fn passed(stdout: &str) -> u64 {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("test result: ok. "))
        .filter_map(|l| l.split(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn core_projector_native_tests_pass() {
    let out = cargo_test("projectors/core");
    // The core rules have dozens of tests; a run of none would be a broken harness.
    assert!(passed(&out) >= 30, "too few tests ran:\n{out}");
}

#[test]
fn template_projector_native_tests_pass() {
    let out = cargo_test("projectors/template");
    assert!(passed(&out) >= 2, "too few tests ran:\n{out}");
}
