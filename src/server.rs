//! Server start-up and shut-down: open the store, check the head, start the
//! writer, bind, serve until SIGTERM/ctrl-c. It wires the parts together and
//! owns no logic of its own.

use crate::api::{self, AppState};
use crate::cas::Cas;
use crate::config::Config;
use crate::digest::Sha256;
use crate::projection::ProjectorSet;
use crate::projector_specs;
use crate::storage::{open_store_with_cache, Store};
use crate::writer::{Writer, WriterParts};
use anyhow::Context;
use std::path::Path;
use std::sync::Arc;

/// The loaded projector set and its fingerprint.
pub struct Projection {
    pub set: Arc<ProjectorSet>,
    pub fingerprint: Sha256,
    /// What the set was loaded from (the generations catalog keeps it).
    pub sources: Vec<crate::projection::ProjectorSource>,
}

/// Loads the configured projectors, caching compiled forms in `cache_dir`
/// (`LEVIATHAN_PROJECTOR_CACHE`, by default `<data dir>/projector-cache`).
pub fn load_projection(
    cache_dir: &Path,
    specs: &[projector_specs::Spec],
) -> anyhow::Result<Projection> {
    load_projection_capped(
        cache_dir,
        specs,
        projector_specs::DEFAULT_MAX_COMPONENT_BYTES,
    )
}

/// [`load_projection`] with a cap on component file size.
pub fn load_projection_capped(
    cache_dir: &Path,
    specs: &[projector_specs::Spec],
    max_bytes: u64,
) -> anyhow::Result<Projection> {
    std::fs::create_dir_all(cache_dir)
        .with_context(|| format!("cannot create {}", cache_dir.display()))?;
    let (set, sources) = projector_specs::load_with_sources(specs, Some(cache_dir), max_bytes)?;
    let fingerprint = set.fingerprint();
    Ok(Projection {
        set: Arc::new(set),
        fingerprint,
        sources,
    })
}

/// The start-up stage that compares the graph with the projector set (and,
/// with `LEVIATHAN_REBUILD=block`, builds a changed set's graph).
const CHECKING_THE_GRAPH: &str = "checking the graph against the projector set (if the set changed: loading the live generation's own set, compiling its components if the projector cache lacks them)";

/// What start-up has done so far: `/readyz` says it while the server starts.
#[derive(Clone, Default)]
struct Starting {
    stage: Arc<std::sync::Mutex<std::borrow::Cow<'static, str>>>,
    builds: crate::generations::Builds,
}

impl Starting {
    fn set(&self, stage: impl Into<std::borrow::Cow<'static, str>>) {
        if let Ok(mut s) = self.stage.lock() {
            *s = stage.into();
        }
    }

    fn reason(&self) -> String {
        let stage = self
            .stage
            .lock()
            .map_or_else(|_| String::new(), |s| s.to_string());
        let stage = stage.as_str();
        match self.builds.get() {
            // Only a set that changed is built here; otherwise the graph is
            // only checked against the set.
            Some(b) if stage == CHECKING_THE_GRAPH => format!(
                "building the new projector set's graph before serving (LEVIATHAN_REBUILD=block): \
                 generation {}, seq {} of {}",
                b.generation, b.applied_seq, b.head_seq
            ),
            // Before the first stage is named (the process is just up).
            _ if stage.is_empty() => "starting the process".to_string(),
            _ => stage.to_string(),
        }
    }
}

/// While the store opens and a blocking build runs: `/livez` answers 200,
/// everything else 503 `not_ready` with what start-up is doing. Every answer
/// closes its connection (`Connection: close`): this server stops when the
/// real one takes the listener, and a kept-alive connection it closed then
/// could meet a client's next request on the way (the client sees the
/// connection drop mid-request); a fresh connection lands in the listener's
/// queue and is served by whichever server accepts it.
fn starting_router(
    starting: Starting,
    metrics_token: Option<crate::digest::Sha256>,
    allowed_hosts: api::host::AllowedHosts,
) -> axum::Router {
    use axum::routing::get;
    let started = std::time::Instant::now();
    let metrics = {
        let starting = starting.clone();
        move |headers: axum::http::HeaderMap| {
            let build = starting
                .builds
                .get()
                .map(|b| (b.applied_seq.0, b.head_seq.0));
            async move {
                if let Some(refused) =
                    api::monitoring::metrics_unauthorized(metrics_token, &headers)
                {
                    return refused;
                }
                api::monitoring::starting_metrics(started.elapsed().as_secs_f64(), build)
            }
        }
    };
    let live = || async {
        axum::Json(crate::wire::Health {
            status: "ok".into(),
        })
    };
    axum::Router::new()
        .route("/livez", get(live))
        .route("/healthz", get(live))
        .route("/metrics", get(metrics))
        .fallback(move || {
            let reason = starting.reason();
            async move {
                let mut resp = axum::response::IntoResponse::into_response(
                    api::error::ApiError::new(
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        "not_ready",
                        format!("not ready: the server is starting ({reason})"),
                    )
                    .with_details(serde_json::json!({"cause": "starting", "reason": reason})),
                );
                resp.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from_static("1"),
                );
                resp
            }
        })
        .layer(axum::middleware::from_fn_with_state(
            allowed_hosts,
            api::host::check,
        ))
        .layer(axum::middleware::map_response(
            |mut resp: axum::response::Response| async move {
                resp.headers_mut().insert(
                    axum::http::header::CONNECTION,
                    axum::http::HeaderValue::from_static("close"),
                );
                resp
            },
        ))
}

