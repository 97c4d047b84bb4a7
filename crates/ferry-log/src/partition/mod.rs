//! One partition's log: an ordered list of segments, the last of which takes appends.
//!
//! Three offsets describe the log: the *log start* (base of the first segment; retention moves it
//! forward), the *log end* (next offset to assign; moves with every append) and the *durable end* or
//! high watermark (everything below it is fsynced). Readers see only data below the durable end, so
//! a consumer never observes a record that a crash could take back.
//!
//! Locks, in the order they may be taken:
//! * `flusher` serializes fsyncs. `flush_to` takes it, re-checks whether another caller already made
//!   its offset durable, and otherwise fsyncs everything written so far: this is the group commit
//!   that lets concurrent producers share one fsync.
//! * `writer` serializes appends, segment rolls and retention. It is held for the `write` system
//!   call but never for a group-commit fsync, so appends continue while a flush is in progress.
//!   It also guards the idempotent producers' sequence state (see `crate::producers`), which is
//!   checked before a payload is written and updated after.
//! * `view` (a short `RwLock`) holds the segment list and the three offsets. Readers snapshot it and
//!   release it before any file I/O; segments are `Arc`s, so a segment deleted by retention stays
//!   readable by whoever already holds it.

mod compact;
mod read;
mod retention;
mod start;
mod txn;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};

use crate::batch::{self, validate_batches};
use crate::config::LogConfig;
use crate::error::{Error, IoContext, Result};
use crate::producers::{Checked, ProducerStates};
use crate::segment::{self, Segment};
use crate::transactions::{AbortedTxn, Transactions};

/// Called (from whichever thread advanced it) after the durable end of a partition moves forward.
/// It should be cheap, e.g. waking waiting fetches and acks=all produces.
pub type DurableListener = Arc<dyn Fn() + Send + Sync>;

/// Where the durable end is: an offset and the byte position it corresponds to in its segment.
#[derive(Debug, Clone, Copy)]
struct DurablePoint {
    end: i64,
    segment_base: i64,
    position: u64,
}

impl DurablePoint {
    /// How many bytes of `segment` are durable. Segments before the durable one are closed (and were
    /// fsynced when they closed), so all of them is; segments after it, none.
    fn readable_len(&self, segment: &Segment) -> u64 {
        match segment.base_offset().cmp(&self.segment_base) {
            std::cmp::Ordering::Less => segment.size(),
            std::cmp::Ordering::Equal => self.position,
            std::cmp::Ordering::Greater => 0,
        }
    }
}

#[derive(Debug)]
struct View {
    segments: Vec<Arc<Segment>>,
    log_start: i64,
    log_end: i64,
    durable: DurablePoint,
}

struct Writer {
    active: Arc<Segment>,
    next_offset: i64,
    /// Set when the topic is deleted: later appends fail instead of writing into a removed directory.
    deleted: bool,
    /// Idempotent producers' sequences: only appends change them, so they share the append lock.
    producers: ProducerStates,
}

/// What an append assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the first record appended.
    pub base_offset: i64,
    /// Offset of the last record appended.
    pub last_offset: i64,
    /// The log end after the append: the next offset to assign.
    pub end_offset: i64,
    /// The log start offset at the time of the append.
    pub log_start_offset: i64,
    /// The payload was a retry of batches already in the log: nothing was written, and the offsets
    /// are those of the originals (`end_offset` is one past the original last offset).
    pub duplicate: bool,
}

/// Whole batches read from the log, with the partition's offsets at the time of the read.
#[derive(Clone, PartialEq, Eq)]
pub struct ReadResult {
    /// Whole batches, verbatim, back to back.
    pub records: Vec<u8>,
    /// The durable end when the read started.
    pub high_watermark: i64,
    /// The log start when the read started.
    pub log_start_offset: i64,
    /// The last stable offset when the read started (see `crate::transactions`).
    pub last_stable_offset: i64,
    /// For a `read_committed` read: the aborted transactions overlapping the records returned,
    /// which the consumer must drop. `None` for `read_uncommitted`.
    pub aborted_transactions: Option<Vec<AbortedTxn>>,
}

