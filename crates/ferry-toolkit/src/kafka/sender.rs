//! The Kafka producer behind [`crate::Publisher`].

use async_trait::async_trait;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use super::{KafkaConfig, LogContext};
use crate::error::Result;
use crate::transport::{OutgoingMessage, Receipt, SendError, Sender};

/// An idempotent (`enable.idempotence=true`, `acks=all`) librdkafka producer.
///
/// `send` resolves when the broker acknowledged the record, or when librdkafka gives up after
/// `message.timeout.ms` (30 s by default here), in which case the record comes back in the
/// [`SendError`]. librdkafka retries in between, and idempotence keeps those retries from
/// writing duplicates or reordering a key's records. Cheap to clone.
#[derive(Clone)]
pub struct KafkaSender {
    producer: FutureProducer<LogContext>,
}

impl std::fmt::Debug for KafkaSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSender").finish_non_exhaustive()
    }
}

impl KafkaSender {
    /// Creates the producer. It connects lazily: a broker that is down now is not an error.
    pub fn new(config: &KafkaConfig) -> Result<KafkaSender> {
        let producer = config.producer_config().create_with_context(LogContext)?;
        Ok(KafkaSender { producer })
    }
}

#[async_trait]
impl Sender for KafkaSender {
    async fn send(&self, message: OutgoingMessage) -> Result<Receipt, SendError> {
        let record = record(&message);
        // Timeout::Never only bounds waiting for room in the local queue; delivery itself is
        // bounded by message.timeout.ms.
        let result = self.producer.send(record, Timeout::Never).await;
        match result {
            Ok(delivery) => Ok(Receipt {
                partition: Some(delivery.partition),
                offset: Some(delivery.offset),
            }),
            Err((error, _)) => Err(SendError {
                message,
                error: error.into(),
            }),
        }
    }
}

/// The librdkafka record for `message`: topic, key, payload and headers (borrowed, not copied).
pub(crate) fn record(message: &OutgoingMessage) -> FutureRecord<'_, [u8], [u8]> {
    let mut headers = OwnedHeaders::new_with_capacity(message.headers.len());
    for (key, value) in message.headers.iter() {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    let record = FutureRecord::to(&message.topic)
        .payload(message.payload.as_slice())
        .headers(headers);
    match &message.key {
        Some(key) => record.key(key.as_slice()),
        None => record,
    }
}
