//! Processing one message: decode, dispatch, retry, dead-letter. Transport-neutral.
//!
//! A transport's partition worker calls [`Processor::process`] for each message in order and
//! awaits it; the [`Outcome`] says whether the message may be committed. Retries happen
//! inside `process`, so a message in backoff holds back only its own partition: the worker of
//! every other partition keeps going (the fix for watermill#271, where one retrying message
//! blocked the whole subscriber).
//!
//! Nothing here drops a message: a handler error, a timeout, a panic, or an undecodable record
//! each end in a retry or a dead letter, and a dead letter that cannot be sent is retried until
//! it is (or the router stops, leaving the message uncommitted for redelivery).

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, field};

use crate::dlq::{self, Reason};
use crate::envelope::Envelope;
use crate::handler::{HandlerError, MessageContext};
use crate::ops::metrics;
use crate::publisher::Publisher;
use crate::retry::RetryPolicy;
use crate::router::{ErasedHandler, Router};
use crate::transport::IncomingMessage;

/// What became of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The handler succeeded: commit.
    Handled,
    /// No handler for its type: counted, commit.
    Skipped,
    /// Parked in the dead-letter topic: commit.
    DeadLettered,
    /// The router is stopping and the message was not finished: do not commit, so it is
    /// delivered again.
    Abandoned,
}

impl Outcome {
    /// Whether the message's offset may be committed.
    pub(crate) fn commits(self) -> bool {
        self != Outcome::Abandoned
    }
}

/// The shared, immutable part of a running router.
pub(crate) struct Processor {
    group: String,
    handlers: HashMap<&'static str, Arc<dyn ErasedHandler>>,
    retry: RetryPolicy,
    publisher: Publisher,
}

impl Processor {
    pub(crate) fn new(router: &Router, publisher: Publisher) -> Processor {
        Processor {
            group: router.group.clone(),
            handlers: router.handlers.clone(),
            retry: router.retry.clone(),
            publisher,
        }
    }

    /// Processes one message to its end. `stop` cuts retry backoff short; a handler attempt
    /// already running is always finished.
    pub(crate) async fn process(
        &self,
        message: &IncomingMessage,
        stop: &CancellationToken,
    ) -> Outcome {
        let span = tracing::info_span!(
            "message",
            topic = %message.topic,
            partition = message.partition,
            offset = message.offset,
            message_type = field::Empty,
            message_id = field::Empty,
            correlation_id = field::Empty,
            trace_id = field::Empty,
            span_id = field::Empty,
            parent_span_id = field::Empty,
        );
        self.process_in_span(message, stop, &span)
            .instrument(span.clone())
            .await
    }

    async fn process_in_span(
        &self,
        message: &IncomingMessage,
        stop: &CancellationToken,
        span: &tracing::Span,
    ) -> Outcome {
        let envelope = match Envelope::read_from(&message.headers) {
            Ok(envelope) => envelope,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable envelope, dead-lettering");
                return self
                    .dead_letter(message, "", Reason::Undecodable, &e.to_string(), 0, stop)
                    .await;
            }
        };
        // This handling is a child span of the producer's, and what follow-ups carry.
        let trace = envelope.traceparent.child();
        span.record("message_type", envelope.type_name.as_str());
        span.record("message_id", field::display(envelope.message_id));
        span.record("correlation_id", field::display(envelope.correlation_id));
        span.record("trace_id", trace.trace_id());
        span.record("span_id", trace.span_id());
        span.record("parent_span_id", envelope.traceparent.span_id());

        let Some(handler) = self.handlers.get(envelope.type_name.as_str()) else {
            tracing::debug!("no handler for this type, skipped");
            metrics::unknown_type(&message.topic, &envelope.type_name);
            return Outcome::Skipped;
        };

