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
//!
//! Dead letters go out in batches. [`Processor::process_batched`] only builds a message's dead
//! letter and queues it in a [`LetterBatch`]; the worker processes the messages it already has
//! in hand, then [`Processor::flush`]es the batch (every letter handed to the transport at once,
//! so librdkafka packs them into one produce request per partition, then every acknowledgement
//! awaited) and only then commits. Sending and awaiting one letter at a time cost a produce round
//! trip (an fsync on the broker) per letter: ~120 letters/s, so a flood of 20,000 bad records
//! buried a good one behind it for minutes. A batch is also flushed before a handler's retry
//! backoff, so letters never wait for another message's retries. [`Processor::process`] is the
//! one-message form (a batch of one, flushed at once) for transports that settle each message
//! on its own (AMQP).
//!
//! In exactly-once mode ([`Router::exactly_once`]) nothing is sent from here: each handler
//! attempt gets a [`MessageContext`] whose publisher only captures, a successful attempt's
//! captured messages are queued in the [`LetterBatch`] beside the dead letters, and the Kafka
//! worker produces them all in the batch's transaction (`crate::kafka::eos`). A failed attempt's
//! captures are dropped, so a retry never duplicates an output and needs no abort.
//!
//! A message re-driven from a dead-letter topic names the group that is to handle it
//! (`ferry-redrive-group`, see [`crate::dlq`]); where every group reads every message (Kafka), a
//! router of another group skips it, so a re-drive reaches only the group that failed it.

use std::collections::HashMap;
use std::mem;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use futures::FutureExt;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, field};

use crate::dlq::{self, Reason};
use crate::envelope::{self, Opened};
use crate::handler::{HandlerError, MessageContext};
use crate::ops::metrics;
use crate::plain::PlainTyping;
use crate::publisher::Publisher;
use crate::retry::RetryPolicy;
use crate::router::{ErasedHandler, Router};
use crate::transport::{IncomingMessage, OutgoingMessage, Receipt, SendError, Sender};

/// What became of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The handler succeeded: commit.
    Handled,
    /// No handler for its type: counted, commit.
    Skipped,
    /// Parked in the dead-letter topic (by [`Processor::process_batched`]: its letter queued in
    /// the batch, to be flushed before the commit): commit.
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

/// Dead letters built but not sent yet, each with the offset of the message it parks; in
/// exactly-once mode also the handlers' captured outputs, in order.
#[derive(Debug, Default)]
pub(crate) struct LetterBatch {
    letters: Vec<Letter>,
    outputs: Vec<OutgoingMessage>,
}

/// Everything a batch writes in its transaction (exactly-once mode), from
/// [`LetterBatch::take_writes`].
#[derive(Debug, Default)]
pub(crate) struct Writes {
    /// Handler outputs in the order they were published, then dead letters in offset order.
    pub(crate) messages: Vec<OutgoingMessage>,
    /// (topic, type, reason) of each dead letter, counted once the transaction commits.
    letters: Vec<(String, String, Reason)>,
}

impl Writes {
    /// Counts the dead letters: call once the transaction holding them committed.
    pub(crate) fn committed(&self, by: metrics::By<'_>) {
        let group = by.group;
        for (topic, type_name, reason) in &self.letters {
            metrics::dead_lettered(by, topic, type_name, reason.as_str());
        }
        if !self.letters.is_empty() {
            tracing::info!(
                letters = self.letters.len(),
                group,
                "dead letters committed"
            );
        }
    }
}

#[derive(Debug)]
struct Letter {
    /// The offset of the message it parks.
    offset: i64,
    topic: String,
    type_name: String,
    reason: Reason,
    letter: OutgoingMessage,
}

impl LetterBatch {
    /// Whether no letter waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.letters.is_empty()
    }

    /// Letters waiting.
    pub(crate) fn len(&self) -> usize {
        self.letters.len()
    }

    /// The lowest offset a waiting letter parks.
    pub(crate) fn first_offset(&self) -> Option<i64> {
        self.letters.iter().map(|l| l.offset).min()
    }

    fn push(&mut self, letter: Letter) {
        self.letters.push(letter);
    }

    fn take(&mut self) -> Vec<Letter> {
        mem::take(&mut self.letters)
    }

    /// Takes the captured outputs and the dead letters, for one transaction.
    pub(crate) fn take_writes(&mut self) -> Writes {
        let mut messages = mem::take(&mut self.outputs);
        let mut letters = Vec::with_capacity(self.letters.len());
        for letter in self.take() {
            messages.push(letter.letter);
            letters.push((letter.topic, letter.type_name, letter.reason));
        }
        Writes { messages, letters }
    }
}

/// The sender behind a handler's context in exactly-once mode: it keeps what the handler
/// publishes, for the transaction, and sends nothing.
#[derive(Debug, Default, Clone)]
struct Capture {
    sent: Arc<parking_lot::Mutex<Vec<OutgoingMessage>>>,
}

