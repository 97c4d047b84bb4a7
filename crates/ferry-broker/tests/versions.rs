//! Every advertised version of the APIs that carry per-version fields is answered with a
//! response that decodes at that version. Old clients (kcat's librdkafka 2.0.2, kafka-python)
//! use old versions; a field set that a version lacks makes the codec refuse to encode, and the
//! client then sees no answer at all. This matrix catches that for every version we advertise.

mod common;

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOPIC: &str = "matrix";

fn name() -> TopicName {
    TopicName(StrBytes::from_static_str(TOPIC))
}

fn batch() -> Bytes {
    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: 1_700_000_000_000,
        key: Some(Bytes::from_static(b"k")),
        value: Some(Bytes::from_static(b"v")),
        headers: Default::default(),
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        [&record],
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    buf.freeze()
}

/// Send one request at `version` and decode the response at the same version.
async fn call<Req: Encodable, Resp: Decodable>(
    s: &mut TcpStream,
    api: ApiKey,
    version: i16,
    req: &Req,
) -> Resp {
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(version as i32)
        .with_client_id(Some(StrBytes::from_static_str("matrix")))
        .encode(&mut buf, api.request_header_version(version))
        .unwrap();
    req.encode(&mut buf, version)
        .unwrap_or_else(|e| panic!("{api:?} v{version}: cannot encode request: {e}"));
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    s.write_all(&buf).await.unwrap();
    let len = tokio::time::timeout(Duration::from_secs(5), s.read_i32())
        .await
        .unwrap_or_else(|_| {
            panic!("{api:?} v{version}: no response (the broker could not encode it?)")
        })
        .unwrap();
    let mut body = vec![0u8; len as usize];
    s.read_exact(&mut body).await.unwrap();
    let mut body = Bytes::from(body);
    let header = ResponseHeader::decode(&mut body, api.response_header_version(version)).unwrap();
    assert_eq!(header.correlation_id, version as i32);
    let resp = Resp::decode(&mut body, version)
        .unwrap_or_else(|e| panic!("{api:?} v{version}: bad response: {e}"));
    assert!(
        !body.has_remaining(),
        "{api:?} v{version}: {} trailing bytes",
        body.remaining()
    );
    resp
}

