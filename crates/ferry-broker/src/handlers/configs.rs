//! DescribeConfigs, answered as Kafka's `ConfigHelper` answers it.
//!
//! A TOPIC lists every Kafka topic config (`ferry_log::TOPIC_CONFIGS`) with its effective value,
//! its source (the topic's override, a dynamic broker config, the broker's static config, or
//! Kafka's default), its type, and, when asked, its synonyms (the same chain, most specific
//! first, under the broker-level names) and documentation. The BROKER resource named by the node
//! id lists the broker's configs: the read-only ones it was started with (`advertised.listeners`,
//! `log.dirs`, ...) and the dynamic topic defaults (`log.retention.ms`, ...); named `""` it lists
//! only the cluster-wide dynamic defaults, as Kafka does.

use std::sync::Arc;

use ferry_log::{ConfigType, TOPIC_CONFIGS, TopicConfigDef};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use super::str_bytes;
use crate::dynamic_config::{Layer, Layers};
use crate::state::{NODE_ID, Shared};

/// Kafka's resource type ids.
pub const RESOURCE_TOPIC: i8 = 2;
/// See [`RESOURCE_TOPIC`].
pub const RESOURCE_BROKER: i8 = 4;

/// Kafka's ConfigSource ids.
pub mod source {
    /// A topic override.
    pub const TOPIC: i8 = 1;
    /// A dynamic config of this broker.
    pub const DYNAMIC_BROKER: i8 = 2;
    /// A dynamic cluster-wide default.
    pub const DYNAMIC_DEFAULT_BROKER: i8 = 3;
    /// The broker's start-up config.
    pub const STATIC_BROKER: i8 = 4;
    /// Kafka's default.
    pub const DEFAULT: i8 = 5;
}

/// One config as described: value, source, synonyms (name, value, source), type, docs.
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    value: Option<String>,
    read_only: bool,
    kind: ConfigType,
    doc: &'static str,
    /// Most specific first; the first one's source is the entry's source.
    synonyms: Vec<(String, Option<String>, i8)>,
}

impl Entry {
    fn source(&self) -> i8 {
        self.synonyms.first().map_or(source::DEFAULT, |s| s.2)
    }
}

