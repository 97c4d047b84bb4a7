//! Retention: deleting whole closed segments, oldest first, by age and by total size, and those
//! wholly below a log start that DeleteRecords moved (Kafka's `deleteLogStartOffsetBreachedSegments`).

use super::PartitionLog;
use crate::error::Result;
use crate::segment;

impl PartitionLog {
    /// Deletes whole closed segments, oldest first, while they are past `retention.ms` (judged by
    /// their newest timestamp against `now_ms`) or the partition without them would still hold at
    /// least `retention.bytes`, or every record in them is below the log start. The active segment
    /// is never deleted. Returns how many were deleted.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<usize> {
        let config = self.config();
        // cleanup.policy=compact alone keeps every segment (DeleteRecords is refused there too);
        // the cleaner shrinks them instead.
        if !config.deletes() {
            return Ok(0);
        }
        let deleted = {
            // The writer lock keeps a roll from changing the segment list underneath.
            let _writer = self.writer.lock();
            let (segments, log_start) = {
                let view = self.view.read();
                (view.segments.clone(), view.log_start)
            };
            let mut total: u64 = segments.iter().map(|s| s.size()).sum();
            let closed = &segments[..segments.len() - 1];
            let mut count = 0;
            for (k, segment) in closed.iter().enumerate() {
                let below_start = segments[k + 1].base_offset() <= log_start;
                let expired = config
                    .retention_ms
                    .is_some_and(|ms| now_ms.saturating_sub(segment.retention_timestamp()) > ms);
                let oversized = config
                    .retention_bytes
                    .is_some_and(|max| total - segment.size() >= max);
                if !(expired || oversized || below_start) {
                    break;
                }
                total -= segment.size();
                count += 1;
            }
            if count == 0 {
                return Ok(0);
            }
            let mut view = self.view.write();
            let deleted: Vec<_> = view.segments.drain(..count).collect();
            // Never backwards: DeleteRecords may have put it inside the first remaining segment.
            view.log_start = view.log_start.max(view.segments[0].base_offset());
            self.txns.write().truncate_before(view.log_start);
            deleted
        };
        for segment in &deleted {
            tracing::info!(file = %segment.path().display(), "deleting segment past retention");
            segment.delete_files()?;
        }
        segment::sync_dir(&self.dir)?;
        Ok(deleted.len())
    }
}
