//! The broker's dynamic configs: what AlterConfigs and IncrementalAlterConfigs set on the BROKER
//! resource, kept in `<data>/broker-config.json` and applied at once.
//!
//! Kafka has two layers: a cluster-wide default (resource name `""`) and a per-broker value
//! (resource name = the node id), the latter winning. Ferry keeps both. A dynamic broker config
//! here is the broker-level name of a topic config (`log.retention.ms`, `log.segment.bytes`,
//! `message.max.bytes`, `compression.type`, ...: Kafka's `DynamicLogConfig`): it changes the
//! default of every topic that does not override it, so the store's defaults are rebuilt and
//! every such topic's partitions take the new config at once. Other broker configs are read-only
//! (Kafka answers "Cannot update these configs dynamically"), as are names Ferry does not know.
//!
//! Precedence for a topic's default, as in Kafka: per-broker dynamic, then cluster-default
//! dynamic, then the static config the broker was started with, then Kafka's default.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use ferry_log::LogConfig;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

const FILE: &str = "broker-config.json";

/// Which layer a dynamic config is set on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// Resource name `""`: every broker's default (Kafka's DYNAMIC_DEFAULT_BROKER_CONFIG).
    ClusterDefault,
    /// Resource name `"0"`: this broker (Kafka's DYNAMIC_BROKER_CONFIG).
    Broker,
}

/// Both layers, by broker config name. What the file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layers {
    /// Cluster-wide defaults.
    #[serde(default)]
    pub cluster_default: BTreeMap<String, String>,
    /// This broker's values.
    #[serde(default)]
    pub broker: BTreeMap<String, String>,
}

impl Layers {
    /// One layer.
    pub fn get(&self, layer: Layer) -> &BTreeMap<String, String> {
        match layer {
            Layer::ClusterDefault => &self.cluster_default,
            Layer::Broker => &self.broker,
        }
    }

    /// One layer, to change.
    pub fn get_mut(&mut self, layer: Layer) -> &mut BTreeMap<String, String> {
        match layer {
            Layer::ClusterDefault => &mut self.cluster_default,
            Layer::Broker => &mut self.broker,
        }
    }

    /// The topic defaults these layers give on top of the static `base`.
    pub fn log_defaults(&self, base: &LogConfig) -> ferry_log::Result<LogConfig> {
        let as_topic = |m: &BTreeMap<String, String>| -> Vec<(&'static str, String)> {
            m.iter()
                .filter_map(|(k, v)| {
                    ferry_log::topic_config_for_server_name(k).map(|d| (d.name, v.clone()))
                })
                .collect()
        };
        let cluster = as_topic(&self.cluster_default);
        let broker = as_topic(&self.broker);
        base.with_overrides(cluster.iter().map(|(k, v)| (*k, v.as_str())))?
            .with_overrides(broker.iter().map(|(k, v)| (*k, v.as_str())))
    }
}

/// Why a dynamic broker config change is refused (Kafka answers INVALID_REQUEST for all of
/// these: see `ConfigAdminManager.validateBrokerConfigChange`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

/// Checks that every name in `configs` can be changed at runtime and every value is valid;
/// returns the values normalized.
pub fn validate(configs: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>, Refused> {
    let fixed: Vec<&str> = configs
        .keys()
        .filter(|k| ferry_log::topic_config_for_server_name(k).is_none())
        .map(String::as_str)
        .collect();
    if !fixed.is_empty() {
        return Err(Refused(format!(
            "Cannot update these configs dynamically: {}",
            fixed.join(", ")
        )));
    }
    configs
        .iter()
        .map(|(k, v)| {
            let def = ferry_log::topic_config_for_server_name(k).expect("checked above");
            def.validate(v)
                .map(|v| (k.clone(), v))
                // Kafka's messages name the topic config; name the broker config that was sent.
                .map_err(|e| Refused(e.replace(def.name, k)))
        })
        .collect()
}

/// The dynamic configs of this broker, persisted.
#[derive(Debug)]
pub struct DynamicConfigs {
    path: PathBuf,
    layers: Mutex<Layers>,
}

impl DynamicConfigs {
    /// Reads `<data>/broker-config.json` (none yet: no dynamic configs).
    pub fn open(data_dir: &Path) -> std::io::Result<DynamicConfigs> {
        let path = data_dir.join(FILE);
        let layers = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Layers::default(),
            Err(e) => return Err(e),
        };
        Ok(DynamicConfigs {
            path,
            layers: Mutex::new(layers),
        })
    }

    /// Both layers now.
    pub fn layers(&self) -> Layers {
        self.layers.lock().clone()
    }

    /// Replaces one layer with `configs` (already validated), durably, then calls `apply` with
    /// all layers as they now are. Both happen under one lock, so two changes cannot interleave
    /// and what is applied is always what is on disk.
    pub fn replace(
        &self,
        layer: Layer,
        configs: BTreeMap<String, String>,
        apply: impl FnOnce(&Layers) -> Result<(), Refused>,
    ) -> Result<(), Refused> {
        let mut layers = self.layers.lock();
        let mut next = layers.clone();
        *next.get_mut(layer) = configs;
        self.write(&next)
            .map_err(|e| Refused(format!("cannot persist {}: {e}", self.path.display())))?;
        *layers = next;
        apply(&layers)
    }

    fn write(&self, layers: &Layers) -> std::io::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let mut file = File::create(&tmp)?;
        file.write_all(&serde_json::to_vec_pretty(layers).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
        fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn broker_layer_wins_over_cluster_default_over_static() {
        let layers = Layers {
            cluster_default: map(&[("log.retention.ms", "1000"), ("log.segment.bytes", "2048")]),
            broker: map(&[("log.retention.ms", "5000")]),
        };
        let base = LogConfig {
            max_message_bytes: 77,
            ..LogConfig::default()
        };
        let c = layers.log_defaults(&base).unwrap();
        assert_eq!(c.retention_ms, Some(5000));
        assert_eq!(c.segment_bytes, 2048);
        assert_eq!(c.max_message_bytes, 77);
    }

    #[test]
    fn only_topic_defaults_are_dynamic() {
        assert_eq!(
            validate(&map(&[
                ("auto.create.topics.enable", "false"),
                ("log.retention.ms", "1")
            ])),
            Err(Refused(
                "Cannot update these configs dynamically: auto.create.topics.enable".into()
            ))
        );
        let err = validate(&map(&[("log.segment.bytes", "-5")])).unwrap_err();
        assert!(err.0.contains("log.segment.bytes"), "{err:?}");
        assert_eq!(
            validate(&map(&[("compression.type", "zstd")])).unwrap(),
            map(&[("compression.type", "zstd")])
        );
    }

    #[test]
    fn layers_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let d = DynamicConfigs::open(dir.path()).unwrap();
        let mut applied = None;
        d.replace(Layer::Broker, map(&[("log.retention.ms", "10")]), |l| {
            applied = Some(l.clone());
            Ok(())
        })
        .unwrap();
        assert_eq!(applied.unwrap().broker, map(&[("log.retention.ms", "10")]));
        drop(d);
        let d = DynamicConfigs::open(dir.path()).unwrap();
        assert_eq!(d.layers().broker, map(&[("log.retention.ms", "10")]));
        assert!(d.layers().cluster_default.is_empty());
    }
}
