//! Log compaction (`cleanup.policy=compact`): keep the latest record per key in closed segments.
//!
//! Model (Kafka's `LogCleaner`): the closed segments of a partition split into a *clean* part
//! (already compacted, below the checkpoint) and a *dirty* part. A clean runs when the dirty part
//! is more than `min.cleanable.dirty.ratio` of both, or when its first segment is older than
//! `max.compaction.lag.ms`. Segments with records younger than `min.compaction.lag.ms`, and the
//! active segment, are never cleaned. A clean
//!
//! 1. builds an [`OffsetMap`] from each key to the offset of its latest record in the dirty part;
//! 2. rewrites every closed segment from the log start to the end of the map, grouped into
//!    segments of at most `segment.bytes`, keeping a record only if it is its key's latest
//!    (or past the map's end), dropping keyless records, and dropping tombstones (records with a
//!    null value) once their batch's delete horizon has passed;
//! 3. swaps each group's cleaned copy in for its source segments (see [`swap`]).
//!
//! What a cleaned batch looks like (as in Kafka): a batch whose records all stay is copied byte
//! for byte. Otherwise it is rebuilt with the same base offset, last offset delta, producer id,
//! epoch, base sequence, flags and codec, holding the surviving records with their original
//! offsets; offsets never move, they only get gaps. A batch left without records disappears,
//! except the last batch of each source segment and the last batch of each active idempotent
//! producer, which stay as empty batches (the first so the segment's end offset survives, the
//! second so the producer's sequence survives a restart). Tombstones follow KIP-534: the first
//! clean that keeps a tombstone stamps its batch with a delete horizon (now +
//! `delete.retention.ms`), and a later clean past the horizon removes it.
//!
//! Transactions: a simple rule that is always safe for now. Transactional and control batches
//! are copied unchanged, and their keys are not put into the offset map (so an aborted record can
//! never hide an earlier committed value). Removing aborted data and obsolete markers is left for
//! when the log tracks transaction state.
//!
//! Threads: [`PartitionLog::clean`](crate::PartitionLog::clean) runs on the caller's (blocking)
//! thread. It reads closed segments, which are immutable, without any partition lock, and takes
//! the writer lock only for the swap, checking then that the source segments are still in the
//! log (retention may have deleted them meanwhile; then the cleaned copy is discarded).

mod offset_map;
pub(crate) mod records;
pub(crate) mod swap;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub(crate) use offset_map::OffsetMap;

use crate::batch::BatchHeader;
use crate::config::LogConfig;
use crate::error::{IoContext, Result};
use crate::segment::Segment;

/// Tunables of the cleaner, shared by all partitions (Kafka's `log.cleaner.*` broker configs).
#[derive(Debug, Clone)]
pub struct CleanerOptions {
    /// Memory budget of one clean's offset map (`log.cleaner.dedupe.buffer.size`).
    pub dedupe_buffer_bytes: usize,
}

impl Default for CleanerOptions {
    fn default() -> Self {
        CleanerOptions {
            dedupe_buffer_bytes: 128 * 1024 * 1024,
        }
    }
}

/// What one clean of one partition did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CleanStats {
    /// The dirty ratio that triggered the clean.
    pub dirty_ratio: f64,
    /// Bytes of the segments rewritten.
    pub bytes_read: u64,
    /// Bytes of their cleaned copies.
    pub bytes_written: u64,
    /// Records looked at (in batches that were decoded).
    pub records_read: u64,
    /// Records of those that were kept.
    pub records_kept: u64,
    /// Segments replaced, and the segments that replaced them.
    pub segments_before: usize,
    pub segments_after: usize,
    /// Keys in the offset map.
    pub keys: usize,
    /// The new first dirty offset (the checkpoint).
    pub cleaned_to: i64,
    /// Wall time of the clean.
    pub duration: Duration,
}

/// What a partition's state says about cleaning it now.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    /// Index (into the closed segments) of the first dirty segment.
    pub(crate) first_dirty: usize,
    /// Index of the first segment that may not be cleaned yet.
    pub(crate) first_uncleanable: usize,
    pub(crate) dirty_ratio: f64,
}

