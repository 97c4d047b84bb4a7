//! The transactional producer's APIs: AddPartitionsToTxn, AddOffsetsToTxn, EndTxn and
//! TxnOffsetCommit (InitProducerId is in `producers.rs`). The rules live in `crate::txn`; this
//! module translates wire types and error codes.

use std::future::Future;
use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, EndTxnRequest, EndTxnResponse, ResponseKind,
    TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};

use super::Reply;
use super::groups::group_error;
use crate::groups::Committed;
use crate::state::Shared;
use crate::txn::{TxnCoordinator, TxnError};

/// The Kafka error for a coordinator error. PRODUCER_FENCED (KIP-588) is new in InitProducerId v4
/// and in v2 of AddPartitionsToTxn, AddOffsetsToTxn and EndTxn; older clients get
/// INVALID_PRODUCER_EPOCH, which they treat the same way (Kafka's KafkaApis does this).
pub fn txn_error(e: TxnError, fenced_is_new: bool) -> ResponseError {
    match e {
        TxnError::InvalidRequest => ResponseError::InvalidRequest,
        TxnError::InvalidTransactionTimeout => ResponseError::InvalidTransactionTimeout,
        TxnError::InvalidProducerIdMapping => ResponseError::InvalidProducerIdMapping,
        TxnError::ProducerFenced if fenced_is_new => ResponseError::ProducerFenced,
        TxnError::ProducerFenced => ResponseError::InvalidProducerEpoch,
        TxnError::ConcurrentTransactions => ResponseError::ConcurrentTransactions,
        TxnError::InvalidTxnState => ResponseError::InvalidTxnState,
        TxnError::CoordinatorNotAvailable => ResponseError::CoordinatorNotAvailable,
    }
}

/// Runs a coordinator request to its end even if the client goes away: dropping a half-done
/// transition would leave the transactional id pending (or a decided transaction without its
/// markers) until a restart.
pub fn detached(work: impl Future<Output = ResponseKind> + Send + 'static) -> Reply {
    let task = tokio::spawn(work);
    Box::pin(async move {
        match task.await {
            Ok(body) => Some(body),
            Err(e) => {
                tracing::error!(error = %e, "transaction request task failed");
                None
            }
        }
    })
}

fn code(r: Result<(), TxnError>, version: i16) -> i16 {
    r.err().map_or(0, |e| txn_error(e, version >= 2).code())
}

/// AddPartitionsToTxn. v0-3 carry one transaction, as clients send it; v4+ (KIP-890) carry a batch
/// of transactions, each either added to or only verified (`verify_only`, what Kafka's brokers ask
/// their transaction coordinator before appending a transactional batch).
pub fn add_partitions(shared: &Arc<Shared>, req: AddPartitionsToTxnRequest, version: i16) -> Reply {
    let shared = shared.clone();
    detached(async move {
        if version <= 3 {
            let results = add_to_one(
                &shared,
                req.v3_and_below_transactional_id.0.as_str(),
                req.v3_and_below_producer_id.0,
                req.v3_and_below_producer_epoch,
                req.v3_and_below_topics,
                false,
                version,
            )
            .await;
            return AddPartitionsToTxnResponse::default()
                .with_results_by_topic_v3_and_below(results)
                .into();
        }
        let mut by_transaction = Vec::with_capacity(req.transactions.len());
        for t in req.transactions {
            let topic_results = add_to_one(
                &shared,
                t.transactional_id.0.as_str(),
                t.producer_id.0,
                t.producer_epoch,
                t.topics,
                t.verify_only,
                version,
            )
            .await;
            by_transaction.push(
                AddPartitionsToTxnResult::default()
                    .with_transactional_id(t.transactional_id)
                    .with_topic_results(topic_results),
            );
        }
        AddPartitionsToTxnResponse::default()
            .with_results_by_transaction(by_transaction)
            .into()
    })
}

/// Adds (or with `verify_only`, checks) one transaction's partitions. Partitions of unknown topics
/// fail with UNKNOWN_TOPIC_OR_PARTITION and the rest with OPERATION_NOT_ATTEMPTED, as in Kafka; a
/// verified partition the transaction does not hold is INVALID_TXN_STATE.
async fn add_to_one(
    shared: &Arc<Shared>,
    transactional_id: &str,
    producer_id: i64,
    epoch: i16,
    topics: Vec<AddPartitionsToTxnTopic>,
    verify_only: bool,
    version: i16,
) -> Vec<AddPartitionsToTxnTopicResult> {
    let exists = |name: &str, p: i32| {
        shared
            .store
            .topic(name)
            .and_then(|t| u32::try_from(p).ok().and_then(|p| t.partition(p)))
            .is_some()
    };
    let partitions: Vec<(String, i32)> = topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|&p| (t.name.0.to_string(), p)))
        .collect();
    let any_unknown = partitions.iter().any(|(t, p)| !exists(t, *p));
    // One outcome for the whole request, or one per partition when verifying.
    let result: Option<Result<Vec<Result<(), TxnError>>, TxnError>> = if any_unknown {
        None
    } else if verify_only {
        Some(
            shared
                .txns
                .verify_partitions(transactional_id, producer_id, epoch, &partitions),
        )
    } else {
        let added = shared
            .txns
            .add(transactional_id, producer_id, epoch, &partitions, &[])
            .await;
        Some(added.map(|()| vec![Ok(()); partitions.len()]))
    };
    let mut next = 0usize;
    topics
        .into_iter()
        .map(|t| {
            let by_partition = t
                .partitions
                .iter()
                .map(|&p| {
                    let error_code = match &result {
                        Some(Ok(each)) => code(each[next], version),
                        Some(Err(e)) => code(Err(*e), version),
                        None if !exists(t.name.0.as_str(), p) => {
                            ResponseError::UnknownTopicOrPartition.code()
                        }
                        None => ResponseError::OperationNotAttempted.code(),
                    };
                    next += 1;
                    AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(p)
                        .with_partition_error_code(error_code)
                })
                .collect();
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name)
                .with_results_by_partition(by_partition)
        })
        .collect()
}