fn range(api: ApiKey) -> std::ops::RangeInclusive<i16> {
    let s = ferry_broker::SUPPORTED
        .iter()
        .find(|s| s.key == api)
        .unwrap();
    s.min..=s.max
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_advertised_version_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::start(dir.path()).await;
    let mut s = TcpStream::connect(broker.local_addr()).await.unwrap();

    for v in range(ApiKey::Produce) {
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(5000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(name())
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(batch())),
                    ]),
            ]);
        let resp: ProduceResponse = call(&mut s, ApiKey::Produce, v, &req).await;
        assert_eq!(
            resp.responses[0].partition_responses[0].error_code, 0,
            "Produce v{v}"
        );
    }
    for v in range(ApiKey::Metadata) {
        let topics = Some(vec![
            MetadataRequestTopic::default().with_name(Some(name())),
        ]);
        let resp: MetadataResponse = call(
            &mut s,
            ApiKey::Metadata,
            v,
            &MetadataRequest::default().with_topics(topics),
        )
        .await;
        assert_eq!(resp.topics[0].partitions.len(), 1, "Metadata v{v}");
    }
    let topic_id = {
        let resp: MetadataResponse = call(
            &mut s,
            ApiKey::Metadata,
            12,
            &MetadataRequest::default().with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(name())),
            ])),
        )
        .await;
        resp.topics[0].topic_id
    };
    assert!(!topic_id.is_nil());
    for v in range(ApiKey::Fetch) {
        // From v13 on topics are named by id only (KIP-516).
        let topic = if v >= 13 {
            FetchTopic::default().with_topic_id(topic_id)
        } else {
            FetchTopic::default().with_topic(name())
        };
        let req = FetchRequest::default()
            .with_max_wait_ms(10)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_topics(vec![topic.with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(0)
                            .with_fetch_offset(0)
                            .with_partition_max_bytes(1 << 20),
                    ])]);
        let resp: FetchResponse = call(&mut s, ApiKey::Fetch, v, &req).await;
        if v >= 13 {
            assert_eq!(resp.responses[0].topic_id, topic_id, "Fetch v{v}");
        }
        let p = &resp.responses[0].partitions[0];
        assert_eq!(p.error_code, 0, "Fetch v{v}");
        assert!(
            p.records.as_ref().is_some_and(|r| !r.is_empty()),
            "Fetch v{v} returns records"
        );
    }
    // An id the broker does not know is UNKNOWN_TOPIC_ID.
    for v in 13..=*range(ApiKey::Fetch).end() {
        let req = FetchRequest::default()
            .with_max_wait_ms(10)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic_id(uuid::Uuid::from_u128(7))
                    .with_partitions(vec![FetchPartition::default().with_partition(0)]),
            ]);
        let resp: FetchResponse = call(&mut s, ApiKey::Fetch, v, &req).await;
        assert_eq!(
            resp.responses[0].partitions[0].error_code, 100,
            "Fetch v{v}"
        );
    }
    // Earliest local (-4, v8+) is the log start without tiered storage; latest tiered (-5, v9+)
    // is -1 with leader epoch -1, as Kafka answers without remote storage.
    for (v, timestamp, want) in [(8, -4, 0), (9, -4, 0), (9, -5, -1), (10, -5, -1)] {
        let req = ListOffsetsRequest::default().with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(name())
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(timestamp),
                ]),
        ]);
        let resp: ListOffsetsResponse = call(&mut s, ApiKey::ListOffsets, v, &req).await;
        let p = &resp.topics[0].partitions[0];
        assert_eq!(
            (p.error_code, p.offset),
            (0, want),
            "ListOffsets v{v} at {timestamp}"
        );
    }
    for v in range(ApiKey::ListOffsets) {
        let req = ListOffsetsRequest::default().with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(name())
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(-1),
                ]),
        ]);
        let resp: ListOffsetsResponse = call(&mut s, ApiKey::ListOffsets, v, &req).await;
        assert_eq!(
            resp.topics[0].partitions[0].offset,
            range(ApiKey::Produce).count() as i64,
            "ListOffsets v{v}"
        );
    }
    for v in range(ApiKey::FindCoordinator) {
        let req = if v >= 4 {
            FindCoordinatorRequest::default()
                .with_coordinator_keys(vec![StrBytes::from_static_str("g")])
        } else {
            FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("g"))
        };
        let resp: FindCoordinatorResponse = call(&mut s, ApiKey::FindCoordinator, v, &req).await;
        let port = if v >= 4 {
            resp.coordinators[0].port
        } else {
            resp.port
        };
        assert_eq!(
            port,
            i32::from(broker.local_addr().port()),
            "FindCoordinator v{v}"
        );
    }
    for v in range(ApiKey::OffsetCommit) {
        let req = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("g")))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![
                OffsetCommitRequestTopic::default()
                    .with_name(name())
                    .with_partitions(vec![
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(i64::from(v)),
                    ]),
            ]);
        let resp: OffsetCommitResponse = call(&mut s, ApiKey::OffsetCommit, v, &req).await;
        assert_eq!(
            resp.topics[0].partitions[0].error_code, 0,
            "OffsetCommit v{v}"
        );
    }
    for v in range(ApiKey::OffsetFetch) {
        let req = if v >= 8 {
            OffsetFetchRequest::default().with_groups(vec![
                OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(StrBytes::from_static_str("g")))
                    .with_topics(Some(vec![
                        OffsetFetchRequestTopics::default()
                            .with_name(name())
                            .with_partition_indexes(vec![0]),
                    ])),
            ])
        } else {
            OffsetFetchRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("g")))
                .with_topics(Some(vec![
                    OffsetFetchRequestTopic::default()
                        .with_name(name())
                        .with_partition_indexes(vec![0]),
                ]))
        };
        let resp: OffsetFetchResponse = call(&mut s, ApiKey::OffsetFetch, v, &req).await;
        let offset = if v >= 8 {
            resp.groups[0].topics[0].partitions[0].committed_offset
        } else {
            resp.topics[0].partitions[0].committed_offset
        };
        assert_eq!(
            offset,
            i64::from(range(ApiKey::OffsetCommit).last().unwrap()),
            "OffsetFetch v{v}"
        );
    }
    for v in range(ApiKey::DescribeConfigs) {
        let req = DescribeConfigsRequest::default().with_resources(vec![
            describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str(TOPIC)),
        ]);
        let resp: DescribeConfigsResponse = call(&mut s, ApiKey::DescribeConfigs, v, &req).await;
        assert!(!resp.results[0].configs.is_empty(), "DescribeConfigs v{v}");
    }
    for v in range(ApiKey::CreateTopics) {
        let topic = create_topics_request::CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(format!("created-v{v}"))))
            .with_num_partitions(2)
            .with_replication_factor(1);
        let resp: CreateTopicsResponse = call(
            &mut s,
            ApiKey::CreateTopics,
            v,
            &CreateTopicsRequest::default().with_topics(vec![topic]),
        )
        .await;
        assert_eq!(resp.topics[0].error_code, 0, "CreateTopics v{v}");
    }
    for v in range(ApiKey::ListGroups) {
        let _: ListGroupsResponse =
            call(&mut s, ApiKey::ListGroups, v, &ListGroupsRequest::default()).await;
    }
    for v in range(ApiKey::DescribeGroups) {
        let req = DescribeGroupsRequest::default()
            .with_groups(vec![GroupId(StrBytes::from_static_str("nobody"))]);
        let resp: DescribeGroupsResponse = call(&mut s, ApiKey::DescribeGroups, v, &req).await;
        // Up to v5 an unknown group is Dead without an error; v6 (KIP-1043) says not found.
        let want = if v >= 6 { 69 } else { 0 };
        assert_eq!(resp.groups[0].error_code, want, "DescribeGroups v{v}");
        assert_eq!(resp.groups[0].group_state.as_str(), "Dead");
    }
    for (types, listed) in [
        (vec![], true),
        (vec!["CLASSIC"], true),
        (vec!["consumer"], false),
    ] {
        let req = ListGroupsRequest::default()
            .with_types_filter(types.iter().map(|t| StrBytes::from_static_str(t)).collect());
        let resp: ListGroupsResponse = call(&mut s, ApiKey::ListGroups, 5, &req).await;
        let g = resp.groups.iter().find(|g| g.group_id.0.as_str() == "g");
        assert_eq!(g.is_some(), listed, "ListGroups v5 with types {types:?}");
        if let Some(g) = g {
            assert_eq!(g.group_type.as_str(), "classic");
        }
    }
    // KIP-848: a member joins a consumer group at every version, the group describes it, the
    // member commits with its epoch at OffsetCommit v9 (a stale epoch is refused), and
    // ListGroups v5 lists the group as a consumer group.
    for v in range(ApiKey::ConsumerGroupHeartbeat) {
        let group = format!("cg-v{v}");
        // v0: the broker makes the member id; v1 (KIP-1082): the client does.
        let member = if v >= 1 {
            format!("member-v{v}")
        } else {
            String::new()
        };
        let join = ConsumerGroupHeartbeatRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.clone())))
            .with_member_id(StrBytes::from_string(member))
            .with_member_epoch(0)
            .with_rebalance_timeout_ms(5000)
            .with_subscribed_topic_names(Some(vec![name()]))
            .with_topic_partitions(Some(vec![]));
        let resp: ConsumerGroupHeartbeatResponse =
            call(&mut s, ApiKey::ConsumerGroupHeartbeat, v, &join).await;
        assert_eq!(
            resp.error_code, 0,
            "ConsumerGroupHeartbeat v{v}: {:?}",
            resp.error_message
        );
        assert!(resp.member_epoch >= 1, "ConsumerGroupHeartbeat v{v}");
        let assigned: usize = resp
            .assignment
            .as_ref()
            .map(|a| a.topic_partitions.iter().map(|t| t.partitions.len()).sum())
            .unwrap_or(0);
        assert!(assigned >= 1, "ConsumerGroupHeartbeat v{v}: {resp:?}");
        let member_id = resp.member_id.clone().unwrap();
        for dv in range(ApiKey::ConsumerGroupDescribe) {
            let d: ConsumerGroupDescribeResponse = call(
                &mut s,
                ApiKey::ConsumerGroupDescribe,
                dv,
                &ConsumerGroupDescribeRequest::default()
                    .with_group_ids(vec![GroupId(StrBytes::from_string(group.clone()))]),
            )
            .await;
            let g = &d.groups[0];
            assert_eq!(
                (g.error_code, g.group_state.as_str()),
                (0, "Stable"),
                "ConsumerGroupDescribe v{dv}"
            );
            assert_eq!(g.members[0].member_epoch, resp.member_epoch);
            assert_eq!(g.members[0].member_id, member_id);
        }
        for (epoch, want) in [(resp.member_epoch, 0), (resp.member_epoch + 1, 113)] {
            let commit = OffsetCommitRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(group.clone())))
                .with_member_id(member_id.clone())
                .with_generation_id_or_member_epoch(epoch)
                .with_topics(vec![
                    OffsetCommitRequestTopic::default()
                        .with_name(name())
                        .with_partitions(vec![
                            OffsetCommitRequestPartition::default()
                                .with_partition_index(0)
                                .with_committed_offset(1),
                        ]),
                ]);
            let r: OffsetCommitResponse = call(&mut s, ApiKey::OffsetCommit, 9, &commit).await;
            assert_eq!(
                r.topics[0].partitions[0].error_code, want,
                "OffsetCommit v9 epoch {epoch}"
            );
        }
        let list: ListGroupsResponse = call(
            &mut s,
            ApiKey::ListGroups,
            5,
            &ListGroupsRequest::default()
                .with_types_filter(vec![StrBytes::from_static_str("consumer")]),
        )
        .await;
        let g = list
            .groups
            .iter()
            .find(|g| g.group_id.0.as_str() == group)
            .unwrap();
        assert_eq!(g.group_type.as_str(), "consumer");
        // OffsetDelete keeps the offsets of a topic a member subscribes to.
        let deleted: OffsetDeleteResponse = call(
            &mut s,
            ApiKey::OffsetDelete,
            0,
            &OffsetDeleteRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(group.clone())))
                .with_topics(vec![
                    offset_delete_request::OffsetDeleteRequestTopic::default()
                        .with_name(name())
                        .with_partitions(vec![
                            offset_delete_request::OffsetDeleteRequestPartition::default()
                                .with_partition_index(0),
                        ]),
                ]),
        )
        .await;
        assert_eq!(deleted.error_code, 0);
        assert_eq!(
            deleted.topics[0].partitions[0].error_code,
            ResponseError::GroupSubscribedToTopic.code()
        );
        // A classic JoinGroup to the consumer group with a member is refused.
        let classic: JoinGroupResponse = call(
            &mut s,
            ApiKey::JoinGroup,
            9,
            &JoinGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(group.clone())))
                .with_session_timeout_ms(10_000)
                .with_rebalance_timeout_ms(10_000)
                .with_protocol_type(StrBytes::from_static_str("consumer"))
                .with_protocols(vec![
                    join_group_request::JoinGroupRequestProtocol::default()
                        .with_name(StrBytes::from_static_str("range")),
                ]),
        )
        .await;
        assert_eq!(classic.error_code, 23, "INCONSISTENT_GROUP_PROTOCOL");
    }
    for v in range(ApiKey::InitProducerId) {
        let resp: InitProducerIdResponse = call(
            &mut s,
            ApiKey::InitProducerId,
            v,
            // A null transactional id: an idempotent producer (an empty one is INVALID_REQUEST).
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        )
        .await;
        assert_eq!(resp.error_code, 0, "InitProducerId v{v}");
    }
    for v in range(ApiKey::JoinGroup) {
        let group = GroupId(StrBytes::from_string(format!("jg-v{v}")));
        let join = JoinGroupRequest::default()
            .with_group_id(group.clone())
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![
                join_group_request::JoinGroupRequestProtocol::default()
                    .with_name(StrBytes::from_static_str("range"))
                    .with_metadata(Bytes::from_static(b"m")),
            ]);
        let joined: JoinGroupResponse = call(&mut s, ApiKey::JoinGroup, v, &join).await;
        assert_eq!(
            (joined.error_code, joined.generation_id),
            (0, 1),
            "JoinGroup v{v}"
        );
        let member = joined.member_id.clone();
        let sv = v.min(*range(ApiKey::SyncGroup).end());
        let sync = SyncGroupRequest::default()
            .with_group_id(group.clone())
            .with_generation_id(1)
            .with_member_id(member.clone())
            .with_assignments(vec![
                sync_group_request::SyncGroupRequestAssignment::default()
                    .with_member_id(member.clone())
                    .with_assignment(Bytes::from_static(b"a")),
            ]);
        let synced: SyncGroupResponse = call(&mut s, ApiKey::SyncGroup, sv, &sync).await;
        assert_eq!(
            (synced.error_code, &synced.assignment[..]),
            (0, &b"a"[..]),
            "SyncGroup v{sv}"
        );
        let hv = v.min(*range(ApiKey::Heartbeat).end());
        let beat = HeartbeatRequest::default()
            .with_group_id(group.clone())
            .with_generation_id(1)
            .with_member_id(member.clone());
        let beat: HeartbeatResponse = call(&mut s, ApiKey::Heartbeat, hv, &beat).await;
        assert_eq!(beat.error_code, 0, "Heartbeat v{hv}");
        let lv = v.min(*range(ApiKey::LeaveGroup).end());
        let leave = if lv >= 3 {
            LeaveGroupRequest::default()
                .with_group_id(group)
                .with_members(vec![
                    leave_group_request::MemberIdentity::default().with_member_id(member),
                ])
        } else {
            LeaveGroupRequest::default()
                .with_group_id(group)
                .with_member_id(member)
        };
        let left: LeaveGroupResponse = call(&mut s, ApiKey::LeaveGroup, lv, &leave).await;
        let code = if lv >= 3 {
            left.members[0].error_code
        } else {
            left.error_code
        };
        assert_eq!(code, 0, "LeaveGroup v{lv}");
    }
    for v in range(ApiKey::CreatePartitions) {
        let req = CreatePartitionsRequest::default().with_topics(vec![
            create_partitions_request::CreatePartitionsTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("created-v2")))
                .with_count(3 + i32::from(v)),
        ]);
        let resp: CreatePartitionsResponse = call(&mut s, ApiKey::CreatePartitions, v, &req).await;
        assert_eq!(resp.results[0].error_code, 0, "CreatePartitions v{v}");
    }
    for v in range(ApiKey::DeleteGroups) {
        let req = DeleteGroupsRequest::default()
            .with_groups_names(vec![GroupId(StrBytes::from_string(format!("jg-v{v}")))]);
        let resp: DeleteGroupsResponse = call(&mut s, ApiKey::DeleteGroups, v, &req).await;
        assert_eq!(resp.results[0].error_code, 0, "DeleteGroups v{v}");
    }
    for v in range(ApiKey::DeleteTopics) {
        let topic = TopicName(StrBytes::from_string(format!("created-v{}", v + 1)));
        let req = if v >= 6 {
            DeleteTopicsRequest::default().with_topics(vec![
                delete_topics_request::DeleteTopicState::default().with_name(Some(topic)),
            ])
        } else {
            DeleteTopicsRequest::default().with_topic_names(vec![topic])
        };
        let resp: DeleteTopicsResponse = call(&mut s, ApiKey::DeleteTopics, v, &req).await;
        assert_eq!(resp.responses[0].error_code, 0, "DeleteTopics v{v}");
    }
    broker.shutdown().await.unwrap();
}

