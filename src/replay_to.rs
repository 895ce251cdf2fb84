//! `leviathan replay --to SEQ`: re-project the log up to one seq into a
//! scratch store, print its state digest and compare it with the digest the
//! live graph recorded at that seq (`graph_digests`) — for a set with
//! `async` projectors, their lane too, and the combined digest with the one
//! recorded when the source's async lane had applied SEQ; optionally dump the
//! scratch graph as sorted JSON Lines (`dump_jsonl`, also `leviathan dump
//! --format jsonl` for the live graph). It never writes the source store.
//!
//! # Reading the log while a server may be running
//! fjall locks a store for the one process that opens it, and a store's
//! directory cannot be copied file by file while the server writes it (a
//! compaction may delete a table between the listing and the copy, a flush
//! may retire a journal: the copy would lack or repeat data with no error).
//! So the source is read in one of two consistent ways:
//! - the store is not in use (the server is stopped, or the data dir is a
//!   backup's, which is a store under `<DIR>/store`): it is opened and read
//!   through one fjall snapshot; nothing is written to it;
//! - the store is locked by a running server on this machine: the replay asks
//!   that server for a backup (`POST /v1/admin/backup`, the existing route,
//!   with an admin token from `LEVIATHAN_CONTROL_PLANE_TOKEN`) into the
//!   scratch directory. A backup is the server's own consistent snapshot (one
//!   fjall snapshot, one seq, verified before its manifest is written) and
//!   ingest goes on meanwhile; the replay then reads that copy. It costs a
//!   copy of the store (artifacts included), and is deleted with the scratch.

use crate::digest::Sha256;
use crate::graph::{GraphStore, GENESIS_DIGEST};
use crate::log::Log;
use crate::project_event::project_event;
use crate::projection::{EventInput, Policy, ProjectorSet};
use crate::seq::Seq;
use anyhow::{bail, Context};
use fjall::Readable;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Events projected per committed batch of the scratch graph.
const BATCH_EVENTS: usize = 4096;

/// What `replay --to` found.
#[derive(Debug, Serialize)]
pub struct ReplayToReport {
    /// The seq replayed to (events 1..=to).
    pub to: Seq,
    pub events: u64,
    /// The scratch graph's state digest after `to`.
    pub state_digest: Sha256,
    /// The digest the source graph recorded at `to` (`None`: it has none,
    /// e.g. the graph was not built that far).
    pub recorded_digest: Option<Sha256>,
    /// True when both digests are equal (and, for a set with `async`
    /// projectors, both combined digests, when the source recorded one).
    pub matches: bool,
    /// A set with `async` projectors: the scratch graph's async lane digest
    /// after `to` (`state_digest` is the inline lane's, as the writer keeps it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub async_digest: Option<Sha256>,
    /// A set with `async` projectors: the scratch graph's combined digest
    /// after `to`, `SHA-256(state_digest ‖ async_digest)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub combined_digest: Option<Sha256>,
    /// A set with `async` projectors: the combined digest the source graph
    /// recorded at `to` (`null`: its async lane had not applied `to`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recorded_combined_digest: Option<Option<Sha256>>,
    /// The projector set replayed with, and the one that built the source graph.
    pub fingerprint: Sha256,
    pub recorded_fingerprint: Option<Sha256>,
    /// `store` (read directly) or `backup` (a snapshot the running server made).
    pub source: &'static str,
    pub seconds: f64,
    /// Where the sorted JSON Lines dump was written, if asked.
    pub dump: Option<PathBuf>,
}

