//! Cluster membership (`GET /v1/cluster`): every node publishes, about once a
//! second on its own connection, its applied seq, the state digest at that
//! seq and its projector-set fingerprint into `members`. A node answering
//! `/v1/cluster` compares each member's digest with its own digest at the
//! member's seq (the local store keeps the digest after every seq), so two
//! nodes are compared at a common seq whenever the answering node has
//! applied as far as the member.

use super::{connect, PgError, PgSettings};
use crate::digest::Sha256;
use serde::Serialize;
use std::time::Duration;

/// How often a node publishes its state.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// Publishes this node's state until dropped.
pub struct Publisher {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Publisher {
    /// Publishes; a node that does not lead also checks itself against the
    /// leader's published state and records into `disagreement` why it
    /// cannot serve reads (another projector set, another digest at a
    /// common seq).
    ///
    /// [`Rounds::first`] resolves once the first round is done (its
    /// comparison included): a server awaits it before it serves, so that a
    /// replica on another projector set never serves reads before it has
    /// found out (it did, for up to a round). [`Rounds::taken_over`]
    /// resolves if another process took this node's id over
    /// ([`PgError::NodeIdTakenOver`]): the publisher has stopped then, and
    /// the server must stop serving as this node.
    pub fn start(
        settings: &PgSettings,
        role: super::CurrentRole,
        live: crate::generations::LiveGraph,
        disagreement: Disagreement,
        node: Node,
    ) -> Result<(Publisher, Rounds), PgError> {
        let settings = settings.clone();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let (first_done, first) = tokio::sync::oneshot::channel::<()>();
        let (lost, taken_over) = tokio::sync::oneshot::channel::<PgError>();
        let thread = std::thread::Builder::new()
            .name("leviathan-members".into())
            .spawn(move || {
                publish(
                    &settings,
                    &role,
                    &live,
                    &disagreement,
                    &node,
                    &stopped,
                    first_done,
                    lost,
                )
            })
            .map_err(PgError::Thread)?;
        Ok((
            Publisher {
                stop: Some(stop),
                thread: Some(thread),
            },
            Rounds { first, taken_over },
        ))
    }
}

/// What the publisher tells the server ([`Publisher::start`]).
pub struct Rounds {
    /// The first round is done.
    pub first: tokio::sync::oneshot::Receiver<()>,
    /// Another process took this node's id over (never resolves otherwise;
    /// closed when the publisher stops).
    pub taken_over: tokio::sync::oneshot::Receiver<PgError>,
}

/// How long a member's row stays in `members` without a heartbeat (a node
/// stopped for good, or a wiped data dir's old id: each start on an empty
/// data dir makes a new id). A node back after longer is listed again at
/// its start.
pub const PRUNE_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

impl Drop for Publisher {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The publisher thread: this node's row, every [`PUBLISH_EVERY`], until
/// `stopped` is dropped. The synchronous client is created here, never on an
/// async runtime's thread (start-up runs on one).
#[allow(clippy::too_many_arguments)] // one thread's whole context, passed once
fn publish(
    settings: &PgSettings,
    role: &super::CurrentRole,
    live: &crate::generations::LiveGraph,
    disagreement: &Disagreement,
    this: &Node,
    stopped: &std::sync::mpsc::Receiver<()>,
    first_done: tokio::sync::oneshot::Sender<()>,
    lost: tokio::sync::oneshot::Sender<PgError>,
) {
    let (url, node, instance) = (&settings.url, &settings.holder, &settings.instance);
    let mut client: Option<postgres::Client> = None;
    let mut first_done = Some(first_done);
    loop {
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            client = connect(url)
                .inspect_err(|e| tracing::debug!(error = %e, "cannot reach PostgreSQL to publish this node's state"))
                .ok();
        }
        let current = live.get();
        match (client.as_mut(), current.graph.state()) {
            (Some(c), Ok((seq, digest))) => {
                if let Err(e) = this.status.refresh(c, seq) {
                    tracing::debug!(error = %e, "measuring this node's lag failed");
                }
                let seq = i64::try_from(seq.0).unwrap_or(i64::MAX);
                let role = role.name();
                // Only this process's row (or no one's: none, or one a
                // clean stop released): another instance's row means another
                // process took this node's id over (crate::pg::identity).
                let published = c.execute(
                    "INSERT INTO members (node_id, role, applied_seq, state_digest, fingerprint, updated_at, instance, advertise_url)
                     VALUES ($1, $2, $3, $4, $5, now(), $6, $7)
                     ON CONFLICT (node_id) DO UPDATE SET role = $2, applied_seq = $3,
                         state_digest = $4, fingerprint = $5, updated_at = now(), instance = $6,
                         advertise_url = $7
                     WHERE members.instance IN ('', $6)",
                    &[
                        &node,
                        &role,
                        &seq,
                        &&digest.as_bytes()[..],
                        &&current.fingerprint.as_bytes()[..],
                        &instance,
                        &this.advertise_url,
                    ],
                );
                match published {
                    Ok(0) => {
                        if let Err(taken) = super::identity::check_held(c, settings) {
                            tracing::error!(
                                node_id = %node,
                                ours = %instance,
                                error = %taken,
                                "this node's id is live in another process: this one stops"
                            );
                            if let Some(done) = first_done.take() {
                                let _ = done.send(());
                            }
                            let _ = lost.send(taken);
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "publishing this node's state failed"),
                }
                let pruned = c.execute(
                    "DELETE FROM members WHERE updated_at < now() - make_interval(secs => $1)",
                    &[&PRUNE_AFTER.as_secs_f64()],
                );
                match pruned {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        rows = n,
                        days = PRUNE_AFTER.as_secs() / 86_400,
                        "removed the members rows of nodes not heard from for longer than members are kept"
                    ),
                    Err(e) => tracing::debug!(error = %e, "pruning old members rows failed"),
                }
                match check_against_leader(c, node, &current) {
                    Ok(Some(found)) => disagreement.set(found),
                    Ok(None) => disagreement.agreed(),
                    Err(e) => tracing::debug!(error = %e, "comparing with the leader failed"),
                }
            }
            (_, Err(e)) => tracing::warn!(error = %e, "reading the graph state to publish failed"),
            (None, Ok(_)) => {}
        }
        if let Some(done) = first_done.take() {
            let _ = done.send(());
        }
        match stopped.recv_timeout(PUBLISH_EVERY) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            _ => {
                // A clean stop gives the node id up (crate::pg::identity).
                if let Some(c) = client.as_mut() {
                    let released = c.execute(
                        "UPDATE members SET instance = '' WHERE node_id = $1 AND instance = $2",
                        &[&node, &instance],
                    );
                    if let Err(e) = released {
                        tracing::debug!(error = %e, "releasing this node's id failed");
                    }
                }
                return;
            }
        }
    }
}

