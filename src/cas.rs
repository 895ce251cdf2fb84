//! The artifact store: blobs addressed by the SHA-256 of their bytes, kept in
//! fjall in fixed-size chunks so memory stays bounded for any artifact size. It
//! owns uploads (hash on the fly, store only on a digest match), reads, and the
//! clean-up of uploads a crash interrupted. It never interprets blob content.
//!
//! Keyspaces:
//! - `cas_chunks` (key-value separated): `upload id (16) ‖ chunk index (u32)` → bytes
//! - `cas_blobs`: `sha256 (32)` → `upload id (16) ‖ size (u64) ‖ chunks (u32)`
//! - `cas_pending`: `upload id (16)` → () while an upload is in flight
//!
//! A blob becomes visible only when its `cas_blobs` entry is committed, in one
//! batch with the removal of its pending marker, so a reader never sees part of
//! a blob and identical content is stored once.
//!
//! With a [`Remote`] (`LEVIATHAN_STORE=postgres`: `crate::pg::artifacts`), the
//! remote store is the authority every node shares and the local one a cache:
//! an upload is committed there before it is committed here (and before it is
//! acknowledged), and a blob missing here is fetched from there, its SHA-256
//! checked again, stored here, then served.

use crate::digest::Sha256;
use crate::storage::SyncMode;
use fjall::{Database, Keyspace};
use sha2::Digest;
use std::sync::{Arc, Mutex};

/// Size of one stored chunk.
pub const CHUNK_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CasError {
    #[error("artifact store I/O: {0}")]
    Store(#[from] fjall::Error),
    #[error(
        "the body's SHA-256 is {actual}, not the {expected} named in the URL; nothing was stored"
    )]
    DigestMismatch { expected: Sha256, actual: Sha256 },
    #[error("the artifact is larger than the limit of {limit} bytes (LEVIATHAN_MAX_ARTIFACT_BYTES); nothing was stored")]
    TooLarge { limit: u64 },
    #[error("artifact store is corrupt: {0}")]
    Corrupt(String),
    #[error("the shared artifact store (PostgreSQL) failed: {0}")]
    Remote(String),
    #[error(
        "the copy of artifact {sha256} in the shared artifact store (PostgreSQL) is corrupt: \
         {reason}; it was not served or cached. Upload the artifact again from a good copy \
         (PUT /v1/artifacts/{sha256}) after removing the bad rows"
    )]
    RemoteCorrupt { sha256: Sha256, reason: String },
}

/// The store every node shares, behind the local one (PostgreSQL's
/// `artifacts` and `artifact_chunks` tables: `crate::pg::artifacts`).
pub trait Remote: Send + Sync {
    /// The size of a stored blob; `None` when it is not stored.
    fn size(&self, sha: &Sha256) -> Result<Option<u64>, CasError>;
    /// Stores a blob of `chunks` chunks, read one at a time by `chunk`,
    /// unless it is already stored, atomically (no part of it is ever
    /// visible). Returns whether it was new.
    fn store(
        &self,
        sha: &Sha256,
        size: u64,
        chunks: u32,
        chunk: &mut dyn FnMut(u32) -> Result<Vec<u8>, CasError>,
    ) -> Result<bool, CasError>;
    /// Streams a stored blob's chunks, in order, into `sink`; returns its
    /// size, or `None` when it is not stored. A missing chunk or a size that
    /// does not add up is [`CasError::RemoteCorrupt`]; the caller checks the
    /// digest.
    fn fetch(
        &self,
        sha: &Sha256,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), CasError>,
    ) -> Result<Option<u64>, CasError>;
    /// The digest of every stored blob (what a backup or an export of any
    /// node must hold).
    fn digests(&self) -> Result<Vec<Sha256>, CasError>;
}

/// What the store knows of a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobMeta {
    pub size: u64,
    upload: [u8; 16],
    chunks: u32,
}

/// The outcome of a finished upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub sha256: Sha256,
    pub size: u64,
    /// False when identical content was already stored.
    pub created: bool,
}

/// Handle to the artifact store. Cheap to clone.
#[derive(Clone)]
pub struct Cas {
    db: Database,
    chunks: Keyspace,
    blobs: Keyspace,
    pending: Keyspace,
    sync: SyncMode,
    max_bytes: u64,
    /// Serializes the "already stored?" check with the commit of a new blob.
    finish_lock: Arc<Mutex<()>>,
    /// Blobs stored and their bytes: counted once at open, then kept up to
    /// date by every upload that stores a new blob (blobs are never removed).
    stats: Arc<CasStats>,
    /// The shared store behind this one, if any ([`Remote`]).
    remote: Option<Arc<dyn Remote>>,
}

