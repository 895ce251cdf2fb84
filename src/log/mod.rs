//! The event log: the hash-chained sequence of stored events and its indexes, in
//! fjall keyspaces. It owns the key layout, the reads every route needs (by seq,
//! by event_id, by type, by attempt) and chain verification. It never decides
//! what gets appended: only the writer stages entries, through the `stage_*`
//! methods, into the batch it commits.
//!
//! Keyspaces (all keys big-endian where numeric):
//! - `log_events`: seq → `hash (32) ‖ canonical record` (see [`record`])
//! - `log_event_ids`: event_id → `seq (8) ‖ content digest (32)`
//! - `log_bundles`: bundle_id → [`BundleRecord`] (JSON)
//! - `log_by_type`: `event_type ‖ 0x00 ‖ seq` → ()
//! - `log_by_attempt`: `len (u16) ‖ attempt_id ‖ seq` → () (an id over
//!   65,525 bytes: `0xFFFF ‖ SHA-256(attempt_id) ‖ seq`)
//! - `log_by_target`: `event_type ‖ 0x00 ‖ len (u16) ‖ target ‖ seq` → (),
//!   for `topo.*` events under their `payload.target_id` and failures under
//!   the target they report (see `indexed_target`), when it is a string (one
//!   over 4,096 bytes: `0xFFFF ‖ SHA-256(target)`); read by the topology
//!   and failure views
//! - `log_meta`: `head` → `seq (8) ‖ hash (32)`; `by_target_upto` → `seq (8)`,
//!   the head up to which `log_by_target` is complete (see
//!   [`Log::complete_target_index`])
//!
//! Stores written before this layout may also hold `log_artifact_refs`
//! (artifact references by digest); nothing read it, it is no longer written
//! or opened, and it may stay on disk.

pub mod record;

use crate::digest::Sha256;
use crate::ids::{BundleId, EventId};
use crate::seq::Seq;
use fjall::{Database, Keyspace, OwnedWriteBatch, Readable};
use record::{EventDraft, StoredEvent};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// A consistent read view of the store: one fjall snapshot across every
/// keyspace (log, graph, artifacts); see [`Log::view`].
pub type View = fjall::Snapshot;

/// The last entry of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Head {
    pub seq: Seq,
    /// `None` for an empty log.
    pub hash: Option<Sha256>,
}

/// What the log remembers of a bundle, to answer retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleRecord {
    pub digest: Sha256,
    pub first_seq: Option<Seq>,
    pub last_seq: Option<Seq>,
    pub ingested: u64,
    pub duplicates: u64,
}

/// The outcome of re-verifying the chain from genesis.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub verified_events: u64,
    pub head: Head,
    /// The first seq that does not verify, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_broken_seq: Option<Seq>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("event store I/O: {0}")]
    Store(#[from] fjall::Error),
    #[error("event log is corrupt at {what}: {detail}")]
    Corrupt { what: String, detail: String },
    #[error(transparent)]
    Cancelled(#[from] crate::cancel::Cancelled),
}

fn corrupt(what: impl Into<String>, detail: impl ToString) -> LogError {
    LogError::Corrupt {
        what: what.into(),
        detail: detail.to_string(),
    }
}

/// Handle to the log's keyspaces. Cheap to clone.
#[derive(Clone)]
pub struct Log {
    db: Database,
    events: Keyspace,
    event_ids: Keyspace,
    bundles: Keyspace,
    by_type: Keyspace,
    by_attempt: Keyspace,
    by_target: Keyspace,
    meta: Keyspace,
}

const HEAD_KEY: &[u8] = b"head";
/// The seq up to which `log_by_target` holds every event it indexes:
/// written with the head in every batch that appends, so a store appended
/// to by a build that did not keep that index (a rollback) is seen to lag.
const BY_TARGET_UPTO_KEY: &[u8] = b"by_target_upto";

/// The topology event types `log_by_target` indexes: those whose type
/// starts so, under their `payload.target_id`.
const TOPOLOGY_PREFIX: &str = "topo.";

/// The event types that count as failures (`GET /v1/failures`), which
/// `log_by_target` indexes under their [`failure_target`].
pub const FAILURE_TYPES: [&str; 3] = ["attempt.failed", "task.failed", "tests.failed"];

/// Whether `log_by_target` indexes the events of `event_type`. What it
/// indexes is part of the store: a change here must also rename
/// [`BY_TARGET_UPTO_KEY`], so that stores indexed the old way are indexed
/// again at their next start.
fn is_target_indexed(event_type: &str) -> bool {
    event_type.starts_with(TOPOLOGY_PREFIX) || FAILURE_TYPES.contains(&event_type)
}

/// The target a failure's payload names: the first of `payload.target` and
/// `payload.target_id` that is neither null nor `""` (the event's own
/// `target` otherwise; a value that is not a string matches no target).
pub(crate) fn failure_target(
    payload: &serde_json::Map<String, serde_json::Value>,
) -> Option<&serde_json::Value> {
    ["target", "target_id"]
        .iter()
        .filter_map(|k| payload.get(*k))
        .find(|v| !(v.is_null() || v.as_str() == Some("")))
}

fn type_key(event_type: &str, seq: Seq) -> Vec<u8> {
    let mut k = Vec::with_capacity(event_type.len() + 9);
    k.extend_from_slice(event_type.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_key());
    k
}

/// Longest id an index key holds as itself (`len (u16) ‖ id`): with the
/// seq after it, such a key stays under fjall's 65,535-byte key limit.
/// Stores written before this bound hold every id up to it so (a longer id
/// stopped the writer then). A longer id is keyed by its digest instead:
/// `0xFFFF ‖ SHA-256 (32)`, a length no id keyed as itself has.
const MAX_ID_IN_KEY: usize = u16::MAX as usize - 2 - 8;

/// Longest target a `log_by_target` key holds as itself: the key also
/// holds the event type (up to 128 bytes) before it.
const MAX_TARGET_IN_KEY: usize = 4096;

/// An id's place in an index key: `len (u16) ‖ id`, or `0xFFFF ‖ SHA-256(id)`
/// past `max_raw` bytes (at most [`MAX_ID_IN_KEY`]), so that every key of
/// any id fits fjall's limit.
fn push_id_key(k: &mut Vec<u8>, id: &str, max_raw: usize) {
    debug_assert!(max_raw <= MAX_ID_IN_KEY);
    if id.len() <= max_raw {
        k.extend_from_slice(&(id.len() as u16).to_be_bytes());
        k.extend_from_slice(id.as_bytes());
    } else {
        k.extend_from_slice(&u16::MAX.to_be_bytes());
        k.extend_from_slice(Sha256::of(id.as_bytes()).as_bytes());
    }
}

/// The `log_by_target` prefix of one event type and target.
fn target_prefix(event_type: &str, target_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(event_type.len() + target_id.len().min(MAX_TARGET_IN_KEY) + 11);
    k.extend_from_slice(event_type.as_bytes());
    k.push(0);
    push_id_key(&mut k, target_id, MAX_TARGET_IN_KEY);
    k
}

/// The target `log_by_target` indexes an event under, if any: a topology
/// event's `payload.target_id`, a failure's [`failure_target`] (else
/// `envelope`, the event's own `target`), when it is a string. Payloads are
/// read as the views read them (a payload that does not parse as an object
/// names nothing), but only their two members are decoded: this runs in the
/// writer for every failure.
fn indexed_target(
    event_type: &str,
    payload_json: &str,
    envelope: impl FnOnce() -> Option<String>,
) -> Option<String> {
    use serde_json::value::RawValue;
    #[derive(Deserialize, Default)]
    struct Named<'a> {
        #[serde(borrow, default)]
        target: Option<&'a RawValue>,
        #[serde(borrow, default)]
        target_id: Option<&'a RawValue>,
    }
    /// A member that is absent, null or `""` names nothing.
    fn named(v: Option<&RawValue>) -> Option<&RawValue> {
        v.filter(|v| !matches!(v.get(), "null" | "\"\""))
    }
    if !is_target_indexed(event_type) {
        return None;
    }
    let payload: Named<'_> = serde_json::from_str(payload_json).unwrap_or_default();
    let value = if event_type.starts_with(TOPOLOGY_PREFIX) {
        payload.target_id
    } else {
        match named(payload.target).or(named(payload.target_id)) {
            None => return envelope(),
            value => value,
        }
    };
    // A string, or nothing (a number, an object … matches no target).
    value.and_then(|v| serde_json::from_str::<String>(v.get()).ok())
}

