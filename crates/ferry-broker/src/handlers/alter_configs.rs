//! AlterConfigs (the legacy whole-set replacement) and IncrementalAlterConfigs (SET, DELETE,
//! APPEND, SUBTRACT per config), for topics and for the broker's dynamic configs.
//!
//! A topic's new overrides are validated against Kafka's topic-config table (an unknown name is
//! INVALID_CONFIG naming every unknown one), persisted in `topic.json` and applied to its
//! partitions at once; a retention pass then runs for that topic so a shorter `retention.ms` or
//! `retention.bytes` takes effect without waiting for the next tick. A BROKER resource (`""` for
//! the cluster default, `"0"` for this broker) changes the dynamic topic defaults
//! (`crate::dynamic_config`); any other broker config is refused with INVALID_REQUEST and
//! Kafka's message, "Cannot update these configs dynamically: ...". `validate_only` checks
//! everything and changes nothing. Error codes follow Kafka's `ConfigAdminManager` and
//! `ControllerConfigurationValidator`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use ferry_log::ConfigType;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse, alter_configs_response, incremental_alter_configs_response,
};
use kafka_protocol::protocol::StrBytes;

use super::configs::{RESOURCE_BROKER, RESOURCE_TOPIC, broker_layer};
use super::str_bytes;
use crate::dynamic_config::{self, Layer};
use crate::state::Shared;

type Failure = (ResponseError, String);

/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// One config change as both APIs carry it: name, operation, value.
type Change = (String, i8, Option<String>);

/// What a resource names: a topic, or one layer of broker configs.
enum Target {
    Topic(Arc<ferry_log::Topic>),
    Broker(Layer),
}

pub fn alter(shared: &Arc<Shared>, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let duplicated = duplicates(
        req.resources
            .iter()
            .map(|r| (r.resource_type, &r.resource_name)),
    );
    let responses = req
        .resources
        .into_iter()
        .map(|r| {
            let key = (r.resource_type, r.resource_name.to_string());
            let outcome = if duplicated.contains(&key) {
                Err(once_only())
            } else {
                let changes = r
                    .configs
                    .iter()
                    .map(|c| {
                        (
                            c.name.to_string(),
                            OP_SET,
                            c.value.as_ref().map(|v| v.to_string()),
                        )
                    })
                    .collect();
                apply(
                    shared,
                    r.resource_type,
                    &key.1,
                    changes,
                    true,
                    req.validate_only,
                )
            };
            let (code, message) = split(outcome);
            alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name)
                .with_error_code(code)
                .with_error_message(message)
        })
        .collect();
    AlterConfigsResponse::default().with_responses(responses)
}

pub fn incremental(
    shared: &Arc<Shared>,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let duplicated = duplicates(
        req.resources
            .iter()
            .map(|r| (r.resource_type, &r.resource_name)),
    );
    let responses = req
        .resources
        .into_iter()
        .map(|r| {
            let key = (r.resource_type, r.resource_name.to_string());
            let outcome = if duplicated.contains(&key) {
                Err(once_only())
            } else {
                let changes = r
                    .configs
                    .iter()
                    .map(|c| {
                        (
                            c.name.to_string(),
                            c.config_operation,
                            c.value.as_ref().map(|v| v.to_string()),
                        )
                    })
                    .collect();
                apply(
                    shared,
                    r.resource_type,
                    &key.1,
                    changes,
                    false,
                    req.validate_only,
                )
            };
            let (code, message) = split(outcome);
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name)
                .with_error_code(code)
                .with_error_message(message)
        })
        .collect();
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

fn once_only() -> Failure {
    (
        ResponseError::InvalidRequest,
        "Each resource must appear at most once.".into(),
    )
}

fn split(outcome: Result<(), Failure>) -> (i16, Option<StrBytes>) {
    match outcome {
        Ok(()) => (0, None),
        Err((err, message)) => (err.code(), Some(str_bytes(message))),
    }
}

fn duplicates<'a>(resources: impl Iterator<Item = (i8, &'a StrBytes)>) -> HashSet<(i8, String)> {
    let mut seen = HashSet::new();
    resources
        .map(|(t, n)| (t, n.to_string()))
        .filter(|k| !seen.insert(k.clone()))
        .collect()
}

