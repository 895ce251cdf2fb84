//! The catalog of generations, in two keyspaces:
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `generations` | `live` | the live generation's id, `u64` big-endian (absent: 0) |
//! | `generations` | `g` ‖ id (`u64` big-endian) | a [`GenerationRecord`] (compact JSON) |
//! | `projector_components` | SHA-256 (32 bytes) | the component's bytes |
//!
//! A generation's graph lives in its own keyspaces (`graph_*` for generation
//! 0, `gen<N>_graph_*` for N; `graph::store`). The component bytes let a
//! server started with a new projector set keep running the live
//! generation's set while the new one is built, even when its files are gone.

use crate::digest::Sha256;
use crate::graph::store::{GENERATIONS_KEYSPACE, LIVE_KEY};
use crate::projection::{Limits, Mode, OnError, ProjectorSet, ProjectorSource};
use anyhow::Context;
use fjall::{Database, Keyspace, OwnedWriteBatch};
use serde::{Deserialize, Serialize};

const RECORD_TAG: u8 = b'g';
/// The highest generation id ever handed out ([`Catalog::next_id`]).
const HIGHEST_ID_KEY: &[u8] = b"highest_id";

/// Where a generation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Serves reads and takes ingest.
    Live,
    /// Being built from the log behind the live one.
    Building,
    /// Built up to the head with more recorded errors than the manifest's
    /// `max_build_errors`: it does not go live; its errors are served.
    Pending,
    /// A previous live generation kept for a fast roll back
    /// (`keep_previous = true`); it no longer follows the log.
    Kept,
}

/// One projector of a generation's set, as the catalog keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectorRecord {
    pub name: String,
    pub version: String,
    pub digest: Sha256,
    pub fuel: u64,
    pub memory_bytes: u64,
    pub table_elements: u64,
    pub instances: u64,
    pub output_bytes: u64,
    pub on_error: String,
    /// `inline` or `async` (absent in records written before modes: inline).
    #[serde(default, skip_serializing_if = "is_inline")]
    pub mode: Mode,
}

fn is_inline(m: &Mode) -> bool {
    *m == Mode::Inline
}

/// One generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationRecord {
    pub id: u64,
    pub fingerprint: Sha256,
    pub status: Status,
    pub projectors: Vec<ProjectorRecord>,
    /// RFC 3339, when the generation was first created.
    pub created_at: String,
    /// RFC 3339, when it stopped being live and was kept (`Kept` only;
    /// absent in records written before session 36).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_at: Option<String>,
    /// Errors the generation had recorded when a roll back to it began (a
    /// kept generation: those its set recorded under `on_error = "record"`
    /// while live, accepted then): its build does not count them against
    /// `max_build_errors`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub accepted_errors: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl GenerationRecord {
    /// A record for `set` (its fingerprint `fingerprint`).
    pub fn for_set(id: u64, set: &ProjectorSet, fingerprint: Sha256, status: Status) -> Self {
        GenerationRecord {
            id,
            fingerprint,
            status,
            projectors: set
                .projectors()
                .iter()
                .map(|p| ProjectorRecord {
                    name: p.name.clone(),
                    version: p.version.clone(),
                    digest: p.digest,
                    fuel: p.limits.fuel,
                    memory_bytes: p.limits.memory_bytes as u64,
                    table_elements: p.limits.table_elements as u64,
                    instances: p.limits.instances as u64,
                    output_bytes: p.limits.output_bytes as u64,
                    on_error: p.on_error.as_str().to_owned(),
                    mode: p.mode,
                })
                .collect(),
            created_at: now_rfc3339(),
            kept_at: None,
            accepted_errors: 0,
        }
    }

    /// This (live) generation, as kept for a roll back from now on.
    pub fn into_kept(mut self) -> Self {
        self.status = Status::Kept;
        self.kept_at = Some(now_rfc3339());
        self
    }

    /// `name@version` of each projector, in set order.
    pub fn labels(&self) -> Vec<String> {
        self.projectors
            .iter()
            .map(|p| format!("{}@{}", p.name, p.version))
            .collect()
    }
}

