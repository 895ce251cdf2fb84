//! Server configuration: environment variables (compatible with the original
//! Python control plane) and `leviathan serve` flags, flags winning. It owns
//! defaults and the checks that refuse to start on a bad setting; it never reads
//! the environment anywhere else.

use crate::bundle::Limits;
use crate::storage::SyncMode;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::Args;
use std::path::{Path, PathBuf};

/// A yes/no setting from the environment: `1`, `true`, `yes`, `on` or `0`,
/// `false`, `no`, `off` in any case, and empty as no (a templated manifest
/// often leaves a variable empty).
fn flag_value(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "" | "0" | "false" | "no" | "off" => Ok(false),
        other => Err(format!(
            "{other:?} is not a yes/no value (1/0, true/false, yes/no, on/off)"
        )),
    }
}

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
    /// The key that signs the log's checkpoints (a signed-note signer key,
    /// `PRIVATE+KEY+<name>+<id>+<base64>`; docs/AUDIT.md). Default:
    /// <data dir>/log-signing.key, generated on first start.
    #[arg(long, env = "LEVIATHAN_SIGNING_KEY_FILE")]
    pub signing_key_file: Option<PathBuf>,
    /// Accept a signing key other than the one recorded as this log's signer
    /// (its key file lost for good): the new key is recorded as the signer
    /// from the current tree size on (GET /v1/log/signers; docs/AUDIT.md,
    /// "When the signing key changes"). Without it such a start is refused.
    #[arg(
        long,
        env = "LEVIATHAN_NEW_SIGNING_KEY",
        value_parser = flag_value,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_value = "false",
        default_missing_value = "true"
    )]
    pub new_signing_key: bool,
    /// When the projector set differs from the live graph's: `background`
    /// (serve the live graph while the new set's graph is built from the log,
    /// then switch) or `block` (build it before serving).
    #[arg(long, env = "LEVIATHAN_REBUILD", value_enum, default_value_t = crate::generations::RebuildMode::Background)]
    pub rebuild: crate::generations::RebuildMode,
    /// Most events per second a background generation build projects (0:
    /// as fast as it can). Lowers the build's share of the CPU and disk
    /// when ingest must keep all of it.
    #[arg(long, env = "LEVIATHAN_BUILD_RATE", default_value_t = 0)]
    pub build_rate: u64,
    /// MiB of fjall's block cache, shared by every keyspace (decompressed
    /// data and index blocks). Reads of a large store that miss it load
    /// blocks from the page cache or the disk; more cache, more memory.
    /// From 1 to 65536; anything else is a usage error (exit 2), as for
    /// any other invalid value.
    #[arg(
        long,
        env = "LEVIATHAN_CACHE_MB",
        default_value_t = crate::storage::CACHE_BYTES >> 20,
        value_parser = clap::value_parser!(u64).range(1..=65_536)
    )]
    pub cache_mb: u64,
    /// Days a compiled projector not used since stays in the projector cache:
    /// at start, once its projectors are loaded, the server deletes older ones
    /// (left by earlier versions of the server or projector sets no longer
    /// configured). 0: never delete.
    #[arg(
        long,
        env = "LEVIATHAN_PROJECTOR_CACHE_KEEP_DAYS",
        default_value_t = 30
    )]
    pub projector_cache_keep_days: u32,
    #[command(flatten)]
    pub projection: ProjectionArgs,
    #[command(flatten)]
    pub security: SecurityArgs,
    #[command(flatten)]
    pub ops: OpsArgs,
    #[command(flatten)]
    pub streams: StreamArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Where the log's authority lives (docs/SCALING.md).
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// `fjall` (the embedded store alone, the default) or `postgres` (the
    /// log's authority in PostgreSQL at LEVIATHAN_POSTGRES_URL, read from the
    /// environment only; each node keeps its fjall store as a local copy).
    #[arg(
        long = "store",
        env = "LEVIATHAN_STORE",
        default_value = "fjall",
        ignore_case = true,
        value_parser = PossibleValuesParser::new(["fjall", "postgres"])
    )]
    pub kind: String,
    /// Seconds the writer's leadership lasts without renewal (renewed every
    /// third of it): a writer that died is replaced within about this long.
    #[arg(long, env = "LEVIATHAN_POSTGRES_LEASE_SECS", default_value_t = 10.0)]
    pub postgres_lease_secs: f64,
    /// With `postgres`: `writer` (take the log's leadership, waiting while
    /// another node holds it), `replica` (never append: follow the log and
    /// serve reads; ingest and invalidations are forwarded to the writer, or
    /// answer 503 `not_leader` when they cannot be) or `auto` (a replica that
    /// takes the leadership whenever the lease is free).
    #[arg(
        long,
        env = "LEVIATHAN_ROLE",
        default_value = "writer",
        ignore_case = true,
        value_parser = PossibleValuesParser::new(["writer", "replica", "auto"])
    )]
    pub role: String,
    /// With `postgres`: this node's URL as other nodes and clients reach it
    /// (e.g. `http://leviathan-0.leviathan:8000`), published in the members
    /// table: while this node leads, replicas forward ingest to it (a 307 to it if it is https).
    #[arg(long, env = "LEVIATHAN_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// With `postgres`: a replica's `/readyz` answers 503 `replica_lagging`
    /// while the oldest seq it has not applied was committed more than this
    /// many seconds ago (0: lag never makes it unready).
    #[arg(long, env = "LEVIATHAN_MAX_REPLICA_LAG_SECS", default_value_t = 30.0)]
    pub max_replica_lag_secs: f64,
    /// Test suites only: abort the process right after a batch's PostgreSQL
    /// commit, before the local commit, to show start-up repairs it.
    #[arg(long, env = "LEVIATHAN_TEST_CRASH_AFTER_POSTGRES_COMMIT", hide = true)]
    pub test_crash_after_postgres_commit: bool,
}

