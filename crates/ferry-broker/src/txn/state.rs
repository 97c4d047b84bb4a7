//! One transactional id's metadata and its state machine, as pure functions of (metadata, request,
//! time), so that every rule is unit-tested without a broker. The rules and error codes follow
//! Apache Kafka's `TransactionCoordinator` (KIP-98, KIP-360, KIP-588) for clients of transaction
//! version 1 (epoch bumped only by InitProducerId and by fencing, not per transaction).
//!
//! ```text
//! Empty / CompleteCommit / CompleteAbort --AddPartitions/AddOffsets--> Ongoing
//! Ongoing --EndTxn(commit)--> PrepareCommit --markers written--> CompleteCommit
//! Ongoing --EndTxn(abort), timeout, InitProducerId--> PrepareAbort --markers--> CompleteAbort
//! ```
//!
//! A timeout or a new producer instance (InitProducerId while Ongoing) *fences*: the abort is
//! written with the epoch bumped, so the old instance's requests and batches are refused.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Kafka's transaction states (the names DescribeTransactions and ListTransactions report).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnState {
    /// No transaction since the producer id was handed out.
    Empty,
    /// Partitions or offsets were added; records may be in the logs.
    Ongoing,
    /// Commit decided (durably); markers are being written.
    PrepareCommit,
    /// Abort decided (durably); markers are being written.
    PrepareAbort,
    /// Committed, markers written.
    CompleteCommit,
    /// Aborted, markers written.
    CompleteAbort,
}

impl TxnState {
    /// Kafka's name for the state.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }

    /// Whether markers are being written (the decision is made, the transaction not complete).
    pub fn is_prepared(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }
}

/// No epoch (Kafka's `RecordBatch.NO_PRODUCER_EPOCH`).
pub const NO_EPOCH: i16 = -1;

/// The durable metadata of one transactional id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnMeta {
    /// The transactional id.
    pub transactional_id: String,
    /// Producer id currently bound to it.
    pub producer_id: i64,
    /// Current epoch; older ones are fenced.
    pub producer_epoch: i16,
    /// The epoch before the last InitProducerId bump, so a retried InitProducerId is recognised.
    pub last_epoch: i16,
    /// The producer's `transaction.timeout.ms`.
    pub timeout_ms: i32,
    /// Where the transaction is.
    pub state: TxnState,
    /// Partitions of the current transaction.
    pub partitions: BTreeSet<(String, i32)>,
    /// Consumer groups whose offsets the current transaction commits.
    pub groups: BTreeSet<String>,
    /// When the current transaction began (wall clock ms), -1 when none is open.
    pub start_ms: i64,
    /// Last state change (wall clock ms).
    pub update_ms: i64,
}

/// Why a transactional request is refused; each is one Kafka error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    /// Empty transactional id.
    #[error("invalid request")]
    InvalidRequest,
    /// `transaction.timeout.ms` is not in `1..=transaction.max.timeout.ms`.
    #[error("invalid transaction timeout")]
    InvalidTransactionTimeout,
    /// Unknown transactional id, or a producer id that is not the one bound to it.
    #[error("invalid producer id mapping")]
    InvalidProducerIdMapping,
    /// The producer's epoch is not the current one: a newer instance took over, or the
    /// coordinator aborted its transaction (PRODUCER_FENCED; INVALID_PRODUCER_EPOCH for old clients).
    #[error("producer fenced")]
    ProducerFenced,
    /// A previous transaction is still being completed; retry.
    #[error("concurrent transactions")]
    ConcurrentTransactions,
    /// The request does not fit the transaction's state (e.g. commit after abort).
    #[error("invalid transaction state")]
    InvalidTxnState,
    /// The coordinator's storage failed.
    #[error("coordinator not available")]
    CoordinatorNotAvailable,
}

/// The epoch after `epoch`, or `None` when it is exhausted and a new producer id is needed.
fn bump(epoch: i16) -> Option<i16> {
    (epoch < i16::MAX - 1).then(|| epoch.saturating_add(1).max(0))
}

