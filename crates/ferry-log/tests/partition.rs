//! Appends, reads, durability, segments, timestamps and retention of one partition log.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use ferry_log::{Error, LogConfig, PartitionLog};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn append_then_read_round_trips_bytes_with_assigned_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default());
    let (b1, b2) = (batch(3, 1000), batch(2, 1001));

    let first = log.append(&b1).unwrap();
    assert_eq!(
        (first.base_offset, first.last_offset, first.end_offset),
        (0, 2, 3)
    );
    let second = log.append(&b2).unwrap();
    assert_eq!(
        (second.base_offset, second.last_offset, second.end_offset),
        (3, 4, 5)
    );
    log.flush_to(5).unwrap();

    let read = log.read(0, usize::MAX, false).unwrap();
    assert_eq!(
        read.records,
        [as_stored(&b1, 0), as_stored(&b2, 3)].concat()
    );
    assert_eq!(read.high_watermark, 5);
    assert_eq!(read.log_start_offset, 0);
    let offsets: Vec<_> = headers(&read.records)
        .iter()
        .map(|h| h.base_offset)
        .collect();
    assert_eq!(offsets, [0, 3]);
}

#[test]
fn read_from_the_middle_of_a_batch_returns_that_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default());
    let (b1, b2) = (batch(3, 1), batch(4, 2));
    append_durable(&log, &b1);
    append_durable(&log, &b2);

    assert_eq!(
        log.read(1, usize::MAX, false).unwrap().records,
        [as_stored(&b1, 0), as_stored(&b2, 3)].concat()
    );
    assert_eq!(
        log.read(5, usize::MAX, false).unwrap().records,
        as_stored(&b2, 3)
    );
    assert_eq!(
        log.read(6, usize::MAX, false).unwrap().records,
        as_stored(&b2, 3)
    );
    assert!(log.read(7, usize::MAX, false).unwrap().records.is_empty());
}

#[test]
fn max_bytes_stops_before_a_batch_unless_min_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default());
    let b = batch(2, 1);
    for _ in 0..3 {
        append_durable(&log, &b);
    }
    let len = b.len();
    assert_eq!(
        log.read(0, len + 1, false).unwrap().records,
        as_stored(&b, 0)
    );
    assert_eq!(log.read(0, 2 * len, false).unwrap().records.len(), 2 * len);
    assert!(log.read(0, len - 1, false).unwrap().records.is_empty());
    assert_eq!(log.read(0, 1, true).unwrap().records, as_stored(&b, 0));
    assert_eq!(log.read(0, 0, true).unwrap().records, as_stored(&b, 0));
}

#[test]
fn offsets_outside_the_log_are_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default());
    assert!(log.read(0, 100, true).unwrap().records.is_empty());
    append_durable(&log, &batch(3, 1));
    assert!(log.read(3, 100, true).unwrap().records.is_empty());
    match log.read(4, 100, true) {
        Err(Error::OffsetOutOfRange {
            requested: 4,
            start: 0,
            end: 3,
        }) => {}
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }
    assert!(matches!(
        log.read(-1, 100, true),
        Err(Error::OffsetOutOfRange { .. })
    ));
}