/// A canonical record's own `target` (the bundle's).
fn record_target(canonical: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        target: std::borrow::Cow<'a, str>,
    }
    serde_json::from_slice::<Envelope<'_>>(canonical)
        .ok()
        .map(|e| e.target.into_owned())
}

fn attempt_prefix(attempt_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(attempt_id.len().min(MAX_ID_IN_KEY) + 10);
    push_id_key(&mut k, attempt_id, MAX_ID_IN_KEY);
    k
}

/// The head record: `seq (8) ‖ hash (32)`; absent for an empty log.
/// A `log_event_ids` value: `seq ‖ content digest`.
fn decode_entry(
    event_id: &str,
    value: Option<fjall::UserValue>,
) -> Result<Option<(Seq, Sha256)>, LogError> {
    match value {
        Some(v) if v.len() == 40 => Ok(Some((
            Seq::from_key(&v[..8]).expect("8 bytes"),
            Sha256::from_slice(&v[8..]).expect("32 bytes"),
        ))),
        Some(_) => Err(corrupt(format!("log_event_ids/{event_id}"), "bad length")),
        None => Ok(None),
    }
}

fn decode_head(value: Option<&[u8]>) -> Result<Head, LogError> {
    match value {
        None => Ok(Head::default()),
        Some(v) if v.len() == 40 => Ok(Head {
            seq: Seq::from_key(&v[..8]).expect("8 bytes"),
            hash: Sha256::from_slice(&v[8..]),
        }),
        Some(v) => Err(corrupt("log_meta/head", format!("{} bytes", v.len()))),
    }
}

/// `prefix ‖ seq`: an index entry of `log_by_attempt` or `log_by_target`.
fn index_key(mut prefix: Vec<u8>, seq: Seq) -> Vec<u8> {
    prefix.extend_from_slice(&seq.to_key());
    prefix
}

/// The seqs of the entries of `index` (named `name` in errors) under
/// `prefix`, newest first, strictly below `before`.
fn seqs_under_desc(
    v: &View,
    index: &Keyspace,
    name: &'static str,
    prefix: Vec<u8>,
    before: Option<Seq>,
) -> impl Iterator<Item = Result<Seq, LogError>> + 'static {
    let lo = index_key(prefix.clone(), Seq(0));
    let hi = index_key(prefix, before.unwrap_or(Seq(u64::MAX)));
    v.range(index, lo..hi).rev().map(move |kv| {
        let k = kv.key()?;
        seq_suffix(&k).ok_or_else(|| corrupt(name, "short key"))
    })
}

fn seq_suffix(key: &[u8]) -> Option<Seq> {
    key.len()
        .checked_sub(8)
        .and_then(|i| Seq::from_key(&key[i..]))
}

impl Log {
    pub fn open(db: &Database) -> Result<Log, LogError> {
        let ks = |name: &str| crate::storage::open_keyspace(db, name);
        Ok(Log {
            db: db.clone(),
            events: ks("log_events")?,
            event_ids: ks("log_event_ids")?,
            bundles: ks("log_bundles")?,
            by_type: ks("log_by_type")?,
            by_attempt: ks("log_by_attempt")?,
            by_target: ks("log_by_target")?,
            meta: ks("log_meta")?,
        })
    }

    /// A directory inside the store, on the store's volume.
    pub fn store_path(&self) -> &std::path::Path {
        self.events.path()
    }

    /// A consistent read view of the whole store (log, graph, artifacts): one
    /// fjall snapshot. A batch the writer commits is in it whole or not at all,
    /// so a route that answers from one view never shows a torn state. Every
    /// read below has an `_at` form that reads through a given view (for a
    /// route that reads several things) and a plain form that opens its own.
    pub fn view(&self) -> View {
        self.db.snapshot()
    }

    /// The head as last committed.
    pub fn head(&self) -> Result<Head, LogError> {
        self.head_at(&self.view())
    }

    pub fn head_at(&self, v: &View) -> Result<Head, LogError> {
        decode_head(v.get(&self.meta, HEAD_KEY)?.as_deref())
    }

    fn decode(&self, seq: Seq, v: &[u8]) -> Result<StoredEvent, LogError> {
        StoredEvent::decode(v).map_err(|e| corrupt(format!("seq {seq}"), e))
    }

    pub fn get(&self, seq: Seq) -> Result<Option<StoredEvent>, LogError> {
        self.get_at(&self.view(), seq)
    }

    pub fn get_at(&self, v: &View, seq: Seq) -> Result<Option<StoredEvent>, LogError> {
        match v.get(&self.events, seq.to_key())? {
            Some(value) => Ok(Some(self.decode(seq, &value)?)),
            None => Ok(None),
        }
    }

    /// `(seq, content digest)` of a stored event_id. The writer's own read:
    /// it is the only writer of the log, so it needs no view.
    pub(crate) fn event_id_entry(
        &self,
        event_id: &EventId,
    ) -> Result<Option<(Seq, Sha256)>, LogError> {
        decode_entry(event_id, self.event_ids.get(event_id.as_bytes())?)
    }

    /// The `target` recorded in the event at `seq` (the writer's own read,
    /// like [`Log::event_id_entry`]): the content digest leaves it out, so a
    /// repeated event id compares it on its own.
    pub(crate) fn target_of(&self, seq: Seq) -> Result<String, LogError> {
        let value = self
            .events
            .get(seq.to_key())?
            .ok_or_else(|| corrupt(format!("seq {seq}"), "indexed by its event_id but missing"))?;
        record::split_stored(&value)
            .and_then(|(_, canonical)| record_target(canonical))
            .ok_or_else(|| corrupt(format!("seq {seq}"), "no target in the record"))
    }