/// The admin APIs of issue 16, at every advertised version: each answers and decodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_advertised_admin_version_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::start(dir.path()).await;
    let mut s = TcpStream::connect(broker.local_addr()).await.unwrap();
    let str = |v: &str| StrBytes::from_string(v.to_owned());
    let _: CreateTopicsResponse = call(
        &mut s,
        ApiKey::CreateTopics,
        7,
        &CreateTopicsRequest::default().with_topics(vec![
            create_topics_request::CreatableTopic::default()
                .with_name(name())
                .with_num_partitions(1)
                .with_replication_factor(1),
        ]),
    )
    .await;
    let produce = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(name())
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch())),
                ]),
        ]);
    for _ in 0..3 {
        let _: ProduceResponse = call(&mut s, ApiKey::Produce, 9, &produce).await;
    }

    for v in range(ApiKey::AlterConfigs) {
        let req = AlterConfigsRequest::default().with_resources(vec![
            alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(str(TOPIC))
                .with_configs(vec![
                    alter_configs_request::AlterableConfig::default()
                        .with_name(str("retention.ms"))
                        .with_value(Some(str(&format!("{}", 100_000 + i32::from(v))))),
                ]),
        ]);
        let resp: AlterConfigsResponse = call(&mut s, ApiKey::AlterConfigs, v, &req).await;
        assert_eq!(resp.responses[0].error_code, 0, "AlterConfigs v{v}");
    }
    for v in range(ApiKey::IncrementalAlterConfigs) {
        let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
            incremental_alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(4)
                .with_resource_name(str("0"))
                .with_configs(vec![
                    incremental_alter_configs_request::AlterableConfig::default()
                        .with_name(str("log.retention.bytes"))
                        .with_config_operation(0)
                        .with_value(Some(str("1000000000"))),
                ]),
        ]);
        let resp: IncrementalAlterConfigsResponse =
            call(&mut s, ApiKey::IncrementalAlterConfigs, v, &req).await;
        assert_eq!(
            resp.responses[0].error_code, 0,
            "IncrementalAlterConfigs v{v}"
        );
    }
    for v in range(ApiKey::DescribeConfigs) {
        let req = DescribeConfigsRequest::default()
            .with_include_synonyms(v >= 1)
            .with_include_documentation(v >= 3)
            .with_resources(vec![
                describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_type(4)
                    .with_resource_name(str("0")),
            ]);
        let resp: DescribeConfigsResponse = call(&mut s, ApiKey::DescribeConfigs, v, &req).await;
        assert!(
            resp.results[0]
                .configs
                .iter()
                .any(|c| c.name.as_str() == "advertised.listeners"),
            "DescribeConfigs BROKER v{v}"
        );
    }
    for v in range(ApiKey::OffsetForLeaderEpoch) {
        let req = OffsetForLeaderEpochRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![
                offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                    .with_topic(name())
                    .with_partitions(vec![
                        offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                            .with_partition(0)
                            .with_current_leader_epoch(-1)
                            .with_leader_epoch(0),
                    ]),
            ]);
        let resp: OffsetForLeaderEpochResponse =
            call(&mut s, ApiKey::OffsetForLeaderEpoch, v, &req).await;
        assert_eq!(
            resp.topics[0].partitions[0].end_offset, 3,
            "OffsetForLeaderEpoch v{v}"
        );
    }
    for v in range(ApiKey::DeleteRecords) {
        let req = DeleteRecordsRequest::default().with_topics(vec![
            delete_records_request::DeleteRecordsTopic::default()
                .with_name(name())
                .with_partitions(vec![
                    delete_records_request::DeleteRecordsPartition::default()
                        .with_partition_index(0)
                        .with_offset(i64::from(v)),
                ]),
        ]);
        let resp: DeleteRecordsResponse = call(&mut s, ApiKey::DeleteRecords, v, &req).await;
        let p = &resp.topics[0].partitions[0];
        assert_eq!(
            (p.error_code, p.low_watermark),
            (0, i64::from(v)),
            "DeleteRecords v{v}"
        );
    }
    for v in range(ApiKey::OffsetDelete) {
        let commit = OffsetCommitRequest::default()
            .with_group_id(GroupId(str("od")))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![
                OffsetCommitRequestTopic::default()
                    .with_name(name())
                    .with_partitions(vec![
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(1),
                    ]),
            ]);
        let _: OffsetCommitResponse = call(&mut s, ApiKey::OffsetCommit, 8, &commit).await;
        let req = OffsetDeleteRequest::default()
            .with_group_id(GroupId(str("od")))
            .with_topics(vec![
                offset_delete_request::OffsetDeleteRequestTopic::default()
                    .with_name(name())
                    .with_partitions(vec![
                        offset_delete_request::OffsetDeleteRequestPartition::default()
                            .with_partition_index(0),
                    ]),
            ]);
        let resp: OffsetDeleteResponse = call(&mut s, ApiKey::OffsetDelete, v, &req).await;
        assert_eq!(
            (resp.error_code, resp.topics[0].partitions[0].error_code),
            (0, 0),
            "OffsetDelete v{v}"
        );
    }
    for v in range(ApiKey::DescribeCluster) {
        let req = DescribeClusterRequest::default().with_endpoint_type(1);
        let resp: DescribeClusterResponse = call(&mut s, ApiKey::DescribeCluster, v, &req).await;
        assert_eq!(
            (resp.error_code, resp.brokers.len()),
            (0, 1),
            "DescribeCluster v{v}"
        );
    }
    for v in range(ApiKey::DescribeLogDirs) {
        let req = DescribeLogDirsRequest::default().with_topics(Some(vec![
            describe_log_dirs_request::DescribableLogDirTopic::default()
                .with_topic(name())
                .with_partitions(vec![0]),
        ]));
        let resp: DescribeLogDirsResponse = call(&mut s, ApiKey::DescribeLogDirs, v, &req).await;
        assert_eq!(
            resp.results[0].topics[0].partitions.len(),
            1,
            "DescribeLogDirs v{v}"
        );
    }
    for v in range(ApiKey::ElectLeaders) {
        let req = ElectLeadersRequest::default()
            .with_election_type(0)
            .with_topic_partitions(Some(vec![
                elect_leaders_request::TopicPartitions::default()
                    .with_topic(name())
                    .with_partitions(vec![0]),
            ]));
        let resp: ElectLeadersResponse = call(&mut s, ApiKey::ElectLeaders, v, &req).await;
        assert_eq!(
            resp.replica_election_results[0].partition_result[0].error_code, 84,
            "ElectLeaders v{v}: ELECTION_NOT_NEEDED"
        );
    }
    for v in range(ApiKey::AlterPartitionReassignments) {
        let req = AlterPartitionReassignmentsRequest::default().with_topics(vec![
            alter_partition_reassignments_request::ReassignableTopic::default()
                .with_name(name())
                .with_partitions(vec![
                    alter_partition_reassignments_request::ReassignablePartition::default()
                        .with_partition_index(0)
                        .with_replicas(Some(vec![BrokerId(0)])),
                ]),
        ]);
        let resp: AlterPartitionReassignmentsResponse =
            call(&mut s, ApiKey::AlterPartitionReassignments, v, &req).await;
        assert_eq!(
            resp.responses[0].partitions[0].error_code, 0,
            "AlterPartitionReassignments v{v}"
        );
    }
    for v in range(ApiKey::ListPartitionReassignments) {
        let resp: ListPartitionReassignmentsResponse = call(
            &mut s,
            ApiKey::ListPartitionReassignments,
            v,
            &ListPartitionReassignmentsRequest::default().with_topics(None),
        )
        .await;
        assert_eq!(resp.error_code, 0, "ListPartitionReassignments v{v}");
    }
    broker.shutdown().await.unwrap();
}

