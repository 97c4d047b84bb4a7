//! The typed publisher: envelope + JSON over any [`Sender`].
//!
//! [`Publisher::publish`] returns when the transport acknowledged the message (Kafka: the
//! broker answered an idempotent acks=all produce). If it fails, the message comes back inside
//! the [`PublishError`], like tokio's `SendError`, so no caller path can drop it silently.

use std::fmt;
use std::sync::Arc;

use uuid::Uuid;

use crate::envelope::{self, Envelope, Headers, Message, header};
use crate::error::Error;
use crate::transport::{OutgoingMessage, Receipt, SendError, Sender};

/// Publishes typed messages. Cheap to clone; clones share the transport.
#[derive(Clone, Debug)]
pub struct Publisher {
    sender: Arc<dyn Sender>,
    /// The CloudEvents `source` stamped on what this publisher sends without one, derived from
    /// `service` (kept built so sending does not format it each time).
    source: Arc<str>,
    /// The service whose metrics this publisher (and the relays and routers using it) record,
    /// as their `service` label; empty outside a service.
    service: &'static str,
}

/// What a successful publish tells the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The published message's id.
    pub message_id: Uuid,
    /// Its correlation id.
    pub correlation_id: Uuid,
    /// Where the transport put it.
    pub receipt: Receipt,
}

impl Publisher {
    /// A publisher over a transport's sender (see `crate::kafka::KafkaSender`).
    pub fn new(sender: impl Sender) -> Publisher {
        Publisher::from_arc(Arc::new(sender))
    }

    /// This publisher as service `service`'s: it records its metrics (and those of the relays
    /// and routers that use it) with `service` as their `service` label, so each service's
    /// `/metrics` shows its own, and every CloudEvent it sends without a `ce_source` gets
    /// `/ferry/<service>` (the outbox relay sends through it, so staged events get it too).
    pub fn for_service(mut self, service: &'static str) -> Publisher {
        self.service = service;
        self.source = format!("{}/{service}", envelope::DEFAULT_SOURCE).into();
        self
    }

    /// The `service` label of the metrics recorded through this publisher.
    pub fn service(&self) -> &'static str {
        self.service
    }

    /// A publisher over a shared sender.
    pub fn from_arc(sender: Arc<dyn Sender>) -> Publisher {
        Publisher {
            sender,
            source: envelope::DEFAULT_SOURCE.into(),
            service: "",
        }
    }

    /// A publisher for the same service over another sender.
    pub(crate) fn with_sender(&self, sender: impl Sender) -> Publisher {
        Publisher {
            sender: Arc::new(sender),
            source: self.source.clone(),
            service: self.service,
        }
    }

    /// Stamps the source on a CloudEvent that has none; leaves anything else as it is (a
    /// dead letter keeps its original's source, a raw record stays raw).
    fn stamp(&self, message: &mut OutgoingMessage) {
        if message.headers.get(header::MESSAGE_ID).is_some()
            && message.headers.get(header::SOURCE).is_none()
        {
            message.headers.insert(header::SOURCE, &*self.source);
        }
    }

    /// Publishes `message` to `topic` as the first message of a new flow, keyed by
    /// [`Message::key`].
    pub async fn publish<M: Message>(
        &self,
        topic: &str,
        message: M,
    ) -> Result<Delivery, PublishError<M>> {
        self.publish_with(topic, message, Envelope::new::<M>())
            .await
    }

    /// Publishes `message` with a caller-built envelope (for a follow-up, a request, or to keep
    /// an id chosen in advance). The envelope's type name and version are set from `M`.
    pub async fn publish_with<M: Message>(
        &self,
        topic: &str,
        message: M,
        mut envelope: Envelope,
    ) -> Result<Delivery, PublishError<M>> {
        let payload = match envelope::encode(&message) {
            Ok(payload) => payload,
            Err(error) => return Err(PublishError { message, error }),
        };
        envelope.type_name = M::TYPE.to_owned();
        envelope.version = M::VERSION;
        let mut headers = Headers::new();
        envelope.write_to(&mut headers);
        let mut outgoing = OutgoingMessage {
            topic: topic.to_owned(),
            key: Some(message.key().into_bytes()),
            headers,
            payload,
        };
        self.stamp(&mut outgoing);
        match self.sender.send(outgoing).await {
            Ok(receipt) => {
                crate::ops::metrics::published(self.service, topic, M::TYPE);
                Ok(Delivery {
                    message_id: envelope.message_id,
                    correlation_id: envelope.correlation_id,
                    receipt,
                })
            }
            Err(SendError { error, .. }) => Err(PublishError { message, error }),
        }
    }

    /// Sends a raw message as is (dead letters, re-drives, replies built by hand).
    pub async fn send_raw(&self, mut message: OutgoingMessage) -> Result<Receipt, SendError> {
        self.stamp(&mut message);
        self.sender.send(message).await
    }
}

/// A publish that failed. [`PublishError::into_inner`] gives the message back.
pub struct PublishError<M> {
    message: M,
    error: Error,
}

impl<M> PublishError<M> {
    pub(crate) fn new(message: M, error: Error) -> PublishError<M> {
        PublishError { message, error }
    }

    /// The message that was not published.
    pub fn into_inner(self) -> M {
        self.message
    }

    /// Why it was not published.
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// Splits into the message and the error.
    pub fn into_parts(self) -> (M, Error) {
        (self.message, self.error)
    }
}

impl<M: Message> fmt::Debug for PublishError<M> {
    /// Names the message type, never dumps the message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishError")
            .field("type", &M::TYPE)
            .field("error", &self.error)
            .finish()
    }
}

impl<M: Message> fmt::Display for PublishError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot publish a {} message: {}", M::TYPE, self.error)
    }
}

impl<M: Message> std::error::Error for PublishError<M> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}
