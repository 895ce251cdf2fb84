//! One process per node id. A node's identity is `<data dir>/node-id`; a data
//! dir copied from another node (a cloned volume, a restored snapshot) shares
//! it, and two live processes with one id take each other's lease back and
//! forth (leadership flaps) and overwrite each other's published state.
//!
//! At start, before anything else touches the log, a node claims its id in
//! its `members` row with a token of its own process (`instance`, a fresh
//! UUID per start). A row whose heartbeat (`updated_at`, renewed about every
//! second by the publisher, `members.rs`) is older than the lease, or that a
//! clean stop released, is taken at once. A fresh heartbeat of another
//! instance is watched for [`WATCH`]: if it moves, another live process uses
//! the id and this one refuses to start, telling the operator to delete the
//! copy's `node-id`; if it stays still, its process is gone (a kill -9 just
//! before this restart) and the id is taken.
//!
//! A paused process (SIGSTOP, a stalled VM) cannot be told from a dead one
//! by its heartbeat, so a copy started meanwhile takes the id. The paused
//! one finds out once it runs again: every heartbeat (`members.rs`, and
//! [`crate::pg::PgLog::lead`] while it waits for the lease) updates the row
//! only while it holds this process's instance, taking and renewing the lease
//! are refused while another instance holds the id, and a process that finds
//! its id taken over ([`PgError::NodeIdTakenOver`]) stops serving and exits,
//! leaving the other's row alone. A row released by a clean stop (instance
//! `''`) belongs to no process: a live process may take it again.
//!
//! A start refused after the claim removes the row it claimed
//! ([`withdraw`]): a node that never ran is no member.

use super::{PgError, PgSettings};
use crate::digest::Sha256;
use std::time::{Duration, Instant};

/// How long a fresh heartbeat of another instance is watched: a live node
/// publishes every second, so it moves at least twice in this time.
pub const WATCH: Duration = Duration::from_millis(3_000);

/// What this node publishes first, as its claim.
pub struct Claim<'a> {
    pub role: &'a str,
    pub applied_seq: u64,
    pub state_digest: Sha256,
    pub fingerprint: Sha256,
    /// `<data dir>/node-id`, named in the refusal.
    pub node_id_file: &'a std::path::Path,
}

/// The row's instance and its heartbeat (seconds since the epoch, and its
/// age in seconds).
fn read(c: &mut postgres::Client, node: &str) -> Result<Option<(String, f64, f64)>, PgError> {
    Ok(c.query_opt(
        "SELECT instance, extract(epoch FROM updated_at)::float8,
                    extract(epoch FROM now() - updated_at)::float8
               FROM members WHERE node_id = $1",
        &[&node],
    )?
    .map(|r| {
        (
            r.get(0),
            r.get::<_, Option<f64>>(1).unwrap_or(f64::NEG_INFINITY),
            r.get::<_, Option<f64>>(2).unwrap_or(f64::INFINITY),
        )
    }))
}

/// Claims `settings.holder` for `settings.instance`, or refuses
/// ([`PgError::NodeIdInUse`]) while another live process holds it.
pub fn claim(
    c: &mut postgres::Client,
    settings: &PgSettings,
    claim: &Claim<'_>,
) -> Result<(), PgError> {
    let node = settings.holder.as_str();
    if let Some((instance, beat, age)) = read(c, node)? {
        let fresh = age < settings.lease.as_secs_f64();
        if fresh && !instance.is_empty() && instance != settings.instance {
            tracing::info!(
                node_id = node,
                heartbeat_age_secs = age,
                "another process published this node id moments ago: checking that it is gone"
            );
            let until = Instant::now() + WATCH;
            while Instant::now() < until {
                std::thread::sleep(Duration::from_millis(250));
                if let Some((other, now, _)) = read(c, node)? {
                    if now != beat && other != settings.instance {
                        return Err(PgError::NodeIdInUse {
                            node_id: node.to_string(),
                            file: claim.node_id_file.display().to_string(),
                        });
                    }
                }
            }
        }
    }
    let seq = i64::try_from(claim.applied_seq).unwrap_or(i64::MAX);
    c.execute(
        "INSERT INTO members (node_id, role, applied_seq, state_digest, fingerprint, updated_at, instance)
         VALUES ($1, $2, $3, $4, $5, now(), $6)
         ON CONFLICT (node_id) DO UPDATE SET role = $2, applied_seq = $3, state_digest = $4,
             fingerprint = $5, updated_at = now(), instance = $6",
        &[
            &node,
            &claim.role,
            &seq,
            &&claim.state_digest.as_bytes()[..],
            &&claim.fingerprint.as_bytes()[..],
            &settings.instance,
        ],
    )?;
    Ok(())
}

/// The instance that holds `node`'s row now (`None`: no row).
pub fn holder(c: &mut postgres::Client, node: &str) -> Result<Option<String>, PgError> {
    Ok(
        c.query_opt("SELECT instance FROM members WHERE node_id = $1", &[&node])?
            .map(|r| r.get(0)),
    )
}

/// Whether this process still holds its node id: [`PgError::NodeIdTakenOver`]
/// once another live process does (no row, or a released one, is no one's).
pub fn check_held(c: &mut postgres::Client, settings: &PgSettings) -> Result<(), PgError> {
    match holder(c, &settings.holder)? {
        Some(other) if !other.is_empty() && other != settings.instance => {
            Err(PgError::NodeIdTakenOver {
                node_id: settings.holder.clone(),
                ours: settings.instance.clone(),
                theirs: other,
            })
        }
        _ => Ok(()),
    }
}

/// Removes this process's row after a refused start: a node that never ran
/// must not stay listed (`GET /v1/cluster` showed it, disagreeing, for
/// good). Only this process's own row: never another's. Best effort (a
/// failure is logged; the row then shows `gone` once its heartbeat is old).
pub fn withdraw(settings: &PgSettings) {
    let removed = super::connect(&settings.url).and_then(|mut c| {
        Ok(c.execute(
            "DELETE FROM members WHERE node_id = $1 AND instance = $2",
            &[&settings.holder, &settings.instance],
        )?)
    });
    match removed {
        Ok(n) => tracing::info!(
            node_id = %settings.holder,
            rows = n,
            "the start was refused: removed this node's members row"
        ),
        Err(e) => tracing::warn!(
            node_id = %settings.holder,
            error = %e,
            "the start was refused, and removing this node's members row failed: it shows as \
             gone once its heartbeat is old"
        ),
    }
}