    /// The event stored under `event_id`, for any string a reader asks for
    /// (one that is not a valid id is simply not there).
    pub fn get_by_event_id(&self, event_id: &str) -> Result<Option<StoredEvent>, LogError> {
        let v = self.view();
        match decode_entry(event_id, v.get(&self.event_ids, event_id.as_bytes())?)? {
            Some((seq, _)) => self.get_at(&v, seq),
            None => Ok(None),
        }
    }

    /// Whether a committed event has `event_id` (the latest committed state,
    /// not a view: for a loader that is the store's only writer).
    pub(crate) fn has_event_id(&self, event_id: &str) -> Result<bool, LogError> {
        Ok(self.event_ids.contains_key(event_id.as_bytes())?)
    }

    /// The seq of `event_id` through a view, for any string a reader asks
    /// for (one that is not a valid id is simply not there).
    pub fn seq_of_at(&self, v: &View, event_id: &str) -> Result<Option<Seq>, LogError> {
        Ok(decode_entry(event_id, v.get(&self.event_ids, event_id.as_bytes())?)?.map(|(s, _)| s))
    }

    /// The stored values (`hash ‖ canonical record`) from seq `from` on, in
    /// log order, at most `limit` (the Merkle tree's leaves are read so).
    pub fn stored_range_at(
        &self,
        v: &View,
        from: Seq,
        limit: usize,
    ) -> Result<Vec<(Seq, fjall::UserValue)>, LogError> {
        let mut out = Vec::with_capacity(limit.min(8192));
        for kv in v.range(&self.events, from.to_key()..).take(limit) {
            let (k, value) = kv.into_inner()?;
            let seq = Seq::from_key(&k).ok_or_else(|| corrupt("log_events", "malformed key"))?;
            out.push((seq, value));
        }
        Ok(out)
    }