/// `LEVIATHAN_STORE=postgres`.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// `LEVIATHAN_POSTGRES_URL` (environment only: it may hold a password).
    pub url: String,
    pub lease: std::time::Duration,
    /// `LEVIATHAN_ROLE=replica` or `auto`: follow the log.
    pub replica: bool,
    /// `LEVIATHAN_ROLE=auto`: a replica that takes leadership when it is free.
    pub promote: bool,
    /// The hidden test hook (`StoreArgs::test_crash_after_postgres_commit`).
    pub test_crash_after_commit: bool,
    /// `LEVIATHAN_ADVERTISE_URL`, without a trailing `/`.
    pub advertise_url: Option<String>,
    /// `LEVIATHAN_MAX_REPLICA_LAG_SECS` (`None`: 0, off).
    pub max_replica_lag: Option<std::time::Duration>,
}

/// Monitoring settings of `leviathan serve` (LEVIATHAN_METRICS_TOKEN is read
/// from the environment only: a flag would show in `ps`).
#[derive(Debug, Clone, Args)]
pub struct OpsArgs {
    /// Seconds between two passes of the background chain verifier (the
    /// first, from seq 1, starts with the server); each later pass verifies
    /// the records appended since.
    #[arg(long, env = "LEVIATHAN_VERIFY_INTERVAL_SECS", default_value_t = 300)]
    pub verify_interval_secs: u64,
}

/// Monitoring settings.
#[derive(Debug, Clone)]
pub struct OpsSettings {
    pub verify_interval: std::time::Duration,
    /// When set, `GET /metrics` requires `Authorization: Bearer <it>`.
    pub metrics_token: Option<crate::tokens::Secret>,
}

