//! `leviathan projector …`: the projector author's tools. `new` writes a
//! projector crate from the embedded template, `build` turns a crate into a
//! pinned component reproducibly, `inspect` checks a component against the
//! `projector` world and shows what it declares, `test` projects events (or
//! runs test vectors) offline against a scratch graph, and `bench` measures
//! the per-event cost the server pays (a fresh instance per event).
//!
//! It owns nothing the server runs: components are loaded with
//! [`crate::projection::ProjectorSet`], events are projected with
//! [`crate::project_event`] into a [`crate::graph::Staging`] over a temporary
//! fjall directory, and test vectors run through [`crate::vectors`], so what
//! these commands report is what the server would do. Command output goes to
//! stdout (JSON, or text for people), diagnostics to stderr.

mod bench;
mod build;
mod events;
mod inspect;
mod new;
mod test;

use crate::projection::{Limits, OnError, ProjectorSet, ProjectorSource};
use anyhow::{bail, Context};
use clap::Subcommand;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `leviathan projector …` (docs/PROJECTORS.md, "The author's loop").
#[derive(Debug, Subcommand)]
pub enum ProjectorCommand {
    /// Write a new projector crate from the template: rules in plain Rust with
    /// native tests, the WIT contract, test vectors, a build script and a README.
    New {
        /// The projector's name (what `describe` reports and the manifest's
        /// `name`): lowercase letters, digits and `-`, starting with a letter.
        name: String,
        /// Where to write the crate (must not exist, or be empty). Default: ./NAME
        dir: Option<PathBuf>,
    },
    /// Build a projector crate into a component, reproducibly
    /// (wasm32-unknown-unknown, release, --locked, paths remapped), and print
    /// its SHA-256 and a `[[projector]]` manifest entry.
    Build(build::BuildArgs),
    /// Check a component against the `projector` world and show its name,
    /// version, handled event types, node and edge types, imports, size and digest.
    /// Exit 1 if it is not a loadable projector.
    Inspect {
        /// The component file.
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Project events offline against a scratch graph and print each event's ops
    /// and the resulting nodes and edges as JSON; or, given a test-vectors file,
    /// run its vectors as the server does at load. Exit 1 on any projection
    /// error, failed vector or difference from --expect.
    Test(test::TestArgs),
    /// Measure the per-event cost of a projector as the server pays it (a fresh
    /// store and instance per event): p50, p99, mean, events/s.
    Bench(bench::BenchArgs),
}

/// How components are loaded (shared by inspect, test and bench).
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Directory of compiled projectors, reused across runs (as the server's).
    /// Default: none (compile on every run).
    #[arg(long, env = "LEVIATHAN_PROJECTOR_CACHE")]
    pub projector_cache: Option<PathBuf>,
}

/// Runs one `leviathan projector` command.
pub fn run(cmd: ProjectorCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ProjectorCommand::New { name, dir } => new::run(&name, dir.as_deref()),
        ProjectorCommand::Build(args) => build::run(&args),
        ProjectorCommand::Inspect { file, json, load } => inspect::run(&file, json, &load),
        ProjectorCommand::Test(args) => test::run(&args),
        ProjectorCommand::Bench(args) => bench::run(&args),
    }
}

/// A component loaded for a command: the set (the core projector first when
/// `--after-core`), the index of the component under test in it, its size.
pub(crate) struct Loaded {
    pub set: ProjectorSet,
    pub index: usize,
    pub size: usize,
}

/// Reads `file`, says plainly what it is if it is not a component, and loads
/// it (after the embedded core projector when `after_core`): compiled, linked,
/// `describe` called and checked, exactly as the server loads a projector.
pub(crate) fn load(file: &Path, after_core: bool, args: &LoadArgs) -> anyhow::Result<Loaded> {
    let bytes = read_component(file)?;
    let size = bytes.len();
    let mut sources = Vec::with_capacity(2);
    if after_core {
        sources.push(source(crate::projector_specs::CORE_WASM.to_vec()));
    }
    sources.push(source(bytes));
    let index = sources.len() - 1;
    let set = ProjectorSet::load(sources, args.projector_cache.as_deref()).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a loadable projector (the `leviathan:projector` world, \
             wit/projector.wit): {e}",
            file.display()
        )
    })?;
    Ok(Loaded { set, index, size })
}

fn source(bytes: Vec<u8>) -> ProjectorSource {
    ProjectorSource {
        bytes,
        limits: Limits::default(),
        on_error: OnError::Reject,
        mode: crate::projection::Mode::Inline,
    }
}

/// The bytes of a component file, or an error that says what the file is
/// instead (not WebAssembly, a core module).
fn read_component(file: &Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let max = crate::projector_specs::DEFAULT_MAX_COMPONENT_BYTES;
    let mut bytes = Vec::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(max + 1).read_to_end(&mut bytes))
        .with_context(|| format!("reading {}", file.display()))?;
    if bytes.len() as u64 > max {
        bail!("{} is over {max} bytes", file.display());
    }
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 0x0d, 0x00, 0x01, 0x00]) => Ok(bytes),
        Some([0, b'a', b's', b'm', 0x01, 0x00, 0x00, 0x00]) => bail!(
            "{} is a core WebAssembly module, not a component: a projector is a component \
             of the `leviathan:projector` world (`leviathan projector build` makes one from \
             a crate; wit-component wraps a module built with wit-bindgen)",
            file.display()
        ),
        _ => bail!(
            "{} is not a WebAssembly component (it does not start with the component header \
             `\\0asm` 0d 00 01 00)",
            file.display()
        ),
    }
}

/// Writes `text` to stdout (the command's result).
pub(crate) fn print(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}
