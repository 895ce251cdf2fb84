//! The log's Merkle tree as stored: the RFC 9162 tree over the stored
//! canonical records (leaf `i` is the record at seq `i + 1`), kept in the
//! `log_tree` keyspace and extended by the writer inside the batch that
//! appends the events, so the log and its tree commit together.
//!
//! Stored form, chosen for append speed and proof reads:
//! - `level (1 byte) ‖ index (u64 BE)` → the 32-byte hash of the complete
//!   subtree of `2^level` leaves starting at leaf `index << level`, for every
//!   complete subtree of level [`STORED_MIN_LEVEL`] or more. Each is written
//!   once, when its last leaf is appended: one key per 2^4 = 16 events, then
//!   half as many per level above (about one key per 8 events in all).
//! - `size` → the number of leaves (u64 BE), written with every batch.
//!
//! Subtrees below [`STORED_MIN_LEVEL`] are recomputed from the records
//! themselves (at most 16 consecutive records, one range read), so a proof
//! reads O(log n) keys plus at most two such blocks. The writer keeps the
//! tree's right edge (one hash per set bit of the size) in memory
//! ([`Frontier`]) and so reads nothing to append.

use super::proof::{self, Subtrees};
use crate::digest::Sha256;
use crate::log::record::split_stored;
use crate::log::{Log, LogError, View};
use crate::seq::Seq;
use fjall::{Database, Keyspace, OwnedWriteBatch, Readable};

/// The lowest level whose complete subtrees are stored (16 leaves).
pub const STORED_MIN_LEVEL: u32 = 4;
const BLOCK: u64 = 1 << STORED_MIN_LEVEL;
const SIZE_KEY: &[u8] = b"size";
/// Records hashed per batch while building a tree from the log.
const BUILD_CHUNK: usize = 8192;

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("tree store I/O: {0}")]
    Store(#[from] fjall::Error),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("the Merkle tree is corrupt: {0}")]
    Corrupt(String),
}

/// Handle to the stored tree. Cheap to clone.
#[derive(Clone)]
pub struct Tree {
    ks: Keyspace,
    log: Log,
}

fn node_key(level: u32, index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = level as u8;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

/// The right edge of a tree: the roots of the complete subtrees its size
/// decomposes into, largest first (one per set bit of the size).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frontier {
    size: u64,
    peaks: Vec<Sha256>,
}

impl Frontier {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash; `emit` gets every complete subtree this closes,
    /// as `(level, index, hash)`, the leaf itself first (level 0).
    pub fn append(&mut self, leaf: Sha256, mut emit: impl FnMut(u32, u64, &Sha256)) {
        let index = self.size;
        let mut h = leaf;
        let mut level = 0u32;
        emit(0, index, &h);
        while (index >> level) & 1 == 1 {
            let left = self.peaks.pop().expect("one peak per set bit of the size");
            h = proof::node_hash(&left, &h);
            level += 1;
            emit(level, index >> level, &h);
        }
        self.peaks.push(h);
        self.size += 1;
    }

    /// The tree's root hash (MTH of all its leaves).
    pub fn root(&self) -> Sha256 {
        let mut it = self.peaks.iter().rev();
        let Some(last) = it.next() else {
            return proof::EMPTY_ROOT;
        };
        it.fold(*last, |acc, p| proof::node_hash(p, &acc))
    }
}

/// Subtree hashes read through one view of the store.
struct Stored<'a> {
    tree: &'a Tree,
    view: &'a View,
    /// Leaf hashes of the blocks of 16 leaves read so far (by block number).
    blocks: Vec<(u64, Vec<Sha256>)>,
}

impl Stored<'_> {
    fn block(&mut self, block: u64, need: usize) -> Result<&[Sha256], TreeError> {
        if let Some(i) = self
            .blocks
            .iter()
            .position(|(b, l)| *b == block && l.len() >= need)
        {
            return Ok(&self.blocks[i].1);
        }
        let first = Seq(block * BLOCK + 1);
        let records = self.tree.log.stored_range_at(self.view, first, need)?;
        let mut leaves = Vec::with_capacity(need);
        for (i, (seq, value)) in records.iter().enumerate() {
            if seq.0 != first.0 + i as u64 {
                return Err(TreeError::Corrupt(format!(
                    "the log has no record at seq {}",
                    first.0 + i as u64
                )));
            }
            let (_, canonical) = split_stored(value)
                .ok_or_else(|| TreeError::Corrupt(format!("record {seq} is truncated")))?;
            leaves.push(proof::leaf_hash(canonical));
        }
        if leaves.len() < need {
            return Err(TreeError::Corrupt(format!(
                "the log ends before seq {}",
                first.0 + leaves.len() as u64
            )));
        }
        self.blocks.push((block, leaves));
        Ok(&self.blocks.last().expect("just pushed").1)
    }
}

