//! The durable side of the transaction coordinator: every state change of a transactional id is
//! one record (the whole metadata, as Kafka's `__transaction_state` keeps it) in
//! `<data>/transactions/transactions.log`, a [`Journal`] fsynced before the change is acted on or
//! answered. Replay keeps the last record per id; the file is rewritten when it has grown to many
//! times the live state.

use std::collections::HashMap;
use std::path::Path;

use parking_lot::Mutex;

use super::state::TxnMeta;
use crate::journal::Journal;

const FILE: &str = "transactions.log";
/// Rewrite the file when it holds this many times more records than live ids...
const COMPACT_FACTOR: usize = 8;
/// ...and at least this many.
const COMPACT_MIN_RECORDS: usize = 10_000;

/// The transactions' journal and the live metadata it describes (for rewriting).
#[derive(Debug)]
pub struct TxnStore {
    inner: Mutex<(Journal, HashMap<String, TxnMeta>)>,
}

impl TxnStore {
    /// Opens `<dir>/transactions.log` and returns the store with every transactional id's last state.
    pub fn open(dir: &Path) -> std::io::Result<(TxnStore, HashMap<String, TxnMeta>)> {
        let (journal, records) = Journal::open::<TxnMeta>(dir, FILE)?;
        let mut live = HashMap::new();
        for meta in records {
            live.insert(meta.transactional_id.clone(), meta);
        }
        let state = live.clone();
        Ok((
            TxnStore {
                inner: Mutex::new((journal, live)),
            },
            state,
        ))
    }

    /// Durably records `meta` as its id's state. Blocking (one fsync).
    pub fn put(&self, meta: &TxnMeta) -> std::io::Result<()> {
        let mut inner = self.inner.lock();
        let (journal, live) = &mut *inner;
        journal.append(meta)?;
        live.insert(meta.transactional_id.clone(), meta.clone());
        if journal.records() >= COMPACT_MIN_RECORDS
            && journal.records() > live.len() * COMPACT_FACTOR
        {
            journal.rewrite(live.values())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::state::{InitOutcome, init_producer_id};

    #[test]
    fn the_last_state_of_each_id_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let InitOutcome::Ready(a) = init_producer_id(None, "a", 1000, None, 1, 0).unwrap() else {
            panic!()
        };
        let mut b = a.clone();
        b.transactional_id = "b".into();
        b.producer_id = 2;
        {
            let (store, old) = TxnStore::open(dir.path()).unwrap();
            assert!(old.is_empty());
            store.put(&a).unwrap();
            store.put(&b).unwrap();
            let mut a2 = a.clone();
            a2.producer_epoch = 5;
            store.put(&a2).unwrap();
        }
        let (_, state) = TxnStore::open(dir.path()).unwrap();
        assert_eq!(state.len(), 2);
        assert_eq!(state["a"].producer_epoch, 5);
        assert_eq!(state["b"], b);
    }
}
