//! The operator's view of transactions (KIP-664): DescribeTransactions, ListTransactions and
//! DescribeProducers.

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::list_transactions_response::TransactionState as ListedState;
use kafka_protocol::messages::{
    DescribeProducersRequest, DescribeProducersResponse, DescribeTransactionsRequest,
    DescribeTransactionsResponse, ListTransactionsRequest, ListTransactionsResponse, ProducerId,
    TransactionalId,
};

use super::{str_bytes, topic_name};
use crate::state::Shared;
use crate::txn::{TxnMeta, TxnState};

const STATES: [TxnState; 6] = [
    TxnState::Empty,
    TxnState::Ongoing,
    TxnState::PrepareCommit,
    TxnState::PrepareAbort,
    TxnState::CompleteCommit,
    TxnState::CompleteAbort,
];

/// DescribeTransactions: state, producer, timeout, start time and partitions of each id.
pub fn describe(
    shared: &Arc<Shared>,
    req: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let states = req
        .transactional_ids
        .into_iter()
        .map(|id| match shared.txns.describe(id.0.as_str()) {
            Some(meta) => described(meta),
            None => TransactionState::default()
                .with_transactional_id(id)
                .with_error_code(ResponseError::TransactionalIdNotFound.code()),
        })
        .collect();
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

fn described(meta: TxnMeta) -> TransactionState {
    let mut topics: Vec<TopicData> = Vec::new();
    for (topic, partition) in &meta.partitions {
        match topics.last_mut() {
            Some(t) if t.topic.0.as_str() == topic => t.partitions.push(*partition),
            _ => topics.push(
                TopicData::default()
                    .with_topic(topic_name(topic))
                    .with_partitions(vec![*partition]),
            ),
        }
    }
    TransactionState::default()
        .with_transactional_id(TransactionalId(str_bytes(meta.transactional_id)))
        .with_transaction_state(str_bytes(meta.state.name()))
        .with_transaction_timeout_ms(meta.timeout_ms)
        .with_transaction_start_time_ms(meta.start_ms)
        .with_producer_id(ProducerId(meta.producer_id))
        .with_producer_epoch(meta.producer_epoch)
        .with_topics(topics)
}

/// ListTransactions, filtered by state, producer id and (v1) minimum running time.
pub fn list(shared: &Arc<Shared>, req: ListTransactionsRequest) -> ListTransactionsResponse {
    let mut unknown = Vec::new();
    let mut wanted = Vec::new();
    for name in &req.state_filters {
        match STATES.iter().find(|s| s.name() == name.as_str()) {
            Some(s) => wanted.push(*s),
            None => unknown.push(name.clone()),
        }
    }
    let now = crate::txn::now_ms();
    let states = shared
        .txns
        .list()
        .into_iter()
        .filter(|m| req.state_filters.is_empty() || wanted.contains(&m.state))
        .filter(|m| {
            req.producer_id_filters.is_empty()
                || req.producer_id_filters.contains(&ProducerId(m.producer_id))
        })
        .filter(|m| {
            req.duration_filter < 0
                || (m.start_ms >= 0 && now.saturating_sub(m.start_ms) > req.duration_filter)
        })
        .map(|m| {
            ListedState::default()
                .with_transactional_id(TransactionalId(str_bytes(m.transactional_id)))
                .with_producer_id(ProducerId(m.producer_id))
                .with_transaction_state(str_bytes(m.state.name()))
        })
        .collect();
    ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown)
        .with_transaction_states(states)
}

/// DescribeProducers: every producer with state in each partition, and its open transaction.
pub fn describe_producers(
    shared: &Arc<Shared>,
    req: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let topic = shared.store.topic(t.name.0.as_str());
            let partitions = t
                .partition_indexes
                .into_iter()
                .map(|p| {
                    let log = topic
                        .as_ref()
                        .and_then(|t| u32::try_from(p).ok().and_then(|i| t.partition(i)));
                    let resp = PartitionResponse::default().with_partition_index(p);
                    let Some(log) = log else {
                        return resp.with_error_code(ResponseError::UnknownTopicOrPartition.code());
                    };
                    let producers = log
                        .producers()
                        .into_iter()
                        .map(|s| {
                            ProducerState::default()
                                .with_producer_id(ProducerId(s.producer_id))
                                .with_producer_epoch(i32::from(s.epoch))
                                .with_last_sequence(s.last_sequence)
                                .with_last_timestamp(s.last_timestamp)
                                .with_coordinator_epoch(0)
                                .with_current_txn_start_offset(s.current_txn_start_offset)
                        })
                        .collect();
                    resp.with_active_producers(producers)
                })
                .collect();
            TopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}