/// How many blobs the store holds and their total size.
#[derive(Debug, Default)]
struct CasStats {
    blobs: std::sync::atomic::AtomicU64,
    bytes: std::sync::atomic::AtomicU64,
}

impl Cas {
    /// Opens the store and removes the chunks of uploads a crash interrupted.
    pub fn open(db: &Database, sync: SyncMode, max_bytes: u64) -> Result<Cas, CasError> {
        let cas = Cas {
            db: db.clone(),
            chunks: crate::storage::open_keyspace(db, "cas_chunks")?,
            blobs: crate::storage::open_keyspace(db, "cas_blobs")?,
            pending: crate::storage::open_keyspace(db, "cas_pending")?,
            sync,
            max_bytes,
            finish_lock: Arc::new(Mutex::new(())),
            stats: Arc::default(),
            remote: None,
        };
        let (mut blobs, mut bytes) = (0u64, 0u64);
        for kv in cas.blobs.iter() {
            let v = kv.value()?;
            blobs += 1;
            bytes += v
                .get(16..24)
                .map_or(0, |b| u64::from_be_bytes(b.try_into().expect("8 bytes")));
        }
        cas.stats
            .blobs
            .store(blobs, std::sync::atomic::Ordering::Relaxed);
        cas.stats
            .bytes
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
        let mut stale = Vec::new();
        for kv in cas.pending.iter() {
            stale.push(kv.key()?);
        }
        for id in stale {
            tracing::info!(upload = %hex::encode(&id), "removing an upload interrupted by a restart");
            cas.discard(&id)?;
        }
        Ok(cas)
    }

    /// Puts `remote` behind this store: uploads are committed there first,
    /// and blobs missing here are fetched from there ([`Cas::find`]).
    pub fn with_remote(mut self, remote: Arc<dyn Remote>) -> Cas {
        self.remote = Some(remote);
        self
    }

    /// (blobs stored, their total size in bytes), without reading the store.
    pub fn totals(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.stats.blobs.load(Relaxed),
            self.stats.bytes.load(Relaxed),
        )
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    pub fn meta(&self, sha: &Sha256) -> Result<Option<BlobMeta>, CasError> {
        let Some(v) = self.blobs.get(sha.as_bytes())? else {
            return Ok(None);
        };
        if v.len() != 28 {
            return Err(CasError::Corrupt(format!(
                "blob record of {sha} has {} bytes",
                v.len()
            )));
        }
        Ok(Some(BlobMeta {
            upload: v[..16].try_into().expect("16"),
            size: u64::from_be_bytes(v[16..24].try_into().expect("8")),
            chunks: u32::from_be_bytes(v[24..28].try_into().expect("4")),
        }))
    }

    /// Every stored blob's digest, in digest order (an export's artifact list).
    pub fn digests(&self) -> Result<Vec<Sha256>, CasError> {
        let mut out = Vec::new();
        for kv in self.blobs.iter() {
            let k = kv.key()?;
            out.push(
                Sha256::from_slice(&k)
                    .ok_or_else(|| CasError::Corrupt(format!("blob key of {} bytes", k.len())))?,
            );
        }
        Ok(out)
    }

    /// Whether a blob is stored here or, on a miss, in the remote store.
    pub fn exists(&self, sha: &Sha256) -> Result<bool, CasError> {
        Ok(self.size_of(sha)?.is_some())
    }

    /// A stored blob's size, here or, on a miss, in the remote store
    /// (nothing is fetched).
    pub fn size_of(&self, sha: &Sha256) -> Result<Option<u64>, CasError> {
        if let Some(m) = self.meta(sha)? {
            return Ok(Some(m.size));
        }
        match &self.remote {
            Some(r) => r.size(sha),
            None => Ok(None),
        }
    }

    /// A blob's metadata; on a local miss, the blob is fetched from the
    /// remote store chunk by chunk into this one (its SHA-256 checked before
    /// it is committed here, so a corrupt remote copy is neither cached nor
    /// served: [`CasError::RemoteCorrupt`]).
    pub fn find(&self, sha: &Sha256) -> Result<Option<BlobMeta>, CasError> {
        if let Some(m) = self.meta(sha)? {
            return Ok(Some(m));
        }
        let Some(remote) = self.remote.clone() else {
            return Ok(None);
        };
        // What the remote store holds was checked against the limit when it
        // was uploaded (on whichever node): no limit on the way in here.
        let mut upload = self.begin_with(u64::MAX, false)?;
        let Some(size) = remote.fetch(sha, &mut |data| upload.write(data))? else {
            return Ok(None);
        };
        match upload.finish(Some(*sha)) {
            Ok(_) => {
                tracing::info!(sha256 = %sha, size, "fetched an artifact from the shared store into the local one");
            }
            Err(CasError::DigestMismatch { actual, .. }) => {
                return Err(CasError::RemoteCorrupt {
                    sha256: *sha,
                    reason: format!("its chunks hash to {actual}"),
                })
            }
            Err(e) => return Err(e),
        }
        self.meta(sha)
    }

