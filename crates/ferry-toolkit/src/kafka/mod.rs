//! The Kafka adapter, on `rdkafka` (librdkafka). The only module that touches Kafka.
//!
//! - [`KafkaSender`]: the idempotent, acks=all producer behind [`crate::Publisher`].
//! - [`start_router`]: runs a [`crate::Router`] as a consumer-group member (see `consumer.rs`
//!   for the threads); a router made [`exactly_once`](crate::Router::exactly_once) commits each
//!   batch's outputs, dead letters and offsets in one Kafka transaction (`eos.rs`).
//! - [`start_requester`]: the reply side of request/reply.
//! - [`redrive`]: sends dead letters back to their topics, each to the group that failed it.
//! - [`wait_for_broker`]: start-up backoff, one log line per attempt.
//! - [`start_tap`]: an observer of every matching topic (the dashboard's live view).
//! - [`Admin`]: topics, offsets, groups and lag, and dead letters still pending, for tools and
//!   the dashboard.
//! - [`wire`]: a minimal Kafka protocol client for what librdkafka does not expose (transactions,
//!   pending transactional offsets, consumer-protocol groups).
//!
//! It talks to any Kafka-protocol broker over TCP: Ferry's own, Apache Kafka or Redpanda.

mod admin;
mod consumer;
mod eos;
mod partition;
mod redrive;
mod reply;
mod sender;
mod tap;
pub mod wire;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use tokio_util::sync::CancellationToken;

pub use admin::{
    Admin, CLASSIC, CONSUMER, DeadLetterTopic, GroupInfo, GroupOffset, MemberInfo, PartitionInfo,
    TopicInfo, assignment,
};
pub use consumer::{RouterHandle, start_router};
pub use eos::CRASH_BEFORE_COMMIT_ENV;
pub use redrive::{RedriveReport, redrive, redrive_group};
pub use reply::start_requester;
pub use sender::KafkaSender;
pub use tap::{TapHandle, start_tap};

use crate::error::{Error, Result};
use crate::ops::Check;
use crate::publisher::Publisher;
use crate::retry::RetryPolicy;
use crate::transport::TransportFeatures;

/// What the Kafka adapter guarantees: order per key (a key maps to one partition, a partition
/// to one group member at a time), persistence (acks=all on a durable broker), and a copy of
/// every message for each consumer group.
pub const FEATURES: TransportFeatures = TransportFeatures {
    ordered_per_key: true,
    ordered_only_with_one_consumer: false,
    persistent: true,
    each_group_gets_every_message: true,
};

/// How to reach Kafka, plus librdkafka properties for the clients the toolkit creates.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `host:port[,host:port...]`.
    pub bootstrap_servers: String,
    /// librdkafka properties for every client.
    pub client: BTreeMap<String, String>,
    /// Extra properties for consumers (e.g. `session.timeout.ms`).
    pub consumer: BTreeMap<String, String>,
    /// Extra properties for producers (e.g. `message.timeout.ms`).
    pub producer: BTreeMap<String, String>,
    /// Backoff between start-up connection attempts; `max_attempts` bounds them.
    pub connect_backoff: RetryPolicy,
    /// How often a running router checks that the broker is reachable, for `/ready`.
    pub probe_interval: Duration,
    /// The consumer group protocol of routers, taps and re-drives.
    pub group_protocol: GroupProtocol,
}

/// The consumer group protocol a consumer speaks (librdkafka's `group.protocol`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GroupProtocol {
    /// JoinGroup/SyncGroup with a client-side assignor: every rebalance pauses the whole group.
    #[default]
    Classic,
    /// KIP-848 (Kafka 4.x, Ferry's broker, librdkafka 2.12+): the broker assigns and moves only
    /// the partitions that must move; the members that keep theirs never pause. Session timeout
    /// and assignor are the broker's (`group.remote.assignor` picks `uniform` or `range`).
    Consumer,
}

impl GroupProtocol {
    /// librdkafka's name.
    pub fn name(self) -> &'static str {
        match self {
            GroupProtocol::Classic => "classic",
            GroupProtocol::Consumer => "consumer",
        }
    }
}

impl std::str::FromStr for GroupProtocol {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "classic" => Ok(GroupProtocol::Classic),
            "consumer" => Ok(GroupProtocol::Consumer),
            other => Err(format!(
                "unknown group protocol {other:?} (classic or consumer)"
            )),
        }
    }
}

