//! Idempotent producers: sequence checks, fencing by epoch, retries answered with the original
//! offsets, and the state rebuilt from the log on reopen.

mod common;

use std::path::Path;

use common::*;
use ferry_log::{Error, LogConfig, PartitionLog};
use proptest::prelude::*;

/// What an append did, in a form tests can compare.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Written at (base offset, last offset).
    Appended(i64, i64),
    /// A retry of the batches at (base offset, last offset); nothing written.
    Duplicate(i64, i64),
    /// `Error::OutOfOrderSequence` (producer id, expected, got).
    OutOfOrder(i64, i32, i32),
    /// `Error::InvalidProducerEpoch` (producer id, epoch, current epoch).
    Fenced(i64, i16, i16),
}
use Outcome::*;

/// Appends `payload` and checks the outcome, and that the log end moved only for a real append.
#[track_caller]
fn check(log: &PartitionLog, payload: &[u8], expected: Outcome) {
    let end_before = log.log_end_offset();
    let outcome = match log.append(payload) {
        Ok(info) if info.duplicate => {
            assert_eq!(info.end_offset, info.last_offset + 1);
            // The broker waits for this before answering; the original must be durable after it.
            log.flush_to(info.end_offset).unwrap();
            assert!(log.high_watermark() > info.last_offset);
            Duplicate(info.base_offset, info.last_offset)
        }
        Ok(info) => {
            assert_eq!(info.end_offset, log.log_end_offset());
            Appended(info.base_offset, info.last_offset)
        }
        Err(Error::OutOfOrderSequence {
            producer_id,
            expected,
            got,
        }) => OutOfOrder(producer_id, expected, got),
        Err(Error::InvalidProducerEpoch {
            producer_id,
            epoch,
            current,
        }) => Fenced(producer_id, epoch, current),
        Err(other) => panic!("unexpected error: {other}"),
    };
    assert_eq!(outcome, expected);
    if !matches!(outcome, Appended(..)) {
        assert_eq!(
            log.log_end_offset(),
            end_before,
            "a rejected or duplicate append wrote"
        );
    }
}

/// Batch of `records` records from producer `id` at `epoch`, starting at sequence `seq`.
fn b(id: i64, epoch: i16, seq: i32, records: usize) -> Vec<u8> {
    producer_batch(id, epoch, seq, records)
}

fn open_default(dir: &Path) -> PartitionLog {
    open(dir, LogConfig::default())
}

#[test]
fn in_order_batches_are_appended() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_default(dir.path());
    check(&log, &b(7, 0, 0, 3), Appended(0, 2));
    check(&log, &b(7, 0, 3, 2), Appended(3, 4));
    check(&log, &b(7, 0, 5, 1), Appended(5, 5));
    assert_eq!(log.producer_count(), 1);
}

#[test]
fn retry_of_any_of_the_last_five_batches_returns_its_original_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_default(dir.path());
    // Six batches of 1..=6 records: sequences 0, 1, 3, 6, 10, 15; offsets the same.
    let mut seq = 0;
    let mut sent = Vec::new();
    for records in 1..=6 {
        let batch = b(1, 0, seq, records);
        let base = i64::from(seq);
        let last = base + records as i64 - 1;
        check(&log, &batch, Appended(base, last));
        sent.push((batch, base, last));
        seq += records as i32;
    }
    for (batch, base, last) in &sent[1..] {
        check(&log, batch, Duplicate(*base, *last));
    }
    // The sixth-last batch has left the cache: it is no longer recognised.
    check(&log, &sent[0].0, OutOfOrder(1, seq, 0));
    // Each batch is in the log exactly once.
    let stored: Vec<_> = sent
        .iter()
        .map(|(batch, base, _)| as_stored(batch, *base))
        .collect();
    log.flush().unwrap();
    assert_eq!(read_all(&log), stored.concat());
}

#[test]
fn sequence_gap_is_out_of_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_default(dir.path());
    check(&log, &b(1, 0, 0, 2), Appended(0, 1));
    check(&log, &b(1, 0, 3, 1), OutOfOrder(1, 2, 3));
    // A batch that starts like a cached one but ends elsewhere is not a retry.
    check(&log, &b(1, 0, 0, 1), OutOfOrder(1, 2, 0));
    check(&log, &b(1, 0, 2, 1), Appended(2, 2));
}

