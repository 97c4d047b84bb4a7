//! Ferry's service toolkit: what a Rust service needs to exchange messages over Kafka or AMQP
//! without losing or double-applying one.
//!
//! The model:
//! - Every message is a typed [`Message`] (a serde type with a stable type name and an entity
//!   key) travelling as JSON, with an [`Envelope`] in the transport headers: message id (UUID
//!   v7), type and version, correlation and causation ids, W3C `traceparent`, production time.
//! - A [`Publisher`] sends messages and returns only once the broker has them (Kafka:
//!   idempotent producer, acks=all, keyed by entity id). A failed publish hands the message
//!   back ([`PublishError::into_inner`]).
//! - A [`Router`] is one consumer group's handler set. Run by a transport
//!   ([`kafka::start_router`]), it processes each assigned partition in order on its own task,
//!   partitions concurrently, dispatching by type name to [`Handler`]s; unknown types are
//!   counted and skipped. An offset is committed only after its message was handled, or parked
//!   in the dead-letter topic.
//! - A failing handler is retried per its [`RetryPolicy`] (exponential backoff, jitter, cap,
//!   optional per-attempt timeout), then dead-lettered to `<topic>.dlq` with the error and
//!   attempt count in headers ([`dlq`]); a record that cannot be decoded goes there at once.
//!   Letters are sent in batches, committed once acknowledged. [`kafka::redrive`] sends them
//!   back, each to the consumer group that failed it (the other groups skip it).
//! - Exactly-once on Kafka ([`Router::exactly_once`]): for handlers whose only effects are
//!   Kafka messages, each batch's published messages, dead letters and consumed offsets commit
//!   in one Kafka transaction, so a crash never duplicates or loses an output. Database effects
//!   are made exactly-once with the outbox and inbox instead (below).
//! - [`Requester`] does request/reply with correlation ids over a reply topic.
//! - A message type declares which of its fields are secrets
//!   ([`Message::SENSITIVE_FIELDS`]); [`redact`] removes them, and any field named like a
//!   password, secret or token, from a payload before it is shown or logged.
//! - [`ops`] has `/health`, `/ready` and Prometheus `/metrics` for the service's HTTP server;
//!   each message is handled inside a `tracing` span carrying its ids and trace.
//! - [`sql`] is storage on `sqlx` (SQLite by default, PostgreSQL to scale out) with
//!   migrations, the transactional outbox ([`sql::outbox`]: stage messages in the state
//!   change's transaction, a relay publishes them in order per key) and the idempotent inbox
//!   ([`sql::inbox`]: a message's effects and its "processed" record commit together).
//!
//! Only adapters touch the outside: [`kafka`] (Kafka protocol, librdkafka), [`amqp`]
//! (RabbitMQ, lapin) and [`sql`]. Envelope, handlers, retries, dead-letter decisions, request
//! matching and the outbox relay work on the transport-neutral [`IncomingMessage`] and
//! [`Sender`], so both transports run the same router and handler API; each says what it
//! guarantees in a [`TransportFeatures`] (`kafka::FEATURES`, `amqp::FEATURES`).
//!
//! Threads: the router's Kafka consumer is polled on one OS thread per router (rebalance
//! callbacks block there, never on the runtime); partition workers, AMQP queue workers,
//! retries, handlers and the outbox relay are tokio tasks. See `kafka/consumer.rs`,
//! `amqp/consumer.rs` and `sql/outbox/relay.rs`.

pub mod amqp;
pub mod dlq;
mod envelope;
mod error;
mod handler;
pub mod kafka;
pub mod ops;
mod plain;
mod process;
mod publisher;
pub mod redact;
mod request;
mod retry;
mod router;
pub mod sql;
mod traceparent;
mod transport;

pub use envelope::{
    Envelope, Headers, Message, Opened, Summary, decode, encode, header, legacy_header, open,
    schema_of,
};
pub use error::{Error, Result};
pub use handler::{FnHandler, Handler, HandlerError, MessageContext, handler_fn};
pub use plain::{PlainTyping, Typed, position_id};
pub use publisher::{Delivery, PublishError, Publisher};
pub use request::{RequestError, Requester};
pub use retry::RetryPolicy;
pub use router::Router;
pub use sql::now_millis;
pub use traceparent::{InvalidTraceParent, TraceParent};
pub use transport::{
    IncomingMessage, OutgoingMessage, Receipt, SendError, Sender, TransportFeatures,
};

/// Re-exported so handlers can use `#[async_trait]` without adding the dependency.
pub use async_trait::async_trait;
/// The JSON value type of [`Message::json_schema`].
pub use serde_json::Value as JsonValue;

/// Implements [`Message::json_schema`] with the type's `schemars` schema (draft-07); write it
/// inside `impl Message for T { ... }` of a type that derives `schemars::JsonSchema`.
#[macro_export]
macro_rules! schema_from_schemars {
    () => {
        fn json_schema() -> Option<$crate::JsonValue> {
            Some($crate::schema_of::<Self>())
        }
    };
}