/// Why this node must not serve reads, once found. Another projector set
/// stays until the node runs the writer's set (a restart with it, then its
/// generation build and switch: [`Disagreement::agreed`]); another state digest is
/// repaired by the node itself (the writer thread rebuilds its graph from its
/// log, then [`Disagreement::clear`]s it).
#[derive(Clone, Default)]
pub struct Disagreement(std::sync::Arc<std::sync::Mutex<Option<Found>>>);

/// What the comparison with the writer found.
#[derive(Clone, Debug)]
pub struct Found {
    pub reason: String,
    /// Another digest at a common seq (not another projector set): a
    /// rebuild of the graph from the log repairs it.
    pub rebuilds: bool,
    /// The seq compared at.
    pub seq: u64,
    /// The generation of the graph compared (a finding about a graph that
    /// a rebuild has since replaced is stale).
    pub generation: u64,
}

impl Disagreement {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Found>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why reads are refused, if they are.
    pub fn get(&self) -> Option<String> {
        self.lock().as_ref().map(|f| f.reason.clone())
    }

    pub fn found(&self) -> Option<Found> {
        self.lock().clone()
    }

    /// Records a disagreement (the first one found stays until cleared).
    pub fn set(&self, found: Found) {
        let mut g = self.lock();
        if g.is_none() {
            tracing::error!(
                rebuilds = found.rebuilds,
                "{}; this node stops serving reads until it agrees again",
                found.reason
            );
            *g = Some(found);
        }
    }

