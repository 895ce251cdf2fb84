//! `leviathan`: the server (`serve`), offline administration (`verify`, `rebuild`,
//! `dump`) and the load generator (`bench`).

#![cfg_attr(test, allow(clippy::unwrap_used))]

use anyhow::Context;
use clap::{Parser, Subcommand};
use leviathan::config::{Config, ServeArgs};
use std::path::PathBuf;
use std::process::ExitCode;

/// jemalloc instead of glibc malloc: the writer allocates and frees many small
/// objects per event (ops, properties, canonical buffers, batch entries), and
/// glibc's `_int_malloc`/`malloc_consolidate` were about a third of the writer
/// thread's time in a profile, with a fragmented heap. mimalloc was as fast
/// but kept far more memory than it used: growing a store to 1M events its peak
/// RSS was ~355 MiB for an ~85 MiB peak heap (heaptrack); jemalloc peaks at
/// ~250 MiB with the same writer CPU (docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main`: return freed pages to the system
/// after 1 s instead of 10 s (peak RSS growing to 1M events 261 -> 233 MiB,
/// no measurable cost); `_RJEM_MALLOC_CONF` in the environment still wins.
/// Exporting a symbol is `unsafe` (the crate denies `unsafe_code`): this is
/// the name jemalloc reads its options from, a NUL-terminated C string.
#[allow(unsafe_code)]
#[unsafe(export_name = "_rjem_malloc_conf")]
#[used]
static MALLOC_CONF: &[u8; 37] = b"dirty_decay_ms:1000,muzzy_decay_ms:0\0";