#[test]
fn high_watermark_advances_only_after_flush_to() {
    let dir = tempfile::tempdir().unwrap();
    let (listener, calls) = counting_listener();
    let log = PartitionLog::open(dir.path(), LogConfig::default(), listener).unwrap();
    let info = log.append(&batch(3, 1)).unwrap();
    assert_eq!((log.log_end_offset(), log.high_watermark()), (3, 0));
    assert!(
        log.read(0, usize::MAX, true).unwrap().records.is_empty(),
        "undurable data was readable"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    log.flush_to(info.end_offset).unwrap();
    assert_eq!(log.high_watermark(), 3);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(headers(&read_all(&log)).len(), 1);

    // Already durable: no fsync, no notification.
    log.flush_to(2).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn segments_roll_at_segment_bytes_and_reads_cross_them() {
    let dir = tempfile::tempdir().unwrap();
    let b = batch(2, 1);
    let log = open(dir.path(), small_segments(2 * b.len() as u64 + 10));
    let mut expected = Vec::new();
    for i in 0..10 {
        let info = append_durable(&log, &b);
        assert_eq!(info.base_offset, 2 * i);
        expected.extend(as_stored(&b, 2 * i));
    }
    assert_eq!(segment_files(dir.path()).len(), 5);
    assert_eq!(read_all(&log), expected);
    // Every offset finds its batch, in whichever segment.
    for offset in 0..20 {
        let read = log.read(offset, b.len(), false).unwrap();
        assert_eq!(
            read.records,
            as_stored(&b, offset / 2 * 2),
            "offset {offset}"
        );
    }
    // A read starting near the end of one segment continues into the next.
    let read = log.read(3, 3 * b.len(), false).unwrap();
    assert_eq!(
        headers(&read.records)
            .iter()
            .map(|h| h.base_offset)
            .collect::<Vec<_>>(),
        [2, 4, 6]
    );
    assert_eq!(log.size_bytes(), expected.len() as u64);
}

#[test]
fn a_batch_larger_than_segment_bytes_still_goes_into_a_segment() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_segments(10));
    for _ in 0..3 {
        append_durable(&log, &batch(1, 1));
    }
    assert_eq!(segment_files(dir.path()).len(), 3);
    assert_eq!(headers(&read_all(&log)).len(), 3);
}

#[test]
fn reopen_keeps_everything_and_offsets_continue() {
    let dir = tempfile::tempdir().unwrap();
    let b = batch(3, 5);
    let before = {
        let log = open(dir.path(), small_segments(2 * b.len() as u64));
        for _ in 0..5 {
            log.append(&b).unwrap();
        }
        log.flush().unwrap();
        read_all(&log)
    };
    let log = open(dir.path(), small_segments(2 * b.len() as u64));
    assert_eq!(
        (
            log.log_start_offset(),
            log.high_watermark(),
            log.log_end_offset()
        ),
        (0, 15, 15)
    );
    assert_eq!(read_all(&log), before);
    let info = append_durable(&log, &b);
    assert_eq!(info.base_offset, 15);
    assert_eq!(
        log.read(15, usize::MAX, false).unwrap().records,
        as_stored(&b, 15)
    );
}

#[test]
fn concurrent_appends_and_flushes_give_dense_durable_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(open(dir.path(), small_segments(64 * 1024)));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = log.clone();
            thread::spawn(move || {
                let mut ranges = Vec::new();
                for i in 0..40 {
                    let info = log.append(&batch(1 + (t + i) % 5, t as i64)).unwrap();
                    log.flush_to(info.end_offset).unwrap();
                    assert!(log.high_watermark() >= info.end_offset);
                    ranges.push((info.base_offset, info.end_offset));
                }
                ranges
            })
        })
        .collect();
    let mut ranges: Vec<_> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    ranges.sort();
    let mut next = 0;
    for (base, end) in &ranges {
        assert_eq!(*base, next, "offsets are not dense");
        next = *end;
    }
    assert_eq!(log.high_watermark(), next);
    let all = headers(&read_all(&log));
    assert_eq!(all.len(), ranges.len());
    assert_eq!(all.last().unwrap().next_offset(), next);
    drop(log);
    let reopened = open(dir.path(), small_segments(64 * 1024));
    assert_eq!(reopened.log_end_offset(), next);
}

