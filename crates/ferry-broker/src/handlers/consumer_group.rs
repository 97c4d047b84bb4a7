//! ConsumerGroupHeartbeat (API 68) and ConsumerGroupDescribe (API 69), v0-1: the KIP-848
//! consumer group protocol. The state machine is `crate::groups::consumer`; this module turns
//! topic ids into names and back and translates wire types.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment as DescribedAssignment, DescribedGroup, Member,
    TopicPartitions as DescribedTopicPartitions,
};
use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse,
};

use super::groups::group_error;
use super::{str_bytes, topic_name};
use crate::groups::Heartbeat;
use crate::groups::assignor::Tp;
use crate::state::Shared;

/// ConsumerGroupDescribe's member type (v1): a member of the consumer protocol.
const MEMBER_TYPE_CONSUMER: i8 = 1;

pub fn heartbeat(
    shared: &Arc<Shared>,
    req: ConsumerGroupHeartbeatRequest,
    client_id: String,
    peer: SocketAddr,
) -> ConsumerGroupHeartbeatResponse {
    let owned = req.topic_partitions.map(|tps| {
        tps.into_iter()
            .filter_map(|tp| {
                let topic = shared.store.topic_by_id(tp.topic_id)?;
                Some(
                    tp.partitions
                        .into_iter()
                        .map(move |p| (topic.name().to_owned(), p)),
                )
            })
            .flatten()
            .collect::<BTreeSet<Tp>>()
    });
    let hb = Heartbeat {
        group: req.group_id.0.to_string(),
        member_id: req.member_id.to_string(),
        member_epoch: req.member_epoch,
        instance_id: req.instance_id.map(|s| s.to_string()),
        rack_id: req.rack_id.map(|s| s.to_string()),
        rebalance_timeout: (req.rebalance_timeout_ms >= 0)
            .then(|| Duration::from_millis(req.rebalance_timeout_ms as u64)),
        topic_names: req
            .subscribed_topic_names
            .map(|ts| ts.into_iter().map(|t| t.0.to_string()).collect()),
        topic_regex: req.subscribed_topic_regex.map(|s| s.to_string()),
        server_assignor: req.server_assignor.map(|s| s.to_string()),
        owned,
        client_id,
        client_host: format!("/{}", peer.ip()),
    };
    match shared.groups.heartbeat(hb, &shared.store, Instant::now()) {
        Ok(ok) => {
            let assignment = ok.assignment.map(|set| {
                Assignment::default().with_topic_partitions(
                    by_topic(&set)
                        .into_iter()
                        .filter_map(|(topic, partitions)| {
                            let id = shared.store.topic(&topic)?.id();
                            Some(
                                TopicPartitions::default()
                                    .with_topic_id(id)
                                    .with_partitions(partitions),
                            )
                        })
                        .collect(),
                )
            });
            ConsumerGroupHeartbeatResponse::default()
                .with_member_id(Some(str_bytes(ok.member_id)))
                .with_member_epoch(ok.member_epoch)
                .with_heartbeat_interval_ms(ok.heartbeat_interval.as_millis() as i32)
                .with_assignment(assignment)
        }
        Err((e, message)) => ConsumerGroupHeartbeatResponse::default()
            .with_error_code(group_error(e).code())
            .with_error_message(Some(str_bytes(message)))
            .with_member_epoch(-1),
    }
}

/// Group a set of topic partitions by topic, partitions ascending.
fn by_topic(set: &BTreeSet<Tp>) -> Vec<(String, Vec<i32>)> {
    let mut out: Vec<(String, Vec<i32>)> = Vec::new();
    for (t, p) in set {
        match out.last_mut() {
            Some((last, ps)) if last == t => ps.push(*p),
            _ => out.push((t.clone(), vec![*p])),
        }
    }
    out
}

fn described(shared: &Shared, set: &BTreeSet<Tp>) -> DescribedAssignment {
    DescribedAssignment::default().with_topic_partitions(
        by_topic(set)
            .into_iter()
            .map(|(topic, partitions)| {
                let id = shared
                    .store
                    .topic(&topic)
                    .map(|t| t.id())
                    .unwrap_or_default();
                DescribedTopicPartitions::default()
                    .with_topic_id(id)
                    .with_topic_name(topic_name(&topic))
                    .with_partitions(partitions)
            })
            .collect(),
    )
}

pub fn describe(
    shared: &Arc<Shared>,
    req: ConsumerGroupDescribeRequest,
    version: i16,
) -> ConsumerGroupDescribeResponse {
    let groups = req
        .group_ids
        .into_iter()
        .map(|id| {
            let found = shared.groups.consumer.lock().describe(id.0.as_str());
            let Some(d) = found else {
                // As Kafka: a classic group is "not a consumer group", an unknown one is "not
                // found"; both GROUP_ID_NOT_FOUND.
                let message = if shared.groups.coordinator.kind(id.0.as_str()).is_some() {
                    format!("Group {} is not a consumer group.", id.0)
                } else {
                    format!("Group {} not found.", id.0)
                };
                return DescribedGroup::default()
                    .with_group_id(id)
                    .with_group_state(str_bytes("Dead"))
                    .with_error_code(ResponseError::GroupIdNotFound.code())
                    .with_error_message(Some(str_bytes(message)));
            };
            let members = d
                .members
                .iter()
                .map(|m| {
                    let member = Member::default()
                        .with_member_id(str_bytes(m.member_id.clone()))
                        .with_instance_id(m.instance_id.clone().map(str_bytes))
                        .with_rack_id(m.rack_id.clone().map(str_bytes))
                        .with_member_epoch(m.member_epoch)
                        .with_client_id(str_bytes(m.client_id.clone()))
                        .with_client_host(str_bytes(m.client_host.clone()))
                        .with_subscribed_topic_names(
                            m.topic_names.iter().map(|t| topic_name(t)).collect(),
                        )
                        .with_subscribed_topic_regex(m.topic_regex.clone().map(str_bytes))
                        .with_assignment(described(shared, &m.assignment))
                        .with_target_assignment(described(shared, &m.target));
                    if version >= 1 {
                        member.with_member_type(MEMBER_TYPE_CONSUMER)
                    } else {
                        member
                    }
                })
                .collect();
            DescribedGroup::default()
                .with_group_id(id)
                .with_group_state(str_bytes(d.state))
                .with_group_epoch(d.epoch)
                .with_assignment_epoch(d.assignment_epoch)
                .with_assignor_name(str_bytes(d.assignor))
                .with_members(members)
                .with_authorized_operations(i32::MIN)
        })
        .collect();
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}
