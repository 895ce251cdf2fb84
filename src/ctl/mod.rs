//! `leviathanctl`, the operator CLI: query and operate a running control plane
//! over its HTTP v1 API (docs/CLI.md). This module holds the command line (clap),
//! the settings (`LEVIATHAN_API_URL`, `LEVIATHAN_CONTROL_PLANE_TOKEN`, overridden
//! by `--url`/`--token`) and the dispatch; each area of commands has its own file.
//! Exit codes: 0 ok, 1 refused or failed, 2 usage, 3 cannot reach the server.

mod artifacts;
pub mod client;
mod confirm;
pub mod error;
mod follow;
mod history;
mod invalidate;
pub mod output;
mod read;

use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use client::Client;
use error::{CtlError, Source, UrlSetting};
use output::{paint, Out, Style};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

pub const DEFAULT_URL: &str = "http://127.0.0.1:8000";

/// Query and operate a running Leviathan control plane.
#[derive(Debug, Parser)]
#[command(
    name = "leviathanctl",
    version = crate::build_info::VERSION_LINE,
    after_help = "Exit codes: 0 ok; 1 the server refused (4xx) or failed (5xx), the chain is \
                  broken, a download did not verify, or a confirmation was declined; 2 usage; \
                  3 cannot reach the server.\n\nPrefer LEVIATHAN_CONTROL_PLANE_TOKEN to --token: \
                  a flag is visible to other users in the process list."
)]
pub struct Cli {
    /// The server's base URL.
    #[arg(long, global = true, env = "LEVIATHAN_API_URL", default_value = DEFAULT_URL, help_heading = "Global options")]
    pub url: String,