impl Subtrees for Stored<'_> {
    type Error = TreeError;
    fn perfect(&mut self, level: u32, index: u64) -> Result<Sha256, TreeError> {
        if level >= STORED_MIN_LEVEL {
            return match self.view.get(&self.tree.ks, node_key(level, index))? {
                Some(v) => Sha256::from_slice(&v).ok_or_else(|| {
                    TreeError::Corrupt(format!("node ({level}, {index}) has {} bytes", v.len()))
                }),
                None => Err(TreeError::Corrupt(format!(
                    "node ({level}, {index}) is missing"
                ))),
            };
        }
        let start = index << level;
        let block = start / BLOCK;
        let offset = (start % BLOCK) as usize;
        let len = 1usize << level;
        let leaves = self.block(block, offset + len)?;
        Ok(proof::perfect_of(&leaves[offset..offset + len]))
    }
}

impl Tree {
    pub fn open(db: &Database, log: &Log) -> Result<Tree, TreeError> {
        Ok(Tree {
            ks: crate::storage::open_keyspace(db, "log_tree")?,
            log: log.clone(),
        })
    }

    /// Leaves in the tree as of `v`.
    pub fn size_at(&self, v: &View) -> Result<u64, TreeError> {
        match v.get(&self.ks, SIZE_KEY)? {
            None => Ok(0),
            Some(b) => <[u8; 8]>::try_from(&b[..])
                .map(u64::from_be_bytes)
                .map_err(|_| TreeError::Corrupt("bad size record".into())),
        }
    }

    fn source<'a>(&'a self, view: &'a View) -> Stored<'a> {
        Stored {
            tree: self,
            view,
            blocks: Vec::new(),
        }
    }

    /// The root hash of the tree of the first `size` leaves (`size` at most
    /// [`Tree::size_at`]).
    pub fn root_at(&self, v: &View, size: u64) -> Result<Sha256, TreeError> {
        proof::mth(&mut self.source(v), 0, size)
    }

    /// The inclusion proof (audit path) of leaf `index` in the tree of `size` leaves.
    pub fn inclusion_at(&self, v: &View, index: u64, size: u64) -> Result<Vec<Sha256>, TreeError> {
        proof::inclusion_path(&mut self.source(v), index, size)
    }

    /// The consistency proof from the tree of `m` leaves to the tree of `n`.
    pub fn consistency_at(&self, v: &View, m: u64, n: u64) -> Result<Vec<Sha256>, TreeError> {
        proof::consistency_path(&mut self.source(v), m, n)
    }

    /// The right edge of the tree of `size` leaves, read from the store.
    pub fn frontier_at(&self, v: &View, size: u64) -> Result<Frontier, TreeError> {
        let mut src = self.source(v);
        let mut f = Frontier {
            size,
            peaks: Vec::new(),
        };
        let mut offset = 0u64;
        for level in (0..64u32).rev() {
            if size >> level & 1 == 1 {
                f.peaks.push(src.perfect(level, offset >> level)?);
                offset += 1 << level;
            }
        }
        Ok(f)
    }

    fn stage(&self, batch: &mut OwnedWriteBatch, level: u32, index: u64, hash: &Sha256) {
        if level >= STORED_MIN_LEVEL {
            batch.insert(&self.ks, node_key(level, index), hash.0);
        }
    }

    fn stage_size(&self, batch: &mut OwnedWriteBatch, size: u64) {
        batch.insert(&self.ks, SIZE_KEY, size.to_be_bytes());
    }

