//! Kafka's internal `__consumer_offsets` topic, kept as a view of the group store, so tools that
//! read committed offsets from it (Burrow and other lag monitors, `kafka-console-consumer` with
//! the offsets formatter) work against Ferry.
//!
//! The group store ([`super::store`]) stays the source of truth: an OffsetCommit is answered after
//! its record is fsynced there, as before. Every change to a committed offset (a commit, a
//! transaction's offsets settling at commit, OffsetDelete, DeleteGroups) is then handed, in store
//! order, to one task that appends it here in Kafka's own format: key `OffsetCommitKey` v1
//! (group, topic, partition), value `OffsetCommitValue` v3 (offset, leader epoch, metadata,
//! commit timestamp), or a tombstone (null value) when the offset is gone. Records go to
//! partition `abs(javaHashCode(group)) % 50`, as Kafka places them (`offsets.topic.num.partitions`
//! is 50). The task appends whatever has queued up as one batch per partition and flushes once,
//! so the view costs the commit path nothing but a channel send.
//!
//! The topic is created (compacted, internal) at the first change, as Kafka creates it at the
//! first use of a group. At start the broker re-appends every committed offset the store holds,
//! so the view catches up after an upgrade or after a crash between the store's fsync and the
//! view's append; compaction drops the repeats. Clients cannot produce to it (Produce answers
//! INVALID_TOPIC_EXCEPTION, as Kafka does for internal topics). Group metadata records (key
//! version 2) are not written: Ferry does not persist membership.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Committed;
use crate::state::Shared;

/// The topic's name.
pub const TOPIC: &str = "__consumer_offsets";
/// Kafka's default `offsets.topic.num.partitions`.
pub const PARTITIONS: u32 = 50;

/// One committed offset that changed: its new value, or `None` when it was deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetChange {
    /// The group.
    pub group: String,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset now committed, or `None` if there is none any more.
    pub committed: Option<Committed>,
}

/// The sending side, held by the group store.
pub type ChangeSender = mpsc::UnboundedSender<Vec<OffsetChange>>;

/// The partition of `__consumer_offsets` that holds `group`'s records, as Kafka computes it:
/// `Utils.abs(group.hashCode()) % partitions`, with Java's `String.hashCode` over UTF-16 units.
pub fn partition_for(group: &str) -> u32 {
    let hash = group.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    });
    // Kafka's Utils.abs maps i32::MIN to 0 rather than overflowing.
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    abs as u32 % PARTITIONS
}

fn put_string(buf: &mut BytesMut, s: &str) {
    // Kafka strings are at most i16::MAX bytes; names longer than that cannot reach here (topic
    // names are at most 249 bytes, group ids are checked by the coordinator), but metadata can.
    let bytes = &s.as_bytes()[..s.len().min(i16::MAX as usize)];
    buf.put_i16(bytes.len() as i16);
    buf.put_slice(bytes);
}

/// `OffsetCommitKey` version 1: version, group, topic, partition.
pub fn key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut buf = BytesMut::with_capacity(8 + group.len() + topic.len());
    buf.put_i16(1);
    put_string(&mut buf, group);
    put_string(&mut buf, topic);
    buf.put_i32(partition);
    buf.freeze()
}

/// `OffsetCommitValue` version 3: version, offset, leader epoch, metadata, commit timestamp.
pub fn value(committed: &Committed, commit_timestamp: i64) -> Bytes {
    let metadata = committed.metadata.as_deref().unwrap_or("");
    let mut buf = BytesMut::with_capacity(24 + metadata.len());
    buf.put_i16(3);
    buf.put_i64(committed.offset);
    buf.put_i32(committed.leader_epoch);
    put_string(&mut buf, metadata);
    buf.put_i64(commit_timestamp);
    buf.freeze()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Appends changes to the topic until `shutdown`, then drains what is queued.
pub async fn run(
    shared: Arc<Shared>,
    mut changes: mpsc::UnboundedReceiver<Vec<OffsetChange>>,
    shutdown: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            biased;
            next = changes.recv() => match next {
                Some(first) => first,
                None => return,
            },
            _ = shutdown.cancelled() => return,
        };
        let mut pending = first;
        while let Ok(more) = changes.try_recv() {
            pending.extend(more);
        }
        let shared = shared.clone();
        let result = tokio::task::spawn_blocking(move || write(&shared, pending)).await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot update {TOPIC}"),
            Err(e) => tracing::warn!(error = %e, "{TOPIC} writer failed"),
        }
    }
}

/// Appends one batch per partition and flushes them. Blocking.
fn write(shared: &Shared, changes: Vec<OffsetChange>) -> ferry_log::Result<()> {
    let topic = match shared.store.topic(TOPIC) {
        Some(t) => t,
        None => {
            let config = BTreeMap::from([("cleanup.policy".to_owned(), "compact".to_owned())]);
            match shared.store.create_topic(TOPIC, PARTITIONS, config) {
                Ok(t) => t,
                Err(ferry_log::Error::TopicExists(_)) => shared.store.topic(TOPIC).expect("exists"),
                Err(e) => return Err(e),
            }
        }
    };
    let timestamp = now_ms();
    let mut by_partition: BTreeMap<u32, Vec<Record>> = BTreeMap::new();
    for change in changes {
        let records = by_partition
            .entry(partition_for(&change.group))
            .or_default();
        records.push(Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: records.len() as i64,
            sequence: -1,
            timestamp,
            key: Some(key(&change.group, &change.topic, change.partition)),
            value: change.committed.map(|c| value(&c, timestamp)),
            headers: Default::default(),
        });
    }
    for (partition, records) in by_partition {
        let Some(log) = topic.partition(partition) else {
            continue; // someone shrank it under us; Kafka would not allow that either
        };
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            records.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .map_err(|e| ferry_log::Error::InvalidRecords(e.to_string()))?;
        let appended = log.append(&buf)?;
        log.flush_to(appended.last_offset + 1)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_match_kafkas_placement() {
        // "".hashCode() == 0; "a".hashCode() == 97; "console-consumer-1".hashCode() computed by
        // Java's rule: 31*h + c over the UTF-16 units.
        assert_eq!(partition_for(""), 0);
        assert_eq!(partition_for("a"), 97 % 50);
        let java = "console-consumer-1"
            .chars()
            .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32));
        assert_eq!(
            partition_for("console-consumer-1"),
            java.unsigned_abs() % 50
        );
        // A negative hash takes its absolute value ("polygenelubricants" hashes to i32::MIN).
        assert_eq!(partition_for("polygenelubricants"), 0);
    }

    #[test]
    fn key_and_value_have_kafkas_layout() {
        let k = key("g", "t", 7);
        assert_eq!(&k[..], &[0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 7]);
        let v = value(
            &Committed {
                offset: 42,
                leader_epoch: -1,
                metadata: None,
            },
            1000,
        );
        let mut expected = vec![0, 3];
        expected.extend(42i64.to_be_bytes());
        expected.extend((-1i32).to_be_bytes());
        expected.extend([0, 0]);
        expected.extend(1000i64.to_be_bytes());
        assert_eq!(&v[..], &expected[..]);
    }
}