    /// The record of a stored bundle. The writer's own read (see
    /// `event_id_entry`).
    pub fn bundle(&self, bundle_id: &BundleId) -> Result<Option<BundleRecord>, LogError> {
        match self.bundles.get(bundle_id.as_bytes())? {
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| corrupt(format!("log_bundles/{bundle_id}"), e)),
            None => Ok(None),
        }
    }

    /// Every stored bundle record, in bundle_id order (an export's
    /// `bundles.ndjson`).
    pub fn for_each_bundle_at(
        &self,
        v: &View,
        mut f: impl FnMut(&str, BundleRecord) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        for kv in v.iter(&self.bundles) {
            let (k, value) = kv.into_inner()?;
            let id = String::from_utf8_lossy(&k);
            let rec: BundleRecord = serde_json::from_slice(&value)
                .map_err(|e| corrupt(format!("log_bundles/{id}"), e))?;
            f(&id, rec)?;
        }
        Ok(())
    }

    /// Events with seq > `after`, in log order, at most `limit`.
    pub fn after_at(
        &self,
        v: &View,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, LogError> {
        self.after_page(v, after, limit, usize::MAX)
    }

    /// [`Log::after_at`] for a page a client asked for: it also stops once
    /// the events read hold `max_bytes` of stored records (at least one
    /// event), so a page of large payloads (up to 1 MiB each) is not built
    /// whole in memory, a thousand of them at a time.
    pub fn after_page(
        &self,
        v: &View,
        after: Seq,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredEvent>, LogError> {
        self.decode_bounded(
            v.range(&self.events, Seq(after.0.saturating_add(1)).to_key()..),
            limit,
            max_bytes,
        )
    }

    /// The first `limit` records of `kvs`, decoded, stopping once they hold
    /// `max_bytes` (at least one).
    fn decode_bounded(
        &self,
        kvs: impl Iterator<Item = fjall::Guard>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredEvent>, LogError> {
        let mut out = Vec::with_capacity(limit.min(1024));
        let mut bytes = 0usize;
        for kv in kvs.take(limit) {
            if bytes >= max_bytes {
                break;
            }
            let (k, value) = kv.into_inner()?;
            bytes += value.len();
            out.push(self.decode(Seq::from_key(&k).unwrap_or_default(), &value)?);
        }
        Ok(out)
    }

    /// The last `limit` events, newest first, stopping once they hold
    /// `max_bytes` of stored records (at least one event).
    pub fn recent(&self, limit: usize, max_bytes: usize) -> Result<Vec<StoredEvent>, LogError> {
        self.recent_at(&self.view(), limit, max_bytes)
    }

    pub fn recent_at(
        &self,
        v: &View,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredEvent>, LogError> {
        self.decode_bounded(v.iter(&self.events).rev(), limit, max_bytes)
    }

    /// Seqs of events of `event_type`, newest first, strictly below `before`.
    pub(crate) fn seqs_by_type_desc_at(
        &self,
        v: &View,
        event_type: &str,
        before: Option<Seq>,
    ) -> impl Iterator<Item = Result<Seq, LogError>> + 'static {
        let lo = type_key(event_type, Seq(0));
        let hi = type_key(event_type, before.unwrap_or(Seq(u64::MAX)));
        v.range(&self.by_type, lo..hi).rev().map(|kv| {
            let k = kv.key()?;
            seq_suffix(&k).ok_or_else(|| corrupt("log_by_type", "short key"))
        })
    }

    /// The seqs of several index walks, each in the same order (newest first
    /// or log order), merged into that order; an error of any walk is
    /// returned as soon as it is met.
    pub(crate) fn merge_seqs<I>(
        walks: impl IntoIterator<Item = I>,
        newest_first: bool,
    ) -> impl Iterator<Item = Result<Seq, LogError>>
    where
        I: Iterator<Item = Result<Seq, LogError>>,
    {
        let mut walks: Vec<_> = walks.into_iter().map(Iterator::peekable).collect();
        std::iter::from_fn(move || {
            let mut next: Option<(usize, Seq)> = None;
            for (i, walk) in walks.iter_mut().enumerate() {
                match walk.peek() {
                    Some(Ok(s))
                        if next.is_none_or(|(_, n)| if newest_first { *s > n } else { *s < n }) =>
                    {
                        next = Some((i, *s))
                    }
                    Some(Err(_)) => return walk.next(),
                    _ => {}
                }
            }
            walks[next?.0].next()
        })
    }

    /// Seqs of events of `event_type` after `after` and at most `upto`, in
    /// log order.
    pub(crate) fn seqs_by_type_asc_at(
        &self,
        v: &View,
        event_type: &str,
        after: Seq,
        upto: Seq,
    ) -> impl Iterator<Item = Result<Seq, LogError>> + 'static {
        let lo = type_key(event_type, after.next());
        let hi = type_key(event_type, upto);
        v.range(&self.by_type, lo..=hi).map(|kv| {
            let k = kv.key()?;
            seq_suffix(&k).ok_or_else(|| corrupt("log_by_type", "short key"))
        })
    }

    /// The event types stored that start with `prefix`, in order: one seek
    /// per type (never a walk of their events).
    pub(crate) fn event_types_with_prefix_at(
        &self,
        v: &View,
        prefix: &str,
    ) -> Result<Vec<String>, LogError> {
        let mut types = Vec::new();
        let mut from = prefix.as_bytes().to_vec();
        loop {
            let Some(kv) = v.range(&self.by_type, from.clone()..).next() else {
                return Ok(types);
            };
            let k = kv.key()?;
            let end = k
                .iter()
                .position(|b| *b == 0)
                .ok_or_else(|| corrupt("log_by_type", "a key without its type's end"))?;
            if !k[..end].starts_with(prefix.as_bytes()) {
                return Ok(types);
            }
            let t = std::str::from_utf8(&k[..end])
                .map_err(|e| corrupt("log_by_type", e))?
                .to_string();
            // Past every key of this type: its end byte 0x00, then 0x01.
            from = k[..end].to_vec();
            from.push(1);
            types.push(t);
        }
    }

    /// Seqs of the events whose payload names `attempt_id`, newest first,
    /// strictly below `before` (an attempt's detail reads its newest events
    /// first, within a byte budget, and fetches each by seq).
    pub(crate) fn seqs_by_attempt_desc_at(
        &self,
        v: &View,
        attempt_id: &str,
        before: Option<Seq>,
    ) -> impl Iterator<Item = Result<Seq, LogError>> + 'static {
        seqs_under_desc(
            v,
            &self.by_attempt,
            "log_by_attempt",
            attempt_prefix(attempt_id),
            before,
        )
    }

    /// Seqs of the events of `event_type` (a `topo.*` type or one of
    /// [`FAILURE_TYPES`]) indexed under `target_id` (see `indexed_target`),
    /// newest first, strictly below `before`. Complete once
    /// [`Log::complete_target_index`] has run on this store (the server
    /// does so before it serves).
    pub(crate) fn seqs_by_target_desc_at(
        &self,
        v: &View,
        event_type: &str,
        target_id: &str,
        before: Option<Seq>,
    ) -> impl Iterator<Item = Result<Seq, LogError>> + 'static {
        debug_assert!(is_target_indexed(event_type), "{event_type}");
        seqs_under_desc(
            v,
            &self.by_target,
            "log_by_target",
            target_prefix(event_type, target_id),
            before,
        )
    }

    /// Indexes in `log_by_target` the events appended since the index was
    /// last complete: every event on a store written before the index
    /// existed, and those a build without it appended (a rollback). Read
    /// through the type index, so it costs the indexed types' events only. Run
    /// before anything appends (the server's start); returns how many
    /// events it indexed.
    pub fn complete_target_index(&self) -> Result<u64, LogError> {
        let v = self.view();
        let head = self.head_at(&v)?;
        let upto = match v.get(&self.meta, BY_TARGET_UPTO_KEY)? {
            None => Seq::ZERO,
            Some(b) => Seq::from_key(&b)
                .ok_or_else(|| corrupt("log_meta/by_target_upto", format!("{} bytes", b.len())))?,
        };
        if upto >= head.seq {
            return Ok(0);
        }
        let mut indexed = 0u64;
        let mut batch = self.db.batch();
        let mut pending = 0usize;
        let mut types = self.event_types_with_prefix_at(&v, TOPOLOGY_PREFIX)?;
        types.extend(FAILURE_TYPES.map(str::to_owned));
        for event_type in types {
            for seq in self.seqs_by_type_asc_at(&v, &event_type, upto, head.seq) {
                let seq = seq?;
                let Some(e) = self.get_at(&v, seq)? else {
                    continue;
                };
                if let Some(t) =
                    indexed_target(&event_type, e.payload.get(), || Some(e.target.clone()))
                {
                    batch.insert(
                        &self.by_target,
                        index_key(target_prefix(&event_type, &t), seq),
                        b"",
                    );
                    pending += 1;
                    indexed += 1;
                }
                if pending >= 10_000 {
                    std::mem::replace(&mut batch, self.db.batch()).commit()?;
                    pending = 0;
                }
            }
        }
        batch.insert(&self.meta, BY_TARGET_UPTO_KEY, head.seq.to_key());
        batch.commit()?;
        Ok(indexed)
    }

    /// Re-verifies the whole chain from genesis, up to the head as it was
    /// when the walk started: every stored hash recomputes from its canonical
    /// bytes, every record's `seq` matches its key and follows its
    /// predecessor, every `prev_hash` is the predecessor's hash, and the head
    /// record matches the last entry.
    pub fn verify(&self) -> Result<VerifyReport, LogError> {
        self.verify_from(Seq::ZERO, None, Pace::Full)
    }

    /// [`Log::verify`], telling `progress` how many more records were
    /// verified after each chunk (`leviathan verify`'s progress bar).
    pub fn verify_with_progress(&self, progress: &dyn Fn(u64)) -> Result<VerifyReport, LogError> {
        let pace = Pace::Full;
        self.verify_walk(Seq::ZERO, None, pace.chunk_len(), pace, progress)
    }

    /// [`Log::verify`] of the records after `after`, given that the chain up
    /// to `after` was verified and ends with hash `prev` (`None` for `after` =
    /// 0): the background verifier's incremental pass. The report counts
    /// every verified event, `after`'s included.
    ///
    /// The walk reads the head once, then each chunk of records through a
    /// view of its own (a snapshot held across the whole log would keep every
    /// memtable the writer fills meanwhile alive: ARCHITECTURE invariant 7).
    /// Records are never rewritten, so the records up to the head it started
    /// with are the same in every later view: it verifies up to that head,
    /// and what was appended since is the next pass's. A record stored after
    /// that head while the head has not moved (a head record that lost its
    /// last update) is still reported, as the one-view walk did.
    pub fn verify_from(
        &self,
        after: Seq,
        prev: Option<Sha256>,
        pace: Pace,
    ) -> Result<VerifyReport, LogError> {
        self.verify_walk(after, prev, pace.chunk_len(), pace, &|_| {})
    }

    /// Reads every record up to the head (each table block's checksum is
    /// checked as it is read), without hashing: what a rebuild checks before
    /// it clears the graph, so that a log it cannot read whole leaves the
    /// graph as it was. Returns the records read; the first unreadable one
    /// is `Corrupt`, naming its seq.
    pub fn check_readable(&self) -> Result<u64, LogError> {
        let v = self.view();
        let head = self.head_at(&v)?;
        let mut read = 0u64;
        for kv in v.range(
            &self.events,
            Seq(1).to_key().to_vec()..=head.seq.to_key().to_vec(),
        ) {
            if let Err(e) = kv.into_inner() {
                return Err(corrupt(
                    format!("seq {}", read + 1),
                    format!(
                        "the store cannot read the records from seq {} on: {e} (its files are \
                         damaged: restore the last backup, docs/RUNBOOK.md)",
                        read + 1
                    ),
                ));
            }
            read += 1;
        }
        if read != head.seq.0 {
            return Err(corrupt(
                format!("seq {}", read + 1),
                format!(
                    "the log holds {read} records below its head seq {}",
                    head.seq
                ),
            ));
        }
        Ok(read)
    }

    fn verify_walk(
        &self,
        after: Seq,
        prev: Option<Sha256>,
        chunk_len: usize,
        pace: Pace,
        progress: &dyn Fn(u64),
    ) -> Result<VerifyReport, LogError> {
        self.verify_walk_bounded(after, prev, chunk_len, VERIFY_CHUNK_BYTES, pace, progress)
    }

    /// The walk, each chunk at most `chunk_len` records and stopping once
    /// it holds `chunk_bytes` of stored records (at least one record): a
    /// chunk is held whole while it is hashed, and records may be 1 MiB
    /// each, so a count alone let one chunk hold a whole log of large
    /// payloads (1.1 GB for ~1 GB of them).
    fn verify_walk_bounded(
        &self,
        after: Seq,
        prev: Option<Sha256>,
        chunk_len: usize,
        chunk_bytes: usize,
        pace: Pace,
        progress: &dyn Fn(u64),
    ) -> Result<VerifyReport, LogError> {
        use std::ops::Bound;
        // An unreadable head record is reported below as a head mismatch.
        let read_head = |v: &View| -> Result<Head, LogError> {
            Ok(decode_head(v.get(&self.meta, HEAD_KEY)?.as_deref()).unwrap_or_default())
        };
        let head = read_head(&self.view())?;
        let mut walk = ChainWalk {
            prev,
            expected: after.next(),
            verified: after.0,
        };
        // Records are read in order in chunks; each chunk's per-record work
        // (SHA-256, finding the chain fields) runs on every core, then the
        // chain is walked in order, so the first broken seq and its message
        // are the same as a sequential walk's.
        let mut from = Bound::Included(after.next().to_key().to_vec());
        let mut upto = Bound::Included(head.seq.to_key().to_vec());
        // Once the walk has reached that head with the head unchanged, the
        // view that saw it unchanged reads the rest (normally nothing): a
        // fresh one could hold a batch committed since.
        let mut tail: Option<View> = None;
        let mut tail_checked = false;
        loop {
            // A request's walk stops once its client has gone (crate::cancel).
            crate::cancel::check()?;
            let work = Instant::now();
            let v = tail.take().unwrap_or_else(|| self.view());
            let mut chunk = Vec::with_capacity(chunk_len.min(VERIFY_CHUNK));
            let mut bytes = 0usize;
            // A record the store cannot read (a table block whose checksum
            // fails) breaks the chain there: the records read before it are
            // walked first, then it is reported at the seq that follows them,
            // as a verification failure (what to restore), not an I/O error.
            let mut unreadable = None;
            for kv in v
                .range(&self.events, (from.clone(), upto.clone()))
                .take(chunk_len)
            {
                if bytes >= chunk_bytes {
                    break;
                }
                match kv.into_inner() {
                    Ok(record) => {
                        bytes = bytes.saturating_add(record.1.len());
                        chunk.push(record)
                    }
                    Err(e) => {
                        unreadable = Some(e);
                        break;
                    }
                }
            }
            let unreadable_report = |walk: &ChainWalk, e: fjall::Error| {
                walk.broken(
                    head,
                    walk.expected,
                    format!(
                        "the store cannot read the records from seq {} on: {e} (its files are \
                         damaged: restore the last backup, docs/RUNBOOK.md)",
                        walk.expected
                    ),
                )
            };
            if chunk.is_empty() {
                if let Some(e) = unreadable {
                    return Ok(unreadable_report(&walk, e));
                }
                // Up to the head the walk started with. If the head has not
                // moved since, nothing may follow it (one more walk, with no
                // upper bound, in this view); else the records after it are
                // the writer's since.
                if tail_checked || read_head(&v)? != head {
                    break;
                }
                tail_checked = true;
                upto = Bound::Unbounded;
                tail = Some(v);
                continue;
            }
            if tail_checked {
                tail = Some(v);
            }
            if let Some((k, _)) = chunk.last() {
                from = Bound::Excluded(k.to_vec());
            }
            let checked: Vec<Checked> = match pace {
                Pace::Full => {
                    use rayon::prelude::*;
                    chunk.par_iter().map(|(k, v)| Checked::of(k, v)).collect()
                }
                Pace::Background { .. } => chunk.iter().map(|(k, v)| Checked::of(k, v)).collect(),
            };
            let n = checked.len() as u64;
            for c in checked {
                if let Err((seq, msg)) = walk.step(&c) {
                    return Ok(walk.broken(head, seq, msg));
                }
            }
            if let Some(e) = unreadable {
                return Ok(unreadable_report(&walk, e));
            }
            progress(n);
            let rest = pace.rest_after(work.elapsed());
            if !rest.is_zero() {
                std::thread::sleep(rest);
            }
        }
        if let Err((seq, msg)) = walk.ends_at(&head) {
            return Ok(walk.broken(head, seq, msg));
        }
        Ok(VerifyReport {
            ok: true,
            verified_events: walk.verified,
            head,
            first_broken_seq: None,
            error: None,
        })
    }

    // --- staging: used by the writer only -------------------------------

    /// Stages one event and its indexes.
    pub fn stage_event(
        &self,
        batch: &mut OwnedWriteBatch,
        seq: Seq,
        hash: &Sha256,
        canonical: &[u8],
        draft: &EventDraft,
    ) {
        batch.insert(
            &self.events,
            seq.to_key(),
            record::stored_value(hash, canonical),
        );
        let mut id_val = Vec::with_capacity(40);
        id_val.extend_from_slice(&seq.to_key());
        id_val.extend_from_slice(draft.content_digest.as_bytes());
        batch.insert(&self.event_ids, draft.event_id.as_bytes(), id_val);
        batch.insert(&self.by_type, type_key(&draft.event_type, seq), b"");
        if let Some(a) = &draft.attempt_id {
            batch.insert(&self.by_attempt, index_key(attempt_prefix(a), seq), b"");
        }
        if let Some(t) = indexed_target(&draft.event_type, draft.payload_json(), || {
            record_target(canonical)
        }) {
            let k = index_key(target_prefix(&draft.event_type, &t), seq);
            batch.insert(&self.by_target, k, b"");
        }
    }

    pub(crate) fn stage_bundle(
        &self,
        batch: &mut OwnedWriteBatch,
        bundle_id: &BundleId,
        rec: &BundleRecord,
    ) {
        batch.insert(
            &self.bundles,
            bundle_id.as_bytes(),
            serde_json::to_vec(rec).expect("serializable"),
        );
    }

    pub fn stage_head(&self, batch: &mut OwnedWriteBatch, head: &Head) {
        let mut v = Vec::with_capacity(40);
        v.extend_from_slice(&head.seq.to_key());
        v.extend_from_slice(head.hash.unwrap_or_default().as_bytes());
        batch.insert(&self.meta, HEAD_KEY, v);
        batch.insert(&self.meta, BY_TARGET_UPTO_KEY, head.seq.to_key());
    }

    /// Checks that the head record and the last stored event agree (startup).
    pub fn check_head(&self) -> Result<Head, LogError> {
        let head = self.head()?;
        let last = match self.events.last_key_value() {
            Some(kv) => {
                let (k, v) = kv.into_inner()?;
                let (h, _) =
                    record::split_stored(&v).ok_or_else(|| corrupt("last event", "truncated"))?;
                Some((Seq::from_key(&k).unwrap_or_default(), h))
            }
            None => None,
        };
        match last {
            None if head.seq == Seq(0) => Ok(head),
            Some((s, h)) if s == head.seq && Some(h) == head.hash => Ok(head),
            other => Err(corrupt(
                "head",
                format!("head record {head:?} does not match the last stored event {other:?}"),
            )),
        }
    }
}

