//! The AMQP 0-9-1 adapter (RabbitMQ), on `lapin`. The only module that touches AMQP.
//!
//! The same [`crate::Router`], handlers, [`crate::Publisher`], retries and dead letters as the
//! Kafka adapter, mapped onto AMQP like this:
//!
//! | Ferry | AMQP |
//! | --- | --- |
//! | topic | a durable queue of that name, published to through the default exchange |
//! | dead-letter topic `<topic>.dlq` | the durable queue `<topic>.dlq` |
//! | message key | the `ferry-key` header (AMQP has no keys) |
//! | envelope headers | message headers (long strings); also `message_id`, `type`, `correlation_id`, `timestamp` properties |
//! | published durably | persistent delivery (mode 2) and a publisher confirm, with `mandatory` so a message no queue takes is an error, not a silent drop |
//! | commit after success | a manual `basic.ack` after the message was handled, skipped or dead-lettered |
//! | partition | the queue: one worker per queue handles its messages one at a time, in order |
//! | dead letters | sent and confirmed one message at a time, before its ack (batching is Kafka's, see `crate::process`) |
//! | re-drive address (`ferry-redrive-group`) | not applied: a queue's routers compete for its messages, so a router that skipped a message addressed to another group would drop it |
//!
//! What differs from Kafka (see [`FEATURES`]): a queue is shared by every router that
//! subscribes to it (competing consumers), where Kafka gives each consumer group its own copy;
//! and order per key holds while one consumer reads a queue (several consumers split it).
//!
//! - [`AmqpSender`]: the [`crate::Sender`] behind [`crate::Publisher::amqp`].
//! - [`start_router`]: runs a router; reconnects after a broker restart (`consumer.rs`).
//!
//! Threads: none of its own; lapin drives its connections on the tokio runtime.

mod consumer;
mod sender;

use std::time::Duration;

use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties};
use tokio_util::sync::CancellationToken;

pub use consumer::{RouterHandle, start_router};
pub use sender::AmqpSender;

use crate::envelope::Headers;
use crate::error::{Error, Result};
use crate::ops::Check;
use crate::publisher::Publisher;
use crate::retry::RetryPolicy;
use crate::transport::TransportFeatures;

/// The header that carries the message key.
pub const KEY_HEADER: &str = "ferry-key";

/// What the AMQP adapter guarantees.
pub const FEATURES: TransportFeatures = TransportFeatures {
    ordered_per_key: true,
    ordered_only_with_one_consumer: true,
    persistent: true,
    each_group_gets_every_message: false,
};

/// How to reach RabbitMQ.
#[derive(Debug, Clone)]
pub struct AmqpConfig {
    /// `amqp://user:password@host:port/vhost` (`%2f` is the default vhost).
    pub url: String,
    /// Unacknowledged messages the broker may push to each queue's worker ahead of time.
    pub prefetch: u16,
    /// Backoff between connection attempts (start-up and after a connection loss);
    /// `max_attempts` bounds them, `attempt_timeout` bounds each.
    pub connect_backoff: RetryPolicy,
    /// How long a publish waits for the broker's confirm before it fails.
    pub confirm_timeout: Duration,
}

impl AmqpConfig {
    /// Defaults for `url`: prefetch 32, reconnecting forever from 200 ms doubling to 10 s,
    /// 30 s confirm timeout.
    pub fn new(url: impl Into<String>) -> AmqpConfig {
        AmqpConfig {
            url: url.into(),
            prefetch: 32,
            connect_backoff: RetryPolicy {
                initial: Duration::from_millis(200),
                multiplier: 2.0,
                max_delay: Duration::from_secs(10),
                max_attempts: u32::MAX,
                jitter: 0.2,
                attempt_timeout: Some(Duration::from_secs(5)),
            },
            confirm_timeout: Duration::from_secs(30),
        }
    }

    /// The URL without its password, for logs.
    pub(crate) fn redacted(&self) -> String {
        match (self.url.find("://"), self.url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                let user = self.url[scheme + 3..at].split(':').next().unwrap_or("");
                format!("{}{user}:***{}", &self.url[..scheme + 3], &self.url[at..])
            }
            _ => self.url.clone(),
        }
    }
}

impl Publisher {
    /// A publisher over RabbitMQ (see [`AmqpSender`]). Connects on first use.
    pub fn amqp(config: &AmqpConfig) -> Publisher {
        Publisher::new(AmqpSender::new(config))
    }
}

/// One connection attempt, bounded by the backoff's attempt timeout.
pub(crate) async fn connect_once(config: &AmqpConfig, name: &str) -> Result<Connection> {
    let timeout = config
        .connect_backoff
        .attempt_timeout
        .unwrap_or(Duration::from_secs(5));
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    match tokio::time::timeout(timeout, Connection::connect(&config.url, properties)).await {
        Ok(connection) => Ok(connection?),
        Err(_) => Err(Error::Unavailable(format!(
            "no AMQP connection within {timeout:?}"
        ))),
    }
}

