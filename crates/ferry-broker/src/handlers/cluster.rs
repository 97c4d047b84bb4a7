//! The cluster-shape APIs, answered truthfully for a single node: DescribeCluster (one broker,
//! itself the controller), DescribeLogDirs (one log directory with each partition's size, and
//! the volume's total and usable bytes), ElectLeaders (node 0 already leads every partition:
//! ELECTION_NOT_NEEDED), and Alter/ListPartitionReassignments (the only possible replica set
//! is `[0]`, which every partition already has, so nothing is ever in progress). Error codes and
//! messages follow Kafka's KRaft controller (`ReplicationControlManager`).

use std::collections::HashSet;
use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    DescribeClusterRequest, DescribeClusterResponse, DescribeLogDirsRequest,
    DescribeLogDirsResponse, ElectLeadersRequest, ElectLeadersResponse,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
};

use super::{str_bytes, topic_name};
use crate::state::{NODE_ID, Shared};

/// DescribeCluster `endpoint_type`: 1 brokers, 2 controllers.
const ENDPOINT_BROKERS: i8 = 1;
/// Kafka's "authorized operations not requested" value.
const OPERATIONS_UNKNOWN: i32 = i32::MIN;
/// Without an authorizer every cluster operation is allowed: Kafka's bit per `AclOperation`
/// (CREATE 5, CLUSTER_ACTION 9, DESCRIBE 8, DESCRIBE_CONFIGS 10, ALTER 4, ALTER_CONFIGS 11,
/// IDEMPOTENT_WRITE 12).
const CLUSTER_OPERATIONS: i32 =
    (1 << 4) | (1 << 5) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12);

pub fn describe_cluster(
    shared: &Arc<Shared>,
    req: DescribeClusterRequest,
    version: i16,
) -> DescribeClusterResponse {
    let mut resp = DescribeClusterResponse::default()
        .with_error_message(None)
        .with_cluster_id(str_bytes(shared.cluster_id.clone()))
        .with_controller_id(BrokerId(NODE_ID))
        .with_cluster_authorized_operations(if req.include_cluster_authorized_operations {
            CLUSTER_OPERATIONS
        } else {
            OPERATIONS_UNKNOWN
        });
    if version >= 1 {
        resp.endpoint_type = ENDPOINT_BROKERS;
        if req.endpoint_type != ENDPOINT_BROKERS {
            // Kafka's brokers answer this way to a request meant for the controllers' endpoint.
            return resp
                .with_error_code(ResponseError::MismatchedEndpointType.code())
                .with_error_message(Some(str_bytes(
                    "The request was sent to an endpoint of type BROKER, but we wanted an endpoint of type CONTROLLER",
                )));
        }
    }
    let (host, port) = &shared.advertised;
    resp.brokers = vec![
        DescribeClusterBroker::default()
            .with_broker_id(BrokerId(NODE_ID))
            .with_host(str_bytes(host.clone()))
            .with_port(*port)
            .with_rack(None),
    ];
    resp
}

pub fn describe_log_dirs(
    shared: &Arc<Shared>,
    req: DescribeLogDirsRequest,
    version: i16,
) -> DescribeLogDirsResponse {
    let dir = shared.config.data_dir.join("topics");
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    let wanted: Option<Vec<(String, Vec<i32>)>> = req.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.topic.0.to_string(), t.partitions))
            .collect()
    });
    let topics: Vec<DescribeLogDirsTopic> = shared
        .store
        .topics()
        .into_iter()
        .filter_map(|topic| {
            let only: Option<HashSet<i32>> = wanted.as_ref().map(|w| {
                w.iter()
                    .filter(|(n, _)| n == topic.name())
                    .flat_map(|(_, p)| p.iter().copied())
                    .collect()
            });
            if only.as_ref().is_some_and(HashSet::is_empty) {
                return None;
            }
            let partitions = topic
                .partitions()
                .iter()
                .enumerate()
                .filter(|(i, _)| only.as_ref().is_none_or(|o| o.contains(&(*i as i32))))
                .map(|(i, log)| {
                    DescribeLogDirsPartition::default()
                        .with_partition_index(i as i32)
                        .with_partition_size(log.size_bytes() as i64)
                        .with_offset_lag(0)
                        .with_is_future_key(false)
                })
                .collect();
            Some(
                DescribeLogDirsTopic::default()
                    .with_name(topic_name(topic.name()))
                    .with_partitions(partitions),
            )
        })
        .collect();
    let mut result = DescribeLogDirsResult::default()
        .with_log_dir(str_bytes(dir.display().to_string()))
        .with_topics(topics);
    if version >= 4 {
        // Kafka reports -1 when the volume cannot be asked.
        let (total, usable) = match rustix::fs::statvfs(&dir) {
            Ok(s) => (
                (s.f_blocks * s.f_frsize) as i64,
                (s.f_bavail * s.f_frsize) as i64,
            ),
            Err(_) => (-1, -1),
        };
        result.total_bytes = total;
        result.usable_bytes = usable;
    }
    DescribeLogDirsResponse::default().with_results(vec![result])
}