/// Decides whether `closed` (a partition's closed segments, oldest first) needs a clean.
pub(crate) fn plan(
    closed: &[Arc<Segment>],
    checkpoint: i64,
    config: &LogConfig,
    now_ms: i64,
) -> Result<Option<Plan>> {
    // Segments holding records younger than min.compaction.lag.ms, and all after them, wait.
    let first_uncleanable = closed
        .iter()
        .position(|s| {
            config.min_compaction_lag_ms > 0
                && s.max_timestamp()
                    .is_some_and(|(ts, _)| now_ms.saturating_sub(ts) < config.min_compaction_lag_ms)
        })
        .unwrap_or(closed.len());
    let first_dirty = closed
        .partition_point(|s| s.next_offset() <= checkpoint)
        .min(first_uncleanable);
    let clean: u64 = closed[..first_dirty].iter().map(|s| s.size()).sum();
    let dirty: u64 = closed[first_dirty..first_uncleanable]
        .iter()
        .map(|s| s.size())
        .sum();
    if dirty == 0 {
        return Ok(None);
    }
    let dirty_ratio = dirty as f64 / (clean + dirty) as f64;
    let overdue = config.max_compaction_lag_ms < i64::MAX
        && first_timestamp(&closed[first_dirty])?
            .is_some_and(|ts| now_ms.saturating_sub(ts) > config.max_compaction_lag_ms);
    // Strictly greater, as Kafka compares.
    if dirty_ratio > config.min_cleanable_dirty_ratio || overdue {
        Ok(Some(Plan {
            first_dirty,
            first_uncleanable,
            dirty_ratio,
        }))
    } else {
        Ok(None)
    }
}

/// The first batch's max timestamp: how old the segment's oldest records are, near enough.
fn first_timestamp(segment: &Segment) -> Result<Option<i64>> {
    let mut first = None;
    segment.scan_headers(0, segment.size(), |_, h| {
        first = Some(h.max_timestamp);
        ControlFlow::Break(())
    })?;
    Ok(first.filter(|&ts| ts >= 0))
}

/// Every batch of a segment with its bytes, read in large chunks.
fn for_each_batch(
    segment: &Segment,
    mut f: impl FnMut(&BatchHeader, &[u8], bool) -> Result<()>,
) -> Result<()> {
    const CHUNK: usize = 1 << 20;
    let size = segment.size();
    let mut headers = Vec::new();
    segment.scan_headers(0, size, |pos, h| {
        headers.push((pos, *h));
        ControlFlow::Continue(())
    })?;
    let mut buf = Vec::new();
    let mut buf_start = 0u64;
    let last = headers.len().saturating_sub(1);
    for (i, (pos, header)) in headers.iter().enumerate() {
        let len = header.total_len();
        if *pos < buf_start || pos + len as u64 > buf_start + buf.len() as u64 {
            buf.clear();
            let want = (len.max(CHUNK) as u64).min(size - pos) as usize;
            segment.read_into(*pos, want, &mut buf)?;
            buf_start = *pos;
        }
        let from = (pos - buf_start) as usize;
        f(header, &buf[from..from + len], i == last)?;
    }
    Ok(())
}

/// Builds the offset map from `dirty` segments until the memory budget is reached. Returns the map
/// and how many of the segments it covers (at least one).
pub(crate) fn build_map(dirty: &[Arc<Segment>], budget: usize) -> Result<(OffsetMap, usize)> {
    let mut map = OffsetMap::new();
    let mut covered = 0;
    for segment in dirty {
        if covered > 0 && map.bytes() >= budget {
            break;
        }
        for_each_batch(segment, |h, batch, _| {
            if h.is_control() || h.is_transactional() {
                return Ok(());
            }
            let section = records::record_section(h, batch)?;
            for record in records::parse_records(&section, h.record_count)? {
                if let Some(key) = record.key {
                    map.put(key, h.base_offset + i64::from(record.offset_delta));
                }
            }
            Ok(())
        })?;
        covered += 1;
    }
    Ok((map, covered))
}

/// Splits `segments` into runs of consecutive segments that fit one segment file: at most
/// `segment.bytes` together and offsets within `u32` of the first base (index entries are u32).
pub(crate) fn group_segments(segments: &[Arc<Segment>], max_bytes: u64) -> Vec<Vec<Arc<Segment>>> {
    let mut groups: Vec<Vec<Arc<Segment>>> = Vec::new();
    let mut size = 0;
    for segment in segments {
        let fits = groups.last().is_some_and(|g| {
            size + segment.size() <= max_bytes
                && segment.next_offset() - g[0].base_offset() <= i64::from(u32::MAX)
        });
        if fits {
            size += segment.size();
            groups.last_mut().unwrap().push(segment.clone());
        } else {
            size = segment.size();
            groups.push(vec![segment.clone()]);
        }
    }
    groups
}

