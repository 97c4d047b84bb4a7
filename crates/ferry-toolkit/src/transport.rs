//! The transport-neutral shapes of a message on the wire, and the [`Sender`] trait that
//! transports implement.
//!
//! Everything above this module (publisher, router, retries, dead letters, request/reply)
//! works on these types only; the Kafka adapter (`crate::kafka`) converts from and to rdkafka's.
//! An AMQP transport or an outbox implements [`Sender`] and feeds [`IncomingMessage`]s to the
//! same router.

use std::fmt;

use async_trait::async_trait;

use crate::envelope::Headers;
use crate::error::Error;

/// A message read from a topic, as the transport delivered it.
#[derive(Clone)]
pub struct IncomingMessage {
    /// The topic (or queue) it was read from.
    pub topic: String,
    /// The partition; 0 for transports without partitions.
    pub partition: i32,
    /// The offset in the partition (a delivery tag for transports without offsets).
    pub offset: i64,
    /// The record key.
    pub key: Option<Vec<u8>>,
    /// All headers, the envelope's included.
    pub headers: Headers,
    /// The payload (JSON for Ferry messages).
    pub payload: Vec<u8>,
}

impl fmt::Debug for IncomingMessage {
    /// Shows where the message came from and its headers, never its payload.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IncomingMessage")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .field("key", &self.key.as_deref().map(String::from_utf8_lossy))
            .field("headers", &self.headers)
            .field("payload", &format_args!("<{} bytes>", self.payload.len()))
            .finish()
    }
}

/// A message ready to be sent to a topic.
#[derive(Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// The destination topic.
    pub topic: String,
    /// The partition key (the entity id for Ferry messages).
    pub key: Option<Vec<u8>>,
    /// Headers, the envelope's included.
    pub headers: Headers,
    /// The payload.
    pub payload: Vec<u8>,
}

impl fmt::Debug for OutgoingMessage {
    /// Shows the destination and headers, never the payload.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutgoingMessage")
            .field("topic", &self.topic)
            .field("key", &self.key.as_deref().map(String::from_utf8_lossy))
            .field("headers", &self.headers)
            .field("payload", &format_args!("<{} bytes>", self.payload.len()))
            .finish()
    }
}

/// Where a sent message landed, as far as the transport can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Receipt {
    /// The partition it was written to (Kafka).
    pub partition: Option<i32>,
    /// Its offset in that partition (Kafka).
    pub offset: Option<i64>,
}

/// A send that failed, with the message handed back so the caller can retry it or park it.
pub struct SendError {
    /// The message that was not sent.
    pub message: OutgoingMessage,
    /// Why.
    pub error: Error,
}

impl fmt::Debug for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendError")
            .field("topic", &self.message.topic)
            .field("error", &self.error)
            .finish()
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot send to {}: {}", self.message.topic, self.error)
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// Sends raw messages. A transport implements it; [`crate::Publisher`] adds the envelope and
/// JSON on top.
///
/// `send` returns only once the transport has the message durably (for Kafka: acknowledged
/// by the broker with acks=all), and on failure returns the message untouched.
#[async_trait]
pub trait Sender: Send + Sync + fmt::Debug + 'static {
    /// Sends one message.
    async fn send(&self, message: OutgoingMessage) -> Result<Receipt, SendError>;
}

/// What a transport adapter guarantees (`crate::kafka::FEATURES`, `crate::amqp::FEATURES`),
/// for choosing one and for the conformance suite that checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportFeatures {
    /// A key's messages are handled in the order they were published.
    pub ordered_per_key: bool,
    /// ... but only while a single consumer reads the queue holding the key (AMQP); Kafka
    /// assigns each partition to one group member, so it needs no such care.
    pub ordered_only_with_one_consumer: bool,
    /// Acknowledged messages survive a broker restart.
    pub persistent: bool,
    /// Each consumer group receives every message of a topic (Kafka); otherwise routers that
    /// subscribe to one topic share its messages (AMQP competing consumers).
    pub each_group_gets_every_message: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_payload() {
        let headers: Headers = [("ce_type", "t")].into_iter().collect();
        let incoming = IncomingMessage {
            topic: "t".into(),
            partition: 1,
            offset: 2,
            key: Some(b"k".to_vec()),
            headers: headers.clone(),
            payload: b"card number 4111".to_vec(),
        };
        let outgoing = OutgoingMessage {
            topic: "t".into(),
            key: None,
            headers,
            payload: incoming.payload.clone(),
        };
        for debug in [format!("{incoming:?}"), format!("{outgoing:?}")] {
            assert!(!debug.contains("4111"), "{debug}");
            assert!(debug.contains("<16 bytes>"), "{debug}");
        }
    }
}
