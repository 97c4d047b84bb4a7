//! DeleteRecords and OffsetForLeaderEpoch: the two record-level admin APIs.
//!
//! DeleteRecords moves a partition's log start (`PartitionLog::delete_records_before`, fsynced
//! before the answer) as Kafka's `ReplicaManager.deleteRecords` does: offset -1 means the high
//! watermark, an offset past it is OFFSET_OUT_OF_RANGE, a topic whose `cleanup.policy` lacks
//! `delete` is POLICY_VIOLATION, and the answer carries the new low watermark.
//!
//! OffsetForLeaderEpoch: every batch Ferry stores carries leader epoch 0 (the only leader there
//! has been), so epoch 0 ends at the log end offset, a later epoch is unknown (-1, -1), and a
//! client whose current leader epoch is newer than 0 gets UNKNOWN_LEADER_EPOCH.

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    DeleteRecordsRequest, DeleteRecordsResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse,
};

use super::{Reply, error_code};
use crate::state::Shared;

/// The leader epoch of every partition: one leader, never replaced.
const LEADER_EPOCH: i32 = 0;

pub fn delete_records(shared: &Arc<Shared>, req: DeleteRecordsRequest) -> Reply {
    let shared = shared.clone();
    Box::pin(async move {
        // Each accepted partition fsyncs its new log start: off the async threads.
        let resp = tokio::task::spawn_blocking(move || delete_records_blocking(&shared, req))
            .await
            .ok()?;
        Some(resp.into())
    })
}

fn delete_records_blocking(shared: &Shared, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let topic = shared.store.topic(t.name.0.as_str());
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let result = DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index)
                        .with_low_watermark(-1);
                    let Some(topic) = topic.as_ref() else {
                        return result
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code());
                    };
                    let Some(log) = topic.partition(p.partition_index) else {
                        return result
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code());
                    };
                    if !topic
                        .config()
                        .cleanup_policy
                        .split(',')
                        .any(|p| p == "delete")
                    {
                        return result.with_error_code(ResponseError::PolicyViolation.code());
                    }
                    let offset = if p.offset == -1 {
                        log.high_watermark()
                    } else {
                        p.offset
                    };
                    match log.delete_records_before(offset) {
                        Ok(low) => result.with_low_watermark(low),
                        Err(e) => result.with_error_code(error_code(&e)),
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}

pub fn offset_for_leader_epoch(
    shared: &Arc<Shared>,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let topic = shared.store.topic(t.topic.0.as_str());
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let result = EpochEndOffset::default()
                        .with_partition(p.partition)
                        .with_leader_epoch(-1)
                        .with_end_offset(-1);
                    let Some(log) = topic.as_ref().and_then(|t| t.partition(p.partition)) else {
                        return result
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code());
                    };
                    // A newer epoch than ours is UNKNOWN_LEADER_EPOCH. An older one would be
                    // FENCED_LEADER_EPOCH, but below 0 there is only -1, "not known", which
                    // Kafka does not check.
                    if p.current_leader_epoch > LEADER_EPOCH {
                        return result.with_error_code(ResponseError::UnknownLeaderEpoch.code());
                    }
                    let end = log.log_end_offset();
                    // Kafka's epoch cache is empty until the first append: (-1, -1) then.
                    if p.leader_epoch == LEADER_EPOCH && end > 0 {
                        result.with_leader_epoch(LEADER_EPOCH).with_end_offset(end)
                    } else {
                        result
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