    /// The bearer token (prefer the variable: flags show in `ps`).
    #[arg(
        long,
        global = true,
        env = "LEVIATHAN_CONTROL_PLANE_TOKEN",
        hide_env_values = true,
        help_heading = "Global options"
    )]
    pub token: Option<String>,

    /// Print the server's JSON unchanged instead of tables.
    #[arg(long, global = true, help_heading = "Global options")]
    pub json: bool,

    /// Seconds to wait for an answer (artifact transfers are not limited).
    #[arg(long, global = true, value_name = "SECS", default_value_t = 30.0, value_parser = parse_secs, help_heading = "Global options")]
    pub timeout: f64,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Node and edge counts by type, and the last 20 events.
    Summary,
    /// List or show attempts.
    #[command(subcommand)]
    Attempts(AttemptsCmd),
    /// One graph node now or as of a seq, and its history.
    #[command(subcommand)]
    Nodes(NodesCmd),
    /// Failure events (attempt.failed, task.failed, tests.failed), newest first.
    Failures {
        #[command(flatten)]
        filter: Filter,
        /// Continue from a previous page's next cursor.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Read or follow the event log.
    #[command(subcommand)]
    Events(EventsCmd),
    /// Invalidate an attempt (appends an attempt.invalidated event; asks first).
    Invalidate(InvalidateArgs),
    /// Upload or download content-addressed artifacts.
    #[command(subcommand)]
    Artifacts(ArtifactsCmd),
    /// The hash chain and the verifiable log: head, full verification, signed checkpoint.
    #[command(subcommand)]
    Log(LogCmd),
    /// The projectors that build the graph.
    #[command(subcommand)]
    Projectors(ProjectorsCmd),
    /// Print a shell completion script (e.g. `leviathanctl completions bash`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct Filter {
    /// Only this target.
    #[arg(long)]
    pub target: Option<String>,
    /// At most this many (the server allows 1 to 1000; default 10).
    #[arg(long)]
    pub limit: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum AttemptsCmd {
    /// Attempts, newest first.
    List {
        #[command(flatten)]
        filter: Filter,
        /// Continue from a previous page's next cursor.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// One attempt: its node, events, artifacts and pull requests.
    Show {
        id: String,
        /// As it stood right after this seq (from the graph's history index).
        #[arg(long, value_name = "SEQ")]
        as_of: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum NodesCmd {
    /// One node: its type, seqs and properties.
    Show {
        id: String,
        /// As it stood right after this seq (from the graph's history index).
        #[arg(long, value_name = "SEQ")]
        as_of: Option<u64>,
    },
    /// Every change of a node, oldest first: the seq, the event, the
    /// projector and the op that made it.
    History {
        id: String,
        /// At most this many changes (1 to 10000; default 100).
        #[arg(long)]
        limit: Option<u64>,
        /// Continue from a previous page's next cursor.
        #[arg(long)]
        cursor: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventsCmd {
    /// The newest events, newest first.
    Recent {
        /// At most this many (1 to 1000; default 200).
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Print events as they are appended, like `tail -f`. Each line starts with
    /// the event's seq; pass the last one to --after-seq to resume.
    Follow(follow::FollowArgs),
}

#[derive(Debug, Args)]
pub struct InvalidateArgs {
    /// The attempt's id.
    pub id: String,
    /// Why the attempt is invalid (recorded in the event).
    #[arg(long)]
    pub reason: String,
    /// Who asked, recorded in the event's payload as `requested_by` (the event's
    /// actor is the name of the token used).
    #[arg(long)]
    pub actor: Option<String>,
    /// Do not ask for confirmation (required without a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Ask the server for the event that would be appended; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Subcommand)]
pub enum ArtifactsCmd {
    /// Upload a file (its SHA-256 is computed first; the body is streamed).
    Put {
        file: PathBuf,
        /// Print the digest and size, and whether the server already has it; upload nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Download an artifact, verifying its SHA-256.
    Get {
        #[arg(value_parser = parse_sha256)]
        sha256: String,
        /// Write to this file (only once verified) instead of stdout.
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum LogCmd {
    /// The last seq and its hash.
    Head,
    /// Re-verify the whole chain from genesis (exit 1 if it is broken).
    Verify,
    /// The log's signed checkpoint (a C2SP signed note), as the server signs
    /// it: of the whole tree, or of its first N leaves. Save it to check
    /// proofs and consistency later with `leviathan audit` (docs/AUDIT.md).
    Checkpoint {
        /// The tree size to sign (default: the whole tree).
        #[arg(long)]
        tree_size: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectorsCmd {
    /// The projector set, its fingerprint and the graph's applied seq.
    List,
    /// The live set: each projector's error policy and limits, the applied
    /// seq and its lag behind the log, the recorded projection errors.
    Status,
}

fn parse_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v < 1e9 => Ok(v),
        _ => Err(format!("expected a positive number of seconds, got {s:?}")),
    }
}

fn parse_sha256(s: &str) -> Result<String, String> {
    s.parse::<crate::digest::Sha256>()
        .map(|d| d.to_hex())
        .map_err(|e| e.to_string())
}

fn source(m: &clap::ArgMatches, id: &str) -> Source {
    match m.value_source(id) {
        Some(ValueSource::CommandLine) => Source::Flag,
        Some(ValueSource::EnvVariable) => Source::Env,
        _ => Source::Default,
    }
}

/// Where each setting came from (for messages).
struct Settings {
    url: UrlSetting,
    token: Option<(String, Source)>,
    timeout: Duration,
}

impl Settings {
    fn client(&self) -> Result<Client, CtlError> {
        Client::new(self.url.clone(), self.token.clone(), self.timeout)
    }
}

/// Runs the command line of this process; the binary's `main`.
pub fn main() -> ExitCode {
    // Usage errors exit with clap's code, 2; --help and --version with 0.
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // An empty LEVIATHAN_API_URL counts as unset.
    let url = match source(&matches, "url") {
        Source::Env if cli.url.trim().is_empty() => UrlSetting {
            url: DEFAULT_URL.into(),
            from: Source::Default,
        },
        from => UrlSetting {
            url: cli.url.clone(),
            from,
        },
    };
    let settings = Settings {
        url,
        token: cli.token.clone().map(|t| (t, source(&matches, "token"))),
        timeout: Duration::from_secs_f64(cli.timeout),
    };
    match run(cli, &settings) {
        Ok(()) | Err(CtlError::Closed) => ExitCode::SUCCESS,
        Err(e) => {
            let colour = output::colour_wanted(std::io::stderr().is_terminal());
            eprintln!("{} {e}", paint(colour, Style::Red, "error:"));
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(cli: Cli, settings: &Settings) -> Result<(), CtlError> {
    let mut out = Out::new();
    let json = cli.json;
    match cli.command {
        Command::Completions { shell } => {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "leviathanctl", &mut buf);
            out.text(&String::from_utf8_lossy(&buf))
        }
        Command::Summary => read::summary(&settings.client()?, &mut out, json),
        Command::Attempts(AttemptsCmd::List { filter, cursor }) => {
            read::attempts(&settings.client()?, &mut out, json, &filter, cursor)
        }
        Command::Attempts(AttemptsCmd::Show { id, as_of }) => {
            read::attempt(&settings.client()?, &mut out, json, &id, as_of)
        }
        Command::Nodes(NodesCmd::Show { id, as_of }) => {
            history::node(&settings.client()?, &mut out, json, &id, as_of)
        }
        Command::Nodes(NodesCmd::History { id, limit, cursor }) => {
            history::history(&settings.client()?, &mut out, json, &id, limit, cursor)
        }
        Command::Failures { filter, cursor } => {
            read::failures(&settings.client()?, &mut out, json, &filter, cursor)
        }
        Command::Events(EventsCmd::Recent { limit }) => {
            read::recent(&settings.client()?, &mut out, json, limit)
        }
        Command::Events(EventsCmd::Follow(args)) => {
            follow::follow(&settings.client()?, &mut out, json, &args)
        }
        Command::Invalidate(args) => invalidate::invalidate(settings, &mut out, json, &args),
        Command::Artifacts(ArtifactsCmd::Put { file, dry_run }) => {
            artifacts::put(&settings.client()?, &mut out, json, &file, dry_run)
        }
        Command::Artifacts(ArtifactsCmd::Get { sha256, output }) => artifacts::get(
            &settings.client()?,
            &mut out,
            json,
            &sha256,
            output.as_deref(),
        ),
        Command::Log(LogCmd::Head) => read::head(&settings.client()?, &mut out, json),
        Command::Log(LogCmd::Verify) => read::verify(&settings.client()?, &mut out, json),
        Command::Log(LogCmd::Checkpoint { tree_size }) => {
            read::checkpoint(&settings.client()?, &mut out, json, tree_size)
        }
        Command::Projectors(ProjectorsCmd::List) => {
            read::projectors(&settings.client()?, &mut out, json)
        }
        Command::Projectors(ProjectorsCmd::Status) => {
            read::projectors_status(&settings.client()?, &mut out, json)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