/// The transactional APIs at every advertised version: a transaction that adds a partition and a
/// group's offsets and commits, then the operator APIs that describe it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_advertised_transaction_version_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::start(dir.path()).await;
    let mut s = TcpStream::connect(broker.local_addr()).await.unwrap();
    // Creates the topic.
    let _: MetadataResponse = call(
        &mut s,
        ApiKey::Metadata,
        4,
        &MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(name())),
            ]))
            .with_allow_auto_topic_creation(true),
    )
    .await;
    let at = |api: ApiKey, v: i16| v.min(*range(api).end());
    for v in range(ApiKey::AddPartitionsToTxn) {
        let tid = TransactionalId(StrBytes::from_string(format!("tx-v{v}")));
        let init: InitProducerIdResponse = call(
            &mut s,
            ApiKey::InitProducerId,
            at(ApiKey::InitProducerId, v),
            &InitProducerIdRequest::default()
                .with_transactional_id(Some(tid.clone()))
                .with_transaction_timeout_ms(60_000)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        )
        .await;
        assert_eq!(init.error_code, 0, "InitProducerId (transactional) v{v}");
        let (pid, epoch) = (init.producer_id, init.producer_epoch);
        let topics = vec![
            add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                .with_name(name())
                .with_partitions(vec![0]),
        ];
        if v <= 3 {
            let add: AddPartitionsToTxnResponse = call(
                &mut s,
                ApiKey::AddPartitionsToTxn,
                v,
                &AddPartitionsToTxnRequest::default()
                    .with_v3_and_below_transactional_id(tid.clone())
                    .with_v3_and_below_producer_id(pid)
                    .with_v3_and_below_producer_epoch(epoch)
                    .with_v3_and_below_topics(topics),
            )
            .await;
            assert_eq!(
                add.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code,
                0,
                "AddPartitionsToTxn v{v}"
            );
        } else {
            // v4+: the batched form. A verification before the add finds the partition missing
            // (INVALID_TXN_STATE), the add succeeds, and the same verification then passes; a
            // stale epoch is fenced.
            let batched = |verify_only: bool, epoch: i16| {
                AddPartitionsToTxnRequest::default().with_transactions(vec![
                    add_partitions_to_txn_request::AddPartitionsToTxnTransaction::default()
                        .with_transactional_id(tid.clone())
                        .with_producer_id(pid)
                        .with_producer_epoch(epoch)
                        .with_verify_only(verify_only)
                        .with_topics(topics.clone()),
                ])
            };
            let mut codes = Vec::new();
            for (verify_only, epoch) in [
                (true, epoch),
                (false, epoch),
                (true, epoch),
                (true, epoch - 1),
            ] {
                let resp: AddPartitionsToTxnResponse = call(
                    &mut s,
                    ApiKey::AddPartitionsToTxn,
                    v,
                    &batched(verify_only, epoch),
                )
                .await;
                let result = &resp.results_by_transaction[0];
                assert_eq!(result.transactional_id, tid);
                codes.push(result.topic_results[0].results_by_partition[0].partition_error_code);
            }
            assert_eq!(codes, [48, 0, 0, 90], "AddPartitionsToTxn v{v}");
        }
        let group = GroupId(StrBytes::from_string(format!("txg-v{v}")));
        let av = at(ApiKey::AddOffsetsToTxn, v);
        let offsets: AddOffsetsToTxnResponse = call(
            &mut s,
            ApiKey::AddOffsetsToTxn,
            av,
            &AddOffsetsToTxnRequest::default()
                .with_transactional_id(tid.clone())
                .with_producer_id(pid)
                .with_producer_epoch(epoch)
                .with_group_id(group.clone()),
        )
        .await;
        assert_eq!(offsets.error_code, 0, "AddOffsetsToTxn v{av}");
        let tv = at(ApiKey::TxnOffsetCommit, v);
        let commit: TxnOffsetCommitResponse = call(
            &mut s,
            ApiKey::TxnOffsetCommit,
            tv,
            &TxnOffsetCommitRequest::default()
                .with_transactional_id(tid.clone())
                .with_group_id(group.clone())
                .with_producer_id(pid)
                .with_producer_epoch(epoch)
                .with_generation_id(-1)
                .with_topics(vec![
                    txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                        .with_name(name())
                        .with_partitions(vec![
                            txn_offset_commit_request::TxnOffsetCommitRequestPartition::default()
                                .with_partition_index(0)
                                .with_committed_offset(42),
                        ]),
                ]),
        )
        .await;
        assert_eq!(
            commit.topics[0].partitions[0].error_code, 0,
            "TxnOffsetCommit v{tv}"
        );
        // A stable read waits for the transaction; a plain one sees the old (no) offset.
        let stable: OffsetFetchResponse = call(
            &mut s,
            ApiKey::OffsetFetch,
            7,
            &OffsetFetchRequest::default()
                .with_group_id(group.clone())
                .with_require_stable(true)
                .with_topics(Some(vec![
                    OffsetFetchRequestTopic::default()
                        .with_name(name())
                        .with_partition_indexes(vec![0]),
                ])),
        )
        .await;
        assert_eq!(
            stable.topics[0].partitions[0].error_code, 88,
            "UNSTABLE_OFFSET_COMMIT while the transaction is open"
        );
        let ev = at(ApiKey::EndTxn, v);
        let end: EndTxnResponse = call(
            &mut s,
            ApiKey::EndTxn,
            ev,
            &EndTxnRequest::default()
                .with_transactional_id(tid.clone())
                .with_producer_id(pid)
                .with_producer_epoch(epoch)
                .with_committed(true),
        )
        .await;
        assert_eq!(end.error_code, 0, "EndTxn v{ev}");
        let fetched: OffsetFetchResponse = call(
            &mut s,
            ApiKey::OffsetFetch,
            7,
            &OffsetFetchRequest::default()
                .with_group_id(group)
                .with_require_stable(true)
                .with_topics(Some(vec![
                    OffsetFetchRequestTopic::default()
                        .with_name(name())
                        .with_partition_indexes(vec![0]),
                ])),
        )
        .await;
        assert_eq!(
            fetched.topics[0].partitions[0].committed_offset, 42,
            "the committed transaction's offset (v{v})"
        );
        // A stale epoch is fenced, with the error code of its version.
        let fenced: EndTxnResponse = call(
            &mut s,
            ApiKey::EndTxn,
            ev,
            &EndTxnRequest::default()
                .with_transactional_id(tid)
                .with_producer_id(pid)
                .with_producer_epoch(epoch - 1)
                .with_committed(true),
        )
        .await;
        let want = if ev >= 2 { 90 } else { 47 };
        assert_eq!(fenced.error_code, want, "EndTxn v{ev} with an old epoch");
    }
    let described: DescribeTransactionsResponse = call(
        &mut s,
        ApiKey::DescribeTransactions,
        0,
        &DescribeTransactionsRequest::default().with_transactional_ids(vec![
            TransactionalId(StrBytes::from_static_str("tx-v0")),
            TransactionalId(StrBytes::from_static_str("nobody")),
        ]),
    )
    .await;
    assert_eq!(
        described.transaction_states[0].transaction_state.as_str(),
        "CompleteCommit"
    );
    assert_eq!(described.transaction_states[1].error_code, 105);
    for v in range(ApiKey::ListTransactions) {
        let listed: ListTransactionsResponse = call(
            &mut s,
            ApiKey::ListTransactions,
            v,
            &ListTransactionsRequest::default()
                .with_state_filters(vec![
                    StrBytes::from_static_str("CompleteCommit"),
                    StrBytes::from_static_str("Bogus"),
                ])
                .with_duration_filter(-1),
        )
        .await;
        assert_eq!(
            listed.transaction_states.len(),
            range(ApiKey::AddPartitionsToTxn).count(),
            "ListTransactions v{v}"
        );
        assert_eq!(listed.unknown_state_filters.len(), 1);
    }
    let producers: DescribeProducersResponse = call(
        &mut s,
        ApiKey::DescribeProducers,
        0,
        &DescribeProducersRequest::default().with_topics(vec![
            describe_producers_request::TopicRequest::default()
                .with_name(name())
                .with_partition_indexes(vec![0]),
        ]),
    )
    .await;
    assert_eq!(producers.topics[0].partitions[0].error_code, 0);
    broker.shutdown().await.unwrap();
}