        let type_name = envelope.type_name.clone();
        let mut attempt = 1;
        loop {
            let ctx = MessageContext::new(
                envelope.clone(),
                message.topic.clone(),
                message.partition,
                message.offset,
                attempt,
                trace,
                self.publisher.clone(),
            );
            let started = Instant::now();
            let error = match self.attempt(handler.as_ref(), message, &ctx).await {
                Attempt::Ok => {
                    metrics::handled(&message.topic, &type_name, started.elapsed());
                    tracing::debug!(attempt, "handled");
                    return Outcome::Handled;
                }
                Attempt::Undecodable(e) => {
                    tracing::warn!(error = %e, "undecodable payload, dead-lettering");
                    return self
                        .dead_letter(message, &type_name, Reason::Undecodable, &e, 0, stop)
                        .await;
                }
                Attempt::Failed(e) => e,
            };
            metrics::failed(&message.topic, &type_name, started.elapsed());
            if error.is_permanent() || !self.retry.retries_after(attempt) {
                tracing::warn!(attempt, error = %error, permanent = error.is_permanent(), "handler failed, dead-lettering");
                return self
                    .dead_letter(
                        message,
                        &type_name,
                        Reason::HandlerFailed,
                        &error.to_string(),
                        attempt,
                        stop,
                    )
                    .await;
            }
            let delay = self.retry.delay(attempt, &mut rand::rng());
            tracing::info!(attempt, error = %error, retry_in = ?delay, "handler failed, will retry");
            metrics::retried(&message.topic, &type_name);
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stop.cancelled() => {
                    tracing::info!(attempt, "stopping during retry backoff; the message stays uncommitted");
                    return Outcome::Abandoned;
                }
            }
            attempt += 1;
        }
    }

    /// One handler attempt with the policy's timeout; a timeout or a panic is a failed attempt.
    async fn attempt(
        &self,
        handler: &dyn ErasedHandler,
        message: &IncomingMessage,
        ctx: &MessageContext,
    ) -> Attempt {
        let future = match handler.call(&message.payload, ctx) {
            Ok(future) => future,
            Err(e) => return Attempt::Undecodable(e.to_string()),
        };
        // A panicking handler must not take the partition worker down with it.
        let guarded = AssertUnwindSafe(future).catch_unwind();
        let result = match self.retry.attempt_timeout {
            Some(limit) => match tokio::time::timeout(limit, guarded).await {
                Ok(result) => result,
                Err(_) => {
                    return Attempt::Failed(HandlerError::new(format!(
                        "attempt timed out after {limit:?}"
                    )));
                }
            },
            None => guarded.await,
        };
        match result {
            Ok(Ok(())) => Attempt::Ok,
            Ok(Err(e)) => Attempt::Failed(e),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic".to_owned());
                Attempt::Failed(HandlerError::new(format!("handler panicked: {what}")))
            }
        }
    }

    /// Sends the dead letter, retrying the send until it succeeds or the router stops.
    async fn dead_letter(
        &self,
        message: &IncomingMessage,
        type_name: &str,
        reason: Reason,
        error: &str,
        attempts: u32,
        stop: &CancellationToken,
    ) -> Outcome {
        let mut dead_letter = dlq::dead_letter(message, reason, error, attempts, &self.group);
        let mut send_attempt = 1;
        loop {
            match self.publisher.send_raw(dead_letter).await {
                Ok(_) => {
                    metrics::dead_lettered(&message.topic, type_name, reason.as_str());
                    tracing::warn!(reason = reason.as_str(), attempts, dlq = %dlq::topic_for(&message.topic), "dead-lettered");
                    return Outcome::DeadLettered;
                }
                Err(e) => {
                    let delay = self.retry.delay(send_attempt, &mut rand::rng());
                    tracing::error!(error = %e.error, retry_in = ?delay, "cannot send dead letter; retrying");
                    dead_letter = e.message;
                    send_attempt += 1;
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = stop.cancelled() => return Outcome::Abandoned,
                    }
                }
            }
        }
    }
}

enum Attempt {
    Ok,
    Failed(HandlerError),
    Undecodable(String),
}
