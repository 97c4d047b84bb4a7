//! Social posts (SM-POST), rebuilt on the toolkit and `ferry-es`: CQRS with event sourcing.
//!
//! Two services, as in the original:
//! - the **command** service (port [`COMMAND_PORT`], `/api/v1/NewPost`, `EditMessage/{id}`,
//!   `LikePost/{id}`, `AddComment/{id}`, `EditComment/{id}`, `RemoveComment/{id}`,
//!   `DeletePost/{id}`, `RestoreReadDb`) runs each command through a
//!   `ferry_es::CommandHandler<posts_domain::Post>`: the events are stored in the event store
//!   and staged in the outbox for [`posts_domain::TOPIC`] in one transaction, each with its
//!   event id as message id and its version in the post's stream as `ce_streamversion`.
//!   It also serves the event store read-only, `GET /api/v1/EventFeed...` (see [`wire`]);
//! - the **query** service (port [`QUERY_PORT`], `/api/v1/PostLookup...`) keeps the read model
//!   from that topic.
//!
//! Once and in order on the read side: the read model keeps each post's last applied version
//! and applies an event only if it is the next one, in the transaction of the read-model
//! change (the module `read_model` has the details). A redelivery or a replay of an
//! event it has is skipped, so likes never double. An event past a gap (the read model lacks
//! an earlier event of the post, say it was wiped, and the consumer group's offsets are past
//! the post's `PostCreated`) is never applied out of order: the query service first catches
//! the post up from the command service's event feed, which applies the missing events and
//! this one, in order. Events are keyed by post id, so one post's events arrive in order.
//!
//! `RestoreReadDb` rebuilds the read model from the event store; nothing is republished to
//! the topic. On the command service it stages one [`RestoreRequested`] message (topic
//! [`RESTORE_TOPIC`]) and answers 202 with a job id; the query service (`POST
//! /api/v1/RestoreReadDb` there starts a job directly) pages through the event feed and applies
//! every event with the version check, and reports the job's progress at `GET
//! /api/v1/RestoreReadDb/{job}`. It is safe to run twice (the second run finds everything
//! there) and while commands arrive (the consumer and the rebuild cannot both apply an event).
//! `?reset=true` empties the read model first, for a rebuild from scratch.
//! [`rebuild_read_model`] is that rebuild as a library function, which `ferry replay posts`
//! runs against the databases directly, with a progress bar.
//!
//! The services never read each other's tables: the query service reaches the event store only
//! through the feed, at `ServiceConfig::peers["posts-command"]` (by default the command
//! service's default port on the same host).
//!
//! A malformed message on the topic goes to `SocialMediaPostEvents.dlq` and the consumer goes on.

mod command;
mod jobs;
mod query;
mod read_model;
mod rebuild;
mod source;
pub mod wire;

pub use command::start as start_command;
pub use query::start as start_query;
pub use rebuild::{RebuildOptions, RebuildProgress, rebuild_read_model};
pub use source::EventSource;
pub use wire::{RESTORE_TOPIC, RestoreRequested};

/// Default port of the command service.
pub const COMMAND_PORT: u16 = 5010;
/// Default port of the query service.
pub const QUERY_PORT: u16 = 5011;
/// The command service's name: its database (the event store) and its key in
/// `ServiceConfig::peers`.
pub const COMMAND_SERVICE: &str = "posts-command";
/// The query service's name: its database (the read model).
pub const QUERY_SERVICE: &str = read_model::SERVICE;

/// Why a service could not start, or a rebuild failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database or the Kafka client could not be set up.
    #[error(transparent)]
    Toolkit(#[from] ferry_toolkit::Error),
    /// The event store could not be set up or read.
    #[error(transparent)]
    EventStore(#[from] ferry_es::Error),
    /// The HTTP port could not be bound.
    #[error("cannot serve HTTP: {0}")]
    Http(#[from] std::io::Error),
    /// The service's runtime could not start (its data directory is in use by another process).
    #[error(transparent)]
    Start(#[from] ferry_service::StartError),
    /// The read model's database failed.
    #[error("read model: {0}")]
    Database(#[from] sqlx::Error),
    /// The command service's event feed could not be read (not reachable, or an error answer).
    #[error("event feed {url}: {reason}")]
    Feed {
        /// What was asked.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// An event from the feed could not be decoded (a newer command service?).
    #[error("cannot decode event {event_type} at {stream_id}@{version}: {source}")]
    Decode {
        /// The post.
        stream_id: String,
        /// Its version.
        version: i64,
        /// The event type.
        event_type: String,
        /// What serde said.
        source: serde_json::Error,
    },
    /// A post could not be caught up because the read model was reset again and again
    /// meanwhile.
    #[error("post {post_id}: the read model kept being reset while the post was caught up")]
    KeptResetting {
        /// The post.
        post_id: uuid::Uuid,
    },
    /// The rebuild was stopped (the service is shutting down); the read model is consistent
    /// and a new rebuild finishes the work.
    #[error("the rebuild was cancelled")]
    Cancelled,
}