    /// Fetches every blob of the remote store that this one lacks (each
    /// checked as [`Cas::find`] does), so that a backup of this store is
    /// complete; returns how many were fetched (0 without a remote store).
    pub fn fetch_missing(&self) -> Result<u64, CasError> {
        let Some(remote) = self.remote.clone() else {
            return Ok(0);
        };
        let mut fetched = 0;
        for sha in remote.digests()? {
            if self.meta(&sha)?.is_none() {
                self.find(&sha)?;
                fetched += 1;
            }
        }
        Ok(fetched)
    }

    /// The digests among `digests` that are not stored, each once, in the
    /// order first given.
    pub fn missing<'a>(
        &self,
        digests: impl IntoIterator<Item = &'a Sha256>,
    ) -> Result<Vec<Sha256>, CasError> {
        let mut seen = std::collections::HashSet::new();
        let mut missing = Vec::new();
        for sha in digests {
            if seen.insert(*sha) && !self.exists(sha)? {
                missing.push(*sha);
            }
        }
        Ok(missing)
    }

    /// Starts an upload. Feed it with [`Upload::write`], then [`Upload::finish`].
    /// Dropping it unfinished removes what it wrote.
    pub fn begin(&self) -> Result<Upload, CasError> {
        self.begin_with(self.max_bytes, true)
    }

    /// An upload with its own size limit; `push`: committed to the remote
    /// store (if any) before this one (a fetch from it is not).
    fn begin_with(&self, max_bytes: u64, push: bool) -> Result<Upload, CasError> {
        let id = *uuid::Uuid::new_v4().as_bytes();
        self.pending.insert(id, b"")?;
        Ok(Upload {
            cas: self.clone(),
            id,
            hasher: sha2::Sha256::new(),
            buf: Vec::with_capacity(CHUNK_BYTES),
            size: 0,
            chunks: 0,
            done: false,
            max_bytes,
            push,
        })
    }

    /// Reads chunk `index` of a blob.
    pub fn chunk(&self, meta: &BlobMeta, index: u32) -> Result<Option<bytes::Bytes>, CasError> {
        if index >= meta.chunks {
            return Ok(None);
        }
        let v = self
            .chunks
            .get(chunk_key(&meta.upload, index))?
            .ok_or_else(|| CasError::Corrupt(format!("chunk {index} missing")))?;
        Ok(Some(bytes::Bytes::copy_from_slice(&v)))
    }

    /// Number of chunks of a blob.
    pub fn chunk_count(meta: &BlobMeta) -> u32 {
        meta.chunks
    }

    fn discard(&self, id: &[u8]) -> Result<(), CasError> {
        let mut batch = self.db.batch();
        for kv in self.chunks.prefix(id) {
            batch.remove(&self.chunks, kv.key()?);
        }
        batch.remove(&self.pending, id);
        batch.commit()?;
        Ok(())
    }
}

fn chunk_key(upload: &[u8], index: u32) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..16].copy_from_slice(upload);
    k[16..].copy_from_slice(&index.to_be_bytes());
    k
}

/// An upload in progress.
pub struct Upload {
    cas: Cas,
    id: [u8; 16],
    hasher: sha2::Sha256,
    buf: Vec<u8>,
    size: u64,
    chunks: u32,
    done: bool,
    max_bytes: u64,
    /// Commit to the remote store first (an upload; not a fetch from it).
    push: bool,
}