/// A transactional batch is written only by the current producer of an open transaction that
/// added the partition; anything else would open a transaction nobody ends (a hanging
/// transaction holding back the last stable offset for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_batches_outside_an_open_transaction_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::start(dir.path()).await;
    let mut s = TcpStream::connect(broker.local_addr()).await.unwrap();
    let tid = TransactionalId(StrBytes::from_static_str("tx-verify"));
    // Twice: the second instance has epoch 1, the first one's 0 is stale.
    let mut init = InitProducerIdResponse::default();
    for _ in 0..2 {
        init = call(
            &mut s,
            ApiKey::InitProducerId,
            4,
            &InitProducerIdRequest::default()
                .with_transactional_id(Some(tid.clone()))
                .with_transaction_timeout_ms(60_000),
        )
        .await;
    }
    let (pid, epoch) = (init.producer_id, init.producer_epoch);
    assert_eq!(epoch, 1);
    let produce = |epoch: i16| {
        let record = Record {
            transactional: true,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: pid.0,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: 0,
            timestamp: 1_700_000_000_000,
            key: None,
            value: Some(Bytes::from_static(b"v")),
            headers: Default::default(),
        };
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            [&record],
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(5000)
            .with_transactional_id(Some(tid.clone()))
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(name())
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(buf.freeze())),
                    ]),
            ])
    };
    let code = |r: &ProduceResponse| r.responses[0].partition_responses[0].error_code;
    // No transaction open (the partition was never added): INVALID_TXN_STATE.
    let r: ProduceResponse = call(&mut s, ApiKey::Produce, 9, &produce(epoch)).await;
    assert_eq!(code(&r), 48);
    let add: AddPartitionsToTxnResponse = call(
        &mut s,
        ApiKey::AddPartitionsToTxn,
        3,
        &AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(tid.clone())
            .with_v3_and_below_producer_id(pid)
            .with_v3_and_below_producer_epoch(epoch)
            .with_v3_and_below_topics(vec![
                add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                    .with_name(name())
                    .with_partitions(vec![0]),
            ]),
    )
    .await;
    assert_eq!(
        add.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code,
        0
    );
    // A stale epoch: INVALID_PRODUCER_EPOCH.
    let r: ProduceResponse = call(&mut s, ApiKey::Produce, 9, &produce(epoch - 1)).await;
    assert_eq!(code(&r), 47);
    // The current producer, partition added: written.
    let r: ProduceResponse = call(&mut s, ApiKey::Produce, 9, &produce(epoch)).await;
    assert_eq!(code(&r), 0);
    broker.shutdown().await.unwrap();
}
