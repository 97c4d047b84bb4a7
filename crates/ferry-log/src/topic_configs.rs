//! Every topic config Apache Kafka 4.0 defines (its `LogConfig`), with type, default, validation,
//! the broker config that supplies the default (Kafka's `ServerTopicConfigSynonyms`) and whether
//! Ferry acts on it.
//!
//! Clients and tools set any of these (Kafka Streams sets `min.insync.replicas` and
//! `message.timestamp.type`, Debezium `compression.type`, ...), so all of them are accepted, checked
//! the way Kafka checks them, stored in `topic.json` and shown by DescribeConfigs; the ones marked
//! `applied` also change what the log does. A name not in this table is refused, as Kafka does.
//! Kafka 4.0 removed `message.format.version`, `message.downconversion.enable` and
//! `message.timestamp.difference.max.ms`, so they are unknown here too.

/// A config's type, as DescribeConfigs reports it (`config_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    /// `true` or `false` (any case).
    Boolean,
    /// A string.
    String,
    /// A 32-bit integer.
    Int,
    /// A 64-bit integer.
    Long,
    /// A floating-point number.
    Double,
    /// Comma-separated values.
    List,
}

impl ConfigType {
    /// Kafka's `DescribeConfigsResponse.ConfigType` id.
    pub fn kafka_id(self) -> i8 {
        match self {
            Boolean => 1,
            ConfigType::String => 2,
            Int => 3,
            Long => 5,
            Double => 6,
            List => 7,
        }
    }
}

/// How a value is checked beyond its type.
#[derive(Debug, Clone, Copy)]
enum Check {
    Any,
    AtLeast(i64),
    Between(i64, i64),
    /// In `[min, max]` or exactly `-1` (gzip's "default level").
    LevelOrDefault(i64, i64),
    Ratio,
    OneOf(&'static [&'static str]),
    ListOf(&'static [&'static str]),
    /// `*` or a list of `partition:broker` pairs (the replication throttle lists).
    Replicas,
}

/// One topic config.
#[derive(Debug, Clone, Copy)]
pub struct TopicConfigDef {
    /// The topic-level name.
    pub name: &'static str,
    /// Its type.
    pub kind: ConfigType,
    /// Kafka's default, as DescribeConfigs shows it.
    pub default: &'static str,
    /// The broker config that supplies the default, if any (`log.retention.ms` for `retention.ms`).
    pub server_name: Option<&'static str>,
    /// Whether that broker config has a default of its own in Kafka (`log.retention.ms` has none:
    /// Kafka derives it from `log.retention.hours`), which decides whether DescribeConfigs lists a
    /// DEFAULT_CONFIG synonym for it.
    pub server_has_default: bool,
    /// Whether Ferry acts on it; the others are validated and stored only.
    pub applied: bool,
    /// One line of documentation for DescribeConfigs `include_documentation`.
    pub doc: &'static str,
    check: Check,
}

const fn def(
    name: &'static str,
    kind: ConfigType,
    default: &'static str,
    server: Option<&'static str>,
    applied: bool,
    check: Check,
    doc: &'static str,
) -> TopicConfigDef {
    TopicConfigDef {
        name,
        kind,
        default,
        server_name: server,
        server_has_default: true,
        applied,
        doc,
        check,
    }
}

/// `def` for a config whose broker synonym has no default of its own in Kafka.
const fn def_no_server_default(d: TopicConfigDef) -> TopicConfigDef {
    TopicConfigDef {
        server_has_default: false,
        ..d
    }
}

use Check::{Any, AtLeast, Between, LevelOrDefault, ListOf, OneOf, Ratio, Replicas};
use ConfigType::{Boolean, Double, Int, List, Long};

const LONG_MAX: &str = "9223372036854775807";
const COMPRESSION_TYPES: &[&str] = &["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"];

