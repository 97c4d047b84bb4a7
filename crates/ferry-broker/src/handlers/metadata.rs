//! Metadata: the one broker, and topics with their partitions (all led by it).

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};

use super::{error_code, str_bytes, topic_name};
use crate::state::{NODE_ID, Shared};

pub fn handle(shared: &Arc<Shared>, req: MetadataRequest, version: i16) -> MetadataResponse {
    // v0 uses an empty list for "all topics"; v1+ uses null.
    let wanted = match req.topics {
        None => None,
        Some(t) if version == 0 && t.is_empty() => None,
        Some(t) => Some(t),
    };
    // Before v4 the request has no flag and Kafka auto-creates on request.
    let allow_create = version < 4 || req.allow_auto_topic_creation;
    let topics = match wanted {
        None => shared
            .store
            .topics()
            .iter()
            .map(|t| describe(t, version))
            .collect(),
        Some(list) => list
            .into_iter()
            .map(|wanted| {
                let by_name = wanted.name.as_ref().map(|n| n.0.to_string());
                let found = match &by_name {
                    Some(name) => shared.topic_for_write(name, allow_create),
                    None => Ok(shared.store.topic_by_id(wanted.topic_id)),
                };
                match found {
                    Ok(Some(t)) => describe(&t, version),
                    Ok(None) => MetadataResponseTopic::default()
                        .with_name(wanted.name)
                        .with_topic_id(wanted.topic_id)
                        .with_error_code(ResponseError::UnknownTopicOrPartition.code()),
                    Err(e) => MetadataResponseTopic::default()
                        .with_name(by_name.as_deref().map(topic_name))
                        .with_error_code(error_code(&e)),
                }
            })
            .collect(),
    };
    let (host, port) = &shared.advertised;
    let mut resp = MetadataResponse::default()
        .with_brokers(vec![
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(NODE_ID))
                .with_host(str_bytes(host.clone()))
                .with_port(*port),
        ])
        .with_controller_id(BrokerId(NODE_ID))
        .with_topics(topics);
    if version >= 2 {
        resp.cluster_id = Some(str_bytes(shared.cluster_id.clone()));
    }
    resp
}

fn describe(topic: &ferry_log::Topic, version: i16) -> MetadataResponseTopic {
    let partitions = (0..topic.partition_count() as i32)
        .map(|i| {
            MetadataResponsePartition::default()
                .with_partition_index(i)
                .with_leader_id(BrokerId(NODE_ID))
                // Leader epochs exist from v7 on; older versions must leave the default.
                .with_leader_epoch(if version >= 7 { 0 } else { -1 })
                .with_replica_nodes(vec![BrokerId(NODE_ID)])
                .with_isr_nodes(vec![BrokerId(NODE_ID)])
        })
        .collect();
    let mut t = MetadataResponseTopic::default()
        .with_name(Some(topic_name(topic.name())))
        .with_is_internal(crate::state::is_internal_topic(topic.name()))
        .with_partitions(partitions);
    if version >= 10 {
        t.topic_id = topic.id();
    }
    t
}