#[async_trait]
impl Sender for Capture {
    async fn send(&self, message: OutgoingMessage) -> Result<Receipt, SendError> {
        self.sent.lock().push(message);
        // Where it lands is known only once the transaction produced it.
        Ok(Receipt::default())
    }
}

/// A flush that could not send every letter before the router stopped; the letters not sent
/// stay in the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unsent {
    /// The lowest offset whose letter was not sent: commit no further than this.
    pub(crate) first_offset: i64,
}

/// The shared, immutable part of a running router.
pub(crate) struct Processor {
    group: String,
    handlers: HashMap<&'static str, Arc<dyn ErasedHandler>>,
    retry: RetryPolicy,
    publisher: Publisher,
    /// Whether a re-driven message addressed to another group is skipped: true where every
    /// group receives every message (Kafka), false where routers compete for a queue's
    /// messages (AMQP), since skipping there would drop the message.
    addressed_redrives: bool,
    /// Exactly-once mode: handlers' publishes are captured into the batch, letters are never
    /// flushed from here.
    transactional: bool,
    /// How to type plain messages, per topic.
    plain: HashMap<String, PlainTyping>,
}

impl Processor {
    /// `addressed_redrives`: the transport's `each_group_gets_every_message`.
    pub(crate) fn new(
        router: &Router,
        publisher: Publisher,
        addressed_redrives: bool,
    ) -> Processor {
        Processor {
            group: router.group.clone(),
            handlers: router.handlers.clone(),
            retry: router.retry.clone(),
            publisher,
            addressed_redrives,
            transactional: router.transactional_id.is_some(),
            plain: router.plain.clone(),
        }
    }

