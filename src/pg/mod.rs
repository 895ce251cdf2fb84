//! The log on PostgreSQL (`LEVIATHAN_STORE=postgres`): the authority for what
//! is appended. Every node keeps its local fjall store (log mirror, indexes,
//! tree, graph) and serves reads from it; an event is acknowledged only after
//! the PostgreSQL transaction that appends it committed (see the invariant in
//! docs/ARCHITECTURE.md).
//!
//! - [`schema`]: the versioned migrations and the start-up check.
//! - [`PgLog`]: one writer's connection: taking leadership (a lease row with
//!   an epoch), the fenced append, and the reads by seq that catch a local
//!   store up ([`catch_up`]).
//! - [`Renewer`]: the thread that keeps the lease alive and tells the writer
//!   when it is lost.
//!
//! Exactly one writer appends: it takes leadership by incrementing the lease's
//! epoch (only when the lease has expired or is its own), and every append
//! transaction locks the lease row, checks the epoch is still its own, and
//! checks that the first new seq follows the stored head and its `prev_hash`
//! is the head's hash. A writer that was paused past its lease and resumed
//! finds another epoch there and appends nothing; seq is the primary key, so
//! two appends of one seq cannot both commit anyway.

pub mod artifacts;
pub mod catch_up;
pub mod identity;
pub mod lag;
pub mod members;
pub mod schema;
pub mod tls;

use crate::digest::Sha256;
use crate::log::record::ArtifactRef;
use crate::log::Head;
use crate::seq::Seq;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How a node in postgres mode commits its local batches of the log (an
/// append after PostgreSQL committed it, a catch-up): written to the OS, not
/// fsynced. PostgreSQL holds every event durably and start-up catches the
/// local store up from it, so a local tail lost to a power cut is re-fetched
/// (the same records, hashes and projections); a process crash loses nothing
/// written to the OS anyway. Everything else in the local store is derived
/// from the log, or kept durable on its own (generation switches, the
/// artifact cache's commits, the node id file).
pub const LOCAL_PERSIST: fjall::PersistMode = fjall::PersistMode::Buffer;

/// The channel a commit notifies (payload: the new head seq), for replicas.
pub const NOTIFY_CHANNEL: &str = "leviathan_log";

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// Not a `#[source]`: [`describe`] already shows what its sources say
    /// (the error chain printed `PostgreSQL: db error: db error: ERROR: …`,
    /// or hid the server's message behind `db error`).
    #[error("PostgreSQL: {}", describe(.0))]
    Db(postgres::Error),
    #[error(
        "the PostgreSQL database's schema is at version {database}, newer than this binary knows \
         (version {binary}): a newer Leviathan migrated it. Run that version (or newer), or point \
         LEVIATHAN_POSTGRES_URL at another database"
    )]
    NewerSchema { database: i32, binary: i32 },
    /// The server's message (and SQLSTATE, detail, hint) is in it: the
    /// client's own Display says only `db error`.
    #[error("PostgreSQL migration {version} failed: {cause}", version = .0, cause = describe(.1))]
    Migration(i32, postgres::Error),
    #[error(
        "this writer was fenced: the leader lease's epoch is now {current} (held by {holder:?}), \
         this writer's was {ours}; another writer took over, so this one appends nothing more"
    )]
    Fenced {
        ours: i64,
        current: i64,
        holder: String,
    },
    #[error(
        "the PostgreSQL log's head is seq {stored} ({stored_hash}), but this writer expected seq \
         {expected} ({expected_hash}): another writer appended, so this one appends nothing more"
    )]
    HeadMoved {
        expected: u64,
        expected_hash: String,
        stored: u64,
        stored_hash: String,
    },
    #[error("cannot start the leader lease thread: {0}")]
    Thread(std::io::Error),
    #[error("the PostgreSQL log is inconsistent at seq {seq}: {reason}")]
    Corrupt { seq: u64, reason: String },
    #[error(
        "another running process uses this node's id ({node_id}): its heartbeat in PostgreSQL \
         keeps moving. A data dir copied from another node (a cloned volume, a restored \
         snapshot) shares that node's id: delete {file} in the copy and start it again (it makes \
         a new id). Two processes with one id would take each other's writer lease"
    )]
    NodeIdInUse { node_id: String, file: String },
    #[error(
        "another process took this node's id ({node_id}) over: its members row in PostgreSQL now \
         holds instance {theirs:?}, this process is instance {ours:?}. This process was paused or \
         cut off from PostgreSQL long enough for another process with the same id (a copy of \
         this node's data dir: a cloned volume, a restored snapshot) to start and claim it; one \
         id must never be live in two processes, so this one stops serving, takes no lease and \
         exits, leaving the other's row alone. Find the other process (GET /v1/cluster shows the \
         id's advertise_url); if it is a copy, stop it, delete the node-id file in its data dir \
         (it makes a new id at its next start) and start it again, then restart this one"
    )]
    NodeIdTakenOver {
        node_id: String,
        ours: String,
        theirs: String,
    },
    #[error("TLS to PostgreSQL: {0}")]
    Tls(String),
    #[error("PostgreSQL did not answer: {0}")]
    Unanswered(String),
}

impl PgError {
    /// Whether this is the writer losing its right to append.
    pub fn is_fenced(&self) -> bool {
        matches!(self, PgError::Fenced { .. } | PgError::HeadMoved { .. })
    }
}

/// How to reach PostgreSQL and hold leadership.
#[derive(Debug, Clone)]
pub struct PgSettings {
    /// `LEVIATHAN_POSTGRES_URL`: a libpq-style string or a `postgres://` URL.
    pub url: String,
    /// `LEVIATHAN_POSTGRES_LEASE_SECS`: how long leadership lasts without a
    /// renewal (renewed every third of it). A writer that dies is replaced
    /// after at most this long.
    pub lease: Duration,
    /// Who this node is in the lease (`<data dir>/node-id`, made on first
    /// start): a restarted node takes its own lease back at once.
    pub holder: String,
    /// This process's token for its node id (a fresh UUID per start): a
    /// second live process with the same id is refused (`identity`).
    pub instance: String,
    /// Test hook: abort right after a PostgreSQL commit (before the local one).
    pub test_crash_after_commit: bool,
}

/// Connects, with TLS as the URL's `sslmode` says ([`tls`]).
pub fn connect(url: &str) -> Result<postgres::Client, PgError> {
    let (config, tls) = config(url)?;
    Ok(config.connect(tls)?)
}