/// Every topic config, sorted by name.
pub const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    def(
        "cleanup.policy",
        List,
        "delete",
        Some("log.cleanup.policy"),
        true,
        ListOf(&["compact", "delete"]),
        "delete: remove old segments by retention; compact: keep the latest record per key.",
    ),
    def(
        "compression.gzip.level",
        Int,
        "-1",
        Some("compression.gzip.level"),
        false,
        LevelOrDefault(1, 9),
        "Compression level for gzip when compression.type is gzip.",
    ),
    def(
        "compression.lz4.level",
        Int,
        "9",
        Some("compression.lz4.level"),
        false,
        Between(1, 17),
        "Compression level for lz4 when compression.type is lz4.",
    ),
    def(
        "compression.type",
        ConfigType::String,
        "producer",
        Some("compression.type"),
        false,
        OneOf(COMPRESSION_TYPES),
        "Final compression of the topic's data; producer keeps what the producer sent (Ferry always stores batches as sent).",
    ),
    def(
        "compression.zstd.level",
        Int,
        "3",
        Some("compression.zstd.level"),
        false,
        Between(-131_072, 22),
        "Compression level for zstd when compression.type is zstd.",
    ),
    def(
        "delete.retention.ms",
        Long,
        "86400000",
        Some("log.cleaner.delete.retention.ms"),
        true,
        AtLeast(0),
        "How long tombstones are kept in a compacted topic.",
    ),
    def(
        "file.delete.delay.ms",
        Long,
        "60000",
        Some("log.segment.delete.delay.ms"),
        false,
        AtLeast(0),
        "Time to wait before deleting a file from the filesystem.",
    ),
    def(
        "flush.messages",
        Long,
        LONG_MAX,
        Some("log.flush.interval.messages"),
        false,
        AtLeast(1),
        "Messages between forced fsyncs (Ferry fsyncs before a record becomes readable).",
    ),
    def_no_server_default(def(
        "flush.ms",
        Long,
        LONG_MAX,
        Some("log.flush.interval.ms"),
        false,
        AtLeast(0),
        "Time between forced fsyncs (Ferry fsyncs before a record becomes readable).",
    )),
    def(
        "follower.replication.throttled.replicas",
        List,
        "",
        None,
        false,
        Replicas,
        "Replicas whose follower replication is throttled.",
    ),
    def(
        "index.interval.bytes",
        Int,
        "4096",
        Some("log.index.interval.bytes"),
        true,
        AtLeast(0),
        "Bytes of record batches between two entries of the sparse offset index.",
    ),
    def(
        "leader.replication.throttled.replicas",
        List,
        "",
        None,
        false,
        Replicas,
        "Replicas whose leader replication is throttled.",
    ),
    def(
        "local.retention.bytes",
        Long,
        "-2",
        Some("log.local.retention.bytes"),
        false,
        AtLeast(-2),
        "Local retention size when tiered storage is enabled.",
    ),
    def(
        "local.retention.ms",
        Long,
        "-2",
        Some("log.local.retention.ms"),
        false,
        AtLeast(-2),
        "Local retention time when tiered storage is enabled.",
    ),
    def(
        "max.compaction.lag.ms",
        Long,
        LONG_MAX,
        Some("log.cleaner.max.compaction.lag.ms"),
        true,
        AtLeast(1),
        "Longest time a record stays ineligible for compaction.",
    ),
    def(
        "max.message.bytes",
        Int,
        "1048588",
        Some("message.max.bytes"),
        true,
        AtLeast(0),
        "Largest record batch a producer may append.",
    ),
    def(
        "message.timestamp.after.max.ms",
        Long,
        LONG_MAX,
        Some("log.message.timestamp.after.max.ms"),
        false,
        AtLeast(0),
        "How far in the future a record's timestamp may be.",
    ),
    def(
        "message.timestamp.before.max.ms",
        Long,
        LONG_MAX,
        Some("log.message.timestamp.before.max.ms"),
        false,
        AtLeast(0),
        "How far in the past a record's timestamp may be.",
    ),
    def(
        "message.timestamp.type",
        ConfigType::String,
        "CreateTime",
        Some("log.message.timestamp.type"),
        false,
        OneOf(&["CreateTime", "LogAppendTime"]),
        "Whether record timestamps are the producer's (CreateTime) or the broker's (LogAppendTime).",
    ),
    def(
        "min.cleanable.dirty.ratio",
        Double,
        "0.5",
        Some("log.cleaner.min.cleanable.ratio"),
        true,
        Ratio,
        "Dirty share of a compacted log above which it is cleaned.",
    ),
    def(
        "min.compaction.lag.ms",
        Long,
        "0",
        Some("log.cleaner.min.compaction.lag.ms"),
        true,
        AtLeast(0),
        "Shortest time a record stays uncompacted.",
    ),
    def(
        "min.insync.replicas",
        Int,
        "1",
        Some("min.insync.replicas"),
        false,
        AtLeast(1),
        "Replicas that must acknowledge an acks=all write (Ferry has one).",
    ),
    def(
        "preallocate",
        Boolean,
        "false",
        Some("log.preallocate"),
        false,
        Any,
        "Preallocate segment files.",
    ),
    def(
        "remote.log.copy.disable",
        Boolean,
        "false",
        None,
        false,
        Any,
        "Stop copying segments to tiered storage.",
    ),
    def(
        "remote.log.delete.on.disable",
        Boolean,
        "false",
        None,
        false,
        Any,
        "Delete tiered data when tiered storage is disabled.",
    ),
    def(
        "remote.storage.enable",
        Boolean,
        "false",
        None,
        false,
        Any,
        "Tiered storage for this topic.",
    ),
    def(
        "retention.bytes",
        Long,
        "-1",
        Some("log.retention.bytes"),
        true,
        Any,
        "Delete the oldest closed segments while the partition is larger; -1: no limit.",
    ),
    def_no_server_default(def(
        "retention.ms",
        Long,
        "604800000",
        Some("log.retention.ms"),
        true,
        AtLeast(-1),
        "Delete closed segments whose newest record is older; -1: keep forever.",
    )),
    // Kafka's minimum is 14 bytes; Ferry allows 1 so tests can roll a segment per batch.
    def(
        "segment.bytes",
        Int,
        "1073741824",
        Some("log.segment.bytes"),
        true,
        AtLeast(1),
        "Roll the active segment when an append would make it larger.",
    ),
    def(
        "segment.index.bytes",
        Int,
        "10485760",
        Some("log.index.size.max.bytes"),
        false,
        AtLeast(4),
        "Maximum size of a segment's offset index.",
    ),
    def_no_server_default(def(
        "segment.jitter.ms",
        Long,
        "0",
        Some("log.roll.jitter.ms"),
        false,
        AtLeast(0),
        "Random jitter subtracted from segment.ms.",
    )),
    def_no_server_default(def(
        "segment.ms",
        Long,
        "604800000",
        Some("log.roll.ms"),
        true,
        AtLeast(1),
        "Roll the active segment when its first record is older.",
    )),
    def(
        "unclean.leader.election.enable",
        Boolean,
        "false",
        Some("unclean.leader.election.enable"),
        false,
        Any,
        "Allow out-of-sync replicas to become leader (Ferry has one replica).",
    ),
];

