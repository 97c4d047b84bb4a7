//! The two traits a domain implements: [`Event`] and [`Aggregate`].

use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::outbox::Outbox;

/// A domain event type, usually an enum with one variant per event.
///
/// The store keeps each event as its type name, its schema version and a JSON payload. The
/// default [`Event::to_payload`]/[`Event::from_payload`] fit serde's default (externally
/// tagged) enum representation with one variant per event type named like the type:
/// `PostCreated(PostCreated)` is stored as type `PostCreated` with the inner struct's JSON as
/// payload, which is also what goes through the outbox, so the stored and the published JSON
/// are the same. Override both for another representation.
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The stored type name of this event. Never change it once events are stored: it is how
    /// they are decoded (and, via the outbox, usually the wire type name too).
    fn event_type(&self) -> &'static str;

    /// The schema version this code writes for this event. Bump it on an incompatible change of
    /// the payload, and register an [`Upcaster`](crate::Upcaster) from the old version.
    fn schema_version(&self) -> u32 {
        1
    }

    /// The payload to store: by default the variant's content.
    fn to_payload(&self) -> serde_json::Result<Value> {
        let value = serde_json::to_value(self)?;
        Ok(match value {
            Value::Object(mut map) if map.len() == 1 && map.contains_key(self.event_type()) => {
                map.remove(self.event_type()).unwrap_or(Value::Null)
            }
            // A unit variant serializes as its name and has no payload.
            Value::String(name) if name == self.event_type() => Value::Null,
            other => other,
        })
    }

    /// Decodes a stored payload (already upcast to the current schema version) of type
    /// `event_type`: by default as the variant named `event_type`.
    fn from_payload(event_type: &str, payload: Value) -> serde_json::Result<Self> {
        let mut map = serde_json::Map::with_capacity(1);
        map.insert(event_type.to_owned(), payload);
        serde_json::from_value(Value::Object(map))
    }

    /// Writes this event to the outbox as one message (or several, or none), with
    /// [`Outbox::enqueue`]. Called inside the transaction that appends the event, for command
    /// handlers that have an outbox topic. The default refuses with
    /// [`Error::NotPublishable`], so a forgotten mapping fails the first command instead of
    /// silently publishing nothing.
    ///
    /// ```ignore
    /// async fn publish(&self, outbox: &mut Outbox<'_>) -> ferry_es::Result<()> {
    ///     match self {
    ///         PostEvent::PostCreated(e) => outbox.enqueue(e).await,
    ///         PostEvent::PostLiked(e) => outbox.enqueue(e).await,
    ///     }
    /// }
    /// ```
    fn publish(&self, outbox: &mut Outbox<'_>) -> impl Future<Output = Result<()>> + Send {
        let _ = outbox;
        let event_type = self.event_type();
        async move { Err(Error::NotPublishable { event_type }) }
    }
}

/// An event-sourced aggregate: its state is the fold of its events.
///
/// `decide` is a pure function of the state and the command: no clock, no random ids, no I/O
/// (put those in the command when it is built). That is what lets the command handler call it
/// again after a concurrency conflict, and what makes given/when/then tests
/// ([`crate::testing`]) exact.
///
/// The state is serializable because it is what a snapshot stores.
pub trait Aggregate: Default + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The aggregate type name, stored with each event; projections select events by it.
    const TYPE: &'static str;

    /// The version of the state's serialized shape. Bump it when the state's fields change:
    /// snapshots of another version are ignored (the aggregate is rebuilt from its events and
    /// a fresh snapshot is taken), so an old snapshot can never be misread.
    const SNAPSHOT_VERSION: u32 = 1;

    /// What a caller asks the aggregate to do.
    type Command: Send + Sync;
    /// What happened.
    type Event: Event;
    /// Why a command was refused: the domain's rule violations.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Decides which events a command produces, or refuses it. No events means nothing to do
    /// (the command is accepted, nothing is stored).
    fn decide(&self, command: &Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    /// Applies one event to the state. Must not fail: an event is a fact that already happened.
    fn evolve(&mut self, event: &Self::Event);
}