#[derive(Parser)]
#[command(name = "leviathan", version, about = "Leviathan control plane")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server.
    Serve(ServeArgs),
    /// Re-verify the whole hash chain of a data directory, offline (the server must be stopped).
    Verify {
        /// Data directory. Default: LEVIATHAN_DATA_DIR, else ~/.leviathan/data
        #[arg(long, env = "LEVIATHAN_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Rebuild the graph from the log with the configured projectors, offline; print the
    /// state digest; exit 1 if it differs from the graph's previous digest.
    Rebuild {
        #[arg(long, env = "LEVIATHAN_DATA_DIR")]
        data_dir: Option<PathBuf>,
        #[command(flatten)]
        projection: leviathan::config::ProjectionArgs,
        /// A different digest is expected (a projector upgrade): exit 0 anyway.
        #[arg(long)]
        expect_change: bool,
    },
    /// Drive a running server over HTTP on loopback and report ingest throughput,
    /// bundle latency and read latency (docs/BENCHMARKS.md).
    Bench(leviathan::bench::BenchArgs),
    /// Write every graph record (nodes, edges, indexes, counters, digests) to stdout, in key order.
    Dump {
        #[arg(long, env = "LEVIATHAN_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Scoped tokens (docs/SECURITY.md).
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Read a token from stdin (one line; the newline is not part of it) and
    /// print the line that grants it to the server's tokens file:
    /// `NAME ROLES SHA256HEX`. The token itself is never printed.
    Hash {
        /// The token's name: the actor of events the server makes for it, shown in logs.
        #[arg(long)]
        name: String,
        /// Comma-separated roles: ingest, read, admin.
        #[arg(long)]
        roles: String,
    },
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LEVIATHAN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in files or
        // log collectors.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn data_dir(d: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    d.or_else(leviathan::config::default_data_dir)
        .context("no data directory: set LEVIATHAN_DATA_DIR or --data-dir")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Verify { data_dir: d } => verify(d),
        Command::Rebuild {
            data_dir: d,
            projection,
            expect_change,
        } => rebuild(d, projection, expect_change),
        Command::Dump { data_dir: d } => dump(d),
        Command::Bench(args) => bench(args),
        Command::Token(TokenCommand::Hash { name, roles }) => token_hash(&name, &roles),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = Config::from_args(&args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("leviathan-http")
        .build()
        .context("starting the async runtime")?;
    let result = rt.block_on(leviathan::server::run(config));
    // A flush abandoned at the shutdown timeout may still hold a blocking
    // thread: do not wait for it.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    result?;
    Ok(ExitCode::SUCCESS)
}

fn verify(d: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let dir = data_dir(d)?;
    let store = leviathan::storage::open_store(&dir)?;
    let started = std::time::Instant::now();
    let report = store.log.verify()?;
    let secs = started.elapsed().as_secs_f64();
    let out = serde_json::json!({
        "report": report,
        "seconds": secs,
        "events_per_second": if secs > 0.0 { report.verified_events as f64 / secs } else { 0.0 },
    });
    // The command's output is its result, on stdout.
    let mut stdout = std::io::stdout().lock();
    std::io::Write::write_all(
        &mut stdout,
        format!("{}\n", serde_json::to_string_pretty(&out)?).as_bytes(),
    )?;
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn rebuild(
    d: Option<PathBuf>,
    projection: leviathan::config::ProjectionArgs,
    expect_change: bool,
) -> anyhow::Result<ExitCode> {
    let dir = data_dir(d)?;
    let store = leviathan::storage::open_store(&dir)?;
    let specs = leviathan::projector_specs::configured(
        projection.projectors.as_deref(),
        projection.projectors_file.as_deref(),
    )?
    .specs;
    let cache = projection
        .projector_cache
        .clone()
        .unwrap_or_else(|| leviathan::config::default_projector_cache(&dir));
    let p =
        leviathan::server::load_projection_capped(&cache, &specs, projection.max_projector_bytes)?;
    let report =
        leviathan::replay::rebuild(&store.db, &store.log, &store.graph, &p.set, p.fingerprint)?;
    let mut stdout = std::io::stdout().lock();
    std::io::Write::write_all(
        &mut stdout,
        format!("{}\n", serde_json::to_string_pretty(&report)?).as_bytes(),
    )?;
    Ok(if report.identical || expect_change {
        ExitCode::SUCCESS
    } else {
        tracing::warn!("the rebuilt graph differs from the previous one");
        ExitCode::FAILURE
    })
}

fn dump(d: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let dir = data_dir(d)?;
    let store = leviathan::storage::open_store(&dir)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    store.graph.dump(&mut out)?;
    std::io::Write::flush(&mut out)?;
    Ok(ExitCode::SUCCESS)
}

fn bench(args: leviathan::bench::BenchArgs) -> anyhow::Result<ExitCode> {
    let report = leviathan::bench::run(&args)?;
    let text = if args.json {
        format!("{}\n", serde_json::to_string_pretty(&report)?)
    } else {
        leviathan::bench::render(&report)
    };
    let mut stdout = std::io::stdout().lock();
    std::io::Write::write_all(&mut stdout, text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

fn token_hash(name: &str, roles: &str) -> anyhow::Result<ExitCode> {
    use std::io::Read;
    let roles = leviathan::tokens::Roles::parse(roles).map_err(anyhow::Error::msg)?;
    let mut input = Vec::new();
    std::io::stdin()
        .lock()
        .take(64 * 1024)
        .read_to_end(&mut input)
        .context("reading the token from stdin")?;
    // One line: drop the line ending a shell or `echo` adds, nothing else.
    let token = input
        .strip_suffix(b"\n")
        .map(|t| t.strip_suffix(b"\r").unwrap_or(t))
        .unwrap_or(&input);
    if token.is_empty() {
        anyhow::bail!("no token on stdin; e.g. `openssl rand -hex 32 | tee token.txt | leviathan token hash --name NAME --roles read`");
    }
    if token.iter().any(|b| !b.is_ascii_graphic()) {
        anyhow::bail!(
            "the token must be printable ASCII without spaces (it is sent as `Authorization: Bearer <token>`)"
        );
    }
    let line = leviathan::tokens::file_line(name, roles, token).map_err(anyhow::Error::msg)?;
    let mut stdout = std::io::stdout().lock();
    std::io::Write::write_all(&mut stdout, format!("{line}\n").as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
