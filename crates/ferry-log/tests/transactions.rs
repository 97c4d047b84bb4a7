//! Transactions in one partition: markers, the last stable offset, what `read_committed` reads
//! and which aborted transactions it reports, fencing by a marker's epoch, and all of it rebuilt
//! from the log on reopen.

mod common;

use common::*;
use ferry_log::{AbortedTxn, Error, LogConfig};

#[test]
fn markers_move_the_last_stable_offset_and_read_committed_stops_there() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default());
    append_durable(&log, &batch(2, 1000)); // 0-1, not transactional
    append_durable(&log, &txn_batch(7, 0, 0, 3)); // 2-4, producer 7's transaction
    append_durable(&log, &txn_batch(8, 0, 0, 2)); // 5-6, producer 8's transaction
    assert_eq!(log.high_watermark(), 7);
    assert_eq!(
        log.last_stable_offset(),
        2,
        "held back by producer 7's open transaction"
    );

    let read = log.read_committed(0, usize::MAX, true).unwrap();
    assert_eq!(
        headers(&read.records).len(),
        1,
        "only the batch below the LSO"
    );
    assert_eq!(read.last_stable_offset, 2);
    assert_eq!(read.aborted_transactions, Some(vec![]));
    let all = log.read(0, usize::MAX, true).unwrap();
    assert_eq!(headers(&all.records).len(), 3);
    assert_eq!(all.aborted_transactions, None);

    // Abort 7: written but not yet durable, so the LSO still waits for it.
    let marker = log.append_marker(7, 0, false, 0).unwrap().unwrap();
    assert_eq!(marker.base_offset, 7);
    assert_eq!(log.last_stable_offset(), 2);
    log.flush_to(marker.end_offset).unwrap();
    assert_eq!(log.last_stable_offset(), 5, "now held back by producer 8");
    let read = log.read_committed(0, usize::MAX, true).unwrap();
    assert_eq!(headers(&read.records).len(), 2);
    let aborted = AbortedTxn {
        producer_id: 7,
        first_offset: 2,
        last_offset: 7,
    };
    assert_eq!(read.aborted_transactions, Some(vec![aborted]));

    let commit = log.append_marker(8, 0, true, 0).unwrap().unwrap();
    log.flush_to(commit.end_offset).unwrap();
    assert_eq!(log.last_stable_offset(), log.high_watermark());
    let read = log.read_committed(0, usize::MAX, true).unwrap();
    let h = headers(&read.records);
    assert_eq!(h.len(), 5);
    assert!(h[3].is_control() && h[4].is_control());
    assert_eq!(read.aborted_transactions, Some(vec![aborted]));
    // A read starting after the aborted transaction does not report it.
    let later = log.read_committed(8, usize::MAX, true).unwrap();
    assert_eq!(later.aborted_transactions, Some(vec![]));

    // A repeated marker (a coordinator completing again after a restart) writes nothing.
    assert_eq!(log.append_marker(8, 0, true, 0).unwrap(), None);

    // Everything is rebuilt from the log.
    drop(log);
    let log = open(dir.path(), LogConfig::default());
    assert_eq!(log.last_stable_offset(), log.high_watermark());
    let read = log.read_committed(0, usize::MAX, true).unwrap();
    assert_eq!(read.aborted_transactions, Some(vec![aborted]));
    assert_eq!(log.append_marker(7, 0, false, 0).unwrap(), None);
}

#[test]
fn an_open_transaction_survives_reopen_and_holds_the_lso() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path(), LogConfig::default());
        append_durable(&log, &txn_batch(3, 0, 0, 2));
        append_durable(&log, &batch(1, 1000));
    }
    let log = open(dir.path(), LogConfig::default());
    assert_eq!(log.last_stable_offset(), 0);
    let p = log.producers();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].current_txn_start_offset, 0);
    assert_eq!(p[0].last_sequence, 1);
    let m = log.append_marker(3, 0, true, 0).unwrap().unwrap();
    log.flush_to(m.end_offset).unwrap();
    assert_eq!(log.last_stable_offset(), 4);
    assert_eq!(log.producers()[0].current_txn_start_offset, -1);
}

#[test]
fn a_fencing_marker_refuses_the_old_epoch_and_restarts_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default());
    append_durable(&log, &txn_batch(5, 0, 0, 2));
    // The coordinator aborts with the epoch bumped (timeout or a new instance).
    let m = log.append_marker(5, 1, false, 0).unwrap().unwrap();
    log.flush_to(m.end_offset).unwrap();
    assert!(matches!(
        log.append(&txn_batch(5, 0, 2, 1)),
        Err(Error::InvalidProducerEpoch {
            epoch: 0,
            current: 1,
            ..
        })
    ));
    assert!(matches!(
        log.append_marker(5, 0, true, 0),
        Err(Error::InvalidProducerEpoch { .. })
    ));
    // The new epoch starts at sequence 0.
    append_durable(&log, &txn_batch(5, 1, 0, 1));
    assert_eq!(log.last_stable_offset(), 3);
}

#[test]
fn a_client_cannot_write_a_control_batch() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), LogConfig::default());
    append_durable(&log, &txn_batch(5, 0, 0, 1));
    let m = log.append_marker(5, 0, true, 0).unwrap().unwrap();
    log.flush_to(m.end_offset).unwrap();
    let marker = log.read(1, usize::MAX, true).unwrap().records;
    assert!(matches!(log.append(&marker), Err(Error::InvalidRecords(_))));
}
