//! Server configuration: environment variables (compatible with the original
//! Python control plane) and `leviathan serve` flags, flags winning. It owns
//! defaults and the checks that refuse to start on a bad setting; it never reads
//! the environment anywhere else.

use crate::bundle::Limits;
use crate::storage::SyncMode;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::Args;
use std::path::{Path, PathBuf};

/// `leviathan serve` flags; each falls back to its environment variable.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "LEVIATHAN_API_HOST", default_value = "0.0.0.0")]
    pub host: String,
    /// Port to listen on (0 picks a free one; the chosen address is logged).
    #[arg(long, env = "LEVIATHAN_API_PORT", default_value_t = 8000)]
    pub port: u16,
    /// Data directory (event log, graph and artifacts). Default: ~/.leviathan/data
    #[arg(long, env = "LEVIATHAN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// `always` (fsync before acknowledging) or `none` (throwaway runs).
    #[arg(
        long,
        env = "LEVIATHAN_SYNC",
        default_value = "always",
        ignore_case = true,
        value_parser = PossibleValuesParser::new(["always", "none"])
            .try_map(|s| s.parse::<SyncMode>())
    )]
    pub sync: SyncMode,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "LEVIATHAN_MAX_BODY_BYTES", default_value_t = Limits::default().max_body_bytes)]
    pub max_body_bytes: usize,
    /// Most events accepted in one bundle.
    #[arg(long, env = "LEVIATHAN_MAX_BUNDLE_EVENTS", default_value_t = Limits::default().max_bundle_events)]
    pub max_bundle_events: usize,
    /// Largest accepted event payload (canonical JSON), in bytes.
    #[arg(long, env = "LEVIATHAN_MAX_PAYLOAD_BYTES", default_value_t = Limits::default().max_payload_bytes)]
    pub max_payload_bytes: usize,
    /// Largest accepted artifact, in bytes.
    #[arg(long, env = "LEVIATHAN_MAX_ARTIFACT_BYTES", default_value_t = Limits::default().max_artifact_bytes)]
    pub max_artifact_bytes: u64,
    /// The autonomy switch file (YAML with `autonomy_enabled`), read on every
    /// `GET /v1/autonomy/status`.
    #[arg(
        long,
        env = "LEVIATHAN_AUTONOMY_CONFIG_PATH",
        default_value = "/etc/leviathan/autonomy/dev.yaml"
    )]
    pub autonomy_config: PathBuf,
    #[command(flatten)]
    pub projection: ProjectionArgs,
}

/// Which projectors run (shared by `serve` and `rebuild`).
#[derive(Debug, Clone, Args)]
pub struct ProjectionArgs {
    /// Projectors, in order: `core` (embedded) and/or component files, each with
    /// optional `#sha256=<hex>#fuel=<n>#memory_mib=<n>` (see docs/PROJECTORS.md).
    #[arg(long, env = "LEVIATHAN_PROJECTORS", default_value = "core")]
    pub projectors: String,
    /// Where compiled projectors are cached (keyed by component digest and engine
    /// settings; safe to share). Default: <data dir>/projector-cache
    #[arg(long, env = "LEVIATHAN_PROJECTOR_CACHE")]
    pub projector_cache: Option<PathBuf>,
}

/// A bearer token. Its `Debug` never shows the secret.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Everything the server needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub token: Token,
    pub host: String,
    pub port: u16,
    pub data_dir: PathBuf,
    pub sync: SyncMode,
    pub limits: Limits,
    pub projectors: Vec<crate::projector_specs::Spec>,
    pub projector_cache: PathBuf,
    pub autonomy_config: PathBuf,
}

/// A setting that stops the server from starting. The message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "LEVIATHAN_CONTROL_PLANE_TOKEN is not set (or empty). Every route but /healthz needs \
         `Authorization: Bearer <token>`; start the server with e.g. \
         `LEVIATHAN_CONTROL_PLANE_TOKEN=$(openssl rand -hex 32) leviathan serve`"
    )]
    MissingToken,
    #[error(
        "LEVIATHAN_BACKEND={0:?} is a setting of the old Python control plane. Leviathan keeps its \
         event log, graph and artifacts in one embedded fjall store under LEVIATHAN_DATA_DIR \
         (default ~/.leviathan/data); there is no NDJSON or Postgres backend. Unset \
         LEVIATHAN_BACKEND (or set it to `fjall`). To bring an old events.ndjson journal over, \
         re-ingest it through POST /v1/events/ingest (a dedicated import command is planned)."
    )]
    LegacyBackend(String),
    #[error("cannot find a home directory for the default data dir; set LEVIATHAN_DATA_DIR or --data-dir")]
    NoHome,
    #[error("{0} must be at least 1")]
    ZeroLimit(&'static str),
    #[error(transparent)]
    Projectors(#[from] crate::projector_specs::SpecError),
}

/// Reads an environment variable, treating an empty value as unset.
fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Config {
    /// Builds the configuration from flags (already merged with their env vars by
    /// clap) and the token from the environment.
    pub fn from_args(args: &ServeArgs) -> Result<Config, ConfigError> {
        if let Some(backend) = env_nonempty("LEVIATHAN_BACKEND") {
            if !backend.eq_ignore_ascii_case("fjall") {
                return Err(ConfigError::LegacyBackend(backend));
            }
        }
        let token = env_nonempty("LEVIATHAN_CONTROL_PLANE_TOKEN")
            .map(|t| Token(t.trim().to_string()))
            .ok_or(ConfigError::MissingToken)?;
        let data_dir = match &args.data_dir {
            Some(d) => d.clone(),
            None => default_data_dir().ok_or(ConfigError::NoHome)?,
        };
        let limits = Limits {
            max_body_bytes: args.max_body_bytes,
            max_bundle_events: args.max_bundle_events,
            max_payload_bytes: args.max_payload_bytes,
            max_artifact_bytes: args.max_artifact_bytes,
        };
        for (name, v) in [
            ("LEVIATHAN_MAX_BODY_BYTES", limits.max_body_bytes as u64),
            (
                "LEVIATHAN_MAX_BUNDLE_EVENTS",
                limits.max_bundle_events as u64,
            ),
            (
                "LEVIATHAN_MAX_PAYLOAD_BYTES",
                limits.max_payload_bytes as u64,
            ),
            ("LEVIATHAN_MAX_ARTIFACT_BYTES", limits.max_artifact_bytes),
        ] {
            if v == 0 {
                return Err(ConfigError::ZeroLimit(name));
            }
        }
        let projectors = crate::projector_specs::parse(&args.projection.projectors)?;
        let projector_cache = args
            .projection
            .projector_cache
            .clone()
            .unwrap_or_else(|| default_projector_cache(&data_dir));
        Ok(Config {
            autonomy_config: args.autonomy_config.clone(),
            projector_cache,
            projectors,
            token,
            host: args.host.clone(),
            port: args.port,
            data_dir,
            sync: args.sync,
            limits,
        })
    }
}

/// Where compiled projectors are cached when `LEVIATHAN_PROJECTOR_CACHE` is
/// not set: `<data dir>/projector-cache` (for `serve` and `rebuild` alike).
pub fn default_projector_cache(data_dir: &Path) -> PathBuf {
    data_dir.join("projector-cache")
}

/// `~/.leviathan/data`.
pub fn default_data_dir() -> Option<PathBuf> {
    env_nonempty("HOME").map(|h| PathBuf::from(h).join(".leviathan").join("data"))
}