/// Projects the events 1..=`to` of `log` (read through one snapshot of
/// `src_db`) into a new graph in `scratch_db`, and compares its digest with
/// the one `graph` recorded at `to`.
pub fn replay_to(
    src_db: &fjall::Database,
    log: &Log,
    graph: &GraphStore,
    to: Seq,
    set: &ProjectorSet,
    fingerprint: Sha256,
    scratch_db: &fjall::Database,
) -> anyhow::Result<(ReplayToReport, GraphStore)> {
    let started = std::time::Instant::now();
    // The writer's lane first (the whole set when it has no async
    // projectors), then the async lane up to `to`, as `leviathan rebuild`
    // and the server's follower apply it.
    let whole = set;
    let set = set.inline();
    let view = src_db.snapshot();
    let head = log.head_at(&view)?;
    if to > head.seq {
        bail!("--to {to} is beyond the log's head (seq {})", head.seq);
    }
    let recorded_digest = if to == Seq::ZERO {
        Some(GENESIS_DIGEST)
    } else {
        view.get(&graph.digests, to.to_key())?
            .map(|v| crate::graph::keys::decode_digest(&v))
            .transpose()?
    };
    let recorded_combined_digest = match whole.asynchronous() {
        None => None,
        Some(_) if to == Seq::ZERO => Some(graph.combined_digest_at(Seq::ZERO)?),
        Some(_) => Some(
            view.get(
                &graph.digests,
                crate::graph::keys::tagged_digest(crate::graph::keys::DIGEST_COMBINED, to),
            )?
            .map(|v| crate::graph::keys::decode_digest(&v))
            .transpose()?,
        ),
    };
    let recorded_fingerprint = graph.projector_set()?;
    let scratch = GraphStore::open(scratch_db).context("opening the scratch graph")?;
    if scratch.state()?.0 != Seq::ZERO {
        bail!("the scratch store already holds a graph: use a new directory");
    }
    let mut batch = scratch_db.batch();
    scratch.stage_projector_set(&mut batch, &fingerprint);
    batch.commit()?;
    let mut after = Seq::ZERO;
    let mut events = 0u64;
    while after < to {
        let want = usize::try_from(to.0 - after.0).unwrap_or(usize::MAX);
        let chunk = log.after_at(&view, after, BATCH_EVENTS.min(want))?;
        let Some(last) = chunk.last() else { break };
        after = last.seq;
        let inputs: Vec<EventInput<'_>> = chunk.iter().map(crate::replay::input).collect();
        let prepared = set.prepare_all(&inputs);
        let mut staging = scratch.staging()?;
        for (input, prepared) in inputs.iter().zip(prepared) {
            // As `rebuild` (and the generation build): every failure recorded.
            project_event(set, input, prepared, &mut staging, Policy::RecordAll).with_context(
                || {
                    format!(
                        "event seq {} ({}) does not project with this projector set",
                        input.seq, input.event_id
                    )
                },
            )?;
            staging.settle();
        }
        let mut batch = scratch_db.batch();
        staging.write_into(&mut batch)?;
        batch.commit()?;
        events += chunk.len() as u64;
    }
    let (seq, state_digest) = scratch.state()?;
    if seq != to {
        bail!("the log ended at seq {seq} before seq {to}");
    }
    // The async lane: up to the inline lane's seq, `to`. It reads the log
    // through views of its own; offline, nothing writes it meanwhile (a
    // running server's store is read from a backup, see the module doc).
    let (async_digest, combined_digest) = if whole.asynchronous().is_some() {
        crate::generations::follow::catch_up(scratch_db, log, &scratch, whole)
            .context("applying the async projectors")?;
        (
            scratch.async_digest_at(to)?,
            scratch.combined_digest_at(to)?,
        )
    } else {
        (None, None)
    };
    let combined_matches = match recorded_combined_digest {
        Some(Some(recorded)) => combined_digest == Some(recorded),
        _ => true,
    };
    Ok((
        ReplayToReport {
            to,
            events,
            state_digest,
            matches: recorded_digest == Some(state_digest) && combined_matches,
            async_digest,
            combined_digest,
            recorded_combined_digest,
            recorded_digest,
            fingerprint,
            recorded_fingerprint,
            source: "store",
            seconds: started.elapsed().as_secs_f64(),
            dump: None,
        },
        scratch,
    ))
}

/// Writes the graph's nodes then its edges as JSON Lines, one record a line
/// with its keys sorted and a `"kind"` of `"node"` or `"edge"`: nodes by id,
/// edges by (from, edge_type, to), bytewise. Two graphs with the same content
/// give the same bytes, so two dumps diff line by line.
pub fn dump_jsonl(graph: &GraphStore, w: &mut impl Write) -> anyhow::Result<()> {
    let snap = graph.view();
    let line = |w: &mut dyn Write, kind: &str, v: serde_json::Value| -> anyhow::Result<()> {
        let mut v = v;
        if let serde_json::Value::Object(m) = &mut v {
            m.insert("kind".into(), kind.into());
        }
        // serde_json's map is a BTreeMap here: keys come out sorted.
        serde_json::to_writer(&mut *w, &v)?;
        w.write_all(b"\n")?;
        Ok(())
    };
    for guard in snap.iter(&graph.nodes) {
        let (_, v) = guard.into_inner()?;
        let node = crate::graph::store::decode_node(&v)?;
        line(w, "node", serde_json::to_value(&node)?)?;
    }
    // `graph_edges_out` keys put `from`'s length first: sort by the strings.
    let mut keys = Vec::new();
    for guard in snap.iter(&graph.edges_out) {
        keys.push(guard.key()?.to_vec());
    }
    let mut parts = keys
        .iter()
        .map(|k| crate::graph::keys::split3(k).map(|p| (p, k)))
        .collect::<Result<Vec<_>, _>>()?;
    parts.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, key) in parts {
        let edge = graph
            .read_edge(&snap, key)?
            .context("an edge key vanished from the snapshot")?;
        line(w, "edge", serde_json::to_value(&edge)?)?;
    }
    Ok(())
}

/// `leviathan replay` arguments.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Replay the events 1..=SEQ.
    #[arg(long = "to", value_name = "SEQ")]
    pub to: u64,
    /// The data directory whose log is replayed (a live one, stopped or
    /// running, or a backup directory). Default: LEVIATHAN_DATA_DIR, else
    /// ~/.leviathan/data
    #[arg(long, env = "LEVIATHAN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub projection: crate::config::ProjectionArgs,
    /// Write the replayed graph's nodes and edges as sorted JSON Lines.
    #[arg(long, value_name = "FILE")]
    pub dump: Option<PathBuf>,
    /// The scratch directory (new or empty; kept afterwards). Default: a new
    /// directory under the system's temp dir, removed afterwards.
    #[arg(long, value_name = "DIR")]
    pub scratch: Option<PathBuf>,
    /// The running server to ask for a backup when the store is in use.
    #[arg(
        long,
        env = "LEVIATHAN_API_URL",
        default_value = "http://127.0.0.1:8000"
    )]
    pub url: String,
}

