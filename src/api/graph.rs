//! Graph reads: the summary (from counters), node listing and lookup, a node's
//! edges, and the projection's state. Everything here reads committed state.

use super::error::ApiError;
use super::events::PAGE_MAX_BYTES;
use super::{blocking, AppState, Params};
use crate::graph::query::{Page, MAX_PAGE_LIMIT};
use crate::graph::Direction;
use crate::projection::Mode;
use crate::seq::Seq;
use crate::views;
use crate::wire::{self, EdgesPage, NodesPage, OrderedCounts, Projection, Summary};
use axum::extract::{Path, RawQuery, State};
use axum::Json;

/// `GET /v1/graph/summary`: counts from counters, the last 20 events newest first.
pub async fn summary(State(app): State<AppState>) -> Result<Json<Summary>, ApiError> {
    blocking(move || {
        // By key for the set's declared types: the only types the graph can
        // hold (GraphStore::counts_of), at a cost independent of the log's size.
        let live = app.live.get();
        let infos = live.projectors.projectors();
        let view = app.log.view();
        let (nodes, edges) = live.graph.counts_of_at(
            &view,
            infos
                .iter()
                .flat_map(|p| p.node_types.iter().map(String::as_str)),
            infos
                .iter()
                .flat_map(|p| p.edge_types.iter().map(String::as_str)),
            &crate::schema::SUMMARY_ORDER,
        )?;
        let recent = app.log.recent_at(&view, 20, PAGE_MAX_BYTES)?;
        Ok(Json(Summary {
            nodes_by_type: OrderedCounts(nodes),
            edges_by_type: OrderedCounts(edges),
            recent_events: recent.into_iter().map(Into::into).collect(),
        }))
    })
    .await
}

fn limit(p: &Params, default: u64) -> Result<usize, ApiError> {
    Ok(p.int("limit", default, 1, MAX_PAGE_LIMIT as u64)? as usize)
}