/// Which projectors run (shared by `serve` and `rebuild`).
#[derive(Debug, Clone, Args)]
pub struct ProjectionArgs {
    /// Projectors, in order: `core` (embedded) and/or component files, each with
    /// optional `#key=value` settings: `sha256=<hex>`, `fuel=<n>`,
    /// `memory_mib=<n>`, `tables=<n>`, `instances=<n>`,
    /// `on_error=reject|record`, `mode=inline|async` (`async`: applied behind
    /// the head, never slowing ingest), e.g.
    /// `core,/x/team.wasm#sha256=<hex>#on_error=record#mode=async`
    /// (docs/PROJECTORS.md). Default: core. Not with --projectors-file.
    #[arg(long, env = "LEVIATHAN_PROJECTORS")]
    pub projectors: Option<String>,
    /// A projector manifest (TOML: names, files, pins, limits, error policies,
    /// modes (inline or async), test vectors; docs/PROJECTORS.md), instead of
    /// --projectors.
    #[arg(long, env = "LEVIATHAN_PROJECTORS_FILE")]
    pub projectors_file: Option<PathBuf>,
    /// Where compiled projectors are cached (keyed by component digest and engine
    /// settings). Its files are native code the server runs: only the server (or
    /// servers that trust each other) may write it. Default: <data dir>/projector-cache
    #[arg(long, env = "LEVIATHAN_PROJECTOR_CACHE")]
    pub projector_cache: Option<PathBuf>,
    /// Largest projector component file accepted, in bytes (a file over it,
    /// or anything that is not a regular file, is refused at start).
    #[arg(long, env = "LEVIATHAN_MAX_PROJECTOR_BYTES", default_value_t = crate::projector_specs::DEFAULT_MAX_COMPONENT_BYTES)]
    pub max_projector_bytes: u64,
}

/// Everything the server needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Largest projector component file read at start.
    pub max_projector_bytes: u64,
    pub tokens: crate::tokens::Tokens,
    pub http: HttpSettings,
    pub streams: StreamSettings,
    pub host: String,
    pub port: u16,
    pub data_dir: PathBuf,
    pub sync: SyncMode,
    pub limits: Limits,
    pub projectors: Vec<crate::projector_specs::Spec>,
    /// The manifest's top-level settings (defaults without a manifest).
    pub projector_settings: crate::manifest::Settings,
    pub projector_cache: PathBuf,
    /// `LEVIATHAN_PROJECTOR_CACHE_KEEP_DAYS`; `None`: never prune.
    pub projector_cache_keep: Option<std::time::Duration>,
    pub autonomy_config: PathBuf,
    pub ops: OpsSettings,
    /// `LEVIATHAN_SIGNING_KEY_FILE`; `None`: the data dir's key.
    pub signing_key_file: Option<PathBuf>,
    /// `LEVIATHAN_NEW_SIGNING_KEY`.
    pub new_signing_key: bool,
    /// `LEVIATHAN_REBUILD`.
    pub rebuild: crate::generations::RebuildMode,
    /// `LEVIATHAN_BUILD_RATE` (0: unlimited).
    pub build_rate: u64,
    /// `LEVIATHAN_CACHE_MB`, in bytes.
    pub cache_bytes: u64,
    /// `LEVIATHAN_STORE=postgres`: the log's authority (`None`: fjall alone).
    pub postgres: Option<PostgresConfig>,
}