    /// Brings the tree up to the log's head: builds what is missing from the
    /// records (all of it for a store written before the tree existed).
    /// Only while nothing else writes the log (start-up, offline commands).
    pub fn catch_up(&self, db: &Database) -> Result<CatchUp, TreeError> {
        let started = std::time::Instant::now();
        let view = db.snapshot();
        let from = self.size_at(&view)?;
        let head = self.log.head_at(&view)?.seq.0;
        if from > head {
            return Err(TreeError::Corrupt(format!(
                "the tree has {from} leaves but the log ends at seq {head}"
            )));
        }
        let mut frontier = self.frontier_at(&view, from)?;
        while frontier.size < head {
            let first = Seq(frontier.size + 1);
            let records = self.log.stored_range_at(&view, first, BUILD_CHUNK)?;
            let leaves: Vec<Result<Sha256, String>> = {
                use rayon::prelude::*;
                records
                    .par_iter()
                    .enumerate()
                    .map(|(i, (seq, value))| {
                        if seq.0 != first.0 + i as u64 {
                            return Err(format!(
                                "the log has no record at seq {}",
                                first.0 + i as u64
                            ));
                        }
                        split_stored(value)
                            .map(|(_, c)| proof::leaf_hash(c))
                            .ok_or_else(|| format!("record {seq} is truncated"))
                    })
                    .collect()
            };
            if leaves.is_empty() {
                return Err(TreeError::Corrupt(format!(
                    "the log ends at seq {} but its head says {head}",
                    frontier.size
                )));
            }
            let mut batch = db.batch();
            for leaf in leaves {
                let leaf = leaf.map_err(TreeError::Corrupt)?;
                frontier.append(leaf, |l, i, h| self.stage(&mut batch, l, i, h));
            }
            self.stage_size(&mut batch, frontier.size);
            batch.commit()?;
        }
        let done = CatchUp {
            from,
            to: head,
            seconds: started.elapsed().as_secs_f64(),
        };
        if from < head {
            tracing::info!(
                from_leaves = from,
                to_leaves = head,
                seconds = done.seconds,
                "built the log's Merkle tree from the records"
            );
        }
        Ok(done)
    }

    /// The writer's side: the tree's right edge at the committed head.
    pub fn writer(&self, db: &Database) -> Result<TreeWriter, TreeError> {
        let view = db.snapshot();
        let size = self.size_at(&view)?;
        Ok(TreeWriter {
            frontier: self.frontier_at(&view, size)?,
            tree: self.clone(),
        })
    }
}

/// What [`Tree::catch_up`] did.
#[derive(Debug, Clone, Copy)]
pub struct CatchUp {
    pub from: u64,
    pub to: u64,
    pub seconds: f64,
}

/// The tree as the writer extends it: appends stage their nodes into the
/// writer's batch; nothing is read. Public for the benchmarks (the tree's
/// share of a group-commit batch); the server's only user is the writer.
pub struct TreeWriter {
    tree: Tree,
    frontier: Frontier,
}

impl TreeWriter {
    /// Appends the leaf of a record's canonical bytes.
    pub fn append(&mut self, batch: &mut OwnedWriteBatch, canonical: &[u8]) {
        let tree = &self.tree;
        self.frontier
            .append(proof::leaf_hash(canonical), |l, i, h| {
                tree.stage(batch, l, i, h)
            });
    }

    /// Stages the tree's size (once per batch).
    pub fn stage_size(&self, batch: &mut OwnedWriteBatch) {
        self.tree.stage_size(batch, self.frontier.size);
    }

    /// The right edge, to restore after a batch that did not commit.
    pub(crate) fn mark(&self) -> Frontier {
        self.frontier.clone()
    }

    pub(crate) fn restore(&mut self, mark: Frontier) {
        self.frontier = mark;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frontier_root_is_the_tree_hash_at_every_size() {
        let leaves: Vec<Sha256> = (0u32..70)
            .map(|i| proof::leaf_hash(&i.to_le_bytes()))
            .collect();
        let mut f = Frontier::default();
        let mut stored = std::collections::HashMap::new();
        for (n, leaf) in leaves.iter().enumerate() {
            assert_eq!(
                f.root(),
                proof::mth(&mut proof::InMemory(&leaves), 0, n as u64).unwrap()
            );
            f.append(*leaf, |l, i, h| {
                stored.insert((l, i), *h);
            });
        }
        // Every emitted node is the perfect subtree it names.
        for ((l, i), h) in stored {
            let start = (i << l) as usize;
            assert_eq!(h, proof::perfect_of(&leaves[start..start + (1 << l)]));
        }
    }
}
