//! Offline rebuild: re-project the whole log from genesis with a projector set
//! and compare the resulting state digest with the one the graph had. It owns
//! the replay loop; it runs only while no server uses the data dir (the store's
//! lock file guarantees it) and never touches the log.

use crate::digest::Sha256;
use crate::graph::GraphStore;
use crate::log::Log;
use crate::projection::{EventInput, ProjectorSet};
use crate::seq::Seq;
use anyhow::Context;
use serde::Serialize;

/// Events projected per committed batch.
const BATCH_EVENTS: usize = 8192;

#[derive(Debug, Serialize)]
pub struct RebuildReport {
    pub events: u64,
    pub seconds: f64,
    pub events_per_second: f64,
    pub state_digest: Sha256,
    /// The digest the graph had before the rebuild, at the same seq.
    pub previous_digest: Option<Sha256>,
    pub previous_fingerprint: Option<Sha256>,
    pub fingerprint: Sha256,
    /// True when the rebuilt graph has exactly the previous digest.
    pub identical: bool,
}

/// Clears the graph and projects every event of the log again.
pub fn rebuild(
    db: &fjall::Database,
    log: &Log,
    graph: &GraphStore,
    set: &ProjectorSet,
    fingerprint: Sha256,
) -> anyhow::Result<RebuildReport> {
    let started = std::time::Instant::now();
    let head = log.head()?;
    let previous_digest = graph.digest_at(head.seq)?;
    let previous_fingerprint = graph.projector_set()?;
    graph.clear().context("clearing the graph")?;
    let mut after = Seq::ZERO;
    let mut events = 0u64;
    loop {
        let chunk = log.after(after, BATCH_EVENTS)?;
        if chunk.is_empty() {
            break;
        }
        let mut staging = graph.staging()?;
        let inputs: Vec<EventInput<'_>> = chunk
            .iter()
            .map(|e| EventInput {
                seq: e.seq,
                event_id: &e.event_id,
                event_type: &e.event_type,
                timestamp: &e.timestamp,
                actor_id: e.actor_id.as_deref(),
                target: &e.target,
                payload_json: e.payload.get(),
                event_hash: e.hash,
            })
            .collect();
        // Graph-independent projectors run on every core; the rest, and the
        // ops, in log order.
        let prepared = set.prepare_all(&inputs);
        for ((e, input), prepared) in chunk.iter().zip(&inputs).zip(prepared) {
            let ops = set.finish(input, prepared, &staging).with_context(|| {
                format!(
                    "event seq {} ({}) does not project with this projector set; the graph is left \
                     empty and the server will not start until a rebuild succeeds",
                    e.seq, e.event_id
                )
            })?;
            staging
                .apply(e.seq, &e.timestamp, &ops)
                .with_context(|| format!("applying the ops of seq {}", e.seq))?;
        }
        let mut batch = db.batch();
        staging.write_into(&mut batch)?;
        graph.stage_projector_set(&mut batch, &fingerprint);
        batch.commit()?;
        events += chunk.len() as u64;
        after = chunk.last().expect("non-empty").seq;
    }
    if events == 0 {
        let mut batch = db.batch();
        graph.stage_projector_set(&mut batch, &fingerprint);
        batch.commit()?;
    }
    db.persist(fjall::PersistMode::SyncAll)?;
    let (_, state_digest) = graph.state()?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(RebuildReport {
        events,
        seconds,
        events_per_second: if seconds > 0.0 {
            events as f64 / seconds
        } else {
            0.0
        },
        state_digest,
        identical: previous_digest == Some(state_digest),
        previous_digest,
        previous_fingerprint,
        fingerprint,
    })
}
