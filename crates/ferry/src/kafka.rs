//! What the client tools and benchmarks share: the `--brokers` argument, client configuration, a client context
//! that keeps librdkafka's chatter out of the user's way, and a reachability check that turns "nothing listens
//! there" into one clear error instead of a minute of retries.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use rdkafka::ClientContext;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::Client;
use rdkafka::config::{ClientConfig, FromClientConfigAndContext, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::metadata::Metadata;

/// How long a tool waits for the broker to answer a metadata request before giving up.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Args)]
pub struct BrokersArg {
    /// Kafka bootstrap servers: the built-in broker or any Kafka cluster.
    #[arg(long, env = "FERRY_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
}

/// `acks` as the Kafka producer knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Acks {
    /// Answered after the broker made the data durable (fsync on ferry's broker).
    #[value(name = "all", alias = "-1")]
    All,
    /// Answered once the leader appended the data (maybe before fsync).
    #[value(name = "1")]
    Leader,
    /// Not answered at all.
    #[value(name = "0")]
    None,
}

impl Acks {
    pub fn as_config(self) -> &'static str {
        match self {
            Acks::All => "all",
            Acks::Leader => "1",
            Acks::None => "0",
        }
    }
}

/// A client configuration with the settings every ferry tool wants.
pub fn client_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("client.id", "ferry-cli")
        .set_log_level(RDKafkaLogLevel::Info);
    config
}

/// Forwards librdkafka's log lines and background errors to tracing at debug level: connection attempts and
/// retries are noise for a command-line tool, which reports the failure of the operation itself instead.
/// `RUST_LOG=librdkafka=debug` shows them.
#[derive(Debug, Default, Clone, Copy)]
pub struct QuietContext;

impl ClientContext for QuietContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        tracing::debug!(target: "librdkafka", ?level, "{fac} {message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(target: "librdkafka", "{error}: {reason}");
    }
}

impl ConsumerContext for QuietContext {}

/// A consumer that reads the partitions it assigns itself and commits nothing. librdkafka's `assign` needs a
/// group id all the same ("Local: Unknown group" otherwise); the group is never joined, so any name will do.
pub fn plain_consumer(config: &ClientConfig) -> anyhow::Result<BaseConsumer<QuietContext>> {
    let mut config = config.clone();
    if config.get("group.id").is_none() {
        config.set("group.id", "ferry-cli");
    }
    config.set("enable.auto.commit", "false");
    BaseConsumer::from_config_and_context(&config, QuietContext)
        .context("cannot create a Kafka consumer")
}

/// Fetches metadata (for one topic, or all), failing with a clear message when the brokers cannot be reached.
pub fn fetch_metadata<C: ClientContext>(
    client: &Client<C>,
    brokers: &str,
    topic: Option<&str>,
) -> anyhow::Result<Metadata> {
    client
        .fetch_metadata(topic, METADATA_TIMEOUT)
        .map_err(|e| match e.rdkafka_error_code() {
            Some(
                RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::OperationTimedOut,
            ) => anyhow::anyhow!(unreachable(brokers)),
            _ => anyhow::Error::new(e).context(format!("cannot get metadata from {brokers}")),
        })
}

/// What a tool says when no broker answers at `brokers`.
pub fn unreachable(brokers: &str) -> String {
    format!(
        "cannot reach a Kafka broker at {brokers}. Start one with `ferry broker` (or everything \
         with `ferry up`), or point --brokers (FERRY_BROKERS) at a running cluster"
    )
}

/// The partition ids of `topic`, in order, or an error saying why there are none.
pub fn partitions_of<C: ClientContext>(
    client: &Client<C>,
    brokers: &str,
    topic: &str,
) -> anyhow::Result<Vec<i32>> {
    let metadata = fetch_metadata(client, brokers, Some(topic))?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        bail!("topic {topic} does not exist");
    };
    match t.error().map(RDKafkaErrorCode::from) {
        None => {}
        Some(RDKafkaErrorCode::UnknownTopicOrPartition) => bail!("topic {topic} does not exist"),
        Some(code) => bail!("topic {topic}: {code}"),
    }
    let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    ids.sort_unstable();
    if ids.is_empty() {
        bail!("topic {topic} has no partitions");
    }
    Ok(ids)
}

/// How long the broker may take to create a topic or describe its configuration.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

pub fn admin_client(brokers: &str) -> anyhow::Result<AdminClient<QuietContext>> {
    AdminClient::from_config_and_context(&client_config(brokers), QuietContext)
        .context("cannot create a Kafka admin client")
}

pub fn admin_options() -> AdminOptions {
    AdminOptions::new()
        .request_timeout(Some(ADMIN_TIMEOUT))
        .operation_timeout(Some(ADMIN_TIMEOUT))
}

/// Creates a topic (replication factor 1: the built-in broker is a single node) with configuration entries.
pub async fn create_topic(
    admin: &AdminClient<QuietContext>,
    name: &str,
    partitions: i32,
    configs: &[(String, String)],
) -> anyhow::Result<()> {
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        topic = topic.set(k, v);
    }
    let results = admin
        .create_topics([&topic], &admin_options())
        .await
        .with_context(|| format!("cannot create topic {name}"))?;
    for result in results {
        if let Err((name, code)) = result {
            bail!("cannot create topic {name}: {code}");
        }
    }
    Ok(())
}

/// `1234567` as `1,234,567`, for figures a person reads.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn thousands_groups_digits_by_three() {
        for (n, text) in [
            (0, "0"),
            (999, "999"),
            (1000, "1,000"),
            (1_234_567, "1,234,567"),
            (100_000, "100,000"),
        ] {
            assert_eq!(thousands(n), text);
        }
    }
}