impl std::fmt::Debug for ReadResult {
    // Record bytes are payload: show their size, not their content.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadResult")
            .field("records_len", &self.records.len())
            .field("high_watermark", &self.high_watermark)
            .field("log_start_offset", &self.log_start_offset)
            .field("last_stable_offset", &self.last_stable_offset)
            .field("aborted_transactions", &self.aborted_transactions)
            .finish()
    }
}

/// A partition's durable, append-only log. `Send + Sync`; share it as `Arc<PartitionLog>`.
pub struct PartitionLog {
    dir: PathBuf,
    config: RwLock<LogConfig>,
    listener: DurableListener,
    flusher: Mutex<()>,
    writer: Mutex<Writer>,
    view: RwLock<View>,
    /// Open transactions and aborted ones; written under `writer`, read by fetches without it.
    txns: RwLock<Transactions>,
}

impl std::fmt::Debug for PartitionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let view = self.view.read();
        f.debug_struct("PartitionLog")
            .field("dir", &self.dir)
            .field("segments", &view.segments.len())
            .field("log_start", &view.log_start)
            .field("log_end", &view.log_end)
            .field("high_watermark", &view.durable.end)
            .finish()
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl PartitionLog {
    /// Opens the partition in `dir`, creating it if needed, and recovers it: closed segments load
    /// (or rebuild) their indexes, the active segment is checked batch by batch and truncated at the
    /// first torn or invalid batch. Afterwards everything in the log is durable. Idempotent
    /// producers' state is rebuilt from the headers of every batch in the log.
    pub fn open(dir: &Path, config: LogConfig, listener: DurableListener) -> Result<PartitionLog> {
        fs::create_dir_all(dir).at(dir)?;
        // Finish or undo a clean that a crash interrupted, before the segments are listed.
        crate::cleaner::swap::recover(dir)?;
        let bases = list_segments(dir)?;
        let interval = config.index_interval_bytes;
        let mut segments = Vec::with_capacity(bases.len().max(1));
        for pair in bases.windows(2) {
            segments.push(Arc::new(Segment::open_closed(
                dir, pair[0], pair[1], interval,
            )?));
        }
        let active = match bases.last() {
            Some(&base) => Segment::recover_active(dir, base, interval, now_ms())?,
            None => {
                let segment = Segment::create(dir, 0)?;
                segment::sync_dir(dir)?;
                segment
            }
        };
        let active = Arc::new(active);
        segments.push(active.clone());
        let log_end = active.next_offset();
        let (producers, txns) = crate::transactions::rebuild(&segments)?;
        let view = View {
            // DeleteRecords may have moved it into the first segment (see `start.rs`).
            log_start: start::initial(dir, segments[0].base_offset(), log_end)?,
            log_end,
            durable: DurablePoint {
                end: log_end,
                segment_base: active.base_offset(),
                position: active.size(),
            },
            segments,
        };
        Ok(PartitionLog {
            dir: dir.to_path_buf(),
            config: RwLock::new(config),
            listener,
            flusher: Mutex::new(()),
            writer: Mutex::new(Writer {
                active,
                next_offset: log_end,
                deleted: false,
                producers,
            }),
            view: RwLock::new(view),
            txns: RwLock::new(txns),
        })
    }

    /// The partition's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Validates `records` and appends them, assigning consecutive offsets by rewriting each batch's
    /// `baseOffset` (and zeroing its `partitionLeaderEpoch`). The data is written but not fsynced; see
    /// [`flush_to`](Self::flush_to). All or nothing: an invalid payload writes nothing.
    ///
    /// Batches of idempotent producers (producer id >= 0) must come in sequence, else the payload is
    /// [`Error::OutOfOrderSequence`] or [`Error::InvalidProducerEpoch`]. A retry of batches among the
    /// producer's last five writes nothing and returns the original offsets, with
    /// [`AppendInfo::duplicate`] set.
    pub fn append(&self, records: &[u8]) -> Result<AppendInfo> {
        let mut headers = validate_batches(records)?;
        if headers.iter().any(|h| h.is_control()) {
            // Markers are the coordinator's (see `append_marker`); a client's would forge a decision.
            return Err(Error::InvalidRecords(
                "control batches are written by the broker only".into(),
            ));
        }
        let config = self.config.read().clone();
        if let Some(h) = headers
            .iter()
            .find(|h| h.total_len() > config.max_message_bytes as usize)
        {
            return Err(Error::RecordTooLarge {
                size: h.total_len(),
                max: config.max_message_bytes,
            });
        }
        // Copy before taking the lock: the rewrite needs a mutable buffer and the copy is the slow part.
        let mut batches = records.to_vec();
        let now = now_ms();

        let mut writer = self.writer.lock();
        if writer.deleted {
            return Err(Error::Deleted(self.dir.clone()));
        }
        let base_offset = writer.next_offset;
        let mut next = base_offset;
        let mut pos = 0;
        for header in &mut headers {
            batch::assign_offset(&mut batches[pos..], next);
            header.base_offset = next;
            header.partition_leader_epoch = 0;
            next = header.next_offset();
            pos += header.total_len();
        }
        if let Checked::Duplicate {
            base_offset,
            last_offset,
        } = writer.producers.check(&headers)?
        {
            return Ok(AppendInfo {
                base_offset,
                last_offset,
                end_offset: last_offset + 1,
                log_start_offset: self.log_start_offset(),
                duplicate: true,
            });
        }
        if must_roll(&writer.active, batches.len(), next - 1, now, &config) {
            self.roll(&mut writer)?;
        }
        writer
            .active
            .append(&batches, &headers, config.index_interval_bytes, now)?;
        writer.next_offset = next;
        writer.producers.record(&headers);
        {
            let mut txns = self.txns.write();
            for header in &headers {
                txns.on_data(header);
            }
        }
        let log_start_offset = {
            let mut view = self.view.write();
            view.log_end = next;
            view.log_start
        };
        Ok(AppendInfo {
            base_offset,
            last_offset: next - 1,
            end_offset: next,
            log_start_offset,
            duplicate: false,
        })
    }

    /// Closes the active segment (fsync, index files) and starts a new one at the log end. Everything
    /// in the closed segment is now durable, so the durable end moves up to it.
    fn roll(&self, writer: &mut Writer) -> Result<()> {
        writer.active.close()?;
        let new = Arc::new(Segment::create(&self.dir, writer.next_offset)?);
        // Makes the new segment file and the renamed index files of the old one durable.
        segment::sync_dir(&self.dir)?;
        tracing::debug!(dir = %self.dir.display(), base_offset = writer.next_offset, "rolled segment");
        self.view.write().segments.push(new.clone());
        writer.active = new;
        self.advance_durable(DurablePoint {
            end: writer.next_offset,
            segment_base: writer.next_offset,
            position: 0,
        });
        Ok(())
    }

    fn advance_durable(&self, point: DurablePoint) {
        let advanced = {
            let mut view = self.view.write();
            let advanced = point.end > view.durable.end;
            if advanced {
                view.durable = point;
            }
            advanced
        };
        if advanced {
            (self.listener)();
        }
    }

    /// Blocks until every offset below `end_offset` is fsynced (or, if `end_offset` is beyond the log
    /// end, until everything written is). Concurrent callers share fsyncs: one fsyncs all data
    /// written so far while the others wait on the flush lock, then find their offset durable.
    pub fn flush_to(&self, end_offset: i64) -> Result<()> {
        if self.high_watermark() >= end_offset {
            return Ok(());
        }
        let _flushing = self.flusher.lock();
        if self.high_watermark() >= end_offset {
            return Ok(());
        }
        let (segment, point) = {
            let writer = self.writer.lock();
            let point = DurablePoint {
                end: writer.next_offset,
                segment_base: writer.active.base_offset(),
                position: writer.active.size(),
            };
            (writer.active.clone(), point)
        };
        // Earlier segments were fsynced when they were rolled, so the active one is all that is left.
        segment.sync()?;
        self.advance_durable(point);
        Ok(())
    }

    /// fsyncs everything written (used at shutdown).
    pub fn flush(&self) -> Result<()> {
        self.flush_to(self.log_end_offset())
    }

    /// The first offset of the log.
    pub fn log_start_offset(&self) -> i64 {
        self.view.read().log_start
    }

    /// The durable end (exclusive): what consumers may read.
    pub fn high_watermark(&self) -> i64 {
        self.view.read().durable.end
    }

    /// The written end (exclusive): the next offset to assign. Ahead of the high watermark until flushed.
    pub fn log_end_offset(&self) -> i64 {
        self.view.read().log_end
    }

    /// The partition's current configuration.
    pub fn config(&self) -> LogConfig {
        self.config.read().clone()
    }

    /// Replaces the configuration; it applies from the next append or retention pass.
    pub fn set_config(&self, config: LogConfig) {
        *self.config.write() = config;
    }

    /// The last stable offset: what `read_committed` consumers may read (see `crate::transactions`).
    pub fn last_stable_offset(&self) -> i64 {
        let hw = self.high_watermark();
        self.txns.read().last_stable_offset(hw)
    }

    /// How many idempotent producer ids this partition keeps sequence state for.
    pub fn producer_count(&self) -> usize {
        self.writer.lock().producers.len()
    }

    /// Bytes of all segment files.
    pub fn size_bytes(&self) -> u64 {
        self.view.read().segments.iter().map(|s| s.size()).sum()
    }

    /// Stops all further appends: called when the topic is deleted, so that a holder of this log
    /// cannot write into (or roll a segment into) a directory that is gone or reused.
    pub(crate) fn mark_deleted(&self) {
        self.writer.lock().deleted = true;
    }
}