/// Opens the store, loads the projectors and decides the live generation
/// (building it first with `LEVIATHAN_REBUILD=block`).
fn open_and_prepare(
    config: &Config,
    starting: &Starting,
) -> anyhow::Result<(
    Store,
    crate::log::Head,
    Projection,
    crate::generations::Prepared,
    Option<crate::pg::Role>,
)> {
    // A key file named by the setting must be usable: said before a long
    // start (a journal replay, a PostgreSQL node's catch-up), not after it.
    if let Some(file) = &config.signing_key_file {
        crate::tlog::read_key_file(file)?;
    }
    // A PostgreSQL node's data dir (it holds the node id a PostgreSQL-mode
    // start makes) is a copy of the cluster's log: started on the embedded
    // store, it acknowledged events the cluster never had, and the next
    // PostgreSQL-mode start refused the store as another log.
    let node_id = config.data_dir.join("node-id");
    if config.postgres.is_none() && node_id.exists() {
        anyhow::bail!(
            "{} is the data dir of a node of a PostgreSQL cluster (it holds {}): its log lives in              PostgreSQL, and events appended here would be in no other node's log. Start it with              LEVIATHAN_STORE=postgres and its LEVIATHAN_POSTGRES_URL; to use a copy of it on its              own instead, delete {} in that copy first",
            config.data_dir.display(),
            node_id.display(),
            node_id.display()
        );
    }
    starting.set("opening the store");
    let store = open_store_with_cache(&config.data_dir, config.cache_bytes)?;
    let head = store.log.check_head().context("checking the log head")?;
    starting.set("indexing topology and failure events by target");
    let indexed = store
        .log
        .complete_target_index()
        .context("indexing topology and failure events by target")?;
    if indexed > 0 {
        tracing::info!(
            events = indexed,
            "indexed topology and failure events by target (a store written before the index, or by an older build)"
        );
    }
    // Compiling a component (seconds each for a Python or JavaScript one in
    // a release build, minutes in a debug one) is most of this stage the
    // first time a set is loaded: `/readyz` says so, and which.
    starting.set(format!(
        "loading the projectors: compiling the components not in the projector cache yet ({})",
        config
            .projectors
            .iter()
            .map(projector_specs::Spec::short_name)
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let projection = load_projection_capped(
        &config.projector_cache,
        &config.projectors,
        config.max_projector_bytes,
    )?;
    if !projection.set.projectors().iter().any(|p| p.name == "core") {
        tracing::warn!(
            "the projector set has no `core` projector: the graph holds only what the listed \
             projectors write (no Target, Task, Attempt … nodes, and the attempt, failure and \
             graph routes answer from that). List `core` first to keep them (docs/PROJECTORS.md)"
        );
    }
    starting.set(CHECKING_THE_GRAPH);
    let prepared = crate::generations::prepare(
        &store,
        head,
        crate::generations::Configured {
            set: projection.set.clone(),
            fingerprint: projection.fingerprint,
            sources: &projection.sources,
            settings: &config.projector_settings,
            build_rate: config.build_rate,
        },
        config.rebuild,
        &config.projector_cache,
        &starting.builds,
    )?;
    if let Some(keep) = config.projector_cache_keep {
        prune_projector_cache(&config.projector_cache, keep);
    }
    let (head, leader) = match &config.postgres {
        Some(pg) => {
            let (head, role) = join_postgres(config, pg, &store, &prepared.live, starting)?;
            (head, Some(role))
        }
        None => (head, None),
    };
    Ok((store, head, projection, prepared, leader))
}

/// Deletes compiled projectors unused for longer than `keep`, once every set
/// this start needs (the live one, a generation being built) has been loaded,
/// so none of theirs is old. A failure costs disk space only: it is logged.
fn prune_projector_cache(dir: &Path, keep: std::time::Duration) {
    match crate::projection::prune_compiled_cache(dir, keep) {
        Ok(p) if p.files > 0 || p.leftovers > 0 => tracing::info!(
            dir = %dir.display(),
            files = p.files,
            mib = p.bytes >> 20,
            leftovers = p.leftovers,
            keep_days = keep.as_secs() / 86_400,
            "pruned compiled projectors unused for longer than the cache keeps them"
        ),
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "could not prune the projector cache")
        }
    }
}

