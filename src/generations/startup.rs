//! What a starting server does with generations: record the configured set
//! (and its components), and when it differs from the live generation's,
//! either plan a background build (the live set keeps running, loaded from
//! the components the catalog kept) or, with `LEVIATHAN_REBUILD=block`,
//! build the new generation before serving. Leftovers (a build for a set no
//! longer configured, the keyspaces of a generation retired by a switch that
//! crashed before deleting them) are deleted here.

use super::build::{build_until, Builds, Plan};
use super::catalog::{Catalog, GenerationRecord, Status};
use super::live::Live;
use crate::digest::Sha256;
use crate::graph::GraphStore;
use crate::log::Head;
use crate::projection::{ProjectorSet, ProjectorSource};
use crate::storage::Store;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// What a server does when its projector set differs from the live
/// generation's (`LEVIATHAN_REBUILD`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum RebuildMode {
    /// Serve the live generation while the new one is built, then switch.
    #[default]
    Background,
    /// Build the new generation before serving (the server is not ready
    /// until then).
    Block,
}

/// The outcome of [`prepare`].
pub struct Prepared {
    pub catalog: Catalog,
    /// The generation to serve now.
    pub live: Live,
    /// A generation to build in the background, if the configured set is not
    /// the live one.
    pub build: Option<Plan>,
}

/// The configured projector set, loaded.
pub struct Configured<'a> {
    pub set: Arc<ProjectorSet>,
    pub fingerprint: Sha256,
    pub sources: &'a [ProjectorSource],
    pub settings: &'a crate::manifest::Settings,
    /// `LEVIATHAN_BUILD_RATE` (0: unlimited).
    pub build_rate: u64,
}

/// Decides which generation serves and what to build (see the module doc).
pub fn prepare(
    store: &Store,
    head: Head,
    configured: Configured<'_>,
    mode: RebuildMode,
    cache_dir: &Path,
    builds: &Builds,
) -> anyhow::Result<Prepared> {
    let catalog = Catalog::open(&store.db)?;
    catalog.store_components(configured.sources)?;
    let live_id = catalog.live_id()?;
    let graph = store.graph.clone();
    graph.ensure_complete()?;
    let (graph_seq, _) = graph.state()?;
    let built_by = graph.projector_set()?;
    let fresh = head.seq.0 == 0 && graph_seq.0 == 0;
    if fresh || built_by == Some(configured.fingerprint) {
        if graph_seq != head.seq {
            anyhow::bail!(
                "the graph is projected up to seq {graph_seq} but the log ends at seq {}; run \
                 `leviathan rebuild`",
                head.seq
            );
        }
        let record = GenerationRecord::for_set(
            live_id,
            &configured.set,
            configured.fingerprint,
            Status::Live,
        );
        if catalog.get(live_id)?.map(|r| r.fingerprint) != Some(configured.fingerprint) {
            catalog.put(&record)?;
        }
        sweep(
            store,
            &catalog,
            live_id,
            None,
            configured.settings.keep_previous,
        )?;
        return Ok(Prepared {
            catalog,
            live: Live {
                graph,
                projectors: configured.set,
                fingerprint: configured.fingerprint,
            },
            build: None,
        });
    }
    if graph_seq != head.seq {
        anyhow::bail!(
            "the graph is projected up to seq {graph_seq} but the log ends at seq {}; run \
             `leviathan rebuild`",
            head.seq
        );
    }
    // The configured set is not the live one: find its generation (a build
    // to resume, a pending or kept one), or start one.
    let existing = catalog
        .list()?
        .into_iter()
        .find(|r| r.id != live_id && r.fingerprint == configured.fingerprint);
    let mut record = match existing {
        Some(mut r) => {
            if r.status == Status::Kept {
                // A roll back: what it recorded while it was live was
                // accepted then, and is not counted against the build's limit.
                r.accepted_errors = GraphStore::open_generation(&store.db, r.id)?.error_count()?;
            }
            r
        }
        None => GenerationRecord::for_set(
            catalog.next_id()?,
            &configured.set,
            configured.fingerprint,
            Status::Building,
        ),
    };
    record.status = Status::Building;
    catalog.put(&record)?;
    sweep(
        store,
        &catalog,
        live_id,
        Some(record.id),
        configured.settings.keep_previous,
    )?;
    let new_graph = GraphStore::open_generation(&store.db, record.id)?;
    let plan = Plan {
        record,
        graph: new_graph,
        projectors: configured.set.clone(),
        fingerprint: configured.fingerprint,
        settings: configured.settings.clone(),
        max_rate: (configured.build_rate > 0).then_some(configured.build_rate),
    };
    match mode {
        RebuildMode::Block => build_now(store, &catalog, live_id, plan, builds),
        RebuildMode::Background => {
            let old = catalog.get(live_id)?;
            let sources = match &old {
                Some(r) => catalog.sources(r)?,
                None => None,
            };
            let Some(sources) = sources else {
                anyhow::bail!(
                    "the graph was built by another projector set (fingerprint {}), and this store \
                     does not hold that set's components (it was written before projector sets \
                     could change online), so it cannot keep serving while the configured set \
                     ({}) is built. Start once with LEVIATHAN_REBUILD=block (builds the new set's \
                     graph before serving), or stop and run `leviathan rebuild --expect-change`",
                    built_by.map_or("none".into(), |f| f.to_hex()),
                    configured.fingerprint
                );
            };
            let set = ProjectorSet::load(sources, Some(cache_dir)).map_err(|e| {
                anyhow::anyhow!("loading the live generation's projector set again: {e}")
            })?;
            let fingerprint = set.fingerprint();
            if Some(fingerprint) != built_by {
                anyhow::bail!(
                    "the live generation's projector set, loaded from the store, has fingerprint \
                     {fingerprint}, but its graph says {}: start once with LEVIATHAN_REBUILD=block",
                    built_by.map_or("none".into(), |f| f.to_hex())
                );
            }
            tracing::info!(
                live = live_id,
                live_fingerprint = %fingerprint,
                building = plan.record.id,
                fingerprint = %plan.fingerprint,
                "the projector set changed: serving the live generation with its own set while \
                 the new one is built"
            );
            Ok(Prepared {
                catalog,
                live: Live {
                    graph,
                    projectors: Arc::new(set),
                    fingerprint,
                },
                build: Some(plan),
            })
        }
    }
}