/// Classic-protocol consumer properties that the consumer protocol moves to the broker;
/// librdkafka refuses or warns about them with `group.protocol=consumer`.
const CLASSIC_ONLY: &[&str] = &[
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "partition.assignment.strategy",
    "group.protocol.type",
];

impl KafkaConfig {
    /// Defaults for `bootstrap_servers`: start-up retries forever, from 200 ms doubling to 10 s.
    pub fn new(bootstrap_servers: impl Into<String>) -> KafkaConfig {
        KafkaConfig {
            bootstrap_servers: bootstrap_servers.into(),
            client: BTreeMap::new(),
            consumer: BTreeMap::new(),
            producer: BTreeMap::new(),
            connect_backoff: RetryPolicy {
                initial: Duration::from_millis(200),
                multiplier: 2.0,
                max_delay: Duration::from_secs(10),
                max_attempts: u32::MAX,
                jitter: 0.2,
                attempt_timeout: Some(Duration::from_secs(5)),
            },
            probe_interval: Duration::from_secs(5),
            group_protocol: GroupProtocol::default(),
        }
    }

    /// Sets the consumer group protocol (classic by default).
    pub fn group_protocol(mut self, protocol: GroupProtocol) -> KafkaConfig {
        self.group_protocol = protocol;
        self
    }

    /// Sets a librdkafka property on every client.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> KafkaConfig {
        self.client.insert(key.into(), value.into());
        self
    }

    /// Sets a librdkafka property on consumers only.
    pub fn set_consumer(mut self, key: impl Into<String>, value: impl Into<String>) -> KafkaConfig {
        self.consumer.insert(key.into(), value.into());
        self
    }

    /// Sets a librdkafka property on producers only.
    pub fn set_producer(mut self, key: impl Into<String>, value: impl Into<String>) -> KafkaConfig {
        self.producer.insert(key.into(), value.into());
        self
    }

    /// A consumer configuration: manual commits only (callers cannot turn auto-commit on),
    /// from the earliest offset for a new group, topics created on first subscription. Caller
    /// properties override the other defaults.
    pub(crate) fn consumer_config(&self, group: &str) -> ClientConfig {
        let mut config = self.base();
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("allow.auto.create.topics", "true");
        // A `group.protocol` property set directly wins over the field.
        let protocol = self
            .consumer
            .get("group.protocol")
            .or_else(|| self.client.get("group.protocol"))
            .and_then(|p| p.parse().ok())
            .unwrap_or(self.group_protocol);
        for (k, v) in self.client.iter().chain(&self.consumer) {
            if protocol == GroupProtocol::Consumer && CLASSIC_ONLY.contains(&k.as_str()) {
                tracing::debug!(
                    property = %k,
                    "not used with the consumer group protocol (the broker decides); skipped"
                );
                continue;
            }
            config.set(k, v);
        }
        config.set("group.protocol", protocol.name());
        // Commit-after-success is the router's contract; auto-commit would break it.
        config
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        config
    }

    /// A producer configuration: idempotent, acks=all, 30 s delivery timeout.
    pub(crate) fn producer_config(&self) -> ClientConfig {
        let mut config = self.base();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "30000")
            .set("linger.ms", "5");
        for (k, v) in self.client.iter().chain(&self.producer) {
            config.set(k, v);
        }
        // Idempotence is what makes retries safe; it is not optional.
        config.set("enable.idempotence", "true").set("acks", "all");
        config
    }

    fn base(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap_servers)
            // Idle connections closed by the broker are normal; do not log them as errors.
            .set("log.connection.close", "false");
        config
    }
}

impl Publisher {
    /// A publisher over a new Kafka producer (see [`KafkaSender`]).
    pub fn kafka(config: &KafkaConfig) -> Result<Publisher> {
        Ok(Publisher::new(KafkaSender::new(config)?))
    }
}

/// Routes librdkafka's own logs into `tracing` (target `librdkafka`). Its connection errors
/// repeat while a broker is down, so they are logged at `debug`: the toolkit's own lines say
/// what is going on.
#[derive(Debug, Clone, Default)]
pub(crate) struct LogContext;

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        log_librdkafka(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error(&error, reason);
    }
}

impl ConsumerContext for LogContext {}

