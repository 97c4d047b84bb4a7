//! OffsetDelete: remove a group's committed offsets for some partitions, as Kafka's
//! `OffsetMetadataManager.deleteOffsets` does.
//!
//! An unknown group is GROUP_ID_NOT_FOUND. A group with members that is not a `consumer`
//! protocol group is NON_EMPTY_GROUP. A topic some member is subscribed to (read from the
//! members' consumer-protocol subscription metadata) answers GROUP_SUBSCRIBED_TO_TOPIC for each
//! of its partitions; if the subscriptions cannot be read, every topic counts as subscribed, as
//! in Kafka. The other partitions' offsets are deleted durably (a record in the group store,
//! fsynced before the answer); a partition without a committed offset also answers no error.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Buf;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{
    ConsumerProtocolSubscription, OffsetDeleteRequest, OffsetDeleteResponse,
};
use kafka_protocol::protocol::Decodable;

use super::Reply;
use crate::groups::coordinator::{GroupDescription, State};
use crate::state::Shared;

pub fn offset_delete(shared: &Arc<Shared>, req: OffsetDeleteRequest) -> Reply {
    let group = req.group_id.0.to_string();
    let fail =
        |e: ResponseError| super::now(OffsetDeleteResponse::default().with_error_code(e.code()));
    // A consumer-protocol group (KIP-848): its members' subscribed topics, and the topics of its
    // target assignment (which include what their regexes match).
    let consumer_group = shared.groups.consumer.lock().describe(&group);
    let (consumer, subscribed) = if let Some(d) = consumer_group {
        let mut topics: HashSet<String> = HashSet::new();
        for m in d.members {
            topics.extend(m.topic_names);
            topics.extend(m.target.into_iter().map(|(t, _)| t));
        }
        (true, Some(topics))
    } else {
        let Some(description) = shared.groups.coordinator.describe(&group) else {
            return fail(ResponseError::GroupIdNotFound);
        };
        let consumer = description.protocol_type == "consumer";
        if description.state != State::Empty && !consumer {
            return fail(ResponseError::NonEmptyGroup);
        }
        (consumer, subscribed_topics(&description))
    };
    let is_subscribed = |topic: &str| match &subscribed {
        Some(topics) => topics.contains(topic),
        None => consumer,
    };
    let committed = shared.groups.store.offsets(&group);
    let mut to_delete = Vec::new();
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let blocked = is_subscribed(&name);
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let result = OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index);
                    if blocked {
                        return result
                            .with_error_code(ResponseError::GroupSubscribedToTopic.code());
                    }
                    let key = (name.clone(), p.partition_index);
                    if committed.contains_key(&key) {
                        to_delete.push(key);
                    }
                    result
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    let response = OffsetDeleteResponse::default().with_topics(topics);
    if to_delete.is_empty() {
        return super::now(response);
    }
    let store = shared.groups.store.clone();
    Box::pin(async move {
        let written =
            tokio::task::spawn_blocking(move || store.delete_offsets(&group, to_delete)).await;
        match written {
            Ok(Ok(())) => Some(response.into()),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot delete committed offsets");
                Some(
                    OffsetDeleteResponse::default()
                        .with_error_code(ResponseError::CoordinatorNotAvailable.code())
                        .into(),
                )
            }
            Err(_) => None,
        }
    })
}

/// The topics the members subscribe to, from their consumer-protocol metadata. `None` when they
/// cannot be known (not a consumer group, no protocol chosen yet, undecodable metadata): Kafka's
/// `ClassicGroup.computeSubscribedTopics`.
fn subscribed_topics(group: &GroupDescription) -> Option<HashSet<String>> {
    if group.protocol_type != "consumer" {
        return None;
    }
    if group.members.is_empty() {
        return Some(HashSet::new());
    }
    if group.protocol.is_empty() {
        return None;
    }
    let mut topics = HashSet::new();
    for member in &group.members {
        let mut bytes = member.metadata.clone();
        if bytes.remaining() < 2 {
            return None;
        }
        // The version prefix; newer versions than the codec knows keep the v3 layout first.
        let version = bytes.get_i16().clamp(0, 3);
        let subscription = ConsumerProtocolSubscription::decode(&mut bytes, version).ok()?;
        topics.extend(subscription.topics.iter().map(|t| t.to_string()));
    }
    Some(topics)
}