#[test]
fn older_epoch_is_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_default(dir.path());
    check(&log, &b(1, 3, 0, 1), Appended(0, 0));
    check(&log, &b(1, 2, 1, 1), Fenced(1, 2, 3));
    check(&log, &b(1, 2, 0, 1), Fenced(1, 2, 3));
}

#[test]
fn new_epoch_restarts_sequences_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_default(dir.path());
    check(&log, &b(1, 0, 0, 5), Appended(0, 4));
    check(&log, &b(1, 1, 5, 1), OutOfOrder(1, 0, 5));
    check(&log, &b(1, 1, 0, 2), Appended(5, 6));
    check(&log, &b(1, 1, 2, 1), Appended(7, 7));
    // A retry from the old epoch is fenced, not taken for a duplicate.
    check(&log, &b(1, 0, 0, 5), Fenced(1, 0, 1));
    check(&log, &b(1, 1, 0, 2), Duplicate(5, 6));
}

#[test]
fn sequences_wrap_past_i32_max() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_default(dir.path());
    // Sequences MAX - 1, MAX, 0: the next batch starts at 1.
    let wrapping = b(1, 0, i32::MAX - 1, 3);
    check(&log, &b(1, 0, i32::MAX - 3, 2), Appended(0, 1));
    check(&log, &wrapping, Appended(2, 4));
    check(&log, &wrapping, Duplicate(2, 4));
    check(&log, &b(1, 0, 0, 1), OutOfOrder(1, 1, 0));
    check(&log, &b(1, 0, 1, 1), Appended(5, 5));
}

#[test]
fn producer_without_state_may_start_at_any_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_default(dir.path());
    // Its history may have been deleted by retention: accepted rather than UNKNOWN_PRODUCER_ID.
    check(&log, &b(1, 4, 42, 1), Appended(0, 0));
    check(&log, &b(1, 4, 43, 1), Appended(1, 1));
    // NO_SEQUENCE cannot start a history.
    check(&log, &b(2, 0, -1, 1), OutOfOrder(2, 0, -1));
    assert_eq!(log.producer_count(), 1);
}

#[test]
fn producers_are_checked_independently() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_default(dir.path());
    check(&log, &b(1, 0, 0, 2), Appended(0, 1));
    check(&log, &b(2, 5, 0, 1), Appended(2, 2));
    check(&log, &b(1, 0, 2, 1), Appended(3, 3));
    check(&log, &b(2, 5, 0, 1), Duplicate(2, 2));
    check(&log, &b(2, 5, 2, 1), OutOfOrder(2, 1, 2));
    check(&log, &b(2, 5, 1, 3), Appended(4, 6));
    check(&log, &b(1, 0, 0, 2), Duplicate(0, 1));
    check(&log, &b(1, 0, 3, 1), Appended(7, 7));
    assert_eq!(log.producer_count(), 2);
}

#[test]
fn batches_without_producer_id_are_never_checked() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_default(dir.path());
    let plain = batch(2, 1000);
    check(&log, &plain, Appended(0, 1));
    check(&log, &plain, Appended(2, 3));
    assert_eq!(log.producer_count(), 0);
}

#[test]
fn state_is_rebuilt_from_the_log_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let first = b(1, 2, 0, 3);
    {
        // Small segments: the producer's history spans several of them.
        let log = open(dir.path(), small_segments(200));
        check(&log, &first, Appended(0, 2));
        check(&log, &b(9, 0, 0, 1), Appended(3, 3));
        check(&log, &b(1, 2, 3, 2), Appended(4, 5));
        check(&log, &batch(1, 1000), Appended(6, 6));
        log.flush().unwrap();
        assert!(segment_files(dir.path()).len() > 2);
    }
    let log = open(dir.path(), small_segments(200));
    assert_eq!(log.producer_count(), 2);
    check(&log, &first, Duplicate(0, 2));
    check(&log, &b(1, 2, 3, 2), Duplicate(4, 5));
    check(&log, &b(1, 2, 6, 1), OutOfOrder(1, 5, 6));
    check(&log, &b(1, 1, 5, 1), Fenced(1, 1, 2));
    check(&log, &b(1, 2, 5, 1), Appended(7, 7));
    check(&log, &b(9, 0, 1, 1), Appended(8, 8));
}

