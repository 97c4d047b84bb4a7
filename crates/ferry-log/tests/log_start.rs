//! DeleteRecords: the log start moves into the log durably, reads below it fail, and retention
//! deletes the segments wholly below it.

mod common;

use common::*;
use ferry_log::{Error, LogConfig};

/// Ten batches of two records, about one batch per segment.
fn ten_batches(dir: &std::path::Path) -> ferry_log::PartitionLog {
    let log = open(dir, small_segments(100));
    for _ in 0..10 {
        append_durable(&log, &batch(2, 1_000));
    }
    log
}

#[test]
fn delete_records_moves_the_log_start_durably() {
    let dir = tempfile::tempdir().unwrap();
    let log = ten_batches(dir.path());
    assert_eq!(log.high_watermark(), 20);

    // Into the middle of a batch: Kafka allows any offset up to the high watermark.
    assert_eq!(log.delete_records_before(7).unwrap(), 7);
    assert_eq!(log.log_start_offset(), 7);
    assert!(matches!(
        log.read(6, 1 << 20, true),
        Err(Error::OffsetOutOfRange { start: 7, .. })
    ));
    // The batch holding offset 7 (6..=7) is still returned whole, as Kafka does.
    let read = log.read(7, 1 << 20, true).unwrap();
    assert_eq!(read.log_start_offset, 7);
    assert_eq!(headers(&read.records)[0].base_offset, 6);

    // Lower than the start: nothing changes. Past the high watermark: out of range.
    assert_eq!(log.delete_records_before(3).unwrap(), 7);
    assert!(matches!(
        log.delete_records_before(21),
        Err(Error::OffsetOutOfRange { .. })
    ));
    drop(log);

    let log = open(dir.path(), small_segments(100));
    assert_eq!(log.log_start_offset(), 7, "the log start survives a reopen");
    assert!(log.read(5, 1 << 20, true).is_err());
}

#[test]
fn retention_deletes_segments_below_the_log_start() {
    let dir = tempfile::tempdir().unwrap();
    // Retention by time and size is off: only the log start makes segments deletable.
    let config = LogConfig {
        retention_ms: None,
        retention_bytes: None,
        ..small_segments(100)
    };
    let log = open(dir.path(), config.clone());
    for _ in 0..10 {
        append_durable(&log, &batch(2, 1_000));
    }
    let before = segment_files(dir.path()).len();
    assert!(before >= 5, "{before} segments");
    assert_eq!(log.enforce_retention(i64::MAX).unwrap(), 0);

    log.delete_records_before(9).unwrap();
    let deleted = log.enforce_retention(0).unwrap();
    assert!(deleted > 0);
    // The segment holding offset 9 stays; everything before it is gone; the start did not move back.
    let first = segment_files(dir.path())[0].clone();
    let first_base: i64 = first
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(first_base <= 9, "{first:?}");
    assert!(first_base > 0);
    assert_eq!(log.log_start_offset(), 9);

    // Everything up to the high watermark: the active segment stays, nothing is readable below 20.
    log.delete_records_before(20).unwrap();
    log.enforce_retention(0).unwrap();
    drop(log);
    let log = open(dir.path(), config);
    assert_eq!(log.log_start_offset(), 20);
    assert!(log.read(20, 1 << 20, true).unwrap().records.is_empty());
    // New appends continue at the log end.
    assert_eq!(append_durable(&log, &batch(1, 1_000)).base_offset, 20);
}