/// Records per chunk of [`Log::verify`].
const VERIFY_CHUNK: usize = 4096;

/// Bytes of stored records per chunk of a verification walk (at least one
/// record), whatever its pace: a chunk is held in memory whole while it is
/// hashed, and a record may hold a 1 MiB payload.
const VERIFY_CHUNK_BYTES: usize = 8 << 20;

/// Records per chunk of a [`Pace::Background`] walk: about a fifth of a
/// millisecond of one core's work between pauses, so a request waits at most
/// that long for the core the walk holds. At 10M events, 512 left read p99s
/// at 0.9–1.8 ms, 256 at 0.7–2.1, 128 at 0.5–1.6 (the pass then takes ~46 s
/// and 21 s of CPU instead of 31 s and 15 s; docs/BENCHMARKS.md, session 15).
const BACKGROUND_VERIFY_CHUNK: usize = 128;

/// How a verification walk shares the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    /// Each chunk's hashing on every core, no pauses: `leviathan verify`
    /// (offline, as fast as the machine goes) and `GET /v1/log/verify` (a client
    /// waits for it).
    Full,
    /// One thread, resting `rest` times as long as each chunk's work took
    /// before the next: the server's background verifier, whose first pass
    /// after a start-up walks the whole log while requests are served (on
    /// every core it took read p99s from ~1 to 3–5 ms at 10M events). Its
    /// share of one core is 1 / (1 + `rest`).
    Background { rest: u32 },
}