/// A setting that stops the server from starting. The message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no token is configured: neither LEVIATHAN_TOKENS_FILE nor LEVIATHAN_CONTROL_PLANE_TOKEN is set \
         (or both are empty). Every route but the probes (/livez, /healthz, /readyz) and /metrics needs \
         `Authorization: Bearer <token>`; \
         start the server with e.g. `LEVIATHAN_CONTROL_PLANE_TOKEN=$(openssl rand -hex 32) leviathan serve`, \
         or give it a tokens file of scoped tokens (docs/SECURITY.md)"
    )]
    MissingToken,
    #[error(
        "{0} applies only with LEVIATHAN_STORE=postgres: with the embedded store (the default) this \
         node would be an independent writer with a log of its own, which can never be merged with \
         the cluster's. Set LEVIATHAN_STORE=postgres (and LEVIATHAN_POSTGRES_URL), or unset {0} \
         (docs/SCALING.md)"
    )]
    PostgresOnly(&'static str),
    #[error(transparent)]
    Tokens(#[from] crate::tokens::TokensError),
    #[error("{}", legacy_backend(.0))]
    LegacyBackend(String),
    #[error("cannot find a home directory for the default data dir; set LEVIATHAN_DATA_DIR or --data-dir")]
    NoHome,
    #[error("{0} must be at least 1")]
    ZeroLimit(&'static str),
    #[error("LEVIATHAN_ALLOWED_HOSTS: {0}")]
    AllowedHosts(String),
    #[error("{0} must be a number of seconds from 0.05 to 86400, got {1}")]
    BadSeconds(&'static str, f64),
    #[error(transparent)]
    Projectors(#[from] crate::projector_specs::SpecError),
    #[error(
        "LEVIATHAN_STORE=postgres needs LEVIATHAN_POSTGRES_URL (environment only), e.g. \
         `host=db.internal user=leviathan dbname=leviathan` or `postgres://leviathan@db.internal/leviathan`"
    )]
    MissingPostgresUrl,
    #[error(
        "LEVIATHAN_ADVERTISE_URL={0:?} is not an absolute http:// or https:// URL without a query \
         (e.g. `http://leviathan-0.leviathan:8000`): replicas forward ingest to it (or redirect to an https:// one)"
    )]
    BadAdvertiseUrl(String),
    #[error("LEVIATHAN_CACHE_MB must be a number of MiB from 1 to 65536, got {0}")]
    BadCacheMb(u64),
    #[error("LEVIATHAN_MAX_REPLICA_LAG_SECS must be 0 (off) or a number of seconds up to 86400, got {0}")]
    BadMaxLag(f64),
}

