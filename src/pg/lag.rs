//! What a node knows of its place in the cluster, refreshed by the members
//! publisher (crate::pg::members) about once a second on its own connection:
//!
//! - its replication lag: in seqs (the PostgreSQL log's head minus the seq
//!   its graph has applied) and in seconds (now minus the commit time of the
//!   oldest seq it has not applied; 0 when it has applied the head). Between
//!   two measurements a node that was behind counts the time since as lag
//!   too, so the figure only grows while nothing is measured. `/readyz` on a
//!   replica answers 503 `replica_lagging` past `LEVIATHAN_MAX_REPLICA_LAG_SECS`
//!   (api/probes.rs); `/metrics` exports both figures.
//! - the leader's advertised URL (`LEVIATHAN_ADVERTISE_URL`, published in its
//!   members row): where a replica forwards ingest (api/forward.rs).

use super::PgError;
use crate::seq::Seq;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The node's lag and the leader's URL, shared between the publisher thread
/// and the HTTP handlers.
#[derive(Clone)]
pub struct NodeStatus(Arc<Inner>);

struct Inner {
    measured: Mutex<Option<Measured>>,
    leader: Mutex<Option<LeaderAddress>>,
    /// `LEVIATHAN_MAX_REPLICA_LAG_SECS` (`None`: 0, readiness ignores lag).
    max_lag: Option<Duration>,
    lag_seconds: Gauge<f64, AtomicU64>,
    lag_seqs: Gauge,
}

#[derive(Debug, Clone, Copy)]
struct Measured {
    at: Instant,
    secs: f64,
    seqs: u64,
}

/// The leader as the last refresh found it.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaderAddress {
    /// Its node id (the lease holder).
    pub node_id: String,
    /// Its `LEVIATHAN_ADVERTISE_URL`, if it published one.
    pub url: Option<String>,
}

/// A node's lag now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lag {
    pub seconds: f64,
    pub seqs: u64,
}

impl NodeStatus {
    /// `max_lag`: a replica is not ready past it (`None`: never for lag).
    pub fn new(max_lag: Option<Duration>, metrics: &crate::metrics::Metrics) -> NodeStatus {
        NodeStatus(Arc::new(Inner {
            measured: Mutex::new(None),
            leader: Mutex::new(None),
            max_lag,
            lag_seconds: metrics.replica_lag_seconds.clone(),
            lag_seqs: metrics.replica_lag_seqs.clone(),
        }))
    }

    /// `LEVIATHAN_MAX_REPLICA_LAG_SECS` (`None`: off).
    pub fn max_lag(&self) -> Option<Duration> {
        self.0.max_lag
    }

    /// The lag as of the last measurement, plus the time since when it was
    /// behind then (0 before the first: start-up caught up before serving).
    pub fn lag(&self) -> Lag {
        let m = *self.0.measured.lock().unwrap_or_else(|p| p.into_inner());
        match m {
            None => Lag {
                seconds: 0.0,
                seqs: 0,
            },
            Some(m) if m.seqs == 0 => Lag {
                seconds: 0.0,
                seqs: 0,
            },
            Some(m) => Lag {
                seconds: m.secs + m.at.elapsed().as_secs_f64(),
                seqs: m.seqs,
            },
        }
    }

    /// Sets the lag gauges to [`NodeStatus::lag`] (at each scrape, so that
    /// `/metrics` and `/readyz` agree between two measurements).
    pub fn export_lag(&self) {
        let lag = self.lag();
        self.0.lag_seconds.set(lag.seconds);
        self.0
            .lag_seqs
            .set(i64::try_from(lag.seqs).unwrap_or(i64::MAX));
    }

    /// Why this node is too far behind to serve, if it is (`max_lag` set
    /// and exceeded).
    pub fn lagging(&self) -> Option<(Lag, Duration)> {
        let max = self.0.max_lag?;
        let lag = self.lag();
        (lag.seconds > max.as_secs_f64()).then_some((lag, max))
    }

    /// The leader as last seen (`None`: no live lease then).
    pub fn leader(&self) -> Option<LeaderAddress> {
        self.0
            .leader
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Measures this node's lag at `applied` and reads the leader's address
    /// (one round trip). Blocking: the publisher thread calls it.
    pub(crate) fn refresh(&self, c: &mut postgres::Client, applied: Seq) -> Result<(), PgError> {
        let applied = i64::try_from(applied.0).unwrap_or(i64::MAX);
        let row = c.query_one(
            "SELECT (SELECT coalesce(max(seq), 0) FROM events),
                    (SELECT extract(epoch FROM clock_timestamp() - committed_at)::float8
                       FROM events WHERE seq = $1::int8 + 1),
                    (SELECT l.holder FROM leader l WHERE l.id = 1 AND l.expires_at > now()),
                    (SELECT m.advertise_url FROM leader l JOIN members m ON m.node_id = l.holder
                      WHERE l.id = 1 AND l.expires_at > now())",
            &[&applied],
        )?;
        let head: i64 = row.get(0);
        let oldest_unapplied: Option<f64> = row.get(1);
        let seqs = u64::try_from(head.saturating_sub(applied)).unwrap_or(0);
        // Behind in seqs but the next row not visible (cannot happen with a
        // dense log): count the lag from now on.
        let secs = if seqs == 0 {
            0.0
        } else {
            oldest_unapplied.unwrap_or(0.0).max(0.0)
        };
        *self.0.measured.lock().unwrap_or_else(|p| p.into_inner()) = Some(Measured {
            at: Instant::now(),
            secs,
            seqs,
        });
        self.export_lag();
        let leader = row
            .get::<_, Option<String>>(2)
            .map(|node_id| LeaderAddress {
                node_id,
                url: row.get(3),
            });
        *self.0.leader.lock().unwrap_or_else(|p| p.into_inner()) = leader;
        Ok(())
    }
}