/// Removes a scratch directory it made when dropped.
struct Scratch {
    path: PathBuf,
    remove: bool,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.remove {
            if let Err(e) = std::fs::remove_dir_all(&self.path) {
                tracing::warn!(path = %self.path.display(), "cannot remove the scratch dir: {e}");
            }
        }
    }
}

fn scratch_dir(given: Option<&Path>) -> anyhow::Result<Scratch> {
    match given {
        Some(p) => {
            let p = std::path::absolute(p)?;
            if p.exists() && std::fs::read_dir(&p)?.next().is_some() {
                bail!("--scratch {} is not empty", p.display());
            }
            std::fs::create_dir_all(&p)?;
            Ok(Scratch {
                path: p,
                remove: false,
            })
        }
        None => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            let p = std::env::temp_dir()
                .join(format!("leviathan-replay-{}-{nanos}", std::process::id()));
            std::fs::create_dir_all(&p)
                .with_context(|| format!("cannot create {}", p.display()))?;
            Ok(Scratch {
                path: p,
                remove: true,
            })
        }
    }
}

/// Opens the source store, or has the running server back it up into
/// `scratch/source` when it is locked (see the module doc).
fn open_source(
    dir: &Path,
    scratch: &Path,
    url: &str,
) -> anyhow::Result<(crate::storage::Store, &'static str)> {
    crate::storage::require_store(dir)?;
    match crate::storage::open_database(&dir.join("store")) {
        Ok(db) => {
            drop(db);
            Ok((crate::storage::open_store(dir)?, "store"))
        }
        Err(fjall::Error::Locked) => {
            let token = std::env::var("LEVIATHAN_CONTROL_PLANE_TOKEN")
                .ok()
                .filter(|t| !t.trim().is_empty())
                .with_context(|| {
                    format!(
                        "the store in {} is in use by a running server: set \
                         LEVIATHAN_CONTROL_PLANE_TOKEN to an admin token so that the replay \
                         asks it for a consistent backup ({url}), or replay a backup directory",
                        dir.display()
                    )
                })?;
            let to = scratch.join("source");
            tracing::info!(%url, "the store is in use: asking the server for a backup");
            let client = reqwest::blocking::Client::builder().timeout(None).build()?;
            let resp = client
                .post(format!("{}/v1/admin/backup", url.trim_end_matches('/')))
                .bearer_auth(token.trim())
                .json(&serde_json::json!({ "to": to }))
                .send()
                .with_context(|| format!("cannot reach the server at {url}"))?;
            let status = resp.status();
            let body: serde_json::Value = resp.json().context("reading the server's answer")?;
            if !status.is_success() {
                bail!(
                    "the server refused the backup ({status}): {}",
                    body["error"]["message"].as_str().unwrap_or("no message")
                );
            }
            Ok((crate::storage::open_store(&to)?, "backup"))
        }
        Err(e) => {
            Err(anyhow::Error::new(e)
                .context(format!("cannot open the store in {}", dir.display())))
        }
    }
}

/// `leviathan replay --to SEQ`: prints the report; `Ok(false)` when the
/// digests differ.
pub fn run(args: &ReplayArgs, data_dir: &Path) -> anyhow::Result<bool> {
    let scratch = scratch_dir(args.scratch.as_deref())?;
    let (source, how) = open_source(data_dir, &scratch.path, &args.url)?;
    let specs = crate::projector_specs::configured(
        args.projection.projectors.as_deref(),
        args.projection.projectors_file.as_deref(),
    )?
    .specs;
    let cache = args
        .projection
        .projector_cache
        .clone()
        .unwrap_or_else(|| crate::config::default_projector_cache(data_dir));
    let p =
        crate::server::load_projection_capped(&cache, &specs, args.projection.max_projector_bytes)?;
    let scratch_db = crate::storage::open_database(&scratch.path.join("graph"))
        .context("creating the scratch store")?;
    let (mut report, graph) = replay_to(
        &source.db,
        &source.log,
        &source.graph,
        Seq(args.to),
        &p.set,
        p.fingerprint,
        &scratch_db,
    )?;
    report.source = how;
    if let Some(path) = &args.dump {
        let f = std::fs::File::create(path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        let mut w = std::io::BufWriter::new(f);
        dump_jsonl(&graph, &mut w)?;
        w.flush()?;
        report.dump = Some(path.clone());
    }
    drop(graph);
    drop(scratch_db);
    drop(source);
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(format!("{}\n", serde_json::to_string_pretty(&report)?).as_bytes())?;
    if !report.matches {
        tracing::warn!(
            to = report.to.0,
            "the replayed digest differs from the one recorded at that seq"
        );
    }
    Ok(report.matches)
}
