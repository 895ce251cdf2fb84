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
/// ~250 MiB with the same writer CPU (docs/BENCHMARKS.md). The default
/// `jemalloc` feature; without it (the test suite's build) glibc's malloc.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main`: return freed pages to the system
/// after 1 s instead of 10 s (peak RSS growing to 1M events 261 -> 233 MiB,
/// no measurable cost); purge them from jemalloc's own background threads,
/// on time whichever thread freed them, and keep 2 arenas instead of 4 per
/// core (growing a store to 4M events: RSS median 150 -> 139 MiB, the same
/// peak, no cost; docs/BENCHMARKS.md, session 13). `_RJEM_MALLOC_CONF` in
/// the environment still wins.
/// Exporting a symbol is `unsafe` (the crate denies `unsafe_code`): this is
/// the name jemalloc reads its options from, a NUL-terminated C string.
#[cfg(feature = "jemalloc")]
#[allow(unsafe_code)]
#[unsafe(export_name = "_rjem_malloc_conf")]
#[used]
static MALLOC_CONF: &[u8; 70] =
    b"background_thread:true,narenas:2,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

#[derive(Parser)]
#[command(name = "leviathan", version = leviathan::build_info::VERSION_LINE, about = "Leviathan control plane")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server.
    // Boxed: its settings make it far larger than the other commands.
    Serve(Box<ServeArgs>),
    /// Re-verify the whole hash chain of a data directory, offline (the server must be
    /// stopped), or of an export (--export DIR, no store needed).
    Verify {
        /// Data directory. Default: LEVIATHAN_DATA_DIR, else ~/.leviathan/data
        #[arg(long, env = "LEVIATHAN_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Verify this export directory instead of a store: every link, hash and
        /// artifact, the manifest's head and tree, the checkpoint.
        #[arg(long, value_name = "DIR")]
        export: Option<PathBuf>,
        /// With --export: the log's verifier key (or a file holding it), obtained out
        /// of band, to check the checkpoint's signature with (default: the key the
        /// manifest names, which shows only that the export is self-consistent).
        #[arg(long, requires = "export")]
        public_key: Option<String>,
    },
    /// Export a stopped store: the log as NDJSON (one stored record a line with seq,
    /// prev_hash, hash), the artifacts by SHA-256, the bundles, and a manifest with
    /// the head, the Merkle tree's root and the latest signed checkpoint (docs/AUDIT.md).
    // LEVIATHAN_POSTGRES_URL may hold a password: `--help` must not print it.
    #[command(mut_arg("postgres_url", |a| a.hide_env_values(true)))]
    Export(leviathan::export::ExportArgs),
    /// Load an export (DIR) into a new, empty data directory, verifying every link
    /// and artifact, and rebuild the graph with the configured projectors; or, with
    /// --legacy FILE, import the original Python control plane's events.ndjson
    /// journal, checking its own hash chain.
    Import(leviathan::import::ImportArgs),
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
    /// Write every graph record (nodes, edges, indexes, counters, digests) to stdout, in key order;
    /// with `--format jsonl`, the nodes and edges as sorted JSON Lines (as `replay --dump`).
    Dump {
        #[arg(long, env = "LEVIATHAN_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// `raw` (keyspace, hex key, hex value) or `jsonl`.
        #[arg(long, default_value = "raw", value_parser = ["raw", "jsonl"])]
        format: String,
    },
    /// Re-project the log up to --to SEQ into a scratch store (the data dir is not written),
    /// print the state digest and compare it with the one recorded at that seq; exit 1 if
    /// they differ (docs/AUDIT.md). While a server holds the data dir, it asks that server
    /// for a backup into the scratch dir (--url or LEVIATHAN_API_URL, and an admin token in
    /// LEVIATHAN_CONTROL_PLANE_TOKEN) and replays the backup.
    Replay(leviathan::replay_to::ReplayArgs),
    /// Audit the log offline: check inclusion and consistency proofs and audit
    /// bundles against a saved checkpoint and the log's verifier key (docs/AUDIT.md).
    #[command(subcommand)]
    Audit(leviathan::tlog::cli::AuditCommand),
    /// The projector author's tools: new, build, inspect, test, bench
    /// (docs/PROJECTORS.md, "The author's loop").
    #[command(subcommand)]
    Projector(leviathan::projector_cli::ProjectorCommand),
    /// Scoped tokens (docs/SECURITY.md).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Back a running server up (POST /v1/admin/backup): a consistent snapshot
    /// of the log, indexes, graph and artifacts as of one seq, verified, with a
    /// manifest. Ingest goes on meanwhile. Needs an admin token
    /// (LEVIATHAN_CONTROL_PLANE_TOKEN).
    Backup {
        /// A new or empty directory on the server's filesystem (made absolute
        /// from this command's working directory).
        #[arg(long)]
        to: PathBuf,
        /// The server's base URL.
        #[arg(
            long,
            env = "LEVIATHAN_API_URL",
            default_value = "http://127.0.0.1:8000"
        )]
        url: String,
    },
    /// Restore a backup into a new data directory, offline: verify the chain
    /// and the head against the manifest, check the graph's state digest at
    /// that seq (or rebuild the graph from the log), print the restored head.
    Restore {
        /// The backup directory (with manifest.json).
        #[arg(long)]
        from: PathBuf,
        /// The new (or empty) data directory.
        #[arg(long, env = "LEVIATHAN_DATA_DIR")]
        data_dir: PathBuf,
        /// The log's verifier key (`<name>+<id>+<base64>`, or a file holding
        /// it): the backup's checkpoint must be signed by it. Without it the
        /// checkpoint is checked against the restored log, not its signature.
        #[arg(long)]
        public_key: Option<String>,
        #[command(flatten)]
        projection: leviathan::config::ProjectionArgs,
    },
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