pub fn elect_leaders(shared: &Arc<Shared>, req: ElectLeadersRequest) -> ElectLeadersResponse {
    let not_needed = |p: i32| {
        PartitionResult::default()
            .with_partition_id(p)
            .with_error_code(ResponseError::ElectionNotNeeded.code())
            .with_error_message(Some(str_bytes(
                "Leader election not needed for topic partition.",
            )))
    };
    let results = match req.topic_partitions {
        // All partitions: Kafka leaves out those that already have their leader, i.e. all.
        None => shared
            .store
            .topics()
            .iter()
            .map(|t| ReplicaElectionResult::default().with_topic(topic_name(t.name())))
            .collect(),
        Some(topics) => topics
            .into_iter()
            .map(|t| {
                let topic = shared.store.topic(t.topic.0.as_str());
                let partition_result = t
                    .partitions
                    .into_iter()
                    .map(|p| match topic.as_ref().and_then(|t| t.partition(p)) {
                        Some(_) => not_needed(p),
                        None => PartitionResult::default()
                            .with_partition_id(p)
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                            .with_error_message(Some(str_bytes(format!(
                                "No such topic partition {}-{p}",
                                t.topic.0
                            )))),
                    })
                    .collect();
                ReplicaElectionResult::default()
                    .with_topic(t.topic)
                    .with_partition_result(partition_result)
            })
            .collect(),
    };
    ElectLeadersResponse::default().with_replica_election_results(results)
}

pub fn alter_partition_reassignments(
    shared: &Arc<Shared>,
    req: AlterPartitionReassignmentsRequest,
    version: i16,
) -> AlterPartitionReassignmentsResponse {
    let responses = req
        .topics
        .into_iter()
        .map(|t| {
            let topic = shared.store.topic(t.name.0.as_str());
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let outcome: Result<(), (ResponseError, String)> = match (
                        topic.as_ref().and_then(|t| t.partition(p.partition_index)),
                        &p.replicas,
                    ) {
                        (None, _) => Err((
                            ResponseError::UnknownTopicOrPartition,
                            format!(
                                "Unable to find partition {}:{}",
                                t.name.0, p.partition_index
                            ),
                        )),
                        // Cancelling: there is never a reassignment to cancel.
                        (Some(_), None) => Err((
                            ResponseError::NoReassignmentInProgress,
                            format!(
                                "Partition {}:{} has no ongoing reassignment",
                                t.name.0, p.partition_index
                            ),
                        )),
                        (Some(_), Some(replicas)) => check_replicas(replicas),
                    };
                    let (code, message) = match outcome {
                        Ok(()) => (0, None),
                        Err((e, m)) => (e.code(), Some(str_bytes(m))),
                    };
                    ReassignablePartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                        .with_error_message(message)
                })
                .collect();
            ReassignableTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    let mut resp = AlterPartitionReassignmentsResponse::default()
        .with_error_message(None)
        .with_responses(responses);
    if version >= 1 {
        resp.allow_replication_factor_change = req.allow_replication_factor_change;
    }
    resp
}

/// The one replica set a single node can have is `[NODE_ID]`, which is what every partition has:
/// asking for it succeeds at once with nothing to move.
fn check_replicas(replicas: &[BrokerId]) -> Result<(), (ResponseError, String)> {
    if replicas.is_empty() {
        return Err((
            ResponseError::InvalidReplicaAssignment,
            "The manual partition assignment includes an empty replica list.".into(),
        ));
    }
    let mut seen = HashSet::new();
    if let Some(dup) = replicas.iter().find(|b| !seen.insert(b.0)) {
        return Err((
            ResponseError::InvalidReplicaAssignment,
            format!(
                "The manual partition assignment includes the broker {} more than once.",
                dup.0
            ),
        ));
    }
    if let Some(other) = replicas.iter().find(|b| b.0 != NODE_ID) {
        return Err((
            ResponseError::InvalidReplicaAssignment,
            format!(
                "The manual partition assignment includes broker {}, but no such broker is registered (this single-node cluster has only node {NODE_ID}).",
                other.0
            ),
        ));
    }
    Ok(())
}

pub fn list_partition_reassignments(
    _shared: &Arc<Shared>,
    _req: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    // Reassignments complete the moment they are accepted (see `check_replicas`): none is ever
    // ongoing, and Kafka lists only ongoing ones (unknown topics are skipped, not errors).
    ListPartitionReassignmentsResponse::default()
        .with_error_message(None)
        .with_topics(Vec::new())
}