impl Pace {
    /// Records read and hashed between pauses.
    fn chunk_len(self) -> usize {
        match self {
            Pace::Full => VERIFY_CHUNK,
            Pace::Background { .. } => BACKGROUND_VERIFY_CHUNK,
        }
    }

    /// The pause after a chunk whose work took `work`.
    pub fn rest_after(self, work: Duration) -> Duration {
        match self {
            Pace::Full => Duration::ZERO,
            Pace::Background { rest } => work.saturating_mul(rest),
        }
    }
}

/// The in-order part of [`Log::verify`]: where the chain has got to.
struct ChainWalk {
    /// The hash of the last verified record (`None` before the first).
    prev: Option<Sha256>,
    /// The seq the next record must have.
    expected: Seq,
    verified: u64,
}

impl Default for ChainWalk {
    fn default() -> Self {
        ChainWalk {
            prev: None,
            expected: Seq(1),
            verified: 0,
        }
    }
}

impl ChainWalk {
    /// Checks the next record in key order against the chain so far and
    /// moves on; the error is the first broken seq and why.
    fn step(&mut self, c: &Checked) -> Result<(), (Seq, String)> {
        let expected = self.expected;
        let Some(seq) = c.seq else {
            return Err((expected, "malformed key".into()));
        };
        if seq != expected {
            return Err((
                expected,
                format!("seq {expected} is missing (next stored is {seq})"),
            ));
        }
        let Some((stored_hash, actual)) = c.hashes else {
            return Err((seq, "stored value is truncated".into()));
        };
        if actual != stored_hash {
            return Err((
                seq,
                format!("hash mismatch: stored {stored_hash}, recomputed {actual}"),
            ));
        }
        match c.chain {
            Some((p, s)) if s == seq && p == self.prev => {}
            Some((_, s)) if s != seq => {
                return Err((
                    seq,
                    format!("record says seq {s} but is stored at seq {seq}"),
                ));
            }
            Some((p, _)) => {
                return Err((
                    seq,
                    format!(
                        "chain broken: prev_hash is {} but the previous event's hash is {}",
                        p.map_or("null".into(), |h| h.to_hex()),
                        self.prev.map_or("null (genesis)".into(), |h| h.to_hex())
                    ),
                ));
            }
            None => return Err((seq, "record is not in canonical form".into())),
        }
        self.prev = Some(stored_hash);
        self.verified += 1;
        self.expected = seq.next();
        Ok(())
    }

    /// After the last record: the head record must name it.
    fn ends_at(&self, head: &Head) -> Result<(), (Seq, String)> {
        if self.verified == head.seq.0 && self.prev == head.hash {
            return Ok(());
        }
        Err((
            Seq(self.verified + 1),
            format!(
                "head record says seq {} hash {}, the log ends at seq {}",
                head.seq,
                head.hash.map_or("null".into(), |h| h.to_hex()),
                self.verified
            ),
        ))
    }

    fn broken(&self, head: Head, seq: Seq, msg: String) -> VerifyReport {
        VerifyReport {
            ok: false,
            verified_events: self.verified,
            head,
            first_broken_seq: Some(seq),
            error: Some(msg),
        }
    }
}

/// What [`Log::verify`] needs of one stored record, computed independently
/// of the others (so in parallel).
struct Checked {
    seq: Option<Seq>,
    /// (stored hash, SHA-256 of the canonical bytes), if the value is whole.
    hashes: Option<(Sha256, Sha256)>,
    chain: Option<(Option<Sha256>, Seq)>,
}