/// `LEVIATHAN_STORE=postgres`: connect and migrate, take the writer's
/// leadership (waiting while another node holds it; a replica does not),
/// then catch the local store up from PostgreSQL before anything is served
/// or appended.
fn join_postgres(
    config: &Config,
    pg: &crate::config::PostgresConfig,
    store: &Store,
    live: &crate::generations::Live,
    starting: &Starting,
) -> anyhow::Result<(crate::log::Head, crate::pg::Role)> {
    starting.set("connecting to PostgreSQL");
    let settings = crate::pg::PgSettings {
        url: pg.url.clone(),
        lease: pg.lease,
        test_crash_after_commit: pg.test_crash_after_commit,
        holder: crate::pg::node_id(&config.data_dir).context("the node id")?,
        instance: uuid::Uuid::new_v4().to_string(),
    };
    let mut log = crate::pg::PgLog::open(settings).context("opening the PostgreSQL log")?;
    starting.set("claiming this node's id in PostgreSQL");
    let (applied_seq, state_digest) = live.graph.state().context("reading the graph state")?;
    log.claim_identity(&crate::pg::identity::Claim {
        role: if pg.replica { "replica" } else { "writer" },
        applied_seq: applied_seq.0,
        state_digest,
        fingerprint: live.fingerprint,
        node_id_file: &config.data_dir.join("node-id"),
    })
    .context("claiming this node's id")?;
    // A start refused from here on removes the row the claim wrote: a node
    // that never ran is no member (it was listed, disagreeing, for good).
    let claimed = log.settings().clone();
    let joined = join_claimed(pg, store, live, starting, log);
    if joined.is_err() {
        crate::pg::identity::withdraw(&claimed);
    }
    joined
}

