//! `leviathan projector build DIR`: the reproducible build of a projector
//! crate, as `projectors/build.sh` does it for the core projector:
//!
//! 1. `cargo build --locked --release --target wasm32-unknown-unknown` in the
//!    crate (its own `Cargo.lock` and release profile), with `RUSTFLAGS`,
//!    wrappers, `CARGO_PROFILE_*` and target-dir settings of the environment
//!    ignored and these flags only: `--remap-path-prefix` of the crate's
//!    directory to `/leviathan/projectors/<its directory name>` (the path
//!    `projectors/build.sh` gives the core's sources) and of `CARGO_HOME` to
//!    `/cargo`, plus `-Clink-arg=-zstack-size=N` with `--stack-size`;
//! 2. the module wrapped into a component in process, by the same
//!    wit-component release `projectors/tools/componentize` pins (so the
//!    same module gives the same component bytes as that tool), validated;
//! 3. the component loaded as the server loads it (`describe` called and
//!    checked), written to `target/<name>.wasm`, its digest and a manifest
//!    entry printed.
//!
//! The bytes then depend only on the sources, `Cargo.lock`, the Rust toolchain
//! and this binary's wit-component release, not on where the crate or the
//! cargo home is.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const TARGET: &str = "wasm32-unknown-unknown";

#[derive(Debug, Clone, clap::Args)]
pub struct BuildArgs {
    /// The projector crate (a directory with Cargo.toml and Cargo.lock).
    pub dir: PathBuf,
    /// Where to write the component. Default: <target dir>/<name>.wasm
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Cargo's target directory. Default: CARGO_TARGET_DIR when it is set
    /// (relative to the current directory, as cargo reads it), else DIR/target
    #[arg(long)]
    pub target_dir: Option<PathBuf>,
    /// Link the guest with this wasm stack size in bytes (the core projector
    /// uses 16384, so that its whole memory is one page). Default: the
    /// toolchain's (1 MiB).
    #[arg(long)]
    pub stack_size: Option<u32>,
    /// Pass --offline to cargo (every dependency must be in the cargo home).
    #[arg(long)]
    pub offline: bool,
    /// Print JSON instead of the manifest entry.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub load: super::LoadArgs,
}

/// What `build` produced.
#[derive(Debug, serde::Serialize)]
struct Built {
    path: PathBuf,
    sha256: String,
    size: usize,
    name: String,
    version: String,
    rustc: String,
    wit_component: &'static str,
    manifest_entry: String,
}

