//! Users (vikartp/microservices), rebuilt on the toolkit.
//!
//! Two services, as in the original: the **producer** (port 8081) queues work items
//! (`GET /`, `GET /send?msg=…`) on `tasks` and sign-up requests (`POST /user {name, email,
//! password}`, answered 202 with a task id) on `user_tasks`; the **consumer** (port 8080,
//! consumer group `users-consumer`) logs the work items, stores the users (`GET /users`,
//! `GET /users/{id}`) and records each request's outcome (`GET /tasks/{taskId}`: created, or
//! rejected with the reason).
//!
//! Its contract, in [`ferry_contracts::users`]: the producer publishes `Task` to `tasks` and
//! `UserRequested {taskId, name, email, passwordHash}` to `user_tasks` (keyed by email), both
//! through the outbox; the consumer publishes nothing.
//!
//! Transport: Kafka (the built-in broker or any cluster) by default; RabbitMQ when
//! [`ferry_service::ServiceConfig::amqp_url`] is set, with the same queues, durable and with
//! persistent, confirmed messages (`ferry_service::Transport` picks the adapter).
//!
//! What the original got wrong and this does not:
//! - passwords were stored in plain text: the producer hashes them with argon2id and only the
//!   hash travels and is stored; no API ever returns it, and the consumer refuses a request
//!   whose "hash" is not an argon2 hash;
//! - no validation: name, email format and password are checked (422), emails are unique
//!   (compared lower-cased), and a second request for a taken email is rejected with the reason,
//!   which `GET /tasks/{taskId}` shows;
//! - a redelivered request created a duplicate user: the inbox records each message id in the
//!   transaction that stores the user, and each task is decided once;
//! - non-persistent messages, no confirms, success answered before anything was safe: the
//!   request is committed to the outbox before the answer and published durably by the relay;
//! - connect retried every 3 s ten times (the README said exponential), no reconnect, and
//!   requests before start-up failed: the HTTP servers start at once and the transports connect
//!   and reconnect in the background with exponential backoff;
//! - a poison message stalled the queue and crashed the consumer: it goes to `<queue>.dlq` and
//!   the next message is processed;
//! - (ours, found under load) each password was hashed on its own thread with its own 19 MiB,
//!   so a burst of sign-ups took gigabytes: hashing now runs on a bounded pool, one worker per
//!   core, each reusing its memory, behind a bounded queue; a sign-up that finds the queue full
//!   is answered `503` with `Retry-After` ([`HashLimits`]).
//!
//! The password hash is a secret too: `UserRequested` declares `passwordHash` sensitive, so the
//! dashboard and logs show `[redacted]` in its place (`ferry_toolkit::redact`).

mod consumer;
mod hashing;
mod producer;
mod validate;

pub use consumer::start as start_consumer;
pub use hashing::HashLimits;
pub use producer::start as start_producer;
pub use producer::start_with as start_producer_with;

/// Default port of the producer service.
pub const PRODUCER_PORT: u16 = 8081;
/// Default port of the consumer service.
pub const CONSUMER_PORT: u16 = 8080;

/// Why the service could not start.
pub use ferry_service::StartError as Error;
