//! OffsetCommit and OffsetFetch. A commit is answered only after it is fsynced. OffsetFetch with
//! `require_stable` (v7+, KIP-447) answers UNSTABLE_OFFSET_COMMIT for a partition whose offset an
//! open transaction is about to change, so a `read_committed` consumer waits for the outcome.

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
};

use super::groups::group_error;
use super::{Reply, str_bytes, topic_name};
use crate::groups::Committed;
use crate::state::Shared;

/// A topic and its partitions' committed offsets (`None`: nothing committed).
type TopicOffsets = (String, Vec<(i32, Option<Committed>)>);

/// Kafka's offset.metadata.max.bytes.
pub(super) const MAX_METADATA: usize = 4096;

/// One partition of an offset commit, plain or transactional, whose group (and producer) checks
/// passed: the partition must exist and the metadata fit, then the offset is queued for the
/// store. Returns the partition's error code.
pub(super) fn queue_commit(
    topic: Option<&Arc<ferry_log::Topic>>,
    name: &str,
    partition: i32,
    committed: Committed,
    to_store: &mut Vec<(String, i32, Committed)>,
) -> i16 {
    if topic.and_then(|t| t.partition(partition)).is_none() {
        ResponseError::UnknownTopicOrPartition.code()
    } else if committed
        .metadata
        .as_ref()
        .is_some_and(|m| m.len() > MAX_METADATA)
    {
        ResponseError::OffsetMetadataTooLarge.code()
    } else {
        to_store.push((name.to_owned(), partition, committed));
        0
    }
}

pub fn commit(shared: &Arc<Shared>, req: OffsetCommitRequest, version: i16) -> Reply {
    let group = req.group_id.0.to_string();
    let partitions: Vec<(String, i32)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.0.to_string(), p.partition_index))
        })
        .collect();
    // v9 (KIP-848) carries a member epoch for consumer groups, a generation for classic ones.
    let check = shared.groups.check_commit(
        &group,
        req.generation_id_or_member_epoch,
        req.member_id.as_str(),
        &partitions,
        version >= 9,
    );
    let mut to_store = Vec::new();
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let topic = shared.store.topic(&name);
        let partitions = t
            .partitions
            .into_iter()
            .map(|p| {
                let code = if let Err(e) = check {
                    group_error(e).code()
                } else {
                    let committed = Committed {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p.committed_metadata.map(|m| m.to_string()),
                    };
                    queue_commit(
                        topic.as_ref(),
                        &name,
                        p.partition_index,
                        committed,
                        &mut to_store,
                    )
                };
                OffsetCommitResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(code)
            })
            .collect();
        topics.push(
            OffsetCommitResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    let mut response = OffsetCommitResponse::default().with_topics(topics);
    if to_store.is_empty() {
        return Box::pin(async move { Some(response.into()) });
    }
    shared.groups.touch(&group);
    let store = shared.groups.store.clone();
    Box::pin(async move {
        let result = tokio::task::spawn_blocking(move || store.commit(&group, to_store)).await;
        if !matches!(result, Ok(Ok(()))) {
            tracing::error!(?result, "cannot persist committed offsets");
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

/// Committed offsets for (topic, partitions) of a group; `None` topics means every committed one.
fn lookup(
    shared: &Shared,
    group: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
) -> Vec<TopicOffsets> {
    match wanted {
        Some(list) => list
            .into_iter()
            .map(|(topic, parts)| {
                let found = parts
                    .into_iter()
                    .map(|p| (p, shared.groups.store.committed(group, &topic, p)))
                    .collect();
                (topic, found)
            })
            .collect(),
        None => {
            let mut by_topic: Vec<TopicOffsets> = Vec::new();
            for ((topic, p), c) in shared.groups.store.offsets(group) {
                match by_topic.last_mut() {
                    Some((t, v)) if *t == topic => v.push((p, Some(c))),
                    _ => by_topic.push((topic, vec![(p, Some(c))])),
                }
            }
            by_topic
        }
    }
}

/// UNSTABLE_OFFSET_COMMIT if `require_stable` and a transaction has offsets pending there.
fn unstable(shared: &Shared, require_stable: bool, group: &str, topic: &str, p: i32) -> i16 {
    if require_stable && shared.groups.store.is_pending(group, topic, p) {
        ResponseError::UnstableOffsetCommit.code()
    } else {
        0
    }
}

pub fn fetch(shared: &Arc<Shared>, req: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    let stable = req.require_stable;
    if version >= 8 {
        let groups = req
            .groups
            .into_iter()
            .map(|g| {
                let wanted = g.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes))
                        .collect()
                });
                let group = g.group_id.0.as_str();
                // v9 (KIP-848): a consumer-group member fetches with its member epoch.
                let check = shared.groups.consumer.lock().check_fetch(
                    group,
                    g.member_id.as_ref().map(|m| m.as_str()),
                    g.member_epoch,
                );
                if let Some(Err(e)) = check {
                    return OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id)
                        .with_error_code(group_error(e).code());
                }
                let topics = lookup(shared, group, wanted)
                    .into_iter()
                    .map(|(topic, parts)| {
                        let partitions = parts
                            .into_iter()
                            .map(|(p, c)| {
                                let error = unstable(shared, stable, group, &topic, p);
                                let c = c.filter(|_| error == 0).unwrap_or(Committed {
                                    offset: -1,
                                    leader_epoch: -1,
                                    metadata: None,
                                });
                                OffsetFetchResponsePartitions::default()
                                    .with_partition_index(p)
                                    .with_error_code(error)
                                    .with_committed_offset(c.offset)
                                    .with_committed_leader_epoch(c.leader_epoch)
                                    .with_metadata(Some(str_bytes(c.metadata.unwrap_or_default())))
                            })
                            .collect();
                        OffsetFetchResponseTopics::default()
                            .with_name(topic_name(&topic))
                            .with_partitions(partitions)
                    })
                    .collect();
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id)
                    .with_topics(topics)
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let wanted = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    let group = req.group_id.0.as_str();
    let topics = lookup(shared, group, wanted)
        .into_iter()
        .map(|(topic, parts)| {
            let partitions = parts
                .into_iter()
                .map(|(p, c)| {
                    let error = unstable(shared, stable, group, &topic, p);
                    let c = c.filter(|_| error == 0).unwrap_or(Committed {
                        offset: -1,
                        leader_epoch: -1,
                        metadata: None,
                    });
                    let mut r = OffsetFetchResponsePartition::default()
                        .with_partition_index(p)
                        .with_error_code(error)
                        .with_committed_offset(c.offset)
                        .with_metadata(Some(str_bytes(c.metadata.unwrap_or_default())));
                    if version >= 5 {
                        r.committed_leader_epoch = c.leader_epoch;
                    }
                    r
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(topic_name(&topic))
                .with_partitions(partitions)
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}