/// The definition of the topic config `name`.
pub fn topic_config(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// The topic config whose broker-level synonym is `server_name` (`log.retention.ms`).
pub fn topic_config_for_server_name(server_name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS
        .iter()
        .find(|d| d.server_name == Some(server_name))
}

impl TopicConfigDef {
    /// Checks `value` against the type and range, and returns it normalized (trimmed; booleans
    /// lower-cased; list items trimmed). The error message says what was wrong, as Kafka's
    /// `ConfigException` does.
    pub fn validate(&self, value: &str) -> Result<String, String> {
        let value = value.trim();
        let invalid = |why: String| {
            Err(format!(
                "Invalid value {value} for configuration {}: {why}",
                self.name
            ))
        };
        let number = |v: &str, min: i64, max: i64| -> Result<i64, String> {
            v.parse::<i64>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| format!("Not a number of type {:?}", self.kind))
        };
        let (min, max) = match self.kind {
            Int => (i64::from(i32::MIN), i64::from(i32::MAX)),
            _ => (i64::MIN, i64::MAX),
        };
        match self.kind {
            Boolean => match value.to_ascii_lowercase().as_str() {
                v @ ("true" | "false") => return Ok(v.to_owned()),
                _ => return invalid("Expected value to be either true or false".into()),
            },
            Int | Long => {
                let n = match number(value, min, max) {
                    Ok(n) => n,
                    Err(why) => return invalid(why),
                };
                let ok = match self.check {
                    AtLeast(lo) => n >= lo,
                    Between(lo, hi) => (lo..=hi).contains(&n),
                    LevelOrDefault(lo, hi) => n == -1 || (lo..=hi).contains(&n),
                    _ => true,
                };
                if !ok {
                    return invalid(match self.check {
                        AtLeast(lo) => format!("Value must be at least {lo}"),
                        Between(lo, hi) => {
                            format!("Value must be no more than {hi}, and at least {lo}")
                        }
                        LevelOrDefault(lo, hi) => {
                            format!("Value must be between {lo} and {hi} or equal to -1")
                        }
                        _ => String::new(),
                    });
                }
            }
            Double => match value.parse::<f64>() {
                Ok(r) if !matches!(self.check, Ratio) || (0.0..=1.0).contains(&r) => {}
                Ok(_) => return invalid("Value must be no more than 1, and at least 0".into()),
                Err(_) => return invalid("Not a number of type DOUBLE".into()),
            },
            ConfigType::String => {
                if let OneOf(allowed) = self.check
                    && !allowed.contains(&value)
                {
                    return invalid(format!("String must be one of: {}", allowed.join(", ")));
                }
            }
            List => {
                let items: Vec<&str> = if value.is_empty() {
                    Vec::new()
                } else {
                    value.split(',').map(str::trim).collect()
                };
                match self.check {
                    ListOf(allowed) => {
                        if items.is_empty() {
                            return invalid(format!(
                                "Empty list; use one or more of: {}",
                                allowed.join(", ")
                            ));
                        }
                        if let Some(bad) = items.iter().find(|i| !allowed.contains(i)) {
                            return invalid(format!(
                                "Invalid value {bad}; valid values are: {}",
                                allowed.join(", ")
                            ));
                        }
                    }
                    Replicas => {
                        let pair = |i: &&str| {
                            i.split_once(':').is_some_and(|(p, b)| {
                                p.trim().parse::<u32>().is_ok() && b.trim().parse::<u32>().is_ok()
                            })
                        };
                        if !(items == ["*"] || items.iter().all(pair)) {
                            return invalid(
                                "must be the literal '*' or a list of replicas in the form partitionId:brokerId"
                                    .into(),
                            );
                        }
                    }
                    _ => {}
                }
                return Ok(items.join(","));
            }
        }
        Ok(value.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_defaults_are_valid() {
        assert!(TOPIC_CONFIGS.windows(2).all(|w| w[0].name < w[1].name));
        for d in TOPIC_CONFIGS {
            assert_eq!(
                d.validate(d.default).as_deref(),
                Ok(d.default),
                "{}",
                d.name
            );
        }
    }

    #[track_caller]
    fn check(name: &str, value: &str, expect: Result<&str, ()>) {
        let got = topic_config(name).unwrap().validate(value);
        match expect {
            Ok(v) => assert_eq!(got.as_deref(), Ok(v), "{name}={value}"),
            Err(()) => assert!(got.is_err(), "{name}={value} gave {got:?}"),
        }
    }

    #[test]
    fn values_are_checked_as_kafka_checks_them() {
        check("compression.type", "zstd", Ok("zstd"));
        check("compression.type", "brotli", Err(()));
        check("compression.gzip.level", "-1", Ok("-1"));
        check("compression.gzip.level", "0", Err(()));
        check("min.cleanable.dirty.ratio", "0.1", Ok("0.1"));
        check("min.cleanable.dirty.ratio", "1.5", Err(()));
        check("preallocate", "TRUE", Ok("true"));
        check("preallocate", "yes", Err(()));
        check("min.insync.replicas", "0", Err(()));
        check("min.insync.replicas", "2147483648", Err(()));
        check("cleanup.policy", "compact, delete", Ok("compact,delete"));
        check("cleanup.policy", "", Err(()));
        check("leader.replication.throttled.replicas", "*", Ok("*"));
        check(
            "leader.replication.throttled.replicas",
            "0:0, 1:0",
            Ok("0:0,1:0"),
        );
        check("leader.replication.throttled.replicas", "x", Err(()));
        check(
            "message.timestamp.type",
            "LogAppendTime",
            Ok("LogAppendTime"),
        );
        check("retention.ms", "-2", Err(()));
    }
}