/// `LEVIATHAN_ADVERTISE_URL`, checked: absolute http(s), no query or
/// fragment; returned without a trailing `/` (request paths are appended).
fn advertise_url(raw: &str) -> Result<String, ConfigError> {
    let bad = || ConfigError::BadAdvertiseUrl(raw.to_string());
    let url = reqwest::Url::parse(raw.trim()).map_err(|_| bad())?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host_str().is_none()
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(bad());
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// The refusal of `LEVIATHAN_BACKEND=<value>`, with the way to what the
/// value asked for.
fn legacy_backend(value: &str) -> String {
    const POSTGRES: &str = "To keep the log in PostgreSQL, set LEVIATHAN_STORE=postgres and \
                            LEVIATHAN_POSTGRES_URL instead (docs/SCALING.md).";
    const IMPORT: &str = "To bring an old events.ndjson journal over, run `leviathan import \
                          --legacy events.ndjson --data-dir NEW`: it checks the journal's hash \
                          chain link by link and keeps each legacy hash in the imported record.";
    let lower = value.trim().to_ascii_lowercase();
    let way = if lower.starts_with("postgres") || lower == "pg" {
        POSTGRES.to_string()
    } else if lower.contains("json") {
        format!("There is no NDJSON backend. {IMPORT}")
    } else {
        format!("There is no {value:?} backend. {POSTGRES} {IMPORT}")
    };
    format!(
        "LEVIATHAN_BACKEND={value:?} is a setting of the old Python control plane. Leviathan \
         keeps its event log, graph and artifacts in an embedded fjall store under \
         LEVIATHAN_DATA_DIR (default ~/.leviathan/data). Unset LEVIATHAN_BACKEND (or set it to \
         `fjall`). {way}"
    )
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
        let tokens = load_tokens(&args.security)?;
        let http = HttpSettings::from_args(&args.security, &args.host)?;
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
        if !(1..=65_536).contains(&args.cache_mb) {
            return Err(ConfigError::BadCacheMb(args.cache_mb));
        }
        if args.ops.verify_interval_secs == 0 {
            return Err(ConfigError::ZeroLimit("LEVIATHAN_VERIFY_INTERVAL_SECS"));
        }
        let ops = OpsSettings {
            verify_interval: std::time::Duration::from_secs(args.ops.verify_interval_secs),
            metrics_token: env_nonempty("LEVIATHAN_METRICS_TOKEN")
                .map(|t| crate::tokens::Secret(t.trim().to_string())),
        };
        let configured = crate::projector_specs::configured(
            args.projection.projectors.as_deref(),
            args.projection.projectors_file.as_deref(),
        )?;
        let projector_cache = args
            .projection
            .projector_cache
            .clone()
            .unwrap_or_else(|| default_projector_cache(&data_dir));
        let postgres = if args.store.kind.eq_ignore_ascii_case("postgres") {
            let url =
                env_nonempty("LEVIATHAN_POSTGRES_URL").ok_or(ConfigError::MissingPostgresUrl)?;
            let lease = args.store.postgres_lease_secs;
            if !(lease.is_finite() && (0.05..=86_400.0).contains(&lease)) {
                return Err(ConfigError::BadSeconds(
                    "LEVIATHAN_POSTGRES_LEASE_SECS",
                    lease,
                ));
            }
            Some(PostgresConfig {
                url,
                lease: std::time::Duration::from_secs_f64(lease),
                test_crash_after_commit: args.store.test_crash_after_postgres_commit,
                replica: !args.store.role.eq_ignore_ascii_case("writer"),
                promote: args.store.role.eq_ignore_ascii_case("auto"),
                advertise_url: args
                    .store
                    .advertise_url
                    .as_deref()
                    .filter(|u| !u.trim().is_empty())
                    .map(advertise_url)
                    .transpose()?,
                max_replica_lag: match args.store.max_replica_lag_secs {
                    0.0 => None,
                    v if v.is_finite() && v > 0.0 && v <= 86_400.0 => {
                        Some(std::time::Duration::from_secs_f64(v))
                    }
                    v => return Err(ConfigError::BadMaxLag(v)),
                },
            })
        } else {
            if !args.store.role.eq_ignore_ascii_case("writer") {
                return Err(ConfigError::PostgresOnly("LEVIATHAN_ROLE"));
            }
            if env_nonempty("LEVIATHAN_POSTGRES_URL").is_some() {
                return Err(ConfigError::PostgresOnly("LEVIATHAN_POSTGRES_URL"));
            }
            None
        };
        Ok(Config {
            postgres,
            max_projector_bytes: args.projection.max_projector_bytes,
            autonomy_config: args.autonomy_config.clone(),
            signing_key_file: args.signing_key_file.clone(),
            new_signing_key: args.new_signing_key,
            rebuild: args.rebuild,
            build_rate: args.build_rate,
            cache_bytes: args.cache_mb << 20,
            projector_cache,
            projector_cache_keep: (args.projector_cache_keep_days > 0).then(|| {
                std::time::Duration::from_secs(u64::from(args.projector_cache_keep_days) * 86_400)
            }),
            projectors: configured.specs,
            projector_settings: configured.settings,
            tokens,
            http,
            streams: StreamSettings::from_args(&args.streams)?,
            host: args.host.clone(),
            port: args.port,
            data_dir,
            sync: args.sync,
            limits,
            ops,
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

// ---- Access control and HTTP hardening (docs/SECURITY.md) ----

/// Tokens and the limits of the HTTP layer.
#[derive(Debug, Clone, Args)]
pub struct SecurityArgs {
    /// A file of scoped tokens, one `NAME ROLES SHA256HEX` a line (docs/SECURITY.md;
    /// `leviathan token hash` prints a line). Re-read on SIGHUP. The single token
    /// LEVIATHAN_CONTROL_PLANE_TOKEN (environment only) still works beside it.
    #[arg(long, env = "LEVIATHAN_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    /// Seconds a client has to send a request's headers (also how long an idle
    /// keep-alive connection stays open).
    #[arg(long, env = "LEVIATHAN_HEADER_READ_TIMEOUT_SECS", default_value_t = HttpSettings::default().header_read_timeout.as_secs())]
    pub header_read_timeout_secs: u64,
    /// Seconds a connection may go without taking any of its answer's bytes
    /// (a client that stops reading); then it is closed (an event stream's
    /// connection after LEVIATHAN_STREAM_STALL_SECS more).
    #[arg(long, env = "LEVIATHAN_WRITE_TIMEOUT_SECS", default_value_t = HttpSettings::default().write_timeout.as_secs())]
    pub write_timeout_secs: u64,
    /// Seconds a request may take from its headers to its response's headers
    /// (body upload included); beyond it the answer is 503 `timeout`.
    #[arg(long, env = "LEVIATHAN_REQUEST_TIMEOUT_SECS", default_value_t = HttpSettings::default().request_timeout.as_secs())]
    pub request_timeout_secs: u64,
    /// Open connections served at once; a connection beyond it gets 503 and is closed.
    #[arg(long, env = "LEVIATHAN_MAX_CONNECTIONS", default_value_t = HttpSettings::default().max_connections)]
    pub max_connections: usize,
    /// Requests handled at once (`/healthz` and `/metrics` aside); beyond it 503 with `Retry-After`.
    #[arg(long, env = "LEVIATHAN_MAX_INFLIGHT_REQUESTS", default_value_t = HttpSettings::default().max_inflight_requests)]
    pub max_inflight_requests: usize,
    /// MiB of JSON answers held for clients that have not read them yet
    /// (answers of 256 KiB or more count); beyond it 503 with `Retry-After`.
    #[arg(long, env = "LEVIATHAN_MAX_ANSWER_BUFFER_MB", default_value_t = HttpSettings::default().max_answer_buffer_mb)]
    pub max_answer_buffer_mb: usize,
    /// Scanning reads (walks of a long index, such as the attempts list by
    /// target) run at once; more wait their turn within the request timeout.
    /// 0: half this machine's cores, at least one.
    #[arg(long, env = "LEVIATHAN_MAX_SCANNING_READS", default_value_t = 0)]
    pub max_scanning_reads: usize,
    /// Most header fields in one request (more: 431 from the HTTP layer).
    #[arg(long, env = "LEVIATHAN_MAX_HEADERS", default_value_t = HttpSettings::default().max_headers)]
    pub max_headers: usize,
    /// Seconds a SIGTERM/SIGINT has to finish requests in flight and flush the
    /// store before the process exits anyway (non-zero); below Kubernetes'
    /// default 30 s grace period.
    #[arg(long, env = "LEVIATHAN_SHUTDOWN_TIMEOUT", default_value_t = HttpSettings::default().shutdown_timeout.as_secs())]
    pub shutdown_timeout: u64,
    /// Test suites only: serve `GET /v1/_test/panic`, a route that panics, to
    /// show a panic becomes a JSON 500 and the server lives on.
    #[arg(long, env = "LEVIATHAN_TEST_PANIC_ROUTE", hide = true)]
    pub test_panic_route: bool,
    /// Host names the server answers to (the `Host` header), comma-separated;
    /// `*.domain` for a domain's names, `*` for any. IP addresses are always
    /// accepted. Unset: `localhost,*.localhost` (localhost and its subdomains)
    /// when listening on a loopback address, any host otherwise. Guards
    /// against DNS rebinding (docs/SECURITY.md).
    #[arg(long, env = "LEVIATHAN_ALLOWED_HOSTS")]
    pub allowed_hosts: Option<String>,
}

/// The limits of the HTTP layer.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub header_read_timeout: std::time::Duration,
    /// How long a connection may go without taking a byte of a pending
    /// answer before it is closed.
    pub write_timeout: std::time::Duration,
    pub request_timeout: std::time::Duration,
    pub max_connections: usize,
    pub max_inflight_requests: usize,
    /// MiB of large JSON answers being sent at once.
    pub max_answer_buffer_mb: usize,
    /// Places of the scanning-reads bulkhead (`LEVIATHAN_MAX_SCANNING_READS`;
    /// 0: half the cores, at least one).
    pub max_scanning_reads: usize,
    pub max_headers: usize,
    /// From SIGTERM to exit, whatever state the store is in.
    pub shutdown_timeout: std::time::Duration,
    pub test_panic_route: bool,
    /// `LEVIATHAN_ALLOWED_HOSTS`, read against the address listened on.
    pub allowed_hosts: crate::api::host::AllowedHosts,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            header_read_timeout: std::time::Duration::from_secs(10),
            write_timeout: std::time::Duration::from_secs(30),
            request_timeout: std::time::Duration::from_secs(120),
            max_connections: 1024,
            max_inflight_requests: 256,
            max_answer_buffer_mb: 256,
            max_scanning_reads: 0,
            max_headers: 100,
            shutdown_timeout: std::time::Duration::from_secs(25),
            test_panic_route: false,
            allowed_hosts: crate::api::host::AllowedHosts::default(),
        }
    }
}

impl HttpSettings {
    /// The part of the shutdown timeout kept for flushing the store after
    /// the requests in flight: a fifth, at most 5 s. Requests that outlast
    /// the rest (a stalled upload) are dropped, so that a slow client does
    /// not turn a clean stop into one that replays the journal.
    pub fn flush_reserve(&self) -> std::time::Duration {
        (self.shutdown_timeout / 5).min(std::time::Duration::from_secs(5))
    }

    /// How long requests in flight may take to finish after SIGTERM.
    pub fn drain_timeout(&self) -> std::time::Duration {
        self.shutdown_timeout - self.flush_reserve()
    }

    fn from_args(a: &SecurityArgs, bind: &str) -> Result<HttpSettings, ConfigError> {
        for (name, v) in [
            (
                "LEVIATHAN_HEADER_READ_TIMEOUT_SECS",
                a.header_read_timeout_secs as usize,
            ),
            (
                "LEVIATHAN_WRITE_TIMEOUT_SECS",
                a.write_timeout_secs as usize,
            ),
            (
                "LEVIATHAN_REQUEST_TIMEOUT_SECS",
                a.request_timeout_secs as usize,
            ),
            ("LEVIATHAN_MAX_CONNECTIONS", a.max_connections),
            ("LEVIATHAN_MAX_INFLIGHT_REQUESTS", a.max_inflight_requests),
            ("LEVIATHAN_MAX_ANSWER_BUFFER_MB", a.max_answer_buffer_mb),
            ("LEVIATHAN_MAX_HEADERS", a.max_headers),
            ("LEVIATHAN_SHUTDOWN_TIMEOUT", a.shutdown_timeout as usize),
        ] {
            if v == 0 {
                return Err(ConfigError::ZeroLimit(name));
            }
        }
        Ok(HttpSettings {
            header_read_timeout: std::time::Duration::from_secs(a.header_read_timeout_secs),
            write_timeout: std::time::Duration::from_secs(a.write_timeout_secs),
            request_timeout: std::time::Duration::from_secs(a.request_timeout_secs),
            max_connections: a.max_connections,
            max_inflight_requests: a.max_inflight_requests,
            max_answer_buffer_mb: a.max_answer_buffer_mb,
            max_scanning_reads: a.max_scanning_reads,
            max_headers: a.max_headers,
            shutdown_timeout: std::time::Duration::from_secs(a.shutdown_timeout),
            test_panic_route: a.test_panic_route,
            allowed_hosts: crate::api::host::AllowedHosts::parse(a.allowed_hosts.as_deref(), bind)
                .map_err(ConfigError::AllowedHosts)?,
        })
    }
}

/// The tokens file and/or `LEVIATHAN_CONTROL_PLANE_TOKEN` (trimmed); neither refuses.
fn load_tokens(a: &SecurityArgs) -> Result<crate::tokens::Tokens, ConfigError> {
    let env_token = env_nonempty("LEVIATHAN_CONTROL_PLANE_TOKEN")
        .map(|t| crate::tokens::Secret(t.trim().to_string()));
    let file = a.tokens_file.clone().filter(|f| !f.as_os_str().is_empty());
    if file.is_none() && env_token.is_none() {
        return Err(ConfigError::MissingToken);
    }
    Ok(crate::tokens::Tokens::load(file, env_token.as_ref())?)
}

// ---- The event stream, `GET /v1/events/stream` (docs/API.md) ----

/// Limits of the server-sent event stream.
#[derive(Debug, Clone, Args)]
pub struct StreamArgs {
    /// Event streams open at once; one more is answered 503 `too_many_streams`.
    #[arg(long, env = "LEVIATHAN_MAX_STREAMS", default_value_t = StreamSettings::default().max_streams)]
    pub max_streams: usize,
    /// Events one stream reads from the store ahead of its client (its buffer;
    /// also capped at 1 MiB of events).
    #[arg(long, env = "LEVIATHAN_STREAM_BUFFER", default_value_t = StreamSettings::default().buffer)]
    pub stream_buffer: usize,
    /// Seconds a client may leave its buffer untaken before it is told it fell
    /// behind and its stream is closed (it resumes with `Last-Event-ID`).
    #[arg(long, env = "LEVIATHAN_STREAM_STALL_SECS", default_value_t = StreamSettings::default().stall.as_secs_f64())]
    pub stream_stall_secs: f64,
    /// Seconds between heartbeat comments on an idle stream.
    #[arg(long, env = "LEVIATHAN_STREAM_HEARTBEAT_SECS", default_value_t = StreamSettings::default().heartbeat.as_secs_f64())]
    pub stream_heartbeat_secs: f64,
}

/// The limits of `GET /v1/events/stream`.
#[derive(Debug, Clone, Copy)]
pub struct StreamSettings {
    pub max_streams: usize,
    pub buffer: usize,
    pub stall: std::time::Duration,
    pub heartbeat: std::time::Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            max_streams: 64,
            buffer: 1024,
            stall: std::time::Duration::from_secs(30),
            heartbeat: std::time::Duration::from_secs(15),
        }
    }
}