/// How every connection of this node is made (`LEVIATHAN_POSTGRES_URL`):
/// the client's settings and the TLS connector ([`tls`]).
pub fn config(
    url: &str,
) -> Result<(postgres::Config, tokio_postgres_rustls::MakeRustlsConnect), PgError> {
    let (config, tls) = async_config(url)?;
    Ok((postgres::Config::from(config), tls))
}

/// TCP keepalives on every connection: probes start after this long without
/// traffic (a connection waiting for an answer included)...
const KEEPALIVES_IDLE: Duration = Duration::from_secs(5);
/// ...go out this far apart...
const KEEPALIVES_INTERVAL: Duration = Duration::from_secs(2);
/// ...and after this many unanswered ones the connection is broken.
const KEEPALIVES_RETRIES: u32 = 3;
/// A connection whose sent bytes stay unacknowledged this long is broken
/// (Linux's `TCP_USER_TIMEOUT`).
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);

/// [`config`] for the async client (the lease thread's, [`Renewer`]).
///
/// Every connection gets client-side bounds, so that one whose packets are
/// silently dropped (a partition, a firewall that forgot the flow: no RST,
/// no FIN) is broken instead of waited on forever (the blocking client has
/// no timeout of its own): keepalives probe it once idle for 5 s and give up
/// after 3 unanswered probes 2 s apart (~11 s), and `TCP_USER_TIMEOUT` gives
/// up on bytes unacknowledged for 10 s. Neither cuts off a long append
/// PostgreSQL is still working on: its kernel acknowledges the statement's
/// bytes and the probes meanwhile. A URL that sets its own
/// (`keepalives_idle=`, `tcp_user_timeout=`…) keeps them.
pub fn async_config(
    url: &str,
) -> Result<
    (
        tokio_postgres::Config,
        tokio_postgres_rustls::MakeRustlsConnect,
    ),
    PgError,
> {
    let split = tls::split(url)?;
    let mut config: tokio_postgres::Config = split.rest.parse()?;
    config.application_name("leviathan");
    config.connect_timeout(Duration::from_secs(10));
    // tokio-postgres's default idle time (2 h) means "not set".
    if config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
        config.keepalives_idle(KEEPALIVES_IDLE);
    }
    if config.get_keepalives_interval().is_none() {
        config.keepalives_interval(KEEPALIVES_INTERVAL);
    }
    if config.get_keepalives_retries().is_none() {
        config.keepalives_retries(KEEPALIVES_RETRIES);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(TCP_USER_TIMEOUT);
    }
    config.ssl_mode(if split.mode == tls::SslMode::Disable {
        tokio_postgres::config::SslMode::Disable
    } else {
        tokio_postgres::config::SslMode::Require
    });
    Ok((config, tls::connector(&split)?))
}

/// The node's identity in the lease: stored in the data dir so that it
/// survives restarts and no two data dirs share it.
pub fn node_id(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let path = data_dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        Ok(_) | Err(_) => {
            std::fs::create_dir_all(data_dir)?;
            let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
            let id = format!("{}/{}", host.trim(), uuid::Uuid::new_v4());
            crate::files::write_synced(&path, id.as_bytes())?;
            Ok(id)
        }
    }
}

/// Who holds the lease now.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseState {
    pub epoch: i64,
    pub holder: String,
    /// Seconds until it expires (negative: expired).
    pub expires_in: f64,
}

/// One event row of an append.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub seq: Seq,
    pub event_id: String,
    pub bundle_id: String,
    pub event_type: String,
    pub target: String,
    pub record: Vec<u8>,
    pub prev_hash: Option<Sha256>,
    pub hash: Sha256,
}

/// One bundle row of an append (what answers a retry of it).
#[derive(Debug, Clone)]
pub struct BundleRow {
    pub bundle_id: String,
    pub record: crate::log::BundleRecord,
    /// The head after the bundle: catch-up re-stages the bundles recorded at
    /// or after its local head.
    pub head_seq: Seq,
    pub artifacts: Vec<ArtifactRef>,
}

/// What one writer batch appends.
#[derive(Debug, Default)]
pub struct Rows {
    pub events: Vec<EventRow>,
    pub bundles: Vec<BundleRow>,
}

impl Rows {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.bundles.is_empty()
    }
}

/// A stored event as read back from PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgEvent {
    pub seq: Seq,
    /// The bundle that appended it (a bundle's events are consecutive).
    pub bundle_id: String,
    pub record: Vec<u8>,
    pub prev_hash: Option<Sha256>,
    pub hash: Sha256,
}

/// One writer's (or reader's) connection to the log.
pub struct PgLog {
    client: postgres::Client,
    settings: PgSettings,
    /// The epoch this node holds leadership with (0: not the leader).
    epoch: i64,
    /// [`APPEND_SQL`], prepared on `client` (dropped with the connection).
    append_statement: Option<postgres::Statement>,
    /// When the statement that took `epoch` was sent: the lease runs from
    /// no earlier than this ([`LeaseClock`]).
    led_at: Option<std::time::Instant>,
}

/// One writer batch's append: one statement, its own transaction (schema
/// migration 6's `leviathan_append`: the lease and head checks, the inserts,
/// the notification).
const APPEND_SQL: &str = "SELECT leviathan_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
     $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25)";

fn seq_i64(s: Seq) -> i64 {
    i64::try_from(s.0).unwrap_or(i64::MAX)
}

fn seq_of(v: i64) -> Seq {
    Seq(u64::try_from(v).unwrap_or(0))
}

fn hash_of(seq: i64, bytes: &[u8]) -> Result<Sha256, PgError> {
    Sha256::from_slice(bytes).ok_or_else(|| PgError::Corrupt {
        seq: u64::try_from(seq).unwrap_or(0),
        reason: format!("a stored hash is {} bytes, not 32", bytes.len()),
    })
}

impl PgLog {
    /// Connects and migrates the schema (refusing a newer one).
    pub fn open(settings: PgSettings) -> Result<PgLog, PgError> {
        let mut client = connect(&settings.url)?;
        let (found, now) = schema::migrate(&mut client)?;
        tracing::info!(
            schema_found = found,
            schema = now,
            "connected to PostgreSQL"
        );
        Ok(PgLog {
            client,
            settings,
            epoch: 0,
            append_statement: None,
            led_at: None,
        })
    }

    pub fn settings(&self) -> &PgSettings {
        &self.settings
    }