/// The generation a graph keyspace belongs to, by its name: `graph_*` is
/// generation 0's, `gen<N>_graph_*` generation N's; `None` for any other.
pub(crate) fn generation_of_keyspace(name: &str) -> Option<u64> {
    if name.starts_with("graph_") {
        return Some(0);
    }
    name.strip_prefix("gen")
        .and_then(|rest| rest.split_once("_graph_"))
        .and_then(|(n, _)| n.parse::<u64>().ok())
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The catalog's keyspaces. Cheap to clone.
#[derive(Clone)]
pub struct Catalog {
    db: Database,
    generations: Keyspace,
    components: Keyspace,
}

fn record_key(id: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = RECORD_TAG;
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

impl Catalog {
    pub fn open(db: &Database) -> anyhow::Result<Catalog> {
        Ok(Catalog {
            db: db.clone(),
            generations: crate::storage::open_keyspace(db, GENERATIONS_KEYSPACE)
                .context("opening the generations catalog")?,
            components: crate::storage::open_keyspace(db, "projector_components")
                .context("opening the projector components")?,
        })
    }

    /// The live generation's id (0 until a switch).
    pub fn live_id(&self) -> anyhow::Result<u64> {
        Ok(crate::graph::store::live_generation(&self.db)?)
    }

    pub fn get(&self, id: u64) -> anyhow::Result<Option<GenerationRecord>> {
        self.generations
            .get(record_key(id))?
            .map(|v| {
                serde_json::from_slice(&v)
                    .with_context(|| format!("generation {id}: its catalog record is corrupt"))
            })
            .transpose()
    }

    /// Every generation, by id.
    pub fn list(&self) -> anyhow::Result<Vec<GenerationRecord>> {
        let mut out = Vec::new();
        for kv in self.generations.prefix([RECORD_TAG]) {
            let v = kv.value()?;
            out.push(
                serde_json::from_slice(&v).context("a generation's catalog record is corrupt")?,
            );
        }
        Ok(out)
    }

    /// The kept generations, the most recently kept first.
    pub fn kept(&self) -> anyhow::Result<Vec<GenerationRecord>> {
        let mut kept: Vec<GenerationRecord> = self
            .list()?
            .into_iter()
            .filter(|r| r.status == Status::Kept)
            .collect();
        // Records from before `kept_at` sort last, the newer id first.
        kept.sort_by(|a, b| b.kept_at.cmp(&a.kept_at).then(b.id.cmp(&a.id)));
        Ok(kept)
    }

    /// The kept generations a switch from `old_id` to `new_id` drops: every
    /// kept one but those two (a switch keeps at most the one it leaves).
    pub fn dropped_by_switch(&self, old_id: u64, new_id: u64) -> anyhow::Result<Vec<u64>> {
        Ok(self
            .kept()?
            .into_iter()
            .map(|r| r.id)
            .filter(|&id| id != old_id && id != new_id)
            .collect())
    }

    /// Stages what a switch from generation `old` (its record, if any) to
    /// `new` does to the catalog: `new` live; `old` kept when `keep`, else
    /// removed; the records of `dropped` ([`Catalog::dropped_by_switch`])
    /// removed. The caller deletes `dropped`'s graphs once it is committed.
    pub fn stage_switch(
        &self,
        batch: &mut OwnedWriteBatch,
        old: (u64, Option<GenerationRecord>),
        new: &GenerationRecord,
        keep: bool,
        dropped: &[u64],
    ) {
        debug_assert_eq!(new.status, Status::Live);
        let (old_id, old_record) = old;
        self.stage_live(batch, new.id);
        self.stage_record(batch, new);
        match old_record {
            Some(r) if keep => self.stage_record(batch, &r.into_kept()),
            _ => self.stage_remove(batch, old_id),
        }
        for &id in dropped {
            self.stage_remove(batch, id);
        }
    }

    /// Deletes the graphs of generations the catalog no longer names
    /// (logged; a failure is logged too, and the next start's sweep
    /// deletes what is left).
    pub fn delete_graphs(&self, ids: &[u64]) {
        for &id in ids {
            let deleted =
                crate::graph::GraphStore::open_generation(&self.db, id).and_then(|g| g.delete());
            match deleted {
                Ok(()) => tracing::info!(
                    generation = id,
                    "deleted a generation kept for roll back: a switch keeps only the one it leaves"
                ),
                Err(e) => tracing::warn!(generation = id, "deleting a kept generation failed: {e}"),
            }
        }
    }

    /// An id no generation has had, recorded as handed out. An id was
    /// reused once its generation was deleted (rolled back from), and the
    /// new generation then shared the old one's keyspace names with its
    /// deletion (a store that then refused to start: "the graph is
    /// projected up to seq 0"). So it is above every id ever handed out
    /// (a mark kept here since), every id the catalog names, and every id
    /// a keyspace of the store is named for (stores from before the mark).
    pub fn next_id(&self) -> anyhow::Result<u64> {
        let live = self.live_id()?;
        let named = self.list()?.iter().map(|r| r.id).max().unwrap_or(0);
        let handed_out = match self.generations.get(HIGHEST_ID_KEY)? {
            Some(v) => u64::from_be_bytes(
                v.as_ref()
                    .try_into()
                    .context("the catalog's highest generation id is corrupt")?,
            ),
            None => 0,
        };
        let in_keyspaces = self
            .db
            .list_keyspace_names()
            .iter()
            .filter_map(|name| generation_of_keyspace(name.as_ref()))
            .max()
            .unwrap_or(0);
        let id = live.max(named).max(handed_out).max(in_keyspaces) + 1;
        self.generations
            .insert(HIGHEST_ID_KEY, id.to_be_bytes())
            .context("recording the generation id handed out")?;
        Ok(id)
    }

    pub fn stage_record(&self, batch: &mut OwnedWriteBatch, record: &GenerationRecord) {
        let bytes = serde_json::to_vec(record).expect("a generation record always serializes");
        batch.insert(&self.generations, record_key(record.id), bytes);
    }

    pub fn stage_live(&self, batch: &mut OwnedWriteBatch, id: u64) {
        batch.insert(&self.generations, LIVE_KEY, id.to_be_bytes().to_vec());
    }

    pub fn stage_remove(&self, batch: &mut OwnedWriteBatch, id: u64) {
        batch.remove(&self.generations, record_key(id));
    }

    /// Writes `record` now (its own small batch).
    pub fn put(&self, record: &GenerationRecord) -> anyhow::Result<()> {
        let mut batch = self.db.batch();
        self.stage_record(&mut batch, record);
        batch.commit()?;
        Ok(())
    }

    /// The graph of generation `id`, if the catalog names it (a build, a
    /// pending or a kept generation; the live one too).
    pub fn graph(&self, id: u64) -> anyhow::Result<Option<crate::graph::GraphStore>> {
        if self.get(id)?.is_none() {
            return Ok(None);
        }
        Ok(Some(crate::graph::GraphStore::open_generation(
            &self.db, id,
        )?))
    }

    /// After an offline rebuild of generation `id` with `set`: records that
    /// set (and keeps its components) as the generation's.
    pub fn record_rebuilt(
        &self,
        id: u64,
        set: &ProjectorSet,
        fingerprint: Sha256,
        sources: &[ProjectorSource],
    ) -> anyhow::Result<()> {
        self.store_components(sources)?;
        self.put(&GenerationRecord::for_set(
            id,
            set,
            fingerprint,
            Status::Live,
        ))
    }

    /// Keeps the component bytes of `sources` (those not kept already).
    pub fn store_components(&self, sources: &[ProjectorSource]) -> anyhow::Result<()> {
        let mut batch = self.db.batch();
        let mut any = false;
        for s in sources {
            let digest = Sha256::of(&s.bytes);
            if !self.components.contains_key(digest.as_bytes())? {
                batch.insert(
                    &self.components,
                    digest.as_bytes().to_vec(),
                    s.bytes.clone(),
                );
                any = true;
            }
        }
        if any {
            batch.commit()?;
        }
        Ok(())
    }

    /// The sources to load `record`'s projector set again, from the kept
    /// component bytes; `None` when a component is not kept (a store written
    /// before generations existed).
    pub fn sources(
        &self,
        record: &GenerationRecord,
    ) -> anyhow::Result<Option<Vec<ProjectorSource>>> {
        let mut out = Vec::with_capacity(record.projectors.len());
        for p in &record.projectors {
            let Some(bytes) = self.components.get(p.digest.as_bytes())? else {
                return Ok(None);
            };
            let on_error = match p.on_error.as_str() {
                "record" => OnError::Record,
                _ => OnError::Reject,
            };
            out.push(ProjectorSource {
                bytes: bytes.to_vec(),
                limits: Limits {
                    fuel: p.fuel,
                    memory_bytes: p.memory_bytes as usize,
                    table_elements: p.table_elements as usize,
                    instances: p.instances as usize,
                    output_bytes: p.output_bytes as usize,
                },
                on_error,
                mode: p.mode,
            });
        }
        Ok(Some(out))
    }
}