    /// The consumer group.
    /// The labels of this router's metrics.
    pub(crate) fn by(&self) -> metrics::By<'_> {
        metrics::By {
            service: self.publisher.service(),
            group: &self.group,
        }
    }

    /// The retry policy (exactly-once mode also paces transaction retries with it).
    pub(crate) fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    /// Processes one message to its end, its dead letter (if any) sent and acknowledged before
    /// this returns. `stop` cuts retry backoff short; a handler attempt already running is
    /// always finished.
    pub(crate) async fn process(
        &self,
        message: &IncomingMessage,
        stop: &CancellationToken,
    ) -> Outcome {
        let mut letters = LetterBatch::default();
        let outcome = self.process_batched(message, &mut letters, stop).await;
        if letters.is_empty() || self.flush(&mut letters, stop).await.is_ok() {
            outcome
        } else {
            Outcome::Abandoned
        }
    }

    /// Processes one message to its end, except that its dead letter (if any) is only queued in
    /// `letters`: the caller must [`flush`](Self::flush) them before it commits this message.
    /// Letters already queued are flushed before a retry backoff.
    pub(crate) async fn process_batched(
        &self,
        message: &IncomingMessage,
        letters: &mut LetterBatch,
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
        self.process_in_span(message, letters, stop, &span)
            .instrument(span.clone())
            .await
    }

    async fn process_in_span(
        &self,
        message: &IncomingMessage,
        letters: &mut LetterBatch,
        stop: &CancellationToken,
        span: &tracing::Span,
    ) -> Outcome {
        // Before anything else: a re-driven record for another group is not this group's
        // business, even if it cannot be decoded (that group dead-letters it again if need be).
        if self.addressed_redrives
            && let Some(target) = message.headers.get_str(dlq::header::REDRIVE_GROUP)
            && target != self.group
        {
            tracing::debug!(
                redrive_group = target,
                "re-driven for another group, skipped"
            );
            metrics::redrive_skipped(self.by(), &message.topic);
            return Outcome::Skipped;
        }
        let Opened { envelope, payload } =
            match envelope::open(message, self.plain.get(&message.topic)) {
                Ok(opened) => opened,
                Err(e) => {
                    tracing::warn!(error = %e, "undecodable envelope, dead-lettering");
                    return self.dead_letter(
                        message,
                        "",
                        Reason::Undecodable,
                        &e.to_string(),
                        0,
                        letters,
                    );
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
            metrics::unknown_type(self.by(), &message.topic, &envelope.type_name);
            return Outcome::Skipped;
        };

        let type_name = envelope.type_name.clone();
        let mut attempt = 1;
        loop {
            let capture = self.transactional.then(Capture::default);
            let publisher = match &capture {
                Some(capture) => self.publisher.with_sender(capture.clone()),
                None => self.publisher.clone(),
            };
            let ctx = MessageContext::new(
                envelope.clone(),
                message.topic.clone(),
                message.partition,
                message.offset,
                attempt,
                trace,
                publisher,
            );
            let started = Instant::now();
            let error = match self.attempt(handler.as_ref(), &payload, &ctx).await {
                Attempt::Ok => {
                    if let Some(capture) = capture {
                        // A handler that spawned a task holding the context could still
                        // publish; what it publishes after returning is not part of the
                        // message's effects, so only what is there now is taken.
                        letters.outputs.append(&mut capture.sent.lock());
                    }
                    metrics::handled(self.by(), &message.topic, &type_name, started.elapsed());
                    tracing::debug!(attempt, "handled");
                    return Outcome::Handled;
                }
                Attempt::Undecodable(e) => {
                    tracing::warn!(error = %e, "undecodable payload, dead-lettering");
                    return self.dead_letter(
                        message,
                        &type_name,
                        Reason::Undecodable,
                        &e,
                        0,
                        letters,
                    );
                }
                Attempt::Failed(e) => e,
            };
            metrics::failed(self.by(), &message.topic, &type_name, started.elapsed());
            if error.is_permanent() || !self.retry.retries_after(attempt) {
                tracing::warn!(attempt, error = %error, permanent = error.is_permanent(), "handler failed, dead-lettering");
                return self.dead_letter(
                    message,
                    &type_name,
                    Reason::HandlerFailed,
                    &error.to_string(),
                    attempt,
                    letters,
                );
            }
            // Earlier messages' letters do not wait out this one's backoff (in exactly-once
            // mode they wait for the batch's transaction instead).
            if !self.transactional
                && !letters.is_empty()
                && self.flush(letters, stop).await.is_err()
            {
                return Outcome::Abandoned;
            }
            let delay = self.retry.delay(attempt, &mut rand::rng());
            tracing::info!(attempt, error = %error, retry_in = ?delay, "handler failed, will retry");
            metrics::retried(self.by(), &message.topic, &type_name);
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
        payload: &[u8],
        ctx: &MessageContext,
    ) -> Attempt {
        let future = match handler.call(payload, ctx) {
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

    /// Builds the dead letter and queues it in `letters`.
    fn dead_letter(
        &self,
        message: &IncomingMessage,
        type_name: &str,
        reason: Reason,
        error: &str,
        attempts: u32,
        letters: &mut LetterBatch,
    ) -> Outcome {
        letters.push(Letter {
            offset: message.offset,
            topic: message.topic.clone(),
            type_name: type_name.to_owned(),
            reason,
            letter: dlq::dead_letter(message, reason, error, attempts, &self.group),
        });
        Outcome::DeadLettered
    }

    /// Sends every letter in `letters` at once and waits for all acknowledgements; letters whose
    /// send failed are sent again after a backoff until they are acknowledged. Once `stop` is
    /// cancelled one more attempt is made (a graceful stop normally finds the broker there);
    /// whatever is still unsent then stays in `letters` and the lowest offset it parks comes
    /// back in [`Unsent`].
    pub(crate) async fn flush(
        &self,
        letters: &mut LetterBatch,
        stop: &CancellationToken,
    ) -> Result<(), Unsent> {
        let mut send_attempt = 1;
        loop {
            let batch = letters.take();
            if batch.is_empty() {
                return Ok(());
            }
            // Every send is handed to the transport before any is awaited: `join_all` polls
            // each once, in order, which enqueues it (so a key's letters keep their order).
            let sends = batch.into_iter().map(|letter| async move {
                let Letter {
                    offset,
                    topic,
                    type_name,
                    reason,
                    letter,
                } = letter;
                let sent = self.publisher.send_raw(letter).await;
                (offset, topic, type_name, reason, sent)
            });
            let mut sent = 0usize;
            let mut last_error = None;
            for (offset, topic, type_name, reason, result) in futures::future::join_all(sends).await
            {
                match result {
                    Ok(_) => {
                        metrics::dead_lettered(self.by(), &topic, &type_name, reason.as_str());
                        sent += 1;
                    }
                    Err(e) => {
                        last_error = Some(e.error);
                        letters.push(Letter {
                            offset,
                            topic,
                            type_name,
                            reason,
                            letter: e.message,
                        });
                    }
                }
            }
            if sent > 0 {
                tracing::info!(letters = sent, group = %self.group, "dead letters acknowledged");
            }
            let Some(error) = last_error else {
                return Ok(());
            };
            let unsent = Unsent {
                first_offset: letters.first_offset().unwrap_or(0),
            };
            if stop.is_cancelled() {
                tracing::error!(error = %error, unsent = letters.len(), "cannot send dead letters and stopping; their messages stay uncommitted");
                return Err(unsent);
            }
            let delay = self.retry.delay(send_attempt, &mut rand::rng());
            tracing::error!(error = %error, unsent = letters.len(), retry_in = ?delay, "cannot send dead letters; retrying");
            send_attempt += 1;
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stop.cancelled() => {}
            }
        }
    }
}

enum Attempt {
    Ok,
    Failed(HandlerError),
    Undecodable(String),
}