/// Connects, retrying with `config.connect_backoff` and a log line per attempt; reports into
/// `check`. [`Error::Stopped`] if `stop` is cancelled first.
pub(crate) async fn connect(
    config: &AmqpConfig,
    name: &str,
    check: Option<&Check>,
    stop: &CancellationToken,
) -> Result<Connection> {
    let backoff = &config.connect_backoff;
    let broker = config.redacted();
    let mut attempt = 1;
    loop {
        tracing::info!(attempt, %broker, "connecting to RabbitMQ");
        let connected = tokio::select! {
            connected = connect_once(config, name) => connected,
            () = stop.cancelled() => return Err(Error::Stopped),
        };
        match connected {
            Ok(connection) => {
                tracing::info!(attempt, %broker, "RabbitMQ is reachable");
                return Ok(connection);
            }
            Err(e) if !backoff.retries_after(attempt) => {
                tracing::error!(attempt, %broker, error = %e, "RabbitMQ is not reachable; giving up");
                return Err(e);
            }
            Err(e) => {
                let delay = backoff.delay(attempt, &mut rand::rng());
                tracing::warn!(attempt, %broker, error = %e, retry_in = ?delay, "RabbitMQ is not reachable yet");
                if let Some(check) = check {
                    check.not_ready(format!(
                        "RabbitMQ {broker} not reachable (attempt {attempt}): {e}"
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

/// Converts toolkit headers (and the key) to an AMQP header table.
pub(crate) fn to_table(headers: &Headers, key: Option<&[u8]>) -> FieldTable {
    let mut table = FieldTable::default();
    for (name, value) in headers.iter() {
        table.insert(name.into(), AMQPValue::LongString(value.to_vec().into()));
    }
    if let Some(key) = key {
        table.insert(
            KEY_HEADER.into(),
            AMQPValue::LongString(key.to_vec().into()),
        );
    }
    table
}

/// Converts an AMQP header table back to toolkit headers and the key. Values of other types
/// (numbers, booleans) become their text; nested tables and arrays (RabbitMQ's own `x-death`)
/// are left out.
pub(crate) fn from_table(table: Option<&FieldTable>) -> (Headers, Option<Vec<u8>>) {
    let mut headers = Headers::new();
    let mut key = None;
    let Some(table) = table else {
        return (headers, key);
    };
    for (name, value) in table {
        let value: Vec<u8> = match value {
            AMQPValue::LongString(s) => s.as_bytes().to_vec(),
            AMQPValue::ShortString(s) => s.as_str().as_bytes().to_vec(),
            AMQPValue::ByteArray(b) => b.as_slice().to_vec(),
            AMQPValue::Boolean(b) => b.to_string().into_bytes(),
            AMQPValue::ShortShortInt(n) => n.to_string().into_bytes(),
            AMQPValue::ShortShortUInt(n) => n.to_string().into_bytes(),
            AMQPValue::ShortInt(n) => n.to_string().into_bytes(),
            AMQPValue::ShortUInt(n) => n.to_string().into_bytes(),
            AMQPValue::LongInt(n) => n.to_string().into_bytes(),
            AMQPValue::LongUInt(n) => n.to_string().into_bytes(),
            AMQPValue::LongLongInt(n) => n.to_string().into_bytes(),
            AMQPValue::Timestamp(n) => n.to_string().into_bytes(),
            _ => continue,
        };
        if name.as_str() == KEY_HEADER {
            key = Some(value);
        } else {
            headers.append(name.as_str(), value);
        }
    }
    (headers, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_key_round_trip_through_a_table() {
        let headers: Headers = [("ce_type", "t"), ("traceparent", "00-x")]
            .into_iter()
            .collect();
        let table = to_table(&headers, Some(b"order-1"));
        let (back, key) = from_table(Some(&table));
        assert_eq!(key.as_deref(), Some(b"order-1".as_slice()));
        assert_eq!(back.get_str("ce_type"), Some("t"));
        assert_eq!(back.get_str("traceparent"), Some("00-x"));
        assert_eq!(back.len(), 2);
        let mut other = FieldTable::default();
        other.insert("n".into(), AMQPValue::LongLongInt(7));
        assert_eq!(from_table(Some(&other)).0.get_str("n"), Some("7"));
    }

    #[test]
    fn redacts_the_password() {
        let config = AmqpConfig::new("amqp://guest:secret@127.0.0.1:5672/%2f");
        assert_eq!(config.redacted(), "amqp://guest:***@127.0.0.1:5672/%2f");
    }
}