    /// Whether its connection was lost (PostgreSQL restarted, the network
    /// dropped it): a failure then is worth retrying after
    /// [`PgLog::reconnect`], unlike one PostgreSQL answered.
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Connects again (the epoch it leads with, if any, is kept: the lease
    /// is PostgreSQL's, not the connection's).
    pub fn reconnect(&mut self) -> Result<(), PgError> {
        self.client = connect(&self.settings.url)?;
        self.append_statement = None;
        Ok(())
    }

    /// Claims this node's id for this process, or refuses while another live
    /// process holds it ([`identity`]).
    pub fn claim_identity(&mut self, claim: &identity::Claim<'_>) -> Result<(), PgError> {
        identity::claim(&mut self.client, &self.settings, claim)
    }

    /// The epoch this node leads with (0 before [`PgLog::try_lead`] succeeds).
    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// Who holds the lease.
    pub fn lease_state(&mut self) -> Result<LeaseState, PgError> {
        let row = self.client.query_one(
            "SELECT epoch, holder, (extract(epoch FROM expires_at) - extract(epoch FROM now()))::float8
               FROM leader WHERE id = 1",
            &[],
        )?;
        Ok(LeaseState {
            epoch: row.get(0),
            holder: row.get(1),
            expires_in: row.get::<_, Option<f64>>(2).unwrap_or(f64::NEG_INFINITY),
        })
    }

    /// Takes leadership if the lease has expired or is this node's own: a new
    /// epoch, which fences every earlier holder. `Ok(None)`: someone else
    /// holds it (its state is returned by [`PgLog::lease_state`]).
    pub fn try_lead(&mut self) -> Result<Option<i64>, PgError> {
        let secs = self.settings.lease.as_secs_f64();
        let sent = std::time::Instant::now();
        // Never while another process holds this node's id ([`identity`]):
        // the lease is the node id's, so a paused process resumed after a
        // copy of its data dir took the id over would take it back at once.
        let row = self.client.query_opt(
            "UPDATE leader SET epoch = epoch + 1, holder = $1,
                    expires_at = now() + make_interval(secs => $2)
              WHERE id = 1 AND (expires_at < now() OR holder = $1)
                AND NOT EXISTS (SELECT 1 FROM members m
                                 WHERE m.node_id = $1 AND m.instance NOT IN ('', $3))
              RETURNING epoch",
            &[&self.settings.holder, &secs, &self.settings.instance],
        )?;
        Ok(row.map(|r| {
            self.epoch = r.get(0);
            self.led_at = Some(sent);
            tracing::info!(
                epoch = self.epoch,
                holder = %self.settings.holder,
                "took writer leadership"
            );
            self.epoch
        }))
    }

    /// Waits until this node leads (the lease expires or is its own),
    /// polling; `waiting` is told who holds it meanwhile.
    pub fn lead(&mut self, waiting: &dyn Fn(&LeaseState)) -> Result<i64, PgError> {
        loop {
            if let Some(epoch) = self.try_lead()? {
                return Ok(epoch);
            }
            let state = self.lease_state()?;
            waiting(&state);
            // The node id's heartbeat (`identity`): its publisher does not
            // run yet, and a copy of this data dir must still be refused.
            let beat = self.client.execute(
                "UPDATE members SET updated_at = now() WHERE node_id = $1 AND instance = $2",
                &[&self.settings.holder, &self.settings.instance],
            )?;
            if beat == 0 {
                identity::check_held(&mut self.client, &self.settings)?;
            }
            // Poll again when it should have expired (at most a second away).
            let wait = state.expires_in.clamp(0.05, 1.0);
            std::thread::sleep(Duration::from_secs_f64(wait));
        }
    }

    /// The stored head.
    pub fn head(&mut self) -> Result<Head, PgError> {
        let row = self.client.query_opt(
            "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1",
            &[],
        )?;
        match row {
            None => Ok(Head {
                seq: Seq(0),
                hash: None,
            }),
            Some(r) => {
                let seq: i64 = r.get(0);
                Ok(Head {
                    seq: seq_of(seq),
                    hash: Some(hash_of(seq, r.get(1))?),
                })
            }
        }
    }

    /// The hash stored at `seq`, if any.
    pub fn hash_at(&mut self, seq: Seq) -> Result<Option<Sha256>, PgError> {
        let s = seq_i64(seq);
        match self
            .client
            .query_opt("SELECT hash FROM events WHERE seq = $1", &[&s])?
        {
            None => Ok(None),
            Some(r) => Ok(Some(hash_of(s, r.get(0))?)),
        }
    }

    /// Up to `limit` events after `after`, in seq order.
    pub fn events_after(&mut self, after: Seq, limit: i64) -> Result<Vec<PgEvent>, PgError> {
        let rows = self.client.query(
            "SELECT seq, record, prev_hash, hash, bundle_id FROM events WHERE seq > $1 ORDER BY seq \
             LIMIT $2",
            &[&seq_i64(after), &limit],
        )?;
        rows.iter()
            .map(|r| {
                let seq: i64 = r.get(0);
                let prev: Option<&[u8]> = r.get(2);
                Ok(PgEvent {
                    seq: seq_of(seq),
                    bundle_id: r.get(4),
                    record: r.get(1),
                    prev_hash: prev.map(|p| hash_of(seq, p)).transpose()?,
                    hash: hash_of(seq, r.get(3))?,
                })
            })
            .collect()
    }

    /// The bundle records whose head is in `from..=to`.
    pub fn bundles_between(
        &mut self,
        from: Seq,
        to: Seq,
    ) -> Result<Vec<(String, crate::log::BundleRecord)>, PgError> {
        let rows = self.client.query(
            "SELECT bundle_id, digest, first_seq, last_seq, ingested, duplicates, head_seq
               FROM bundles WHERE head_seq BETWEEN $1 AND $2 ORDER BY head_seq",
            &[&seq_i64(from), &seq_i64(to)],
        )?;
        rows.iter()
            .map(|r| {
                let head: i64 = r.get(6);
                let first: Option<i64> = r.get(2);
                let last: Option<i64> = r.get(3);
                let ingested: i64 = r.get(4);
                let duplicates: i64 = r.get(5);
                Ok((
                    r.get(0),
                    crate::log::BundleRecord {
                        digest: hash_of(head, r.get(1))?,
                        first_seq: first.map(seq_of),
                        last_seq: last.map(seq_of),
                        ingested: u64::try_from(ingested).unwrap_or(0),
                        duplicates: u64::try_from(duplicates).unwrap_or(0),
                    },
                ))
            })
            .collect()
    }

    /// Appends one writer batch in one transaction, fenced: the lease's epoch
    /// must still be this node's and the stored head must be `expected`
    /// (what the batch's first event chains to). Returns once committed.
    /// [`PgLog::append_while`], for a writer that leads.
    pub fn append(&mut self, expected: Head, rows: &Rows) -> Result<(), PgError> {
        self.append_while(expected, rows, &|| true)
    }

    /// [`PgLog::append`]; a lost connection is recovered from only while
    /// `leads()` says this writer still holds its lease.
    ///
    /// A connection PostgreSQL closed while it was idle (a restart, a
    /// failover) is found before the batch is sent (without a round trip)
    /// and replaced: nothing was sent on it, so nothing can have committed.
    ///
    /// If the connection fails during the append, the outcome is unknown:
    /// it reconnects and looks for the batch (its last event, with its hash;
    /// or its last bundle record). Found: committed (`Ok`). Absent: it sends
    /// the batch once more, which is safe because `leviathan_append` locks
    /// the lease row and appends only onto the stored head `expected`: if
    /// the first attempt committed after all (its transaction still running
    /// when the connection broke), the second waits for it and is refused
    /// (LVHED), and the batch is found; the two can never both commit. The
    /// error, if the second attempt fails too.
    pub fn append_while(
        &mut self,
        expected: Head,
        rows: &Rows,
        leads: &dyn Fn() -> bool,
    ) -> Result<(), PgError> {
        if self.found_closed() && leads() {
            tracing::info!(
                "the PostgreSQL connection was closed while idle (PostgreSQL restarted?): \
                 reconnecting before the append"
            );
            self.reconnect()?;
        }
        let lost = match self.try_append(expected, rows) {
            Ok(()) => return Ok(()),
            Err(PgError::Db(e)) if self.client.is_closed() => e,
            Err(e) => return Err(e),
        };
        if !leads() {
            // Learned by whoever leads next (a stepped-down node's catch-up).
            return Err(PgError::Db(lost));
        }
        tracing::warn!(error = %describe(&lost), "the PostgreSQL connection failed during an append; reconnecting to learn whether it committed");
        self.reconnect()?;
        if self.committed(rows)? {
            return Ok(());
        }
        tracing::warn!("the batch is not in PostgreSQL: sending it once more");
        match self.try_append(expected, rows) {
            Ok(()) => Ok(()),
            Err(e @ PgError::HeadMoved { .. }) => {
                if self.committed(rows)? {
                    Ok(())
                } else {
                    Err(e)
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Whether its connection is closed, looking without a round trip: a
    /// connection PostgreSQL closed while idle is otherwise found only by
    /// the next statement, which then fails. Reads what the server sent
    /// meanwhile (a notification included: the writer's connection does not
    /// listen).
    fn found_closed(&mut self) -> bool {
        use postgres::fallible_iterator::FallibleIterator;
        if !self.client.is_closed() {
            let _ = self.client.notifications().iter().next();
        }
        self.client.is_closed()
    }

    /// Whether PostgreSQL holds `rows`: its last event with its hash, or
    /// (a batch of duplicates only) its last bundle record.
    fn committed(&mut self, rows: &Rows) -> Result<bool, PgError> {
        if let Some(last) = rows.events.last() {
            return Ok(self.hash_at(last.seq)? == Some(last.hash));
        }
        match rows.bundles.last() {
            Some(b) => Ok(self
                .client
                .query_opt(
                    "SELECT 1 FROM bundles WHERE bundle_id = $1",
                    &[&b.bundle_id],
                )?
                .is_some()),
            None => Ok(false),
        }
    }

    fn try_append(&mut self, expected: Head, rows: &Rows) -> Result<(), PgError> {
        let statement = match &self.append_statement {
            Some(s) => s.clone(),
            None => {
                let s = self.client.prepare(APPEND_SQL)?;
                self.append_statement = Some(s.clone());
                s
            }
        };
        let e = &rows.events;
        let seqs: Vec<i64> = e.iter().map(|r| seq_i64(r.seq)).collect();
        let ids: Vec<&str> = e.iter().map(|r| r.event_id.as_str()).collect();
        let bundles: Vec<&str> = e.iter().map(|r| r.bundle_id.as_str()).collect();
        let types: Vec<&str> = e.iter().map(|r| r.event_type.as_str()).collect();
        let targets: Vec<&str> = e.iter().map(|r| r.target.as_str()).collect();
        let records: Vec<&[u8]> = e.iter().map(|r| r.record.as_slice()).collect();
        let prevs: Vec<Option<&[u8]>> = e
            .iter()
            .map(|r| r.prev_hash.as_ref().map(|h| &h.as_bytes()[..]))
            .collect();
        let hashes: Vec<&[u8]> = e.iter().map(|r| &r.hash.as_bytes()[..]).collect();
        let b = &rows.bundles;
        let b_ids: Vec<&str> = b.iter().map(|r| r.bundle_id.as_str()).collect();
        let digests: Vec<&[u8]> = b.iter().map(|r| &r.record.digest.as_bytes()[..]).collect();
        let firsts: Vec<Option<i64>> = b.iter().map(|r| r.record.first_seq.map(seq_i64)).collect();
        let lasts: Vec<Option<i64>> = b.iter().map(|r| r.record.last_seq.map(seq_i64)).collect();
        let ingested: Vec<i64> = b
            .iter()
            .map(|r| i64::try_from(r.record.ingested).unwrap_or(i64::MAX))
            .collect();
        let dups: Vec<i64> = b
            .iter()
            .map(|r| i64::try_from(r.record.duplicates).unwrap_or(i64::MAX))
            .collect();
        let heads: Vec<i64> = b.iter().map(|r| seq_i64(r.head_seq)).collect();
        let mut a_bundle = Vec::new();
        let mut a_ord = Vec::new();
        let mut a_sha = Vec::new();
        let mut a_kind = Vec::new();
        let mut a_uri = Vec::new();
        let mut a_size = Vec::new();
        for r in b {
            for (ord, a) in r.artifacts.iter().enumerate() {
                a_bundle.push(r.bundle_id.as_str());
                a_ord.push(i32::try_from(ord).unwrap_or(i32::MAX));
                a_sha.push(&a.sha256.as_bytes()[..]);
                a_kind.push(a.kind.as_str());
                a_uri.push(a.uri.as_str());
                a_size.push(i64::try_from(a.size).unwrap_or(i64::MAX));
            }
        }
        // Replicas wake on the notification (a batch of duplicates too: its
        // bundle records); its payload is the new head seq.
        let head = rows.events.last().map_or(expected.seq, |e| e.seq);
        let head_text = head.0.to_string();
        let expected_hash: Option<&[u8]> = expected.hash.as_ref().map(|h| &h.as_bytes()[..]);
        let called = self.client.execute(
            &statement,
            &[
                &self.epoch,
                &seq_i64(expected.seq),
                &expected_hash,
                &head_text,
                &seqs,
                &ids,
                &bundles,
                &types,
                &targets,
                &records,
                &prevs,
                &hashes,
                &b_ids,
                &digests,
                &firsts,
                &lasts,
                &ingested,
                &dups,
                &heads,
                &a_bundle,
                &a_ord,
                &a_sha,
                &a_kind,
                &a_uri,
                &a_size,
            ],
        );
        match called {
            Ok(_) => Ok(()),
            Err(e) => Err(self.refusal(expected, &e).unwrap_or(PgError::Db(e))),
        }
    }

    /// The fencing refusals `leviathan_append` raises (schema migration 6),
    /// as this writer's errors; `None` for any other error.
    fn refusal(&self, expected: Head, e: &postgres::Error) -> Option<PgError> {
        let db = e.as_db_error()?;
        match db.code().code() {
            "LVFEN" => Some(PgError::Fenced {
                ours: self.epoch,
                current: db.message().parse().unwrap_or(0),
                holder: db.detail().unwrap_or_default().to_string(),
            }),
            "LVHED" => Some(PgError::HeadMoved {
                expected: expected.seq.0,
                expected_hash: expected.hash.map_or("empty".to_string(), |h| h.to_hex()),
                stored: db.message().parse().unwrap_or(0),
                stored_hash: db.detail().unwrap_or("empty").to_string(),
            }),
            _ => None,
        }
    }

    /// Gives leadership up at a clean stop, so that another node need not
    /// wait for the lease to expire.
    pub fn release(&mut self) -> Result<(), PgError> {
        if self.epoch != 0 {
            self.client.execute(
                "UPDATE leader SET expires_at = '-infinity' WHERE id = 1 AND epoch = $1",
                &[&self.epoch],
            )?;
            self.epoch = 0;
        }
        Ok(())
    }
}

/// A writer's own reckoning of its lease, by its monotonic clock: it leads
/// until `lease - lease / 10` after sending the last renewal PostgreSQL
/// confirmed (or the statement that took the lease). PostgreSQL set that
/// expiry from its `now()` when it ran the statement, after the send, so
/// the reckoning ends before the lease PostgreSQL holds does (the tenth
/// covers clocks that run at slightly different rates), and before any other
/// node can take it over.
///
/// Shared by the lease thread (which renews it and marks it lost), the
/// writer (which appends nothing once it is over, and acknowledges no batch
/// that returns after it) and readiness and ingest (which refuse at once,
/// without waiting on a writer thread stuck on a dead connection).
#[derive(Debug)]
pub struct LeaseClock {
    epoch: i64,
    lease: Duration,
    origin: std::time::Instant,
    /// Nanoseconds from `origin` to the send of the last confirmed renewal.
    renewed: std::sync::atomic::AtomicU64,
    /// Why it is over before its deadline: [`LeaseClock::HELD`] while not.
    over: std::sync::atomic::AtomicU8,
}

impl LeaseClock {
    const HELD: u8 = 0;
    /// Another writer took the lease (a renewal or an append found its epoch).
    const TAKEN: u8 = 1;
    /// The lease thread could not renew it in time.
    const RAN_OUT: u8 = 2;
    /// This node gave it up (a clean stop, a step-down).
    const GIVEN_UP: u8 = 3;

    /// The lease of `epoch`, taken by a statement sent at `taken`.
    pub fn new(epoch: i64, lease: Duration, taken: std::time::Instant) -> LeaseClock {
        LeaseClock {
            epoch,
            lease,
            origin: taken,
            renewed: std::sync::atomic::AtomicU64::new(0),
            over: std::sync::atomic::AtomicU8::new(Self::HELD),
        }
    }

    /// When the last confirmed renewal (or the take) was sent.
    fn last_renewal(&self) -> std::time::Instant {
        self.origin + Duration::from_nanos(self.renewed.load(Ordering::SeqCst))
    }

    /// When this writer stops leading unless a renewal confirms first.
    pub fn deadline(&self) -> std::time::Instant {
        self.last_renewal() + self.lease - self.lease / 10
    }

    /// Whether this writer leads now.
    pub fn held(&self) -> bool {
        self.over.load(Ordering::SeqCst) == Self::HELD
            && std::time::Instant::now() < self.deadline()
    }

    /// A renewal sent at `sent` was confirmed.
    fn renewed(&self, sent: std::time::Instant) {
        let nanos = u64::try_from(sent.saturating_duration_since(self.origin).as_nanos())
            .unwrap_or(u64::MAX);
        self.renewed.fetch_max(nanos, Ordering::SeqCst);
    }

    fn end(&self, why: u8) {
        let _ = self
            .over
            .compare_exchange(Self::HELD, why, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// The failure to answer with once it is over (503 `not_leader`).
    pub fn failure(&self) -> Option<crate::writer::StorageFailure> {
        let message = match self.over.load(Ordering::SeqCst) {
            Self::TAKEN => format!(
                "this writer's leader lease (epoch {}) was lost: another writer took over",
                self.epoch
            ),
            Self::GIVEN_UP => format!(
                "this writer gave its leader lease (epoch {}) up: it no longer appends",
                self.epoch
            ),
            _ if self.held() => return None,
            _ => format!(
                "this writer's leader lease (epoch {}) ran out: it was not renewed for {:.1} s \
                 (LEVIATHAN_POSTGRES_LEASE_SECS={} less a tenth), PostgreSQL being unreachable or \
                 too slow; another writer may take over, so this one appends nothing more",
                self.epoch,
                self.last_renewal().elapsed().as_secs_f64(),
                self.lease.as_secs_f64()
            ),
        };
        Some(crate::writer::StorageFailure {
            cause: NOT_LEADER,
            message,
        })
    }
}

/// Renews the lease every third of its length on its own connection, each
/// renewal (and the connect before it) bounded by the lease's deadline
/// ([`LeaseClock`]): a renewal that does not answer within a third of the
/// lease is abandoned with its connection and sent again on a new one. Once
/// a renewal finds the epoch gone, or the deadline passes unrenewed, it marks
/// the lease over, wakes the writer ([`Leader::on_lost`]) and stops. Stops
/// when dropped.
pub struct Renewer {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    clock: Arc<LeaseClock>,
    wake: Wake,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Who is told once the lease is lost (set after the lease was taken: the
/// writer thread exists only then).
type Wake = Arc<std::sync::Mutex<Option<Box<dyn Fn() + Send>>>>;

/// Ends the lease for `why` and tells whoever asked to be woken.
fn mark_lost(clock: &LeaseClock, why: u8, wake: &Wake) {
    clock.end(why);
    if let Some(f) = wake.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
        f();
    }
}

/// What the lease thread holds to renew.
struct Renewal {
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    holder: String,
    /// This process's instance token: no renewal once another process holds
    /// this node's id (`identity`).
    instance: String,
    epoch: i64,
    secs: f64,
}

impl Renewal {
    /// Connects (bounded by the caller's timeout: `connect_timeout` covers
    /// the TCP connect only, not the start-up exchange).
    async fn connect(&self) -> Result<tokio_postgres::Client, PgError> {
        let (client, connection) = self.config.connect(self.tls.clone()).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "the leader lease's connection ended");
            }
        });
        Ok(client)
    }

    /// One renewal: `true` renewed, `false` the epoch is gone (or another
    /// process holds this node's id).
    async fn renew(&self, client: &mut Option<tokio_postgres::Client>) -> Result<bool, PgError> {
        let c = match client.take() {
            Some(c) if !c.is_closed() => c,
            _ => self.connect().await?,
        };
        let renewed = c
            .query_opt(
                "UPDATE leader SET expires_at = now() + make_interval(secs => $3)
                  WHERE id = 1 AND epoch = $1 AND holder = $2
                    AND NOT EXISTS (SELECT 1 FROM members m
                                     WHERE m.node_id = $2 AND m.instance NOT IN ('', $4))
                  RETURNING epoch",
                &[&self.epoch, &self.holder, &self.secs, &self.instance],
            )
            .await?;
        *client = Some(c);
        Ok(renewed.is_some())
    }
}

impl Renewer {
    /// Starts renewing the lease of `epoch`, taken by a statement sent at
    /// `taken`.
    pub fn start(
        settings: &PgSettings,
        epoch: i64,
        taken: std::time::Instant,
    ) -> Result<Renewer, PgError> {
        let (config, tls) = async_config(&settings.url)?;
        let lease = settings.lease;
        let renewal = Renewal {
            config,
            tls,
            holder: settings.holder.clone(),
            instance: settings.instance.clone(),
            epoch,
            secs: lease.as_secs_f64(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(PgError::Thread)?;
        let clock = Arc::new(LeaseClock::new(epoch, lease, taken));
        // Connected here, so that a node that cannot reach PostgreSQL at all
        // says so at once.
        let first = runtime.block_on(async {
            tokio::time::timeout(lease, renewal.connect())
                .await
                .unwrap_or_else(|_| {
                    Err(PgError::Unanswered(format!(
                        "connecting for the leader lease took longer than the lease ({:.1} s)",
                        lease.as_secs_f64()
                    )))
                })
        })?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let wake: Wake = Arc::default();
        let (clock2, waker) = (clock.clone(), wake.clone());
        let thread = std::thread::Builder::new()
            .name("leviathan-lease".into())
            .spawn(move || {
                runtime.block_on(renew_until_lost(renewal, first, clock2, waker, stopped))
            })
            .map_err(PgError::Thread)?;
        Ok(Renewer {
            stop: Some(stop),
            clock,
            wake,
            thread: Some(thread),
        })
    }

    /// The lease as this writer reckons it.
    pub fn clock(&self) -> Arc<LeaseClock> {
        self.clock.clone()
    }
}

/// The lease thread's loop ([`Renewer`]).
async fn renew_until_lost(
    renewal: Renewal,
    first: tokio_postgres::Client,
    clock: Arc<LeaseClock>,
    wake: Wake,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let lease = clock.lease;
    let epoch = renewal.epoch;
    let mut client = Some(first);
    let mut next = clock.origin + lease / 3;
    loop {
        let wait_until = next.min(clock.deadline());
        tokio::select! {
            _ = &mut stopped => return,
            _ = tokio::time::sleep_until(wait_until.into()) => {}
        }
        let sent = std::time::Instant::now();
        let deadline = clock.deadline();
        if sent >= deadline {
            tracing::error!(
                epoch,
                "the leader lease ran out before it could be renewed: this writer steps down"
            );
            mark_lost(&clock, LeaseClock::RAN_OUT, &wake);
            return;
        }
        // At most a third of the lease, so that a connection that stopped
        // answering is replaced while the lease still holds.
        let budget = (deadline - sent).min(lease / 3);
        let attempt = tokio::select! {
            _ = &mut stopped => return,
            r = tokio::time::timeout(budget, renewal.renew(&mut client)) => r,
        };
        match attempt {
            Ok(Ok(true)) => {
                clock.renewed(sent);
                next = sent + lease / 3;
            }
            Ok(Ok(false)) => {
                tracing::error!(
                    epoch,
                    "the leader lease is gone (another writer took over, or another process took this node's id): this writer steps down"
                );
                mark_lost(&clock, LeaseClock::TAKEN, &wake);
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "renewing the leader lease failed");
                // Again after a pause (a refused connect fails at once),
                // on a new connection if this one is closed.
                next = std::time::Instant::now() + (lease / 10).max(Duration::from_millis(50));
            }
            Err(_) => {
                tracing::warn!(
                    epoch,
                    waited_secs = budget.as_secs_f64(),
                    "renewing the leader lease got no answer: abandoning its connection and \
                     trying a new one"
                );
                // Dropped: its socket is closed, whatever the network does.
                client = None;
                next = std::time::Instant::now();
            }
        }
    }
}

impl Drop for Renewer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The writer's hold on the log: its connection with the epoch it leads with,
/// and the lease renewal.
pub struct Leader {
    log: PgLog,
    clock: Arc<LeaseClock>,
    renewer: Renewer,
}

/// Why an append to PostgreSQL failed, as the writer answers it.
pub struct AppendFailure {
    pub failure: crate::writer::StorageFailure,
    /// Fenced, or an outcome that cannot be known: the writer stops. A
    /// failure known not to have committed only refuses the batch.
    pub stops_writer: bool,
}

/// The cause of a writer that lost leadership (503 `not_leader`).
pub const NOT_LEADER: &str = "not_leader";

impl Leader {
    /// `log` must lead ([`PgLog::lead`]); starts renewing its lease.
    pub fn new(log: PgLog) -> Result<Leader, PgError> {
        let taken = log.led_at.unwrap_or_else(std::time::Instant::now);
        let renewer = Renewer::start(log.settings(), log.epoch(), taken)?;
        Ok(Leader {
            clock: renewer.clock(),
            log,
            renewer,
        })
    }

    /// Calls `wake` (from the lease thread) once the lease is found lost, or
    /// at once if it already was: the writer learns it without traffic and
    /// without polling.
    pub fn on_lost(&self, wake: Box<dyn Fn() + Send>) {
        let mut slot = self.renewer.wake.lock().unwrap_or_else(|p| p.into_inner());
        if !self.clock.held() {
            wake();
        }
        *slot = Some(wake);
    }

    /// How this node reaches the log.
    pub fn settings(&self) -> &PgSettings {
        self.log.settings()
    }

    /// The log it leads, for a catch-up while its lease is renewed.
    pub fn log_mut(&mut self) -> &mut PgLog {
        &mut self.log
    }

    /// The epoch it leads with.
    pub fn epoch(&self) -> i64 {
        self.log.epoch()
    }

    /// Its lease as it reckons it, for readiness and ingest to read.
    pub fn clock(&self) -> Arc<LeaseClock> {
        self.clock.clone()
    }

    /// The failure to stop with once the lease is lost: another writer took
    /// it, or its deadline passed unrenewed (however the lease thread's
    /// renewal is doing).
    pub fn lost(&self) -> Option<crate::writer::StorageFailure> {
        self.clock.failure()
    }

    /// Appends a batch's rows (nothing to do when there are none). Nothing
    /// is sent once the lease is over, and a batch whose append returns
    /// after the lease ran out is not acknowledged (it may be in the log:
    /// whoever leads next has it, and a retry of its bundle is answered as a
    /// duplicate), so that no batch is acknowledged by a writer that may no
    /// longer lead. PostgreSQL's own half of the fence is the epoch check in
    /// `leviathan_append`.
    pub fn append(&mut self, expected: Head, rows: &Rows) -> Result<(), AppendFailure> {
        if rows.is_empty() {
            return Ok(());
        }
        if let Some(lost) = self.clock.failure() {
            return Err(AppendFailure {
                failure: lost,
                stops_writer: true,
            });
        }
        let clock = self.clock.clone();
        let appended = self.log.append_while(expected, rows, &|| clock.held());
        if appended.is_ok() && self.log.settings.test_crash_after_commit {
            tracing::error!(
                "LEVIATHAN_TEST_CRASH_AFTER_POSTGRES_COMMIT: aborting after the PostgreSQL commit"
            );
            std::process::abort();
        }
        if let Some(lost) = self.clock.failure() {
            let message = match &appended {
                Ok(()) => format!(
                    "{}. Its last batch was committed to PostgreSQL only after that, so it is not \
                     acknowledged: retry it with the same bundle_id (whoever leads answers it as a \
                     duplicate)",
                    lost.message
                ),
                Err(e) => format!("{}; its last append failed: {e}", lost.message),
            };
            return Err(AppendFailure {
                failure: crate::writer::StorageFailure {
                    cause: NOT_LEADER,
                    message,
                },
                stops_writer: true,
            });
        }
        appended.map_err(|e| {
            let fenced = e.is_fenced();
            let known_not_committed = matches!(e, PgError::Db(_)) && !self.log.client.is_closed();
            if fenced {
                self.clock.end(LeaseClock::TAKEN);
            }
            AppendFailure {
                failure: crate::writer::StorageFailure {
                    cause: if fenced {
                        NOT_LEADER
                    } else {
                        "postgres_unavailable"
                    },
                    message: e.to_string(),
                },
                stops_writer: !known_not_committed,
            }
        })
    }
}

impl Drop for Leader {
    /// A clean stop gives the lease up (best effort: a lease that cannot be
    /// released expires by itself). A lease already over is not released: it
    /// may be another's, and its connection may hang.
    fn drop(&mut self) {
        let held = self.clock.held();
        self.clock.end(LeaseClock::GIVEN_UP);
        if !held {
            return;
        }
        if let Err(e) = self.log.release() {
            tracing::warn!(error = %e, "could not release the leader lease; it expires by itself");
        }
    }
}

/// A replica's hold on the log (`LEVIATHAN_ROLE=replica`): a connection that
/// LISTENs on [`NOTIFY_CHANNEL`] and reads what is appended; it never appends.
pub struct Follower {
    log: PgLog,
    /// `LEVIATHAN_ROLE=auto`: take the writer's leadership once the lease
    /// is free.
    promotes: bool,
    /// What a replica needs to repair a digest disagreement itself.
    agreement: Option<Agreement>,
}

/// A replica's link to the comparison with the writer (`members`): the
/// disagreement it found, and the generations catalog its rebuilt graph is
/// recorded in.
#[derive(Clone)]
pub struct Agreement {
    pub disagreement: members::Disagreement,
    pub catalog: crate::generations::Catalog,
}

impl From<postgres::Error> for PgError {
    fn from(e: postgres::Error) -> PgError {
        PgError::Db(e)
    }
}

/// What went wrong, as an operator needs it: the server's own message (with
/// its SQLSTATE, detail and hint) for an error PostgreSQL reported, else the
/// client's error and its causes, each once.
pub fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!(
            "{} {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        );
        if let Some(d) = db.detail() {
            s.push_str(&format!("; detail: {d}"));
        }
        if let Some(h) = db.hint() {
            s.push_str(&format!("; hint: {h}"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = cause.source();
    }
    s
}

/// Paces the retries of a PostgreSQL operation that keeps failing (the
/// database down, a failover): sleeps 100 ms, doubling up to 5 s, and logs
/// the first failure, then at most every 30 s (a replica once retried at
/// once, 0.7 of a core and ~48k log lines a second while PostgreSQL was
/// down). Blocking: for the writer thread.
#[derive(Debug)]
pub struct Backoff {
    delay: Duration,
    failures: u64,
    logged: Option<std::time::Instant>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            delay: Backoff::FIRST,
            failures: 0,
            logged: None,
        }
    }
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);
    const LOG_EVERY: Duration = Duration::from_secs(30);

    /// Records a failure of `what`, logs it (rate-limited), then sleeps.
    pub fn failed(&mut self, what: &str, error: &dyn std::fmt::Display) {
        self.failures += 1;
        if self.logged.is_none_or(|t| t.elapsed() >= Self::LOG_EVERY) {
            self.logged = Some(std::time::Instant::now());
            tracing::warn!(
                failures = self.failures,
                retry_in_ms = self.delay.as_millis() as u64,
                error = %error,
                "{what}; retrying"
            );
        }
        std::thread::sleep(self.delay);
        self.delay = (self.delay * 2).min(Self::MAX);
    }

    /// The operation worked again: the next failure starts from the first delay.
    pub fn succeeded(&mut self, what: &str) {
        if self.failures > 0 {
            tracing::info!(failures = self.failures, "{what} again");
        }
        *self = Backoff::default();
    }
}

/// How long a replica waits for a notification before it looks anyway (a
/// notification lost with a dropped connection costs at most this much lag).
const FOLLOW_POLL: Duration = Duration::from_millis(500);

impl Follower {
    /// `log` must not lead. Starts listening.
    pub fn new(mut log: PgLog, promotes: bool) -> Result<Follower, PgError> {
        log.client
            .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))?;
        Ok(Follower {
            log,
            promotes,
            agreement: None,
        })
    }

    /// Listens (again: a no-op if it does) after [`PgLog::reconnect`] on
    /// its connection.
    pub fn listen(&mut self) -> Result<(), PgError> {
        self.log
            .client
            .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))?;
        Ok(())
    }

