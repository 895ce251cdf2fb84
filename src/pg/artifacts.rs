//! Artifacts in PostgreSQL (`LEVIATHAN_STORE=postgres`): the store every node
//! shares behind its local one ([`crate::cas::Remote`]). A blob is a row in
//! `artifacts` (sha256, size, chunk count, created_at) and its bytes are rows
//! of `artifact_chunks` ((sha256, ord) → at most 1 MiB, the local store's
//! chunk size), both append-only (migration 3).
//!
//! An upload inserts its chunks, then its metadata row, in one transaction:
//! a blob is visible (its metadata row exists) only once all of it is, and a
//! blob already stored is a no-op (content-addressed: the same digest is the
//! same bytes). A read streams the chunks one query at a time, so memory stays
//! at one chunk whatever the blob's size; the caller checks the SHA-256 before
//! anything is served or cached ([`crate::cas::Cas::find`]).
//!
//! Uploads and reads come from HTTP handlers on any node, concurrently, so
//! they use a small connection pool (`r2d2_postgres`), not the writer's
//! connection.

use crate::cas::{CasError, Remote};
use crate::digest::Sha256;
use r2d2_postgres::{r2d2, PostgresConnectionManager};
use std::time::Duration;
use tokio_postgres_rustls::MakeRustlsConnect;

/// Connections the pool keeps at most (uploads and reads of artifacts only).
const POOL_SIZE: u32 = 4;

type Pool = r2d2::Pool<PostgresConnectionManager<MakeRustlsConnect>>;

/// The artifact tables, through a connection pool.
pub struct PgArtifacts {
    /// Taken by `drop`.
    pool: Option<Pool>,
}

fn remote(e: impl std::fmt::Display) -> CasError {
    CasError::Remote(e.to_string())
}

/// A PostgreSQL failure, with the server's own message (not `db error`).
fn db(e: postgres::Error) -> CasError {
    CasError::Remote(super::describe(&e))
}

impl PgArtifacts {
    /// A pool on `url` (connections are made on first use: the server has
    /// connected and migrated the schema before this is used).
    pub fn new(url: &str) -> Result<PgArtifacts, super::PgError> {
        let (config, tls) = super::config(url)?;
        let manager = PostgresConnectionManager::new(config, tls);
        let pool = r2d2::Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(0))
            .connection_timeout(Duration::from_secs(10))
            .build_unchecked(manager);
        Ok(PgArtifacts { pool: Some(pool) })
    }

    fn client(
        &self,
    ) -> Result<r2d2::PooledConnection<PostgresConnectionManager<MakeRustlsConnect>>, CasError>
    {
        self.pool
            .as_ref()
            .ok_or_else(|| remote("the pool is closed"))?
            .get()
            .map_err(remote)
    }
}

impl Drop for PgArtifacts {
    /// The synchronous client closes its connections by blocking on its own
    /// runtime, which must not happen on an async runtime's thread (the
    /// server's state is dropped on one): the pool is dropped on a thread of
    /// its own.
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            match std::thread::Builder::new()
                .name("leviathan-pg-pool-close".into())
                .spawn(move || drop(pool))
            {
                Ok(t) => {
                    let _ = t.join();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not close the artifact connections cleanly")
                }
            }
        }
    }
}

fn size_of(row: &postgres::Row, sha: &Sha256) -> Result<(u64, u32), CasError> {
    let size: i64 = row.get(0);
    let chunks: i32 = row.get(1);
    match (u64::try_from(size), u32::try_from(chunks)) {
        (Ok(size), Ok(chunks)) => Ok((size, chunks)),
        _ => Err(CasError::RemoteCorrupt {
            sha256: *sha,
            reason: format!("its metadata row says size {size}, {chunks} chunks"),
        }),
    }
}

impl Remote for PgArtifacts {
    fn size(&self, sha: &Sha256) -> Result<Option<u64>, CasError> {
        let row = self
            .client()?
            .query_opt(
                "SELECT size, chunks FROM artifacts WHERE sha256 = $1",
                &[&&sha.as_bytes()[..]],
            )
            .map_err(db)?;
        row.map(|r| size_of(&r, sha).map(|(size, _)| size))
            .transpose()
    }

    fn store(
        &self,
        sha: &Sha256,
        size: u64,
        chunks: u32,
        chunk: &mut dyn FnMut(u32) -> Result<Vec<u8>, CasError>,
    ) -> Result<bool, CasError> {
        let key = &sha.as_bytes()[..];
        let mut client = self.client()?;
        let known = client
            .query_opt("SELECT 1 FROM artifacts WHERE sha256 = $1", &[&key])
            .map_err(db)?;
        if known.is_some() {
            return Ok(false);
        }
        let size = i64::try_from(size).map_err(remote)?;
        let count = i32::try_from(chunks).map_err(remote)?;
        let mut tx = client.transaction().map_err(db)?;
        // Another node storing the same blob at once: its rows are the same
        // bytes, so whichever commits first wins and the other adds nothing.
        let insert = tx
            .prepare(
                "INSERT INTO artifact_chunks (sha256, ord, data) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
            )
            .map_err(db)?;
        for ord in 0..count {
            let data = chunk(ord.unsigned_abs())?;
            tx.execute(&insert, &[&key, &ord, &data]).map_err(db)?;
        }
        let created = tx
            .execute(
                "INSERT INTO artifacts (sha256, size, chunks) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
                &[&key, &size, &count],
            )
            .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(created == 1)
    }

    fn fetch(
        &self,
        sha: &Sha256,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), CasError>,
    ) -> Result<Option<u64>, CasError> {
        let key = &sha.as_bytes()[..];
        let mut client = self.client()?;
        let Some(row) = client
            .query_opt(
                "SELECT size, chunks FROM artifacts WHERE sha256 = $1",
                &[&key],
            )
            .map_err(db)?
        else {
            return Ok(None);
        };
        let (size, chunks) = size_of(&row, sha)?;
        let corrupt = |reason: String| CasError::RemoteCorrupt {
            sha256: *sha,
            reason,
        };
        let read = client
            .prepare("SELECT data FROM artifact_chunks WHERE sha256 = $1 AND ord = $2")
            .map_err(db)?;
        let mut total = 0u64;
        for ord in 0..chunks {
            let ord_i32 = i32::try_from(ord).map_err(remote)?;
            let row = client
                .query_opt(&read, &[&key, &ord_i32])
                .map_err(db)?
                .ok_or_else(|| corrupt(format!("chunk {ord} of {chunks} is missing")))?;
            let data: &[u8] = row.get(0);
            total += data.len() as u64;
            if total > size {
                return Err(corrupt(format!(
                    "its chunks hold more than its recorded size of {size} bytes"
                )));
            }
            sink(data)?;
        }
        if total != size {
            return Err(corrupt(format!(
                "its chunks hold {total} bytes, its recorded size is {size}"
            )));
        }
        Ok(Some(size))
    }

    fn digests(&self) -> Result<Vec<Sha256>, CasError> {
        let rows = self
            .client()?
            .query("SELECT sha256 FROM artifacts ORDER BY sha256", &[])
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                let key: &[u8] = r.get(0);
                Sha256::from_slice(key).ok_or_else(|| {
                    remote(format!("a stored artifact digest is {} bytes", key.len()))
                })
            })
            .collect()
    }
}
