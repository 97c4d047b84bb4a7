//! DescribeConfigs for topics (effective config: defaults plus the topic's overrides) and for
//! the broker (the defaults it gives topics).

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use super::str_bytes;
use crate::state::{NODE_ID, Shared};

/// A config entry: name, value, Kafka ConfigSource.
type Entry = (String, String, i8);

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// Kafka's ConfigSource values.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

pub fn describe(
    shared: &Arc<Shared>,
    req: DescribeConfigsRequest,
    _version: i16,
) -> DescribeConfigsResponse {
    let results = req
        .resources
        .into_iter()
        .map(|r| {
            let name = r.resource_name.to_string();
            let result = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            let entries: Result<Vec<Entry>, (ResponseError, String)> = match r.resource_type {
                RESOURCE_TOPIC => match shared.store.topic(&name) {
                    Some(topic) => {
                        let overrides = topic.overrides();
                        Ok(topic
                            .config()
                            .entries()
                            .into_iter()
                            .map(|(k, v)| {
                                let source = if overrides.contains_key(k) {
                                    SOURCE_TOPIC
                                } else {
                                    SOURCE_DEFAULT
                                };
                                (k.to_owned(), v, source)
                            })
                            .collect())
                    }
                    None => Err((
                        ResponseError::UnknownTopicOrPartition,
                        format!("unknown topic {name}"),
                    )),
                },
                RESOURCE_BROKER if name.is_empty() || name == NODE_ID.to_string() => {
                    Ok(broker_entries(shared))
                }
                RESOURCE_BROKER => Err((
                    ResponseError::InvalidRequest,
                    format!("no broker {name}; this is node {NODE_ID}"),
                )),
                other => Err((
                    ResponseError::InvalidRequest,
                    format!("resource type {other} is not supported"),
                )),
            };
            match entries {
                Ok(entries) => {
                    let keys = r
                        .configuration_keys
                        .map(|k| k.iter().map(|s| s.to_string()).collect::<Vec<_>>());
                    let configs = entries
                        .into_iter()
                        .filter(|(k, _, _)| {
                            keys.as_ref()
                                .is_none_or(|keys| keys.is_empty() || keys.contains(k))
                        })
                        .map(|(k, v, source)| {
                            DescribeConfigsResourceResult::default()
                                .with_name(str_bytes(k))
                                .with_value(Some(str_bytes(v)))
                                .with_config_source(source)
                                .with_read_only(r.resource_type == RESOURCE_BROKER)
                        })
                        .collect();
                    result.with_configs(configs)
                }
                Err((err, message)) => result
                    .with_error_code(err.code())
                    .with_error_message(Some(str_bytes(message))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn broker_entries(shared: &Shared) -> Vec<Entry> {
    let c = &shared.config;
    let mut v = vec![
        (
            "auto.create.topics.enable".to_owned(),
            c.auto_create_topics.to_string(),
            SOURCE_STATIC_BROKER,
        ),
        (
            "num.partitions".to_owned(),
            c.default_partitions.to_string(),
            SOURCE_STATIC_BROKER,
        ),
        (
            "socket.request.max.bytes".to_owned(),
            c.max_request_bytes.to_string(),
            SOURCE_STATIC_BROKER,
        ),
    ];
    // The topic defaults, under Kafka's broker-level names (log.segment.bytes, ...).
    v.extend(
        shared
            .config
            .log
            .entries()
            .into_iter()
            .map(|(k, val)| (format!("log.{k}"), val, SOURCE_STATIC_BROKER)),
    );
    v
}