/// `GET /v1/graph/nodes?type=&limit=&cursor=`
pub async fn nodes(
    State(app): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Json<NodesPage>, ApiError> {
    let p = Params::from_query(q.as_deref())?;
    let limit = limit(&p, 100)?;
    let node_type = p.str("type").map(str::to_string);
    let cursor = p.str("cursor").map(str::to_string);
    blocking(move || {
        // At most `limit` nodes and about PAGE_MAX_BYTES of them (at least
        // one): properties may hold payload keys of up to 1 MiB each.
        let page: Page<_> = app.live.graph().list_nodes_bounded(
            node_type.as_deref(),
            cursor.as_deref(),
            limit,
            PAGE_MAX_BYTES,
        )?;
        let nodes: Vec<wire::Node> = page.items.into_iter().map(Into::into).collect();
        Ok(Json(NodesPage {
            count: nodes.len(),
            next_cursor: page.next_cursor,
            nodes,
        }))
    })
    .await
}

/// `as_of_seq` of a query: absent, or an integer from 0 (checked against the
/// head by `views::history::check_as_of`, in the read's snapshot).
pub(super) fn as_of_seq(p: &Params) -> Result<Option<u64>, ApiError> {
    match p.str("as_of_seq") {
        None => Ok(None),
        Some(_) => Ok(Some(p.int("as_of_seq", 0, 0, i64::MAX as u64)?)),
    }
}

/// `GET /v1/graph/nodes/{id}?as_of_seq=`: the node now, or as it stood
/// right after seq `as_of_seq` (from the history index).
pub async fn node(
    State(app): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<wire::Node>, ApiError> {
    let as_of = as_of_seq(&Params::from_query(q.as_deref())?)?;
    blocking(move || {
        let graph = app.live.graph();
        let Some(n) = as_of else {
            return match graph.get_node(&id)? {
                Some(n) => Ok(Json(n.into())),
                None => Err(ApiError::not_found(format!("no node with id {id:?}"))),
            };
        };
        let view = graph.view();
        let seq = views::history::check_as_of(&graph, &view, n)?;
        Ok(Json(
            views::history::node_as_of(&graph, &view, &id, seq)?.into(),
        ))
    })
    .await
}

/// `GET /v1/graph/nodes/{id}/history?limit=&cursor=`: the node's changes,
/// oldest first, at most `limit` and about PAGE_MAX_BYTES of them (each
/// change repeats the whole node).
pub async fn node_history(
    State(app): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<wire::NodeHistoryPage>, ApiError> {
    let p = Params::from_query(q.as_deref())?;
    let limit = limit(&p, 100)?;
    let cursor = p.str("cursor").map(str::to_string);
    blocking(move || {
        Ok(Json(views::history::node_history(
            &app.log,
            &app.live.graph(),
            &id,
            cursor.as_deref(),
            limit,
            PAGE_MAX_BYTES,
        )?))
    })
    .await
}

/// `GET /v1/graph/nodes/{id}/edges?direction=out|in|both&type=&limit=&cursor=`
pub async fn edges(
    State(app): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<EdgesPage>, ApiError> {
    let p = Params::from_query(q.as_deref())?;
    let limit = limit(&p, 100)?;
    let dir = match p.str("direction").unwrap_or("both") {
        "out" | "outgoing" => Direction::Outgoing,
        "in" | "incoming" => Direction::Incoming,
        "both" => Direction::Both,
        other => {
            return Err(ApiError::invalid_query(format!(
                "direction must be out, in or both, got {other:?}"
            )))
        }
    };
    let edge_type = p.str("type").map(str::to_string);
    let cursor = p.str("cursor").map(str::to_string);
    blocking(move || {
        let page = app.live.graph().edges_bounded(
            &id,
            dir,
            edge_type.as_deref(),
            cursor.as_deref(),
            limit,
            super::events::PAGE_MAX_BYTES,
        )?;
        let edges: Vec<wire::Edge> = page.items.into_iter().map(Into::into).collect();
        Ok(Json(EdgesPage {
            count: edges.len(),
            edges,
            next_cursor: page.next_cursor,
            node_id: id,
        }))
    })
    .await
}

/// `GET /v1/projection`: the projector set, the last applied seq and the state digest.
pub async fn projection(State(app): State<AppState>) -> Result<Json<Projection>, ApiError> {
    blocking(move || {
        // The build's status before the live set: a switch replaces the live
        // set first and marks the build switched after, so reading them in
        // this order never serves "switched" beside the old generation's
        // digest (the other order did, once, in a test under load).
        let build = app.builds.get();
        let live = app.live.get();
        let view = app.log.view();
        let (seq, digest) = live.graph.state_at(&view)?;
        let head = app.log.head_at(&view)?;
        let follow = app
            .follow
            .status()
            .filter(|s| s.generation == live.graph.generation());
        let has_async = live.projectors.asynchronous().is_some();
        let (async_seq, async_digest) = if has_async {
            live.graph.async_state_at(&view)?
        } else {
            (Seq::ZERO, crate::graph::GENESIS_DIGEST)
        };
        let lag_seconds = follow.as_ref().map_or(0.0, |s| s.lag_seconds);
        let projectors = live
            .projectors
            .projectors()
            .iter()
            .map(|p| wire::Projector {
                mode: p.mode.as_str().to_owned(),
                applied_seq: Some(match p.mode {
                    Mode::Inline => seq,
                    Mode::Async => async_seq,
                }),
                lag_events: Some(match p.mode {
                    Mode::Inline => head.seq.0.saturating_sub(seq.0),
                    Mode::Async => head.seq.0.saturating_sub(async_seq.0),
                }),
                lag_seconds: Some(match p.mode {
                    Mode::Inline => 0.0,
                    Mode::Async => lag_seconds,
                }),
                digest: p.digest,
                edge_types: p.edge_types.clone(),
                handles: p.handles.clone(),
                limits: Some(wire::ProjectorLimits {
                    fuel: p.limits.fuel,
                    instances: p.limits.instances,
                    memory_mib: p.limits.memory_bytes >> 20,
                    tables: p.limits.table_elements,
                }),
                name: p.name.clone(),
                node_types: p.node_types.clone(),
                on_error: p.on_error.as_str().to_owned(),
                version: p.version.clone(),
            })
            .collect();
        let catalog_failed = |e: anyhow::Error| {
            ApiError::storage("reading the generations catalog failed", format!("{e:#}"))
        };
        let mut kept = Vec::new();
        for r in app.catalog.kept().map_err(catalog_failed)? {
            let Some(graph) = app.catalog.graph(r.id).map_err(catalog_failed)? else {
                continue; // dropped since it was listed
            };
            kept.push(wire::KeptGeneration {
                generation: r.id,
                fingerprint: r.fingerprint,
                projectors: r.labels(),
                applied_seq: graph.state()?.0,
                created_at: r.created_at,
                kept_at: r.kept_at,
            });
        }
        Ok(Json(Projection {
            kept,
            applied_seq: seq,
            fingerprint: live.fingerprint,
            generation: live.graph.generation(),
            log_head_seq: head.seq,
            projectors,
            state_digest: digest,
            build: build.map(|b| b.at_head(head.seq).into()),
            asynchronous: if has_async {
                Some(wire::AsyncLane {
                    applied_seq: async_seq,
                    lag_events: head.seq.0.saturating_sub(async_seq.0),
                    lag_seconds,
                    events_per_second: follow.as_ref().map_or(0.0, |s| s.events_per_second),
                    async_digest,
                    combined_digest: live.graph.combined_digest_at(async_seq)?,
                    errors: follow.as_ref().map_or(0, |s| s.errors),
                    message: follow.and_then(|s| s.message),
                })
            } else {
                None
            },
        }))
    })
    .await
}

/// `GET /v1/projection/errors?projector=&generation=&order=&limit=&cursor=`:
/// the projection errors recorded by `on_error = "record"` projectors (or by
/// a generation's build: `generation`), in log order or newest first
/// (`order=newest`; `oldest` is the default), one projector's with
/// `projector`, paged like the graph's lists.
pub async fn projection_errors(
    State(app): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Json<wire::ProjectionErrorsPage>, ApiError> {
    let p = Params::from_query(q.as_deref())?;
    let limit = limit(&p, 100)?;
    let projector = p.str("projector").map(str::to_owned);
    let cursor = p.str("cursor").map(str::to_owned);
    let newest_first = match p.str("order") {
        None | Some("oldest") => false,
        Some("newest") => true,
        Some(o) => {
            return Err(ApiError::invalid_query(format!(
                "order must be \"oldest\" or \"newest\", got {o:?}"
            )))
        }
    };
    let generation = match p.str("generation") {
        None => None,
        Some(g) => Some(g.parse::<u64>().map_err(|_| {
            ApiError::invalid_query(format!("generation must be a generation id, got {g:?}"))
        })?),
    };
    blocking(move || {
        let graph = match generation {
            None => app.live.graph(),
            Some(g) if g == app.live.get().graph.generation() => app.live.graph(),
            Some(g) => app
                .catalog
                .graph(g)
                .map_err(|e| {
                    ApiError::internal("opening a generation's graph failed", format!("{e:#}"))
                })?
                .ok_or_else(|| {
                    ApiError::not_found(format!(
                        "no generation {g} (GET /v1/projection names the live one, any build and the kept one)"
                    ))
                })?,
        };
        let page = graph.projection_errors(
            projector.as_deref(),
            cursor.as_deref(),
            limit,
            newest_first,
        )?;
        let errors: Vec<wire::ProjectionError> = page.items.into_iter().map(Into::into).collect();
        Ok(Json(wire::ProjectionErrorsPage {
            count: errors.len(),
            errors,
            next_cursor: page.next_cursor,
        }))
    })
    .await
}
