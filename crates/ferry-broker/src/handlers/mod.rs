//! One module per API. Each handler turns a decoded request into a response; Kafka error
//! conditions are answered with the right error code in the response, never by closing the
//! connection.

mod admin;
mod alter_configs;
mod api_versions;
mod cluster;
mod compacted;
mod configs;
mod consumer_group;
mod fetch;
mod groups;
pub(crate) mod legacy;
mod list_offsets;
mod metadata;
mod offset_delete;
mod offsets;
mod produce;
mod producers;
mod records;
mod txn;
mod txn_admin;

use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::BoxFuture;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{ApiKey, GroupId, RequestKind, ResponseKind, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::codec::Request;
use crate::state::Shared;

/// A handler's answer, possibly still waiting (for an fsync, for data). `None`: no response.
pub type Reply = BoxFuture<'static, Option<ResponseKind>>;

fn now(body: impl Into<ResponseKind>) -> Reply {
    let body = body.into();
    Box::pin(async move { Some(body) })
}

/// Run the handler for a supported request.
pub fn handle(shared: &Arc<Shared>, request: Request, peer: SocketAddr) -> Reply {
    let version = request.header.request_api_version;
    let client_id = request
        .header
        .client_id
        .as_ref()
        .map(|c| c.to_string())
        .unwrap_or_default();
    match request.body {
        RequestKind::ApiVersions(_) => now(api_versions::handle(None)),
        RequestKind::Metadata(r) => now(metadata::handle(shared, r, version)),
        RequestKind::Produce(r) => produce::handle(shared, r, version),
        RequestKind::Fetch(r) => fetch::handle(shared.clone(), r, version),
        RequestKind::ListOffsets(r) => now(list_offsets::handle(shared, r, version)),
        RequestKind::CreateTopics(r) => now(admin::create_topics(shared, r, version)),
        RequestKind::DeleteTopics(r) => now(admin::delete_topics(shared, r, version)),
        RequestKind::CreatePartitions(r) => now(admin::create_partitions(shared, r)),
        RequestKind::DescribeConfigs(r) => now(configs::describe(shared, r, version)),
        RequestKind::FindCoordinator(r) => now(groups::find_coordinator(shared, r, version)),
        RequestKind::JoinGroup(r) => groups::join(shared, r, version, client_id, peer),
        RequestKind::SyncGroup(r) => groups::sync(shared, r, version),
        RequestKind::Heartbeat(r) => now(groups::heartbeat(shared, r)),
        RequestKind::LeaveGroup(r) => now(groups::leave(shared, r, version)),
        RequestKind::OffsetCommit(r) => offsets::commit(shared, r, version),
        RequestKind::OffsetFetch(r) => now(offsets::fetch(shared, r, version)),
        RequestKind::DescribeGroups(r) => now(groups::describe(shared, r, version)),
        RequestKind::ListGroups(r) => now(groups::list(shared, r, version)),
        RequestKind::DeleteGroups(r) => groups::delete(shared, r),
        RequestKind::InitProducerId(r) => producers::init_producer_id(shared, r, version),
        // Admin APIs that clients' AdminClients call (issue 16, item 2).
        RequestKind::AlterConfigs(r) => now(alter_configs::alter(shared, r)),
        RequestKind::IncrementalAlterConfigs(r) => now(alter_configs::incremental(shared, r)),
        RequestKind::DeleteRecords(r) => records::delete_records(shared, r),
        RequestKind::OffsetForLeaderEpoch(r) => now(records::offset_for_leader_epoch(shared, r)),
        RequestKind::OffsetDelete(r) => offset_delete::offset_delete(shared, r),
        RequestKind::DescribeCluster(r) => now(cluster::describe_cluster(shared, r, version)),
        RequestKind::DescribeLogDirs(r) => now(cluster::describe_log_dirs(shared, r, version)),
        RequestKind::ElectLeaders(r) => now(cluster::elect_leaders(shared, r)),
        RequestKind::AlterPartitionReassignments(r) => {
            now(cluster::alter_partition_reassignments(shared, r, version))
        }
        RequestKind::ListPartitionReassignments(r) => {
            now(cluster::list_partition_reassignments(shared, r))
        }
        RequestKind::AddPartitionsToTxn(r) => txn::add_partitions(shared, r, version),
        RequestKind::AddOffsetsToTxn(r) => txn::add_offsets(shared, r, version),
        RequestKind::EndTxn(r) => txn::end(shared, r, version),
        RequestKind::TxnOffsetCommit(r) => txn::offset_commit(shared, r, version),
        RequestKind::DescribeTransactions(r) => now(txn_admin::describe(shared, r)),
        RequestKind::ListTransactions(r) => now(txn_admin::list(shared, r)),
        RequestKind::DescribeProducers(r) => now(txn_admin::describe_producers(shared, r)),
        RequestKind::ConsumerGroupHeartbeat(r) => {
            now(consumer_group::heartbeat(shared, r, client_id, peer))
        }
        RequestKind::ConsumerGroupDescribe(r) => now(consumer_group::describe(shared, r, version)),
        other => {
            // versions::SUPPORTED and this match must list the same APIs; a unit test checks it.
            tracing::error!(api = ?request.api, "supported API without a handler: {other:?}");
            Box::pin(async { None })
        }
    }
}

/// The answer to an API or version the broker does not implement, if that API's response has a
/// field to carry UNSUPPORTED_VERSION. Returns the version to encode the response at.
/// ApiVersions is the important case: a newer client first asks at a version we may not know,
/// and Kafka answers at v0 with the error and the supported list so the client can retry.
pub fn unsupported(api: ApiKey, version: i16) -> Option<(i16, ResponseKind)> {
    match api {
        ApiKey::ApiVersions => Some((
            0,
            api_versions::handle(Some(ResponseError::UnsupportedVersion)).into(),
        )),
        _ => {
            tracing::warn!(
                ?api,
                version,
                "request for an API or version this broker does not implement"
            );
            None
        }
    }
}

/// The Kafka error code for a storage error.
pub fn error_code(e: &ferry_log::Error) -> i16 {
    use ferry_log::Error as E;
    let err = match e {
        E::CorruptBatch(_) | E::InvalidRecords(_) => ResponseError::CorruptMessage,
        E::RecordTooLarge { .. } => ResponseError::MessageTooLarge,
        E::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        E::TopicExists(_) => ResponseError::TopicAlreadyExists,
        E::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
        E::InvalidTopic(_) => ResponseError::InvalidTopicException,
        E::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        E::InvalidConfig(_) => ResponseError::InvalidConfig,
        E::Deleted(_) => ResponseError::UnknownTopicOrPartition,
        E::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
        E::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
        E::Io { .. } | E::CorruptLog { .. } | E::CorruptMetadata { .. } => {
            ResponseError::KafkaStorageError
        }
        _ => ResponseError::UnknownServerError,
    };
    err.code()
}

pub(crate) fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

pub(crate) fn group_id(name: &str) -> GroupId {
    GroupId(StrBytes::from_string(name.to_owned()))
}

pub(crate) fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::versions::SUPPORTED;

    /// Every advertised API is dispatched by `handle`: the `other =>` arm is never reached.
    #[test]
    fn every_supported_api_has_a_handler() {
        let handled = [
            ApiKey::ApiVersions,
            ApiKey::Metadata,
            ApiKey::Produce,
            ApiKey::Fetch,
            ApiKey::ListOffsets,
            ApiKey::CreateTopics,
            ApiKey::DeleteTopics,
            ApiKey::CreatePartitions,
            ApiKey::DescribeConfigs,
            ApiKey::FindCoordinator,
            ApiKey::JoinGroup,
            ApiKey::SyncGroup,
            ApiKey::Heartbeat,
            ApiKey::LeaveGroup,
            ApiKey::OffsetCommit,
            ApiKey::OffsetFetch,
            ApiKey::DescribeGroups,
            ApiKey::ListGroups,
            ApiKey::DeleteGroups,
            ApiKey::InitProducerId,
            ApiKey::AlterConfigs,
            ApiKey::IncrementalAlterConfigs,
            ApiKey::DeleteRecords,
            ApiKey::OffsetForLeaderEpoch,
            ApiKey::OffsetDelete,
            ApiKey::DescribeCluster,
            ApiKey::DescribeLogDirs,
            ApiKey::ElectLeaders,
            ApiKey::AlterPartitionReassignments,
            ApiKey::ListPartitionReassignments,
            ApiKey::AddPartitionsToTxn,
            ApiKey::AddOffsetsToTxn,
            ApiKey::EndTxn,
            ApiKey::TxnOffsetCommit,
            ApiKey::DescribeTransactions,
            ApiKey::ListTransactions,
            ApiKey::DescribeProducers,
            ApiKey::ConsumerGroupHeartbeat,
            ApiKey::ConsumerGroupDescribe,
        ];
        for s in SUPPORTED {
            assert!(
                handled.contains(&s.key),
                "{:?} is advertised but not handled",
                s.key
            );
        }
        assert_eq!(handled.len(), SUPPORTED.len());
    }
}
