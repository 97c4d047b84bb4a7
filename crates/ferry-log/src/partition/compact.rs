//! The partition side of compaction: deciding, running and swapping in a clean (the algorithm is
//! in `crate::cleaner`).

use std::collections::HashSet;
use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use parking_lot::Mutex;

use super::PartitionLog;
use crate::cleaner::{self, CleanStats, CleanerOptions, FilterContext, swap};
use crate::error::{IoContext, Result};
use crate::segment::{self, Segment};

/// Partitions being cleaned right now, so that two callers never clean one partition at once
/// (the broker runs one cleaner task; this guards tools and tests that call `clean` too).
static CLEANING: LazyLock<Mutex<HashSet<PathBuf>>> = LazyLock::new(Default::default);

struct CleaningGuard(PathBuf);

impl Drop for CleaningGuard {
    fn drop(&mut self) {
        CLEANING.lock().remove(&self.0);
    }
}

impl PartitionLog {
    /// Compacts the partition if its `cleanup.policy` includes `compact` and it is due (dirty
    /// ratio, compaction lags; see `crate::cleaner`). Returns what the clean did, or `None` when
    /// nothing was due (or another caller is cleaning this partition). Blocking; long.
    pub fn clean(&self, now_ms: i64, options: &CleanerOptions) -> Result<Option<CleanStats>> {
        let config = self.config();
        if !config.compacts() {
            return Ok(None);
        }
        if !CLEANING.lock().insert(self.dir.clone()) {
            return Ok(None);
        }
        let _guard = CleaningGuard(self.dir.clone());
        let started = Instant::now();

        let segments = self.view.read().segments.clone();
        let closed = &segments[..segments.len() - 1];
        let checkpoint = swap::read_checkpoint(&self.dir)?.unwrap_or(i64::MIN);
        let Some(plan) = cleaner::plan(closed, checkpoint, &config, now_ms)? else {
            return Ok(None);
        };
        let (map, covered) = cleaner::build_map(
            &closed[plan.first_dirty..plan.first_uncleanable],
            options.dedupe_buffer_bytes,
        )?;
        let map_end = plan.first_dirty + covered;
        let cleaned_to = closed[map_end - 1].next_offset();
        let producers_last = cleaner::producers_last(&segments)?;
        let ctx = FilterContext {
            map: &map,
            now_ms,
            delete_retention_ms: config.delete_retention_ms,
            producers_last: &producers_last,
        };
        let mut stats = CleanStats {
            dirty_ratio: plan.dirty_ratio,
            keys: map.len(),
            cleaned_to,
            ..CleanStats::default()
        };
        let max_bytes = config.segment_bytes.min(u64::from(u32::MAX));
        for group in cleaner::group_segments(&closed[..map_end], max_bytes) {
            cleaner::clean_group(&self.dir, &group, &ctx, &mut stats)?;
            if !self.swap_in(&group, config.index_interval_bytes)? {
                tracing::info!(dir = %self.dir.display(), "segments changed during the clean; it stops here");
                return Ok(None);
            }
            stats.segments_before += group.len();
            stats.segments_after += 1;
        }
        swap::write_checkpoint(&self.dir, cleaned_to)?;
        stats.duration = started.elapsed();
        tracing::info!(
            dir = %self.dir.display(),
            dirty_ratio = stats.dirty_ratio,
            bytes_read = stats.bytes_read,
            bytes_written = stats.bytes_written,
            records_kept = stats.records_kept,
            records_read = stats.records_read,
            "cleaned partition"
        );
        Ok(Some(stats))
    }

    /// Replaces `old` (consecutive segments still in the log) with the cleaned copy waiting in
    /// `<base>.log.cleaned`. Returns `false`, having discarded the copy, if the log no longer holds
    /// exactly those segments there (retention or a deletion got to them first).
    fn swap_in(&self, old: &[Arc<Segment>], interval: u32) -> Result<bool> {
        let dir = &self.dir;
        let base = old[0].base_offset();
        let end = old[old.len() - 1].next_offset();
        let cleaned = swap::cleaned_path(dir, base);
        cleaner::pause_for_test("cleaned");
        let writer = self.writer.lock();
        let at = {
            let view = self.view.read();
            view.segments
                .iter()
                .position(|s| Arc::ptr_eq(s, &old[0]))
                .filter(|&i| {
                    view.segments.len() > i + old.len()
                        && view.segments[i..i + old.len()]
                            .iter()
                            .zip(old)
                            .all(|(a, b)| Arc::ptr_eq(a, b))
                })
        };
        let Some(at) = at.filter(|_| !writer.deleted) else {
            segment::remove_if_present(&cleaned)?;
            return Ok(false);
        };
        let swap_file = swap::swap_path(dir, base);
        fs::rename(&cleaned, &swap_file).at(&cleaned)?;
        segment::sync_dir(dir)?;
        if cleaner::pause_requested("swap") {
            // Appends go on (the crash test keeps producing); the swap never finishes.
            drop(writer);
            cleaner::pause_for_test("swap");
        }
        for segment in old {
            swap::delete_segment_files(dir, segment.base_offset())?;
        }
        fs::rename(&swap_file, segment::log_path(dir, base)).at(&swap_file)?;
        let new = Arc::new(Segment::open_rebuilt(dir, base, end, interval)?);
        segment::sync_dir(dir)?;
        self.view.write().segments.splice(at..at + old.len(), [new]);
        Ok(true)
    }

    /// The offset below which the partition has been compacted (the cleaner checkpoint), if any.
    pub fn cleaner_checkpoint(&self) -> Result<Option<i64>> {
        swap::read_checkpoint(&self.dir)
    }
}