impl Upload {
    /// Appends bytes; stores each full chunk as it fills.
    pub fn write(&mut self, mut data: &[u8]) -> Result<(), CasError> {
        self.size += data.len() as u64;
        if self.size > self.max_bytes {
            return Err(CasError::TooLarge {
                limit: self.max_bytes,
            });
        }
        self.hasher.update(data);
        while !data.is_empty() {
            let take = (CHUNK_BYTES - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == CHUNK_BYTES {
                self.flush_chunk()?;
            }
        }
        Ok(())
    }

    fn flush_chunk(&mut self) -> Result<(), CasError> {
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES));
        self.cas
            .chunks
            .insert(chunk_key(&self.id, self.chunks), chunk)?;
        self.chunks += 1;
        Ok(())
    }

    /// Completes the upload. With `expected`, the content must hash to it.
    /// With a remote store, the blob is committed there first (a no-op when
    /// it holds it already), then here; `created` then says whether the
    /// remote store, which every node shares, was new to it.
    pub fn finish(mut self, expected: Option<Sha256>) -> Result<Stored, CasError> {
        let actual = Sha256(self.hasher.clone().finalize().into());
        if let Some(expected) = expected {
            if expected != actual {
                return Err(CasError::DigestMismatch { expected, actual });
            }
        }
        if !self.buf.is_empty() || self.chunks == 0 {
            self.flush_chunk()?;
        }
        let remote_created = match self.cas.remote.clone().filter(|_| self.push) {
            Some(remote) => {
                let (chunks, id) = (self.cas.chunks.clone(), self.id);
                Some(remote.store(&actual, self.size, self.chunks, &mut |i| {
                    chunks
                        .get(chunk_key(&id, i))?
                        .map(|v| v.to_vec())
                        .ok_or_else(|| CasError::Corrupt(format!("chunk {i} missing")))
                })?)
            }
            None => None,
        };
        let lock = self.cas.finish_lock.clone();
        let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.cas.meta(&actual)?.is_some() {
            // Identical content is stored once: drop this copy.
            return Ok(Stored {
                sha256: actual,
                size: self.size,
                created: remote_created.unwrap_or(false),
            });
        }
        let mut rec = Vec::with_capacity(28);
        rec.extend_from_slice(&self.id);
        rec.extend_from_slice(&self.size.to_be_bytes());
        rec.extend_from_slice(&self.chunks.to_be_bytes());
        let mut batch = self
            .cas
            .db
            .batch()
            .durability(Some(self.cas.sync.persist_mode()));
        batch.insert(&self.cas.blobs, actual.as_bytes(), rec);
        batch.remove(&self.cas.pending, self.id);
        batch.commit()?;
        self.done = true;
        use std::sync::atomic::Ordering::Relaxed;
        self.cas.stats.blobs.fetch_add(1, Relaxed);
        self.cas.stats.bytes.fetch_add(self.size, Relaxed);
        Ok(Stored {
            sha256: actual,
            size: self.size,
            created: remote_created.unwrap_or(true),
        })
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.done {
            if let Err(e) = self.cas.discard(&self.id) {
                tracing::warn!(error = %e, "could not remove an abandoned upload; it is removed at the next start");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &std::path::Path, max: u64) -> Cas {
        let db = Database::builder(dir).open().unwrap();
        Cas::open(&db, SyncMode::None, max).unwrap()
    }

    fn read_all(cas: &Cas, sha: &Sha256) -> Vec<u8> {
        let meta = cas.meta(sha).unwrap().unwrap();
        let mut out = Vec::new();
        for i in 0..Cas::chunk_count(&meta) {
            out.extend_from_slice(&cas.chunk(&meta, i).unwrap().unwrap());
        }
        out
    }

    #[test]
    fn round_trip_across_chunks_and_dedup() {
        let dir = tempfile::tempdir().unwrap();
        let cas = open(dir.path(), u64::MAX);
        let data: Vec<u8> = (0..(CHUNK_BYTES * 2 + 123))
            .map(|i| (i % 251) as u8)
            .collect();
        let mut up = cas.begin().unwrap();
        for part in data.chunks(70_000) {
            up.write(part).unwrap();
        }
        let s = up.finish(Some(Sha256::of(&data))).unwrap();
        assert!(s.created);
        assert_eq!(read_all(&cas, &s.sha256), data);
        let mut again = cas.begin().unwrap();
        again.write(&data).unwrap();
        assert!(!again.finish(None).unwrap().created);
        let empty = cas.begin().unwrap().finish(None).unwrap();
        assert_eq!(read_all(&cas, &empty.sha256), Vec::<u8>::new());
        assert_eq!(cas.totals(), (2, data.len() as u64));
    }

    #[test]
    fn mismatch_and_too_large_store_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cas = open(dir.path(), 10);
        let mut up = cas.begin().unwrap();
        up.write(b"hello").unwrap();
        let wrong = Sha256::of(b"other");
        assert!(matches!(
            up.finish(Some(wrong)),
            Err(CasError::DigestMismatch { .. })
        ));
        assert!(!cas.exists(&Sha256::of(b"hello")).unwrap());
        let mut up = cas.begin().unwrap();
        assert!(matches!(
            up.write(&[0u8; 11]),
            Err(CasError::TooLarge { limit: 10 })
        ));
        drop(up);
        assert_eq!(cas.chunks.iter().count(), 0);
        assert_eq!(cas.pending.iter().count(), 0);
    }
}
