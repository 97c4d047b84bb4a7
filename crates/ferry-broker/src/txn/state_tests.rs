use super::*;

fn fresh() -> TxnMeta {
    match init_producer_id(None, "t", 60_000, None, 7, 1000).unwrap() {
        InitOutcome::Ready(m) => m,
        other => panic!("{other:?}"),
    }
}

fn tp(p: i32) -> (String, i32) {
    ("topic".to_owned(), p)
}

#[test]
fn a_transaction_goes_ongoing_prepare_complete() {
    let m = fresh();
    assert_eq!(
        (m.producer_id, m.producer_epoch, m.state),
        (7, 0, TxnState::Empty)
    );
    let m = add(&m, false, 7, 0, &[tp(0)], &[], 2000).unwrap().unwrap();
    assert_eq!((m.state, m.start_ms), (TxnState::Ongoing, 2000));
    assert_eq!(add(&m, false, 7, 0, &[tp(0)], &[], 2001).unwrap(), None);
    let m = add(&m, false, 7, 0, &[tp(1)], &["g".into()], 2002)
        .unwrap()
        .unwrap();
    assert_eq!(m.partitions.len(), 2);
    assert_eq!(m.start_ms, 2000, "adding keeps the start time");
    let p = end(&m, false, 7, 0, true, 3000).unwrap().unwrap();
    assert_eq!(p.state, TxnState::PrepareCommit);
    // While markers are written, everything waits.
    assert_eq!(
        add(&p, false, 7, 0, &[tp(0)], &[], 3001),
        Err(TxnError::ConcurrentTransactions)
    );
    assert_eq!(
        end(&p, false, 7, 0, true, 3001),
        Err(TxnError::ConcurrentTransactions)
    );
    assert_eq!(
        end(&p, false, 7, 0, false, 3001),
        Err(TxnError::InvalidTxnState)
    );
    let c = complete(&p, 3002);
    assert_eq!(c.state, TxnState::CompleteCommit);
    assert!(c.partitions.is_empty() && c.groups.is_empty());
    // A retried commit succeeds; an abort of a committed transaction does not.
    assert_eq!(end(&c, false, 7, 0, true, 3003), Ok(None));
    assert_eq!(
        end(&c, false, 7, 0, false, 3003),
        Err(TxnError::InvalidTxnState)
    );
    // The next transaction starts afresh, same epoch (transaction version 1).
    let n = add(&c, false, 7, 0, &[tp(2)], &[], 4000).unwrap().unwrap();
    assert_eq!(n.partitions.len(), 1);
    assert_eq!(n.start_ms, 4000);
}

#[test]
fn ending_an_empty_transaction_is_an_invalid_state() {
    assert_eq!(
        end(&fresh(), false, 7, 0, true, 1),
        Err(TxnError::InvalidTxnState)
    );
}

#[test]
fn wrong_producer_or_epoch_is_refused() {
    let m = add(&fresh(), false, 7, 0, &[tp(0)], &[], 1)
        .unwrap()
        .unwrap();
    assert_eq!(
        add(&m, false, 8, 0, &[tp(0)], &[], 2),
        Err(TxnError::InvalidProducerIdMapping)
    );
    assert_eq!(end(&m, false, 7, 1, true, 2), Err(TxnError::ProducerFenced));
    assert_eq!(
        add(&m, true, 7, 0, &[tp(1)], &[], 2),
        Err(TxnError::ConcurrentTransactions)
    );
}

#[test]
fn init_producer_id_bumps_the_epoch_and_aborts_an_open_transaction() {
    let m = fresh();
    let InitOutcome::Ready(b) = init_producer_id(Some(&m), "t", 60_000, None, 99, 2).unwrap()
    else {
        panic!()
    };
    assert_eq!((b.producer_id, b.producer_epoch), (7, 1));
    let open = add(&b, false, 7, 1, &[tp(0)], &[], 3).unwrap().unwrap();
    let InitOutcome::AbortFirst(a) =
        init_producer_id(Some(&open), "t", 60_000, None, 99, 4).unwrap()
    else {
        panic!()
    };
    assert_eq!((a.state, a.producer_epoch), (TxnState::PrepareAbort, 2));
    assert_eq!(
        a.partitions, open.partitions,
        "the abort covers the partitions"
    );
    assert_eq!(
        init_producer_id(Some(&a), "t", 60_000, None, 99, 5),
        Err(TxnError::ConcurrentTransactions)
    );
    let done = complete(&a, 6);
    let InitOutcome::Ready(r) = init_producer_id(Some(&done), "t", 60_000, None, 99, 7).unwrap()
    else {
        panic!()
    };
    assert_eq!(r.producer_epoch, 3);
    // The fenced instance can no longer end its transaction.
    assert_eq!(end(&r, false, 7, 1, true, 8), Err(TxnError::ProducerFenced));
}

#[test]
fn kip_360_reinit_checks_the_expected_epoch_and_recognises_a_retry() {
    let m = fresh();
    let InitOutcome::Ready(b) = init_producer_id(Some(&m), "t", 1000, Some((7, 0)), 99, 2).unwrap()
    else {
        panic!()
    };
    assert_eq!((b.producer_epoch, b.last_epoch), (1, 0));
    assert_eq!(
        init_producer_id(Some(&b), "t", 1000, Some((7, 0)), 99, 3),
        Ok(InitOutcome::Unchanged(b.clone()))
    );
    assert_eq!(
        init_producer_id(Some(&b), "t", 1000, Some((8, 1)), 99, 3),
        Err(TxnError::ProducerFenced)
    );
}

#[test]
fn an_exhausted_epoch_gets_a_new_producer_id() {
    let mut m = fresh();
    m.producer_epoch = i16::MAX - 1;
    let InitOutcome::Ready(n) = init_producer_id(Some(&m), "t", 1000, None, 99, 2).unwrap() else {
        panic!()
    };
    assert_eq!((n.producer_id, n.producer_epoch), (99, 0));
}

#[test]
fn expiry_fences_and_aborts_only_overdue_open_transactions() {
    let m = add(&fresh(), false, 7, 0, &[tp(0)], &[], 1000)
        .unwrap()
        .unwrap();
    assert_eq!(expire(&m, 61_000), None);
    let e = expire(&m, 61_001).unwrap();
    assert_eq!((e.state, e.producer_epoch), (TxnState::PrepareAbort, 1));
    assert_eq!(expire(&complete(&e, 2), 1_000_000), None);
}

#[test]
fn produce_and_offsets_are_verified_against_the_open_transaction() {
    let m = add(&fresh(), false, 7, 0, &[tp(0)], &["g".into()], 1)
        .unwrap()
        .unwrap();
    assert_eq!(verify_produce(&m, 0, &tp(0)), Ok(()));
    assert_eq!(
        verify_produce(&m, 0, &tp(1)),
        Err(TxnError::InvalidTxnState)
    );
    assert_eq!(verify_produce(&m, 1, &tp(0)), Err(TxnError::ProducerFenced));
    assert_eq!(verify_offsets(&m, 7, 0, "g"), Ok(()));
    assert_eq!(
        verify_offsets(&m, 7, 0, "other"),
        Err(TxnError::InvalidTxnState)
    );
}