#[test]
fn offset_for_timestamp_finds_the_first_batch_at_or_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let b = batch(2, 0);
    // Two batches per segment, an index entry per batch.
    let log = open(dir.path(), small_segments(2 * b.len() as u64));
    assert_eq!(log.offset_for_timestamp(0).unwrap(), None);
    assert_eq!(log.max_timestamp().unwrap(), None);
    for ts in [100, 200, 150, 300, 300, 400, 250] {
        append_durable(&log, &batch(2, ts));
    }
    #[track_caller]
    fn check(log: &PartitionLog, ts: i64, expected: Option<(i64, i64)>) {
        assert_eq!(
            log.offset_for_timestamp(ts).unwrap(),
            expected,
            "timestamp {ts}"
        );
    }
    check(&log, 50, Some((0, 100)));
    check(&log, 100, Some((0, 100)));
    check(&log, 101, Some((2, 200)));
    check(&log, 160, Some((2, 200)));
    check(&log, 201, Some((6, 300)));
    check(&log, 300, Some((6, 300)));
    check(&log, 301, Some((10, 400)));
    check(&log, 401, None);
    assert_eq!(log.max_timestamp().unwrap(), Some((10, 400)));
}

/// ListOffsets MAX_TIMESTAMP and by-timestamp answered with the batch's first offset, where
/// Kafka names the record: the maximum sits mid-batch here. (The workspace builds kafka-protocol
/// without codecs; compressed batches are covered by the unit test of `record_times`.)
#[test]
fn list_offsets_max_timestamp_is_the_records_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default());
    let none = Compression::None;
    append_durable(&log, &batch_with_times(&[10, 20, 30], none));
    // offsets 3..=7: the maximum (500) twice, at 5 and 7; the earliest wins.
    append_durable(&log, &batch_with_times(&[100, 400, 500, 300, 500], none));
    append_durable(&log, &batch_with_times(&[200, 250], none));
    assert_eq!(log.max_timestamp().unwrap(), Some((5, 500)));
    assert_eq!(log.offset_for_timestamp(15).unwrap(), Some((1, 20)));
    assert_eq!(log.offset_for_timestamp(350).unwrap(), Some((4, 400)));
    assert_eq!(log.offset_for_timestamp(450).unwrap(), Some((5, 500)));
    assert_eq!(log.offset_for_timestamp(501).unwrap(), None);
}

#[test]
fn timestamps_survive_reopen_of_closed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let b = batch(1, 0);
    {
        let log = open(dir.path(), small_segments(3 * b.len() as u64));
        for ts in [10, 30, 20, 50, 40, 60, 70] {
            append_durable(&log, &batch(1, ts));
        }
    }
    let log = open(dir.path(), small_segments(3 * b.len() as u64));
    assert_eq!(log.max_timestamp().unwrap(), Some((6, 70)));
    assert_eq!(log.offset_for_timestamp(35).unwrap(), Some((3, 50)));
    assert_eq!(log.offset_for_timestamp(55).unwrap(), Some((5, 60)));
}

#[test]
fn max_timestamp_ignores_data_that_is_not_durable() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default());
    append_durable(&log, &batch(1, 10));
    log.append(&batch(1, 99)).unwrap();
    assert_eq!(log.max_timestamp().unwrap(), Some((0, 10)));
    assert_eq!(log.offset_for_timestamp(50).unwrap(), None);
    log.flush().unwrap();
    assert_eq!(log.max_timestamp().unwrap(), Some((1, 99)));
}

#[test]
fn retention_by_bytes_deletes_oldest_closed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let b = batch(2, now_ms());
    let log = open(dir.path(), small_segments(b.len() as u64));
    for _ in 0..6 {
        append_durable(&log, &b);
    }
    assert_eq!(segment_files(dir.path()).len(), 6);
    let config = LogConfig {
        retention_bytes: Some(3 * b.len() as u64),
        ..log.config()
    };
    log.set_config(config);
    assert_eq!(log.enforce_retention(now_ms()).unwrap(), 3);
    assert_eq!(segment_files(dir.path()).len(), 3);
    assert_eq!(log.log_start_offset(), 6);
    assert_eq!(log.size_bytes(), 3 * b.len() as u64);
    assert!(matches!(
        log.read(0, 100, true),
        Err(Error::OffsetOutOfRange { start: 6, .. })
    ));
    assert_eq!(headers(&read_all(&log))[0].base_offset, 6);
    assert_eq!(log.enforce_retention(now_ms()).unwrap(), 0);

    // The start offset comes from the files, so it survives a reopen.
    drop(log);
    let log = open(dir.path(), small_segments(b.len() as u64));
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (6, 12));
}