/// [`join_postgres`] once this node's id is claimed: catch up, then follow
/// or take the writer's leadership.
fn join_claimed(
    pg: &crate::config::PostgresConfig,
    store: &Store,
    live: &crate::generations::Live,
    starting: &Starting,
    mut log: crate::pg::PgLog,
) -> anyhow::Result<(crate::log::Head, crate::pg::Role)> {
    // Applies what the PostgreSQL log holds beyond the local head. A lost
    // connection (PostgreSQL restarted) is retried, paced, on a new one:
    // it stopped the start with an error before. What each commit applied
    // stays applied, so a retry goes on from there.
    let catch_up = |log: &mut crate::pg::PgLog| -> anyhow::Result<crate::log::Head> {
        starting.set("catching up from PostgreSQL");
        let mut backoff = crate::pg::Backoff::default();
        loop {
            let caught = crate::pg::catch_up::catch_up(
                &store.db,
                &store.log,
                live,
                crate::pg::LOCAL_PERSIST,
                log,
            );
            match caught {
                Ok(caught) => return Ok(caught.head),
                Err(crate::pg::catch_up::CatchUpError::Pg(e)) if log.is_closed() => {
                    backoff.failed("catching the local store up from PostgreSQL failed", &e);
                    if let Err(e) = log.reconnect() {
                        backoff.failed("reconnecting to PostgreSQL failed", &e);
                    }
                }
                Err(e) => {
                    return Err(anyhow::Error::new(e)
                        .context("catching the local store up from PostgreSQL"))
                }
            }
        }
    };
    if pg.replica {
        // Listening before the catch-up: nothing appended after it is missed.
        let mut follower =
            crate::pg::Follower::new(log, pg.promote).context("listening to the log")?;
        let head = catch_up(follower.log())?;
        // A reconnect during the catch-up dropped the LISTEN.
        follower.listen().context("listening to the log")?;
        return Ok((head, crate::pg::Role::Follower(follower)));
    }
    // A data dir of another database (ahead, or forked) is refused before
    // the lease is taken: holding it while refusing would delay a failover.
    crate::pg::catch_up::check_same_log(&store.log, &mut log)
        .context("checking the local store against the PostgreSQL log")?;
    // Most of the catching up before the lease is taken: a node on an empty
    // data dir took it first and let it lapse during a minute of catch-up,
    // fencing itself (or holding ingest up meanwhile). What is appended
    // while it waits for the lease is caught up below, with it renewed.
    catch_up(&mut log)?;
    starting.set("waiting for the writer's leadership in PostgreSQL");
    let told = std::sync::atomic::AtomicBool::new(false);
    log.lead(&|state| {
        if !told.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::info!(
                holder = %state.holder,
                epoch = state.epoch,
                expires_in_secs = state.expires_in,
                "another node holds the writer's leadership: waiting for its lease to expire"
            );
        }
    })
    .context("taking the writer's leadership")?;
    let mut leader = crate::pg::Leader::new(log).context("starting the leader lease renewal")?;
    let head = catch_up(leader.log_mut())?;
    if let Some(lost) = leader.lost() {
        anyhow::bail!("{}", lost.message);
    }
    Ok((head, crate::pg::Role::Leader(leader)))
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    // Listen first: probes get an answer (503, saying why) while the store
    // opens (a journal replay after a crash) or a blocking build runs.
    let listener = Arc::new(
        tokio::net::TcpListener::bind((config.host.as_str(), config.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", config.host, config.port))?,
    );
    let addr = listener.local_addr()?;
    tracing::info!(
        %addr,
        version = crate::build_info::VERSION,
        revision = crate::build_info::REVISION,
        "starting: probes answer on {addr} (503 until ready)"
    );
    let starting = Starting::default();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let probes = tokio::spawn(serve_http(
        listener.clone(),
        starting_router(
            starting.clone(),
            config
                .ops
                .metrics_token
                .as_ref()
                .map(|t| crate::digest::Sha256::of(t.0.as_bytes())),
            config.http.allowed_hosts.clone(),
        ),
        config.http.clone(),
        async move {
            let _ = ready_rx.await;
        },
        Drain::AnswerAccepted(std::time::Duration::from_secs(1)),
        None,
    ));
    // Signals are caught from the first moment the probes answer: SIGTERM or
    // SIGINT during start-up (a journal replay, a block build) stops the
    // process there, saying so; SIGHUP is taken for a tokens reload once the
    // start completes (its default action would kill the process).
    let mut shutdown_signal_installed = Box::pin(shutdown_signal());
    let mut early_hup = hangup_signal();
    let mut hup_during_start = false;
    let opened = {
        let (config, stage) = (config.clone(), starting.clone());
        let task = tokio::task::spawn_blocking(move || open_and_prepare(&config, &stage));
        tokio::pin!(task);
        loop {
            tokio::select! {
                done = &mut task => break done.context("start-up panicked")?,
                _ = &mut shutdown_signal_installed => {
                    tracing::warn!(
                        doing = %starting.reason(),
                        "SIGTERM/SIGINT during start-up: stopping now. Nothing was acknowledged \
                         yet; the store is crash-safe and a projector-set build resumes where it \
                         stopped at the next start"
                    );
                    std::process::exit(0);
                }
                _ = recv_hangup(&mut early_hup) => {
                    hup_during_start = true;
                    tracing::info!(
                        "SIGHUP during start-up: the tokens file is read again once the server is ready"
                    );
                }
            }
        }
    };
    let _ = ready_tx.send(());
    let _ = probes.await;
    let (store, head, projection, prepared, leader) = opened?;
    let cas = Cas::open(&store.db, config.sync, config.limits.max_artifact_bytes)
        .context("opening the artifact store")?;
    // Postgres mode: artifacts are shared through PostgreSQL, the local store
    // is this node's cache of them (crate::pg::artifacts).
    let cas = match &config.postgres {
        Some(pg) => cas.with_remote(Arc::new(
            crate::pg::artifacts::PgArtifacts::new(&pg.url)
                .context("the artifact store in PostgreSQL")?,
        )),
        None => cas,
    };
    let metrics = crate::metrics::Metrics::default();
    projection.set.attach_metrics(&metrics);
    prepared.live.projectors.attach_metrics(&metrics);
    let live = crate::generations::LiveGraph::new(prepared.live);
    let parts = WriterParts {
        db: store.db.clone(),
        log: store.log.clone(),
        live: live.clone(),
        head,
        sync: config.sync,
    };
    // What `GET /v1/cluster` answers from (the publisher starts with the
    // writer below: it publishes the role the writer holds now).
    let cluster = match &leader {
        Some(role) => {
            let settings = role.settings();
            let pg = config.postgres.as_ref();
            Some(crate::pg::members::Cluster {
                url: settings.url.clone(),
                node_id: settings.holder.clone(),
                lease: settings.lease,
                disagreement: crate::pg::members::Disagreement::default(),
                node: crate::pg::members::Node {
                    advertise_url: pg.and_then(|p| p.advertise_url.clone()),
                    status: crate::pg::lag::NodeStatus::new(
                        pg.and_then(|p| p.max_replica_lag),
                        &metrics,
                    ),
                },
            })
        }
        None => None,
    };
    let pg_settings = leader.as_ref().map(|role| role.settings().clone());
    let writer = match leader {
        Some(crate::pg::Role::Leader(leader)) => {
            Writer::start_leader(parts, metrics.writer(), leader)
        }
        Some(crate::pg::Role::Follower(follower)) => {
            // A replica repairs a digest disagreement itself (a rebuild).
            let follower = match &cluster {
                Some(c) => follower.with_agreement(crate::pg::Agreement {
                    disagreement: c.disagreement.clone(),
                    catalog: prepared.catalog.clone(),
                }),
                None => follower,
            };
            Writer::start_follower(parts, metrics.writer(), follower)
        }
        None => Writer::start_with_metrics(parts, metrics.writer()),
    }
    .context("starting the writer")?;
    // Publishes this node's state for `GET /v1/cluster` while it runs: its
    // role as it is now (a promotion or a step-down changes it).
    let (_publisher, taken_over) = match (&pg_settings, &cluster) {
        (Some(settings), Some(c)) => {
            let (publisher, rounds) = crate::pg::members::Publisher::start(
                settings,
                writer.role(),
                live.clone(),
                c.disagreement.clone(),
                c.node.clone(),
            )
            .context("starting the cluster membership publisher")?;
            // Nothing is served before the first comparison with the
            // writer (bounded: PostgreSQL may be slow to answer).
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), rounds.first).await;
            (Some(publisher), Some(rounds.taken_over))
        }
        _ => (None, None),
    };
    let writer_health = writer.health_handle();
    // Verifies the log from seq 1 in the background (readiness does not wait
    // for it), then what is appended, every LEVIATHAN_VERIFY_INTERVAL_SECS.
    let verifier = crate::chain_verifier::Verifier::start(
        store.log.clone(),
        metrics.clone(),
        config.ops.verify_interval,
    )
    .context("starting the chain verifier")?;
    let verifier_status = verifier.status();
    let signer = crate::tlog::load_signer(
        config.signing_key_file.as_deref(),
        &config.data_dir,
        &store.db,
        head.seq.0,
        config.new_signing_key,
        config.postgres.is_some(),
    )?;
    tracing::info!(verifier_key = %signer.verifier_key(), "checkpoints are signed with this key");
    let transparency = crate::tlog::Transparency {
        tree: crate::tlog::Tree::open(&store.db, &store.log).context("opening the Merkle tree")?,
        log: store.log.clone(),
        graph: crate::tlog::GraphSource::Live(live.clone()),
        signer: Arc::new(signer),
    };
    let builds = crate::generations::Builds::default();
    let build_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let build_thread = match prepared.build {
        Some(plan) => Some(
            crate::generations::build::spawn(crate::generations::build::Background {
                db: store.db.clone(),
                log: store.log.clone(),
                catalog: prepared.catalog.clone(),
                plan,
                writer: writer.clone(),
                live: live.clone(),
                builds: builds.clone(),
                stop: build_stop.clone(),
            })
            .context("starting the generation build")?,
        ),
        None => None,
    };
    // The async projectors of the live generation, applied behind the head.
    let follow = crate::generations::Follow::default();
    let (follow_stop, follow_stopped) = tokio::sync::watch::channel(false);
    let follower_thread = crate::generations::follow::spawn(crate::generations::follow::Follower {
        db: store.db.clone(),
        log: store.log.clone(),
        live: live.clone(),
        follow: follow.clone(),
        head: writer.head_watch(),
        runtime: tokio::runtime::Handle::current(),
        metrics: metrics.clone(),
        stop: follow_stopped,
    })
    .context("starting the async projectors' follower")?;
    let streams = api::stream::Streams::new(config.streams, writer.head_watch());
    let state = AppState::new(api::Shared {
        follow,
        live: live.clone(),
        builds: builds.clone(),
        catalog: prepared.catalog.clone(),
        tokens: config.tokens.clone(),
        http: config.http.clone(),
        limits: config.limits,
        autonomy_config: config.autonomy_config.clone(),
        log: store.log.clone(),
        cas,
        writer,
        metrics: metrics.clone(),
        monitor: Arc::new(api::monitoring::Monitor::new(
            config.ops.metrics_token.as_ref(),
            config.data_dir.clone(),
            Some(verifier_status.clone()),
            store.db.clone(),
        )),
        transparency,
        streams: streams.clone(),
        cluster,
        scans: api::limits::Bulkhead::new(config.http.max_scanning_reads, &metrics),
    });
    let app = api::router(state);
    tracing::info!(
        %addr,
        data_dir = %config.data_dir.display(),
        head_seq = head.seq.0,
        sync = ?config.sync,
        tokens = config.tokens.current().len(),
        tokens_file = %config.tokens.file().map_or("-".into(), |f| f.display().to_string()),
        startup_ms = started.elapsed().as_millis() as u64,
        "listening on {addr}"
    );
    let reload = tokio::spawn(reload_tokens_on_sighup(
        config.tokens.clone(),
        early_hup,
        hup_during_start,
    ));
    let health = writer_health;
    let signalled = Arc::new(std::sync::OnceLock::new());
    // Another process took this node's id over (crate::pg::identity): this
    // one stops serving as that node, as on a signal, and exits non-zero.
    let taken = Arc::new(std::sync::OnceLock::<String>::new());
    let on_signal = {
        let (signalled, taken) = (signalled.clone(), taken.clone());
        let signal = shutdown_signal_installed;
        let taken_over = async move {
            match taken_over {
                Some(rx) => match rx.await {
                    Ok(e) => e,
                    // The publisher stopped without a takeover.
                    Err(_) => std::future::pending().await,
                },
                None => std::future::pending().await,
            }
        };
        async move {
            tokio::select! {
                _ = signal => {}
                e = taken_over => {
                    tracing::error!(
                        error = %e,
                        "stopping: this node's id is live in another process"
                    );
                    let _ = taken.set(e.to_string());
                }
            }
            let _ = signalled.set(std::time::Instant::now());
            // Event streams never end by themselves: end them, or graceful
            // shutdown would wait for them until its timeout.
            streams.close();
            tracing::info!("shutting down: no new connections; finishing requests in flight");
        }
    };
    serve_http(
        listener,
        app,
        config.http.clone(),
        on_signal,
        Drain::Graceful,
        Some(metrics.clone()),
    )
    .await;
    reload.abort();
    // Whatever state the store is in, the process exits within the shutdown
    // timeout of the signal: a flush that cannot finish is abandoned. The
    // background threads stop within the drain's part of it, so that the
    // flush keeps its reserve.
    let deadline = signalled
        .get()
        .copied()
        .unwrap_or_else(std::time::Instant::now)
        + config.http.shutdown_timeout;
    let threads_by = deadline - config.http.flush_reserve();
    let until = |t: std::time::Instant| t.saturating_duration_since(std::time::Instant::now());
    // A build stops at its next chunk; it resumes from there on the next start.
    build_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(t) = build_thread {
        let joined = tokio::task::spawn_blocking(move || t.join());
        let _ = tokio::time::timeout(until(threads_by), joined).await;
    }
    // The follower stops after its round; it resumes from its committed seq.
    let _ = follow_stop.send(true);
    {
        let joined = tokio::task::spawn_blocking(move || follower_thread.join());
        let _ = tokio::time::timeout(until(threads_by), joined).await;
    }
    drop(verifier);
    if let Some(f) = health.failure() {
        anyhow::bail!(
            "shut down without flushing the store: the writer had stopped ({}: {}); \
             the next start replays the journal",
            f.cause,
            f.message
        );
    }
    // The router (and with it the writer's queue) is gone: flush the
    // memtables so the next start does not replay the journal.
    let flushing = std::time::Instant::now();
    let flush = tokio::task::spawn_blocking(move || crate::storage::flush_memtables(&store.db));
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    match tokio::time::timeout(left, flush).await {
        Ok(joined) => joined
            .context("flushing the store")?
            .context("flushing the store")?,
        Err(_) => anyhow::bail!(
            "shut down without flushing the store: the flush did not finish within \
             LEVIATHAN_SHUTDOWN_TIMEOUT ({} s); the next start replays the journal",
            config.http.shutdown_timeout.as_secs()
        ),
    }
    tracing::info!(
        flush_ms = flushing.elapsed().as_millis() as u64,
        "shut down"
    );
    if let Some(e) = taken.get() {
        anyhow::bail!("stopped serving as this node: {e}");
    }
    Ok(())
}

