//! Social posts (SM-POST), rebuilt on the toolkit and `ferry-es`: CQRS with event sourcing.
//!
//! Two services, as in the original:
//! - the **command** service (port [`COMMAND_PORT`], `/api/v1/NewPost`, `EditMessage/{id}`,
//!   `LikePost/{id}`, `AddComment/{id}`, `EditComment/{id}`, `RemoveComment/{id}`,
//!   `DeletePost/{id}`, `RestoreReadDb`) runs each command through a
//!   `ferry_es::CommandHandler<posts_domain::Post>`: the events are stored in the event store
//!   and staged in the outbox for [`posts_domain::TOPIC`] in one transaction;
//! - the **query** service (port [`QUERY_PORT`], `/api/v1/PostLookup...`) keeps the read model
//!   from that topic.
//!
//! Exactly-once on the read side: every event goes to the topic with its event id as the
//! message id, and the query service applies each message id once (the toolkit's inbox, in the
//! read-model transaction). Events are keyed by post id, so one post's events arrive in order.
//!
//! `RestoreReadDb` (command service) re-stages **every** event of the event store in the
//! outbox, in global order, with its original message id (the event id). A read model that has
//! seen them skips them all (running it twice, or while commands arrive, never doubles a like);
//! a read model that was emptied (inbox included, it is the same database) is rebuilt from
//! them. The events carry no stream version on the wire (the envelope has no field for it), so
//! the de-duplication is by event id rather than by a per-post version check.
//! Known limit: if the read database is wiped *and* commands arrive while the republished
//! events are still being relayed, a new event of a post can reach the empty read model before
//! that post's `PostCreated` and be lost there.
//!
//! A malformed message on the topic goes to `SocialMediaPostEvents.dlq` and the consumer goes on.

mod command;
mod query;

pub use command::start as start_command;
pub use query::start as start_query;

/// Default port of the command service.
pub const COMMAND_PORT: u16 = 5010;
/// Default port of the query service.
pub const QUERY_PORT: u16 = 5011;

/// Why a service could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database or the Kafka client could not be set up.
    #[error(transparent)]
    Toolkit(#[from] ferry_toolkit::Error),
    /// The event store could not be set up.
    #[error(transparent)]
    EventStore(#[from] ferry_es::Error),
    /// The HTTP port could not be bound.
    #[error("cannot serve HTTP: {0}")]
    Http(#[from] std::io::Error),
}
