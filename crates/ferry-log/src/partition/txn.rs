//! The partition side of transactions: markers written for the coordinator, and what
//! DescribeProducers shows. The bookkeeping itself is `crate::transactions`.

use super::{AppendInfo, PartitionLog, must_roll, now_ms};
use crate::batch::{self, BatchHeader};
use crate::error::{Error, Result};
use crate::producers::ProducerSnapshot;

impl PartitionLog {
    /// Appends the control batch that commits or aborts `producer_id`'s transaction here. Like
    /// [`append`](Self::append) it is written but not fsynced; the caller flushes.
    ///
    /// Returns `Ok(None)` when nothing needs writing: the producer has no transaction open here and
    /// the marker would not move its epoch (a marker retried after a restart, or a partition the
    /// transaction added but never wrote to). A marker older than the producer's epoch here is
    /// [`Error::InvalidProducerEpoch`].
    pub fn append_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
    ) -> Result<Option<AppendInfo>> {
        let config = self.config();
        let now = now_ms();
        let mut marker =
            batch::control_batch(producer_id, producer_epoch, commit, coordinator_epoch, now);
        let mut header = BatchHeader::parse(&marker)?;

        let mut writer = self.writer.lock();
        if writer.deleted {
            return Err(Error::Deleted(self.dir.clone()));
        }
        writer.producers.check_marker(producer_id, producer_epoch)?;
        let open = self.txns.read().is_open(producer_id);
        let fences = writer
            .producers
            .epoch(producer_id)
            .is_some_and(|epoch| epoch < producer_epoch);
        if !open && !fences {
            return Ok(None);
        }
        let base_offset = writer.next_offset;
        batch::assign_offset(&mut marker, base_offset);
        header.base_offset = base_offset;
        header.partition_leader_epoch = 0;
        if must_roll(&writer.active, marker.len(), base_offset, now, &config) {
            self.roll(&mut writer)?;
        }
        writer.active.append(
            &marker,
            std::slice::from_ref(&header),
            config.index_interval_bytes,
            now,
        )?;
        writer.next_offset = base_offset + 1;
        writer.producers.apply(&header);
        {
            let hw = self.high_watermark();
            let mut txns = self.txns.write();
            txns.prune_completed(hw);
            txns.on_marker(producer_id, commit, base_offset);
        }
        let log_start_offset = {
            let mut view = self.view.write();
            view.log_end = base_offset + 1;
            view.log_start
        };
        tracing::debug!(dir = %self.dir.display(), producer_id, producer_epoch, commit, offset = base_offset, "wrote transaction marker");
        Ok(Some(AppendInfo {
            base_offset,
            last_offset: base_offset,
            end_offset: base_offset + 1,
            log_start_offset,
            duplicate: false,
        }))
    }

    /// Every producer with state here: epoch, last sequence and timestamp, and where its open
    /// transaction began (DescribeProducers).
    pub fn producers(&self) -> Vec<ProducerSnapshot> {
        let writer = self.writer.lock();
        let txns = self.txns.read();
        let mut out = writer.producers.snapshots();
        for p in &mut out {
            p.current_txn_start_offset = txns.open_since(p.producer_id).unwrap_or(-1);
        }
        out
    }
}
