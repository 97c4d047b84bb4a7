//! The transaction coordinator (KIP-98): transactional ids, their producer ids and epochs, and the
//! two-phase end of each transaction.
//!
//! Model: [`state`] holds the rules as pure functions; [`store`] makes every state change durable
//! before it is acted on; this module ties them together under one lock and [`markers`] writes the
//! commit/abort markers into the partitions and settles the transaction's consumer-group offsets.
//!
//! Concurrency: the in-memory map is behind a `parking_lot::Mutex` held only to check a request
//! and to apply a persisted change, never across an fsync. While a change is being persisted the
//! id is *pending*, and other requests for it get CONCURRENT_TRANSACTIONS, as in Kafka. Ending a
//! transaction: the PrepareCommit/PrepareAbort decision is persisted, markers are written and
//! fsynced in every partition, the group offsets are settled, and CompleteCommit/CompleteAbort is
//! persisted; EndTxn is answered after all of it (Kafka answers after the prepare step; answering
//! later costs the client some latency but means that when `commit_transaction` returns, a
//! `read_committed` consumer can already read the records).
//!
//! Restart: a prepared transaction is completed again (markers already written are not written
//! twice: a partition only writes a marker for a transaction open in it); an Ongoing one is
//! aborted when its timeout passes, measured from its persisted start time. The clock task calls
//! [`TxnCoordinator::expire_overdue`].

pub mod markers;
pub mod state;
pub mod store;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

pub use state::{TxnError, TxnMeta, TxnState};

use crate::state::Shared;
use state::InitOutcome;
use store::TxnStore;

/// How often overdue transactions are looked for.
pub const TICK: std::time::Duration = std::time::Duration::from_millis(200);

#[derive(Debug)]
struct Entry {
    meta: TxnMeta,
    /// A change is being persisted.
    pending: bool,
}

#[derive(Debug, Default)]
struct Inner {
    txns: HashMap<String, Entry>,
    /// Producer id -> transactional id, for checking transactional batches on produce.
    by_producer: HashMap<i64, String>,
}

impl Inner {
    fn apply(&mut self, meta: TxnMeta) {
        if let Some(old) = self.txns.get(&meta.transactional_id)
            && old.meta.producer_id != meta.producer_id
        {
            self.by_producer.remove(&old.meta.producer_id);
        }
        self.by_producer
            .insert(meta.producer_id, meta.transactional_id.clone());
        self.txns.insert(
            meta.transactional_id.clone(),
            Entry {
                meta,
                pending: false,
            },
        );
    }
}