pub(crate) fn log_librdkafka(level: RDKafkaLogLevel, facility: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
            tracing::error!(target: "librdkafka", facility, "{message}");
        }
        RDKafkaLogLevel::Error | RDKafkaLogLevel::Warning => {
            tracing::debug!(target: "librdkafka", facility, "{message}");
        }
        _ => tracing::trace!(target: "librdkafka", facility, "{message}"),
    }
}

pub(crate) fn log_client_error(error: &KafkaError, reason: &str) {
    tracing::debug!(target: "librdkafka", %error, "{reason}");
}

/// Waits until the broker answers a metadata request, retrying with `config.connect_backoff`
/// and logging each attempt. Returns early with [`Error::Stopped`] if `stop` is cancelled.
///
/// Used at start-up by routers and requesters; call it directly to hold a service's start
/// until Kafka is there.
pub async fn wait_for_broker(config: &KafkaConfig, stop: &CancellationToken) -> Result<()> {
    let client: BaseConsumer<LogContext> = config
        .consumer_config("ferry-probe")
        .create_with_context(LogContext)?;
    wait_until_reachable(Arc::new(client), config, None, stop).await
}

/// The start-up loop behind [`wait_for_broker`], on an existing client; reports into `check`.
pub(crate) async fn wait_until_reachable<C: ConsumerContext + 'static>(
    client: Arc<BaseConsumer<C>>,
    config: &KafkaConfig,
    check: Option<&Check>,
    stop: &CancellationToken,
) -> Result<()> {
    let backoff = &config.connect_backoff;
    let timeout = backoff.attempt_timeout.unwrap_or(Duration::from_secs(5));
    let mut attempt = 1;
    loop {
        tracing::info!(attempt, brokers = %config.bootstrap_servers, "connecting to Kafka");
        match probe(client.clone(), timeout).await {
            Ok(()) => {
                tracing::info!(attempt, brokers = %config.bootstrap_servers, "Kafka is reachable");
                return Ok(());
            }
            Err(e) if !backoff.retries_after(attempt) => {
                tracing::error!(attempt, brokers = %config.bootstrap_servers, error = %e, "Kafka is not reachable; giving up");
                return Err(e);
            }
            Err(e) => {
                let delay = backoff.delay(attempt, &mut rand::rng());
                tracing::warn!(
                    attempt,
                    brokers = %config.bootstrap_servers,
                    error = %e,
                    retry_in = ?delay,
                    "Kafka is not reachable yet"
                );
                if let Some(check) = check {
                    check.not_ready(format!(
                        "broker {} not reachable (attempt {attempt}): {e}",
                        config.bootstrap_servers
                    ));
                }
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stop.cancelled() => return Err(Error::Stopped),
                }
                attempt += 1;
            }
        }
    }
}

/// One metadata round trip, on the blocking pool (librdkafka's call blocks).
pub(crate) async fn probe<C: ConsumerContext + 'static>(
    client: Arc<BaseConsumer<C>>,
    timeout: Duration,
) -> Result<()> {
    tokio::task::spawn_blocking(move || probe_blocking(&client, timeout))
        .await
        .map_err(|e| Error::Task(e.to_string()))?
}

pub(crate) fn probe_blocking<C: ConsumerContext>(
    client: &BaseConsumer<C>,
    timeout: Duration,
) -> Result<()> {
    let metadata = client.fetch_metadata(None, timeout)?;
    if metadata.brokers().is_empty() {
        return Err(Error::Kafka(KafkaError::MetadataFetch(
            rdkafka::types::RDKafkaErrorCode::AllBrokersDown,
        )));
    }
    Ok(())
}

#[cfg(test)]
mod group_protocol_tests {
    use super::*;

    #[test]
    fn the_consumer_protocol_drops_the_classic_only_properties() {
        let classic = KafkaConfig::new("b:9092").set_consumer("session.timeout.ms", "6000");
        let c = classic.consumer_config("g");
        assert_eq!(c.get("group.protocol"), Some("classic"));
        assert_eq!(c.get("session.timeout.ms"), Some("6000"));

        let consumer = classic.clone().group_protocol(GroupProtocol::Consumer);
        let c = consumer.consumer_config("g");
        assert_eq!(c.get("group.protocol"), Some("consumer"));
        assert_eq!(c.get("session.timeout.ms"), None);

        // The property set directly wins over the field.
        let direct = classic.set_consumer("group.protocol", "consumer");
        let c = direct.consumer_config("g");
        assert_eq!(c.get("group.protocol"), Some("consumer"));
        assert_eq!(c.get("session.timeout.ms"), None);
    }
}
