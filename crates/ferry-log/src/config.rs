//! Per-topic log configuration, named and defaulted the way Kafka names and defaults it.
//!
//! A topic's effective config is the broker-wide defaults with the topic's overrides applied
//! ([`LogConfig::with_overrides`]); only the overrides are persisted, so changing a broker default
//! changes every topic that does not override it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::topic_configs::{TOPIC_CONFIGS, topic_config};

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// How a partition log stores, indexes, rolls and deletes its data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogConfig {
    /// `segment.bytes`: roll the active segment when an append would make it larger than this.
    pub segment_bytes: u64,
    /// `segment.ms`: roll the active segment when its first batch is older than this.
    pub segment_ms: u64,
    /// `retention.ms`: delete closed segments whose newest timestamp is older; `None` keeps them forever.
    pub retention_ms: Option<i64>,
    /// `retention.bytes`: delete the oldest closed segments while the partition is larger; `None` = no limit.
    pub retention_bytes: Option<u64>,
    /// `index.interval.bytes`: bytes of batches between two sparse index entries.
    pub index_interval_bytes: u32,
    /// `cleanup.policy`: `delete` (retention), `compact` (the cleaner) or both.
    pub cleanup_policy: String,
    /// `max.message.bytes`: the largest record batch a producer may append.
    pub max_message_bytes: u32,
    /// Kafka topic configs Ferry validates and stores but does not act on (`compression.type`,
    /// `min.insync.replicas`, ...), by name, when they differ from Kafka's default.
    #[serde(default)]
    pub extra: BTreeMap<String, String>,
    /// `delete.retention.ms`: how long a tombstone stays after the clean that first saw it.
    pub delete_retention_ms: i64,
    /// `min.cleanable.dirty.ratio`: clean when dirty bytes exceed this share of the cleanable log.
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: a record stays uncompacted at least this long.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a record becomes cleanable at the latest after this long.
    pub max_compaction_lag_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * DAY_MS,
            retention_ms: Some(7 * DAY_MS as i64),
            retention_bytes: None,
            index_interval_bytes: 4096,
            cleanup_policy: "delete".to_owned(),
            max_message_bytes: 1_048_588,
            extra: BTreeMap::new(),
            delete_retention_ms: DAY_MS as i64,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
        }
    }
}

/// The Kafka config names this crate acts on, in the order they sort. Every other topic config
/// in [`TOPIC_CONFIGS`] is validated and kept in [`LogConfig::extra`].
pub const CONFIG_NAMES: [&str; 11] = [
    "cleanup.policy",
    "delete.retention.ms",
    "index.interval.bytes",
    "max.compaction.lag.ms",
    "max.message.bytes",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.ms",
];

