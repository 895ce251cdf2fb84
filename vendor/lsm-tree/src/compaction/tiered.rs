// Copyright (c) 2024-present, fjall-rs
// This source code is licensed under both the Apache 2.0 and MIT License
// (found in the LICENSE-* files in the repository)

// LEVIATHAN PATCH (see LEVIATHAN-PATCH.md): upstream's size-tiered strategy
// was a stub (`choose` was `unimplemented!()`, the module commented out).
// This is a run-count tiered strategy for keyspaces that are written with
// random keys and read only by scans (indexes, history).

use super::{Choice, CompactionStrategy, Input as CompactionInput};
use crate::{compaction::state::CompactionState, version::Version, Config, HashSet, KvPair};

#[doc(hidden)]
pub const NAME: &str = "TieredCompaction";

/// Tiered compaction strategy
///
/// L0 collects flushed memtables until it holds `l0_threshold` tables; they
/// are then merged into one new run of L1, beside L1's other runs. Every
/// level below collects runs the same way: once it holds `run_limit` runs,
/// all of them are merged into one new run of the next level. A byte is
/// rewritten once per level it passes (about log_{run_limit} of the tree's
/// size over a flush), against about `ratio` times per level in leveled
/// compaction, where random keys make every merge rewrite the whole
/// overlapping part of the next level.
///
/// The price is read amplification: a point read or a scan looks at every
/// run of every level (up to `run_limit - 1` per level below L0), and space:
/// an overwritten key keeps one version per run until the runs merge. Meant
/// for keys that are mostly inserted, not overwritten, and read by scans.
///
/// The last level only ever holds one run: a merge into it takes the whole
/// last level as well, so that tombstones may be dropped there (nothing
/// older is left beneath them).
#[derive(Clone, Debug)]
pub struct Strategy {
    l0_threshold: u8,

    run_limit: u8,

    /// The target table size on disk (possibly compressed).
    target_size: u64,
}

impl Default for Strategy {
    fn default() -> Self {
        Self {
            l0_threshold: 4,
            run_limit: 4,
            target_size: /* 64 MiB */ 64 * 1_024 * 1_024,
        }
    }
}

impl Strategy {
    /// Sets the L0 threshold: the tables L0 holds before they are merged
    /// into one run of L1.
    ///
    /// Default = 4
    #[must_use]
    pub fn with_l0_threshold(mut self, threshold: u8) -> Self {
        self.l0_threshold = threshold.max(2);
        self
    }

    /// Sets how many runs a level below L0 holds before they are merged into
    /// one run of the next level.
    ///
    /// Default = 4
    #[must_use]
    pub fn with_run_limit(mut self, runs: u8) -> Self {
        self.run_limit = runs.max(2);
        self
    }

    /// Sets the table target size on disk (possibly compressed).
    ///
    /// Default = 64 MiB
    #[must_use]
    pub fn with_table_target_size(mut self, bytes: u64) -> Self {
        self.target_size = bytes;
        self
    }

    fn input(&self, table_ids: HashSet<crate::TableId>, dest_level: usize) -> CompactionInput {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "level index is bounded by level count (7)"
        )]
        CompactionInput {
            table_ids,
            dest_level: dest_level as u8,
            canonical_level: dest_level as u8,
            target_size: self.target_size,
        }
    }
}

impl CompactionStrategy for Strategy {
    fn get_name(&self) -> &'static str {
        NAME
    }

    fn get_config(&self) -> Vec<KvPair> {
        vec![
            (
                crate::UserKey::from("tiered_l0_threshold"),
                crate::UserValue::from(self.l0_threshold.to_le_bytes()),
            ),
            (
                crate::UserKey::from("tiered_run_limit"),
                crate::UserValue::from(self.run_limit.to_le_bytes()),
            ),
            (
                crate::UserKey::from("tiered_target_size"),
                crate::UserValue::from(self.target_size.to_le_bytes()),
            ),
        ]
    }

    fn choose(&self, version: &Version, _: &Config, state: &CompactionState) -> Choice {
        assert!(version.level_count() == 7, "should have exactly 7 levels");
        let hidden = state.hidden_set();
        let last = version.level_count() - 1;

        // L0 first: fjall slows and then halts writes by its run count.
        let l0 = version.l0();
        if l0.table_count() >= usize::from(self.l0_threshold) && !version.level_is_busy(0, hidden)
        {
            let ids = l0.list_ids();
            // One run: its tables do not overlap, so they become a run of L1
            // as they are (L1's runs stay ordered newest first).
            return if l0.run_count() == 1 {
                Choice::Move(self.input(ids, 1))
            } else {
                Choice::Merge(self.input(ids, 1))
            };
        }

        for idx in 1..last {
            let Some(level) = version.level(idx) else {
                continue;
            };
            if level.run_count() < usize::from(self.run_limit) || version.level_is_busy(idx, hidden)
            {
                continue;
            }
            let dest = idx + 1;
            let mut ids = level.list_ids();
            if dest == last {
                if version.level_is_busy(last, hidden) {
                    continue;
                }
                if let Some(last_level) = version.level(last) {
                    ids.extend(last_level.list_ids());
                }
            }
            return Choice::Merge(self.input(ids, dest));
        }

        Choice::DoNothing
    }
}