/// The crate's package and library names, from its Cargo.toml.
fn crate_names(dir: &Path) -> anyhow::Result<(String, String)> {
    let manifest = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    let doc: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", manifest.display()))?;
    let package = doc
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .with_context(|| format!("{} has no [package] name", manifest.display()))?
        .to_owned();
    let lib = doc.get("lib");
    let types: Vec<&str> = lib
        .and_then(|l| l.get("crate-type"))
        .and_then(|t| t.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    if !types.contains(&"cdylib") {
        bail!(
            "{}: [lib] crate-type must include \"cdylib\" (the wasm module the component wraps)",
            manifest.display()
        );
    }
    let lib_name = lib
        .and_then(|l| l.get("name"))
        .and_then(|n| n.as_str())
        .map_or_else(|| package.replace('-', "_"), str::to_owned);
    Ok((package, lib_name))
}

/// Runs `program args` in `dir`, returning its trimmed stdout.
fn output(dir: &Path, program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .with_context(|| format!("running `{program} {}`", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The wasm module of a crate wrapped into a component (and validated), as
/// `projectors/tools/componentize new` does.
pub(crate) fn componentize(module: &[u8]) -> anyhow::Result<Vec<u8>> {
    let component = componentize_wit::ComponentEncoder::default()
        .module(module)
        .context(
            "reading the module's component-type metadata (is the crate built with \
             wit-bindgen against the `projector` world?)",
        )?
        .validate(true)
        .encode()
        .context("encoding the component")?;
    componentize_wasmparser::Validator::new_with_features(
        componentize_wasmparser::WasmFeatures::all(),
    )
    .validate_all(&component)
    .context("validating the component")?;
    Ok(component)
}

/// A TOML basic string (JSON's escapes are TOML's).
fn toml_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

pub(crate) fn run(args: &BuildArgs) -> anyhow::Result<ExitCode> {
    let dir = std::fs::canonicalize(&args.dir)
        .with_context(|| format!("{}: no such crate directory", args.dir.display()))?;
    let (_, lib_name) = crate_names(&dir)?;
    if !dir.join("Cargo.lock").is_file() {
        bail!(
            "{} has no Cargo.lock: the build is --locked (the lock file is part of what the \
             bytes depend on); run `cargo generate-lockfile` there and commit it",
            dir.display()
        );
    }
    // The toolchain that applies in the crate (rustup overrides included).
    let rustc = output(&dir, "rustc", &["-V"])?;
    let sysroot = output(&dir, "rustc", &["--print", "sysroot"])?;
    if !Path::new(&sysroot)
        .join("lib/rustlib")
        .join(TARGET)
        .is_dir()
    {
        bail!(
            "the {TARGET} target is not installed for {rustc}: \
             run `rustup target add {TARGET}`"
        );
    }
    // cargo runs in DIR below, so a relative CARGO_TARGET_DIR is resolved
    // here, against the directory the author ran this in, as cargo would.
    let env_target = std::env::var_os("CARGO_TARGET_DIR").filter(|t| !t.is_empty());
    let target_dir = match (&args.target_dir, env_target) {
        (Some(t), _) => std::path::absolute(t).context("making --target-dir absolute")?,
        (None, Some(t)) => {
            std::path::absolute(PathBuf::from(t)).context("making CARGO_TARGET_DIR absolute")?
        }
        (None, None) => dir.join("target"),
    };
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .context("neither CARGO_HOME nor HOME is set")?;
    let cargo_home = std::fs::canonicalize(&cargo_home).unwrap_or(cargo_home);
    let dir_name = dir
        .file_name()
        .map_or_else(|| "projector".into(), |n| n.to_string_lossy().into_owned());
    let mut flags = Vec::new();
    if let Some(n) = args.stack_size {
        flags.push(format!("-Clink-arg=-zstack-size={n}"));
    }
    flags.push(format!(
        "--remap-path-prefix={}=/leviathan/projectors/{dir_name}",
        dir.display()
    ));
    flags.push(format!(
        "--remap-path-prefix={}=/cargo",
        cargo_home.display()
    ));

    let mut cmd = Command::new("cargo");
    cmd.current_dir(&dir)
        .args(["build", "--locked", "--release", "--target", TARGET])
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    if args.offline {
        cmd.arg("--offline");
    }
    // A clean, path-independent environment (as projectors/build.sh).
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("CARGO_PROFILE_") {
            cmd.env_remove(&*k);
        }
    }
    for k in [
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "CARGO_BUILD_RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_INCREMENTAL",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
    ] {
        cmd.env_remove(k);
    }
    cmd.env("CARGO_ENCODED_RUSTFLAGS", flags.join("\x1f"));
    eprintln!(
        "building {} for {TARGET} with {rustc} (cargo build --locked --release)",
        dir.display()
    );
    let status = cmd.status().context("running cargo (is it on PATH?)")?;
    if !status.success() {
        bail!("cargo build failed ({status}) in {}", dir.display());
    }
    let module_path = target_dir
        .join(TARGET)
        .join("release")
        .join(format!("{lib_name}.wasm"));
    let module = std::fs::read(&module_path)
        .with_context(|| format!("reading the built module {}", module_path.display()))?;
    let component = componentize(&module)?;
    let digest = crate::digest::Sha256::of(&component).to_hex();

    // Load it as the server would, for its name (and to fail the build of a
    // component the server would refuse).
    let staged = target_dir.join(format!("{lib_name}.component.wasm"));
    std::fs::write(&staged, &component).with_context(|| format!("writing {}", staged.display()))?;
    let loaded = super::load(&staged, false, &args.load)?;
    let info = loaded.set.projectors()[loaded.index].clone();
    let out = match &args.out {
        Some(o) => std::path::absolute(o).context("making --out absolute")?,
        None => target_dir.join(format!("{}.wasm", info.name)),
    };
    if out != staged {
        std::fs::write(&out, &component).with_context(|| format!("writing {}", out.display()))?;
        let _ = std::fs::remove_file(&staged);
    }

    let mut entry = format!(
        "[[projector]]\nname = {}\npath = {}\nsha256 = {}\n",
        toml_str(&info.name),
        toml_str(&out.display().to_string()),
        toml_str(&digest)
    );
    let vectors = dir.join("vectors.ndjson");
    if vectors.is_file() {
        entry.push_str(&format!(
            "test_vectors = {}\n",
            toml_str(&vectors.display().to_string())
        ));
    }
    let built = Built {
        path: out.clone(),
        sha256: digest.clone(),
        size: component.len(),
        name: info.name.clone(),
        version: info.version.clone(),
        rustc,
        wit_component: "0.258.3",
        manifest_entry: entry.clone(),
    };
    eprintln!(
        "built {} ({} bytes), {}@{}, sha256 {digest}",
        out.display(),
        built.size,
        info.name,
        info.version
    );
    if args.json {
        super::print(&serde_json::to_string_pretty(&built)?)?;
    } else {
        super::print(&format!(
            "# {}@{}: {} bytes, built with {} (wit-component {})\n# sha256 {digest}\n{entry}",
            built.name, built.version, built.size, built.rustc, built.wit_component
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}