/// Whether the next append of `incoming` bytes ending at `last_offset` must go to a new segment.
fn must_roll(
    active: &Segment,
    incoming: usize,
    last_offset: i64,
    now: i64,
    config: &LogConfig,
) -> bool {
    if active.is_empty() {
        // A batch larger than segment.bytes still has to go somewhere.
        return false;
    }
    // Index entries hold positions and relative offsets as u32.
    let max_size = config.segment_bytes.min(u64::from(u32::MAX));
    active.size() + incoming as u64 > max_size
        || active
            .rolling_base_ms()
            .is_some_and(|base| now.saturating_sub(base) > config.segment_ms as i64)
        || last_offset - active.base_offset() > i64::from(u32::MAX)
}

/// Base offsets of the segment files in `dir`, ascending. Also clears what an interrupted operation
/// can leave behind: temporary files and index files whose segment is gone.
fn list_segments(dir: &Path) -> Result<Vec<i64>> {
    let mut bases = Vec::new();
    let mut indexes = Vec::new();
    for entry in fs::read_dir(dir).at(dir)? {
        let path = entry.at(dir)?.path();
        let (Some(stem), Some(ext)) = (path.file_stem(), path.extension()) else {
            continue;
        };
        let base = stem
            .to_str()
            .filter(|s| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<i64>().ok());
        match (ext.to_str(), base) {
            (Some("log"), Some(base)) => bases.push(base),
            (Some("index" | "timeindex"), Some(base)) => indexes.push((base, path)),
            (Some("tmp"), _) => segment::remove_if_present(&path)?,
            _ => {}
        }
    }
    bases.sort_unstable();
    for (base, path) in indexes {
        if bases.binary_search(&base).is_err() {
            segment::remove_if_present(&path)?;
        }
    }
    Ok(bases)
}
