//! Handlers, their errors, and the context a handler sees.
//!
//! A handler is called once per attempt with a freshly decoded message. Returning `Err`
//! means "not handled": the router retries it (see [`crate::RetryPolicy`]) and finally
//! dead-letters it. [`HandlerError::permanent`] skips the remaining retries for errors that
//! no retry can fix (a validation failure, a reference to something that will never exist).

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;

use async_trait::async_trait;
use uuid::Uuid;

use crate::envelope::{Envelope, Message};
use crate::error::Error;
use crate::publisher::{Delivery, PublishError, Publisher};
use crate::traceparent::TraceParent;

/// Handles messages of one type.
#[async_trait]
pub trait Handler<M: Message>: Send + Sync + 'static {
    /// Handles one message. `Ok` commits it; `Err` retries it.
    async fn handle(&self, message: M, ctx: &MessageContext) -> Result<(), HandlerError>;
}

/// Makes a [`Handler`] from an async closure that takes the message and an owned context.
///
/// ```
/// # use ferry_toolkit::{handler_fn, HandlerError, Message, MessageContext};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Ping { id: String }
/// # impl Message for Ping { const TYPE: &'static str = "ping"; fn key(&self) -> String { self.id.clone() } }
/// let handler = handler_fn(|ping: Ping, _ctx: MessageContext| async move {
///     println!("ping {}", ping.id);
///     Ok::<_, HandlerError>(())
/// });
/// ```
pub fn handler_fn<M, F, Fut>(f: F) -> FnHandler<M, F>
where
    M: Message,
    F: Fn(M, MessageContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    FnHandler {
        f,
        _message: PhantomData,
    }
}

/// A [`Handler`] made by [`handler_fn`].
pub struct FnHandler<M, F> {
    f: F,
    _message: PhantomData<fn(M)>,
}

impl<M, F> fmt::Debug for FnHandler<M, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnHandler")
            .field("message", &std::any::type_name::<M>())
            .finish()
    }
}

#[async_trait]
impl<M, F, Fut> Handler<M> for FnHandler<M, F>
where
    M: Message,
    F: Fn(M, MessageContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    async fn handle(&self, message: M, ctx: &MessageContext) -> Result<(), HandlerError> {
        (self.f)(message, ctx.clone()).await
    }
}

/// Why a handler did not handle a message. Any `std::error::Error` converts into it with `?`.
///
/// Like `anyhow::Error` it deliberately does not implement `std::error::Error` itself: that is
/// what makes the blanket `From` possible.
pub struct HandlerError {
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
    permanent: bool,
}

impl HandlerError {
    /// A retryable error with a message.
    pub fn new(message: impl fmt::Display) -> HandlerError {
        HandlerError {
            message: message.to_string(),
            source: None,
            permanent: false,
        }
    }

    /// An error that retrying cannot fix: the message is dead-lettered at once.
    pub fn permanent(message: impl fmt::Display) -> HandlerError {
        HandlerError {
            permanent: true,
            ..HandlerError::new(message)
        }
    }

    /// Marks this error as permanent.
    pub fn into_permanent(mut self) -> HandlerError {
        self.permanent = true;
        self
    }

    /// Whether retries are skipped.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    /// The underlying error, if the handler error wraps one.
    pub fn source(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.source.as_deref()
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for HandlerError {
    fn from(error: E) -> HandlerError {
        let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(error);
        // A handler error that travelled through the toolkit (an inbox transaction) comes back
        // as itself, so `?` keeps it permanent if it was.
        let boxed = match boxed.downcast::<Error>() {
            Ok(toolkit) => match *toolkit {
                Error::Handler(inner) => return inner,
                other => Box::new(other) as Box<dyn std::error::Error + Send + Sync>,
            },
            Err(other) => other,
        };
        HandlerError {
            message: boxed.to_string(),
            source: Some(boxed),
            permanent: false,
        }
    }
}

impl fmt::Display for HandlerError {
    /// The message followed by the source chain, as the `ferry-dlq-error` header shows it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        let mut next = self.source.as_deref().and_then(|e| e.source());
        while let Some(e) = next {
            write!(f, ": {e}")?;
            next = e.source();
        }
        Ok(())
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("message", &self.to_string())
            .field("permanent", &self.permanent)
            .finish()
    }
}

/// What a handler knows about the message it handles, and its way to publish follow-ups.
///
/// Messages published through the context carry the incoming correlation id, the incoming
/// message id as causation id, and this handling's `traceparent`, so a flow can be followed
/// across services.
#[derive(Debug, Clone)]
pub struct MessageContext {
    envelope: Envelope,
    topic: String,
    partition: i32,
    offset: i64,
    attempt: u32,
    trace: TraceParent,
    publisher: Publisher,
}

impl MessageContext {
    pub(crate) fn new(
        envelope: Envelope,
        topic: String,
        partition: i32,
        offset: i64,
        attempt: u32,
        trace: TraceParent,
        publisher: Publisher,
    ) -> MessageContext {
        MessageContext {
            envelope,
            topic,
            partition,
            offset,
            attempt,
            trace,
            publisher,
        }
    }

    /// The incoming message's envelope.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The incoming message's id.
    pub fn message_id(&self) -> Uuid {
        self.envelope.message_id
    }

    /// The flow's correlation id.
    pub fn correlation_id(&self) -> Uuid {
        self.envelope.correlation_id
    }

    /// The topic the message was read from.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Its partition.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// Its offset.
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// Which attempt this is, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The `traceparent` of this handling (a child of the incoming one).
    pub fn traceparent(&self) -> TraceParent {
        self.trace
    }

    /// An envelope for a message caused by the one being handled.
    pub fn follow_up_envelope<M: Message>(&self) -> Envelope {
        self.envelope.follow_up::<M>(self.trace)
    }

    /// Publishes a follow-up message to `topic`.
    pub async fn publish<M: Message>(
        &self,
        topic: &str,
        message: M,
    ) -> Result<Delivery, PublishError<M>> {
        self.publisher
            .publish_with(topic, message, self.follow_up_envelope::<M>())
            .await
    }

    /// Replies to a request: publishes `message` to the request's `ce_replyto` topic with
    /// the request's correlation id.
    pub async fn reply<M: Message>(&self, message: M) -> Result<Delivery, PublishError<M>> {
        let Some(reply_to) = self.envelope.reply_to.clone() else {
            return Err(PublishError::new(message, Error::NoReplyTo));
        };
        self.publisher
            .publish_with(&reply_to, message, self.follow_up_envelope::<M>())
            .await
    }

    /// The publisher, for messages that should start a new flow.
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }
}