    /// The comparison found this node agreeing with the writer: a finding
    /// about another projector set is stale (the node has switched to the
    /// writer's set since, a generation build). A digest finding stays: the
    /// rebuild that repairs it clears it.
    pub fn agreed(&self) {
        let mut g = self.lock();
        if g.as_ref().is_some_and(|f| !f.rebuilds) {
            tracing::info!("this node's projector set is the writer's now: it serves reads again");
            *g = None;
        }
    }

    /// Serves reads again (after a rebuild).
    pub fn clear(&self) {
        *self.lock() = None;
    }
}

/// Compares this node (not the leader) with the leader's published state.
fn check_against_leader(
    c: &mut postgres::Client,
    node: &str,
    live: &crate::generations::Live,
) -> Result<Option<Found>, PgError> {
    let row = c.query_opt(
        "SELECT m.node_id, m.applied_seq, m.state_digest, m.fingerprint
           FROM members m JOIN leader l ON l.holder = m.node_id
          WHERE l.id = 1 AND l.expires_at > now() AND m.node_id <> $1",
        &[&node],
    )?;
    let Some(r) = row else { return Ok(None) };
    let leader: String = r.get(0);
    let seq: i64 = r.get(1);
    let digest = super::hash_of(seq, r.get(2))?;
    let fingerprint = super::hash_of(seq, r.get(3))?;
    if fingerprint != live.fingerprint {
        return Ok(Some(Found {
            reason: format!(
                "this node's projector set (fingerprint {}) is not the writer's ({leader}: {}), \
                 so its graph is not the writer's; run the writer's projector set",
                live.fingerprint, fingerprint
            ),
            rebuilds: false,
            seq: u64::try_from(seq).unwrap_or(0),
            generation: live.graph.generation(),
        }));
    }
    let seq = crate::seq::Seq(u64::try_from(seq).unwrap_or(0));
    let ours = live.graph.digest_at(seq).map_err(|e| PgError::Corrupt {
        seq: seq.0,
        reason: format!("reading the local digest: {e}"),
    })?;
    Ok(match ours {
        Some(d) if d != digest => Some(Found {
            reason: format!(
                "this node's state digest at seq {} is {d}, the writer's ({leader}) is {digest}: \
                 its graph is not the writer's; it rebuilds its graph from its log",
                seq.0
            ),
            rebuilds: true,
            seq: seq.0,
            generation: live.graph.generation(),
        }),
        _ => None,
    })
}

/// This node as it publishes itself: its advertised URL and what it measures
/// of its lag and of the leader (crate::pg::lag).
#[derive(Clone)]
pub struct Node {
    /// `LEVIATHAN_ADVERTISE_URL`: where other nodes send ingest while this
    /// node leads.
    pub advertise_url: Option<String>,
    pub status: super::lag::NodeStatus,
}

/// What `GET /v1/cluster` answers from.
#[derive(Clone)]
pub struct Cluster {
    pub url: String,
    pub node_id: String,
    /// `LEVIATHAN_POSTGRES_LEASE_SECS`: a member not heard from for longer
    /// is shown `gone` (the identity rule: its id could be taken at once).
    pub lease: Duration,
    /// Set once this node found it disagrees with the writer.
    pub disagreement: Disagreement,
    /// Its lag and the leader's address (`/readyz`, `/metrics`, the ingest forward).
    pub node: Node,
}

/// `GET /v1/cluster`.
#[derive(Debug, Serialize)]
pub struct ClusterView {
    /// The node that answered.
    pub node_id: String,
    /// The PostgreSQL log's head.
    pub head_seq: u64,
    pub leader: LeaderView,
    pub members: Vec<MemberView>,
}

#[derive(Debug, Serialize)]
pub struct LeaderView {
    pub holder: String,
    pub epoch: i64,
    /// Negative: expired (no writer renews it).
    pub expires_in_secs: f64,
}