/// The coordinator of every transactional id (a single-node cluster has one).
#[derive(Debug)]
pub struct TxnCoordinator {
    inner: Mutex<Inner>,
    store: Arc<TxnStore>,
    max_timeout_ms: i32,
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl TxnCoordinator {
    /// Opens the durable state under `<data>/transactions`.
    pub fn open(data_dir: &Path, max_timeout_ms: i32) -> std::io::Result<TxnCoordinator> {
        let (store, state) = TxnStore::open(&data_dir.join("transactions"))?;
        let mut inner = Inner::default();
        for meta in state.into_values() {
            inner.apply(meta);
        }
        Ok(TxnCoordinator {
            inner: Mutex::new(inner),
            store: Arc::new(store),
            max_timeout_ms,
        })
    }

    /// Completes the transactions a previous run decided but did not finish.
    pub fn resume(shared: &Arc<Shared>) {
        let prepared: Vec<TxnMeta> = {
            let inner = shared.txns.inner.lock();
            inner
                .txns
                .values()
                .filter(|e| e.meta.state.is_prepared())
                .map(|e| e.meta.clone())
                .collect()
        };
        for meta in prepared {
            tracing::info!(transactional_id = %meta.transactional_id, state = meta.state.name(), "completing a transaction decided before the restart");
            tokio::spawn(markers::complete(shared.clone(), meta));
        }
    }

    /// Checks a request under the lock with `decide` and, if it returns a change, persists and
    /// applies it. `Ok(None)`: nothing to change.
    async fn transition(
        &self,
        transactional_id: &str,
        decide: impl FnOnce(Option<&TxnMeta>, bool) -> Result<Option<TxnMeta>, TxnError>,
    ) -> Result<Option<TxnMeta>, TxnError> {
        let (next, existed) = {
            let mut inner = self.inner.lock();
            let entry = inner.txns.get(transactional_id);
            let Some(next) = decide(entry.map(|e| &e.meta), entry.is_some_and(|e| e.pending))?
            else {
                return Ok(None);
            };
            let existed = match inner.txns.get_mut(transactional_id) {
                Some(entry) => {
                    entry.pending = true;
                    true
                }
                None => {
                    inner.txns.insert(
                        transactional_id.to_owned(),
                        Entry {
                            meta: next.clone(),
                            pending: true,
                        },
                    );
                    false
                }
            };
            (next, existed)
        };
        let store = self.store.clone();
        let record = next.clone();
        let persisted = tokio::task::spawn_blocking(move || store.put(&record)).await;
        let mut inner = self.inner.lock();
        match persisted {
            Ok(Ok(())) => {
                inner.apply(next.clone());
                Ok(Some(next))
            }
            other => {
                tracing::error!(
                    transactional_id,
                    ?other,
                    "cannot persist a transaction state change"
                );
                if existed {
                    if let Some(entry) = inner.txns.get_mut(transactional_id) {
                        entry.pending = false;
                    }
                } else {
                    inner.txns.remove(transactional_id);
                }
                Err(TxnError::CoordinatorNotAvailable)
            }
        }
    }

    /// InitProducerId with a transactional id: the producer id and epoch to use.
    pub async fn init_producer_id(
        shared: &Arc<Shared>,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> Result<(i64, i16), TxnError> {
        let this = &shared.txns;
        if transactional_id.is_empty() {
            return Err(TxnError::InvalidRequest);
        }
        if timeout_ms <= 0 || timeout_ms > this.max_timeout_ms {
            return Err(TxnError::InvalidTransactionTimeout);
        }
        let needs_id = {
            let inner = this.inner.lock();
            inner
                .txns
                .get(transactional_id)
                .is_none_or(|e| e.meta.producer_epoch >= i16::MAX - 1)
        };
        let new_id = if needs_id {
            let ids = shared.producer_ids.clone();
            match tokio::task::spawn_blocking(move || ids.next()).await {
                Ok(Ok(id)) => id,
                other => {
                    tracing::error!(?other, "cannot allocate a producer id");
                    return Err(TxnError::CoordinatorNotAvailable);
                }
            }
        } else {
            -1
        };
        let now = now_ms();
        let mut answer = None;
        let mut abort_first = false;
        let changed = this
            .transition(transactional_id, |meta, pending| {
                if pending {
                    return Err(TxnError::ConcurrentTransactions);
                }
                match state::init_producer_id(
                    meta,
                    transactional_id,
                    timeout_ms,
                    expected,
                    new_id,
                    now,
                )? {
                    InitOutcome::Ready(next) => Ok(Some(next)),
                    InitOutcome::AbortFirst(next) => {
                        abort_first = true;
                        Ok(Some(next))
                    }
                    InitOutcome::Unchanged(meta) => {
                        answer = Some((meta.producer_id, meta.producer_epoch));
                        Ok(None)
                    }
                }
            })
            .await?;
        match changed {
            Some(meta) if abort_first => {
                tracing::info!(
                    transactional_id,
                    producer_id = meta.producer_id,
                    epoch = meta.producer_epoch,
                    "a new producer instance fences the open transaction; aborting it"
                );
                tokio::spawn(markers::complete(shared.clone(), meta));
                Err(TxnError::ConcurrentTransactions)
            }
            Some(meta) => Ok((meta.producer_id, meta.producer_epoch)),
            None => answer.ok_or(TxnError::CoordinatorNotAvailable),
        }
    }

    /// AddPartitionsToTxn (`groups` empty) or AddOffsetsToTxn (`partitions` empty).
    pub async fn add(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
        groups: &[String],
    ) -> Result<(), TxnError> {
        if transactional_id.is_empty() {
            return Err(TxnError::InvalidRequest);
        }
        let now = now_ms();
        self.transition(transactional_id, |meta, pending| {
            let meta = meta.ok_or(TxnError::InvalidProducerIdMapping)?;
            state::add(meta, pending, producer_id, epoch, partitions, groups, now)
        })
        .await
        .map(|_| ())
    }

    /// EndTxn: decides, writes the markers, settles the offsets; returns when all is durable.
    pub async fn end(
        shared: &Arc<Shared>,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) -> Result<(), TxnError> {
        if transactional_id.is_empty() {
            return Err(TxnError::InvalidRequest);
        }
        let now = now_ms();
        let decided = shared
            .txns
            .transition(transactional_id, |meta, pending| {
                let meta = meta.ok_or(TxnError::InvalidProducerIdMapping)?;
                state::end(meta, pending, producer_id, epoch, commit, now)
            })
            .await?;
        if let Some(prepared) = decided {
            markers::complete(shared.clone(), prepared).await;
        }
        Ok(())
    }

    /// Aborts every transaction open longer than its timeout, fencing its producer.
    pub fn expire_overdue(shared: &Arc<Shared>) {
        let now = now_ms();
        let overdue: Vec<String> = {
            let inner = shared.txns.inner.lock();
            inner
                .txns
                .values()
                .filter(|e| !e.pending && state::expire(&e.meta, now).is_some())
                .map(|e| e.meta.transactional_id.clone())
                .collect()
        };
        for transactional_id in overdue {
            let shared = shared.clone();
            tokio::spawn(async move {
                let fenced = shared
                    .txns
                    .transition(&transactional_id, |meta, pending| {
                        Ok(meta
                            .filter(|_| !pending)
                            .and_then(|m| state::expire(m, now)))
                    })
                    .await;
                if let Ok(Some(meta)) = fenced {
                    tracing::info!(%transactional_id, producer_id = meta.producer_id, epoch = meta.producer_epoch, "transaction timed out; aborting it and fencing its producer");
                    markers::complete(shared, meta).await;
                }
            });
        }
    }

    /// Checks a transactional batch about to be appended to `partition`.
    pub fn verify_produce(
        &self,
        producer_id: i64,
        epoch: i16,
        partition: &(String, i32),
    ) -> Result<(), TxnError> {
        let inner = self.inner.lock();
        let meta = inner
            .by_producer
            .get(&producer_id)
            .and_then(|id| inner.txns.get(id))
            .map(|e| &e.meta)
            .ok_or(TxnError::InvalidProducerIdMapping)?;
        state::verify_produce(meta, epoch, partition)
    }

    /// AddPartitionsToTxn's `verify_only`: whether each partition is in `transactional_id`'s open
    /// transaction. The producer id and epoch are checked first, for all partitions at once.
    pub fn verify_partitions(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
    ) -> Result<Vec<Result<(), TxnError>>, TxnError> {
        let inner = self.inner.lock();
        let meta = inner
            .txns
            .get(transactional_id)
            .map(|e| &e.meta)
            .filter(|meta| meta.producer_id == producer_id)
            .ok_or(TxnError::InvalidProducerIdMapping)?;
        if meta.producer_epoch != epoch {
            return Err(TxnError::ProducerFenced);
        }
        if matches!(meta.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
            return Err(TxnError::ConcurrentTransactions);
        }
        Ok(partitions
            .iter()
            .map(|p| state::verify_produce(meta, epoch, p))
            .collect())
    }

    /// Checks a TxnOffsetCommit against the open transaction.
    pub fn verify_offsets(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
    ) -> Result<(), TxnError> {
        let inner = self.inner.lock();
        let meta = inner
            .txns
            .get(transactional_id)
            .map(|e| &e.meta)
            .ok_or(TxnError::InvalidProducerIdMapping)?;
        state::verify_offsets(meta, producer_id, epoch, group)
    }

    /// One transactional id's metadata.
    pub fn describe(&self, transactional_id: &str) -> Option<TxnMeta> {
        self.inner
            .lock()
            .txns
            .get(transactional_id)
            .map(|e| e.meta.clone())
    }

    /// Every transactional id's metadata, by id.
    pub fn list(&self) -> Vec<TxnMeta> {
        let mut all: Vec<TxnMeta> = self
            .inner
            .lock()
            .txns
            .values()
            .map(|e| e.meta.clone())
            .collect();
        all.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        all
    }

    /// Applies a persisted change made outside [`transition`](Self::transition) (completion).
    fn persisted(&self, meta: TxnMeta) {
        self.inner.lock().apply(meta);
    }

    fn store(&self) -> Arc<TxnStore> {
        self.store.clone()
    }
}