/// What InitProducerId must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitOutcome {
    /// Persist this metadata, then answer with its producer id and epoch.
    Ready(TxnMeta),
    /// An open transaction must be aborted first (fencing its producer): persist this
    /// PrepareAbort metadata, complete it, and answer CONCURRENT_TRANSACTIONS so the client retries.
    AbortFirst(TxnMeta),
    /// A retried request whose bump is already done: answer with the current id and epoch.
    Unchanged(TxnMeta),
}

/// InitProducerId for a transactional id. `current` is its metadata (None: never seen),
/// `expected` the (producer id, epoch) a KIP-360 client sends to re-initialise, `new_id` a fresh
/// producer id for when one is needed.
pub fn init_producer_id(
    current: Option<&TxnMeta>,
    transactional_id: &str,
    timeout_ms: i32,
    expected: Option<(i64, i16)>,
    new_id: i64,
    now: i64,
) -> Result<InitOutcome, TxnError> {
    let Some(meta) = current else {
        return Ok(InitOutcome::Ready(TxnMeta {
            transactional_id: transactional_id.to_owned(),
            producer_id: new_id,
            producer_epoch: 0,
            last_epoch: NO_EPOCH,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            groups: BTreeSet::new(),
            start_ms: -1,
            update_ms: now,
        }));
    };
    if let Some((id, _)) = expected
        && id != meta.producer_id
    {
        return Err(TxnError::ProducerFenced);
    }
    match meta.state {
        TxnState::PrepareCommit | TxnState::PrepareAbort => Err(TxnError::ConcurrentTransactions),
        TxnState::Ongoing => {
            let mut next = meta.clone();
            next.producer_epoch = bump(meta.producer_epoch).unwrap_or(meta.producer_epoch);
            next.last_epoch = NO_EPOCH;
            next.state = TxnState::PrepareAbort;
            next.update_ms = now;
            Ok(InitOutcome::AbortFirst(next))
        }
        TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
            let mut next = meta.clone();
            next.timeout_ms = timeout_ms;
            next.update_ms = now;
            match expected.map(|(_, epoch)| epoch) {
                Some(epoch) if epoch != meta.producer_epoch => {
                    if epoch == meta.last_epoch && meta.last_epoch != NO_EPOCH {
                        return Ok(InitOutcome::Unchanged(meta.clone()));
                    }
                    return Err(TxnError::ProducerFenced);
                }
                _ => {}
            }
            match bump(meta.producer_epoch) {
                Some(epoch) => {
                    next.last_epoch = if expected.is_some() {
                        meta.producer_epoch
                    } else {
                        NO_EPOCH
                    };
                    next.producer_epoch = epoch;
                }
                None => {
                    next.producer_id = new_id;
                    next.producer_epoch = 0;
                    next.last_epoch = NO_EPOCH;
                }
            }
            Ok(InitOutcome::Ready(next))
        }
    }
}

/// Checks that `(producer_id, epoch)` is the current producer of `meta` and that no transition is
/// in flight; the rules every client request after InitProducerId starts with.
fn check_producer(
    meta: &TxnMeta,
    pending: bool,
    producer_id: i64,
    epoch: i16,
) -> Result<(), TxnError> {
    if meta.producer_id != producer_id {
        Err(TxnError::InvalidProducerIdMapping)
    } else if meta.producer_epoch != epoch {
        Err(TxnError::ProducerFenced)
    } else if pending || meta.state.is_prepared() {
        Err(TxnError::ConcurrentTransactions)
    } else {
        Ok(())
    }
}

