//! FindCoordinator and the classic group membership APIs: JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, DescribeGroups, ListGroups, DeleteGroups. The state machine is in
//! `crate::groups::coordinator`; this module only translates wire types.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator as WireCoordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, HeartbeatRequest,
    HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse,
    ListGroupsRequest, ListGroupsResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::{Reply, str_bytes};
use crate::groups::{GroupError, JoinRequest};
use crate::state::{NODE_ID, Shared};

/// The Kafka error for a group error.
pub fn group_error(e: GroupError) -> ResponseError {
    match e {
        GroupError::UnknownMemberId => ResponseError::UnknownMemberId,
        GroupError::IllegalGeneration => ResponseError::IllegalGeneration,
        GroupError::RebalanceInProgress => ResponseError::RebalanceInProgress,
        GroupError::InconsistentGroupProtocol => ResponseError::InconsistentGroupProtocol,
        GroupError::InvalidSessionTimeout => ResponseError::InvalidSessionTimeout,
        GroupError::InvalidGroupId => ResponseError::InvalidGroupId,
        GroupError::NonEmptyGroup => ResponseError::NonEmptyGroup,
        GroupError::GroupIdNotFound => ResponseError::GroupIdNotFound,
        GroupError::InvalidRequest => ResponseError::InvalidRequest,
        GroupError::UnsupportedAssignor => ResponseError::UnsupportedAssignor,
        GroupError::InvalidRegularExpression => ResponseError::InvalidRegularExpression,
        GroupError::UnreleasedInstanceId => ResponseError::UnreleasedInstanceId,
        GroupError::FencedMemberEpoch => ResponseError::FencedMemberEpoch,
        GroupError::StaleMemberEpoch => ResponseError::StaleMemberEpoch,
        GroupError::UnsupportedVersion => ResponseError::UnsupportedVersion,
    }
}

fn code(r: Result<(), GroupError>) -> i16 {
    r.err().map_or(0, |e| group_error(e).code())
}

const KEY_TYPE_GROUP: i8 = 0;
/// The group types of ListGroups v5 (KIP-848).
const CLASSIC: &str = "classic";
const CONSUMER: &str = "consumer";
const KEY_TYPE_TRANSACTION: i8 = 1;

