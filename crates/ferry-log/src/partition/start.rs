//! The log start offset that DeleteRecords moves, kept durably beside the segments.
//!
//! Without DeleteRecords the log start is the base of the first segment, which retention moves
//! by deleting whole segments. DeleteRecords (Kafka's `deleteRecordsOnLocalLog`) moves it to any
//! offset up to the high watermark, usually into the middle of a segment: reads below it are
//! [`Error::OffsetOutOfRange`], ListOffsets EARLIEST answers it, and retention deletes every
//! segment that lies wholly below it. The offset is written to `log-start-offset` (write, fsync,
//! rename, fsync the directory) before the call returns, so it survives a crash; on open the log
//! start is the larger of that file and the first segment's base (Kafka keeps the same thing in
//! its `log-start-offset-checkpoint`).

use std::fs;
use std::path::Path;

use super::PartitionLog;
use crate::error::{Error, IoContext, Result};
use crate::segment;

const FILE: &str = "log-start-offset";

impl PartitionLog {
    /// Moves the log start up to `offset` (DeleteRecords): records below it can no longer be read.
    /// `offset` may be at most the high watermark, else [`Error::OffsetOutOfRange`]; an offset at or
    /// below the current log start changes nothing. Returns the log start afterwards (Kafka's low
    /// watermark). Blocking: returns after the new start is fsynced.
    pub fn delete_records_before(&self, offset: i64) -> Result<i64> {
        // The writer lock orders this against retention (which also moves the log start) and
        // against another DeleteRecords, so the file and the view never disagree.
        let _writer = self.writer.lock();
        let (start, high_watermark) = {
            let view = self.view.read();
            (view.log_start, view.durable.end)
        };
        if offset > high_watermark || offset < 0 {
            return Err(Error::OffsetOutOfRange {
                requested: offset,
                start,
                end: high_watermark,
            });
        }
        if offset <= start {
            return Ok(start);
        }
        segment::write_atomically(&self.dir.join(FILE), offset.to_string().as_bytes())?;
        segment::sync_dir(&self.dir)?;
        self.view.write().log_start = offset;
        tracing::info!(dir = %self.dir.display(), log_start = offset, "records deleted up to the new log start");
        Ok(offset)
    }
}

/// The log start at open: the persisted one if it is above the first segment's base, but never
/// past the log end (a log emptied by hand, or recovered shorter than the file says).
pub(super) fn initial(dir: &Path, first_base: i64, log_end: i64) -> Result<i64> {
    let path = dir.join(FILE);
    let saved = match fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse::<i64>()
            .map_err(|e| Error::CorruptMetadata {
                path: path.clone(),
                reason: e.to_string(),
            })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(first_base),
        Err(e) => return Err(e).at(&path),
    };
    Ok(saved.max(first_base).min(log_end.max(first_base)))
}
