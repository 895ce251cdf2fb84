//! Brings a node's local store up to the PostgreSQL log before it serves or
//! writes: every event after the local head, in seq order, checked link by
//! link, staged into the local log, its indexes and the Merkle tree, and
//! projected into the live generation's graph with the same `project_event`
//! the writer and a rebuild use, chunk by chunk in one fjall batch each. The
//! bundle records committed with those events (and those recorded at the
//! local head, which a batch of duplicates leaves unmoved) come along, so a
//! retry is answered from the local store as on the node that took it.
//!
//! This is what repairs a crash between the PostgreSQL commit and the local
//! commit (an acknowledged event is in PostgreSQL, so it is caught up here),
//! and what fills a wiped data dir from the log.
//!
//! Each local commit ends where a bundle ends ([`whole_bundles`]): a
//! replica's reads must see a bundle whole or not at all, as the writer's
//! do, and a chunk of a fixed number of events cut bundles in two (a bundle
//! of 5,000 events was seen with 1,024 and 2,048 of its attempts).

use super::{PgError, PgEvent, PgLog};
use crate::digest::Sha256;
use crate::generations::Live;
use crate::log::record::EventDraft;
use crate::log::{Head, Log};
use crate::projection::{Policy, Prepared};
use crate::seq::Seq;

/// Events read and committed locally at a time, about: a commit ends with
/// a whole bundle, so it holds fewer when a bundle would be cut, and all of
/// a bundle larger than this.
const CHUNK: i64 = 2048;

#[derive(Debug, thiserror::Error)]
pub enum CatchUpError {
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error(
        "the local store's head (seq {local}) is ahead of the PostgreSQL log (seq {remote}): this \
         data dir was written against another database, or the database was restored from an \
         older backup. Point LEVIATHAN_POSTGRES_URL at the right database, or start this node on \
         an empty data dir to fill it from PostgreSQL"
    )]
    LocalAhead { local: u64, remote: u64 },
    #[error(
        "the local store and the PostgreSQL log differ at seq {seq} (local hash {local}, \
         PostgreSQL {remote}): they are two different logs. Start this node on an empty data dir \
         to fill it from PostgreSQL"
    )]
    Forked {
        seq: u64,
        local: String,
        remote: String,
    },
    #[error("event seq {seq} from PostgreSQL does not chain: {reason}")]
    Broken { seq: u64, reason: String },
    #[error(
        "event seq {seq} from PostgreSQL does not project with the live projector set: {reason}"
    )]
    Projection { seq: u64, reason: String },
    #[error("the local store failed during catch-up: {0}")]
    Local(String),
}

/// What [`catch_up`] did.
#[derive(Debug, Clone, Copy)]
pub struct CaughtUp {
    pub from: Seq,
    pub head: Head,
    pub events: u64,
    pub bundles: u64,
}

fn local(e: impl std::fmt::Display) -> CatchUpError {
    CatchUpError::Local(e.to_string())
}

/// Whether the local store is a prefix of the PostgreSQL log (not ahead of
/// it, and the same record at its head): what a node checks before it takes
/// the writer's leadership, so that a data dir of another database is
/// refused without holding the lease (and delaying a failover).
pub fn check_same_log(log: &Log, pg: &mut PgLog) -> Result<(), CatchUpError> {
    let start = log.head().map_err(local)?;
    let remote = pg.head()?;
    same_log(start, remote, pg)
}

fn same_log(start: Head, remote: Head, pg: &mut PgLog) -> Result<(), CatchUpError> {
    if remote.seq < start.seq {
        return Err(CatchUpError::LocalAhead {
            local: start.seq.0,
            remote: remote.seq.0,
        });
    }
    if let Some(local_hash) = start.hash {
        let theirs = pg.hash_at(start.seq)?;
        if theirs != Some(local_hash) {
            return Err(CatchUpError::Forked {
                seq: start.seq.0,
                local: local_hash.to_hex(),
                remote: theirs.map_or("absent".into(), |h| h.to_hex()),
            });
        }
    }
    Ok(())
}