pub fn find_coordinator(
    shared: &Arc<Shared>,
    req: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let (host, port) = shared.advertised.clone();
    // This node coordinates every group and every transactional id.
    let error = (!matches!(req.key_type, KEY_TYPE_GROUP | KEY_TYPE_TRANSACTION))
        .then_some(ResponseError::InvalidRequest);
    if version >= 4 {
        let coordinators = req
            .coordinator_keys
            .into_iter()
            .map(|key| {
                WireCoordinator::default()
                    .with_key(key)
                    .with_node_id(BrokerId(NODE_ID))
                    .with_host(str_bytes(host.clone()))
                    .with_port(port)
                    .with_error_code(error.map_or(0, |e| e.code()))
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let mut resp = FindCoordinatorResponse::default()
        .with_node_id(BrokerId(NODE_ID))
        .with_host(str_bytes(host))
        .with_port(port)
        .with_error_code(error.map_or(0, |e| e.code()));
    if version >= 1 {
        resp.error_message = error.map(|e| str_bytes(e.to_string()));
    }
    resp
}

pub fn join(
    shared: &Arc<Shared>,
    req: JoinGroupRequest,
    version: i16,
    client_id: String,
    peer: SocketAddr,
) -> Reply {
    let session = Duration::from_millis(req.session_timeout_ms.max(0) as u64);
    // v0 has no rebalance timeout: Kafka uses the session timeout.
    let rebalance = if version >= 1 {
        Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64)
    } else {
        session
    };
    let join = JoinRequest {
        group: req.group_id.0.to_string(),
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.map(|s| s.to_string()),
        client_id,
        client_host: format!("/{}", peer.ip()),
        session_timeout: session,
        rebalance_timeout: rebalance,
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
    };
    let (rx, done) = shared.groups.join(join, Instant::now());
    shared.groups.persist_generations(done);
    Box::pin(async move {
        let outcome = rx.await.ok()?;
        let mut resp = JoinGroupResponse::default()
            .with_skip_assignment(version >= 9 && outcome.skip_assignment)
            .with_error_code(outcome.error.map_or(0, |e| group_error(e).code()))
            .with_generation_id(outcome.generation)
            .with_leader(str_bytes(outcome.leader))
            .with_member_id(str_bytes(outcome.member_id))
            .with_members(
                outcome
                    .members
                    .into_iter()
                    .map(|(id, iid, meta)| {
                        let m = JoinGroupResponseMember::default()
                            .with_member_id(str_bytes(id))
                            .with_metadata(meta);
                        if version >= 5 {
                            m.with_group_instance_id(iid.map(str_bytes))
                        } else {
                            m
                        }
                    })
                    .collect(),
            );
        // Before v7 the protocol name is a non-nullable string.
        resp.protocol_name = Some(str_bytes(outcome.protocol.unwrap_or_default()));
        if version >= 7 {
            resp.protocol_type = outcome.protocol_type.map(str_bytes);
        }
        Some(resp.into())
    })
}

pub fn sync(shared: &Arc<Shared>, req: SyncGroupRequest, version: i16) -> Reply {
    let assignments = req
        .assignments
        .into_iter()
        .map(|a| (a.member_id.to_string(), a.assignment))
        .collect();
    let rx = shared.groups.coordinator.sync(
        req.group_id.0.as_str(),
        req.generation_id,
        req.member_id.as_str(),
        assignments,
        Instant::now(),
    );
    Box::pin(async move {
        let outcome = rx.await.ok()?;
        let mut resp = match outcome.result {
            Ok(assignment) => SyncGroupResponse::default().with_assignment(assignment),
            Err(e) => SyncGroupResponse::default().with_error_code(group_error(e).code()),
        };
        if version >= 5 {
            resp.protocol_type = outcome.protocol_type.map(str_bytes);
            resp.protocol_name = outcome.protocol.map(str_bytes);
        }
        Some(resp.into())
    })
}

pub fn heartbeat(shared: &Arc<Shared>, req: HeartbeatRequest) -> HeartbeatResponse {
    let r = shared.groups.coordinator.heartbeat(
        req.group_id.0.as_str(),
        req.generation_id,
        req.member_id.as_str(),
        Instant::now(),
    );
    HeartbeatResponse::default().with_error_code(code(r))
}

pub fn leave(shared: &Arc<Shared>, req: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        req.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|s| s.to_string()),
                )
            })
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let (results, done) =
        shared
            .groups
            .coordinator
            .leave(req.group_id.0.as_str(), &members, Instant::now());
    shared.groups.persist_generations(done);
    if version >= 3 {
        let members = members
            .into_iter()
            .zip(&results)
            .map(|((id, iid), r)| {
                MemberResponse::default()
                    .with_member_id(str_bytes(id))
                    .with_group_instance_id(iid.map(str_bytes))
                    .with_error_code(code(*r))
            })
            .collect();
        LeaveGroupResponse::default().with_members(members)
    } else {
        LeaveGroupResponse::default().with_error_code(code(results[0]))
    }
}