/// Logs go to stderr, as text (the default) or, with
/// `LEVIATHAN_LOG_FORMAT=json`, one JSON object a line for log collectors
/// (the fields of the current span, e.g. a request's `request_id`, under
/// `span`). A panic is logged through the same subscriber, so a JSON log
/// stays JSON.
fn init_tracing() -> anyhow::Result<()> {
    let filter = log_filter(std::env::var("LEVIATHAN_LOG").ok().as_deref())?;
    let format = std::env::var("LEVIATHAN_LOG_FORMAT").unwrap_or_default();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format.trim().to_ascii_lowercase().as_str() {
        "" | "text" => builder
            // Colour codes only for a person at a terminal, never in files or
            // log collectors.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        "json" => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        other => {
            anyhow::bail!("LEVIATHAN_LOG_FORMAT={other:?}: use `text` (the default) or `json`")
        }
    }
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map_or_else(String::new, |l| format!(" at {}:{}", l.file(), l.line()));
        let message = leviathan::panics::message(info.payload());
        let thread = std::thread::current();
        tracing::error!(
            thread = thread.name().unwrap_or("-"),
            "panicked{location}: {message}"
        );
    }));
    Ok(())
}

/// `LEVIATHAN_LOG` (empty or unset: `info` without the storage engine's
/// INFO lines): comma-separated directives,
/// each a level or `target=level` (levels in any case). Anything else is
/// refused: a bare word such as `warning` would be read as a target name and
/// silently turn every log line off, errors included.
fn log_filter(value: Option<&str>) -> anyhow::Result<tracing_subscriber::EnvFilter> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    // The storage engine's own INFO lines (dozens of "Recovering …" per
    // start) are left out by default; `LEVIATHAN_LOG=info` shows them.
    let value = value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .unwrap_or("info,fjall=warn,lsm_tree=warn");
    let mut directives = Vec::new();
    for d in value.split(',').map(str::trim) {
        let (target, level) = match d.rsplit_once('=') {
            Some((target, level)) if !target.trim().is_empty() => (Some(target.trim()), level),
            _ => (None, d),
        };
        let level = level.trim().to_ascii_lowercase();
        if !LEVELS.contains(&level.as_str()) {
            anyhow::bail!(
                "LEVIATHAN_LOG={value:?}: {d:?} is not a level ({}) or target=level; for \
                 example `info`, `warn` or `info,leviathan::request=warn`",
                LEVELS.join(", ")
            );
        }
        directives.push(match target {
            Some(t) => format!("{t}={level}"),
            None => level,
        });
    }
    tracing_subscriber::EnvFilter::try_new(directives.join(","))
        .map_err(|e| anyhow::anyhow!("LEVIATHAN_LOG={value:?}: {e}"))
}