/// AddPartitionsToTxn / AddOffsetsToTxn: the metadata to persist, or `None` if everything is
/// already part of the open transaction.
pub fn add(
    meta: &TxnMeta,
    pending: bool,
    producer_id: i64,
    epoch: i16,
    partitions: &[(String, i32)],
    groups: &[String],
    now: i64,
) -> Result<Option<TxnMeta>, TxnError> {
    check_producer(meta, pending, producer_id, epoch)?;
    let open = meta.state == TxnState::Ongoing;
    if open
        && partitions.iter().all(|p| meta.partitions.contains(p))
        && groups.iter().all(|g| meta.groups.contains(g))
    {
        return Ok(None);
    }
    let mut next = meta.clone();
    if !open {
        next.partitions.clear();
        next.groups.clear();
        next.start_ms = now;
    }
    next.state = TxnState::Ongoing;
    next.partitions.extend(partitions.iter().cloned());
    next.groups.extend(groups.iter().cloned());
    next.update_ms = now;
    Ok(Some(next))
}

/// EndTxn: the PrepareCommit/PrepareAbort metadata to persist, or `None` when the transaction
/// already ended that way (a retry, answered with success).
pub fn end(
    meta: &TxnMeta,
    pending: bool,
    producer_id: i64,
    epoch: i16,
    commit: bool,
    now: i64,
) -> Result<Option<TxnMeta>, TxnError> {
    if meta.producer_id != producer_id {
        return Err(TxnError::InvalidProducerIdMapping);
    }
    if meta.producer_epoch != epoch {
        return Err(TxnError::ProducerFenced);
    }
    if pending {
        return Err(TxnError::ConcurrentTransactions);
    }
    match (meta.state, commit) {
        (TxnState::Ongoing, _) => {
            let mut next = meta.clone();
            next.state = if commit {
                TxnState::PrepareCommit
            } else {
                TxnState::PrepareAbort
            };
            next.update_ms = now;
            Ok(Some(next))
        }
        (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => Ok(None),
        (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
            Err(TxnError::ConcurrentTransactions)
        }
        _ => Err(TxnError::InvalidTxnState),
    }
}

/// The broker aborts a transaction open longer than its timeout, fencing its producer.
pub fn expire(meta: &TxnMeta, now: i64) -> Option<TxnMeta> {
    let overdue = meta.state == TxnState::Ongoing
        && meta.start_ms >= 0
        && now.saturating_sub(meta.start_ms) > i64::from(meta.timeout_ms);
    overdue.then(|| {
        let mut next = meta.clone();
        next.producer_epoch = bump(meta.producer_epoch).unwrap_or(meta.producer_epoch);
        next.last_epoch = NO_EPOCH;
        next.state = TxnState::PrepareAbort;
        next.update_ms = now;
        next
    })
}

/// After the markers of a prepared transaction are written: complete, with nothing open.
pub fn complete(meta: &TxnMeta, now: i64) -> TxnMeta {
    let mut next = meta.clone();
    next.state = if meta.state == TxnState::PrepareCommit {
        TxnState::CompleteCommit
    } else {
        TxnState::CompleteAbort
    };
    next.partitions.clear();
    next.groups.clear();
    next.start_ms = -1;
    next.update_ms = now;
    next
}

/// Whether a transactional batch of `(epoch)` for `partition` may be written: the producer is
/// current and added the partition to its open transaction (KIP-890's verification, done in
/// process since coordinator and partitions share the broker).
pub fn verify_produce(
    meta: &TxnMeta,
    epoch: i16,
    partition: &(String, i32),
) -> Result<(), TxnError> {
    if meta.producer_epoch != epoch {
        Err(TxnError::ProducerFenced)
    } else if meta.state != TxnState::Ongoing || !meta.partitions.contains(partition) {
        Err(TxnError::InvalidTxnState)
    } else {
        Ok(())
    }
}

/// Whether TxnOffsetCommit for `group` fits the open transaction.
pub fn verify_offsets(
    meta: &TxnMeta,
    producer_id: i64,
    epoch: i16,
    group: &str,
) -> Result<(), TxnError> {
    if meta.producer_id != producer_id {
        Err(TxnError::InvalidProducerIdMapping)
    } else if meta.producer_epoch != epoch {
        Err(TxnError::ProducerFenced)
    } else if meta.state != TxnState::Ongoing || !meta.groups.contains(group) {
        Err(TxnError::InvalidTxnState)
    } else {
        Ok(())
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