/// What the accept loop does with open connections once it stops accepting.
#[derive(Clone, Copy, Debug)]
pub enum Drain {
    /// hyper's graceful shutdown: requests in flight finish, idle
    /// connections (keep-alive, or accepted with no request read yet) close.
    Graceful,
    /// The start-up server hands its listener over to the real one: every
    /// connection it accepted gets its answer (each closes after one), for up
    /// to this long, before the rest are closed gracefully. A client whose
    /// request raced the handover gets a 503 to retry, not a reset.
    AnswerAccepted(std::time::Duration),
}

/// The accept loop: HTTP/1.1 connections with a header read timeout (which is
/// also the idle keep-alive timeout), a write timeout (a connection that
/// takes none of a pending answer's bytes for that long is closed: a client
/// that never reads cannot hold its slot, nor an answer's memory; an event
/// stream's is longer by its stall limit, `api::write_timeout`) and a cap
/// on the number of headers, at most `max_connections` at once. At the cap a
/// new connection takes the place of an idle one (`api::idle`); with none
/// idle, it is answered 503 and closed (the probes and `/metrics` are
/// served), and beyond [`overflow_connections`] of those it is closed
/// unanswered. On `shutdown`, stops accepting and lets open connections
/// finish as `drain` says.
pub async fn serve_http(
    listener: Arc<tokio::net::TcpListener>,
    app: axum::Router,
    http: crate::config::HttpSettings,
    shutdown: impl std::future::Future<Output = ()>,
    drain: Drain,
    metrics: Option<crate::metrics::Metrics>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let connections = Arc::new(tokio::sync::Semaphore::new(http.max_connections));
    let overflow = Arc::new(tokio::sync::Semaphore::new(overflow_connections(
        http.max_connections,
    )));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(http.header_read_timeout)
        .max_headers(http.max_headers);
    let idle = Arc::new(api::idle::Connections::default());
    let accepting = Accepting {
        app,
        builder,
        http: http.clone(),
        metrics,
        idle: idle.clone(),
        overflow,
        refusals: Arc::default(),
    };
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, keep serving.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let write_timeout = api::write_timeout::WriteTimeout::new(http.write_timeout);
        let io = TokioIo::new(api::write_timeout::TimedIo::new(
            stream,
            write_timeout.clone(),
        ));
        match connections.clone().try_acquire_owned() {
            Ok(permit) => accepting.serve(io, peer, write_timeout, permit, graceful.watcher()),
            Err(_) if idle.close_one_idle(api::idle::MIN_IDLE) => {
                // An idle connection closes to make room: this one takes
                // its place once it has (the semaphore hands a released
                // permit to a waiter before anyone else).
                let (accepting, connections, watcher) =
                    (accepting.clone(), connections.clone(), graceful.watcher());
                tokio::spawn(async move {
                    let wait = std::time::Duration::from_secs(1);
                    match tokio::time::timeout(wait, connections.acquire_owned()).await {
                        Ok(Ok(permit)) => accepting.serve(io, peer, write_timeout, permit, watcher),
                        _ => accepting.beyond_cap(io),
                    }
                });
            }
            Err(_) => accepting.beyond_cap(io),
        }
    }
    drop(listener);
    if let Drain::AnswerAccepted(grace) = drain {
        // Every permit back = every accepted connection answered and closed.
        let all = u32::try_from(http.max_connections).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(grace, connections.acquire_many(all)).await;
    }
    if tokio::time::timeout(http.drain_timeout(), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            timeout_s = http.drain_timeout().as_secs_f64(),
            "requests still in flight at the shutdown timeout: their connections are dropped \
             (a request that was not answered was not acknowledged)"
        );
    }
}

