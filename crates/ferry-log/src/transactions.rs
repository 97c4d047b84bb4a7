//! Transactions as one partition sees them (KIP-98): which producers have a transaction open here,
//! the *last stable offset*, and the index of aborted transactions.
//!
//! A transactional producer's first batch in a partition opens its transaction there; the control
//! batch (marker) the coordinator writes later closes it, as committed or aborted. Readers in
//! `read_committed` mode must not read past the first offset of a transaction still open, so the
//! partition's *last stable offset* (LSO) is the smaller of the high watermark and the first offset
//! of the earliest transaction that is not yet decided *durably*: a transaction stays unstable until
//! its marker is below the high watermark, as in Kafka, so a consumer never acts on a decision that
//! a crash could take back.
//!
//! Aborted transactions are listed (producer id, first offset, marker offset) so a fetch can tell a
//! `read_committed` consumer which records to drop; Kafka keeps that list in a `.txnindex` file per
//! segment. Here, like the producers' sequence state, it is rebuilt from the log on open
//! ([`rebuild`]), which reads batch headers and, for markers, the 4-byte record key that says commit
//! or abort; entries below the log start are dropped when retention deletes segments.
//!
//! The state lives behind its own `RwLock` in the partition: appends (under the writer lock) update
//! it, fetches read it without touching the writer lock.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use crate::batch::{self, BatchHeader, MARKER_PREFIX_LEN};
use crate::error::Result;
use crate::producers::ProducerStates;
use crate::segment::Segment;

/// One aborted transaction in a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    /// The transaction's producer id.
    pub producer_id: i64,
    /// Offset of its first batch in this partition.
    pub first_offset: i64,
    /// Offset of its abort marker.
    pub last_offset: i64,
}

/// Open and recently closed transactions of one partition.
#[derive(Debug, Default)]
pub(crate) struct Transactions {
    /// Producer id -> first offset of its open transaction here.
    ongoing: HashMap<i64, i64>,
    /// Closed transactions whose marker may not be durable yet: (first offset, marker offset).
    /// Pruned once the high watermark passes the marker.
    completing: Vec<(i64, i64)>,
    /// Aborted transactions in marker order (so ordered by `last_offset`).
    aborted: Vec<AbortedTxn>,
}

impl Transactions {
    /// A written data batch: a transactional one opens its producer's transaction if none is open.
    pub(crate) fn on_data(&mut self, header: &BatchHeader) {
        if header.is_transactional() && !header.is_control() && header.producer_id >= 0 {
            self.ongoing
                .entry(header.producer_id)
                .or_insert(header.base_offset);
        }
    }

    /// A written marker at `offset` closes `producer_id`'s transaction. Returns whether one was open.
    pub(crate) fn on_marker(&mut self, producer_id: i64, commit: bool, offset: i64) -> bool {
        let Some(first_offset) = self.ongoing.remove(&producer_id) else {
            return false;
        };
        self.completing.push((first_offset, offset));
        if !commit {
            self.aborted.push(AbortedTxn {
                producer_id,
                first_offset,
                last_offset: offset,
            });
        }
        true
    }

    /// First offset of `producer_id`'s open transaction.
    pub(crate) fn open_since(&self, producer_id: i64) -> Option<i64> {
        self.ongoing.get(&producer_id).copied()
    }

    /// Whether `producer_id` has a transaction open here.
    pub(crate) fn is_open(&self, producer_id: i64) -> bool {
        self.ongoing.contains_key(&producer_id)
    }

    /// The last stable offset for high watermark `hw`.
    pub(crate) fn last_stable_offset(&self, hw: i64) -> i64 {
        let open = self.ongoing.values().copied();
        let undecided = self
            .completing
            .iter()
            .filter(|(_, marker)| *marker >= hw)
            .map(|(first, _)| *first);
        open.chain(undecided).fold(hw, i64::min)
    }

    /// Forgets closed transactions whose marker is durable (below `hw`).
    pub(crate) fn prune_completed(&mut self, hw: i64) {
        self.completing.retain(|(_, marker)| *marker >= hw);
    }

    /// Aborted transactions that overlap `[from, to)`: their marker is at or after `from` and they
    /// began before `to`. This is what a fetch of that range must report.
    pub(crate) fn aborted_between(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        let start = self.aborted.partition_point(|a| a.last_offset < from);
        self.aborted[start..]
            .iter()
            .filter(|a| a.first_offset < to)
            .copied()
            .collect()
    }

    /// Drops aborted transactions wholly below `log_start` (their segments are gone).
    pub(crate) fn truncate_before(&mut self, log_start: i64) {
        let keep = self.aborted.partition_point(|a| a.last_offset < log_start);
        self.aborted.drain(..keep);
    }
}

/// Replays every batch of `segments`, oldest first, into the idempotent producers' state and the
/// transactions' state. Markers are read a few bytes past their header to learn commit or abort.
pub(crate) fn rebuild(segments: &[Arc<Segment>]) -> Result<(ProducerStates, Transactions)> {
    let mut producers = ProducerStates::default();
    let mut txns = Transactions::default();
    let mut buf = Vec::with_capacity(MARKER_PREFIX_LEN);
    for segment in segments {
        let mut failed = None;
        segment.scan_headers(0, segment.size(), |pos, header| {
            producers.apply(header);
            if header.is_control() {
                buf.clear();
                let len = header.total_len().min(MARKER_PREFIX_LEN);
                if let Err(e) = segment.read_into(pos, len, &mut buf) {
                    failed = Some(e);
                    return ControlFlow::Break(());
                }
                if let Some(commit) = batch::marker_type(&buf) {
                    txns.on_marker(header.producer_id, commit, header.base_offset);
                }
            } else {
                txns.on_data(header);
            }
            ControlFlow::Continue(())
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
    }
    // Everything in the log is durable after recovery: no marker is still undecided.
    txns.completing.clear();
    Ok((producers, txns))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pid: i64, base: i64) -> BatchHeader {
        BatchHeader {
            base_offset: base,
            batch_length: 49,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 1 << 4,
            last_offset_delta: 0,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: 0,
            base_sequence: 0,
            record_count: 1,
        }
    }

    #[test]
    fn lso_waits_for_open_and_undecided_transactions() {
        let mut t = Transactions::default();
        t.on_data(&data(1, 10));
        t.on_data(&data(2, 12));
        t.on_data(&data(1, 13));
        assert_eq!(t.last_stable_offset(20), 10);
        assert!(t.on_marker(1, false, 14));
        // The marker is not durable until the high watermark passes it.
        assert_eq!(t.last_stable_offset(14), 10);
        assert_eq!(t.last_stable_offset(15), 12);
        assert!(t.on_marker(2, true, 15));
        assert_eq!(t.last_stable_offset(16), 16);
        t.prune_completed(16);
        assert!(t.completing.is_empty());
        assert!(!t.on_marker(2, true, 16), "no transaction open any more");
        let aborted = AbortedTxn {
            producer_id: 1,
            first_offset: 10,
            last_offset: 14,
        };
        assert_eq!(t.aborted_between(0, 11), vec![aborted]);
        assert_eq!(t.aborted_between(14, 20), vec![aborted]);
        assert!(t.aborted_between(15, 20).is_empty());
        assert!(t.aborted_between(0, 10).is_empty());
        t.truncate_before(15);
        assert!(t.aborted_between(0, 20).is_empty());
    }
}