/// AddOffsetsToTxn: the transaction will commit offsets of this group.
pub fn add_offsets(shared: &Arc<Shared>, req: AddOffsetsToTxnRequest, version: i16) -> Reply {
    let shared = shared.clone();
    detached(async move {
        let group = req.group_id.0.to_string();
        let result = if group.is_empty() {
            Err(TxnError::InvalidRequest)
        } else {
            shared
                .txns
                .add(
                    req.transactional_id.0.as_str(),
                    req.producer_id.0,
                    req.producer_epoch,
                    &[],
                    &[group],
                )
                .await
        };
        AddOffsetsToTxnResponse::default()
            .with_error_code(code(result, version))
            .into()
    })
}

/// EndTxn: commit or abort; answered once the markers are written (see `crate::txn`).
pub fn end(shared: &Arc<Shared>, req: EndTxnRequest, version: i16) -> Reply {
    let shared = shared.clone();
    detached(async move {
        let result = TxnCoordinator::end(
            &shared,
            req.transactional_id.0.as_str(),
            req.producer_id.0,
            req.producer_epoch,
            req.committed,
        )
        .await;
        if let Err(e) = result {
            tracing::debug!(transactional_id = %req.transactional_id.0, commit = req.committed, error = %e, "EndTxn refused");
        }
        EndTxnResponse::default()
            .with_error_code(code(result, version))
            .into()
    })
}

/// TxnOffsetCommit: offsets that become the group's committed offsets when the transaction
/// commits. Checked against the open transaction and, from v3 on (KIP-447), the group generation.
pub fn offset_commit(shared: &Arc<Shared>, req: TxnOffsetCommitRequest, version: i16) -> Reply {
    let group = req.group_id.0.to_string();
    let txn_check = shared.txns.verify_offsets(
        req.transactional_id.0.as_str(),
        req.producer_id.0,
        req.producer_epoch,
        &group,
    );
    // A producer without the consumer's group metadata (before v3, or generation -1 and no member)
    // commits unchecked, as in Kafka.
    let eos_member = version >= 3 && (req.generation_id >= 0 || !req.member_id.is_empty());
    let group_check = if eos_member {
        let partitions: Vec<(String, i32)> = req
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (t.name.0.to_string(), p.partition_index))
            })
            .collect();
        shared.groups.check_commit(
            &group,
            req.generation_id,
            req.member_id.as_str(),
            &partitions,
            true,
        )
    } else {
        Ok(())
    };
    let mut to_store = Vec::new();
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let topic = shared.store.topic(&name);
        let partitions = t
            .partitions
            .into_iter()
            .map(|p| {
                let error_code = if let Err(e) = txn_check {
                    // INVALID_PRODUCER_EPOCH is what the group coordinator answers a fenced
                    // producer with in every TxnOffsetCommit version.
                    txn_error(e, false).code()
                } else if let Err(e) = group_check {
                    group_error(e).code()
                } else {
                    let committed = Committed {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p.committed_metadata.map(|m| m.to_string()),
                    };
                    super::offsets::queue_commit(
                        topic.as_ref(),
                        &name,
                        p.partition_index,
                        committed,
                        &mut to_store,
                    )
                };
                TxnOffsetCommitResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(error_code)
            })
            .collect();
        topics.push(
            TxnOffsetCommitResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    let mut response = TxnOffsetCommitResponse::default().with_topics(topics);
    if to_store.is_empty() {
        return Box::pin(async move { Some(response.into()) });
    }
    shared.groups.touch(&group);
    let store = shared.groups.store.clone();
    let producer_id = req.producer_id.0;
    Box::pin(async move {
        let result =
            tokio::task::spawn_blocking(move || store.txn_offsets(&group, producer_id, to_store))
                .await;
        if !matches!(result, Ok(Ok(()))) {
            tracing::error!(?result, "cannot persist transactional offsets");
            for t in &mut response.topics {
                for p in &mut t.partitions {
                    if p.error_code == 0 {
                        p.error_code = ResponseError::UnknownServerError.code();
                    }
                }
            }
        }
        Some(response.into())
    })
}