impl StreamSettings {
    fn from_args(a: &StreamArgs) -> Result<StreamSettings, ConfigError> {
        for (name, ok) in [
            ("LEVIATHAN_MAX_STREAMS", a.max_streams >= 1),
            ("LEVIATHAN_STREAM_BUFFER", a.stream_buffer >= 1),
        ] {
            if !ok {
                return Err(ConfigError::ZeroLimit(name));
            }
        }
        let secs = |name: &'static str, v: f64| {
            if v.is_finite() && (0.05..=86_400.0).contains(&v) {
                Ok(std::time::Duration::from_secs_f64(v))
            } else {
                Err(ConfigError::BadSeconds(name, v))
            }
        };
        Ok(StreamSettings {
            max_streams: a.max_streams,
            buffer: a.stream_buffer,
            stall: secs("LEVIATHAN_STREAM_STALL_SECS", a.stream_stall_secs)?,
            heartbeat: secs("LEVIATHAN_STREAM_HEARTBEAT_SECS", a.stream_heartbeat_secs)?,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn yes_no_settings_take_the_usual_spellings_and_empty_as_no() {
        for (v, want) in [("1", true), ("TRUE", true), ("yes", true), (" on ", true)] {
            assert_eq!(super::flag_value(v), Ok(want), "{v}");
        }
        for v in ["", "0", "false", "No", "off"] {
            assert_eq!(super::flag_value(v), Ok(false), "{v}");
        }
        assert!(super::flag_value("maybe").is_err());
    }
}