impl LogConfig {
    /// Returns this config with Kafka topic config overrides applied, by their Kafka names.
    /// Unknown names are [`Error::InvalidConfig`] naming all of them (`Unknown topic config
    /// name: a, b`); so is a value that does not parse or is out of range.
    pub fn with_overrides<'a>(
        &self,
        overrides: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<LogConfig> {
        let overrides: Vec<(&str, &str)> = overrides.into_iter().collect();
        let unknown: Vec<&str> = overrides
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| topic_config(k).is_none())
            .collect();
        if !unknown.is_empty() {
            return Err(Error::InvalidConfig(format!(
                "Unknown topic config name: {}",
                unknown.join(", ")
            )));
        }
        let mut config = self.clone();
        for (key, value) in overrides {
            config.set(key, value.trim())?;
        }
        Ok(config)
    }

    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        // Kafka's type and range checks first, so every config fails with Kafka's message.
        let def = topic_config(key)
            .ok_or_else(|| Error::InvalidConfig(format!("Unknown topic config name: {key}")))?;
        let value = def.validate(value).map_err(Error::InvalidConfig)?;
        let value = value.as_str();
        match key {
            // Positions in the sparse index are 32-bit and Kafka caps segment.bytes at i32::MAX.
            "segment.bytes" => self.segment_bytes = parse_in(key, value, 1, i32::MAX as u64)?,
            "segment.ms" => self.segment_ms = parse_in(key, value, 1, i64::MAX as u64)?,
            "retention.ms" => self.retention_ms = parse_limit(key, value)?,
            "retention.bytes" => {
                self.retention_bytes = parse_limit(key, value)?.map(|v: i64| v as u64)
            }
            "index.interval.bytes" => {
                self.index_interval_bytes = parse_in(key, value, 0, i32::MAX as u64)? as u32
            }
            "max.message.bytes" => {
                self.max_message_bytes = parse_in(key, value, 0, i32::MAX as u64)? as u32
            }
            "cleanup.policy" => self.cleanup_policy = parse_cleanup_policy(value)?,
            "delete.retention.ms" => {
                self.delete_retention_ms = parse_in(key, value, 0, i64::MAX as u64)? as i64
            }
            "min.compaction.lag.ms" => {
                self.min_compaction_lag_ms = parse_in(key, value, 0, i64::MAX as u64)? as i64
            }
            "max.compaction.lag.ms" => {
                self.max_compaction_lag_ms = parse_in(key, value, 1, i64::MAX as u64)? as i64
            }
            "min.cleanable.dirty.ratio" => {
                self.min_cleanable_dirty_ratio = match value.parse::<f64>() {
                    Ok(v) if (0.0..=1.0).contains(&v) => v,
                    _ => {
                        return Err(Error::InvalidConfig(format!(
                            "{key} must be a number in [0, 1], got {value:?}"
                        )));
                    }
                }
            }
            _ => {
                debug_assert!(!def.applied, "{key} is applied but not parsed");
                if value == def.default {
                    self.extra.remove(key);
                } else {
                    self.extra.insert(key.to_owned(), value.to_owned());
                }
            }
        }
        Ok(())
    }

    /// The value of one topic config by its Kafka name, as [`entries`](Self::entries) shows it.
    pub fn value(&self, name: &str) -> Option<String> {
        let def = topic_config(name)?;
        let unlimited = |v: Option<String>| v.unwrap_or_else(|| "-1".to_owned());
        Some(match name {
            "cleanup.policy" => self.cleanup_policy.clone(),
            "delete.retention.ms" => self.delete_retention_ms.to_string(),
            "max.compaction.lag.ms" => self.max_compaction_lag_ms.to_string(),
            "min.cleanable.dirty.ratio" => self.min_cleanable_dirty_ratio.to_string(),
            "min.compaction.lag.ms" => self.min_compaction_lag_ms.to_string(),
            "index.interval.bytes" => self.index_interval_bytes.to_string(),
            "max.message.bytes" => self.max_message_bytes.to_string(),
            "retention.bytes" => unlimited(self.retention_bytes.map(|v| v.to_string())),
            "retention.ms" => unlimited(self.retention_ms.map(|v| v.to_string())),
            "segment.bytes" => self.segment_bytes.to_string(),
            "segment.ms" => self.segment_ms.to_string(),
            _ => self
                .extra
                .get(name)
                .cloned()
                .unwrap_or_else(|| def.default.to_owned()),
        })
    }

    /// Every topic config Kafka defines as (Kafka name, value), for DescribeConfigs, sorted by
    /// name: the ones Ferry acts on from their fields, the others from [`extra`](Self::extra) or
    /// Kafka's default. Unlimited retention is reported as `-1`, as Kafka does.
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        TOPIC_CONFIGS
            .iter()
            .map(|d| (d.name, self.value(d.name).unwrap_or_default()))
            .collect()
    }
}

impl LogConfig {
    /// Whether `cleanup.policy` includes `compact`: the cleaner keeps the latest record per key.
    pub fn compacts(&self) -> bool {
        self.cleanup_policy.split(',').any(|p| p == "compact")
    }

    /// Whether `cleanup.policy` includes `delete`: retention deletes old segments.
    pub fn deletes(&self) -> bool {
        self.cleanup_policy.split(',').any(|p| p == "delete")
    }
}

fn parse_in(key: &str, value: &str, min: u64, max: u64) -> Result<u64> {
    match value.parse::<u64>() {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(Error::InvalidConfig(format!(
            "{key} must be an integer in {min}..={max}, got {value:?}"
        ))),
    }
}

/// A retention limit: a non-negative number, or negative for none (Kafka allows any negative
/// `retention.bytes`; `retention.ms` below -1 was already refused by its range check).
fn parse_limit(key: &str, value: &str) -> Result<Option<i64>> {
    match value.parse::<i64>() {
        Ok(v) if v < 0 => Ok(None),
        Ok(v) if v >= 0 => Ok(Some(v)),
        _ => Err(Error::InvalidConfig(format!(
            "{key} must be -1 or a non-negative integer, got {value:?}"
        ))),
    }
}

