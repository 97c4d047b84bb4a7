//! Courses, rebuilt on the toolkit.
//!
//! Two services, as in the original: the **producer** (`POST/PUT/DELETE /api/v1/courses...`,
//! port 4000) owns the course records and publishes each change to topic `test`; the
//! **consumer** (`GET /api/v1/courses[/{id}]`, port 3000) keeps its own copy of the catalogue
//! from those messages. The message is [`ferry_contracts::courses::CourseMessage`]
//! `{id, name, code, active, method}`, keyed by course id.
//!
//! What the original got wrong and this does not:
//! - a 2xx means the change is durable *and* its message will be delivered: the producer
//!   writes the course and the message to the outbox in one transaction, and the relay
//!   publishes it (later, if the broker is down);
//! - POST answers with the new id; name and code are required; codes are unique (409);
//!   unknown ids are 404;
//! - messages are keyed by course id, so a PUT and a DELETE of one course never swap places;
//! - the consumer applies each message once (idempotent inbox) and only then commits;
//! - a malformed message goes to `test.dlq` and the consumer goes on.

mod consumer;
mod producer;

pub use consumer::{GROUP as CONSUMER_GROUP, start as start_consumer};
pub use producer::start as start_producer;

/// Default port of the producer service.
pub const PRODUCER_PORT: u16 = 4000;
/// Default port of the consumer service.
pub const CONSUMER_PORT: u16 = 3000;

/// A course as both services show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Course {
    /// Assigned by the producer.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Unique code.
    pub code: String,
    /// Offered or not.
    pub active: bool,
}

/// Why the service could not start.
pub use ferry_service::StartError as Error;