fn data_dir(d: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    d.or_else(leviathan::config::default_data_dir)
        .context("no data directory: set LEVIATHAN_DATA_DIR or --data-dir")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_tracing() {
        eprintln!("error: {e:#}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Verify {
            data_dir: d,
            export: None,
            ..
        } => verify(d),
        Command::Verify {
            export: Some(dir),
            public_key,
            ..
        } => leviathan::export::run_verify(&dir, public_key.as_deref()),
        Command::Export(args) => leviathan::export::run(args),
        Command::Import(args) => leviathan::import::run(args),
        Command::Rebuild {
            data_dir: d,
            projection,
            expect_change,
        } => rebuild(d, projection, expect_change),
        Command::Dump {
            data_dir: d,
            format,
        } => dump(d, &format),
        Command::Replay(args) => data_dir(args.data_dir.clone())
            .and_then(|d| leviathan::replay_to::run(&args, &d))
            .map(|same| {
                if same {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }),
        Command::Bench(args) => bench(args),
        Command::Token(TokenCommand::Hash { name, roles }) => token_hash(&name, &roles),
        Command::Backup { to, url } => backup(&to, &url),
        Command::Restore {
            from,
            data_dir,
            public_key,
            projection,
        } => restore(&from, &data_dir, public_key.as_deref(), projection),
        Command::Audit(cmd) => leviathan::tlog::cli::run(cmd),
        Command::Projector(cmd) => leviathan::projector_cli::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // Once: a JSON log gets it as a JSON line (a plain line would
            // break the log's parsing), a terminal as one plain line.
            let json_logs = std::env::var("LEVIATHAN_LOG_FORMAT")
                .is_ok_and(|f| f.trim().eq_ignore_ascii_case("json"));
            if json_logs {
                tracing::error!("{e:#}");
            } else {
                eprintln!("error: {e:#}");
            }
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
    let store = leviathan::storage::open_existing_store(&dir)?;
    let started = std::time::Instant::now();
    // A progress bar on a terminal only (stderr), as `verify --export` has.
    let bar = leviathan::progress::bar(store.log.head()?.seq.0, "verifying");
    let report = store.log.verify_with_progress(&|n| bar.inc(n))?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let out = serde_json::json!({
        "report": report,
        "seconds": secs,
        "events_per_second": leviathan::progress::per_second(report.verified_events, secs),
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
    let store = leviathan::storage::open_existing_store(&dir)?;
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
    // Another set's graph is replaced only when that is the intent: a shell
    // without the service's LEVIATHAN_PROJECTORS_FILE would otherwise
    // rebuild the core alone over it.
    if let Some(previous) = leviathan::replay::previous_fingerprint(&store.graph)? {
        if previous != p.fingerprint && !expect_change {
            anyhow::bail!(
                "the graph was built by another projector set (fingerprint {previous}) than the \
                 one configured here ({}); nothing was changed. Configure the set the server runs \
                 (LEVIATHAN_PROJECTORS_FILE or LEVIATHAN_PROJECTORS, as in its unit or \
                 ConfigMap), or pass --expect-change to replace the graph with this set's",
                p.fingerprint
            );
        }
    }
    let report =
        leviathan::replay::rebuild(&store.db, &store.log, &store.graph, &p.set, p.fingerprint)?;
    leviathan::generations::Catalog::open(&store.db)?.record_rebuilt(
        store.graph.generation(),
        &p.set,
        p.fingerprint,
        &p.sources,
    )?;
    // The log's Merkle tree is not the graph's: a rebuild leaves it as it is,
    // and builds it if the store predates it.
    leviathan::tlog::Tree::open(&store.db, &store.log)?.catch_up(&store.db)?;
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

fn dump(d: Option<PathBuf>, format: &str) -> anyhow::Result<ExitCode> {
    let dir = data_dir(d)?;
    let store = leviathan::storage::open_existing_store(&dir)?;
    store.graph.ensure_complete()?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match format {
        "jsonl" => leviathan::replay_to::dump_jsonl(&store.graph, &mut out)?,
        _ => store.graph.dump(&mut out)?,
    }
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

fn backup(to: &std::path::Path, url: &str) -> anyhow::Result<ExitCode> {
    let token = std::env::var("LEVIATHAN_CONTROL_PLANE_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .context("set LEVIATHAN_CONTROL_PLANE_TOKEN to a token with the admin role")?;
    let to = std::path::absolute(to).context("making --to absolute")?;
    let client = reqwest::blocking::Client::builder()
        // A large store takes a while to copy.
        .timeout(None)
        .build()?;
    let resp = client
        .post(format!("{}/v1/admin/backup", url.trim_end_matches('/')))
        .bearer_auth(token.trim())
        .json(&serde_json::json!({ "to": to }))
        .send()
        .with_context(|| format!("cannot reach the server at {url}"))?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().context("reading the server's answer")?;
    if !status.is_success() {
        anyhow::bail!(
            "the server refused the backup ({status}): {}",
            body["error"]["message"].as_str().unwrap_or("no message")
        );
    }
    let mut stdout = std::io::stdout().lock();
    std::io::Write::write_all(
        &mut stdout,
        format!("{}\n", serde_json::to_string_pretty(&body)?).as_bytes(),
    )?;
    Ok(ExitCode::SUCCESS)
}

fn restore(
    from: &std::path::Path,
    data_dir: &std::path::Path,
    public_key: Option<&str>,
    projection: leviathan::config::ProjectionArgs,
) -> anyhow::Result<ExitCode> {
    let data_dir = std::path::absolute(data_dir).context("making --data-dir absolute")?;
    let key = public_key.map(leviathan::tlog::cli::verifier).transpose()?;
    let cache = projection
        .projector_cache
        .clone()
        .unwrap_or_else(|| leviathan::config::default_projector_cache(&data_dir));
    let restored = leviathan::backup::restore(from, &data_dir, key.as_ref(), |store| {
        let specs = leviathan::projector_specs::configured(
            projection.projectors.as_deref(),
            projection.projectors_file.as_deref(),
        )?
        .specs;
        let p = leviathan::server::load_projection_capped(
            &cache,
            &specs,
            projection.max_projector_bytes,
        )?;
        let report =
            leviathan::replay::rebuild(&store.db, &store.log, &store.graph, &p.set, p.fingerprint)?;
        Ok(leviathan::backup::Rebuilt {
            state_digest: report.state_digest,
            projector_set: p.fingerprint,
        })
    })?;
    tracing::info!(
        seq = restored.seq.0,
        graph = restored.graph,
        "restored into {}",
        data_dir.display()
    );
    // The key that signed the backed-up log may have signed checkpoints
    // beyond its head, which the restored log will contradict: the restored
    // log is signed by a new key (the first start refuses the old one).
    tracing::warn!(
        "the restored log must be signed by a NEW key from seq {} on: the old key may have \
         signed checkpoints beyond it. The first start generates one at {} (or set \
         LEVIATHAN_SIGNING_KEY_FILE to a key made with `leviathan audit keygen`) and records \
         the change (GET /v1/log/signers); it refuses the old key. Give auditors the new \
         verifier key (docs/RUNBOOK.md, \"Backup and restore\")",
        restored.seq.0,
        data_dir.join(leviathan::tlog::DEFAULT_KEY_FILE).display()
    );
    let mut stdout = std::io::stdout().lock();
    std::io::Write::write_all(
        &mut stdout,
        format!("{}\n", serde_json::to_string_pretty(&restored)?).as_bytes(),
    )?;
    Ok(ExitCode::SUCCESS)
}
