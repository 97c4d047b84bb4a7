//! The crate's one error type.
//!
//! An aggregate's own rule violations are not here: they are the aggregate's
//! [`Aggregate::Error`](crate::Aggregate::Error), and a command that breaks one comes back as
//! [`CommandError::Rejected`](crate::CommandError::Rejected), typed, so an HTTP layer can map
//! each to its 4xx.

/// Everything that can go wrong in the event store, the command handler and projections.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Another writer appended to the stream since it was read: `expected` is the version the
    /// append was based on, `actual` the stream's version now. The command handler retries
    /// these by itself (reload, decide again); one reaching the caller means the retries ran
    /// out (HTTP 409).
    #[error(
        "concurrency conflict on stream {stream_id}: expected version {expected}, found {actual}"
    )]
    Conflict {
        /// The stream appended to.
        stream_id: String,
        /// The version the writer read and based its events on.
        expected: i64,
        /// The stream's version after the append failed.
        actual: i64,
    },
    /// The database reported an error.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The toolkit reported an error (connecting, migrating, writing the outbox).
    #[error(transparent)]
    Toolkit(#[from] ferry_toolkit::Error),
    /// An event or a snapshot could not be serialized to JSON.
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// What was being encoded, such as `event PostCreated`.
        what: String,
        /// What serde said.
        source: serde_json::Error,
    },
    /// A stored event could not be decoded into the event type, even after upcasting.
    #[error(
        "cannot decode event {event_type} v{schema_version} at {stream_id}@{version}: {source}"
    )]
    Decode {
        /// The stream the event belongs to.
        stream_id: String,
        /// The event's version in its stream.
        version: i64,
        /// The stored event type.
        event_type: String,
        /// The schema version after upcasting.
        schema_version: u32,
        /// What serde said.
        source: serde_json::Error,
    },
    /// An upcaster refused a stored payload.
    #[error("cannot upcast {event_type} from v{schema_version}: {reason}")]
    Upcast {
        /// The stored event type.
        event_type: String,
        /// The schema version the failing upcaster reads.
        schema_version: u32,
        /// What the upcaster said.
        reason: String,
    },
    /// A row of the event store holds a value this crate never writes (a bad UUID or JSON in
    /// the metadata): someone wrote to the tables by hand.
    #[error("corrupt event store row: {0}")]
    Corrupt(String),
    /// The command handler has an outbox topic, but the event type does not say how its events
    /// become messages (it keeps the default [`Event::publish`](crate::Event::publish)).
    #[error("event {event_type} cannot be published: implement Event::publish")]
    NotPublishable {
        /// The event type that has no message mapping.
        event_type: &'static str,
    },
    /// A projection's own failure, other than a database error.
    #[error("projection {projection}: {source}")]
    Projection {
        /// The projection's name.
        projection: String,
        /// What went wrong.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// Whether this is a [`Error::Conflict`].
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }
}

/// `Result` with this crate's [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