type ConnectionIo = hyper_util::rt::TokioIo<api::write_timeout::TimedIo>;

/// What [`serve_http`]'s accept loop hands each connection.
#[derive(Clone)]
struct Accepting {
    app: axum::Router,
    builder: hyper::server::conn::http1::Builder,
    http: crate::config::HttpSettings,
    metrics: Option<crate::metrics::Metrics>,
    /// The connections within the cap, and which are idle.
    idle: Arc<api::idle::Connections>,
    /// Places for connections answered beyond the cap.
    overflow: Arc<tokio::sync::Semaphore>,
    refusals: Arc<std::sync::Mutex<RefusalLog>>,
}

impl Accepting {
    /// Serves a connection within the cap (`permit`) until it ends, or
    /// until, idle, it is told to make room for a new one.
    fn serve(
        &self,
        io: ConnectionIo,
        peer: std::net::SocketAddr,
        write_timeout: api::write_timeout::WriteTimeout,
        permit: tokio::sync::OwnedSemaphorePermit,
        watcher: hyper_util::server::graceful::Watcher,
    ) {
        use hyper_util::service::TowerToHyperService;
        // A Router takes any request body, hyper's included. Each request
        // carries its connection's write timeout (an event stream lengthens
        // it), and keeps its connection busy until its answer is sent.
        let router = TowerToHyperService::new(self.app.clone());
        let registration = self.idle.register();
        let conn = registration.conn.clone();
        let svc =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(write_timeout.clone());
                let busy = conn.busy();
                let answer = hyper::service::Service::call(&router, req);
                async move {
                    let resp = answer.await?;
                    Ok::<_, std::convert::Infallible>(
                        resp.map(|b| axum::body::Body::new(api::idle::Tracked::new(b, busy))),
                    )
                }
            });
        let conn = Box::pin(watcher.watch(self.builder.serve_connection(io, svc)));
        let open = self
            .metrics
            .as_ref()
            .map(|m| m.http_connections_open.clone());
        if let Some(g) = &open {
            g.inc();
        }
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let mut conn = conn;
            loop {
                tokio::select! {
                    ended = &mut conn => {
                        if let Err(e) = ended {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    () = registration.conn.asked_to_close() => {
                        if registration.conn.close_now() {
                            tracing::debug!(
                                %peer,
                                "closed an idle connection to make room for a new one \
                                 (LEVIATHAN_MAX_CONNECTIONS)"
                            );
                            if let Some(m) = &metrics {
                                m.http_idle_connections_closed.inc();
                            }
                            break;
                        }
                    }
                }
            }
            drop(conn);
            if let Some(g) = &open {
                g.dec();
            }
            drop(registration);
            drop(permit);
        });
    }

    /// A connection beyond the cap with no idle one to take the place of:
    /// answered 503 (the probes and `/metrics` served) and closed, or, beyond
    /// [`overflow_connections`] of those, closed unanswered.
    fn beyond_cap(&self, io: ConnectionIo) {
        use hyper_util::service::TowerToHyperService;
        let max = self.http.max_connections;
        let Ok(slot) = self.overflow.clone().try_acquire_owned() else {
            // So many refused connections are open already that answering
            // more would only feed the flood.
            self.refused(false);
            drop(io);
            return;
        };
        self.refused(true);
        // The probes and /metrics are still served (cheap, and a liveness
        // probe failing in a connection flood would get a busy server
        // restarted); every other request gets the 503.
        let probes = TowerToHyperService::new(self.app.clone());
        let metrics = self.metrics.clone();
        let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let probes = probes.clone();
            let metrics = metrics.clone();
            async move {
                if api::limits::served_beyond_connection_cap(req.uri().path()) {
                    return hyper::service::Service::call(&probes, req).await;
                }
                if let Some(m) = &metrics {
                    m.http(
                        api::limits::BEYOND_CONNECTION_CAP,
                        req.method().as_str(),
                        503,
                        0.0,
                    );
                    // An ingest refused here is an ingest outcome too (the
                    // ingest alerts read them).
                    if req.method() == hyper::Method::POST
                        && req.uri().path() == "/v1/events/ingest"
                    {
                        m.ingest("overloaded", 0.0, 0);
                    }
                }
                Ok(api::limits::too_many_connections(max))
            }
        });
        let mut b = self.builder.clone();
        let conn = b.keep_alive(false).serve_connection(io, svc);
        let limit = self.http.header_read_timeout * 2;
        tokio::spawn(async move {
            let _ = tokio::time::timeout(limit, conn).await;
            drop(slot);
        });
    }

    fn refused(&self, answered: bool) {
        let mut log = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        if answered {
            log.answered += 1;
        } else {
            log.closed += 1;
        }
        log.log(self.http.max_connections);
        if let Some(m) = &self.metrics {
            m.connection_refused(answered);
        }
    }
}

