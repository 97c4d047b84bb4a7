//! CreateTopics, DeleteTopics, CreatePartitions.
//!
//! This is a single-node broker: a replication factor other than 1 (or -1, "the default") and
//! replica assignments naming another broker are refused with the matching Kafka error, rather
//! than accepted and silently ignored.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse,
};

use super::{error_code, str_bytes};
use crate::state::{NODE_ID, Shared};

/// A topic-level failure: the Kafka error and a message for the client.
type Failure = (ResponseError, String);

pub fn create_topics(
    shared: &Arc<Shared>,
    req: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let mut seen = HashSet::new();
    let duplicated: HashSet<String> = req
        .topics
        .iter()
        .map(|t| t.name.0.to_string())
        .filter(|n| !seen.insert(n.clone()))
        .collect();
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.to_string();
            // Kafka answers a null error message on success; the codec's default is "".
            let mut result = CreatableTopicResult::default()
                .with_name(t.name.clone())
                .with_error_message(None);
            let outcome = if duplicated.contains(&name) {
                Err((
                    ResponseError::InvalidRequest,
                    format!("topic {name} appears more than once in the request"),
                ))
            } else {
                create_one(shared, &name, &t, req.validate_only)
            };
            match outcome {
                Ok(topic) => {
                    if version >= 5 {
                        result.num_partitions = topic.1 as i32;
                        result.replication_factor = 1;
                        result.configs = Some(
                            topic
                                .2
                                .entries()
                                .into_iter()
                                .map(|(k, v)| {
                                    CreatableTopicConfigs::default()
                                        .with_name(str_bytes(k))
                                        .with_value(Some(str_bytes(v)))
                                        .with_config_source(if topic.3.contains_key(k) {
                                            1
                                        } else {
                                            5
                                        })
                                })
                                .collect(),
                        );
                    }
                    if version >= 7 {
                        result.topic_id = topic.0;
                    }
                }
                Err((err, message)) => {
                    result.error_code = err.code();
                    result.error_message = Some(str_bytes(message));
                    if version >= 5 {
                        result.num_partitions = -1;
                        result.replication_factor = -1;
                    }
                }
            }
            result
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

/// Validate and (unless `validate_only`) create one topic. Returns id, partitions, effective
/// config and overrides.
fn create_one(
    shared: &Shared,
    name: &str,
    t: &CreatableTopic,
    validate_only: bool,
) -> Result<
    (
        uuid::Uuid,
        u32,
        ferry_log::LogConfig,
        BTreeMap<String, String>,
    ),
    Failure,
> {
    let fail = |e: ferry_log::Error| {
        let message = match &e {
            // Kafka's own wording ("Unknown topic config name: a, b"), without our prefix.
            ferry_log::Error::InvalidConfig(m) => m.clone(),
            other => other.to_string(),
        };
        (
            ResponseError::try_from_code(error_code(&e))
                .unwrap_or(ResponseError::UnknownServerError),
            message,
        )
    };
    ferry_log::Store::validate_topic_name(name).map_err(fail)?;
    let partitions = if !t.assignments.is_empty() {
        if t.num_partitions != -1 || t.replication_factor != -1 {
            return Err((
                ResponseError::InvalidRequest,
                "give either assignments or partitions and replication factor".into(),
            ));
        }
        if t.assignments
            .iter()
            .any(|a| a.broker_ids.iter().any(|b| b.0 != NODE_ID) || a.broker_ids.len() != 1)
        {
            return Err((
                ResponseError::InvalidReplicaAssignment,
                format!("this single-node broker is node {NODE_ID}"),
            ));
        }
        t.assignments.len() as i32
    } else if t.num_partitions == -1 {
        shared.config.default_partitions as i32
    } else {
        t.num_partitions
    };
    if partitions < 1 {
        return Err((
            ResponseError::InvalidPartitions,
            format!("partition count must be at least 1, got {partitions}"),
        ));
    }
    if !matches!(t.replication_factor, -1 | 1) {
        return Err((
            ResponseError::InvalidReplicationFactor,
            format!(
                "replication factor {} is impossible on this single-node broker; use 1",
                t.replication_factor
            ),
        ));
    }
    let overrides: BTreeMap<String, String> = t
        .configs
        .iter()
        .filter_map(|c| {
            c.value
                .as_ref()
                .map(|v| (c.name.to_string(), v.to_string()))
        })
        .collect();
    let config = shared
        .config
        .log
        .with_overrides(overrides.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(fail)?;
    if validate_only {
        if shared.store.topic(name).is_some() {
            return Err((
                ResponseError::TopicAlreadyExists,
                format!("topic {name} already exists"),
            ));
        }
        return Ok((uuid::Uuid::nil(), partitions as u32, config, overrides));
    }
    let topic = shared
        .store
        .create_topic(name, partitions as u32, overrides.clone())
        .map_err(fail)?;
    tracing::info!(topic = name, partitions, "created topic");
    Ok((topic.id(), partitions as u32, config, overrides))
}

pub fn delete_topics(
    shared: &Arc<Shared>,
    req: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    // v6 names topics by name or id in `topics`; earlier versions list names.
    let targets: Vec<(Option<String>, uuid::Uuid)> = if version >= 6 {
        req.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        req.topic_names
            .iter()
            .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
            .collect()
    };
    let responses = targets
        .into_iter()
        .map(|(name, id)| {
            let topic = match &name {
                Some(n) => shared.store.topic(n),
                None => shared.store.topic_by_id(id),
            };
            let mut result =
                DeletableTopicResult::default().with_name(name.as_deref().map(super::topic_name));
            if version >= 6 {
                result.topic_id = topic.as_ref().map_or(id, |t| t.id());
            }
            let outcome = match &topic {
                None => Err(ResponseError::UnknownTopicOrPartition.code()),
                Some(t) => shared
                    .store
                    .delete_topic(t.name())
                    .map_err(|e| error_code(&e)),
            };
            match outcome {
                Ok(()) => {
                    if let Some(t) = &topic {
                        tracing::info!(topic = t.name(), "deleted topic");
                        result.name = Some(super::topic_name(t.name()));
                    }
                }
                Err(code) => result.error_code = code,
            }
            result
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}

pub fn create_partitions(
    shared: &Arc<Shared>,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let results = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let mut result = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            let outcome: Result<(), Failure> = match shared.store.topic(&name) {
                None => Err((
                    ResponseError::UnknownTopicOrPartition,
                    format!("unknown topic {name}"),
                )),
                Some(topic) if t.count <= topic.partition_count() as i32 => Err((
                    ResponseError::InvalidPartitions,
                    format!(
                        "topic {name} has {} partitions; the new count must be larger",
                        topic.partition_count()
                    ),
                )),
                Some(_) if req.validate_only => Ok(()),
                Some(_) => shared
                    .store
                    .create_partitions(&name, t.count as u32)
                    .map_err(|e| {
                        (
                            ResponseError::try_from_code(error_code(&e))
                                .unwrap_or(ResponseError::UnknownServerError),
                            e.to_string(),
                        )
                    }),
            };
            if let Err((err, message)) = outcome {
                result.error_code = err.code();
                result.error_message = Some(str_bytes(message));
            }
            result
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}