pub fn describe(
    shared: &Arc<Shared>,
    req: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let layers = shared.dynamic.layers();
    let results = req
        .resources
        .into_iter()
        .map(|r| {
            let name = r.resource_name.to_string();
            let result = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone())
                .with_error_message(None);
            let entries = match r.resource_type {
                RESOURCE_TOPIC => topic_entries(shared, &layers, &name),
                RESOURCE_BROKER => broker_layer(&name).map(|layer| match layer {
                    Layer::Broker => broker_entries(shared, &layers),
                    Layer::ClusterDefault => cluster_default_entries(&layers),
                }),
                other => Err((
                    ResponseError::InvalidRequest,
                    format!("Unsupported resource type: {other}"),
                )),
            };
            match entries {
                Ok(entries) => {
                    let keys: Option<Vec<String>> = r
                        .configuration_keys
                        .filter(|k| !k.is_empty())
                        .map(|k| k.iter().map(|s| s.to_string()).collect());
                    let configs = entries
                        .into_iter()
                        .filter(|e| keys.as_ref().is_none_or(|keys| keys.contains(&e.name)))
                        .map(|e| {
                            encode(e, req.include_synonyms, req.include_documentation, version)
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

fn encode(
    e: Entry,
    include_synonyms: bool,
    include_documentation: bool,
    version: i16,
) -> DescribeConfigsResourceResult {
    let source = e.source();
    let mut out = DescribeConfigsResourceResult::default()
        .with_name(str_bytes(e.name))
        .with_value(e.value.map(str_bytes))
        .with_read_only(e.read_only)
        .with_config_source(source)
        .with_is_sensitive(false);
    if include_synonyms {
        out.synonyms = e
            .synonyms
            .into_iter()
            .map(|(name, value, source)| {
                DescribeConfigsSynonym::default()
                    .with_name(str_bytes(name))
                    .with_value(value.map(str_bytes))
                    .with_source(source)
            })
            .collect();
    }
    // Type and documentation exist from v3 on.
    if version >= 3 {
        out.config_type = e.kind.kafka_id();
        out.documentation = include_documentation.then(|| str_bytes(e.doc));
    }
    out
}

/// Which layer a BROKER resource name means: `""` the cluster default, the node id this broker.
pub fn broker_layer(name: &str) -> Result<Layer, (ResponseError, String)> {
    if name.is_empty() {
        return Ok(Layer::ClusterDefault);
    }
    match name.parse::<i32>() {
        Ok(NODE_ID) => Ok(Layer::Broker),
        Ok(other) => Err((
            ResponseError::InvalidRequest,
            format!(
                "Unexpected broker id, expected {NODE_ID} or empty string, but received {other}"
            ),
        )),
        Err(_) => Err((
            ResponseError::InvalidRequest,
            format!("Broker id must be an integer, but it is: {name}"),
        )),
    }
}

/// The broker-level chain behind a topic config's default, most specific first: this broker's
/// dynamic value, the cluster-wide dynamic default, the static start-up value (when it differs
/// from Kafka's default), Kafka's default (when the broker config has one).
fn broker_chain(
    shared: &Shared,
    layers: &Layers,
    def: &TopicConfigDef,
) -> Vec<(String, Option<String>, i8)> {
    let Some(server) = def.server_name else {
        return Vec::new();
    };
    let mut chain = Vec::new();
    for (layer, src) in [
        (Layer::Broker, source::DYNAMIC_BROKER),
        (Layer::ClusterDefault, source::DYNAMIC_DEFAULT_BROKER),
    ] {
        if let Some(v) = layers.get(layer).get(server) {
            chain.push((server.to_owned(), Some(v.clone()), src));
        }
    }
    let static_value = shared.config.log.value(def.name).unwrap_or_default();
    if static_value != def.default {
        chain.push((server.to_owned(), Some(static_value), source::STATIC_BROKER));
    }
    if def.server_has_default {
        chain.push((
            server.to_owned(),
            Some(def.default.to_owned()),
            source::DEFAULT,
        ));
    }
    chain
}

type Entries = Result<Vec<Entry>, (ResponseError, String)>;

fn topic_entries(shared: &Shared, layers: &Layers, name: &str) -> Entries {
    if let Err(e) = ferry_log::Store::validate_topic_name(name) {
        return Err((ResponseError::InvalidTopicException, e.to_string()));
    }
    let Some(topic) = shared.store.topic(name) else {
        return Err((
            ResponseError::UnknownTopicOrPartition,
            format!("unknown topic {name}"),
        ));
    };
    let overrides = topic.overrides();
    let config = topic.config();
    Ok(TOPIC_CONFIGS
        .iter()
        .map(|def| {
            let value = config.value(def.name);
            let mut synonyms = Vec::new();
            if overrides.contains_key(def.name) {
                synonyms.push((def.name.to_owned(), value.clone(), source::TOPIC));
            }
            synonyms.extend(broker_chain(shared, layers, def));
            Entry {
                name: def.name.to_owned(),
                value,
                read_only: false,
                kind: def.kind,
                doc: def.doc,
                synonyms,
            }
        })
        .collect())
}

/// A read-only broker config: `changed` says whether it differs from Kafka's default (then its
/// source is the static config).
fn fixed(name: &str, value: String, kind: ConfigType, changed: bool, doc: &'static str) -> Entry {
    let src = if changed {
        source::STATIC_BROKER
    } else {
        source::DEFAULT
    };
    Entry {
        name: name.to_owned(),
        value: Some(value.clone()),
        read_only: true,
        kind,
        doc,
        synonyms: vec![(name.to_owned(), Some(value), src)],
    }
}

fn broker_entries(shared: &Shared, layers: &Layers) -> Vec<Entry> {
    let c = &shared.config;
    let (host, port) = &shared.advertised;
    let listener = format!("PLAINTEXT://{host}:{port}");
    let log_dir = std::path::absolute(c.data_dir.join("topics"))
        .unwrap_or_else(|_| c.data_dir.join("topics"))
        .display()
        .to_string();
    let mut entries = vec![
        fixed(
            "advertised.listeners",
            listener,
            ConfigType::String,
            true,
            "The address clients are told to connect to.",
        ),
        fixed(
            "auto.create.topics.enable",
            c.auto_create_topics.to_string(),
            ConfigType::Boolean,
            !c.auto_create_topics,
            "Create a topic when a client produces to it or asks for it in Metadata.",
        ),
        fixed(
            "broker.id",
            NODE_ID.to_string(),
            ConfigType::Int,
            true,
            "This broker's id.",
        ),
        fixed(
            "default.replication.factor",
            "1".to_owned(),
            ConfigType::Int,
            false,
            "Replication factor of auto-created topics (Ferry is a single node).",
        ),
        fixed(
            "listeners",
            format!("PLAINTEXT://{}", c.listen),
            ConfigType::String,
            true,
            "The address the broker listens on.",
        ),
        fixed(
            "log.dirs",
            log_dir,
            ConfigType::String,
            true,
            "The directory holding the partition logs.",
        ),
        fixed(
            "node.id",
            NODE_ID.to_string(),
            ConfigType::Int,
            true,
            "This node's id.",
        ),
        fixed(
            "num.partitions",
            c.default_partitions.to_string(),
            ConfigType::Int,
            c.default_partitions != 1,
            "Partition count of auto-created topics.",
        ),
        fixed(
            "socket.request.max.bytes",
            c.max_request_bytes.to_string(),
            ConfigType::Int,
            c.max_request_bytes != 104_857_600,
            "The largest request the broker accepts; a larger one closes the connection.",
        ),
    ];
    // The topic defaults under their broker names; these are the dynamic ones.
    entries.extend(TOPIC_CONFIGS.iter().filter_map(|def| {
        let server = def.server_name?;
        let synonyms = broker_chain(shared, layers, def);
        // Kafka shows null for a broker config without a default (log.retention.ms, whose
        // default comes from log.retention.hours); the effective value is more use to a reader.
        let value = synonyms
            .first()
            .and_then(|s| s.1.clone())
            .or_else(|| Some(def.default.to_owned()));
        Some(Entry {
            name: server.to_owned(),
            value,
            read_only: false,
            kind: def.kind,
            doc: def.doc,
            synonyms,
        })
    }));
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    entries
}

fn cluster_default_entries(layers: &Layers) -> Vec<Entry> {
    layers
        .cluster_default
        .iter()
        .filter_map(|(name, value)| {
            let def = ferry_log::topic_config_for_server_name(name)?;
            Some(Entry {
                name: name.clone(),
                value: Some(value.clone()),
                read_only: false,
                kind: def.kind,
                doc: def.doc,
                synonyms: vec![(
                    name.clone(),
                    Some(value.clone()),
                    source::DYNAMIC_DEFAULT_BROKER,
                )],
            })
        })
        .collect()
}