/// How many connections beyond `max_connections` are answered (503, or a
/// probe) at once: an eighth of the cap, 8 to 128. Beyond those a connection
/// is closed as soon as it is accepted, so a flood of connections cannot
/// open ever more of them (each may buffer up to hyper's header limit).
pub fn overflow_connections(max_connections: usize) -> usize {
    (max_connections / 8).clamp(8, 128)
}

/// The log of connections refused at the cap: one line at most every 10 s
/// (a flood would otherwise write one per connection), with the counts
/// since the last line.
struct RefusalLog {
    answered: u64,
    closed: u64,
    since: std::time::Instant,
    logged: Option<std::time::Instant>,
}

impl Default for RefusalLog {
    fn default() -> Self {
        RefusalLog {
            answered: 0,
            closed: 0,
            since: std::time::Instant::now(),
            logged: None,
        }
    }
}

impl RefusalLog {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(10);

    fn log(&mut self, max: usize) {
        let now = std::time::Instant::now();
        if self
            .logged
            .is_some_and(|at| now.duration_since(at) < Self::EVERY)
        {
            return;
        }
        tracing::warn!(
            max,
            answered_503 = self.answered,
            closed_unanswered = self.closed,
            over_s = now.duration_since(self.since).as_secs_f64().round(),
            "too many connections (LEVIATHAN_MAX_CONNECTIONS): connections beyond it are answered \
             503 (the probes and /metrics are served), or closed unanswered once many are; \
             leviathan_http_connections_refused_total counts them"
        );
        self.answered = 0;
        self.closed = 0;
        self.since = now;
        self.logged = Some(now);
    }
}