#[test]
fn retention_by_time_deletes_expired_segments_but_never_the_active_one() {
    let dir = tempfile::tempdir().unwrap();
    // segment.bytes of 1: every batch gets its own segment.
    let config = LogConfig {
        retention_ms: Some(1000),
        ..small_segments(1)
    };
    let log = open(dir.path(), config.clone());
    for ts in [1_000, 2_000, 100_000, 100_001] {
        append_durable(&log, &batch(1, ts));
    }
    assert_eq!(log.enforce_retention(100_500).unwrap(), 2);
    assert_eq!(log.log_start_offset(), 2);
    assert_eq!(log.enforce_retention(i64::MAX).unwrap(), 1);
    assert_eq!(log.log_start_offset(), 3);
    assert_eq!(segment_files(dir.path()).len(), 1);
    assert_eq!(append_durable(&log, &batch(1, 5)).base_offset, 4);
}

#[test]
fn rolls_when_the_active_segment_is_older_than_segment_ms() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(
        dir.path(),
        LogConfig {
            segment_ms: 1,
            ..LogConfig::default()
        },
    );
    append_durable(&log, &batch(1, 0));
    thread::sleep(Duration::from_millis(5));
    append_durable(&log, &batch(1, 0));
    assert_eq!(segment_files(dir.path()).len(), 2);
}

#[test]
fn segment_age_after_reopen_comes_from_the_first_batch_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_ms: 60_000,
        ..LogConfig::default()
    };
    let an_hour_ago = now_ms() - 3_600_000;
    {
        let log = open(dir.path(), config.clone());
        // Age counts from the wall clock of the first append, not the batch timestamp.
        append_durable(&log, &batch(1, an_hour_ago));
        append_durable(&log, &batch(1, an_hour_ago));
        assert_eq!(segment_files(dir.path()).len(), 1);
    }
    let log = open(dir.path(), config);
    append_durable(&log, &batch(1, now_ms()));
    assert_eq!(segment_files(dir.path()).len(), 2);
    assert_eq!(headers(&read_all(&log)).len(), 3);
}

#[test]
fn oversized_and_invalid_payloads_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(
        dir.path(),
        LogConfig {
            max_message_bytes: 150,
            ..LogConfig::default()
        },
    );
    let big = batch_sized(1, 200, 1);
    assert!(matches!(
        log.append(&big),
        Err(Error::RecordTooLarge { max: 150, .. })
    ));

    let good = batch(1, 1);
    let mut trailing = [good.clone(), good.clone()].concat();
    trailing.push(0);
    assert!(matches!(
        log.append(&trailing),
        Err(Error::InvalidRecords(_))
    ));
    let mut flipped = [good.clone(), good.clone()].concat();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert!(matches!(log.append(&flipped), Err(Error::CorruptBatch(_))));

    assert_eq!((log.log_end_offset(), log.size_bytes()), (0, 0));
    assert_eq!(log.append(&good).unwrap().base_offset, 0);
}

#[test]
fn batch_headers_from_lists_written_batches() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), small_segments(200));
    for n in 1..=5 {
        log.append(&batch(n, 1)).unwrap();
    }
    let all = log.batch_headers_from(0).unwrap();
    assert_eq!(
        all.iter().map(|h| h.base_offset).collect::<Vec<_>>(),
        [0, 1, 3, 6, 10]
    );
    let tail = log.batch_headers_from(7).unwrap();
    assert_eq!(
        tail.iter().map(|h| h.base_offset).collect::<Vec<_>>(),
        [6, 10]
    );
    assert!(log.batch_headers_from(15).unwrap().is_empty());
    assert!(log.batch_headers_from(16).is_err());
}
