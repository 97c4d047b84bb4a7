//! Helpers shared by the integration tests: real record batches built by the `kafka-protocol`
//! encoder, and partition logs in temporary directories.
#![allow(dead_code)] // each test file uses a different subset

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use ferry_log::{
    AppendInfo, BatchHeader, DurableListener, LogConfig, PartitionLog, validate_batches,
};
pub use kafka_protocol::records::Compression;
use kafka_protocol::records::{Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

/// One magic-2 batch of `records` records with `value_len`-byte values, all stamped `timestamp`.
#[track_caller]
pub fn batch_sized(records: usize, value_len: usize, timestamp: i64) -> Vec<u8> {
    encode_batch(records, value_len, timestamp, (-1, -1, 0))
}

/// A batch of `records` small records from idempotent producer `producer_id` at `epoch`, whose
/// first record has sequence `base_sequence`.
#[track_caller]
pub fn producer_batch(producer_id: i64, epoch: i16, base_sequence: i32, records: usize) -> Vec<u8> {
    encode_batch(records, 10, 1000, (producer_id, epoch, base_sequence))
}

/// Like [`producer_batch`], with the transactional bit set.
#[track_caller]
pub fn txn_batch(producer_id: i64, epoch: i16, base_sequence: i32, records: usize) -> Vec<u8> {
    encode(records, 10, 1000, (producer_id, epoch, base_sequence), true)
}

/// One batch; `producer` is (producer id, epoch, base sequence), which the encoder takes from the
/// first record.
#[track_caller]
fn encode_batch(
    records: usize,
    value_len: usize,
    timestamp: i64,
    producer: (i64, i16, i32),
) -> Vec<u8> {
    encode(records, value_len, timestamp, producer, false)
}

#[track_caller]
fn encode(
    records: usize,
    value_len: usize,
    timestamp: i64,
    (producer_id, producer_epoch, base_sequence): (i64, i16, i32),
    transactional: bool,
) -> Vec<u8> {
    assert!(records > 0);
    let records: Vec<Record> = (0..records)
        .map(|i| Record {
            transactional,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 7,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // Keeping offset - sequence constant keeps the encoder from splitting the batch.
            sequence: base_sequence.wrapping_add(i as i32),
            timestamp,
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from(vec![b'a' + (i % 26) as u8; value_len])),
            headers: Default::default(),
        })
        .collect();
    let mut buf = Vec::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options).unwrap();
    assert_eq!(
        validate_batches(&buf).unwrap().len(),
        1,
        "encoder made more than one batch"
    );
    buf
}

/// One batch with a record per timestamp, in that order, compressed with `compression`.
#[track_caller]
pub fn batch_with_times(timestamps: &[i64], compression: Compression) -> Vec<u8> {
    let records: Vec<Record> = timestamps
        .iter()
        .enumerate()
        .map(|(i, &timestamp)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // offset - sequence must stay constant or the encoder splits the batch.
            sequence: i as i32,
            timestamp,
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from_static(b"value")),
            headers: Default::default(),
        })
        .collect();
    let mut buf = Vec::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options).unwrap();
    assert_eq!(validate_batches(&buf).unwrap().len(), 1);
    buf
}

/// A batch of `records` small records stamped `timestamp`.
#[track_caller]
pub fn batch(records: usize, timestamp: i64) -> Vec<u8> {
    batch_sized(records, 10, timestamp)
}

/// A listener that counts how often it was called.
pub fn counting_listener() -> (DurableListener, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    (
        Arc::new(move || {
            c.fetch_add(1, Ordering::SeqCst);
        }),
        count,
    )
}

pub fn open(dir: &Path, config: LogConfig) -> PartitionLog {
    PartitionLog::open(dir, config, Arc::new(|| {})).unwrap()
}

/// Config with segments of at most `segment_bytes` and an index entry for every batch.
pub fn small_segments(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 0,
        ..LogConfig::default()
    }
}

/// Appends and waits until the data is durable.
#[track_caller]
pub fn append_durable(log: &PartitionLog, records: &[u8]) -> AppendInfo {
    let info = log.append(records).unwrap();
    log.flush_to(info.end_offset).unwrap();
    info
}

/// Everything readable, from the log start.
#[track_caller]
pub fn read_all(log: &PartitionLog) -> Vec<u8> {
    log.read(log.log_start_offset(), usize::MAX, true)
        .unwrap()
        .records
}

/// The headers of a run of batches.
#[track_caller]
pub fn headers(records: &[u8]) -> Vec<BatchHeader> {
    validate_batches(records).unwrap()
}

/// `batch` as the log stores it: with `base_offset` assigned and the leader epoch zeroed.
pub fn as_stored(batch: &[u8], base_offset: i64) -> Vec<u8> {
    let mut stored = batch.to_vec();
    stored[0..8].copy_from_slice(&base_offset.to_be_bytes());
    stored[12..16].copy_from_slice(&0i32.to_be_bytes());
    stored
}

/// The `.log` files of a partition directory, sorted.
pub fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}