impl Checked {
    fn of(key: &[u8], value: &[u8]) -> Checked {
        let split = record::split_stored(value);
        Checked {
            seq: Seq::from_key(key),
            hashes: split.map(|(stored, canonical)| (stored, Sha256::of(canonical))),
            chain: split.and_then(|(_, canonical)| record::chain_fields(canonical)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::Limits;
    use serde_json::json;

    /// Appends `n` events after `head` the way the writer stages them (the
    /// events, the head, one batch) and returns the new head.
    fn append(db: &Database, log: &Log, head: Head, tag: &str, n: u64) -> Head {
        let payloads = (0..n)
            .map(|i| ("custom.note", json!({"attempt_id": format!("{tag}-a{i}")})))
            .collect();
        append_events(db, log, head, tag, payloads)
    }

    /// Appends one event of each type and payload, as [`append`] does.
    fn append_events(
        db: &Database,
        log: &Log,
        head: Head,
        tag: &str,
        events: Vec<(&str, serde_json::Value)>,
    ) -> Head {
        let evs: Vec<_> = events
            .into_iter()
            .enumerate()
            .map(|(i, (event_type, payload))| {
                json!({"event_id": format!("{tag}-{i}"), "event_type": event_type,
                       "timestamp": "2026-01-24T10:00:00Z", "payload": payload})
            })
            .collect();
        let body = serde_json::to_vec(&json!({"target": "t", "bundle_id": tag, "events": evs}))
            .expect("json");
        let bundle = crate::bundle::parse(&body, &Limits::default()).expect("valid bundle");
        let mut batch = db.batch();
        let mut head = head;
        for d in &bundle.events {
            let seq = head.seq.next();
            let canonical = d.encode(seq, head.hash.as_ref());
            let hash = Sha256::of_parts(&[&canonical]);
            log.stage_event(&mut batch, seq, &hash, &canonical, d);
            head = Head {
                seq,
                hash: Some(hash),
            };
        }
        log.stage_head(&mut batch, &head);
        batch.commit().expect("commit");
        head
    }

    /// Ids too long to be keyed as themselves (they stopped the writer:
    /// fjall refuses keys over 65,535 bytes) are keyed by their digest, and
    /// every id is found again, each with its own events only.
    #[test]
    fn ids_of_every_length_are_indexed_and_found() {
        let (_dir, db, log) = store();
        let lengths = [1, 300, MAX_ID_IN_KEY, MAX_ID_IN_KEY + 1, 70_000, 200_000];
        let ids: Vec<String> = lengths.iter().map(|n| "a".repeat(*n)).collect();
        let payloads = ids
            .iter()
            .chain(ids.iter())
            .map(|id| ("custom.note", json!({ "attempt_id": id })))
            .collect();
        let head = append_events(&db, &log, Head::default(), "long", payloads);
        assert_eq!(head.seq, Seq(12));
        let v = log.view();
        for (i, id) in ids.iter().enumerate() {
            let first = Seq(i as u64 + 1);
            let second = Seq(i as u64 + 1 + ids.len() as u64);
            let found: Vec<Seq> = log
                .seqs_by_attempt_desc_at(&v, id, None)
                .collect::<Result<_, _>>()
                .expect("read");
            assert_eq!(found, vec![second, first], "an id of {} bytes", id.len());
            let before: Vec<Seq> = log
                .seqs_by_attempt_desc_at(&v, id, Some(second))
                .collect::<Result<_, _>>()
                .expect("read");
            assert_eq!(before, vec![first], "an id of {} bytes", id.len());
        }
        let unknown = "a".repeat(MAX_ID_IN_KEY + 2);
        assert_eq!(log.seqs_by_attempt_desc_at(&v, &unknown, None).count(), 0);
    }

    fn by_target(log: &Log, event_type: &str, target: &str) -> Vec<Seq> {
        log.seqs_by_target_desc_at(&log.view(), event_type, target, None)
            .collect::<Result<_, _>>()
            .expect("read")
    }

    /// Targets of every length are indexed and found, under the longest
    /// event type too (a target of 65,499 to 65,525 bytes made a key over
    /// fjall's limit, which stopped the writer, and start-up on a store
    /// that held one).
    #[test]
    fn targets_of_every_length_are_indexed_and_found() {
        let (_dir, db, log) = store();
        // The longest event type accepted (128 bytes).
        let long_type = format!("topo.{}", "d".repeat(128 - "topo.".len()));
        let lengths = [
            1,
            MAX_TARGET_IN_KEY,
            MAX_TARGET_IN_KEY + 1,
            65_498,
            65_499,
            65_514,
            MAX_ID_IN_KEY,
            MAX_ID_IN_KEY + 1,
            100_000,
        ];
        let targets: Vec<String> = lengths.iter().map(|n| "t".repeat(*n)).collect();
        let mut events = Vec::new();
        for t in &targets {
            events.push(("topo.dependency.discovered", json!({ "target_id": t })));
            events.push((long_type.as_str(), json!({ "target_id": t })));
            events.push(("task.failed", json!({ "target": t })));
        }
        let head = append_events(&db, &log, Head::default(), "len", events);
        assert_eq!(head.seq, Seq(3 * lengths.len() as u64));
        for (i, t) in targets.iter().enumerate() {
            let at = |j: u64| Seq(3 * i as u64 + j + 1);
            let n = t.len();
            assert_eq!(
                by_target(&log, "topo.dependency.discovered", t),
                [at(0)],
                "{n}"
            );
            assert_eq!(by_target(&log, &long_type, t), [at(1)], "{n}");
            assert_eq!(by_target(&log, "task.failed", t), [at(2)], "{n}");
        }
    }

    /// Topology events are indexed by type and `payload.target_id` (a
    /// string), each target's apart from the others'; other events are not.
    #[test]
    fn topology_events_are_indexed_by_type_and_target() {
        let (_dir, db, log) = store();
        let long = "t".repeat(MAX_ID_IN_KEY + 1);
        let head = append_events(
            &db,
            &log,
            Head::default(),
            "topo",
            vec![
                ("topo.indexed", json!({"target_id": "radix"})),
                ("topo.indexed", json!({"target_id": "other"})),
                (
                    "topo.area.discovered",
                    json!({"target_id": "radix", "name": "a"}),
                ),
                ("topo.indexed", json!({"target_id": 7})),
                ("custom.note", json!({"target_id": "radix"})),
                ("topo.indexed", json!({"target_id": "radix"})),
                ("topo.indexed", json!({"target_id": &long})),
                ("topo.indexed", json!({"target": "radix"})),
                ("topo.indexed", json!({"target_id": "radix\u{0}x"})),
            ],
        );
        assert_eq!(head.seq, Seq(9));
        assert_eq!(by_target(&log, "topo.indexed", "radix"), [Seq(6), Seq(1)]);
        assert_eq!(by_target(&log, "topo.indexed", "other"), [Seq(2)]);
        assert_eq!(by_target(&log, "topo.area.discovered", "radix"), [Seq(3)]);
        assert_eq!(by_target(&log, "topo.indexed", &long), [Seq(7)]);
        assert_eq!(by_target(&log, "topo.indexed", "radix\u{0}x"), [Seq(9)]);
        assert!(by_target(&log, "topo.indexed", "7").is_empty());
        assert!(by_target(&log, "topo.indexed", "radi").is_empty());
        let below: Vec<Seq> = log
            .seqs_by_target_desc_at(&log.view(), "topo.indexed", "radix", Some(Seq(6)))
            .collect::<Result<_, _>>()
            .expect("read");
        assert_eq!(below, [Seq(1)]);
        // Appending keeps the index complete: nothing to do at the next start.
        assert_eq!(log.complete_target_index().expect("complete"), 0);
    }

    /// A store whose index lags its head (written before the index existed,
    /// or appended to by a build without it) has the missing events indexed
    /// at the next start, and only those.
    #[test]
    fn a_lagging_target_index_is_completed_from_where_it_stopped() {
        let (_dir, db, log) = store();
        let topo = |n: u64| {
            (0..n)
                .map(|i| ("topo.indexed", json!({"target_id": format!("t{}", i % 2)})))
                .collect()
        };
        let first = append_events(&db, &log, Head::default(), "one", topo(4));
        // As a build without the index would leave it: no entries, no mark.
        let forget = |from: Seq| {
            let mut batch = db.batch();
            for kv in log.by_target.iter() {
                let k = kv.key().expect("key");
                if seq_suffix(&k).expect("seq") >= from {
                    batch.remove(&log.by_target, k);
                }
            }
            batch.commit().expect("commit");
        };
        forget(Seq(1));
        log.meta
            .remove(BY_TARGET_UPTO_KEY)
            .expect("remove the mark");
        assert!(by_target(&log, "topo.indexed", "t0").is_empty());
        assert_eq!(log.complete_target_index().expect("complete"), 4);
        assert_eq!(by_target(&log, "topo.indexed", "t0"), [Seq(3), Seq(1)]);
        assert_eq!(log.complete_target_index().expect("again"), 0);
        // A rollback appends 6 more without indexing them; the mark stays.
        let more = append_events(&db, &log, first, "two", topo(6));
        forget(first.seq.next());
        log.meta
            .insert(BY_TARGET_UPTO_KEY, first.seq.to_key())
            .expect("the mark as the rollback left it");
        assert_eq!(more.seq, Seq(10));
        assert_eq!(by_target(&log, "topo.indexed", "t1"), [Seq(4), Seq(2)]);
        assert_eq!(log.complete_target_index().expect("complete"), 6);
        assert_eq!(
            by_target(&log, "topo.indexed", "t1"),
            [Seq(10), Seq(8), Seq(6), Seq(4), Seq(2)]
        );
        assert_eq!(log.complete_target_index().expect("again"), 0);
        // Failures too, under the target they report (else the bundle's).
        let failed = vec![
            ("attempt.failed", json!({"target_id": "t1"})),
            ("tests.failed", json!({})),
            ("custom.failed", json!({"target_id": "t1"})),
        ];
        let last = append_events(&db, &log, more, "three", failed);
        forget(more.seq.next());
        log.meta
            .insert(BY_TARGET_UPTO_KEY, more.seq.to_key())
            .expect("the mark as the rollback left it");
        assert!(by_target(&log, "attempt.failed", "t1").is_empty());
        assert_eq!(log.complete_target_index().expect("complete"), 2);
        assert_eq!(by_target(&log, "attempt.failed", "t1"), [Seq(11)]);
        assert_eq!(by_target(&log, "tests.failed", "t"), [Seq(12)]);
        assert_eq!(last.seq, Seq(13));
    }

    fn store() -> (tempfile::TempDir, Database, Log) {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = fjall::Database::builder(dir.path()).open().expect("db");
        let log = Log::open(&db).expect("log");
        (dir, db, log)
    }

    /// The walk reads each chunk through a view of its own: events appended
    /// between its chunks (as the writer does while the background verifier
    /// runs) are not walked, and the pass verifies up to the head it started
    /// with; the next pass takes the rest from there.
    #[test]
    fn a_walk_verifies_up_to_the_head_it_started_with_while_the_log_grows() {
        let (_dir, db, log) = store();
        let start = append(&db, &log, Head::default(), "a", 10);
        let grown = std::cell::Cell::new(start);
        let chunks = std::cell::Cell::new(0);
        let report = log
            .verify_walk(Seq::ZERO, None, 3, Pace::Full, &|n| {
                // Chunks of 3, 3, 3, 1 of the 10 events there at the start,
                // with 5 events appended after each.
                assert!(n == 3 || n == 1, "{n}");
                chunks.set(chunks.get() + 1);
                grown.set(append(
                    &db,
                    &log,
                    grown.get(),
                    &format!("b{}", chunks.get()),
                    5,
                ));
            })
            .expect("walk");
        assert_eq!(chunks.get(), 4);
        assert!(report.ok, "{report:?}");
        assert_eq!(report.verified_events, 10);
        assert_eq!(report.head, start);
        // The next (incremental) pass verifies the 20 appended meanwhile.
        let next = log
            .verify_from(start.seq, start.hash, Pace::Background { rest: 1 })
            .expect("incremental pass");
        assert!(next.ok, "{next:?}");
        assert_eq!(next.verified_events, 30);
        assert_eq!(next.head, grown.get());
        assert_eq!(log.verify().expect("whole walk").verified_events, 30);
    }

    /// A chunk also stops once it holds its bytes of records (at least
    /// one): records of 1 MiB payloads made a chunk of 4096 hold a whole log.
    #[test]
    fn a_walk_chunks_by_bytes_too() {
        let (_dir, db, log) = store();
        let head = append(&db, &log, Head::default(), "a", 10);
        let record = log
            .stored_range_at(&log.view(), Seq(1), 1)
            .expect("read")
            .pop()
            .expect("a record")
            .1
            .len();
        for (bytes, chunks) in [
            (1, vec![1; 10]),
            (2 * record, vec![2; 5]),
            (3 * record - 1, vec![3, 3, 3, 1]),
            (VERIFY_CHUNK_BYTES, vec![10]),
        ] {
            let seen = std::cell::RefCell::new(Vec::new());
            let report = log
                .verify_walk_bounded(Seq::ZERO, None, VERIFY_CHUNK, bytes, Pace::Full, &|n| {
                    seen.borrow_mut().push(n)
                })
                .expect("walk");
            assert!(report.ok, "{report:?}");
            assert_eq!(report.verified_events, 10);
            assert_eq!(report.head, head);
            assert_eq!(seen.into_inner(), chunks, "{bytes} bytes a chunk");
        }
    }

    /// The background pace rests `rest` times each chunk's work; the full
    /// pace never rests.
    #[test]
    fn the_background_pace_rests_in_proportion_to_the_work() {
        let work = std::time::Duration::from_micros(1500);
        assert_eq!(Pace::Full.rest_after(work), std::time::Duration::ZERO);
        assert_eq!(Pace::Background { rest: 1 }.rest_after(work), work);
        assert_eq!(
            Pace::Background { rest: 3 }.rest_after(work),
            std::time::Duration::from_micros(4500)
        );
    }

    /// A record stored after the head while the head has not moved (the head
    /// record lost its last update) is still found, in chunks as in one.
    #[test]
    fn a_record_after_an_unmoved_head_is_still_reported() {
        let (_dir, db, log) = store();
        let head = append(&db, &log, Head::default(), "a", 7);
        let stale = Head {
            seq: Seq(6),
            hash: log.get(Seq(6)).expect("read").map(|e| e.hash),
        };
        let mut batch = db.batch();
        log.stage_head(&mut batch, &stale);
        batch.commit().expect("commit");
        for (chunk, pace) in [
            (2, Pace::Full),
            (VERIFY_CHUNK, Pace::Full),
            (2, Pace::Background { rest: 1 }),
            (BACKGROUND_VERIFY_CHUNK, Pace::Background { rest: 1 }),
        ] {
            let r = log
                .verify_walk(Seq::ZERO, None, chunk, pace, &|_| {})
                .expect("walk");
            assert!(!r.ok);
            assert_eq!(r.verified_events, 7, "chunk {chunk}, {pace:?}");
            assert_eq!(r.first_broken_seq, Some(Seq(8)));
            assert_eq!(r.head, stale);
            let error = r.error.expect("an error");
            assert!(error.contains("head record says seq 6"), "{error}");
        }
        assert_ne!(head, stale);
    }
}