/// What the record filter needs besides the map.
pub(crate) struct FilterContext<'a> {
    pub(crate) map: &'a OffsetMap,
    pub(crate) now_ms: i64,
    pub(crate) delete_retention_ms: i64,
    /// Each idempotent producer's last batch in the log, by its last offset.
    pub(crate) producers_last: &'a HashMap<i64, i64>,
}

/// The last offset of each producer id's last batch in `segments`.
pub(crate) fn producers_last(segments: &[Arc<Segment>]) -> Result<HashMap<i64, i64>> {
    let mut last = HashMap::new();
    for segment in segments {
        segment.scan_headers(0, segment.size(), |_, h| {
            if h.producer_id >= 0 {
                last.insert(h.producer_id, h.last_offset());
            }
            ControlFlow::Continue(())
        })?;
    }
    Ok(last)
}

/// Writes the cleaned copy of `group` to `<first base>.log.cleaned` in `dir`, fsynced, and adds to
/// `stats`.
pub(crate) fn clean_group(
    dir: &Path,
    group: &[Arc<Segment>],
    ctx: &FilterContext<'_>,
    stats: &mut CleanStats,
) -> Result<()> {
    let path = swap::cleaned_path(dir, group[0].base_offset());
    let file = File::create(&path).at(&path)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut batch_out = Vec::new();
    for segment in group {
        stats.bytes_read += segment.size();
        for_each_batch(segment, |h, batch, last_in_segment| {
            batch_out.clear();
            filter_batch(h, batch, last_in_segment, ctx, stats, &mut batch_out)?;
            stats.bytes_written += batch_out.len() as u64;
            out.write_all(&batch_out).at(&path)
        })?;
    }
    let file = out.into_inner().map_err(|e| e.into_error()).at(&path)?;
    file.sync_all().at(&path)?;
    Ok(())
}

/// Appends to `out` what survives of one batch.
fn filter_batch(
    h: &BatchHeader,
    batch: &[u8],
    last_in_segment: bool,
    ctx: &FilterContext<'_>,
    stats: &mut CleanStats,
    out: &mut Vec<u8>,
) -> Result<()> {
    if h.is_control() || h.is_transactional() {
        out.extend_from_slice(batch);
        return Ok(());
    }
    let section = records::record_section(h, batch)?;
    let all = records::parse_records(&section, h.record_count)?;
    let horizon = records::delete_horizon(h);
    let retain_deletes = horizon.is_none_or(|at| ctx.now_ms < at);
    let kept: Vec<_> = all
        .iter()
        .filter(|r| {
            let offset = h.base_offset + i64::from(r.offset_delta);
            if offset > ctx.map.latest_offset() {
                return true;
            }
            match r.key {
                // A compacted log has no use for a record without a key (Kafka drops them too).
                None => false,
                Some(key) => offset >= ctx.map.get(key) && (r.has_value || retain_deletes),
            }
        })
        .copied()
        .collect();
    stats.records_read += all.len() as u64;
    stats.records_kept += kept.len() as u64;
    let needs_horizon = horizon.is_none() && kept.iter().any(|r| !r.has_value);
    if kept.len() == all.len() && !needs_horizon {
        out.extend_from_slice(batch);
    } else if !kept.is_empty() {
        let new_horizon = needs_horizon.then(|| ctx.now_ms.saturating_add(ctx.delete_retention_ms));
        records::write_filtered(out, h, &kept, new_horizon)?;
    } else if last_in_segment
        || (h.producer_id >= 0 && ctx.producers_last.get(&h.producer_id) == Some(&h.last_offset()))
    {
        records::write_empty(out, h);
    }
    Ok(())
}

/// Whether `FERRY_TEST_CLEANER_PAUSE` asks the cleaner to stop at `stage` (see [`pause_for_test`]).
pub(crate) fn pause_requested(stage: &str) -> bool {
    std::env::var("FERRY_TEST_CLEANER_PAUSE").is_ok_and(|s| s == stage)
}

/// Test-only fault injection for the crash test: with `FERRY_TEST_CLEANER_PAUSE` set to a stage
/// name (`cleaned` or `swap`), the cleaner stops for good at that stage, so that the test can kill
/// the process with the swap half done. Never set in production.
pub(crate) fn pause_for_test(stage: &str) {
    if pause_requested(stage) {
        tracing::warn!(
            stage,
            "FERRY_TEST_CLEANER_PAUSE: cleaner stopped for a crash test"
        );
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}