/// Validates `changes` against one resource and, unless `validate_only`, applies them.
/// `replace_all`: the legacy API, whose config list replaces the whole set.
fn apply(
    shared: &Arc<Shared>,
    resource_type: i8,
    name: &str,
    changes: Vec<Change>,
    replace_all: bool,
    validate_only: bool,
) -> Result<(), Failure> {
    let target = match resource_type {
        RESOURCE_TOPIC => {
            ferry_log::Store::validate_topic_name(name)
                .map_err(|e| (ResponseError::InvalidTopicException, e.to_string()))?;
            Target::Topic(shared.store.topic(name).ok_or_else(|| {
                (
                    ResponseError::UnknownTopicOrPartition,
                    format!("unknown topic {name}"),
                )
            })?)
        }
        RESOURCE_BROKER => Target::Broker(broker_layer(name)?),
        other => {
            return Err((
                ResponseError::InvalidRequest,
                format!("Unknown resource type {other}"),
            ));
        }
    };
    let mut names = HashSet::new();
    if !changes.iter().all(|c| names.insert(c.0.clone())) {
        return Err((
            ResponseError::InvalidRequest,
            "Error due to duplicate config keys".into(),
        ));
    }
    let null: Vec<&str> = changes
        .iter()
        .filter(|(_, op, v)| *op != OP_DELETE && v.is_none())
        .map(|(n, _, _)| n.as_str())
        .collect();
    if !null.is_empty() && !replace_all {
        return Err((
            ResponseError::InvalidRequest,
            format!("Null value not supported for : {}", null.join(", ")),
        ));
    }
    match target {
        Target::Topic(topic) => {
            let current = if replace_all {
                BTreeMap::new()
            } else {
                topic.overrides()
            };
            let effective = topic.config();
            let next = merge(current, changes, |n| {
                let def = ferry_log::topic_config(n)?;
                Some((def.kind, effective.value(n).unwrap_or_default()))
            })?;
            let unknown: Vec<&str> = next
                .keys()
                .filter(|k| ferry_log::topic_config(k).is_none())
                .map(String::as_str)
                .collect();
            if !unknown.is_empty() {
                return Err((
                    ResponseError::InvalidConfig,
                    format!("Unknown topic config name: {}", unknown.join(", ")),
                ));
            }
            let invalid = |e: ferry_log::Error| match e {
                ferry_log::Error::InvalidConfig(m) => (ResponseError::InvalidConfig, m),
                other => (
                    ResponseError::try_from_code(super::error_code(&other))
                        .unwrap_or(ResponseError::UnknownServerError),
                    other.to_string(),
                ),
            };
            shared.store.validate_overrides(&next).map_err(invalid)?;
            if validate_only {
                return Ok(());
            }
            shared
                .store
                .alter_config(topic.name(), next)
                .map_err(invalid)?;
            tracing::info!(topic = topic.name(), "altered topic config");
            enforce_retention_soon(topic);
            Ok(())
        }
        Target::Broker(layer) => {
            let current = if replace_all {
                BTreeMap::new()
            } else {
                shared.dynamic.layers().get(layer).clone()
            };
            let effective = shared.store.defaults();
            let next = merge(current, changes, |n| {
                let def = ferry_log::topic_config_for_server_name(n)?;
                Some((def.kind, effective.value(def.name).unwrap_or_default()))
            })
            // Kafka refuses every broker change it cannot apply with INVALID_REQUEST.
            .map_err(|(_, m)| (ResponseError::InvalidRequest, m))?;
            let next = dynamic_config::validate(&next)
                .map_err(|r| (ResponseError::InvalidRequest, r.0))?;
            let defaults_of = |layers: &dynamic_config::Layers| {
                layers
                    .log_defaults(&shared.config.log)
                    .map_err(|e| (ResponseError::InvalidRequest, e.to_string()))
            };
            let mut layers = shared.dynamic.layers();
            *layers.get_mut(layer) = next.clone();
            defaults_of(&layers)?;
            if validate_only {
                return Ok(());
            }
            shared
                .dynamic
                .replace(layer, next, |layers| {
                    let defaults = defaults_of(layers).map_err(|e| dynamic_config::Refused(e.1))?;
                    shared
                        .store
                        .set_defaults(defaults)
                        .map_err(|e| dynamic_config::Refused(e.to_string()))
                })
                .map_err(|r| (ResponseError::InvalidRequest, r.0))?;
            tracing::info!(?layer, "altered dynamic broker configs");
            for topic in shared.store.topics() {
                enforce_retention_soon(topic);
            }
            Ok(())
        }
    }
}

/// Applies `changes` to `current`. `lookup` gives a known config's type and current effective
/// value (APPEND and SUBTRACT start from it when there is no override); `None`: unknown name,
/// left for the caller to refuse with the right error.
fn merge(
    mut current: BTreeMap<String, String>,
    changes: Vec<Change>,
    lookup: impl Fn(&str) -> Option<(ConfigType, String)>,
) -> Result<BTreeMap<String, String>, Failure> {
    for (name, op, value) in changes {
        match op {
            OP_SET => {
                // Only the legacy API gets here with a null: it means "not set".
                match value {
                    Some(v) => current.insert(name, v),
                    None => current.remove(&name),
                };
            }
            OP_DELETE => {
                current.remove(&name);
            }
            OP_APPEND | OP_SUBTRACT => {
                let verb = if op == OP_APPEND {
                    "append"
                } else {
                    "subtract"
                };
                let Some((kind, effective)) = lookup(&name) else {
                    // Unknown: keep it so the caller names it.
                    current.insert(name, value.unwrap_or_default());
                    continue;
                };
                if kind != ConfigType::List {
                    return Err((
                        ResponseError::InvalidConfig,
                        format!("Config value {verb} is not allowed for config key: {name}"),
                    ));
                }
                let old = current.get(&name).cloned().unwrap_or(effective);
                let mut items: Vec<String> = old
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                let given: Vec<String> = value
                    .unwrap_or_default()
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                if op == OP_APPEND {
                    for g in given {
                        if !items.contains(&g) {
                            items.push(g);
                        }
                    }
                } else {
                    items.retain(|i| !given.contains(i));
                }
                current.insert(name, items.join(","));
            }
            other => {
                return Err((
                    ResponseError::InvalidRequest,
                    format!("Unknown operations type {other}"),
                ));
            }
        }
    }
    Ok(current)
}

/// A changed retention applies now, not at the next retention tick.
fn enforce_retention_soon(topic: Arc<ferry_log::Topic>) {
    tokio::task::spawn_blocking(move || {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        for partition in topic.partitions() {
            if let Err(e) = partition.enforce_retention(now) {
                tracing::warn!(topic = topic.name(), error = %e, "retention after a config change failed");
            }
        }
    });
}