    /// Repairs a digest disagreement found by the comparison with the
    /// writer by rebuilding its graph (the writer thread does).
    pub fn with_agreement(mut self, agreement: Agreement) -> Follower {
        self.agreement = Some(agreement);
        self
    }

    /// Taken by the writer thread.
    pub fn take_agreement(&mut self) -> Option<Agreement> {
        self.agreement.take()
    }

    /// Whether it takes leadership when the lease is free.
    pub fn promotes(&self) -> bool {
        self.promotes
    }

    /// The connection, no longer listening (a promoted replica's).
    pub fn into_log(mut self) -> Result<PgLog, PgError> {
        self.log.client.batch_execute("UNLISTEN *")?;
        Ok(self.log)
    }

    /// Waits until the log may have moved: a notification, or the poll
    /// interval. Reconnects (and listens again) after a dropped connection.
    pub fn wait(&mut self) -> Result<(), PgError> {
        if self.log.client.is_closed() {
            self.log.reconnect()?;
            self.listen()?;
            return Ok(());
        }
        use postgres::fallible_iterator::FallibleIterator;
        let mut notifications = self.log.client.notifications();
        // One is enough to look; the rest are drained so they do not pile up.
        if notifications.timeout_iter(FOLLOW_POLL).next()?.is_some() {
            let mut rest = notifications.iter();
            while rest.next()?.is_some() {}
        }
        Ok(())
    }