/// Re-reads the tokens file on SIGHUP. A file that cannot be used leaves the
/// current tokens in force (and says why in the log); requests are never
/// refused for a reload.
async fn reload_tokens_on_sighup(tokens: crate::tokens::Tokens, mut hup: Hangup, pending: bool) {
    #[cfg(unix)]
    {
        let mut pending = pending;
        loop {
            if !std::mem::take(&mut pending) && !recv_hangup(&mut hup).await {
                return;
            }
            let Some(file) = tokens.file().map(Path::to_path_buf) else {
                tracing::info!("SIGHUP: no LEVIATHAN_TOKENS_FILE to reload");
                continue;
            };
            let t = tokens.clone();
            match tokio::task::spawn_blocking(move || t.reload()).await {
                Ok(Ok(n)) => tracing::info!(file = %file.display(), tokens = n, "tokens reloaded"),
                Ok(Err(e)) => tracing::error!(
                    file = %file.display(),
                    "the tokens file was not reloaded, the previous tokens stay in force: {e}"
                ),
                Err(e) => tracing::error!(error = %e, "reloading the tokens failed"),
            }
        }
    }
    #[cfg(not(unix))]
    std::future::pending::<()>().await;
}

/// The SIGHUP listener, installed when made (`None`: it could not be, or
/// not on unix).
#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

fn hangup_signal() -> Hangup {
    #[cfg(unix)]
    {
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        if hup.is_none() {
            tracing::warn!("cannot listen for SIGHUP: the tokens file will not be reloaded");
        }
        hup
    }
    #[cfg(not(unix))]
    None
}

/// The next SIGHUP (false: no more can come); pending forever without a
/// listener.
async fn recv_hangup(hup: &mut Hangup) -> bool {
    #[cfg(unix)]
    if let Some(h) = hup {
        return h.recv().await.is_some();
    }
    let _ = hup;
    std::future::pending::<bool>().await
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is
/// called, not when the future is first polled: a signal that arrives right
/// after the `listening on` line must already be caught (otherwise its default
/// action kills the process without a flush).
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        if term.is_err() || int.is_err() {
            tracing::warn!("cannot listen for SIGTERM/SIGINT: stop the server with SIGKILL");
        }
        async move {
            let wait = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
                match s {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! { _ = wait(term) => {}, _ = wait(int) => {} }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/readyz` said "building the new projector set's graph" on every
    /// start (the stage was named before knowing whether a build runs), and
    /// an empty reason in the first moments.
    #[test]
    fn the_start_up_reason_names_a_build_only_while_one_runs() {
        let starting = Starting::default();
        assert_eq!(starting.reason(), "starting the process");
        starting.set(CHECKING_THE_GRAPH);
        assert_eq!(starting.reason(), CHECKING_THE_GRAPH);
        assert!(!starting.reason().contains("building"));
        starting.set("opening the store");
        assert_eq!(starting.reason(), "opening the store");
    }
}