/// `LEVIATHAN_REBUILD=block`: builds the generation to the head now (no
/// writer runs yet) and makes it live.
fn build_now(
    store: &Store,
    catalog: &Catalog,
    live_id: u64,
    plan: Plan,
    builds: &Builds,
) -> anyhow::Result<Prepared> {
    tracing::info!(
        generation = plan.record.id,
        fingerprint = %plan.fingerprint,
        "the projector set changed: building its graph before serving (LEVIATHAN_REBUILD=block)"
    );
    let started = std::time::Instant::now();
    let errors = build_until(
        &store.db,
        &store.log,
        &plan,
        builds,
        &AtomicBool::new(false),
        |applied, head| applied >= head,
    )?;
    if errors > plan.settings.max_build_errors {
        let mut record = plan.record.clone();
        record.status = Status::Pending;
        catalog.put(&record)?;
        anyhow::bail!(
            "the configured projector set recorded {errors} projection errors building its graph \
             from the log (generation {}), more than max_build_errors = {}; the previous graph is \
             untouched. Fix the projector or raise max_build_errors in the manifest; start with \
             the previous set meanwhile",
            record.id,
            plan.settings.max_build_errors
        );
    }
    let old = catalog.get(live_id)?;
    let mut record = plan.record.clone();
    record.status = Status::Live;
    let mut batch = store.db.batch();
    let keep = plan.settings.keep_previous;
    let dropped = catalog.dropped_by_switch(live_id, record.id)?;
    catalog.stage_switch(&mut batch, (live_id, old), &record, keep, &dropped);
    batch
        .durability(Some(fjall::PersistMode::SyncAll))
        .commit()?;
    catalog.delete_graphs(&dropped);
    if !keep {
        store.graph.clone().delete()?;
    }
    tracing::info!(
        generation = record.id,
        events_per_second = builds.get().map_or(0.0, |s| s.events_per_second),
        seconds = started.elapsed().as_secs_f64(),
        errors,
        "the new generation is built and live"
    );
    Ok(Prepared {
        catalog: catalog.clone(),
        live: Live {
            graph: plan.graph,
            projectors: plan.projectors,
            fingerprint: plan.fingerprint,
        },
        build: None,
    })
}

/// Deletes every generation but the live one, `keep` (the one being built)
/// and, with `keep_previous`, the most recently kept one (older stores may
/// hold several), and the keyspaces of generations the catalog no longer
/// names (a switch that crashed before deleting them).
fn sweep(
    store: &Store,
    catalog: &Catalog,
    live: u64,
    keep: Option<u64>,
    keep_previous: bool,
) -> anyhow::Result<()> {
    let records = catalog.list()?;
    let newest_kept = catalog.kept()?.first().map(|r| r.id);
    for r in &records {
        if r.id == live || Some(r.id) == keep {
            continue;
        }
        let why = if r.status != Status::Kept {
            "deleting a generation of a projector set no longer configured"
        } else if !keep_previous {
            "deleting a generation kept for roll back: the manifest no longer sets keep_previous"
        } else if Some(r.id) != newest_kept {
            "deleting a generation kept for roll back: only the most recently kept one is kept"
        } else {
            continue;
        };
        tracing::info!(generation = r.id, fingerprint = %r.fingerprint, "{why}");
        GraphStore::open_generation(&store.db, r.id)?.delete()?;
        let mut batch = store.db.batch();
        catalog.stage_remove(&mut batch, r.id);
        batch.commit()?;
    }
    let named: std::collections::HashSet<u64> = catalog.list()?.iter().map(|r| r.id).collect();
    let mut orphans = std::collections::BTreeSet::new();
    for name in store.db.list_keyspace_names() {
        if let Some(id) = super::catalog::generation_of_keyspace(name.as_ref()) {
            if id != live && Some(id) != keep && !named.contains(&id) {
                orphans.insert(id);
            }
        }
    }
    for id in orphans {
        tracing::info!(
            generation = id,
            "deleting the keyspaces of a retired generation"
        );
        GraphStore::open_generation(&store.db, id)?.delete()?;
    }
    Ok(())
}