pub fn describe(
    shared: &Arc<Shared>,
    req: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let groups = req
        .groups
        .into_iter()
        .map(
            |id| match shared.groups.coordinator.describe(id.0.as_str()) {
                // As Kafka: a consumer-protocol group is not described here (clients fall back
                // to ConsumerGroupDescribe); Dead, and from v6 on GROUP_ID_NOT_FOUND.
                _ if shared.groups.consumer.lock().kind(id.0.as_str()).is_some() => {
                    let message = format!("Group {} is not a classic group.", id.0);
                    let g = DescribedGroup::default()
                        .with_group_id(id)
                        .with_group_state(StrBytes::from_static_str("Dead"));
                    if version >= 6 {
                        g.with_error_code(ResponseError::GroupIdNotFound.code())
                            .with_error_message(Some(str_bytes(message)))
                    } else {
                        g
                    }
                }
                // Kafka describes an unknown group as Dead, without an error, up to v5; from v6
                // on (KIP-1043) it answers GROUP_ID_NOT_FOUND with a message.
                None if version >= 6 => {
                    let message = format!("Group {} not found.", id.0);
                    DescribedGroup::default()
                        .with_group_id(id)
                        .with_group_state(StrBytes::from_static_str("Dead"))
                        .with_error_code(ResponseError::GroupIdNotFound.code())
                        .with_error_message(Some(str_bytes(message)))
                }
                None => DescribedGroup::default()
                    .with_group_id(id)
                    .with_group_state(StrBytes::from_static_str("Dead")),
                Some(d) => DescribedGroup::default()
                    .with_group_id(id)
                    .with_group_state(str_bytes(d.state.name()))
                    .with_protocol_type(str_bytes(d.protocol_type))
                    .with_protocol_data(str_bytes(d.protocol))
                    .with_members(
                        d.members
                            .into_iter()
                            .map(|m| {
                                let dm = DescribedGroupMember::default()
                                    .with_member_id(str_bytes(m.member_id))
                                    .with_client_id(str_bytes(m.client_id))
                                    .with_client_host(str_bytes(m.client_host))
                                    .with_member_metadata(m.metadata)
                                    .with_member_assignment(m.assignment);
                                if version >= 4 {
                                    dm.with_group_instance_id(m.instance_id.map(str_bytes))
                                } else {
                                    dm
                                }
                            })
                            .collect(),
                    ),
            },
        )
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

pub fn list(shared: &Arc<Shared>, req: ListGroupsRequest, version: i16) -> ListGroupsResponse {
    let consumer_groups = shared.groups.consumer.lock().list();
    let consumer_ids: std::collections::HashSet<String> =
        consumer_groups.iter().map(|(c, _)| c.clone()).collect();
    let mut all: Vec<(String, String, &'static str, &'static str)> = shared
        .groups
        .coordinator
        .list()
        .into_iter()
        .filter(|(id, _, _)| !consumer_ids.contains(id))
        .map(|(id, protocol_type, state)| (id, protocol_type, state.name(), CLASSIC))
        .chain(
            consumer_groups
                .into_iter()
                .map(|(id, state)| (id, CONSUMER.to_owned(), state, CONSUMER)),
        )
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let groups = all
        .into_iter()
        .filter(|(_, _, state, _)| {
            // Kafka compares states and types case-insensitively.
            req.states_filter.is_empty()
                || req
                    .states_filter
                    .iter()
                    .any(|s| s.as_str().eq_ignore_ascii_case(state))
        })
        .filter(|(_, _, _, group_type)| {
            req.types_filter.is_empty()
                || req
                    .types_filter
                    .iter()
                    .any(|t| t.as_str().eq_ignore_ascii_case(group_type))
        })
        .map(|(id, protocol_type, state, group_type)| {
            let mut g = ListedGroup::default()
                .with_group_id(super::group_id(&id))
                .with_protocol_type(str_bytes(protocol_type));
            if version >= 4 {
                g.group_state = str_bytes(state);
            }
            if version >= 5 {
                g.group_type = StrBytes::from_static_str(group_type);
            }
            g
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

pub fn delete(shared: &Arc<Shared>, req: DeleteGroupsRequest) -> Reply {
    let shared = shared.clone();
    Box::pin(async move {
        let mut results = Vec::with_capacity(req.groups_names.len());
        for id in req.groups_names {
            let consumer = shared.groups.consumer.lock().delete(id.0.as_str());
            let r = consumer.unwrap_or_else(|| shared.groups.coordinator.delete(id.0.as_str()));
            let r = match r {
                Ok(()) => {
                    let store = shared.groups.store.clone();
                    let name = id.0.to_string();
                    match tokio::task::spawn_blocking(move || store.delete(&name)).await {
                        Ok(Ok(())) => 0,
                        _ => ResponseError::UnknownServerError.code(),
                    }
                }
                Err(e) => group_error(e).code(),
            };
            results.push(
                DeletableGroupResult::default()
                    .with_group_id(id)
                    .with_error_code(r),
            );
        }
        Some(DeleteGroupsResponse::default().with_results(results).into())
    })
}