fn parse_cleanup_policy(value: &str) -> Result<String> {
    let mut parts: Vec<&str> = value.split(',').map(str::trim).collect();
    parts.sort_unstable();
    parts.dedup();
    match parts.as_slice() {
        ["delete"] | ["compact"] | ["compact", "delete"] => Ok(parts.join(",")),
        _ => Err(Error::InvalidConfig(format!(
            "cleanup.policy must be delete, compact or both, got {value:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_ok(key: &str, value: &str, expect: impl Fn(&LogConfig) -> bool) {
        let config = LogConfig::default().with_overrides([(key, value)]).unwrap();
        assert!(expect(&config), "{key}={value} gave {config:?}");
    }

    #[track_caller]
    fn check_err(key: &str, value: &str) {
        let result = LogConfig::default().with_overrides([(key, value)]);
        assert!(
            matches!(result, Err(Error::InvalidConfig(_))),
            "{key}={value}: {result:?}"
        );
    }

    #[test]
    fn overrides_parse() {
        check_ok("segment.bytes", "1024", |c| c.segment_bytes == 1024);
        check_ok("segment.ms", "60000", |c| c.segment_ms == 60_000);
        check_ok("retention.ms", "-1", |c| c.retention_ms.is_none());
        check_ok("retention.ms", "1000", |c| c.retention_ms == Some(1000));
        check_ok("retention.bytes", "4096", |c| {
            c.retention_bytes == Some(4096)
        });
        check_ok("retention.bytes", "-1", |c| c.retention_bytes.is_none());
        check_ok("index.interval.bytes", "0", |c| c.index_interval_bytes == 0);
        check_ok("max.message.bytes", "100", |c| c.max_message_bytes == 100);
        check_ok("cleanup.policy", "delete,compact", |c| {
            c.cleanup_policy == "compact,delete" && c.compacts() && c.deletes()
        });
        check_ok("cleanup.policy", "compact", |c| {
            c.compacts() && !c.deletes()
        });
        check_ok("min.cleanable.dirty.ratio", "0.01", |c| {
            c.min_cleanable_dirty_ratio == 0.01
        });
        check_ok("delete.retention.ms", "0", |c| c.delete_retention_ms == 0);
        check_ok("min.compaction.lag.ms", "5", |c| {
            c.min_compaction_lag_ms == 5
        });
        check_ok("max.compaction.lag.ms", "9", |c| {
            c.max_compaction_lag_ms == 9
        });
    }

    #[test]
    fn bad_overrides_are_rejected() {
        check_err("segment.bytes", "0");
        check_err("segment.bytes", "abc");
        check_err("segment.bytes", "4294967296");
        check_err("retention.ms", "-2");
        check_err("cleanup.policy", "shred");
        check_err("no.such.config", "1");
        check_err("min.cleanable.dirty.ratio", "1.5");
        check_err("max.compaction.lag.ms", "0");
    }

    #[test]
    fn entries_round_trip_through_overrides() {
        let config = LogConfig::default()
            .with_overrides([("retention.bytes", "10"), ("segment.ms", "5")])
            .unwrap();
        let entries = config.entries();
        let names: Vec<_> = entries.iter().map(|e| e.0).collect();
        let all: Vec<_> = TOPIC_CONFIGS.iter().map(|d| d.name).collect();
        assert_eq!(names, all);
        let again = LogConfig::default()
            .with_overrides(entries.iter().map(|(k, v)| (*k, v.as_str())))
            .unwrap();
        assert_eq!(again, config);
    }

    #[test]
    fn every_kafka_topic_config_is_accepted_and_kept() {
        let config = LogConfig::default()
            .with_overrides([
                ("compression.type", "zstd"),
                ("min.insync.replicas", "2"),
                ("message.timestamp.type", "CreateTime"),
            ])
            .unwrap();
        assert_eq!(config.value("compression.type").as_deref(), Some("zstd"));
        assert_eq!(config.value("min.insync.replicas").as_deref(), Some("2"));
        // A value equal to Kafka's default is not kept as an extra.
        assert!(!config.extra.contains_key("message.timestamp.type"));
        assert_eq!(
            config.value("delete.retention.ms").as_deref(),
            Some("86400000")
        );
    }

    #[test]
    fn unknown_configs_are_named_in_the_error() {
        let err = LogConfig::default()
            .with_overrides([("no.such", "1"), ("retention.ms", "1"), ("nor.this", "2")])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid config: Unknown topic config name: no.such, nor.this"
        );
    }
}