    /// The connection, for [`catch_up::catch_up`].
    pub fn log(&mut self) -> &mut PgLog {
        &mut self.log
    }
}

/// The role a node holds now, as `GET /v1/cluster` shows it: set by the
/// writer thread (a replica promoted with `LEVIATHAN_ROLE=auto` becomes the
/// writer, a writer that lost its lease steps down to a replica), read by
/// the members publisher.
#[derive(Clone)]
pub struct CurrentRole(Arc<AtomicBool>);

impl CurrentRole {
    /// Shares `replica` (true while the node is a replica).
    pub fn of(replica: Arc<AtomicBool>) -> CurrentRole {
        CurrentRole(replica)
    }

    /// `writer` or `replica`.
    pub fn name(&self) -> &'static str {
        if self.0.load(Ordering::SeqCst) {
            "replica"
        } else {
            "writer"
        }
    }
}

/// What a node does with the PostgreSQL log.
pub enum Role {
    /// The writer: appends, fenced.
    Leader(Leader),
    /// A replica: follows, never appends.
    Follower(Follower),
}

impl Role {
    /// How this node reaches the log.
    pub fn settings(&self) -> &PgSettings {
        match self {
            Role::Leader(l) => l.log.settings(),
            Role::Follower(f) => f.log.settings(),
        }
    }