/// Catches the local store (log, tree, `live`'s graph) up to PostgreSQL.
pub fn catch_up(
    db: &fjall::Database,
    log: &Log,
    live: &Live,
    persist: fjall::PersistMode,
    pg: &mut PgLog,
) -> Result<CaughtUp, CatchUpError> {
    let start = log.head().map_err(local)?;
    let remote = pg.head()?;
    if remote == start && missing_bundles(log, pg, start.seq, start.seq)?.is_empty() {
        // Nothing new (a replica's poll ends here).
        return Ok(CaughtUp {
            from: start.seq,
            head: start,
            events: 0,
            bundles: 0,
        });
    }
    same_log(start, remote, pg)?;
    let tree = crate::tlog::Tree::open(db, log).map_err(local)?;
    tree.catch_up(db).map_err(local)?;
    let mut tree = tree.writer(db).map_err(local)?;
    let mut head = start;
    let mut events = 0u64;
    let mut bundles = 0u64;
    loop {
        let (chunk, more) = whole_bundles(pg, head.seq)?;
        let from = head.seq;
        let mut batch = db.batch().durability(Some(persist));
        let mut staging = live.graph.staging().map_err(local)?;
        for e in &chunk {
            check_link(&head, e)?;
            let draft =
                EventDraft::from_record(&e.record).map_err(|reason| CatchUpError::Broken {
                    seq: e.seq.0,
                    reason,
                })?;
            if draft.encode(e.seq, e.prev_hash.as_ref()) != e.record {
                return Err(CatchUpError::Broken {
                    seq: e.seq.0,
                    reason: "the record is not in the canonical form this version writes".into(),
                });
            }
            log.stage_event(&mut batch, e.seq, &e.hash, &e.record, &draft);
            tree.append(&mut batch, &e.record);
            let stored = crate::log::record::StoredEvent::decode(
                &crate::log::record::stored_value(&e.hash, &e.record),
            )
            .map_err(|err| CatchUpError::Broken {
                seq: e.seq.0,
                reason: err.to_string(),
            })?;
            crate::project_event::project_event(
                &live.projectors,
                &crate::replay::input(&stored),
                Prepared::default(),
                &mut staging,
                // As `rebuild`: a stored event that fails was history when
                // the set was built (or is recorded under `record`).
                Policy::RecordAll,
            )
            .map_err(|err| CatchUpError::Projection {
                seq: e.seq.0,
                reason: err.to_string(),
            })?;
            head = Head {
                seq: e.seq,
                hash: Some(e.hash),
            };
        }
        // The bundles whose records this chunk completes, and those recorded
        // at the chunk's start (a batch of duplicates does not move the head).
        let recorded = missing_bundles(log, pg, from, head.seq)?;
        for (id, rec) in &recorded {
            let id = crate::ids::BundleId::new(id.clone()).map_err(|e| CatchUpError::Broken {
                seq: head.seq.0,
                reason: format!("bundle id {id:?}: {}", e.0),
            })?;
            log.stage_bundle(&mut batch, &id, rec);
        }
        if !chunk.is_empty() {
            log.stage_head(&mut batch, &head);
            live.graph
                .stage_projector_set(&mut batch, &live.fingerprint);
            tree.stage_size(&mut batch);
        }
        staging.write_into(&mut batch).map_err(local)?;
        batch.commit().map_err(local)?;
        events += chunk.len() as u64;
        bundles += recorded.len() as u64;
        if !more {
            break;
        }
    }
    if events > 0 {
        tracing::info!(
            from = start.seq.0,
            head = head.seq.0,
            events,
            bundles,
            "caught the local store up from PostgreSQL"
        );
    }
    Ok(CaughtUp {
        from: start.seq,
        head,
        events,
        bundles,
    })
}

/// The events after `after`, about [`CHUNK`] of them, ending where a
/// bundle ends, and whether more follow. PostgreSQL holds whole writer
/// batches only (one transaction each), so the last event of the log ends
/// a bundle; elsewhere, the event after the last one read tells whether it
/// ends one (a bundle's events are consecutive and share its id).
fn whole_bundles(pg: &mut PgLog, after: Seq) -> Result<(Vec<PgEvent>, bool), CatchUpError> {
    let mut events = pg.events_after(after, CHUNK + 1)?;
    let Some(next) = (events.len() as i64 > CHUNK)
        .then(|| events.pop())
        .flatten()
    else {
        return Ok((events, false));
    };
    // Drop the start of the bundle `next` continues, unless it is all there is.
    let whole = events
        .iter()
        .rposition(|e| e.bundle_id != next.bundle_id)
        .map_or(0, |last| last + 1);
    if whole > 0 {
        events.truncate(whole);
        return Ok((events, true));
    }
    // One bundle larger than a chunk: all of it (the writer held it whole).
    // More may follow it: the caller asks again.
    events.push(next);
    loop {
        let last = events.last().expect("not empty").seq;
        let more = pg.events_after(last, CHUNK)?;
        let read = more.len();
        let id = &events[0].bundle_id;
        let same = more.iter().take_while(|e| e.bundle_id == *id).count();
        events.extend(more.into_iter().take(same));
        if same < read || (read as i64) < CHUNK {
            return Ok((events, true));
        }
    }
}

/// The bundle records with a head in `from..=to` the local store lacks.
fn missing_bundles(
    log: &Log,
    pg: &mut PgLog,
    from: Seq,
    to: Seq,
) -> Result<Vec<(String, crate::log::BundleRecord)>, CatchUpError> {
    let mut out = Vec::new();
    for (id, rec) in pg.bundles_between(from, to)? {
        let bundle_id =
            crate::ids::BundleId::new(id.clone()).map_err(|e| CatchUpError::Broken {
                seq: to.0,
                reason: format!("bundle id {id:?}: {}", e.0),
            })?;
        if log.bundle(&bundle_id).map_err(local)?.is_none() {
            out.push((id, rec));
        }
    }
    Ok(out)
}

/// `e` follows `head`: the next seq, its `prev_hash` is the head's hash, its
/// hash is the SHA-256 of its record and the record says the same.
fn check_link(head: &Head, e: &super::PgEvent) -> Result<(), CatchUpError> {
    let broken = |reason: String| CatchUpError::Broken {
        seq: e.seq.0,
        reason,
    };
    if e.seq != head.seq.next() {
        return Err(broken(format!("expected seq {}", head.seq.next().0)));
    }
    if e.prev_hash != head.hash {
        return Err(broken("its prev_hash is not its predecessor's hash".into()));
    }
    if Sha256::of(&e.record) != e.hash {
        return Err(broken("its hash is not the SHA-256 of its record".into()));
    }
    if crate::log::record::chain_fields(&e.record) != Some((e.prev_hash, e.seq)) {
        return Err(broken(
            "the record's own seq and prev_hash are not the row's".into(),
        ));
    }
    Ok(())
}