#[test]
fn mixed_payload_writes_nothing_and_keeps_state() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_default(dir.path());
    check(&log, &b(1, 0, 0, 1), Appended(0, 0));
    // A retry followed by a new batch.
    let mixed = [b(1, 0, 0, 1), b(1, 0, 1, 1)].concat();
    check(&log, &mixed, OutOfOrder(1, 1, 0));
    // A good batch followed by a gap: the first must not count as appended.
    let gap = [b(1, 0, 1, 1), b(1, 0, 3, 1)].concat();
    check(&log, &gap, OutOfOrder(1, 2, 3));
    // A fenced batch behind a plain one.
    let fenced = [batch(1, 1000), b(1, 0, 1, 1), b(2, 1, 0, 1), b(2, 0, 1, 1)].concat();
    check(&log, &fenced, Fenced(2, 0, 1));
    assert_eq!(log.producer_count(), 1);

    // Two in-order batches of one producer in one payload, then a retry of the whole payload.
    let pair = [b(1, 0, 1, 2), b(1, 0, 3, 1)].concat();
    check(&log, &pair, Appended(1, 3));
    check(&log, &pair, Duplicate(1, 3));
    check(&log, &b(1, 0, 4, 1), Appended(4, 4));
}

#[test]
fn duplicate_of_an_unflushed_batch_waits_for_its_flush() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_default(dir.path());
    let original = b(1, 0, 0, 4);
    log.append(&original).unwrap();
    assert_eq!(log.high_watermark(), 0);
    let retry = log.append(&original).unwrap();
    assert!(retry.duplicate);
    assert_eq!((retry.base_offset, retry.end_offset), (0, 4));
    log.flush_to(retry.end_offset).unwrap();
    assert_eq!(log.high_watermark(), 4);
    // Once the original is durable, flush_to returns at once, leaving newer data unflushed.
    log.append(&b(1, 0, 4, 1)).unwrap();
    let again = log.append(&original).unwrap();
    log.flush_to(again.end_offset).unwrap();
    assert_eq!(log.high_watermark(), 4);
}

/// One step of a producer's life as the property test drives it.
#[derive(Debug, Clone)]
enum Op {
    /// Producer `p` sends its next batch of `records` records.
    Send { p: usize, records: usize },
    /// Producer `p` resends one of its last five batches, `back` batches before its latest.
    Retry { p: usize, back: usize },
    /// The partition is closed and reopened.
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, 1..4usize).prop_map(|(p, records)| Op::Send { p, records }),
        3 => (0..3usize, 0..5usize).prop_map(|(p, back)| Op::Retry { p, back }),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn retries_never_duplicate_or_reorder_batches(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let config = small_segments(400);
        let mut log = open(dir.path(), config.clone());
        // Per producer: (batch, original base offset) of everything it sent, in order.
        let mut sent: Vec<Vec<(Vec<u8>, i64)>> = vec![Vec::new(); 3];
        let mut next_seq = [0i32; 3];
        let mut expected_log = Vec::new();
        for op in ops {
            match op {
                Op::Send { p, records } => {
                    let batch = producer_batch(100 + p as i64, 0, next_seq[p], records);
                    let info = log.append(&batch).unwrap();
                    prop_assert!(!info.duplicate);
                    next_seq[p] += records as i32;
                    expected_log.push(as_stored(&batch, info.base_offset));
                    sent[p].push((batch, info.base_offset));
                }
                Op::Retry { p, back } => {
                    let Some(k) = sent[p].len().checked_sub(1 + back) else { continue };
                    let (batch, base) = &sent[p][k];
                    let info = log.append(batch).unwrap();
                    prop_assert!(info.duplicate);
                    prop_assert_eq!(info.base_offset, *base);
                    log.flush_to(info.end_offset).unwrap();
                }
                Op::Reopen => {
                    log.flush().unwrap();
                    drop(log);
                    log = open(dir.path(), config.clone());
                }
            }
        }
        log.flush().unwrap();
        prop_assert_eq!(read_all(&log), expected_log.concat());
    }
}