    /// `writer` or `replica`, as `GET /v1/cluster` shows it.
    pub fn name(&self) -> &'static str {
        match self {
            Role::Leader(_) => "writer",
            Role::Follower(_) => "replica",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_connection_has_keepalives_and_a_tcp_user_timeout_unless_the_url_sets_its_own() {
        let (c, _) = async_config("host=127.0.0.1 user=postgres").unwrap();
        assert!(c.get_keepalives());
        assert_eq!(c.get_keepalives_idle(), KEEPALIVES_IDLE);
        assert_eq!(c.get_keepalives_interval(), Some(KEEPALIVES_INTERVAL));
        assert_eq!(c.get_keepalives_retries(), Some(KEEPALIVES_RETRIES));
        assert_eq!(c.get_tcp_user_timeout(), Some(&TCP_USER_TIMEOUT));
        // The blocking client's (every connection but the lease's) too.
        let (c, _) = config("host=127.0.0.1 user=postgres").unwrap();
        assert_eq!(c.get_keepalives_idle(), KEEPALIVES_IDLE);
        assert_eq!(c.get_tcp_user_timeout(), Some(&TCP_USER_TIMEOUT));
        let (c, _) = async_config(
            "host=127.0.0.1 user=postgres keepalives_idle=60 keepalives_interval=7 \
             keepalives_retries=9 tcp_user_timeout=30",
        )
        .unwrap();
        assert_eq!(c.get_keepalives_idle(), Duration::from_secs(60));
        assert_eq!(c.get_keepalives_interval(), Some(Duration::from_secs(7)));
        assert_eq!(c.get_keepalives_retries(), Some(9));
        assert_eq!(c.get_tcp_user_timeout(), Some(&Duration::from_secs(30)));
    }

    #[test]
    fn the_lease_clock_ends_a_tenth_early_and_moves_with_confirmed_renewals_only() {
        let taken = std::time::Instant::now();
        let clock = LeaseClock::new(7, Duration::from_secs(10), taken);
        assert_eq!(clock.deadline(), taken + Duration::from_secs(9));
        assert!(clock.held() && clock.failure().is_none());
        clock.renewed(taken + Duration::from_secs(3));
        assert_eq!(clock.deadline(), taken + Duration::from_secs(12));
        // An older renewal confirmed late moves nothing back.
        clock.renewed(taken + Duration::from_secs(1));
        assert_eq!(clock.deadline(), taken + Duration::from_secs(12));
        // Past its deadline it is over, whatever the lease thread is doing.
        let old = LeaseClock::new(7, Duration::from_millis(10), taken);
        std::thread::sleep(Duration::from_millis(20));
        let f = old.failure().expect("over");
        assert_eq!(f.cause, NOT_LEADER);
        assert!(f.message.contains("ran out"), "{}", f.message);
        clock.end(LeaseClock::TAKEN);
        assert!(!clock.held());
        assert!(clock
            .failure()
            .unwrap()
            .message
            .contains("another writer took over"));
    }
}