#[derive(Debug, Serialize)]
pub struct MemberView {
    pub node_id: String,
    /// `live` (heartbeat within the lease), `stopped` (it released its id at
    /// a clean stop) or `gone` (no heartbeat for longer than the lease, and
    /// no clean stop: killed, paused, cut off). Its other fields are as of
    /// its last heartbeat; rows are removed after [`PRUNE_AFTER`].
    pub state: &'static str,
    /// `writer` or `replica`: the role it holds now (a promoted `auto`
    /// replica is a writer, a writer that lost its lease and stepped down a
    /// replica), as of its last heartbeat.
    pub role: String,
    /// Holds the leader lease now.
    pub leader: bool,
    pub applied_seq: u64,
    /// The log's head minus its applied seq.
    pub lag_seqs: u64,
    /// Now minus the commit time of the oldest seq it had not applied at its
    /// last heartbeat (0: it had applied the head).
    pub lag_secs: f64,
    /// Its `LEVIATHAN_ADVERTISE_URL` (`null`: none published).
    pub advertise_url: Option<String>,
    /// Seconds since it last published (about 1 s for a live node).
    pub heartbeat_age_secs: f64,
    pub state_digest: Sha256,
    pub fingerprint: Sha256,
    /// Its projector set is the answering node's.
    pub same_projector_set: bool,
    /// Its digest equals the answering node's at its applied seq; `null`
    /// when the answering node has not applied that far yet.
    pub digest_agrees: Option<bool>,
}

impl Cluster {
    /// Reads the members and compares them with `live` (blocking).
    pub fn view(&self, live: &crate::generations::Live) -> Result<ClusterView, PgError> {
        let mut c = connect(&self.url)?;
        let head: i64 = c
            .query_one("SELECT coalesce(max(seq), 0) FROM events", &[])?
            .get(0);
        let l = c.query_one(
            "SELECT holder, epoch, (extract(epoch FROM expires_at) - extract(epoch FROM now()))::float8
               FROM leader WHERE id = 1",
            &[],
        )?;
        let leader = LeaderView {
            holder: l.get(0),
            epoch: l.get(1),
            expires_in_secs: l.get::<_, Option<f64>>(2).unwrap_or(f64::NEG_INFINITY),
        };
        let (own_seq, _) = live.graph.state().map_err(|e| PgError::Corrupt {
            seq: 0,
            reason: format!("reading the local graph state: {e}"),
        })?;
        let rows = c.query(
            "SELECT m.node_id, m.role, m.applied_seq, m.state_digest, m.fingerprint,
                    extract(epoch FROM now() - m.updated_at)::float8, m.advertise_url,
                    extract(epoch FROM clock_timestamp() - e.committed_at)::float8,
                    m.instance
               FROM members m LEFT JOIN events e ON e.seq = m.applied_seq + 1
              ORDER BY m.node_id",
            &[],
        )?;
        let head = u64::try_from(head).unwrap_or(0);
        let mut members = Vec::with_capacity(rows.len());
        for r in rows {
            let node_id: String = r.get(0);
            let seq = u64::try_from(r.get::<_, i64>(2)).unwrap_or(0);
            let digest = super::hash_of(r.get(2), r.get(3))?;
            let fingerprint = super::hash_of(r.get(2), r.get(4))?;
            let digest_agrees = if seq <= own_seq.0 {
                let ours =
                    live.graph
                        .digest_at(crate::seq::Seq(seq))
                        .map_err(|e| PgError::Corrupt {
                            seq,
                            reason: format!("reading the local digest: {e}"),
                        })?;
                Some(ours == Some(digest))
            } else {
                None
            };
            let heartbeat_age_secs = r.get::<_, Option<f64>>(5).unwrap_or(0.0);
            let instance: String = r.get(8);
            let state = if instance.is_empty() {
                "stopped"
            } else if heartbeat_age_secs > self.lease.as_secs_f64().max(3.0) {
                "gone"
            } else {
                "live"
            };
            members.push(MemberView {
                leader: node_id == leader.holder && leader.expires_in_secs > 0.0,
                node_id,
                state,
                role: r.get(1),
                applied_seq: seq,
                lag_seqs: head.saturating_sub(seq),
                lag_secs: r.get::<_, Option<f64>>(7).unwrap_or(0.0).max(0.0),
                advertise_url: r.get(6),
                heartbeat_age_secs,
                state_digest: digest,
                fingerprint,
                same_projector_set: fingerprint == live.fingerprint,
                digest_agrees,
            });
        }
        Ok(ClusterView {
            node_id: self.node_id.clone(),
            head_seq: head,
            leader,
            members,
        })
    }
}
