//! `GET /v1/cluster` (`LEVIATHAN_STORE=postgres`): every member of the
//! cluster, its role, lag and whether its state digest agrees with this
//! node's at a common seq (crate::pg::members). 404 on a node without
//! PostgreSQL: it is a cluster of one.

use super::error::ApiError;
use super::AppState;
use axum::extract::State;
use axum::Json;

pub async fn cluster(
    State(state): State<AppState>,
) -> Result<Json<crate::pg::members::ClusterView>, ApiError> {
    let Some(cluster) = state.cluster.clone() else {
        return Err(ApiError::not_found(
            "no cluster: this node runs on the embedded store alone (LEVIATHAN_STORE=fjall); \
             see docs/SCALING.md",
        ));
    };
    let live = state.live.get();
    super::blocking(move || {
        cluster
            .view(&live)
            .map_err(|e| ApiError::storage("reading the cluster from PostgreSQL failed", e))
    })
    .await
    .map(Json)
}
