//! Events to the outbox, in the transaction that stores them.
//!
//! This is what keeps cqrs-es's top complaints away (#26: a crash between commit and dispatch
//! loses events for the read side; #172: no outbox atomic with the events): a command's events
//! and their outbox rows commit together or not at all, and the toolkit's relay publishes the
//! rows afterwards, retrying until the broker has them.
//!
//! The message that carries an event has the event's id as its message id and the event's
//! version in its stream as `ce_streamversion` (the envelope's `stream_version`). So a
//! consumer can apply each entity's events once and in order by version alone (the next one is
//! the last applied plus one), and tell a redelivery (a version it has) from a gap (one it
//! missed), which a message id cannot tell it.

use std::time::{Duration, UNIX_EPOCH};

use ferry_toolkit::{Envelope, Message, TraceParent};
use sqlx::AnyConnection;
use uuid::Uuid;

use crate::error::Result;
use crate::store::Metadata;

/// The outbox as one event sees it, handed to [`Event::publish`](crate::Event::publish).
pub struct Outbox<'c> {
    pub(crate) conn: &'c mut AnyConnection,
    pub(crate) topic: &'c str,
    pub(crate) event_id: Uuid,
    pub(crate) version: i64,
    pub(crate) recorded_at: i64,
    pub(crate) metadata: &'c Metadata,
    pub(crate) enqueued: u32,
}

impl std::fmt::Debug for Outbox<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("topic", &self.topic)
            .field("event_id", &self.event_id)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Outbox<'_> {
    /// Queues `message` for the outbox topic, keyed by [`Message::key`].
    ///
    /// The first message of an event *is* the event on the wire: it gets the event's id as its
    /// message id (so a consumer's inbox de-duplicates it against any republication of the
    /// same event) and the event's stream version as its `stream_version` (so a consumer can
    /// check order per entity). Further messages of the same event get ids of their own and no
    /// stream version. Correlation, causation and trace come from the command's [`Metadata`];
    /// the production time is the event's.
    pub async fn enqueue<M: Message>(&mut self, message: &M) -> Result<()> {
        let mut envelope = Envelope::new::<M>();
        if self.enqueued == 0 {
            envelope.message_id = self.event_id;
            envelope.stream_version = Some(self.version);
        }
        envelope.correlation_id = self.metadata.correlation_id.unwrap_or(envelope.message_id);
        envelope.causation_id = self.metadata.causation_id;
        if let Some(trace) = self
            .metadata
            .traceparent
            .as_deref()
            .and_then(|t| t.parse::<TraceParent>().ok())
        {
            envelope.traceparent = trace;
        }
        envelope.produced_at =
            UNIX_EPOCH + Duration::from_millis(u64::try_from(self.recorded_at).unwrap_or(0));
        ferry_toolkit::sql::outbox::enqueue(self.conn, self.topic, message, &envelope).await?;
        self.enqueued += 1;
        Ok(())
    }

    /// The topic messages go to.
    pub fn topic(&self) -> &str {
        self.topic
    }
}
